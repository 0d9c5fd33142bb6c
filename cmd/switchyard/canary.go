package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/realtime"
)

// Canary defaults.
const (
	canaryDefaultRoom  = "switchyard-canary"
	canaryDefaultEvent = "switchyard.canary"
)

// errCanaryFailed is returned when the canary ran but a transport failed;
// the verdict line on stdout says which.
var errCanaryFailed = errors.New("canary failed")

// canaryOptions are the flags of `switchyard canary`.
type canaryOptions struct {
	configPath, app, room, event string
	gateway, admin, adminToken   string
	key, metricsFile             string
	timeout                      time.Duration
}

// cmdCanary is `switchyard canary --config FILE --app APP`: it subscribes
// like a browser to every transport the canary room's stage uses, publishes
// one synthetic message through the gateway, prints a one-line verdict and
// fails when a transport did not deliver it within --timeout.
func cmdCanary(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("canary")
	var o canaryOptions
	fs.StringVar(&o.configPath, "config", "", "gateway config file")
	fs.StringVar(&o.app, "app", "", "app to check")
	fs.StringVar(&o.room, "room", canaryDefaultRoom, "room the canary message goes to")
	fs.StringVar(&o.event, "event", canaryDefaultEvent, "event name of the canary message (its channel decides the stage)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "deadline for subscribing, and for the message to arrive on each transport")
	fs.StringVar(&o.gateway, "gateway", "", "gateway base URL (default: http://{config listen})")
	fs.StringVar(&o.admin, "admin", "", "admin base URL (default: http://{config admin.listen})")
	fs.StringVar(&o.adminToken, "admin-token", "", "admin token (default: the config's admin.token)")
	fs.StringVar(&o.key, "key", "", "app API key (default: env SWITCHYARD_CANARY_KEY, else the app's first apiKeys entry)")
	fs.StringVar(&o.metricsFile, "metrics-file", "", "write the canary metrics to this Prometheus text file (node_exporter textfile collector)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case o.configPath == "":
		return fmt.Errorf("%w: canary needs --config FILE", errUsage)
	case o.app == "":
		return fmt.Errorf("%w: canary needs --app APP", errUsage)
	case o.timeout <= 0:
		return fmt.Errorf("%w: canary: --timeout must be positive", errUsage)
	}
	if err := broadcast.ValidateRoom(o.room); err != nil {
		return fmt.Errorf("%w: canary: --room: %v", errUsage, err)
	}
	cfg, err := config.Load(o.configPath, getenv)
	if err != nil {
		return err
	}
	app, ok := cfg.Apps[o.app]
	if !ok {
		return fmt.Errorf("%w: canary: app %q is not in %s (apps: %s)", errUsage, o.app, o.configPath, strings.Join(cfg.AppNames(), ", "))
	}
	if o.gateway == "" {
		o.gateway = "http://" + dialAddr(cfg.Listen)
	}
	if o.admin == "" {
		o.admin = "http://" + dialAddr(cfg.Admin.Listen)
	}
	if o.adminToken == "" {
		o.adminToken = cfg.Admin.Token
	}
	if o.key == "" {
		o.key = getenv("SWITCHYARD_CANARY_KEY")
	}
	if o.key == "" && len(app.APIKeys) > 0 {
		o.key = app.APIKeys[0]
	}
	if o.key == "" {
		return fmt.Errorf("%w: canary: no API key: pass --key, set SWITCHYARD_CANARY_KEY, or give apps.%s.apiKeys", errUsage, o.app)
	}
	o.gateway = strings.TrimRight(o.gateway, "/")
	o.admin = strings.TrimRight(o.admin, "/")
	logger, err := newLogger(config.Log{Level: "warn", Format: cfg.Log.Format}, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()

	res := runCanary(ctx, o, app, &http.Client{Timeout: o.timeout + 5*time.Second}, logger)
	fmt.Fprintln(stdout, res.verdict(o.app, o.timeout))
	if o.metricsFile != "" {
		if err := writeCanaryMetrics(o.metricsFile, o.app, res, time.Now()); err != nil {
			return fmt.Errorf("canary: --metrics-file: %w", err)
		}
	}
	if !res.ok() {
		return errCanaryFailed
	}
	return nil
}

// dialAddr turns a listen address into one to dial: an unspecified host
// (":8080", "0.0.0.0:8080", "[::]:8080") becomes loopback.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// canaryResult is the outcome of one canary run.
type canaryResult struct {
	stage broadcast.Stage
	// err is a failure before any transport could be checked (route,
	// subscribe, publish).
	err error
	// checks are the transports checked, in the order legacy, realtime.
	checks []canaryCheck
}

type canaryCheck struct {
	transport broadcast.Transport
	latency   time.Duration // publish start to receipt; valid when received
	received  bool
	failure   string // why not received
}

func (r canaryResult) ok() bool {
	if r.err != nil || len(r.checks) == 0 {
		return false
	}
	for _, c := range r.checks {
		if !c.received {
			return false
		}
	}
	return true
}

// verdict is the one-line result: `canary ok app=ai-hero stage=shadow
// legacy=12ms realtime=15ms`, or `canary FAIL ...` naming the failure.
func (r canaryResult) verdict(app string, timeout time.Duration) string {
	var b strings.Builder
	if r.ok() {
		b.WriteString("canary ok")
	} else {
		b.WriteString("canary FAIL")
	}
	fmt.Fprintf(&b, " app=%s", app)
	if r.stage != "" {
		fmt.Fprintf(&b, " stage=%s", r.stage)
	}
	for _, c := range r.checks {
		if c.received {
			fmt.Fprintf(&b, " %s=%s", c.transport, fmtLatency(c.latency))
		} else {
			fmt.Fprintf(&b, " %s: %s", c.transport, c.failure)
		}
	}
	if r.err != nil {
		fmt.Fprintf(&b, " %v", r.err)
	}
	return b.String()
}

func fmtLatency(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 10 {
		return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
}

// transportsOf lists the transports a stage publishes to.
func transportsOf(s broadcast.Stage) []broadcast.Transport {
	switch s {
	case broadcast.StageLegacy:
		return []broadcast.Transport{broadcast.TransportLegacy}
	case broadcast.StageRealtime:
		return []broadcast.Transport{broadcast.TransportRealtime}
	}
	return []broadcast.Transport{broadcast.TransportLegacy, broadcast.TransportRealtime}
}

// arrivals collects the first receipt of the canary message per transport.
type arrivals struct {
	requestID, name string
	mu              sync.Mutex
	at              map[broadcast.Transport]time.Time
	notify          chan struct{}
}

func (a *arrivals) frame(t broadcast.Transport, data []byte, at time.Time) {
	env, err := broadcast.DecodeEnvelope(data)
	if err != nil || env.RequestID != a.requestID || env.Name != a.name {
		return
	}
	a.mu.Lock()
	if _, seen := a.at[t]; !seen {
		a.at[t] = at
	}
	a.mu.Unlock()
	select {
	case a.notify <- struct{}{}:
	default:
	}
}

func (a *arrivals) get(t broadcast.Transport) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.at[t]
	return at, ok
}

// runCanary asks the admin API for the stage, subscribes to its
// transports, publishes one message and waits for it on each.
func runCanary(ctx context.Context, o canaryOptions, app config.App, hc *http.Client, logger *zap.Logger) canaryResult {
	var res canaryResult
	setupCtx, cancelSetup := context.WithTimeout(ctx, o.timeout)
	defer cancelSetup()
	route, err := fetchRoute(setupCtx, hc, o)
	if err != nil {
		res.err = fmt.Errorf("route: %w", err)
		return res
	}
	res.stage = route.Stage
	want := transportsOf(route.Stage)

	var b [8]byte
	_, _ = rand.Read(b[:])
	run := hex.EncodeToString(b[:])
	arr := &arrivals{requestID: "switchyard-canary-" + run, name: o.event, at: map[broadcast.Transport]time.Time{}, notify: make(chan struct{}, 1)}

	// The subscriptions end before runCanary returns, goroutines included.
	subCtx, stopSubs := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer bg.Wait()
	defer stopSubs()
	var ready []func() bool
	for _, t := range want {
		switch t {
		case broadcast.TransportLegacy:
			sc := legacyparty.SubscriberConfig{URL: app.Party.URL, Party: app.Party.Party, PathPrefix: app.Party.PathPrefix,
				Room: o.room, ConnID: "switchyard-canary-" + run}
			if err := sc.Validate(); err != nil {
				res.err = fmt.Errorf("legacy: subscribe: %w", err)
				return res
			}
			s := legacyparty.Subscribe(sc, func(data []byte, at time.Time) { arr.frame(t, data, at) }, nil, logger.Named("canary.legacy"))
			defer s.Close()
			ready = append(ready, s.Ready)
		case broadcast.TransportRealtime:
			isReady, err := subscribeRealtime(setupCtx, subCtx, &bg, o, app, route.Channel, arr, logger)
			if err != nil {
				res.err = fmt.Errorf("realtime: subscribe: %w", err)
				return res
			}
			ready = append(ready, isReady)
		}
	}
	for {
		all := true
		for i, r := range ready {
			if !r() {
				all = false
				if setupCtx.Err() != nil {
					res.err = fmt.Errorf("%s: not subscribed within %s", want[i], o.timeout)
					return res
				}
			}
		}
		if all {
			break
		}
		sleepCtx(setupCtx, 20*time.Millisecond)
	}

	sent := time.Now()
	stage, err := publishCanary(setupCtx, hc, o, arr.requestID, run, sent)
	if err != nil {
		res.err = fmt.Errorf("publish: %w", err)
		return res
	}
	if stage != route.Stage {
		for _, t := range transportsOf(stage) {
			if !contains(want, t) {
				res.stage = stage
				res.err = fmt.Errorf("stage changed from %s to %s between the route lookup and the publish; run again", route.Stage, stage)
				return res
			}
		}
		res.stage, want = stage, transportsOf(stage)
	}

	deadline := time.NewTimer(o.timeout)
	defer deadline.Stop()
	for {
		done := true
		for _, t := range want {
			if _, ok := arr.get(t); !ok {
				done = false
			}
		}
		if done {
			break
		}
		select {
		case <-arr.notify:
			continue
		case <-deadline.C:
		case <-ctx.Done():
		}
		break
	}
	for _, t := range want {
		c := canaryCheck{transport: t}
		if at, ok := arr.get(t); ok {
			c.received, c.latency = true, max(0, at.Sub(sent))
		} else {
			c.failure = fmt.Sprintf("not received within %s", o.timeout)
			if ctx.Err() != nil {
				c.failure = "interrupted"
			}
		}
		res.checks = append(res.checks, c)
	}
	return res
}

func contains(ts []broadcast.Transport, t broadcast.Transport) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// subscribeRealtime subscribes like a browser: a token minted with the
// config's signing key for the room's channel and the canary channel's
// topic, on a Subscriber that runs until runCtx ends (tracked by bg).
func subscribeRealtime(setupCtx, runCtx context.Context, bg *sync.WaitGroup, o canaryOptions, app config.App, channel string, arr *arrivals, logger *zap.Logger) (func() bool, error) {
	c, err := realtime.NewClient(o.app, realtime.Config{URL: app.Realtime.URL, SigningKey: app.Realtime.SigningKey,
		FallbackSigningKey: app.Realtime.FallbackSigningKey, ChannelTemplate: app.Realtime.Channel,
		Topics: app.Realtime.Topics}, nil, nil, logger.Named("canary.realtime"))
	if err != nil {
		return nil, err
	}
	rc, topic := c.Channel(o.room, channel), c.Topic(channel)
	tok, err := c.MintToken(setupCtx, rc, []string{topic})
	if err != nil {
		return nil, err
	}
	sub, err := realtime.NewSubscriber(realtime.SubscriberConfig{URL: app.Realtime.URL, OnMsg: func(m realtime.Msg) {
		if m.Channel == rc && m.Topic == topic {
			arr.frame(broadcast.TransportRealtime, m.Data, m.ReceivedAt)
		}
	}}, c, nil, logger.Named("canary.realtime"))
	if err != nil {
		return nil, err
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		_ = sub.Run(runCtx)
	}()
	s, err := sub.Sub(setupCtx, tok)
	if err != nil {
		return nil, err
	}
	return s.Ready, nil
}

// fetchRoute asks GET {admin}/v1/admin/routes for the canary message's
// stage.
func fetchRoute(ctx context.Context, hc *http.Client, o canaryOptions) (broadcast.Route, error) {
	q := url.Values{"app": {o.app}, "room": {o.room}, "event": {o.event}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.admin+"/v1/admin/routes?"+q.Encode(), nil)
	if err != nil {
		return broadcast.Route{}, err
	}
	if o.adminToken != "" {
		req.Header.Set("Authorization", "Bearer "+o.adminToken)
	}
	b, status, err := doRead(hc, req)
	if err != nil {
		return broadcast.Route{}, err
	}
	if status != http.StatusOK {
		return broadcast.Route{}, fmt.Errorf("GET /v1/admin/routes: %d %s", status, errorText(b))
	}
	var ans struct {
		Route *broadcast.Route `json:"route"`
	}
	if err := json.Unmarshal(b, &ans); err != nil || ans.Route == nil {
		return broadcast.Route{}, fmt.Errorf("GET /v1/admin/routes: unexpected answer %.200q", b)
	}
	if _, err := broadcast.ParseStage(string(ans.Route.Stage)); err != nil {
		return broadcast.Route{}, fmt.Errorf("GET /v1/admin/routes: %w", err)
	}
	return *ans.Route, nil
}

// publishCanary sends the canary message through POST /v1/broadcast and
// returns the stage the gateway answered with.
func publishCanary(ctx context.Context, hc *http.Client, o canaryOptions, requestID, run string, sent time.Time) (broadcast.Stage, error) {
	body, _ := json.Marshal(map[string]any{
		"room": o.room, "name": o.event, "requestId": requestID,
		"body": map[string]any{"canary": true, "run": run, "sentAt": sent.UTC().Format(time.RFC3339Nano)},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.gateway+"/v1/broadcast", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+o.key)
	req.Header.Set("Content-Type", "application/json")
	b, status, err := doRead(hc, req)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("%d %s", status, errorText(b))
	}
	var ans struct {
		Stage broadcast.Stage `json:"stage"`
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return "", fmt.Errorf("unexpected answer %.200q", b)
	}
	if _, err := broadcast.ParseStage(string(ans.Stage)); err != nil {
		return "", fmt.Errorf("answer: %w", err)
	}
	return ans.Stage, nil
}

func doRead(hc *http.Client, req *http.Request) ([]byte, int, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, 0, err
	}
	return b, resp.StatusCode, nil
}

// errorText renders the gateway's JSON error ("code: message"), or the
// start of any other body.
func errorText(b []byte) string {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
		return e.Error.Code + ": " + e.Error.Message
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// Canary metric names (docs/metrics.md).
const (
	canaryRunsMetric        = "switchyard_canary_runs_total"
	canaryLastSuccessMetric = "switchyard_canary_last_success_timestamp_seconds"
)

// writeCanaryMetrics writes the canary metrics to path in the Prometheus
// text format, atomically (node_exporter's textfile collector reads it).
// The canary is a short-lived process, so the series of the previous file
// (every app's) are carried over: runs_total keeps counting across runs and
// a transport's last success stays until it succeeds again.
func writeCanaryMetrics(path, app string, res canaryResult, now time.Time) error {
	reg := prometheus.NewRegistry()
	runs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: canaryRunsMetric,
		Help: "Canary runs by verdict (ok, fail)."}, []string{"app", "result"})
	last := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: canaryLastSuccessMetric,
		Help: "Unix time the canary message was last seen on a transport."}, []string{"app", "transport"})
	reg.MustRegister(runs, last)
	if err := loadCanaryMetrics(path, runs, last); err != nil {
		return err
	}
	result := "fail"
	if res.ok() {
		result = "ok"
	}
	runs.WithLabelValues(app, "ok").Add(0)
	runs.WithLabelValues(app, "fail").Add(0)
	runs.WithLabelValues(app, result).Inc()
	for _, c := range res.checks {
		if c.received {
			last.WithLabelValues(app, string(c.transport)).Set(float64(now.UnixNano()) / 1e9)
		}
	}
	return prometheus.WriteToTextfile(path, reg)
}

// loadCanaryMetrics adds the canary series of an existing metrics file to
// runs and last. A missing file is not an error; a malformed one is.
func loadCanaryMetrics(path string, runs *prometheus.CounterVec, last *prometheus.GaugeVec) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("previous %s: %w", path, err)
	}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			switch {
			case name == canaryRunsMetric && m.GetCounter() != nil && l["app"] != "" && l["result"] != "":
				if v := m.GetCounter().GetValue(); v > 0 {
					runs.WithLabelValues(l["app"], l["result"]).Add(v)
				}
			case name == canaryLastSuccessMetric && m.GetGauge() != nil && l["app"] != "" && l["transport"] != "":
				last.WithLabelValues(l["app"], l["transport"]).Set(m.GetGauge().GetValue())
			}
		}
	}
	return nil
}
