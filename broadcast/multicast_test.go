package broadcast

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestBroadcastStages(t *testing.T) {
	tests := []struct {
		stage                 Stage
		wantLegacy, wantRT    DeliveryStatus
		legacyCalls, rtCalls  int
		wantAnswer            Transport
		wantOffDeliveredLabel string // transport whose off-path delivery is counted
	}{
		{stage: StageLegacy, wantLegacy: Delivered, wantRT: Skipped, legacyCalls: 1, rtCalls: 0, wantAnswer: TransportLegacy},
		{stage: StageShadow, wantLegacy: Delivered, wantRT: Queued, legacyCalls: 1, rtCalls: 1, wantAnswer: TransportLegacy, wantOffDeliveredLabel: "realtime"},
		{stage: StageDual, wantLegacy: Queued, wantRT: Delivered, legacyCalls: 1, rtCalls: 1, wantAnswer: TransportRealtime, wantOffDeliveredLabel: "legacy"},
		{stage: StageRealtime, wantLegacy: Skipped, wantRT: Delivered, legacyCalls: 0, rtCalls: 1, wantAnswer: TransportRealtime},
	}
	for _, tt := range tests {
		t.Run(string(tt.stage), func(t *testing.T) {
			r := newRig(t, rigOpts{resolver: fixedStage(tt.stage)})
			m := mustMessage(t, "app", "room-1", "video.ready", "req-1")
			out, err := r.mc.Broadcast(context.Background(), m)
			if err != nil {
				t.Fatalf("Broadcast: %v", err)
			}
			if got, want := out.Stage, tt.stage; got != want {
				t.Errorf("stage: got %q, want %q", got, want)
			}
			if got, want := out.RequestID, "req-1"; got != want {
				t.Errorf("requestId: got %q, want %q", got, want)
			}
			if got, want := out.Deliveries[TransportLegacy].Status, tt.wantLegacy; got != want {
				t.Errorf("legacy: got %q, want %q", got, want)
			}
			if got, want := out.Deliveries[TransportRealtime].Status, tt.wantRT; got != want {
				t.Errorf("realtime: got %q, want %q", got, want)
			}
			if got, want := out.Deliveries[tt.wantAnswer].Attempts, 1; got != want {
				t.Errorf("answering attempts: got %d, want %d", got, want)
			}
			if m.Seq == 0 {
				t.Errorf("Seq not assigned")
			}
			r.drain(t)
			if got, want := len(r.legacy.messages()), tt.legacyCalls; got != want {
				t.Errorf("legacy publishes: got %d, want %d", got, want)
			}
			if got, want := len(r.realtime.messages()), tt.rtCalls; got != want {
				t.Errorf("realtime publishes: got %d, want %d", got, want)
			}
			if got := metricValue(t, r.reg, "switchyard_messages_accepted_total", map[string]string{"app": "app", "channel": "default", "stage": string(tt.stage)}); got != 1 {
				t.Errorf("accepted: got %v, want 1", got)
			}
			if got := metricValue(t, r.reg, "switchyard_deliveries_total", map[string]string{"app": "app", "channel": "default", "transport": string(tt.wantAnswer), "status": "delivered"}); got != 1 {
				t.Errorf("answering deliveries: got %v, want 1", got)
			}
			if tt.wantOffDeliveredLabel != "" {
				if got := metricValue(t, r.reg, "switchyard_deliveries_total", map[string]string{"app": "app", "channel": "default", "transport": tt.wantOffDeliveredLabel, "status": "delivered"}); got != 1 {
					t.Errorf("off-path deliveries: got %v, want 1", got)
				}
			}
			if got := r.mc.rooms.len(); got != 0 {
				t.Errorf("live rooms after drain: got %d, want 0", got)
			}
		})
	}
}

func TestBroadcastUnknownStageIsLegacy(t *testing.T) {
	r := newRig(t, rigOpts{resolver: fixedStage("bogus")})
	out, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "r", "e", "id"))
	if err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	if got, want := out.Stage, StageLegacy; got != want {
		t.Errorf("stage: got %q, want %q", got, want)
	}
}

func TestBroadcastAnsweringFailure(t *testing.T) {
	boom := &Error{Code: EUPSTREAM, Message: "HTTP 503 from upstream"}
	tooBig := &Error{Code: ETOOLARGE, Message: "too large for realtime"}
	tests := []struct {
		name      string
		stage     Stage
		failing   Transport
		cause     error
		wantCode  string
		wantInMsg string
	}{
		{name: "legacy", stage: StageLegacy, failing: TransportLegacy, cause: boom, wantCode: EUPSTREAM, wantInMsg: "legacy transport failed: HTTP 503 from upstream"},
		{name: "shadow", stage: StageShadow, failing: TransportLegacy, cause: boom, wantCode: EUPSTREAM, wantInMsg: "legacy transport failed"},
		{name: "dual", stage: StageDual, failing: TransportRealtime, cause: boom, wantCode: EUPSTREAM, wantInMsg: "realtime transport failed"},
		{name: "realtime", stage: StageRealtime, failing: TransportRealtime, cause: errors.New("dial tcp: refused"), wantCode: EUPSTREAM, wantInMsg: "realtime transport failed: internal error"},
		{name: "refused before sending", stage: StageRealtime, failing: TransportRealtime, cause: tooBig, wantCode: ETOOLARGE, wantInMsg: "realtime transport refused the message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fail atomic.Bool
			fail.Store(true)
			pub := func(ctx context.Context, m *Message) (PublishResult, error) {
				if fail.Load() {
					return PublishResult{Attempts: 4}, tt.cause
				}
				return PublishResult{Attempts: 1}, nil
			}
			o := rigOpts{resolver: fixedStage(tt.stage)}
			if tt.failing == TransportLegacy {
				o.legacy = pub
			} else {
				o.realtime = pub
			}
			r := newRig(t, o)
			out, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "req-1"))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error: got %v, want *Error", err)
			}
			if got, want := e.Code, tt.wantCode; got != want {
				t.Errorf("code: got %q, want %q", got, want)
			}
			if got, want := e.Transport, tt.failing; got != want {
				t.Errorf("transport: got %q, want %q", got, want)
			}
			if !strings.Contains(e.Message, tt.wantInMsg) {
				t.Errorf("message: got %q, want it to contain %q", e.Message, tt.wantInMsg)
			}
			if !errors.Is(err, tt.cause) {
				t.Errorf("error does not wrap the cause: %v", err)
			}
			d := out.Deliveries[tt.failing]
			if got, want := d.Status, Failed; got != want {
				t.Errorf("status: got %q, want %q", got, want)
			}
			if got, want := d.Attempts, 4; got != want {
				t.Errorf("attempts: got %d, want %d", got, want)
			}
			// The app's retry of the same requestId goes through.
			fail.Store(false)
			out, err = r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "req-1"))
			if err != nil {
				t.Fatalf("retry: %v", err)
			}
			if got, want := out.Deliveries[tt.failing].Status, Delivered; got != want {
				t.Errorf("retry status: got %q, want %q", got, want)
			}
		})
	}
}

