// Package demo runs the embedded demo: a gateway on loopback in front of
// the in-process PartyKit and Inngest Realtime test servers, realistic
// course-platform traffic through both API paths, and a live per-channel
// table. It needs no outside service.
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/gateway"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

// Key is the demo app's API key; it exists only inside the demo process.
// Key is the demo app's API key.
const Key = "demo-key-0123456789abcdef"

// Flags puts each demo channel at a different stage: video-upload
// legacy, video-ready shadow, transcript shadow (with the realtime test
// server altering its messages, so mismatches show), ai-stream dual, and
// events of no channel realtime.
const Flags = `{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "realtime-killswitch": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"},
    "realtime-video-upload": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "legacy"},
    "realtime-video-ready": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "shadow"},
    "realtime-transcript": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "shadow"},
    "realtime-ai-stream": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "dual"},
    "realtime-default": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "realtime"}
  }
}
`

// channels are the channels of the demo (the ones of configs/dev.yaml).
var channels = []config.Channel{
	{Name: "video-upload", Events: []string{"video.asset.attached", "video.asset.detached", "videoResource.created"}},
	{Name: "video-ready", Events: []string{"video.asset.ready", "video.asset.errored"}},
	{Name: "transcript", Events: []string{"transcript.ready", "transcriptWithScreenshots.ready"}},
	{Name: "ai-stream", Events: []string{"ai.message"}},
}

// Options are the demo's settings (the flags of `switchyard demo`).
type Options struct {
	// Duration is how long traffic is sent; Rate is roughly how many
	// messages a second; Every is the table's refresh period. All must be
	// positive.
	Duration time.Duration
	Rate     int
	Every    time.Duration
	// LogFile is where the gateway's logs go; empty creates a fresh file
	// in the temporary directory, so two demos never share one.
	LogFile string
	// Version is shown by the gateway's status page.
	Version string
	// Logger, when set, is called with the demo's logger once it is built
	// (the binary relays libraries' stderr lines through it).
	Logger func(*zap.Logger)
}

// Validate reports the first bad option.
func (o Options) Validate() error {
	if o.Duration <= 0 || o.Rate <= 0 || o.Every <= 0 {
		return errors.New("--duration, --rate and --every must be positive")
	}
	return nil
}

// Run starts the gateway on loopback with embedded PartyKit and Inngest
// Realtime test servers, sends realistic course-platform traffic through
// both API paths for o.Duration, and prints a live per-channel table to
// stdout. It returns when the traffic ended and the gateway stopped, or
// ctx ended.
func Run(ctx context.Context, o Options, stdout io.Writer) error {
	if err := o.Validate(); err != nil {
		return err
	}
	duration, rate, every := &o.Duration, &o.Rate, &o.Every

	party := partytest.New().Start()
	defer party.Close()
	rt := realtimetest.NewServer(realtimetest.Config{PingInterval: 15 * time.Second})
	defer rt.Close()
	// Make the realtime side differ on one channel, so a newcomer sees what
	// a mismatch looks like.
	rt.SetDeliveryFault(realtimetest.DeliveryFault{AlterTopic: "transcript"})

	dir, err := os.MkdirTemp("", "switchyard-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	flagFile := filepath.Join(dir, "flags.json")
	if err := os.WriteFile(flagFile, []byte(Flags), 0o644); err != nil {
		return err
	}
	cfg, err := Config(flagFile, party.URL(), rt.URL())
	if err != nil {
		return err
	}
	// Logs go to a file so the table stays readable; mismatch lines are
	// worth a look there.
	logFile, err := openLog(o.LogFile)
	if err != nil {
		return err
	}
	defer logFile.Close()
	logPath := logFile.Name()
	logger, err := gateway.NewLogger(config.Log{Level: "info", Format: "console"}, logFile)
	if err != nil {
		return err
	}
	if o.Logger != nil {
		o.Logger(logger)
	}
	g, err := gateway.New(cfg, logger, gateway.Options{Version: o.Version})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- g.Run(runCtx) }()

	fmt.Fprintf(stdout, "switchyard demo: gateway %s, admin %s (status page: %s/)\n", g.PublicURL(), g.AdminURL(), g.AdminURL())
	fmt.Fprintf(stdout, "stages: video-upload=legacy video-ready=shadow transcript=shadow(realtime altered) ai-stream=dual other=realtime\n")
	fmt.Fprintf(stdout, "logs: %s\nsending course-platform traffic for %s...\n\n", logPath, *duration)

	st := newDemoStats()
	trafficCtx, stopTraffic := context.WithTimeout(runCtx, *duration)
	defer stopTraffic()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); demoTraffic(trafficCtx, g.PublicURL(), *rate, st) }()

	tick := time.NewTicker(*every)
	defer tick.Stop()
