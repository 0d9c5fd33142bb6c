// Package shadow is Switchyard's comparator: it watches the rooms of the
// messages the multicast adapter publishes in the shadow and dual stages
// through browser-like subscriptions on both transports, correlates the two
// received copies with the envelope the gateway sent, and records match,
// mismatch, precision loss, missing, duplicate and reordered copies, the
// messages it could not observe (by reason) and so its coverage, and the
// delivery latencies, as Prometheus metrics, rate-limited log lines, a
// sliding-window summary and a ring of recent mismatch examples.
//
// On the caller's path the comparator only records (Expect) and, for a
// room whose watch of the answering transport is not proven ready yet,
// holds the answering publish at most Config.ReadyWait (AwaitWatch);
// subscriptions are dialed, frames decoded and compared by the goroutines
// of Run. See docs/shadow.md.
package shadow

import (
	"context"
	"errors"
	"hash/maphash"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
)

// RoomWatcher opens browser-like subscriptions to rooms of one transport.
// WatchRoom must return promptly (connecting happens in the background) and
// be safe for concurrent use; onFrame is called from one goroutine per
// watch, in arrival order, with the envelope JSON of each message, and is
// not called after the watch's Close returns.
type RoomWatcher interface {
	WatchRoom(app, room string, onFrame func(data []byte, receivedAt time.Time)) (broadcast.Watch, error)
}

var _ broadcast.Observer = (*Comparator)(nil)

const (
	nShards       = 64
	exampleCap    = 128
	originalBytes = 4096
	// dialRetry is how long a room whose WatchRoom failed waits before an
	// Expect may try again.
	dialRetry = 30 * time.Second
	// closeParallel bounds concurrent Close calls at shutdown.
	closeParallel = 32
)

// Room states.
const (
	stateOpening int32 = iota
	stateOpen
	stateFailed
	stateClosed
)

type roomKey struct{ app, room string }

type watchPair struct{ legacy, realtime broadcast.Watch }

// room is one observed room.
type room struct {
	key      roomKey
	worker   int
	lastUsed atomic.Int64 // unix nanos of the last Expect
	state    atomic.Int32
	retryAt  atomic.Int64
	watches  atomic.Pointer[watchPair]
	// dropAt is when a frame of this room was last dropped per side (unix
	// nanos), so a copy missing after a drop counts as dropped.
	dropAt [2]atomic.Int64

	mu     sync.Mutex // serialises open and close
	closed bool
	// opened is closed once the first open attempt ended (openDone);
	// both guarded by mu, opened made on first use.
	opened   chan struct{}
	openDone bool
	// stalled marks a side whose wait for readiness ran out; later copies
	// of the room do not wait on that side until it is ready again.
	stalled [2]atomic.Bool

	// maxSeq is the highest Seq received per side; owned by the room's
	// worker goroutine.
	maxSeq [2]uint64
}

type roomShard struct {
	mu sync.RWMutex
	m  map[roomKey]*room
}

type pendingKey struct{ app, room, requestID string }

// sideState is what arrived on one side for one expectation.
type sideState struct {
	arrived bool
	dup     bool // a duplicate was counted
	done    bool // compared against the original
	at      time.Time
	cls     class
	diffs   []Difference
	tree    any // the copy, kept only when it differs (for Between)
	// watchReady says whether the side's watch was ready when its copy
	// was published (AwaitWatch, which sets awaited), or, until then,
	// when the message was expected.
	awaited    bool
	watchReady bool
}

// entry is one expectation. Fields are guarded by the pending shard's mutex
// except orig, which only the room's worker touches.
type entry struct {
	m          *broadcast.Message // nil once decided
	stage      broadcast.Stage
	cs         *chanStats
	rules      *rules
	room       *room
	expectAt   int64
	deadline   int64
	unobserved bool // counted unobserved at Expect; absorbs its copies
	decided    bool
	inflight   int
	awaiting   int // AwaitWatch calls running for this entry
	got        [2]sideState
	// offDropped marks a side whose off-path copy the gateway dropped
	// (queue full, shutdown): its absence is "dropped", not "missing".
	offDropped [2]bool
	// next is the following expectation with the same key: the PartyKit
	// drop-in path lets apps send several messages with one requestId (the
	// streamed ai.message chunks of one answer), and copies match them in
	// acceptance order.
	next *entry

	orig any // decoded, normalised original; worker-owned
}