func TestBroadcastOffPathFailureNotReturned(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	tests := []struct {
		stage   Stage
		offPath Transport
	}{
		{StageShadow, TransportRealtime},
		{StageDual, TransportLegacy},
	}
	for _, tt := range tests {
		t.Run(string(tt.stage), func(t *testing.T) {
			fail := func(ctx context.Context, m *Message) (PublishResult, error) {
				return PublishResult{Attempts: 4}, &Error{Code: EUPSTREAM, Message: "HTTP 500"}
			}
			o := rigOpts{resolver: fixedStage(tt.stage), logger: zap.New(core)}
			if tt.offPath == TransportLegacy {
				o.legacy = fail
			} else {
				o.realtime = fail
			}
			r := newRig(t, o)
			out, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "req-"+string(tt.stage)))
			if err != nil {
				t.Fatalf("Broadcast: got %v, want no error", err)
			}
			if got, want := out.Deliveries[tt.stage.Answering()].Status, Delivered; got != want {
				t.Errorf("answering: got %q, want %q", got, want)
			}
			if got, want := out.Deliveries[tt.offPath].Status, Queued; got != want {
				t.Errorf("off-path: got %q, want %q", got, want)
			}
			r.drain(t)
			if got := metricValue(t, r.reg, "switchyard_deliveries_total", map[string]string{"app": "app", "channel": "default", "transport": string(tt.offPath), "status": "failed"}); got != 1 {
				t.Errorf("failed off-path deliveries: got %v, want 1", got)
			}
			found := logs.FilterMessage("off-path publish failed").FilterField(zap.String("transport", string(tt.offPath))).Len()
			if found != 1 {
				t.Errorf("off-path failure logs: got %d, want 1", found)
			}
		})
	}
}

// blocker is an off-path publisher that blocks until released or its ctx
// ends, reporting each start.
type blocker struct {
	started chan *Message
	release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{started: make(chan *Message, 1000), release: make(chan struct{})}
}

func (b *blocker) publish(ctx context.Context, m *Message) (PublishResult, error) {
	b.started <- m
	select {
	case <-b.release:
		return PublishResult{Attempts: 1}, nil
	case <-ctx.Done():
		return PublishResult{Attempts: 1}, fmt.Errorf("fake: %w", ctx.Err())
	}
}

func TestBroadcastQueueOverflow(t *testing.T) {
	b := newBlocker()
	var mu sync.Mutex
	var drops []string
	r := newRig(t, rigOpts{
		cfg:      Config{OffPathWorkers: 1, OffPathQueue: 2},
		resolver: fixedStage(StageShadow),
		realtime: b.publish,
		observer: fakeObserver{dropped: func(m *Message, tr Transport, reason string) {
			mu.Lock()
			defer mu.Unlock()
			drops = append(drops, m.RequestID+"/"+string(tr)+"/"+reason)
		}},
	})
	ctx := context.Background()
	// The first message occupies the only realtime lane worker.
	if _, err := r.mc.Broadcast(ctx, mustMessage(t, "app", "room", "e", "id-0")); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	<-b.started
	var statuses []DeliveryStatus
	for i := 1; i <= 5; i++ {
		out, err := r.mc.Broadcast(ctx, mustMessage(t, "app", fmt.Sprintf("room-%d", i), "e", fmt.Sprintf("id-%d", i)))
		if err != nil {
			t.Fatalf("Broadcast %d: %v", i, err)
		}
		if got, want := out.Deliveries[TransportLegacy].Status, Delivered; got != want {
			t.Errorf("message %d legacy: got %q, want %q", i, got, want)
		}
		d := out.Deliveries[TransportRealtime]
		statuses = append(statuses, d.Status)
		if d.Status == Skipped && d.Reason != "queue full" {
			t.Errorf("message %d reason: got %q, want %q", i, d.Reason, "queue full")
		}
	}
	want := []DeliveryStatus{Queued, Queued, Skipped, Skipped, Skipped}
	if !slices.Equal(statuses, want) {
		t.Errorf("realtime statuses: got %v, want %v", statuses, want)
	}
	if got := metricValue(t, r.reg, "switchyard_offpath_dropped_total", map[string]string{"transport": "realtime", "reason": "queue_full"}); got != 3 {
		t.Errorf("dropped queue_full: got %v, want 3", got)
	}
	if got := metricValue(t, r.reg, "switchyard_offpath_queue_depth", map[string]string{"transport": "realtime"}); got != 2 {
		t.Errorf("queue depth: got %v, want 2", got)
	}
	mu.Lock()
	wantDrops := []string{"id-3/realtime/queue_full", "id-4/realtime/queue_full", "id-5/realtime/queue_full"}
	if !slices.Equal(drops, wantDrops) {
		t.Errorf("DropObserver: got %v, want %v", drops, wantDrops)
	}
	mu.Unlock()
	close(b.release)
	if rep := r.drain(t); rep.Dropped != 0 {
		t.Errorf("drain: got %+v, want no drops", rep)
	}
	if got, want := len(r.realtime.messages()), 3; got != want {
		t.Errorf("realtime publishes: got %d, want %d", got, want)
	}
	if got := metricValue(t, r.reg, "switchyard_offpath_queue_depth", map[string]string{"transport": "realtime"}); got != 0 {
		t.Errorf("queue depth after drain: got %v, want 0", got)
	}
}

