package broadcast

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config tunes a Multicaster. Zero fields take the defaults named below;
// negative durations and counts are treated as zero.
type Config struct {
	// Apps holds the per-app publish rate limits. An app missing here, or
	// with a zero RatePerSecond, is not limited. When Apps is non-empty its
	// keys are also the app label values of the metrics (other apps are
	// reported as "unknown").
	Apps map[string]AppLimits
	// Channels, when set, are the channel label values of the metrics
	// (DefaultChannel is implied; others are reported as "unknown").
	Channels []string
	// OffPathQueue is how many messages may wait on the off-path side of
	// one transport, all rooms together (default 4096); beyond it the
	// message is dropped for that side.
	OffPathQueue int
	// OffPathWorkers is the number of goroutines publishing off-path per
	// transport (default 64). Each serves one room at a time, so one
	// transport's off-path throughput is about OffPathWorkers / publish
	// latency, and a single room's about 1 / publish latency.
	OffPathWorkers int
	// OffPathTimeout bounds one off-path publish, retries included
	// (default 5s).
	OffPathTimeout time.Duration
	// AnswerTimeout bounds the answering side of one Broadcast: waiting for
	// earlier messages of the room, then the publish with its retries
	// (default 10s). The caller's ctx may end it sooner.
	AnswerTimeout time.Duration
	// DedupWindow is how long a requestId is remembered (default 10m).
	DedupWindow time.Duration
	// DedupMaxEntries bounds the remembered requestIds; beyond it the
	// oldest is forgotten early (default 100000).
	DedupMaxEntries int
	// SampleRate returns the share (0..1) of a channel's rooms whose
	// messages in a compared stage are passed to the Observer. Nil means 1
	// (every message). The choice is deterministic per (app, room): a
	// sampled room is observed whole, its first message included (see
	// Sampled). It is called on the hot path: it must be fast and safe for
	// concurrent use.
	SampleRate func(channel string) float64
	// BatchParallelism bounds how many rooms of one BroadcastBatch are
	// published at the same time (default 8).
	BatchParallelism int
	// Sequenced names the apps whose envelopes carry the "sy" member
	// (Sequence): a per-message id and a gap-free per-room sequence number
	// that browsers use to deliver each message once and in order through
	// stage changes (docs/browser.md). Other apps' envelopes are the plain
	// {body, requestId, name} of today.
	Sequenced map[string]bool
	// SequenceRooms bounds the rooms whose sequence is remembered (default
	// DefaultSequenceRooms); beyond it the least recently used room is
	// forgotten and starts a new epoch.
	SequenceRooms int
	// SequenceIdleTTL is how long a room without messages keeps its
	// sequence (default DefaultSequenceIdleTTL).
	SequenceIdleTTL time.Duration
	// SharedDedup, when set, is the idempotency window shared with the
	// other replicas, asked (for DedupWindow) after the in-memory window
	// lets a requestId through. Nil: the in-memory window alone (one
	// replica). A check that fails or takes longer than SharedDedupTimeout
	// fails open: the message is published as if the id were new, counted
	// in switchyard_idempotency_fail_open_total; after a failure the store
	// is not asked again for SharedDedupBackoff (those messages fail open
	// too, reason backoff), so a slow store costs at most one timeout per
	// backoff period.
	SharedDedup IdempotencyStore
	// SharedDedupTimeout bounds one call to SharedDedup (default 50ms).
	SharedDedupTimeout time.Duration
	// SharedDedupBackoff is how long SharedDedup is left alone after a
	// failure (default 1s).
	SharedDedupBackoff time.Duration
}

func (c Config) withDefaults() Config {
	if c.OffPathQueue <= 0 {
		c.OffPathQueue = 4096
	}
	if c.OffPathWorkers <= 0 {
		c.OffPathWorkers = 64
	}
	if c.OffPathTimeout <= 0 {
		c.OffPathTimeout = 5 * time.Second
	}
	if c.AnswerTimeout <= 0 {
		c.AnswerTimeout = 10 * time.Second
	}
	if c.DedupWindow <= 0 {
		c.DedupWindow = 10 * time.Minute
	}
	if c.DedupMaxEntries <= 0 {
		c.DedupMaxEntries = 100000
	}
	if c.BatchParallelism <= 0 {
		c.BatchParallelism = 8
	}
	if c.SequenceRooms <= 0 {
		c.SequenceRooms = DefaultSequenceRooms
	}
	if c.SequenceIdleTTL <= 0 {
		c.SequenceIdleTTL = DefaultSequenceIdleTTL
	}
	if c.SharedDedupTimeout <= 0 {
		c.SharedDedupTimeout = 50 * time.Millisecond
	}
	if c.SharedDedupBackoff <= 0 {
		c.SharedDedupBackoff = time.Second
	}
	return c
}