type pendShard struct {
	mu sync.Mutex
	m  map[pendingKey]*entry
}

type frame struct {
	room    *room
	side    side
	data    []byte
	at      time.Time
	barrier chan struct{} // test flush marker
}

type roomOp struct {
	room  *room
	close bool
}

// Comparator correlates the copies of compared messages. Expect,
// AwaitWatch, Warm, RoomReady, Summary and Mismatches are safe for
// concurrent use at any time; Run must be called once to dial, process and
// sweep.
type Comparator struct {
	cfg       Config
	legacy    RoomWatcher
	realtime  RoomWatcher
	m         *Metrics
	log       *zap.Logger
	now       func() time.Time
	chanRules map[string]*rules
	defRules  *rules
	seed      maphash.Seed

	rooms [nShards]roomShard
	// roomCount counts the admitted rooms: from admission (observe) until
	// their watches are closed (closeWatches), so that at no moment more
	// than MaxRooms rooms hold or are about to hold subscriptions.
	roomCount atomic.Int64
	// evictReq asks the dialers to close least recently used rooms: a new
	// room found the table full.
	evictReq  chan struct{}
	pend      [nShards]pendShard
	pendCount atomic.Int64

	ops      chan roomOp
	workers  []chan frame
	foreign  [2]prometheus.Counter
	stats    statsTable
	examples exampleRing
	logLimit limiter
	errLimit limiter

	bucketWidth int64 // nanos
	sweepEvery  time.Duration
	dialers     int

	started atomic.Bool
	stopped atomic.Bool
	evictMu sync.Mutex
	sweepMu sync.Mutex

	lastRoomSweep int64 // guarded by sweepMu

	// alwaysDecode turns off handle's fast path for identical copies, so
	// that tests can hold it to the decoding path. Set before use.
	alwaysDecode bool
}

