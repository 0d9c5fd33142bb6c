// Package api is the gateway's HTTP surface: the public listener (the
// broadcast API, the PartyKit-compatible drop-in path, the realtime token
// endpoint) and the admin listener (metrics, health, routes, shadow
// reports). It decodes and validates every request, authenticates it, hands
// accepted messages to a Broadcaster, and maps errors to HTTP answers in one
// place (writeError).
package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/receipts"
	"github.com/switchyard/switchyard/shadow"
)

// Broadcaster is what the API needs from the multicast adapter. Both
// methods must be safe for concurrent use; they block until the answering
// transport answered (or failed) for each message.
type Broadcaster interface {
	Broadcast(ctx context.Context, m *broadcast.Message) (broadcast.Outcome, error)
	BroadcastBatch(ctx context.Context, msgs []*broadcast.Message) []broadcast.BatchResult
}

// App is one app's credentials as the API checks them.
type App struct {
	Name string
	// KeyHashes are SHA-256 digests of the app's API keys.
	KeyHashes [][32]byte
	// DropInHeader and DropInSecret guard the PartyKit-compatible path when
	// DropInSecret is set.
	DropInHeader string
	DropInSecret string
	// GrantSecret verifies room grants on GET /v1/realtime/token; empty
	// disables that path for the app.
	GrantSecret []byte
	// Origins are the CORS origins allowed on the token and receipts
	// paths.
	Origins []string
	// Sequenced is true for an app whose envelopes carry the sequence
	// ("sy"): its token answers carry the room's sequence start.
	Sequenced bool
	// Parties are the PartyKit parties the drop-in path may address, the
	// app's default party first (the one of /apps/{app}/party/{room} and of
	// /v1/broadcast). Empty means DefaultParty only.
	Parties []string
}

// DefaultParty is PartyKit's default party ("main"), the only one an App
// without Parties accepts.
const DefaultParty = "main"

// parties returns a.Parties, or DefaultParty alone.
func (a App) parties() []string {
	if len(a.Parties) == 0 {
		return []string{DefaultParty}
	}
	return a.Parties
}

// Config is the API's own configuration, built from the gateway config.
type Config struct {
	Env  string
	Apps map[string]App
	// ChannelOf maps an event name to its configured channel.
	ChannelOf func(event string) string
	// MaxBodyBytes bounds every request body (default 256 KiB).
	MaxBodyBytes int64
	// AdminToken, when set, is required on every admin endpoint but
	// /healthz and /readyz.
	AdminToken string
	// MaxBatch bounds POST /v1/broadcasts (default 100).
	MaxBatch int
	// MaxHeaderBytes bounds a request head on connections of
	// GuardListener (default http.DefaultMaxHeaderBytes, 1 MiB; the gateway
	// passes server.maxHeaderBytes).
	MaxHeaderBytes int
	// Receipts limits POST /v1/receipts (zero fields take the defaults of
	// ReceiptLimits).
	Receipts ReceiptLimits
}

// Deps are the collaborators of the API; nil ones disable their endpoints
// (which then answer 404).
type Deps struct {
	Broadcaster Broadcaster
	Resolver    broadcast.StageResolver
	// Gatherer serves /metrics.
	Gatherer prometheus.Gatherer
	// ShadowSummary and ShadowMismatches serve the comparator's reports
	// (shadow.Comparator's Summary and Mismatches), answered as the
	// documents shadow.Summary and shadow.MismatchReport. They are called
	// from request goroutines, concurrently, and must not block on I/O.
	ShadowSummary    func() []shadow.ChannelSummary
	ShadowMismatches func(limit int) []shadow.MismatchExample
	// Tokens mints realtime subscription tokens (see token.go).
	Tokens TokenMinter
	// Channels lists every channel a room can have (the configured ones and
	// broadcast.DefaultChannel), for the token endpoint.
	Channels func() []string
	// StatusPage renders the admin status page at "/".
	StatusPage http.Handler
	// Recorder, when set, is told about every accepted message.
	Recorder func(m *broadcast.Message)
	// Warm, when set, is told before a token is minted for room of app
	// which of the requested channels are in a compared stage (shadow,
	// dual), so that the comparator can open its watches of a sampled room
	// before the browser listens and the first message comes. It is called
	// on the request goroutine and must not block.
	Warm func(app, room string, channels []string)

	// What the token answer tells browsers (token answer version 2), each
	// nil-safe: Topic maps an app's configured channel to its realtime
	// topic (nil: the channel name); Events maps each configured event
	// name to its channel; Sequence returns a sequenced room's epoch and
	// last sequence number (the multicaster's RoomSequence).
	Topic  func(app, channel string) string
	Events func() map[string]string
	// RealtimeURL is an app's Inngest API base URL (its realtime.url), for
	// the browser's subscription; nil leaves it out.
	RealtimeURL func(app string) string
	Sequence    func(app, room string) (epoch string, last uint64)
	// SequenceChannel resolves the channel of a sequenced message a
	// receipt names (the multicaster's SequenceChannel); nil trusts the
	// channel the browser reports.
	SequenceChannel func(app, room, epoch string, seq uint64) (string, bool)
	// Receipts counts validated browser receipts; nil disables
	// POST /v1/receipts (404) and the admin receipts summary.
	Receipts ReceiptSink
	// ReceiptsSummary serves GET /v1/admin/receipts/summary.
	ReceiptsSummary func() []receipts.ChannelSummary
}

