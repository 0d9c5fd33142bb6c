package broadcast

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestAppendSequencedEnvelope(t *testing.T) {
	sq := &Sequence{ID: "ab12.1-7", Epoch: "ab12.1", Seq: 7, TS: 1764590000123, Stage: StageDual, Channel: "ai-stream"}
	got := AppendSequencedEnvelope(nil, []byte(`"chunk <1>"`), "req-1", "ai.message", sq)
	plain := AppendEnvelope(nil, []byte(`"chunk <1>"`), "req-1", "ai.message")
	if !bytes.HasPrefix(got, plain[:len(plain)-1]) {
		t.Errorf("sequenced envelope %s does not start with the plain one %s", got, plain)
	}
	want := `{"body":"chunk <1>","requestId":"req-1","name":"ai.message","sy":{"id":"ab12.1-7","epoch":"ab12.1","seq":7,"ts":1764590000123,"stage":"dual","channel":"ai-stream"}}`
	if string(got) != want {
		t.Errorf("envelope\n got %s\nwant %s", got, want)
	}
	env, err := DecodeEnvelope(got)
	if err != nil {
		t.Fatal(err)
	}
	if env.Sy == nil || *env.Sy != *sq {
		t.Errorf("decoded sy = %+v, want %+v", env.Sy, sq)
	}
	sq.KillSwitch = true
	got = AppendSequencedEnvelope(nil, []byte(`{}`), `q"uote`, "x", sq)
	env, err = DecodeEnvelope(got)
	if err != nil || !env.Sy.KillSwitch || env.RequestID != `q"uote` {
		t.Errorf("envelope with kill switch %s decoded as %+v, %v", got, env, err)
	}
}

func TestSequencerNumbersRoomsApart(t *testing.T) {
	s := newSequencer(100, time.Hour, []string{"video-ready", "ai-stream"})
	now := time.Unix(1000, 0)
	e1, n := s.next("a", "r1", "ai-stream", now)
	if n != 1 {
		t.Fatalf("first seq = %d, want 1", n)
	}
	for want := uint64(2); want <= 5; want++ {
		if e, n := s.next("a", "r1", "video-ready", now); n != want || e != e1 {
			t.Fatalf("seq = %s/%d, want %s/%d", e, n, e1, want)
		}
	}
	e2, n := s.next("a", "r2", "ai-stream", now)
	if n != 1 || e2 == e1 {
		t.Errorf("other room: %s/%d, want a new epoch at 1 (first room's epoch %s)", e2, n, e1)
	}
	if e, n := s.next("b", "r1", "ai-stream", now); n != 1 || e == e1 {
		t.Errorf("same room id of another app: %s/%d, want its own epoch at 1", e, n)
	}
	if e, last := s.peek("a", "r1", now); e != e1 || last != 5 {
		t.Errorf("peek = %s/%d, want %s/5", e, last, e1)
	}
	for seq, want := range map[uint64]string{1: "ai-stream", 2: "video-ready", 5: "video-ready"} {
		if ch, ok := s.channelOf("a", "r1", e1, seq); !ok || ch != want {
			t.Errorf("channelOf(%d) = %q, %v; want %q", seq, ch, ok, want)
		}
	}
	for _, c := range []struct {
		epoch string
		seq   uint64
	}{{e1, 0}, {e1, 6}, {e2, 1}, {"other", 1}} {
		if ch, ok := s.channelOf("a", "r1", c.epoch, c.seq); ok {
			t.Errorf("channelOf(%s, %d) = %q, want not found", c.epoch, c.seq, ch)
		}
	}
	// Past the ring, old numbers are forgotten.
	for range sequenceRing {
		s.next("a", "r1", "ai-stream", now)
	}
	if _, ok := s.channelOf("a", "r1", e1, 5); ok {
		t.Error("channelOf a number older than the ring was found")
	}
}

