package legacyparty_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/upstream"
)

// waitFor polls cond every 5 ms until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitConns(t *testing.T, srv *partytest.Server, rawRoom string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !srv.WaitConns(ctx, "main", rawRoom, n) {
		t.Fatalf("room %q did not reach %d connections", rawRoom, n)
	}
}

// frameLog collects frames delivered to onFrame.
type frameLog struct {
	mu     sync.Mutex
	frames []string
}

func (l *frameLog) add(b []byte, _ time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.frames = append(l.frames, string(b))
}

func (l *frameLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.frames...)
}

func TestSubscriberDialURL(t *testing.T) {
	srv := partytest.MustStart(t, partytest.WithParties("main", "chat"))
	tests := []struct {
		name    string
		cfg     legacyparty.SubscriberConfig
		party   string
		rawRoom string
	}{
		{"default", legacyparty.SubscriberConfig{Room: "r"}, "main", "r"},
		{"party", legacyparty.SubscriberConfig{Room: "r", Party: "chat"}, "chat", "r"},
		{"alias", legacyparty.SubscriberConfig{Room: "r", PathPrefix: "/party"}, "main", "r"},
		{"ws scheme, room written as is", legacyparty.SubscriberConfig{Room: "x!$&'()*+,;=:@"}, "main", "x!$&'()*+,;=:@"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.URL = srv.URL()
			if strings.HasPrefix(tt.name, "ws scheme") {
				cfg.URL = "ws" + strings.TrimPrefix(srv.URL(), "http")
			}
			cfg.ConnID = "id-" + strings.ReplaceAll(tt.name, " ", "-")
			sub := legacyparty.Subscribe(cfg, nil, nil, nil)
			defer sub.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if !srv.WaitConns(ctx, tt.party, tt.rawRoom, 1) {
				t.Fatalf("no connection in %s/%s", tt.party, tt.rawRoom)
			}
			if got := srv.ConnIDs(tt.party, tt.rawRoom); len(got) != 1 || got[0] != cfg.ConnID {
				t.Errorf("conn ids = %v, want [%s]", got, cfg.ConnID)
			}
			waitFor(t, "ready", sub.Ready)
		})
	}
}

func TestSubscriberConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  legacyparty.SubscriberConfig
		want string
	}{
		{"no url", legacyparty.SubscriberConfig{Room: "r"}, "url: required"},
		{"bad room", legacyparty.SubscriberConfig{URL: "ws://h", Room: "a/b"}, "invalid_room"},
		{"ftp", legacyparty.SubscriberConfig{URL: "ftp://h", Room: "r"}, "url: scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want it to contain %q", err, tt.want)
			}
			// An invalid config never connects and Close still works.
			sub := legacyparty.Subscribe(tt.cfg, nil, nil, nil)
			if sub.Ready() {
				t.Error("invalid subscription reports ready")
			}
			if err := sub.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestSubscriberSkipsUnusableFrames(t *testing.T) {
	srv := partytest.MustStart(t)
	reg := prometheus.NewRegistry()
	m := upstream.NewMetrics(reg)
	var log frameLog
	sub := legacyparty.Subscribe(legacyparty.SubscriberConfig{URL: srv.URL(), Room: "r"}, log.add, m, nil)
	defer sub.Close()
	waitConns(t, srv, "r", 1)

	srv.SendRaw("main", "r", websocket.BinaryMessage, []byte{0, 1, 2})
	srv.SendRaw("main", "r", websocket.TextMessage, []byte("conn-1: hello"))
	srv.SendRaw("main", "r", websocket.TextMessage, []byte(`"just a string"`))
	srv.SendRaw("main", "r", websocket.TextMessage, []byte(`{"truncated":`))
	srv.SendRaw("main", "r", websocket.TextMessage, []byte(`{"body":1,"requestId":"a","name":"n"}`))
	waitFor(t, "the JSON frame", func() bool { return len(log.get()) == 1 })
	if got, want := log.get()[0], `{"body":1,"requestId":"a","name":"n"}`; got != want {
		t.Errorf("frame = %s, want %s", got, want)
	}
	if got, want := counterSum(t, reg, "switchyard_subscriber_frames_skipped_total"), 4.0; got != want {
		t.Errorf("skipped frames = %v, want %v", got, want)
	}
	for _, reason := range []string{"binary", "not_json", "not_object"} {
		if !gatheredLabel(t, reg, "switchyard_subscriber_frames_skipped_total", "reason", reason) {
			t.Errorf("no skipped series with reason %q", reason)
		}
	}
}

