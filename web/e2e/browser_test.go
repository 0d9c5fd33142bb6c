//go:build unix

// Package e2e holds the real-browser test of the browser client (web/):
// headless Chromium (Debian's, driven by playwright-core from drive.mjs)
// loads a page that uses the built package, against this repository's
// gateway, a real PartyKit dev server (test/partykit) and a real Inngest
// dev server (../shared/tools/inngest-dev.sh).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/flags"
	"github.com/switchyard/switchyard/gateway"
	"github.com/switchyard/switchyard/legacyparty/partykitdev"
	"github.com/switchyard/switchyard/receipts"
)

const (
	apiKey      = "browser-test-key-0123456789"
	grantSecret = "browser-test-grant-secret-0123456789abcdef"
	room        = "lesson-42"
	// total is how many messages the producer sends.
	total = 200
	// testDeadline bounds the whole test.
	testDeadline = 150 * time.Second
)

// phase is one step of the walk through the stages.
type phase struct {
	stage broadcast.Stage
	kill  bool
}

// phases: every stage, back again, with the kill switch pulled while the
// channels are on realtime.
var phases = []phase{
	{broadcast.StageLegacy, false}, {broadcast.StageShadow, false}, {broadcast.StageDual, false},
	{broadcast.StageRealtime, false}, {broadcast.StageRealtime, true}, {broadcast.StageRealtime, false},
	{broadcast.StageDual, false}, {broadcast.StageShadow, false}, {broadcast.StageLegacy, false},
}

func flagFile(p phase) string {
	kill := "off"
	if p.kill {
		kill = "on"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `{"flags": {"realtime-killswitch": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": %q}`, kill)
	for _, ch := range []string{"video-ready", "ai-stream", "default"} {
		fmt.Fprintf(&b, `, "realtime-%s": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": %q}`, ch, p.stage)
	}
	b.WriteString("}}\n")
	return b.String()
}

// grant signs a room grant (HS256) as an app's server does.
func grant(rooms []string, iat time.Time, life time.Duration) string {
	enc := base64.RawURLEncoding
	h := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	c, _ := json.Marshal(map[string]any{"app": "ai-hero", "rooms": rooms, "iat": iat.Unix(), "exp": iat.Add(life).Unix()})
	body := h + "." + enc.EncodeToString(c)
	mac := hmac.New(sha256.New, []byte(grantSecret))
	mac.Write([]byte(body))
	return body + "." + enc.EncodeToString(mac.Sum(nil))
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// need fails the test with how to install what is missing.
func need(t *testing.T, path, how string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: %s (scripts/test-deps.sh does it)", path, how)
	}
}

