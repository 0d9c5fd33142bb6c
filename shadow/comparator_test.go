package shadow

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/switchyard/switchyard/broadcast"
)

const app = "courses"

func TestOutcomes(t *testing.T) {
	type step struct {
		side  broadcast.Transport
		frame string // "" sends the original envelope
		after time.Duration
	}
	tests := []struct {
		name  string
		body  string
		steps []step
		// expire advances the clock past the timeout and sweeps.
		expire bool
		want   map[Outcome]int
		paths  []string // differing paths of the legacy copy, if any
	}{
		{
			name:  "match",
			body:  `{"id":1}`,
			steps: []step{{side: broadcast.TransportLegacy}, {side: broadcast.TransportRealtime}},
			want:  map[Outcome]int{OutcomeMatch: 1},
		},
		{
			name: "match after PartyKit re-encoding",
			body: `{"v":1.0,"s":"caf\u00e9","big":1}`,
			steps: []step{
				{side: broadcast.TransportLegacy, frame: `{"name":"video.asset.ready","body":{"s":"café","v":1,"big":1},"requestId":"ID"}`},
				{side: broadcast.TransportRealtime},
			},
			want: map[Outcome]int{OutcomeMatch: 1},
		},
		{
			name: "precision loss",
			body: `{"id":12345678901234567890}`,
			steps: []step{
				{side: broadcast.TransportLegacy, frame: `{"body":{"id":12345678901234567000},"requestId":"ID","name":"video.asset.ready"}`},
				{side: broadcast.TransportRealtime},
			},
			want:  map[Outcome]int{OutcomePrecisionLoss: 1},
			paths: []string{"body.id"},
		},
		{
			name: "mismatch",
			body: `{"items":[{"id":1},{"id":2},{"id":3}]}`,
			steps: []step{
				{side: broadcast.TransportLegacy, frame: `{"body":{"items":[{"id":1},{"id":2},{"id":30}]},"requestId":"ID","name":"video.asset.ready"}`},
				{side: broadcast.TransportRealtime},
			},
			want:  map[Outcome]int{OutcomeMismatch: 1},
			paths: []string{"body.items[2].id"},
		},
		{
			name:   "missing realtime",
			body:   `{}`,
			steps:  []step{{side: broadcast.TransportLegacy}},
			expire: true,
			want:   map[Outcome]int{OutcomeMissingRealtime: 1},
		},
		{
			name:   "missing legacy",
			body:   `{}`,
			steps:  []step{{side: broadcast.TransportRealtime}},
			expire: true,
			want:   map[Outcome]int{OutcomeMissingLegacy: 1},
		},
		{
			name:   "missing both",
			body:   `{}`,
			expire: true,
			want:   map[Outcome]int{OutcomeMissingLegacy: 1, OutcomeMissingRealtime: 1},
		},
		{
			name: "duplicate counted once per side, compared once",
			body: `{}`,
			steps: []step{
				{side: broadcast.TransportRealtime}, {side: broadcast.TransportRealtime},
				{side: broadcast.TransportLegacy}, {side: broadcast.TransportRealtime},
			},
			expire: true,
			want:   map[Outcome]int{OutcomeMatch: 1, OutcomeDuplicate: 1},
		},
		{
			name:   "copy after decision within the window is a duplicate",
			body:   `{}`,
			steps:  []step{{side: broadcast.TransportLegacy}, {side: broadcast.TransportRealtime}, {side: broadcast.TransportLegacy, after: time.Second}},
			want:   map[Outcome]int{OutcomeMatch: 1, OutcomeDuplicate: 1},
			expire: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{}, nil)
			lw, rw := h.observe(t, app, "room-1")
			m := h.msg(t, app, "room-1", "video", "ID", tt.body)
			h.c.Expect(m, broadcast.StageShadow)
			for _, s := range tt.steps {
				at := h.clock.Advance(10*time.Millisecond + s.after)
				f := s.frame
				if f == "" {
					f = string(m.Envelope)
				}
				if s.side == broadcast.TransportLegacy {
					lw.deliver(f, at)
				} else {
					rw.deliver(f, at)
				}
				h.pump()
			}
			if tt.expire {
				h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
			}
			if got := h.counts(app, "video"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("outcomes = %v, want %v", got, tt.want)
			}
			if tt.paths != nil {
				ex := h.c.Mismatches(1)
				if len(ex) != 1 {
					t.Fatalf("Mismatches = %d examples, want 1", len(ex))
				}
				var paths []string
				for _, d := range ex[0].Legacy {
					paths = append(paths, d.Path)
				}
				if !reflect.DeepEqual(paths, tt.paths) || len(ex[0].Realtime) != 0 {
					t.Errorf("legacy paths = %v (realtime %v), want %v", paths, ex[0].Realtime, tt.paths)
				}
			}
			if got := testutil.ToFloat64(h.c.m.pending); tt.expire && got != 0 {
				t.Errorf("pending gauge = %v after expiry, want 0", got)
			}
		})
	}
}

func TestReordered(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	lw, rw := h.observe(t, app, "r")
	m1 := h.msg(t, app, "r", "ai", "a1", `"chunk 1"`)
	m2 := h.msg(t, app, "r", "ai", "a2", `"chunk 2"`)
	m3 := h.msg(t, app, "r", "ai", "a3", `"chunk 3"`)
	for _, m := range []*broadcast.Message{m1, m2, m3} {
		h.c.Expect(m, broadcast.StageDual)
	}
	at := h.clock.Advance(5 * time.Millisecond)
	// Legacy in order; realtime delivers 3 before 1 and 2.
	for _, m := range []*broadcast.Message{m1, m2, m3} {
		lw.deliver(string(m.Envelope), at)
	}
	for _, m := range []*broadcast.Message{m3, m1, m2} {
		rw.deliver(string(m.Envelope), at)
	}
	h.pump()
	want := map[Outcome]int{OutcomeMatch: 3, OutcomeReordered: 2}
	if got := h.counts(app, "ai"); !reflect.DeepEqual(got, want) {
		t.Errorf("outcomes = %v, want %v", got, want)
	}
}

