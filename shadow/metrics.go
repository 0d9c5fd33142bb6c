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
}

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
	if reg != nil {
		reg.MustRegister(m.outcomes, m.latency, m.delta, m.observedRooms, m.pending, m.foreign)
	}
	return m
}
