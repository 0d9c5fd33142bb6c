package legacyparty

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/upstream"
)

// Watcher opens browser-like subscriptions to the rooms of configured apps,
// for the shadow comparator. It is safe for concurrent use; each Watch it
// returns is owned by the caller, who must Close it (or let Run's end close
// it).
//
// Lifecycle: NewWatcher starts nothing. Run(ctx) is the Watcher's lifetime:
// a watch made before Run connects when Run starts, one made while Run runs
// connects at once, and when ctx ends Run closes every watch still open and
// returns once their goroutines exited; WatchRoom then fails with
// EDRAINING.
type Watcher struct {
	apps    map[string]SubscriberConfig
	metrics *upstream.Metrics
	log     *zap.Logger

	mu      sync.Mutex
	ran     bool
	running bool // Run has started and its ctx has not ended
	closed  bool // Run's ctx ended
	open    map[*watch]struct{}
}

var _ interface {
	WatchRoom(app, room string, onFrame func([]byte, time.Time)) (broadcast.Watch, error)
} = (*Watcher)(nil)

var (
	_ broadcast.Watch         = (*Subscription)(nil)
	_ broadcast.Watch         = (*watch)(nil)
	_ broadcast.ReadyNotifier = (*Subscription)(nil)
	_ broadcast.ReadyNotifier = (*watch)(nil)
)

// NewWatcher validates each app's Config and returns a Watcher over them.
// The subscriptions use the Config's URL, Party and PathPrefix, the
// default backoff, and no secret header (the shared secret guards
// publishing only). apps is copied. m and logger may be nil. It starts
// nothing (see Watcher, Lifecycle).
func NewWatcher(apps map[string]Config, m *upstream.Metrics, logger *zap.Logger) (*Watcher, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	w := &Watcher{apps: make(map[string]SubscriberConfig, len(apps)), metrics: m, log: logger, open: map[*watch]struct{}{}}
	for name, cfg := range apps {
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("legacyparty: watcher: app %q: %w", name, err)
		}
		cfg = cfg.WithDefaults()
		w.apps[name] = SubscriberConfig{URL: cfg.URL, Party: cfg.Party, PathPrefix: cfg.PathPrefix}
	}
	return w, nil
}

// errWatcherRunTwice is Run's answer to a second call.
var errWatcherRunTwice = errors.New("legacyparty: Watcher.Run called more than once")

// closeParallel bounds the concurrent Closes when Run ends: each may wait
// CloseTimeout for the server's answer.
const closeParallel = 32

// Run connects the watches made so far, and those WatchRoom makes
// meanwhile, until ctx ends; then it closes every watch still open (their
// onFrame is not called after Run returns), at most closeParallel at a
// time, and returns nil once their goroutines exited. A second call
// returns an error at once.
func (w *Watcher) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.ran {
		w.mu.Unlock()
		return errWatcherRunTwice
	}
	w.ran, w.running = true, true
	for wa := range w.open {
		wa.sub.start()
	}
	w.mu.Unlock()

	<-ctx.Done()

	w.mu.Lock()
	w.running, w.closed = false, true
	open := make([]*watch, 0, len(w.open))
	for wa := range w.open {
		open = append(open, wa)
	}
	w.mu.Unlock()
	sem := make(chan struct{}, closeParallel)
	var wg sync.WaitGroup
	for _, wa := range open {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = wa.Close()
		})
	}
	wg.Wait()
	return nil
}

// WatchRoom subscribes to room of app's configured party and returns at
// once; the connection is made in the background (Watch.Ready), once Run
// runs (see Watcher, Lifecycle). onFrame follows Subscribe's contract. An
// unknown app or invalid room is an error (*broadcast.Error, ENOTFOUND or
// EROOM), and so is a call after Run's ctx ended (EDRAINING).
func (w *Watcher) WatchRoom(app, room string, onFrame func([]byte, time.Time)) (broadcast.Watch, error) {
	cfg, ok := w.apps[app]
	if !ok {
		return nil, broadcast.Errorf(broadcast.ENOTFOUND, "legacyparty: app %q has no PartyKit configuration", app)
	}
	if err := broadcast.ValidateRoom(room); err != nil {
		return nil, err
	}
	cfg.Room = room
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, broadcast.Errorf(broadcast.EDRAINING, "legacyparty: watcher closed")
	}
	wa := &watch{w: w, sub: newSubscription(cfg, onFrame, w.metrics, w.log.With(zap.String("app", app)))}
	w.open[wa] = struct{}{}
	if w.running {
		wa.sub.start()
	}
	return wa, nil
}

// watch is one WatchRoom subscription, known to its Watcher until closed.
type watch struct {
	w   *Watcher
	sub *Subscription
}

// Ready reports whether the subscription is proven live now (see
// Subscription.Ready).
func (wa *watch) Ready() bool { return wa.sub.Ready() }

// ReadyC returns a channel closed once the watch is ready or closed.
func (wa *watch) ReadyC() <-chan struct{} { return wa.sub.ReadyC() }

// Close ends the subscription (see Subscription.Close) and forgets it. It
// is idempotent and returns nil.
func (wa *watch) Close() error {
	err := wa.sub.Close()
	wa.w.mu.Lock()
	delete(wa.w.open, wa)
	wa.w.mu.Unlock()
	return err
}