// ReceiptSink takes the validated receipts of one report. Record must be
// safe for concurrent use and must not block on I/O.
type ReceiptSink interface {
	Record(app string, rs []receipts.Receipt)
}

// Server holds the handlers of both listeners. Its handlers are safe for
// concurrent use; SetReady, SetLeaving and SetDraining may be called at any
// time.
type Server struct {
	cfg   Config
	deps  Deps
	m     *Metrics
	log   *zap.Logger
	now   func() time.Time
	ready atomic.Bool
	// leaving and draining are the shutdown's two phases (SetLeaving,
	// SetDraining).
	leaving  atomic.Bool
	draining atomic.Bool
	apps     []App // for constant-time key lookup over every app
	// rcptLimits rate-limits receipt reports per grant and room.
	rcptLimits *grantLimiter
	// refusedPrefix starts the path of GuardListener's marker requests.
	refusedPrefix string
	public        http.Handler
	admin         http.Handler
}

// New builds the server. logger nil is a no-op logger; now nil is
// time.Now.
func New(cfg Config, deps Deps, m *Metrics, logger *zap.Logger, now func() time.Time) *Server {
	if logger == nil {
		logger = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 256 << 10
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 100
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	if cfg.ChannelOf == nil {
		cfg.ChannelOf = func(string) string { return broadcast.DefaultChannel }
	}
	cfg.Receipts = cfg.Receipts.withDefaults()
	s := &Server{cfg: cfg, deps: deps, m: m, log: logger, now: now, rcptLimits: newGrantLimiter(cfg.Receipts),
		refusedPrefix: newRefusedPrefix()}
	for _, a := range cfg.Apps {
		s.apps = append(s.apps, a)
	}
	s.public = s.framed("public", s.lifecycle(s.publicMux()))
	s.admin = s.framed("admin", s.adminMux())
	return s
}

// SetReady switches /readyz between 200 (true) and 503 (false).
func (s *Server) SetReady(ready bool) {
	s.ready.Store(ready)
	s.m.ready.Set(b2f(ready))
}

// SetLeaving starts the first phase of a shutdown: every public answer
// carries Connection: close, so that a keep-alive client opens its next
// connection through the load balancer (to another replica, once this one
// is out of its endpoints); requests are still served. Call it with
// SetReady(false). It cannot be undone.
func (s *Server) SetLeaving() { s.leaving.Store(true) }

// SetDraining starts the second phase: every public request that still
// arrives is answered 503 draining with Connection: close, and served no
// further (the gateway calls it when shutdown.delay is over, just before
// the listener stops accepting). Requests already in their handler finish.
// It cannot be undone.
func (s *Server) SetDraining() {
	s.leaving.Store(true)
	s.draining.Store(true)
}

// lifecycle applies the shutdown phases to the public handler h.
func (s *Server) lifecycle(h http.Handler) http.Handler {
	refuse := s.instrument("public", "draining", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, "", "", broadcast.Errorf(broadcast.EDRAINING, "the gateway is shutting down: retry on another connection"))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.leaving.Load() {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close")
		if s.draining.Load() {
			refuse.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Public is the handler of the public listener.
func (s *Server) Public() http.Handler { return s.public }

// Admin is the handler of the admin listener.
func (s *Server) Admin() http.Handler { return s.admin }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ---- errors: the one place that maps them to HTTP ----

func statusOf(code string) int {
	switch code {
	case broadcast.EINVALID:
		return http.StatusBadRequest
	case broadcast.EUNAUTH:
		return http.StatusUnauthorized
	case broadcast.EFORBIDDEN:
		return http.StatusForbidden
	case broadcast.ENOTFOUND, broadcast.EDISABLED:
		return http.StatusNotFound
	case broadcast.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case broadcast.EROOM:
		return http.StatusUnprocessableEntity
	case broadcast.ERATELIMIT:
		return http.StatusTooManyRequests
	case broadcast.EUPSTREAM:
		return http.StatusBadGateway
	case broadcast.EDRAINING:
		return http.StatusServiceUnavailable
	case eHeaderTooLarge:
		return http.StatusRequestHeaderFieldsTooLarge
	case "method_not_allowed":
		return http.StatusMethodNotAllowed
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		Transport string `json:"transport,omitempty"`
		RequestID string `json:"requestId,omitempty"`
	} `json:"error"`
}

// writeError answers err as JSON {"error":{"code","message"}} with the
// status of its code, logs it once (server faults at error level, caller
// faults at debug), and counts it as rejected for app. outcome, when not
// nil, is included for EUPSTREAM answers.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, app, requestID string, err error) {
	code := broadcast.ErrorCode(err)
	status := statusOf(code)
	var be errorBody
	be.Error.Code = code
	be.Error.Message = broadcast.ErrorMessage(err)
	be.Error.RequestID = requestID
	var e *broadcast.Error
	if errors.As(err, &e) {
		be.Error.Transport = string(e.Transport)
		if e.RetryAfterSeconds > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfterSeconds))
		}
	}
	if status >= 500 {
		s.log.Error("request failed", zap.String("route", routeOf(w)), zap.String("app", app),
			zap.String("requestId", requestID), zap.String("code", code), zap.Error(err))
	} else if ce := s.log.Check(zapcore.DebugLevel, "request refused"); ce != nil {
		ce.Write(zap.String("route", routeOf(w)), zap.String("app", app),
			zap.String("requestId", requestID), zap.String("code", code), zap.String("message", be.Error.Message))
	}
	s.m.rejected(s.appLabel(app), code)
	writeJSON(w, status, &be)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func (s *Server) appLabel(app string) string {
	if _, ok := s.cfg.Apps[app]; ok {
		return app
	}
	return "unknown"
}

// ---- authentication ----

// appForKey returns the app whose API key is key, comparing the key's
// SHA-256 against every configured digest in constant time.
func (s *Server) appForKey(key string) (string, bool) {
	if key == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(key))
	found := ""
	for i := range s.apps {
		for _, h := range s.apps[i].KeyHashes {
			if subtle.ConstantTimeCompare(sum[:], h[:]) == 1 {
				found = s.apps[i].Name
			}
		}
	}
	return found, found != ""
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func (s *Server) authApp(r *http.Request) (string, error) {
	key := bearer(r)
	if key == "" {
		return "", broadcast.Errorf(broadcast.EUNAUTH, "missing Authorization: Bearer <app API key>")
	}
	app, ok := s.appForKey(key)
	if !ok {
		return "", broadcast.Errorf(broadcast.EUNAUTH, "unknown API key")
	}
	return app, nil
}

func equalSecret(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// HashKey returns the SHA-256 digest of an API key, as App.KeyHashes holds.
func HashKey(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// ParseKeyHash parses a hex SHA-256 digest.
func ParseKeyHash(h string) ([32]byte, error) {
	var out [32]byte
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return out, errors.New("not a hex SHA-256 digest")
	}
	copy(out[:], b)
	return out, nil
}

// NewRequestID returns a random request id ("sy-" and 24 hex digits).
func NewRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	var out [3 + 24]byte
	copy(out[:], "sy-")
	hex.Encode(out[3:], b[:])
	return string(out[:])
}

// ---- bodies ----

// readBody reads the whole request body up to server.maxBodyBytes; over it
// the error is ETOOLARGE.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return readBodyLimit(w, r, s.cfg.MaxBodyBytes)
}

