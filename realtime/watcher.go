package realtime

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/upstream"
)

// WatcherOption tunes a Watcher.
type WatcherOption func(*SubscriberConfig)

// WithSettle sets how long after a sub frame was written a watch reports
// Ready (default 250 ms; see SubscriberConfig.Settle).
func WithSettle(d time.Duration) WatcherOption {
	return func(c *SubscriberConfig) { c.Settle = d }
}

// WithBackoff sets the reconnect backoff bounds of the shared connections.
func WithBackoff(lo, hi time.Duration) WatcherOption {
	return func(c *SubscriberConfig) { c.BackoffMin, c.BackoffMax = lo, hi }
}

// WithClock sets the clock used for receipt times, token expiry and Ready.
func WithClock(now func() time.Time) WatcherOption {
	return func(c *SubscriberConfig) { c.Now = now }
}

// Watcher is the shadow comparator's browser: it watches rooms over one
// shared subscription connection per app. Each room's Inngest channels
// (Client.GroupChannels of the configured channels) are added to the app's
// connection with a sub frame carrying a token minted through the app's
// Client for all their topics, and removed with unsub when the last watch
// of the channel closes. It is safe for concurrent use.
//
// Lifecycle: NewWatcher starts nothing and the Watcher owns no context.
// Run(ctx) is its lifetime: every connection and subscribe goroutine runs
// under ctx, and Run returns once they all exited after ctx ended. WatchRoom
// may be called before Run (the watch is registered and connects when Run
// starts), while Run runs (it connects at once), and fails with EDRAINING
// once Run's ctx ended.
//
// Readiness: the protocol acknowledges no sub, so a watch reports Ready once
// its sub frame was written on the live connection (or its token opened the
// connection) and the settle delay (WithSettle) has passed since; it turns
// false while the connection is down and until the re-sub settles.
type Watcher struct {
	clients  map[string]*Client
	channels []string
	m        *upstream.Metrics
	logger   *zap.Logger
	opts     []WatcherOption

	wg sync.WaitGroup // the goroutines Run waits for

	mu   sync.Mutex
	apps map[string]*appWatch
	ran  bool
	// runCtx is Run's ctx while Run runs, nil before; goroutines start
	// under it.
	runCtx context.Context
	closed bool // Run's ctx ended
}

type appWatch struct {
	client  *Client
	sub     *Subscriber
	started bool                  // sub's Run goroutine started; guarded by Watcher.mu
	chans   map[string]*chanState // by Inngest channel; guarded by Watcher.mu
}

type chanState struct {
	topics  []string
	sub     *Subscription
	cancel  context.CancelFunc // nil until its subscribe goroutine started
	watches map[*roomWatch]struct{}
}

// NewWatcher returns a Watcher over clients (by app) for the configured
// channel names (including broadcast.DefaultChannel). m and logger may be
// nil. It starts nothing: connections start under Run, lazily, on the first
// WatchRoom of an app.
func NewWatcher(clients map[string]*Client, channels []string, m *upstream.Metrics, logger *zap.Logger, opts ...WatcherOption) *Watcher {
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Watcher{clients: clients, channels: append([]string(nil), channels...), m: m,
		logger: logger.With(zap.String("component", "realtime-watcher")), opts: opts,
		apps: map[string]*appWatch{}}
}

// errWatcherRunTwice is Run's answer to a second call.
var errWatcherRunTwice = errors.New("realtime: Watcher.Run called more than once")

// Run connects the watches registered so far and those WatchRoom adds
// meanwhile, all under ctx, until ctx ends; then it ends every watch (their
// onFrame is not called after Run returns), and returns nil once every
// goroutine of the Watcher has exited. A second call returns an error at
// once.
func (w *Watcher) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.ran {
		w.mu.Unlock()
		return errWatcherRunTwice
	}
	w.ran = true
	w.runCtx = ctx
	for _, aw := range w.apps {
		w.startAppLocked(aw)
		for name, cs := range aw.chans {
			w.startChanLocked(aw, name, cs)
		}
	}
	w.mu.Unlock()

	<-ctx.Done()

	w.mu.Lock()
	w.closed = true
	var watches []*roomWatch
	for _, aw := range w.apps {
		for _, cs := range aw.chans {
			for rw := range cs.watches {
				watches = append(watches, rw)
			}
		}
	}
	w.mu.Unlock()
	for _, rw := range watches {
		rw.markClosed()
	}
	// Every goroutine runs under ctx, which has ended; none is added after
	// closed was set.
	w.wg.Wait()
	return nil
}

// startAppLocked starts the app connection's goroutine once Run runs.
// w.mu must be held.
func (w *Watcher) startAppLocked(aw *appWatch) {
	if w.runCtx == nil || aw.started {
		return
	}
	aw.started = true
	ctx := w.runCtx
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		_ = aw.sub.Run(ctx) // returns ctx's error when ctx ends
	}()
}

// startChanLocked starts the subscribe goroutine of one Inngest channel
// once Run runs. w.mu must be held.
func (w *Watcher) startChanLocked(aw *appWatch, name string, cs *chanState) {
	if w.runCtx == nil || cs.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(w.runCtx)
	cs.cancel = cancel
	w.wg.Add(1)
	go w.subscribe(ctx, aw.client, aw, name, cs)
}

// roomWatch is one WatchRoom subscription.
type roomWatch struct {
	w        *Watcher
	app      string
	channels []string        // Inngest channels
	keys     map[string]bool // channel\x00topic accepted
	onFrame  func([]byte, time.Time)

	mu     sync.Mutex // serialises onFrame with Close
	closed bool
	once   sync.Once
}

var _ broadcast.Watch = (*roomWatch)(nil)

