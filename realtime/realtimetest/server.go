// Package realtimetest is an in-process Inngest Realtime server for tests,
// faithful to shared/protocols.md ("Inngest Realtime"): publish (plain and
// text/stream), token issuing (HS256, iss rt.inngest.com, exp = iat + 60 s),
// the WebSocket subscription endpoint with sub/unsub frames, protocol pings
// and a "closing" close on shutdown. It adds what a real server cannot give
// a test: an injectable clock, fault switches settable while it runs (hang,
// 5xx, delay, connection reset, dropped and altered messages) and records of
// everything it received.
//
// All methods of Server are safe for concurrent use.
package realtimetest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// Protocol limits.
const (
	// MaxBody is the size above which a publish body is truncated silently.
	MaxBody = 512 << 10
	// MaxChunk is the largest chunk of a text/stream publish.
	MaxChunk = 1024
	// MaxChunks is the most chunks one text/stream publish produces.
	MaxChunks = 1000
	// TokenTTL is the lifetime of an issued token.
	TokenTTL = 60 * time.Second
	// Issuer is the iss claim of issued tokens.
	Issuer = "rt.inngest.com"
)

// Config configures a Server. The zero value is a dev server: no auth, a
// random JWT key, the real clock, pings every 15 s.
type Config struct {
	// SigningKey, when set, is required on publish and token requests as
	// "Bearer <key>" in raw or hashed form (signkey-{env}-{hex}).
	SigningKey string
	// JWTKey signs issued tokens (default: 32 random bytes).
	JWTKey []byte
	// EnvID is the env_id of frames and token topics (default a fixed UUID).
	EnvID string
	// Now is the clock (default time.Now); Advance shifts it.
	Now func() time.Time
	// PingInterval is the protocol ping period (default 15 s).
	PingInterval time.Duration
	// MaxMissedPongs closes a connection after this many unanswered pings
	// (default 3).
	MaxMissedPongs int
}

// HTTPFault makes publish or token requests misbehave. The zero value is no
// fault.
type HTTPFault struct {
	// Status answers with this status (and a short text body) instead.
	Status int
	// Hang never answers: the handler waits until the client gives up.
	Hang bool
	// Reset closes the TCP connection without an answer.
	Reset bool
	// Delay waits this long before handling the request normally.
	Delay time.Duration
	// Times limits Status, Hang and Reset to the next Times requests; 0
	// means every request until the fault is changed.
	Times int
}

// DeliveryFault makes the fan-out to subscribers misbehave (the publish is
// still answered 200). The zero value is no fault.
type DeliveryFault struct {
	// DropAll drops every message.
	DropAll bool
	// DropEvery drops every Nth published message (counted from the moment
	// the fault is set).
	DropEvery int
	// DropTopic drops the messages of this topic.
	DropTopic string
	// AlterTopic changes the data of the messages of this topic with Alter.
	AlterTopic string
	// Alter returns the data subscribers see instead of data. nil: an
	// object gets "altered":true added (its "body" field, if any, is
	// replaced by "altered"); any other value becomes the string "altered".
	Alter func(data json.RawMessage) json.RawMessage
}

// Publish records one publish request as received.
type Publish struct {
	Channel, Topic, RunID string
	Metadata              json.RawMessage
	ContentType           string
	// Body is the body as kept (after silent truncation).
	Body []byte
	// Received is the body length before truncation.
	Received  int
	Truncated bool
	Auth      string
}

// TokenRequest records one token request that was answered 201.
type TokenRequest struct {
	Topics []TopicClaim
	JWT    string
}

// TopicClaim is one entry of the topics claim of an issued token.
type TopicClaim struct {
	Kind    string `json:"kind"`
	EnvID   string `json:"env_id"`
	Channel string `json:"channel"`
	Name    string `json:"name"`
}

// Claims are the claims of an issued token.
type Claims struct {
	jwt.RegisteredClaims
	Topics []TopicClaim `json:"topics"`
}

