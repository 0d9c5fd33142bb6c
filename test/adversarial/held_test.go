//go:build unix

package adversarial

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchyard/switchyard/config"
)

// served checks that a caller is answered 200 within d, while whatever
// the test does to the gateway goes on.
func served(t *testing.T, g *gw, room, id string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg(room, id, "1"))
	took := time.Since(start)
	if a.status != 200 {
		t.Fatalf("publish %s: %d %s", id, a.status, a.body)
	}
	if took > d {
		t.Errorf("publish %s took %s, over %s", id, took, d)
	}
	return took
}

// TestHeldSlowClients: a head sent a byte at a time is cut at
// server.readHeaderTimeout, a body sent a byte at a time at
// server.readTimeout, and other callers are served meanwhile; nothing of
// the slow requests is published.
func TestHeldSlowClients(t *testing.T) {
	partyURL := pk.URL(t)
	g := startGW(t, "legacy", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, "http://127.0.0.1:1", "", ""), "")
	}, func(c *config.Config) {
		c.Server.ReadHeaderTimeout, c.Server.ReadTimeout = 300*time.Millisecond, 600*time.Millisecond
	})
	browser := partySocket(t, partyURL, "main", "slow-room")
	browser.ready(t, func(id string) { directPartyKit(t, partyURL, "slow-room", id) })

	body := msg("slow-room", "slow-1", "1")
	head := "POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + keyA + "\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))
	trickle := func(rc *rawConn, s string, cut chan<- time.Duration) {
		start := time.Now()
		for i := 0; i < len(s); i++ {
			_ = rc.c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := rc.c.Write([]byte{s[i]}); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, rc.r)
		cut <- time.Since(start)
	}
	const slow = 10
	heads, bodies := make(chan time.Duration, slow), make(chan time.Duration, slow)
	for range slow {
		go trickle(dialRaw(t, g.pub), head, heads)
		rc := dialRaw(t, g.pub)
		rc.write(t, head)
		go trickle(rc, body, bodies)
	}
	// Meanwhile, other callers are served.
	var worst time.Duration
	for i := range 10 {
		worst = max(worst, served(t, g, "other-room", fmt.Sprintf("while-slow-%d", i), time.Second))
	}
	var headCut, bodyCut time.Duration
	for range slow {
		headCut = max(headCut, <-heads)
		bodyCut = max(bodyCut, <-bodies)
	}
	// Cut means before the whole request was sent (50 ms a byte).
	if headCut > 2*time.Second || headCut >= time.Duration(len(head))*50*time.Millisecond {
		t.Errorf("a trickled head was cut after %s, readHeaderTimeout is 300ms", headCut)
	}
	if bodyCut > 3*time.Second || bodyCut >= time.Duration(len(body))*50*time.Millisecond {
		t.Errorf("a trickled body was cut after %s, readTimeout is 600ms", bodyCut)
	}
	t.Logf("%d slow heads cut within %s, %d slow bodies within %s; other callers' worst answer %s",
		slow, headCut.Round(time.Millisecond), slow, bodyCut.Round(time.Millisecond), worst.Round(time.Millisecond))
	served(t, g, "slow-room", "slow-marker", time.Second)
	browser.firstIs(t, "slow-marker")
}