func TestBroadcastHungOffPathDoesNotDelayAnswering(t *testing.T) {
	base := runtime.NumGoroutine()
	tests := []struct {
		stage   Stage
		offPath Transport
	}{
		{StageShadow, TransportRealtime},
		{StageDual, TransportLegacy},
	}
	for _, tt := range tests {
		t.Run(string(tt.stage), func(t *testing.T) {
			b := newBlocker()
			o := rigOpts{
				cfg:      Config{OffPathWorkers: 2, OffPathQueue: 4, OffPathTimeout: time.Hour},
				resolver: fixedStage(tt.stage),
			}
			if tt.offPath == TransportLegacy {
				o.legacy = b.publish
			} else {
				o.realtime = b.publish
			}
			r := newRig(t, o)
			// Many messages to one room and to others, all answered while the
			// off-path publisher is blocked.
			var wg sync.WaitGroup
			errs := make(chan error, 100)
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 25; i++ {
						room := "hot"
						if i%2 == 1 {
							room = fmt.Sprintf("room-%d-%d", g, i)
						}
						out, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", room, "e", fmt.Sprintf("id-%d-%d", g, i)))
						if err == nil && out.Deliveries[tt.stage.Answering()].Status != Delivered {
							err = fmt.Errorf("answering status %q", out.Deliveries[tt.stage.Answering()].Status)
						}
						if err != nil {
							errs <- err
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("Broadcast: %v", err)
			}
			select {
			case <-b.release:
				t.Fatal("released too early")
			default:
			}
			// The off-path workers take their first message asynchronously:
			// the answers above may all have returned before.
			waitFor(t, "the off-path publisher to start", func() bool { return len(b.started) > 0 })
			// Close with a short deadline: the hung publish is cancelled and
			// the queued ones are dropped.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			rep := r.mc.Close(ctx)
			if rep.Dropped == 0 || rep.Drained != 0 || rep.Unfinished != 0 {
				t.Errorf("drain report: got %+v, want drops only", rep)
			}
			if got := metricValue(t, r.reg, "switchyard_offpath_dropped_total", map[string]string{"transport": string(tt.offPath), "reason": "shutdown"}); got != float64(rep.Dropped) {
				t.Errorf("dropped shutdown metric: got %v, want %d", got, rep.Dropped)
			}
			if got := r.mc.rooms.len(); got != 0 {
				t.Errorf("live rooms: got %d, want 0", got)
			}
		})
	}
	goroutinesBackTo(t, base)
}

// checkStrictlyIncreasing fails unless seqs increase strictly.
func checkStrictlyIncreasing(t *testing.T, what string, seqs []uint64) {
	t.Helper()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Errorf("%s: seq %d at %d follows %d: not in acceptance order", what, seqs[i], i, seqs[i-1])
			return
		}
	}
}

func TestBroadcastOrderConcurrentCallers(t *testing.T) {
	// "mixed" puts events "a" in shadow and "b" in dual, so realtime gets one
	// room's messages both off-path and answering, and PartyKit too.
	mixed := fakeResolver{resolve: func(q RouteQuery) Route {
		if q.Event == "a" {
			return Route{Stage: StageShadow}
		}
		return Route{Stage: StageDual}
	}}
	tests := []struct {
		name     string
		resolver StageResolver
	}{
		{"shadow", fixedStage(StageShadow)},
		{"dual", fixedStage(StageDual)},
		{"mixed stages in one room", mixed},
	}
	const callers, perCaller = 8, 40
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jitter := func(ctx context.Context, m *Message) (PublishResult, error) {
				if m.Seq%3 == 0 {
					runtime.Gosched()
				}
				if m.Seq%7 == 0 {
					time.Sleep(50 * time.Microsecond)
				}
				return PublishResult{Attempts: 1}, nil
			}
			r := newRig(t, rigOpts{
				cfg:      Config{OffPathWorkers: 4, OffPathQueue: callers * perCaller * 2},
				resolver: tt.resolver,
				legacy:   jitter,
				realtime: jitter,
			})
			var wg sync.WaitGroup
			for g := 0; g < callers; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < perCaller; i++ {
						ev := "a"
						if (g+i)%2 == 1 {
							ev = "b"
						}
						room := "hot"
						if i%4 == 3 {
							room = "warm"
						}
						_, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", room, ev, fmt.Sprintf("id-%d-%d", g, i)))
						if err != nil {
							t.Errorf("Broadcast: %v", err)
						}
					}
				}()
			}
			wg.Wait()
			if rep := r.drain(t); rep.Dropped != 0 {
				t.Fatalf("drain: %+v, want no drops", rep)
			}
			for _, room := range []string{"hot", "warm"} {
				lseq, rseq := r.legacy.seqsOf(room), r.realtime.seqsOf(room)
				checkStrictlyIncreasing(t, "legacy "+room, lseq)
				checkStrictlyIncreasing(t, "realtime "+room, rseq)
				if got, want := len(lseq), len(rseq); got != want {
					t.Errorf("%s: legacy got %d messages, realtime %d", room, got, want)
				}
			}
			if got, want := len(r.legacy.seqsOf("hot"))+len(r.legacy.seqsOf("warm")), callers*perCaller; got != want {
				t.Errorf("legacy messages: got %d, want %d", got, want)
			}
		})
	}
}

func TestBroadcastRoomLockTimeout(t *testing.T) {
	b := newBlocker()
	r := newRig(t, rigOpts{resolver: fixedStage(StageLegacy), legacy: func(ctx context.Context, m *Message) (PublishResult, error) {
		if m.RequestID == "id-1" {
			return b.publish(ctx, m)
		}
		return PublishResult{Attempts: 1}, nil
	}})
	first := make(chan error, 1)
	go func() {
		_, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "id-1"))
		first <- err
	}()
	<-b.started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	out, err := r.mc.Broadcast(ctx, mustMessage(t, "app", "room", "e", "id-2"))
	var e *Error
	if !errors.As(err, &e) || e.Code != EUPSTREAM || e.Transport != TransportLegacy {
		t.Fatalf("error: got %v, want EUPSTREAM naming legacy", err)
	}
	if got, want := out.Deliveries[TransportLegacy].Status, Failed; got != want {
		t.Errorf("status: got %q, want %q", got, want)
	}
	// Another room is not held up by the blocked one.
	if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "other", "e", "id-3")); err != nil {
		t.Errorf("other room: %v", err)
	}
	close(b.release)
	if err := <-first; err != nil {
		t.Fatalf("first: %v", err)
	}
	// id-2 was released: its retry is published.
	out, err = r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "id-2"))
	if err != nil || out.Deliveries[TransportLegacy].Status != Delivered {
		t.Fatalf("retry: got %v %+v, want delivered", err, out)
	}
	if got, want := len(r.legacy.seqsOf("room")), 2; got != want {
		t.Errorf("legacy publishes to room: got %d, want %d", got, want)
	}
}