// TestSharedRequestID: on the PartyKit drop-in path apps stream the chunks
// of one AI answer with one requestId. Each copy matches the chunk of its
// position (none is a duplicate or foreign), a lost chunk is missing after
// the timeout, and a copy beyond the chunks is a duplicate.
func TestSharedRequestID(t *testing.T) {
	h := newHarness(t, Config{Timeout: time.Second}, nil)
	lw, rw := h.observe(t, app, "r")
	var ms []*broadcast.Message
	for _, body := range []string{`"Sure"`, `", here"`, `" it is"`} {
		m := h.msg(t, app, "r", "ai", "chat-1", body)
		h.c.Expect(m, broadcast.StageShadow)
		ms = append(ms, m)
	}
	at := h.clock.Advance(5 * time.Millisecond)
	for _, m := range ms {
		lw.deliver(string(m.Envelope), at)
	}
	lw.deliver(string(ms[2].Envelope), at) // one copy too many on legacy
	for _, m := range ms[:2] {             // realtime loses the last chunk
		rw.deliver(string(m.Envelope), at)
	}
	h.pump()
	if got, want := h.counts(app, "ai"), map[Outcome]int{OutcomeMatch: 2, OutcomeDuplicate: 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("outcomes before the timeout = %v, want %v", got, want)
	}
	h.clock.Advance(2 * time.Second)
	h.c.sweep(h.clock.Now())
	if got, want := h.counts(app, "ai"), map[Outcome]int{OutcomeMatch: 2, OutcomeDuplicate: 1, OutcomeMissingRealtime: 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("outcomes after the timeout = %v, want %v", got, want)
	}
	for _, tr := range []broadcast.Transport{broadcast.TransportLegacy, broadcast.TransportRealtime} {
		if got := h.foreign(tr); got != 0 {
			t.Errorf("foreign %s frames = %d, want 0", tr, got)
		}
	}
}

// TestOffPathDropIsDropped: a copy the gateway itself dropped (off-path
// queue full) is "dropped" after the timeout, not "missing_realtime".
func TestOffPathDropIsDropped(t *testing.T) {
	h := newHarness(t, Config{Timeout: time.Second}, nil)
	lw, _ := h.observe(t, app, "r")
	kept := h.msg(t, app, "r", "ai", "k1", `"a"`)
	lost := h.msg(t, app, "r", "ai", "d1", `"b"`)
	h.c.Expect(kept, broadcast.StageShadow)
	h.c.Expect(lost, broadcast.StageShadow)
	h.c.Dropped(lost, broadcast.TransportRealtime, "queue_full")
	at := h.clock.Advance(5 * time.Millisecond)
	lw.deliver(string(kept.Envelope), at)
	lw.deliver(string(lost.Envelope), at)
	h.pump()
	h.clock.Advance(2 * time.Second)
	h.c.sweep(h.clock.Now())
	if got, want := h.counts(app, "ai"), map[Outcome]int{OutcomeDropped: 1, OutcomeMissingRealtime: 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("outcomes = %v, want %v", got, want)
	}
}

