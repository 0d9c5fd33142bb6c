package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/switchyard/switchyard/broadcast"
)

// TokenMinter mints realtime subscription tokens. Mint covers the given
// configured channels of one room of one app; it returns one token per
// realtime channel those map to (one, unless the app's channel template
// names {channel}). It must be safe for concurrent use.
type TokenMinter interface {
	Mint(ctx context.Context, app, room string, channels []string) ([]broadcast.Token, error)
}

// TokenMinterFunc adapts a function to TokenMinter.
type TokenMinterFunc func(ctx context.Context, app, room string, channels []string) ([]broadcast.Token, error)

// Mint calls f.
func (f TokenMinterFunc) Mint(ctx context.Context, app, room string, channels []string) ([]broadcast.Token, error) {
	return f(ctx, app, room, channels)
}

// Grant limits. A grant may live at most MaxGrantLife; clocks may differ by
// GrantSkew. A grant longer than MaxGrantBytes is refused (401
// grant_malformed, "longer than 8192 bytes") before any of it is decoded:
// a real grant (a few rooms) is well under 1 KiB, and the cap bounds the
// base64 and JSON work an unauthenticated caller can ask for.
const (
	MaxGrantLife  = 15 * time.Minute
	GrantSkew     = 30 * time.Second
	MaxGrantBytes = 8 << 10
)

// GrantClaims are the claims of a room grant: a short-lived HS256 JWT an
// app signs with its grant secret after checking that the user may watch
// the rooms.
type GrantClaims struct {
	App   string   `json:"app"`
	Rooms []string `json:"rooms"`
	Exp   int64    `json:"exp"`
	Iat   int64    `json:"iat"`
	Nbf   int64    `json:"nbf,omitempty"`
}

type tokenRequest struct {
	Room   *string  `json:"room"`
	Topics []string `json:"topics"`
}

// handleTokenServer is POST /v1/realtime/token: the app's server asks, with
// its API key, after checking that the user owns the room.
func (s *Server) handleTokenServer(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store") // the answer is a credential
	app, err := s.authApp(r)
	if err != nil {
		s.tokenError(w, r, "", "unauthorized", err)
		return
	}
	b, err := s.readBody(w, r)
	if err != nil {
		s.tokenError(w, r, app, "invalid_request", err)
		return
	}
	var req tokenRequest
	if err := decodeStrict(b, &req, ""); err != nil {
		s.tokenError(w, r, app, "invalid_request", err)
		return
	}
	if req.Room == nil {
		s.tokenError(w, r, app, "invalid_request", broadcast.Errorf(broadcast.EINVALID, "room: required"))
		return
	}
	s.mint(w, r, app, *req.Room, req.Topics, "server")
}

// handleTokenGrant is GET /v1/realtime/token?app=&room= with a room grant:
// the browser asks directly.
func (s *Server) handleTokenGrant(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	q := r.URL.Query()
	app, room := q.Get("app"), q.Get("room")
	a, ok := s.cfg.Apps[app]
	if !ok {
		s.tokenError(w, r, "", "unknown_app", broadcast.Errorf(broadcast.ENOTFOUND, "app: unknown app %q", app))
		return
	}
	if !s.cors(w, r, a) {
		s.tokenError(w, r, app, "origin", broadcast.Errorf(broadcast.EFORBIDDEN, "origin %q is not allowed for app %q", r.Header.Get("Origin"), app))
		return
	}
	if reason, err := s.checkGrant(bearer(r), a, room); err != nil {
		s.tokenError(w, r, app, reason, err)
		return
	}
	s.mint(w, r, app, room, q["topic"], "grant")
}