func TestBroadcastDuplicates(t *testing.T) {
	r := newRig(t, rigOpts{
		cfg:      Config{DedupWindow: time.Minute, DedupMaxEntries: 3},
		resolver: fixedStage(StageShadow),
	})
	ctx := context.Background()
	send := func(app, id string) Outcome {
		t.Helper()
		out, err := r.mc.Broadcast(ctx, mustMessage(t, app, "room", "e", id))
		if err != nil {
			t.Fatalf("Broadcast %s/%s: %v", app, id, err)
		}
		return out
	}
	isDup := func(out Outcome) bool {
		return out.Deliveries[TransportLegacy].Status == Duplicate && out.Deliveries[TransportRealtime].Status == Duplicate
	}
	if isDup(send("app", "a")) {
		t.Fatal("first a: duplicate")
	}
	if !isDup(send("app", "a")) {
		t.Error("second a: not duplicate")
	}
	if isDup(send("other", "a")) {
		t.Error("a of another app: duplicate")
	}
	if got := metricValue(t, r.reg, "switchyard_duplicates_total", map[string]string{"app": "app"}); got != 1 {
		t.Errorf("duplicates metric: got %v, want 1", got)
	}
	// After the window the id is published again.
	r.clock.Add(time.Minute)
	if isDup(send("app", "a")) {
		t.Error("a after the window: duplicate")
	}
	// Bounded memory: b, c, d evict the oldest entries.
	send("app", "b")
	send("app", "c")
	send("app", "d")
	if got := r.mc.dedup.len(); got > 3 {
		t.Errorf("entries: got %d, want at most 3", got)
	}
	if !isDup(send("app", "d")) {
		t.Error("d: not duplicate")
	}
	if isDup(send("app", "a")) {
		t.Error("a after eviction: duplicate")
	}
	r.drain(t)
	if got, want := len(r.legacy.messages()), 7; got != want {
		t.Errorf("legacy publishes: got %d, want %d", got, want)
	}
}

func TestBroadcastRateLimit(t *testing.T) {
	r := newRig(t, rigOpts{cfg: Config{Apps: map[string]AppLimits{
		"limited": {RatePerSecond: 1, Burst: 2},
		"slow":    {RatePerSecond: 0.25, Burst: 1},
		"free":    {},
	}}})
	ctx := context.Background()
	try := func(app, id string) error {
		_, err := r.mc.Broadcast(ctx, mustMessage(t, app, "room", "e", id))
		return err
	}
	tests := []struct {
		app       string
		advance   time.Duration
		wantRetry int // 0: allowed
	}{
		{"limited", 0, 0},
		{"limited", 0, 0},
		{"limited", 0, 1},
		{"limited", 500 * time.Millisecond, 1},
		{"limited", 500 * time.Millisecond, 0},
		{"slow", 0, 0},
		{"slow", 0, 4},
		{"slow", 2 * time.Second, 2},
		{"free", 0, 0},
		{"free", 0, 0},
		{"unconfigured", 0, 0},
	}
	limited := map[string]int{}
	for i, tt := range tests {
		r.clock.Add(tt.advance)
		err := try(tt.app, fmt.Sprint("id-", i))
		if tt.wantRetry == 0 {
			if err != nil {
				t.Errorf("%d %s: got %v, want allowed", i, tt.app, err)
			}
			continue
		}
		limited[tt.app]++
		var e *Error
		if !errors.As(err, &e) || e.Code != ERATELIMIT {
			t.Errorf("%d %s: got %v, want %s", i, tt.app, err, ERATELIMIT)
			continue
		}
		if got, want := e.RetryAfterSeconds, tt.wantRetry; got != want {
			t.Errorf("%d %s: RetryAfterSeconds got %d, want %d", i, tt.app, got, want)
		}
	}
	for app, n := range limited {
		if got := metricValue(t, r.reg, "switchyard_rate_limited_total", map[string]string{"app": app}); got != float64(n) {
			t.Errorf("rate limited %s: got %v, want %d", app, got, n)
		}
	}
	// A refused requestId is not remembered: it goes through later.
	r.clock.Add(10 * time.Second)
	if err := try("limited", "id-2"); err != nil {
		t.Errorf("retry of refused id: %v", err)
	}
	// Apps outside Config.Apps are reported as "unknown".
	if got := metricValue(t, r.reg, "switchyard_messages_accepted_total", map[string]string{"app": "unknown", "channel": "default", "stage": "legacy"}); got != 1 {
		t.Errorf("accepted for unknown app: got %v, want 1", got)
	}
}

func TestCloseDrainsQueued(t *testing.T) {
	base := runtime.NumGoroutine()
	b := newBlocker()
	r := newRig(t, rigOpts{cfg: Config{OffPathWorkers: 1}, resolver: fixedStage(StageShadow), realtime: b.publish})
	for i := 0; i < 5; i++ {
		if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", fmt.Sprint("id-", i))); err != nil {
			t.Fatalf("Broadcast: %v", err)
		}
	}
	<-b.started
	done := make(chan DrainReport)
	go func() { done <- r.mc.Close(context.Background()) }()
	// Once Close has begun, new messages are refused.
	waitFor(t, "Close to begin", func() bool { return r.mc.state.Load()&closedBit != 0 })
	if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "late")); ErrorCode(err) != EDRAINING {
		t.Errorf("Broadcast during Close: got %v, want %s", err, EDRAINING)
	}
	select {
	case rep := <-done:
		t.Fatalf("Close returned %+v before the queue drained", rep)
	default:
	}
	close(b.release)
	if got, want := <-done, (DrainReport{Drained: 5}); got != want {
		t.Errorf("drain: got %+v, want %+v", got, want)
	}
	if got, want := r.mc.Close(context.Background()), (DrainReport{Drained: 5}); got != want {
		t.Errorf("second Close: got %+v, want %+v", got, want)
	}
	if got, want := r.realtime.seqsOf("room"), 5; len(got) != want {
		t.Errorf("realtime publishes: got %d, want %d", len(got), want)
	}
	goroutinesBackTo(t, base)
}

