package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime/realtimetest"
	"github.com/switchyard/switchyard/shadow"
)

// statusGateway is an in-process gateway (like the demo's) with embedded
// PartyKit and Inngest Realtime test servers; the realtime server alters
// the messages of the transcript topic, so transcript shows mismatches.
type statusGateway struct {
	g        *gateway
	flagFile string
	sent     int // batches sent, for unique requestIds
}

// startStatusGateway builds and runs a gateway with demoFlags (video-upload
// legacy, video-ready and transcript shadow, ai-stream dual, default
// realtime) and stops it on cleanup.
func startStatusGateway(t *testing.T) *statusGateway {
	t.Helper()
	party := partytest.MustStart(t)
	rt := realtimetest.NewServer(realtimetest.Config{PingInterval: 15 * time.Second})
	t.Cleanup(rt.Close)
	rt.SetDeliveryFault(realtimetest.DeliveryFault{AlterTopic: "transcript"})

	dir := t.TempDir()
	flagFile := filepath.Join(dir, "flags.json")
	writeStatusFlags(t, flagFile, demoFlags)
	cfg, err := demoConfig(flagFile, party.URL(), rt.URL())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.Flags.PollInterval = 200 * time.Millisecond
	cfg.Shadow.Timeout = time.Second
	g, _ := runGateway(t, cfg, zap.NewNop())
	return &statusGateway{g: g, flagFile: flagFile}
}

// writeStatusFlags replaces the flag file atomically, so the provider's
// poll never reads half a file.
func writeStatusFlags(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// statusBroadcast posts one message through the broadcast API and requires
// a 200.
func statusBroadcast(t *testing.T, base, room, event, requestID string, body any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"room": room, "name": event, "requestId": requestID, "body": body})
	req, err := http.NewRequest(http.MethodPost, base+"/v1/broadcast", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+demoKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("broadcast %s: %v", event, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("broadcast %s: status %d: %s", event, resp.StatusCode, rb)
	}
}

// sendStatusBatch sends one message of each channel.
func (sg *statusGateway) sendStatusBatch(t *testing.T) {
	t.Helper()
	base := sg.g.publicURL()
	n := sg.sent
	sg.sent++
	room := fmt.Sprintf("video-%d", n%2)
	id := fmt.Sprintf("v%d", n)
	statusBroadcast(t, base, room, "video.asset.ready", id+"-r", map[string]any{"id": id, "duration": 312.5})
	statusBroadcast(t, base, room, "transcript.ready", id+"-t", map[string]any{"id": id, "text": "Welcome <b>to</b> the lesson."})
	statusBroadcast(t, base, room, "video.asset.attached", id+"-a", map[string]any{"id": id})
	statusBroadcast(t, base, "chat-1", "ai.message", id+"-m", "chunk "+id)
	statusBroadcast(t, base, room, "image.resource.created", id+"-i", map[string]any{"id": "img-" + id})
}

