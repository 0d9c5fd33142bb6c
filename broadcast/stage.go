package broadcast

import (
	"fmt"
	"iter"
)

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

// stages lists every stage in migration order. Unexported so that no
// package can reorder or extend it; Stages and AllStages hand out views.
var stages = [...]Stage{StageLegacy, StageShadow, StageDual, StageRealtime}

// NumStages is the number of stages.
const NumStages = len(stages)

// Stages yields every stage in migration order with its index, so that
// `for i, s := range broadcast.Stages` reads like a range over a slice. It
// is a function, not a variable: no caller can change the stages another
// package sees. Safe for concurrent use.
func Stages(yield func(int, Stage) bool) {
	for i, s := range stages {
		if !yield(i, s) {
			return
		}
	}
}

var _ iter.Seq2[int, Stage] = Stages

// AllStages returns a fresh slice of every stage in migration order; the
// caller owns it.
func AllStages() []Stage { return append([]Stage(nil), stages[:]...) }

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

// Answering is the transport whose outcome decides the caller's answer:
// PartyKit in legacy and shadow (and for an unknown stage, the resolver's
// fail-safe), Inngest Realtime in dual and realtime.
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

// Transports returns a fresh slice of the transports s publishes to,
// answering transport first: one in legacy and realtime, both in shadow
// and dual. An unknown stage publishes as legacy does. The caller owns the
// slice.
func (s Stage) Transports() []Transport {
	ans := s.Answering()
	if off, ok := s.OffPath(); ok {
		return []Transport{ans, off}
	}
	return []Transport{ans}
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

// RouteReport is the document GET /v1/admin/routes answers: the route a
// message of App's Room and Event would take now in Env. Clients decode
// it as is.
type RouteReport struct {
	App   string `json:"app"`
	Env   string `json:"env"`
	Event string `json:"event"`
	Room  string `json:"room"`
	Route Route  `json:"route"`
}

// StageResolver decides the stage of one message. Implementations must be
// safe for concurrent use, must not block on I/O, and must fail safe: any
// error yields StageLegacy with Route.Error set.
type StageResolver interface {
	Resolve(q RouteQuery) Route
}