func TestCloseWaitsForInFlightAnswering(t *testing.T) {
	b := newBlocker()
	r := newRig(t, rigOpts{resolver: fixedStage(StageDual), realtime: b.publish})
	answered := make(chan error, 1)
	go func() {
		_, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "id"))
		answered <- err
	}()
	<-b.started
	done := make(chan DrainReport)
	go func() { done <- r.mc.Close(context.Background()) }()
	waitFor(t, "Close to begin", func() bool { return r.mc.state.Load()&closedBit != 0 })
	if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "late")); ErrorCode(err) != EDRAINING {
		t.Errorf("Broadcast during Close: got %v, want %s", err, EDRAINING)
	}
	select {
	case rep := <-done:
		t.Fatalf("Close returned %+v with an answering publish in flight", rep)
	default:
	}
	close(b.release)
	if err := <-answered; err != nil {
		t.Errorf("in-flight Broadcast: %v", err)
	}
	if rep := <-done; rep.Dropped != 0 || rep.Unfinished != 0 {
		t.Errorf("drain: got %+v, want no drops", rep)
	}
	if got, want := len(r.legacy.messages()), 1; got != want {
		t.Errorf("legacy off-path publishes: got %d, want %d", got, want)
	}
}

func TestCloseDeadlineWithAnsweringInFlight(t *testing.T) {
	b := newBlocker()
	r := newRig(t, rigOpts{resolver: fixedStage(StageLegacy), legacy: b.publish})
	answered := make(chan error, 1)
	go func() {
		_, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "id"))
		answered <- err
	}()
	<-b.started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if got, want := r.mc.Close(ctx), (DrainReport{Unfinished: 1}); got != want {
		t.Errorf("drain: got %+v, want %+v", got, want)
	}
	close(b.release)
	if err := <-answered; err != nil {
		t.Errorf("in-flight Broadcast: %v", err)
	}
}

func TestObserverSampling(t *testing.T) {
	tests := []struct {
		stage      Stage
		rate       float64
		wantSome   bool
		wantAll    bool
		sampleFunc bool
	}{
		{stage: StageLegacy, wantSome: false},
		{stage: StageRealtime, wantSome: false},
		{stage: StageShadow, wantSome: true, wantAll: true},
		{stage: StageDual, wantSome: true, wantAll: true},
		{stage: StageShadow, sampleFunc: true, rate: 0},
		{stage: StageShadow, sampleFunc: true, rate: 0.5, wantSome: true},
		{stage: StageDual, sampleFunc: true, rate: 1, wantSome: true, wantAll: true},
	}
	const n = 200
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v/%v", tt.stage, tt.sampleFunc, tt.rate), func(t *testing.T) {
			var mu sync.Mutex
			expected := map[string]Stage{}
			var r *testRig
			obs := fakeObserver{expect: func(m *Message, stage Stage) {
				mu.Lock()
				defer mu.Unlock()
				expected[m.RequestID] = stage
				if m.Seq == 0 {
					t.Errorf("Expect before Seq was assigned")
				}
				for _, p := range append(r.legacy.messages(), r.realtime.messages()...) {
					if p == m {
						t.Errorf("Expect after publishing %s", m.RequestID)
					}
				}
			}}
			cfg := Config{}
			if tt.sampleFunc {
				cfg.SampleRate = func(channel string) float64 {
					if channel != DefaultChannel {
						t.Errorf("SampleRate channel: got %q", channel)
					}
					return tt.rate
				}
			}
			r = newRig(t, rigOpts{cfg: cfg, resolver: fixedStage(tt.stage), observer: obs})
			for i := 0; i < n; i++ {
				if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", fmt.Sprint("room-", i), "e", fmt.Sprint("req-", i))); err != nil {
					t.Fatalf("Broadcast: %v", err)
				}
			}
			r.drain(t)
			mu.Lock()
			defer mu.Unlock()
			got := len(expected)
			switch {
			case !tt.wantSome && got != 0:
				t.Errorf("expectations: got %d, want none", got)
			case tt.wantAll && got != n:
				t.Errorf("expectations: got %d, want %d", got, n)
			case tt.wantSome && !tt.wantAll && (got == 0 || got == n):
				t.Errorf("expectations: got %d, want some of %d", got, n)
			}
			for id, s := range expected {
				if s != tt.stage {
					t.Errorf("%s: stage got %q, want %q", id, s, tt.stage)
				}
			}
		})
	}
}

// TestSamplingPerRoom: the decision depends on app and room only, so a
// sampled room is observed whole; a room sampled at a rate stays sampled
// at a higher one; about rate of the rooms are sampled.
func TestSamplingPerRoom(t *testing.T) {
	rate := 0.3
	mc := &Multicaster{cfg: Config{SampleRate: func(string) float64 { return rate }}}
	sampled := 0
	const rooms = 2000
	for i := 0; i < rooms; i++ {
		room := fmt.Sprint("room-", i)
		first := mc.Sampled("app", room, "ch")
		if first {
			sampled++
		}
		for j := 0; j < 3; j++ {
			m := mustMessage(t, "app", room, "e", fmt.Sprint("req-", i, "-", j))
			if got := mc.Sampled(m.App, m.Room, m.Channel); got != first {
				t.Fatalf("%s of %s: sampled %v, want %v like the room's other messages", m.RequestID, room, got, first)
			}
		}
		if first {
			rate = 0.6
			if !mc.Sampled("app", room, "ch") {
				t.Fatalf("%s: sampled at 0.3 but not at 0.6", room)
			}
			rate = 0.3
		}
	}
	if got := float64(sampled) / rooms; got < 0.25 || got > 0.35 {
		t.Errorf("share of rooms sampled at 0.3: %.3f", got)
	}
	// The app is part of the hash: one room name is sampled for some apps
	// and not for others.
	apps := 0
	for i := 0; i < 200; i++ {
		if mc.Sampled(fmt.Sprint("app-", i), "room-x", "ch") {
			apps++
		}
	}
	if apps == 0 || apps == 200 {
		t.Errorf("room-x sampled for %d of 200 apps: the app is not part of the decision", apps)
	}
}