// DrainReport says what the shutdown (Close, or the end of Run's ctx) did
// with the off-path work.
type DrainReport struct {
	// Drained is the number of off-path publishes completed (delivered or
	// failed) while the shutdown waited.
	Drained int
	// Dropped is the number of off-path messages discarded because the
	// shutdown's deadline passed before they were published (or while they
	// were), or because no worker was left to publish them.
	Dropped int
	// Unfinished is the number of answering publishes still running when
	// the deadline passed; they finish on their callers' deadlines.
	Unfinished int
}

// DropObserver may be implemented by the Observer given to NewMulticaster.
// For a message passed to Expect whose off-path copy is then dropped (queue
// full, or shutdown), Dropped is called with the transport that will never
// get it, so the comparator can count it as dropped rather than missing. It
// is called from Broadcast or an off-path worker, must not block, and may run
// concurrently with Expect.
type DropObserver interface {
	Dropped(m *Message, t Transport, reason string)
}

// BatchResult is one message's result in BroadcastBatch.
type BatchResult struct {
	Outcome Outcome
	Err     error
}

// Multicaster publishes each accepted message to the transports its stage
// names: the answering transport on the caller's path, the other one (in
// shadow and dual) through a bounded off-path queue and worker pool.
//
// Contract:
//   - Stages: legacy publishes to PartyKit only, realtime to Inngest
//     Realtime only; shadow answers with PartyKit and queues realtime; dual
//     answers with realtime and queues PartyKit. Only the answering
//     transport's failure is returned; off-path failures are counted and
//     logged (sampled).
//   - The off-path copy is queued only once the answering publish
//     succeeded: a message the caller is told failed (and may retry) is
//     published nowhere else (Skipped, "not published: the answering
//     transport failed first"; a DropObserver hears Dropped with reason
//     "answer_failed"). So the off-path copy starts after the answer: its
//     latency includes the answering publish (docs/shadow.md).
//   - Isolation: the off-path side has its own queue and workers per
//     transport, its own deadline (OffPathTimeout) and a context detached
//     from the caller's. Queuing never blocks: when OffPathQueue messages
//     already wait, the message is dropped for that side (Skipped, reason
//     "queue full", counted as dropped). A slow or hung off-path transport
//     therefore never delays the answering one.
//   - Observation: a sampled message (Sampled) of a compared stage is
//     passed to the Observer's Expect before either copy is published.
//     When the Observer is a WatchAwaiter, the answering publish first
//     waits in AwaitWatch for the observer's watch of the answering
//     transport only (the observer bounds that wait), and the off-path
//     copy waits in its room's lane for the off-path transport's watch, at
//     most OffPathTimeout, before a publish that has its own OffPathTimeout.
//     So the off-path transport never delays the answer.
//   - Order: messages of one room (app, room) reach each transport in the
//     order the Multicaster accepted them, on both paths and with
//     concurrent callers. Acceptance takes a per-room lock, held while the
//     off-path copy is queued and the answering publish runs; Message.Seq
//     is assigned under it. Off-path messages wait in a FIFO queue per room
//     and transport; a worker takes a room (not a message) and publishes
//     its messages one at a time, so a room never has two off-path
//     publishes to one transport in flight. When a room's answering
//     transport still has off-path messages of that room queued (its stage
//     changed, or its channels are in different stages), the answering
//     publish first waits for them, within AnswerTimeout (then EUPSTREAM,
//     nothing published). A consequence: one room's messages are published
//     one at a time per transport; different rooms proceed in parallel.
//   - Idempotency: a requestId seen for the same app within DedupWindow is
//     not published again; the answer marks every transport Duplicate and
//     no error is returned. The window is in memory, and also shared with
//     the other replicas when Config.SharedDedup is set (a failed or slow
//     shared check fails open: see there). A requestId whose answering
//     publish failed is forgotten so that the app's retry goes through (it
//     had no off-path copy, so the retry publishes each side once).
//   - Lifecycle: NewMulticaster starts nothing. Run(ctx) runs the off-path
//     workers (2*OffPathWorkers goroutines) and returns once they stopped.
//     Broadcast works before Run: the answering side publishes at once and
//     off-path copies wait in their queues (bounded as ever) until Run's
//     workers take them. Close(ctx) is the orderly shutdown: it stops
//     intake, waits for the Broadcasts in flight, lets the workers drain
//     the queues within ctx's deadline, then stops them, which ends Run.
//     The end of Run's ctx is the abrupt shutdown: Close with a deadline
//     already passed (off-path publishes cancelled, the queued ones
//     dropped). The wiring therefore runs Run under a context that outlives
//     the public listener's drain and calls Close after that drain, so
//     that intake stops, then the queues drain, then the comparator's
//     subscriptions close.
//
// All methods are safe for concurrent use.
type Multicaster struct {
	cfg  Config
	pubs [2]Publisher
	// bounds are the publishers' CallBound (0: none known), by transport
	// index.
	bounds   [2]time.Duration
	resolver StageResolver
	observer Observer
	dropObs  DropObserver // observer as a DropObserver, or nil
	awaiter  WatchAwaiter // observer as a WatchAwaiter, or nil
	metrics  *boundMetrics
	offLog   *zap.Logger
	now      func() time.Time

	rooms   *rooms
	dedup   *dedupWindow
	shared  *sharedDedup // nil without Config.SharedDedup
	limiter *rateLimiter
	seq     atomic.Uint64
	seqr    *sequencer

	// Off-path side, per transport index: rooms with queued messages wait
	// in ready (each at most once, so it never fills: a room is there only
	// while it has a queued message, and at most OffPathQueue are queued);
	// queued counts waiting messages, outstanding waiting or running ones.
	ready       [2]chan *roomState
	queued      [2]atomic.Int64
	outstanding [2]atomic.Int64
	closing     atomic.Bool   // set by Close once no Broadcast is in flight
	drainedCh   chan struct{} // signalled when outstanding drops to 0 while closing
	stopWorkers chan struct{} // closed by Close once the queues are empty

	// state counts Broadcasts in flight; closedBit is set by Close.
	state atomic.Int64
	idle  chan struct{} // signalled when state drops to closedBit

	workersWG sync.WaitGroup
	processed atomic.Int64 // off-path publishes completed
	shutDrops atomic.Int64 // off-path messages dropped for shutdown

	// closeMu guards the lifecycle below; Close holds it throughout.
	closeMu sync.Mutex
	ran     bool               // Run was called
	working bool               // Run's workers were started
	cancel  context.CancelFunc // cancels the off-path publishes; set by Run
	closed  bool
	report  DrainReport
	stopped chan struct{} // closed when Close has finished
}

