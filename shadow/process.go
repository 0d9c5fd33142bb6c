package shadow

import (
	"bytes"
	"hash/maphash"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
)

// handle processes one received frame on the worker that owns its room.
//
// A copy byte for byte the envelope of the expectation it goes to (both
// transports pass the published JSON through unchanged, so that is the
// common case) is a match whatever the ignore and redact rules: it is
// neither decoded nor diffed, and its tree, which only a copy that differs
// keeps, is not needed. Its requestId is read by frameRequestID, trusted
// only once the bytes are found equal; any other frame is decoded as
// before.
func (c *Comparator) handle(f frame) {
	if f.at.IsZero() {
		f.at = c.now()
	}
	r := f.room
	var (
		tree map[string]any
		sh   *pendShard
		e    *entry
	)
	id, identical := "", false
	if !c.alwaysDecode {
		id, identical = frameRequestID(f.data)
	}
	if identical {
		sh, e = c.lookup(pendingKey{r.key.app, r.key.room, id}, f.side)
		// The envelope was valid JSON with this requestId (NewMessage),
		// so the frame decodes to the same id: the original path would
		// file it under the same key and entry. Under the shard lock: e.m
		// is cleared there once e is decided.
		identical = e != nil && e.m != nil && bytes.Equal(f.data, e.m.Envelope)
		if !identical {
			sh.mu.Unlock()
		}
	}
	if !identical {
		var err error
		tree, id, err = decodeFrame(f.data)
		if err != nil {
			c.foreign[f.side].Inc()
			return
		}
		sh, e = c.lookup(pendingKey{r.key.app, r.key.room, id}, f.side)
	}
	if e == nil {
		sh.mu.Unlock()
		c.foreign[f.side].Inc()
		return
	}
	st := &e.got[f.side]
	if e.unobserved {
		st.arrived = true // absorbed: counted unobserved at Expect
		sh.mu.Unlock()
		return
	}
	if st.arrived {
		first := !st.dup
		st.dup = true
		cs := e.cs
		sh.mu.Unlock()
		if first {
			c.record(cs, oDuplicate, c.now().UnixNano())
		}
		return
	}
	st.arrived = true
	st.at = f.at
	e.inflight++
	m, cs, ru := e.m, e.cs, e.rules
	sh.mu.Unlock()

	// Worker-owned from here: the room's sequence and the entry's orig.
	reordered := false
	if m.Seq != 0 {
		if m.Seq < r.maxSeq[f.side] {
			reordered = true
		} else {
			r.maxSeq[f.side] = m.Seq
		}
	}
	lat := f.at.Sub(m.AcceptedAt).Seconds()
	if lat < 0 {
		lat = 0
	}
	cs.latency[f.side].Observe(lat)
	nowN := c.now().UnixNano()
	cs.mu.Lock()
	cs.bucket(nowN / c.bucketWidth).latency[f.side].add(lat)
	cs.mu.Unlock()
	if reordered {
		c.record(cs, oReordered, nowN)
	}

	// An identical copy is classEqual with no differences, as diffTrees
	// finds for two trees decoded from the same bytes.
	var (
		cls      class
		diffs    []Difference
		copyTree any
	)
	if !identical {
		if e.orig == nil {
			orig, err := decodeTree(m.Envelope)
			if err != nil { // unreachable: NewMessage validated the body
				orig = map[string]any{}
			}
			e.orig = applyIgnore(orig, ru.ignore)
		}
		copyTree = applyIgnore(tree, ru.ignore)
		cls, diffs = diffTrees(e.orig, copyTree, ru.redact)
	}

	sh.mu.Lock()
	st.cls, st.diffs, st.done = cls, diffs, true
	if cls == classDiffer {
		st.tree = copyTree
	}
	e.inflight--
	other := &e.got[1-f.side]
	decide := other.arrived && other.done && !e.decided
	var legacy, realtime sideState
	stage := e.stage
	if decide {
		e.decided = true
		legacy, realtime = e.got[sideLegacy], e.got[sideRealtime]
		e.m = nil
		// Release what the duplicate window does not need.
		e.got[sideLegacy].tree, e.got[sideRealtime].tree = nil, nil
		e.got[sideLegacy].diffs, e.got[sideRealtime].diffs = nil, nil
	}
	sh.mu.Unlock()
	if !decide {
		return
	}
	e.orig = nil
	c.decide(m, stage, cs, ru, &legacy, &realtime, nowN)
}

