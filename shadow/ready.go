package shadow

import (
	"context"
	"hash/maphash"
	"time"

	"github.com/switchyard/switchyard/broadcast"
)

var _ broadcast.WatchAwaiter = (*Comparator)(nil)

// pollEvery is how often a wait looks at a watch that cannot notify
// (no broadcast.ReadyNotifier), or at a room whose later open attempt runs.
const pollEvery = 2 * time.Millisecond

// Wait paths, the path label of switchyard_shadow_watch_wait_seconds.
const (
	pathAnswer  = 0
	pathOffPath = 1
)

var pathNames = [2]string{"answer", "offpath"}

func sideOf(t broadcast.Transport) side {
	if t == broadcast.TransportRealtime {
		return sideRealtime
	}
	return sideLegacy
}

// AwaitWatch is called by the multicast adapter just before it publishes
// m's copy to t (see broadcast.WatchAwaiter). It blocks until the room's
// watch on t is ready, then records that the copy is observable. When the
// watch is not ready it waits: for the stage's answering transport at most
// Config.ReadyWait (not at all with ReadyWaitOff), on the caller's path;
// for the off-path transport until ctx ends (the adapter bounds it by its
// off-path timeout), in the room's lane. A wait that runs out marks the
// room's side stalled: later copies of the room do not wait on that side
// until its watch is ready again, so a watch that cannot come up costs
// one wait, not one per message. A copy published without a ready watch is
// still compared if it arrives; if it does not, the message is unobserved
// with the reason of that side, never missing. It returns at once for a
// message the comparator does not hold (unsampled, decided, after Run).
// Safe for concurrent use.
func (c *Comparator) AwaitWatch(ctx context.Context, m *broadcast.Message, t broadcast.Transport) {
	if m == nil || c.stopped.Load() {
		return
	}
	sd := sideOf(t)
	k := pendingKey{m.App, m.Room, m.RequestID}
	sh := &c.pend[maphash.Comparable(c.seed, k)%nShards]
	sh.mu.Lock()
	var e *entry
	for x := sh.m[k]; x != nil; x = x.next {
		if x.m == m {
			e = x
			break
		}
	}
	if e == nil || e.unobserved || e.decided {
		sh.mu.Unlock()
		return
	}
	e.awaiting++
	r, answering := e.room, e.stage.Answering() == t
	sh.mu.Unlock()

	bound, path := time.Duration(-1), pathOffPath // off-path: ctx bounds it
	if answering {
		bound, path = max(c.cfg.ReadyWait, 0), pathAnswer
	}
	start := time.Now()
	ready := c.waitSide(ctx, r, sd, bound)
	c.m.watchWait.WithLabelValues(string(t), pathNames[path]).Observe(time.Since(start).Seconds())

	nowN := c.now().UnixNano()
	sh.mu.Lock()
	e.awaiting--
	e.got[sd].awaited, e.got[sd].watchReady = true, ready
	// The copy goes out now: give it the full timeout from here.
	if d := nowN + int64(e.rules.timeout); d > e.deadline {
		e.deadline = d
	}
	sh.mu.Unlock()
}

// sideReady reports whether r's watch on side sd is ready now.
func (c *Comparator) sideReady(r *room, sd side) bool {
	if r == nil || r.state.Load() != stateOpen {
		return false
	}
	w := r.watches.Load()
	if w == nil {
		return false
	}
	if sd == sideLegacy {
		return w.legacy.Ready()
	}
	return w.realtime.Ready()
}

