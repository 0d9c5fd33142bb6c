package shadow

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
)

// fakeClock is the injectable clock of the tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// fakeWatch is a broadcast.Watch whose readiness the test sets.
type fakeWatch struct {
	app, room string
	onFrame   func([]byte, time.Time)
	ready     atomic.Bool
	closed    atomic.Bool
}

func (w *fakeWatch) Ready() bool  { return w.ready.Load() && !w.closed.Load() }
func (w *fakeWatch) Close() error { w.closed.Store(true); return nil }

// deliver hands a frame to the comparator as the transport would.
func (w *fakeWatch) deliver(data string, at time.Time) {
	if !w.closed.Load() {
		w.onFrame([]byte(data), at)
	}
}

// fakeWatcher is a RoomWatcher made of a function field (nil: succeed) and
// a record of the watches it opened.
type fakeWatcher struct {
	// fail, when set, decides whether WatchRoom fails.
	fail      func(app, room string) error
	startDown bool // new watches start not ready

	mu      sync.Mutex
	watches map[string][]*fakeWatch
	calls   int
}

func (f *fakeWatcher) WatchRoom(app, room string, onFrame func([]byte, time.Time)) (broadcast.Watch, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		if err := f.fail(app, room); err != nil {
			return nil, err
		}
	}
	w := &fakeWatch{app: app, room: room, onFrame: onFrame}
	w.ready.Store(!f.startDown)
	if f.watches == nil {
		f.watches = map[string][]*fakeWatch{}
	}
	f.watches[app+"/"+room] = append(f.watches[app+"/"+room], w)
	return w, nil
}

// last returns the newest watch of app/room, failing the test if none.
func (f *fakeWatcher) last(tb testing.TB, app, room string) *fakeWatch {
	tb.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	ws := f.watches[app+"/"+room]
	if len(ws) == 0 {
		tb.Fatalf("no watch opened for %s/%s", app, room)
	}
	return ws[len(ws)-1]
}

func (f *fakeWatcher) count(app, room string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watches[app+"/"+room])
}

// harness drives a Comparator without Run: pump runs the dial and frame
// work synchronously, sweep is called with the fake clock.
type harness struct {
	c        *Comparator
	clock    *fakeClock
	legacy   *fakeWatcher
	realtime *fakeWatcher
	reg      *prometheus.Registry
	seq      map[string]uint64
}

func newHarness(tb testing.TB, cfg Config, logger *zap.Logger) *harness {
	tb.Helper()
	h := &harness{
		clock: newFakeClock(), legacy: &fakeWatcher{}, realtime: &fakeWatcher{},
		reg: prometheus.NewRegistry(), seq: map[string]uint64{},
	}
	h.c = New(cfg, h.legacy, h.realtime, NewMetrics(h.reg), logger, h.clock.Now)
	return h
}

// pump runs queued room operations and frames until both queues are empty.
func (h *harness) pump() {
	for {
		worked := false
		select {
		case op := <-h.c.ops:
			worked = true
			if op.close {
				h.c.closeWatches(op.room)
			} else {
				h.c.open(op.room)
			}
		case <-h.c.evictReq:
			worked = true
			h.c.evictLRU()
		default:
		}
		for _, q := range h.c.workers {
			for len(q) > 0 {
				worked = true
				h.c.handle(<-q)
			}
		}
		if !worked {
			return
		}
	}
}

// msg builds a message of app/room accepted now, with the next Seq of room.
func (h *harness) msg(tb testing.TB, app, room, channel, id, body string) *broadcast.Message {
	tb.Helper()
	m, err := broadcast.NewMessage(app, room, "video.asset.ready", id, json.RawMessage(body), channel, h.clock.Now())
	if err != nil {
		tb.Fatalf("NewMessage: %v", err)
	}
	h.seq[app+"/"+room]++
	m.Seq = h.seq[app+"/"+room]
	return m
}

// observe makes app/room observed and ready on both sides: a first Expect
// (counted unobserved) triggers the dial, the pump opens the watches. When
// the table was full, that first Expect only made room (evicting the least
// recently used rooms) and a second one is admitted.
func (h *harness) observe(tb testing.TB, app, room string) (legacy, realtime *fakeWatch) {
	tb.Helper()
	before := h.legacy.count(app, room)
	for i := 0; i < 2 && h.legacy.count(app, room) == before; i++ {
		prime := h.msg(tb, app, room, "prime", fmt.Sprintf("prime-%s-%d-%d", room, h.clock.Now().UnixNano(), i), `{}`)
		h.c.Expect(prime, broadcast.StageShadow)
		h.pump()
	}
	return h.legacy.last(tb, app, room), h.realtime.last(tb, app, room)
}

// count returns the outcome counter of app/channel.
func (h *harness) count(app, channel string, o Outcome) int {
	return int(testutil.ToFloat64(h.c.m.outcomes.WithLabelValues(app, channel, string(o))))
}

// counts returns every non-zero outcome of app/channel.
func (h *harness) counts(app, channel string) map[Outcome]int {
	out := map[Outcome]int{}
	for _, o := range outcomes {
		if n := h.count(app, channel, o); n > 0 {
			out[o] = n
		}
	}
	return out
}

func (h *harness) foreign(t broadcast.Transport) int {
	return int(testutil.ToFloat64(h.c.m.foreign.WithLabelValues(string(t))))
}

var errDial = errors.New("dial refused")
