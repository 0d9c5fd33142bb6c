package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/upstream"
)

// transportLabel is the metric label of this transport.
const transportLabel = "realtime"

// Msg is one kind:"data" frame received by a Subscriber.
type Msg struct {
	Kind    string
	Channel string
	Topic   string
	// Data is the published JSON, as received.
	Data       json.RawMessage
	CreatedAt  time.Time
	ReceivedAt time.Time
	RunID      string
}

// SubscriberConfig configures a Subscriber. Zero fields take the defaults
// named on each.
type SubscriberConfig struct {
	// URL is the API base (http(s)://host[:port]); the WebSocket URL is
	// ws(s)://host[:port]/v1/realtime/connect.
	URL string
	// Dialer dials the WebSocket (default: a dialer with a 5 s handshake
	// timeout).
	Dialer *websocket.Dialer
	// OnMsg receives each data frame, from the connection's reader
	// goroutine (never concurrently); it must not block.
	OnMsg func(Msg)
	// BackoffMin and BackoffMax bound the reconnect backoff (defaults
	// 250 ms and 10 s): BackoffMin is the ceiling of the first wait,
	// doubled after each failed connect up to BackoffMax, and each wait is
	// drawn uniformly below the ceiling (upstream.Backoff, full jitter).
	BackoffMin, BackoffMax time.Duration
	// ReadTimeout ends a connection from which nothing (frame or ping)
	// arrived for this long (default 50 s: three 15 s pings and a margin).
	ReadTimeout time.Duration
	// TokenMargin: a token expiring within this margin is re-minted before
	// it is used (default 5 s).
	TokenMargin time.Duration
	// Settle is how long after the sub frame was written (or the handshake
	// carrying the token succeeded) a subscription reports Ready. The
	// protocol has no acknowledgement; the server applies a sub frame as
	// soon as it reads it, so a short delay covers the trip (default
	// 250 ms).
	Settle time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c SubscriberConfig) withDefaults() SubscriberConfig {
	if c.Dialer == nil {
		c.Dialer = &websocket.Dialer{HandshakeTimeout: 5 * time.Second, Proxy: http.ProxyFromEnvironment}
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 250 * time.Millisecond
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(10*time.Second, c.BackoffMin)
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 50 * time.Second
	}
	if c.TokenMargin <= 0 {
		c.TokenMargin = 5 * time.Second
	}
	if c.Settle <= 0 {
		c.Settle = 250 * time.Millisecond
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Subscriber holds one WebSocket connection to the subscription endpoint
// and the set of subscriptions it should carry. Run connects when there is
// at least one subscription (the handshake uses the oldest one's token),
// re-subscribes everything after a reconnect (minting fresh tokens through
// the TokenSource when a token expired), and reconnects with jittered
// backoff until its context ends. Each connection has exactly one reader
// and one writer goroutine. Sub and Unsub may be called concurrently with
// each other and with Run.
type Subscriber struct {
	cfg    SubscriberConfig
	wsURL  string
	ts     TokenSource
	m      *upstream.Metrics
	logger *zap.Logger

	mu     sync.Mutex
	subs   []*Subscription // in Sub order
	cur    *wsConn         // live connection or nil
	wake   chan struct{}   // poked when a subscription is added
	closed bool
}

// NewSubscriber returns a Subscriber of cfg.URL; ts mints fresh tokens on
// reconnects (may be nil: expired tokens then end in backoff until Unsub).
func NewSubscriber(cfg SubscriberConfig, ts TokenSource, m *upstream.Metrics, logger *zap.Logger) (*Subscriber, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("realtime: subscriber: url %q: want http(s)://host", cfg.URL)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return nil, fmt.Errorf("realtime: subscriber: url: scheme %q not supported", u.Scheme)
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/v1/realtime/connect"
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Subscriber{cfg: cfg.withDefaults(), wsURL: u.String(), ts: ts, m: m,
		logger: logger.With(zap.String("transport", transportLabel)), wake: make(chan struct{}, 1)}, nil
}

// Subscription is one token's topics on a Subscriber.
type Subscription struct {
	s       *Subscriber
	channel string
	topics  []string
	// guarded by s.mu
	token    broadcast.Token
	claims   []topicClaim
	activeAt time.Time // zero while not in effect
	removed  bool
	// gen counts the changes of activeAt; changed is closed (and
	// replaced) at each one.
	gen     uint64
	changed chan struct{}
}

// setActiveLocked sets activeAt (zero: not in effect) and signals the
// change. s.mu must be held.
func (sub *Subscription) setActiveLocked(at time.Time) {
	sub.activeAt = at
	sub.gen++
	if sub.changed != nil {
		close(sub.changed)
		sub.changed = nil
	}
}

// activation returns the generation of the subscription's current state,
// whether it is in effect on the live connection, and a channel closed at
// its next change (a sub frame written, a connection lost, an Unsub).
func (sub *Subscription) activation() (gen uint64, active bool, changed <-chan struct{}) {
	sub.s.mu.Lock()
	defer sub.s.mu.Unlock()
	if sub.changed == nil {
		sub.changed = make(chan struct{})
	}
	return sub.gen, !sub.activeAt.IsZero(), sub.changed
}

type topicClaim struct {
	Kind    string `json:"kind"`
	EnvID   string `json:"env_id"`
	Channel string `json:"channel"`
	Name    string `json:"name"`
}

type tokenClaims struct {
	jwt.RegisteredClaims
	Topics []topicClaim `json:"topics"`
}

// Sub adds tok's topics to the connection: it sends {"kind":"sub","data":jwt}
// at once when connected (minting a fresh token with ctx first if tok is
// about to expire), or lets Run connect with it. The returned Subscription
// reports Ready once the sub is in effect.
func (s *Subscriber) Sub(ctx context.Context, tok broadcast.Token) (*Subscription, error) {
	subs, err := s.SubAll(ctx, tok)
	if err != nil {
		return nil, err
	}
	return subs[0], nil
}

// SubAll is Sub for several tokens at once, with an order guarantee: their
// sub frames are written in the order of toks, on the current connection
// and after every reconnect (the handshake of a new connection uses the
// oldest subscription's token), and no other frame of theirs comes
// between. A server applies a connection's sub frames in order, so the
// topics of toks[i] are in effect before those of toks[i+1]. On error none
// is added.
func (s *Subscriber) SubAll(ctx context.Context, toks ...broadcast.Token) ([]*Subscription, error) {
	subs := make([]*Subscription, 0, len(toks))
	for _, tok := range toks {
		if tok.Key == "" || tok.Channel == "" || len(tok.Topics) == 0 {
			return nil, errors.New("realtime: sub: token needs key, channel and topics")
		}
		sub := &Subscription{s: s, channel: tok.Channel, topics: append([]string(nil), tok.Topics...)}
		if err := sub.setToken(tok); err != nil {
			return nil, err
		}
		if s.expiring(tok) {
			if err := sub.refresh(ctx); err != nil {
				return nil, err
			}
		}
		subs = append(subs, sub)
	}
	// Appended in one critical section, with the connection they are sent
	// on read in the same one: serve's snapshot has all of them (and sends
	// them in order) or none (and they are sent here, in order).
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("realtime: sub: subscriber closed")
	}
	s.subs = append(s.subs, subs...)
	c := s.cur
	s.mu.Unlock()
	if c != nil {
		for _, sub := range subs {
			c.sendSub(sub)
		}
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return subs, nil
}

func (s *Subscriber) expiring(tok broadcast.Token) bool {
	return !tok.ExpiresAt.IsZero() && !s.cfg.Now().Add(s.cfg.TokenMargin).Before(tok.ExpiresAt)
}

// setToken records tok and its topic claims (read unverified: the token
// comes from our own upstream call).
func (sub *Subscription) setToken(tok broadcast.Token) error {
	var c tokenClaims
	if err := parseUnverified(tok.Key, &c); err != nil {
		return fmt.Errorf("realtime: sub: token: %w", err)
	}
	if tok.ExpiresAt.IsZero() && c.ExpiresAt != nil {
		tok.ExpiresAt = c.ExpiresAt.UTC()
	}
	claims := c.Topics
	if len(claims) == 0 { // a token without topic claims: unsub by name
		for _, t := range tok.Topics {
			claims = append(claims, topicClaim{Kind: "run", Channel: tok.Channel, Name: t})
		}
	}
	sub.s.mu.Lock()
	sub.token, sub.claims = tok, claims
	sub.s.mu.Unlock()
	return nil
}

func (sub *Subscription) refresh(ctx context.Context) error {
	if sub.s.ts == nil {
		return errors.New("realtime: token expired and no token source")
	}
	tok, err := sub.s.ts.MintToken(ctx, sub.channel, sub.topics)
	if err != nil {
		return fmt.Errorf("realtime: refresh token for channel %q: %w", sub.channel, err)
	}
	return sub.setToken(tok)
}

// Channel returns the Inngest channel of the subscription.
func (sub *Subscription) Channel() string { return sub.channel }

// Ready reports whether the sub has been in effect on the live connection
// for at least the Settle delay.
func (sub *Subscription) Ready() bool {
	sub.s.mu.Lock()
	at := sub.activeAt
	sub.s.mu.Unlock()
	return !at.IsZero() && !sub.s.cfg.Now().Before(at.Add(sub.s.cfg.Settle))
}

// Unsub removes the subscription and, when connected, sends
// {"kind":"unsub","data":[topics]} with the token's topic claims. It is
// idempotent.
func (sub *Subscription) Unsub() {
	s := sub.s
	s.mu.Lock()
	if sub.removed {
		s.mu.Unlock()
		return
	}
	sub.removed = true
	sub.setActiveLocked(time.Time{})
	for i, x := range s.subs {
		if x == sub {
			s.subs = append(s.subs[:i:i], s.subs[i+1:]...)
			break
		}
	}
	claims := sub.claims
	c := s.cur
	s.mu.Unlock()
	if c != nil {
		b, _ := json.Marshal(struct {
			Kind string       `json:"kind"`
			Data []topicClaim `json:"data"`
		}{"unsub", claims})
		c.enqueue(outFrame{data: b})
	}
}

// Run connects, serves and reconnects until ctx ends; it returns ctx's
// error. It must be called once.
func (s *Subscriber) Run(ctx context.Context) error {
	defer func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
	}()
	backoff := upstream.Backoff{Base: s.cfg.BackoffMin, Max: s.cfg.BackoffMax}
	failures := 0 // failed connects in a row
	connected := false
	for {
		sub := s.first()
		if sub == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.wake:
				continue
			}
		}
		c, err := s.dial(ctx, sub)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			wait := backoff.Delay(failures)
			failures++
			s.logger.Warn("realtime: subscriber connect failed", zap.Error(err), zap.Duration("backoff", wait))
			if !sleep(ctx, wait) {
				return ctx.Err()
			}
			continue
		}
		if connected {
			s.m.Reconnected(transportLabel)
		}
		connected = true
		failures = 0
		closing := s.serve(ctx, c, sub)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if closing { // the server asked us to reconnect elsewhere: at once
			continue
		}
		if !sleep(ctx, backoff.Delay(0)) {
			return ctx.Err()
		}
	}
}

