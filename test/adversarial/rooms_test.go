//go:build unix

package adversarial

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// roomClasses are the character classes room ids may hold (the rule of
// broadcast.ValidateRoom), one room per class.
var roomClasses = []struct{ name, room string }{
	{"letters and digits", "cls-AZaz09"},
	{"unreserved", "cls-._~x"},
	{"sub-delims", "cls-!$&'()*+,;="},
	{"colon and at", "cls-a:b@c"},
	{"dots inside", "cls-.."},
}

// refusedRooms are ids both publish paths refuse with 422, one per
// character the rule leaves out (each is escaped, rewritten or ambiguous
// in some URL parser on the way, so it would not name one room).
var refusedRooms = []string{"a|b", "a[b", "a]b", `a"b`, "a^b", "a`b", "a{b", "a}b", "a<b", "a>b", `a\b`, "a%41b", "a%7Cb", "..", "."}

// TestFinding5RoomIDsOneMapping: for every character class rooms may hold,
// a message published through /v1/broadcast, through the drop-in path and
// directly to PartyKit (the raw path segment, as apps do today) reaches
// the same PartyKit room that a partysocket browser joins, and the realtime
// channel a gateway token subscribes to; ids outside the rule are refused
// with 422 on both paths, and nothing is published.
func TestFinding5RoomIDsOneMapping(t *testing.T) {
	partyURL, rtURL := pk.URL(t), ing.URL(t)
	g := startGW(t, "dual", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, rtURL, "", ""), "")
	})
	for i, c := range roomClasses {
		t.Run(c.name, func(t *testing.T) {
			room := c.room
			// request ids are remembered per app (idempotency): one set
			// per class
			bc, di, direct := fmt.Sprintf("bc-%d", i), fmt.Sprintf("di-%d", i), fmt.Sprintf("direct-%d", i)
			browser := partySocket(t, partyURL, "main", room)
			browser.ready(t, func(id string) { directPartyKit(t, partyURL, room, id) })
			rt := realtimeSocket(t, g, keyA, rtURL, room)
			rt.ready(t, publisher(t, g, keyA, room))
			// the browser saw the realtime probes too (dual: PartyKit off-path)
			drain(browser)

			if a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg(room, bc, `{"via":"broadcast"}`)); a.status != 200 {
				t.Fatalf("/v1/broadcast room %q: %d %s", room, a.status, a.body)
			}
			browser.firstIs(t, bc)
			rt.firstIs(t, bc)
			if st, body := rawPost(t, g.pub, "/apps/ai-hero/party/"+room, fmt.Sprintf(`{"body":{"via":"drop-in"},"requestId":%q,"name":"video.ready"}`, di)); st != 200 {
				t.Fatalf("drop-in room %q: %d %s", room, st, body)
			}
			browser.firstIs(t, di)
			rt.firstIs(t, di)
			directPartyKit(t, partyURL, room, direct)
			browser.firstIs(t, direct)
		})
	}
	t.Run("refused", func(t *testing.T) {
		for _, room := range refusedRooms {
			body := fmt.Sprintf(`{"room":%q,"name":"video.ready","body":1}`, room)
			a := do(t, "POST", g.pub+"/v1/broadcast", keyA, body)
			if code, _ := errorCode(a.body); a.status != http.StatusUnprocessableEntity || code != "invalid_room" {
				t.Errorf("/v1/broadcast room %q: %d %s, want 422 invalid_room", room, a.status, a.body)
			}
			if strings.ContainsAny(room, "\"<>\\`^{}|") {
				// A raw request line with these is refused too (422 from
				// the gateway's rule, or 400 from Go's parser for bytes
				// it does not take); never published.
				if st, b := rawPost(t, g.pub, "/apps/ai-hero/party/"+room, `{"body":1,"requestId":"x","name":"video.ready"}`); st != 422 && st != 400 {
					t.Errorf("drop-in room %q: %d %s, want 422 (or 400)", room, st, b)
				}
				continue
			}
			if st, b := rawPost(t, g.pub, "/apps/ai-hero/party/"+room, `{"body":1,"requestId":"x","name":"video.ready"}`); st != 422 && !(st == http.StatusTemporaryRedirect && (room == "." || room == "..")) {
				// "." and ".." are dot-segments: Go's router redirects to
				// the cleaned path (no handler runs, nothing is published)
				t.Errorf("drop-in room %q: %d %s, want 422", room, st, b)
			}
		}
	})
}

// drain empties s's received frames without waiting.
func drain(s *sub) {
	for {
		select {
		case <-s.frames:
		default:
			return
		}
	}
}

// directPartyKit publishes an envelope straight to PartyKit as an app does
// today: POST /parties/main/{room}, the room written raw in the request
// line.
func directPartyKit(t *testing.T, partyURL, room, id string) {
	t.Helper()
	if st, body := rawPost(t, partyURL, "/parties/main/"+room, fmt.Sprintf(`{"body":{"via":"direct"},"requestId":%q,"name":"video.ready"}`, id)); st != 200 {
		t.Fatalf("direct PartyKit publish to %q: %d %s", room, st, body)
	}
}

// rawPost sends one POST with the path written byte for byte in the
// request line (no client-side escaping) and returns the answer.
func rawPost(t *testing.T, base, path, body string) (int, string) {
	t.Helper()
	rc := dialRaw(t, base)
	rc.write(t, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		path, strings.TrimPrefix(base, "http://"), len(body), body))
	resp, b, err := rc.readResponse(wait)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp.StatusCode, b
}
