package flags

import (
	"context"
	"strconv"
	"testing"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/switchyard/switchyard/broadcast"
)

// benchRooms is the number of distinct rooms a benchmark cycles through;
// the cached variant keeps them all in the cache.
const benchRooms = 1024

func benchQueries(channel string) []broadcast.RouteQuery {
	qs := make([]broadcast.RouteQuery, benchRooms)
	for i := range qs {
		qs[i] = broadcast.RouteQuery{App: "ai-hero", Room: "room-" + strconv.Itoa(i), Channel: channel, Event: "token"}
	}
	return qs
}

// benchResolve measures Resolve on the real flagd file provider with the
// dev-like flags: a static stage ("transcript") or a fractional split
// ("ai-stream").
func benchResolve(b *testing.B, channel string, cacheSize int) {
	frac := `{"fractional":[{"cat":[{"var":"$flagd.flagKey"},{"var":"targetingKey"}]},["realtime",50],["dual",50]]}`
	data := doc(b, map[string]string{
		KillSwitchKey: killFlag("off", ""), DefaultFlagKey: stageFlag("legacy", ""),
		"realtime-video-upload": stageFlag("legacy", ""), "realtime-video-ready": stageFlag("shadow", ""),
		"realtime-transcript": stageFlag("dual", ""), "realtime-ai-stream": stageFlag("realtime", frac),
	})
	f := newFileFixture(b, "", data, func(c *Config) { c.CacheSize = cacheSize })
	qs := benchQueries(channel)
	for _, q := range qs { // warm the cache (no-op when uncached)
		f.r.Resolve(q)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if rt := f.r.Resolve(qs[i%benchRooms]); rt.Error != "" {
			b.Fatal(rt.Error)
		}
		i++
	}
}

func BenchmarkResolveCachedStatic(b *testing.B)       { benchResolve(b, "transcript", DefaultCacheSize) }
func BenchmarkResolveUncachedStatic(b *testing.B)     { benchResolve(b, "transcript", -1) }
func BenchmarkResolveCachedFractional(b *testing.B)   { benchResolve(b, "ai-stream", DefaultCacheSize) }
func BenchmarkResolveUncachedFractional(b *testing.B) { benchResolve(b, "ai-stream", -1) }

// BenchmarkResolveCachedParallel measures cache contention across cores.
func BenchmarkResolveCachedParallel(b *testing.B) {
	data := stagesDoc(b, "off", map[string]string{"transcript": "dual"})
	f := newFileFixture(b, "", data, nil)
	qs := benchQueries("transcript")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			f.r.Resolve(qs[i%benchRooms])
			i++
		}
	})
}

// BenchmarkProviderDirect is the floor: one string evaluation on the
// flagd provider without the OpenFeature client (no hooks, no kill switch).
func BenchmarkProviderDirect(b *testing.B) {
	data := stagesDoc(b, "off", map[string]string{"transcript": "dual"})
	f := newFileFixture(b, "", data, nil)
	_ = f
	cfg := Config{File: f.path, Env: "dev", Channels: testChannels}
	p, err := NewProvider(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	startClient(b, p)
	flat := openfeature.FlattenedContext{"targetingKey": "room-1", "app": "a", "env": "dev", "channel": "transcript", "event": "e"}
	b.ReportAllocs()
	for b.Loop() {
		if d := p.StringEvaluation(context.Background(), "realtime-transcript", "legacy", flat); d.Value != "dual" {
			b.Fatal(d.Value)
		}
	}
}
