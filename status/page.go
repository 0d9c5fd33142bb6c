// Package status renders the admin listener's status page ("/"): per app
// and channel the stage, the kill switch, shadow coverage (compared of
// sampled, unobserved by reason), parity and outcome counts,
// latency figures with an inline-SVG latency-delta chart, and the recent
// mismatches with their diffs. It takes typed inputs (Config), never the
// gateway itself.
package status

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/flags"
	"github.com/switchyard/switchyard/receipts"
	"github.com/switchyard/switchyard/shadow"
)

// Room is the representative room the status page resolves each
// channel's stage for. Targeting that splits a channel by room is noted
// on the page, since another room may get another stage.
const Room = "status-page"

// Status page tuning.
const (
	// statusMismatches is how many recent mismatch examples the page lists.
	statusMismatches = 10
	// SampleEvery is the shortest gap between two samples of the
	// latency-delta history; samples are taken when the page is rendered
	// (every 5 s while someone watches it), so no goroutine is needed.
	SampleEvery = 4 * time.Second
	// statusHistory is how many samples each sparkline keeps.
	statusHistory = 60
)

// Config is what the page reads. Every function must be safe for
// concurrent use; none may block on I/O.
type Config struct {
	// Env and Version are shown in the header; Started gives the uptime.
	Env, Version string
	// Instance names this replica (its host name) in the header, which
	// says that the page shows this replica only.
	Instance string
	Started  time.Time
	// Apps and Channels are the configured names; the page resolves a stage
	// for each pair (Channels should include broadcast.DefaultChannel).
	Apps, Channels []string
	// FlagFile is the local flag file the page reads for targeting notes;
	// empty when the provider does not read a local file.
	FlagFile string
	// Resolve decides a stage (the gateway's resolver).
	Resolve func(broadcast.RouteQuery) broadcast.Route
	// Summary and Mismatches are the comparator's figures.
	Summary    func() []shadow.ChannelSummary
	Mismatches func(limit int) []shadow.MismatchExample
	// Receipts is what users' browsers reported (nil: no section).
	Receipts func() []receipts.ChannelSummary
	// Gatherer is read for switchyard_flag_file_valid; nil hides it.
	Gatherer prometheus.Gatherer
	// Now is the clock (nil: time.Now); Log nil is a no-op logger.
	Now func() time.Time
	Log *zap.Logger
}

// New returns the status page handler: plain server-rendered HTML that
// refreshes itself every 5 s, no script, no external asset. The handler is
// safe for concurrent use; each request evaluates the flags once per app
// and channel through cfg.Resolve (so those decisions are counted like any
// other) and never blocks on I/O but reading the local flag file.
func New(cfg Config) http.Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &statusPage{
		env:        cfg.Env,
		version:    cfg.Version,
		instance:   cfg.Instance,
		started:    cfg.Started,
		apps:       cfg.Apps,
		channels:   cfg.Channels,
		flagFile:   cfg.FlagFile,
		resolve:    cfg.Resolve,
		summary:    cfg.Summary,
		mismatches: cfg.Mismatches,
		receipts:   cfg.Receipts,
		gatherer:   cfg.Gatherer,
		now:        cfg.Now,
		log:        cfg.Log,
		tmpl:       statusTemplate,
		history:    map[string]*deltaHistory{},
	}
}

// statusPage is the status page handler; see New.
type statusPage struct {
	env, version string
	instance     string
	started      time.Time
	apps         []string
	channels     []string
	flagFile     string
	resolve      func(broadcast.RouteQuery) broadcast.Route
	summary      func() []shadow.ChannelSummary
	mismatches   func(limit int) []shadow.MismatchExample
	receipts     func() []receipts.ChannelSummary
	gatherer     prometheus.Gatherer
	now          func() time.Time
	log          *zap.Logger
	tmpl         *template.Template

	mu         sync.Mutex // guards history and lastSample
	history    map[string]*deltaHistory
	lastSample time.Time
}

var _ http.Handler = (*statusPage)(nil)

// deltaHistory is a bounded list of latency-delta samples of one app and channel.
type deltaHistory struct {
	p50, p99 []float64 // milliseconds, oldest first
}

