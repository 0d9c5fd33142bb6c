package legacyparty_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/legacyparty/partytest"
)

// runWatcher runs w.Run in a goroutine; stop ends its ctx and returns Run's
// result, failing the test if Run does not return.
func runWatcher(t *testing.T, w *legacyparty.Watcher) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	t.Cleanup(cancel)
	return func() error {
		cancel()
		select {
		case err := <-ran:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after its ctx ended")
			return nil
		}
	}
}

func goroutinesAtMost(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: got %d, want at most %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// NewWatcher and WatchRoom before Run start nothing; Run connects the
// watches, old and new; its ctx's end closes them all and leaves no
// goroutine; WatchRoom then fails with EDRAINING.
func TestWatcherLifecycle(t *testing.T) {
	srv := partytest.MustStart(t)
	base := runtime.NumGoroutine()
	w, err := legacyparty.NewWatcher(map[string]legacyparty.Config{"app": {URL: srv.URL()}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var before frameLog
	wb, err := w.WatchRoom("app", "r1", before.add)
	if err != nil {
		t.Fatalf("WatchRoom before Run: %v", err)
	}
	// No wait: a goroutine started by NewWatcher or WatchRoom would be
	// counted as soon as it was started, and a connection needs one.
	if got := runtime.NumGoroutine(); got > base {
		t.Errorf("goroutines before Run: got %d, want at most %d", got, base)
	}
	if got := len(srv.ConnIDs("main", "r1")); got != 0 || wb.Ready() {
		t.Fatalf("before Run: %d connections, ready %v; want none", got, wb.Ready())
	}

	stop := runWatcher(t, w)
	waitConns(t, srv, "r1", 1)
	waitFor(t, "the watch made before Run to be ready", wb.Ready)
	var during frameLog
	wd, err := w.WatchRoom("app", "r2", during.add)
	if err != nil {
		t.Fatalf("WatchRoom while running: %v", err)
	}
	waitConns(t, srv, "r2", 1)
	waitFor(t, "the watch made while running to be ready", wd.Ready)
	if err := w.Run(context.Background()); err == nil {
		t.Error("second Run: got nil, want an error")
	}

	// A watch closed by its owner is forgotten; Run's end closes the rest.
	var closedEarly frameLog
	we, err := w.WatchRoom("app", "r3", closedEarly.add)
	if err != nil {
		t.Fatal(err)
	}
	if err := we.Close(); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
	if wb.Ready() || wd.Ready() {
		t.Error("a watch is still ready after Run returned")
	}
	if _, err := w.WatchRoom("app", "r4", nil); broadcast.ErrorCode(err) != broadcast.EDRAINING {
		t.Errorf("WatchRoom after Run: got %v, want %s", err, broadcast.EDRAINING)
	}
	// Closing again is harmless.
	for _, wa := range []broadcast.Watch{wb, wd, we} {
		if err := wa.Close(); err != nil {
			t.Errorf("Close after Run: %v", err)
		}
	}
	goroutinesAtMost(t, base)
}

// A watch made and closed before Run never connects.
func TestWatcherCloseBeforeRun(t *testing.T) {
	srv := partytest.MustStart(t)
	w, err := legacyparty.NewWatcher(map[string]legacyparty.Config{"app": {URL: srv.URL()}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wa, err := w.WatchRoom("app", "r1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A probe: a watch made before Run and kept is started by Run together
	// with every other open watch; once it is connected, r1 would be too.
	probe, err := w.WatchRoom("app", "probe", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- wa.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close of a never-started watch blocked")
	}
	stop := runWatcher(t, w)
	waitConns(t, srv, "probe", 1)
	waitFor(t, "the probe watch to be ready", probe.Ready)
	if got := len(srv.ConnIDs("main", "r1")); got != 0 {
		t.Errorf("connections of a watch closed before Run: got %d, want 0", got)
	}
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}
