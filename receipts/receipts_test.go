package receipts

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestViaOfReceipt(t *testing.T) {
	for _, c := range []struct {
		r    Receipt
		want Via
	}{
		{Receipt{Legacy: true}, ViaLegacy},
		{Receipt{Realtime: true}, ViaRealtime},
		{Receipt{Legacy: true, Realtime: true}, ViaBoth},
		{Receipt{}, ViaNeither},
	} {
		if got := c.r.Via(); got != c.want {
			t.Errorf("%+v.Via() = %s, want %s", c.r, got, c.want)
		}
	}
}

func TestAggregatorCountsAndWindow(t *testing.T) {
	reg := prometheus.NewRegistry()
	clk := &clock{t: time.Unix(1_000_000, 0)}
	a := New(Config{Apps: []string{"ai-hero"}, Channels: []string{"ai-stream", "default"}, Window: time.Minute, Buckets: 6}, NewMetrics(reg), clk.now)
	ms := time.Millisecond
	a.Record("ai-hero", []Receipt{
		{Channel: "ai-stream", Legacy: true, LegacyLatency: 20 * ms},
		{Channel: "ai-stream", Realtime: true, RealtimeLatency: 40 * ms},
		{Channel: "ai-stream", Legacy: true, Realtime: true, LegacyLatency: 20 * ms, RealtimeLatency: 40 * ms},
		{Channel: "ai-stream"},
		{Channel: "made-up", Legacy: true},
	})
	a.Record("other-app", []Receipt{{Channel: "default", Realtime: true}})

	got := a.Summary()
	if len(got) != 3 {
		t.Fatalf("summary has %d rows, want 3 (ai-hero/ai-stream, ai-hero/unknown, unknown/default): %+v", len(got), got)
	}
	s := got[0]
	if s.App != "ai-hero" || s.Channel != "ai-stream" || s.Messages != 4 {
		t.Fatalf("first row = %+v", s)
	}
	for v, n := range map[Via]int64{ViaLegacy: 1, ViaRealtime: 1, ViaBoth: 1, ViaNeither: 1} {
		if s.Via[v] != n {
			t.Errorf("via %s = %d, want %d", v, s.Via[v], n)
		}
	}
	if s.ReceivedPercent == nil || *s.ReceivedPercent != 75 {
		t.Errorf("received percent = %v, want 75", s.ReceivedPercent)
	}
	if s.LegacyLatency.Count != 2 || s.RealtimeLatency.Count != 2 {
		t.Errorf("latency counts %d/%d, want 2/2", s.LegacyLatency.Count, s.RealtimeLatency.Count)
	}
	if p := s.LegacyLatency.P50Ms; p < 20 || p > 22.1 {
		t.Errorf("legacy p50 = %v ms, want about 20", p)
	}
	if p := s.RealtimeLatency.P99Ms; p < 40 || p > 44.1 {
		t.Errorf("realtime p99 = %v ms, want about 40", p)
	}
	if got[1].Channel != Unknown || got[2].App != Unknown {
		t.Errorf("unconfigured labels not counted as unknown: %+v %+v", got[1], got[2])
	}
	if v := testutil.ToFloat64(a.Metrics().messages.WithLabelValues("ai-hero", "ai-stream", "both")); v != 1 {
		t.Errorf("switchyard_browser_receipts_total{via=both} = %v, want 1", v)
	}
	if n := testutil.CollectAndCount(a.Metrics().latency); n != 6 {
		t.Errorf("latency series = %d, want 6 (3 app/channel pairs x 2 transports)", n)
	}

	clk.add(61 * time.Second)
	if got := a.Summary(); len(got) != 0 {
		t.Errorf("after the window the summary still has %+v", got)
	}
	if v := testutil.ToFloat64(a.Metrics().messages.WithLabelValues("ai-hero", "ai-stream", "neither")); v != 1 {
		t.Errorf("counters must not expire with the window: %v", v)
	}
}