func (s *Subscriber) first() *Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.subs) == 0 {
		return nil
	}
	return s.subs[0]
}

var errUnauthorized = errors.New("handshake answered 401")

// dial opens a connection with sub's token, minting a fresh one when it
// expired or the handshake answered 401.
func (s *Subscriber) dial(ctx context.Context, sub *Subscription) (*websocket.Conn, error) {
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		tok := sub.token
		s.mu.Unlock()
		if s.expiring(tok) || attempt > 0 {
			if err := sub.refresh(ctx); err != nil {
				return nil, err
			}
			s.mu.Lock()
			tok = sub.token
			s.mu.Unlock()
		}
		u := s.wsURL + "?token=" + url.QueryEscape(tok.Key)
		ws, resp, err := s.cfg.Dialer.DialContext(ctx, u, nil)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err == nil {
			return ws, nil
		}
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			if attempt == 0 && s.ts != nil {
				continue // token expired or revoked: mint a fresh one once
			}
			return nil, errUnauthorized
		}
		if resp != nil {
			return nil, fmt.Errorf("realtime: connect: handshake answered %d", resp.StatusCode)
		}
		return nil, fmt.Errorf("realtime: connect: %w", redact(err))
	}
}

// redact drops the URL (which holds the token) from a dial error.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// serve runs one connection until it fails; it reports whether the server
// announced "closing".
func (s *Subscriber) serve(ctx context.Context, ws *websocket.Conn, first *Subscription) bool {
	c := &wsConn{ws: ws, out: make(chan outFrame, 64), quit: make(chan struct{}), s: s}
	s.mu.Lock()
	s.cur = c
	subs := append([]*Subscription(nil), s.subs...)
	if !first.removed {
		first.setActiveLocked(s.cfg.Now()) // the handshake token subscribed it
	}
	s.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.writeLoop() }()
	closing := make(chan bool, 1)
	go func() { defer wg.Done(); closing <- c.readLoop() }()
	for _, sub := range subs {
		if sub == first {
			continue
		}
		s.mu.Lock()
		tok := sub.token
		s.mu.Unlock()
		if s.expiring(tok) {
			if err := sub.refresh(ctx); err != nil {
				s.logger.Warn("realtime: re-subscribe failed", zap.String("channel", sub.channel), zap.Error(err))
				continue
			}
		}
		c.sendSub(sub)
	}
	var wasClosing bool
	select {
	case wasClosing = <-closing:
	case <-ctx.Done():
		c.closeNormal()
		t := time.NewTimer(time.Second) // dev servers may not answer a close
		select {
		case wasClosing = <-closing:
		case <-t.C:
		}
		t.Stop()
	}
	c.stop()
	wg.Wait()
	s.mu.Lock()
	s.cur = nil
	for _, sub := range s.subs {
		sub.setActiveLocked(time.Time{})
	}
	s.mu.Unlock()
	return wasClosing
}