// checkGrant verifies grant, a room grant presented for room of app a, at
// the server's clock: signature, times, life, app and room. It returns the
// refusal's reason (a switchyard_token_errors_total reason) and its
// client-safe error, or "" and nil when the grant covers the room.
func (s *Server) checkGrant(grant string, a App, room string) (string, error) {
	if len(a.GrantSecret) == 0 {
		return "grants_disabled", broadcast.Errorf(broadcast.EFORBIDDEN, "app %q accepts no room grants", a.Name)
	}
	if grant == "" {
		return "unauthorized", broadcast.Errorf(broadcast.EUNAUTH, "missing Authorization: Bearer <room grant>")
	}
	now := s.now()
	c, err := verifyGrant(grant, a.GrantSecret, now)
	if err != nil {
		return grantReason(err), &broadcast.Error{Code: broadcast.EUNAUTH, Message: "room grant refused: " + grantMessage(err), Err: err}
	}
	if c.Iat == 0 || c.Exp-c.Iat > int64(MaxGrantLife/time.Second) || time.Unix(c.Exp, 0).After(now.Add(MaxGrantLife+GrantSkew)) {
		return "grant_too_long", broadcast.Errorf(broadcast.EUNAUTH, "room grant refused: iat required and a grant may live at most %s", MaxGrantLife)
	}
	if c.App != a.Name {
		return "wrong_app", broadcast.Errorf(broadcast.EFORBIDDEN, "room grant is for another app")
	}
	if !slices.Contains(c.Rooms, room) {
		return "wrong_room", broadcast.Errorf(broadcast.EFORBIDDEN, "room grant does not cover room %q", room)
	}
	return "", nil
}

// Grant refusals. verifyGrant's errors wrap exactly one of the first five
// (errGrantTooLarge wraps errGrantMalformed) and the library's error.
var (
	errGrantMalformed   = errors.New("malformed")
	errGrantAlgorithm   = errors.New("algorithm must be HS256")
	errGrantSignature   = errors.New("bad signature")
	errGrantExpired     = errors.New("expired")
	errGrantNotYetValid = errors.New("not valid yet")
	errGrantTooLarge    = fmt.Errorf("%w: longer than %d bytes", errGrantMalformed, MaxGrantBytes)
)

// verifyGrant checks a room grant against the app's secret at now, and
// returns its claims. It refuses, before decoding anything, a grant over
// MaxGrantBytes; then a token that is not a compact JWT with JSON header
// and claims, or whose header has a typ other than JWT (errGrantMalformed), an alg other than exactly HS256, "none"
// and a missing alg included (errGrantAlgorithm), a signature that does not
// match the secret (errGrantSignature), a missing exp or one at or before
// now-GrantSkew (errGrantExpired), and an nbf or iat after now+GrantSkew
// (errGrantNotYetValid). The claims it returns are only meaningful when the
// error is nil.
func verifyGrant(grant string, secret []byte, now time.Time) (GrantClaims, error) {
	if len(grant) > MaxGrantBytes {
		return GrantClaims{}, errGrantTooLarge
	}
	var c grantJWT
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(GrantSkew),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	tok, err := p.ParseWithClaims(grant, &c, func(*jwt.Token) (any, error) {
		if len(secret) == 0 {
			return nil, errors.New("empty grant secret")
		}
		return secret, nil
	})
	if err != nil {
		return GrantClaims{}, fmt.Errorf("%w: %w", classifyGrant(tok, err), err)
	}
	if !typJWT(tok) {
		return GrantClaims{}, fmt.Errorf("%w: typ is not JWT", errGrantMalformed)
	}
	return c.GrantClaims, nil
}

// typJWT reports whether tok's header has no typ or typ JWT (in any case).
func typJWT(tok *jwt.Token) bool {
	typ, ok := tok.Header["typ"]
	if !ok {
		return true
	}
	s, ok := typ.(string)
	return ok && strings.EqualFold(s, "JWT")
}

// classifyGrant maps an error of the JWT parser to one grant refusal. An
// undecodable token, or one typed other than JWT, is malformed whatever its
// alg says; otherwise any alg
// but HS256 is an algorithm refusal, whichever check of the library caught
// it (an unknown alg is "unverifiable", a known one outside the allowed set
// "signature invalid"). Expiry is checked before not-before, as the claims
// may fail both.
func classifyGrant(tok *jwt.Token, err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errGrantMalformed
	case tok == nil, !typJWT(tok):
		return errGrantMalformed
	}
	if alg, _ := tok.Header["alg"].(string); alg != jwt.SigningMethodHS256.Alg() {
		return errGrantAlgorithm
	}
	switch {
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return errGrantSignature
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return errGrantExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errGrantNotYetValid
	}
	return errGrantMalformed
}

// grantJWT adapts GrantClaims to the JWT library: its integer times, 0
// meaning absent, become the registered claims the parser validates.
type grantJWT struct{ GrantClaims }