const closedBit = int64(1) << 62

// offJob is one queued off-path publish. It is counted in its room's
// pending jobs until it completes; the room's state stays alive meanwhile
// because a scheduled room holds a reference.
type offJob struct {
	m     *Message
	st    *roomState
	h     uint64
	t     int // transport index
	stage Stage
	cm    *chanMetrics
	// expected is set when the Observer was told about m.
	expected bool
}

// Reasons shown in Delivery.Reason.
const (
	reasonNotInStage = "not published in this stage"
	reasonQueueFull  = "queue full"
	reasonShutting   = "shutting down"
	reasonNotSent    = "not published: the answering transport failed first"
)

// NewMulticaster returns a Multicaster publishing through legacy (PartyKit)
// and realtime (Inngest Realtime) as resolver decides. It starts no
// goroutine: Run runs the off-path workers. observer may be nil; m nil means
// unregistered metrics; logger nil means no logs; now nil means time.Now.
// legacy and realtime must be non-nil.
func NewMulticaster(cfg Config, legacy, realtime Publisher, resolver StageResolver, observer Observer, m *Metrics, logger *zap.Logger, now func() time.Time) *Multicaster {
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	apps := make([]string, 0, len(cfg.Apps))
	for a := range cfg.Apps {
		apps = append(apps, a)
	}
	sort.Strings(apps)
	mc := &Multicaster{
		cfg:      cfg,
		pubs:     [2]Publisher{legacy, realtime},
		bounds:   [2]time.Duration{callBound(legacy), callBound(realtime)},
		resolver: resolver,
		observer: observer,
		metrics:  newBoundMetrics(m, apps, cfg.Channels),
		offLog: logger.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
			// Off-path failures come in bursts when an upstream is down:
			// log the first 5 per second and message, then every 100th.
			return zapcore.NewSamplerWithOptions(c, time.Second, 5, 100)
		})),
		now:     now,
		rooms:   newRooms(),
		dedup:   newDedupWindow(cfg.DedupWindow, cfg.DedupMaxEntries),
		limiter: newRateLimiter(cfg.Apps),
		seqr:    newSequencer(cfg.SequenceRooms, cfg.SequenceIdleTTL, cfg.Channels),
		idle:    make(chan struct{}, 1),

		drainedCh:   make(chan struct{}, 1),
		stopWorkers: make(chan struct{}),
		stopped:     make(chan struct{}),
	}
	mc.dropObs, _ = observer.(DropObserver)
	mc.awaiter, _ = observer.(WatchAwaiter)
	if cfg.SharedDedup != nil {
		mc.shared = &sharedDedup{store: cfg.SharedDedup, window: cfg.DedupWindow, timeout: cfg.SharedDedupTimeout,
			backoff: cfg.SharedDedupBackoff, now: now, log: mc.offLog, metrics: mc.metrics}
	}
	for t := range mc.ready {
		mc.ready[t] = make(chan *roomState, cfg.OffPathQueue+1)
	}
	return mc
}

