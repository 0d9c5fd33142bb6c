package legacyparty

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/upstream"
)

// Subscriber defaults.
const (
	DefaultBackoffMin       = 100 * time.Millisecond
	DefaultBackoffMax       = 5 * time.Second
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultCloseTimeout     = 250 * time.Millisecond
	// MaxFrameBytes bounds one received frame; a larger one ends the
	// connection (which is then re-established).
	MaxFrameBytes = 4 << 20
)

// SubscriberConfig says which room to watch and how to reconnect. URL,
// Party and PathPrefix follow Config (URL may also use ws or wss); zero
// durations take the defaults above.
type SubscriberConfig struct {
	URL        string
	Party      string
	PathPrefix string
	// Room is the room id (must pass broadcast.ValidateRoom); it is the
	// path segment as is, as the publisher writes it.
	Room string
	// ConnID is sent as _pk, PartyKit's connection id (default: random).
	ConnID string
	// Header is sent with the handshake (optional, e.g. a shared secret
	// checked by onBeforeConnect). Not logged.
	Header http.Header
	// BackoffMin and BackoffMax bound the exponential wait between
	// connection attempts (defaults 100ms and 5s): BackoffMin is the
	// ceiling of the first wait, doubled after each failure up to
	// BackoffMax, and each wait is drawn uniformly below the ceiling
	// (upstream.Backoff, full jitter).
	BackoffMin, BackoffMax time.Duration
	// HandshakeTimeout bounds one dial (default 5s).
	HandshakeTimeout time.Duration
	// CloseTimeout bounds how long Close waits for the server to answer
	// its Close frame (default 250ms; the dev server may never answer).
	CloseTimeout time.Duration
}

func (c SubscriberConfig) withDefaults() SubscriberConfig {
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.ConnID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		c.ConnID = "switchyard-" + hex.EncodeToString(b[:])
	}
	return c
}

// Validate reports the first invalid field, naming it.
func (c SubscriberConfig) Validate() error {
	_, err := c.dialURL()
	return err
}

// dialURL returns ws(s)://host{prefix}[/{party}]/{escaped room}?_pk={id}.
func (c SubscriberConfig) dialURL() (string, error) {
	base := Config{URL: c.URL, Party: c.Party, PathPrefix: c.PathPrefix}
	switch {
	case strings.HasPrefix(c.URL, "ws://"):
		base.URL = "http://" + strings.TrimPrefix(c.URL, "ws://")
	case strings.HasPrefix(c.URL, "wss://"):
		base.URL = "https://" + strings.TrimPrefix(c.URL, "wss://")
	}
	if err := base.Validate(); err != nil {
		return "", err
	}
	base = base.WithDefaults()
	path, err := base.roomPath("", c.Room)
	if err != nil {
		return "", err
	}
	u := "ws" + strings.TrimPrefix(base.URL, "http") + path
	if c.ConnID != "" {
		u += "?_pk=" + url.QueryEscape(c.ConnID)
	}
	return u, nil
}

// Subscription is a background WebSocket subscription to one PartyKit
// room: it dials, reads, and reconnects with jittered backoff until Close.
// It implements broadcast.Watch. Its methods are safe for concurrent use.
type Subscription struct {
	cfg     SubscriberConfig
	url     string
	onFrame func([]byte, time.Time)
	metrics *upstream.Metrics
	log     *zap.Logger

	ready  broadcast.ReadySignal
	closed atomic.Bool
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	conn *websocket.Conn // current connection, nil while (re)connecting

	// startOnce runs either the reader goroutine (start) or, when Close
	// or an invalid config comes first, the closing of done.
	startOnce sync.Once
	closeOnce sync.Once
}

// Subscribe starts watching cfg.Room and returns at once; the dial happens
// in the background (see Ready). onFrame is called from one goroutine, in
// arrival order, with each text frame that holds a JSON object (the
// envelope, as the server re-encoded it) and the time it was read; data is
// owned by the callee. onFrame must not block and must not call Close.
// Binary frames and other text frames are skipped and counted with
// m.FrameSkipped("legacy", reason); each successful reconnect is counted
// with m.Reconnected("legacy"). m and logger may be nil. An invalid cfg
// yields a Subscription that never connects and logs the error once; call
// cfg.Validate first to catch it.
func Subscribe(cfg SubscriberConfig, onFrame func(data []byte, receivedAt time.Time), m *upstream.Metrics, logger *zap.Logger) *Subscription {
	s := newSubscription(cfg, onFrame, m, logger)
	s.start()
	return s
}

