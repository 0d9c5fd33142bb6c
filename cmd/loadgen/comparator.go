package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/legacyparty/partykitdev"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/realtime/inngestdev"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

// The comparator section of the benchmark: what observing a room costs the
// caller, against a real PartyKit dev server (test/partykit) and a real
// Inngest dev server (../shared/tools/inngest-dev.sh; realtimetest when the
// script is absent) behind a proxy that can hang. Three gateway processes
// share them: legacy, and shadow with the comparator sampling no room and
// every room.

// cmpEvent is the event every message of the section sends (channel
// video-ready).
const cmpEvent = "video.asset.ready"

// cmpRig is the section's servers and gateways.
type cmpRig struct {
	partyURL   string
	proxy      *hangProxy
	legacy     *child
	s0, s1     *child // sampling 0 and 1.0
	hc         *http.Client
	realtimeOf string // what the proxy fronts, for the log
	seq        int
}

// comparatorBench runs the section and adds its figures to r. It is
// skipped, with a line saying why, when the PartyKit fixture is not
// installed.
func comparatorBench(ctx context.Context, o options, w io.Writer, bin, dir string, r *report) error {
	root, err := partykitdev.ModuleRoot()
	if err != nil {
		return err
	}
	pk, err := partykitdev.Launch(ctx, root)
	if err != nil {
		fmt.Fprintf(w, "comparator section skipped: no real PartyKit dev server: %v\n", firstLine(err))
		return nil
	}
	defer pk.Close()
	rtURL, rtName := "", ""
	if srv, err := inngestdev.Launch(ctx, root); err == nil {
		defer srv.Close()
		rtURL, rtName = srv.URL(), "Inngest dev server "+srv.URL()
	} else if errors.Is(err, inngestdev.ErrNoScript) {
		ts := realtimetest.NewServer(realtimetest.Config{})
		defer ts.Close()
		rtURL, rtName = ts.URL(), "realtimetest (no Inngest dev server: "+inngestdev.ScriptPath+" absent)"
	} else {
		return err
	}
	proxy, err := startHangProxy(rtURL)
	if err != nil {
		return err
	}
	defer proxy.close()
	rig := &cmpRig{partyURL: pk.URL(), proxy: proxy, hc: newClient(8), realtimeOf: rtName}
	defer rig.hc.CloseIdleConnections()
	for _, g := range []struct {
		c     **child
		name  string
		stage string
		rate  float64
	}{{&rig.legacy, "cmp-legacy", "legacy", 0}, {&rig.s0, "cmp-s0", "shadow", 0}, {&rig.s1, "cmp-s1", "shadow", 1}} {
		c, err := startChildConfig(ctx, bin, filepath.Join(dir, g.name), g.stage, gatewayConfigRate(pk.URL(), proxy.url, g.rate))
		if err != nil {
			return err
		}
		defer c.stop()
		*g.c = c
	}
	fmt.Fprintf(w, "comparator section: PartyKit dev server %s, realtime %s behind a hangable proxy; gateways legacy, shadow sampling 0, shadow sampling 1.0\n", pk.URL(), rtName)

	if err := rig.readiness(ctx, w, o, r, rtURL); err != nil {
		return err
	}
	for round := range o.cmpRounds {
		if err := ctx.Err(); err != nil {
			return err
		}
		fmt.Fprintf(w, "comparator round %d/%d (load %s)\n", round+1, o.cmpRounds, loadAvg())
		if err := rig.p99Round(ctx, w, o, r, round); err != nil {
			return err
		}
	}
	return rig.firstMessages(ctx, w, o, r)
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// send publishes one message to room through g and returns its latency.
func (rig *cmpRig) send(ctx context.Context, g *child, room string) (time.Duration, error) {
	rig.seq++
	b := appendBroadcast(nil, room, cmpEvent, "cmp-"+strconv.Itoa(rig.seq))
	t0 := time.Now()
	err := post(ctx, rig.hc, g.public+"/v1/broadcast", "application/json", loadKey, b)
	return time.Since(t0), err
}

// roomsFor returns k fresh room names.
func roomsFor(prefix string, k int) []string {
	out := make([]string, k)
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%s-%d", prefix, stamp, i)
	}
	return out
}

func q(lat []time.Duration, p float64) time.Duration {
	return phaseResult{lat: lat}.quantile(p)
}