// errRunTwice is Run's answer to a second call.
var errRunTwice = errors.New("broadcast: Multicaster.Run called more than once")

// Run publishes the off-path queues with 2*OffPathWorkers worker goroutines
// until Close has drained them or ctx ends, and returns once every worker
// has exited. Off-path publishes run under a context with ctx's values,
// each bounded by OffPathTimeout and all cancelled by the shutdown. ctx
// must outlive the orderly drain: its end is an abrupt shutdown, as Close with a deadline already passed
// (intake stops, running off-path publishes are cancelled, queued ones
// are dropped and counted with reason "shutdown"; Close then returns that
// report). Run returns nil in both cases. It returns an error at once when
// called a second time, and nil at once when called after Close.
func (mc *Multicaster) Run(ctx context.Context) error {
	mc.closeMu.Lock()
	if mc.ran {
		mc.closeMu.Unlock()
		return errRunTwice
	}
	mc.ran = true
	if mc.closed {
		mc.closeMu.Unlock()
		return nil
	}
	// Cancelled by the shutdown (Close's deadline, or ctx's end through
	// Close), so that its report counts what the cancellation dropped.
	pubCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	mc.cancel = cancel
	mc.working = true
	for t := range mc.ready {
		for range mc.cfg.OffPathWorkers {
			mc.workersWG.Add(1)
			go mc.runWorker(pubCtx, t)
		}
	}
	mc.closeMu.Unlock()

	select {
	case <-mc.stopped:
	case <-ctx.Done():
		// Close with a passed deadline; a Close already under way wins
		// and this one waits for it.
		mc.Close(ctx)
	}
	mc.workersWG.Wait()
	return nil
}

// Resolve returns the route of m as the Multicaster's resolver decides it,
// with an unknown stage replaced by StageLegacy. It does not block.
func (mc *Multicaster) Resolve(m *Message) Route {
	r := mc.resolver.Resolve(RouteQuery{App: m.App, Room: m.Room, Channel: m.Channel, Event: m.Name})
	r.Stage = stages[stageIndex(r.Stage)]
	return r
}

// enter registers a Broadcast in flight; false once Close has begun.
func (mc *Multicaster) enter() bool {
	if mc.state.Add(1)&closedBit != 0 {
		mc.leave()
		return false
	}
	return true
}

func (mc *Multicaster) leave() {
	if mc.state.Add(-1) == closedBit {
		select {
		case mc.idle <- struct{}{}:
		default:
		}
	}
}

// Broadcast publishes m, a message built by NewMessage, to the transports of
// its stage and returns the caller's answer. It blocks until the answering
// transport accepted or refused m (at most AnswerTimeout, less if ctx ends
// sooner); then, if it accepted, the off-path copy is queued (never
// blocking). It sets m.Seq, so m must not
// be passed to concurrent Broadcast calls; afterwards m is shared read-only
// with the off-path worker and the Observer.
//
// Broadcast may be called before Run (see Multicaster, Lifecycle).
//
// Errors, all *Error: EDRAINING after Close began (or Run's ctx ended);
// ERATELIMIT with
// RetryAfterSeconds when m.App is over its rate; EUPSTREAM naming the
// answering transport when it failed (the Outcome is returned too, that
// transport Failed); EINVALID, ETOOLARGE or EROOM, also naming the
// transport, when the answering transport refused m before sending it. A
// duplicate requestId is no error.
func (mc *Multicaster) Broadcast(ctx context.Context, m *Message) (Outcome, error) {
	if m == nil {
		return Outcome{}, Errorf(EINVALID, "message: required")
	}
	if !mc.enter() {
		return Outcome{RequestID: m.RequestID}, &Error{Code: EDRAINING, Message: "the gateway is shutting down"}
	}
	defer mc.leave()

	route := mc.Resolve(m)
	stage := route.Stage
	out := Outcome{RequestID: m.RequestID, Stage: stage}
	am := mc.metrics.app(m.App)
	now := mc.now()
	if wait := mc.limiter.allow(m.App, now); wait > 0 {
		am.rateLimited.Inc()
		return out, &Error{Code: ERATELIMIT, Message: "app " + m.App + " is over its publish rate", RetryAfterSeconds: wait}
	}
	// Only messages with an idempotency key are deduplicated: the drop-in
	// path has none (apps reuse requestId as a correlation id there).
	var gen uint64
	var token string
	dup, sharedClaimed := false, false
	if m.IdempotencyKey != "" {
		gen, dup = mc.dedup.claim(m.App, m.IdempotencyKey, now)
		if !dup && mc.shared != nil {
			token, dup, sharedClaimed = mc.shared.claim(ctx, m.App, m.IdempotencyKey)
			sharedClaimed = sharedClaimed && !dup
		}
	}
	if dup {
		am.duplicates.Inc()
		out.Deliveries = map[Transport]Delivery{
			TransportLegacy:   {Status: Duplicate},
			TransportRealtime: {Status: Duplicate},
		}
		return out, nil
	}
	cm := am.channel(m.Channel)
	out, err := mc.publish(ctx, m, route, out, cm)
	if err != nil && m.IdempotencyKey != "" {
		mc.dedup.release(m.App, m.IdempotencyKey, gen)
		if sharedClaimed {
			mc.shared.release(ctx, m.App, m.IdempotencyKey, token)
		}
	}
	return out, err
}