// Counts are the server's counters. Pings counts the protocol pings
// written, Pongs the pongs received.
type Counts struct {
	Publishes, TokenRequests, Unauthorized     int
	Connects, Rejected, SubFrames, UnsubFrames int
	BadSubs, BadFrames, Delivered, Dropped     int
	Pings, Pongs                               int
}

// Server is a running test server. Create it with NewServer and Close it.
type Server struct {
	cfg    Config
	hashed string
	srv    *httptest.Server
	up     websocket.Upgrader
	done   chan struct{}
	offset atomic.Int64

	mu        sync.Mutex
	pubFault  HTTPFault
	tokFault  HTTPFault
	conFault  HTTPFault
	delFault  DeliveryFault
	dropCount int
	publishes []Publish
	tokens    []TokenRequest
	counts    Counts
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
}

// NewServer starts a server on a loopback port.
func NewServer(cfg Config) *Server {
	if len(cfg.JWTKey) == 0 {
		cfg.JWTKey = make([]byte, 32)
		_, _ = rand.Read(cfg.JWTKey)
	}
	if cfg.EnvID == "" {
		cfg.EnvID = "7c1b7e0e-2f5a-4a0e-9d57-3f6f1c2a9b10"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 15 * time.Second
	}
	if cfg.MaxMissedPongs <= 0 {
		cfg.MaxMissedPongs = 3
	}
	s := &Server{cfg: cfg, done: make(chan struct{}), conns: map[*conn]struct{}{}}
	if cfg.SigningKey != "" {
		s.hashed = hashKey(cfg.SigningKey)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/realtime/publish", s.handlePublish)
	mux.HandleFunc("/v1/realtime/token", s.handleToken)
	mux.HandleFunc("/v1/realtime/connect", s.handleConnect)
	s.srv = httptest.NewServer(mux)
	return s
}

// URL is the base URL (http://127.0.0.1:port).
func (s *Server) URL() string { return s.srv.URL }

// EnvID is the env_id the server puts in frames and tokens.
func (s *Server) EnvID() string { return s.cfg.EnvID }

// JWTKey is the key issued tokens are signed with.
func (s *Server) JWTKey() []byte { return s.cfg.JWTKey }

// Now is the server's clock.
func (s *Server) Now() time.Time {
	return s.cfg.Now().Add(time.Duration(s.offset.Load()))
}

// Advance moves the server's clock forward by d (tokens expire faster).
func (s *Server) Advance(d time.Duration) { s.offset.Add(int64(d)) }

// SetPublishFault replaces the fault of publish requests.
func (s *Server) SetPublishFault(f HTTPFault) { s.mu.Lock(); s.pubFault = f; s.mu.Unlock() }

// SetTokenFault replaces the fault of token requests.
func (s *Server) SetTokenFault(f HTTPFault) { s.mu.Lock(); s.tokFault = f; s.mu.Unlock() }

// SetConnectFault replaces the fault of WebSocket handshakes (applied after
// the token check).
func (s *Server) SetConnectFault(f HTTPFault) { s.mu.Lock(); s.conFault = f; s.mu.Unlock() }

// SetDeliveryFault replaces the fault of the fan-out to subscribers.
func (s *Server) SetDeliveryFault(f DeliveryFault) {
	s.mu.Lock()
	s.delFault = f
	s.dropCount = 0
	s.mu.Unlock()
}

// Publishes returns a copy of the publish requests received so far (those
// that passed auth and validation).
func (s *Server) Publishes() []Publish {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Publish(nil), s.publishes...)
}

// Tokens returns a copy of the tokens issued so far.
func (s *Server) Tokens() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequest(nil), s.tokens...)
}

// Counts returns a snapshot of the counters.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// Subscribed returns how many open connections are subscribed to topic of
// channel.
func (s *Server) Subscribed(channel, topic string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if c.topics[topicKey(channel, topic)] {
			n++
		}
	}
	return n
}

