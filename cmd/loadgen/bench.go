package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/switchyard/switchyard/legacyparty/partykitdev"
)

// figure is one line of the final table: the median over rounds, the
// spread, and the target it is held to (cmp "" is information only).
type figure struct {
	key, label, unit string
	samples          []float64
	target           float64
	cmp              string // "<=", ">=" or ""
}

func (f figure) median() float64 { return median(f.samples) }

func (f figure) met() bool {
	switch f.cmp {
	case "<=":
		return f.median() <= f.target
	case ">=":
		return f.median() >= f.target
	}
	return true
}

// report is the result of one bench run.
type report struct {
	figures []figure
}

func (r *report) get(key string) *figure {
	for i := range r.figures {
		if r.figures[i].key == key {
			return &r.figures[i]
		}
	}
	return nil
}

func (r *report) add(key string, v float64) {
	if f := r.get(key); f != nil {
		f.samples = append(f.samples, v)
	}
}

// newReport lists every figure, in the order printed (only the comparator
// section's with -only-comparator).
func newReport(o options) *report {
	r := &report{}
	fig := func(key, label, unit, cmp string, target float64) {
		if o.onlyComparator && !isComparatorFigure(key) {
			return
		}
		r.figures = append(r.figures, figure{key: key, label: label, unit: unit, cmp: cmp, target: target})
	}
	if o.partykit {
		fig("pk_tput_ratio", fmt.Sprintf("real PartyKit, %d callers: throughput gateway/direct", o.partyCallers), "ratio", ">=", 0.92)
		fig("pk_added_p50", fmt.Sprintf("real PartyKit, %d callers: added p50 via gateway", o.partyCallers), "ms", "<=", 0.4)
		fig("pk_added_p99", fmt.Sprintf("real PartyKit, %d callers: added p99 via gateway", o.partyCallers), "ms", "", 0)
		if o.tls {
			fig("pk_tput_ratio_http1", fmt.Sprintf("real PartyKit over TLS, %d callers: throughput gateway (protocol http1)/direct", o.partyCallers), "ratio", "", 0)
			fig("pk_added_p50_http1", fmt.Sprintf("real PartyKit over TLS, %d callers: added p50 via gateway (protocol http1)", o.partyCallers), "ms", "", 0)
		}
	}
	fig("upstream_conns", "new upstream connections per 1000 gateway messages", "count", "", 0)
	fig("tput_shadow_vs_direct", fmt.Sprintf("throughput shadow / direct-to-both, %d callers", o.callers), "ratio", ">=", 0.6)
	fig("tput_shadow_vs_legacy", fmt.Sprintf("throughput shadow / legacy, %d callers", o.callers), "ratio", ">=", 0.9)
	for _, c := range o.latencyCallers {
		fig(fmt.Sprintf("added_p50_%d", c), fmt.Sprintf("added p50 over direct PartyKit, shadow, %d caller(s)", c), "ms", "<=", 0.3)
		fig(fmt.Sprintf("added_p99_%d", c), fmt.Sprintf("added p99 over direct PartyKit, shadow, %d caller(s)", c), "ms", "<=", 2)
	}
	fig("p99_hung_vs_healthy", fmt.Sprintf("caller p99 realtime hung / healthy, %d callers", o.faultCallers), "ratio", "<=", 1.2)
	fig("p99_failing_vs_healthy", fmt.Sprintf("caller p99 realtime 500 / healthy, %d callers", o.faultCallers), "ratio", "<=", 1.2)
	if o.baseline != "" {
		fig("cpu_ratio_shadow", "gateway CPU per shadow message, this build / baseline", "ratio", "<=", 0.5)
		fig("cpu_ratio_legacy", "gateway CPU per legacy message, this build / baseline", "ratio", "<=", 0.5)
	}
	fig("allocs_per_msg", "gateway allocations per accepted message (shadow)", "allocs", "<=", 60)
	fig("allocs_per_msg_legacy", "gateway allocations per accepted message (legacy)", "allocs", "<=", 35)
	fig("cpu_per_msg", "gateway CPU per accepted message (shadow)", "us", "", 0)
	fig("heap_per_inflight", fmt.Sprintf("gateway heap per in-flight message, %d in flight", o.heapCallers), "KiB", "<=", 64)
	fig("goroutines_after", "gateway goroutines after the load (shadow)", "count", "<=", 0) // target set at run time
	fig("goroutines_baseline", "gateway goroutines before the load (shadow)", "count", "", 0)
	fig("goroutines_loaded", fmt.Sprintf("gateway goroutines with %d in flight", o.heapCallers), "count", "", 0)
	fig("tput_direct", "throughput direct-to-both", "msg/s", "", 0)
	fig("tput_legacy", "throughput via gateway, legacy", "msg/s", "", 0)
	fig("tput_shadow", "throughput via gateway, shadow", "msg/s", "", 0)
	for _, c := range o.latencyCallers {
		fig(fmt.Sprintf("added_p50_%d_legacy", c), fmt.Sprintf("added p50 over direct PartyKit, legacy, %d caller(s)", c), "ms", "", 0)
		fig(fmt.Sprintf("added_p99_%d_legacy", c), fmt.Sprintf("added p99 over direct PartyKit, legacy, %d caller(s)", c), "ms", "", 0)
	}
	fig("cpu_per_msg_legacy", "gateway CPU per accepted message (legacy)", "us", "", 0)
	if o.comparator {
		// Real PartyKit dev server (comparator.go).
		fig("cmp_p99_healthy", "PartyKit answer p99, sampled 1.0 / 0, rt healthy", "ratio", "<=", 1.2)
		fig("cmp_p99_hung", "PartyKit answer p99, sampled 1.0 / 0, rt hung", "ratio", "<=", 1.2)
		fig("cmp_p99_hung_vs_legacy", "PartyKit answer p99, sampled 1.0 / legacy, rt hung", "ratio", "<=", 1.2)
		fig("cmp_socket_p99", "PartyKit answer p99, extra socket per room / none", "ratio", "", 0)
		fig("first_cost_shadow", "first msg of fresh room p50, sampled - not, shadow", "ms", "<=", 50)
		fig("first_cost_dual", "first msg of fresh room p50, sampled - not, dual", "ms", "<=", 50)
		fig("later_cost", "later messages p50, sampled - not", "ms", "", 0)
		fig("ready_legacy_p50", "watch time to ready, fresh room, PartyKit p50", "ms", "", 0)
		fig("ready_legacy_p99", "watch time to ready, fresh room, PartyKit p99", "ms", "", 0)
		fig("ready_realtime_p50", "watch time to ready, fresh room, Inngest p50", "ms", "", 0)
		fig("ready_realtime_p99", "watch time to ready, fresh room, Inngest p99", "ms", "", 0)
	}
	if o.baseline != "" {
		fig("cpu_per_msg_base", "baseline CPU per accepted message (shadow)", "us", "", 0)
		fig("cpu_per_msg_legacy_base", "baseline CPU per accepted message (legacy)", "us", "", 0)
		fig("allocs_per_msg_base", "baseline allocations per accepted message (shadow)", "allocs", "", 0)
		fig("allocs_per_msg_legacy_base", "baseline allocations per accepted message (legacy)", "allocs", "", 0)
		fig("tput_shadow_base", "throughput via baseline gateway, shadow", "msg/s", "", 0)
		fig("tput_legacy_base", "throughput via baseline gateway, legacy", "msg/s", "", 0)
	}
	return r
}

