package realtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/upstream"
)

// WatcherOption tunes a Watcher.
type WatcherOption func(*SubscriberConfig)

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
// Readiness is proven, not assumed: the protocol acknowledges no sub, so
// after a channel's sub frame (its topics) the watch writes a second sub
// frame for ProbeTopic of the same channel alone, then publishes a probe
// there through the normal publish API, again with backoff, until the probe
// comes back on the connection. A server applies the sub frames of one
// connection in order, each completely before it reads the next (Inngest
// confirms every topic of a sub before it reads on), so a returned probe
// proves the channel's topics are live. A watch is Ready while every
// channel of its room is proven on the current connection; it turns false
// when the connection drops, until a new probe comes back. Probes never
// reach onFrame, nor a browser: no browser token grants ProbeTopic. Each
// proof costs one publish (op "probe" in the upstream metrics) per channel,
// and another after each reconnect.
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
	sub     *Subscription      // the channel's topics
	probe   *Subscription      // ProbeTopic of the channel, subbed after sub
	cancel  context.CancelFunc // nil until its subscribe goroutine started
	watches map[*roomWatch]struct{}

	// id prefixes the probes' nonces; arrived receives the nonce of each
	// probe that came back (buffered, never blocks the reader).
	id      string
	arrived chan string
	// proven is the probe subscription's generation a returned probe
	// proved (0: none); ready signals it to waiters. Guarded by
	// Watcher.mu (ready is safe on its own).
	proven uint64
	ready  broadcast.ReadySignal
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
			cs = &chanState{topics: g.Topics, watches: map[*roomWatch]struct{}{}, id: newNonce(), arrived: make(chan string, 1)}
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

