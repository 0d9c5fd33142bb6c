package upstream

import (
	"math"
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		ceil    time.Duration
	}{
		{"first", Backoff{Base: 50 * time.Millisecond, Max: time.Second}, 0, 50 * time.Millisecond},
		{"negative attempt", Backoff{Base: 50 * time.Millisecond, Max: time.Second}, -3, 50 * time.Millisecond},
		{"doubles", Backoff{Base: 50 * time.Millisecond, Max: time.Second}, 3, 400 * time.Millisecond},
		{"capped", Backoff{Base: 50 * time.Millisecond, Max: time.Second}, 5, time.Second},
		{"huge attempt", Backoff{Base: 50 * time.Millisecond, Max: time.Second}, 1 << 30, time.Second},
		{"max below base", Backoff{Base: time.Second, Max: time.Millisecond}, 4, time.Second},
		{"no max", Backoff{Base: time.Millisecond}, 10, time.Millisecond},
		{"near the largest duration", Backoff{Base: math.MaxInt64 / 3, Max: math.MaxInt64}, 4, math.MaxInt64},
		{"zero base", Backoff{Max: time.Second}, 3, 0},
		{"negative base", Backoff{Base: -time.Second, Max: time.Second}, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.ceiling(tt.attempt); got != tt.ceil {
				t.Fatalf("ceiling(%d) = %s, want %s", tt.attempt, got, tt.ceil)
			}
			for i := 0; i < 200; i++ {
				if d := tt.b.Delay(tt.attempt); d < 0 || d > tt.ceil {
					t.Fatalf("Delay(%d) = %s, outside [0, %s]", tt.attempt, d, tt.ceil)
				}
			}
		})
	}
}

// TestBackoffFullJitter: the waits are uniform over the whole window
// [0, ceiling], not only its upper half (equal jitter) or a fixed point.
// With 20,000 draws each tenth of the window expects 2,000 (standard
// deviation about 42), so the 1,600..2,400 band never fails by chance.
func TestBackoffFullJitter(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	const n = 20000
	ceil := b.ceiling(2) // 400ms
	var buckets [10]int
	var sum time.Duration
	lowest := ceil
	for i := 0; i < n; i++ {
		d := b.Delay(2)
		sum += d
		lowest = min(lowest, d)
		buckets[min(int(d*10/(ceil+1)), 9)]++
	}
	for i, c := range buckets {
		if c < 1600 || c > 2400 {
			t.Errorf("tenth %d of [0, %s] got %d of %d draws, want about 2000: %v", i, ceil, c, n, buckets)
		}
	}
	if mean := sum / n; mean < ceil*45/100 || mean > ceil*55/100 {
		t.Errorf("mean %s, want about %s", mean, ceil/2)
	}
	if lowest > ceil/100 {
		t.Errorf("lowest of %d draws is %s: the window does not start at 0", n, lowest)
	}
}