func TestSequencerForgetsIdleAndExcessRooms(t *testing.T) {
	s := newSequencer(1, time.Minute, nil) // one room per shard
	now := time.Unix(1000, 0)
	e1, _ := s.next("a", "r", "default", now)
	s.next("a", "r", "default", now.Add(59*time.Second))
	if e, n := s.next("a", "r", "default", now.Add(118*time.Second)); e != e1 || n != 3 {
		t.Errorf("used within the TTL: %s/%d, want %s/3", e, n, e1)
	}
	e2, n := s.next("a", "r", "default", now.Add(179*time.Second))
	if e2 == e1 || n != 1 {
		t.Errorf("idle past the TTL: %s/%d, want a new epoch at 1", e2, n)
	}
	// Find another room of the same shard: it evicts the first.
	other := ""
	for i := 0; other == ""; i++ {
		if r := "r" + strconv.Itoa(i); hash2("a", r)%seqShards == hash2("a", "r")%seqShards && r != "r" {
			other = r
		}
	}
	later := now.Add(180 * time.Second)
	s.next("a", other, "default", later)
	if e, n := s.next("a", "r", "default", later); e == e2 || n != 1 {
		t.Errorf("after eviction by %s: %s/%d, want a new epoch at 1", other, e, n)
	}
	if got := s.len(); got > seqShards {
		t.Errorf("sequencer holds %d rooms, bound is %d", got, seqShards)
	}
}

// A sequenced app's messages carry a gap-free per-room sequence, in the
// order each transport receives them, with concurrent callers and stage
// changes; another app's envelopes stay exactly the plain ones.
func TestBroadcastSequencedEnvelope(t *testing.T) {
	var mu sync.Mutex
	stage := StageShadow
	r := newRig(t, rigOpts{
		cfg: Config{Sequenced: map[string]bool{"seq-app": true}, Channels: []string{"ai-stream"}},
		resolver: fakeResolver{resolve: func(q RouteQuery) Route {
			mu.Lock()
			defer mu.Unlock()
			return Route{Stage: stage, Channel: q.Channel, KillSwitch: stage == StageLegacy}
		}},
	})
	const callers, each = 4, 25
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if c == 0 && i%5 == 0 {
					mu.Lock()
					stage = AllStages()[(i/5)%NumStages]
					mu.Unlock()
				}
				m, err := NewMessage("seq-app", "room-1", "ai.message", "same-request", json.RawMessage(`"tok"`), "ai-stream", r.clock.Now())
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := r.mc.Broadcast(context.Background(), m); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	r.drain(t)
	seen := map[uint64]Stage{}
	epoch := ""
	for _, p := range []*fakePublisher{r.legacy, r.realtime} {
		var last uint64
		for _, m := range p.messages() {
			env, err := DecodeEnvelope(m.Envelope)
			if err != nil || env.Sy == nil {
				t.Fatalf("envelope %s: %v, sy %v", m.Envelope, err, env.Sy)
			}
			sy := env.Sy
			if epoch == "" {
				epoch = sy.Epoch
			}
			if sy.Epoch != epoch || sy.Seq <= last || sy.ID != fmt.Sprintf("%s-%d", sy.Epoch, sy.Seq) {
				t.Fatalf("out of order or inconsistent: %+v after %d (epoch %s)", sy, last, epoch)
			}
			if sy.TS != m.AcceptedAt.UnixMilli() || sy.Channel != "ai-stream" || sy.KillSwitch != (sy.Stage == StageLegacy) {
				t.Errorf("sy %+v does not describe the message (accepted %v)", sy, m.AcceptedAt)
			}
			last = sy.Seq
			if s, ok := seen[sy.Seq]; ok && s != sy.Stage {
				t.Errorf("seq %d published under two stages", sy.Seq)
			}
			seen[sy.Seq] = sy.Stage
		}
	}
	if len(seen) != callers*each {
		t.Fatalf("%d distinct sequence numbers over both transports, want %d", len(seen), callers*each)
	}
	for n := uint64(1); n <= callers*each; n++ {
		if _, ok := seen[n]; !ok {
			t.Errorf("sequence number %d missing: the sequence has a gap", n)
		}
	}
	if e, last := r.mc.RoomSequence("seq-app", "room-1"); e != epoch || last != callers*each {
		t.Errorf("RoomSequence = %s/%d, want %s/%d", e, last, epoch, callers*each)
	}
	if ch, ok := r.mc.SequenceChannel("seq-app", "room-1", epoch, callers*each); !ok || ch != "ai-stream" {
		t.Errorf("SequenceChannel = %q, %v", ch, ok)
	}

	m := mustMessage(t, "plain-app", "room-1", "ai.message", "r1")
	want := append([]byte(nil), m.Envelope...)
	r2 := newRig(t, rigOpts{cfg: Config{Sequenced: map[string]bool{"seq-app": true}}})
	if _, err := r2.mc.Broadcast(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Envelope, want) || m.Sequence != nil {
		t.Errorf("unsequenced app's envelope changed: %s, want %s", m.Envelope, want)
	}
}
