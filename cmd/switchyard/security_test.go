package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/gateway"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

// Every kind of secret a config can hold, each distinct and recognisable.
const (
	secKeyPrimary   = "sy-aihero-primary-key-7f3a9c01d2"
	secKeyNext      = "sy-aihero-rotation-key-5b8e2d44a1"  // second apiKeys slot
	secKeyHashed    = "sy-aihero-hashed-only-key-c0ffee99" // configured as apiKeySha256 only
	secKeyOther     = "sy-other-app-key-90d1e2f3a4b5c6"
	secDropIn       = "sy-dropin-secret-4e5f6a7b8c9d0e"
	secPartySecret  = "sy-party-secret-1a2b3c4d5e6f70"
	secSignPrimary  = "signkey-test-0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	secSignFallback = "signkey-test-a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	secGrant        = "sy-grant-secret-aihero-6d7e8f9a0b1c2d3e4f"
	secGrantOther   = "sy-grant-secret-other-1f2e3d4c5b6a79880a"
	secAdmin        = "sy-admin-token-8c7b6a5d4e3f2a1b"
	secOrigin       = "https://www.aihero.dev"
)

// secEnv is the environment the config's ${VAR}s are read from.
var secEnv = map[string]string{
	"AI_HERO_KEY": secKeyPrimary, "AI_HERO_NEXT_KEY": secKeyNext, "OTHER_KEY": secKeyOther,
	"AI_HERO_DROPIN": secDropIn, "PARTY_SECRET": secPartySecret,
	"INNGEST_SIGNING_KEY": secSignPrimary, "INNGEST_SIGNING_KEY_FALLBACK": secSignFallback,
	"AI_HERO_GRANT_SECRET": secGrant, "OTHER_GRANT_SECRET": secGrantOther, "SWITCHYARD_ADMIN_TOKEN": secAdmin,
}

func secGetenv(k string) string { return secEnv[k] }

// secFlags: video-ready at shadow, ai-stream at dual, everything else at
// realtime; room "legacy-room" has every channel at legacy.
const secFlags = `{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "realtime-killswitch": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"},
    "realtime-video-ready": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "shadow",
      "targeting": {"if": [{"in": [{"var": "targetingKey"}, ["legacy-room"]]}, "legacy", "shadow"]}},
    "realtime-ai-stream": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "dual",
      "targeting": {"if": [{"in": [{"var": "targetingKey"}, ["legacy-room"]]}, "legacy", "dual"]}},
    "realtime-default": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "realtime",
      "targeting": {"if": [{"in": [{"var": "targetingKey"}, ["legacy-room"]]}, "legacy", "realtime"]}}
  }
}
`

// secGateway is a whole gateway, built as demo.go builds one, with every
// kind of secret configured, in front of test PartyKit and Realtime
// servers that demand their secrets.
type secGateway struct {
	g       *gateway.Gateway
	cfg     *config.Config
	party   *partytest.Server
	rt      *realtimetest.Server
	logs    *syncBuffer
	cfgPath string
	pub     string // public base URL
	adm     string // admin base URL
	stop    func()
}

