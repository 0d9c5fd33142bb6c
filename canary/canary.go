// Package canary checks delivery end to end, the way a user would see it:
// it asks the gateway which stage a canary room is on, subscribes like a
// browser to every transport that stage publishes to, publishes one
// synthetic message through the gateway's public API and reports, per
// transport, whether and how fast it arrived, and, on the compared stages,
// the comparator's coverage of the channel. Its result can be written as
// a node_exporter textfile for alerting on a stale or failing canary.
//
// With several replicas one run checks one path: the stage as the replica
// behind the admin URL resolves it, and the publish through whichever
// replica the load balancer picks for the canary room (always the same one
// while it is up, room affinity). It does not aggregate across replicas;
// the dashboard does (docs/metrics.md, "Several replicas").
package canary

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/switchyard/switchyard/adminclient"
	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/realtime"
	"go.uber.org/zap"
)

// Defaults of a canary run.
const (
	DefaultRoom  = "switchyard-canary"
	DefaultEvent = "switchyard.canary"
)

// Options are the settings of one run.
type Options struct {
	// App is the app checked; Key is its API key.
	App, Key string
	// Room and Event address the canary message (the event's channel
	// decides the stage).
	Room, Event string
	// Timeout bounds subscribing, and the wait on each transport.
	Timeout time.Duration
}

// Result is the outcome of one canary run.
type Result struct {
	stage broadcast.Stage
	// err is a failure before any transport could be checked (route,
	// subscribe, publish).
	err error
	// checks are the transports checked, in the order legacy, realtime.
	checks []check
	// coverage is the comparator's coverage of the canary's channel, read
	// after the run when its stage is compared (nil otherwise).
	coverage *coverage
}

// coverage is what the verdict says of the comparator's view of the
// canary's channel: how much of its sampled traffic parity describes.
type coverage struct {
	channel           string
	sampled, compared int64
	percent           *float64
	err               error // the summary could not be read
}

func (c *coverage) String() string {
	switch {
	case c.err != nil:
		return "coverage=unknown"
	case c.percent == nil:
		return fmt.Sprintf("coverage=- compared=0/%d", c.sampled)
	}
	return fmt.Sprintf("coverage=%.1f%% compared=%d/%d", *c.percent, c.compared, c.sampled)
}

// check is the outcome of one transport in a run.
type check struct {
	transport broadcast.Transport
	latency   time.Duration // publish start to receipt; valid when received
	received  bool
	failure   string // why not received
}

// OK reports whether every transport of the stage delivered the message.
func (r Result) OK() bool {
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

// Verdict is the one-line result: `canary ok app=ai-hero stage=shadow
// legacy=12ms realtime=15ms coverage=99.2% compared=1240/1250`, or
// `canary FAIL ...` naming the failure. The coverage (the comparator's
// compared / sampled messages of the canary's channel over its window, see
// docs/shadow.md) is shown for the compared stages, shadow and dual; it is
// information, not a failure.
func (r Result) Verdict(app string, timeout time.Duration) string {
	var b strings.Builder
	if r.OK() {
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
	if r.coverage != nil {
		fmt.Fprintf(&b, " %s", r.coverage)
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

// Run asks the admin API (through c) for the stage, subscribes to its
// transports with the app's upstream settings, publishes one message
// through c's public URL and waits for it on each. It ends every
// subscription, goroutines included, before it returns. logger nil is a
// no-op logger.
func Run(ctx context.Context, o Options, app config.App, c *adminclient.Client, logger *zap.Logger) Result {
	if logger == nil {
		logger = zap.NewNop()
	}
	var res Result
	setupCtx, cancelSetup := context.WithTimeout(ctx, o.Timeout)
	defer cancelSetup()
	route, err := c.Route(setupCtx, broadcast.RouteQuery{App: o.App, Room: o.Room, Event: o.Event})
	if err != nil {
		res.err = fmt.Errorf("route: %w", err)
		return res
	}
	res.stage = route.Stage
	want := route.Stage.Transports()

	var b [8]byte
	_, _ = rand.Read(b[:])
	run := hex.EncodeToString(b[:])
	arr := &arrivals{requestID: "switchyard-canary-" + run, name: o.Event, at: map[broadcast.Transport]time.Time{}, notify: make(chan struct{}, 1)}

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
				Room: o.Room, ConnID: "switchyard-canary-" + run}
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
					res.err = fmt.Errorf("%s: not subscribed within %s", want[i], o.Timeout)
					return res
				}
			}
		}
		if all {
			break
		}
		sleep(setupCtx, 20*time.Millisecond)
	}

	sent := time.Now()
	stage, err := publish(setupCtx, c, o, arr.requestID, run, sent)
	if err != nil {
		res.err = fmt.Errorf("publish: %w", err)
		return res
	}
	if stage != route.Stage {
		for _, t := range stage.Transports() {
			if !contains(want, t) {
				res.stage = stage
				res.err = fmt.Errorf("stage changed from %s to %s between the route lookup and the publish; run again", route.Stage, stage)
				return res
			}
		}
		res.stage, want = stage, stage.Transports()
	}

	deadline := time.NewTimer(o.Timeout)
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
	if res.stage.Compared() && ctx.Err() == nil {
		res.coverage = readCoverage(ctx, c, o, route.Channel)
	}
	// Checks are reported legacy first, whatever the answering transport.
	for _, t := range []broadcast.Transport{broadcast.TransportLegacy, broadcast.TransportRealtime} {
		if !slices.Contains(want, t) {
			continue
		}
		c := check{transport: t}
		if at, ok := arr.get(t); ok {
			c.received, c.latency = true, max(0, at.Sub(sent))
		} else {
			c.failure = fmt.Sprintf("not received within %s", o.Timeout)
			if ctx.Err() != nil {
				c.failure = "interrupted"
			}
		}
		res.checks = append(res.checks, c)
	}
	return res
}