// goroutineTolerance is how far above the baseline the goroutine count may
// settle and still count as back to baseline.
const goroutineTolerance = 4

// print writes the final table.
func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n%-64s %12s %-22s %-12s %s\n", "figure", "median", "spread [min..max]", "target", "met")
	fmt.Fprintln(w, strings.Repeat("-", 122))
	for _, f := range r.figures {
		lo, hi := spread(f.samples)
		tgt, met := "(info)", ""
		if f.cmp != "" {
			tgt = fmt.Sprintf("%s %s", f.cmp, fmtNum(f.target))
			met = "NOT MET"
			if f.met() {
				met = "met"
			}
		}
		fmt.Fprintf(w, "%-64s %12s %-22s %-12s %s\n", f.label+" ("+f.unit+")", fmtNum(f.median()),
			fmt.Sprintf("[%s..%s] n=%d", fmtNum(lo), fmtNum(hi), len(f.samples)), tgt, met)
	}
}

func fmtNum(v float64) string {
	switch a := abs(v); {
	case a == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

func median(s []float64) float64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

func spread(s []float64) (float64, float64) {
	if len(s) == 0 {
		return 0, 0
	}
	return slices.Min(s), slices.Max(s)
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// rotate returns s rotated left by n.
func rotate[T any](s []T, n int) []T {
	n %= len(s)
	return append(slices.Clone(s[n:]), s[:n]...)
}

// machine describes where the run happens.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				if i := strings.IndexByte(line, ':'); i >= 0 {
					model = strings.TrimSpace(line[i+1:])
				}
				break
			}
		}
	}
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("%s, %d CPUs (%s), %s, load average %s", time.Now().UTC().Format(time.RFC3339),
		runtime.NumCPU(), model, runtime.Version(), load)
}