func TestBroadcastBatch(t *testing.T) {
	r := newRig(t, rigOpts{cfg: Config{BatchParallelism: 3}, resolver: fixedStage(StageShadow)})
	var msgs []*Message
	for i := 0; i < 60; i++ {
		msgs = append(msgs, mustMessage(t, "app", fmt.Sprint("room-", i%4), "e", fmt.Sprint("id-", i)))
	}
	msgs = append(msgs, nil, mustMessage(t, "app", "room-0", "e", "id-0"))
	res := r.mc.BroadcastBatch(context.Background(), msgs)
	if got, want := len(res), len(msgs); got != want {
		t.Fatalf("results: got %d, want %d", got, want)
	}
	for i := 0; i < 60; i++ {
		if res[i].Err != nil {
			t.Errorf("%d: %v", i, res[i].Err)
			continue
		}
		if got, want := res[i].Outcome.RequestID, fmt.Sprint("id-", i); got != want {
			t.Errorf("%d: requestId got %q, want %q", i, got, want)
		}
		if got, want := res[i].Outcome.Deliveries[TransportLegacy].Status, Delivered; got != want {
			t.Errorf("%d: legacy got %q, want %q", i, got, want)
		}
	}
	if got, want := ErrorCode(res[60].Err), EINVALID; got != want {
		t.Errorf("nil message: got %q, want %q", got, want)
	}
	if got, want := res[61].Outcome.Deliveries[TransportLegacy].Status, Duplicate; got != want {
		t.Errorf("repeated id: got %q, want %q", got, want)
	}
	r.drain(t)
	for room := 0; room < 4; room++ {
		// Each room's messages reach both transports in input order.
		var want []string
		for i := room; i < 60; i += 4 {
			want = append(want, fmt.Sprint("id-", i))
		}
		for _, p := range []*fakePublisher{r.legacy, r.realtime} {
			var got []string
			for _, m := range p.messages() {
				if m.Room == fmt.Sprint("room-", room) {
					got = append(got, m.RequestID)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("room-%d order: got %v, want %v", room, got, want)
			}
		}
	}
}

func TestBroadcastNilMessage(t *testing.T) {
	r := newRig(t, rigOpts{})
	if _, err := r.mc.Broadcast(context.Background(), nil); ErrorCode(err) != EINVALID {
		t.Errorf("got %v, want %s", err, EINVALID)
	}
}

func TestMetricsChannelLabelsBounded(t *testing.T) {
	r := newRig(t, rigOpts{cfg: Config{Channels: []string{"ai"}}})
	for i, ch := range []string{"ai", "default", "rogue"} {
		m := mustMessage(t, "app", "room", "e", fmt.Sprint("id-", i))
		m.Channel = ch
		if _, err := r.mc.Broadcast(context.Background(), m); err != nil {
			t.Fatalf("Broadcast: %v", err)
		}
	}
	for _, ch := range []string{"ai", "default", "unknown"} {
		if got := metricValue(t, r.reg, "switchyard_messages_accepted_total", map[string]string{"app": "app", "channel": ch, "stage": "legacy"}); got != 1 {
			t.Errorf("accepted %s: got %v, want 1", ch, got)
		}
	}
	if got := metricValue(t, r.reg, "switchyard_messages_accepted_total", map[string]string{"app": "app", "channel": "rogue", "stage": "legacy"}); got != 0 {
		t.Errorf("accepted rogue: got %v, want 0", got)
	}
}

func TestBroadcastStageChangeWaitsForOffPath(t *testing.T) {
	var stage atomic.Value
	stage.Store(StageShadow)
	b := newBlocker()
	// One call below must time out (it waits for a blocked copy); the
	// others must not, while waiting for nothing or for a copy that was
	// just released: AnswerTimeout is long against a loaded machine's
	// delays, and the one timeout costs it once.
	r := newRig(t, rigOpts{
		cfg:      Config{AnswerTimeout: 500 * time.Millisecond, OffPathTimeout: time.Hour},
		resolver: fakeResolver{resolve: func(RouteQuery) Route { return Route{Stage: stage.Load().(Stage)} }},
		realtime: func(ctx context.Context, m *Message) (PublishResult, error) {
			if m.RequestID == "id-1" {
				return b.publish(ctx, m)
			}
			return PublishResult{Attempts: 1}, nil
		},
	})
	ctx := context.Background()
	if _, err := r.mc.Broadcast(ctx, mustMessage(t, "app", "room", "e", "id-1")); err != nil {
		t.Fatalf("shadow: %v", err)
	}
	<-b.started
	// The room turns dual: realtime now answers, but the room's earlier
	// message is still on its way to realtime off-path. The answering
	// publish waits for it instead of overtaking it, within AnswerTimeout.
	stage.Store(StageDual)
	out, err := r.mc.Broadcast(ctx, mustMessage(t, "app", "room", "e", "id-2"))
	var e *Error
	if !errors.As(err, &e) || e.Code != EUPSTREAM || e.Transport != TransportRealtime {
		t.Fatalf("dual while realtime is behind: got %v, want EUPSTREAM naming realtime", err)
	}
	if got, want := out.Deliveries[TransportLegacy].Status, Skipped; got != want {
		t.Errorf("legacy: got %q, want %q (nothing published)", got, want)
	}
	// Another room is not affected.
	if _, err := r.mc.Broadcast(ctx, mustMessage(t, "app", "other", "e", "id-3")); err != nil {
		t.Errorf("other room: %v", err)
	}
	close(b.release)
	if _, err := r.mc.Broadcast(ctx, mustMessage(t, "app", "room", "e", "id-2")); err != nil {
		t.Fatalf("retry after the off-path copy went out: %v", err)
	}
	r.drain(t)
	var got []string
	for _, m := range r.realtime.messages() {
		if m.Room == "room" {
			got = append(got, m.RequestID)
		}
	}
	if want := []string{"id-1", "id-2"}; !slices.Equal(got, want) {
		t.Errorf("realtime order: got %v, want %v", got, want)
	}
}

func TestBroadcastAnswerTimeout(t *testing.T) {
	b := newBlocker()
	r := newRig(t, rigOpts{cfg: Config{AnswerTimeout: 20 * time.Millisecond}, resolver: fixedStage(StageShadow), legacy: b.publish})
	out, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "id"))
	var e *Error
	if !errors.As(err, &e) || e.Code != EUPSTREAM || e.Transport != TransportLegacy {
		t.Fatalf("hung answering publisher: got %v, want EUPSTREAM naming legacy", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error does not wrap the deadline: %v", err)
	}
	if got, want := out.Deliveries[TransportLegacy].Status, Failed; got != want {
		t.Errorf("legacy: got %q, want %q", got, want)
	}
}

