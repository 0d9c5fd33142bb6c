// Package receipts turns what users' browsers report about the messages
// they received (which transport delivered each one, and how long after
// the gateway accepted it) into user-observed figures per app and channel:
// Prometheus metrics and a sliding-window summary document. The API
// validates and authenticates the reports (POST /v1/receipts); this
// package only counts them. Memory is fixed: one set of counters per
// configured app and channel (others are counted as "unknown").
package receipts

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Via says which transports delivered one message to one browser.
type Via string

// The ways a message reached a browser, as the via label and the summary
// keys show them.
const (
	// ViaLegacy: through PartyKit only.
	ViaLegacy Via = "legacy"
	// ViaRealtime: through Inngest Realtime only.
	ViaRealtime Via = "realtime"
	// ViaBoth: through both; the browser client delivered the first copy
	// and suppressed the second.
	ViaBoth Via = "both"
	// ViaNeither: the browser saw the gap its sequence number left and the
	// message never arrived within the client's window.
	ViaNeither Via = "neither"
)

var vias = [...]Via{ViaLegacy, ViaRealtime, ViaBoth, ViaNeither}

// Vias returns every Via in a fixed order; the caller owns the slice.
func Vias() []Via { return append([]Via(nil), vias[:]...) }

// Unknown is the app or channel label of a receipt whose app or channel is
// not configured.
const Unknown = "unknown"

// Receipt is one browser's report about one message, validated by the API.
type Receipt struct {
	// Channel is the message's configured channel.
	Channel string
	// Legacy and Realtime say whether a copy arrived through that
	// transport; both false is a message that never arrived (ViaNeither).
	Legacy, Realtime bool
	// LegacyLatency and RealtimeLatency are the times from acceptance by
	// the gateway to receipt in the browser through each transport, when
	// that copy arrived.
	LegacyLatency, RealtimeLatency time.Duration
}

// Via classifies r.
func (r Receipt) Via() Via {
	switch {
	case r.Legacy && r.Realtime:
		return ViaBoth
	case r.Legacy:
		return ViaLegacy
	case r.Realtime:
		return ViaRealtime
	}
	return ViaNeither
}

// Config is the aggregator's configuration.
type Config struct {
	// Apps and Channels are the label values counted by name (Channels
	// should include the default channel); others count as Unknown.
	Apps, Channels []string
	// Window is the length of the summary's sliding window (default 5m),
	// cut into Buckets slices (default 30).
	Window  time.Duration
	Buckets int
}

// DefaultWindow is the summary window when Config.Window is unset.
const DefaultWindow = 5 * time.Minute

// Metrics are the receipts' Prometheus collectors (docs/metrics.md). Safe
// for concurrent use.
type Metrics struct {
	messages *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// latencyBuckets covers acceptance-to-receipt times in browsers, seconds.
var latencyBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// NewMetrics creates the collectors and registers them on reg (nil:
// unregistered). It panics when one is already registered (a wiring bug).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_browser_receipts_total",
			Help: "Messages reported by users' browsers, per app, channel and the transports that delivered them (legacy, realtime, both, neither).",
		}, []string{"app", "channel", "via"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_browser_receive_latency_seconds",
			Help:    "Time from acceptance by the gateway to receipt in a user's browser, per transport, as the browsers report it.",
			Buckets: latencyBuckets,
		}, []string{"app", "channel", "transport"}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.latency)
	}
	return m
}

// Aggregator counts receipts. Record and Summary are safe for concurrent
// use and never block on I/O.
type Aggregator struct {
	cfg     Config
	now     func() time.Time
	slot    time.Duration
	apps    map[string]bool
	chans   map[string]bool
	metrics *Metrics

	mu    sync.Mutex
	stats map[[2]string]*chanStats
}

type chanStats struct {
	via     [len(vias)]prometheus.Counter
	latency [2]prometheus.Observer
	buckets []bucket
}

type bucket struct {
	slot    int64 // -1 unused
	via     [len(vias)]int64
	latency [2]logHist
}

