package shadow

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/switchyard/switchyard/broadcast"
)

// BenchmarkMessagePair measures one compared message: Expect, the legacy
// copy (re-encoded as PartyKit does) and the realtime copy, decoding and
// comparing both against the original, run synchronously on one goroutine.
func BenchmarkMessagePair(b *testing.B) {
	h := newHarness(b, Config{}, nil)
	lw, rw := h.observe(b, app, "bench")
	body := `{"videoResourceId":"vr_01HZX3","status":"ready","duration":123.0,"tags":["a","b","c"],"asset":{"id":"as_9f8e7d","playbackId":"pb_123","width":1920,"height":1080}}`
	legacyBody := `{"videoResourceId":"vr_01HZX3","status":"ready","duration":123,"tags":["a","b","c"],"asset":{"id":"as_9f8e7d","playbackId":"pb_123","width":1920,"height":1080}}`
	msgs := make([]*broadcast.Message, b.N)
	legacy := make([]string, b.N)
	for i := range msgs {
		id := fmt.Sprintf("req-%d", i)
		m, err := broadcast.NewMessage(app, "bench", "video.asset.ready", id, json.RawMessage(body), "video", h.clock.Now())
		if err != nil {
			b.Fatal(err)
		}
		m.Seq = uint64(i + 1)
		msgs[i] = m
		legacy[i] = fmt.Sprintf(`{"body":%s,"requestId":%q,"name":"video.asset.ready"}`, legacyBody, id)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := msgs[i]
		h.c.Expect(m, broadcast.StageShadow)
		lw.deliver(legacy[i], m.AcceptedAt)
		rw.deliver(string(m.Envelope), m.AcceptedAt)
		h.pump()
		if i%1000 == 999 {
			b.StopTimer()
			h.c.sweep(h.clock.Advance(DefaultTimeout + time.Second))
			b.StartTimer()
		}
	}
	b.StopTimer()
	if got := h.count(app, "video", OutcomeMatch); got != b.N {
		b.Fatalf("matches = %d, want %d", got, b.N)
	}
}

// BenchmarkExpect measures the caller-path cost alone on an observed room.
func BenchmarkExpect(b *testing.B) {
	h := newHarness(b, Config{MaxPending: 1 << 30}, nil)
	h.observe(b, app, "bench")
	msgs := make([]*broadcast.Message, b.N)
	for i := range msgs {
		m, err := broadcast.NewMessage(app, "bench", "n", fmt.Sprint("e", i), json.RawMessage(`{}`), "video", h.clock.Now())
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = m
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.c.Expect(msgs[i], broadcast.StageShadow)
		if i%10000 == 9999 { // steady state: the table holds at most 10,000
			b.StopTimer()
			h.c.sweep(h.clock.Advance(DefaultTimeout + time.Second))
			b.StartTimer()
		}
	}
}

// BenchmarkExpectAndAwait measures the caller-path cost of a message of an
// observed room whose watches are ready: Expect and the AwaitWatch of both
// copies (what a message after a room's first one costs).
func BenchmarkExpectAndAwait(b *testing.B) {
	h := newHarness(b, Config{MaxPending: 1 << 30}, nil)
	h.observe(b, app, "bench")
	msgs := make([]*broadcast.Message, b.N)
	for i := range msgs {
		m, err := broadcast.NewMessage(app, "bench", "n", fmt.Sprint("e", i), json.RawMessage(`{}`), "video", h.clock.Now())
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = m
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.c.Expect(msgs[i], broadcast.StageShadow)
		h.c.AwaitWatch(ctx, msgs[i], broadcast.TransportLegacy)
		h.c.AwaitWatch(ctx, msgs[i], broadcast.TransportRealtime)
		if i%10000 == 9999 {
			b.StopTimer()
			h.c.sweep(h.clock.Advance(DefaultTimeout + time.Second))
			b.StartTimer()
		}
	}
}

// BenchmarkObservedRooms measures the comparator's memory per observed room
// with 10,000 rooms open on fake watchers (whose own cost is included: two
// small structs per room).
func BenchmarkObservedRooms(b *testing.B) {
	const rooms = 10000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		h := newHarness(b, Config{MaxRooms: rooms}, nil)
		names := make([]string, rooms)
		msgs := make([]*broadcast.Message, rooms)
		for j := range names {
			names[j] = fmt.Sprintf("room-%05d", j)
			m, err := broadcast.NewMessage(app, names[j], "n", "p"+names[j], json.RawMessage(`{}`), "video", h.clock.Now())
			if err != nil {
				b.Fatal(err)
			}
			msgs[j] = m
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		for j := range msgs {
			h.c.Expect(msgs[j], broadcast.StageShadow)
			if j%512 == 511 {
				h.pump() // keep the dial queue (1024) from filling
			}
		}
		h.pump()
		// Expire the unobserved tombstones so only the rooms remain.
		h.c.sweep(h.clock.Advance(DefaultTimeout + time.Second))
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := h.c.roomCount.Load(); got != rooms {
			b.Fatalf("rooms = %d, want %d", got, rooms)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/rooms, "bytes/room")
		runtime.KeepAlive(h)
		runtime.KeepAlive(msgs)
	}
}