// run runs a command in dir, failing the test with its output.
func run(ctx context.Context, t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// startInngest starts the real Inngest dev server on free loopback ports
// and waits until it answers, within ctx.
func startInngest(ctx context.Context, t *testing.T, root string) string {
	t.Helper()
	script := filepath.Join(root, "..", "shared", "tools", "inngest-dev.sh")
	bin := os.Getenv("SWITCHYARD_INNGEST_DEV")
	if bin == "" {
		need(t, script, "the shared tools folder beside the repository")
		out, err := exec.CommandContext(ctx, "bash", script).Output()
		if err != nil {
			t.Fatalf("inngest-dev.sh: %v", err)
		}
		bin = strings.TrimSpace(string(out))
	}
	port := freePort(t)
	cmd := exec.Command(bin, "dev", "--no-discovery", "--no-poll", "--host", "127.0.0.1",
		"--port", strconv.Itoa(port), "--connect-gateway-port", strconv.Itoa(freePort(t)))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	for {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("inngest dev did not answer: %v\n%s", ctx.Err(), out.String())
		case <-done:
			t.Fatalf("inngest dev exited:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// record is one message as the page's onMessage got it.
type record struct {
	ID         string          `json:"id"`
	Epoch      string          `json:"epoch"`
	Seq        uint64          `json:"seq"`
	Stage      broadcast.Stage `json:"stage"`
	KillSwitch bool            `json:"killSwitch"`
	Name       string          `json:"name"`
	RequestID  string          `json:"requestId"`
	Body       json.RawMessage `json:"body"`
	Transport  string          `json:"transport"`
	Late       bool            `json:"late"`
	LatencyMs  *float64        `json:"latencyMs"`
}

type pageResult struct {
	Records []record `json:"records"`
	Copies  []struct {
		ID        string `json:"id"`
		Transport string `json:"transport"`
	} `json:"copies"`
	Stats struct {
		Delivered  int `json:"delivered"`
		Duplicates int `json:"duplicates"`
		Late       int `json:"late"`
		Gaps       int `json:"gaps"`
		Receipts   struct {
			Finished int `json:"finished"`
			Sent     int `json:"sent"`
			Failed   int `json:"failed"`
		} `json:"receipts"`
		Tokens   int `json:"tokens"`
		Disabled int `json:"disabled"`
	} `json:"stats"`
	Statuses []struct {
		Status string `json:"status"`
	} `json:"statuses"`
	Status     string `json:"status"`
	Visibility string `json:"visibility"`
}

type driverLine struct {
	Event string          `json:"event"`
	A     json.RawMessage `json:"a"`
	Hook  struct {
		Status string   `json:"status"`
		Seqs   []uint64 `json:"seqs"`
		Text   string   `json:"text"`
	} `json:"hook"`
	B struct {
		Status string `json:"status"`
		Error  struct {
			Code    string `json:"code"`
			Status  int    `json:"status"`
			Message string `json:"message"`
		} `json:"error"`
	} `json:"b"`
}

// TestBrowserExactlyOnceThroughEveryFlip: a producer sends 200 messages
// (ai.message chunk streams sharing one requestId per answer, on the
// PartyKit-compatible path, and video.asset.ready on /v1/broadcast) while
// the test moves every channel legacy -> shadow -> dual -> realtime, pulls
// and releases the kill switch, and goes back to legacy. The page records
// each message exactly once and in order; its receipts appear in the
// gateway's figures; a second page with an expired grant shows the error;
// a third page, using the React hook, gets the same messages in the same
// order.
func TestBrowserExactlyOnceThroughEveryFlip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	root, err := partykitdev.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	web := filepath.Join(root, "web")
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	need(t, chromium, "apt-get install chromium")
	need(t, filepath.Join(web, "node_modules", "playwright-core"), "npm ci in web/")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed")
	}

	// The page: the built package (tsc), bundled with the page by esbuild.
	run(ctx, t, web, node, "node_modules/typescript/bin/tsc", "-p", "tsconfig.json")
	assets := t.TempDir()
	run(ctx, t, web, filepath.Join(web, "node_modules", ".bin", "esbuild"), "e2e/page.ts", "--bundle", "--format=esm",
		"--platform=browser", "--target=es2022", `--define:process.env.NODE_ENV="production"`, "--outfile="+filepath.Join(assets, "page.js"))
	index, err := os.ReadFile(filepath.Join(web, "e2e", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	var pageCfg []byte
	var pageMu sync.Mutex
	pages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/index.html":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write(index)
		case "/page.js":
			http.ServeFile(w, r, filepath.Join(assets, "page.js"))
		case "/config.json":
			pageMu.Lock()
			defer pageMu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(pageCfg)
		default:
			http.NotFound(w, r)
		}
	}))
	defer pages.Close()

	// The upstreams: real PartyKit and Inngest dev servers.
	partyURL := partykitdev.Start(t)
	inngestURL := startInngest(ctx, t, root)

	// The gateway, sequenced, every channel at legacy.
	dir := t.TempDir()
	flagPath := filepath.Join(dir, "flags.json")
	if err := os.WriteFile(flagPath, []byte(flagFile(phases[0])), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := fmt.Sprintf(`env: test
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
flags: {provider: file, file: flags.json, pollInterval: 100ms}
channels:
  - {name: video-ready, events: [video.asset.ready]}
  - {name: ai-stream, events: [ai.message]}
apps:
  ai-hero:
    apiKeys: [%q]
    party: {url: %q, party: main}
    realtime: {url: %q, channel: "{room}"}
    grantSecret: %q
    origins: [%q]
    sequence: true
shadow: {sampleRate: 0}
server: {shutdownTimeout: 5s}
`, apiKey, partyURL, inngestURL, grantSecret, pages.URL)
	cfgPath := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(cfgPath, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(cfg, nil, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gctx, stopGateway := context.WithCancel(context.Background())
	gdone := make(chan error, 1)
	go func() { gdone <- g.Run(gctx) }()
	defer func() {
		stopGateway()
		if err := <-gdone; err != nil {
			t.Errorf("gateway Run: %v", err)
		}
	}()

	now := time.Now()
	pageMu.Lock()
	pageCfg, _ = json.Marshal(map[string]any{
		"gateway": g.PublicURL(), "app": "ai-hero", "room": room,
		"host": strings.TrimPrefix(partyURL, "http://"),
		"grants": map[string]string{
			"a": grant([]string{room}, now, 10*time.Minute),
			"b": grant([]string{room}, now.Add(-20*time.Minute), 10*time.Minute), // expired 10 minutes ago
		},
	})
	pageMu.Unlock()

	// The browser.
	drv := exec.CommandContext(ctx, node, filepath.Join(web, "e2e", "drive.mjs"), pages.URL)
	drv.Dir = web
	drv.Env = append(os.Environ(), "CHROMIUM="+chromium)
	stdin, _ := drv.StdinPipe()
	stdout, _ := drv.StdoutPipe()
	var stderr bytes.Buffer
	drv.Stderr = &stderr
	if err := drv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = drv.Process.Kill()
		_ = drv.Wait()
		if t.Failed() {
			t.Logf("browser driver stderr:\n%s", stderr.String())
		}
	}()
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<20), 16<<20)
	next := func(want string) driverLine {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("browser driver ended before %q: %v\nstderr:\n%s", want, lines.Err(), stderr.String())
		}
		var l driverLine
		if err := json.Unmarshal(lines.Bytes(), &l); err != nil || l.Event != want {
			t.Fatalf("browser driver said %s, want event %q (%v)", lines.Text(), want, err)
		}
		return l
	}
	ready := next("ready")
	t.Logf("page a ready: %s", ready.A)
	if b := ready.B; b.Status != "error" || b.Error.Code != "unauthorized" || b.Error.Status != 401 || !strings.Contains(b.Error.Message, "expired") {
		t.Errorf("page with an expired grant: status %q error %+v, want error, unauthorized, 401, a message naming the expiry", b.Status, b.Error)
	} else {
		t.Logf("page b (expired grant): status %s, %d %s: %q", b.Status, b.Error.Status, b.Error.Code, b.Error.Message)
	}

	// The producer, flipping the stages as it goes.
	sent := produce(ctx, t, g, flagPath)

	fmt.Fprintf(stdin, "expect %d\n", total)
	var res pageResult
	result := next("result")
	if err := json.Unmarshal(result.A, &res); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, res, sent)
	// The React hook, on a third page of the same room, saw the same.
	var want []uint64
	for _, r := range res.Records {
		want = append(want, r.Seq)
	}
	if h := result.Hook; !slices.Equal(h.Seqs, want) || (h.Status != "open" && h.Status != "fallback") {
		t.Errorf("useSwitchyardRoom page: status %q, %d messages (%q); want the %d of page a in the same order", h.Status, len(h.Seqs), h.Text, len(want))
	} else {
		t.Logf("useSwitchyardRoom page: status %s, %q", h.Status, h.Text)
	}
	checkReceipts(ctx, t, g, res)
}

