// Command loadgen is `make bench`'s side-by-side load benchmark of the
// Switchyard gateway. It builds cmd/switchyard, starts fast in-process
// upstream fakes (PartyKit-like and Inngest-Realtime-like) and two gateway
// processes on 127.0.0.1:0 (every channel in `legacy`, every channel in
// `shadow`), then runs interleaved rounds in one run and prints ratios
// measured side by side: gateway vs direct throughput, added latency over
// calling PartyKit directly, legacy vs shadow throughput, the caller's p99
// with the realtime upstream hung or failing, and the gateway process's CPU,
// allocations and heap per message and its goroutines after the load. It
// targets loopback only and is bounded by round count and time.
//
// Usage:
//
//	go run ./cmd/loadgen [-rounds 12] [-duration 700ms] [-callers 32] [-baseline COMMIT] [-quick]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// options tune one load run; see the flags in parseOptions.
type options struct {
	rounds         int
	duration       time.Duration
	warmup         time.Duration
	callers        int
	latencyCallers []int
	faultCallers   int
	heapCallers    int
	heapDelay      time.Duration
	heapDuration   time.Duration
	bin            string
	baseline       string // git commit to build a baseline binary from ("" = none)
	partykit       bool   // compare the gateway with a real PartyKit dev server
	tls            bool   // upstream fakes over HTTPS with a local CA
	protocol       string // this build's gateways' upstream.protocol ("auto", "http1")
	partyCallers   int
	cpuProfile     string
	profileTime    time.Duration
	quick          bool
	// The comparator section (comparator.go): rounds of the p99 phases,
	// messages and rooms per phase, fresh rooms per stage of the
	// first-message phase, fresh rooms of the readiness measurement.
	comparator     bool
	onlyComparator bool
	cmpRounds      int
	cmpMessages    int
	cmpRooms       int
	cmpFresh       int
	cmpReadyRooms  int
}

func defaultOptions() options {
	return options{
		rounds: 12, duration: 700 * time.Millisecond, warmup: time.Second, callers: 32,
		latencyCallers: []int{1, 4}, faultCallers: 4,
		heapCallers: 256, heapDelay: 200 * time.Millisecond, heapDuration: 3 * time.Second,
		profileTime: 5 * time.Second, partykit: true, partyCallers: 8,
		comparator: true, cmpRounds: 3, cmpMessages: 1000, cmpRooms: 5, cmpFresh: 20, cmpReadyRooms: 100,
	}
}