// newSubscription is Subscribe without the start: the Subscription does
// nothing until start. Close works either way.
func newSubscription(cfg SubscriberConfig, onFrame func(data []byte, receivedAt time.Time), m *upstream.Metrics, logger *zap.Logger) *Subscription {
	if logger == nil {
		logger = zap.NewNop()
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Subscription{
		cfg: cfg, onFrame: onFrame, metrics: m,
		log:    logger.With(zap.String("transport", "legacy"), zap.String("room", cfg.Room)),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	u, err := cfg.dialURL()
	if err != nil {
		s.log.Error("legacy subscription not started: invalid config", zap.Error(err))
		s.startOnce.Do(func() { close(s.done) })
		return s
	}
	s.url = u
	return s
}

// start starts the reader goroutine, unless Close (or an invalid config)
// came first. Only the first call does anything.
func (s *Subscription) start() {
	s.startOnce.Do(func() { go s.run() })
}

// Ready reports whether the subscription is proven live now: its handshake
// succeeded (PartyKit accepts a connection into its room before it answers
// the upgrade, so a broadcast from then on includes it) and the server
// answered a ping sent over it (so it was not refused and closed right
// after the upgrade, which is how a party's failing onConnect ends). A
// publish made from then on reaches this subscription.
func (s *Subscription) Ready() bool { return s.ready.Ready() }

// ReadyC returns a channel closed once the subscription is ready (see
// broadcast.ReadyNotifier), or once it is closed.
func (s *Subscription) ReadyC() <-chan struct{} { return s.ready.ReadyC() }

// Close ends the subscription: it sends a Close frame, waits up to
// CloseTimeout for the server's answer, then drops the connection and
// waits for the reader to stop. onFrame is not called after Close returns.
// Close is idempotent and always returns nil.
func (s *Subscription) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.cancel()
		s.startOnce.Do(func() { close(s.done) }) // never started: nothing to wait for
		s.mu.Lock()
		c := s.conn
		s.mu.Unlock()
		if c != nil {
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
			_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(s.cfg.CloseTimeout))
			t := time.NewTimer(s.cfg.CloseTimeout)
			select {
			case <-s.done:
			case <-t.C:
			}
			t.Stop()
			_ = c.Close()
		}
		<-s.done
		s.ready.End()
	})
	return nil
}

func (s *Subscription) run() {
	defer close(s.done)
	dialer := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: s.cfg.HandshakeTimeout,
	}
	failures := 0
	connected := false
	start := time.Now() // of this connect, retries included
	for !s.closed.Load() {
		conn, resp, err := dialer.DialContext(s.ctx, s.url, s.cfg.Header)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			if s.closed.Load() {
				return
			}
			failures++
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			lvl := zap.DebugLevel
			if failures == 1 {
				lvl = zap.WarnLevel // once per streak; then quietly retry
			}
			if ce := s.log.Check(lvl, "legacy subscription dial failed"); ce != nil {
				ce.Write(zap.Int("failures", failures), zap.Int("status", status), zap.Error(err))
			}
			if !s.sleep(s.backoff(failures)) {
				return
			}
			continue
		}
		failures = 0
		if connected {
			s.metrics.Reconnected("legacy")
		}
		connected = true
		conn.SetReadLimit(MaxFrameBytes)
		s.mu.Lock()
		s.conn = conn
		s.mu.Unlock()
		if s.closed.Load() { // Close ran between the dial and the store
			_ = conn.Close()
			return
		}
		s.probe(conn, start)
		err = s.read(conn)
		s.ready.Set(false)
		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
		_ = conn.Close()
		if s.closed.Load() {
			return
		}
		s.log.Info("legacy subscription lost, reconnecting", zap.Error(err))
		if !s.sleep(s.backoff(1)) {
			return
		}
		start = time.Now()
	}
}

// probe sends a ping over a fresh connection; the pong, handled by the
// reader, makes the subscription ready. A party never sees a ping (the
// runtime answers it), and the connection's frames arrive in order, so a
// pong proves the server neither refused nor closed the connection after
// the upgrade.
func (s *Subscription) probe(conn *websocket.Conn, start time.Time) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	conn.SetPongHandler(func(data string) error {
		// Only this reader turns the flag on: record, then signal.
		if data == nonce && !s.ready.Ready() {
			s.metrics.SubscriberReady("legacy", time.Since(start))
			s.ready.Set(true)
		}
		return nil
	})
	// A failed write ends the connection: the reader sees it and reconnects.
	_ = conn.WriteControl(websocket.PingMessage, []byte(nonce), time.Now().Add(s.cfg.HandshakeTimeout))
}

// read consumes frames until the connection fails or Close begins.
func (s *Subscription) read(conn *websocket.Conn) error {
	for {
		mt, data, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		at := time.Now()
		if s.closed.Load() {
			return errors.New("closed")
		}
		if reason := classifyFrame(mt, data); reason != "" {
			s.metrics.FrameSkipped("legacy", reason)
			continue
		}
		if s.onFrame != nil {
			s.onFrame(data, at)
		}
	}
}

// backoff returns the wait before attempt n+1 after n failures:
// upstream.Backoff (full jitter) with ceiling BackoffMin*2^(n-1), capped at
// BackoffMax.
func (s *Subscription) backoff(n int) time.Duration {
	return upstream.Backoff{Base: s.cfg.BackoffMin, Max: s.cfg.BackoffMax}.Delay(n - 1)
}

func (s *Subscription) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// String describes the subscription for logs (no secrets).
func (s *Subscription) String() string {
	return fmt.Sprintf("legacy subscription %s", s.url)
}
