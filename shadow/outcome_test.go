package shadow

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestOutcomeGroups(t *testing.T) {
	type groups struct{ compared, decided, matched, jsMatched, parityFailure, differs, missing bool }
	tests := []struct {
		o    Outcome
		want groups
	}{
		{OutcomeMatch, groups{compared: true, decided: true, matched: true, jsMatched: true}},
		{OutcomeMismatch, groups{compared: true, decided: true, parityFailure: true, differs: true}},
		{OutcomePrecisionLoss, groups{compared: true, decided: true, jsMatched: true, parityFailure: true, differs: true}},
		{OutcomeMissingLegacy, groups{compared: true, decided: true, parityFailure: true, missing: true}},
		{OutcomeMissingRealtime, groups{compared: true, decided: true, parityFailure: true, missing: true}},
		{OutcomeUnobserved, groups{decided: true}},
		{OutcomeDropped, groups{decided: true}},
		{OutcomeDuplicate, groups{}},
		{OutcomeReordered, groups{}},
		{"bogus", groups{}},
	}
	for _, tt := range tests {
		t.Run(string(tt.o), func(t *testing.T) {
			got := groups{tt.o.Compared(), tt.o.Decided(), tt.o.Matched(), tt.o.JSMatched(),
				tt.o.ParityFailure(), tt.o.Differs(), tt.o.Missing()}
			if got != tt.want {
				t.Errorf("groups: got %+v, want %+v", got, tt.want)
			}
		})
	}
	// Every outcome is in the table above.
	for _, o := range Outcomes() {
		if !slices.ContainsFunc(tests, func(tt struct {
			o    Outcome
			want groups
		}) bool {
			return tt.o == o
		}) {
			t.Errorf("outcome %q has no row", o)
		}
	}
	all := Outcomes()
	all[0] = "changed"
	if Outcomes()[0] != OutcomeMatch {
		t.Error("Outcomes shares its backing array with callers")
	}
}

// The admin documents decode into the types a client imports.
func TestSummaryDocumentsRoundTrip(t *testing.T) {
	p := 100.0
	sum := Summary{Channels: []ChannelSummary{{App: "a", Channel: "ai", WindowSeconds: 300,
		Outcomes: map[Outcome]int64{OutcomeMatch: 3}, Compared: 3, ParityPercent: &p, JSParityPercent: &p}}}
	b, err := json.Marshal(sum)
	if err != nil {
		t.Fatal(err)
	}
	var back Summary
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Channels) != 1 || back.Channels[0].Compared != 3 || *back.Channels[0].ParityPercent != 100 {
		t.Errorf("round trip: got %+v", back)
	}
	empty, _ := json.Marshal(Summary{Channels: []ChannelSummary{}})
	if got, want := string(empty), `{"channels":[]}`; got != want {
		t.Errorf("empty summary: got %s, want %s", got, want)
	}
	mm, _ := json.Marshal(MismatchReport{Mismatches: []MismatchExample{}})
	if got, want := string(mm), `{"mismatches":[]}`; got != want {
		t.Errorf("empty mismatches: got %s, want %s", got, want)
	}
}