type outFrame struct {
	control int // 0 for a text frame, else a control message type
	data    []byte
	sub     *Subscription // marked active once written
}

// wsConn is one live connection: readLoop runs in one goroutine, writeLoop
// in another, and every write goes through out.
type wsConn struct {
	s    *Subscriber
	ws   *websocket.Conn
	out  chan outFrame
	quit chan struct{}
	once sync.Once
}

func (c *wsConn) stop() {
	c.once.Do(func() {
		close(c.quit)
		_ = c.ws.Close()
	})
}

func (c *wsConn) enqueue(f outFrame) {
	select {
	case c.out <- f:
	case <-c.quit:
	}
}

func (c *wsConn) sendSub(sub *Subscription) {
	c.s.mu.Lock()
	key := sub.token.Key
	c.s.mu.Unlock()
	b, _ := json.Marshal(struct {
		Kind string `json:"kind"`
		Data string `json:"data"`
	}{"sub", key})
	c.enqueue(outFrame{data: b, sub: sub})
}

// closeNormal asks the writer to send a normal close; serve bounds the wait
// for the server's answer.
func (c *wsConn) closeNormal() {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	select {
	case c.out <- outFrame{control: websocket.CloseMessage, data: msg}:
	case <-c.quit:
	}
}

func (c *wsConn) writeLoop() {
	for {
		select {
		case <-c.quit:
			return
		case f := <-c.out:
			deadline := time.Now().Add(5 * time.Second)
			var err error
			if f.control != 0 {
				err = c.ws.WriteControl(f.control, f.data, deadline)
			} else {
				_ = c.ws.SetWriteDeadline(deadline)
				err = c.ws.WriteMessage(websocket.TextMessage, f.data)
			}
			if err != nil {
				c.stop()
				return
			}
			if f.sub != nil {
				c.s.mu.Lock()
				if !f.sub.removed && c.s.cur == c {
					f.sub.setActiveLocked(c.s.cfg.Now())
				}
				c.s.mu.Unlock()
			}
		}
	}
}