func numericDate(sec int64) *jwt.NumericDate {
	if sec == 0 {
		return nil
	}
	return jwt.NewNumericDate(time.Unix(sec, 0))
}

// GetExpirationTime returns exp (nil when 0: the parser then refuses the
// grant as expired, exp being required).
func (g *grantJWT) GetExpirationTime() (*jwt.NumericDate, error) { return numericDate(g.Exp), nil }

// GetIssuedAt returns iat (nil when 0).
func (g *grantJWT) GetIssuedAt() (*jwt.NumericDate, error) { return numericDate(g.Iat), nil }

// GetNotBefore returns nbf (nil when 0).
func (g *grantJWT) GetNotBefore() (*jwt.NumericDate, error) { return numericDate(g.Nbf), nil }

// GetIssuer returns "": grants carry no iss.
func (g *grantJWT) GetIssuer() (string, error) { return "", nil }

// GetSubject returns "": grants carry no sub.
func (g *grantJWT) GetSubject() (string, error) { return "", nil }

// GetAudience returns nil: grants carry no aud.
func (g *grantJWT) GetAudience() (jwt.ClaimStrings, error) { return nil, nil }

// grantReason is the switchyard_token_errors_total reason of a refusal of
// verifyGrant.
func grantReason(err error) string {
	switch {
	case errors.Is(err, errGrantExpired):
		return "grant_expired"
	case errors.Is(err, errGrantNotYetValid):
		return "grant_not_yet_valid"
	case errors.Is(err, errGrantAlgorithm):
		return "grant_algorithm"
	case errors.Is(err, errGrantSignature):
		return "grant_signature"
	}
	return "grant_malformed"
}

// grantMessage is the client-safe text of a refusal of verifyGrant.
func grantMessage(err error) string {
	for _, e := range []error{errGrantTooLarge, errGrantExpired, errGrantNotYetValid, errGrantAlgorithm, errGrantSignature} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return errGrantMalformed.Error()
}

func (s *Server) handleTokenPreflight(w http.ResponseWriter, r *http.Request) {
	s.preflight(w, r, "GET", "Authorization")
}

