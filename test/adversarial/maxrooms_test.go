//go:build unix

package adversarial

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/config"
)

// TestFinding8MaxRoomsHardCap: a burst of messages over many distinct
// rooms at shadow, against the real PartyKit and Inngest dev servers: the
// comparator never observes more than shadow.maxRooms rooms at once.
func TestFinding8MaxRoomsHardCap(t *testing.T) {
	partyURL, rtURL := pk.URL(t), ing.URL(t)
	const maxRooms, rooms, senders = 20, 120, 8
	g := startGW(t, "shadow", func(flags string) string {
		return suiteConfig(flags, appYAML("ai-hero", keyA, partyURL, rtURL, "", ""), "")
	}, func(c *config.Config) { c.Shadow.MaxRooms = maxRooms })

	var peak atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			if v := int64(gauge(t, g, "switchyard_shadow_observed_rooms")); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for s := range senders {
		wg.Go(func() {
			for round := range 2 {
				for r := s; r < rooms; r += senders {
					a := do(t, "POST", g.pub+"/v1/broadcast", keyA, msg(fmt.Sprintf("cap-%d", r), fmt.Sprintf("cap-%d-%d", r, round), "1"))
					if a.status != 200 {
						failed.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d publishes failed", n)
	}
	t.Logf("%d messages over %d rooms in %s; observed rooms peaked at %d (maxRooms %d)",
		2*rooms, rooms, time.Since(start).Round(time.Millisecond), peak.Load(), maxRooms)
	if p := peak.Load(); p > maxRooms || p == 0 {
		t.Errorf("observed rooms peaked at %d, want 1..%d", p, maxRooms)
	}
}
