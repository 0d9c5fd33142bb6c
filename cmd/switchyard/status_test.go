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
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/demo"
	"github.com/switchyard/switchyard/gateway"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime/realtimetest"
	"github.com/switchyard/switchyard/shadow"
	"github.com/switchyard/switchyard/status"
)

// statusGateway is an in-process gateway (like the demo's) with embedded
// PartyKit and Inngest Realtime test servers; the realtime server alters
// the messages of the transcript topic, so transcript shows mismatches.
type statusGateway struct {
	g        *gateway.Gateway
	flagFile string
	sent     int // batches sent, for unique requestIds
}

// startStatusGateway builds and runs a gateway with demo.Flags (video-upload
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
	writeStatusFlags(t, flagFile, demo.Flags)
	cfg, err := demo.Config(flagFile, party.URL(), rt.URL())
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
	req.Header.Set("Authorization", "Bearer "+demo.Key)
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
	base := sg.g.PublicURL()
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
		for _, s := range sg.g.Comparator().Summary() {
			switch s.Channel {
			case "video-ready":
				ready = s.Outcomes[shadow.OutcomeMatch] >= 3 && s.LatencyDelta.Count > 0
			case "transcript":
				mismatched = s.Outcomes[shadow.OutcomeMismatch] >= 2
			}
		}
		if ready && mismatched && len(sg.g.Comparator().Mismatches(1)) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("comparator did not judge enough messages within 30s: %+v", sg.g.Comparator().Summary())
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

func parityOf(t *testing.T, g *gateway.Gateway, channel string) string {
	t.Helper()
	for _, s := range g.Comparator().Summary() {
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
	url := sg.g.AdminURL() + "/"

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
	writeStatusFlags(t, sg.flagFile, strings.Replace(demo.Flags, `"on": true, "off": false}, "defaultVariant": "off"`, `"on": true, "off": false}, "defaultVariant": "on"`, 1))
	deadline := time.Now().Add(15 * time.Second)
	for !sg.g.Resolver().Resolve(broadcast.RouteQuery{App: "ai-hero", Room: status.Room, Channel: "ai-stream"}).KillSwitch {
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
	url := sg.g.AdminURL() + "/"

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
	if row := channelRow(t, dom, "ai-hero", "video-ready"); !regexp.MustCompile(`class="coverage coverage-\w+">\d+\.\d %`).MatchString(row) {
		t.Errorf("video-ready row shows no coverage figure:\n%s", row)
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
			time.Sleep(status.SampleEvery) // real time between renders, for the picture's sparklines
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