// TestNoIdempotencyKeyNoDedup: the PartyKit drop-in path sends messages
// without an idempotency key (streamed chunks share one requestId), and
// each of them is published.
func TestNoIdempotencyKeyNoDedup(t *testing.T) {
	r := newRig(t, rigOpts{resolver: fixedStage(StageLegacy)})
	for i := 0; i < 3; i++ {
		m := mustMessage(t, "app", "room", "ai.message", "chat-1")
		m.IdempotencyKey = ""
		out, err := r.mc.Broadcast(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		if got := out.Deliveries[TransportLegacy].Status; got != Delivered {
			t.Fatalf("chunk %d: legacy status %s, want delivered", i, got)
		}
	}
	if got := len(r.legacy.messages()); got != 3 {
		t.Fatalf("legacy got %d messages, want 3", got)
	}
}

// A message whose answering publish failed is rejected (the API counts it
// in switchyard_messages_rejected_total), so it must not also count as
// accepted; its retry that succeeds does.
func TestFailedAnsweringIsNotAccepted(t *testing.T) {
	boom := &Error{Code: EUPSTREAM, Message: "HTTP 503 from upstream"}
	for _, stage := range AllStages() {
		t.Run(string(stage), func(t *testing.T) {
			var fail atomic.Bool
			fail.Store(true)
			pub := func(ctx context.Context, m *Message) (PublishResult, error) {
				if fail.Load() {
					return PublishResult{Attempts: 1}, boom
				}
				return PublishResult{Attempts: 1}, nil
			}
			o := rigOpts{resolver: fixedStage(stage)}
			if stage.Answering() == TransportLegacy {
				o.legacy = pub
			} else {
				o.realtime = pub
			}
			r := newRig(t, o)
			labels := map[string]string{"app": "app", "channel": "default", "stage": string(stage)}
			if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "req-1")); ErrorCode(err) != EUPSTREAM {
				t.Fatalf("Broadcast: got %v, want %s", err, EUPSTREAM)
			}
			if got := metricValue(t, r.reg, "switchyard_messages_accepted_total", labels); got != 0 {
				t.Errorf("accepted after the answering publish failed: got %v, want 0", got)
			}
			fail.Store(false)
			if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "req-1")); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if got := metricValue(t, r.reg, "switchyard_messages_accepted_total", labels); got != 1 {
				t.Errorf("accepted after the retry succeeded: got %v, want 1", got)
			}
		})
	}
}

// TestAwaitWatch: a sampled message's copies are each published after the
// observer's AwaitWatch for that transport; the answering one on the
// caller's path, the off-path one in the lane with a deadline of at most
// OffPathTimeout, so that an off-path wait that blocks never delays the
// answer. Unsampled messages and uncompared stages await nothing.
func TestAwaitWatch(t *testing.T) {
	for _, stage := range []Stage{StageShadow, StageDual} {
		t.Run(string(stage), func(t *testing.T) {
			var mu sync.Mutex
			var events []string
			add := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
			release := make(chan struct{})
			off, _ := stage.OffPath()
			offWaited := make(chan time.Duration, 1)
			obs := fakeObserver{await: func(ctx context.Context, m *Message, tr Transport) {
				add("await " + string(tr))
				if tr != off {
					return
				}
				dl, ok := ctx.Deadline()
				if !ok {
					t.Errorf("off-path AwaitWatch without a deadline")
				}
				offWaited <- time.Until(dl)
				select { // blocks the lane, never the caller
				case <-release:
				case <-ctx.Done():
				}
			}}
			pub := func(tr Transport) func(context.Context, *Message) (PublishResult, error) {
				return func(context.Context, *Message) (PublishResult, error) {
					add("publish " + string(tr))
					return PublishResult{Attempts: 1}, nil
				}
			}
			r := newRig(t, rigOpts{cfg: Config{OffPathTimeout: 3 * time.Second}, resolver: fixedStage(stage), observer: obs,
				legacy: pub(TransportLegacy), realtime: pub(TransportRealtime)})
			if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "id-1")); err != nil {
				t.Fatalf("Broadcast: %v", err)
			}
			// Broadcast returned while the off-path wait still blocks.
			ans := stage.Answering()
			index := func(evs []string, e string) int {
				for i, x := range evs {
					if x == e {
						return i
					}
				}
				return -1
			}
			mu.Lock()
			got := append([]string(nil), events...)
			mu.Unlock()
			if a, p := index(got, "await "+string(ans)), index(got, "publish "+string(ans)); a < 0 || p < a {
				t.Fatalf("caller's path: events %v, want await %s then publish %s", got, ans, ans)
			}
			select {
			case left := <-offWaited:
				if left <= 0 || left > 3*time.Second {
					t.Errorf("off-path wait deadline %v away, want within OffPathTimeout 3s", left)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no off-path AwaitWatch")
			}
			for _, e := range got {
				if e == "publish "+string(off) {
					t.Fatalf("off-path copy published before its AwaitWatch returned: %v", got)
				}
			}
			close(release)
			r.drain(t)
			mu.Lock()
			defer mu.Unlock()
			if a, p := index(events, "await "+string(off)), index(events, "publish "+string(off)); len(events) != 4 || a < 0 || p < a {
				t.Errorf("events %v, want 4 with await %s before publish %s", events, off, off)
			}
		})
	}
	for _, tt := range []struct {
		name  string
		stage Stage
		rate  float64
	}{{"legacy", StageLegacy, 1}, {"realtime", StageRealtime, 1}, {"unsampled", StageShadow, 0}} {
		t.Run(tt.name, func(t *testing.T) {
			var awaits atomic.Int64
			obs := fakeObserver{await: func(context.Context, *Message, Transport) { awaits.Add(1) }}
			r := newRig(t, rigOpts{cfg: Config{SampleRate: func(string) float64 { return tt.rate }}, resolver: fixedStage(tt.stage), observer: obs})
			if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "id-1")); err != nil {
				t.Fatalf("Broadcast: %v", err)
			}
			r.drain(t)
			if n := awaits.Load(); n != 0 {
				t.Errorf("AwaitWatch called %d times, want none", n)
			}
		})
	}
}

