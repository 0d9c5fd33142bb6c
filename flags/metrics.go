package flags

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Error reasons, the values of the reason label of
// switchyard_flag_errors_total and the prefix of Route.Error.
const (
	ReasonProviderNotReady = "provider_not_ready"
	ReasonProviderFatal    = "provider_fatal"
	ReasonFlagNotFound     = "flag_not_found"
	ReasonTypeMismatch     = "type_mismatch"
	ReasonUnknownVariant   = "unknown_variant"
	ReasonParseError       = "parse_error"
	ReasonInvalidContext   = "invalid_context"
	ReasonGeneral          = "general"
)

var errorReasons = []string{
	ReasonProviderNotReady, ReasonProviderFatal, ReasonFlagNotFound, ReasonTypeMismatch,
	ReasonUnknownVariant, ReasonParseError, ReasonInvalidContext, ReasonGeneral,
}

// Metrics are the flag metrics of docs/metrics.md. They are safe for
// concurrent use. One Metrics may be shared by the provider (file validity)
// and every Resolver of the process.
type Metrics struct {
	evaluations   *prometheus.CounterVec
	errors        *prometheus.CounterVec
	configChanges prometheus.Counter
	fileValid     prometheus.Gauge
	killSwitch    prometheus.Gauge
}

// NewMetrics creates the flag metrics and registers them on reg; a nil reg
// leaves them unregistered (tests). It panics if a metric of the same name
// is already registered on reg, like prometheus.MustRegister.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		evaluations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_flag_evaluations_total",
			Help: "Stage decisions, by channel and stage.",
		}, []string{"channel", "stage"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_flag_errors_total",
			Help: "Stage decisions that fell back to legacy because evaluation failed, by channel and reason.",
		}, []string{"channel", "reason"}),
		configChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_flag_config_changes_total",
			Help: "Provider configuration-change events.",
		}),
		fileValid: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_flag_file_valid",
			Help: "1 if the last flag source load was valid, 0 if the last edit was refused (the last good flags stay in force).",
		}),
		killSwitch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_killswitch_active",
			Help: "1 if the kill switch evaluated true on the last decision.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.evaluations, m.errors, m.configChanges, m.fileValid, m.killSwitch)
	}
	return m
}

// setFileValid sets the flag source validity gauge (1 valid, 0 not); a nil
// Metrics records nothing.
func (m *Metrics) setFileValid(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.fileValid.Set(1)
	} else {
		m.fileValid.Set(0)
	}
}