// New builds a comparator. legacy and realtime open the subscriptions of
// each transport; m nil records metrics on a private registry; logger nil
// logs nothing; now nil uses time.Now. Invalid paths in cfg (see
// Config.Validate, which the caller should run first) are logged and
// skipped. Nothing is dialed until messages are expected and Run runs.
func New(cfg Config, legacy, realtime RoomWatcher, m *Metrics, logger *zap.Logger, now func() time.Time) *Comparator {
	cfg = cfg.WithDefaults()
	if m == nil {
		m = NewMetrics(prometheus.NewRegistry())
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	c := &Comparator{
		cfg: cfg, legacy: legacy, realtime: realtime, m: m, log: logger, now: now,
		chanRules: make(map[string]*rules, len(cfg.Channels)),
		defRules:  &rules{timeout: cfg.Timeout},
		seed:      maphash.MakeSeed(),
		ops:       make(chan roomOp, 1024),
		evictReq:  make(chan struct{}, 1),
		examples:  exampleRing{buf: make([]MismatchExample, exampleCap)},
		logLimit:  limiter{burst: 20, perSecond: 5},
		errLimit:  limiter{burst: 10, perSecond: 1},
		dialers:   4,
	}
	for name, ch := range cfg.Channels {
		r := &rules{timeout: cfg.Timeout}
		if ch.Timeout > 0 {
			r.timeout = ch.Timeout
		}
		for _, p := range ch.IgnorePaths {
			segs, err := parsePath(p)
			if err != nil {
				logger.Error("shadow: ignore path skipped", zap.String("channel", name), zap.Error(err))
				continue
			}
			r.ignore = append(r.ignore, segs)
		}
		for _, p := range ch.RedactPaths {
			segs, err := parsePath(p)
			if err != nil {
				logger.Error("shadow: redact path skipped", zap.String("channel", name), zap.Error(err))
				continue
			}
			r.redact = append(r.redact, segs)
		}
		c.chanRules[name] = r
	}
	for i := range c.rooms {
		c.rooms[i].m = make(map[roomKey]*room)
		c.pend[i].m = make(map[pendingKey]*entry)
	}
	nw := runtime.GOMAXPROCS(0)
	if nw > 8 {
		nw = 8
	}
	per := cfg.QueueSize / nw
	if per < 1 {
		per = 1
	}
	c.workers = make([]chan frame, nw)
	for i := range c.workers {
		c.workers[i] = make(chan frame, per)
	}
	for s := sideLegacy; s <= sideRealtime; s++ {
		c.foreign[s] = m.foreign.WithLabelValues(string(s.transport()))
	}
	c.stats = statsTable{m: make(map[chanKey]*chanStats), metrics: m, nBuckets: 15}
	c.bucketWidth = int64(cfg.Window / 15)
	if c.bucketWidth <= 0 {
		c.bucketWidth = 1
	}
	minTimeout := cfg.Timeout
	for _, r := range c.chanRules {
		if r.timeout < minTimeout {
			minTimeout = r.timeout
		}
	}
	c.sweepEvery = min(max(minTimeout/5, 10*time.Millisecond), time.Second)
	return c
}

func (c *Comparator) rulesFor(channel string) *rules {
	if r, ok := c.chanRules[channel]; ok {
		return r
	}
	return c.defRules
}

// Expect records that m is about to be published in stage (only shadow and
// dual are compared; other stages are ignored) and counts it sampled. It
// never blocks and never compares: it looks the room up (asking for its
// subscriptions on first sight, dialed by Run's goroutines) and records the
// expectation with the readiness of both watches now. Whether each copy
// is observable is decided again when it is published (AwaitWatch), so
// the first message of a room is compared like the others when the
// multicast adapter awaits the watches. A room that cannot be watched (the dial queue
// full) makes the message unobserved (watch_failed); a full pending table
// makes it dropped. It is a no-op after Run returned.
func (c *Comparator) Expect(m *broadcast.Message, stage broadcast.Stage) {
	if m == nil || !stage.Compared() || c.stopped.Load() {
		return
	}
	now := c.now()
	nowN := now.UnixNano()
	cs := c.stats.get(m.App, m.Channel)
	c.recordSampled(cs, nowN)
	r := c.observe(m.App, m.Room, nowN)
	if c.pendCount.Add(1) > int64(c.cfg.MaxPending) {
		c.pendCount.Add(-1)
		c.record(cs, oDropped, nowN)
		return
	}
	ru := c.rulesFor(m.Channel)
	e := &entry{
		m: m, stage: stage, cs: cs, rules: ru, room: r,
		expectAt: nowN, deadline: nowN + int64(ru.timeout), unobserved: r == nil,
	}
	// Until AwaitWatch says otherwise (as each copy goes out), a copy is
	// observable when its watch is ready now.
	e.got[sideLegacy].watchReady = c.sideReady(r, sideLegacy)
	e.got[sideRealtime].watchReady = c.sideReady(r, sideRealtime)
	k := pendingKey{m.App, m.Room, m.RequestID}
	sh := &c.pend[maphash.Comparable(c.seed, k)%nShards]
	sh.mu.Lock()
	if head := sh.m[k]; head != nil { // the same requestId again: queue behind
		tail := head
		for tail.next != nil {
			tail = tail.next
		}
		tail.next = e
	} else {
		sh.m[k] = e
	}
	sh.mu.Unlock()
	c.m.pending.Inc()
	if r == nil {
		c.recordUnobserved(cs, rWatchFailed, nowN)
	}
}

var _ broadcast.DropObserver = (*Comparator)(nil)

// Dropped is told by the adapter that m's copy for t will never be sent
// (its off-path queue was full, or the gateway shut down), so a missing copy
// on that side is counted "dropped" rather than blamed on the transport.
// It does not block.
func (c *Comparator) Dropped(m *broadcast.Message, t broadcast.Transport, _ string) {
	if m == nil {
		return
	}
	sd := sideLegacy
	if t == broadcast.TransportRealtime {
		sd = sideRealtime
	}
	k := pendingKey{m.App, m.Room, m.RequestID}
	sh := &c.pend[maphash.Comparable(c.seed, k)%nShards]
	sh.mu.Lock()
	for e := sh.m[k]; e != nil; e = e.next {
		if e.m == m {
			e.offDropped[sd] = true
			break
		}
	}
	sh.mu.Unlock()
}

// observe returns the room of app and room, creating it and queueing its
// dial on first sight, or nil when it cannot be admitted: the table holds
// MaxRooms rooms already (the least recently used are then closed in the
// background, so that a later message of the room is admitted), or the dial
// queue is full.
func (c *Comparator) observe(app, name string, nowN int64) *room {
	k := roomKey{app, name}
	h := maphash.Comparable(c.seed, k)
	sh := &c.rooms[h%nShards]
	sh.mu.RLock()
	r := sh.m[k]
	sh.mu.RUnlock()
	if r != nil {
		r.lastUsed.Store(nowN)
		if r.state.Load() == stateFailed && nowN >= r.retryAt.Load() && r.state.CompareAndSwap(stateFailed, stateOpening) {
			if !c.sendOp(roomOp{room: r}) {
				r.state.Store(stateFailed)
			}
		}
		return r
	}
	if !c.admit() {
		return nil
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if r = sh.m[k]; r != nil {
		c.releaseSlot()
		r.lastUsed.Store(nowN)
		return r
	}
	r = &room{key: k, worker: int((h >> 8) % uint64(len(c.workers)))}
	r.lastUsed.Store(nowN)
	if !c.sendOp(roomOp{room: r}) {
		c.releaseSlot()
		return nil
	}
	sh.m[k] = r
	return r
}

// admit takes one of the MaxRooms room slots, or asks for an eviction and
// reports false when none is free. It never blocks.
func (c *Comparator) admit() bool {
	for {
		n := c.roomCount.Load()
		if n >= int64(c.cfg.MaxRooms) {
			select {
			case c.evictReq <- struct{}{}:
			default: // an eviction is already asked for
			}
			return false
		}
		if c.roomCount.CompareAndSwap(n, n+1) {
			c.m.observedRooms.Inc()
			return true
		}
	}
}

// releaseSlot gives back a slot taken by admit.
func (c *Comparator) releaseSlot() {
	c.roomCount.Add(-1)
	c.m.observedRooms.Dec()
}

func (c *Comparator) sendOp(op roomOp) bool {
	select {
	case c.ops <- op:
		return true
	default:
		return false
	}
}

// record counts one outcome in Prometheus and the window.
func (c *Comparator) record(cs *chanStats, o outcomeIdx, nowN int64) {
	cs.outcomes[o].Inc()
	cs.mu.Lock()
	cs.bucket(nowN / c.bucketWidth).outcomes[o]++
	cs.mu.Unlock()
}

// Run dials subscriptions, processes frames and sweeps expired
// expectations and idle rooms until ctx ends; then it stops intake (Expect
// and frames become no-ops), waits for its goroutines and closes every
// watch. It returns nil after ctx ended, or an error if called twice.
func (c *Comparator) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("shadow: Run called more than once")
	}
	var wg sync.WaitGroup
	for i := 0; i < c.dialers; i++ {
		wg.Go(func() { c.dialLoop(ctx) })
	}
	for _, q := range c.workers {
		wg.Go(func() { c.workLoop(ctx, q) })
	}
	t := time.NewTicker(c.sweepEvery)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			c.sweep(c.now())
		}
	}
	c.stopped.Store(true)
	wg.Wait()
	c.closeAll()
	return nil
}