// lookup locks the pending shard of k and returns it with the expectation a
// copy of side sd filed under k goes to: the first of the key's chain still
// waiting for that side, else the last one (the copy is then a duplicate);
// nil when the key has none. The caller unlocks sh.mu.
func (c *Comparator) lookup(k pendingKey, sd side) (*pendShard, *entry) {
	sh := &c.pend[maphash.Comparable(c.seed, k)%nShards]
	sh.mu.Lock()
	e := sh.m[k]
	// A copy belongs to the first expectation of its key still waiting for
	// this side; when none waits it is a duplicate of the last one.
	for e != nil && e.got[sd].arrived && e.next != nil {
		e = e.next
	}
	return sh, e
}

// decide records the outcome of a message whose two copies arrived.
func (c *Comparator) decide(m *broadcast.Message, stage broadcast.Stage, cs *chanStats, ru *rules, legacy, realtime *sideState, nowN int64) {
	cls := max(legacy.cls, realtime.cls)
	o := oMatch
	switch cls {
	case classLossy:
		o = oPrecisionLoss
	case classDiffer:
		o = oMismatch
	}
	keepExample := o == oMismatch
	if o == oPrecisionLoss {
		now := time.Unix(0, nowN)
		cs.mu.Lock()
		if cs.lastLossExample.IsZero() || now.Sub(cs.lastLossExample) >= time.Minute {
			cs.lastLossExample = now
			keepExample = true
		}
		cs.mu.Unlock()
	}
	// The example is kept and logged before the outcome is counted:
	// whoever sees the count (Summary, the metrics) finds its example in
	// Mismatches and its line in the log.
	if keepExample {
		ex := c.example(m, stage, o, ru, legacy, realtime, nowN)
		c.examples.add(ex)
		if ok, suppressed := c.logLimit.allow(time.Unix(0, nowN)); ok {
			c.log.Warn("shadow: copies differ from the message sent",
				zap.String("outcome", string(ex.Outcome)), zap.String("app", ex.App),
				zap.String("channel", ex.Channel), zap.String("room", ex.Room),
				zap.String("requestId", ex.RequestID), zap.String("name", ex.Name),
				zap.String("stage", string(stage)),
				zap.Any("legacyDiff", ex.Legacy), zap.Any("realtimeDiff", ex.Realtime),
				zap.Any("betweenDiff", ex.Between), zap.String("original", ex.Original),
				zap.Int("suppressed", suppressed))
		}
	}
	delta := realtime.at.Sub(legacy.at).Seconds()
	cs.delta.Observe(delta)
	cs.outcomes[o].Inc()
	cs.compared.Inc()
	cs.mu.Lock()
	b := cs.bucket(nowN / c.bucketWidth)
	b.outcomes[o]++
	b.compared++
	b.delta.add(delta)
	cs.mu.Unlock()
}

// example builds the MismatchExample of a decided message.
func (c *Comparator) example(m *broadcast.Message, stage broadcast.Stage, o outcomeIdx, ru *rules, legacy, realtime *sideState, nowN int64) MismatchExample {
	ex := MismatchExample{
		Time: time.Unix(0, nowN).UTC(), App: m.App, Channel: m.Channel, Room: m.Room,
		RequestID: m.RequestID, Name: m.Name, Stage: stage, Outcome: outcomes[o],
		Legacy: legacy.diffs, Realtime: realtime.diffs,
	}
	if legacy.cls == classDiffer && realtime.cls == classDiffer && legacy.tree != nil && realtime.tree != nil {
		_, ex.Between = diffTrees(legacy.tree, realtime.tree, ru.redact)
	}
	if full, err := decodeTree(m.Envelope); err == nil {
		ex.Original = render(full, nil, ru.redact, originalBytes)
	}
	return ex
}

// finished is an expectation whose deadline passed undecided, with its
// sides as they were then.
type finished struct {
	k     pendingKey
	e     *entry
	sides [2]sideSnap
}

// sideSnap is what expire needs of one side of an entry.
type sideSnap struct {
	arrived, awaited, watchReady, offDropped bool
}

