package broadcast

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// IdempotencyStore is an idempotency window shared by the replicas of an
// environment (Redis in package dedupredis), so that an app that times out
// on one replica and retries on another is published once. The Multicaster
// asks it after its own in-memory window (which still catches repeats on
// one replica without a round trip) and bounds every call with
// Config.SharedDedupTimeout; an error or a timeout fails open (see
// Config.SharedDedup). Implementations must be safe for concurrent use and
// must honour ctx's deadline.
type IdempotencyStore interface {
	// Claim records (app, id) for window unless it is already recorded.
	// It reports dup when another claim of the same (app, id) is still
	// inside its window; otherwise token identifies this claim for
	// Release. An error means the store could not tell (nothing is
	// known to be recorded).
	Claim(ctx context.Context, app, id string, window time.Duration) (token string, dup bool, err error)
	// Release forgets the claim token of (app, id), so that the app's
	// retry after a failed publish goes through; a newer claim of the same
	// id (another token) is left alone.
	Release(ctx context.Context, app, id, token string) error
}

// Results of switchyard_idempotency_shared_checks_total.
const (
	idemClaimed = iota
	idemDuplicate
	idemFailedOpen
	numIdemResults
)

var idemResultNames = [numIdemResults]string{"claimed", "duplicate", "failed_open"}

// Reasons of switchyard_idempotency_fail_open_total.
const (
	failOpenTimeout = iota
	failOpenError
	failOpenBackoff
	numFailOpen
)

var failOpenNames = [numFailOpen]string{"timeout", "error", "backoff"}

// sharedDedup is the Multicaster's use of an IdempotencyStore: each call
// bounded by timeout, failures failing open, and after a failure the store
// left alone for backoff so that a slow or down store costs each message at
// most one timeout per backoff period rather than one each.
type sharedDedup struct {
	store   IdempotencyStore
	window  time.Duration
	timeout time.Duration
	backoff time.Duration
	now     func() time.Time
	log     *zap.Logger // sampled
	metrics *boundMetrics

	skipUntil atomic.Int64 // unix nanos; 0: ask the store
}

// claim asks the store. ok false means the check failed open (counted,
// logged); then dup is false and the message is published.
func (s *sharedDedup) claim(ctx context.Context, app, id string) (token string, dup, ok bool) {
	m := s.metrics
	if until := s.skipUntil.Load(); until != 0 && s.now().UnixNano() < until {
		m.idemChecks[idemFailedOpen].Inc()
		m.idemFail[failOpenBackoff].Inc()
		return "", false, false
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	start := time.Now()
	token, dup, err := s.store.Claim(cctx, app, id, s.window)
	m.idemSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		reason := failOpenError
		if errors.Is(err, context.DeadlineExceeded) || cctx.Err() != nil {
			reason = failOpenTimeout
		}
		m.idemChecks[idemFailedOpen].Inc()
		m.idemFail[reason].Inc()
		s.skipUntil.Store(s.now().Add(s.backoff).UnixNano())
		s.log.Warn("shared idempotency check failed; publishing without it",
			zap.String("app", app), zap.String("reason", failOpenNames[reason]),
			zap.Duration("backoff", s.backoff), zap.Error(err))
		return "", false, false
	}
	s.skipUntil.Store(0)
	if dup {
		m.idemChecks[idemDuplicate].Inc()
		return "", true, true
	}
	m.idemChecks[idemClaimed].Inc()
	return token, false, true
}

// release forgets a claim after a failed publish, bounded like claim; a
// failure is logged (the id then stays claimed until its window ends, and
// the app's retry within it is answered duplicate).
func (s *sharedDedup) release(ctx context.Context, app, id, token string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	if err := s.store.Release(cctx, app, id, token); err != nil {
		s.log.Warn("shared idempotency release failed; the requestId stays claimed until its window ends",
			zap.String("app", app), zap.String("requestId", id), zap.Error(err))
	}
}