func (c *Comparator) dialLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case op := <-c.ops:
			if op.close {
				c.closeWatches(op.room)
			} else {
				c.open(op.room)
				op.room.markOpened()
			}
		case <-c.evictReq:
			c.evictLRU()
		}
	}
}

// open dials both sides of r. It holds r.mu throughout (WatchRoom returns
// promptly), so that closeWatches, which takes r.mu, closes whatever open
// stored: once a room is closed none of its watches is open, which makes
// MaxRooms a bound on open watches too.
func (c *Comparator) open(r *room) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	lw, err := c.legacy.WatchRoom(r.key.app, r.key.room, c.onFrame(r, sideLegacy))
	if err != nil {
		c.dialFailed(r, broadcast.TransportLegacy, err)
		return
	}
	rw, err := c.realtime.WatchRoom(r.key.app, r.key.room, c.onFrame(r, sideRealtime))
	if err != nil {
		c.closeWatch(lw, r, broadcast.TransportLegacy)
		c.dialFailed(r, broadcast.TransportRealtime, err)
		return
	}
	r.watches.Store(&watchPair{legacy: lw, realtime: rw})
	r.state.Store(stateOpen)
}

// dialFailed marks r failed (retried on a later message); the caller holds
// r.mu.
func (c *Comparator) dialFailed(r *room, t broadcast.Transport, err error) {
	r.retryAt.Store(c.now().Add(dialRetry).UnixNano())
	if !r.closed {
		r.state.Store(stateFailed)
	}
	if ok, suppressed := c.errLimit.allow(c.now()); ok {
		c.log.Warn("shadow: watch room failed; retrying on a later message",
			zap.String("app", r.key.app), zap.String("room", r.key.room),
			zap.String("transport", string(t)), zap.Duration("retryAfter", dialRetry),
			zap.Int("suppressed", suppressed), zap.Error(err))
	}
}