// usage is a gateway's CPU time and allocation count at one moment.
type usage struct {
	cpu     time.Duration
	mallocs float64
}

func sample(hc *http.Client, c *child) (usage, error) {
	cpu, err := c.cpuTime()
	if err != nil {
		return usage{}, err
	}
	m, err := c.metric(hc, "go_memstats_mallocs_total")
	return usage{cpu, m}, err
}

// bench runs the whole benchmark and prints progress and the final table.
func bench(ctx context.Context, o options, w io.Writer) (*report, error) {
	fmt.Fprintf(w, "switchyard loadgen: %s\n", machine())
	if o.tls {
		fmt.Fprintln(w, "upstreams over HTTPS (local CA; gateways trust it through SSL_CERT_FILE)")
	}
	if !o.onlyComparator {
		fmt.Fprintf(w, "rounds %d x phases of %s; throughput %d callers, latency %v callers, faults %d callers, heap %d in flight (PartyKit delay %s)\n",
			o.rounds, o.duration, o.callers, o.latencyCallers, o.faultCallers, o.heapCallers, o.heapDelay)
	}
	if o.comparator {
		fmt.Fprintf(w, "comparator section: %d rounds of %d interleaved messages per variant to %d rooms each; %d fresh rooms per stage; %d rooms for time to ready\n",
			o.cmpRounds, o.cmpMessages, o.cmpRooms, o.cmpFresh, o.cmpReadyRooms)
	}
	dir, err := os.MkdirTemp("", "switchyard-loadgen-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := o.bin
	if bin == "" {
		t := time.Now()
		if bin, err = buildGateway(ctx, dir); err != nil {
			return nil, err
		}
		fmt.Fprintf(w, "built cmd/switchyard in %s\n", time.Since(t).Round(time.Millisecond))
	}
	if o.onlyComparator {
		r := newReport(o)
		if err := comparatorBench(ctx, o, w, bin, dir, r); err != nil {
			return nil, fmt.Errorf("comparator section: %w", err)
		}
		fmt.Fprintf(w, "finished (load %s)\n", loadAvg())
		r.print(w)
		return r, nil
	}
	var baseBin string
	if o.baseline != "" {
		t := time.Now()
		var commit string
		if baseBin, commit, err = buildBaseline(ctx, dir, o.baseline); err != nil {
			return nil, err
		}
		fmt.Fprintf(w, "built baseline cmd/switchyard at %s in %s\n", commit, time.Since(t).Round(time.Millisecond))
	}
	var ca *localCA
	if o.tls {
		if ca, err = newLocalCA(dir); err != nil {
			return nil, err
		}
	}
	up, err := startUpstreamsTLS(ca)
	if err != nil {
		return nil, err
	}
	defer up.close()
	var base gateways
	if baseBin != "" {
		if base.legacy, err = startChild(ctx, baseBin, filepath.Join(dir, "legacy-base"), "legacy", up, ""); err != nil {
			return nil, err
		}
		defer base.legacy.stop()
		if base.shadow, err = startChild(ctx, baseBin, filepath.Join(dir, "shadow-base"), "shadow", up, ""); err != nil {
			return nil, err
		}
		defer base.shadow.stop()
		fmt.Fprintf(w, "baseline gateways: legacy pid %d, shadow pid %d\n", base.legacy.pid, base.shadow.pid)
	}
	var pk *realParty
	if o.partykit {
		t := time.Now()
		if pk, err = startRealParty(ctx, bin, dir, up, ca, o.protocol); err != nil {
			return nil, err
		}
		defer pk.close()
		fmt.Fprintf(w, "real PartyKit dev server %s (started in %s), its legacy gateway pid %d\n", pk.srv.URL(), time.Since(t).Round(time.Millisecond), pk.gw.pid)
		if pk.tls != nil {
			fmt.Fprintf(w, "  behind HAProxy's TLS at %s (ALPN h2, http/1.1); a second legacy gateway (pid %d) with upstream.protocol http1\n", pk.tls.url, pk.gw1.pid)
		}
	}
	legacy, err := startChild(ctx, bin, filepath.Join(dir, "legacy"), "legacy", up, o.protocol)
	if err != nil {
		return nil, err
	}
	defer legacy.stop()
	shadow, err := startChild(ctx, bin, filepath.Join(dir, "shadow"), "shadow", up, o.protocol)
	if err != nil {
		return nil, err
	}
	defer shadow.stop()
	fmt.Fprintf(w, "gateways: legacy pid %d (%s), shadow pid %d (%s); upstreams %s %s\n",
		legacy.pid, legacy.public, shadow.pid, shadow.public, up.partyURL, up.realtimeURL)
	hc := newClient(max(o.callers, o.heapCallers, o.faultCallers, 8))
	defer hc.CloseIdleConnections()
	if ca != nil {
		hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
	}
	// Metrics scrapes use their own client so they never take a load slot.
	mc := newClient(4)
	defer mc.CloseIdleConnections()

	r := newReport(o)
	time.Sleep(200 * time.Millisecond) // let start-up goroutines settle
	g0, err := shadow.metric(mc, "go_goroutines")
	if err != nil {
		return nil, err
	}
	r.add("goroutines_baseline", g0)
	r.get("goroutines_after").target = g0 + goroutineTolerance
	// The allocations of one /metrics scrape, subtracted from each delta.
	var scrape [3]float64
	for i := range scrape {
		if scrape[i], err = shadow.metric(mc, "go_memstats_mallocs_total"); err != nil {
			return nil, err
		}
	}
	scrapeAllocs := scrape[2] - scrape[1]

	rn := &runner{hc: hc, up: up}
	// Warm up every path (connections, caches, heap).
	warm := []phase{
		{name: "warm-direct", target: targetDirectBoth, callers: o.callers, duration: o.warmup},
		{name: "warm-legacy", target: targetGateway, gateway: legacy, callers: o.callers, duration: o.warmup},
		{name: "warm-shadow", target: targetGateway, gateway: shadow, callers: o.callers, duration: o.warmup},
	}
	if base.shadow != nil {
		warm = append(warm,
			phase{name: "warm-legacy-base", target: targetGateway, gateway: base.legacy, callers: o.callers, duration: o.warmup},
			phase{name: "warm-shadow-base", target: targetGateway, gateway: base.shadow, callers: o.callers, duration: o.warmup})
	}
	if pk != nil {
		warm = append(warm,
			phase{name: "warm-pk-direct", target: targetDirectParty, partyURL: pk.srv.URL(), callers: o.partyCallers, duration: o.warmup},
			phase{name: "warm-pk-gateway", target: targetDropIn, gateway: pk.gw, callers: o.partyCallers, duration: o.warmup})
	}
	for _, p := range warm {
		if res := rn.run(ctx, p); res.ok == 0 {
			return nil, fmt.Errorf("warm-up %s: no message succeeded (%d failed)", p.name, res.failed)
		}
	}

	for round := range o.rounds {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		fmt.Fprintf(w, "round %d/%d (load %s)\n", round+1, o.rounds, loadAvg())
		if err := throughputRound(ctx, w, rn, r, o, round, gateways{legacy, shadow}, base, mc, scrapeAllocs); err != nil {
			return nil, err
		}
		for _, c := range o.latencyCallers {
			latencyRound(ctx, w, rn, r, o, round, c, legacy, shadow)
		}
		if pk != nil {
			partyRound(ctx, w, rn, r, o, round, pk)
		}
		if err := faultRound(ctx, w, rn, r, o, round, shadow, mc); err != nil {
			return nil, err
		}
	}
	if err := heapPhase(ctx, w, rn, r, o, shadow, mc); err != nil {
		return nil, err
	}

	// Goroutines: close every idle connection on both sides, then wait for
	// the count to settle.
	hc.CloseIdleConnections()
	up.closeIdle()
	var after float64
	for deadline := time.Now().Add(10 * time.Second); ; {
		time.Sleep(250 * time.Millisecond)
		if after, err = shadow.metric(mc, "go_goroutines"); err != nil {
			return nil, err
		}
		if after <= g0+goroutineTolerance || time.Now().After(deadline) {
			break
		}
	}
	r.add("goroutines_after", after)
	fmt.Fprintf(w, "goroutines: %.0f before the load, %.0f after (tolerance +%d)\n", g0, after, goroutineTolerance)
	if o.comparator {
		if err := comparatorBench(ctx, o, w, bin, dir, r); err != nil {
			return nil, fmt.Errorf("comparator section: %w", err)
		}
	}
	fmt.Fprintf(w, "finished (load %s)\n", loadAvg())
	r.print(w)
	return r, nil
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// gateways is one build's pair of gateway processes.
type gateways struct {
	legacy, shadow *child
}

// throughputRound runs direct-to-both, legacy and shadow (and, with a
// baseline, the baseline's legacy and shadow) in rotating order.
func throughputRound(ctx context.Context, w io.Writer, rn *runner, r *report, o options, round int,
	cur, base gateways, mc *http.Client, scrapeAllocs float64) error {
	phases := []phase{
		{name: "direct", target: targetDirectBoth, callers: o.callers, duration: o.duration},
		{name: "legacy", target: targetGateway, gateway: cur.legacy, callers: o.callers, duration: o.duration},
		{name: "shadow", target: targetGateway, gateway: cur.shadow, callers: o.callers, duration: o.duration},
	}
	if base.shadow != nil {
		phases = append(phases,
			phase{name: "legacy-base", target: targetGateway, gateway: base.legacy, callers: o.callers, duration: o.duration},
			phase{name: "shadow-base", target: targetGateway, gateway: base.shadow, callers: o.callers, duration: o.duration})
	}
	tput := map[string]float64{}
	cpus := map[string]float64{}
	for _, p := range rotate(phases, round) {
		var before usage
		var err error
		if p.gateway != nil {
			if before, err = sample(mc, p.gateway); err != nil {
				return err
			}
		}
		conns0 := rn.up.newConns.Load()
		res := rn.run(ctx, p)
		conns := rn.up.newConns.Load() - conns0
		tput[p.name] = res.throughput()
		if p.gateway != nil && res.ok > 0 {
			r.add("upstream_conns", float64(conns)*1000/float64(res.ok))
		}
		line := fmt.Sprintf("  %-11s %3d callers: %8.0f msg/s  p50 %.3fms p99 %.3fms  failed %d",
			p.name, p.callers, res.throughput(), ms(res.quantile(0.5)), ms(res.quantile(0.99)), res.failed)
		if p.gateway != nil && res.ok > 0 {
			after, err := sample(mc, p.gateway)
			if err != nil {
				return err
			}
			cpu := float64(after.cpu-before.cpu) / 1e3 / float64(res.ok)
			allocs := (after.mallocs - before.mallocs - scrapeAllocs) / float64(res.ok)
			key := map[string]string{"legacy": "_legacy", "shadow": "", "legacy-base": "_legacy_base", "shadow-base": "_base"}[p.name]
			cpus[p.name] = cpu
			r.add("cpu_per_msg"+key, cpu)
			r.add("allocs_per_msg"+key, allocs)
			line += fmt.Sprintf("  gateway %.1fus CPU, %.1f allocs per message, %d new upstream connections", cpu, allocs, conns)
		}
		fmt.Fprintln(w, line)
	}
	r.add("tput_direct", tput["direct"])
	r.add("tput_legacy", tput["legacy"])
	r.add("tput_shadow", tput["shadow"])
	if tput["direct"] > 0 {
		r.add("tput_shadow_vs_direct", tput["shadow"]/tput["direct"])
	}
	if tput["legacy"] > 0 {
		r.add("tput_shadow_vs_legacy", tput["shadow"]/tput["legacy"])
	}
	if base.shadow != nil {
		r.add("tput_shadow_base", tput["shadow-base"])
		r.add("tput_legacy_base", tput["legacy-base"])
		if b := cpus["shadow-base"]; b > 0 && cpus["shadow"] > 0 {
			r.add("cpu_ratio_shadow", cpus["shadow"]/b)
		}
		if b := cpus["legacy-base"]; b > 0 && cpus["legacy"] > 0 {
			r.add("cpu_ratio_legacy", cpus["legacy"]/b)
		}
		fmt.Fprintf(w, "  this build / baseline CPU per message: shadow %.2f, legacy %.2f\n",
			ratio(cpus["shadow"], cpus["shadow-base"]), ratio(cpus["legacy"], cpus["legacy-base"]))
	}
	return nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// latencyRound runs direct PartyKit, legacy and shadow with c callers, in
// rotating order, and records the added p50 and p99 of each gateway.
func latencyRound(ctx context.Context, w io.Writer, rn *runner, r *report, o options, round, c int, legacy, shadow *child) {
	phases := []phase{
		{name: "party", target: targetDirectParty, callers: c, duration: o.duration},
		{name: "legacy", target: targetGateway, gateway: legacy, callers: c, duration: o.duration},
		{name: "shadow", target: targetGateway, gateway: shadow, callers: c, duration: o.duration},
	}
	res := map[string]phaseResult{}
	for _, p := range rotate(phases, round) {
		res[p.name] = rn.run(ctx, p)
	}
	d := res["party"]
	line := fmt.Sprintf("  latency %d caller(s): direct PartyKit p50 %.3fms p99 %.3fms", c, ms(d.quantile(0.5)), ms(d.quantile(0.99)))
	for _, gw := range []string{"shadow", "legacy"} {
		g := res[gw]
		add50, add99 := ms(g.quantile(0.5)-d.quantile(0.5)), ms(g.quantile(0.99)-d.quantile(0.99))
		line += fmt.Sprintf(" | %s p50 %.3fms p99 %.3fms, added %.3f/%.3fms", gw, ms(g.quantile(0.5)), ms(g.quantile(0.99)), add50, add99)
		if d.ok == 0 || g.ok == 0 {
			continue
		}
		suffix := ""
		if gw == "legacy" {
			suffix = "_legacy"
		}
		r.add(fmt.Sprintf("added_p50_%d%s", c, suffix), add50)
		r.add(fmt.Sprintf("added_p99_%d%s", c, suffix), add99)
	}
	fmt.Fprintln(w, line)
}

// realParty is a real PartyKit dev server and a legacy gateway publishing
// to it; with -tls, the dev server is behind a TLS terminator and a second
// gateway (gw1) publishes with upstream.protocol http1.
type realParty struct {
	srv *partykitdev.Server
	tls *terminator // nil without -tls
	url string      // what callers and gateways publish to
	gw  *child
	gw1 *child
}

func (p *realParty) close() {
	p.gw.stop()
	if p.gw1 != nil {
		p.gw1.stop()
	}
	if p.tls != nil {
		p.tls.close()
	}
	p.srv.Close()
}

// startRealParty launches the test/partykit fixture's dev server and a
// legacy gateway whose PartyKit URL is that server (behind HAProxy's TLS
// when ca is set). protocol is the gateway's upstream.protocol.
func startRealParty(ctx context.Context, bin, dir string, up *fakeUpstreams, ca *localCA, protocol string) (_ *realParty, err error) {
	root, err := partykitdev.ModuleRoot()
	if err != nil {
		return nil, err
	}
	srv, err := partykitdev.Launch(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("real PartyKit dev server (make test-deps installs it; -partykit=false skips this comparison): %w", err)
	}
	p := &realParty{srv: srv, url: srv.URL()}
	defer func() {
		if err != nil {
			if p.gw != nil {
				p.gw.stop()
			}
			if p.tls != nil {
				p.tls.close()
			}
			srv.Close()
		}
	}()
	if ca != nil {
		u, err := url.Parse(srv.URL())
		if err != nil {
			return nil, err
		}
		if p.tls, err = startTerminator(ctx, filepath.Join(dir, "partykit-tls"), ca, u.Host); err != nil {
			return nil, err
		}
		p.url = p.tls.url
	}
	if p.gw, err = startChildConfig(ctx, bin, filepath.Join(dir, "partykit"), "legacy", withProtocol(gatewayConfig(p.url, up.realtimeURL), protocol), up.childEnv...); err != nil {
		return nil, err
	}
	if ca != nil {
		if p.gw1, err = startChildConfig(ctx, bin, filepath.Join(dir, "partykit-http1"), "legacy", withProtocol(gatewayConfig(p.url, up.realtimeURL), "http1"), up.childEnv...); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// partyRound runs straight to the real PartyKit dev server and through the
// legacy gateway's drop-in path to it, in rotating order, and records the
// throughput ratio and the added p50/p99.
func partyRound(ctx context.Context, w io.Writer, rn *runner, r *report, o options, round int, pk *realParty) {
	phases := []phase{
		{name: "direct", target: targetDirectParty, partyURL: pk.url, callers: o.partyCallers, duration: o.duration},
		{name: "gateway", target: targetDropIn, gateway: pk.gw, callers: o.partyCallers, duration: o.duration},
	}
	if pk.gw1 != nil {
		phases = append(phases, phase{name: "gateway-http1", target: targetDropIn, gateway: pk.gw1, callers: o.partyCallers, duration: o.duration})
	}
	res := map[string]phaseResult{}
	for _, p := range rotate(phases, round) {
		res[p.name] = rn.run(ctx, p)
	}
	d, g := res["direct"], res["gateway"]
	add50, add99 := ms(g.quantile(0.5)-d.quantile(0.5)), ms(g.quantile(0.99)-d.quantile(0.99))
	fmt.Fprintf(w, "  real PartyKit %d callers: direct %8.0f msg/s p50 %.3fms p99 %.3fms failed %d | via gateway %8.0f msg/s p50 %.3fms p99 %.3fms failed %d | ratio %.3f, added %.3f/%.3fms\n",
		o.partyCallers, d.throughput(), ms(d.quantile(0.5)), ms(d.quantile(0.99)), d.failed,
		g.throughput(), ms(g.quantile(0.5)), ms(g.quantile(0.99)), g.failed, ratio(g.throughput(), d.throughput()), add50, add99)
	if g1, ok := res["gateway-http1"]; ok {
		fmt.Fprintf(w, "  real PartyKit %d callers: via gateway (upstream.protocol http1) %8.0f msg/s p50 %.3fms p99 %.3fms failed %d | ratio %.3f, added %.3f/%.3fms\n",
			o.partyCallers, g1.throughput(), ms(g1.quantile(0.5)), ms(g1.quantile(0.99)), g1.failed, ratio(g1.throughput(), d.throughput()),
			ms(g1.quantile(0.5)-d.quantile(0.5)), ms(g1.quantile(0.99)-d.quantile(0.99)))
		if d.ok > 0 && g1.ok > 0 {
			r.add("pk_tput_ratio_http1", g1.throughput()/d.throughput())
			r.add("pk_added_p50_http1", ms(g1.quantile(0.5)-d.quantile(0.5)))
		}
	}
	if d.ok == 0 || g.ok == 0 {
		return
	}
	r.add("pk_tput_ratio", g.throughput()/d.throughput())
	r.add("pk_added_p50", add50)
	r.add("pk_added_p99", add99)
}

// faultRound measures the shadow caller's p99 with the realtime upstream
// healthy, hung and failing, in rotating order; after a fault it restores
// the upstream and waits for the off-path queue to drain.
func faultRound(ctx context.Context, w io.Writer, rn *runner, r *report, o options, round int, shadow *child, mc *http.Client) error {
	p99 := map[realtimeMode]float64{}
	for _, mode := range rotate([]realtimeMode{modeHealthy, modeHang, modeFail}, round) {
		rn.up.setMode(mode)
		res := rn.run(ctx, phase{name: "fault", target: targetGateway, gateway: shadow, callers: o.faultCallers, duration: o.duration})
		p99[mode] = ms(res.quantile(0.99))
		rn.up.setMode(modeHealthy)
		fmt.Fprintf(w, "  realtime %-7s %d callers: caller p50 %.3fms p99 %.3fms, %8.0f msg/s, failed %d\n",
			mode, o.faultCallers, ms(res.quantile(0.5)), p99[mode], res.throughput(), res.failed)
		if mode != modeHealthy {
			if err := waitDrained(ctx, shadow, mc); err != nil {
				return err
			}
		}
	}
	if p99[modeHealthy] > 0 {
		r.add("p99_hung_vs_healthy", p99[modeHang]/p99[modeHealthy])
		r.add("p99_failing_vs_healthy", p99[modeFail]/p99[modeHealthy])
	}
	return nil
}

// waitDrained waits (at most 20s) until the gateway's off-path queues are
// empty.
func waitDrained(ctx context.Context, c *child, mc *http.Client) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		d, err := c.metric(mc, "switchyard_offpath_queue_depth")
		if err != nil {
			return err
		}
		if d == 0 {
			time.Sleep(100 * time.Millisecond) // the last running publishes
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s gateway: off-path queue still holds %.0f messages after 20s", c.stage, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// heapPhase slows PartyKit down (heapDelay per publish) so that a fixed
// number of messages is in flight, at two levels (heapCallers/4 and
// heapCallers), and compares the gateway's live heap between them. The live
// heap is read from the GC goal the runtime sets after each collection
// (go_memstats_next_gc_bytes = live + (live + stacks + globals) x GOGC/100,
// GOGC 100), sampled only after collections that happened at that level,
// so uncollected garbage does not count.
func heapPhase(ctx context.Context, w io.Writer, rn *runner, r *report, o options, shadow *child, mc *http.Client) error {
	rn.up.partyDelay.Store(int64(o.heapDelay))
	defer rn.up.partyDelay.Store(0)
	lo := max(o.heapCallers/4, 1)
	a, err := heapLevel(ctx, rn, o, shadow, mc, lo)
	if err != nil {
		return err
	}
	b, err := heapLevel(ctx, rn, o, shadow, mc, o.heapCallers)
	if err != nil {
		return err
	}
	n := float64(o.heapCallers - lo)
	if n == 0 {
		n = 1
	}
	liveDelta := ((b.goal - a.goal) - (b.stack - a.stack)) / 2
	perKiB := liveDelta / n / 1024
	r.add("heap_per_inflight", perKiB)
	r.add("goroutines_loaded", b.goroutines)
	fmt.Fprintf(w, "heap: %d in flight: GC goal %.1f MiB, stacks %.1f MiB (%d GCs, %.0f msg/s); %d in flight: GC goal %.1f MiB, stacks %.1f MiB (%d GCs, %.0f msg/s)\n",
		lo, a.goal/(1<<20), a.stack/(1<<20), a.gcs, a.rate, o.heapCallers, b.goal/(1<<20), b.stack/(1<<20), b.gcs, b.rate)
	fmt.Fprintf(w, "heap: %.1f KiB live heap per in-flight message (+%.1f KiB of goroutine stacks); %.0f goroutines with %d in flight\n",
		perKiB, (b.stack-a.stack)/n/1024, b.goroutines, o.heapCallers)
	return nil
}

// heapLevelResult is one in-flight level of heapPhase.
type heapLevelResult struct {
	goal, stack, goroutines float64
	gcs                     int
	rate                    float64 // msg/s
}

// heapLevel keeps n messages in flight until the gateway has collected
// garbage a few times at that level (bounded in time) and returns the
// median GC goal and stack size seen after those collections. Without any
// collection it falls back on the heap in use, noted in gcs == 0.
func heapLevel(ctx context.Context, rn *runner, o options, c *child, mc *http.Client, n int) (heapLevelResult, error) {
	limit := 12 * time.Second
	wantGCs := 3
	if o.quick {
		limit, wantGCs = 3*time.Second, 1
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan phaseResult, 1)
	go func() {
		done <- rn.run(pctx, phase{name: "heap", target: targetGateway, gateway: c, callers: n, duration: limit + 2*time.Second})
	}()
	stop := func() phaseResult { cancel(); return <-done }
	time.Sleep(max(o.heapDelay*3, 300*time.Millisecond)) // every caller in flight
	t0 := time.Now()
	m, err := c.metrics(mc)
	if err != nil {
		stop()
		return heapLevelResult{}, err
	}
	lastGC := m["go_gc_duration_seconds_count"]
	var goals, stacks, inuse []float64
	res := heapLevelResult{}
	for time.Since(t0) < limit && len(goals) < wantGCs {
		time.Sleep(50 * time.Millisecond)
		if m, err = c.metrics(mc); err != nil {
			stop()
			return res, err
		}
		inuse = append(inuse, m["go_memstats_heap_inuse_bytes"])
		res.goroutines = m["go_goroutines"]
		if g := m["go_gc_duration_seconds_count"]; g > lastGC {
			lastGC = g
			goals = append(goals, m["go_memstats_next_gc_bytes"])
			stacks = append(stacks, m["go_memstats_stack_inuse_bytes"])
		}
	}
	elapsed := time.Since(t0)
	pr := stop()
	res.gcs = len(goals)
	res.rate = float64(pr.ok) / (elapsed + max(o.heapDelay*3, 300*time.Millisecond)).Seconds()
	if len(goals) == 0 {
		// No collection at this level: the heap in use (garbage included)
		// stands in for twice the live heap.
		res.goal, res.stack = 2*median(inuse), m["go_memstats_stack_inuse_bytes"]
		return res, nil
	}
	res.goal, res.stack = median(goals), median(stacks)
	return res, nil
}

// isComparatorFigure reports whether key is a figure of the comparator
// section (comparator.go).
func isComparatorFigure(key string) bool {
	for _, p := range []string{"cmp_", "first_cost_", "later_cost", "ready_"} {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}