loop:
	for {
		select {
		case <-trafficCtx.Done():
			break loop
		case <-tick.C:
			printDemoTable(stdout, g, st)
		}
	}
	wg.Wait()
	// Let the comparator decide the last messages (missing after timeout).
	select {
	case <-time.After(cfg.Shadow.Timeout + 500*time.Millisecond):
	case <-ctx.Done():
	}
	fmt.Fprintln(stdout, "final:")
	printDemoTable(stdout, g, st)
	stop()
	if err := <-done; err != nil {
		return err
	}
	if st.total() == 0 {
		return errors.New("no message was sent")
	}
	logger.Info("demo finished", zap.Int("sent", st.total()))
	return nil
}

// demoStats are the client-side figures per channel.
type demoStats struct {
	mu   sync.Mutex
	rows map[string]*demoRow
}

type demoRow struct {
	sent, ok, errors int
	latencies        []time.Duration
}

func newDemoStats() *demoStats { return &demoStats{rows: map[string]*demoRow{}} }

func (s *demoStats) record(channel string, d time.Duration, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rows[channel]
	if r == nil {
		r = &demoRow{}
		s.rows[channel] = r
	}
	r.sent++
	if ok {
		r.ok++
		r.latencies = append(r.latencies, d)
	} else {
		r.errors++
	}
}

func (s *demoStats) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.rows {
		n += r.sent
	}
	return n
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func channelOfEvent(ev string) string {
	for _, ch := range channels {
		if slices.Contains(ch.Events, ev) {
			return ch.Name
		}
	}
	return "default"
}

func printDemoTable(w io.Writer, g *gateway.Gateway, st *demoStats) {
	parity := map[string]shadowRow{}
	for _, s := range demoShadowRows(g) {
		parity[s.channel] = s
	}
	st.mu.Lock()
	names := make([]string, 0, len(st.rows))
	for n := range st.rows {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "channel\tstage\tsent\tdelivered\terrors\tp50 ms\tp99 ms\tcompared\tparity %\tmismatch\tmissing\t")
	for _, n := range names {
		r := st.rows[n]
		p := parity[n]
		par := "-"
		if p.compared > 0 {
			par = fmt.Sprintf("%.1f", p.parity)
		}
		stage := g.Resolver().Resolve(broadcast.RouteQuery{App: "ai-hero", Room: "demo", Channel: n}).Stage
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.2f\t%.2f\t%d\t%s\t%d\t%d\t\n", n, stage, r.sent, r.ok, r.errors,
			ms(percentile(r.latencies, 0.5)), ms(percentile(r.latencies, 0.99)), p.compared, par, p.mismatch, p.missing)
	}
	st.mu.Unlock()
	_ = tw.Flush()
	fmt.Fprintln(w)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Config is the demo's gateway config: loopback on free ports, the
// demo channels, the app ai-hero in front of the given upstreams, every
// shadowed message compared.
func Config(flagFile, partyURL, realtimeURL string) (*config.Config, error) {
	var chans strings.Builder
	for _, ch := range channels {
		evs, _ := json.Marshal(ch.Events)
		fmt.Fprintf(&chans, "  - {name: %s, events: %s}\n", ch.Name, evs)
	}
	return config.Parse([]byte(fmt.Sprintf(`
env: dev
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
log: {level: warn, format: console}
flags: {provider: file, file: %q, pollInterval: 500ms}
channels:
%sapps:
  ai-hero:
    apiKeys: [%q]
    party: {url: %q, party: main}
    realtime: {url: %q, channel: "{room}"}
shadow: {sampleRate: 1.0, timeout: 2s}
`, flagFile, chans.String(), Key, partyURL, realtimeURL)), func(string) string { return "" })
}