// p99Round measures the PartyKit answer's p99 of sequential messages to a
// few rooms per variant: legacy, shadow sampling 0, shadow sampling 1.0,
// and sampling 0 with one more socket in each PartyKit room (what the
// comparator's watch adds to a room), realtime healthy; then legacy and
// both shadow gateways with realtime hung. The variants are interleaved
// message by message (their order rotating), so that all of them meet the
// same background load: on a shared machine that load, not the gateway,
// makes most of a p99.
func (rig *cmpRig) p99Round(ctx context.Context, w io.Writer, o options, r *report, round int) error {
	type variant struct {
		name    string
		g       *child
		sockets bool
		rooms   []string
		lat     []time.Duration
	}
	res := map[string][]time.Duration{}
	run := func(vs []*variant, mode string) error {
		for _, v := range vs {
			v.rooms = roomsFor("cmp-"+mode+"-"+strings.NewReplacer(" ", "", "+", "-", ".", "").Replace(v.name), o.cmpRooms)
			if v.sockets {
				closeAll, err := rig.openSockets(ctx, v.rooms)
				if err != nil {
					return err
				}
				defer closeAll()
			}
			for _, room := range v.rooms { // opens the comparator's watches: not measured
				if _, err := rig.send(ctx, v.g, room); err != nil {
					return fmt.Errorf("%s %s: %w", mode, v.name, err)
				}
			}
		}
		for i := range o.cmpMessages {
			for _, v := range rotate(vs, i+round) {
				d, err := rig.send(ctx, v.g, v.rooms[i%len(v.rooms)])
				if err != nil {
					return fmt.Errorf("%s %s: %w", mode, v.name, err)
				}
				v.lat = append(v.lat, d)
			}
		}
		for _, v := range vs {
			slices.Sort(v.lat)
			res[mode+" "+v.name] = v.lat
			fmt.Fprintf(w, "  realtime %-7s %-22s %d messages: PartyKit answer p50 %.2fms p99 %.2fms\n", mode, v.name, len(v.lat), ms(q(v.lat, 0.5)), ms(q(v.lat, 0.99)))
		}
		return nil
	}
	healthy := []*variant{{name: "legacy", g: rig.legacy}, {name: "sampling 0", g: rig.s0}, {name: "sampling 1.0", g: rig.s1}, {name: "sampling 0 + socket", g: rig.s0, sockets: true}}
	if err := run(healthy, "healthy"); err != nil {
		return err
	}
	rig.proxy.setHung(true)
	err := run([]*variant{{name: "legacy", g: rig.legacy}, {name: "sampling 0", g: rig.s0}, {name: "sampling 1.0", g: rig.s1}}, "hung")
	rig.proxy.setHung(false)
	if err != nil {
		return err
	}
	for _, c := range []*child{rig.s0, rig.s1} {
		if err := waitDrained(ctx, c, rig.hc); err != nil {
			return err
		}
	}
	ratio := func(a, b string) float64 {
		den := q(res[b], 0.99)
		if den <= 0 {
			return 0
		}
		return float64(q(res[a], 0.99)) / float64(den)
	}
	r.add("cmp_p99_healthy", ratio("healthy sampling 1.0", "healthy sampling 0"))
	r.add("cmp_p99_hung", ratio("hung sampling 1.0", "hung sampling 0"))
	r.add("cmp_p99_hung_vs_legacy", ratio("hung sampling 1.0", "hung legacy"))
	r.add("cmp_socket_p99", ratio("healthy sampling 0 + socket", "healthy sampling 0"))
	return nil
}

// openSockets opens one plain WebSocket per room on the PartyKit dev
// server, like the comparator's watch, and waits for each to answer a ping.
func (rig *cmpRig) openSockets(ctx context.Context, rooms []string) (func(), error) {
	var conns []*websocket.Conn
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	for _, room := range rooms {
		u := "ws" + strings.TrimPrefix(rig.partyURL, "http") + "/parties/main/" + room
		c, resp, err := websocket.DefaultDialer.DialContext(ctx, u, nil)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("socket to %s: %w", room, err)
		}
		resp.Body.Close()
		conns = append(conns, c)
		pong := make(chan struct{}, 1)
		c.SetPongHandler(func(string) error { pong <- struct{}{}; return nil })
		go func() { // the reader handles the pong, then drains the broadcasts
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		_ = c.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(5*time.Second))
		select {
		case <-pong:
		case <-time.After(10 * time.Second):
			closeAll()
			return nil, fmt.Errorf("socket to %s: no pong within 10s", room)
		}
	}
	return closeAll, nil
}

