package upstream

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is capped exponential backoff with full jitter, as the AWS
// Architecture Blog defines it ("Exponential Backoff And Jitter", 2015):
// the wait before retry n is drawn uniformly from [0, min(Max, Base*2^n)].
// Full jitter spreads the retries of many clients that failed together
// over the whole window, so they do not come back in step; the price is
// that a single wait may be close to zero. Every retry and reconnect loop
// of Switchyard (upstream calls, the PartyKit and Inngest subscribers, the
// realtime watcher) draws its waits here.
//
// A Backoff is a plain value; Delay may be called concurrently (it draws
// from math/rand/v2's goroutine-safe global source).
type Backoff struct {
	// Base is the ceiling of the first wait (attempt 0). A Base of zero or
	// less makes every wait zero.
	Base time.Duration
	// Max caps the ceiling. A Max below Base is taken as Base.
	Max time.Duration
}

// Delay returns the wait before retry attempt, counted from 0 for the first
// retry: uniform in [0, min(Max, Base*2^attempt)], both ends included. A
// negative attempt counts as 0; a large one cannot overflow (the ceiling
// stays at Max).
func (b Backoff) Delay(attempt int) time.Duration {
	c := b.ceiling(attempt)
	if c <= 0 {
		return 0
	}
	if c == math.MaxInt64 {
		return rand.N(c)
	}
	return rand.N(c + 1)
}

// ceiling returns min(Max, Base*2^attempt) without overflowing.
func (b Backoff) ceiling(attempt int) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	hi := max(b.Max, b.Base)
	d := b.Base
	for i := 0; i < attempt && d < hi; i++ {
		if d > hi/2 {
			return hi
		}
		d *= 2
	}
	return min(d, hi)
}