// TestUnobservedReasons: a copy that arrives is compared whatever the
// readiness of its watch; a copy that does not arrive is missing only when
// its watch was ready, else the message is unobserved with the reason of
// the side (or sides) not ready, or of a room that failed or closed.
func TestUnobservedReasons(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	m := h.msg(t, app, "new-room", "video", "u1", `{}`)
	h.c.Expect(m, broadcast.StageShadow) // first sight: dial requested, not ready
	h.pump()
	lw, rw := h.legacy.last(t, app, "new-room"), h.realtime.last(t, app, "new-room")
	// Its copies arrive now that the watches are up: compared.
	lw.deliver(string(m.Envelope), h.clock.Now())
	rw.deliver(string(m.Envelope), h.clock.Now())
	h.pump()
	h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
	if got, want := h.counts(app, "video"), map[Outcome]int{OutcomeMatch: 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("first message whose copies arrived: outcomes = %v, want %v", got, want)
	}

	// The realtime watch not ready and its copy lost: unobserved, even
	// though the legacy copy arrived.
	rw.ready.Store(false)
	m2 := h.msg(t, app, "new-room", "video", "u2", `{}`)
	h.c.Expect(m2, broadcast.StageShadow)
	lw.deliver(string(m2.Envelope), h.clock.Now())
	h.pump()
	h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
	// Both watches down: both_not_ready.
	lw.ready.Store(false)
	h.c.Expect(h.msg(t, app, "new-room", "video", "u3", `{}`), broadcast.StageShadow)
	h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
	// Only the legacy watch down, nothing arrives: legacy_not_ready.
	rw.ready.Store(true)
	h.c.Expect(h.msg(t, app, "new-room", "video", "u4", `{}`), broadcast.StageShadow)
	h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
	// Both ready, the realtime copy lost: missing_realtime, compared.
	lw.ready.Store(true)
	m5 := h.msg(t, app, "new-room", "video", "u5", `{}`)
	h.c.Expect(m5, broadcast.StageShadow)
	lw.deliver(string(m5.Envelope), h.clock.Now())
	h.pump()
	h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
	if got, want := h.counts(app, "video"), map[Outcome]int{OutcomeMatch: 1, OutcomeUnobserved: 3, OutcomeMissingRealtime: 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("outcomes = %v, want %v", got, want)
	}
	sum := h.summary(t, app, "video")
	wantReasons := map[UnobservedReason]int64{ReasonRealtimeNotReady: 1, ReasonBothNotReady: 1, ReasonLegacyNotReady: 1, ReasonWatchFailed: 0, ReasonClosed: 0}
	if !reflect.DeepEqual(sum.Unobserved, wantReasons) {
		t.Errorf("unobserved by reason = %v, want %v", sum.Unobserved, wantReasons)
	}
	if sum.Sampled != 5 || sum.Compared != 2 || sum.CoveragePercent == nil || *sum.CoveragePercent != 40 {
		t.Errorf("sampled %d compared %d coverage %v, want 5, 2, 40%%", sum.Sampled, sum.Compared, sum.CoveragePercent)
	}
	for r, n := range wantReasons {
		if got := testutil.ToFloat64(h.c.m.unobserved.WithLabelValues(app, "video", string(r))); got != float64(n) {
			t.Errorf("switchyard_shadow_unobserved_total{reason=%q} = %v, want %d", r, got, n)
		}
	}
	if got := testutil.ToFloat64(h.c.m.sampled.WithLabelValues(app, "video")); got != 5 {
		t.Errorf("switchyard_shadow_sampled_total = %v, want 5", got)
	}
	if got := testutil.ToFloat64(h.c.m.compared.WithLabelValues(app, "video")); got != 2 {
		t.Errorf("switchyard_shadow_compared_total = %v, want 2", got)
	}

	// A room whose dial failed: watch_failed.
	h.legacy.fail = func(_, room string) error {
		if room == "broken" {
			return errDial
		}
		return nil
	}
	h.c.Expect(h.msg(t, app, "broken", "video", "b1", `{}`), broadcast.StageShadow)
	h.pump()
	h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
	if got := h.summary(t, app, "video").Unobserved[ReasonWatchFailed]; got != 1 {
		t.Errorf("watch_failed = %d, want 1", got)
	}

	// Stages that are not compared are ignored.
	h.c.Expect(h.msg(t, app, "other", "video", "l1", `{}`), broadcast.StageLegacy)
	h.c.Expect(h.msg(t, app, "other", "video", "l2", `{}`), broadcast.StageRealtime)
	h.pump()
	if n := h.legacy.count(app, "other"); n != 0 {
		t.Errorf("legacy-stage message opened %d watches", n)
	}
	if got := h.summary(t, app, "video").Sampled; got != 6 {
		t.Errorf("sampled = %d, want 6 (uncompared stages are not sampled)", got)
	}
}

// summary returns the summary row of app/channel, failing if none.
func (h *harness) summary(tb testing.TB, app, channel string) ChannelSummary {
	tb.Helper()
	for _, s := range h.c.Summary() {
		if s.App == app && s.Channel == channel {
			return s
		}
	}
	tb.Fatalf("no summary row for %s/%s", app, channel)
	return ChannelSummary{}
}

