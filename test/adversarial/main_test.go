//go:build unix

// Package adversarial is the hardening suite of issue 12: the gateway tried
// as an attacker and as a bad day would, against a real PartyKit dev server
// (legacyparty/partykitdev) and a real Inngest dev server
// (realtime/inngestdev), all on loopback, each case bounded in time. Every
// finding of the adversarial run has its case here (TestFinding*), next to
// the cases that held (TestHeld*). `make test` runs it as part of
// `go test ./...`; docs/security.md lists what each case proves.
package adversarial

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/gateway"
	"github.com/switchyard/switchyard/legacyparty/partykitdev"
	"github.com/switchyard/switchyard/realtime/inngestdev"
)

var (
	pk  partykitdev.Shared
	ing inngestdev.Shared
)

func TestMain(m *testing.M) {
	code := m.Run()
	pk.Close()
	ing.Close()
	os.Exit(code)
}

// Keys of the two apps every suite config has.
const (
	keyA = "adv-key-ai-hero-0123456789"
	keyB = "adv-key-course-builder-0123"
)

// wait is the bound of every "should arrive" in the suite: far above what
// loopback needs, so that a slow CI machine does not flake, and short
// enough that a failure is quick.
const wait = 10 * time.Second

// flagFile returns a flag file putting every channel of the suite configs
// at stage.
func flagFile(stage string) string {
	variants := `{"legacy":"legacy","shadow":"shadow","dual":"dual","realtime":"realtime"}`
	return fmt.Sprintf(`{"flags":{
  "realtime-killswitch":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"},
  "realtime-video":{"state":"ENABLED","variants":%s,"defaultVariant":%q},
  "realtime-default":{"state":"ENABLED","variants":%s,"defaultVariant":%q}
}}
`, variants, stage, variants, stage)
}

// gw is a gateway under test, built by gateway.New and run in-process.
type gw struct {
	*gateway.Gateway
	cfg     *config.Config
	pub     string
	adm     string
	flags   string             // the flag file's path
	cancel  context.CancelFunc // starts the shutdown without waiting
	stop    func()             // cancels Run and waits for it (idempotent)
	stopped chan struct{}      // closed when Run returned
}

// suiteConfig is the YAML of a gateway on loopback :0 with the channel
// "video" (event video.ready), both upstreams of every app from apps (YAML
// of the apps section's entries, indented by four spaces), and extra
// top-level YAML.
func suiteConfig(flagsPath, apps, extra string) string {
	return fmt.Sprintf(`env: test
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
log: {level: error}
flags: {provider: file, file: %q, pollInterval: 100ms}
channels:
  - {name: video, events: [video.ready]}
apps:
%s
shadow: {sampleRate: 1.0, timeout: 2s}
upstream: {timeout: 2s, attemptTimeout: 500ms, backoffBase: 10ms, backoffMax: 50ms}
server: {shutdownTimeout: 5s}
%s`, flagsPath, apps, extra)
}

// appYAML is one app entry: its API key, PartyKit URL and realtime URL,
// and extra keys of its party and realtime sections ("" for none).
func appYAML(name, key, partyURL, realtimeURL, partyExtra, realtimeExtra string) string {
	if partyExtra != "" {
		partyExtra = ", " + partyExtra
	}
	if realtimeExtra != "" {
		realtimeExtra = ", " + realtimeExtra
	}
	return fmt.Sprintf("  %s:\n    apiKeys: [%q]\n    party: {url: %q%s}\n    realtime: {url: %q%s}\n",
		name, key, partyURL, partyExtra, realtimeURL, realtimeExtra)
}

// parseConfig parses yaml as `switchyard serve` would (no environment).
func parseConfig(yaml string) (*config.Config, error) {
	return config.Parse([]byte(yaml), func(string) string { return "" })
}