// preflight answers a CORS preflight for the app named by ?app=: 204 with
// the allowed methods and request headers when the Origin is one of the
// app's, else 403.
func (s *Server) preflight(w http.ResponseWriter, r *http.Request, methods, headers string) {
	a, ok := s.cfg.Apps[r.URL.Query().Get("app")]
	if !ok || !s.cors(w, r, a) || r.Header.Get("Origin") == "" {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	w.Header().Set("Access-Control-Allow-Methods", methods)
	w.Header().Set("Access-Control-Allow-Headers", headers)
	w.Header().Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// cors sets the CORS answer headers for an allowed Origin and reports
// whether the request may go on: no Origin (not a browser cross-origin
// call) or an Origin the app lists.
func (s *Server) cors(w http.ResponseWriter, r *http.Request, a App) bool {
	w.Header().Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if !slices.Contains(a.Origins, origin) {
		return false
	}
	w.Header().Set("Access-Control-Allow-Origin", origin)
	return true
}

// TokenAnswerVersion is the version of the token answer: 2 adds, to the
// Inngest client's {key, channel, topics, expiresAt}, what the browser
// client needs to follow the stages (docs/api.md, "Realtime tokens").
const TokenAnswerVersion = 2

// TokenAnswer is the document both token endpoints answer. The members of
// Token are at the top level when the room's topics are on one realtime
// channel (the common case, so the Inngest client takes the answer as is);
// otherwise Tokens lists one per realtime channel.
type TokenAnswer struct {
	*broadcast.Token
	Tokens []broadcast.Token `json:"tokens,omitempty"`
	// Version is TokenAnswerVersion.
	Version int    `json:"version"`
	App     string `json:"app"`
	Room    string `json:"room"`
	// ServerTime is the gateway's clock when it answered, Unix
	// milliseconds: browsers estimate their clock offset from it to report
	// receive latencies.
	ServerTime int64 `json:"serverTime"`
	// KillSwitch is true when the kill switch sends every channel of the
	// room to PartyKit.
	KillSwitch bool `json:"killSwitch"`
	// Channels lists every channel a message of the room can have, with
	// its stage for this room now, its realtime topic and channel.
	Channels []ChannelRoute `json:"channels"`
	// Events maps each configured event name to its channel; other events
	// are in broadcast.DefaultChannel.
	Events map[string]string `json:"events"`
	// APIBaseURL is the Inngest API base the browser's realtime
	// subscription connects to (the Inngest client's apiBaseUrl option),
	// when known.
	APIBaseURL string `json:"apiBaseUrl,omitempty"`
	// Sequence is set for sequenced apps: where the room's sequence stands.
	Sequence *SequenceStart `json:"sequence,omitempty"`
}

// ChannelRoute is one channel of a room as the token answer shows it.
type ChannelRoute struct {
	Name            string          `json:"name"`
	Stage           broadcast.Stage `json:"stage"`
	Topic           string          `json:"topic"`
	RealtimeChannel string          `json:"realtimeChannel"`
	// Subscribed is true when the answer's token covers the topic.
	Subscribed bool `json:"subscribed"`
}

// SequenceStart is a sequenced room's epoch and the last sequence number
// assigned in it when the token was answered: a browser that subscribes
// now expects Last+1 next.
type SequenceStart struct {
	Epoch string `json:"epoch"`
	Last  uint64 `json:"last"`
}

// mint decides which channels of the room are past legacy and answers the
// token, or 404 realtime_disabled when none is. For a sequenced app the
// token covers every channel's topic as soon as one channel is past
// legacy, so that a later stage change of another channel needs no new
// subscription.
func (s *Server) mint(w http.ResponseWriter, r *http.Request, app, room string, topics []string, mode string) {
	if err := broadcast.ValidateRoom(room); err != nil {
		s.tokenError(w, r, app, "invalid_room", err)
		return
	}
	if s.deps.Tokens == nil || s.deps.Resolver == nil || s.deps.Channels == nil {
		s.tokenError(w, r, app, "realtime_disabled", broadcast.Errorf(broadcast.EDISABLED, "realtime is not configured"))
		return
	}
	all := s.deps.Channels()
	for _, t := range topics {
		if !slices.Contains(all, t) {
			s.tokenError(w, r, app, "invalid_request", broadcast.Errorf(broadcast.EINVALID, "topics: unknown topic %q", t))
			return
		}
	}
	sequenced := s.cfg.Apps[app].Sequenced
	ans := TokenAnswer{Version: TokenAnswerVersion, App: app, Room: room, Events: map[string]string{}}
	var live, wanted, compared []string
	for _, ch := range all {
		route := s.deps.Resolver.Resolve(broadcast.RouteQuery{App: app, Room: room, Channel: ch})
		ans.KillSwitch = ans.KillSwitch || route.KillSwitch
		ans.Channels = append(ans.Channels, ChannelRoute{Name: ch, Stage: route.Stage, Topic: ch})
		if len(topics) > 0 && !slices.Contains(topics, ch) {
			continue
		}
		wanted = append(wanted, ch)
		if route.Stage != broadcast.StageLegacy {
			live = append(live, ch)
		}
		if route.Stage.Compared() {
			compared = append(compared, ch)
		}
	}
	if len(live) == 0 {
		s.tokenError(w, r, app, "realtime_disabled", broadcast.Errorf(broadcast.EDISABLED, "every channel of room %q is on PartyKit (legacy) for app %q: keep using PartyKit", room, app))
		return
	}
	if len(compared) > 0 && s.deps.Warm != nil {
		// A browser asks for a token before it listens: the comparator's
		// watches open while the token is minted.
		s.deps.Warm(app, room, compared)
	}
	if sequenced {
		live = wanted
	}
	toks, err := s.deps.Tokens.Mint(r.Context(), app, room, live)
	if err != nil {
		s.tokenError(w, r, app, "upstream", err)
		return
	}
	for i := range ans.Channels {
		c := &ans.Channels[i]
		if s.deps.Topic != nil {
			c.Topic = s.deps.Topic(app, c.Name)
		}
		c.Subscribed = slices.Contains(live, c.Name)
		for _, t := range toks {
			if slices.Contains(t.Topics, c.Topic) {
				c.RealtimeChannel = t.Channel
			}
		}
	}
	if s.deps.Events != nil {
		ans.Events = s.deps.Events()
	}
	if s.deps.RealtimeURL != nil {
		ans.APIBaseURL = s.deps.RealtimeURL(app)
	}
	if sequenced && s.deps.Sequence != nil {
		epoch, last := s.deps.Sequence(app, room)
		ans.Sequence = &SequenceStart{Epoch: epoch, Last: last}
	}
	s.m.tokens.WithLabelValues(app, mode).Inc()
	if len(toks) == 1 {
		ans.Token = &toks[0]
	} else {
		ans.Tokens = toks
	}
	ans.ServerTime = s.now().UnixMilli()
	writeJSON(w, http.StatusOK, &ans)
}

func (s *Server) tokenError(w http.ResponseWriter, r *http.Request, app, reason string, err error) {
	s.m.tokenErr.WithLabelValues(s.appLabel(app), reason).Inc()
	s.writeError(w, r, app, "", err)
}

// TokenCache keeps minted tokens per (app, room, channels) for a short
// time well inside their 60 s life, so a burst of browsers in one room
// costs one upstream call: concurrent misses of one key share a single
// in-flight mint. It is safe for concurrent use and bounded. Set the fields
// before Wrap; do not change them afterwards.
type TokenCache struct {
	TTL     time.Duration // how long a token is reused (default 20s)
	Margin  time.Duration // never hand out a token closer than this to expiry (default 30s)
	MaxSize int           // entries kept (default 10,000)
	Now     func() time.Time

	mu     sync.Mutex
	m      map[string]cachedToken
	flight singleflight.Group
}

type cachedToken struct {
	tok   broadcast.Token
	until time.Time
}

// Wrap returns a TokenMinter that serves from the cache and calls next on a
// miss. The upstream call of a miss is shared by every caller of the same
// key that arrives while it runs; it is not cancelled when one of them
// gives up (next's own deadline bounds it), and a caller whose ctx ends
// stops waiting with ctx's error.
func (c *TokenCache) Wrap(next TokenMinter, logger *zap.Logger) TokenMinter {
	if c.TTL == 0 {
		c.TTL = 20 * time.Second
	}
	if c.Margin == 0 {
		c.Margin = 30 * time.Second
	}
	if c.MaxSize == 0 {
		c.MaxSize = 10000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return TokenMinterFunc(func(ctx context.Context, app, room string, channels []string) ([]broadcast.Token, error) {
		key := app + "\x00" + room + "\x00" + strings.Join(channels, ",")
		if tok, ok := c.get(key); ok {
			return []broadcast.Token{tok}, nil
		}
		ch := c.flight.DoChan(key, func() (any, error) {
			// A flight that ended between the lookup above and DoChan
			// has filled the cache: look again before calling upstream.
			if tok, ok := c.get(key); ok {
				return []broadcast.Token{tok}, nil
			}
			return c.fill(context.WithoutCancel(ctx), next, key, app, room, channels)
		})
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case r := <-ch:
			toks, _ := r.Val.([]broadcast.Token)
			return toks, r.Err
		}
	})
}

// get returns the cached token of key while it is fresh.
func (c *TokenCache) get(key string) (broadcast.Token, bool) {
	now := c.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok && now.Before(e.until) {
		return e.tok, true
	}
	return broadcast.Token{}, false
}

// fill mints through next and caches a single-token answer.
func (c *TokenCache) fill(ctx context.Context, next TokenMinter, key, app, room string, channels []string) ([]broadcast.Token, error) {
	now := c.Now()
	toks, err := next.Mint(ctx, app, room, channels)
	if err != nil || len(toks) != 1 {
		return toks, err
	}
	until := now.Add(c.TTL)
	if lim := toks[0].ExpiresAt.Add(-c.Margin); lim.Before(until) {
		until = lim
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]cachedToken)
	}
	if len(c.m) >= c.MaxSize {
		for k, e := range c.m { // drop expired entries, then anything
			if !now.Before(e.until) || len(c.m) >= c.MaxSize {
				delete(c.m, k)
			}
			if len(c.m) < c.MaxSize/2 {
				break
			}
		}
	}
	c.m[key] = cachedToken{tok: toks[0], until: until}
	c.mu.Unlock()
	return toks, nil
}