// TestAwaitWatch: the answering copy waits for its watch at most
// ReadyWait, the off-path one until its ctx ends; a wait that runs out
// stalls the side so the room's next copies do not wait again until the
// watch is ready; waiting is off with ReadyWaitOff.
func TestAwaitWatch(t *testing.T) {
	h := newHarness(t, Config{ReadyWait: MaxReadyWait}, nil)
	h.legacy.startDown, h.realtime.startDown = true, true
	m := h.msg(t, app, "fresh", "video", "a1", `{}`)
	h.c.Expect(m, broadcast.StageShadow)
	h.pump()
	lw, rw := h.legacy.last(t, app, "fresh"), h.realtime.last(t, app, "fresh")
	r := h.c.observe(app, "fresh", h.clock.Now().UnixNano())

	// The answering (legacy) watch comes up during the wait: it returns
	// then, ready, without stalling the side.
	go func() {
		time.Sleep(10 * time.Millisecond)
		lw.ready.Store(true)
	}()
	start := time.Now()
	h.c.AwaitWatch(context.Background(), m, broadcast.TransportLegacy)
	if d := time.Since(start); d < 5*time.Millisecond || d >= MaxReadyWait || r.stalled[sideLegacy].Load() {
		t.Errorf("answering wait took %v (stalled %v), want until the watch was ready (~10ms)", d, r.stalled[sideLegacy].Load())
	}
	// The off-path wait is bounded by ctx only.
	go func() {
		time.Sleep(30 * time.Millisecond)
		rw.ready.Store(true)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	start = time.Now()
	h.c.AwaitWatch(ctx, m, broadcast.TransportRealtime)
	cancel()
	if d := time.Since(start); d < 25*time.Millisecond || r.stalled[sideRealtime].Load() {
		t.Errorf("off-path wait took %v (stalled %v), want until the watch was ready (~30ms)", d, r.stalled[sideRealtime].Load())
	}
	lw.deliver(string(m.Envelope), h.clock.Now())
	rw.deliver(string(m.Envelope), h.clock.Now())
	h.pump()
	if got := h.count(app, "video", OutcomeMatch); got != 1 {
		t.Fatalf("first message after the waits: match = %d, want 1", got)
	}
	// An off-path wait whose ctx ends stalls the side.
	rw.ready.Store(false)
	mo := h.msg(t, app, "fresh", "video", "a-off", `{}`)
	h.c.Expect(mo, broadcast.StageShadow)
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	h.c.AwaitWatch(ctx, mo, broadcast.TransportRealtime)
	cancel()
	if !r.stalled[sideRealtime].Load() {
		t.Error("an off-path wait that ran out did not stall the side")
	}
	rw.ready.Store(true)

	// A watch that stays down: the first wait runs out after ReadyWait and
	// stalls the side; the next copy of the room does not wait.
	h = newHarness(t, Config{ReadyWait: 300 * time.Millisecond}, nil)
	m1 := h.msg(t, app, "fresh", "video", "a1", `{}`)
	h.c.Expect(m1, broadcast.StageShadow)
	h.pump()
	lw, rw = h.legacy.last(t, app, "fresh"), h.realtime.last(t, app, "fresh")
	lw.ready.Store(false)
	m2 := h.msg(t, app, "fresh", "video", "a2", `{}`)
	h.c.Expect(m2, broadcast.StageShadow)
	start = time.Now()
	h.c.AwaitWatch(context.Background(), m2, broadcast.TransportLegacy)
	if d := time.Since(start); d < 290*time.Millisecond {
		t.Errorf("wait for a watch that stays down took %v, want ReadyWait 300ms", d)
	}
	m3 := h.msg(t, app, "fresh", "video", "a3", `{}`)
	h.c.Expect(m3, broadcast.StageShadow)
	start = time.Now()
	h.c.AwaitWatch(context.Background(), m3, broadcast.TransportLegacy)
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("stalled side waited %v, want no wait (ReadyWait 300ms)", d)
	}
	h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
	if u := h.summary(t, app, "video").Unobserved; u[ReasonLegacyNotReady] != 2 || u[ReasonBothNotReady] != 1 {
		t.Errorf("unobserved = %v, want legacy_not_ready 2 (a2, a3) and both_not_ready 1 (a1, expected before its watches were up)", u)
	}
	// Ready again: the stall ends, and the next copy is observed.
	lw.ready.Store(true)
	m4 := h.msg(t, app, "fresh", "video", "a4", `{}`)
	h.c.Expect(m4, broadcast.StageShadow)
	h.c.AwaitWatch(context.Background(), m4, broadcast.TransportLegacy)
	// The watch drops right after the copy went out: still missing, since
	// it was ready as the copy was published.
	lw.ready.Store(false)
	h.c.AwaitWatch(context.Background(), m4, broadcast.TransportRealtime)
	rw.deliver(string(m4.Envelope), h.clock.Now())
	h.pump()
	h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
	if got := h.count(app, "video", OutcomeMissingLegacy); got != 1 {
		t.Errorf("missing_legacy = %d, want 1: the watch was ready as the copy went out", got)
	}

	// Waiting off: no wait at all.
	h2 := newHarness(t, Config{ReadyWait: ReadyWaitOff}, nil)
	h2.legacy.startDown = true
	m5 := h2.msg(t, app, "r", "video", "o1", `{}`)
	h2.c.Expect(m5, broadcast.StageShadow)
	h2.pump()
	start = time.Now()
	h2.c.AwaitWatch(context.Background(), m5, broadcast.TransportLegacy)
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("ReadyWaitOff waited %v", d)
	}
	// A message the comparator does not hold (unsampled, decided) returns
	// at once, although its room's watch is down and not stalled.
	h3 := newHarness(t, Config{ReadyWait: 300 * time.Millisecond}, nil)
	h3.legacy.startDown = true
	h3.c.Expect(h3.msg(t, app, "r", "video", "held", `{}`), broadcast.StageShadow)
	h3.pump()
	start = time.Now()
	h3.c.AwaitWatch(context.Background(), h3.msg(t, app, "r", "video", "never-expected", `{}`), broadcast.TransportLegacy)
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("AwaitWatch of an unexpected message waited %v", d)
	}
}

// TestWarm: a token request's Warm opens the room's watches before any
// message; a warm room nobody publishes to closes after IdleTTL.
func TestWarm(t *testing.T) {
	h := newHarness(t, Config{IdleTTL: time.Minute}, nil)
	h.c.Warm(app, "warm")
	h.pump()
	lw := h.legacy.last(t, app, "warm")
	if h.realtime.count(app, "warm") != 1 {
		t.Fatal("Warm opened no realtime watch")
	}
	if got := testutil.ToFloat64(h.c.m.warmed); got != 1 {
		t.Errorf("warmed rooms = %v, want 1", got)
	}
	h.c.Warm(app, "warm") // already watched: nothing new
	h.pump()
	if n := h.legacy.count(app, "warm"); n != 1 || testutil.ToFloat64(h.c.m.warmed) != 1 {
		t.Errorf("second Warm: %d watches, warmed %v; want 1, 1", n, testutil.ToFloat64(h.c.m.warmed))
	}
	// The first message finds the watches ready: compared.
	m := h.msg(t, app, "warm", "video", "w1", `{}`)
	h.c.Expect(m, broadcast.StageShadow)
	h.legacy.last(t, app, "warm").deliver(string(m.Envelope), h.clock.Now())
	h.realtime.last(t, app, "warm").deliver(string(m.Envelope), h.clock.Now())
	h.pump()
	if got := h.count(app, "video", OutcomeMatch); got != 1 {
		t.Errorf("first message of a warm room: match = %d, want 1", got)
	}
	// Unused warm rooms close on the idle TTL.
	h.c.Warm(app, "unused")
	h.pump()
	unused := h.legacy.last(t, app, "unused")
	h.c.sweep(h.clock.Advance(2 * time.Minute))
	h.pump()
	if !unused.closed.Load() || !lw.closed.Load() {
		t.Errorf("idle warm rooms left open: unused closed %v, warm closed %v", unused.closed.Load(), lw.closed.Load())
	}
}

