package broadcast

import (
	"testing"
	"time"
)

// TestRateLimiterBurstAndRefusals: Burst 0 becomes ceil(rate); refused
// calls take nothing from the bucket; Retry-After is rounded up to whole
// seconds.
func TestRateLimiterBurstAndRefusals(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	rl := newRateLimiter(map[string]AppLimits{"a": {RatePerSecond: 2.5}, "nan": {RatePerSecond: -1}})
	for i := 0; i < 3; i++ {
		if got := rl.allow("a", t0); got != 0 {
			t.Fatalf("call %d within the burst of 3: retry after %d", i, got)
		}
	}
	for i := 0; i < 10; i++ {
		if got, want := rl.allow("a", t0), 1; got != want {
			t.Fatalf("refused call %d: retry after %d, want %d", i, got, want)
		}
	}
	if got := rl.allow("a", t0.Add(400*time.Millisecond)); got != 0 {
		t.Fatalf("a token refilled 400ms later: retry after %d, want 0 (refusals must not consume)", got)
	}
	if got := rl.allow("nan", t0); got != 0 {
		t.Fatalf("negative rate is unlimited: retry after %d", got)
	}
}
