package broadcast

import "fmt"

// Stage is a channel's migration stage, chosen per message by the flags.
type Stage string

// The stages, in migration order.
const (
	// StageLegacy publishes to PartyKit only.
	StageLegacy Stage = "legacy"
	// StageShadow publishes to both; PartyKit answers the caller, realtime
	// runs off the caller's path and is watched by the comparator.
	StageShadow Stage = "shadow"
	// StageDual publishes to both; realtime answers the caller, PartyKit is
	// still published off the caller's path for old clients.
	StageDual Stage = "dual"
	// StageRealtime publishes to Inngest Realtime only.
	StageRealtime Stage = "realtime"
)

// Stages lists every stage in migration order.
var Stages = []Stage{StageLegacy, StageShadow, StageDual, StageRealtime}

// ParseStage returns the Stage named s, or an error naming s.
func ParseStage(s string) (Stage, error) {
	switch Stage(s) {
	case StageLegacy, StageShadow, StageDual, StageRealtime:
		return Stage(s), nil
	}
	return "", fmt.Errorf("unknown stage %q (want legacy, shadow, dual or realtime)", s)
}

// Transport names one of the two upstreams.
type Transport string

// The transports.
const (
	TransportLegacy   Transport = "legacy"
	TransportRealtime Transport = "realtime"
)

// Answering is the transport whose outcome decides the caller's answer.
func (s Stage) Answering() Transport {
	switch s {
	case StageDual, StageRealtime:
		return TransportRealtime
	}
	return TransportLegacy
}

// OffPath is the transport published off the caller's path, if any.
func (s Stage) OffPath() (Transport, bool) {
	switch s {
	case StageShadow:
		return TransportRealtime, true
	case StageDual:
		return TransportLegacy, true
	}
	return "", false
}

// Compared reports whether the comparator watches messages of this stage.
func (s Stage) Compared() bool { return s == StageShadow || s == StageDual }

// RouteQuery is what a stage decision depends on. Env is the resolver's own.
type RouteQuery struct {
	App, Room, Channel, Event string
}

// Route is a stage decision and why it was taken, as the admin routes
// endpoint shows it.
type Route struct {
	Stage      Stage  `json:"stage"`
	Channel    string `json:"channel"`
	FlagKey    string `json:"flagKey"`
	Variant    string `json:"variant"`
	Reason     string `json:"reason"`
	KillSwitch bool   `json:"killSwitch"`
	// Error is set when the decision fell back to legacy because evaluation
	// failed (provider not ready, flag missing, type mismatch...).
	Error string `json:"error,omitempty"`
}

// StageResolver decides the stage of one message. Implementations must be
// safe for concurrent use, must not block on I/O, and must fail safe: any
// error yields StageLegacy with Route.Error set.
type StageResolver interface {
	Resolve(q RouteQuery) Route
}

// RoutesAnswer is the document GET /v1/admin/routes answers: the query as
// understood, the environment, and the decision. Clients decode this type.
type RoutesAnswer struct {
	App   string `json:"app"`
	Room  string `json:"room"`
	Event string `json:"event"`
	Env   string `json:"env"`
	Route *Route `json:"route"`
}
