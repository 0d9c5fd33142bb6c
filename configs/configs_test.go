package configs

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/flags"
	"github.com/switchyard/switchyard/shadow"
	"github.com/switchyard/switchyard/upstream"
)

// metricInfo is what the code registers under one metric name.
type metricInfo struct {
	histogram bool
	// labels are the variable labels; nil means unknown (a metric found
	// by reading cmd/switchyard's source), so labels are not checked.
	labels []string
}

// captureRegisterer records the collectors registered on it.
type captureRegisterer struct{ collectors []prometheus.Collector }

func (c *captureRegisterer) Register(col prometheus.Collector) error {
	c.collectors = append(c.collectors, col)
	return nil
}

func (c *captureRegisterer) MustRegister(cols ...prometheus.Collector) {
	c.collectors = append(c.collectors, cols...)
}

func (c *captureRegisterer) Unregister(prometheus.Collector) bool { return false }

var _ prometheus.Registerer = (*captureRegisterer)(nil)

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	cmdName    = regexp.MustCompile(`"(switchyard_[a-z0-9_]+)"`)
)

// registeredMetrics returns every switchyard_* metric the gateway
// registers: the collectors of each package's NewMetrics (names, labels,
// histogram or not), plus the names cmd/switchyard registers itself (every
// "switchyard_..." string literal of its non-test source, labels unknown:
// build_info, the canary's textfile metrics).
func registeredMetrics(tb testing.TB) map[string]metricInfo {
	tb.Helper()
	reg := &captureRegisterer{}
	broadcast.NewMetrics(reg)
	shadow.NewMetrics(reg)
	flags.NewMetrics(reg)
	upstream.NewMetrics(reg)
	api.NewMetrics(reg)
	out := map[string]metricInfo{}
	for _, col := range reg.collectors {
		var histogram bool
		switch col.(type) {
		case *prometheus.HistogramVec, prometheus.Histogram:
			histogram = true
		}
		ch := make(chan *prometheus.Desc, 16)
		go func() { col.Describe(ch); close(ch) }()
		for d := range ch {
			s := d.String()
			m := descName.FindStringSubmatch(s)
			if m == nil {
				tb.Fatalf("cannot read the metric name from %s", s)
			}
			info := metricInfo{histogram: histogram, labels: []string{}}
			if l := descLabels.FindStringSubmatch(s); l != nil && strings.TrimSpace(l[1]) != "" {
				for _, name := range strings.Split(l[1], ",") {
					name = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(name), "c("), ")")
					info.labels = append(info.labels, name)
				}
			}
			out[m[1]] = info
		}
	}
	if len(out) < 20 {
		tb.Fatalf("found only %d registered metrics; the Desc format may have changed", len(out))
	}
	files, err := filepath.Glob("../cmd/switchyard/*.go")
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		for _, m := range cmdName.FindAllStringSubmatch(string(b), -1) {
			if _, ok := out[m[1]]; !ok {
				out[m[1]] = metricInfo{}
			}
		}
	}
	return out
}