// WatchRoom starts watching room of app (see Watcher, Lifecycle); onFrame
// receives the data JSON of each data frame of the room's channels with its
// receipt time, from the app connection's reader goroutine, and must not
// block or call Close. The error is an *broadcast.Error: ENOTFOUND for an
// app without a Client, EROOM for a bad room, EDRAINING once Run's ctx
// ended.
func (w *Watcher) WatchRoom(app, room string, onFrame func(data []byte, receivedAt time.Time)) (broadcast.Watch, error) {
	c, ok := w.clients[app]
	if !ok {
		return nil, broadcast.Errorf(broadcast.ENOTFOUND, "app %q has no realtime client", app)
	}
	if err := broadcast.ValidateRoom(room); err != nil {
		return nil, err
	}
	groups := c.GroupChannels(room, w.channels)
	rw := &roomWatch{w: w, app: app, keys: map[string]bool{}, onFrame: onFrame}
	for _, g := range groups {
		rw.channels = append(rw.channels, g.Channel)
		for _, topic := range g.Topics {
			rw.keys[g.Channel+"\x00"+topic] = true
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, broadcast.Errorf(broadcast.EDRAINING, "watcher closed")
	}
	aw, err := w.appLocked(app, c)
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		cs := aw.chans[g.Channel]
		if cs == nil {
			cs = &chanState{topics: g.Topics, watches: map[*roomWatch]struct{}{}}
			aw.chans[g.Channel] = cs
			w.startChanLocked(aw, g.Channel, cs)
		}
		cs.watches[rw] = struct{}{}
	}
	return rw, nil
}

func (w *Watcher) appLocked(app string, c *Client) (*appWatch, error) {
	if aw := w.apps[app]; aw != nil {
		return aw, nil
	}
	aw := &appWatch{client: c, chans: map[string]*chanState{}}
	cfg := SubscriberConfig{URL: c.URL(), OnMsg: func(m Msg) { w.dispatch(aw, m) }}
	for _, o := range w.opts {
		o(&cfg)
	}
	sub, err := NewSubscriber(cfg, c, w.m, w.logger.With(zap.String("app", app)))
	if err != nil {
		return nil, &broadcast.Error{Code: broadcast.EINTERNAL, Message: "realtime watcher unavailable", Err: err}
	}
	aw.sub = sub
	w.apps[app] = aw
	w.startAppLocked(aw)
	return aw, nil
}

// subscribe mints a token for the channel's topics and subs it, retrying
// with backoff until it succeeds or ctx ends.
func (w *Watcher) subscribe(ctx context.Context, c *Client, aw *appWatch, name string, cs *chanState) {
	defer w.wg.Done()
	backoff := 250 * time.Millisecond
	for {
		tok, err := c.MintToken(ctx, name, cs.topics)
		var sub *Subscription
		if err == nil {
			sub, err = aw.sub.Sub(ctx, tok)
		}
		if err == nil {
			w.mu.Lock()
			if ctx.Err() != nil { // closed meanwhile
				w.mu.Unlock()
				sub.Unsub()
				return
			}
			cs.sub = sub
			w.mu.Unlock()
			return
		}
		if ctx.Err() != nil {
			return
		}
		w.logger.Warn("realtime: watch subscribe failed", zap.String("app", c.App()), zap.Error(err), zap.Duration("backoff", backoff))
		if !sleep(ctx, upstream.Backoff{Base: backoff, Max: backoff}.Delay(0)) {
			return
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (w *Watcher) dispatch(aw *appWatch, m Msg) {
	key := m.Channel + "\x00" + m.Topic
	w.mu.Lock()
	cs := aw.chans[m.Channel]
	var targets []*roomWatch
	if cs != nil {
		for rw := range cs.watches {
			if rw.keys[key] {
				targets = append(targets, rw)
			}
		}
	}
	w.mu.Unlock()
	for _, rw := range targets {
		rw.deliver(m.Data, m.ReceivedAt)
	}
}

func (rw *roomWatch) deliver(data []byte, at time.Time) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if !rw.closed && rw.onFrame != nil {
		rw.onFrame(data, at)
	}
}

func (rw *roomWatch) markClosed() {
	rw.mu.Lock()
	rw.closed = true
	rw.mu.Unlock()
}

// Ready reports whether every channel of the room is subscribed on the live
// connection and settled.
func (rw *roomWatch) Ready() bool {
	w := rw.w
	w.mu.Lock()
	aw := w.apps[rw.app]
	var subs []*Subscription
	for _, name := range rw.channels {
		cs := aw.chans[name]
		if cs == nil || cs.sub == nil {
			w.mu.Unlock()
			return false
		}
		subs = append(subs, cs.sub)
	}
	w.mu.Unlock()
	for _, s := range subs {
		if !s.Ready() {
			return false
		}
	}
	return len(subs) > 0
}

// Close ends the watch; the channel is unsubscribed when it was the last
// watch of it. onFrame is not called after Close returns.
func (rw *roomWatch) Close() error {
	rw.once.Do(func() {
		rw.markClosed()
		w := rw.w
		var unsubs []*Subscription
		w.mu.Lock()
		aw := w.apps[rw.app]
		for _, name := range rw.channels {
			cs := aw.chans[name]
			if cs == nil {
				continue
			}
			delete(cs.watches, rw)
			if len(cs.watches) == 0 {
				if cs.cancel != nil {
					cs.cancel()
				}
				if cs.sub != nil {
					unsubs = append(unsubs, cs.sub)
				}
				delete(aw.chans, name)
			}
		}
		w.mu.Unlock()
		for _, s := range unsubs {
			s.Unsub()
		}
	})
	return nil
}
