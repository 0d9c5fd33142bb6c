// Command switchyard is the gateway that carries apps from PartyKit to
// Inngest Realtime: see the README. main wires the process to run and turns
// its error into an exit code; everything testable is in run.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// Libraries that log to os.Stderr on their own (flagd's in-process
	// service) write into a pipe that run relays through the process
	// logger, so the output follows log.format. Our own output goes to the
	// real stderr. Done here, before anything runs: os.Stderr is process
	// state, and main is the only place that sets it.
	stderr, stray := os.Stderr, (*os.File)(nil)
	if r, w, err := os.Pipe(); err == nil {
		os.Stderr, stray = w, r
	}
	code := runWith(ctx, os.Args[1:], os.Getenv, os.Stdout, stderr, stray)
	stop()
	os.Exit(code)
}