func (c *Comparator) closeWatch(w broadcast.Watch, r *room, t broadcast.Transport) {
	if err := w.Close(); err != nil {
		c.log.Debug("shadow: close watch", zap.String("app", r.key.app), zap.String("room", r.key.room),
			zap.String("transport", string(t)), zap.Error(err))
	}
}

// closeWatches marks r closed, closes its watches and then gives back its
// room slot; idempotent. r must have been admitted (every room of the
// table was).
func (c *Comparator) closeWatches(r *room) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.state.Store(stateClosed)
	w := r.watches.Load()
	r.mu.Unlock()
	if w != nil {
		c.closeWatch(w.legacy, r, broadcast.TransportLegacy)
		c.closeWatch(w.realtime, r, broadcast.TransportRealtime)
	}
	c.releaseSlot()
}

// unmap removes r from the room table if it is still there (its slot is
// given back when its watches are closed, see closeWatches).
func (c *Comparator) unmap(r *room) bool {
	sh := &c.rooms[maphash.Comparable(c.seed, r.key)%nShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m[r.key] != r {
		return false
	}
	delete(sh.m, r.key)
	return true
}

// evictLRU closes the least recently used rooms until at most MaxRooms
// minus a twentieth (at least one) are admitted, so that a burst of new
// rooms is let in a batch at a time rather than one eviction per message.
// Each victim leaves the table first (no Expect finds it), then its
// watches are closed, then its slot is free.
func (c *Comparator) evictLRU() {
	c.evictMu.Lock()
	defer c.evictMu.Unlock()
	target := c.cfg.MaxRooms - max(1, c.cfg.MaxRooms/20)
	excess := int(c.roomCount.Load()) - target
	if excess <= 0 {
		return
	}
	type cand struct {
		r    *room
		used int64
	}
	var all []cand
	for i := range c.rooms {
		sh := &c.rooms[i]
		sh.mu.RLock()
		for _, r := range sh.m {
			all = append(all, cand{r, r.lastUsed.Load()})
		}
		sh.mu.RUnlock()
	}
	sort.Slice(all, func(i, j int) bool { return all[i].used < all[j].used })
	for _, v := range all[:min(excess, len(all))] {
		if c.unmap(v.r) {
			c.closeWatches(v.r)
		}
	}
}

// closeAll closes every room at shutdown, a bounded number at a time.
func (c *Comparator) closeAll() {
	var all []*room
	for i := range c.rooms {
		sh := &c.rooms[i]
		sh.mu.RLock()
		for _, r := range sh.m {
			all = append(all, r)
		}
		sh.mu.RUnlock()
	}
	sem := make(chan struct{}, closeParallel)
	var wg sync.WaitGroup
	for _, r := range all {
		c.unmap(r)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.closeWatches(r)
		})
	}
	wg.Wait()
}

// onFrame returns the callback of r's watch on side s: it copies the frame
// into r's worker queue, or notes a drop when the queue is full.
func (c *Comparator) onFrame(r *room, s side) func([]byte, time.Time) {
	return func(data []byte, at time.Time) {
		if c.stopped.Load() {
			return
		}
		if len(data) > maxFrameBytes {
			c.foreign[s].Inc()
			return
		}
		q := c.workers[r.worker]
		if len(q) == cap(q) {
			r.dropAt[s].Store(c.now().UnixNano())
			return
		}
		select {
		case q <- frame{room: r, side: s, data: append([]byte(nil), data...), at: at}:
		default:
			r.dropAt[s].Store(c.now().UnixNano())
		}
	}
}

func (c *Comparator) workLoop(ctx context.Context, q chan frame) {
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-q:
			if f.barrier != nil {
				close(f.barrier)
				continue
			}
			c.handle(f)
		}
	}
}
