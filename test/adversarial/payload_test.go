//go:build unix

package adversarial

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestFinding9PayloadFailuresNotRetried: a body nested beyond the limit is
// refused by the gateway itself; an upstream answer caused by the payload
// (4xx, or the same 5xx answer twice for the same body) is not retried
// again, while outages (503, 502) still are.
func TestFinding9PayloadFailuresNotRetried(t *testing.T) {
	partyURL := pk.URL(t)
	g := startGW(t, "legacy", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, "http://127.0.0.1:1", "", ""), "")
	})
	deep := strings.Repeat("[", 9000) + strings.Repeat("]", 9000)
	a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg("deep-room", "deep-1", deep))
	if code, m := errorCode(a.body); a.status != 400 || code != "invalid_request" || !strings.Contains(m, "body") || !strings.Contains(m, "nested") {
		t.Errorf("body nested 9,000 levels: %d %s, want 400 naming body nesting", a.status, a.body)
	}

	// A PartyKit stand-in answering by status, counting attempts.
	var attempts atomic.Int32
	var answer atomic.Value
	stub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		attempts.Add(1)
		st := answer.Load().(int)
		if st == http.StatusInternalServerError {
			http.Error(w, "SyntaxError: Unexpected token in JSON", st)
			return
		}
		w.WriteHeader(st)
	}))
	t.Cleanup(stub.Close)
	g2 := startGW(t, "legacy", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, stub.URL, "http://127.0.0.1:1", "", ""), "")
	})
	for i, c := range []struct {
		status, attempts int
	}{
		{http.StatusInternalServerError, 2}, // the same answer twice: the payload
		{http.StatusBadRequest, 1},
		{http.StatusUnprocessableEntity, 1},
		{http.StatusNotImplemented, 1},
		{http.StatusServiceUnavailable, 4}, // an outage: every attempt
		{http.StatusBadGateway, 4},
	} {
		answer.Store(c.status)
		attempts.Store(0)
		a := do(t, "POST", g2.pub+"/v1/broadcast", keyA, msg("retry-room", fmt.Sprintf("retry-%d", i), `{"n":1}`))
		if a.status != 502 {
			t.Errorf("upstream %d: gateway answered %d %s, want 502", c.status, a.status, a.body)
		}
		if got := int(attempts.Load()); got != c.attempts {
			t.Errorf("upstream %d: %d attempts, want %d (%s)", c.status, got, c.attempts, a.body)
		}
	}
}

// TestFinding9HeaderLimit: server.maxHeaderBytes is the real limit of the
// request head (request line, header fields and the blank line): a head of
// exactly that size is served, one byte more is 431.
func TestFinding9HeaderLimit(t *testing.T) {
	partyURL := pk.URL(t)
	g := startGW(t, "legacy", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, "http://127.0.0.1:1", "", ""), "")
	})
	limit := g.cfg.Server.MaxHeaderBytes
	body := msg("header-room", "", "1")
	body = strings.Replace(body, `"requestId":"",`, "", 1)
	head := func(size int) string {
		h := "POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + keyA + "\r\n" +
			fmt.Sprintf("Content-Length: %d\r\n", len(body)) + "X-Pad: "
		pad := size - len(h) - len("\r\n\r\n")
		return h + strings.Repeat("p", pad) + "\r\n\r\n"
	}
	for _, c := range []struct {
		size, status int
	}{{limit, 200}, {limit + 1, 431}, {limit + 4096, 431}} {
		rc := dialRaw(t, g.pub)
		h := head(c.size)
		if len(h) != c.size {
			t.Fatalf("head is %d bytes, want %d", len(h), c.size)
		}
		rc.write(t, h+body)
		resp, b, err := rc.readResponse(wait)
		if err != nil {
			t.Errorf("head of %d bytes: %v", c.size, err)
			continue
		}
		if resp.StatusCode != c.status {
			t.Errorf("head of %d bytes (limit %d): %d %s, want %d", c.size, limit, resp.StatusCode, b, c.status)
		}
	}
}
