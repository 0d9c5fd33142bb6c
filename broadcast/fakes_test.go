package broadcast

import (
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// fakePublisher is a Publisher made of a function field; it records every
// message it was asked to publish, in call order.
type fakePublisher struct {
	publish func(ctx context.Context, m *Message) (PublishResult, error)

	mu  sync.Mutex
	got []*Message
}

var _ Publisher = (*fakePublisher)(nil)

func (f *fakePublisher) Publish(ctx context.Context, m *Message) (PublishResult, error) {
	f.mu.Lock()
	f.got = append(f.got, m)
	f.mu.Unlock()
	if f.publish == nil {
		return PublishResult{Attempts: 1}, nil
	}
	return f.publish(ctx, m)
}

// messages returns a copy of the recorded messages.
func (f *fakePublisher) messages() []*Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Message(nil), f.got...)
}

// seqsOf returns the Seq of the recorded messages of room, in call order.
func (f *fakePublisher) seqsOf(room string) []uint64 {
	var out []uint64
	for _, m := range f.messages() {
		if m.Room == room {
			out = append(out, m.Seq)
		}
	}
	return out
}

// fakeResolver is a StageResolver made of a function field.
type fakeResolver struct {
	resolve func(q RouteQuery) Route
}

var _ StageResolver = fakeResolver{}

func (f fakeResolver) Resolve(q RouteQuery) Route { return f.resolve(q) }

// fixedStage resolves every message to s.
func fixedStage(s Stage) fakeResolver {
	return fakeResolver{resolve: func(q RouteQuery) Route { return Route{Stage: s, Channel: q.Channel} }}
}

// fakeObserver is an Observer and DropObserver made of function fields (nil
// ones do nothing).
type fakeObserver struct {
	expect  func(m *Message, stage Stage)
	dropped func(m *Message, t Transport, reason string)
	await   func(ctx context.Context, m *Message, t Transport)
}

var (
	_ Observer     = fakeObserver{}
	_ DropObserver = fakeObserver{}
	_ WatchAwaiter = fakeObserver{}
)

func (f fakeObserver) AwaitWatch(ctx context.Context, m *Message, t Transport) {
	if f.await != nil {
		f.await(ctx, m, t)
	}
}

func (f fakeObserver) Expect(m *Message, stage Stage) {
	if f.expect != nil {
		f.expect(m, stage)
	}
}

func (f fakeObserver) Dropped(m *Message, t Transport, reason string) {
	if f.dropped != nil {
		f.dropped(m, t, reason)
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testRig bundles a Multicaster with its fakes.
type testRig struct {
	mc       *Multicaster
	legacy   *fakePublisher
	realtime *fakePublisher
	reg      *prometheus.Registry
	clock    *fakeClock
}

type rigOpts struct {
	cfg      Config
	resolver StageResolver
	observer Observer
	logger   *zap.Logger
	legacy   func(ctx context.Context, m *Message) (PublishResult, error)
	realtime func(ctx context.Context, m *Message) (PublishResult, error)
	// noRun leaves Run to the test (Close still runs at its end).
	noRun bool
}

// newRig builds a Multicaster over fake publishers and closes it at the end
// of the test.
func newRig(tb testing.TB, o rigOpts) *testRig {
	tb.Helper()
	r := &testRig{
		legacy:   &fakePublisher{publish: o.legacy},
		realtime: &fakePublisher{publish: o.realtime},
		reg:      prometheus.NewRegistry(),
		clock:    newFakeClock(),
	}
	if o.resolver == nil {
		o.resolver = fixedStage(StageLegacy)
	}
	r.mc = NewMulticaster(o.cfg, r.legacy, r.realtime, o.resolver, o.observer, NewMetrics(r.reg), o.logger, r.clock.Now)
	if o.noRun {
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			r.mc.Close(ctx)
		})
		return r
	}
	r.runMulticaster(tb)
	return r
}

// runMulticaster runs r.mc.Run in a goroutine, as the gateway's errgroup
// does, and at the end of the test closes the Multicaster, ends Run's
// context and checks that Run returned nil.
func (r *testRig) runMulticaster(tb testing.TB) {
	tb.Helper()
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- r.mc.Run(runCtx) }()
	waitFor(tb, "Run to start its workers", r.mc.isWorking)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r.mc.Close(ctx)
		stop()
		if err := <-ran; err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
}

// drain closes the Multicaster, waiting for its off-path work.
func (r *testRig) drain(tb testing.TB) DrainReport {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.mc.Close(ctx)
}

// mustMessage builds a valid message, idempotent on its requestId as the
// broadcast API makes it, or fails the test.
func mustMessage(tb testing.TB, app, room, name, requestID string) *Message {
	tb.Helper()
	m, err := NewMessage(app, room, name, requestID, json.RawMessage(`{"n":1}`), "", time.Now())
	if err != nil {
		tb.Fatalf("NewMessage: %v", err)
	}
	m.IdempotencyKey = requestID
	return m
}

// counter reads one child of a counter or gauge vector from the registry.
func metricValue(tb testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// waitFor polls cond until it holds or a generous deadline passes; it never
// asserts on how long it took.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// isWorking reports whether Run has started the workers.
func (mc *Multicaster) isWorking() bool {
	mc.closeMu.Lock()
	defer mc.closeMu.Unlock()
	return mc.working
}

// goroutinesBackTo waits until the goroutine count is at most base.
func goroutinesBackTo(tb testing.TB, base int) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			tb.Fatalf("goroutines: got %d, want at most %d\n%s", n, base, buf)
		}
		time.Sleep(time.Millisecond)
	}
}