func TestForeignFrames(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	lw, rw := h.observe(t, app, "r")
	now := h.clock.Now()
	lw.deliver(`{"body":1,"requestId":"someone-else","name":"x"}`, now) // unknown requestId
	lw.deliver(`conn-1: hello`, now)                                    // relay text
	lw.deliver("\x00\x01yjs", now)                                      // binary
	rw.deliver(`[1,2]`, now)                                            // not an object
	h.pump()
	if got, want := h.foreign(broadcast.TransportLegacy), 3; got != want {
		t.Errorf("legacy foreign = %d, want %d", got, want)
	}
	if got, want := h.foreign(broadcast.TransportRealtime), 1; got != want {
		t.Errorf("realtime foreign = %d, want %d", got, want)
	}
	// A copy arriving in another room is not this message.
	m := h.msg(t, app, "r", "video", "x1", `{}`)
	h.c.Expect(m, broadcast.StageShadow)
	lw2, _ := h.observe(t, app, "r2")
	lw2.deliver(string(m.Envelope), now)
	h.pump()
	if got, want := h.foreign(broadcast.TransportLegacy), 4; got != want {
		t.Errorf("legacy foreign = %d, want %d", got, want)
	}
}

func TestDropped(t *testing.T) {
	t.Run("pending cap", func(t *testing.T) {
		h := newHarness(t, Config{MaxPending: 2}, nil)
		h.observe(t, app, "r")
		h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
		for i := 0; i < 3; i++ {
			h.c.Expect(h.msg(t, app, "r", "video", fmt.Sprint("d", i), `{}`), broadcast.StageShadow)
		}
		if got := h.count(app, "video", OutcomeDropped); got != 1 {
			t.Errorf("dropped = %d, want 1", got)
		}
		if got := testutil.ToFloat64(h.c.m.pending); got != 2 {
			t.Errorf("pending gauge = %v, want 2", got)
		}
	})
	t.Run("queue full", func(t *testing.T) {
		h := newHarness(t, Config{QueueSize: 1}, nil)
		lw, rw := h.observe(t, app, "r")
		m1 := h.msg(t, app, "r", "video", "q1", `{}`)
		m2 := h.msg(t, app, "r", "video", "q2", `{}`)
		h.c.Expect(m1, broadcast.StageShadow)
		h.c.Expect(m2, broadcast.StageShadow)
		// Per-worker queues hold QueueSize/workers, at least 1: fill the
		// room's queue, so the next frames are dropped.
		q := h.c.workers[h.roomOf(t, app, "r").worker]
		for len(q) < cap(q) {
			lw.deliver(`{"requestId":"filler"}`, h.clock.Now())
		}
		lw.deliver(string(m1.Envelope), h.clock.Now()) // dropped
		h.pump()
		rw.deliver(string(m1.Envelope), h.clock.Now())
		h.pump()
		for _, d := range []func(string, time.Time){lw.deliver, rw.deliver} {
			d(string(m2.Envelope), h.clock.Now())
			h.pump()
		}
		h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
		if got, want := h.counts(app, "video"), map[Outcome]int{OutcomeDropped: 1, OutcomeMatch: 1}; !reflect.DeepEqual(got, want) {
			t.Errorf("outcomes = %v, want %v", got, want)
		}
	})
}

// roomOf returns the observed room of app/name.
func (h *harness) roomOf(tb testing.TB, app, name string) *room {
	tb.Helper()
	for i := range h.c.rooms {
		if r := h.c.rooms[i].m[roomKey{app, name}]; r != nil {
			return r
		}
	}
	tb.Fatalf("room %s/%s not observed", app, name)
	return nil
}

func TestLatencyAndSummary(t *testing.T) {
	h := newHarness(t, Config{Window: 15 * time.Minute}, nil)
	lw, rw := h.observe(t, app, "r")
	for i := 0; i < 10; i++ {
		m := h.msg(t, app, "r", "video", fmt.Sprint("l", i), `{"i":1}`)
		h.c.Expect(m, broadcast.StageShadow)
		lw.deliver(string(m.Envelope), m.AcceptedAt.Add(100*time.Millisecond))
		rw.deliver(string(m.Envelope), m.AcceptedAt.Add(300*time.Millisecond))
		h.pump()
		h.clock.Advance(time.Second)
	}
	var s *ChannelSummary
	for _, cs := range h.c.Summary() {
		if cs.Channel == "video" {
			s = &cs
		}
	}
	if s == nil {
		t.Fatal("no summary for channel video")
	}
	if s.Outcomes[OutcomeMatch] != 10 || s.Compared != 10 || s.ParityPercent == nil || *s.ParityPercent != 100 {
		t.Errorf("summary = %+v, want 10 matches at 100%%", s)
	}
	within := func(name string, got, want float64) {
		t.Helper()
		if got < want || got > want*1.1 {
			t.Errorf("%s = %v, want %v within +10%%", name, got, want)
		}
	}
	within("legacy p50", s.LegacyLatency.P50Ms, 100)
	within("realtime p99", s.RealtimeLatency.P99Ms, 300)
	within("delta p50", s.LatencyDelta.P50Ms, 200)
	if s.LatencyDelta.Count != 10 || s.LegacyLatency.Count != 10 {
		t.Errorf("counts = %d, %d, want 10", s.LatencyDelta.Count, s.LegacyLatency.Count)
	}
	// Prometheus saw the same.
	if n := histCount(t, h.c.m.delta.WithLabelValues(app, "video")); n != 10 {
		t.Errorf("delta samples = %d, want 10", n)
	}
	if n := histCount(t, h.c.m.latency.WithLabelValues(app, "video", "realtime")); n != 10 {
		t.Errorf("realtime latency samples = %d, want 10", n)
	}

	// One mismatch and one missing: parity 10/12.
	m := h.msg(t, app, "r", "video", "bad", `{"i":1}`)
	h.c.Expect(m, broadcast.StageShadow)
	lw.deliver(`{"body":{"i":2},"requestId":"bad","name":"video.asset.ready"}`, h.clock.Now())
	rw.deliver(string(m.Envelope), h.clock.Now())
	lost := h.msg(t, app, "r", "video", "lost", `{}`)
	h.c.Expect(lost, broadcast.StageShadow)
	lw.deliver(string(lost.Envelope), h.clock.Now())
	h.pump()
	h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
	s = &h.c.Summary()[1]
	if s.Channel != "video" || s.Compared != 12 || *s.ParityPercent != 100*10.0/12 {
		t.Errorf("summary = %+v, want parity 10/12", s)
	}

	// Everything slides out of the window.
	h.clock.Advance(16 * time.Minute)
	for _, cs := range h.c.Summary() {
		if cs.Compared != 0 || cs.ParityPercent != nil || cs.LegacyLatency.Count != 0 {
			t.Errorf("after the window: %+v, want empty", cs)
		}
	}
	b, err := json.Marshal(h.c.Summary())
	if err != nil || !strings.Contains(string(b), `"parityPercent":null`) {
		t.Errorf("summary JSON = %s, %v", b, err)
	}
}

