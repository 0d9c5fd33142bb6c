package shadow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/legacyparty/partykitdev"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/realtime/inngestdev"
	"github.com/switchyard/switchyard/realtime/realtimetest"
	"github.com/switchyard/switchyard/shadow"
)

const (
	itApp     = "courses"
	itChannel = "video"
	probeChan = "probe"
)

// stack is a comparator wired to real websocket subscriptions on a PartyKit
// server (partytest or a real dev server) and a realtimetest server, with
// the transports' real publishing clients.
type stack struct {
	c        *shadow.Comparator
	legacy   *legacyparty.Client
	realtime *realtime.Client
	rt       *realtimetest.Server
	reg      *prometheus.Registry
	seq      atomic.Uint64
}

func newStack(t *testing.T, partyURL string, timeout time.Duration) *stack {
	t.Helper()
	rt := realtimetest.NewServer(realtimetest.Config{})
	t.Cleanup(rt.Close)
	s := newStackOn(t, partyURL, rt.URL(), timeout)
	s.rt = rt
	return s
}

// newStackOn is newStack against the Inngest Realtime server at
// realtimeURL (rt stays nil: no fault switches).
func newStackOn(t *testing.T, partyURL, realtimeURL string, timeout time.Duration) *stack {
	t.Helper()
	logger := zaptest.NewLogger(t)

	pcfg := legacyparty.Config{URL: partyURL}
	lc, err := legacyparty.NewClient(pcfg, nil, nil, logger)
	if err != nil {
		t.Fatalf("legacyparty.NewClient: %v", err)
	}
	lw, err := legacyparty.NewWatcher(map[string]legacyparty.Config{itApp: pcfg}, nil, logger)
	if err != nil {
		t.Fatalf("legacyparty.NewWatcher: %v", err)
	}
	rc, err := realtime.NewClient(itApp, realtime.Config{URL: realtimeURL}, nil, nil, logger)
	if err != nil {
		t.Fatalf("realtime.NewClient: %v", err)
	}
	rw := realtime.NewWatcher(map[string]*realtime.Client{itApp: rc}, []string{itChannel, probeChan}, nil, logger,
		realtime.WithBackoff(20*time.Millisecond, 200*time.Millisecond))

	reg := prometheus.NewRegistry()
	c := shadow.New(shadow.Config{Timeout: timeout}, lw, rw, shadow.NewMetrics(reg), logger, time.Now)
	// The comparator and its watchers run under one context, as in the
	// gateway.
	ctx, cancel := context.WithCancel(context.Background())
	runs := map[string]func(context.Context) error{"comparator": c.Run, "legacy watcher": lw.Run, "realtime watcher": rw.Run}
	done := make(chan error, len(runs))
	for name, run := range runs {
		go func() {
			if err := run(ctx); err != nil {
				done <- fmt.Errorf("%s Run: %w", name, err)
				return
			}
			done <- nil
		}()
	}
	t.Cleanup(func() {
		cancel()
		for range runs {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	})
	return &stack{c: c, legacy: lc, realtime: rc, reg: reg}
}

// msg builds a message of room accepted now with the next sequence number.
func (s *stack) msg(t *testing.T, room, channel, id, body string) *broadcast.Message {
	t.Helper()
	m, err := broadcast.NewMessage(itApp, room, "video.asset.ready", id, json.RawMessage(body), channel, time.Now())
	if err != nil {
		t.Fatalf("NewMessage: %v", err)
	}
	m.Seq = s.seq.Add(1)
	return m
}

// publish sends m through the real clients of the named transports.
func (s *stack) publish(t *testing.T, m *broadcast.Message, to ...broadcast.Transport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tr := range to {
		var err error
		if tr == broadcast.TransportLegacy {
			_, err = s.legacy.Publish(ctx, m)
		} else {
			_, err = s.realtime.Publish(ctx, m)
		}
		if err != nil {
			t.Fatalf("publish %s to %s: %v", m.RequestID, tr, err)
		}
	}
}

// foreign reads switchyard_shadow_foreign_frames_total{transport} from the
// registry.
func (s *stack) foreign(t *testing.T, transport broadcast.Transport) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "switchyard_shadow_foreign_frames_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "transport" && l.GetValue() == string(transport) {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

var both = []broadcast.Transport{broadcast.TransportLegacy, broadcast.TransportRealtime}

func (s *stack) summary(channel string) shadow.ChannelSummary {
	for _, cs := range s.c.Summary() {
		if cs.App == itApp && cs.Channel == channel {
			return cs
		}
	}
	return shadow.ChannelSummary{Outcomes: map[shadow.Outcome]int64{}}
}

// observe makes room observed and ready on both sides: a message of the
// room (on the probe channel, which no test reads) makes the comparator
// watch it; then it waits until both watches are proven ready.
func (s *stack) observe(t *testing.T, room string) {
	t.Helper()
	m := s.msg(t, room, probeChan, "probe-"+room, `{"probe":true}`)
	s.c.Expect(m, broadcast.StageShadow)
	s.publish(t, m, both...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, l, r := s.c.RoomReady(itApp, room)
		if l && r {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("room %s never ready on both sides (legacy %v, realtime %v)", room, l, r)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// waitOutcomes waits until the channel's counts include want.
func (s *stack) waitOutcomes(t *testing.T, channel string, want map[shadow.Outcome]int64) shadow.ChannelSummary {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := s.summary(channel)
		ok := true
		for o, n := range want {
			if got.Outcomes[o] != n {
				ok = false
			}
		}
		if ok {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("outcomes = %v, want %v", got.Outcomes, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIntegrationTestServers(t *testing.T) {
	pt := partytest.MustStart(t)
	s := newStack(t, pt.URL(), 1500*time.Millisecond)

	t.Run("match and latency", func(t *testing.T) {
		s.observe(t, "it-match")
		for i := 0; i < 3; i++ {
			m := s.msg(t, "it-match", itChannel, fmt.Sprint("match-", i), `{"status":"ready","duration":1.0,"title":"caf\u00e9"}`)
			s.c.Expect(m, broadcast.StageShadow)
			s.publish(t, m, both...)
		}
		got := s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{shadow.OutcomeMatch: 3})
		if got.LegacyLatency.Count != 3 || got.RealtimeLatency.Count != 3 || got.LatencyDelta.Count != 3 {
			t.Errorf("latency counts = %+v", got)
		}
		if got.LegacyLatency.P99Ms <= 0 || got.LegacyLatency.P99Ms > 5000 {
			t.Errorf("legacy p99 = %v ms, want a plausible latency", got.LegacyLatency.P99Ms)
		}
	})

	t.Run("precision loss through PartyKit re-encoding", func(t *testing.T) {
		s.observe(t, "it-precision")
		m := s.msg(t, "it-precision", itChannel, "big-1", `{"id":12345678901234567890}`)
		s.c.Expect(m, broadcast.StageShadow)
		s.publish(t, m, both...)
		s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{shadow.OutcomeMatch: 3, shadow.OutcomePrecisionLoss: 1})
		ex := s.c.Mismatches(1)
		if len(ex) != 1 || len(ex[0].Legacy) != 1 || ex[0].Legacy[0].Path != "body.id" || ex[0].Legacy[0].Kind != "precision" || len(ex[0].Realtime) != 0 {
			t.Errorf("example = %+v, want a legacy-side precision difference at body.id", ex)
		}
	})

	t.Run("mismatch from an altered realtime copy", func(t *testing.T) {
		s.observe(t, "it-mismatch")
		s.rt.SetDeliveryFault(realtimetest.DeliveryFault{AlterTopic: itChannel})
		defer s.rt.SetDeliveryFault(realtimetest.DeliveryFault{})
		m := s.msg(t, "it-mismatch", itChannel, "alt-1", `{"status":"ready"}`)
		s.c.Expect(m, broadcast.StageShadow)
		s.publish(t, m, both...)
		s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{shadow.OutcomeMismatch: 1})
		ex := s.c.Mismatches(1)
		if len(ex) != 1 || ex[0].RequestID != "alt-1" || len(ex[0].Realtime) == 0 || len(ex[0].Legacy) != 0 {
			t.Fatalf("example = %+v, want realtime-side differences", ex)
		}
		var paths []string
		for _, d := range ex[0].Realtime {
			paths = append(paths, d.Path)
		}
		if !strings.Contains(strings.Join(paths, " "), "body") {
			t.Errorf("realtime diff paths = %v, want body", paths)
		}
	})

	t.Run("missing realtime and missing legacy", func(t *testing.T) {
		s.observe(t, "it-missing")
		s.rt.SetDeliveryFault(realtimetest.DeliveryFault{DropTopic: itChannel})
		m1 := s.msg(t, "it-missing", itChannel, "miss-rt", `{}`)
		s.c.Expect(m1, broadcast.StageShadow)
		s.publish(t, m1, both...)
		s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{shadow.OutcomeMissingRealtime: 1})
		s.rt.SetDeliveryFault(realtimetest.DeliveryFault{})

		pt.DropBroadcasts(true)
		m2 := s.msg(t, "it-missing", itChannel, "miss-legacy", `{}`)
		s.c.Expect(m2, broadcast.StageDual)
		s.publish(t, m2, both...)
		s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{shadow.OutcomeMissingLegacy: 1})
		pt.DropBroadcasts(false)
	})

	t.Run("duplicate and reordered", func(t *testing.T) {
		s.observe(t, "it-order")
		m1 := s.msg(t, "it-order", itChannel, "ord-1", `"chunk 1"`)
		m2 := s.msg(t, "it-order", itChannel, "ord-2", `"chunk 2"`)
		s.c.Expect(m1, broadcast.StageShadow)
		s.c.Expect(m2, broadcast.StageShadow)
		s.publish(t, m1, broadcast.TransportLegacy)
		s.publish(t, m2, broadcast.TransportLegacy)
		s.publish(t, m2, broadcast.TransportRealtime) // realtime delivers 2 before 1
		s.publish(t, m1, broadcast.TransportRealtime)
		s.publish(t, m1, broadcast.TransportLegacy) // a second legacy copy
		s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{
			shadow.OutcomeMatch: 5, shadow.OutcomeReordered: 1, shadow.OutcomeDuplicate: 1,
		})
	})

	t.Run("foreign frames are ignored", func(t *testing.T) {
		s.observe(t, "it-foreign")
		raw := url.PathEscape("it-foreign")
		if n := pt.SendRaw("main", raw, websocket.TextMessage, []byte(`{"body":1,"requestId":"not-ours","name":"x"}`)); n == 0 {
			t.Fatal("no connection in the room to send to")
		}
		pt.SendRaw("main", raw, websocket.TextMessage, []byte(`conn-1: hello`))
		pt.SendRaw("main", raw, websocket.BinaryMessage, []byte{0, 1, 2})
		// The next message of the room is still compared normally.
		m := s.msg(t, "it-foreign", itChannel, "after-foreign", `{}`)
		s.c.Expect(m, broadcast.StageShadow)
		s.publish(t, m, both...)
		got := s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{shadow.OutcomeMatch: 6})
		if got.Outcomes[shadow.OutcomeMismatch] != 1 || got.Outcomes[shadow.OutcomeDuplicate] != 1 {
			t.Errorf("outcomes = %v: foreign frames changed them", got.Outcomes)
		}
		// The JSON frame with an unknown requestId is counted; the relay
		// text and the binary frame may be skipped by the subscriber itself
		// (switchyard_subscriber_frames_skipped_total) before reaching us.
		if n := s.foreign(t, broadcast.TransportLegacy); n < 1 {
			t.Errorf("legacy foreign frames = %v, want at least 1", n)
		}
	})

	t.Run("first message of a room compared when its copies await the watches", func(t *testing.T) {
		before := s.summary(itChannel)
		m := s.msg(t, "it-first", itChannel, "first-1", `{"first":true}`)
		s.c.Expect(m, broadcast.StageShadow)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, tr := range both { // as the multicast adapter does, each before its publish
			s.c.AwaitWatch(ctx, m, tr)
			s.publish(t, m, tr)
		}
		want := map[shadow.Outcome]int64{}
		for o, n := range before.Outcomes {
			want[o] = n
		}
		want[shadow.OutcomeMatch]++
		s.waitOutcomes(t, itChannel, want)
	})

	t.Run("first message lost before its room was watched: unobserved, not missing", func(t *testing.T) {
		// Expected before the room's watches existed and published
		// nowhere (as if sent before the watches connected): its copies
		// never come, and no transport is blamed.
		m := s.msg(t, "it-fresh", itChannel, "fresh-1", `{}`)
		s.c.Expect(m, broadcast.StageShadow)
		before := s.summary(itChannel)
		got := s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{
			shadow.OutcomeUnobserved:      1,
			shadow.OutcomeMissingLegacy:   before.Outcomes[shadow.OutcomeMissingLegacy],
			shadow.OutcomeMissingRealtime: before.Outcomes[shadow.OutcomeMissingRealtime],
		})
		if got.Unobserved[shadow.ReasonBothNotReady] != 1 {
			t.Errorf("unobserved = %v, want both_not_ready 1", got.Unobserved)
		}
	})
}