// quickOptions is the short run the test drives.
func quickOptions() options {
	o := defaultOptions()
	o.quick = true
	o.rounds, o.duration, o.warmup = 1, 250*time.Millisecond, 200*time.Millisecond
	o.heapCallers, o.heapDuration = 64, time.Second
	o.cmpRounds, o.cmpMessages, o.cmpRooms, o.cmpFresh, o.cmpReadyRooms = 1, 30, 3, 3, 10
	o.partykit = false
	return o
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	o := defaultOptions()
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "a short run (1 round of 250ms phases): checks the harness, not the targets")
	rounds := fs.Int("rounds", o.rounds, "interleaved rounds")
	duration := fs.Duration("duration", o.duration, "length of each phase of a round")
	callers := fs.Int("callers", o.callers, "concurrent callers of the throughput phases")
	faultCallers := fs.Int("fault-callers", o.faultCallers, "concurrent callers of the realtime-fault phases")
	heapCallers := fs.Int("heap-callers", o.heapCallers, "in-flight messages of the heap phase")
	bin := fs.String("bin", "", "use this switchyard binary instead of building cmd/switchyard")
	baseline := fs.String("baseline", "", "also build cmd/switchyard from this git commit and interleave its gateways' rounds with this build's, printing CPU per message as this build / baseline")
	cpuProfile := fs.String("cpuprofile", "", "instead of the benchmark, profile an in-process gateway (api+broadcast+upstream clients) under shadow load and write the CPU profile here")
	partykit := fs.Bool("partykit", o.partykit, "also compare the legacy gateway's drop-in path with a real PartyKit dev server (test/partykit fixture, installed by make test-deps); off in -quick")
	protocol := fs.String("protocol", "auto", "upstream.protocol of this build's gateways: auto (HTTP/2 where an HTTPS upstream offers it) or http1")
	useTLS := fs.Bool("tls", false, "serve the upstream fakes over HTTPS with a throwaway local CA (the gateways trust it through SSL_CERT_FILE)")
	profileTime := fs.Duration("profile-time", o.profileTime, "load time of -cpuprofile")
	comparator := fs.Bool("comparator", o.comparator, "run the comparator section against a real PartyKit dev server (and a real Inngest dev server when ../shared/tools/inngest-dev.sh exists)")
	cmpRounds := fs.Int("cmp-rounds", o.cmpRounds, "rounds of the comparator section's p99 phases")
	cmpMessages := fs.Int("cmp-messages", o.cmpMessages, "sequential messages per p99 phase of the comparator section")
	cmpFresh := fs.Int("cmp-fresh", o.cmpFresh, "fresh rooms per stage and gateway of the first-message phase")
	onlyComparator := fs.Bool("only-comparator", false, "run the comparator section alone")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *quick {
		o = quickOptions()
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["rounds"] {
		o.rounds = *rounds
	}
	if set["duration"] {
		o.duration = *duration
	}
	if set["callers"] {
		o.callers = *callers
	}
	if set["fault-callers"] {
		o.faultCallers = *faultCallers
	}
	if set["heap-callers"] {
		o.heapCallers = *heapCallers
	}
	o.bin, o.baseline, o.cpuProfile, o.profileTime, o.comparator = *bin, *baseline, *cpuProfile, *profileTime, *comparator
	if *onlyComparator {
		o.comparator, o.onlyComparator = true, true
	}
	if set["cmp-rounds"] {
		o.cmpRounds = *cmpRounds
	}
	if set["cmp-messages"] {
		o.cmpMessages = *cmpMessages
	}
	if set["cmp-fresh"] {
		o.cmpFresh = *cmpFresh
	}
	if set["partykit"] {
		o.partykit = *partykit
	}
	o.tls, o.protocol = *useTLS, *protocol
	switch {
	case o.protocol != "auto" && o.protocol != "http1":
		return o, fmt.Errorf("-protocol: %q is not auto or http1", o.protocol)
	case o.rounds < 1 || o.rounds > 50:
		return o, errors.New("-rounds: must be 1..50")
	case o.duration < 50*time.Millisecond || o.duration > time.Minute:
		return o, errors.New("-duration: must be 50ms..1m")
	case o.callers < 1 || o.callers > 1024:
		return o, errors.New("-callers: must be 1..1024")
	case o.faultCallers < 1 || o.faultCallers > 1024:
		return o, errors.New("-fault-callers: must be 1..1024")
	case o.heapCallers < 1 || o.heapCallers > 2048:
		return o, errors.New("-heap-callers: must be 1..2048")
	case o.baseline != "" && !validRev(o.baseline):
		return o, fmt.Errorf("-baseline: %q is not a commit name (letters, digits, ._/~^-)", o.baseline)
	case o.profileTime <= 0 || o.profileTime > 5*time.Minute:
		return o, errors.New("-profile-time: must be 0..5m")
	case o.cmpRounds < 1 || o.cmpRounds > 20:
		return o, errors.New("-cmp-rounds: must be 1..20")
	case o.cmpMessages < 10 || o.cmpMessages > 100000:
		return o, errors.New("-cmp-messages: must be 10..100000")
	case o.cmpFresh < 1 || o.cmpFresh > 1000:
		return o, errors.New("-cmp-fresh: must be 1..1000")
	}
	return o, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program: it returns the exit code (0 ok, 1 failure,
// 2 usage). Whether the targets are met does not change the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 2
	}
	if o.cpuProfile != "" {
		err = profileInProcess(ctx, o, stdout)
	} else {
		_, err = bench(ctx, o, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
	return 0
}