// TestHeldIdleFlood: hundreds of idle connections do not keep other
// callers from being served.
func TestHeldIdleFlood(t *testing.T) {
	partyURL := pk.URL(t)
	g := startGW(t, "legacy", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, "http://127.0.0.1:1", "", ""), "")
	})
	const idle = 500
	addr := strings.TrimPrefix(g.pub, "http://")
	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idle {
		c, err := net.DialTimeout("tcp", addr, wait)
		if err != nil {
			t.Fatalf("idle connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	var worst time.Duration
	for i := range 20 {
		worst = max(worst, served(t, g, "idle-room", fmt.Sprintf("idle-%d", i), time.Second))
	}
	t.Logf("%d idle connections open; 20 callers served, worst %s", idle, worst.Round(time.Millisecond))
}

// TestHeldGrantForgeries: every forged, expired, misdirected or
// oversized room grant is refused at GET /v1/realtime/token, and a good
// one gets a token the real Inngest dev server accepts.
func TestHeldGrantForgeries(t *testing.T) {
	partyURL, rtURL := pk.URL(t), ing.URL(t)
	const secret = "grant-secret-ai-hero-0123456789abcdef"
	g := startGW(t, "realtime", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, rtURL, "", "")+
			"    grantSecret: \""+secret+"\"\n"+
			appYAML("course-builder", keyB, partyURL, rtURL, "", "")+
			"    grantSecret: \"grant-secret-course-builder-0123456789\"\n", "")
	})
	now := time.Now()
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims, hdr map[string]any) string {
		tok := jwt.NewWithClaims(method, claims)
		for k, v := range hdr {
			tok.Header[k] = v
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	claims := func(app string, rooms []string, iat, exp time.Time) jwt.MapClaims {
		return jwt.MapClaims{"app": app, "rooms": rooms, "iat": iat.Unix(), "exp": exp.Unix()}
	}
	good := claims("ai-hero", []string{"grant-room"}, now, now.Add(5*time.Minute))
	none := func() string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, good).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	valid := sign(jwt.SigningMethodHS256, []byte(secret), good, nil)
	parts := strings.Split(valid, ".")
	for _, c := range []struct {
		name, app, room, grant string
		status                 int
	}{
		{"alg none", "ai-hero", "grant-room", none, 401},
		{"HS512", "ai-hero", "grant-room", sign(jwt.SigningMethodHS512, []byte(secret), good, nil), 401},
		{"another secret", "ai-hero", "grant-room", sign(jwt.SigningMethodHS256, []byte("grant-secret-guessed-0123456789abcdef"), good, nil), 401},
		{"the other app's secret", "ai-hero", "grant-room", sign(jwt.SigningMethodHS256, []byte("grant-secret-course-builder-0123456789"), good, nil), 401},
		{"claims swapped in", "ai-hero", "other-room", parts[0] + "." + strings.Split(sign(jwt.SigningMethodHS256, []byte("x"), claims("ai-hero", []string{"other-room"}, now, now.Add(time.Minute)), nil), ".")[1] + "." + parts[2], 401},
		{"expired", "ai-hero", "grant-room", sign(jwt.SigningMethodHS256, []byte(secret), claims("ai-hero", []string{"grant-room"}, now.Add(-10*time.Minute), now.Add(-5*time.Minute)), nil), 401},
		{"lives too long", "ai-hero", "grant-room", sign(jwt.SigningMethodHS256, []byte(secret), claims("ai-hero", []string{"grant-room"}, now, now.Add(time.Hour)), nil), 401},
		{"no iat", "ai-hero", "grant-room", sign(jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"app": "ai-hero", "rooms": []string{"grant-room"}, "exp": now.Add(time.Minute).Unix()}, nil), 401},
		{"typ not JWT", "ai-hero", "grant-room", sign(jwt.SigningMethodHS256, []byte(secret), good, map[string]any{"typ": "at+jwt"}), 401},
		{"oversized", "ai-hero", "grant-room", strings.Repeat("a", 9000), 401},
		{"garbage", "ai-hero", "grant-room", "not.a.jwt", 401},
		{"another room", "ai-hero", "not-granted", valid, 403},
		{"another app", "course-builder", "grant-room", valid, 401},
	} {
		u := g.pub + "/v1/realtime/token?app=" + c.app + "&room=" + c.room
		if a := do(t, "GET", u, c.grant, ""); a.status != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, a.status, a.body, c.status)
		}
	}
	a := do(t, "GET", g.pub+"/v1/realtime/token?app=ai-hero&room=grant-room", valid, "")
	var tok struct{ Key, Channel string }
	if err := json.Unmarshal([]byte(a.body), &tok); a.status != 200 || err != nil || tok.Channel != "ai-hero:main:grant-room" {
		t.Fatalf("a good grant: %d %s", a.status, a.body)
	}
	s := realtimeSocketToken(t, rtURL, tok.Key, "inngest "+tok.Channel)
	s.ready(t, publisher(t, g, keyA, "grant-room"))
}

// delivery is one accepted message: its id, room, sequence in the room
// and the transport that answered it.
type delivery struct {
	id, room string
	seq      int
	answered string
}

// counter counts what one subscriber received, by requestId, and the
// per-room order violations.
type counter struct {
	mu      sync.Mutex
	got     map[string]int
	lastSeq map[string]int
	inverse int
}

func newCounter() *counter { return &counter{got: map[string]int{}, lastSeq: map[string]int{}} }

func (c *counter) consume(s *sub) {
	go func() {
		for f := range s.frames {
			var e struct {
				Body struct {
					Room string `json:"room"`
					Seq  int    `json:"seq"`
				} `json:"body"`
				RequestID string `json:"requestId"`
			}
			if json.Unmarshal(f, &e) != nil || !strings.HasPrefix(e.RequestID, "load-") {
				continue
			}
			c.mu.Lock()
			c.got[e.RequestID]++
			if e.Body.Seq <= c.lastSeq[e.Body.Room] {
				c.inverse++
			}
			c.lastSeq[e.Body.Room] = e.Body.Seq
			c.mu.Unlock()
		}
	}()
}