// readBodyLimit reads the whole request body up to limit bytes; over it
// the error is ETOOLARGE.
func readBodyLimit(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, broadcast.Errorf(broadcast.ETOOLARGE, "request body is %d bytes, over the %d byte limit", r.ContentLength, limit)
	}
	var b []byte
	var err error
	if r.ContentLength >= 0 {
		// A known length within the limit (net/http ends the body there):
		// one buffer of exactly that size.
		b = make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, b)
	} else {
		b, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, broadcast.Errorf(broadcast.ETOOLARGE, "request body is over the %d byte limit", limit)
		}
		return nil, &broadcast.Error{Code: broadcast.EINVALID, Message: "reading the request body failed", Err: err}
	}
	return b, nil
}

// ---- metrics ----

// Metrics are the API's own metrics; safe for concurrent use.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	rejects  *prometheus.CounterVec
	tokens   *prometheus.CounterVec
	tokenErr *prometheus.CounterVec
	rcptErr  *prometheus.CounterVec
	ready    prometheus.Gauge
}

// NewMetrics registers the API metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_http_requests_total", Help: "HTTP requests answered by listener, route and status code.",
		}, []string{"listener", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchyard_http_request_duration_seconds", Help: "Time to answer an HTTP request.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"listener", "route"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_messages_rejected_total", Help: "Requests and batch items refused, answering-transport failures included, by app and error code.",
		}, []string{"app", "reason"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_tokens_minted_total", Help: "Realtime subscription tokens handed out, by app and mode (server, grant).",
		}, []string{"app", "mode"}),
		tokenErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_token_errors_total", Help: "Token requests refused or failed, by app and reason.",
		}, []string{"app", "reason"}),
		rcptErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_browser_receipts_refused_total", Help: "Browser receipt reports (POST /v1/receipts) refused, by app and reason.",
		}, []string{"app", "reason"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_ready", Help: "1 when /readyz answers 200.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.rejects, m.tokens, m.tokenErr, m.rcptErr, m.ready)
	}
	return m
}

