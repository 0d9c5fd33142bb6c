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
	"github.com/switchyard/switchyard/receipts"
	"github.com/switchyard/switchyard/shadow"
	"github.com/switchyard/switchyard/upstream"
)

// metricInfo is what the code registers under one metric name.
type metricInfo struct {
	histogram bool
	// labels are the variable labels; nil means unknown (a name found in
	// cmd/switchyard's source whose registration the test cannot read):
	// an expression using such a metric is reported.
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
	// cmdConst is a constant naming a metric: canaryRunsMetric = "switchyard_...".
	cmdConst = regexp.MustCompile(`\b([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"(switchyard_[a-z0-9_]+)"`)
	// cmdCollector is a collector cmd/switchyard creates itself: its kind,
	// Vec or not, its name (a literal or a constant) and its label list.
	cmdCollector = regexp.MustCompile(`prometheus\.New(Counter|Gauge|Histogram|Summary)(Vec)?\(\s*prometheus\.(?:Counter|Gauge|Histogram|Summary)Opts\{\s*Name:\s*("switchyard_[a-z0-9_]+"|[A-Za-z_][A-Za-z0-9_]*)[^}]*\}(?:\s*,\s*\[\]string\{([^}]*)\})?`)
)

// registeredMetrics returns every switchyard_* metric the gateway
// registers: the collectors of each package's NewMetrics (names, labels,
// histogram or not), plus the names the wiring and the canary register themselves
// (build_info, the canary's textfile metrics): their labels are read from
// the prometheus.New...(Opts{Name: ...}, []string{...}) call, and any other
// "switchyard_..." string literal of its non-test source is a name with
// unknown labels.
func registeredMetrics(tb testing.TB) map[string]metricInfo {
	tb.Helper()
	reg := &captureRegisterer{}
	broadcast.NewMetrics(reg)
	shadow.NewMetrics(reg)
	flags.NewMetrics(reg)
	upstream.NewMetrics(reg)
	api.NewMetrics(reg)
	receipts.NewMetrics(reg)
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
	// build_info is registered by the wiring, the canary's textfile
	// metrics by the canary package.
	var files []string
	for _, dir := range []string{"../cmd/switchyard", "../gateway", "../canary"} {
		fs, err := filepath.Glob(dir + "/*.go")
		if err != nil {
			tb.Fatal(err)
		}
		files = append(files, fs...)
	}
	var sources []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		sources = append(sources, string(b))
	}
	consts := map[string]string{}
	for _, src := range sources {
		for _, m := range cmdConst.FindAllStringSubmatch(src, -1) {
			consts[m[1]] = m[2]
		}
	}
	for _, src := range sources {
		for _, m := range cmdCollector.FindAllStringSubmatch(src, -1) {
			name := strings.Trim(m[3], `"`)
			if !strings.HasPrefix(m[3], `"`) {
				if name = consts[m[3]]; name == "" {
					continue // not a switchyard_ metric
				}
			}
			info := metricInfo{histogram: m[1] == "Histogram", labels: []string{}}
			if m[2] == "Vec" {
				info.labels = nil
				if strings.Contains(m[0], "[]string{") {
					info.labels = []string{}
					for _, l := range strings.Split(m[4], ",") {
						if l = strings.Trim(strings.TrimSpace(l), `"`); l != "" {
							info.labels = append(info.labels, l)
						}
					}
				}
			}
			if _, dup := out[name]; !dup {
				out[name] = info
			}
		}
	}
	for _, src := range sources {
		for _, m := range cmdName.FindAllStringSubmatch(src, -1) {
			if _, ok := out[m[1]]; !ok {
				out[m[1]] = metricInfo{}
			}
		}
	}
	return out
}

func TestRegisteredMetricsReadsCmdLabels(t *testing.T) {
	known := registeredMetrics(t)
	for name, want := range map[string][]string{
		"switchyard_build_info":                            {"version", "goversion"},
		"switchyard_canary_runs_total":                     {"app", "result"},
		"switchyard_canary_last_success_timestamp_seconds": {"app", "transport"},
	} {
		if got := known[name].labels; !slices.Equal(got, want) {
			t.Errorf("%s: labels %q, want %q", name, got, want)
		}
	}
}