// TestFailedAnswerHasNoOffPathCopy (issue 12, finding 6): when the
// answering publish fails, the off-path transport is never asked to
// publish the message, the answer says why, and a DropObserver hears
// "answer_failed"; the app's retry then publishes each side once.
func TestFailedAnswerHasNoOffPathCopy(t *testing.T) {
	for _, tt := range []struct {
		stage          Stage
		answer, offTra Transport
	}{
		{StageShadow, TransportLegacy, TransportRealtime},
		{StageDual, TransportRealtime, TransportLegacy},
	} {
		t.Run(string(tt.stage), func(t *testing.T) {
			var fail atomic.Bool
			fail.Store(true)
			failing := func(ctx context.Context, m *Message) (PublishResult, error) {
				if fail.Load() {
					return PublishResult{Attempts: 4}, &Error{Code: EUPSTREAM, Message: "answered 502 after 4 attempts"}
				}
				return PublishResult{Attempts: 1}, nil
			}
			var mu sync.Mutex
			var dropped []string
			o := rigOpts{resolver: fixedStage(tt.stage), observer: fakeObserver{dropped: func(m *Message, tr Transport, reason string) {
				mu.Lock()
				dropped = append(dropped, m.RequestID+" "+string(tr)+" "+reason)
				mu.Unlock()
			}}}
			if tt.answer == TransportLegacy {
				o.legacy = failing
			} else {
				o.realtime = failing
			}
			r := newRig(t, o)
			off := r.legacy
			if tt.offTra == TransportRealtime {
				off = r.realtime
			}
			out, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "req-1"))
			if ErrorCode(err) != EUPSTREAM {
				t.Fatalf("error %v, want EUPSTREAM", err)
			}
			if d := out.Deliveries[tt.offTra]; d.Status != Skipped || d.Reason != reasonNotSent {
				t.Errorf("off-path delivery %+v, want skipped: %s", d, reasonNotSent)
			}
			fail.Store(false)
			if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "req-1")); err != nil {
				t.Fatalf("retry: %v", err)
			}
			r.drain(t)
			if got := off.messages(); len(got) != 1 {
				t.Errorf("the off-path transport published %d copies of req-1, want 1 (the retry's)", len(got))
			}
			mu.Lock()
			defer mu.Unlock()
			if want := "req-1 " + string(tt.offTra) + " answer_failed"; len(dropped) != 1 || dropped[0] != want {
				t.Errorf("DropObserver heard %q, want [%s]", dropped, want)
			}
		})
	}
}

// TestOffPathStartsAfterTheAnswer: the off-path copy is queued once the
// answering publish returned, never before.
func TestOffPathStartsAfterTheAnswer(t *testing.T) {
	var answered sync.Map // requestId -> its answering publish returned
	var early atomic.Int32
	r := newRig(t, rigOpts{
		resolver: fixedStage(StageShadow),
		legacy: func(ctx context.Context, m *Message) (PublishResult, error) {
			defer answered.Store(m.RequestID, true)
			return PublishResult{Attempts: 1}, nil
		},
		realtime: func(ctx context.Context, m *Message) (PublishResult, error) {
			if _, ok := answered.Load(m.RequestID); !ok {
				early.Add(1)
			}
			return PublishResult{Attempts: 1}, nil
		},
	})
	for i := range 20 {
		if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", fmt.Sprintf("req-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	r.drain(t)
	if n := early.Load(); n != 0 {
		t.Errorf("%d off-path publishes started before their answer", n)
	}
	if n := len(r.realtime.messages()); n != 20 {
		t.Errorf("%d off-path publishes, want 20", n)
	}
}

// TestOtherPartyNotObserved: a message to a party other than the app's
// default is not passed to the Observer (the comparator watches the
// default party only).
func TestOtherPartyNotObserved(t *testing.T) {
	var expected atomic.Int32
	r := newRig(t, rigOpts{resolver: fixedStage(StageShadow), observer: fakeObserver{expect: func(*Message, Stage) { expected.Add(1) }}})
	m := mustMessage(t, "app", "room", "e", "req-1")
	m.Party = "chat"
	if _, err := r.mc.Broadcast(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "req-2")); err != nil {
		t.Fatal(err)
	}
	if n := expected.Load(); n != 1 {
		t.Errorf("Expect called %d times, want 1 (the default party's message)", n)
	}
}

// boundedPublisher is a fakePublisher that declares a CallBound.
type boundedPublisher struct {
	*fakePublisher
	bound time.Duration
}

func (b boundedPublisher) CallBound() time.Duration { return b.bound }

// TestBoundedPublisherSkipsTimerContext: a publisher that ends on its own
// within the time the Multicaster gives it is called under the caller's
// context, both on the answering side and off path; one that may take
// longer, or declares nothing, gets a context ending at AnswerTimeout (or
// OffPathTimeout). Cancellation reaches it either way.
func TestBoundedPublisherSkipsTimerContext(t *testing.T) {
	type seen struct {
		hasDL bool
		left  time.Duration
	}
	for _, tc := range []struct {
		name   string
		bound  time.Duration // 0: not Bounded
		wantDL bool
	}{
		{"bounded within the budget", time.Second, false},
		{"bounded over the budget", time.Minute, true},
		{"not bounded", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan seen, 4)
			record := func(ctx context.Context, m *Message) (PublishResult, error) {
				dl, ok := ctx.Deadline()
				got <- seen{ok, time.Until(dl)}
				return PublishResult{Attempts: 1}, nil
			}
			mk := func() Publisher {
				fp := &fakePublisher{publish: record}
				if tc.bound == 0 {
					return fp
				}
				return boundedPublisher{fp, tc.bound}
			}
			legacy, realtime := mk(), mk()
			mc := NewMulticaster(Config{AnswerTimeout: 10 * time.Second, OffPathTimeout: 5 * time.Second},
				legacy, realtime, fixedStage(StageShadow), nil, nil, nil, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- mc.Run(ctx) }()
			m, err := NewMessage("app", "r1", "n", "q1", []byte(`{}`), "video", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := mc.Broadcast(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			for _, side := range []string{"answering", "off-path"} {
				select {
				case s := <-got:
					if s.hasDL != tc.wantDL {
						t.Errorf("%s publish: deadline %v (%v left), want deadline %v", side, s.hasDL, s.left, tc.wantDL)
					}
					if s.hasDL && (s.left > 10*time.Second || s.left <= 0) {
						t.Errorf("%s publish: %v left", side, s.left)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("no %s publish", side)
				}
			}
			cancel()
			<-done
		})
	}
}
