package shadow

// The groupings of outcomes, defined once here: the summary's figures, the
// status page's columns, the replay's settling and the demo's table all
// read them. An Outcome outside the constants belongs to no group.

// Outcomes returns every Outcome in the order of the summary's columns
// (the comparable ones first, then the per-copy and unjudged ones), as a
// fresh slice the caller owns.
func Outcomes() []Outcome { return append([]Outcome(nil), outcomes[:]...) }

// Compared reports whether o judges a message's delivery: match, mismatch,
// precision_loss, missing_legacy and missing_realtime. Every message
// counted in ChannelSummary.Compared (the denominator of both parities)
// has one of them, or both missing ones when neither copy came.
func (o Outcome) Compared() bool {
	switch o {
	case OutcomeMatch, OutcomeMismatch, OutcomePrecisionLoss, OutcomeMissingLegacy, OutcomeMissingRealtime:
		return true
	}
	return false
}

// Decided reports whether o settles a sampled message: the Compared
// outcomes plus unobserved and dropped (the comparator could not judge
// it). Duplicate and reordered describe one extra or late copy, not a
// message, and settle nothing. A sampled message gets one Decided outcome
// (two when it is missing on both sides), so their sum counts the
// messages settled, less those missing on both sides.
func (o Outcome) Decided() bool {
	return o.Compared() || o == OutcomeUnobserved || o == OutcomeDropped
}

// Matched reports whether o counts for parity (the numerator of
// ChannelSummary.ParityPercent): match only.
func (o Outcome) Matched() bool { return o == OutcomeMatch }

// JSMatched reports whether o counts for JavaScript parity (the numerator
// of ChannelSummary.JSParityPercent): match and precision_loss, since
// JSON.parse reads every number as a float64 anyway.
func (o Outcome) JSMatched() bool { return o == OutcomeMatch || o == OutcomePrecisionLoss }

// ParityFailure reports whether o is a compared message that is not a
// match: mismatch, precision_loss, missing_legacy or missing_realtime.
func (o Outcome) ParityFailure() bool { return o.Compared() && !o.Matched() }

// Differs reports whether both copies arrived and at least one differs
// from the message sent: mismatch and precision_loss (the outcomes
// Mismatches keeps examples of).
func (o Outcome) Differs() bool { return o == OutcomeMismatch || o == OutcomePrecisionLoss }

// Missing reports whether a copy never arrived within the timeout:
// missing_legacy and missing_realtime.
func (o Outcome) Missing() bool { return o == OutcomeMissingLegacy || o == OutcomeMissingRealtime }

// Summary is the document GET /v1/admin/shadow/summary answers: one entry
// per app and channel, sorted by app then channel (empty, never null,
// before any message). Clients decode it as is.
type Summary struct {
	Channels []ChannelSummary `json:"channels"`
}

// MismatchReport is the document GET /v1/admin/shadow/mismatches answers:
// recent mismatch and precision_loss examples, newest first (empty, never
// null, when there is none). Clients decode it as is.
type MismatchReport struct {
	Mismatches []MismatchExample `json:"mismatches"`
}