// Connections returns the number of open WebSocket connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// DropConnections closes every WebSocket connection abruptly (no close
// frame), as a network failure would.
func (s *Server) DropConnections() {
	for _, c := range s.snapshot() {
		_ = c.ws.UnderlyingConn().Close()
	}
}

// CloseConnections sends every WebSocket connection a close frame with
// reason "closing" (what the server does on shutdown) and closes it.
func (s *Server) CloseConnections() {
	for _, c := range s.snapshot() {
		c.closeWith(websocket.CloseGoingAway, "closing")
	}
}

// Close sends "closing" to every subscriber, then stops the server. It is
// safe to call while clients are connecting: done is closed under the lock
// that registers connections, so none registers after the snapshot that is
// closed here (a hijacked websocket is not closed by httptest).
func (s *Server) Close() {
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		return
	default:
	}
	close(s.done)
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.closeWith(websocket.CloseGoingAway, "closing")
	}
	s.srv.CloseClientConnections()
	s.srv.Close()
	s.wg.Wait()
}

func (s *Server) snapshot() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

func hashKey(key string) string {
	i := strings.LastIndexByte(key, '-')
	if i < 0 {
		return ""
	}
	raw, err := hex.DecodeString(key[i+1:])
	if err != nil {
		return ""
	}
	return key[:i+1] + sha256Hex(raw)
}

// authorized checks signing-key auth: with a key configured, the bearer must
// be the raw or the hashed key.
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.SigningKey == "" {
		return true
	}
	v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || v == "" {
		return false
	}
	return constantEqual(v, s.cfg.SigningKey) || (s.hashed != "" && constantEqual(v, s.hashed))
}

// applyFault runs f; it reports whether the request was answered.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, which *HTTPFault) bool {
	s.mu.Lock()
	f := *which
	active := f.Status != 0 || f.Hang || f.Reset
	if active && f.Times > 0 {
		which.Times--
		if which.Times == 0 {
			which.Status, which.Hang, which.Reset = 0, false, false
		}
	}
	s.mu.Unlock()
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return true
		case <-s.done:
			return true
		}
	}
	switch {
	case f.Hang:
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return true
	case f.Reset:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				_ = c.Close()
				return true
			}
		}
		http.Error(w, "reset", http.StatusInternalServerError)
		return true
	case f.Status != 0:
		http.Error(w, http.StatusText(f.Status), f.Status)
		return true
	}
	return false
}

func (s *Server) unauthorized(w http.ResponseWriter) {
	s.mu.Lock()
	s.counts.Unauthorized++
	s.mu.Unlock()
	http.Error(w, "Unauthorized", http.StatusUnauthorized)
}

// admit answers what the real server answers before it reads a POST body
// (405 for another method, 401 for a wrong key) and applies the fault
// switch of the endpoint; it reports whether the handler should go on.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, fault *HTTPFault) bool {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return false
	}
	if !s.authorized(r) {
		s.unauthorized(w)
		return false
	}
	return !s.applyFault(w, r, fault)
}