func (h *deltaHistory) add(p50, p99 float64) {
	h.p50 = append(h.p50, p50)
	h.p99 = append(h.p99, p99)
	if n := len(h.p50); n > statusHistory {
		h.p50 = slices.Delete(h.p50, 0, n-statusHistory)
		h.p99 = slices.Delete(h.p99, 0, n-statusHistory)
	}
}

// ServeHTTP renders the page into a buffer first, so a template error is a
// clean 500 instead of half a page.
func (p *statusPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	view := p.build()
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, view); err != nil {
		p.log.Error("status page render failed", zap.Error(err))
		http.Error(w, "status page: render failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// statusView is what the template renders.
type statusView struct {
	Env, Version, Generated, Uptime string
	Instance                        string
	KillSwitch                      bool
	KillSwitchNote                  string
	FlagFile                        string
	FlagFileValid                   string // "valid", "INVALID" or "" (unknown)
	FlagFileNote                    string
	Outcomes                        []shadow.Outcome // the compared outcomes, one column each
	Rows                            []statusRow
	Chart                           deltaChart
	Mismatches                      []mismatchView
	WindowSeconds                   float64
	// Receipts are the browsers' figures; ReceiptsOn hides the section
	// when the gateway collects none.
	Receipts       []receiptRow
	ReceiptsOn     bool
	ReceiptsWindow float64
}

// receiptRow is one app and channel as users' browsers reported it.
type receiptRow struct {
	App, Channel                    string
	Messages                        int64
	Legacy, Realtime, Both, Neither int64
	Received, ReceivedClass         string
	LegacyLatency, RealtimeLatency  string
}

// statusRow is one app and channel.
type statusRow struct {
	App, Channel    string
	Stage           broadcast.Stage
	FlagKey         string
	Variant, Reason string
	KillSwitch      bool
	Error           string
	Targeting       string // note when targeting may give other rooms another stage
	Compared        int64
	Sampled         int64
	Coverage        string // "98.5 %" or "-": compared / sampled
	CoverageClass   string // good, warn, bad or none
	Unobserved      []reasonCount
	Parity          string // "99.5 %" or "-"
	ParityClass     string // good, warn, bad or none
	JSParity        string
	Counts          []int64        // in the order of the compared outcomes
	Other           []outcomeCount // the other outcomes, when not zero
	Legacy          string         // "p50 / p99 ms"
	Realtime        string
	Delta           string
	Spark           sparkline
}

// sparkline is a small inline SVG of the latency-delta history.
type sparkline struct {
	P50, P99     string // polyline points
	Zero         float64
	LastX, LastY float64 // the latest p99 point, drawn as a dot
	Samples      int
}

// deltaChart is the latency-delta bar chart: p50 and p99 per channel,
// around a zero axis (left of it realtime is faster).
type deltaChart struct {
	Width, Height, Axis float64
	ScaleLabel          string
	Bars                []deltaBar
}

type deltaBar struct {
	Label            string
	Y, TextY         float64
	P50X, P50W       float64
	P99X, P99W       float64
	P50Text, P99Text string
}

type mismatchView struct {
	Time, App, Channel, Room, RequestID, Name string
	Stage                                     broadcast.Stage
	Outcome                                   shadow.Outcome
	Diffs                                     []diffView
	Original                                  string
}

type diffView struct {
	Side, Path, Kind, Want, Got string
}

// outcomeCount is one outcome's count in a row's "other" cell.
type outcomeCount struct {
	Outcome shadow.Outcome
	N       int64
}

// reasonCount is one unobserved reason's count in a row's coverage cell.
type reasonCount struct {
	Reason shadow.UnobservedReason
	N      int64
}

// splitOutcomes returns the outcomes that count as compared (one column
// each) and the others (which share one cell), in shadow's order.
func splitOutcomes() (compared, other []shadow.Outcome) {
	for _, o := range shadow.Outcomes() {
		if o.Compared() {
			compared = append(compared, o)
		} else {
			other = append(other, o)
		}
	}
	return compared, other
}

func (p *statusPage) build() statusView {
	statusOutcomes, otherOutcomes := splitOutcomes()
	now := p.now()
	v := statusView{
		Env: p.env, Version: p.version, Instance: p.instance, Generated: now.UTC().Format(time.RFC3339),
		Uptime: now.Sub(p.started).Truncate(time.Second).String(), Outcomes: statusOutcomes,
		FlagFile: p.flagFile,
	}
	targeting, defaults, ferr := p.readFlagFile()
	if ferr != nil {
		v.FlagFileNote = ferr.Error()
	}
	v.FlagFileValid = p.flagFileValid()

	summaries := map[[2]string]shadow.ChannelSummary{}
	var order [][2]string
	for _, s := range p.summary() {
		k := [2]string{s.App, s.Channel}
		summaries[k] = s
		order = append(order, k)
		v.WindowSeconds = max(v.WindowSeconds, s.WindowSeconds)
	}
	seen := map[[2]string]bool{}
	killed, resolvedRows := 0, 0
	addRow := func(app, channel string, resolved bool) {
		k := [2]string{app, channel}
		if seen[k] {
			return
		}
		seen[k] = true
		row := statusRow{App: app, Channel: channel, Parity: "-", ParityClass: "none", JSParity: "-", Legacy: "-", Realtime: "-", Delta: "-",
			Coverage: "-", CoverageClass: "none"}
		if resolved {
			resolvedRows++
			rt := p.resolve(broadcast.RouteQuery{App: app, Room: Room, Channel: channel})
			row.Stage, row.FlagKey, row.Variant, row.Reason = rt.Stage, rt.FlagKey, rt.Variant, rt.Reason
			row.KillSwitch, row.Error = rt.KillSwitch, rt.Error
			if rt.KillSwitch {
				v.KillSwitch = true
				killed++
			}
			fk := flags.FlagKey(channel)
			if targeting[fk] || targeting[flags.KillSwitchKey] {
				row.Targeting = fmt.Sprintf("targeting: other rooms may get another stage (shown: room %q; default variant %q)", Room, defaults[fk])
			}
		}
		s, ok := summaries[k]
		if ok {
			row.Compared, row.Sampled = s.Compared, s.Sampled
			if s.CoveragePercent != nil {
				row.Coverage = fmt.Sprintf("%.1f %%", *s.CoveragePercent)
				row.CoverageClass = coverageClass(*s.CoveragePercent)
			}
			for _, r := range shadow.UnobservedReasons() {
				if n := s.Unobserved[r]; n != 0 {
					row.Unobserved = append(row.Unobserved, reasonCount{Reason: r, N: n})
				}
			}
			if s.ParityPercent != nil {
				row.Parity = fmt.Sprintf("%.1f %%", *s.ParityPercent)
				row.ParityClass = parityClass(*s.ParityPercent)
			}
			if s.JSParityPercent != nil {
				row.JSParity = fmt.Sprintf("%.1f %%", *s.JSParityPercent)
			}
			row.Legacy = latencyText(s.LegacyLatency)
			row.Realtime = latencyText(s.RealtimeLatency)
			row.Delta = latencyText(s.LatencyDelta)
		}
		row.Counts = make([]int64, len(statusOutcomes))
		for i, o := range statusOutcomes {
			row.Counts[i] = s.Outcomes[o]
		}
		for _, o := range otherOutcomes {
			if n := s.Outcomes[o]; n != 0 {
				row.Other = append(row.Other, outcomeCount{Outcome: o, N: n})
			}
		}
		v.Rows = append(v.Rows, row)
	}
	for _, app := range p.apps {
		for _, ch := range p.channels {
			addRow(app, ch, true)
		}
	}
	// Channels the comparator saw outside the configuration ("unknown").
	for _, k := range order {
		addRow(k[0], k[1], false)
	}
	if v.KillSwitch {
		v.KillSwitchNote = fmt.Sprintf("%d of %d app/channel rows forced to legacy (PartyKit)", killed, resolvedRows)
	}
	p.sample(now, v.Rows, summaries)
	v.Chart = buildDeltaChart(v.Rows, summaries)

	if p.receipts != nil {
		v.ReceiptsOn = true
		for _, s := range p.receipts() {
			row := receiptRow{App: s.App, Channel: s.Channel, Messages: s.Messages,
				Legacy: s.Via[receipts.ViaLegacy], Realtime: s.Via[receipts.ViaRealtime],
				Both: s.Via[receipts.ViaBoth], Neither: s.Via[receipts.ViaNeither],
				Received: "-", ReceivedClass: "none",
				LegacyLatency:   latencyText(shadow.LatencySummary(s.LegacyLatency)),
				RealtimeLatency: latencyText(shadow.LatencySummary(s.RealtimeLatency))}
			if s.ReceivedPercent != nil {
				row.Received = fmt.Sprintf("%.1f %%", *s.ReceivedPercent)
				row.ReceivedClass = parityClass(*s.ReceivedPercent)
			}
			v.ReceiptsWindow = max(v.ReceiptsWindow, s.WindowSeconds)
			v.Receipts = append(v.Receipts, row)
		}
	}

	for _, m := range p.mismatches(statusMismatches) {
		mv := mismatchView{
			Time: m.Time.UTC().Format("15:04:05.000"), App: m.App, Channel: m.Channel, Room: m.Room,
			RequestID: m.RequestID, Name: m.Name, Stage: m.Stage, Outcome: m.Outcome, Original: m.Original,
		}
		for _, side := range []struct {
			name  string
			diffs []shadow.Difference
		}{{"legacy vs sent", m.Legacy}, {"realtime vs sent", m.Realtime}, {"realtime vs legacy", m.Between}} {
			for _, d := range side.diffs {
				mv.Diffs = append(mv.Diffs, diffView{Side: side.name, Path: d.Path, Kind: d.Kind, Want: d.Want, Got: d.Got})
			}
		}
		v.Mismatches = append(v.Mismatches, mv)
	}
	return v
}

// sample appends the current latency delta of each row to its history, at
// most once per SampleEvery, and fills each row's sparkline.
func (p *statusPage) sample(now time.Time, rows []statusRow, summaries map[[2]string]shadow.ChannelSummary) {
	p.mu.Lock()
	defer p.mu.Unlock()
	take := now.Sub(p.lastSample) >= SampleEvery
	if take {
		p.lastSample = now
	}
	for i := range rows {
		k := rows[i].App + "/" + rows[i].Channel
		s, ok := summaries[[2]string{rows[i].App, rows[i].Channel}]
		h := p.history[k]
		if take && ok && s.LatencyDelta.Count > 0 {
			if h == nil {
				if len(p.history) >= 1024 { // bounded: apps x channels of the config
					continue
				}
				h = &deltaHistory{}
				p.history[k] = h
			}
			h.add(s.LatencyDelta.P50Ms, s.LatencyDelta.P99Ms)
		}
		if h != nil {
			rows[i].Spark = buildSparkline(h)
		}
	}
}

// Sparkline geometry, in SVG user units.
const (
	sparkW = 120.0
	sparkH = 28.0
)

func buildSparkline(h *deltaHistory) sparkline {
	lo, hi := 0.0, 0.0
	for i := range h.p50 {
		lo = min(lo, h.p50[i], h.p99[i])
		hi = max(hi, h.p50[i], h.p99[i])
	}
	if hi-lo < 1 {
		hi = lo + 1
	}
	y := func(v float64) float64 { return round1(sparkH - 2 - (v-lo)/(hi-lo)*(sparkH-4)) }
	pts := func(vs []float64) string {
		var sb strings.Builder
		// The samples span the whole width (the oldest on the left).
		step := (sparkW - 4) / float64(max(len(vs)-1, 1))
		for i, val := range vs {
			if i > 0 {
				sb.WriteByte(' ')
			}
			fmt.Fprintf(&sb, "%g,%g", round1(2+step*float64(i)), y(val))
		}
		return sb.String()
	}
	return sparkline{P50: pts(h.p50), P99: pts(h.p99), Zero: y(0), LastX: sparkW - 2, LastY: y(h.p99[len(h.p99)-1]), Samples: len(h.p50)}
}

// Bar chart geometry, in SVG user units.
const (
	chartW      = 760.0
	chartLabelW = 200.0
	chartRowH   = 30.0
	chartTop    = 28.0
)

func buildDeltaChart(rows []statusRow, summaries map[[2]string]shadow.ChannelSummary) deltaChart {
	var with []statusRow
	scale := 1.0 // ms at a half-width, at least 1 ms
	for _, r := range rows {
		s, ok := summaries[[2]string{r.App, r.Channel}]
		if !ok || s.LatencyDelta.Count == 0 {
			continue
		}
		with = append(with, r)
		scale = max(scale, math.Abs(s.LatencyDelta.P50Ms), math.Abs(s.LatencyDelta.P99Ms))
	}
	half := (chartW - chartLabelW - 20) / 2
	c := deltaChart{
		Width: chartW, Height: chartTop + chartRowH*float64(max(len(with), 1)) + 10,
		Axis: chartLabelW + half, ScaleLabel: fmt.Sprintf("%.1f ms", scale),
	}
	bar := func(ms float64) (x, w float64) {
		w = math.Abs(ms) / scale * half
		if ms < 0 {
			return round1(c.Axis - w), round1(w)
		}
		return round1(c.Axis), round1(w)
	}
	for i, r := range with {
		s := summaries[[2]string{r.App, r.Channel}]
		y := chartTop + chartRowH*float64(i)
		b := deltaBar{
			Label: r.App + " / " + r.Channel, Y: y, TextY: y + 15,
			P50Text: fmt.Sprintf("p50 %+.1f ms", s.LatencyDelta.P50Ms), P99Text: fmt.Sprintf("p99 %+.1f ms", s.LatencyDelta.P99Ms),
		}
		b.P50X, b.P50W = bar(s.LatencyDelta.P50Ms)
		b.P99X, b.P99W = bar(s.LatencyDelta.P99Ms)
		c.Bars = append(c.Bars, b)
	}
	return c
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

func parityClass(p float64) string {
	switch {
	case p >= 99.9:
		return "good"
	case p >= 99:
		return "warn"
	}
	return "bad"
}

// coverageClass grades a coverage: the share of the sampled traffic that
// parity describes (docs/shadow.md asks for 98 % before a flip).
func coverageClass(p float64) string {
	switch {
	case p >= 98:
		return "good"
	case p >= 90:
		return "warn"
	}
	return "bad"
}

func latencyText(l shadow.LatencySummary) string {
	if l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f / %.1f", l.P50Ms, l.P99Ms)
}

// readFlagFile reports, per flag key of the local flag file, whether the
// flag has targeting, and its default variant. It returns nil maps and no
// error when the gateway does not read a local file.
func (p *statusPage) readFlagFile() (targeting map[string]bool, defaults map[string]string, err error) {
	if p.flagFile == "" {
		return nil, nil, nil
	}
	f, err := os.Open(p.flagFile)
	if err != nil {
		return nil, nil, fmt.Errorf("flag file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, flags.MaxFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("flag file %s: %w", p.flagFile, err)
	}
	if len(data) > flags.MaxFileSize {
		return nil, nil, fmt.Errorf("flag file %s: larger than %d bytes", p.flagFile, flags.MaxFileSize)
	}
	targeting, defaults, err = flagTargeting(data)
	if err != nil {
		return nil, nil, fmt.Errorf("flag file %s: %w", p.flagFile, err)
	}
	return targeting, defaults, nil
}

// flagTargeting decodes a flagd flag file just enough to tell, per flag
// key, whether the flag has a targeting rule and what its default variant
// is. It does not validate the file (the provider does).
func flagTargeting(data []byte) (targeting map[string]bool, defaults map[string]string, err error) {
	var raw struct {
		Flags map[string]struct {
			DefaultVariant *string         `json:"defaultVariant"`
			Targeting      json.RawMessage `json:"targeting"`
		} `json:"flags"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, nil, fmt.Errorf("decode: %w", err)
	}
	targeting, defaults = map[string]bool{}, map[string]string{}
	for k, fl := range raw.Flags {
		t := bytes.TrimSpace(fl.Targeting)
		targeting[k] = len(t) > 0 && !bytes.Equal(t, []byte("null")) && !bytes.Equal(t, []byte("{}"))
		if fl.DefaultVariant != nil {
			defaults[k] = *fl.DefaultVariant
		}
	}
	return targeting, defaults, nil
}

// flagFileValid reads switchyard_flag_file_valid from the gatherer.
func (p *statusPage) flagFileValid() string {
	if p.gatherer == nil {
		return ""
	}
	mfs, err := p.gatherer.Gather()
	if err != nil {
		p.log.Warn("status page: gather metrics", zap.Error(err))
	}
	for _, mf := range mfs {
		if mf.GetName() != "switchyard_flag_file_valid" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetGauge().GetValue() == 0 {
				return "INVALID"
			}
			return "valid"
		}
	}
	return ""
}

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"add":          func(a, b float64) float64 { return a + b },
	"outcomeLabel": outcomeLabel,
}).Parse(statusHTML))

// outcomeLabel is the short column header of an outcome (the full name is
// the header's title).
func outcomeLabel(o shadow.Outcome) string {
	switch o {
	case shadow.OutcomePrecisionLoss:
		return "precision"
	case shadow.OutcomeMissingLegacy:
		return "miss legacy"
	case shadow.OutcomeMissingRealtime:
		return "miss realtime"
	}
	return string(o)
}

const statusHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchyard status - {{.Env}}</title>
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px 24px;color:#1d2330;background:#f7f8fa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 8px}
.meta{color:#5a6272;margin-bottom:12px}
.banner{padding:10px 14px;border-radius:6px;margin:8px 0;font-weight:600}
.banner.on{background:#fde2e1;color:#8a1c15;border:1px solid #e7a29d}
.banner.off{background:#e3f4e6;color:#1e5b2a;border:1px solid #a9d8b2}
.banner.warn{background:#fff2d6;color:#7a4b00;border:1px solid #f0cf86}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);width:100%}
th,td{padding:4px 6px;border-bottom:1px solid #e6e8ec;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600;font-size:12px}
th.oc{font-size:11px;font-weight:500;color:#4b5563}
.nw{white-space:nowrap}.key{font:11px ui-monospace,Menlo,Consolas,monospace;color:#6b7280;white-space:nowrap}
#channels td{font-size:13px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.stage{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px}
.stage-legacy{background:#e4e7ec;color:#333}.stage-shadow{background:#e6ddfb;color:#4a2a9a}
.stage-dual{background:#d7ebfb;color:#0b4f85}.stage-realtime{background:#d5f2dc;color:#166a2c}
.parity-good,.coverage-good{color:#166a2c;font-weight:600}.parity-warn,.coverage-warn{color:#9a5b00;font-weight:600}.parity-bad,.coverage-bad{color:#b3261e;font-weight:700}
.note{color:#6b7280;font-size:12px}.err{color:#b3261e;font-size:12px}
.ks{color:#b3261e;font-weight:700}
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f0f2f5;padding:0 3px;border-radius:3px;word-break:break-all}
.mm{background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);margin:10px 0;padding:8px 12px}
.mm h3{font-size:14px;margin:0 0 6px}
.diff td{font-size:12px}.want{color:#8a1c15}.got{color:#166a2c}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}
</style>
</head>
<body>
<h1>Switchyard status</h1>
<div class="meta">env <b>{{.Env}}</b> &middot; version {{.Version}} &middot; up {{.Uptime}} &middot; generated {{.Generated}} &middot; refreshes every 5 s &middot; stages resolved for room <code>status-page</code></div>
<div class="meta" id="scope">This page shows <b>one replica</b>{{if .Instance}} (<code>{{.Instance}}</code>){{end}}: its own rooms, comparator window and counters. With several replicas the environment's figures (summed over all of them) are on the Grafana dashboard.</div>
{{if .KillSwitch}}<div class="banner on" id="killswitch">Kill switch: ON &mdash; {{.KillSwitchNote}}</div>
{{else}}<div class="banner off" id="killswitch">Kill switch: off</div>{{end}}
{{if eq .FlagFileValid "INVALID"}}<div class="banner warn" id="flagfile">Flag file {{.FlagFile}}: last edit REFUSED &mdash; the last good flags stay in force until it is fixed</div>
{{else if .FlagFileValid}}<div class="meta" id="flagfile">Flag file {{if .FlagFile}}<code>{{.FlagFile}}</code> {{end}}{{.FlagFileValid}}</div>{{end}}
{{if .FlagFileNote}}<div class="err">{{.FlagFileNote}}</div>{{end}}

<h2>Channels</h2>
<table id="channels">
<thead><tr><th>app</th><th>channel</th><th>stage</th><th>flag</th><th>compared<br><span class="note">of sampled</span></th><th>coverage<br><span class="note">unobserved</span></th><th>parity</th>
{{range .Outcomes}}<th class="oc" title="{{.}}">{{outcomeLabel .}}</th>{{end}}<th class="oc" title="duplicate, reordered, unobserved, dropped">other</th><th>legacy<br>p50/p99 ms</th><th>realtime<br>p50/p99 ms</th><th>delta p50/p99 ms<br><span class="note">and history</span></th></tr></thead>
<tbody>
{{range .Rows}}<tr class="channel-row" data-app="{{.App}}" data-channel="{{.Channel}}">
<td class="nw">{{.App}}</td><td class="nw"><b>{{.Channel}}</b></td>
<td>{{if .Stage}}<span class="stage stage-{{.Stage}}">{{.Stage}}</span>{{else}}<span class="note">not configured</span>{{end}}{{if .KillSwitch}} <span class="ks">kill switch</span>{{end}}</td>
<td>{{if .FlagKey}}<span class="nw">{{.Variant}} <span class="note">{{.Reason}}</span></span><div class="key">{{.FlagKey}}</div>{{end}}{{if .Error}}<div class="err">{{.Error}}</div>{{end}}{{if .Targeting}}<div class="note">{{.Targeting}}</div>{{end}}</td>
<td class="num">{{.Compared}}<div class="note">of {{.Sampled}}</div></td><td class="num"><span class="coverage coverage-{{.CoverageClass}}">{{.Coverage}}</span>{{range .Unobserved}}<div class="note nw">{{.Reason}} {{.N}}</div>{{end}}</td><td class="num"><span class="parity parity-{{.ParityClass}}">{{.Parity}}</span><div class="note">JS {{.JSParity}}</div></td>
{{range .Counts}}<td class="num">{{.}}</td>{{end}}<td class="note">{{range .Other}}<div class="nw">{{.Outcome}} {{.N}}</div>{{else}}-{{end}}</td>
<td class="num">{{.Legacy}}</td><td class="num">{{.Realtime}}</td><td class="num">{{.Delta}}
{{if .Spark.Samples}}<br><svg class="spark" width="120" height="28" viewBox="0 0 120 28" role="img" aria-label="latency delta history, {{.Spark.Samples}} samples"><line x1="0" y1="{{.Spark.Zero}}" x2="120" y2="{{.Spark.Zero}}" stroke="#c3c8d0" stroke-dasharray="2,2"/><polyline points="{{.Spark.P99}}" fill="none" stroke="#d9480f" stroke-width="1.5"/><polyline points="{{.Spark.P50}}" fill="none" stroke="#1c7ed6" stroke-width="1.5"/><circle cx="{{.Spark.LastX}}" cy="{{.Spark.LastY}}" r="2" fill="#d9480f"/></svg>{{end}}</td>
</tr>
{{end}}</tbody>
</table>
<div class="note">Outcome counts, parity and latencies cover the comparator's sliding window{{if .WindowSeconds}} ({{printf "%.0f" .WindowSeconds}} s){{end}}. Coverage = compared / sampled: the share of the sampled traffic that parity describes, with the reasons of the unobserved messages under it. Parity = match / compared; JS parity counts precision_loss as a match. Only channels on shadow or dual are compared; a channel is ready to flip on parity, coverage and a minimum count together (docs/shadow.md).</div>

<h2>Latency delta (realtime &minus; legacy receipt)</h2>
<svg id="delta-chart" width="{{.Chart.Width}}" height="{{.Chart.Height}}" viewBox="0 0 {{.Chart.Width}} {{.Chart.Height}}" role="img" aria-label="latency delta p50 and p99 per channel">
<rect x="0" y="0" width="{{.Chart.Width}}" height="{{.Chart.Height}}" fill="#ffffff"/>
<text x="{{.Chart.Axis}}" y="14" text-anchor="middle">0 ms</text>
<text x="210" y="14">&larr; realtime faster</text>
<text x="{{.Chart.Width}}" y="14" text-anchor="end" dx="-6">realtime slower &rarr; (scale {{.Chart.ScaleLabel}})</text>
<line x1="{{.Chart.Axis}}" y1="20" x2="{{.Chart.Axis}}" y2="{{.Chart.Height}}" stroke="#6b7280"/>
{{range .Chart.Bars}}<g class="delta-bar">
<text x="4" y="{{.TextY}}">{{.Label}}</text>
<rect x="{{.P99X}}" y="{{.Y}}" width="{{.P99W}}" height="10" fill="#d9480f"><title>{{.P99Text}}</title></rect>
<rect x="{{.P50X}}" y="{{add .Y 12}}" width="{{.P50W}}" height="10" fill="#1c7ed6"><title>{{.P50Text}}</title></rect>
</g>
{{else}}<text x="10" y="44">no message has arrived on both transports yet</text>
{{end}}</svg>
<div class="note"><span style="color:#d9480f">&#9632;</span> p99 &nbsp; <span style="color:#1c7ed6">&#9632;</span> p50 &nbsp; (sparklines in the table: the same figures sampled every few seconds while this page is open)</div>

{{if .ReceiptsOn}}<h2>In users' browsers</h2>
<table id="receipts">
<thead><tr><th>app</th><th>channel</th><th>messages</th><th>received</th><th>via PartyKit only</th><th>via realtime only</th><th>both (duplicate suppressed)</th><th>neither</th><th>legacy<br>p50/p99 ms</th><th>realtime<br>p50/p99 ms</th></tr></thead>
<tbody>
{{range .Receipts}}<tr class="receipt-row" data-app="{{.App}}" data-channel="{{.Channel}}">
<td class="nw">{{.App}}</td><td class="nw"><b>{{.Channel}}</b></td><td class="num">{{.Messages}}</td>
<td class="num"><span class="parity parity-{{.ReceivedClass}}">{{.Received}}</span></td>
<td class="num">{{.Legacy}}</td><td class="num">{{.Realtime}}</td><td class="num">{{.Both}}</td><td class="num">{{.Neither}}</td>
<td class="num">{{.LegacyLatency}}</td><td class="num">{{.RealtimeLatency}}</td></tr>
{{else}}<tr><td colspan="10" class="note" id="no-receipts">No browser has reported receipts in the window.</td></tr>
{{end}}</tbody>
</table>
<div class="note">Reported by the browser client (<code>web/</code>, POST <code>/v1/receipts</code>) over the last {{printf "%.0f" .ReceiptsWindow}} s: which transport delivered each message, and the time from acceptance to receipt. Neither = a sequence gap the browser never filled. See docs/browser.md.</div>
{{end}}

<h2>Recent mismatches</h2>
{{range .Mismatches}}<div class="mm">
<h3>{{.Time}} &middot; {{.App}} / {{.Channel}} &middot; <code>{{.Name}}</code> &middot; {{.Outcome}} <span class="note">(stage {{.Stage}}, room <code>{{.Room}}</code>, requestId <code>{{.RequestID}}</code>)</span></h3>
<table class="diff"><thead><tr><th>copy</th><th>path</th><th>kind</th><th>sent</th><th>received</th></tr></thead><tbody>
{{range .Diffs}}<tr><td>{{.Side}}</td><td><code>{{.Path}}</code></td><td>{{.Kind}}</td><td class="want">{{if .Want}}<code>{{.Want}}</code>{{else}}-{{end}}</td><td class="got">{{if .Got}}<code>{{.Got}}</code>{{else}}-{{end}}</td></tr>
{{end}}</tbody></table>
<details><summary class="note">original envelope</summary><code>{{.Original}}</code></details>
</div>
{{else}}<p class="note" id="no-mismatches">No mismatch in the comparator's memory.</p>
{{end}}
<p class="note">JSON: <code>/v1/admin/shadow/summary</code>, <code>/v1/admin/receipts/summary</code>, <code>/v1/admin/shadow/mismatches</code>, <code>/v1/admin/routes?app=&amp;room=&amp;event=</code>, <code>/metrics</code>. What to do: docs/runbook.md.</p>
</body>
</html>
`