func (m *Metrics) rejected(app, code string) { m.rejects.WithLabelValues(app, code).Inc() }

// statusRecorder captures the status code for the metrics middleware and
// carries the route name for writeError's logs.
// recorders pools the statusRecorder of each request.
var recorders = sync.Pool{New: func() any { return new(statusRecorder) }}

type statusRecorder struct {
	http.ResponseWriter
	status int
	route  string
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// routeOf returns the route name instrument gave the request answered
// through w, or "other".
func routeOf(w http.ResponseWriter) string {
	if rec, ok := w.(*statusRecorder); ok {
		return rec.route
	}
	return "other"
}

// statusLabel is the code label of status, without an allocation for the
// common codes.
func statusLabel(status int) string {
	switch status {
	case http.StatusOK:
		return "200"
	case http.StatusAccepted:
		return "202"
	case http.StatusBadRequest:
		return "400"
	case http.StatusUnauthorized:
		return "401"
	case http.StatusNotFound:
		return "404"
	case http.StatusTooManyRequests:
		return "429"
	case http.StatusBadGateway:
		return "502"
	case http.StatusServiceUnavailable:
		return "503"
	}
	return strconv.Itoa(status)
}

// instrument wraps h with the request counter and histogram, labelled by
// the fixed route name (never the raw path).
func (s *Server) instrument(listener, route string, h http.HandlerFunc) http.Handler {
	dur := s.m.duration.WithLabelValues(listener, route)
	var ok200 atomic.Value // prometheus.Counter of status 200, made on first use
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// The route travels in the recorder rather than in a context value:
		// r.WithContext would copy the request on every call. Recorders
		// are pooled: net/http forbids using w once the handler returned.
		rec := recorders.Get().(*statusRecorder)
		*rec = statusRecorder{ResponseWriter: w, route: route}
		h(rec, r)
		status := rec.status
		*rec = statusRecorder{}
		recorders.Put(rec)
		if status == 0 {
			status = http.StatusOK
		}
		dur.Observe(time.Since(start).Seconds())
		if status != http.StatusOK {
			s.m.requests.WithLabelValues(listener, route, statusLabel(status)).Inc()
			return
		}
		c, _ := ok200.Load().(prometheus.Counter)
		if c == nil {
			c = s.m.requests.WithLabelValues(listener, route, "200")
			ok200.Store(c)
		}
		c.Inc()
	})
}
