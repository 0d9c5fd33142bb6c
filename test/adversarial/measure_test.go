//go:build unix

package adversarial

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"
)

// TestMeasureLatencyDelta reports, for the shadow and dual stages against
// the real dev servers, the answering publish's duration and the
// comparator's latencies and delta (the figures of docs/shadow.md,
// "Latency after a failed answer"). It is a measurement, not a check: set
// SWITCHYARD_MEASURE=1 to run it.
func TestMeasureLatencyDelta(t *testing.T) {
	if os.Getenv("SWITCHYARD_MEASURE") == "" {
		t.Skip("a measurement: set SWITCHYARD_MEASURE=1")
	}
	partyURL, rtURL := pk.URL(t), ing.URL(t)
	for _, stage := range []string{"shadow", "dual"} {
		t.Run(stage, func(t *testing.T) {
			g := startGW(t, stage, func(flags string) string {
				return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, rtURL, "", ""), "")
			})
			const rooms, n = 4, 400
			var answerMs []float64
			for i := range n {
				a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg(fmt.Sprintf("lat-%s-%d", stage, i%rooms), fmt.Sprintf("lat-%s-%d", stage, i), `{"n":1}`))
				if a.status != 200 {
					t.Fatalf("publish: %d %s", a.status, a.body)
				}
				var ans struct {
					Deliveries map[string]struct {
						Status string
						Ms     float64
					}
				}
				_ = json.Unmarshal([]byte(a.body), &ans)
				for _, d := range ans.Deliveries {
					if d.Status == "delivered" {
						answerMs = append(answerMs, d.Ms)
					}
				}
				time.Sleep(5 * time.Millisecond) // pace, so that rooms are observed after their first message
			}
			var compared int64
			eventually(t, wait, "comparisons settle", func() bool {
				var c int64
				for _, s := range g.Comparator().Summary() {
					c += s.Compared
				}
				settled := c == compared && c > 0
				compared = c
				time.Sleep(300 * time.Millisecond)
				return settled
			})
			sort.Float64s(answerMs)
			for _, s := range g.Comparator().Summary() {
				if s.Compared == 0 {
					continue
				}
				t.Logf("%s: answering publish p50 %.2f ms; compared %d; legacy p50 %.2f ms, realtime p50 %.2f ms; delta p50 %.2f ms p99 %.2f ms",
					stage, answerMs[len(answerMs)/2], s.Compared, s.LegacyLatency.P50Ms, s.RealtimeLatency.P50Ms, s.LatencyDelta.P50Ms, s.LatencyDelta.P99Ms)
			}
		})
	}
}
