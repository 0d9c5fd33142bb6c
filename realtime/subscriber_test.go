package realtime

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

type subFixture struct {
	srv *realtimetest.Server
	c   *Client
	s   *Subscriber
	in  *inbox
	mr  metricsReg
}

func newSubFixture(t *testing.T, scfg realtimetest.Config, ccfg Config) subFixture {
	t.Helper()
	f := subFixture{srv: newServer(t, scfg), in: &inbox{}, mr: newMetrics()}
	f.c = mustClient(t, f.srv.URL(), ccfg, f.mr.m)
	s, err := NewSubscriber(SubscriberConfig{URL: f.srv.URL(), OnMsg: f.in.add, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Settle: 10 * time.Millisecond, Now: f.srv.Now}, f.c, f.mr.m, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	runSubscriber(t, s)
	return f
}

func (f subFixture) sub(t *testing.T, channel string, topics ...string) *Subscription {
	t.Helper()
	tok, err := f.c.MintToken(context.Background(), channel, topics)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := f.s.Sub(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "subscription ready", sub.Ready)
	for _, topic := range topics {
		eventually(t, "server sees the subscription", func() bool { return f.srv.Subscribed(channel, topic) == 1 })
	}
	return sub
}

func (f subFixture) publish(t *testing.T, room, channel, body string) []byte {
	t.Helper()
	m := mustMessage(t, room, channel, body)
	if _, err := f.c.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m.Envelope
}

func TestSubscriberReceivesData(t *testing.T) {
	f := newSubFixture(t, realtimetest.Config{}, Config{})
	f.sub(t, "room-1", "ai")
	env := f.publish(t, "room-1", "ai", `{"n":1}`)
	f.publish(t, "room-2", "ai", `{"n":2}`) // another room: not received
	eventually(t, "one message", func() bool { return f.in.len() == 1 })
	got := f.in.all()[0]
	if got.Kind != "data" || got.Channel != "room-1" || got.Topic != "ai" || string(got.Data) != string(env) {
		t.Fatalf("got %+v, want data frame of room-1/ai with %s", got, env)
	}
	if got.CreatedAt.IsZero() || got.ReceivedAt.IsZero() {
		t.Fatalf("times not set: %+v", got)
	}
}

func TestSubscriberSubUnsubOnOpenConnection(t *testing.T) {
	f := newSubFixture(t, realtimetest.Config{}, Config{})
	a := f.sub(t, "room-a", "ai")
	b := f.sub(t, "room-b", "ai", "default")
	if got := f.srv.Counts(); got.Connects != 1 || got.SubFrames != 1 {
		t.Fatalf("connects %d, sub frames %d: want 1 and 1 (second sub on the open connection)", got.Connects, got.SubFrames)
	}
	f.publish(t, "room-b", "default", `"x"`)
	eventually(t, "room-b message", func() bool { return f.in.len() == 1 })
	b.Unsub()
	eventually(t, "unsub applied", func() bool { return f.srv.Subscribed("room-b", "default") == 0 })
	if f.srv.Subscribed("room-a", "ai") != 1 {
		t.Fatalf("unsub of room-b removed room-a")
	}
	f.publish(t, "room-b", "default", `"y"`)
	f.publish(t, "room-a", "ai", `"z"`)
	eventually(t, "room-a message", func() bool { return f.in.len() == 2 })
	if got := f.in.all()[1].Channel; got != "room-a" {
		t.Fatalf("second message from %q, want room-a (room-b was unsubscribed)", got)
	}
	a.Unsub()
	a.Unsub() // idempotent
}

func TestSubscriberReconnectsWithFreshToken(t *testing.T) {
	f := newSubFixture(t, realtimetest.Config{}, Config{})
	f.sub(t, "room-1", "ai")
	f.sub(t, "room-2", "ai")
	before := len(f.srv.Tokens())
	f.srv.Advance(2 * time.Minute) // every token issued so far has expired
	f.srv.DropConnections()
	eventually(t, "reconnect", func() bool { return f.srv.Counts().Connects == 2 })
	eventually(t, "re-subscribed", func() bool {
		return f.srv.Subscribed("room-1", "ai") == 1 && f.srv.Subscribed("room-2", "ai") == 1
	})
	if got := len(f.srv.Tokens()) - before; got < 2 {
		t.Fatalf("fresh tokens minted: got %d, want at least 2 (handshake and re-sub)", got)
	}
	if got := f.srv.Counts().BadSubs; got != 0 {
		t.Fatalf("server refused %d expired sub tokens", got)
	}
	f.publish(t, "room-2", "ai", `1`)
	eventually(t, "message after reconnect", func() bool { return f.in.len() == 1 })
	if got := f.mr.counter(t, "switchyard_subscriber_reconnects_total", map[string]string{"transport": "realtime"}); got < 1 {
		t.Fatalf("reconnects metric: got %v, want >= 1", got)
	}
}

func TestSubscriberHandshake401MintsFreshToken(t *testing.T) {
	f := newSubFixture(t, realtimetest.Config{}, Config{})
	tok, err := f.c.MintToken(context.Background(), "room-1", []string{"ai"})
	if err != nil {
		t.Fatal(err)
	}
	tok.ExpiresAt = time.Now().Add(time.Hour) // we believe it is valid; the server does not
	f.srv.Advance(2 * time.Minute)
	sub, err := f.s.Sub(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready", sub.Ready)
	if got := f.srv.Counts().Rejected; got != 1 {
		t.Fatalf("handshakes rejected: got %d, want 1", got)
	}
}

func TestSubscriberClosingReconnects(t *testing.T) {
	f := newSubFixture(t, realtimetest.Config{}, Config{})
	f.sub(t, "room-1", "ai")
	f.srv.CloseConnections()
	eventually(t, "reconnect after closing", func() bool { return f.srv.Counts().Connects == 2 && f.srv.Subscribed("room-1", "ai") == 1 })
}

func TestSubscriberAnswersPings(t *testing.T) {
	// A client that stops answering is closed after maxMissed+1 ping
	// periods: the window is wide against a loaded machine's scheduling
	// delays, and the test waits for more answered pings than it.
	const maxMissed = 25
	f := newSubFixture(t, realtimetest.Config{PingInterval: 20 * time.Millisecond, MaxMissedPongs: maxMissed}, Config{})
	f.sub(t, "room-1", "ai")
	eventually(t, "pongs to more pings than a silent client survives", func() bool { return f.srv.Counts().Pongs > 2*maxMissed })
	if got := f.srv.Counts().Connects; got != 1 {
		t.Fatalf("connects: got %d, want 1 (pongs keep the connection)", got)
	}
}

func TestServerClosesSilentClient(t *testing.T) {
	srv := newServer(t, realtimetest.Config{PingInterval: 20 * time.Millisecond, MaxMissedPongs: 2})
	c := mustClient(t, srv.URL(), Config{}, nil)
	tok, err := c.MintToken(context.Background(), "room-1", []string{"ai"})
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(srv.URL(), "http", "ws", 1)+"/v1/realtime/connect?token="+tok.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// Never read: pings go unanswered.
	eventually(t, "server drops the silent client", func() bool { return srv.Connections() == 0 })
}

func TestSubscriberSkipsBadFrames(t *testing.T) {
	frames := []struct {
		typ  int
		data string
	}{
		{websocket.BinaryMessage, "\x00\x01"},
		{websocket.TextMessage, "not json"},
		{websocket.TextMessage, `{"data":1}`},
		{websocket.TextMessage, `{"kind":"data","channel":"c","data":1}`},
		{websocket.TextMessage, `{"kind":"step","data":1}`},
		{websocket.TextMessage, `{"kind":"data","channel":"c","topic":"t","data":{"ok":true},"created_at":"2026-11-23T12:00:00.123456789Z"}`},
	}
	up := websocket.Upgrader{}
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		for _, f := range frames {
			_ = ws.WriteMessage(f.typ, []byte(f.data))
		}
		_, _, _ = ws.ReadMessage() // wait for the client to go
		_ = ws.Close()
	}))
	defer srv.Close()
	in := &inbox{}
	mr := newMetrics()
	s, err := NewSubscriber(SubscriberConfig{URL: srv.URL, OnMsg: in.add}, nil, mr.m, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	tok := broadcast.Token{Key: mustJWT(t), Channel: "c", Topics: []string{"t"}}
	if _, err := s.Sub(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	eventually(t, "the good frame", func() bool { return in.len() == 1 })
	cancel()
	<-done
	wg.Wait()
	if got := string(in.all()[0].Data); got != `{"ok":true}` {
		t.Fatalf("data: got %s", got)
	}
	for reason, want := range map[string]float64{"binary": 1, "not_json": 1, "bad_frame": 2, "kind": 1} {
		if got := mr.counter(t, "switchyard_subscriber_frames_skipped_total", map[string]string{"transport": "realtime", "reason": reason}); got != want {
			t.Errorf("skipped %s: got %v, want %v", reason, got, want)
		}
	}
}

func mustJWT(tb testing.TB) string {
	tb.Helper()
	return "eyJhbGciOiJIUzI1NiJ9." + b64(`{"exp":4102444800,"topics":[{"kind":"run","env_id":"e","channel":"c","name":"t"}]}`) + ".c2ln"
}

func b64(s string) string {
	const enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	var out []byte
	b := []byte(s)
	for len(b) >= 3 {
		n := uint(b[0])<<16 | uint(b[1])<<8 | uint(b[2])
		out = append(out, enc[n>>18&63], enc[n>>12&63], enc[n>>6&63], enc[n&63])
		b = b[3:]
	}
	switch len(b) {
	case 1:
		n := uint(b[0]) << 16
		out = append(out, enc[n>>18&63], enc[n>>12&63])
	case 2:
		n := uint(b[0])<<16 | uint(b[1])<<8
		out = append(out, enc[n>>18&63], enc[n>>12&63], enc[n>>6&63])
	}
	return string(out)
}

func TestDecodeFrame(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		kind   string
		reason string // "" for success
	}{
		{"data", `{"kind":"data","data":{"a":1},"created_at":"2026-11-23T12:00:00Z","channel":"c","env_id":"e","topic":"t","run_id":"r"}`, "data", ""},
		{"data string", `{"kind":"data","data":"s","channel":"c","topic":"t"}`, "data", ""},
		{"closing", `{"kind":"closing"}`, "closing", ""},
		{"chunk", `{"kind":"chunk","stream_id":"x","data":"abc"}`, "chunk", ""},
		{"not json", `{`, "", "not_json"},
		{"array", `[1]`, "", "bad_frame"},
		{"no kind", `{"data":1}`, "", "bad_frame"},
		{"kind number", `{"kind":1}`, "", "bad_frame"},
		{"no topic", `{"kind":"data","data":1,"channel":"c"}`, "", "bad_frame"},
		{"no data", `{"kind":"data","channel":"c","topic":"t"}`, "", "bad_frame"},
		{"bad time", `{"kind":"data","data":1,"channel":"c","topic":"t","created_at":"yesterday"}`, "", "bad_frame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeFrame([]byte(tt.in))
			if tt.reason != "" {
				if err == nil || frameErrReason(err) != tt.reason {
					t.Fatalf("got %v, want reason %s", err, tt.reason)
				}
				return
			}
			if err != nil || m.Kind != tt.kind {
				t.Fatalf("got %+v %v, want kind %s", m, err, tt.kind)
			}
		})
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte(`{"kind":"data","data":{"a":1},"created_at":"2026-11-23T12:00:00Z","channel":"c","env_id":"e","topic":"t"}`))
	f.Add([]byte(`{"kind":"closing"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeFrame(b)
		if err != nil {
			return
		}
		if m.Kind == "" {
			t.Fatalf("accepted a frame without kind")
		}
		if m.Kind == "data" && (m.Channel == "" || m.Topic == "" || !json.Valid(m.Data)) {
			t.Fatalf("accepted an incomplete data frame: %+v", m)
		}
	})
}

func TestSubscriberHandshakeFaults(t *testing.T) {
	tests := []struct {
		name  string
		fault realtimetest.HTTPFault
	}{
		{"5xx", realtimetest.HTTPFault{Status: 503, Times: 2}},
		{"reset", realtimetest.HTTPFault{Reset: true, Times: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSubFixture(t, realtimetest.Config{}, Config{})
			f.srv.SetConnectFault(tt.fault)
			f.sub(t, "room-1", "ai")
			f.publish(t, "room-1", "ai", `1`)
			eventually(t, "message after failed handshakes", func() bool { return f.in.len() == 1 })
		})
	}
}

func TestSubscriberHandshakeHangBounded(t *testing.T) {
	srv := newServer(t, realtimetest.Config{})
	srv.SetConnectFault(realtimetest.HTTPFault{Hang: true, Times: 1})
	c := mustClient(t, srv.URL(), Config{}, nil)
	in := &inbox{}
	s, err := NewSubscriber(SubscriberConfig{URL: srv.URL(), OnMsg: in.add, Dialer: &websocket.Dialer{HandshakeTimeout: 100 * time.Millisecond}, BackoffMin: 10 * time.Millisecond, Settle: time.Millisecond}, c, nil, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runSubscriber(t, s)
	tok, err := c.MintToken(context.Background(), "room-1", []string{"ai"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := s.Sub(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready after a hung handshake", sub.Ready)
}