func gatheredLabel(t *testing.T, reg *prometheus.Registry, name, label, value string) bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return true
				}
			}
		}
	}
	return false
}

func TestSubscriberReconnects(t *testing.T) {
	srv := partytest.MustStart(t)
	reg := prometheus.NewRegistry()
	m := upstream.NewMetrics(reg)
	var log frameLog
	sub := legacyparty.Subscribe(legacyparty.SubscriberConfig{
		URL: srv.URL(), Room: "r", BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
	}, log.add, m, nil)
	defer sub.Close()
	c := mustClient(t, legacyparty.Config{URL: srv.URL(), Policy: fastPolicy})

	for round := 1; round <= 3; round++ {
		waitConns(t, srv, "r", 1)
		waitFor(t, "ready", sub.Ready)
		if _, err := c.Publish(context.Background(), mustMessage(t, "r", "req", `1`)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the frame", func() bool { return len(log.get()) == round })
		if n := srv.Disconnect("main", "r"); n != 1 {
			t.Fatalf("round %d: dropped %d connections, want 1", round, n)
		}
	}
	waitConns(t, srv, "r", 1)
	waitFor(t, "third reconnect counted", func() bool {
		return counterSum(t, reg, "switchyard_subscriber_reconnects_total") == 3
	})
}

// downListener closes every connection it accepts until up is set, and
// signals each one on refused: a server that is down, on an address held
// by the test (no port freed and taken again).
type downListener struct {
	net.Listener
	up      atomic.Bool
	refused chan struct{}
}

func (l *downListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.up.Load() {
			return c, err
		}
		_ = c.Close()
		select {
		case l.refused <- struct{}{}:
		default:
		}
	}
}

func TestSubscriberConnectsWhenServerComesUp(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &downListener{Listener: inner, refused: make(chan struct{}, 64)}
	srv := partytest.MustStart(t, partytest.WithListener(l))
	reg := prometheus.NewRegistry()
	sub := legacyparty.Subscribe(legacyparty.SubscriberConfig{
		URL: srv.URL(), Room: "r", BackoffMin: 5 * time.Millisecond, BackoffMax: 10 * time.Millisecond,
	}, nil, upstream.NewMetrics(reg), nil)
	defer sub.Close()
	// A few failed dials, counted as they happen.
	const failed = 3
	timeout := time.After(5 * time.Second)
	for i := 0; i < failed; i++ {
		select {
		case <-l.refused:
		case <-timeout:
			t.Fatalf("%d dials refused within 5s, want %d", i, failed)
		}
		if sub.Ready() {
			t.Fatalf("ready after %d refused dials", i+1)
		}
	}
	l.up.Store(true)
	waitConns(t, srv, "r", 1)
	waitFor(t, "ready", sub.Ready)
	if got := counterSum(t, reg, "switchyard_subscriber_reconnects_total"); got != 0 {
		t.Errorf("reconnects = %v, want 0 (first connection)", got)
	}
}