func startSecGateway(t *testing.T) *secGateway {
	t.Helper()
	party := partytest.New(partytest.WithSecret("X-Party-Secret", secPartySecret)).Start()
	t.Cleanup(party.Close)
	// The realtime server knows only the fallback key: every call first
	// tries the primary (refused 401), then the fallback.
	rt := realtimetest.NewServer(realtimetest.Config{SigningKey: secSignFallback, PingInterval: 15 * time.Second})
	t.Cleanup(rt.Close)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "flags.json"), []byte(secFlags), 0o600); err != nil {
		t.Fatal(err)
	}
	hashed := sha256.Sum256([]byte(secKeyHashed))
	yml := fmt.Sprintf(`
env: staging
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: "${SWITCHYARD_ADMIN_TOKEN}"}
log: {level: debug, format: json}
flags: {provider: file, file: flags.json, pollInterval: 200ms}
channels:
  - {name: video-ready, events: [video.asset.ready, video.asset.errored]}
  - {name: ai-stream, events: [ai.message]}
apps:
  ai-hero:
    apiKeys: ["${AI_HERO_KEY}", "${AI_HERO_NEXT_KEY}", "${AI_HERO_SPARE_KEY:-}"]
    apiKeySha256: [%q]
    dropIn: {secret: "${AI_HERO_DROPIN}"}
    party: {url: %q, party: main, secret: "${PARTY_SECRET}"}
    realtime: {url: %q, signingKey: "${INNGEST_SIGNING_KEY}", fallbackSigningKey: "${INNGEST_SIGNING_KEY_FALLBACK}", channel: "{app}:{room}"}
    grantSecret: "${AI_HERO_GRANT_SECRET}"
    origins: [%q]
  other:
    apiKeys: ["${OTHER_KEY}"]
    party: {url: %q, party: main, secret: "${PARTY_SECRET}"}
    realtime: {url: %q, signingKey: "${INNGEST_SIGNING_KEY_FALLBACK}"}
    grantSecret: "${OTHER_GRANT_SECRET}"
shadow: {sampleRate: 1.0, timeout: 1s}
upstream: {maxAttempts: 2, backoffBase: 5ms, backoffMax: 10ms, timeout: 2s, attemptTimeout: 1s}
server: {shutdownTimeout: 5s}
`, hex.EncodeToString(hashed[:]), party.URL(), rt.URL(), secOrigin, party.URL(), rt.URL())
	path := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, secGetenv)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	logger, err := gateway.NewLogger(config.Log{Level: "debug", Format: "json"}, logs)
	if err != nil {
		t.Fatal(err)
	}
	g, stop := runGateway(t, cfg, logger)
	sg := &secGateway{g: g, cfg: cfg, party: party, rt: rt, logs: logs, cfgPath: path, pub: g.PublicURL(), adm: g.AdminURL(), stop: stop}
	return sg
}

type secAnswer struct {
	status int
	header http.Header
	body   string
}

func secDo(t *testing.T, method, url, auth, body string, hdr ...string) secAnswer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return secAnswer{resp.StatusCode, resp.Header, string(b)}
}