// readLoop reads until the connection fails; it reports whether the server
// announced "closing" (a kind:"closing" frame or a close with that reason).
func (c *wsConn) readLoop() bool {
	s := c.s
	c.ws.SetReadLimit(2 << 20)
	timeout := s.cfg.ReadTimeout
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	c.ws.SetPingHandler(func(data string) error {
		_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
		select { // the pong goes through the one writer
		case c.out <- outFrame{control: websocket.PongMessage, data: []byte(data)}:
		default:
		}
		return nil
	})
	closing := false
	c.ws.SetCloseHandler(func(code int, text string) error {
		closing = text == "closing"
		msg := websocket.FormatCloseMessage(code, "")
		select {
		case c.out <- outFrame{control: websocket.CloseMessage, data: msg}:
		default:
		}
		return nil
	})
	for {
		typ, b, err := c.ws.ReadMessage()
		if err != nil {
			return closing
		}
		now := s.cfg.Now()
		_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
		if typ != websocket.TextMessage {
			s.m.FrameSkipped(transportLabel, "binary")
			continue
		}
		msg, err := decodeFrame(b)
		if err != nil {
			s.m.FrameSkipped(transportLabel, frameErrReason(err))
			continue
		}
		switch msg.Kind {
		case "data":
			msg.ReceivedAt = now
			if s.cfg.OnMsg != nil {
				s.cfg.OnMsg(msg)
			}
		case "closing":
			closing = true
			c.stop()
			return true
		default:
			s.m.FrameSkipped(transportLabel, "kind")
		}
	}
}

