//go:build unix

package adversarial

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// publishB returns a probe publisher of app course-builder in room.
func publisher(t *testing.T, g *gw, key, room string) func(id string) {
	return func(id string) {
		if a := do(t, "POST", g.pub+"/v1/broadcast", key, msg(room, id, `{"probe":true}`)); a.status != 200 {
			t.Fatalf("probe: %d %s", a.status, a.body)
		}
	}
}

// TestFinding1ChannelsDoNotCrossApps: two apps on one Inngest environment
// with a room of the same name. With the default channel template a token
// of app B for room shared-1 must not receive app A's message; config
// refuses templates of two apps on one environment that can yield the same
// channel, and accepts what cannot collide.
func TestFinding1ChannelsDoNotCrossApps(t *testing.T) {
	partyURL, rtURL := pk.URL(t), ing.URL(t)
	g := startGW(t, "realtime", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, rtURL, "", "")+
			appYAML("course-builder", keyB, partyURL, rtURL, "", ""), "")
	})
	b := realtimeSocket(t, g, keyB, rtURL, "shared-1")
	b.ready(t, publisher(t, g, keyB, "shared-1"))
	if a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg("shared-1", "a-secret", `{"secret":"ai-hero only"}`)); a.status != 200 {
		t.Fatalf("app A publish: %d %s", a.status, a.body)
	}
	if a := do(t, "POST", g.pub+"/v1/broadcast", keyB, msg("shared-1", "b-marker", `{"marker":true}`)); a.status != 200 {
		t.Fatalf("app B publish: %d %s", a.status, a.body)
	}
	b.firstIs(t, "b-marker")

	// Config: the collision rule.
	two := func(tplA, tplB, urlB, keyEnvB string) error {
		rtA := `channel: "` + tplA + `"`
		rtB := `channel: "` + tplB + `"`
		if keyEnvB != "" {
			rtB += `, signingKey: "signkey-` + keyEnvB + `-00ff"`
		}
		_, err := parseConfig(suiteConfig("/nonexistent/flags.json",
			appYAML("ai-hero", keyA, partyURL, rtURL, "", rtA)+appYAML("course-builder", keyB, partyURL, urlB, "", rtB), ""))
		return err
	}
	refused := []struct{ name, a, b, witness string }{
		{"both {room}", "{room}", "{room}", ""},
		{"prefix of one app is a room of the other", "{app}:{room}", "{room}", "ai-hero:"},
		{"same literal namespace", "video:{room}", "video:{room}", "video:"},
		{"channel placeholder overlaps", "{room}-{channel}", "{room}", ""},
	}
	for _, c := range refused {
		err := two(c.a, c.b, rtURL, "")
		if err == nil {
			t.Errorf("%s: config accepted %q and %q on one realtime environment", c.name, c.a, c.b)
			continue
		}
		if !strings.Contains(err.Error(), "apps.course-builder.realtime.channel") || !strings.Contains(err.Error(), c.witness) {
			t.Errorf("%s: error %q does not name apps.course-builder.realtime.channel and a channel both yield", c.name, err)
		}
	}
	accepted := []struct{ name, a, b, urlB, envB string }{
		{"defaults", "{app}:{party}:{room}", "{app}:{party}:{room}", rtURL, ""},
		{"app namespaces", "{app}:{room}", "{app}:{room}", rtURL, ""},
		{"other realtime URL", "{room}", "{room}", "http://127.0.0.1:1", ""},
		{"other signing key env", "{room}", "{room}", rtURL, "branch"},
	}
	for _, c := range accepted {
		if err := two(c.a, c.b, c.urlB, c.envB); err != nil {
			t.Errorf("%s: config refused %q and %q: %v", c.name, c.a, c.b, err)
		}
	}
	// A single app keeps the old template if it names it (the migration
	// path of docs/configuration.md).
	if _, err := parseConfig(suiteConfig("/nonexistent/flags.json", appYAML("ai-hero", keyA, partyURL, rtURL, "", `channel: "{room}"`), "")); err != nil {
		t.Errorf("single app with {room}: %v", err)
	}
}

// TestFinding4PartiesHaveTheirOwnChannels: the drop-in path addresses a
// declared party only, and each party of a room has its own realtime
// channel; a template without {party} is refused for an app with two
// parties.
func TestFinding4PartiesHaveTheirOwnChannels(t *testing.T) {
	partyURL, rtURL := pk.URL(t), ing.URL(t)
	g := startGW(t, "realtime", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, rtURL, "parties: [chat]", ""), "")
	})
	const room = "party-room-1"
	mainSub := realtimeSocket(t, g, keyA, rtURL, room)
	mainSub.ready(t, publisher(t, g, keyA, room))
	chatChannel := "ai-hero:chat:" + room
	chatSub := realtimeSocketToken(t, rtURL, mintAt(t, rtURL, chatChannel), "inngest "+chatChannel)
	chatSub.ready(t, func(id string) { directInngest(t, rtURL, chatChannel, id) })
	dropIn := func(party, id string) answer {
		return do(t, "POST", g.pub+"/apps/ai-hero/parties/"+party+"/"+room, "",
			fmt.Sprintf(`{"body":{"party":%q},"requestId":%q,"name":"video.ready"}`, party, id))
	}
	if a := dropIn("chat", "chat-1"); a.status != 200 {
		t.Fatalf("drop-in to party chat: %d %s", a.status, a.body)
	}
	if a := dropIn("main", "main-marker"); a.status != 200 {
		t.Fatalf("drop-in to party main: %d %s", a.status, a.body)
	}
	mainSub.firstIs(t, "main-marker")
	chatSub.firstIs(t, "chat-1")

	// A party the app did not declare is 404, as PartyKit answers an
	// unknown party; nothing is published.
	a := dropIn("other", "other-1")
	if code, _ := errorCode(a.body); a.status != http.StatusNotFound || code != "not_found" {
		t.Errorf("undeclared party: %d %s, want 404 not_found", a.status, a.body)
	}

	_, err := parseConfig(suiteConfig("/nonexistent/flags.json",
		appYAML("ai-hero", keyA, partyURL, rtURL, "parties: [chat]", `channel: "{app}:{room}"`), ""))
	if err == nil || !strings.Contains(err.Error(), "apps.ai-hero.realtime.channel") || !strings.Contains(err.Error(), "{party}") {
		t.Errorf("template without {party} for two parties: error %v, want one naming apps.ai-hero.realtime.channel and {party}", err)
	}
}

// mintAt mints a subscription token for channel (topic "video") directly
// at the Inngest dev server (which needs no key).
func mintAt(t *testing.T, rtURL, channel string) string {
	t.Helper()
	a := do(t, "POST", rtURL+"/v1/realtime/token", "", fmt.Sprintf(`[{"channel":%q,"name":"video","kind":"run"}]`, channel))
	var tok struct{ JWT string }
	if err := json.Unmarshal([]byte(a.body), &tok); err != nil || tok.JWT == "" {
		t.Fatalf("mint at Inngest: %d %s", a.status, a.body)
	}
	return tok.JWT
}