// targetLabels are the labels Prometheus puts on every series of a target:
// job and instance are its own, env and cluster come from the scrape config
// (docs/metrics.md, "Scrape config"). Any expression may match or group on
// them, whatever the code registers.
var targetLabels = []string{"job", "instance", "env", "cluster"}

// promSeries are the series Prometheus itself writes per target that the
// dashboard and the alerts read; they carry only the target labels.
var promSeries = map[string]metricInfo{"up": {labels: []string{}}}

// scrapeJob is the job name the scrape config gives the gateways
// (docs/metrics.md); the up{} alerts and panels select it.
const scrapeJob = "switchyard"

var (
	metricRef = regexp.MustCompile(`\bswitchyard_[a-zA-Z0-9_]+`)
	// seriesRef is one series reference: a switchyard_ metric or one of
	// promSeries (listed in the pattern too), and its {matchers} if any.
	seriesRef   = regexp.MustCompile(`\b(switchyard_[a-zA-Z0-9_]+|up)\b(\s*\{([^}]*)\})?`)
	matcherRef  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|` + "`([^`]*)`)")
	groupingRef = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
	labelValues = regexp.MustCompile(`label_values\(\s*(switchyard_[a-zA-Z0-9_]+)\s*(?:\{([^}]*)\})?\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

// matcher is one label matcher of a selector.
type matcher struct{ label, op, value string }

// series is one series reference of an expression.
type series struct {
	name     string // as written (histograms with their suffix)
	info     metricInfo
	bucket   bool
	known    bool
	matchers []matcher
}

func parseMatchers(s string) []matcher {
	var out []matcher
	for _, m := range matcherRef.FindAllStringSubmatch(s, -1) {
		out = append(out, matcher{m[1], m[2], m[3] + m[4] + m[5]}) // one of the three quotings
	}
	return out
}

// seriesOf returns the series references of expr.
func seriesOf(known map[string]metricInfo, expr string) []series {
	var out []series
	for _, m := range seriesRef.FindAllStringSubmatch(expr, -1) {
		s := series{name: m[1], matchers: parseMatchers(m[3])}
		_, s.info, s.bucket, s.known = resolveMetric(known, m[1])
		out = append(out, s)
	}
	return out
}

// hasVarMatcher reports whether ms has label=~"$label", the matcher of a
// multi-value dashboard variable of the same name.
func hasVarMatcher(ms []matcher, label string) bool {
	for _, m := range ms {
		if m.label == label && m.op == "=~" && m.value == "$"+label {
			return true
		}
	}
	return false
}

// resolveMetric maps a name used in PromQL to the registered metric it
// reads (histogram series carry _bucket, _sum or _count).
func resolveMetric(known map[string]metricInfo, name string) (base string, info metricInfo, bucket bool, ok bool) {
	if info, ok := promSeries[name]; ok {
		return name, info, false, true
	}
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
// names, metrics whose labels the test cannot read, matchers on labels the
// metric does not have, and grouping labels that none of the expression's
// metrics has. The target labels (targetLabels) are on every metric.
func checkExpr(known map[string]metricInfo, expr string) []string {
	var problems []string
	refs := seriesOf(known, expr)
	if len(refs) == 0 {
		return []string{"references no switchyard_ metric (nor up)"}
	}
	labelsInExpr := map[string]bool{}
	for _, l := range targetLabels {
		labelsInExpr[l] = true
	}
	for _, r := range refs {
		if !r.known {
			problems = append(problems, fmt.Sprintf("metric %s is not registered by the code", r.name))
			continue
		}
		if r.info.labels == nil {
			problems = append(problems, fmt.Sprintf("metric %s: labels unknown (cmd/switchyard registers it in a form the test cannot read)", r.name))
			continue
		}
		for _, l := range r.info.labels {
			labelsInExpr[l] = true
		}
		if r.bucket {
			labelsInExpr["le"] = true
		}
		for _, m := range r.matchers {
			if (m.label == "le" && r.bucket) || slices.Contains(targetLabels, m.label) {
				continue
			}
			if !slices.Contains(r.info.labels, m.label) {
				problems = append(problems, fmt.Sprintf("metric %s has no label %q (labels %v)", r.name, m.label, r.info.labels))
			}
		}
	}
	for _, g := range groupingRef.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			l = strings.TrimSpace(l)
			if l != "" && !labelsInExpr[l] {
				problems = append(problems, fmt.Sprintf("grouping label %q is on none of the metrics of the expression", l))
			}
		}
	}
	for _, m := range labelValues.FindAllStringSubmatch(expr, -1) {
		if _, info, _, ok := resolveMetric(known, m[1]); ok && info.labels != nil &&
			!slices.Contains(info.labels, m[3]) && !slices.Contains(targetLabels, m[3]) {
			problems = append(problems, fmt.Sprintf("label_values: metric %s has no label %q", m[1], m[3]))
		}
	}
	return problems
}

// dashboardFilters are the variables every series of the dashboard is
// filtered on, as label=~"$label": the target labels env, cluster and
// instance always, app and channel when the metric has that label.
var (
	dashboardTargetVars = []string{"env", "cluster", "instance"}
	dashboardMetricVars = []string{"app", "channel"}
)

// checkDashboardExpr is checkExpr plus the dashboard's filters: every series
// reference carries env=~"$env", cluster=~"$cluster", instance=~"$instance",
// and app=~"$app" / channel=~"$channel" when the metric has that label.
func checkDashboardExpr(known map[string]metricInfo, expr string) []string {
	problems := checkExpr(known, expr)
	for _, r := range seriesOf(known, expr) {
		if !r.known || r.info.labels == nil {
			continue // reported by checkExpr
		}
		want := slices.Clone(dashboardTargetVars)
		for _, l := range dashboardMetricVars {
			if slices.Contains(r.info.labels, l) {
				want = append(want, l)
			}
		}
		for _, l := range want {
			if !hasVarMatcher(r.matchers, l) {
				problems = append(problems, fmt.Sprintf("%s lacks the matcher %s=~\"$%s\"", r.name, l, l))
			}
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
		{"canary textfile metric", `time() - max by (app, transport) (switchyard_canary_last_success_timestamp_seconds)`, true},
		{"canary metric, unknown grouping label", `max by (app, room) (switchyard_canary_last_success_timestamp_seconds)`, false},
		{"canary metric, unknown matcher label", `switchyard_canary_runs_total{verdict="fail"}`, false},
		{"target labels", `max by (env, cluster, instance) (switchyard_killswitch_active{env="prod", job="switchyard"})`, true},
		{"up", `up{job="switchyard"} == 0`, true},
		{"absent up", `absent(up{job="switchyard"})`, true},
		{"up with a metric label", `up{route="broadcast"}`, false},
		{"renamed metric", `rate(switchyard_shadow_outcome_total[5m])`, false},
		{"bucket of a counter", `switchyard_deliveries_total_bucket`, false},
		{"unknown matcher label", `rate(switchyard_deliveries_total{result="failed"}[5m])`, false},
		{"unknown matcher label, single quotes", `rate(switchyard_deliveries_total{result='failed'}[5m])`, false},
		{"unknown grouping label", `sum by (room) (rate(switchyard_deliveries_total[5m]))`, false},
		{"label_values with unknown label", `label_values(switchyard_messages_accepted_total, tenant)`, false},
		{"label_values of a target label", `label_values(switchyard_build_info{env=~"$env"}, cluster)`, true},
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

const (
	tgt    = `env=~"$env", cluster=~"$cluster", instance=~"$instance"`
	appTgt = `app=~"$app", channel=~"$channel", ` + tgt
)

func TestCheckDashboardExprWantsTheFilters(t *testing.T) {
	known := registeredMetrics(t)
	tests := []struct {
		name, expr string
		wantOK     bool
	}{
		{"app metric, every filter", `sum by (app) (rate(switchyard_deliveries_total{status="failed", ` + appTgt + `}[5m]))`, true},
		{"metric without app or channel", `sum(switchyard_offpath_queue_depth{` + tgt + `})`, true},
		{"channel only metric", `sum(rate(switchyard_flag_errors_total{channel=~"$channel", ` + tgt + `}[5m]))`, true},
		{"histogram bucket", `histogram_quantile(0.99, sum by (le) (rate(switchyard_http_request_duration_seconds_bucket{listener="public", ` + tgt + `}[5m])))`, true},
		{"up", `up{job="switchyard", ` + tgt + `}`, true},
		{"no app on an app metric", `rate(switchyard_deliveries_total{channel=~"$channel", ` + tgt + `}[5m])`, false},
		{"no channel on a channel metric", `rate(switchyard_deliveries_total{app=~"$app", ` + tgt + `}[5m])`, false},
		{"app with = instead of =~", `rate(switchyard_token_errors_total{app="$app", ` + tgt + `}[5m])`, false},
		{"app on another variable", `rate(switchyard_token_errors_total{app=~"$channel", ` + tgt + `}[5m])`, false},
		{"no braces", `max(switchyard_killswitch_active)`, false},
		{"no env", `max(switchyard_killswitch_active{cluster=~"$cluster", instance=~"$instance"})`, false},
		{"no cluster", `max(switchyard_killswitch_active{env=~"$env", instance=~"$instance"})`, false},
		{"no instance", `max(switchyard_killswitch_active{env=~"$env", cluster=~"$cluster"})`, false},
		{"one side of a ratio unfiltered", `sum(rate(switchyard_duplicates_total{app=~"$app", ` + tgt + `}[5m])) / sum(rate(switchyard_duplicates_total[5m]))`, false},
		{"up unfiltered", `up{job="switchyard"}`, false},
		{"unknown metric, every filter", `rate(switchyard_deliverys_total{` + appTgt + `}[5m])`, false},
		{"unknown label, every filter", `rate(switchyard_deliveries_total{room="r", ` + appTgt + `}[5m])`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := checkDashboardExpr(known, tt.expr)
			if got := len(problems) == 0; got != tt.wantOK {
				t.Errorf("checkDashboardExpr(%s) ok = %v, want %v (problems: %v)", tt.expr, got, tt.wantOK, problems)
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
			Multi      bool            `json:"multi"`
			IncludeAll bool            `json:"includeAll"`
			AllValue   string          `json:"allValue"`
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
	var exprs []string
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
			for _, p := range checkDashboardExpr(known, tg.Expr) {
				t.Errorf("%s target %s: %s\n  expr: %s", where, tg.RefID, p, tg.Expr)
			}
			exprs = append(exprs, tg.Expr)
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
			for _, p := range checkDashboardExpr(known, a.Expr) {
				t.Errorf("annotation %s: %s\n  expr: %s", a.Name, p, a.Expr)
			}
		}
	}
	// The panels the issue asks for, by the metric they read.
	for _, want := range []string{
		"switchyard_flag_evaluations_total", "switchyard_messages_accepted_total", "switchyard_shadow_outcomes_total",
		"switchyard_shadow_delivery_latency_seconds", "switchyard_shadow_latency_delta_seconds",
		"switchyard_deliveries_total", "switchyard_upstream_retries_total", "switchyard_offpath_queue_depth",
		"switchyard_offpath_dropped_total", "switchyard_token_errors_total", "switchyard_flag_errors_total",
		"switchyard_rate_limited_total", "switchyard_killswitch_active", "switchyard_flag_file_valid",
		"switchyard_http_requests_total", "switchyard_http_request_duration_seconds",
		"switchyard_shadow_sampled_total", "switchyard_shadow_compared_total", "switchyard_shadow_unobserved_total",
		"switchyard_subscriber_ready_seconds", "switchyard_shadow_watch_wait_seconds",
		"switchyard_browser_receipts_total", "switchyard_browser_receive_latency_seconds", "switchyard_browser_receipts_refused_total",
	} {
		if !used[want] {
			t.Errorf("no panel reads %s", want)
		}
	}
	// The public API's request rate, error ratio and latency quantiles.
	publicHTTP := func(e, metric string) bool {
		for _, r := range seriesOf(known, e) {
			if r.name == metric && slices.Contains(r.matchers, matcher{"listener", "=", "public"}) {
				return true
			}
		}
		return false
	}
	for what, ok := range map[string]func(string) bool{
		"public request rate": func(e string) bool {
			return publicHTTP(e, "switchyard_http_requests_total") && strings.Contains(e, "rate(") && !strings.Contains(e, "/")
		},
		"public 5xx ratio": func(e string) bool {
			return publicHTTP(e, "switchyard_http_requests_total") && strings.Contains(e, `code=~"5.."`) && strings.Contains(e, "/")
		},
		"public p50 latency": func(e string) bool {
			return publicHTTP(e, "switchyard_http_request_duration_seconds_bucket") && strings.HasPrefix(e, "histogram_quantile(0.5,")
		},
		"public p99 latency": func(e string) bool {
			return publicHTTP(e, "switchyard_http_request_duration_seconds_bucket") && strings.HasPrefix(e, "histogram_quantile(0.99,")
		},
		"coverage (compared / sampled)": func(e string) bool {
			i, j := strings.Index(e, "switchyard_shadow_compared_total"), strings.Index(e, "switchyard_shadow_sampled_total")
			return i >= 0 && j > i && strings.Contains(e[i:j], "/")
		},
		"parity over compared messages": func(e string) bool {
			i, j := strings.Index(e, `outcome="match"`), strings.Index(e, "switchyard_shadow_compared_total")
			return i >= 0 && j > i && strings.Contains(e[i:j], "/")
		},
	} {
		if !slices.ContainsFunc(exprs, ok) {
			t.Errorf("no panel shows the %s", what)
		}
	}
}

// TestDashboardVariablesChain checks the filter variables: env, cluster,
// instance, app and channel, in that order, each a multi-value label_values
// query whose selector is filtered on every variable before it (so picking
// an environment narrows the clusters, and so on), with All meaning ".*"
// (series without the label match too).
func TestDashboardVariablesChain(t *testing.T) {
	known := registeredMetrics(t)
	d := loadDashboard(t)
	chain := append(slices.Clone(dashboardTargetVars), dashboardMetricVars...)
	var order []string
	for _, v := range d.Templating.List {
		if !slices.Contains(chain, v.Name) {
			continue
		}
		order = append(order, v.Name)
		where := "variable " + v.Name
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("%s: query: %v", where, err)
			continue
		}
		if v.Type != "query" || v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("%s: type %q, datasource %+v: want a query on ${datasource}", where, v.Type, v.Datasource)
		}
		if !v.Multi || !v.IncludeAll || v.AllValue != ".*" {
			t.Errorf("%s: multi %v, includeAll %v, allValue %q: want true, true, \".*\"", where, v.Multi, v.IncludeAll, v.AllValue)
		}
		if v.Definition != q.Query {
			t.Errorf("%s: definition %q differs from query %q", where, v.Definition, q.Query)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil || strings.TrimSpace(q.Query) != m[0] {
			t.Errorf("%s: query %q is not label_values(metric{...}, label)", where, q.Query)
			continue
		}
		if m[3] != v.Name {
			t.Errorf("%s: query reads label %q, want %q", where, m[3], v.Name)
		}
		if _, _, _, ok := resolveMetric(known, m[1]); !ok {
			t.Errorf("%s: metric %s is not registered by the code", where, m[1])
		}
		ms := parseMatchers(m[2])
		for _, parent := range chain[:slices.Index(chain, v.Name)] {
			if !hasVarMatcher(ms, parent) {
				t.Errorf("%s: query %q lacks %s=~\"$%s\" (chained variables)", where, q.Query, parent, parent)
			}
		}
	}
	if !slices.Equal(order, chain) {
		t.Errorf("filter variables in order %v, want %v", order, chain)
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
			for _, s := range seriesOf(known, r.Expr) {
				if s.name == "up" && !slices.Contains(s.matchers, matcher{"job", "=", scrapeJob}) {
					t.Errorf("%s: up without job=%q: it would read every target of Prometheus", where, scrapeJob)
				}
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
		"SwitchyardPublishFailureRate", "SwitchyardShadowParityLow", "SwitchyardShadowCoverageLow", "SwitchyardRealtimeDelayHigh",
		"SwitchyardMessagesMissing", "SwitchyardTokenMintFailing", "SwitchyardTokenErrorsHigh",
		"SwitchyardFlagFileInvalid", "SwitchyardOffPathDrops", "SwitchyardIdempotencyFailingOpen",
		"SwitchyardTargetDown", "SwitchyardTargetMissing", "SwitchyardKillSwitchOn", "SwitchyardCanaryStale",
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

// rangeCall is a rate/increase/irate of a switchyard_ series, with what
// stands before it.
var rangeCall = regexp.MustCompile(`\b(?:rate|irate|increase)\(\s*switchyard_`)

// sumBefore matches the end of the text before a rangeCall when the call
// is the direct argument of sum: "sum(", "sum by (a, b) (", "sum without
// (x) (".
var sumBefore = regexp.MustCompile(`\bsum\s*(?:(?:by|without)\s*\(([^)]*)\)\s*)?\(\s*$`)

// perReplica are the labels that name one replica; grouping by them keeps
// one series per replica instead of the environment's figure.
var perReplica = []string{"instance", "pod"}

// aggregationProblems reports each rate/increase of a switchyard_ counter
// in expr that is not summed across replicas: one not directly inside
// sum(...) (avg of per-replica rates, a bare per-replica rate, max...), or
// summed by a label naming the replica.
func aggregationProblems(expr string) []string {
	var out []string
	for _, loc := range rangeCall.FindAllStringIndex(expr, -1) {
		before := expr[:loc[0]]
		m := sumBefore.FindStringSubmatch(before)
		call := expr[loc[0]:min(len(expr), loc[1]+40)]
		if m == nil {
			out = append(out, fmt.Sprintf("%s... is not summed across replicas (wrap it in sum or sum by)", call))
			continue
		}
		for _, l := range strings.Split(m[1], ",") {
			if slices.Contains(perReplica, strings.TrimSpace(l)) && !strings.Contains(m[0], "without") {
				out = append(out, fmt.Sprintf("%s... is summed by %s: one figure per replica, not the environment's", call, strings.TrimSpace(l)))
			}
		}
	}
	return out
}

// With several replicas every counter figure of the dashboard and the
// alerts (parity, coverage, outcome counts, deliveries, latency buckets)
// must be the sum over the replicas.
func TestExpressionsAggregateAcrossReplicas(t *testing.T) {
	d := loadDashboard(t)
	n := 0
	for _, p := range flatPanels(d.Panels) {
		for _, tg := range p.Targets {
			for _, prob := range aggregationProblems(tg.Expr) {
				t.Errorf("dashboard panel %q: %s", p.Title, prob)
			}
			n += len(rangeCall.FindAllString(tg.Expr, -1))
		}
	}
	var rf ruleFile
	loadYAML(t, "prometheus/alerts.yml", &rf)
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			for _, prob := range aggregationProblems(r.Expr) {
				t.Errorf("alert %s: %s", r.Alert, prob)
			}
			n += len(rangeCall.FindAllString(r.Expr, -1))
		}
	}
	if n < 20 {
		t.Errorf("found %d rate/increase calls in the dashboard and alerts; the check reads too little", n)
	}
}

func TestAggregationProblemsCatchesPerReplicaFigures(t *testing.T) {
	for expr, ok := range map[string]bool{
		`sum by (app, channel) (rate(switchyard_shadow_outcomes_total{outcome="match"}[5m]))`:                                 true,
		`100 * sum(increase(switchyard_shadow_outcomes_total[15m])) / sum(increase(switchyard_shadow_outcomes_total[15m]))`:   true,
		`histogram_quantile(0.99, sum by (transport, le) (rate(switchyard_publish_duration_seconds_bucket[5m])))`:             true,
		`sum without (instance) (rate(switchyard_deliveries_total[5m]))`:                                                      true,
		`avg(rate(switchyard_shadow_outcomes_total{outcome="match"}[5m]))`:                                                    false,
		`rate(switchyard_deliveries_total[5m]) > 0`:                                                                           false,
		`sum by (instance, channel) (rate(switchyard_shadow_outcomes_total[5m]))`:                                             false,
		`max by (channel) (increase(switchyard_shadow_outcomes_total[5m]))`:                                                   false,
		`100 * sum(rate(switchyard_shadow_outcomes_total{outcome="match"}[5m])) / rate(switchyard_shadow_outcomes_total[5m])`: false,
	} {
		if got := len(aggregationProblems(expr)) == 0; got != ok {
			t.Errorf("%s: accepted %v, want %v (%v)", expr, got, ok, aggregationProblems(expr))
		}
	}
}