// sentMessage is what the producer sent, in order.
type sentMessage struct {
	n     int
	name  string
	reqID string
}

// produce sends total messages, moving through phases on the way: about
// total/len(phases) messages per phase. It waits for each flip to take
// effect in the gateway before sending on, except the kill switch, which
// is pulled while a chunk stream is being sent.
func produce(ctx context.Context, t *testing.T, g *gateway.Gateway, flagPath string) []sentMessage {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	post := func(url, auth, body string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("publish %s: %d %s", url, resp.StatusCode, b)
		}
	}
	flip := func(p phase, wait bool) {
		t.Helper()
		if err := flags.WriteAtomic(flagPath, []byte(flagFile(p))); err != nil {
			t.Fatal(err)
		}
		if !wait {
			return
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := g.Resolver().Resolve(broadcast.RouteQuery{App: "ai-hero", Room: room, Channel: "ai-stream", Event: "ai.message"})
			want := p.stage
			if p.kill {
				want = broadcast.StageLegacy
			}
			if r.Stage == want && r.KillSwitch == p.kill {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("flip to %+v not in effect after 10s (route %+v)", p, r)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var sent []sentMessage
	per := total / len(phases)
	stream := 0
	for i := 0; i < total; i++ {
		if i > 0 && i%per == 0 && i/per < len(phases) {
			p := phases[i/per]
			flip(p, !p.kill && !phases[i/per-1].kill)
		}
		if i%5 == 0 {
			// A video event on the broadcast API (its own requestId).
			id := fmt.Sprintf("video-%d", i)
			post(g.PublicURL()+"/v1/broadcast", apiKey, fmt.Sprintf(`{"room":%q,"name":"video.asset.ready","requestId":%q,"body":{"n":%d}}`, room, id, i))
			sent = append(sent, sentMessage{n: i, name: "video.asset.ready", reqID: id})
			stream++
		} else {
			// A chunk of the current answer on the drop-in path: every chunk
			// of one answer shares its requestId, as the apps send them.
			id := fmt.Sprintf("answer-%d", stream)
			post(g.PublicURL()+"/apps/ai-hero/party/"+room, "", fmt.Sprintf(`{"body":"[%d] token","requestId":%q,"name":"ai.message"}`, i, id))
			sent = append(sent, sentMessage{n: i, name: "ai.message", reqID: id})
		}
		time.Sleep(40 * time.Millisecond) // pacing, not synchronisation: a stream of chunks
	}
	return sent
}

// numberOf reads the producer's message number out of a body.
func numberOf(t *testing.T, r record) int {
	t.Helper()
	var s string
	if json.Unmarshal(r.Body, &s) == nil {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(s, "["), "] token"))
		if err == nil {
			return n
		}
	}
	var v struct {
		N *int `json:"n"`
	}
	if json.Unmarshal(r.Body, &v) == nil && v.N != nil {
		return *v.N
	}
	t.Fatalf("record %+v has no message number", r)
	return -1
}

