//go:build unix

package adversarial

import (
	"fmt"
	"testing"
)

// TestFinding6FailedAnswerHasNoOffPathCopy: a message whose answering
// publish failed (502) is not published off-path. At shadow PartyKit is
// down and a realtime subscriber must get none of the refused messages; at
// dual Inngest is down and a PartyKit subscriber must get none. The
// gateway is shut down (which drains the off-path queues) before the
// marker is sent, so a queued copy would arrive before it.
func TestFinding6FailedAnswerHasNoOffPathCopy(t *testing.T) {
	const n = 20
	t.Run("shadow, PartyKit down", func(t *testing.T) {
		rtURL := ing.URL(t)
		g := startGW(t, "shadow", func(flags string) string {
			return suiteConfig(flags, appYAML("ai-hero", keyA, deadURL(t), rtURL, "", ""), "")
		})
		const room = "outage-shadow"
		rt := realtimeSocket(t, g, keyA, rtURL, room)
		rt.ready(t, func(id string) { directInngest(t, rtURL, rt.channel, id) })
		for i := range n {
			a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg(room, fmt.Sprintf("refused-%d", i), `{"n":1}`))
			if code, _ := errorCode(a.body); a.status != 502 || code != "upstream_failed" {
				t.Fatalf("publish during the PartyKit outage: %d %s, want 502", a.status, a.body)
			}
		}
		g.stop()
		directInngest(t, rtURL, rt.channel, "shadow-marker")
		rt.firstIs(t, "shadow-marker")
	})
	t.Run("dual, Inngest down", func(t *testing.T) {
		partyURL := pk.URL(t)
		g := startGW(t, "dual", func(flags string) string {
			return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, deadURL(t), "", ""), "")
		})
		const room = "outage-dual"
		browser := partySocket(t, partyURL, "main", room)
		browser.ready(t, func(id string) { directPartyKit(t, partyURL, room, id) })
		for i := range n {
			a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg(room, fmt.Sprintf("refused-%d", i), `{"n":1}`))
			if code, _ := errorCode(a.body); a.status != 502 || code != "upstream_failed" {
				t.Fatalf("publish during the Inngest outage: %d %s, want 502", a.status, a.body)
			}
		}
		g.stop()
		directPartyKit(t, partyURL, room, "dual-marker")
		browser.firstIs(t, "dual-marker")
	})
}
