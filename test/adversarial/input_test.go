//go:build unix

package adversarial

import (
	"net/http"
	"strings"
	"testing"
)

// TestFinding2InvalidUTF8Refused: text is valid UTF-8 or refused, on every
// field of both publish paths and the token path: 400 naming the field,
// and nothing reaches a PartyKit or an Inngest subscriber.
func TestFinding2InvalidUTF8Refused(t *testing.T) {
	partyURL, rtURL := pk.URL(t), ing.URL(t)
	g := startGW(t, "dual", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, rtURL, "", ""), "")
	})
	const room = "utf8-room"
	browser := partySocket(t, partyURL, "main", room)
	browser.ready(t, func(id string) { directPartyKit(t, partyURL, room, id) })
	rt := realtimeSocket(t, g, keyA, rtURL, room)
	rt.ready(t, publisher(t, g, keyA, room))
	drain(browser)

	cases := []struct {
		name, path, auth, body, field string
	}{
		{"body string", "/v1/broadcast", keyA, `{"room":"utf8-room","name":"video.ready","requestId":"u1","body":{"title":"caf` + "\xe9" + `"}}`, "body.title"},
		{"body top-level string", "/v1/broadcast", keyA, `{"room":"utf8-room","name":"video.ready","requestId":"u2","body":"` + "\xff\xfe" + `"}`, "body"},
		{"body key", "/v1/broadcast", keyA, `{"room":"utf8-room","name":"video.ready","requestId":"u3","body":{"k` + "\xc3" + `":1}}`, "body"},
		{"name", "/v1/broadcast", keyA, `{"room":"utf8-room","name":"video.ready` + "\xff" + `","requestId":"u4","body":1}`, "name"},
		{"requestId", "/v1/broadcast", keyA, `{"room":"utf8-room","name":"video.ready","requestId":"u5` + "\xc3\x28" + `","body":1}`, "requestId"},
		{"room", "/v1/broadcast", keyA, `{"room":"utf8-room` + "\xe9" + `","name":"video.ready","requestId":"u6","body":1}`, "room"},
		{"field name", "/v1/broadcast", keyA, `{"room":"utf8-room","name":"video.ready","requestId":"u7","body":1,"x` + "\xff" + `":1}`, "field name"},
		{"batch item", "/v1/broadcasts", keyA, `{"messages":[{"room":"utf8-room","name":"video.ready","requestId":"u8","body":1},{"room":"utf8-room","name":"video.ready","requestId":"u9","body":["` + "\xed\xa0\x80" + `"]}]}`, "messages[1].body[0]"},
		{"drop-in body", "/apps/ai-hero/party/utf8-room", "", `{"body":"caf` + "\xe9" + `","requestId":"d1","name":"video.ready"}`, "body"},
		{"drop-in name", "/apps/ai-hero/party/utf8-room", "", `{"body":1,"requestId":"d2","name":"video` + "\x80" + `"}`, "name"},
		{"drop-in requestId", "/apps/ai-hero/party/utf8-room", "", `{"body":1,"requestId":"d3` + "\xf8\x88\x80\x80\x80" + `","name":"video.ready"}`, "requestId"},
		{"token room", "/v1/realtime/token", keyA, `{"room":"utf8-room` + "\xe9" + `"}`, "room"},
		{"token topic", "/v1/realtime/token", keyA, `{"room":"utf8-room","topics":["vid` + "\xe9" + `"]}`, "topics[0]"},
	}
	for _, c := range cases {
		a := do(t, "POST", g.pub+c.path, c.auth, c.body)
		code, message := errorCode(a.body)
		if a.status != http.StatusBadRequest || code != "invalid_request" || !strings.Contains(message, c.field) || !strings.Contains(message, "UTF-8") {
			t.Errorf("%s: %d %s, want 400 invalid_request naming %s and UTF-8", c.name, a.status, a.body, c.field)
		}
	}
	if a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg(room, "utf8-marker", `{"ok":"café"}`)); a.status != 200 {
		t.Fatalf("marker: %d %s", a.status, a.body)
	}
	rt.firstIs(t, "utf8-marker")
	browser.firstIs(t, "utf8-marker")
}