func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) {
	if !s.admit(w, r, &s.pubFault) {
		return
	}
	q := r.URL.Query()
	p := Publish{Channel: q.Get("channel"), Topic: q.Get("topic"), RunID: q.Get("run_id"),
		ContentType: r.Header.Get("Content-Type"), Auth: r.Header.Get("Authorization")}
	if p.Channel == "" || p.Topic == "" {
		http.Error(w, "channel and topic are required", http.StatusBadRequest)
		return
	}
	if md := q.Get("metadata"); md != "" {
		if !json.Valid([]byte(md)) {
			http.Error(w, "metadata must be JSON", http.StatusBadRequest)
			return
		}
		p.Metadata = json.RawMessage(md)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	extra, _ := io.Copy(io.Discard, r.Body)
	p.Body, p.Received, p.Truncated = body, len(body)+int(extra), extra > 0
	s.mu.Lock()
	s.publishes = append(s.publishes, p)
	s.counts.Publishes++
	s.mu.Unlock()

	if strings.HasPrefix(p.ContentType, "text/stream") {
		s.stream(p)
	} else {
		data := json.RawMessage(body)
		if !json.Valid(body) {
			data, _ = json.Marshal(string(body))
		}
		s.deliver(p, "data", data)
	}
	w.WriteHeader(http.StatusOK)
}

// frame is a server -> client frame in the field order of protocols.md.
type frame struct {
	Kind      string          `json:"kind"`
	Data      json.RawMessage `json:"data"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	CreatedAt string          `json:"created_at"`
	Channel   string          `json:"channel"`
	EnvID     string          `json:"env_id"`
	Topic     string          `json:"topic"`
	RunID     string          `json:"run_id,omitempty"`
}

type chunkFrame struct {
	Kind     string `json:"kind"`
	StreamID string `json:"stream_id"`
	Data     string `json:"data"`
}

func (s *Server) stream(p Publish) {
	id := randomID()
	idJSON, _ := json.Marshal(id)
	s.deliver(p, "datastream-start", idJSON)
	body := p.Body
	for n := 0; len(body) > 0 && n < MaxChunks; n++ {
		k := min(len(body), MaxChunk)
		b, _ := json.Marshal(chunkFrame{Kind: "chunk", StreamID: id, Data: string(body[:k])})
		s.fanout(p.Channel, p.Topic, b)
		body = body[k:]
	}
	s.deliver(p, "datastream-end", idJSON)
}

func (s *Server) deliver(p Publish, kind string, data json.RawMessage) {
	if kind == "data" {
		s.mu.Lock()
		f := s.delFault
		drop := f.DropAll || (f.DropTopic != "" && f.DropTopic == p.Topic)
		if f.DropEvery > 0 {
			s.dropCount++
			drop = drop || s.dropCount%f.DropEvery == 0
		}
		if drop {
			s.counts.Dropped++
		}
		s.mu.Unlock()
		if drop {
			return
		}
		if f.AlterTopic != "" && f.AlterTopic == p.Topic {
			alter := f.Alter
			if alter == nil {
				alter = defaultAlter
			}
			data = alter(data)
		}
	}
	b, err := json.Marshal(frame{Kind: kind, Data: data, Metadata: p.Metadata,
		CreatedAt: s.Now().UTC().Format(time.RFC3339Nano), Channel: p.Channel,
		EnvID: s.cfg.EnvID, Topic: p.Topic, RunID: p.RunID})
	if err != nil {
		return
	}
	s.fanout(p.Channel, p.Topic, b)
}

func defaultAlter(data json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil || m == nil {
		return json.RawMessage(`"altered"`)
	}
	if _, ok := m["body"]; ok {
		m["body"] = json.RawMessage(`"altered"`)
	}
	m["altered"] = json.RawMessage(`true`)
	b, _ := json.Marshal(m)
	return b
}

func (s *Server) fanout(channel, topic string, b []byte) {
	key := topicKey(channel, topic)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.topics[key] && c.send(b) {
			s.counts.Delivered++
		}
	}
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if !s.admit(w, r, &s.tokFault) {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	topics, err := DecodeTokenRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for i := range topics {
		topics[i].EnvID = s.cfg.EnvID
	}
	now := s.Now()
	claims := Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: Issuer, Subject: s.cfg.EnvID,
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(TokenTTL))}, Topics: topics}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.cfg.JWTKey)
	if err != nil {
		http.Error(w, "sign", http.StatusInternalServerError)
		return
	}
	s.mu.Lock()
	s.tokens = append(s.tokens, TokenRequest{Topics: topics, JWT: signed})
	s.counts.TokenRequests++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]string{"jwt": signed})
}

// DecodeTokenRequest parses a token request body: a non-empty JSON array of
// {"channel","name","kind"} objects with channel and name required and kind
// "run" (the default when absent).
func DecodeTokenRequest(b []byte) ([]TopicClaim, error) {
	var in []struct {
		Channel string `json:"channel"`
		Name    string `json:"name"`
		Kind    string `json:"kind"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("body: want a JSON array of topics: %v", err)
	}
	if len(in) == 0 {
		return nil, errors.New("body: at least one topic required")
	}
	out := make([]TopicClaim, len(in))
	for i, t := range in {
		if t.Channel == "" || t.Name == "" {
			return nil, fmt.Errorf("body[%d]: channel and name are required", i)
		}
		if t.Kind == "" {
			t.Kind = "run"
		}
		if t.Kind != "run" {
			return nil, fmt.Errorf("body[%d]: kind %q not supported (want run)", i, t.Kind)
		}
		out[i] = TopicClaim{Kind: t.Kind, Channel: t.Channel, Name: t.Name}
	}
	return out, nil
}