func checkExactlyOnce(t *testing.T, res pageResult, sent []sentMessage) {
	t.Helper()
	if len(res.Records) != len(sent) {
		t.Errorf("page recorded %d messages, producer sent %d", len(res.Records), len(sent))
	}
	seen := map[string]bool{}
	for i, r := range res.Records {
		if seen[r.ID] {
			t.Errorf("record %d: message %s delivered twice", i, r.ID)
		}
		seen[r.ID] = true
		if i >= len(sent) {
			continue
		}
		if n := numberOf(t, r); n != sent[i].n || r.Name != sent[i].name || r.RequestID != sent[i].reqID {
			t.Errorf("record %d is message %d (%s, %s), want %d (%s, %s): out of order", i, n, r.Name, r.RequestID, sent[i].n, sent[i].name, sent[i].reqID)
		}
		if i > 0 && r.Epoch == res.Records[i-1].Epoch && r.Seq != res.Records[i-1].Seq+1 {
			t.Errorf("record %d has seq %d after %d", i, r.Seq, res.Records[i-1].Seq)
		}
		if r.Late {
			t.Errorf("record %d (seq %d) was delivered late", i, r.Seq)
		}
	}
	if res.Stats.Gaps != 0 || res.Stats.Late != 0 {
		t.Errorf("page stats %+v: want no gap and nothing late", res.Stats)
	}
	if res.Status != "open" && res.Status != "fallback" {
		t.Errorf("page a ends in status %q", res.Status)
	}

	// Per flip: which transport delivered, and the copies suppressed.
	copies := map[string]map[string]int{}
	for _, c := range res.Copies {
		if copies[c.ID] == nil {
			copies[c.ID] = map[string]int{}
		}
		copies[c.ID][c.Transport]++
	}
	type seg struct {
		label                   string
		n, legacy, rt, both, dp int
	}
	var segs []seg
	dups := 0
	for _, r := range res.Records {
		label := string(r.Stage)
		if r.KillSwitch {
			label = "legacy (kill switch)"
		}
		if len(segs) == 0 || segs[len(segs)-1].label != label {
			segs = append(segs, seg{label: label})
		}
		s := &segs[len(segs)-1]
		s.n++
		if r.Transport == "legacy" {
			s.legacy++
		} else {
			s.rt++
		}
		c := copies[r.ID]
		if c["legacy"] > 0 && c["realtime"] > 0 {
			s.both++
		}
		s.dp += c["legacy"] + c["realtime"] - 1
		dups += c["legacy"] + c["realtime"] - 1
	}
	t.Logf("%-22s %5s %18s %18s %18s %12s", "phase (envelope)", "msgs", "first via PartyKit", "first via realtime", "copies on both", "suppressed")
	for _, s := range segs {
		t.Logf("%-22s %5d %18d %18d %18d %12d", s.label, s.n, s.legacy, s.rt, s.both, s.dp)
	}
	t.Logf("total: %d delivered once each, in order; %d duplicate copies suppressed; %d lost (gaps); tokens %d, realtime_disabled answers %d; statuses %v",
		len(res.Records), dups, res.Stats.Gaps, res.Stats.Tokens, res.Stats.Disabled, res.Statuses)
	if dups != res.Stats.Duplicates {
		t.Errorf("copies say %d duplicates, the client counted %d", dups, res.Stats.Duplicates)
	}
	var labels []string
	for _, s := range segs {
		labels = append(labels, s.label)
	}
	want := []string{"legacy", "shadow", "dual", "realtime", "legacy (kill switch)", "realtime", "dual", "shadow", "legacy"}
	if !slices.Equal(labels, want) {
		t.Errorf("phases seen by the page %v, want %v", labels, want)
	}
	for _, s := range segs {
		switch s.label {
		case "shadow", "dual":
			if s.both < s.n/2 {
				t.Errorf("phase %s: only %d of %d messages came on both transports", s.label, s.both, s.n)
			}
		case "realtime":
			if s.rt != s.n {
				t.Errorf("phase realtime: %d of %d messages delivered by realtime", s.rt, s.n)
			}
		default:
			if s.legacy != s.n {
				t.Errorf("phase %s: %d of %d messages delivered by PartyKit", s.label, s.legacy, s.n)
			}
		}
	}
}

