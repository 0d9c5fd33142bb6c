package broadcast

import (
	"math"
	"sync"
	"time"
)

// AppLimits is one app's publish rate limit: a token bucket refilled at
// RatePerSecond tokens a second holding at most Burst tokens. RatePerSecond
// zero (or negative) means unlimited. Burst below 1 becomes
// ceil(RatePerSecond), at least 1.
type AppLimits struct {
	RatePerSecond float64
	Burst         int
}

// rateLimiter holds one token bucket per limited app. The set of apps is
// fixed at construction, so lookups take no lock; each bucket has its own
// mutex.
type rateLimiter struct {
	buckets map[string]*bucket
}

type bucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per second, > 0
	burst  float64
	tokens float64
	last   time.Time
}

func newRateLimiter(apps map[string]AppLimits) *rateLimiter {
	rl := &rateLimiter{buckets: make(map[string]*bucket, len(apps))}
	for app, l := range apps {
		if l.RatePerSecond <= 0 || math.IsNaN(l.RatePerSecond) || math.IsInf(l.RatePerSecond, 0) {
			continue
		}
		burst := float64(l.Burst)
		if burst < 1 {
			burst = math.Max(1, math.Ceil(l.RatePerSecond))
		}
		rl.buckets[app] = &bucket{rate: l.RatePerSecond, burst: burst, tokens: burst}
	}
	return rl
}

// allow takes one token of app's bucket at now. It returns 0 when the token
// was taken, else the whole seconds (at least 1) until one will be
// available. Apps without a bucket are unlimited.
func (rl *rateLimiter) allow(app string, now time.Time) (retryAfterSeconds int) {
	b := rl.buckets[app]
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.last = now
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = math.Min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	wait := math.Ceil((1 - b.tokens) / b.rate)
	if wait < 1 {
		wait = 1
	}
	if wait > math.MaxInt32 {
		wait = math.MaxInt32
	}
	return int(wait)
}
