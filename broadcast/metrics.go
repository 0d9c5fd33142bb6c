package broadcast

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the multicast adapter's Prometheus collectors (names and labels
// as docs/metrics.md lists them). One Metrics may be shared by several
// Multicasters only if they publish for disjoint apps. All methods are safe
// for concurrent use.
type Metrics struct {
	accepted    *prometheus.CounterVec
	deliveries  *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	queueDepth  *prometheus.GaugeVec
	dropped     *prometheus.CounterVec
	duplicates  *prometheus.CounterVec
	rateLimited *prometheus.CounterVec
	idemChecks  *prometheus.CounterVec
	idemFail    *prometheus.CounterVec
	idemSeconds prometheus.Histogram
}

// NewMetrics creates the adapter's collectors and registers them on reg. A
// nil reg leaves them unregistered (handy in tests and benchmarks). It panics
// if a collector of the same name is already registered on reg, like
// prometheus.MustRegister.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_messages_accepted_total",
			Help: "Messages whose answering publish succeeded, by app, channel and stage.",
		}, []string{"app", "channel", "stage"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_deliveries_total",
			Help: "Final per-transport outcome of accepted messages, answering and off-path sides.",
		}, []string{"app", "channel", "transport", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_publish_duration_seconds",
			Help:    "Publish time to one transport, retries included, by path (answer, offpath).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"transport", "path"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_offpath_queue_depth",
			Help: "Messages waiting on the off-path side, by transport.",
		}, []string{"transport"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_offpath_dropped_total",
			Help: "Off-path messages dropped, by transport and reason (queue_full, shutdown).",
		}, []string{"transport", "reason"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_duplicates_total",
			Help: "RequestIds refused inside the idempotency window, by app.",
		}, []string{"app"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_rate_limited_total",
			Help: "Messages refused by the per-app publish rate limit, by app.",
		}, []string{"app"}),
		idemChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_idempotency_shared_checks_total",
			Help: "RequestIds checked against the shared idempotency store, by result (claimed, duplicate, failed_open).",
		}, []string{"result"}),
		idemFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_idempotency_fail_open_total",
			Help: "RequestIds published without the shared idempotency check, by reason (timeout, error, backoff).",
		}, []string{"reason"}),
		idemSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchyard_idempotency_shared_check_seconds",
			Help:    "Time of one shared idempotency check (claim), failed ones included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.accepted, m.deliveries, m.duration, m.queueDepth, m.dropped, m.duplicates, m.rateLimited,
			m.idemChecks, m.idemFail, m.idemSeconds)
	}
	return m
}

// Delivery statuses of switchyard_deliveries_total.
const (
	mDelivered = iota
	mFailed
	mDropped
	mSkipped
	numMStatus
)

var mStatusNames = [numMStatus]string{"delivered", "failed", "dropped", "skipped"}

// Drop reasons of switchyard_offpath_dropped_total.
const (
	dropQueueFull = iota
	dropShutdown
	numDropReasons
)

var reasonNames = [numDropReasons]string{"queue_full", "shutdown"}

// Paths of switchyard_publish_duration_seconds.
const (
	pathAnswer = iota
	pathOffPath
	numPaths
)

var pathNames = [numPaths]string{"answer", "offpath"}

// transports in index order; see tIndex.
var transportsByIndex = [2]Transport{TransportLegacy, TransportRealtime}

// tIndex maps a transport to its index in the cached collector arrays.
func tIndex(t Transport) int {
	if t == TransportRealtime {
		return 1
	}
	return 0
}

// stageIndex maps a stage to its index in Stages; unknown stages count as
// legacy (the resolver's fail-safe).
func stageIndex(s Stage) int {
	switch s {
	case StageShadow:
		return 1
	case StageDual:
		return 2
	case StageRealtime:
		return 3
	}
	return 0
}

// unknownLabel replaces label values outside the configured set.
const unknownLabel = "unknown"