var (
	metricRef   = regexp.MustCompile(`\bswitchyard_[a-zA-Z0-9_]+`)
	selectorRef = regexp.MustCompile(`\b(switchyard_[a-zA-Z0-9_]+)\s*\{([^}]*)\}`)
	matcherRef  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	groupingRef = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
	labelValues = regexp.MustCompile(`label_values\(\s*(switchyard_[a-zA-Z0-9_]+)\s*(?:\{[^}]*\})?\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

// resolveMetric maps a name used in PromQL to the registered metric it
// reads (histogram series carry _bucket, _sum or _count).
func resolveMetric(known map[string]metricInfo, name string) (base string, info metricInfo, bucket bool, ok bool) {
	if info, ok := known[name]; ok {
		return name, info, false, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if b, found := strings.CutSuffix(name, suffix); found {
			if info, ok := known[b]; ok && info.histogram {
				return b, info, suffix == "_bucket", true
			}
		}
	}
	return "", metricInfo{}, false, false
}

// checkExpr returns the problems of one PromQL expression: unknown metric
// names, matchers on labels the metric does not have, and grouping labels
// that none of the expression's metrics has.
func checkExpr(known map[string]metricInfo, expr string) []string {
	var problems []string
	names := metricRef.FindAllString(expr, -1)
	if len(names) == 0 {
		return []string{"references no switchyard_ metric"}
	}
	labelsInExpr := map[string]bool{}
	unknownLabels := false
	for _, n := range names {
		_, info, bucket, ok := resolveMetric(known, n)
		if !ok {
			problems = append(problems, fmt.Sprintf("metric %s is not registered by the code", n))
			continue
		}
		if info.labels == nil {
			unknownLabels = true
		}
		for _, l := range info.labels {
			labelsInExpr[l] = true
		}
		if bucket {
			labelsInExpr["le"] = true
		}
	}
	for _, m := range selectorRef.FindAllStringSubmatch(expr, -1) {
		_, info, bucket, ok := resolveMetric(known, m[1])
		if !ok || info.labels == nil {
			continue
		}
		for _, mm := range matcherRef.FindAllStringSubmatch(m[2], -1) {
			l := mm[1]
			if l == "le" && bucket {
				continue
			}
			if !slices.Contains(info.labels, l) {
				problems = append(problems, fmt.Sprintf("metric %s has no label %q (labels %v)", m[1], l, info.labels))
			}
		}
	}
	if !unknownLabels {
		for _, g := range groupingRef.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(g[1], ",") {
				l = strings.TrimSpace(l)
				if l != "" && !labelsInExpr[l] {
					problems = append(problems, fmt.Sprintf("grouping label %q is on none of the metrics of the expression", l))
				}
			}
		}
	}
	for _, m := range labelValues.FindAllStringSubmatch(expr, -1) {
		if _, info, _, ok := resolveMetric(known, m[1]); ok && info.labels != nil && !slices.Contains(info.labels, m[2]) {
			problems = append(problems, fmt.Sprintf("label_values: metric %s has no label %q", m[1], m[2]))
		}
	}
	return problems
}

func TestCheckExprCatchesRenames(t *testing.T) {
	known := registeredMetrics(t)
	tests := []struct {
		name, expr string
		wantOK     bool
	}{
		{"registered counter", `sum by (app, channel) (rate(switchyard_shadow_outcomes_total{outcome="match"}[5m]))`, true},
		{"histogram bucket", `histogram_quantile(0.99, sum by (transport, le) (rate(switchyard_shadow_delivery_latency_seconds_bucket{transport="realtime"}[5m])))`, true},
		{"gauge", `switchyard_flag_file_valid == 0`, true},
		{"cmd metric", `switchyard_build_info`, true},
		{"canary textfile metric", `time() - max by (app) (switchyard_canary_last_success_timestamp_seconds)`, true},
		{"renamed metric", `rate(switchyard_shadow_outcome_total[5m])`, false},
		{"bucket of a counter", `switchyard_deliveries_total_bucket`, false},
		{"unknown matcher label", `rate(switchyard_deliveries_total{result="failed"}[5m])`, false},
		{"unknown grouping label", `sum by (room) (rate(switchyard_deliveries_total[5m]))`, false},
		{"label_values with unknown label", `label_values(switchyard_messages_accepted_total, tenant)`, false},
		{"no metric", `vector(1)`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := checkExpr(known, tt.expr)
			if got := len(problems) == 0; got != tt.wantOK {
				t.Errorf("checkExpr(%s) ok = %v, want %v (problems: %v)", tt.expr, got, tt.wantOK, problems)
			}
		})
	}
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string      `json:"name"`
			Expr       string      `json:"expr"`
			Datasource *datasource `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Panels     []panel     `json:"panels"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
}

func loadDashboard(tb testing.TB) dashboard {
	tb.Helper()
	b, err := os.ReadFile("grafana/switchyard.json")
	if err != nil {
		tb.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		tb.Fatalf("grafana/switchyard.json is not valid JSON: %v", err)
	}
	return d
}

// flatPanels returns the panels of d, those nested in collapsed rows
// included, rows excluded.
func flatPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		if p.Type == "row" {
			out = append(out, flatPanels(p.Panels)...)
			continue
		}
		out = append(out, p)
	}
	return out
}

func TestDashboardUsesOnlyRegisteredMetrics(t *testing.T) {
	known := registeredMetrics(t)
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q, title %q: both required", d.UID, d.Title)
	}
	used := map[string]bool{}
	check := func(where, expr string) {
		for _, p := range checkExpr(known, expr) {
			t.Errorf("%s: %s\n  expr: %s", where, p, expr)
		}
		for _, n := range metricRef.FindAllString(expr, -1) {
			if base, _, _, ok := resolveMetric(known, n); ok {
				used[base] = true
			}
		}
	}
	ids := map[int]string{}
	panels := flatPanels(d.Panels)
	if len(panels) < 10 {
		t.Fatalf("dashboard has %d panels, want at least 10", len(panels))
	}
	for _, p := range panels {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("%s: id also used by %q", where, prev)
		}
		ids[p.ID] = p.Title
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource %+v, want uid ${datasource}", where, p.Datasource)
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: bad gridPos %+v", where, p.GridPos)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", where)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("%s target %s: empty expr", where, tg.RefID)
				continue
			}
			check(where+" target "+tg.RefID, tg.Expr)
		}
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" {
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Errorf("variable %s: query: %v", v.Name, err)
			}
			check("variable "+v.Name, q.Query)
			check("variable "+v.Name+" definition", v.Definition)
		}
	}
	for name, typ := range map[string]string{"datasource": "datasource", "app": "query", "channel": "query"} {
		if vars[name] != typ {
			t.Errorf("variable %s: type %q, want %q", name, vars[name], typ)
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			check("annotation "+a.Name, a.Expr)
		}
	}
	// The panels the issue asks for, by the metric they read.
	for _, want := range []string{
		"switchyard_flag_evaluations_total", "switchyard_messages_accepted_total", "switchyard_shadow_outcomes_total",
		"switchyard_shadow_delivery_latency_seconds", "switchyard_shadow_latency_delta_seconds",
		"switchyard_deliveries_total", "switchyard_upstream_retries_total", "switchyard_offpath_queue_depth",
		"switchyard_offpath_dropped_total", "switchyard_token_errors_total", "switchyard_flag_errors_total",
		"switchyard_rate_limited_total", "switchyard_killswitch_active", "switchyard_flag_file_valid",
	} {
		if !used[want] {
			t.Errorf("no panel reads %s", want)
		}
	}
}

// ruleFile is the part of a Prometheus rule file the test reads.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ruleTests is the part of a promtool test file the test reads.
type ruleTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			EvalTime  string           `yaml:"eval_time"`
			Alertname string           `yaml:"alertname"`
			ExpAlerts []map[string]any `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func loadYAML(tb testing.TB, path string, v any) {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
}

var heading = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)

// runbookAnchors returns the GitHub anchors of the headings of
// docs/runbook.md.
func runbookAnchors(tb testing.TB) map[string]bool {
	tb.Helper()
	b, err := os.ReadFile("../docs/runbook.md")
	if err != nil {
		tb.Fatalf("the alerts link docs/runbook.md: %v", err)
	}
	out := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(string(b), -1) {
		out[slug(m[1])] = true
	}
	return out
}

// slug is GitHub's heading anchor: lower case, punctuation dropped, spaces
// to hyphens.
func slug(h string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			sb.WriteRune(r)
		case r == ' ':
			sb.WriteByte('-')
		}
	}
	return sb.String()
}