func checkReceipts(ctx context.Context, t *testing.T, g *gateway.Gateway, res pageResult) {
	t.Helper()
	if res.Stats.Receipts.Sent != len(res.Records) || res.Stats.Receipts.Failed != 0 {
		t.Errorf("page receipts %+v, want %d sent and none failed", res.Stats.Receipts, len(res.Records))
	}
	both := 0
	copies := map[string]map[string]bool{}
	for _, c := range res.Copies {
		if copies[c.ID] == nil {
			copies[c.ID] = map[string]bool{}
		}
		copies[c.ID][c.Transport] = true
	}
	for _, c := range copies {
		if c["legacy"] && c["realtime"] {
			both++
		}
	}
	resp, err := http.Get(g.AdminURL() + "/v1/admin/receipts/summary")
	if err != nil {
		t.Fatal(err)
	}
	var doc receipts.Summary
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var msgs int64
	via := map[receipts.Via]int64{}
	for _, c := range doc.Channels {
		t.Logf("receipts %s/%s: %d messages, via %v, received %.1f %%, legacy p50/p99 %.1f/%.1f ms, realtime p50/p99 %.1f/%.1f ms",
			c.App, c.Channel, c.Messages, c.Via, *c.ReceivedPercent, c.LegacyLatency.P50Ms, c.LegacyLatency.P99Ms, c.RealtimeLatency.P50Ms, c.RealtimeLatency.P99Ms)
		if c.App != "ai-hero" || (c.Channel != "ai-stream" && c.Channel != "video-ready") {
			t.Errorf("receipts row for %s/%s", c.App, c.Channel)
		}
		msgs += c.Messages
		for v, n := range c.Via {
			via[v] += n
		}
	}
	if msgs != int64(len(res.Records)) || via[receipts.ViaNeither] != 0 || via[receipts.ViaBoth] != int64(both) {
		t.Errorf("gateway's receipts: %d messages, via %v; want %d, none neither, %d both", msgs, via, len(res.Records), both)
	}
	// The same figures in the metrics and on the status page.
	resp, err = http.Get(g.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`switchyard_browser_receipts_total{app="ai-hero",channel="ai-stream",via="both"} %d`, countVia(doc, "ai-stream", receipts.ViaBoth)),
		`switchyard_browser_receive_latency_seconds_count{app="ai-hero",channel="ai-stream",transport="realtime"}`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	resp, err = http.Get(g.AdminURL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `class="receipt-row" data-app="ai-hero" data-channel="ai-stream"`) {
		t.Error("the status page shows no receipts row for ai-hero/ai-stream")
	}
	_ = ctx
}

func countVia(doc receipts.Summary, channel string, v receipts.Via) int64 {
	for _, c := range doc.Channels {
		if c.Channel == channel {
			return c.Via[v]
		}
	}
	return 0
}