// secOversizeHead sends a POST whose X-Padding header is pad over a raw
// connection and returns the status the server answered. The server answers
// 431 and hangs up before the head is all sent, so the head is written from
// a goroutine (its write error, a reset, is expected and ignored) while the
// answer is read; an HTTP client would report the reset of its write instead
// of the answer that came before it.
func secOversizeHead(rawURL, auth, body, pad string) (int, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nX-Padding: %s\r\n\r\n%s",
		u.RequestURI(), u.Host, auth, len(body), pad, body)
	go func() { _, _ = io.WriteString(conn, head) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, fmt.Errorf("read the answer: %w", err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

func secWait(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// secMetric returns the value of the unlabelled metric name from the
// admin listener's /metrics ("" when absent).
func secMetric(t *testing.T, adm, name string) string {
	t.Helper()
	a := secDo(t, "GET", adm+"/metrics", "Bearer "+secAdmin, "")
	if a.status != http.StatusOK {
		t.Fatalf("/metrics: status %d", a.status)
	}
	for _, l := range strings.Split(a.body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func secGrantFor(t *testing.T, secret, app string, rooms []string, iat time.Time, life time.Duration) string {
	t.Helper()
	g, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"app": app, "rooms": rooms, "iat": iat.Unix(), "exp": iat.Add(life).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func secTokenURL(base, app, room string) string {
	return base + "/v1/realtime/token?" + url.Values{"app": {app}, "room": {room}}.Encode()
}

// secNeedles returns what must never appear in logs or output: every
// configured secret, the hex part of each signing key, the hashed (bearer)
// form of each signing key, and every JWT (whole, and its signature).
func secNeedles(t *testing.T, jwts []string) map[string]string {
	t.Helper()
	n := map[string]string{}
	for name, v := range secEnv {
		n[v] = name
	}
	n[secKeyHashed] = "hashed-only API key"
	for _, k := range []string{secSignPrimary, secSignFallback} {
		h, err := realtime.HashSigningKey(k)
		if err != nil {
			t.Fatal(err)
		}
		n[h] = "hashed signing key"
		n[h[strings.LastIndexByte(h, '-')+1:]] = "hex of a hashed signing key"
		n[k[strings.LastIndexByte(k, '-')+1:]] = "hex of a signing key"
	}
	for _, j := range jwts {
		n[j] = "a JWT"
		if i := strings.LastIndexByte(j, '.'); i >= 0 && len(j)-i > 16 {
			n[j[i+1:]] = "a JWT signature"
		}
	}
	return n
}

// secLeaks lists which needles occur in text.
func secLeaks(text string, needles map[string]string) []string {
	var out []string
	for v, what := range needles {
		if v != "" && strings.Contains(text, v) {
			out = append(out, what)
		}
	}
	slices.Sort(out)
	return out
}

// TestSecurityNoSecretInLogsOrOutput runs a gateway with every kind of
// secret, drives every endpoint through successes and failures (wrong
// keys, bad grants, upstream 5xx, token minting, reconnects), runs
// `config check`, and finds no secret, hashed signing key, grant or token
// in any log line or output.
func TestSecurityNoSecretInLogsOrOutput(t *testing.T) {
	sg := startSecGateway(t)
	now := time.Now()
	var jwts []string   // every grant and token seen
	var bodies []string // every non-token answer
	keep := func(a secAnswer) secAnswer {
		if !strings.Contains(a.body, `"key"`) {
			bodies = append(bodies, a.body)
		}
		return a
	}
	expect := func(what string, a secAnswer, status int) {
		t.Helper()
		if a.status != status {
			t.Fatalf("%s: status %d, want %d (%s)", what, a.status, status, a.body)
		}
	}
	pub, adm := sg.pub, sg.adm
	msg := func(room, name, id string) string {
		return fmt.Sprintf(`{"room":%q,"name":%q,"requestId":%q,"body":{"id":%q,"n":1}}`, room, name, id, id)
	}

	// 1. Every secret works where it belongs (so the test can fail).
	for i, k := range []string{secKeyPrimary, secKeyNext, secKeyHashed, secKeyOther} {
		expect("publish with key "+fmt.Sprint(i), keep(secDo(t, "POST", pub+"/v1/broadcast", "Bearer "+k, msg("video-1", "video.asset.ready", fmt.Sprint("ok-", i)))), 200)
	}
	expect("batch", keep(secDo(t, "POST", pub+"/v1/broadcasts", "Bearer "+secKeyPrimary,
		`{"messages":[`+msg("chat-1", "ai.message", "b-1")+`,`+msg("chat-1", "image.resource.created", "b-2")+`]}`)), 200)
	expect("drop-in", keep(secDo(t, "POST", pub+"/apps/ai-hero/party/video-1", "", `{"body":{"id":"d"},"requestId":"d-1","name":"video.asset.ready"}`, "X-Switchyard-Secret", secDropIn)), 200)
	a := secDo(t, "POST", pub+"/v1/realtime/token", "Bearer "+secKeyPrimary, `{"room":"video-1"}`)
	expect("server token", a, 200)
	var tok broadcast.Token
	if err := json.Unmarshal([]byte(a.body), &tok); err != nil || tok.Key == "" {
		t.Fatalf("token answer %s: %v", a.body, err)
	}
	jwts = append(jwts, tok.Key)
	g := secGrantFor(t, secGrant, "ai-hero", []string{"video-1", "chat-1"}, now, 5*time.Minute)
	jwts = append(jwts, g)
	a = secDo(t, "GET", secTokenURL(pub, "ai-hero", "chat-1"), "Bearer "+g, "", "Origin", secOrigin)
	expect("grant token", a, 200)
	if a.header.Get("Access-Control-Allow-Origin") != secOrigin {
		t.Errorf("ACAO = %q", a.header.Get("Access-Control-Allow-Origin"))
	}
	_ = json.Unmarshal([]byte(a.body), &tok)
	jwts = append(jwts, tok.Key)
	gOther := secGrantFor(t, secGrantOther, "other", []string{"video-1"}, now, time.Minute)
	jwts = append(jwts, gOther)
	expect("other app's grant", secDo(t, "GET", secTokenURL(pub, "other", "video-1"), "Bearer "+gOther, ""), 200)
	for _, p := range []string{"/metrics", "/v1/admin/routes?app=ai-hero&room=video-1&event=ai.message", "/v1/admin/shadow/summary", "/v1/admin/shadow/mismatches", "/"} {
		expect("admin "+p, keep(secDo(t, "GET", adm+p, "Bearer "+secAdmin, "")), 200)
	}

	// 2. Secrets in the wrong places, bad grants, bad requests.
	bad := []string{
		secGrantFor(t, secGrant, "ai-hero", []string{"video-1"}, now.Add(-time.Hour), time.Minute),                                                                    // expired
		secGrantFor(t, secGrant, "ai-hero", []string{"video-1"}, now.Add(10*time.Minute), time.Minute),                                                                // future
		secGrantFor(t, secGrant, "ai-hero", []string{"video-1"}, now, time.Hour),                                                                                      // too long
		secGrantFor(t, secGrantOther, "ai-hero", []string{"video-1"}, now, time.Minute),                                                                               // wrong secret
		secGrantFor(t, secGrant, "ai-hero", []string{"video-9"}, now, time.Minute),                                                                                    // other room
		secGrantFor(t, secGrant, "other", []string{"video-1"}, now, time.Minute),                                                                                      // other app
		strings.Replace(secGrantFor(t, secGrant, "ai-hero", []string{"video-1"}, now, time.Minute), "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", "eyJhbGciOiJub25lIn0", 1), // alg none
	}
	jwts = append(jwts, bad...)
	for _, b := range bad {
		a := keep(secDo(t, "GET", secTokenURL(pub, "ai-hero", "video-1"), "Bearer "+b, ""))
		if a.status != 401 && a.status != 403 {
			t.Errorf("bad grant answered %d %s", a.status, a.body)
		}
	}
	for _, k := range []string{secKeyPrimary, secAdmin, secDropIn, secSignPrimary} {
		expect("secret as grant", keep(secDo(t, "GET", secTokenURL(pub, "ai-hero", "video-1"), "Bearer "+k, "")), 401)
	}
	expect("disallowed origin", keep(secDo(t, "GET", secTokenURL(pub, "ai-hero", "video-1"), "Bearer "+g, "", "Origin", "https://evil.example")), 403)
	expect("preflight refused", keep(secDo(t, "OPTIONS", secTokenURL(pub, "ai-hero", "video-1"), "", "", "Origin", "https://evil.example")), 403)
	expect("preflight", keep(secDo(t, "OPTIONS", secTokenURL(pub, "ai-hero", "video-1"), "", "", "Origin", secOrigin)), 204)
	legacyGrant := secGrantFor(t, secGrant, "ai-hero", []string{"legacy-room"}, now, time.Minute)
	jwts = append(jwts, legacyGrant)
	expect("legacy room by grant", keep(secDo(t, "GET", secTokenURL(pub, "ai-hero", "legacy-room"), "Bearer "+legacyGrant, "")), 404)
	expect("legacy room by key", keep(secDo(t, "POST", pub+"/v1/realtime/token", "Bearer "+secKeyPrimary, `{"room":"legacy-room"}`)), 404)
	for _, k := range []string{secAdmin, secGrant, secDropIn, secPartySecret, secSignPrimary, secSignFallback, secKeyPrimary + "x", g} {
		expect("secret as API key", keep(secDo(t, "POST", pub+"/v1/broadcast", "Bearer "+k, msg("video-1", "video.asset.ready", "bad"))), 401)
		expect("secret as token key", keep(secDo(t, "POST", pub+"/v1/realtime/token", "Bearer "+k, `{"room":"video-1"}`)), 401)
		if k != secDropIn {
			expect("secret as drop-in secret", keep(secDo(t, "POST", pub+"/apps/ai-hero/party/video-1", "", `{"body":1,"name":"n"}`, "X-Switchyard-Secret", k)), 401)
		}
		if k != secAdmin {
			expect("secret as admin token", keep(secDo(t, "GET", adm+"/v1/admin/shadow/summary", "Bearer "+k, "")), 401)
		}
	}
	for _, k := range []string{secKeyPrimary, secKeyOther, secGrant} {
		expect("API key or grant secret as admin token", keep(secDo(t, "GET", adm+"/metrics", "Bearer "+k, "")), 401)
	}
	for _, p := range []string{"/metrics", "/v1/admin/routes?app=ai-hero&room=r&event=e", "/v1/admin/shadow/summary", "/v1/admin/shadow/mismatches", "/"} {
		expect("admin without token "+p, keep(secDo(t, "GET", adm+p, "", "")), 401)
	}
	expect("missing key", keep(secDo(t, "POST", pub+"/v1/broadcast", "", msg("r", "n", "x"))), 401)
	expect("body too large", keep(secDo(t, "POST", pub+"/v1/broadcast", "Bearer "+secKeyPrimary, `{"room":"r","name":"n","body":"`+strings.Repeat("x", 300<<10)+`"}`)), 413)
	expect("bad JSON", keep(secDo(t, "POST", pub+"/v1/broadcast", "Bearer "+secKeyPrimary, `{"room":`)), 400)

	// 3. Upstream failures, logged at error level with their causes. Each
	// fault holds until it is cleared, for every request: a fault limited
	// to the next N requests could be spent by the gateway's own background
	// requests (off-path copies of the messages above, the comparator's
	// token requests and readiness probes) before the call that must fail.
	sg.party.FailNext(math.MaxInt, 500)
	a = keep(secDo(t, "POST", pub+"/v1/broadcast", "Bearer "+secKeyPrimary, msg("video-2", "video.asset.ready", "fail-legacy")))
	sg.party.FailNext(0, 0)
	expect("legacy 5xx", a, 502)
	sg.rt.SetPublishFault(realtimetest.HTTPFault{Status: 503})
	a = keep(secDo(t, "POST", pub+"/v1/broadcast", "Bearer "+secKeyPrimary, msg("chat-9", "image.resource.created", "fail-rt")))
	sg.rt.SetPublishFault(realtimetest.HTTPFault{})
	expect("realtime 5xx", a, 502)
	sg.rt.SetTokenFault(realtimetest.HTTPFault{Status: 500})
	a = keep(secDo(t, "POST", pub+"/v1/realtime/token", "Bearer "+secKeyPrimary, `{"room":"video-3"}`))
	sg.rt.SetTokenFault(realtimetest.HTTPFault{})
	expect("token 5xx", a, 502)
	// The comparator's realtime subscriptions reconnect with fresh tokens.
	sg.rt.DropConnections()
	expect("publish after reconnect", keep(secDo(t, "POST", pub+"/v1/broadcast", "Bearer "+secKeyPrimary, msg("video-1", "video.asset.ready", "after-drop"))), 200)
	// The comparator's lines are part of what is checked: wait until every
	// expectation is decided and logged (the pending gauge drops after
	// that), within a multiple of its copy timeout.
	secWait(t, 10*sg.cfg.Shadow.Timeout, "the comparator to decide every expectation", func() bool {
		return secMetric(t, adm, "switchyard_shadow_pending") == "0"
	})
	sg.stop()

	// The secrets were really used upstream.
	var partyOK bool
	for _, p := range sg.party.Publishes() {
		if p.Header.Get("X-Party-Secret") == secPartySecret && p.Status == 200 {
			partyOK = true
		}
	}
	if !partyOK {
		t.Error("no publish reached PartyKit with the party secret")
	}
	hashedFallback, _ := realtime.HashSigningKey(secSignFallback)
	var rtOK bool
	for _, p := range sg.rt.Publishes() {
		rtOK = rtOK || p.Auth == "Bearer "+hashedFallback
	}
	if !rtOK || sg.rt.Counts().Unauthorized == 0 {
		t.Errorf("realtime: fallback-key publish %v, primary refusals %d; want both", rtOK, sg.rt.Counts().Unauthorized)
	}
	for _, tr := range sg.rt.Tokens() { // including the comparator's own
		jwts = append(jwts, tr.JWT)
	}

	// 4. config check prints the config, secrets redacted.
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"config", "check", "--config", sg.cfgPath}, secGetenv, &out, &errOut); code != 0 {
		t.Fatalf("config check = %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "[redacted]") || !strings.Contains(out.String(), "ai-hero") {
		t.Fatalf("config check printed no redacted config:\n%s", out.String())
	}

	logs := sg.logs.String()
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	for _, want := range []string{`"msg":"request refused"`, `"level":"error"`, `"msg":"switchyard ready"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs hold no %s line: the test did not see what it checks", want)
		}
	}
	needles := secNeedles(t, jwts)
	// The check itself works: a line holding a secret is caught.
	if len(secLeaks("x "+secSignPrimary+" "+tok.Key, needles)) < 2 {
		t.Fatal("leak check does not find planted secrets")
	}
	for i, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Errorf("log line %d is not JSON: %s", i, l)
		}
		if leaks := secLeaks(l, needles); len(leaks) > 0 {
			t.Errorf("log line %d holds %v: %s", i, leaks, l)
		}
	}
	for name, text := range map[string]string{"config check stdout": out.String(), "config check stderr": errOut.String(), "answers": strings.Join(bodies, "\n")} {
		if leaks := secLeaks(text, needles); len(leaks) > 0 {
			t.Errorf("%s holds %v", name, leaks)
		}
	}
	t.Logf("checked %d log lines, %d answers, %d JWTs for %d needles", len(lines), len(bodies), len(jwts), len(needles))
}

// TestSecurityTokenEndToEnd mints subscription tokens through the gateway
// both ways, subscribes to the realtime server with them, publishes
// through the gateway and receives the envelope in the data frame.
func TestSecurityTokenEndToEnd(t *testing.T) {
	sg := startSecGateway(t)
	now := time.Now()

	// Server to server: the ai-stream topic only (dual for chat-1).
	a := secDo(t, "POST", sg.pub+"/v1/realtime/token", "Bearer "+secKeyPrimary, `{"room":"chat-1","topics":["ai-stream"]}`)
	if a.status != 200 {
		t.Fatalf("server token = %d %s", a.status, a.body)
	}
	var byKey broadcast.Token
	if err := json.Unmarshal([]byte(a.body), &byKey); err != nil {
		t.Fatal(err)
	}
	if byKey.Channel != "ai-hero:chat-1" || !slices.Equal(byKey.Topics, []string{"ai-stream"}) || time.Until(byKey.ExpiresAt) < 30*time.Second {
		t.Fatalf("server token = %+v", byKey)
	}
	// Browser direct: every channel of the room that is past legacy.
	gr := secGrantFor(t, secGrant, "ai-hero", []string{"chat-1"}, now, 5*time.Minute)
	a = secDo(t, "GET", secTokenURL(sg.pub, "ai-hero", "chat-1"), "Bearer "+gr, "", "Origin", secOrigin)
	if a.status != 200 {
		t.Fatalf("grant token = %d %s", a.status, a.body)
	}
	var byGrant broadcast.Token
	if err := json.Unmarshal([]byte(a.body), &byGrant); err != nil {
		t.Fatal(err)
	}
	if want := []string{"video-ready", "ai-stream", "default"}; byGrant.Channel != "ai-hero:chat-1" || !slices.Equal(byGrant.Topics, want) {
		t.Fatalf("grant token = %+v, want channel ai-hero:chat-1 topics %v", byGrant, want)
	}
	// The tokens are the realtime server's, for exactly these topics.
	for _, tk := range []broadcast.Token{byKey, byGrant} {
		var c realtimetest.Claims
		if _, err := jwt.ParseWithClaims(tk.Key, &c, func(*jwt.Token) (any, error) { return sg.rt.JWTKey(), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired()); err != nil {
			t.Fatalf("token does not verify with the realtime server's key: %v", err)
		}
		var names []string
		for _, tc := range c.Topics {
			if tc.Channel != "ai-hero:chat-1" {
				t.Errorf("token covers channel %q", tc.Channel)
			}
			names = append(names, tc.Name)
		}
		if !slices.Equal(names, tk.Topics) {
			t.Errorf("token claims topics %v, answer says %v", names, tk.Topics)
		}
	}
	// A legacy room gets no token: the browser keeps PartyKit.
	lg := secGrantFor(t, secGrant, "ai-hero", []string{"legacy-room"}, now, time.Minute)
	if a := secDo(t, "GET", secTokenURL(sg.pub, "ai-hero", "legacy-room"), "Bearer "+lg, ""); a.status != 404 || !strings.Contains(a.body, `"code":"realtime_disabled"`) {
		t.Fatalf("legacy room = %d %s", a.status, a.body)
	}

	wsKey := secDial(t, sg.rt.URL(), byKey.Key)
	wsGrant := secDial(t, sg.rt.URL(), byGrant.Key)
	secWait(t, 3*time.Second, "subscriptions", func() bool {
		return sg.rt.Subscribed("ai-hero:chat-1", "ai-stream") >= 2 && sg.rt.Subscribed("ai-hero:chat-1", "default") >= 1
	})

	// Another room's message first: no subscriber of chat-1 may see it.
	for _, m := range []string{
		`{"room":"chat-2","name":"ai.message","requestId":"other-room","body":"not yours"}`,
		`{"room":"chat-1","name":"ai.message","requestId":"e2e-1","body":"Sure, here is how it works."}`,
		`{"room":"chat-1","name":"image.resource.created","requestId":"e2e-2","body":{"id":"img-1","n":1.5}}`,
	} {
		if a := secDo(t, "POST", sg.pub+"/v1/broadcast", "Bearer "+secKeyPrimary, m); a.status != 200 {
			t.Fatalf("publish = %d %s", a.status, a.body)
		}
	}
	want1 := `{"body":"Sure, here is how it works.","requestId":"e2e-1","name":"ai.message"}`
	want2 := `{"body":{"id":"img-1","n":1.5},"requestId":"e2e-2","name":"image.resource.created"}`
	secExpect(t, wsKey, "ai-stream", want1)
	got := map[string]string{}
	for len(got) < 2 {
		f := secNext(t, wsGrant)
		got[f.Topic] = string(f.Data)
	}
	secSameJSON(t, got["ai-stream"], want1)
	secSameJSON(t, got["default"], want2)
}

type secFrame struct {
	Kind    string          `json:"kind"`
	Data    json.RawMessage `json:"data"`
	Channel string          `json:"channel"`
	Topic   string          `json:"topic"`
}

func secDial(t *testing.T, base, token string) *websocket.Conn {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/realtime/connect?token=" + url.QueryEscape(token)
	ws, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial realtime (%d): %v", status, err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return ws
}

// secNext returns the next data frame; frames of another channel fail.
func secNext(t *testing.T, ws *websocket.Conn) secFrame {
	t.Helper()
	for {
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		var f secFrame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("frame %s: %v", b, err)
		}
		if f.Kind != "data" {
			continue
		}
		if f.Channel != "ai-hero:chat-1" {
			t.Fatalf("subscriber of ai-hero:chat-1 got a frame of channel %q: %s", f.Channel, b)
		}
		return f
	}
}

func secExpect(t *testing.T, ws *websocket.Conn, topic, want string) {
	t.Helper()
	f := secNext(t, ws)
	if f.Topic != topic {
		t.Fatalf("frame topic = %q, want %q", f.Topic, topic)
	}
	secSameJSON(t, string(f.Data), want)
}

func secSameJSON(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("data %q: %v", got, err)
	}
	_ = json.Unmarshal([]byte(want), &w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("data = %s, want %s", got, want)
	}
}

// TestSecurityServerLimits: a request over the header limit is answered
// 431 before any handler, on both listeners.
func TestSecurityServerLimits(t *testing.T) {
	sg := startSecGateway(t)
	// The servers' timeout fields are checked in package gateway
	// (TestServersHaveLimits); here the limit is seen from outside.
	big := strings.Repeat("x", 4*sg.cfg.Server.MaxHeaderBytes+8192)
	for _, u := range []string{sg.pub + "/v1/broadcast", sg.adm + "/metrics"} {
		status, err := secOversizeHead(u, "Bearer "+secKeyPrimary, `{"room":"r","name":"n","body":1}`, big)
		if err != nil {
			t.Errorf("%s with a %d byte header: %v", u, len(big), err)
		} else if status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s with a %d byte header = %d, want 431", u, len(big), status)
		}
	}
	// Under the limit the same request is served.
	if a := secDo(t, "POST", sg.pub+"/v1/broadcast", "Bearer "+secKeyPrimary, `{"room":"r","name":"video.asset.ready","body":1}`, "X-Padding", "small"); a.status != 200 {
		t.Errorf("small header = %d %s", a.status, a.body)
	}
}
