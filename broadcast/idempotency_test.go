package broadcast

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeStore is an IdempotencyStore made of function fields; it records the
// releases it was asked for.
type fakeStore struct {
	claim func(ctx context.Context, app, id string, window time.Duration) (string, bool, error)

	mu       sync.Mutex
	claims   int
	released []string
}

var _ IdempotencyStore = (*fakeStore)(nil)

func (f *fakeStore) Claim(ctx context.Context, app, id string, window time.Duration) (string, bool, error) {
	f.mu.Lock()
	f.claims++
	f.mu.Unlock()
	return f.claim(ctx, app, id, window)
}

func (f *fakeStore) Release(_ context.Context, app, id, token string) error {
	f.mu.Lock()
	f.released = append(f.released, app+"/"+id+"/"+token)
	f.mu.Unlock()
	return nil
}

func (f *fakeStore) calls() (claims int, released []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.claims, append([]string(nil), f.released...)
}

// A shared store that knows the id answers duplicate and nothing is
// published; one that does not lets it through with the window of the
// config; ids without an idempotency key never reach it.
func TestSharedDedupDuplicateAndClaim(t *testing.T) {
	known := map[string]bool{"app/seen": true}
	var gotWindow time.Duration
	st := &fakeStore{claim: func(_ context.Context, app, id string, w time.Duration) (string, bool, error) {
		gotWindow = w
		return "tok-" + id, known[app+"/"+id], nil
	}}
	r := newRig(t, rigOpts{cfg: Config{DedupWindow: 3 * time.Minute, SharedDedup: st}, resolver: fixedStage(StageLegacy)})
	ctx := context.Background()
	out, err := r.mc.Broadcast(ctx, mustMessage(t, "app", "room", "e", "seen"))
	if err != nil || out.Deliveries[TransportLegacy].Status != Duplicate {
		t.Fatalf("id known to the store: %+v, %v; want duplicate", out.Deliveries, err)
	}
	out, err = r.mc.Broadcast(ctx, mustMessage(t, "app", "room", "e", "new"))
	if err != nil || out.Deliveries[TransportLegacy].Status != Delivered {
		t.Fatalf("new id: %+v, %v; want delivered", out.Deliveries, err)
	}
	if gotWindow != 3*time.Minute {
		t.Errorf("window passed to the store = %v, want the dedup window 3m", gotWindow)
	}
	m := mustMessage(t, "app", "room", "e", "drop-in")
	m.IdempotencyKey = ""
	if _, err := r.mc.Broadcast(ctx, m); err != nil {
		t.Fatal(err)
	}
	if claims, _ := st.calls(); claims != 2 {
		t.Errorf("store claims = %d, want 2 (none for a message without idempotency key)", claims)
	}
	if got := len(r.legacy.messages()); got != 2 {
		t.Errorf("published %d, want 2", got)
	}
	for result, want := range map[string]float64{"claimed": 1, "duplicate": 1, "failed_open": 0} {
		if got := metricValue(t, r.reg, "switchyard_idempotency_shared_checks_total", map[string]string{"result": result}); got != want {
			t.Errorf("checks{result=%s} = %v, want %v", result, got, want)
		}
	}
	// The in-memory window answers a repeat on this replica without asking.
	if out, _ := r.mc.Broadcast(ctx, mustMessage(t, "app", "room", "e", "new")); out.Deliveries[TransportLegacy].Status != Duplicate {
		t.Errorf("repeat on the same replica: %+v, want duplicate", out.Deliveries)
	}
	if claims, _ := st.calls(); claims != 2 {
		t.Errorf("store claims after a local repeat = %d, want still 2", claims)
	}
}

// A store that errs or hangs fails open within the timeout: the message is
// published, the fail-open counter moves with its reason, and the store is
// left alone for the backoff (those messages fail open with reason
// backoff), then asked again.
func TestSharedDedupFailsOpen(t *testing.T) {
	var mu sync.Mutex
	mode := "error"
	st := &fakeStore{claim: func(ctx context.Context, _, id string, _ time.Duration) (string, bool, error) {
		mu.Lock()
		md := mode
		mu.Unlock()
		switch md {
		case "error":
			return "", false, errors.New("connection refused")
		case "hang":
			<-ctx.Done()
			return "", false, ctx.Err()
		}
		return "tok", false, nil
	}}
	const timeout = 30 * time.Millisecond
	r := newRig(t, rigOpts{cfg: Config{SharedDedup: st, SharedDedupTimeout: timeout, SharedDedupBackoff: time.Second}})
	ctx := context.Background()
	send := func(id string) time.Duration {
		t.Helper()
		start := time.Now()
		out, err := r.mc.Broadcast(ctx, mustMessage(t, "app", "room", "e", id))
		if err != nil || out.Deliveries[TransportLegacy].Status != Delivered {
			t.Fatalf("%s: %+v, %v; want delivered (fail open)", id, out.Deliveries, err)
		}
		return time.Since(start)
	}
	failOpen := func(reason string) float64 {
		return metricValue(t, r.reg, "switchyard_idempotency_fail_open_total", map[string]string{"reason": reason})
	}
	send("a") // error
	send("b") // inside the backoff: not asked
	if claims, _ := st.calls(); claims != 1 {
		t.Errorf("store claims = %d, want 1 (the second message inside the backoff)", claims)
	}
	if failOpen("error") != 1 || failOpen("backoff") != 1 {
		t.Errorf("fail-open error=%v backoff=%v, want 1 and 1", failOpen("error"), failOpen("backoff"))
	}
	mu.Lock()
	mode = "hang"
	mu.Unlock()
	r.clock.Add(time.Second) // the backoff is over
	if d := send("c"); d > 20*timeout {
		t.Errorf("a hung store delayed the answer by %v, want about the %v timeout", d, timeout)
	}
	if failOpen("timeout") != 1 {
		t.Errorf("fail-open timeout = %v, want 1", failOpen("timeout"))
	}
	mu.Lock()
	mode = "ok"
	mu.Unlock()
	r.clock.Add(time.Second)
	send("d")
	if got := metricValue(t, r.reg, "switchyard_idempotency_shared_checks_total", map[string]string{"result": "claimed"}); got != 1 {
		t.Errorf("claimed after recovery = %v, want 1", got)
	}
	if got := len(r.legacy.messages()); got != 4 {
		t.Errorf("published %d, want 4", got)
	}
}

// A failed answering publish releases the shared claim with its token, so
// the app's retry on any replica goes through.
func TestSharedDedupReleasedOnFailure(t *testing.T) {
	st := &fakeStore{claim: func(_ context.Context, _, id string, _ time.Duration) (string, bool, error) {
		return "tok-" + id, false, nil
	}}
	r := newRig(t, rigOpts{cfg: Config{SharedDedup: st}, legacy: func(context.Context, *Message) (PublishResult, error) {
		return PublishResult{Attempts: 1}, errors.New("upstream 500")
	}})
	if _, err := r.mc.Broadcast(context.Background(), mustMessage(t, "app", "room", "e", "x")); err == nil {
		t.Fatal("Broadcast: want the upstream error")
	}
	if _, rel := st.calls(); len(rel) != 1 || rel[0] != "app/x/tok-x" {
		t.Fatalf("released %q, want [app/x/tok-x]", rel)
	}
}