// startGW writes the flag file at stage, parses the config built by
// build(flagsPath), lets each of adjust change it, runs the gateway until
// the test ends, and returns once /readyz answers 200.
func startGW(t *testing.T, stage string, build func(flagsPath string) string, adjust ...func(*config.Config)) *gw {
	t.Helper()
	flags := filepath.Join(t.TempDir(), "flags.json")
	if err := os.WriteFile(flags, []byte(flagFile(stage)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig(build(flags))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	for _, f := range adjust {
		f(cfg)
	}
	return runGW(t, cfg, flags)
}

// runGW runs a gateway built from cfg until the test ends.
func runGW(t *testing.T, cfg *config.Config, flags string) *gw {
	t.Helper()
	g, err := gateway.New(cfg, nil, gateway.Options{})
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = g.Run(ctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
				if runErr != nil {
					t.Errorf("gateway Run: %v", runErr)
				}
			case <-time.After(cfg.Server.ShutdownTimeout + 15*time.Second):
				t.Errorf("gateway did not stop")
			}
		})
	}
	t.Cleanup(stop)
	out := &gw{Gateway: g, cfg: cfg, pub: g.PublicURL(), adm: g.AdminURL(), flags: flags, cancel: cancel, stop: stop, stopped: done}
	eventually(t, wait, "gateway ready", func() bool { return status(t, "GET", out.adm+"/readyz", "", "") == 200 })
	return out
}

// eventually polls cond every 10 ms until it holds or d passed (then the
// test fails, naming what).
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var hc = &http.Client{Timeout: wait}

// answer is one HTTP answer.
type answer struct {
	status int
	body   string
	header http.Header
}

// do sends one request; auth is a bearer token ("" for none); hdr are
// extra header name/value pairs.
func do(t *testing.T, method, u, auth, body string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header}
}

func status(t *testing.T, method, u, auth, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// msg is a /v1/broadcast body.
func msg(room, requestID string, body string) string {
	return fmt.Sprintf(`{"room":%q,"name":"video.ready","requestId":%q,"body":%s}`, room, requestID, body)
}

// errorCode returns error.code and error.message of a JSON error answer.
func errorCode(body string) (code, message string) {
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal([]byte(body), &e)
	return e.Error.Code, e.Error.Message
}

// ---- subscribers ----

// sub is a subscriber as a browser has it: every received envelope, in
// order.
type sub struct {
	name    string
	channel string // the Inngest channel, for a realtime subscriber
	conn    *websocket.Conn
	frames  chan []byte
}

// partySocket connects to room of party as partysocket 1.3.0 builds the
// URL: ws://{host}/parties/{party}/{room}?_pk={id}, the room as given (no
// escaping; the browser's URL parser leaves the characters rooms may
// hold as they are).
func partySocket(t *testing.T, partyURL, party, room string) *sub {
	t.Helper()
	u := "ws" + strings.TrimPrefix(partyURL, "http") + "/parties/" + party + "/" + room + "?_pk=adversarial"
	d := websocket.Dialer{HandshakeTimeout: wait}
	conn, resp, err := d.Dial(u, nil)
	if err != nil {
		t.Fatalf("partysocket %s: %v", u, err)
	}
	resp.Body.Close()
	return newSub(t, "partykit "+party+"/"+room, conn, func(b []byte) []byte { return b })
}

// realtimeSocket connects to Inngest Realtime with the token the gateway
// hands app (API key key) for room, as the browser does with inngest's
// subscribe(): the websocket carries the token, frames of kind "data"
// carry the envelope.
func realtimeSocket(t *testing.T, g *gw, key, realtimeURL, room string) *sub {
	t.Helper()
	a := do(t, "POST", g.pub+"/v1/realtime/token", key, fmt.Sprintf(`{"room":%q}`, room))
	if a.status != 200 {
		t.Fatalf("token for room %q: %d %s", room, a.status, a.body)
	}
	var tok struct{ Key, Channel string }
	if err := json.Unmarshal([]byte(a.body), &tok); err != nil || tok.Key == "" {
		t.Fatalf("token answer %s: %v", a.body, err)
	}
	s := realtimeSocketToken(t, realtimeURL, tok.Key, "inngest "+tok.Channel)
	s.channel = tok.Channel
	return s
}

// realtimeSocketToken subscribes with a token as given.
func realtimeSocketToken(t *testing.T, realtimeURL, token, name string) *sub {
	t.Helper()
	u := "ws" + strings.TrimPrefix(realtimeURL, "http") + "/v1/realtime/connect?token=" + url.QueryEscape(token)
	d := websocket.Dialer{HandshakeTimeout: wait}
	conn, resp, err := d.Dial(u, nil)
	if err != nil {
		t.Fatalf("realtime connect: %v", err)
	}
	resp.Body.Close()
	return newSub(t, name, conn, func(b []byte) []byte {
		var f struct {
			Kind string          `json:"kind"`
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(b, &f) != nil || f.Kind != "data" {
			return nil
		}
		return f.Data
	})
}

func newSub(t *testing.T, name string, conn *websocket.Conn, extract func([]byte) []byte) *sub {
	s := &sub{name: name, conn: conn, frames: make(chan []byte, 1024)}
	go func() {
		defer close(s.frames)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if env := extract(data); env != nil {
				s.frames <- env
			}
		}
	}()
	t.Cleanup(func() { _ = conn.UnderlyingConn().Close() })
	return s
}

// envelope is the decoded envelope of a frame.
type envelope struct {
	Body      json.RawMessage `json:"body"`
	RequestID string          `json:"requestId"`
	Name      string          `json:"name"`
}

// next returns the next envelope, failing after d.
func (s *sub) next(t *testing.T, d time.Duration) envelope {
	t.Helper()
	select {
	case f, ok := <-s.frames:
		if !ok {
			t.Fatalf("%s: connection closed", s.name)
		}
		var e envelope
		if err := json.Unmarshal(f, &e); err != nil {
			t.Fatalf("%s: frame %q: %v", s.name, f, err)
		}
		return e
	case <-time.After(d):
		t.Fatalf("%s: no frame within %s", s.name, d)
	}
	return envelope{}
}

// ready publishes probe messages through publish (which gets a fresh
// requestId each time) until s receives one, so that the subscription is
// known to be live, then drains what else arrived.
func (s *sub) ready(t *testing.T, publish func(requestID string)) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for i := 0; ; i++ {
		id := fmt.Sprintf("probe-%d", i)
		publish(id)
		select {
		case f, ok := <-s.frames:
			if !ok {
				t.Fatalf("%s: connection closed", s.name)
			}
			if !bytes.Contains(f, []byte("probe-")) {
				t.Fatalf("%s: unexpected frame %s while probing", s.name, f)
			}
			for {
				select {
				case <-s.frames:
				case <-time.After(100 * time.Millisecond):
					return
				}
			}
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no probe arrived within %s", s.name, wait)
		}
	}
}