// publish runs the accepted m under its room's lock.
func (mc *Multicaster) publish(ctx context.Context, m *Message, route Route, out Outcome, cm *chanMetrics) (Outcome, error) {
	stage := route.Stage
	ans := stage.Answering()
	ai := tIndex(ans)
	off, hasOff := stage.OffPath()
	out.Deliveries = make(map[Transport]Delivery, 2)

	// The answering side ends at dl (AnswerTimeout, or the caller's
	// deadline when sooner). Its timer context is made only when something
	// is about to wait on it (bound): a contended room lock, earlier
	// off-path messages of the room, the observer's watch, or a publisher
	// that would not end on its own before dl (Bounded). The common
	// message needs none, which saves a timer and five allocations.
	dl := time.Now().Add(mc.cfg.AnswerTimeout)
	bounded := false
	if cdl, ok := ctx.Deadline(); ok && !cdl.After(dl) {
		dl, bounded = cdl, true
	}
	var cancel context.CancelFunc
	bound := func() {
		if !bounded {
			ctx, cancel = context.WithDeadline(ctx, dl)
			bounded = true
		}
	}
	defer func() {
		if cancel != nil {
			cancel()
		}
	}()

	h := hash2(m.App, m.Room)
	st := mc.rooms.acquire(m.App, m.Room, h)
	defer mc.rooms.release(st, h)
	var err error
	if !st.tryLock() {
		bound()
		err = st.lock(ctx)
	}
	if err == nil && !st.idleFor(ai) {
		bound()
		err = st.waitIdle(ctx, ai)
		if err != nil {
			st.unlock()
		}
	}
	if err != nil {
		// Nothing was published: the room's earlier messages did not clear
		// within the deadline.
		cm.deliveries[ai][mFailed].Inc()
		out.Deliveries[ans] = Delivery{Status: Failed, Reason: "timed out behind earlier messages of the room"}
		other := transportsByIndex[1-ai]
		out.Deliveries[other] = Delivery{Status: Skipped, Reason: reasonNotSent}
		return out, &Error{Code: EUPSTREAM, Transport: ans,
			Message: string(ans) + " transport failed: timed out behind earlier messages of the room", Err: err}
	}
	defer st.unlock()

	m.Seq = mc.seq.Add(1)
	if mc.cfg.Sequenced[m.App] {
		mc.sequence(m, route)
	}
	expected := false
	if mc.observer != nil && stage.Compared() && mc.sampled(m) {
		mc.observer.Expect(m, stage)
		expected = true
	}
	oi := 1 - ai
	if !hasOff {
		cm.deliveries[oi][mSkipped].Inc()
		out.Deliveries[transportsByIndex[oi]] = Delivery{Status: Skipped, Reason: reasonNotInStage}
	}

	if expected && mc.awaiter != nil {
		// The observer bounds this wait itself; it only waits for the
		// answering transport's watch, never for the off-path one.
		bound()
		mc.awaiter.AwaitWatch(ctx, m, ans)
	}
	if b := mc.bounds[ai]; b == 0 || time.Until(dl) < b {
		bound()
	}
	start := mc.now()
	res, err := mc.pubs[ai].Publish(ctx, m)
	d := mc.now().Sub(start)
	mc.metrics.duration[ai][pathAnswer].Observe(d.Seconds())
	del := Delivery{Status: Delivered, Attempts: res.Attempts, Duration: d, Millis: float64(d) / 1e6}
	if err == nil {
		// Accepted means the answering transport took it: a failed one is
		// rejected (the API counts it), never both.
		cm.accepted[stageIndex(stage)].Inc()
		cm.deliveries[ai][mDelivered].Inc()
		out.Deliveries[ans] = del
		if hasOff {
			// Only now, still under the room lock (so the room's order
			// holds on the off-path side too): a message whose answer
			// failed has no off-path copy.
			out.Deliveries[off] = mc.enqueue(offJob{m: m, st: st, h: h, t: oi, stage: stage, cm: cm, expected: expected})
		}
		return out, nil
	}
	cm.deliveries[ai][mFailed].Inc()
	del.Status = Failed
	del.Reason = ErrorMessage(err)
	out.Deliveries[ans] = del
	if hasOff {
		// The caller gets an error and may retry: a copy published on the
		// other side would then be a duplicate there.
		cm.deliveries[oi][mSkipped].Inc()
		out.Deliveries[off] = Delivery{Status: Skipped, Reason: reasonNotSent}
		if expected && mc.dropObs != nil {
			mc.dropObs.Dropped(m, off, "answer_failed")
		}
	}
	code := ErrorCode(err)
	switch code {
	case EINVALID, ETOOLARGE, EROOM:
		return out, &Error{Code: code, Transport: ans, Message: string(ans) + " transport refused the message: " + del.Reason, Err: err}
	}
	return out, &Error{Code: EUPSTREAM, Transport: ans, Message: string(ans) + " transport failed: " + del.Reason, Err: err}
}