// waitSide waits until r's watch on side sd is ready (true), bound passes
// (bound 0: no wait; negative: only ctx bounds it) or ctx ends, or the room
// failed or was closed (false). A wait that ran out (bound, or ctx for a
// negative bound) marks the side stalled; a stalled side is not waited for
// until it is seen ready.
func (c *Comparator) waitSide(ctx context.Context, r *room, sd side, bound time.Duration) bool {
	if r == nil {
		return false
	}
	if c.sideReady(r, sd) {
		r.stalled[sd].Store(false)
		return true
	}
	if bound == 0 || r.stalled[sd].Load() {
		return false
	}
	var timeout <-chan time.Time
	if bound > 0 {
		t := time.NewTimer(bound)
		defer t.Stop()
		timeout = t.C
	}
	var poll *time.Timer
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	for {
		var wake <-chan struct{}
		switch r.state.Load() {
		case stateOpening:
			if ch := r.openedC(); !isClosed(ch) {
				wake = ch
			}
		case stateOpen:
			w := r.watches.Load()
			if w == nil {
				break
			}
			wt := w.legacy
			if sd == sideRealtime {
				wt = w.realtime
			}
			if wt.Ready() {
				r.stalled[sd].Store(false)
				return true
			}
			if rn, ok := wt.(broadcast.ReadyNotifier); ok {
				wake = rn.ReadyC()
			}
		default: // failed (retried on a later message) or closed
			return false
		}
		var tick <-chan time.Time
		if wake == nil {
			if poll == nil {
				poll = time.NewTimer(pollEvery)
			} else {
				poll.Reset(pollEvery)
			}
			tick = poll.C
		}
		select {
		case <-wake:
		case <-tick:
		case <-timeout:
			r.stalled[sd].Store(true)
			return false
		case <-ctx.Done():
			if bound < 0 {
				r.stalled[sd].Store(true)
			}
			return false
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// openedC returns a channel closed once the room's first open attempt
// ended.
func (r *room) openedC() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.opened == nil {
		r.opened = make(chan struct{})
		if r.openDone {
			close(r.opened)
		}
	}
	return r.opened
}

// markOpened notes that an open attempt of r ended (the first one closes
// the channel of openedC).
func (r *room) markOpened() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.openDone {
		return
	}
	r.openDone = true
	if r.opened != nil {
		close(r.opened)
	}
}

// Warm opens the watches of room of app ahead of its traffic: the token
// endpoint calls it for a room the multicast adapter samples, since a
// browser asks for a token before it listens. It does not block; a room
// already watched only has its idle time reset, and a warm room that no
// message is expected in closes after IdleTTL like any other. It is a
// no-op after Run returned. Safe for concurrent use.
func (c *Comparator) Warm(app, room string) {
	if c.stopped.Load() {
		return
	}
	before := c.roomCount.Load()
	if c.observe(app, room, c.now().UnixNano()) != nil && c.roomCount.Load() > before {
		c.m.warmed.Inc()
	}
}

// recordSampled counts one sampled message.
func (c *Comparator) recordSampled(cs *chanStats, nowN int64) {
	cs.sampled.Inc()
	cs.mu.Lock()
	cs.bucket(nowN/c.bucketWidth).sampled++
	cs.mu.Unlock()
}

// recordCompared counts one message judged on both sides (its outcomes
// are recorded by the caller).
func (c *Comparator) recordCompared(cs *chanStats, nowN int64) {
	cs.compared.Inc()
	cs.mu.Lock()
	cs.bucket(nowN/c.bucketWidth).compared++
	cs.mu.Unlock()
}

// recordUnobserved counts one unobserved message and its reason.
func (c *Comparator) recordUnobserved(cs *chanStats, r reasonIdx, nowN int64) {
	cs.outcomes[oUnobserved].Inc()
	cs.unobserved[r].Inc()
	cs.mu.Lock()
	b := cs.bucket(nowN / c.bucketWidth)
	b.outcomes[oUnobserved]++
	b.unobserved[r]++
	cs.mu.Unlock()
}

// RoomReady reports whether the comparator watches room of app, and
// whether its PartyKit and Inngest Realtime watches are ready now. For
// diagnostics and tests; safe for concurrent use.
func (c *Comparator) RoomReady(app, room string) (watched, legacy, realtime bool) {
	k := roomKey{app, room}
	sh := &c.rooms[maphash.Comparable(c.seed, k)%nShards]
	sh.mu.RLock()
	r := sh.m[k]
	sh.mu.RUnlock()
	if r == nil {
		return false, false, false
	}
	return true, c.sideReady(r, sideLegacy), c.sideReady(r, sideRealtime)
}