func TestSlug(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"Publish failure rate", "publish-failure-rate"},
		{"Roll back: the kill switch", "roll-back-the-kill-switch"},
		{"`switchyard_flag_file_valid` == 0", "switchyard_flag_file_valid--0"},
	} {
		if got := slug(tt.in); got != tt.want {
			t.Errorf("slug(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

const runbookURL = "https://github.com/switchyard/switchyard/blob/main/docs/runbook.md#"

func TestAlertRules(t *testing.T) {
	known := registeredMetrics(t)
	anchors := runbookAnchors(t)
	var rf ruleFile
	loadYAML(t, "prometheus/alerts.yml", &rf)
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			where := "alert " + r.Alert
			for _, p := range checkExpr(known, r.Expr) {
				t.Errorf("%s: %s", where, p)
			}
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("%s: severity label %q, want critical, warning or info", where, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: annotation %s missing", where, a)
				}
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookURL)
			if !ok {
				t.Errorf("%s: runbook_url %q does not start with %s", where, r.Annotations["runbook_url"], runbookURL)
			} else if !anchors[anchor] {
				t.Errorf("%s: runbook_url anchor #%s is no heading of docs/runbook.md", where, anchor)
			}
		}
	}
	want := []string{
		"SwitchyardPublishFailureRate", "SwitchyardShadowParityLow", "SwitchyardRealtimeDelayHigh",
		"SwitchyardMessagesMissing", "SwitchyardTokenMintFailing", "SwitchyardTokenErrorsHigh",
		"SwitchyardFlagFileInvalid", "SwitchyardOffPathDrops",
	}
	sort.Strings(want)
	got := slices.Sorted(slices.Values(alerts))
	if !slices.Equal(got, want) {
		t.Errorf("alerts = %v, want %v", got, want)
	}

	// Each alert has a firing and a not-firing case in the promtool tests.
	var rt ruleTests
	loadYAML(t, "prometheus/alerts_test.yml", &rt)
	if !slices.Contains(rt.RuleFiles, "alerts.yml") {
		t.Errorf("alerts_test.yml rule_files = %v, want alerts.yml", rt.RuleFiles)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, a := range alerts {
		if !firing[a] {
			t.Errorf("alerts_test.yml has no case where %s fires", a)
		}
		if !quiet[a] {
			t.Errorf("alerts_test.yml has no case where %s stays quiet", a)
		}
	}
}