// TestIntegrationPartyKitDev runs match, precision_loss and missing against
// a real PartyKit dev server (partykitdev; SWITCHYARD_PARTYKIT_URL reuses a
// running one).
func TestIntegrationPartyKitDev(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PartyKit dev server; skipped with -short")
	}
	pk := realParty.URL(t)
	t.Run("realtimetest", func(t *testing.T) { integrationRealPartyKit(t, newStack(t, pk, 2*time.Second)) })
	t.Run("inngest-dev", func(t *testing.T) {
		integrationRealPartyKit(t, newStackOn(t, pk, realInngest.URL(t), 2*time.Second))
	})
}

// integrationRealPartyKit runs match, precision_loss, missing, and a room
// whose first message is compared, on s.
func integrationRealPartyKit(t *testing.T, s *stack) {
	t.Helper()
	first := s.msg(t, "pk-first", itChannel, "pk-first-1", `{"first":true}`)
	s.c.Expect(first, broadcast.StageShadow)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tr := range both {
		s.c.AwaitWatch(ctx, first, tr)
		s.publish(t, first, tr)
	}
	s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{shadow.OutcomeMatch: 1})
	s.observe(t, "pk-room")

	m := s.msg(t, "pk-room", itChannel, "pk-match", `{"status":"ready","n":1.0,"s":"caf\u00e9","items":[{"id":1}]}`)
	s.c.Expect(m, broadcast.StageShadow)
	s.publish(t, m, both...)
	s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{shadow.OutcomeMatch: 2})

	big := s.msg(t, "pk-room", itChannel, "pk-big", `{"id":12345678901234567890}`)
	s.c.Expect(big, broadcast.StageShadow)
	s.publish(t, big, both...)
	s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{shadow.OutcomePrecisionLoss: 1})

	onlyRT := s.msg(t, "pk-room", itChannel, "pk-missing-legacy", `{}`)
	s.c.Expect(onlyRT, broadcast.StageDual)
	s.publish(t, onlyRT, broadcast.TransportRealtime)
	onlyPK := s.msg(t, "pk-room", itChannel, "pk-missing-rt", `{}`)
	s.c.Expect(onlyPK, broadcast.StageShadow)
	s.publish(t, onlyPK, broadcast.TransportLegacy)
	s.waitOutcomes(t, itChannel, map[shadow.Outcome]int64{
		shadow.OutcomeMatch: 2, shadow.OutcomePrecisionLoss: 1,
		shadow.OutcomeMissingLegacy: 1, shadow.OutcomeMissingRealtime: 1,
	})
}

// The real servers shared by this binary's tests, started on first use.
var (
	realParty   partykitdev.Shared
	realInngest inngestdev.Shared
)

func TestMain(m *testing.M) {
	code := m.Run()
	realParty.Close()
	realInngest.Close()
	os.Exit(code)
}