func histCount(tb testing.TB, o prometheus.Observer) uint64 {
	tb.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		tb.Fatalf("write metric: %v", err)
	}
	return m.GetHistogram().GetSampleCount()
}

func TestMismatchExamplesAndLogging(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	cfg := Config{Channels: map[string]ChannelConfig{
		"video": {RedactPaths: []string{"body.token"}, IgnorePaths: []string{"body.updatedAt"}},
	}}
	h := newHarness(t, cfg, zap.New(core))
	lw, rw := h.observe(t, app, "r")
	for i := 0; i < 25; i++ {
		m := h.msg(t, app, "r", "video", fmt.Sprint("m", i), fmt.Sprintf(`{"token":"s3cret","n":%d,"updatedAt":"a"}`, i))
		h.c.Expect(m, broadcast.StageShadow)
		lw.deliver(fmt.Sprintf(`{"body":{"token":"leak","n":%d,"updatedAt":"b"},"requestId":"m%d","name":"video.asset.ready"}`, i, i), h.clock.Now())
		rw.deliver(fmt.Sprintf(`{"body":{"token":"s3cret","n":-1,"updatedAt":"c"},"requestId":"m%d","name":"video.asset.ready"}`, i), h.clock.Now())
		h.pump()
	}
	if got := h.count(app, "video", OutcomeMismatch); got != 25 {
		t.Errorf("mismatches = %d, want 25", got)
	}
	lines := logs.FilterMessage("shadow: copies differ from the message sent").All()
	if len(lines) != 20 { // burst of the limiter; the clock did not move
		t.Errorf("log lines = %d, want 20 (rate-limited)", len(lines))
	}
	ex := h.c.Mismatches(3)
	if len(ex) != 3 || ex[0].RequestID != "m24" || ex[2].RequestID != "m22" {
		t.Fatalf("Mismatches(3) = %+v, want m24, m23, m22", ex)
	}
	e := ex[0]
	wantLegacy := []Difference{{Path: "body.token", Kind: "changed", Want: `"[redacted]"`, Got: `"[redacted]"`}}
	wantRealtime := []Difference{{Path: "body.n", Kind: "changed", Want: "24", Got: "-1"}}
	if !reflect.DeepEqual(e.Legacy, wantLegacy) || !reflect.DeepEqual(e.Realtime, wantRealtime) {
		t.Errorf("example diffs = %+v / %+v, want %+v / %+v", e.Legacy, e.Realtime, wantLegacy, wantRealtime)
	}
	if len(e.Between) != 2 {
		t.Errorf("between = %+v, want token and n", e.Between)
	}
	all, _ := json.Marshal(h.c.Mismatches(0))
	for _, secret := range []string{"s3cret", "leak"} {
		if strings.Contains(string(all), secret) {
			t.Errorf("examples leak %q: %s", secret, all)
		}
	}
	for _, l := range lines {
		if b, _ := json.Marshal(l.ContextMap()); strings.Contains(string(b), "s3cret") || strings.Contains(string(b), "leak") {
			t.Errorf("log line leaks a redacted value: %s", b)
		}
	}
	if !strings.Contains(e.Original, `"token":"[redacted]"`) || e.Stage != broadcast.StageShadow || e.Outcome != OutcomeMismatch {
		t.Errorf("example = %+v", e)
	}
	if got := len(h.c.Mismatches(1000)); got != 25 {
		t.Errorf("Mismatches(1000) = %d, want 25", got)
	}
}

func TestRoomCapAndLRU(t *testing.T) {
	h := newHarness(t, Config{MaxRooms: 2}, nil)
	a, _ := h.observe(t, app, "a")
	h.clock.Advance(time.Second)
	b, _ := h.observe(t, app, "b")
	h.clock.Advance(time.Second)
	h.c.Expect(h.msg(t, app, "a", "video", "touch-a", `{}`), broadcast.StageShadow) // a is now newer than b
	h.clock.Advance(time.Second)
	c, _ := h.observe(t, app, "c")
	if !b.closed.Load() || a.closed.Load() || c.closed.Load() {
		t.Errorf("closed a,b,c = %v,%v,%v; want b evicted only", a.closed.Load(), b.closed.Load(), c.closed.Load())
	}
	if got := testutil.ToFloat64(h.c.m.observedRooms); got != 2 {
		t.Errorf("observed rooms = %v, want 2", got)
	}
	if w := h.realtime.last(t, app, "b"); !w.closed.Load() {
		t.Error("realtime watch of b still open")
	}
	// Seen again, b is reopened and another one goes.
	h.clock.Advance(time.Second)
	h.observe(t, app, "b")
	if got := h.legacy.count(app, "b"); got != 2 {
		t.Errorf("b opened %d times, want 2", got)
	}
	if !a.closed.Load() {
		t.Error("a (least recently used) still open")
	}
}

