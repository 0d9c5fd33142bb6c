package realtime

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/realtime/realtimetest"
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
	c := mustClient(t, srv.URL(), cfg, nil)
	w := NewWatcher(map[string]*Client{"app1": c}, []string{"ai", broadcast.DefaultChannel}, nil, zaptest.NewLogger(t),
		WithSettle(10*time.Millisecond), WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	t.Cleanup(func() { _ = w.Close() })
	return w, c
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
	w, _ := newWatcher(t, srv, Config{})
	if _, err := w.WatchRoom("nope", "room-1", nil); broadcast.ErrorCode(err) != broadcast.ENOTFOUND {
		t.Errorf("unknown app: got %v, want %s", err, broadcast.ENOTFOUND)
	}
	if _, err := w.WatchRoom("app1", "a/b", nil); broadcast.ErrorCode(err) != broadcast.EROOM {
		t.Errorf("bad room: got %v, want %s", err, broadcast.EROOM)
	}
	_ = w.Close()
	if _, err := w.WatchRoom("app1", "room-1", nil); broadcast.ErrorCode(err) != broadcast.EDRAINING {
		t.Errorf("after Close: got %v, want %s", err, broadcast.EDRAINING)
	}
}

func TestWatcherNotReadyWhileTokensFail(t *testing.T) {
	srv := newServer(t, realtimetest.Config{SigningKey: testKey})
	w, _ := newWatcher(t, srv, Config{SigningKey: otherKey})
	wa, err := w.WatchRoom("app1", "room-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a refused token request", func() bool { return srv.Counts().Unauthorized >= 1 })
	time.Sleep(50 * time.Millisecond)
	if wa.Ready() {
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
