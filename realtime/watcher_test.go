package realtime

import (
	"context"
	"encoding/json"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/realtime/realtimetest"
	"github.com/switchyard/switchyard/upstream"
)

// frames collects onFrame calls.
type frames struct {
	mu   sync.Mutex
	data []string
}

func (f *frames) on(b []byte, at time.Time) {
	if at.IsZero() {
		panic("zero receipt time")
	}
	f.mu.Lock()
	f.data = append(f.data, string(b))
	f.mu.Unlock()
}

func (f *frames) all() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.data...)
}

func newWatcher(t *testing.T, srv *realtimetest.Server, cfg Config) (*Watcher, *Client) {
	t.Helper()
	w, c := newIdleWatcher(t, srv, cfg)
	runWatcher(t, w)
	return w, c
}

// newIdleWatcher builds a Watcher without running it.
func newIdleWatcher(t *testing.T, srv *realtimetest.Server, cfg Config) (*Watcher, *Client) {
	t.Helper()
	c := mustClient(t, srv.URL(), cfg, nil)
	w := NewWatcher(map[string]*Client{"app1": c}, []string{"ai", broadcast.DefaultChannel}, nil, zaptest.NewLogger(t),
		WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	return w, c
}

// runWatcher runs w.Run until the returned stop is called (or the test
// ends); stop waits for Run and fails the test unless it returned nil.
func runWatcher(t *testing.T, w *Watcher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-ran:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(eventuallyIn):
				t.Errorf("Run did not return after its ctx ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// the shadow comparator's declaration, matched exactly.
var _ interface {
	WatchRoom(app, room string, onFrame func([]byte, time.Time)) (broadcast.Watch, error)
} = (*Watcher)(nil)

func TestWatcherRoundTrip(t *testing.T) {
	srv := newServer(t, realtimetest.Config{})
	w, c := newWatcher(t, srv, Config{})
	var f1, f2 frames
	w1, err := w.WatchRoom("app1", "room-1", f1.on)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := w.WatchRoom("app1", "room-2", f2.on)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "both watches ready", func() bool { return w1.Ready() && w2.Ready() })
	if got := srv.Connections(); got != 1 {
		t.Fatalf("connections: got %d, want 1 shared by the app", got)
	}
	m1 := mustMessage(t, "room-1", "ai", `{"t":"tok"}`)
	m2 := mustMessage(t, "room-2", broadcast.DefaultChannel, `[1,2]`)
	for _, m := range []*broadcast.Message{m1, m2} {
		if _, err := c.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "frames", func() bool { return len(f1.all()) == 1 && len(f2.all()) == 1 })
	if got, want := f1.all()[0], string(m1.Envelope); got != want {
		t.Errorf("room-1: got %s, want %s", got, want)
	}
	if got, want := f2.all()[0], string(m2.Envelope); got != want {
		t.Errorf("room-2: got %s, want %s", got, want)
	}

	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "unsub", func() bool { return srv.Subscribed("room-1", "ai") == 0 })
	if _, err := c.Publish(context.Background(), mustMessage(t, "room-1", "ai", `2`)); err != nil {
		t.Fatal(err)
	}
	// A probe published after it on room-2, which shares the connection:
	// once the probe has arrived, a frame of room-1 would have too.
	if _, err := c.Publish(context.Background(), mustMessage(t, "room-2", "ai", `3`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the probe on room-2", func() bool { return len(f2.all()) == 2 })
	if got := len(f1.all()); got != 1 {
		t.Fatalf("frames after Close: got %d, want 1", got)
	}
	if !w2.Ready() {
		t.Fatalf("closing room-1 unreadied room-2")
	}
}

func TestWatcherShowsAlteredAndDropped(t *testing.T) {
	srv := newServer(t, realtimetest.Config{})
	w, c := newWatcher(t, srv, Config{})
	var fr frames
	wa, err := w.WatchRoom("app1", "room-1", fr.on)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready", wa.Ready)
	srv.SetDeliveryFault(realtimetest.DeliveryFault{AlterTopic: "ai", DropTopic: broadcast.DefaultChannel})
	for _, m := range []*broadcast.Message{mustMessage(t, "room-1", broadcast.DefaultChannel, `0`), mustMessage(t, "room-1", "ai", `{"x":1}`)} {
		if _, err := c.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "altered frame", func() bool { return len(fr.all()) == 1 })
	var env map[string]json.RawMessage
	if err := json.Unmarshal([]byte(fr.all()[0]), &env); err != nil {
		t.Fatal(err)
	}
	if string(env["body"]) != `"altered"` || string(env["altered"]) != "true" {
		t.Fatalf("got %s, want an altered envelope", fr.all()[0])
	}
	if got := srv.Counts().Dropped; got != 1 {
		t.Fatalf("dropped: got %d, want 1", got)
	}
}

func TestWatcherReadyFollowsConnection(t *testing.T) {
	srv := newServer(t, realtimetest.Config{})
	w, c := newWatcher(t, srv, Config{})
	var fr frames
	wa, err := w.WatchRoom("app1", "room-1", fr.on)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready", wa.Ready)
	srv.DropConnections()
	eventually(t, "ready again after reconnect", func() bool { return srv.Counts().Connects == 2 && wa.Ready() })
	if _, err := c.Publish(context.Background(), mustMessage(t, "room-1", "ai", `1`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "frame after reconnect", func() bool { return len(fr.all()) == 1 })
}

func TestWatcherErrors(t *testing.T) {
	srv := newServer(t, realtimetest.Config{})
	w, _ := newIdleWatcher(t, srv, Config{})
	stop := runWatcher(t, w)
	if _, err := w.WatchRoom("nope", "room-1", nil); broadcast.ErrorCode(err) != broadcast.ENOTFOUND {
		t.Errorf("unknown app: got %v, want %s", err, broadcast.ENOTFOUND)
	}
	if _, err := w.WatchRoom("app1", "a/b", nil); broadcast.ErrorCode(err) != broadcast.EROOM {
		t.Errorf("bad room: got %v, want %s", err, broadcast.EROOM)
	}
	stop()
	if _, err := w.WatchRoom("app1", "room-1", nil); broadcast.ErrorCode(err) != broadcast.EDRAINING {
		t.Errorf("after Run's ctx ended: got %v, want %s", err, broadcast.EDRAINING)
	}
}

// NewWatcher starts nothing; a watch made before Run connects once Run
// runs; the end of Run's ctx ends every watch and goroutine.
func TestWatcherLifecycle(t *testing.T) {
	srv := newServer(t, realtimetest.Config{})
	base := runtime.NumGoroutine()
	hc := &http.Client{Transport: upstream.NewTransport(8)}
	c, err := NewClient("app1", Config{URL: srv.URL(), Policy: fastPolicy()}, hc, nil, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	w := NewWatcher(map[string]*Client{"app1": c}, []string{"ai", broadcast.DefaultChannel}, nil, zaptest.NewLogger(t),
		WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	var fr frames
	wa, err := w.WatchRoom("app1", "room-1", fr.on)
	if err != nil {
		t.Fatalf("WatchRoom before Run: %v", err)
	}
	// No wait: a goroutine started by NewWatcher or WatchRoom would be
	// counted as soon as it was started, and a connection needs one.
	if got := runtime.NumGoroutine(); got > base {
		t.Errorf("goroutines before Run: got %d, want at most %d", got, base)
	}
	if got := srv.Connections(); got != 0 || wa.Ready() {
		t.Fatalf("before Run: %d connections, ready %v; want none", got, wa.Ready())
	}

	stop := runWatcher(t, w)
	eventually(t, "the watch made before Run to be ready", wa.Ready)
	if _, err := c.Publish(context.Background(), mustMessage(t, "room-1", "ai", `1`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "frame", func() bool { return len(fr.all()) == 1 })
	if err := w.Run(context.Background()); err == nil {
		t.Error("second Run: got nil, want an error")
	}

	stop()
	if wa.Ready() {
		t.Error("ready after Run returned")
	}
	if _, err := c.Publish(context.Background(), mustMessage(t, "room-1", "ai", `2`)); err != nil {
		t.Fatal(err)
	}
	_ = wa.Close()
	hc.CloseIdleConnections() // the publishes' and token requests' keep-alives
	deadline := time.Now().Add(eventuallyIn)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := runtime.NumGoroutine(); got > base {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines after Run returned: got %d, want at most %d\n%s", got, base, buf[:runtime.Stack(buf, true)])
	}
	if got := len(fr.all()); got != 1 {
		t.Errorf("frames after Run returned: got %d, want 1", got)
	}
}

func TestWatcherNotReadyWhileTokensFail(t *testing.T) {
	srv := newServer(t, realtimetest.Config{SigningKey: testKey})
	w, _ := newWatcher(t, srv, Config{SigningKey: otherKey})
	wa, err := w.WatchRoom("app1", "room-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Three refused token requests: the watcher has gone through the
	// refusal and its retry twice; it must not have been ready at any
	// point meanwhile.
	readySeen := false
	eventually(t, "three refused token requests", func() bool {
		readySeen = readySeen || wa.Ready()
		return srv.Counts().Unauthorized >= 3
	})
	if readySeen || wa.Ready() {
		t.Fatalf("ready without a token")
	}
}

func TestWatcherFallbackKey(t *testing.T) {
	srv := newServer(t, realtimetest.Config{SigningKey: testKey})
	w, c := newWatcher(t, srv, Config{SigningKey: otherKey, FallbackSigningKey: testKey})
	var fr frames
	wa, err := w.WatchRoom("app1", "room-1", fr.on)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready through the fallback key", wa.Ready)
	if _, err := c.Publish(context.Background(), mustMessage(t, "room-1", "ai", `1`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "frame", func() bool { return len(fr.all()) == 1 })
	if got := srv.Counts().Unauthorized; got < 2 {
		t.Fatalf("refused requests with the primary key: got %d, want >= 2 (token and publish)", got)
	}
}

// TestWatcherProbeProvesReadiness: a watch is ready only once a probe on
// ProbeTopic, published after the channel's sub, came back; probes never
// reach onFrame and are counted as op "probe", not as publishes. While
// probes are lost (dropped by the server, or their publish hangs) the watch
// stays not ready; once they come back it turns ready and ReadyC closes.
func TestWatcherProbeProvesReadiness(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  func(*realtimetest.Server)
	}{
		{"probes dropped", func(s *realtimetest.Server) {
			s.SetDeliveryFault(realtimetest.DeliveryFault{DropTopic: ProbeTopic})
		}},
		{"probe publishes hang", func(s *realtimetest.Server) {
			s.SetPublishFault(realtimetest.HTTPFault{Hang: true})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, realtimetest.Config{})
			tt.set(srv)
			reg := prometheus.NewRegistry()
			um := upstream.NewMetrics(reg)
			c := mustClient(t, srv.URL(), Config{Policy: fastPolicy()}, um)
			w := NewWatcher(map[string]*Client{"app1": c}, []string{"ai", broadcast.DefaultChannel}, um, zaptest.NewLogger(t),
				WithBackoff(10*time.Millisecond, 50*time.Millisecond))
			runWatcher(t, w)
			var fr frames
			wa, err := w.WatchRoom("app1", "room-1", fr.on)
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "the channel subscribed, probe included", func() bool {
				return srv.Subscribed("room-1", "ai") == 1 && srv.Subscribed("room-1", ProbeTopic) == 1
			})
			rn := wa.(broadcast.ReadyNotifier)
			select {
			case <-rn.ReadyC():
				t.Fatal("ReadyC closed while no probe came back")
			case <-time.After(300 * time.Millisecond):
			}
			if wa.Ready() {
				t.Fatal("ready while no probe came back")
			}
			srv.SetDeliveryFault(realtimetest.DeliveryFault{})
			srv.SetPublishFault(realtimetest.HTTPFault{})
			select {
			case <-rn.ReadyC():
			case <-time.After(eventuallyIn):
				t.Fatal("not ready once probes come back")
			}
			if !wa.Ready() {
				t.Fatal("ReadyC closed but not Ready")
			}
			if got := fr.all(); len(got) != 0 {
				t.Fatalf("probes reached onFrame: %v", got)
			}
			probes := 0
			for _, p := range srv.Publishes() {
				if p.Topic != ProbeTopic || p.Channel != "room-1" {
					t.Errorf("publish on %s/%s, want probes on room-1/%s only", p.Channel, p.Topic, ProbeTopic)
				}
				probes++
			}
			if probes == 0 {
				t.Error("no probe published")
			}
			if got := counterValue(t, reg, "switchyard_upstream_requests_total", map[string]string{"op": "probe", "class": "2xx"}); got < 1 {
				t.Errorf("probe requests counted: %v, want >= 1 under op=probe", got)
			}
			if got := counterValue(t, reg, "switchyard_upstream_requests_total", map[string]string{"op": "publish"}); got != 0 {
				t.Errorf("probes counted as publishes: %v", got)
			}
			if !hasSample(t, reg, "switchyard_subscriber_ready_seconds") {
				t.Error("no switchyard_subscriber_ready_seconds sample")
			}
		})
	}
}

// counterValue sums the samples of a counter whose labels include want.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func TestConfigRefusesProbeTopic(t *testing.T) {
	err := Config{URL: "http://127.0.0.1:1", Topics: map[string]string{"ai": ProbeTopic}}.Validate()
	if err == nil || !strings.Contains(err.Error(), `topics["ai"]`) || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("Validate: got %v, want topics[\"ai\"] reserved", err)
	}
}

// hasSample reports whether a histogram of reg has an observation.
func hasSample(t *testing.T, reg *prometheus.Registry, name string) bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				if m.GetHistogram().GetSampleCount() > 0 {
					return true
				}
			}
		}
	}
	return false
}