func TestSubscriberCloseStopsCallbacks(t *testing.T) {
	for _, silent := range []bool{false, true} {
		name := "server answers close"
		var opts []partytest.Option
		if silent {
			name = "server ignores close"
			opts = append(opts, partytest.WithSilentClose())
		}
		t.Run(name, func(t *testing.T) {
			srv := partytest.MustStart(t, opts...)
			var closed atomic.Bool
			var late atomic.Int32
			var count atomic.Int32
			sub := legacyparty.Subscribe(legacyparty.SubscriberConfig{URL: srv.URL(), Room: "r", CloseTimeout: 50 * time.Millisecond},
				func([]byte, time.Time) {
					count.Add(1)
					if closed.Load() {
						late.Add(1)
					}
				}, nil, nil)
			waitConns(t, srv, "r", 1)
			waitFor(t, "ready", sub.Ready)
			// Flood the room while closing.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
						srv.SendRaw("main", "r", websocket.TextMessage, []byte(`{"a":1}`))
						time.Sleep(100 * time.Microsecond)
					}
				}
			}()
			waitFor(t, "some frames", func() bool { return count.Load() > 5 })
			if err := sub.Close(); err != nil {
				t.Fatal(err)
			}
			closed.Store(true)
			// The flood goes on until the server has seen the connection
			// go: a subscriber still reading after Close would get frames.
			waitFor(t, "the server to see the connection closed", func() bool { return len(srv.ConnIDs("main", "r")) == 0 })
			close(stop)
			wg.Wait()
			if n := late.Load(); n != 0 {
				t.Errorf("onFrame called %d times after Close returned", n)
			}
			if sub.Ready() {
				t.Error("Ready() after Close")
			}
			if err := sub.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

func TestWatcher(t *testing.T) {
	srv := partytest.MustStart(t)
	w, err := legacyparty.NewWatcher(map[string]legacyparty.Config{"app": {URL: srv.URL()}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := runWatcher(t, w)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	if _, err := w.WatchRoom("other", "r", func([]byte, time.Time) {}); broadcast.ErrorCode(err) != broadcast.ENOTFOUND {
		t.Errorf("unknown app: err = %v, want %s", err, broadcast.ENOTFOUND)
	}
	if _, err := w.WatchRoom("app", "a/b", func([]byte, time.Time) {}); broadcast.ErrorCode(err) != broadcast.EROOM {
		t.Errorf("bad room: err = %v, want %s", err, broadcast.EROOM)
	}
	var log frameLog
	watch, err := w.WatchRoom("app", "room-1", log.add)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	waitFor(t, "ready", watch.Ready)
	waitConns(t, srv, "room-1", 1)
	c := mustClient(t, legacyparty.Config{URL: srv.URL(), Policy: fastPolicy})
	m := mustMessage(t, "room-1", "req-w", `{"v":1.50}`)
	if _, err := c.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "frame", func() bool { return len(log.get()) == 1 })
	if got, want := log.get()[0], `{"body":{"v":1.5},"requestId":"req-w","name":"video.asset.ready"}`; got != want {
		t.Errorf("frame = %s, want %s", got, want)
	}
}

func TestNewWatcherRejectsBadConfig(t *testing.T) {
	_, err := legacyparty.NewWatcher(map[string]legacyparty.Config{"app": {URL: "nope"}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), `app "app": url: missing scheme`) {
		t.Errorf("err = %v, want it to name the app and field", err)
	}
}

// TestSubscriberReadyNeedsPong: a handshake alone does not make a
// subscription ready; the server must answer its ping. A server that
// refuses the connection right after the upgrade (a failing onConnect) or
// never answers pings leaves it not ready.
func TestSubscriberReadyNeedsPong(t *testing.T) {
	up := websocket.Upgrader{}
	var mode atomic.Value // "silent" or "close"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		if mode.Load() == "close" {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1011, "onConnect failed"), time.Now().Add(time.Second))
			return
		}
		c.SetPingHandler(func(string) error { return nil }) // never answers
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	for _, m := range []string{"silent", "close"} {
		t.Run(m, func(t *testing.T) {
			mode.Store(m)
			reg := prometheus.NewRegistry()
			sub := legacyparty.Subscribe(legacyparty.SubscriberConfig{URL: srv.URL, Room: "r", BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond},
				nil, upstream.NewMetrics(reg), zaptest.NewLogger(t))
			defer sub.Close()
			select {
			case <-sub.ReadyC():
				t.Fatal("ready without a pong")
			case <-time.After(300 * time.Millisecond):
			}
			if sub.Ready() {
				t.Fatal("Ready without a pong")
			}
		})
	}
	// The in-process PartyKit answers pings: ready, and the time is recorded.
	pt := partytest.MustStart(t)
	reg := prometheus.NewRegistry()
	sub := legacyparty.Subscribe(legacyparty.SubscriberConfig{URL: pt.URL(), Room: "r"}, nil, upstream.NewMetrics(reg), zaptest.NewLogger(t))
	select {
	case <-sub.ReadyC():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready against partytest")
	}
	if !gatheredLabel(t, reg, "switchyard_subscriber_ready_seconds", "transport", "legacy") {
		t.Error("no switchyard_subscriber_ready_seconds{transport=\"legacy\"} sample")
	}
	_ = sub.Close()
	select {
	case <-sub.ReadyC():
	default:
		t.Error("ReadyC not closed after Close")
	}
	if sub.Ready() {
		t.Error("Ready after Close")
	}
}