func TestEvictedRoomPendingIsUnobserved(t *testing.T) {
	h := newHarness(t, Config{MaxRooms: 1}, nil)
	lw, _ := h.observe(t, app, "a")
	m := h.msg(t, app, "a", "video", "p1", `{}`)
	h.c.Expect(m, broadcast.StageShadow)
	lw.deliver(string(m.Envelope), h.clock.Now())
	h.pump()
	h.clock.Advance(time.Millisecond)
	h.observe(t, app, "b") // evicts a
	h.c.sweep(h.clock.Advance(DefaultTimeout + time.Millisecond))
	if got := h.count(app, "video", OutcomeUnobserved); got != 1 {
		t.Errorf("unobserved = %d, want 1 (and no missing: %v)", got, h.counts(app, "video"))
	}
}

func TestIdleTTL(t *testing.T) {
	h := newHarness(t, Config{IdleTTL: time.Minute}, nil)
	lw, rw := h.observe(t, app, "r")
	h.c.sweep(h.clock.Advance(30 * time.Second))
	h.pump()
	if lw.closed.Load() {
		t.Fatal("closed before the idle TTL")
	}
	h.c.sweep(h.clock.Advance(31 * time.Second))
	h.pump()
	if !lw.closed.Load() || !rw.closed.Load() {
		t.Error("watches still open after the idle TTL")
	}
	if got := testutil.ToFloat64(h.c.m.observedRooms); got != 0 {
		t.Errorf("observed rooms = %v, want 0", got)
	}
	h.observe(t, app, "r")
	if got := h.legacy.count(app, "r"); got != 2 {
		t.Errorf("reopened %d times, want 2", got)
	}
}

func TestDialFailureRetries(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	failing := true
	h.realtime.fail = func(app, room string) error {
		if failing {
			return errDial
		}
		return nil
	}
	h.c.Expect(h.msg(t, app, "r", "video", "x0", `{}`), broadcast.StageShadow)
	h.pump()
	if lw := h.legacy.last(t, app, "r"); !lw.closed.Load() {
		t.Error("legacy watch left open after the realtime dial failed")
	}
	failing = false
	h.c.Expect(h.msg(t, app, "r", "video", "x1", `{}`), broadcast.StageShadow)
	h.pump()
	if got := h.realtime.calls; got != 1 { // x0 dialed once
		t.Errorf("redialed before the retry delay: %d calls", got)
	}
	h.clock.Advance(dialRetry)
	h.c.Expect(h.msg(t, app, "r", "video", "x2", `{}`), broadcast.StageShadow)
	h.pump()
	m := h.msg(t, app, "r", "video", "x3", `{}`)
	h.c.Expect(m, broadcast.StageShadow)
	h.legacy.last(t, app, "r").deliver(string(m.Envelope), h.clock.Now())
	h.realtime.last(t, app, "r").deliver(string(m.Envelope), h.clock.Now())
	h.pump()
	if got := h.count(app, "video", OutcomeMatch); got != 1 {
		t.Errorf("match after redial = %d, want 1 (%v)", got, h.counts(app, "video"))
	}
}

func TestChannelTimeoutOverride(t *testing.T) {
	h := newHarness(t, Config{Channels: map[string]ChannelConfig{"ai": {Timeout: 20 * time.Second}}}, nil)
	lw, _ := h.observe(t, app, "r")
	m := h.msg(t, app, "r", "ai", "t1", `"x"`)
	h.c.Expect(m, broadcast.StageShadow)
	lw.deliver(string(m.Envelope), h.clock.Now())
	h.pump()
	h.c.sweep(h.clock.Advance(10 * time.Second))
	if got := h.count(app, "ai", OutcomeMissingRealtime); got != 0 {
		t.Fatalf("missing before the channel timeout")
	}
	h.c.sweep(h.clock.Advance(11 * time.Second))
	if got := h.count(app, "ai", OutcomeMissingRealtime); got != 1 {
		t.Errorf("missing_realtime = %d, want 1", got)
	}
}

func TestRunLifecycle(t *testing.T) {
	legacy, realtime := &fakeWatcher{}, &fakeWatcher{}
	c := New(Config{Timeout: 50 * time.Millisecond}, legacy, realtime, nil, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	m, err := broadcast.NewMessage(app, "r", "n", "id1", json.RawMessage(`{}`), "prime", time.Now()) // unobserved, or missing if the dial won the race
	if err != nil {
		t.Fatal(err)
	}
	c.Expect(m, broadcast.StageShadow)
	deadline := time.Now().Add(5 * time.Second)
	for legacy.count(app, "r") == 0 || realtime.count(app, "r") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("room never dialed by Run")
		}
		time.Sleep(time.Millisecond)
	}
	lw := legacy.last(t, app, "r")
	for !c.roomReady(app, "r") {
		if time.Now().After(deadline) {
			t.Fatal("room never ready")
		}
		time.Sleep(time.Millisecond)
	}
	m2, _ := broadcast.NewMessage(app, "r", "n", "id2", json.RawMessage(`{}`), "video", time.Now())
	c.Expect(m2, broadcast.StageShadow)
	lw.deliver(string(m2.Envelope), time.Now())
	// The real sweeper decides missing_realtime after 50 ms.
	for testutil.ToFloat64(c.m.outcomes.WithLabelValues(app, "video", string(OutcomeMissingRealtime))) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("missing_realtime never decided by Run's sweeper: %v", c.Summary())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if !lw.closed.Load() || !realtime.last(t, app, "r").closed.Load() {
		t.Error("watches left open after Run returned")
	}
	if err := c.Run(context.Background()); err == nil {
		t.Error("second Run = nil, want an error")
	}
	c.Expect(m, broadcast.StageShadow) // no-op, must not panic or block
}

