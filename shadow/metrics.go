package shadow

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the comparator's Prometheus collectors (names in
// docs/metrics.md). It is safe for concurrent use; one Metrics may serve
// one Comparator.
type Metrics struct {
	outcomes      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	delta         *prometheus.HistogramVec
	observedRooms prometheus.Gauge
	pending       prometheus.Gauge
	foreign       *prometheus.CounterVec
	sampled       *prometheus.CounterVec
	compared      *prometheus.CounterVec
	unobserved    *prometheus.CounterVec
	watchWait     *prometheus.HistogramVec
	warmed        prometheus.Counter
}

// waitBuckets covers the waits of AwaitWatch, in seconds (0 when the watch
// was ready).
var waitBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// latencyBuckets covers acceptance-to-receipt times, in seconds.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// deltaBuckets is symmetric around zero: realtime faster is negative.
var deltaBuckets = []float64{
	-10, -5, -2.5, -1, -0.5, -0.25, -0.1, -0.05, -0.025, -0.01, -0.005,
	0,
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// NewMetrics creates the comparator's collectors and registers them on reg.
// It panics if a collector is already registered on reg (a wiring bug).
// A nil reg registers nothing.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_shadow_outcomes_total",
			Help: "Comparator outcomes per app, channel and outcome (match, mismatch, precision_loss, missing_legacy, missing_realtime, duplicate, reordered, unobserved, dropped).",
		}, []string{"app", "channel", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_shadow_delivery_latency_seconds",
			Help:    "Time from acceptance by the gateway to receipt at the comparator's subscriber, per transport.",
			Buckets: latencyBuckets,
		}, []string{"app", "channel", "transport"}),
		delta: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_shadow_latency_delta_seconds",
			Help:    "Realtime receipt minus legacy receipt per message whose two copies arrived; negative means realtime was faster.",
			Buckets: deltaBuckets,
		}, []string{"app", "channel"}),
		observedRooms: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_shadow_observed_rooms",
			Help: "Rooms the comparator subscribes to (opening, open or waiting to retry).",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_shadow_pending",
			Help: "Expectations waiting for their copies or for their duplicate window to end.",
		}),
		foreign: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_shadow_foreign_frames_total",
			Help: "Frames received by the comparator that this gateway did not send (unknown requestId, not an envelope).",
		}, []string{"transport"}),
	}
	m.sampled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchyard_shadow_sampled_total",
		Help: "Messages passed to the comparator (every message of a sampled room in the shadow and dual stages).",
	}, []string{"app", "channel"})
	m.compared = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchyard_shadow_compared_total",
		Help: "Sampled messages judged on both sides (match, mismatch, precision_loss or missing); coverage is compared / sampled.",
	}, []string{"app", "channel"})
	m.unobserved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchyard_shadow_unobserved_total",
		Help: "Sampled messages not compared, by reason (legacy_not_ready, realtime_not_ready, both_not_ready, watch_failed, closed).",
	}, []string{"app", "channel", "reason"})
	m.watchWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "switchyard_shadow_watch_wait_seconds",
		Help:    "Time a copy of a sampled message waited for the comparator's watch before its publish, by transport and path (answer: on the caller's path; offpath: in the room's lane).",
		Buckets: waitBuckets,
	}, []string{"transport", "path"})
	m.warmed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "switchyard_shadow_warmed_rooms_total",
		Help: "Rooms whose watches a token request opened before their first message.",
	})
	if reg != nil {
		reg.MustRegister(m.outcomes, m.latency, m.delta, m.observedRooms, m.pending, m.foreign,
			m.sampled, m.compared, m.unobserved, m.watchWait, m.warmed)
	}
	return m
}