// sequence gives m its room's next sequence number and renders its
// sequenced envelope. The caller holds the room lock.
func (mc *Multicaster) sequence(m *Message, route Route) {
	epoch, n := mc.seqr.next(m.App, m.Room, m.Channel, m.AcceptedAt)
	sq := &Sequence{
		ID: epoch + "-" + strconv.FormatUint(n, 10), Epoch: epoch, Seq: n, TS: m.AcceptedAt.UnixMilli(),
		Stage: route.Stage, Channel: m.Channel, KillSwitch: route.KillSwitch,
	}
	m.Sequence = sq
	m.Envelope = AppendSequencedEnvelope(make([]byte, 0, len(m.Envelope)+len(epoch)*2+len(m.Channel)+96), m.Body, m.RequestID, m.Name, sq)
}

// RoomSequence returns the current epoch of (app, room) and the last
// sequence number assigned in it (0 when none yet); the state is created
// when absent, so the epoch returned is the one the room's next message
// carries unless the room is forgotten meanwhile. The token endpoint hands
// it to browsers as their starting point. Safe for concurrent use; it does
// not block on I/O.
func (mc *Multicaster) RoomSequence(app, room string) (epoch string, last uint64) {
	return mc.seqr.peek(app, room, mc.now())
}

// SequenceChannel returns the channel of the message numbered seq in epoch
// of (app, room), while it is among the room's last 128 sequenced
// messages; ok is false otherwise. Receipts that name a message the
// browser never received are counted under this channel. Safe for
// concurrent use.
func (mc *Multicaster) SequenceChannel(app, room, epoch string, seq uint64) (channel string, ok bool) {
	return mc.seqr.channelOf(app, room, epoch, seq)
}

// sampled reports whether m is passed to the Observer. A message to a
// party other than the app's default (m.Party set) never is: the
// comparator watches each room in the default party only, and would count
// its copies missing. Otherwise Sampled decides for m's room.
func (mc *Multicaster) sampled(m *Message) bool {
	return m.Party == "" && mc.Sampled(m.App, m.Room, m.Channel)
}

// Sampled reports whether the messages of channel in room of app are
// passed to the Observer when their stage is compared: the decision is a
// deterministic hash of app and room against the channel's SampleRate, so
// every message of a sampled room is observed, and a room sampled at a
// rate stays sampled at every higher rate. The token endpoint asks it to
// warm the comparator's watches of a sampled room before its traffic. Messages
// to a party other than the app's default are never observed, whatever
// this answers. It does not block and is safe for concurrent use.
func (mc *Multicaster) Sampled(app, room, channel string) bool {
	if mc.cfg.SampleRate == nil {
		return true
	}
	rate := mc.cfg.SampleRate(channel)
	switch {
	case rate >= 1:
		return true
	case !(rate > 0): // also NaN
		return false
	}
	return float64(hash2(app, room)>>11)/(1<<53) < rate
}

// enqueue queues job behind the earlier off-path messages of its room,
// never blocking. The caller holds the room lock and a reference on job.st.
func (mc *Multicaster) enqueue(job offJob) Delivery {
	t := job.t
	// Counted before checking closing, so that Close, which sets closing
	// and then waits for outstanding to reach zero, cannot miss this job.
	mc.outstanding[t].Add(1)
	if mc.closing.Load() {
		mc.doneOutstanding(t)
		job.cm.deliveries[t][mDropped].Inc()
		mc.shutDrops.Add(1)
		mc.metrics.dropped[t][dropShutdown].Inc()
		mc.tellDropped(job, "shutdown")
		return Delivery{Status: Skipped, Reason: reasonShutting}
	}
	if mc.queued[t].Add(1) > int64(mc.cfg.OffPathQueue) {
		mc.queued[t].Add(-1)
		mc.doneOutstanding(t)
		job.cm.deliveries[t][mDropped].Inc()
		mc.metrics.dropped[t][dropQueueFull].Inc()
		mc.tellDropped(job, "queue_full")
		return Delivery{Status: Skipped, Reason: reasonQueueFull}
	}
	mc.metrics.depth[t].Inc()
	st := job.st
	st.pmu.Lock()
	st.pending[t]++
	st.q[t] = append(st.q[t], job)
	schedule := !st.scheduled[t]
	st.scheduled[t] = true
	st.pmu.Unlock()
	if schedule {
		// The room's reference while it is scheduled; dropped by the
		// worker that finds its queue empty.
		mc.rooms.ref(st, job.h)
		mc.ready[t] <- st // never blocks, see ready
	}
	return Delivery{Status: Queued}
}

