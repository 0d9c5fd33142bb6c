package realtime

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/realtime/realtimetest"
	"github.com/switchyard/switchyard/upstream"
)

const (
	testKey      = "signkey-test-deadbeef"
	testKeyHash  = "signkey-test-5f78c33274e43fa9de5659265c1d917e25c03722dcb0b8d27db8d5feaa813953"
	otherKey     = "signkey-test-0badc0de"
	eventuallyIn = 5 * time.Second
)

// fastPolicy retries quickly (short backoff) to keep fault tests short; its
// deadlines are long against a loaded machine, so that a test counting
// attempts or expecting success never races them, and shorter than
// eventuallyIn, so that a publish that fails does so within a test's wait.
func fastPolicy() upstream.Policy {
	return upstream.Policy{Timeout: eventuallyIn / 2, AttemptTimeout: eventuallyIn / 4, MaxAttempts: 4, BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond}
}

// hangPolicy is fastPolicy with short deadlines, for the tests whose
// upstream hangs: the deadline firing is their outcome.
func hangPolicy() upstream.Policy {
	p := fastPolicy()
	p.Timeout, p.AttemptTimeout = 400*time.Millisecond, 150*time.Millisecond
	return p
}

func newServer(tb testing.TB, cfg realtimetest.Config) *realtimetest.Server {
	tb.Helper()
	s := realtimetest.NewServer(cfg)
	tb.Cleanup(s.Close)
	return s
}

type metricsReg struct {
	reg *prometheus.Registry
	m   *upstream.Metrics
}

func newMetrics() metricsReg {
	reg := prometheus.NewRegistry()
	return metricsReg{reg: reg, m: upstream.NewMetrics(reg)}
}

// counter returns the value of the counter name whose labels include want.
func (r metricsReg) counter(tb testing.TB, name string, want map[string]string) float64 {
	tb.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metric
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// mustClient builds the client of app1. The tests of subscription and
// publish mechanics name Inngest channels by room, so an empty template is
// "{room}" here; TestDefaultChannelTemplate covers the real default.
func mustClient(tb testing.TB, url string, cfg Config, m *upstream.Metrics) *Client {
	tb.Helper()
	cfg.URL = url
	if cfg.ChannelTemplate == "" {
		cfg.ChannelTemplate = "{room}"
	}
	if cfg.Policy == (upstream.Policy{}) {
		cfg.Policy = fastPolicy()
	}
	c, err := NewClient("app1", cfg, &http.Client{Transport: upstream.NewTransport(8)}, m, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatalf("NewClient: %v", err)
	}
	return c
}

func mustMessage(tb testing.TB, room, channel string, body string) *broadcast.Message {
	tb.Helper()
	m, err := broadcast.NewMessage("app1", room, "video.asset.ready", "req-"+room+"-"+body[:min(len(body), 8)], json.RawMessage(body), channel, time.Now())
	if err != nil {
		tb.Fatalf("NewMessage: %v", err)
	}
	return m
}

func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(eventuallyIn)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// inbox collects subscriber messages.
type inbox struct {
	mu   sync.Mutex
	msgs []Msg
}

func (b *inbox) add(m Msg) { b.mu.Lock(); b.msgs = append(b.msgs, m); b.mu.Unlock() }

func (b *inbox) all() []Msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Msg(nil), b.msgs...)
}

func (b *inbox) len() int { return len(b.all()) }

// runSubscriber starts s.Run until the test ends.
func runSubscriber(tb testing.TB, s *Subscriber) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
}
