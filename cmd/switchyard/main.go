// Command switchyard is the gateway that carries apps from PartyKit to
// Inngest Realtime: see the README. main only wires the process to run and
// turns its error into an exit code; everything testable is in run.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