func (c *counter) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[id]
}

// load publishes to rooms, one sender per room, until stop is closed, and
// returns the messages answered 200.
func load(t *testing.T, g *gw, rooms []string, stop <-chan struct{}) func() []delivery {
	var mu sync.Mutex
	var out []delivery
	var wg sync.WaitGroup
	for _, room := range rooms {
		wg.Go(func() {
			for seq := 1; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("load-%s-%d", room, seq)
				a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg(room, id, fmt.Sprintf(`{"room":%q,"seq":%d}`, room, seq)))
				if a.status != 200 {
					continue
				}
				var ans struct{ Stage string }
				_ = json.Unmarshal([]byte(a.body), &ans)
				answered := "legacy"
				if ans.Stage == "dual" || ans.Stage == "realtime" {
					answered = "realtime"
				}
				mu.Lock()
				out = append(out, delivery{id, room, seq, answered})
				mu.Unlock()
			}
		})
	}
	return func() []delivery {
		wg.Wait()
		return out
	}
}

// TestHeldFlagFileCorruptionUnderLoad: while messages flow, the flag file
// is truncated, emptied, made invalid JSON and schema-invalid, deleted and
// replaced by a directory: the last good flags stay in force. Valid edits
// flip the stage under load. Every message answered 200 reaches the
// subscriber of the transport that answered it exactly once, in order.
func TestHeldFlagFileCorruptionUnderLoad(t *testing.T) {
	partyURL, rtURL := pk.URL(t), ing.URL(t)
	g := startGW(t, "dual", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, rtURL, "", ""), "")
	})
	rooms := []string{"flags-a", "flags-b", "flags-c"}
	legacy, rt := newCounter(), newCounter()
	for _, room := range rooms {
		b := partySocket(t, partyURL, "main", room)
		b.ready(t, func(id string) { directPartyKit(t, partyURL, room, id) })
		legacy.consume(b)
		channel := "ai-hero:main:" + room
		s := realtimeSocketToken(t, rtURL, mintAt(t, rtURL, channel), "inngest "+channel)
		s.ready(t, func(id string) { directInngest(t, rtURL, channel, id) })
		rt.consume(s)
	}
	stage := func() string {
		a := do(t, "GET", g.adm+"/v1/admin/routes?app=ai-hero&room=flags-a&event=video.ready", "", "")
		var r struct{ Route struct{ Stage string } }
		_ = json.Unmarshal([]byte(a.body), &r)
		return r.Route.Stage
	}
	write := func(content string) {
		t.Helper()
		if err := writeFileAtomic(g.flags, content); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	results := load(t, g, rooms, stop)
	steady := func(want string) {
		t.Helper()
		// The watcher polls every 100ms: three polls later the stage is
		// still the last good one.
		deadline := time.Now().Add(400 * time.Millisecond)
		for time.Now().Before(deadline) {
			if got := stage(); got != want {
				t.Fatalf("stage %q after a corrupt flag file, want the last good %q", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	flip := func(to string) {
		t.Helper()
		write(flagFile(to))
		eventually(t, wait, "flip to "+to, func() bool { return stage() == to })
	}
	corruptions := []struct {
		name string
		do   func()
	}{
		{"truncated", func() { write(flagFile("legacy")[:40]) }},
		{"empty", func() { write("") }},
		{"not JSON", func() { write("{flags: nope") }},
		{"schema-invalid", func() { write(`{"flags":{"realtime-video":{"state":"MAYBE","variants":1}}}`) }},
		{"deleted", func() { mustRemove(t, g.flags) }},
		{"a directory", func() { mustRemove(t, g.flags); mustMkdir(t, g.flags) }},
	}
	current := "dual"
	for i, c := range corruptions {
		c.do()
		steady(current)
		t.Logf("%s flag file: stage stays %s", c.name, current)
		if c.name == "a directory" {
			mustRemove(t, g.flags)
		}
		current = []string{"shadow", "realtime", "dual"}[i%3]
		flip(current)
	}
	close(stop)
	accepted := results()
	dups := 0
	for _, d := range accepted {
		c := legacy
		if d.answered == "realtime" {
			c = rt
		}
		eventually(t, wait, "delivery of "+d.id, func() bool { return c.count(d.id) >= 1 })
		if n := c.count(d.id); n > 1 {
			dups++
		}
	}
	// Every accepted message arrived: the wait above fails the test
	// otherwise.
	t.Logf("%d messages accepted under load across %d corruptions and %d flips: 0 lost, %d duplicated, inversions %d (PartyKit) %d (Inngest)",
		len(accepted), len(corruptions), len(corruptions), dups, legacy.inverse, rt.inverse)
	if dups != 0 || legacy.inverse != 0 || rt.inverse != 0 {
		t.Errorf("duplicates %d, inversions %d/%d; want none", dups, legacy.inverse, rt.inverse)
	}
	if len(accepted) < 50 {
		t.Errorf("only %d messages accepted: the load proves little", len(accepted))
	}
}

// TestHeldUpstreamCrashAndRestart: the answering upstream crashes under
// load (a PartyKit dev server at legacy, an Inngest dev server at
// realtime, each killed and restarted on its port): no message is
// answered 200 while it is down (0 false 200s), every 200 reaches a
// subscriber counting deliveries, and the gateway recovers as soon as the
// upstream listens again.
func TestHeldUpstreamCrashAndRestart(t *testing.T) {
	for _, tr := range []string{"partykit", "inngest"} {
		t.Run(tr, func(t *testing.T) { crashAndRestart(t, tr) })
	}
}

func crashAndRestart(t *testing.T, tr string) {
	up := launchOwn(t, tr)
	stage, partyURL, rtURL := "legacy", up.url(), "http://127.0.0.1:1"
	if tr == "inngest" {
		stage, partyURL, rtURL = "realtime", pk.URL(t), up.url()
	}
	g := startGW(t, stage, func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, rtURL, "", ""), "")
	})
	const room = "crash-room"
	subscribe := func() *counter {
		c := newCounter()
		var s *sub
		if tr == "partykit" {
			s = partySocket(t, up.url(), "main", room)
			s.ready(t, func(id string) { directPartyKit(t, up.url(), room, id) })
		} else {
			channel := "ai-hero:main:" + room
			s = realtimeSocketToken(t, up.url(), mintAt(t, up.url(), channel), "inngest "+channel)
			s.ready(t, func(id string) { directInngest(t, up.url(), channel, id) })
		}
		c.consume(s)
		return c
	}
	send := func(from, n int) (ok, failed []string) {
		for i := from; i < from+n; i++ {
			id := fmt.Sprintf("load-%s-%d", tr, i)
			a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg(room, id, fmt.Sprintf(`{"room":%q,"seq":%d}`, room, i)))
			switch a.status {
			case 200:
				ok = append(ok, id)
			case 502:
				failed = append(failed, id)
			default:
				t.Fatalf("publish %s: %d %s", id, a.status, a.body)
			}
		}
		return ok, failed
	}
	before := subscribe()
	ok, _ := send(1, 20)
	// Delivery is asynchronous on Inngest's side (the publish answers
	// before the fan-out): count the deliveries before the crash.
	for _, id := range ok {
		eventually(t, wait, "delivery of "+id, func() bool { return before.count(id) == 1 })
	}
	up.kill()
	down, failed := send(100, 30)
	restarted := up.restart(t)
	var recovery time.Duration
	eventually(t, wait, "first 200 after the restart", func() bool {
		a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg("probe-room", fmt.Sprintf("recovery-%d", time.Now().UnixNano()), "1"))
		recovery = time.Since(restarted)
		return a.status == 200
	})
	after := subscribe()
	ok2, _ := send(200, 20)
	for _, id := range ok2 {
		eventually(t, wait, "delivery of "+id, func() bool { return after.count(id) == 1 })
	}
	if len(down) != 0 {
		t.Errorf("%d messages answered 200 while %s was down (%v)", len(down), tr, down)
	}
	if len(ok) != 20 || len(ok2) != 20 {
		t.Errorf("answered 200: %d before, %d after the restart; want 20 and 20", len(ok), len(ok2))
	}
	t.Logf("%s crash: %d answers 502 while down, 0 false 200s; recovery %s after it listened again; %d+%d deliveries counted",
		tr, len(failed), recovery.Round(time.Millisecond), len(ok), len(ok2))
}

// ownUpstream is a dev server this test owns, to kill and restart.
type ownUpstream struct {
	kind    string
	port    int
	base    string
	closeFn func()
}

func (u *ownUpstream) url() string { return u.base }

func launchOwn(t *testing.T, kind string) *ownUpstream {
	t.Helper()
	u := &ownUpstream{kind: kind}
	u.start(t, 0)
	t.Cleanup(func() { u.kill() })
	return u
}

func (u *ownUpstream) kill() {
	if u.closeFn != nil {
		u.closeFn()
		u.closeFn = nil
	}
}

// restart starts the server again on its port and returns when it
// listens (the moment recovery is measured from).
func (u *ownUpstream) restart(t *testing.T) time.Time {
	t.Helper()
	u.start(t, u.port)
	return time.Now()
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := removeAll(path); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t *testing.T, path string) {
	t.Helper()
	if err := mkdir(path); err != nil {
		t.Fatal(err)
	}
}
