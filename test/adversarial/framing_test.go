//go:build unix

package adversarial

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// hidden is a request smuggled in the body of another: a drop-in publish
// that, if the gateway parsed it, would reach the PartyKit room smuggled.
func hidden(id string) string {
	body := fmt.Sprintf(`{"body":{"smuggled":true},"requestId":%q,"name":"video.ready"}`, id)
	return fmt.Sprintf("POST /apps/ai-hero/party/smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// framingAttacks are requests whose framing is ambiguous or conflicting,
// each followed on the same connection by a hidden request.
func framingAttacks() []struct{ name, req string } {
	h := hidden("smuggled-1")
	chunkedEnd := "0\r\n\r\n"
	start := "POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + keyA + "\r\n"
	return []struct{ name, req string }{
		{"Content-Length then Transfer-Encoding (CL.TE)",
			start + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n", len(chunkedEnd+h)) + chunkedEnd + h},
		{"Transfer-Encoding then Content-Length (TE.CL)",
			start + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n", len(h), h) + chunkedEnd},
		{"two equal Content-Length",
			start + "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}" + h},
		{"two different Content-Length",
			start + fmt.Sprintf("Content-Length: 2\r\nContent-Length: %d\r\n\r\n{}", 2+len(h)) + h},
		{"Content-Length list",
			start + "Content-Length: 2, 2\r\n\r\n{}" + h},
		{"two Transfer-Encoding",
			start + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedEnd + h},
		{"Transfer-Encoding other than chunked",
			start + "Transfer-Encoding: gzip, chunked\r\n\r\n" + chunkedEnd + h},
		{"Transfer-Encoding on HTTP/1.0",
			strings.Replace(start, "HTTP/1.1", "HTTP/1.0", 1) + fmt.Sprintf("Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n", len(chunkedEnd+h)) + chunkedEnd + h},
		{"folded Transfer-Encoding",
			start + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", len(chunkedEnd+h)) + chunkedEnd + h},
		{"space before the colon",
			start + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding : chunked\r\n\r\n", len(chunkedEnd+h)) + chunkedEnd + h},
		{"bare LF line ends",
			strings.ReplaceAll(start, "\r\n", "\n") + "Content-Length: 2\n\n{}" + h},
		{"signed Content-Length",
			start + "Content-Length: +2\r\n\r\n{}" + h},
	}
}

// TestFinding3FramingRefused: every request with ambiguous or conflicting
// framing is answered 400 and its connection closed; the request hidden
// behind it on the same connection is never read, so nothing reaches the
// PartyKit room it targets.
func TestFinding3FramingRefused(t *testing.T) {
	partyURL := pk.URL(t)
	g := startGW(t, "legacy", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, "http://127.0.0.1:1", "", ""), "")
	})
	browser := partySocket(t, partyURL, "main", "smuggled")
	browser.ready(t, func(id string) { directPartyKit(t, partyURL, "smuggled", id) })
	for _, c := range framingAttacks() {
		rc := dialRaw(t, g.pub)
		rc.write(t, c.req)
		resp, body, err := rc.readResponse(wait)
		if err != nil {
			t.Errorf("%s: no answer: %v", c.name, err)
			continue
		}
		if code, _ := errorCode(body); resp.StatusCode != 400 || code != "invalid_request" || !resp.Close {
			t.Errorf("%s: %d (Connection: close %v) %s, want 400 invalid_request and Connection: close", c.name, resp.StatusCode, resp.Close, body)
		}
		if closed, got := rc.closedByPeer(2 * time.Second); !closed {
			t.Errorf("%s: the connection stayed open after the refusal: %q", c.name, got)
		}
	}
	// The hidden requests were not read: the room's first frame is the
	// marker sent now.
	if st, body := rawPost(t, g.pub, "/apps/ai-hero/party/smuggled", `{"body":1,"requestId":"framing-marker","name":"video.ready"}`); st != 200 {
		t.Fatalf("marker: %d %s", st, body)
	}
	browser.firstIs(t, "framing-marker")
}

// TestHeldFramingPlainRequests: what the framing guard must keep serving:
// pipelined requests with one Content-Length each, a chunked body (with a
// chunk extension and a trailer), and Expect: 100-continue, all on one
// connection.
func TestHeldFramingPlainRequests(t *testing.T) {
	partyURL := pk.URL(t)
	g := startGW(t, "legacy", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, "http://127.0.0.1:1", "", ""), "")
	})
	b1 := msg("plain-room", "plain-1", "1")
	b2 := msg("plain-room", "plain-2", "2")
	b3 := msg("plain-room", "plain-3", "3")
	start := "POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + keyA + "\r\n"
	rc := dialRaw(t, g.pub)
	rc.write(t, start+fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(b1), b1)+
		start+fmt.Sprintf("Transfer-Encoding: chunked\r\n\r\n%x;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n", len(b2), b2))
	for i := 1; i <= 2; i++ {
		resp, body, err := rc.readResponse(wait)
		if err != nil || resp.StatusCode != 200 || resp.Close {
			t.Fatalf("pipelined request %d: %v %v %s", i, err, resp, body)
		}
	}
	rc.write(t, start+fmt.Sprintf("Expect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(b3)))
	resp, _, err := rc.readResponse(wait)
	if err != nil || resp.StatusCode != 100 {
		t.Fatalf("Expect: 100-continue: %v %v", err, resp)
	}
	rc.write(t, b3)
	resp, body, err := rc.readResponse(wait)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after 100-continue: %v %v %s", err, resp, body)
	}
}