// subscribe mints a token for the channel's topics and one for its
// ProbeTopic and subs them in that order, retrying with backoff until it
// succeeds or ctx ends; then it proves the channel live (prove) until ctx
// ends.
func (w *Watcher) subscribe(ctx context.Context, c *Client, aw *appWatch, name string, cs *chanState) {
	defer w.wg.Done()
	start := time.Now()
	backoff := 250 * time.Millisecond
	for {
		sub, probe, err := w.sub(ctx, c, aw, name, cs)
		if err == nil {
			w.mu.Lock()
			if ctx.Err() != nil { // closed meanwhile
				w.mu.Unlock()
				sub.Unsub()
				probe.Unsub()
				return
			}
			cs.sub, cs.probe = sub, probe
			w.mu.Unlock()
			w.prove(ctx, c, name, cs, start)
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

// sub mints the channel's two tokens (at once) and subs them, the topics
// first.
func (w *Watcher) sub(ctx context.Context, c *Client, aw *appWatch, name string, cs *chanState) (*Subscription, *Subscription, error) {
	var ptok broadcast.Token
	var perr error
	minted := make(chan struct{})
	go func() {
		defer close(minted)
		ptok, perr = c.MintToken(ctx, name, []string{ProbeTopic})
	}()
	tok, err := c.MintToken(ctx, name, cs.topics)
	<-minted
	if err == nil {
		err = perr
	}
	if err != nil {
		return nil, nil, err
	}
	// The probe's sub frame strictly after the topics' (see Watcher).
	subs, err := aw.sub.SubAll(ctx, tok, ptok)
	if err != nil {
		return nil, nil, err
	}
	return subs[0], subs[1], nil
}

// Probe retry bounds: a probe that did not come back within the current
// wait is published again: probeFlatAttempts times probeRetryMin apart,
// then the wait doubling up to probeRetryMax.
const (
	probeRetryMin = 5 * time.Millisecond
	probeRetryMax = time.Second
	// probeFlatAttempts probes are published probeRetryMin apart before the
	// wait starts doubling: a sub frame usually takes effect within a few
	// milliseconds, and each probe costs one publish.
	probeFlatAttempts = 4
	probeTimeout      = 5 * time.Second
)

// prove proves the channel live on each connection until ctx ends: while
// the probe subscription is in effect it publishes probes (proveOnce) until
// one comes back, marks the channel proven for that state of the probe
// subscription, and starts again at its next change (connection lost,
// re-sub written). The time from start (the watch's, then the change's) to
// proof goes to the ready histogram.
func (w *Watcher) prove(ctx context.Context, c *Client, name string, cs *chanState, start time.Time) {
	for {
		gen, active, changed := cs.probe.activation()
		// Only this goroutine turns the flag on: record, then signal.
		if active && w.proveOnce(ctx, c, name, cs, gen, changed) && !cs.ready.Ready() {
			w.m.SubscriberReady(transportLabel, time.Since(start))
			cs.ready.Set(true)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
		cs.ready.Set(false)
		start = time.Now()
	}
}

// proveOnce publishes probes for state gen of the probe subscription, again
// after probeRetryMin (probeFlatAttempts times), then after a wait doubling
// up to probeRetryMax, until one comes
// back while gen is still current (true), or changed closes or ctx ends
// (false).
func (w *Watcher) proveOnce(ctx context.Context, c *Client, name string, cs *chanState, gen uint64, changed <-chan struct{}) bool {
	nonce := cs.id + "-" + strconv.FormatUint(gen, 10)
	body, _ := json.Marshal(map[string]string{"switchyardProbe": nonce})
	wait := probeRetryMin
	for attempt := 1; ; attempt++ {
		if attempt > probeFlatAttempts {
			wait = min(2*wait, probeRetryMax)
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := c.Probe(pctx, name, body)
		cancel()
		if err != nil && ctx.Err() == nil {
			w.logger.Debug("realtime: readiness probe failed", zap.String("app", c.App()), zap.Error(err))
		}
		timer := time.NewTimer(wait)
	recv:
		for {
			select {
			case got := <-cs.arrived:
				if got != nonce {
					continue // a probe of an earlier state
				}
				timer.Stop()
				w.mu.Lock()
				g, act, _ := cs.probe.activation()
				ok := act && g == gen
				if ok {
					cs.proven = gen
				}
				w.mu.Unlock()
				return ok
			case <-timer.C:
				break recv
			case <-changed:
				timer.Stop()
				return false
			case <-ctx.Done():
				timer.Stop()
				return false
			}
		}
	}
}

// newNonce returns 16 random hex digits.
func newNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (w *Watcher) dispatch(aw *appWatch, m Msg) {
	if m.Topic == ProbeTopic {
		w.probeArrived(aw, m)
		return
	}
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

// probeArrived hands the nonce of a returned probe to its channel's
// prover; it never reaches a watch's onFrame.
func (w *Watcher) probeArrived(aw *appWatch, m Msg) {
	var p struct {
		Nonce string `json:"switchyardProbe"`
	}
	if json.Unmarshal(m.Data, &p) != nil || p.Nonce == "" {
		return
	}
	w.mu.Lock()
	cs := aw.chans[m.Channel]
	w.mu.Unlock()
	if cs == nil {
		return
	}
	select {
	case cs.arrived <- p.Nonce:
	default: // the prover has one to read already
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

// Ready reports whether every channel of the room is proven live on the
// current connection: its topics subscribed and a probe published after
// them come back (see Watcher).
func (rw *roomWatch) Ready() bool {
	_, ok := rw.notReady()
	return ok
}

// notReady returns the first channel of the room not proven live now, or
// ok when there is none (and the watch is open).
func (rw *roomWatch) notReady() (cs *chanState, ok bool) {
	w := rw.w
	rw.mu.Lock()
	closed := rw.closed
	rw.mu.Unlock()
	if closed {
		return nil, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	aw := w.apps[rw.app]
	for _, name := range rw.channels {
		cs := aw.chans[name]
		if cs == nil || cs.sub == nil || cs.probe == nil {
			return cs, false
		}
		if _, active, _ := cs.sub.activation(); !active {
			return cs, false
		}
		if gen, active, _ := cs.probe.activation(); !active || gen != cs.proven {
			return cs, false
		}
	}
	return nil, len(rw.channels) > 0
}

// ReadyC returns a channel closed once the watch may be ready (see
// broadcast.ReadyNotifier): at once when it is ready or closed, else when
// its first unproven channel is proven or changes state.
func (rw *roomWatch) ReadyC() <-chan struct{} {
	cs, ok := rw.notReady()
	if ok || cs == nil {
		rw.mu.Lock()
		defer rw.mu.Unlock()
		if ok || rw.closed {
			return closedChan
		}
		// Not registered (a transient state): look again shortly.
		t := make(chan struct{})
		time.AfterFunc(10*time.Millisecond, func() { close(t) })
		return t
	}
	if cs.ready.Ready() { // proven for a connection that is gone
		_, _, changed := cs.probe.activation()
		return changed
	}
	return cs.ready.ReadyC()
}

// closedChan is a closed channel.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

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
					unsubs = append(unsubs, cs.sub, cs.probe)
				}
				cs.ready.End()
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
