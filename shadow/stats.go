package shadow

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/broadcast"
)

// Outcome is what the comparator concluded about one message (or, for
// duplicate and reordered, about one of its copies). See docs/shadow.md.
type Outcome string

// The outcomes, as the outcome label and the summary keys show them.
const (
	OutcomeMatch           Outcome = "match"
	OutcomeMismatch        Outcome = "mismatch"
	OutcomePrecisionLoss   Outcome = "precision_loss"
	OutcomeMissingLegacy   Outcome = "missing_legacy"
	OutcomeMissingRealtime Outcome = "missing_realtime"
	OutcomeDuplicate       Outcome = "duplicate"
	OutcomeReordered       Outcome = "reordered"
	OutcomeUnobserved      Outcome = "unobserved"
	OutcomeDropped         Outcome = "dropped"
)

// outcomes lists every Outcome; its index is the outcome's slot in counters.
var outcomes = [...]Outcome{
	OutcomeMatch, OutcomeMismatch, OutcomePrecisionLoss, OutcomeMissingLegacy,
	OutcomeMissingRealtime, OutcomeDuplicate, OutcomeReordered, OutcomeUnobserved, OutcomeDropped,
}

type outcomeIdx uint8

const (
	oMatch outcomeIdx = iota
	oMismatch
	oPrecisionLoss
	oMissingLegacy
	oMissingRealtime
	oDuplicate
	oReordered
	oUnobserved
	oDropped
	numOutcomes
)

// UnobservedReason says why a sampled message was not compared: counted in
// the unobserved outcome, and by reason in the summary and in
// switchyard_shadow_unobserved_total.
type UnobservedReason string

// The reasons of an unobserved message (docs/shadow.md).
const (
	// ReasonLegacyNotReady: the PartyKit watch of the room was not ready
	// when the PartyKit copy was published (the wait ran out, or waiting
	// was off or given up for the room), and the copy was not seen.
	ReasonLegacyNotReady UnobservedReason = "legacy_not_ready"
	// ReasonRealtimeNotReady: the same for the Inngest Realtime copy.
	ReasonRealtimeNotReady UnobservedReason = "realtime_not_ready"
	// ReasonBothNotReady: neither watch was ready, and neither copy seen.
	ReasonBothNotReady UnobservedReason = "both_not_ready"
	// ReasonWatchFailed: the room's watches could not be opened (a
	// WatchRoom error, retried on a message at least 30 s later, or the
	// dial queue was full).
	ReasonWatchFailed UnobservedReason = "watch_failed"
	// ReasonClosed: the room's watches were closed (evicted under
	// maxRooms) before the message was decided.
	ReasonClosed UnobservedReason = "closed"
)

// reasons lists every UnobservedReason; its index is the reason's slot.
var reasons = [...]UnobservedReason{ReasonLegacyNotReady, ReasonRealtimeNotReady, ReasonBothNotReady, ReasonWatchFailed, ReasonClosed}

type reasonIdx uint8

const (
	rLegacyNotReady reasonIdx = iota
	rRealtimeNotReady
	rBothNotReady
	rWatchFailed
	rClosed
	numReasons
)

// UnobservedReasons returns every UnobservedReason in summary order, as a
// fresh slice the caller owns.
func UnobservedReasons() []UnobservedReason { return append([]UnobservedReason(nil), reasons[:]...) }

// side indexes the two transports.
type side uint8

const (
	sideLegacy side = iota
	sideRealtime
)

func (s side) transport() broadcast.Transport {
	if s == sideLegacy {
		return broadcast.TransportLegacy
	}
	return broadcast.TransportRealtime
}

// Log-spaced histogram for the summary quantiles: bucket 0 holds values
// <= histMin, bucket i (1..histN-2) values in (histMin*f^(i-1), histMin*f^i],
// the last one everything larger. Resolution is about 10 %.
const (
	histMin    = 100e-6 // seconds
	histFactor = 1.1
	histN      = 150 // histMin*1.1^148 is about 135 s
)

type logHist struct {
	counts [histN]uint32
	n      uint64
}

func histIndex(v float64) int {
	if v <= histMin || math.IsNaN(v) {
		return 0
	}
	i := int(math.Ceil(math.Log(v/histMin) / math.Log(histFactor)))
	if i < 1 {
		i = 1
	}
	if i > histN-1 {
		i = histN - 1
	}
	return i
}

func histBound(i int) float64 {
	if i == 0 {
		return histMin
	}
	return histMin * math.Pow(histFactor, float64(i))
}

func (h *logHist) add(v float64) {
	h.counts[histIndex(v)]++
	h.n++
}