// New returns an aggregator counting into m (nil: unregistered metrics);
// now nil is time.Now.
func New(cfg Config, m *Metrics, now func() time.Time) *Aggregator {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Buckets <= 0 {
		cfg.Buckets = 30
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if now == nil {
		now = time.Now
	}
	a := &Aggregator{cfg: cfg, now: now, slot: cfg.Window / time.Duration(cfg.Buckets), metrics: m,
		apps: map[string]bool{}, chans: map[string]bool{}, stats: map[[2]string]*chanStats{}}
	if a.slot <= 0 {
		a.slot = time.Second
	}
	for _, x := range cfg.Apps {
		a.apps[x] = true
	}
	for _, x := range cfg.Channels {
		a.chans[x] = true
	}
	return a
}

// Metrics returns the collectors the aggregator counts into.
func (a *Aggregator) Metrics() *Metrics { return a.metrics }

// label returns v when known, else Unknown.
func label(known map[string]bool, v string) string {
	if known[v] {
		return v
	}
	return Unknown
}

func (a *Aggregator) get(app, channel string) *chanStats {
	k := [2]string{app, channel}
	cs := a.stats[k]
	if cs == nil {
		cs = &chanStats{buckets: make([]bucket, a.cfg.Buckets)}
		for i := range cs.buckets {
			cs.buckets[i].slot = -1
		}
		for i, v := range vias {
			cs.via[i] = a.metrics.messages.WithLabelValues(app, channel, string(v))
		}
		cs.latency[0] = a.metrics.latency.WithLabelValues(app, channel, "legacy")
		cs.latency[1] = a.metrics.latency.WithLabelValues(app, channel, "realtime")
		a.stats[k] = cs
	}
	return cs
}

// Record counts the receipts of one report of app.
func (a *Aggregator) Record(app string, rs []Receipt) {
	app = label(a.apps, app)
	slot := a.now().UnixNano() / int64(a.slot)
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range rs {
		cs := a.get(app, label(a.chans, r.Channel))
		b := &cs.buckets[int(slot%int64(len(cs.buckets)))]
		if b.slot != slot {
			*b = bucket{slot: slot}
		}
		vi := slices.Index(vias[:], r.Via())
		cs.via[vi].Inc()
		b.via[vi]++
		for t, ok := range [2]bool{r.Legacy, r.Realtime} {
			if !ok {
				continue
			}
			d := [2]time.Duration{r.LegacyLatency, r.RealtimeLatency}[t].Seconds()
			cs.latency[t].Observe(d)
			b.latency[t].add(d)
		}
	}
}

// LatencySummary is a latency distribution over the window; quantiles are
// bucket upper bounds (about 10 % resolution) in milliseconds, 0 when
// Count is 0.
type LatencySummary struct {
	Count int64   `json:"count"`
	P50Ms float64 `json:"p50Ms"`
	P99Ms float64 `json:"p99Ms"`
}

// ChannelSummary is what browsers reported for one app and channel over the
// sliding window.
type ChannelSummary struct {
	App     string `json:"app"`
	Channel string `json:"channel"`
	// WindowSeconds is the window the figures cover (at most).
	WindowSeconds float64 `json:"windowSeconds"`
	// Messages is the number of receipts; Via splits it, zeros included.
	Messages int64         `json:"messages"`
	Via      map[Via]int64 `json:"via"`
	// ReceivedPercent is 100 * (Messages - neither) / Messages; nil when
	// Messages is 0.
	ReceivedPercent *float64 `json:"receivedPercent"`
	// LegacyLatency and RealtimeLatency are acceptance-to-browser times
	// through each transport.
	LegacyLatency   LatencySummary `json:"legacyLatency"`
	RealtimeLatency LatencySummary `json:"realtimeLatency"`
}

// Summary is the document GET /v1/admin/receipts/summary answers.
type Summary struct {
	Channels []ChannelSummary `json:"channels"`
}

// Summary returns one row per app and channel that has receipts in the
// window, sorted by app then channel. The caller owns the result.
func (a *Aggregator) Summary() []ChannelSummary {
	now := a.now().UnixNano() / int64(a.slot)
	oldest := now - int64(a.cfg.Buckets) + 1
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []ChannelSummary{}
	for k, cs := range a.stats {
		var via [len(vias)]int64
		var lat [2]logHist
		for i := range cs.buckets {
			b := &cs.buckets[i]
			if b.slot < oldest || b.slot > now {
				continue
			}
			for j := range via {
				via[j] += b.via[j]
			}
			lat[0].merge(&b.latency[0])
			lat[1].merge(&b.latency[1])
		}
		s := ChannelSummary{App: k[0], Channel: k[1], WindowSeconds: a.cfg.Window.Seconds(), Via: map[Via]int64{}}
		for j, v := range vias {
			s.Via[v] = via[j]
			s.Messages += via[j]
		}
		if s.Messages == 0 {
			continue
		}
		p := 100 * float64(s.Messages-s.Via[ViaNeither]) / float64(s.Messages)
		s.ReceivedPercent = &p
		s.LegacyLatency, s.RealtimeLatency = lat[0].summary(), lat[1].summary()
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y ChannelSummary) int {
		if x.App != y.App {
			if x.App < y.App {
				return -1
			}
			return 1
		}
		switch {
		case x.Channel < y.Channel:
			return -1
		case x.Channel > y.Channel:
			return 1
		}
		return 0
	})
	return out
}

// Log-spaced histogram: bucket 0 holds values <= histMin, bucket i values in
// (histMin*f^(i-1), histMin*f^i], the last one everything larger.
const (
	histMin    = 100e-6 // seconds
	histFactor = 1.1
	histN      = 150
)

type logHist struct {
	counts [histN]uint32
	n      int64
}

func (h *logHist) add(v float64) {
	i := 0
	if v > histMin && !math.IsNaN(v) {
		i = min(histN-1, max(1, int(math.Ceil(math.Log(v/histMin)/math.Log(histFactor)))))
	}
	h.counts[i]++
	h.n++
}

func (h *logHist) merge(o *logHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

func (h *logHist) quantile(q float64) float64 {
	rank := max(int64(1), int64(math.Ceil(q*float64(h.n))))
	var cum int64
	for i, c := range h.counts {
		cum += int64(c)
		if cum >= rank {
			return histMin * math.Pow(histFactor, float64(i))
		}
	}
	return histMin * math.Pow(histFactor, histN-1)
}

func (h *logHist) summary() LatencySummary {
	if h.n == 0 {
		return LatencySummary{}
	}
	ms := func(s float64) float64 { return math.Round(s*1e4) / 10 }
	return LatencySummary{Count: h.n, P50Ms: ms(h.quantile(0.5)), P99Ms: ms(h.quantile(0.99))}
}