// snapshot copies the sides of e; the pending shard's mutex must be held.
func (e *entry) snapshot() [2]sideSnap {
	var out [2]sideSnap
	for s := range out {
		g := &e.got[s]
		out[s] = sideSnap{arrived: g.arrived, awaited: g.awaited, watchReady: g.watchReady, offDropped: e.offDropped[s]}
	}
	return out
}

// sweep decides the expectations whose deadline passed and closes idle
// rooms. Safe for concurrent use (serialised).
func (c *Comparator) sweep(now time.Time) {
	c.sweepMu.Lock()
	defer c.sweepMu.Unlock()
	nowN := now.UnixNano()
	var done []finished
	var removed int64
	for i := range c.pend {
		sh := &c.pend[i]
		sh.mu.Lock()
		for k, head := range sh.m {
			// Keep the entries of the chain that are still live, in order.
			var keep, tail *entry
			for e := head; e != nil; {
				next := e.next
				if e.deadline > nowN || e.inflight > 0 || e.awaiting > 0 {
					e.next = nil
					if tail == nil {
						keep = e
					} else {
						tail.next = e
					}
					tail = e
				} else {
					removed++
					if !e.unobserved && !e.decided {
						// Snapshot under the lock: AwaitWatch may still
						// hold e.
						done = append(done, finished{k: k, e: e, sides: e.snapshot()})
					}
				}
				e = next
			}
			switch {
			case keep == nil:
				delete(sh.m, k)
			case keep != head:
				sh.m[k] = keep
			}
		}
		sh.mu.Unlock()
	}
	for _, d := range done {
		c.expire(d.k, d.e, d.sides, nowN)
	}
	// After expire: a pending count of 0 means every expectation is
	// decided, counted and logged.
	if removed > 0 {
		c.pendCount.Add(-removed)
		c.m.pending.Sub(float64(removed))
	}
	if nowN-c.lastRoomSweep >= int64(min(c.cfg.IdleTTL/4, 30*time.Second)) {
		c.lastRoomSweep = nowN
		c.closeIdle(nowN)
	}
}

// Why a side's copy did not arrive, in order of precedence: a gap on the
// comparator's side (the room closed, a copy dropped, a watch that failed
// or was not ready) is never blamed on the transport.
const (
	gapNone = iota
	gapMissing
	gapNotReady
	gapWatchFailed
	gapDropped
	gapClosed
)

// expire decides a message with at least one copy missing at its deadline:
// dropped, unobserved (closed, watch_failed, <side>_not_ready) or, when
// the missing side's watch was ready as its copy went out, missing.
func (c *Comparator) expire(k pendingKey, e *entry, sides [2]sideSnap, nowN int64) {
	var gap [2]int
	for s := sideLegacy; s <= sideRealtime; s++ {
		sn := sides[s]
		switch {
		case sn.arrived:
			gap[s] = gapNone
		case e.room.state.Load() == stateClosed:
			gap[s] = gapClosed // observation ended before the deadline
		case sn.offDropped || e.room.dropAt[s].Load() >= e.expectAt:
			gap[s] = gapDropped
		case e.room.state.Load() == stateFailed:
			gap[s] = gapWatchFailed
		case sn.watchReady:
			// Ready as the copy went out (or, for a copy still queued in
			// its lane, when the message was expected): the transport
			// did not deliver in time.
			gap[s] = gapMissing
		default:
			gap[s] = gapNotReady
		}
	}
	switch worst := max(gap[0], gap[1]); worst {
	case gapClosed:
		c.recordUnobserved(e.cs, rClosed, nowN)
	case gapDropped:
		c.record(e.cs, oDropped, nowN)
	case gapWatchFailed:
		c.recordUnobserved(e.cs, rWatchFailed, nowN)
	case gapNotReady:
		r := rBothNotReady
		switch {
		case gap[sideRealtime] != gapNotReady:
			r = rLegacyNotReady
		case gap[sideLegacy] != gapNotReady:
			r = rRealtimeNotReady
		}
		c.recordUnobserved(e.cs, r, nowN)
	default:
		missing := [2]bool{gap[0] == gapMissing, gap[1] == gapMissing}
		// Logged before counted, as in decide.
		if ok, suppressed := c.logLimit.allow(time.Unix(0, nowN)); ok {
			c.log.Warn("shadow: copy missing after the timeout",
				zap.String("app", k.app), zap.String("channel", e.cs.key.channel),
				zap.String("room", k.room), zap.String("requestId", k.requestID),
				zap.String("stage", string(e.stage)),
				zap.Bool("missingLegacy", missing[sideLegacy]), zap.Bool("missingRealtime", missing[sideRealtime]),
				zap.Duration("timeout", e.rules.timeout), zap.Int("suppressed", suppressed))
		}
		c.recordCompared(e.cs, nowN)
		if missing[sideLegacy] {
			c.record(e.cs, oMissingLegacy, nowN)
		}
		if missing[sideRealtime] {
			c.record(e.cs, oMissingRealtime, nowN)
		}
	}
}