// firstIs fails unless the next envelope s receives has requestId want:
// anything published before it that s should not see would arrive first.
func (s *sub) firstIs(t *testing.T, want string) {
	t.Helper()
	if e := s.next(t, wait); e.RequestID != want {
		t.Fatalf("%s received %s (body %s) before the marker %s", s.name, e.RequestID, e.Body, want)
	}
}

// directInngest publishes an envelope straight to Inngest Realtime (the
// dev server needs no key) on channel, topic "video".
func directInngest(t *testing.T, realtimeURL, channel, id string) {
	t.Helper()
	a := do(t, "POST", realtimeURL+"/v1/realtime/publish?channel="+url.QueryEscape(channel)+"&topic=video", "",
		fmt.Sprintf(`{"body":{"via":"direct"},"requestId":%q,"name":"video.ready"}`, id))
	if a.status != 200 {
		t.Fatalf("direct Inngest publish: %d %s", a.status, a.body)
	}
}

// deadURL is the base URL of a loopback port nothing listens on: an
// upstream that is down.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	_ = l.Close()
	return u
}

// ---- raw connections ----

// rawConn is a TCP connection that speaks HTTP/1.1 by hand.
type rawConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, base string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) write(t *testing.T, s string) {
	t.Helper()
	_ = rc.c.SetWriteDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(rc.c, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readResponse reads one response (nil, err at EOF or on error).
func (rc *rawConn) readResponse(d time.Duration) (*http.Response, string, error) {
	_ = rc.c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// closedByPeer reports whether the server closed the connection: a read
// returns EOF (or a reset) within d, with no byte of another response.
func (rc *rawConn) closedByPeer(d time.Duration) (bool, string) {
	_ = rc.c.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(rc.r)
	if len(b) > 0 {
		return false, string(b)
	}
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		return false, "still open"
	}
	return true, ""
}

// ---- metrics ----

// gauge returns the value of a gauge of the gateway's registry (summed
// over its series).
func gauge(t *testing.T, g *gw, name string) float64 {
	t.Helper()
	mfs, err := g.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += value(m)
		}
	}
	return sum
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return 0
}
