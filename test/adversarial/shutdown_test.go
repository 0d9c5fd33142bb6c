//go:build unix

package adversarial

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestFinding7ShutdownDrainsPolitely: on shutdown readyz turns 503 at
// once, the public listener keeps serving for shutdown.delay (a load
// balancer still sending is answered, not refused), then stops accepting;
// a request that still arrives on an open connection gets 503 draining.
func TestFinding7ShutdownDrainsPolitely(t *testing.T) {
	partyURL := pk.URL(t)
	const delay = time.Second
	g := startGW(t, "legacy", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, "http://127.0.0.1:1", "", ""), "shutdown: {delay: 1s}\n")
	})
	// A connection opened before the shutdown that sends its request only
	// after the listener closed (a keep-alive connection of a client that
	// has not noticed).
	late := dialRaw(t, g.pub)

	start := time.Now()
	g.cancel()
	eventually(t, delay/2, "readyz 503", func() bool { return status(t, "GET", g.adm+"/readyz", "", "") == 503 })
	t.Logf("readyz 503 after %s", time.Since(start).Round(time.Millisecond))

	// During the delay a new caller is served.
	a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg("shutdown-room", "during-delay", "1"))
	if a.status != 200 {
		t.Fatalf("publish during shutdown.delay: %d %s, want 200", a.status, a.body)
	}
	if elapsed := time.Since(start); elapsed >= delay {
		t.Fatalf("the request during the delay took until %s, past the delay: the check proves nothing", elapsed)
	}
	// Then the listener stops accepting, not before the delay.
	addr := strings.TrimPrefix(g.pub, "http://")
	eventually(t, wait, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if closed := time.Since(start); closed < delay {
		t.Errorf("the listener closed %s after the shutdown began, before shutdown.delay %s", closed, delay)
	}
	// A request arriving now on the open connection: 503 draining, closed.
	late.write(t, "POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+keyA+"\r\nContent-Length: 1\r\n\r\n{")
	resp, body, err := late.readResponse(wait)
	if err != nil {
		t.Fatalf("late request: no answer: %v", err)
	}
	if code, _ := errorCode(body); resp.StatusCode != http.StatusServiceUnavailable || code != "draining" || !resp.Close {
		t.Errorf("late request: %d %s (close %v), want 503 draining with Connection: close", resp.StatusCode, body, resp.Close)
	}
	select {
	case <-g.stopped:
	case <-time.After(wait):
		t.Fatal("gateway did not stop")
	}
}
