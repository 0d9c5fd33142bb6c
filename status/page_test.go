package status

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/receipts"
	"github.com/switchyard/switchyard/shadow"
	"go.uber.org/zap"
)

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
	parity, coverage := 50.0, 80.0
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	base := func() *statusPage {
		return &statusPage{
			env: "test", version: "v1", instance: "gw-7", started: now.Add(-time.Hour), apps: []string{"ai-hero"},
			channels: []string{"transcript", "default"},
			resolve: func(q broadcast.RouteQuery) broadcast.Route {
				return broadcast.Route{Stage: broadcast.StageShadow, Channel: q.Channel, FlagKey: "realtime-" + q.Channel, Variant: "shadow", Reason: "STATIC"}
			},
			summary: func() []shadow.ChannelSummary {
				return []shadow.ChannelSummary{{
					App: "ai-hero", Channel: "transcript", Compared: 4, ParityPercent: &parity, JSParityPercent: &parity,
					Sampled: 5, CoveragePercent: &coverage,
					Unobserved:   map[shadow.UnobservedReason]int64{shadow.ReasonRealtimeNotReady: 1, shadow.ReasonClosed: 0},
					Outcomes:     map[shadow.Outcome]int64{shadow.OutcomeMatch: 2, shadow.OutcomeMismatch: 2, shadow.OutcomeUnobserved: 1},
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
			want: []string{`<span class="stage stage-shadow">shadow</span>`, `50.0 %`, `parity-bad`, `-3.0 / 12.0`, `class="delta-bar"`, `No mismatch`, `Kill switch: off`,
				`<span class="coverage coverage-bad">80.0 %</span>`, `of 5`, `realtime_not_ready 1`,
				`This page shows <b>one replica</b> (<code>gw-7</code>)`},
			dontWant: []string{`closed 0`},
		},
		{
			name: "browser receipts",
			adjust: func(p *statusPage) {
				received := 97.5
				p.receipts = func() []receipts.ChannelSummary {
					return []receipts.ChannelSummary{{
						App: "ai-hero", Channel: "ai-stream", WindowSeconds: 300, Messages: 40, ReceivedPercent: &received,
						Via:           map[receipts.Via]int64{receipts.ViaLegacy: 10, receipts.ViaRealtime: 12, receipts.ViaBoth: 17, receipts.ViaNeither: 1},
						LegacyLatency: receipts.LatencySummary{Count: 27, P50Ms: 4.2, P99Ms: 30}, RealtimeLatency: receipts.LatencySummary{Count: 29, P50Ms: 6.1, P99Ms: 41},
					}}
				}
			},
			want: []string{`id="receipts"`, `class="receipt-row" data-app="ai-hero" data-channel="ai-stream"`, `97.5 %`,
				`<td class="num">17</td><td class="num">1</td>`, `4.2 / 30.0`, `6.1 / 41.0`, `over the last 300 s`},
		},
		{
			name: "browser receipts empty",
			adjust: func(p *statusPage) {
				p.receipts = func() []receipts.ChannelSummary { return nil }
			},
			want: []string{`id="no-receipts"`},
		},
		{
			name:     "no receipts section without a source",
			dontWant: []string{`id="receipts"`},
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
		now = now.Add(SampleEvery)
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
	if dev, err := os.ReadFile("../configs/flags/dev.flagd.json"); err == nil {
		f.Add(dev)
	}
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

// TestStatusPageUsesInjectedClock: the page's generated time and uptime
// come from Config.Now, not the wall clock.
func TestStatusPageUsesInjectedClock(t *testing.T) {
	now := time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
	h := New(Config{
		Env: "test", Version: "v1", Started: now.Add(-90 * time.Minute), Apps: []string{"a"}, Channels: []string{"c"},
		Resolve:    func(broadcast.RouteQuery) broadcast.Route { return broadcast.Route{Stage: broadcast.StageLegacy} },
		Summary:    func() []shadow.ChannelSummary { return nil },
		Mismatches: func(int) []shadow.MismatchExample { return nil },
		Now:        func() time.Time { return now },
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	body := rec.Body.String()
	if rec.Code != http.StatusOK || !strings.Contains(body, "2031-02-03T04:05:06Z") || !strings.Contains(body, "1h30m0s") {
		t.Errorf("status %d; page does not show the injected clock's time and uptime:\n%.2000s", rec.Code, body)
	}
}
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
