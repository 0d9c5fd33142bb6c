package broadcast

import (
	"math"
	"time"

	"golang.org/x/time/rate"
)

// AppLimits is one app's publish rate limit: a token bucket refilled at
// RatePerSecond tokens a second holding at most Burst tokens. RatePerSecond
// zero (or negative) means unlimited. Burst below 1 becomes
// ceil(RatePerSecond), at least 1.
type AppLimits struct {
	RatePerSecond float64
	Burst         int
}

// rateLimiter holds one *rate.Limiter (a token bucket, safe for concurrent
// use) per limited app. The set of apps is fixed at construction, so
// lookups take no lock.
type rateLimiter struct {
	limiters map[string]*rate.Limiter
}

func newRateLimiter(apps map[string]AppLimits) *rateLimiter {
	rl := &rateLimiter{limiters: make(map[string]*rate.Limiter, len(apps))}
	for app, l := range apps {
		if l.RatePerSecond <= 0 || math.IsNaN(l.RatePerSecond) || math.IsInf(l.RatePerSecond, 0) {
			continue
		}
		burst := l.Burst
		if burst < 1 {
			burst = int(math.Min(math.Max(1, math.Ceil(l.RatePerSecond)), math.MaxInt32))
		}
		rl.limiters[app] = rate.NewLimiter(rate.Limit(l.RatePerSecond), burst)
	}
	return rl
}

// allow takes one token of app's bucket at now. It returns 0 when the token
// was taken, else the whole seconds (at least 1) until one will be
// available; a refused call takes nothing from the bucket. Apps without a
// bucket are unlimited.
func (rl *rateLimiter) allow(app string, now time.Time) (retryAfterSeconds int) {
	lim := rl.limiters[app]
	if lim == nil {
		return 0
	}
	r := lim.ReserveN(now, 1)
	if !r.OK() { // cannot happen with burst >= 1; refuse for the longest
		return math.MaxInt32
	}
	delay := r.DelayFrom(now)
	if delay <= 0 {
		return 0
	}
	r.CancelAt(now) // refused: give the token back
	wait := math.Ceil(delay.Seconds())
	if wait < 1 {
		wait = 1
	}
	if wait > math.MaxInt32 {
		wait = math.MaxInt32
	}
	return int(wait)
}