func (h *logHist) merge(o *logHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the upper bound of the bucket holding the q-th value.
func (h *logHist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var cum uint64
	for i, c := range h.counts {
		cum += uint64(c)
		if cum >= rank {
			return histBound(i)
		}
	}
	return histBound(histN - 1)
}

// signedHist holds values of both signs; zero bucket is |v| <= histMin.
type signedHist struct {
	neg, pos logHist
	zero     uint64
}

func (h *signedHist) add(v float64) {
	switch {
	case math.Abs(v) <= histMin:
		h.zero++
	case v < 0:
		h.neg.add(-v)
	default:
		h.pos.add(v)
	}
}

func (h *signedHist) merge(o *signedHist) {
	h.neg.merge(&o.neg)
	h.pos.merge(&o.pos)
	h.zero += o.zero
}

func (h *signedHist) count() uint64 { return h.neg.n + h.pos.n + h.zero }

func (h *signedHist) quantile(q float64) float64 {
	n := h.count()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank < 1 {
		rank = 1
	}
	var cum uint64
	for i := histN - 1; i >= 0; i-- { // most negative first
		cum += uint64(h.neg.counts[i])
		if cum >= rank {
			return -histBound(i)
		}
	}
	cum += h.zero
	if cum >= rank {
		return 0
	}
	for i := 0; i < histN; i++ {
		cum += uint64(h.pos.counts[i])
		if cum >= rank {
			return histBound(i)
		}
	}
	return histBound(histN - 1)
}

// windowBucket is one slice of the sliding window.
type windowBucket struct {
	slot       int64 // bucket number since the epoch; -1 when unused
	outcomes   [numOutcomes]int64
	sampled    int64 // messages passed to Expect
	compared   int64 // messages whose both sides were judged
	unobserved [numReasons]int64
	latency    [2]logHist
	delta      signedHist
}

// chanKey identifies an app and channel.
type chanKey struct{ app, channel string }

// chanStats holds the Prometheus children and the sliding window of one app
// and channel. The children are immutable after creation; the window is
// guarded by mu.
type chanStats struct {
	key        chanKey
	outcomes   [numOutcomes]prometheus.Counter
	sampled    prometheus.Counter
	compared   prometheus.Counter
	unobserved [numReasons]prometheus.Counter
	latency    [2]prometheus.Observer
	delta      prometheus.Observer

	mu      sync.Mutex
	buckets []windowBucket // ring indexed by slot % len
	// lastLossExample is when a precision_loss example was last kept, to
	// stop one channel of big integers from filling the example ring.
	lastLossExample time.Time
}

func newChanStats(k chanKey, m *Metrics, nBuckets int) *chanStats {
	cs := &chanStats{key: k, buckets: make([]windowBucket, nBuckets)}
	for i := range cs.buckets {
		cs.buckets[i].slot = -1
	}
	for i, o := range outcomes {
		cs.outcomes[i] = m.outcomes.WithLabelValues(k.app, k.channel, string(o))
	}
	for s := sideLegacy; s <= sideRealtime; s++ {
		cs.latency[s] = m.latency.WithLabelValues(k.app, k.channel, string(s.transport()))
	}
	cs.delta = m.delta.WithLabelValues(k.app, k.channel)
	cs.sampled = m.sampled.WithLabelValues(k.app, k.channel)
	cs.compared = m.compared.WithLabelValues(k.app, k.channel)
	for i, r := range reasons {
		cs.unobserved[i] = m.unobserved.WithLabelValues(k.app, k.channel, string(r))
	}
	return cs
}

// bucket returns the window bucket for slot, resetting a stale one. mu must
// be held.
func (cs *chanStats) bucket(slot int64) *windowBucket {
	b := &cs.buckets[int(slot%int64(len(cs.buckets)))]
	if b.slot != slot {
		*b = windowBucket{slot: slot}
	}
	return b
}

// statsTable finds or creates the chanStats of an app and channel. Reads
// take a shared lock; the set of channels is small and stable.
type statsTable struct {
	mu       sync.RWMutex
	m        map[chanKey]*chanStats
	metrics  *Metrics
	nBuckets int
}

func (t *statsTable) get(app, channel string) *chanStats {
	k := chanKey{app, channel}
	t.mu.RLock()
	cs := t.m[k]
	t.mu.RUnlock()
	if cs != nil {
		return cs
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if cs = t.m[k]; cs == nil {
		cs = newChanStats(k, t.metrics, t.nBuckets)
		t.m[k] = cs
	}
	return cs
}

func (t *statsTable) all() []*chanStats {
	t.mu.RLock()
	out := make([]*chanStats, 0, len(t.m))
	for _, cs := range t.m {
		out = append(out, cs)
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].key.app != out[j].key.app {
			return out[i].key.app < out[j].key.app
		}
		return out[i].key.channel < out[j].key.channel
	})
	return out
}