// doneOutstanding uncounts one off-path message of transport index t.
func (mc *Multicaster) doneOutstanding(t int) {
	if mc.outstanding[t].Add(-1) == 0 && mc.closing.Load() {
		select {
		case mc.drainedCh <- struct{}{}:
		default:
		}
	}
}

// roomTurn is how many messages of one room a worker publishes before it
// lets other rooms of the ready queue go first.
const roomTurn = 16

// runWorker serves rooms of transport index t until Close stops it.
// Off-path publishes run under ctx, which Close cancels when its deadline
// passes.
func (mc *Multicaster) runWorker(ctx context.Context, t int) {
	defer mc.workersWG.Done()
	for {
		select {
		case st := <-mc.ready[t]:
			mc.serveRoom(ctx, st, t)
		case <-mc.stopWorkers:
			return
		}
	}
}

// serveRoom publishes the queued messages of st for transport index t in
// order, until its queue is empty or its turn is over.
func (mc *Multicaster) serveRoom(ctx context.Context, st *roomState, t int) {
	for n := 0; ; n++ {
		st.pmu.Lock()
		if st.qh[t] == len(st.q[t]) {
			clear(st.q[t])
			st.q[t], st.qh[t] = st.q[t][:0], 0
			st.scheduled[t] = false
			h := st.h
			st.pmu.Unlock()
			mc.rooms.release(st, h)
			return
		}
		if n == roomTurn {
			st.pmu.Unlock()
			mc.ready[t] <- st // still scheduled; never blocks
			return
		}
		job := st.q[t][st.qh[t]]
		st.q[t][st.qh[t]] = offJob{}
		st.qh[t]++
		st.pmu.Unlock()
		mc.queued[t].Add(-1)
		mc.metrics.depth[t].Dec()
		mc.runJob(ctx, job)
	}
}

// runJob publishes job under base (bounded by OffPathTimeout), or drops it
// for shutdown when base has ended.
func (mc *Multicaster) runJob(base context.Context, job offJob) {
	defer func() {
		job.st.donePending(job.t)
		mc.doneOutstanding(job.t)
	}()
	if base.Err() != nil {
		mc.dropForShutdown(job)
		return
	}
	if job.expected && mc.awaiter != nil {
		// In the room's lane, off the caller's path: wait for the
		// observer's watch of this transport, at most OffPathTimeout, then
		// publish with a budget of its own.
		wctx, cancel := context.WithTimeout(base, mc.cfg.OffPathTimeout)
		mc.awaiter.AwaitWatch(wctx, job.m, transportsByIndex[job.t])
		cancel()
		if base.Err() != nil {
			mc.dropForShutdown(job)
			return
		}
	}
	// The publish's own bound (Bounded) within OffPathTimeout spares the
	// timer context; base still carries the shutdown's cancellation.
	ctx, cancel := base, context.CancelFunc(nil)
	if b := mc.bounds[job.t]; b == 0 || b > mc.cfg.OffPathTimeout {
		ctx, cancel = context.WithTimeout(base, mc.cfg.OffPathTimeout)
	}
	start := mc.now()
	res, err := mc.pubs[job.t].Publish(ctx, job.m)
	if cancel != nil {
		cancel()
	}
	d := mc.now().Sub(start)
	mc.metrics.duration[job.t][pathOffPath].Observe(d.Seconds())
	switch {
	case err == nil:
		mc.processed.Add(1)
		job.cm.deliveries[job.t][mDelivered].Inc()
	case base.Err() != nil:
		mc.dropForShutdown(job)
	default:
		mc.processed.Add(1)
		job.cm.deliveries[job.t][mFailed].Inc()
		if ce := mc.offLog.Check(zapcore.WarnLevel, "off-path publish failed"); ce != nil {
			ce.Write(
				zap.String("transport", string(transportsByIndex[job.t])),
				zap.String("stage", string(job.stage)),
				zap.String("app", job.m.App),
				zap.String("channel", job.m.Channel),
				zap.String("room", job.m.Room),
				zap.String("requestId", job.m.RequestID),
				zap.Int("attempts", res.Attempts),
				zap.Duration("duration", d),
				zap.Error(err),
			)
		}
	}
}

