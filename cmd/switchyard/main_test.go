package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/gateway"
	"github.com/switchyard/switchyard/legacyparty/partykitdev"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

const e2eKey = "e2e-key-0123456789abcdef"

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runGateway runs a gateway built from cfg, as serve does, until the test
// ends or stop is called (stop may be called more than once), and returns
// once /readyz answers 200.
func runGateway(t *testing.T, cfg *config.Config, logger *zap.Logger) (g *gateway.Gateway, stop func()) {
	t.Helper()
	g, err := gateway.New(cfg, logger, gateway.Options{})
	if err != nil {
		t.Fatalf("newGateway: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("gateway Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("gateway did not stop within 15s")
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(g.AdminURL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g, stop
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready within 10s (last error %v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stageFlags returns a flag file (indented, as people write them) putting
// every channel at stage.
func stageFlags(stage string) string {
	type flag struct {
		State          string         `json:"state"`
		Variants       map[string]any `json:"variants"`
		DefaultVariant string         `json:"defaultVariant"`
	}
	stages := map[string]any{"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}
	fl := map[string]flag{"realtime-killswitch": {"ENABLED", map[string]any{"on": true, "off": false}, "off"}}
	for _, ch := range []string{"video-upload", "video-ready", "transcript", "ai-stream", "default"} {
		fl["realtime-"+ch] = flag{"ENABLED", stages, stage}
	}
	b, err := json.MarshalIndent(map[string]any{"flags": fl}, "", "  ")
	if err != nil {
		panic(err)
	}
	return string(b) + "\n"
}

// setConfigLine replaces the line of the config at path that starts with
// prefix by line.
func setConfigLine(t *testing.T, path, prefix, line string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	n := 0
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			lines[i] = line
			n++
		}
	}
	if n != 1 {
		t.Fatalf("config %s: %d lines start with %q, want 1", path, n, prefix)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeE2EConfig writes a config for a gateway on :0 in a temp dir and
// returns its path.
func writeE2EConfig(t *testing.T, partyURL, realtimeURL, stage string, extra string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "flags.json"), []byte(stageFlags(stage)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`env: test
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
log: {level: debug, format: json}
flags: {provider: file, file: flags.json, pollInterval: 200ms}
channels:
  - {name: video-upload, events: [video.asset.attached, video.asset.detached, videoResource.created]}
  - {name: video-ready,  events: [video.asset.ready, video.asset.errored]}
  - {name: transcript,   events: [transcript.ready, transcriptWithScreenshots.ready]}
  - {name: ai-stream,    events: [ai.message]}
apps:
  ai-hero:
    apiKeys: ["${E2E_KEY}"]
    party: {url: %q, party: main}
    realtime: {url: %q, channel: "{room}"}
shadow: {sampleRate: 1.0, timeout: 2s}
upstream: {timeout: 3s, attemptTimeout: 1s, backoffBase: 10ms, backoffMax: 100ms}
server: {shutdownTimeout: 10s}
%s`, partyURL, realtimeURL, extra)
	path := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func e2eEnv(k string) string {
	if k == "E2E_KEY" {
		return e2eKey
	}
	return ""
}

// runningGateway is `switchyard serve` driven through run on :0.
type runningGateway struct {
	public, admin string
	logs          *syncBuffer
	done          chan struct{} // closed when run returned
	exitCode      int
	cancel        context.CancelFunc
}

// stop cancels run and returns its exit code.
func (g *runningGateway) stop(t *testing.T) int {
	t.Helper()
	g.cancel()
	select {
	case <-g.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("gateway did not stop within 15s:\n%s", g.logs.String())
	}
	return g.exitCode
}

// startServe runs `serve --config path` and waits for its ready line.
func startServe(t *testing.T, path string) *runningGateway {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g := &runningGateway{logs: &syncBuffer{}, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(g.done)
		g.exitCode = run(ctx, []string{"serve", "--config", path}, e2eEnv, io.Discard, g.logs)
	}()
	t.Cleanup(func() { g.stop(t) })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(g.logs.String(), "\n") {
			if !strings.Contains(line, `"switchyard ready"`) {
				continue
			}
			var ready struct {
				Public, Admin string
				Startup       float64
			}
			if err := json.Unmarshal([]byte(line), &ready); err != nil {
				t.Fatalf("ready line %q: %v", line, err)
			}
			g.public, g.admin = "http://"+ready.Public, "http://"+ready.Admin
			t.Logf("gateway ready: public %s admin %s, start-up %.3fs", g.public, g.admin, ready.Startup)
			return g
		}
		select {
		case <-g.done:
			t.Fatalf("serve exited with %d before it was ready:\n%s", g.exitCode, g.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("gateway not ready within 20s:\n%s", g.logs.String())
	return nil
}

func post(t *testing.T, url, auth, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// browser is a PartyKit websocket client like partysocket.
type browser struct {
	conn   *websocket.Conn
	frames chan string
}

func dialBrowser(t *testing.T, partyURL, room string) *browser {
	t.Helper()
	u := "ws" + strings.TrimPrefix(partyURL, "http") + "/parties/main/" + room + "?_pk=e2e-browser"
	conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	resp.Body.Close()
	b := &browser{conn: conn, frames: make(chan string, 64)}
	go func() {
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				close(b.frames)
				return
			}
			b.frames <- string(data)
		}
	}()
	t.Cleanup(func() { _ = conn.UnderlyingConn().Close() })
	return b
}

func (b *browser) next(t *testing.T) string {
	t.Helper()
	select {
	case f, ok := <-b.frames:
		if !ok {
			t.Fatal("browser connection closed")
		}
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10s")
	}
	return ""
}

// TestServeEndToEndRealPartyKit drives `switchyard serve` on :0 against a
// REAL PartyKit dev server: a browser-like websocket in the room receives
// exactly what apps expect through both API paths.
func TestServeEndToEndRealPartyKit(t *testing.T) {
	pk := partykitdev.Start(t)
	rt := realtimetest.NewServer(realtimetest.Config{})
	t.Cleanup(rt.Close) // after the gateway's own cleanup (LIFO)
	g := startServe(t, writeE2EConfig(t, pk, rt.URL(), "legacy", ""))
	if code := get(t, g.admin+"/readyz"); code != 200 {
		t.Fatalf("readyz = %d, want 200", code)
	}

	b := dialBrowser(t, pk, "course-42")
	// The broadcast API. PartyKit re-encodes: 1.0 -> 1, \u00e9 -> é.
	status, body := post(t, g.public+"/v1/broadcast", e2eKey, "application/json",
		`{"room":"course-42","name":"video.asset.ready","body":{"id":"v1","duration":1.0,"title":"caf\u00e9"},"requestId":"req-1"}`)
	if status != 200 {
		t.Fatalf("broadcast = %d %s", status, body)
	}
	var ans struct {
		RequestID  string `json:"requestId"`
		Stage      string `json:"stage"`
		Deliveries map[string]struct {
			Status   string  `json:"status"`
			Attempts int     `json:"attempts"`
			MS       float64 `json:"ms"`
		} `json:"deliveries"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatal(err)
	}
	if ans.RequestID != "req-1" || ans.Stage != "legacy" || ans.Deliveries["legacy"].Status != "delivered" || ans.Deliveries["legacy"].Attempts != 1 {
		t.Fatalf("answer = %s", body)
	}
	if got, want := b.next(t), `{"body":{"id":"v1","duration":1,"title":"café"},"requestId":"req-1","name":"video.asset.ready"}`; got != want {
		t.Fatalf("browser frame = %s\nwant            %s", got, want)
	}

	// The PartyKit drop-in path: exactly what apps send today, no
	// Content-Type header of JSON.
	status, body = post(t, g.public+"/apps/ai-hero/party/course-42", "", "text/plain;charset=UTF-8",
		`{"body":"Hello","requestId":"chat-7","name":"ai.message"}`)
	if status != 200 || body != "ok" {
		t.Fatalf("drop-in = %d %q", status, body)
	}
	if got, want := b.next(t), `{"body":"Hello","requestId":"chat-7","name":"ai.message"}`; got != want {
		t.Fatalf("browser frame = %s, want %s", got, want)
	}
	status, _ = post(t, g.public+"/apps/ai-hero/parties/main/course-42", "", "",
		`{"body":{"n":12345678901234567890},"requestId":"chat-8","name":"ai.message"}`)
	if status != 200 {
		t.Fatalf("drop-in /parties = %d", status)
	}
	if got, want := b.next(t), `{"body":{"n":12345678901234567000},"requestId":"chat-8","name":"ai.message"}`; got != want {
		t.Fatalf("browser frame = %s, want %s", got, want)
	}

	// Refusals on the real path reach no browser.
	for _, tt := range []struct {
		path, key, body string
		status          int
	}{
		{"/v1/broadcast", "", `{"room":"course-42","name":"n","body":1}`, 401},
		{"/v1/broadcast", e2eKey, `{"room":"course 42","name":"n","body":1}`, 422},
		{"/v1/broadcast", e2eKey, `{"room":"course-42","name":"n"}`, 400},
		{"/apps/ai-hero/party/course-42", "", `not json`, 400},
	} {
		if status, body := post(t, g.public+tt.path, tt.key, "", tt.body); status != tt.status {
			t.Errorf("%s %s = %d %s, want %d", tt.path, tt.body, status, body, tt.status)
		}
	}
	// A probe sent after the refusals: the room's frames arrive in order,
	// so a refused message that got through would come before it.
	status, body = post(t, g.public+"/v1/broadcast", e2eKey, "", `{"room":"course-42","name":"video.asset.ready","body":"probe","requestId":"probe-1"}`)
	if status != 200 {
		t.Fatalf("probe = %d %s", status, body)
	}
	if got, want := b.next(t), `{"body":"probe","requestId":"probe-1","name":"video.asset.ready"}`; got != want {
		t.Fatalf("a refused message reached the browser: %s (want the probe %s)", got, want)
	}

	// Metrics are served by the admin listener's own registry.
	resp, err := http.Get(g.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`switchyard_messages_accepted_total{app="ai-hero",channel="ai-stream",stage="legacy"} 2`,
		`switchyard_upstream_requests_total{class="2xx",op="publish",transport="legacy"} 4`, // 3 and the probe
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	if code := g.stop(t); code != 0 {
		t.Fatalf("serve exited %d after cancel:\n%s", code, g.logs.String())
	}
	if !strings.Contains(g.logs.String(), `"switchyard stopped"`) {
		t.Error("no stop line in the logs")
	}
}

// TestSigtermDrainsInFlight builds the binary, starts it, and sends
// SIGTERM while a publish is in flight against a slow PartyKit: the caller
// still gets its 200, readyz turns 503 at once, a caller arriving during
// shutdown.delay (1s here; 5s in staging and prod) is still served, with
// Connection: close, and the process exits 0.
func TestSigtermDrainsInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "switchyard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// A slow PartyKit that says when a publish arrived and answers it when
	// the test releases it (after it has seen the drain).
	arrived := make(chan struct{}, 4)
	release := make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	var publishes atomic.Int32
	party := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		publishes.Add(1)
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer party.Close()
	defer free() // before party.Close, which waits for the handler
	rt := realtimetest.NewServer(realtimetest.Config{})
	t.Cleanup(rt.Close) // after the gateway's own cleanup (LIFO)
	// shutdown.delay: the public listener keeps serving 1 s after SIGTERM.
	path := writeE2EConfig(t, party.URL, rt.URL(), "legacy", "shutdown: {delay: 1s}\n")
	// The publish is held until released: its deadlines are long against
	// the hold, and the drain deadline (server.shutdownTimeout) longer
	// than the wait for readyz below.
	const drain = 20 * time.Second
	setConfigLine(t, path, "upstream:", "upstream: {timeout: 40s, attemptTimeout: 40s, backoffBase: 10ms, backoffMax: 100ms}")
	setConfigLine(t, path, "server:", fmt.Sprintf("server: {shutdownTimeout: %s}", drain))

	cmd := exec.Command(bin, "serve", "--config", path)
	cmd.Env = append(os.Environ(), "E2E_KEY="+e2eKey)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	lines := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var public, admin string
	var logs strings.Builder
	for public == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("binary exited before ready:\n%s", logs.String())
			}
			logs.WriteString(line + "\n")
			if strings.Contains(line, `"switchyard ready"`) {
				var ready struct{ Public, Admin string }
				_ = json.Unmarshal([]byte(line), &ready)
				public, admin = "http://"+ready.Public, "http://"+ready.Admin
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("binary not ready:\n%s", logs.String())
		}
	}
	type result struct {
		status int
		body   string
	}
	inflight := make(chan result, 1)
	go func() {
		s, b := post(t, public+"/v1/broadcast", e2eKey, "", `{"room":"r1","name":"video.asset.ready","body":{"id":1}}`)
		inflight <- result{s, b}
	}()
	// Wait until PartyKit has the request, then signal.
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the publish never reached PartyKit")
	}
	signalled := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The publish is held: the gateway is draining until it is released.
	sawNotReady := false
	for deadline := time.Now().Add(drain / 2); !sawNotReady && time.Now().Before(deadline); {
		resp, err := http.Get(admin + "/readyz")
		if err == nil {
			sawNotReady = resp.StatusCode == 503
			resp.Body.Close()
		}
		if !sawNotReady {
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Release the held publish; the drain goes on for shutdown.delay.
	free()
	// A load balancer that has not caught up yet: its request, on a new
	// connection, is served.
	if since := time.Since(signalled); since < 500*time.Millisecond {
		req, _ := http.NewRequest(http.MethodPost, public+"/v1/broadcast", strings.NewReader(`{"room":"r2","name":"video.asset.ready","body":{"id":2}}`))
		req.Header.Set("Authorization", "Bearer "+e2eKey)
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
		if err != nil {
			t.Fatalf("publish during shutdown.delay (%s after SIGTERM): %v", since, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !resp.Close {
			t.Errorf("publish during shutdown.delay: %d (Connection: close %v), want 200 and close", resp.StatusCode, resp.Close)
		}
	} else {
		t.Errorf("readyz took %s to turn 503, half of shutdown.delay", since)
	}
	r := <-inflight
	if r.status != 200 {
		t.Fatalf("in-flight publish answered %d %s during shutdown", r.status, r.body)
	}
	for line := range lines {
		logs.WriteString(line + "\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
	}
	if !sawNotReady {
		t.Error("readyz never answered 503 during the drain")
	}
	if n := publishes.Load(); n != 2 {
		t.Errorf("PartyKit got %d publishes, want 2", n)
	}
}