// sendStatusTraffic sends messages of every channel until the comparator
// has judged some video-ready messages (matching) and some transcript ones
// (altered by the realtime test server) and kept a mismatch example.
func (sg *statusGateway) sendStatusTraffic(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		sg.sendStatusBatch(t)
		var ready, mismatched bool
		for _, s := range sg.g.cmp.Summary() {
			switch s.Channel {
			case "video-ready":
				ready = s.Outcomes[shadow.OutcomeMatch] >= 3 && s.LatencyDelta.Count > 0
			case "transcript":
				mismatched = s.Outcomes[shadow.OutcomeMismatch] >= 2
			}
		}
		if ready && mismatched && len(sg.g.cmp.Mismatches(1)) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("comparator did not judge enough messages within 30s: %+v", sg.g.cmp.Summary())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fetchStatus(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// channelRow returns the HTML of the status table row of app/channel.
func channelRow(t *testing.T, page, app, channel string) string {
	t.Helper()
	re := regexp.MustCompile(`(?s)<tr class="channel-row" data-app="` + regexp.QuoteMeta(app) + `" data-channel="` + regexp.QuoteMeta(channel) + `">(.*?)</tr>`)
	m := re.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no row for %s/%s in the page", app, channel)
	}
	return m[1]
}

func parityOf(t *testing.T, g *gateway, channel string) string {
	t.Helper()
	for _, s := range g.cmp.Summary() {
		if s.Channel == channel && s.ParityPercent != nil {
			return fmt.Sprintf("%.1f %%", *s.ParityPercent)
		}
	}
	t.Fatalf("no parity for %s", channel)
	return ""
}

func TestStatusPageRealGateway(t *testing.T) {
	sg := startStatusGateway(t)
	sg.sendStatusTraffic(t)
	url := sg.g.adminURL() + "/"

	// The comparator may still decide a pending message while the page is
	// fetched: the page must show the parity of before or after.
	parityBefore := map[string]string{}
	for _, ch := range []string{"video-ready", "transcript"} {
		parityBefore[ch] = parityOf(t, sg.g, ch)
	}
	code, hdr, page := fetchStatus(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET / = %d, want 200:\n%s", code, page)
	}
	if got, want := hdr.Get("Content-Type"), "text/html; charset=utf-8"; got != want {
		t.Errorf("Content-Type = %q, want %q", got, want)
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		`<svg id="delta-chart"`,
		`class="delta-bar"`,
		`<svg class="spark"`,
		`Kill switch: off`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "<script") || strings.Contains(page, `src="`) || strings.Contains(page, `<link`) {
		t.Errorf("page has a script or an external asset")
	}

	stages := map[string]broadcast.Stage{
		"video-upload": broadcast.StageLegacy, "video-ready": broadcast.StageShadow, "transcript": broadcast.StageShadow,
		"ai-stream": broadcast.StageDual, broadcast.DefaultChannel: broadcast.StageRealtime,
	}
	for ch, stage := range stages {
		row := channelRow(t, page, "ai-hero", ch)
		if want := fmt.Sprintf(`<span class="stage stage-%s">%s</span>`, stage, stage); !strings.Contains(row, want) {
			t.Errorf("row %s: want stage %s, row:\n%s", ch, stage, row)
		}
	}
	for _, ch := range []string{"video-ready", "transcript"} {
		row := channelRow(t, page, "ai-hero", ch)
		before, after := parityBefore[ch], parityOf(t, sg.g, ch)
		if !strings.Contains(row, before) && !strings.Contains(row, after) {
			t.Errorf("row %s: want parity %q (or %q), row:\n%s", ch, before, after, row)
		}
	}
	if row := channelRow(t, page, "ai-hero", "transcript"); !strings.Contains(row, "parity-bad") {
		t.Errorf("transcript row: altered messages should show a bad parity:\n%s", row)
	}
	// The mismatch diff: the realtime test server replaced the body.
	mm := regexp.MustCompile(`(?s)<div class="mm">.*?</div>`).FindAllString(page, -1)
	var found bool
	for _, m := range mm {
		if strings.Contains(m, "ai-hero / transcript") && strings.Contains(m, "<code>body</code>") && strings.Contains(m, "altered") {
			found = true
		}
	}
	if !found {
		t.Errorf("no transcript mismatch with a body diff among %d mismatch blocks:\n%s", len(mm), strings.Join(mm, "\n"))
	}
	// The payload's markup is escaped, not rendered.
	if strings.Contains(page, "<b>to</b>") {
		t.Errorf("message payload rendered as HTML")
	}

	// The kill switch: flip it in the flag file, the page says so and every
	// channel shows legacy.
	writeStatusFlags(t, sg.flagFile, strings.Replace(demoFlags, `"on": true, "off": false}, "defaultVariant": "off"`, `"on": true, "off": false}, "defaultVariant": "on"`, 1))
	deadline := time.Now().Add(15 * time.Second)
	for !sg.g.resolver.Resolve(broadcast.RouteQuery{App: "ai-hero", Room: statusRoom, Channel: "ai-stream"}).KillSwitch {
		if time.Now().After(deadline) {
			t.Fatalf("kill switch not in force 15s after the flag file edit")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, _, page = fetchStatus(t, url)
	if !strings.Contains(page, "Kill switch: ON") {
		t.Errorf("page does not show the kill switch on")
	}
	for ch := range stages {
		row := channelRow(t, page, "ai-hero", ch)
		if !strings.Contains(row, `stage-legacy">legacy</span> <span class="ks">kill switch</span>`) {
			t.Errorf("row %s with the kill switch on:\n%s", ch, row)
		}
	}
}

// fakeGatherer answers Gather with a fixed switchyard_flag_file_valid.
func fakeGatherer(t *testing.T, valid float64) prometheus.Gatherer {
	t.Helper()
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchyard_flag_file_valid", Help: "test"})
	reg.MustRegister(g)
	g.Set(valid)
	return reg
}

func TestStatusPageUnit(t *testing.T) {
	parity := 50.0
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	base := func() *statusPage {
		return &statusPage{
			env: "test", version: "v1", started: now.Add(-time.Hour), apps: []string{"ai-hero"},
			channels: []string{"transcript", "default"},
			resolve: func(q broadcast.RouteQuery) broadcast.Route {
				return broadcast.Route{Stage: broadcast.StageShadow, Channel: q.Channel, FlagKey: "realtime-" + q.Channel, Variant: "shadow", Reason: "STATIC"}
			},
			summary: func() []shadow.ChannelSummary {
				return []shadow.ChannelSummary{{
					App: "ai-hero", Channel: "transcript", Compared: 4, ParityPercent: &parity, JSParityPercent: &parity,
					Outcomes:     map[shadow.Outcome]int64{shadow.OutcomeMatch: 2, shadow.OutcomeMismatch: 2},
					LatencyDelta: shadow.LatencySummary{Count: 2, P50Ms: -3, P99Ms: 12},
				}}
			},
			mismatches: func(int) []shadow.MismatchExample { return nil },
			now:        func() time.Time { return now },
			log:        zap.NewNop(),
			tmpl:       statusTemplate,
			history:    map[string]*deltaHistory{},
		}
	}
	tests := []struct {
		name     string
		adjust   func(p *statusPage)
		want     []string
		dontWant []string
	}{
		{
			name: "figures",
			want: []string{`<span class="stage stage-shadow">shadow</span>`, `50.0 %`, `parity-bad`, `-3.0 / 12.0`, `class="delta-bar"`, `No mismatch`, `Kill switch: off`},
		},
		{
			name: "escapes everything from outside",
			adjust: func(p *statusPage) {
				p.mismatches = func(int) []shadow.MismatchExample {
					return []shadow.MismatchExample{{
						App: "ai-hero", Channel: "transcript", Name: `<script>alert(1)</script>`, Outcome: shadow.OutcomeMismatch,
						Realtime: []shadow.Difference{{Path: `body.<img src=x onerror=alert(2)>`, Kind: "changed", Want: `"a"`, Got: `"</code><script>x</script>"`}},
						Original: `{"body":"<iframe>"}`,
					}}
				}
			},
			want:     []string{`&lt;script&gt;alert(1)&lt;/script&gt;`, `&lt;img src=x onerror=alert(2)&gt;`, `&lt;iframe&gt;`, `realtime vs sent`},
			dontWant: []string{`<script>`, `<img`, `<iframe>`},
		},
		{
			name: "kill switch and route error",
			adjust: func(p *statusPage) {
				p.resolve = func(q broadcast.RouteQuery) broadcast.Route {
					return broadcast.Route{Stage: broadcast.StageLegacy, Channel: q.Channel, FlagKey: "realtime-killswitch", Variant: "on", KillSwitch: true}
				}
			},
			want: []string{`Kill switch: ON`, `2 of 2 app/channel rows forced to legacy`, `<span class="ks">kill switch</span>`},
		},
		{
			name:   "flag file refused",
			adjust: func(p *statusPage) { p.gatherer = fakeGatherer(t, 0) },
			want:   []string{`last edit REFUSED`},
		},
		{
			name:     "flag file valid",
			adjust:   func(p *statusPage) { p.gatherer = fakeGatherer(t, 1) },
			want:     []string{`id="flagfile"`, `valid`},
			dontWant: []string{`REFUSED`},
		},
		{
			name: "targeting noted",
			adjust: func(p *statusPage) {
				p.flagFile = filepath.Join(t.TempDir(), "flags.json")
				writeStatusFlags(t, p.flagFile, `{"flags": {"realtime-transcript": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow"}, "defaultVariant": "legacy",
					"targeting": {"fractional": [["legacy", 90], ["shadow", 10]]}}}}`)
			},
			want: []string{`targeting: other rooms may get another stage`, `default variant &#34;legacy&#34;`},
		},
		{
			name:   "unreadable flag file",
			adjust: func(p *statusPage) { p.flagFile = filepath.Join(t.TempDir(), "missing.json") },
			want:   []string{`class="err">flag file: open`},
		},
		{
			name: "no comparator data",
			adjust: func(p *statusPage) {
				p.summary = func() []shadow.ChannelSummary { return nil }
			},
			want:     []string{`no message has arrived on both transports yet`},
			dontWant: []string{`class="delta-bar"`, `<svg class="spark"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base()
			if tt.adjust != nil {
				tt.adjust(p)
			}
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d", rec.Code)
			}
			page := rec.Body.String()
			for _, w := range tt.want {
				if !strings.Contains(page, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, w := range tt.dontWant {
				if strings.Contains(page, w) {
					t.Errorf("page has %q", w)
				}
			}
		})
	}
}

func TestStatusPageHistoryIsBounded(t *testing.T) {
	now := time.Unix(0, 0)
	parity := 100.0
	p := &statusPage{
		apps: []string{"a"}, channels: []string{"c"},
		resolve: func(broadcast.RouteQuery) broadcast.Route { return broadcast.Route{Stage: broadcast.StageShadow} },
		summary: func() []shadow.ChannelSummary {
			return []shadow.ChannelSummary{{App: "a", Channel: "c", ParityPercent: &parity, LatencyDelta: shadow.LatencySummary{Count: 1, P50Ms: 1, P99Ms: 2}}}
		},
		mismatches: func(int) []shadow.MismatchExample { return nil },
		now:        func() time.Time { return now },
		log:        zap.NewNop(), tmpl: statusTemplate, history: map[string]*deltaHistory{},
	}
	for range 3 * statusHistory {
		p.build()
		p.build() // a second render inside the sample gap adds nothing
		now = now.Add(statusSampleEvery)
	}
	if got, want := len(p.history["a/c"].p99), statusHistory; got != want {
		t.Errorf("history length = %d, want %d", got, want)
	}
}

func TestFlagTargeting(t *testing.T) {
	tests := []struct {
		name          string
		data          string
		wantTargeting map[string]bool
		wantDefault   map[string]string
		wantErr       bool
	}{
		{"plain", `{"flags": {"realtime-a": {"defaultVariant": "shadow"}}}`, map[string]bool{"realtime-a": false}, map[string]string{"realtime-a": "shadow"}, false},
		{"targeting", `{"flags": {"realtime-a": {"defaultVariant": "legacy", "targeting": {"if": [true, "dual", null]}}}}`, map[string]bool{"realtime-a": true}, map[string]string{"realtime-a": "legacy"}, false},
		{"empty and null targeting", `{"flags": {"a": {"targeting": {}}, "b": {"targeting": null, "defaultVariant": null}}}`, map[string]bool{"a": false, "b": false}, map[string]string{}, false},
		{"not json", `{"flags": `, nil, nil, true},
		{"flags not an object", `{"flags": []}`, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotT, gotD, err := flagTargeting([]byte(tt.data))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if fmt.Sprint(gotT) != fmt.Sprint(tt.wantTargeting) || fmt.Sprint(gotD) != fmt.Sprint(tt.wantDefault) {
				t.Errorf("got %v %v, want %v %v", gotT, gotD, tt.wantTargeting, tt.wantDefault)
			}
		})
	}
}

func FuzzFlagTargeting(f *testing.F) {
	f.Add([]byte(demoFlags))
	f.Add([]byte(`{"flags": {"realtime-a": {"defaultVariant": "legacy", "targeting": {"fractional": [["legacy", 90], ["shadow", 10]]}}}}`))
	f.Add([]byte(`{"flags": null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		targeting, defaults, err := flagTargeting(data)
		if err != nil {
			return
		}
		for k := range defaults {
			if _, ok := targeting[k]; !ok {
				t.Errorf("flag %q has a default but no targeting entry", k)
			}
		}
	})
}

// findChromium returns the Chromium binary, or an error telling how to
// install it.
func findChromium() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("chromium not found in PATH: run `make test-deps` (installs Debian's chromium), or set SWITCHYARD_SKIP_BROWSER=1 to skip the browser test")
}

// runChromium runs headless Chromium with args after the common flags and
// returns its stdout.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	common := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,1600"}
	cmd := exec.CommandContext(ctx, bin, append(common, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\nstderr:\n%s", args, err, stderr.String())
	}
	return stdout.Bytes()
}

func TestStatusPageBrowser(t *testing.T) {
	if os.Getenv("SWITCHYARD_SKIP_BROWSER") == "1" {
		t.Skip("SWITCHYARD_SKIP_BROWSER=1")
	}
	bin, err := findChromium()
	if err != nil {
		t.Fatal(err)
	}
	sg := startStatusGateway(t)
	sg.sendStatusTraffic(t)
	url := sg.g.adminURL() + "/"

	dom := string(runChromium(t, bin, "--dump-dom", url))
	for _, want := range []string{
		`data-channel="video-ready"`, `data-channel="transcript"`, `data-channel="ai-stream"`, `data-channel="video-upload"`,
		`<svg id="delta-chart"`, `class="delta-bar"`, `Recent mismatches`, `Kill switch: off`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if row := channelRow(t, dom, "ai-hero", "video-ready"); !regexp.MustCompile(`\d+\.\d %`).MatchString(row) {
		t.Errorf("video-ready row shows no parity figure:\n%s", row)
	}

	update := os.Getenv("SWITCHYARD_UPDATE_SCREENSHOT") == "1"
	if update {
		// For the documentation picture: more traffic, and a few renders
		// spaced by the sampling gap so the sparklines have a history.
		for range 6 {
			for range 10 {
				sg.sendStatusBatch(t)
			}
			fetchStatus(t, url)
			time.Sleep(statusSampleEvery)
		}
	}
	shot := filepath.Join(t.TempDir(), "status-page.png")
	runChromium(t, bin, "--screenshot="+shot, url)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 1600 {
		t.Errorf("screenshot is %dx%d, want 1280x1600", b.Dx(), b.Dy())
	}
	if n := distinctColours(img, 64); n < 16 {
		t.Errorf("screenshot has %d distinct colours: blank page?", n)
	}
	if update {
		b, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "status-page.png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("updated docs/status-page.png")
	}
}

// distinctColours counts the distinct colours of img, stopping at limit.
func distinctColours(img image.Image, limit int) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
			if len(seen) >= limit {
				return len(seen)
			}
		}
	}
	return len(seen)
}