func (mc *Multicaster) dropForShutdown(job offJob) {
	mc.shutDrops.Add(1)
	mc.metrics.dropped[job.t][dropShutdown].Inc()
	job.cm.deliveries[job.t][mDropped].Inc()
	mc.tellDropped(job, "shutdown")
}

// tellDropped tells the DropObserver, if any, that the Observer's copy of
// job.m will not reach job.t.
func (mc *Multicaster) tellDropped(job offJob, reason string) {
	if job.expected && mc.dropObs != nil {
		mc.dropObs.Dropped(job.m, transportsByIndex[job.t], reason)
	}
}

// BroadcastBatch publishes msgs (at most 100; the HTTP layer enforces it)
// and returns one result per message, in input order. Messages of one room
// are published one after the other in input order; different rooms
// proceed in parallel, at most BatchParallelism at a time. Each message is
// handled as by Broadcast, so one message's failure does not stop the
// others. It blocks until every message has its result.
func (mc *Multicaster) BroadcastBatch(ctx context.Context, msgs []*Message) []BatchResult {
	results := make([]BatchResult, len(msgs))
	// Group message indexes by room, keeping input order in each group.
	groupOf := make(map[roomKey]int, len(msgs))
	var groups [][]int
	for i, m := range msgs {
		if m == nil {
			results[i].Err = Errorf(EINVALID, "messages[%d]: required", i)
			continue
		}
		k := roomKey{m.App, m.Room}
		g, ok := groupOf[k]
		if !ok {
			g = len(groups)
			groupOf[k] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	runGroup := func(g []int) {
		for _, i := range g {
			out, err := mc.Broadcast(ctx, msgs[i])
			results[i] = BatchResult{Outcome: out, Err: err}
		}
	}
	workers := min(len(groups), mc.cfg.BatchParallelism)
	if workers <= 1 {
		for _, g := range groups {
			runGroup(g)
		}
		return results
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	work := func() {
		for {
			g := int(next.Add(1)) - 1
			if g >= len(groups) {
				return
			}
			runGroup(groups[g])
		}
	}
	wg.Add(workers - 1)
	for w := 1; w < workers; w++ {
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
	wg.Wait()
	return results
}

// Close shuts the Multicaster down in order. From its start Broadcast fails
// with EDRAINING. It waits for the Broadcasts in flight, then lets Run's
// workers publish what is queued, all within ctx's deadline; when ctx ends
// it cancels the off-path publishes and drops what is left (counted with
// reason "shutdown"). Before Run, nothing can publish the queued
// messages: Close drops them at once (Run, called later, returns nil). It returns once every
// worker goroutine has exited, which requires the Publishers to return
// promptly when their ctx is cancelled; Run then returns. Later calls,
// and calls after Run's ctx ended, wait for the first shutdown to finish
// and return its report.
func (mc *Multicaster) Close(ctx context.Context) DrainReport {
	mc.closeMu.Lock()
	defer mc.closeMu.Unlock()
	if mc.closed {
		return mc.report
	}
	mc.closed = true
	defer close(mc.stopped)
	p0, d0 := mc.processed.Load(), mc.shutDrops.Load()
	cancelPubs := func() {
		if mc.cancel != nil {
			mc.cancel()
		}
	}

	var rep DrainReport
	if old := mc.state.Or(closedBit); old&^closedBit != 0 {
		select {
		case <-mc.idle:
		case <-ctx.Done():
			rep.Unfinished = int(mc.state.Load() &^ closedBit)
		}
	}
	mc.closing.Store(true)
	if !mc.working {
		// Run's workers will never take the queued messages: one worker
		// per transport, with a context already cancelled, drops them
		// (and any a Broadcast still in flight queues) until the loop
		// below has seen every one uncounted.
		dead, cancel := context.WithCancel(context.Background())
		cancel()
		for t := range mc.ready {
			mc.workersWG.Add(1)
			go mc.runWorker(dead, t)
		}
	}
	done := ctx.Done()
	for mc.outstanding[0].Load()+mc.outstanding[1].Load() > 0 {
		select {
		case <-mc.drainedCh:
		case <-done:
			// Out of time: cancel the running publishes; the workers drop
			// the rest quickly.
			cancelPubs()
			done = nil
		}
	}
	close(mc.stopWorkers)
	mc.workersWG.Wait()
	cancelPubs()
	rep.Drained = int(mc.processed.Load() - p0)
	rep.Dropped = int(mc.shutDrops.Load() - d0)
	mc.report = rep
	return rep
}