// LatencySummary is a latency distribution over the summary window.
// Quantiles are bucket upper bounds (about 10 % resolution) in
// milliseconds; they are 0 when Count is 0.
type LatencySummary struct {
	Count int64   `json:"count"`
	P50Ms float64 `json:"p50Ms"`
	P99Ms float64 `json:"p99Ms"`
}

// ChannelSummary is the comparator's view of one app and channel over the
// sliding window. See docs/shadow.md for how to read it.
type ChannelSummary struct {
	App     string `json:"app"`
	Channel string `json:"channel"`
	// WindowSeconds is the window length the figures cover (at most; the
	// oldest bucket is partly rotated out).
	WindowSeconds float64 `json:"windowSeconds"`
	// Outcomes counts every outcome, zeros included.
	Outcomes map[Outcome]int64 `json:"outcomes"`
	// Sampled counts the messages passed to the comparator (every message
	// of a sampled room in a compared stage), counted when they were
	// expected. A sampled message ends compared, unobserved or dropped;
	// until its timeout it is none of them yet.
	Sampled int64 `json:"sampled"`
	// Compared counts the messages whose delivery the comparator could
	// judge on both sides: each ends with one of match, mismatch,
	// precision_loss or missing (a message missing on both sides counts
	// once here and once under each missing outcome).
	Compared int64 `json:"compared"`
	// Unobserved counts the unobserved messages by reason, zeros
	// included; their sum is Outcomes["unobserved"].
	Unobserved map[UnobservedReason]int64 `json:"unobserved"`
	// CoveragePercent is 100 * Compared / Sampled: the share of the
	// sampled traffic that parity describes; nil when Sampled is 0.
	CoveragePercent *float64 `json:"coveragePercent"`
	// ParityPercent is 100 * match / Compared (Outcome.Matched); nil when
	// Compared is 0. It describes CoveragePercent of the sampled traffic.
	ParityPercent *float64 `json:"parityPercent"`
	// JSParityPercent is 100 * (match + precision_loss) / Compared
	// (Outcome.JSMatched): parity as a JavaScript client sees it, since
	// JSON.parse turns numbers into float64 anyway; nil when Compared is 0.
	JSParityPercent *float64 `json:"jsParityPercent"`
	// LegacyLatency and RealtimeLatency are acceptance-to-receipt times.
	LegacyLatency   LatencySummary `json:"legacyLatency"`
	RealtimeLatency LatencySummary `json:"realtimeLatency"`
	// LatencyDelta is realtime minus legacy receipt per message whose two
	// copies arrived; negative means realtime was faster.
	LatencyDelta LatencySummary `json:"latencyDelta"`
}

func percent(num, den int64) *float64 {
	if den == 0 {
		return nil
	}
	p := 100 * float64(num) / float64(den)
	return &p
}

// MismatchExample is one recent mismatch or precision_loss, with the
// differences of each copy against the original envelope the gateway sent.
// Values at redact paths read "[redacted]".
type MismatchExample struct {
	Time      time.Time       `json:"time"`
	App       string          `json:"app"`
	Channel   string          `json:"channel"`
	Room      string          `json:"room"`
	RequestID string          `json:"requestId"`
	Name      string          `json:"name"`
	Stage     broadcast.Stage `json:"stage"`
	Outcome   Outcome         `json:"outcome"`
	// Legacy and Realtime list how each copy differs from the original
	// (empty when that copy equals it).
	Legacy   []Difference `json:"legacy,omitempty"`
	Realtime []Difference `json:"realtime,omitempty"`
	// Between lists how the realtime copy differs from the legacy copy, set
	// when both copies differ from the original.
	Between []Difference `json:"between,omitempty"`
	// Original is the envelope the gateway sent, redacted, as JSON (cut at
	// a few KiB).
	Original string `json:"original"`
}

// exampleRing keeps the most recent examples; safe for concurrent use.
type exampleRing struct {
	mu   sync.Mutex
	buf  []MismatchExample
	next int
	full bool
}

func (r *exampleRing) add(e MismatchExample) {
	r.mu.Lock()
	r.buf[r.next] = e
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// recent returns up to limit examples, newest first.
func (r *exampleRing) recent(limit int) []MismatchExample {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.buf)
	}
	if limit <= 0 || limit > n {
		limit = n
	}
	out := make([]MismatchExample, 0, limit)
	for i := 0; i < limit; i++ {
		j := (r.next - 1 - i + len(r.buf)) % len(r.buf)
		out = append(out, r.buf[j])
	}
	return out
}

// limiter is a token bucket on the injectable clock, for log lines.
type limiter struct {
	mu         sync.Mutex
	tokens     float64
	burst      float64
	perSecond  float64
	last       time.Time
	suppressed int
}

// allow reports whether a line may be logged now and how many were
// suppressed since the last allowed one.
func (l *limiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens = math.Min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.perSecond)
	} else {
		l.tokens = l.burst
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	s := l.suppressed
	l.suppressed = 0
	return true, s
}
