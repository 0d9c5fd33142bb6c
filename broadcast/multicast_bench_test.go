package broadcast

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// benchMessages builds n distinct messages spread over rooms rooms.
func benchMessages(b *testing.B, n, rooms int) []*Message {
	b.Helper()
	body := json.RawMessage(`{"text":"hello from the benchmark","n":42}`)
	now := time.Now()
	msgs := make([]*Message, n)
	for i := range msgs {
		m, err := NewMessage("app", "room-"+strconv.Itoa(i%rooms), "ai.message", "req-"+strconv.Itoa(i), body, "ai", now)
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = m
	}
	return msgs
}

func BenchmarkBroadcast(b *testing.B) {
	fast := PublisherFunc(func(ctx context.Context, m *Message) (PublishResult, error) {
		return PublishResult{Attempts: 1}, nil
	})
	for _, stage := range []Stage{StageLegacy, StageShadow, StageDual} {
		for _, parallel := range []bool{false, true} {
			name := string(stage) + "/serial"
			if parallel {
				name = string(stage) + "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				msgs := benchMessages(b, b.N, 256)
				mc := NewMulticaster(Config{Apps: map[string]AppLimits{"app": {}}, Channels: []string{"ai"}},
					fast, fast, fixedStage(stage), nil, NewMetrics(prometheus.NewRegistry()), nil, nil)
				ctx := context.Background()
				ran := make(chan error, 1)
				go func() { ran <- mc.Run(ctx) }()
				var next atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				if parallel {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := mc.Broadcast(ctx, msgs[next.Add(1)-1]); err != nil {
								b.Error(err)
							}
						}
					})
				} else {
					for i := 0; i < b.N; i++ {
						if _, err := mc.Broadcast(ctx, msgs[i]); err != nil {
							b.Error(err)
						}
					}
				}
				mc.Close(context.Background())
				if err := <-ran; err != nil {
					b.Error(err)
				}
				b.StopTimer()
				var dropped float64
				for _, t := range transportsByIndex {
					dropped += metricValueB(b, mc, t)
				}
				b.ReportMetric(dropped/float64(b.N), "dropped/op")
			})
		}
	}
}

// metricValueB reads the queue_full drops of t.
func metricValueB(b *testing.B, mc *Multicaster, t Transport) float64 {
	b.Helper()
	return testutil.ToFloat64(mc.metrics.dropped[tIndex(t)][dropQueueFull])
}

// BenchmarkSampled measures the per-message sampling decision, all that an
// unsampled room costs: the channel's rate and a hash of app and room.
func BenchmarkSampled(b *testing.B) {
	mc := &Multicaster{cfg: Config{SampleRate: func(string) float64 { return 0.25 }}}
	rooms := make([]string, 1024)
	for i := range rooms {
		rooms[i] = "course-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := 0; i < b.N; i++ {
		if mc.Sampled("ai-hero", rooms[i&1023], "video-ready") {
			n++
		}
	}
	if b.N >= 1024 && (n == 0 || n == b.N) {
		b.Fatalf("sampled %d of %d at rate 0.25", n, b.N)
	}
}
