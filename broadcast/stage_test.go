package broadcast

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestStagesCannotBeChanged(t *testing.T) {
	want := []Stage{StageLegacy, StageShadow, StageDual, StageRealtime}
	var got []Stage
	for i, s := range Stages {
		if i != len(got) {
			t.Errorf("index of %s: got %d, want %d", s, i, len(got))
		}
		got = append(got, s)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Stages: got %v, want %v", got, want)
	}
	if NumStages != len(want) {
		t.Errorf("NumStages: got %d, want %d", NumStages, len(want))
	}
	// A caller that changes its copy changes nobody else's.
	all := AllStages()
	all[0] = "bogus"
	if got := AllStages(); !slices.Equal(got, want) {
		t.Errorf("AllStages after a caller changed its copy: got %v, want %v", got, want)
	}
	// Stopping early is honoured.
	n := 0
	for range Stages {
		n++
		break
	}
	if n != 1 {
		t.Errorf("break after the first stage: %d iterations", n)
	}
}

func TestStageTransports(t *testing.T) {
	tests := []struct {
		stage     Stage
		want      []Transport
		answering Transport
	}{
		{StageLegacy, []Transport{TransportLegacy}, TransportLegacy},
		{StageShadow, []Transport{TransportLegacy, TransportRealtime}, TransportLegacy},
		{StageDual, []Transport{TransportRealtime, TransportLegacy}, TransportRealtime},
		{StageRealtime, []Transport{TransportRealtime}, TransportRealtime},
		{"bogus", []Transport{TransportLegacy}, TransportLegacy},
	}
	for _, tt := range tests {
		t.Run(string(tt.stage), func(t *testing.T) {
			got := tt.stage.Transports()
			if !slices.Equal(got, tt.want) {
				t.Errorf("Transports: got %v, want %v", got, tt.want)
			}
			if got := tt.stage.Answering(); got != tt.answering {
				t.Errorf("Answering: got %s, want %s", got, tt.answering)
			}
			if got[0] != tt.stage.Answering() {
				t.Errorf("Transports()[0] = %s, not the answering transport %s", got[0], tt.stage.Answering())
			}
			got[0] = "changed"
			if again := tt.stage.Transports(); !slices.Equal(again, tt.want) {
				t.Errorf("Transports after a caller changed its copy: got %v", again)
			}
		})
	}
}

func TestRouteReportJSON(t *testing.T) {
	rep := RouteReport{App: "app", Env: "dev", Event: "ai.message", Room: "r1",
		Route: Route{Stage: StageShadow, Channel: "ai", FlagKey: "k", Variant: "shadow", Reason: "TARGETING_MATCH"}}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"app":"app","env":"dev","event":"ai.message","room":"r1","route":{"stage":"shadow","channel":"ai","flagKey":"k","variant":"shadow","reason":"TARGETING_MATCH","killSwitch":false}}`
	if string(b) != want {
		t.Errorf("JSON:\n got %s\nwant %s", b, want)
	}
	var back RouteReport
	if err := json.Unmarshal(b, &back); err != nil || back != rep {
		t.Errorf("round trip: got %+v, %v", back, err)
	}
}