// firstMessages measures, at shadow then at dual, fresh rooms of three
// messages each (20 ms apart), one room at a time, alternately through the
// gateways sampling 0 and 1.0: the first message's p50 with sampling minus
// without is the cost of observing a fresh room; the later messages' is
// what observing costs once the watches are up.
func (rig *cmpRig) firstMessages(ctx context.Context, w io.Writer, o options, r *report) error {
	var laterCost []float64
	for _, stage := range []string{"shadow", "dual"} {
		for _, c := range []*child{rig.s0, rig.s1} {
			if err := c.setStage(ctx, rig.hc, stage); err != nil {
				return err
			}
		}
		var first, later [2][]time.Duration
		for i := range o.cmpFresh {
			for _, g := range rotate([]*child{rig.s0, rig.s1}, i) {
				idx := 0
				if g == rig.s1 {
					idx = 1
				}
				room := roomsFor("cmp-fresh-"+stage+"-"+strconv.Itoa(idx), 1)[0]
				for j := range 3 {
					if j > 0 {
						time.Sleep(20 * time.Millisecond) // the traffic's own pacing
					}
					d, err := rig.send(ctx, g, room)
					if err != nil {
						return fmt.Errorf("%s first messages: %w", stage, err)
					}
					if j == 0 {
						first[idx] = append(first[idx], d)
					} else {
						later[idx] = append(later[idx], d)
					}
				}
			}
		}
		for i := range 2 {
			slices.Sort(first[i])
			slices.Sort(later[i])
		}
		cost := ms(q(first[1], 0.5) - q(first[0], 0.5))
		lc := ms(q(later[1], 0.5) - q(later[0], 0.5))
		laterCost = append(laterCost, lc)
		r.add("first_cost_"+stage, cost)
		fmt.Fprintf(w, "  %s, %d fresh rooms x 3: first message p50 %.2fms sampled vs %.2fms not (+%.2fms), p99 %.2fms vs %.2fms; later messages p50 %.2fms vs %.2fms (%+.2fms)\n",
			stage, o.cmpFresh, ms(q(first[1], 0.5)), ms(q(first[0], 0.5)), cost, ms(q(first[1], 0.99)), ms(q(first[0], 0.99)),
			ms(q(later[1], 0.5)), ms(q(later[0], 0.5)), lc)
	}
	for _, c := range []*child{rig.s0, rig.s1} {
		if err := c.setStage(ctx, rig.hc, "shadow"); err != nil {
			return err
		}
	}
	r.add("later_cost", median(laterCost))
	return nil
}

// readiness measures the time to ready of the comparator's watches of
// fresh rooms, one at a time, in this process: a PartyKit subscription
// (ready on the pong to its ping) and an Inngest Realtime watch (ready
// when its probe comes back), against the same servers as the gateways.
func (rig *cmpRig) readiness(ctx context.Context, w io.Writer, o options, r *report, realtimeURL string) error {
	var lg, rt []time.Duration
	for _, room := range roomsFor("cmp-ready-legacy", o.cmpReadyRooms) {
		start := time.Now()
		sub := legacyparty.Subscribe(legacyparty.SubscriberConfig{URL: rig.partyURL, Room: room}, nil, nil, nil)
		select {
		case <-sub.ReadyC():
		case <-time.After(15 * time.Second):
			_ = sub.Close()
			return fmt.Errorf("the PartyKit watch of %s was not ready within 15s", room)
		case <-ctx.Done():
			_ = sub.Close()
			return ctx.Err()
		}
		lg = append(lg, time.Since(start))
		_ = sub.Close()
	}
	c, err := realtime.NewClient("loadgen", realtime.Config{URL: realtimeURL}, nil, nil, nil)
	if err != nil {
		return err
	}
	watcher := realtime.NewWatcher(map[string]*realtime.Client{"loadgen": c}, []string{"video-upload", "video-ready", "transcript", "ai-stream", broadcast.DefaultChannel}, nil, nil)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- watcher.Run(wctx) }()
	defer func() { stop(); <-done }()
	for _, room := range roomsFor("cmp-ready-realtime", o.cmpReadyRooms) {
		start := time.Now()
		wa, err := watcher.WatchRoom("loadgen", room, func([]byte, time.Time) {})
		if err != nil {
			return err
		}
		select {
		case <-wa.(broadcast.ReadyNotifier).ReadyC():
		case <-time.After(15 * time.Second):
			return fmt.Errorf("the Inngest watch of %s was not ready within 15s", room)
		case <-ctx.Done():
			return ctx.Err()
		}
		rt = append(rt, time.Since(start))
		_ = wa.Close()
	}
	slices.Sort(lg)
	slices.Sort(rt)
	r.add("ready_legacy_p50", ms(q(lg, 0.5)))
	r.add("ready_legacy_p99", ms(q(lg, 0.99)))
	r.add("ready_realtime_p50", ms(q(rt, 0.5)))
	r.add("ready_realtime_p99", ms(q(rt, 0.99)))
	fmt.Fprintf(w, "  time to ready of %d fresh rooms, one at a time: PartyKit p50 %.2fms p99 %.2fms max %.2fms; Inngest (%s) p50 %.2fms p99 %.2fms max %.2fms\n",
		o.cmpReadyRooms, ms(q(lg, 0.5)), ms(q(lg, 0.99)), ms(lg[len(lg)-1]), rig.realtimeOf, ms(q(rt, 0.5)), ms(q(rt, 0.99)), ms(rt[len(rt)-1]))
	return nil
}
