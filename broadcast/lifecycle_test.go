package broadcast

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// runAsync runs mc.Run(ctx) in a goroutine; the channel gets its result.
func runAsync(mc *Multicaster, ctx context.Context) <-chan error {
	ran := make(chan error, 1)
	go func() { ran <- mc.Run(ctx) }()
	return ran
}

// mustReturn waits for Run's result, failing the test if it takes long.
func mustReturn(tb testing.TB, ran <-chan error) error {
	tb.Helper()
	select {
	case err := <-ran:
		return err
	case <-time.After(5 * time.Second):
		tb.Fatal("Run did not return")
		return nil
	}
}

func TestNewMulticasterStartsNothing(t *testing.T) {
	base := runtime.NumGoroutine()
	mcs := make([]*Multicaster, 10)
	for i := range mcs {
		mcs[i] = NewMulticaster(Config{OffPathWorkers: 8}, &fakePublisher{}, &fakePublisher{}, fixedStage(StageShadow), nil, nil, nil, nil)
	}
	if got := runtime.NumGoroutine(); got > base {
		t.Errorf("goroutines after 10 NewMulticaster: got %d, want at most %d", got, base)
	}
	for _, mc := range mcs {
		mc.Close(context.Background())
	}
	goroutinesBackTo(t, base)
}

// Before Run, the answering side publishes and the off-path copy waits in
// its queue; Run's workers publish it; Close drains and ends Run, which
// leaves no goroutine behind.
func TestPublishBeforeAndAfterRun(t *testing.T) {
	base := runtime.NumGoroutine()
	r := newRig(t, rigOpts{cfg: Config{OffPathWorkers: 2}, resolver: fixedStage(StageShadow), noRun: true})
	out, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "before"))
	if err != nil {
		t.Fatalf("Broadcast before Run: %v", err)
	}
	if got, want := out.Deliveries[TransportLegacy].Status, Delivered; got != want {
		t.Errorf("answering before Run: got %q, want %q", got, want)
	}
	if got, want := out.Deliveries[TransportRealtime].Status, Queued; got != want {
		t.Errorf("off-path before Run: got %q, want %q", got, want)
	}
	if got := len(r.realtime.messages()); got != 0 {
		t.Errorf("off-path publishes before Run: got %d, want 0", got)
	}

	ran := runAsync(r.mc, context.Background())
	waitFor(t, "the queued copy to be published", func() bool { return len(r.realtime.messages()) == 1 })
	if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "after")); err != nil {
		t.Fatalf("Broadcast after Run: %v", err)
	}
	waitFor(t, "the second copy to be published", func() bool { return len(r.realtime.messages()) == 2 })
	if got, want := r.realtime.seqsOf("room"), []uint64{1, 2}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("off-path order: got %v, want %v", got, want)
	}

	if got, want := r.mc.Close(context.Background()), (DrainReport{}); got != want {
		t.Errorf("Close: got %+v, want %+v", got, want)
	}
	if err := mustReturn(t, ran); err != nil {
		t.Errorf("Run after Close: got %v, want nil", err)
	}
	if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "late")); ErrorCode(err) != EDRAINING {
		t.Errorf("Broadcast after Close: got %v, want %s", err, EDRAINING)
	}
	goroutinesBackTo(t, base)
}

func TestRunTwiceIsAnError(t *testing.T) {
	r := newRig(t, rigOpts{})
	if err := r.mc.Run(context.Background()); err == nil {
		t.Fatal("second Run: got nil, want an error")
	}
}

// The end of Run's ctx is an abrupt shutdown: intake stops, the running
// off-path publish is cancelled, the queued ones are dropped, and Close
// afterwards returns that shutdown's report.
func TestRunContextEndStopsAbruptly(t *testing.T) {
	base := runtime.NumGoroutine()
	b := newBlocker()
	r := newRig(t, rigOpts{cfg: Config{OffPathWorkers: 1}, resolver: fixedStage(StageShadow), realtime: b.publish, noRun: true})
	ctx, cancel := context.WithCancel(context.Background())
	ran := runAsync(r.mc, ctx)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", id)); err != nil {
			t.Fatalf("Broadcast: %v", err)
		}
	}
	<-b.started
	cancel()
	if err := mustReturn(t, ran); err != nil {
		t.Errorf("Run after its ctx ended: got %v, want nil", err)
	}
	want := DrainReport{Dropped: 3}
	if got := r.mc.Close(context.Background()); got != want {
		t.Errorf("Close after Run's ctx ended: got %+v, want %+v", got, want)
	}
	if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "late")); ErrorCode(err) != EDRAINING {
		t.Errorf("Broadcast after Run's ctx ended: got %v, want %s", err, EDRAINING)
	}
	if got := metricValue(t, r.reg, "switchyard_offpath_dropped_total", map[string]string{"transport": "realtime", "reason": "shutdown"}); got != 3 {
		t.Errorf("shutdown drops: got %v, want 3", got)
	}
	goroutinesBackTo(t, base)
}

// Close before Run: nothing will ever publish the queued copies, so they
// are dropped at once; a later Run returns nil without starting anything.
func TestCloseBeforeRun(t *testing.T) {
	base := runtime.NumGoroutine()
	r := newRig(t, rigOpts{resolver: fixedStage(StageDual), noRun: true})
	if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "id")); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, want := r.mc.Close(ctx), (DrainReport{Dropped: 1}); got != want {
		t.Errorf("Close before Run: got %+v, want %+v", got, want)
	}
	if err := r.mc.Run(context.Background()); err != nil {
		t.Errorf("Run after Close: got %v, want nil", err)
	}
	if got := len(r.legacy.messages()); got != 0 {
		t.Errorf("off-path publishes: got %d, want 0", got)
	}
	goroutinesBackTo(t, base)
}