// readCoverage reads the comparator's row of the canary's app and
// channel from the admin API, within o.Timeout.
func readCoverage(ctx context.Context, c *adminclient.Client, o Options, channel string) *coverage {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cov := &coverage{channel: channel}
	sum, err := c.ShadowSummary(ctx)
	if err != nil {
		cov.err = err
		return cov
	}
	for _, row := range sum.For(o.App) {
		if row.Channel == channel {
			cov.sampled, cov.compared, cov.percent = row.Sampled, row.Compared, row.CoveragePercent
		}
	}
	return cov
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
func subscribeRealtime(setupCtx, runCtx context.Context, bg *sync.WaitGroup, o Options, app config.App, channel string, arr *arrivals, logger *zap.Logger) (func() bool, error) {
	c, err := realtime.NewClient(o.App, realtime.Config{URL: app.Realtime.URL, SigningKey: app.Realtime.SigningKey,
		FallbackSigningKey: app.Realtime.FallbackSigningKey, ChannelTemplate: app.Realtime.Channel,
		Party: app.Party.Party, Topics: app.Realtime.Topics}, nil, nil, logger.Named("canary.realtime"))
	if err != nil {
		return nil, err
	}
	rc, topic := c.Channel(o.Room, channel), c.Topic(channel)
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

// publish sends the canary message through POST /v1/broadcast and returns
// the stage the gateway answered with.
func publish(ctx context.Context, c *adminclient.Client, o Options, requestID, run string, sent time.Time) (broadcast.Stage, error) {
	body, _ := json.Marshal(map[string]any{"canary": true, "run": run, "sentAt": sent.UTC().Format(time.RFC3339Nano)})
	ans, err := c.Broadcast(ctx, o.Key, adminclient.BroadcastRequest{Room: o.Room, Name: o.Event, RequestID: requestID, Body: body})
	var ae *adminclient.Error
	if errors.As(err, &ae) && ae.Code != "" {
		return "", fmt.Errorf("%d %s: %s", ae.Status, ae.Code, ae.Message) // the verdict line stays short
	}
	if err != nil {
		return "", err
	}
	return ans.Stage, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Canary metric names (docs/metrics.md).
const (
	RunsMetric        = "switchyard_canary_runs_total"
	LastSuccessMetric = "switchyard_canary_last_success_timestamp_seconds"
)

// WriteMetrics writes the canary metrics to path in the Prometheus
// text format, atomically (node_exporter's textfile collector reads it).
// The canary is a short-lived process, so the series of the previous file
// (every app's) are carried over: runs_total keeps counting across runs and
// a transport's last success stays until it succeeds again.
func WriteMetrics(path, app string, res Result, now time.Time) error {
	reg := prometheus.NewRegistry()
	runs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: RunsMetric,
		Help: "Canary runs by verdict (ok, fail)."}, []string{"app", "result"})
	last := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: LastSuccessMetric,
		Help: "Unix time the canary message was last seen on a transport."}, []string{"app", "transport"})
	reg.MustRegister(runs, last)
	if err := loadMetrics(path, runs, last); err != nil {
		return err
	}
	result := "fail"
	if res.OK() {
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

// loadMetrics adds the canary series of an existing metrics file to
// runs and last. A missing file is not an error; a malformed one is.
func loadMetrics(path string, runs *prometheus.CounterVec, last *prometheus.GaugeVec) error {
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
			case name == RunsMetric && m.GetCounter() != nil && l["app"] != "" && l["result"] != "":
				if v := m.GetCounter().GetValue(); v > 0 {
					runs.WithLabelValues(l["app"], l["result"]).Add(v)
				}
			case name == LastSuccessMetric && m.GetGauge() != nil && l["app"] != "" && l["transport"] != "":
				last.WithLabelValues(l["app"], l["transport"]).Set(m.GetGauge().GetValue())
			}
		}
	}
	return nil
}