// roomReady reports whether app/room is observed and ready (tests only).
func (c *Comparator) roomReady(app, name string) bool {
	k := roomKey{app, name}
	for i := range c.rooms {
		sh := &c.rooms[i]
		sh.mu.RLock()
		r := sh.m[k]
		sh.mu.RUnlock()
		if r != nil {
			return c.sideReady(r, sideLegacy) && c.sideReady(r, sideRealtime)
		}
	}
	return false
}

// TestEvictionMakesRoomInBatches: a new room that finds the table full is
// not admitted (its message is unobserved) and makes the comparator close
// the least recently used twentieth of the rooms, so the next new rooms
// are admitted without another eviction; the table never holds more than
// MaxRooms.
func TestEvictionMakesRoomInBatches(t *testing.T) {
	const maxRooms = 40
	h := newHarness(t, Config{MaxRooms: maxRooms}, nil)
	var first []*fakeWatch
	for i := range maxRooms {
		lw, _ := h.observe(t, app, fmt.Sprintf("r%d", i))
		first = append(first, lw)
		h.clock.Advance(time.Second)
	}
	h.c.Expect(h.msg(t, app, "new-1", "video", "n1", `{}`), broadcast.StageShadow)
	if got := h.legacy.count(app, "new-1"); got != 0 {
		t.Fatalf("a room was admitted into a full table")
	}
	if got := h.count(app, "video", OutcomeUnobserved); got != 1 {
		t.Errorf("unobserved = %d, want 1", got)
	}
	h.pump() // the eviction
	for i, w := range first {
		if want := i < maxRooms/20; w.closed.Load() != want {
			t.Errorf("room r%d closed = %v, want %v (the %d least recently used)", i, w.closed.Load(), want, maxRooms/20)
		}
	}
	for _, room := range []string{"new-1", "new-2"} {
		h.c.Expect(h.msg(t, app, room, "video", room+"-again", `{}`), broadcast.StageShadow)
		h.pump()
		if got := h.legacy.count(app, room); got != 1 {
			t.Errorf("%s opened %d times after the eviction, want 1", room, got)
		}
	}
	if got := h.c.roomCount.Load(); got != maxRooms {
		t.Errorf("rooms = %d, want %d", got, maxRooms)
	}
	if got := testutil.ToFloat64(h.c.m.observedRooms); got != maxRooms {
		t.Errorf("observed rooms gauge = %v, want %d", got, maxRooms)
	}
}

// TestConcurrentRun drives Expect and both transports' frames from several
// goroutines while Run's dialers, workers and sweeper run (for -race).
func TestConcurrentRun(t *testing.T) {
	legacy, realtime := &fakeWatcher{}, &fakeWatcher{}
	// Every copy is delivered: the copy timeout is longer than the test's
	// wait for the matches (within), so a loaded machine that decides late
	// fails the wait with its counts instead of turning matches into
	// missing copies.
	const within = 10 * time.Second
	c := New(Config{Timeout: 3 * within, QueueSize: 1 << 14}, legacy, realtime, nil, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	const owners, roomsPer, perRoom = 4, 5, 50
	errs := make(chan error, owners)
	for o := 0; o < owners; o++ {
		go func() {
			// Each goroutine owns its rooms, so each watch has one caller
			// of onFrame, as the RoomWatcher contract says.
			for r := 0; r < roomsPer; r++ {
				room := fmt.Sprintf("o%d-r%d", o, r)
				prime, _ := broadcast.NewMessage(app, room, "n", room+"-prime", json.RawMessage(`{}`), "prime", time.Now())
				c.Expect(prime, broadcast.StageShadow)
				deadline := time.Now().Add(5 * time.Second)
				for !c.roomReady(app, room) {
					if time.Now().After(deadline) {
						errs <- fmt.Errorf("room %s never ready", room)
						return
					}
					time.Sleep(time.Millisecond)
				}
				lw, rw := legacy.last(t, app, room), realtime.last(t, app, room)
				for i := 0; i < perRoom; i++ {
					m, _ := broadcast.NewMessage(app, room, "n", fmt.Sprintf("%s-%d", room, i), json.RawMessage(`{"i":1.0}`), "video", time.Now())
					m.Seq = uint64(i + 1)
					c.Expect(m, broadcast.StageShadow)
					lw.deliver(string(m.Envelope), time.Now())
					rw.deliver(string(m.Envelope), time.Now())
				}
			}
			errs <- nil
		}()
	}
	for o := 0; o < owners; o++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	want := int64(owners * roomsPer * perRoom)
	deadline := time.Now().Add(within)
	for {
		var got ChannelSummary
		for _, s := range c.Summary() {
			if s.Channel == "video" {
				got = s
			}
		}
		if got.Outcomes[OutcomeMatch] == want {
			if got.Compared != want || got.Outcomes[OutcomeReordered] != 0 {
				t.Errorf("summary = %+v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("matches = %d, want %d (%v)", got.Outcomes[OutcomeMatch], want, got.Outcomes)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
