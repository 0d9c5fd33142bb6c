package shadow

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard/switchyard/broadcast"
)

// countingWatcher is a RoomWatcher that counts the watches open at once
// and keeps the highest count seen.
type countingWatcher struct {
	open, peak atomic.Int64
}

type countedWatch struct {
	w    *countingWatcher
	once sync.Once
}

func (cw *countedWatch) Ready() bool { return true }
func (cw *countedWatch) Close() error {
	cw.once.Do(func() { cw.w.open.Add(-1) })
	return nil
}

func (w *countingWatcher) WatchRoom(app, room string, onFrame func([]byte, time.Time)) (broadcast.Watch, error) {
	n := w.open.Add(1)
	for {
		p := w.peak.Load()
		if n <= p || w.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return &countedWatch{w: w}, nil
}

// TestMaxRoomsHardCapUnderBurst: a burst of Expects over ten times
// MaxRooms distinct rooms, from many goroutines, while Run dials and
// evicts: at no moment are more than MaxRooms rooms observed (the gauge)
// or more than MaxRooms watches open on either transport.
func TestMaxRoomsHardCapUnderBurst(t *testing.T) {
	const maxRooms, rooms, senders = 50, 500, 16
	legacy, realtime := &countingWatcher{}, &countingWatcher{}
	c := New(Config{MaxRooms: maxRooms, Timeout: time.Second}, legacy, realtime, nil, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	var gaugePeak atomic.Int64
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			if g := int64(testutil.ToFloat64(c.m.observedRooms)); g > gaugePeak.Load() {
				gaugePeak.Store(g)
			}
			select {
			case <-stopSampling:
				return
			default:
			}
		}
	})
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for round := range 2 {
				for r := s; r < rooms; r += senders {
					room := fmt.Sprintf("burst-%d", r)
					m, err := broadcast.NewMessage(app, room, "video.asset.ready", fmt.Sprintf("%s-%d", room, round), []byte(`{}`), "video", time.Now())
					if err != nil {
						t.Error(err)
						return
					}
					c.Expect(m, broadcast.StageShadow)
				}
			}
		})
	}
	wg.Wait()
	// Let the dialers catch up with what was admitted.
	deadline := time.Now().Add(5 * time.Second)
	for len(c.ops) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stopSampling)
	sampler.Wait()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p := legacy.peak.Load(); p > maxRooms || p == 0 {
		t.Errorf("legacy watches open at once: peak %d, want 1..%d", p, maxRooms)
	}
	if p := realtime.peak.Load(); p > maxRooms || p == 0 {
		t.Errorf("realtime watches open at once: peak %d, want 1..%d", p, maxRooms)
	}
	if p := gaugePeak.Load(); p > maxRooms {
		t.Errorf("switchyard_shadow_observed_rooms peaked at %d, over maxRooms %d", p, maxRooms)
	}
	if n := legacy.open.Load() + realtime.open.Load(); n != 0 {
		t.Errorf("%d watches still open after Run returned", n)
	}
	t.Logf("peaks: gauge %d, legacy watches %d, realtime watches %d (maxRooms %d)", gaugePeak.Load(), legacy.peak.Load(), realtime.peak.Load(), maxRooms)
}
