//go:build unix

package adversarial

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/shadow"
	"github.com/switchyard/switchyard/upstream"
)

// roomCost is what N observed rooms cost one transport's watcher, per
// room: Go heap and goroutine stacks in KiB, resident memory in KiB, and
// file descriptors.
type roomCost struct {
	kib, rssKiB, fds float64
}

// usage is the process's live heap and stacks (after a GC), its resident
// set and its open file descriptors. idle closes idle HTTP keep-alive
// connections first: their number is bounded by upstream.maxConnsPerHost
// whatever the rooms, so they are not a per-room cost.
func usage(t *testing.T, idle func()) (bytes, rss uint64, fds int) {
	t.Helper()
	idle()
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			rss = kb << 10
		}
	}
	return ms.HeapInuse + ms.StackInuse, rss, len(ents)
}

// measureRooms opens n watches of distinct rooms through open, waits until
// every one is Ready, and returns the cost per room; then closes them.
func measureRooms(t *testing.T, n int, idle func(), open func(room string) (broadcast.Watch, error)) roomCost {
	t.Helper()
	b0, r0, f0 := usage(t, idle)
	watches := make([]broadcast.Watch, 0, n)
	prefix := fmt.Sprintf("cost-%d-", time.Now().UnixNano())
	for i := range n {
		w, err := open(prefix + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		watches = append(watches, w)
	}
	eventually(t, 60*time.Second, "every watch ready", func() bool {
		for _, w := range watches {
			if !w.Ready() {
				return false
			}
		}
		return true
	})
	b1, r1, f1 := usage(t, idle)
	var wg sync.WaitGroup
	for _, w := range watches {
		wg.Go(func() { _ = w.Close() })
	}
	wg.Wait()
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) / 1024 }
	return roomCost{kib: per(b0, b1), rssKiB: per(r0, r1), fds: float64(f1-f0) / float64(n)}
}

// TestHeldRoomCost measures what one observed room costs on each
// transport, against the real dev servers, and holds it within the budget
// shadow.DefaultMaxRooms is derived from (shadow.RoomCostBytes per room):
// if rooms grow dearer, the default must be measured again. Set
// SWITCHYARD_ROOM_COST_N (default 100) for a steadier figure.
func TestHeldRoomCost(t *testing.T) {
	partyURL, rtURL := pk.URL(t), ing.URL(t)
	n := 100
	if v, err := strconv.Atoi(os.Getenv("SWITCHYARD_ROOM_COST_N")); err == nil && v > 0 {
		n = v
	}
	lw, err := legacyparty.NewWatcher(map[string]legacyparty.Config{"ai-hero": {URL: partyURL}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: upstream.NewTransport(0)}
	rc, err := realtime.NewClient("ai-hero", realtime.Config{URL: rtURL}, hc, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rw := realtime.NewWatcher(map[string]*realtime.Client{"ai-hero": rc}, []string{"video", broadcast.DefaultChannel}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	run.Go(func() { _ = lw.Run(ctx) })
	run.Go(func() { _ = rw.Run(ctx) })
	defer func() { cancel(); run.Wait() }()
	noop := func([]byte, time.Time) {}
	// A first watch of each, so that shared set-up (the realtime
	// connection, HTTP pools) is not counted per room.
	for _, open := range []func(string) (broadcast.Watch, error){
		func(r string) (broadcast.Watch, error) { return lw.WatchRoom("ai-hero", r, noop) },
		func(r string) (broadcast.Watch, error) { return rw.WatchRoom("ai-hero", r, noop) },
	} {
		w, err := open(fmt.Sprintf("cost-warm-%d", time.Now().UnixNano()))
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, wait, "warm-up watch ready", w.Ready)
		defer w.Close()
	}
	idle := hc.CloseIdleConnections
	legacy := measureRooms(t, n, idle, func(r string) (broadcast.Watch, error) { return lw.WatchRoom("ai-hero", r, noop) })
	rt := measureRooms(t, n, idle, func(r string) (broadcast.Watch, error) { return rw.WatchRoom("ai-hero", r, noop) })
	total := legacy.kib + rt.kib
	t.Logf("per observed room (%d rooms): PartyKit watch %.1f KiB heap+stacks (%.1f KiB RSS), %.2f fds; Inngest watch %.1f KiB (%.1f KiB RSS), %.2f fds; together %.1f KiB (%.1f KiB RSS); shadow.RoomCostBytes %d KiB",
		n, legacy.kib, legacy.rssKiB, legacy.fds, rt.kib, rt.rssKiB, rt.fds, total, legacy.rssKiB+rt.rssKiB, shadow.RoomCostBytes>>10)
	if limit := 1.5 * float64(shadow.RoomCostBytes>>10); total > limit {
		t.Errorf("an observed room costs %.1f KiB, over 1.5 x shadow.RoomCostBytes (%.0f KiB): measure again and adjust DefaultMaxRooms", total, limit)
	}
	if legacy.fds > 1.5 || rt.fds > 0.5 {
		t.Errorf("file descriptors per room: PartyKit %.2f, Inngest %.2f; want about 1 and 0 (one shared connection per app)", legacy.fds, rt.fds)
	}
}