// maxTokenBytes bounds the subscription tokens the server reads.
const maxTokenBytes = 16 << 10

// verify checks a subscription token at the server's clock: at most
// maxTokenBytes, HS256 with the server's key, exp required and not past,
// nbf and iat not in the future, issued by Issuer, with topics.
func (s *Server) verify(token string) ([]TopicClaim, error) {
	if len(token) > maxTokenBytes {
		return nil, fmt.Errorf("token longer than %d bytes", maxTokenBytes)
	}
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return s.cfg.JWTKey, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), jwt.WithTimeFunc(s.Now))
	if err != nil {
		return nil, err
	}
	if c.Issuer != Issuer {
		return nil, fmt.Errorf("iss %q", c.Issuer)
	}
	if len(c.Topics) == 0 {
		return nil, errors.New("no topics")
	}
	return c.Topics, nil
}

func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	if tok == "" {
		tok, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	topics, err := s.verify(tok)
	if err != nil {
		s.mu.Lock()
		s.counts.Rejected++
		s.mu.Unlock()
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	s.mu.Lock()
	fault := &s.conFault
	s.mu.Unlock()
	if s.applyFault(w, r, fault) {
		return
	}
	// Hold the lock across the upgrade so that the connection is registered
	// (subscribed) before any publish the client makes after seeing the 101.
	s.mu.Lock()
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		s.mu.Unlock()
		return
	}
	c := &conn{s: s, ws: ws, out: make(chan outMsg, 256), quit: make(chan struct{}), topics: map[string]bool{}}
	for _, t := range topics {
		c.topics[topicKey(t.Channel, t.Name)] = true
	}
	select {
	case <-s.done:
		s.mu.Unlock()
		_ = ws.Close()
		return
	default:
	}
	s.conns[c] = struct{}{}
	s.counts.Connects++
	s.wg.Add(2)
	s.mu.Unlock()
	go c.writeLoop()
	go c.readLoop()
}

type outMsg struct {
	kind int // websocket message type
	data []byte
}

// conn is one subscriber connection: a reader goroutine (client frames and
// pongs) and a writer goroutine (frames, pings, close), joined by out.
type conn struct {
	s      *Server
	ws     *websocket.Conn
	out    chan outMsg
	quit   chan struct{}
	once   sync.Once
	missed atomic.Int32
	topics map[string]bool // guarded by s.mu
}

// send queues a frame; it reports false (and the frame is lost) when the
// connection is closing or its queue is full. Called with s.mu held.
func (c *conn) send(b []byte) bool {
	select {
	case <-c.quit:
		return false
	case c.out <- outMsg{websocket.TextMessage, b}:
		return true
	default:
		return false
	}
}

func (c *conn) closeWith(code int, reason string) {
	select {
	case <-c.quit:
		return
	default:
	}
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	c.stop()
}