// frameError classifies an undecodable frame for the skipped-frames metric.
type frameError struct {
	reason string
	msg    string
}

func (e *frameError) Error() string { return "realtime: frame: " + e.msg }

func frameErrReason(err error) string {
	var fe *frameError
	if errors.As(err, &fe) {
		return fe.reason
	}
	return "bad_frame"
}

// decodeFrame parses a server frame. Any frame needs a string kind; a data
// frame also needs channel, topic, a JSON data value and, when present, an
// RFC 3339 created_at. Other kinds are returned with only Kind set.
func decodeFrame(b []byte) (Msg, error) {
	var f struct {
		Kind      *string         `json:"kind"`
		Data      json.RawMessage `json:"data"`
		CreatedAt string          `json:"created_at"`
		Channel   string          `json:"channel"`
		Topic     string          `json:"topic"`
		RunID     string          `json:"run_id"`
	}
	if !json.Valid(b) {
		return Msg{}, &frameError{"not_json", "not valid JSON"}
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return Msg{}, &frameError{"bad_frame", fmt.Sprintf("not a frame object: %v", err)}
	}
	if f.Kind == nil || *f.Kind == "" {
		return Msg{}, &frameError{"bad_frame", "kind missing"}
	}
	if *f.Kind != "data" {
		return Msg{Kind: *f.Kind}, nil
	}
	if f.Channel == "" || f.Topic == "" {
		return Msg{}, &frameError{"bad_frame", "data frame without channel or topic"}
	}
	if len(f.Data) == 0 || string(f.Data) == "null" {
		return Msg{}, &frameError{"bad_frame", "data frame without data"}
	}
	m := Msg{Kind: "data", Channel: f.Channel, Topic: f.Topic, Data: f.Data, RunID: f.RunID}
	if f.CreatedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, f.CreatedAt)
		if err != nil {
			return Msg{}, &frameError{"bad_frame", "created_at is not RFC 3339"}
		}
		m.CreatedAt = t
	}
	return m, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