// closeIdle closes rooms with no Expect for IdleTTL.
func (c *Comparator) closeIdle(nowN int64) {
	cutoff := nowN - int64(c.cfg.IdleTTL)
	var idle []*room
	for i := range c.rooms {
		sh := &c.rooms[i]
		sh.mu.RLock()
		for _, r := range sh.m {
			if r.lastUsed.Load() <= cutoff {
				idle = append(idle, r)
			}
		}
		sh.mu.RUnlock()
	}
	for _, r := range idle {
		if !c.unmap(r) {
			continue
		}
		if !c.sendOp(roomOp{room: r, close: true}) {
			c.closeWatches(r)
		}
	}
}

// Summary returns per app and channel the outcome counts, parity and
// latency quantiles over the sliding window, sorted by app then channel
// (an empty, non-nil slice before any message). It is safe for concurrent
// use and never blocks on I/O.
func (c *Comparator) Summary() []ChannelSummary {
	now := c.now().UnixNano()
	cur := now / c.bucketWidth
	out := []ChannelSummary{}
	for _, cs := range c.stats.all() {
		var counts [numOutcomes]int64
		var unobs [numReasons]int64
		var sampled, compared int64
		var lat [2]logHist
		var delta signedHist
		cs.mu.Lock()
		for i := range cs.buckets {
			b := &cs.buckets[i]
			if b.slot < 0 || b.slot > cur || b.slot <= cur-int64(len(cs.buckets)) {
				continue
			}
			for o := range counts {
				counts[o] += b.outcomes[o]
			}
			for r := range unobs {
				unobs[r] += b.unobserved[r]
			}
			sampled += b.sampled
			compared += b.compared
			lat[0].merge(&b.latency[0])
			lat[1].merge(&b.latency[1])
			delta.merge(&b.delta)
		}
		cs.mu.Unlock()
		s := ChannelSummary{
			App: cs.key.app, Channel: cs.key.channel,
			WindowSeconds: time.Duration(c.bucketWidth * int64(len(cs.buckets))).Seconds(),
			Outcomes:      make(map[Outcome]int64, numOutcomes),
			Sampled:       sampled,
			Compared:      compared,
			Unobserved:    make(map[UnobservedReason]int64, numReasons),
		}
		for i, r := range reasons {
			s.Unobserved[r] = unobs[i]
		}
		var matched, jsMatched int64
		for i, o := range outcomes {
			n := counts[i]
			s.Outcomes[o] = n
			if o.Matched() {
				matched += n
			}
			if o.JSMatched() {
				jsMatched += n
			}
		}
		s.ParityPercent = percent(matched, s.Compared)
		s.JSParityPercent = percent(jsMatched, s.Compared)
		s.CoveragePercent = percent(min(compared, sampled), sampled)
		s.LegacyLatency = latSummary(&lat[0])
		s.RealtimeLatency = latSummary(&lat[1])
		s.LatencyDelta = LatencySummary{
			Count: int64(delta.count()),
			P50Ms: delta.quantile(0.5) * 1000,
			P99Ms: delta.quantile(0.99) * 1000,
		}
		out = append(out, s)
	}
	return out
}

func latSummary(h *logHist) LatencySummary {
	return LatencySummary{Count: int64(h.n), P50Ms: h.quantile(0.5) * 1000, P99Ms: h.quantile(0.99) * 1000}
}

// Mismatches returns up to limit recent mismatch and precision_loss
// examples, newest first (limit <= 0 or over the ring size returns all
// kept, at most 128). Values at redact paths read "[redacted]". An
// example is kept (and logged) before its outcome is counted, so a caller
// that has seen the count in Summary or the metrics finds the example
// here. Safe for concurrent use.
func (c *Comparator) Mismatches(limit int) []MismatchExample {
	return c.examples.recent(limit)
}