func (c *conn) stop() {
	c.once.Do(func() {
		close(c.quit)
		_ = c.ws.Close()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
}

func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	defer c.stop()
	t := time.NewTicker(c.s.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.quit:
			return
		case m := <-c.out:
			_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := c.ws.WriteMessage(m.kind, m.data); err != nil {
				return
			}
		case <-t.C:
			if int(c.missed.Add(1)) > c.s.cfg.MaxMissedPongs {
				c.closeWith(websocket.ClosePolicyViolation, "missed pongs")
				return
			}
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)); err != nil {
				return
			}
			c.s.mu.Lock()
			c.s.counts.Pings++
			c.s.mu.Unlock()
		}
	}
}

func (c *conn) readLoop() {
	defer c.s.wg.Done()
	defer c.stop()
	c.ws.SetReadLimit(1 << 20)
	c.ws.SetPongHandler(func(string) error {
		c.missed.Store(0)
		c.s.mu.Lock()
		c.s.counts.Pongs++
		c.s.mu.Unlock()
		return nil
	})
	for {
		typ, b, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		if typ != websocket.TextMessage {
			c.count(func(n *Counts) { n.BadFrames++ })
			continue
		}
		cf, err := DecodeClientFrame(b)
		if err != nil {
			c.count(func(n *Counts) { n.BadFrames++ })
			continue
		}
		switch cf.Kind {
		case "sub":
			c.count(func(n *Counts) { n.SubFrames++ })
			topics, err := c.s.verify(cf.Token)
			if err != nil { // the real server ignores it silently
				c.count(func(n *Counts) { n.BadSubs++ })
				continue
			}
			c.s.mu.Lock()
			for _, t := range topics {
				c.topics[topicKey(t.Channel, t.Name)] = true
			}
			c.s.mu.Unlock()
		case "unsub":
			c.count(func(n *Counts) { n.UnsubFrames++ })
			c.s.mu.Lock()
			for _, t := range cf.Topics {
				delete(c.topics, topicKey(t.Channel, t.Name))
			}
			c.s.mu.Unlock()
		}
	}
}

func (c *conn) count(f func(*Counts)) {
	c.s.mu.Lock()
	f(&c.s.counts)
	c.s.mu.Unlock()
}

// ClientFrame is a decoded client -> server frame.
type ClientFrame struct {
	// Kind is "sub" or "unsub".
	Kind string
	// Token is the JWT of a sub frame.
	Token string
	// Topics are the topics of an unsub frame.
	Topics []TopicClaim
}

// DecodeClientFrame parses {"kind":"sub","data":"<jwt>"} or
// {"kind":"unsub","data":[{"channel":..,"name":..,...}, ...]}; anything
// else is an error naming the problem.
func DecodeClientFrame(b []byte) (ClientFrame, error) {
	var raw struct {
		Kind string          `json:"kind"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return ClientFrame{}, fmt.Errorf("client frame: not a JSON object: %v", err)
	}
	switch raw.Kind {
	case "sub":
		var tok string
		if err := json.Unmarshal(raw.Data, &tok); err != nil || tok == "" {
			return ClientFrame{}, errors.New("client frame: sub data must be a non-empty JWT string")
		}
		return ClientFrame{Kind: raw.Kind, Token: tok}, nil
	case "unsub":
		var topics []TopicClaim
		if err := json.Unmarshal(raw.Data, &topics); err != nil {
			return ClientFrame{}, errors.New("client frame: unsub data must be an array of topics")
		}
		for i, t := range topics {
			if t.Channel == "" || t.Name == "" {
				return ClientFrame{}, fmt.Errorf("client frame: unsub data[%d]: channel and name required", i)
			}
		}
		return ClientFrame{Kind: raw.Kind, Topics: topics}, nil
	case "":
		return ClientFrame{}, errors.New("client frame: kind missing")
	default:
		return ClientFrame{}, fmt.Errorf("client frame: kind %q unknown (want sub or unsub)", raw.Kind)
	}
}

func topicKey(channel, topic string) string { return channel + "\x00" + topic }

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// constantEqual compares secrets without early exit on the first mismatch.
func constantEqual(a, b string) bool {
	return len(a) == len(b) && subtleEqual([]byte(a), []byte(b))
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func subtleEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