// demoTraffic sends video-upload flows, AI chat streams and odd events
// through both API paths until ctx ends.
func demoTraffic(ctx context.Context, base string, rate int, st *demoStats) {
	client := &http.Client{Timeout: 10 * time.Second}
	gap := time.Second / time.Duration(rate)
	videoRooms := []string{"video-1", "video-2", "video-3", "video-4"}
	chatRooms := []string{"chat-1", "chat-2"}
	send := func(path string, body any, event string) {
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(b))
		if err != nil {
			return
		}
		if strings.HasPrefix(path, "/v1/") {
			req.Header.Set("Authorization", "Bearer "+Key)
		}
		start := time.Now()
		resp, err := client.Do(req)
		if ctx.Err() != nil {
			return
		}
		ok := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		st.record(channelOfEvent(event), time.Since(start), ok)
		select {
		case <-ctx.Done():
		case <-time.After(gap):
		}
	}
	for n := 0; ctx.Err() == nil; n++ {
		room := videoRooms[n%len(videoRooms)]
		vid := fmt.Sprintf("vid-%d", n)
		// Video upload flow, through the PartyKit-compatible path.
		send("/apps/ai-hero/party/"+room, map[string]any{"body": map[string]any{"id": vid, "status": "attached"}, "requestId": vid + "-a", "name": "video.asset.attached"}, "video.asset.attached")
		send("/apps/ai-hero/party/"+room, map[string]any{"body": map[string]any{"id": vid, "title": "Lesson " + vid}, "requestId": vid + "-c", "name": "videoResource.created"}, "videoResource.created")
		ready := "video.asset.ready"
		if rand.IntN(10) == 0 {
			ready = "video.asset.errored"
		}
		// Then the broadcast API.
		send("/v1/broadcast", map[string]any{"room": room, "name": ready, "requestId": vid + "-r", "body": map[string]any{"id": vid, "duration": 312.5, "playbackId": "pb-" + vid}}, ready)
		send("/v1/broadcast", map[string]any{"room": room, "name": "transcript.ready", "requestId": vid + "-t", "body": map[string]any{"id": vid, "text": "Welcome to the lesson."}}, "transcript.ready")
		send("/v1/broadcast", map[string]any{"room": room, "name": "image.resource.created", "requestId": vid + "-i", "body": map[string]any{"id": "img-" + vid}}, "image.resource.created")
		// An AI answer streamed in chunks, one POST per chunk, in order.
		chat := chatRooms[n%len(chatRooms)]
		rid := fmt.Sprintf("chat-%d", n)
		for i, chunk := range []string{"Sure", ", here", " is", " how", " it", " works."} {
			send("/v1/broadcast", map[string]any{"room": chat, "name": "ai.message", "requestId": fmt.Sprintf("%s-%d", rid, i), "body": chunk}, "ai.message")
		}
	}
}

// shadowRow is the comparator's view of one channel, for the demo table.
type shadowRow struct {
	channel           string
	compared          int64
	parity            float64
	mismatch, missing int64
}

func demoShadowRows(g *gateway.Gateway) []shadowRow {
	var out []shadowRow
	for _, s := range g.Comparator().Summary() {
		r := shadowRow{channel: s.Channel, compared: s.Compared}
		if s.ParityPercent != nil {
			r.parity = *s.ParityPercent
		}
		for o, n := range s.Outcomes {
			if o.Differs() {
				r.mismatch += n
			}
			if o.Missing() {
				r.missing += n
			}
		}
		out = append(out, r)
	}
	return out
}

// openLog opens path for the demo's logs (truncating it), or with path
// empty a new file switchyard-demo-*.log in the temporary directory.
func openLog(path string) (*os.File, error) {
	if path == "" {
		return os.CreateTemp("", "switchyard-demo-*.log")
	}
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
}