// boundMetrics is the Multicaster's view of Metrics with every label child
// it can know in advance cached, and the (app, channel) children cached on
// first use in copy-on-write maps (lookups take no lock and allocate
// nothing).
type boundMetrics struct {
	m        *Metrics
	apps     map[string]bool // nil: every app is a valid label
	channels map[string]bool // nil: every channel is a valid label

	duration [2][numPaths]prometheus.Observer
	depth    [2]prometheus.Gauge
	dropped  [2][numDropReasons]prometheus.Counter

	idemChecks  [numIdemResults]prometheus.Counter
	idemFail    [numFailOpen]prometheus.Counter
	idemSeconds prometheus.Observer

	mu     sync.Mutex // serialises writers of byApp and appMetrics.byChannel
	byApp  atomic.Pointer[map[string]*appMetrics]
	noneAM *appMetrics // for the "unknown" app
}

type appMetrics struct {
	b           *boundMetrics
	app         string
	duplicates  prometheus.Counter
	rateLimited prometheus.Counter
	byChannel   atomic.Pointer[map[string]*chanMetrics]
}

type chanMetrics struct {
	accepted   [NumStages]prometheus.Counter
	deliveries [2][numMStatus]prometheus.Counter
}

func newBoundMetrics(m *Metrics, apps, channels []string) *boundMetrics {
	if m == nil {
		m = NewMetrics(nil)
	}
	b := &boundMetrics{m: m}
	if len(apps) > 0 {
		b.apps = make(map[string]bool, len(apps))
		for _, a := range apps {
			b.apps[a] = true
		}
	}
	if len(channels) > 0 {
		b.channels = map[string]bool{DefaultChannel: true}
		for _, c := range channels {
			b.channels[c] = true
		}
	}
	for ti, t := range transportsByIndex {
		for p, pn := range pathNames {
			b.duration[ti][p] = m.duration.WithLabelValues(string(t), pn)
		}
		b.depth[ti] = m.queueDepth.WithLabelValues(string(t))
		for r, rn := range reasonNames {
			b.dropped[ti][r] = m.dropped.WithLabelValues(string(t), rn)
		}
	}
	for r, rn := range idemResultNames {
		b.idemChecks[r] = m.idemChecks.WithLabelValues(rn)
	}
	for r, rn := range failOpenNames {
		b.idemFail[r] = m.idemFail.WithLabelValues(rn)
	}
	b.idemSeconds = m.idemSeconds
	empty := map[string]*appMetrics{}
	b.byApp.Store(&empty)
	for _, a := range apps {
		b.app(a)
	}
	b.noneAM = b.newApp(unknownLabel)
	return b
}

func (b *boundMetrics) newApp(app string) *appMetrics {
	am := &appMetrics{
		b:           b,
		app:         app,
		duplicates:  b.m.duplicates.WithLabelValues(app),
		rateLimited: b.m.rateLimited.WithLabelValues(app),
	}
	empty := map[string]*chanMetrics{}
	am.byChannel.Store(&empty)
	return am
}

// app returns the cached collectors of app ("unknown" when apps are
// configured and app is not one of them).
func (b *boundMetrics) app(app string) *appMetrics {
	if am := (*b.byApp.Load())[app]; am != nil {
		return am
	}
	if b.apps != nil && !b.apps[app] {
		return b.noneAM
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.byApp.Load()
	if am := old[app]; am != nil {
		return am
	}
	next := make(map[string]*appMetrics, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	am := b.newApp(app)
	next[app] = am
	b.byApp.Store(&next)
	return am
}

// channel returns the cached collectors of (am.app, channel).
func (am *appMetrics) channel(channel string) *chanMetrics {
	if cm := (*am.byChannel.Load())[channel]; cm != nil {
		return cm
	}
	b := am.b
	if b.channels != nil && !b.channels[channel] {
		channel = unknownLabel
		if cm := (*am.byChannel.Load())[channel]; cm != nil {
			return cm
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *am.byChannel.Load()
	if cm := old[channel]; cm != nil {
		return cm
	}
	cm := &chanMetrics{}
	for i, s := range Stages {
		cm.accepted[i] = b.m.accepted.WithLabelValues(am.app, channel, string(s))
	}
	for ti, t := range transportsByIndex {
		for s, sn := range mStatusNames {
			cm.deliveries[ti][s] = b.m.deliveries.WithLabelValues(am.app, channel, string(t), sn)
		}
	}
	next := make(map[string]*chanMetrics, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[channel] = cm
	am.byChannel.Store(&next)
	return cm
}
