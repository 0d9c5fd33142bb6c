package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard/switchyard/broadcast"
)

const (
	grantSecret      = "grant-secret-ai-hero-0123456789abcdef"
	otherGrantSecret = "grant-secret-other-0123456789abcdefgh"
	allowedOrigin    = "https://www.aihero.dev"
	adminToken       = "admin-token-0123456789"
)

// tokenNow is the fixed clock of the token tests.
var tokenNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// tokenChannels are the channels a room can have in these tests.
var tokenChannels = []string{"video-ready", "ai-stream", broadcast.DefaultChannel}

// tokenStages is the stage table of the fake resolver: room "legacy-room"
// has every channel at legacy, room "mixed" only ai-stream past legacy,
// every other room is at shadow.
func tokenStages(q broadcast.RouteQuery) broadcast.Route {
	st := broadcast.StageShadow
	switch {
	case q.Room == "legacy-room":
		st = broadcast.StageLegacy
	case q.Room == "mixed" && q.Channel != "ai-stream":
		st = broadcast.StageLegacy
	}
	return broadcast.Route{Stage: st, Channel: q.Channel, FlagKey: "realtime-" + q.Channel}
}

// fakeMinter records Mint calls and answers one token per call (or err).
type fakeMinter struct {
	mu    sync.Mutex
	calls []mintCall
	err   error
	multi bool // answer two tokens
}

type mintCall struct {
	app, room string
	channels  []string
}

func (f *fakeMinter) Mint(_ context.Context, app, room string, channels []string) ([]broadcast.Token, error) {
	f.mu.Lock()
	f.calls = append(f.calls, mintCall{app, room, slices.Clone(channels)})
	err := f.err
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	t := broadcast.Token{Key: "rt-jwt-" + app + "-" + room, Channel: room, Topics: slices.Clone(channels), ExpiresAt: tokenNow.Add(60 * time.Second)}
	if f.multi {
		t2 := t
		t2.Channel = room + "-2"
		return []broadcast.Token{t, t2}, nil
	}
	return []broadcast.Token{t}, nil
}

func (f *fakeMinter) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeMinter) seen() []mintCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

var _ TokenMinter = (*fakeMinter)(nil)

// tokenFixture is an API server with two apps set up for the token paths.
type tokenFixture struct {
	srv    *Server
	pub    *httptest.Server
	minter *fakeMinter
}

func newTokenFixture(t *testing.T, mod func(*Config, *Deps)) *tokenFixture {
	t.Helper()
	fm := &fakeMinter{}
	cfg := Config{
		Env: "test",
		Apps: map[string]App{
			"ai-hero": {Name: "ai-hero", KeyHashes: [][32]byte{HashKey(testKey)}, GrantSecret: []byte(grantSecret),
				Origins: []string{allowedOrigin, "http://localhost:3000"}},
			"other":   {Name: "other", KeyHashes: [][32]byte{HashKey(otherKey)}, GrantSecret: []byte(otherGrantSecret)},
			"nogrant": {Name: "nogrant", KeyHashes: [][32]byte{HashKey("key-nogrant-0123456789")}},
		},
		MaxBodyBytes: 1024,
		AdminToken:   adminToken,
	}
	deps := Deps{
		Resolver: resolverFunc(tokenStages),
		Tokens:   fm,
		Channels: func() []string { return tokenChannels },
	}
	if mod != nil {
		mod(&cfg, &deps)
	}
	s := New(cfg, deps, NewMetrics(nil), nil, func() time.Time { return tokenNow })
	s.SetReady(true)
	pub := httptest.NewServer(s.Public())
	t.Cleanup(pub.Close)
	return &tokenFixture{srv: s, pub: pub, minter: fm}
}

// tokenErrors is the value of switchyard_token_errors_total{app,reason}.
func (f *tokenFixture) tokenErrors(app, reason string) float64 {
	return testutil.ToFloat64(f.srv.m.tokenErr.WithLabelValues(app, reason))
}

// grant returns a grant for app covering rooms, issued at iat and living
// life, signed HS256 with secret.
func grant(tb testing.TB, secret, app string, rooms []string, iat time.Time, life time.Duration) string {
	tb.Helper()
	return signClaims(tb, secret, GrantClaims{App: app, Rooms: rooms, Iat: iat.Unix(), Exp: iat.Add(life).Unix()})
}

// signClaims signs claims (anything that encodes to a JSON object) HS256
// with secret, through the JWT library as an app's signer would.
func signClaims(tb testing.TB, secret string, claims any) string {
	tb.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	var mc jwt.MapClaims
	if err := json.Unmarshal(b, &mc); err != nil {
		tb.Fatal(err)
	}
	g, err := jwt.NewWithClaims(jwt.SigningMethodHS256, mc).SignedString([]byte(secret))
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// rawJWT builds a compact JWT with any header, signed by sign (which gets
// the signing input); sign nil leaves the signature empty.
func rawJWT(tb testing.TB, header string, claims any, sign func(string) []byte) string {
	tb.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString(payload)
	var sig []byte
	if sign != nil {
		sig = sign(signing)
	}
	return signing + "." + enc.EncodeToString(sig)
}

func hs512(secret string) func(string) []byte {
	return func(s string) []byte {
		m := hmac.New(sha512.New, []byte(secret))
		m.Write([]byte(s))
		return m.Sum(nil)
	}
}

// hs256Sig is an HS256 signature with secret, put under a header that names
// another algorithm (the key-confusion attack).
func hs256Sig(tb testing.TB, secret string) func(string) []byte {
	tb.Helper()
	return func(s string) []byte {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(s))
		return m.Sum(nil)
	}
}

func grantURL(base, app, room string, topics ...string) string {
	q := url.Values{"app": {app}, "room": {room}}
	for _, t := range topics {
		q.Add("topic", t)
	}
	return base + "/v1/realtime/token?" + q.Encode()
}

func TestTokenGrantRefused(t *testing.T) {
	now := tokenNow
	claims := func(mod func(c *GrantClaims)) GrantClaims {
		c := GrantClaims{App: "ai-hero", Rooms: []string{"video-1"}, Iat: now.Unix(), Exp: now.Add(10 * time.Minute).Unix()}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	valid := signClaims(t, grantSecret, claims(nil))
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"app":"ai-hero","rooms":["video-1","video-2"],"iat":`+fmt.Sprint(now.Unix())+`,"exp":`+fmt.Sprint(now.Add(10*time.Minute).Unix())+`}`)) + "." + parts[2]
	tests := []struct {
		name, app, room, auth string
		hdr                   []string
		status                int
		code, msg, reason     string
	}{
		{"no grant", "ai-hero", "video-1", "", nil, 401, "unauthorized", "missing Authorization: Bearer <room grant>", "unauthorized"},
		{"basic auth", "ai-hero", "video-1", "Basic " + valid, nil, 401, "unauthorized", "missing Authorization", "unauthorized"},
		{"not a jwt", "ai-hero", "video-1", "Bearer not-a-jwt", nil, 401, "unauthorized", "room grant refused: malformed", "grant_malformed"},
		{"the app API key as grant", "ai-hero", "video-1", "Bearer " + testKey, nil, 401, "unauthorized", "room grant refused: malformed", "grant_malformed"},
		{"longer than MaxGrantBytes", "ai-hero", "video-1", "Bearer " + valid + "." + strings.Repeat("A", MaxGrantBytes), nil, 401, "unauthorized", "room grant refused: malformed: longer than 8192 bytes", "grant_malformed"},
		{"expired", "ai-hero", "video-1", "Bearer " + grant(t, grantSecret, "ai-hero", []string{"video-1"}, now.Add(-11*time.Minute), 10*time.Minute), nil, 401, "unauthorized", "room grant refused: expired", "grant_expired"},
		{"expired just beyond skew", "ai-hero", "video-1", "Bearer " + signClaims(t, grantSecret, claims(func(c *GrantClaims) {
			c.Iat, c.Exp = now.Add(-5*time.Minute).Unix(), now.Add(-GrantSkew-time.Second).Unix()
		})), nil, 401, "unauthorized", "expired", "grant_expired"},
		{"no exp", "ai-hero", "video-1", "Bearer " + signClaims(t, grantSecret, map[string]any{"app": "ai-hero", "rooms": []string{"video-1"}, "iat": now.Unix()}), nil, 401, "unauthorized", "expired", "grant_expired"},
		{"iat in the future beyond skew", "ai-hero", "video-1", "Bearer " + grant(t, grantSecret, "ai-hero", []string{"video-1"}, now.Add(2*time.Minute), 5*time.Minute), nil, 401, "unauthorized", "room grant refused: not valid yet", "grant_not_yet_valid"},
		{"nbf in the future beyond skew", "ai-hero", "video-1", "Bearer " + signClaims(t, grantSecret, claims(func(c *GrantClaims) { c.Nbf = now.Add(GrantSkew + 5*time.Second).Unix() })), nil, 401, "unauthorized", "not valid yet", "grant_not_yet_valid"},
		{"signed with another secret", "ai-hero", "video-1", "Bearer " + signClaims(t, otherGrantSecret, claims(nil)), nil, 401, "unauthorized", "room grant refused: bad signature", "grant_signature"},
		{"tampered payload", "ai-hero", "video-2", "Bearer " + tampered, nil, 401, "unauthorized", "bad signature", "grant_signature"},
		{"alg none", "ai-hero", "video-1", "Bearer " + rawJWT(t, `{"alg":"none","typ":"JWT"}`, claims(nil), nil), nil, 401, "unauthorized", "room grant refused: algorithm must be HS256", "grant_algorithm"},
		{"alg None", "ai-hero", "video-1", "Bearer " + rawJWT(t, `{"alg":"None"}`, claims(nil), nil), nil, 401, "unauthorized", "algorithm must be HS256", "grant_algorithm"},
		{"alg HS512 with the right secret", "ai-hero", "video-1", "Bearer " + rawJWT(t, `{"alg":"HS512","typ":"JWT"}`, claims(nil), hs512(grantSecret)), nil, 401, "unauthorized", "algorithm must be HS256", "grant_algorithm"},
		{"alg RS256 with an HMAC signature", "ai-hero", "video-1", "Bearer " + rawJWT(t, `{"alg":"RS256","typ":"JWT"}`, claims(nil), hs256Sig(t, grantSecret)), nil, 401, "unauthorized", "algorithm must be HS256", "grant_algorithm"},
		{"alg lower case", "ai-hero", "video-1", "Bearer " + rawJWT(t, `{"alg":"hs256","typ":"JWT"}`, claims(nil), hs256Sig(t, grantSecret)), nil, 401, "unauthorized", "algorithm must be HS256", "grant_algorithm"},
		{"alg missing", "ai-hero", "video-1", "Bearer " + rawJWT(t, `{"typ":"JWT"}`, claims(nil), hs256Sig(t, grantSecret)), nil, 401, "unauthorized", "algorithm must be HS256", "grant_algorithm"},
		{"lives longer than 15 min", "ai-hero", "video-1", "Bearer " + grant(t, grantSecret, "ai-hero", []string{"video-1"}, now, MaxGrantLife+time.Second), nil, 401, "unauthorized", "a grant may live at most 15m0s", "grant_too_long"},
		{"backdated iat, far exp", "ai-hero", "video-1", "Bearer " + grant(t, grantSecret, "ai-hero", []string{"video-1"}, now.Add(-time.Hour), 2*time.Hour), nil, 401, "unauthorized", "at most 15m0s", "grant_too_long"},
		{"no iat", "ai-hero", "video-1", "Bearer " + signClaims(t, grantSecret, claims(func(c *GrantClaims) { c.Iat = 0 })), nil, 401, "unauthorized", "iat required", "grant_too_long"},
		{"another room", "ai-hero", "video-2", "Bearer " + valid, nil, 403, "forbidden", `room grant does not cover room "video-2"`, "wrong_room"},
		{"room prefix is not the room", "ai-hero", "video-10", "Bearer " + valid, nil, 403, "forbidden", "does not cover room", "wrong_room"},
		{"grant names another app", "ai-hero", "video-1", "Bearer " + signClaims(t, grantSecret, claims(func(c *GrantClaims) { c.App = "other" })), nil, 403, "forbidden", "room grant is for another app", "wrong_app"},
		{"grant without app", "ai-hero", "video-1", "Bearer " + signClaims(t, grantSecret, claims(func(c *GrantClaims) { c.App = "" })), nil, 403, "forbidden", "another app", "wrong_app"},
		{"this app's grant at another app", "other", "video-1", "Bearer " + valid, nil, 401, "unauthorized", "bad signature", "grant_signature"},
		{"other app's grant here", "ai-hero", "video-1", "Bearer " + grant(t, otherGrantSecret, "other", []string{"video-1"}, now, time.Minute), nil, 401, "unauthorized", "bad signature", "grant_signature"},
		{"unknown app", "nope", "video-1", "Bearer " + valid, nil, 404, "not_found", `app: unknown app "nope"`, "unknown_app"},
		{"app takes no grants", "nogrant", "video-1", "Bearer " + valid, nil, 403, "forbidden", `app "nogrant" accepts no room grants`, "grants_disabled"},
		{"disallowed origin", "ai-hero", "video-1", "Bearer " + valid, []string{"Origin", "https://evil.example"}, 403, "forbidden", `origin "https://evil.example" is not allowed for app "ai-hero"`, "origin"},
		{"origin of another scheme", "ai-hero", "video-1", "Bearer " + valid, []string{"Origin", "http://www.aihero.dev"}, 403, "forbidden", "is not allowed", "origin"},
		{"legacy room", "ai-hero", "legacy-room", "Bearer " + grant(t, grantSecret, "ai-hero", []string{"legacy-room"}, now, time.Minute), nil, 404, "realtime_disabled", `every channel of room "legacy-room" is on PartyKit (legacy) for app "ai-hero"`, "realtime_disabled"},
		{"invalid room", "ai-hero", "a b", "Bearer " + grant(t, grantSecret, "ai-hero", []string{"a b"}, now, time.Minute), nil, 422, "invalid_room", "whitespace", "invalid_room"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTokenFixture(t, nil)
			a := do(t, "GET", grantURL(f.pub.URL, tt.app, tt.room), tt.auth, "", tt.hdr...)
			if a.status != tt.status {
				t.Fatalf("status = %d, want %d (%s)", a.status, tt.status, a.body)
			}
			code, msg := errorOf(t, a)
			if code != tt.code || !strings.Contains(msg, tt.msg) {
				t.Fatalf("error = %s %q, want %s containing %q", code, msg, tt.code, tt.msg)
			}
			label := tt.app
			if _, ok := f.srv.cfg.Apps[label]; !ok {
				label = "unknown"
			}
			if got := f.tokenErrors(label, tt.reason); got != 1 {
				t.Errorf("switchyard_token_errors_total{app=%q,reason=%q} = %v, want 1", label, tt.reason, got)
			}
			if n := len(f.minter.seen()); n != 0 {
				t.Errorf("a refused request minted %d tokens", n)
			}
			if strings.Contains(a.body, strings.TrimPrefix(tt.auth, "Bearer ")) && tt.auth != "" {
				t.Errorf("the answer echoes the credential: %s", a.body)
			}
		})
	}
}

// TestVerifyGrant: the refusals of the grant verifier, one reason each,
// down to the token's structure (the HTTP-level table above covers the
// claims).
func TestVerifyGrant(t *testing.T) {
	key := []byte(grantSecret)
	enc := base64.RawURLEncoding
	forge := func(header, payload string, key []byte) string {
		s := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
		m := hmac.New(sha256.New, key)
		m.Write([]byte(s))
		return s + "." + enc.EncodeToString(m.Sum(nil))
	}
	at := func(d time.Duration) string { return fmt.Sprint(tokenNow.Add(d).Unix()) }
	valid := `{"app":"ai-hero","rooms":["r"],"iat":` + at(0) + `,"exp":` + at(time.Minute) + `}`
	hs := `{"alg":"HS256","typ":"JWT"}`
	var longest string // a valid grant of exactly MaxGrantBytes
	for n := 0; len(longest) < MaxGrantBytes; n++ {
		longest = forge(hs, `{"pad":"`+strings.Repeat("a", n)+`","iat":`+at(0)+`,"exp":`+at(time.Minute)+`}`, key)
	}
	if len(longest) != MaxGrantBytes {
		t.Fatalf("could not build a grant of exactly %d bytes (got %d)", MaxGrantBytes, len(longest))
	}
	tests := []struct {
		name, token string
		want        string // reason; "" accepted
	}{
		{"valid", forge(hs, valid, key), ""},
		{"no typ", forge(`{"alg":"HS256"}`, valid, key), ""},
		{"typ lower case", forge(`{"alg":"HS256","typ":"jwt"}`, valid, key), ""},
		{"typ JWE", forge(`{"alg":"HS256","typ":"JWE"}`, valid, key), "grant_malformed"},
		{"typ JWE, alg none", forge(`{"alg":"none","typ":"JWE"}`, valid, key), "grant_malformed"},
		{"typ not a string", forge(`{"alg":"HS256","typ":1}`, valid, key), "grant_malformed"},
		{"exactly MaxGrantBytes", longest, ""},
		{"one byte over MaxGrantBytes", forge(hs, valid, key) + strings.Repeat("A", MaxGrantBytes), "grant_malformed"},
		{"alg none", forge(`{"alg":"none","typ":"JWT"}`, valid, key), "grant_algorithm"},
		{"alg none unsigned", enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString([]byte(valid)) + ".", "grant_algorithm"},
		{"alg HS512", forge(`{"alg":"HS512","typ":"JWT"}`, valid, key), "grant_algorithm"},
		{"alg lower case", forge(`{"alg":"hs256"}`, valid, key), "grant_algorithm"},
		{"alg missing", forge(`{"typ":"JWT"}`, valid, key), "grant_algorithm"},
		{"alg not a string", forge(`{"alg":256}`, valid, key), "grant_algorithm"},
		{"header not an object", forge(`["HS256"]`, valid, key), "grant_malformed"},
		{"header missing", "." + enc.EncodeToString([]byte(valid)) + ".abc", "grant_malformed"},
		{"two parts", "a.b", "grant_malformed"},
		{"four parts", "a.b.c.d", "grant_malformed"},
		{"bad base64", "a.b!.c", "grant_malformed"},
		{"empty", "", "grant_malformed"},
		{"payload not an object", forge(hs, `[1]`, key), "grant_malformed"},
		{"exp wrong type", forge(hs, `{"iat":`+at(0)+`,"exp":"soon"}`, key), "grant_malformed"},
		{"fractional exp", forge(hs, `{"iat":`+at(0)+`,"exp":`+at(time.Minute)+`.5}`, key), "grant_malformed"},
		{"wrong key", forge(hs, valid, []byte("another-secret-0123456789abcdefgh")), "grant_signature"},
		{"exp missing", forge(hs, `{"iat":`+at(0)+`}`, key), "grant_expired"},
		{"exp zero", forge(hs, `{"iat":`+at(0)+`,"exp":0}`, key), "grant_expired"},
		{"exp at now-skew", forge(hs, `{"iat":`+at(-time.Hour)+`,"exp":`+at(-GrantSkew)+`}`, key), "grant_expired"},
		{"exp just after now-skew", forge(hs, `{"iat":`+at(-time.Hour)+`,"exp":`+at(-GrantSkew+time.Second)+`}`, key), ""},
		{"expired and not yet valid", forge(hs, `{"iat":`+at(time.Hour)+`,"exp":`+at(-time.Hour)+`}`, key), "grant_expired"},
		{"nbf beyond skew", forge(hs, `{"nbf":`+at(GrantSkew+time.Second)+`,"iat":`+at(0)+`,"exp":`+at(time.Hour)+`}`, key), "grant_not_yet_valid"},
		{"nbf at now+skew", forge(hs, `{"nbf":`+at(GrantSkew)+`,"iat":`+at(0)+`,"exp":`+at(time.Hour)+`}`, key), ""},
		{"iat beyond skew", forge(hs, `{"iat":`+at(GrantSkew+time.Second)+`,"exp":`+at(time.Hour)+`}`, key), "grant_not_yet_valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := verifyGrant(tt.token, key, tokenNow)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want accepted", err)
				}
				if c.Exp == 0 {
					t.Fatalf("accepted claims %+v have no exp", c)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %s", tt.want)
			}
			if got := grantReason(err); got != tt.want {
				t.Fatalf("reason %s (%v), want %s", got, err, tt.want)
			}
		})
	}
}

func TestTokenGrantAccepted(t *testing.T) {
	now := tokenNow
	tests := []struct {
		name   string
		grant  string
		room   string
		topics []string
		origin string
		want   []string // channels minted
	}{
		{"plain", grant(t, grantSecret, "ai-hero", []string{"video-1"}, now, 10*time.Minute), "video-1", nil, "", tokenChannels},
		{"one of several rooms", grant(t, grantSecret, "ai-hero", []string{"video-0", "video-1"}, now, time.Minute), "video-1", nil, "", tokenChannels},
		{"exactly 15 min", grant(t, grantSecret, "ai-hero", []string{"video-1"}, now, MaxGrantLife), "video-1", nil, "", tokenChannels},
		{"expired within skew", grant(t, grantSecret, "ai-hero", []string{"video-1"}, now.Add(-10*time.Minute), 10*time.Minute-GrantSkew+time.Second), "video-1", nil, "", tokenChannels},
		{"iat ahead within skew", grant(t, grantSecret, "ai-hero", []string{"video-1"}, now.Add(GrantSkew-time.Second), 5*time.Minute), "video-1", nil, "", tokenChannels},
		{"allowed origin", grant(t, grantSecret, "ai-hero", []string{"video-1"}, now, time.Minute), "video-1", nil, allowedOrigin, tokenChannels},
		{"topic filter", grant(t, grantSecret, "ai-hero", []string{"video-1"}, now, time.Minute), "video-1", []string{"ai-stream"}, "", []string{"ai-stream"}},
		{"mixed room: only channels past legacy", grant(t, grantSecret, "ai-hero", []string{"mixed"}, now, time.Minute), "mixed", nil, "", []string{"ai-stream"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTokenFixture(t, nil)
			var hdr []string
			if tt.origin != "" {
				hdr = []string{"Origin", tt.origin}
			}
			a := do(t, "GET", grantURL(f.pub.URL, "ai-hero", tt.room, tt.topics...), "Bearer "+tt.grant, "", hdr...)
			if a.status != 200 {
				t.Fatalf("status = %d, want 200 (%s)", a.status, a.body)
			}
			var got broadcast.Token
			if err := json.Unmarshal([]byte(a.body), &got); err != nil {
				t.Fatalf("answer %s: %v", a.body, err)
			}
			want := broadcast.Token{Key: "rt-jwt-ai-hero-" + tt.room, Channel: tt.room, Topics: tt.want, ExpiresAt: tokenNow.Add(time.Minute)}
			if got.Key != want.Key || got.Channel != want.Channel || !slices.Equal(got.Topics, want.Topics) || !got.ExpiresAt.Equal(want.ExpiresAt) {
				t.Errorf("token = %+v, want %+v", got, want)
			}
			calls := f.minter.seen()
			if len(calls) != 1 || calls[0].app != "ai-hero" || calls[0].room != tt.room || !slices.Equal(calls[0].channels, tt.want) {
				t.Errorf("mint calls = %+v, want one for ai-hero %s %v", calls, tt.room, tt.want)
			}
			if got, want := a.header.Get("Access-Control-Allow-Origin"), tt.origin; got != want {
				t.Errorf("Access-Control-Allow-Origin = %q, want %q", got, want)
			}
			if !slices.Contains(a.header.Values("Vary"), "Origin") {
				t.Errorf("Vary = %q, want Origin", a.header.Values("Vary"))
			}
			if got := testutil.ToFloat64(f.srv.m.tokens.WithLabelValues("ai-hero", "grant")); got != 1 {
				t.Errorf("switchyard_tokens_minted_total{mode=grant} = %v, want 1", got)
			}
		})
	}
}

func TestTokenServer(t *testing.T) {
	bearer := "Bearer " + testKey
	tests := []struct {
		name, auth, body  string
		status            int
		code, msg, reason string
		app               string // minted for (on success)
		channels          []string
	}{
		{"no key", "", `{"room":"video-1"}`, 401, "unauthorized", "missing Authorization: Bearer <app API key>", "unauthorized", "", nil},
		{"wrong key", "Bearer key-wrong-0123456789", `{"room":"video-1"}`, 401, "unauthorized", "unknown API key", "unauthorized", "", nil},
		{"admin token as key", "Bearer " + adminToken, `{"room":"video-1"}`, 401, "unauthorized", "unknown API key", "unauthorized", "", nil},
		{"grant secret as key", "Bearer " + grantSecret, `{"room":"video-1"}`, 401, "unauthorized", "unknown API key", "unauthorized", "", nil},
		{"a grant as key", "Bearer " + grant(t, grantSecret, "ai-hero", []string{"video-1"}, tokenNow, time.Minute), `{"room":"video-1"}`, 401, "unauthorized", "unknown API key", "unauthorized", "", nil},
		{"key with a suffix", bearer + "x", `{"room":"video-1"}`, 401, "unauthorized", "unknown API key", "unauthorized", "", nil},
		{"missing room", bearer, `{}`, 400, "invalid_request", "room: required", "invalid_request", "", nil},
		{"app field", bearer, `{"room":"video-1","app":"other"}`, 400, "invalid_request", `unknown field "app"`, "invalid_request", "", nil},
		{"malformed", bearer, `{"room":`, 400, "invalid_request", "malformed JSON", "invalid_request", "", nil},
		{"topics wrong type", bearer, `{"room":"video-1","topics":"ai-stream"}`, 400, "invalid_request", "topics: must be", "invalid_request", "", nil},
		{"unknown topic", bearer, `{"room":"video-1","topics":["nope"]}`, 400, "invalid_request", `topics: unknown topic "nope"`, "invalid_request", "", nil},
		{"too large", bearer, `{"room":"` + strings.Repeat("r", 2000) + `"}`, 413, "payload_too_large", "over the 1024 byte limit", "invalid_request", "", nil},
		{"invalid room", bearer, `{"room":"a/b"}`, 422, "invalid_room", "character '/'", "invalid_room", "", nil},
		{"legacy room", bearer, `{"room":"legacy-room"}`, 404, "realtime_disabled", "keep using PartyKit", "realtime_disabled", "", nil},
		{"legacy channel asked", bearer, `{"room":"mixed","topics":["video-ready"]}`, 404, "realtime_disabled", `every channel of room "mixed"`, "realtime_disabled", "", nil},
		{"ok", bearer, `{"room":"video-1"}`, 200, "", "", "", "ai-hero", tokenChannels},
		{"ok topics", bearer, `{"room":"video-1","topics":["video-ready","ai-stream"]}`, 200, "", "", "", "ai-hero", []string{"video-ready", "ai-stream"}},
		{"ok mixed room", bearer, `{"room":"mixed"}`, 200, "", "", "", "ai-hero", []string{"ai-stream"}},
		{"the key selects the app", "Bearer " + otherKey, `{"room":"video-1"}`, 200, "", "", "", "other", tokenChannels},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTokenFixture(t, nil)
			a := do(t, "POST", f.pub.URL+"/v1/realtime/token", tt.auth, tt.body)
			if a.status != tt.status {
				t.Fatalf("status = %d, want %d (%s)", a.status, tt.status, a.body)
			}
			calls := f.minter.seen()
			if tt.status != 200 {
				code, msg := errorOf(t, a)
				if code != tt.code || !strings.Contains(msg, tt.msg) {
					t.Fatalf("error = %s %q, want %s containing %q", code, msg, tt.code, tt.msg)
				}
				app := "ai-hero"
				if tt.reason == "unauthorized" {
					app = "unknown"
				}
				if got := f.tokenErrors(app, tt.reason); got != 1 {
					t.Errorf("switchyard_token_errors_total{app=%q,reason=%q} = %v, want 1", app, tt.reason, got)
				}
				if len(calls) != 0 {
					t.Errorf("a refused request minted: %+v", calls)
				}
				if a.header.Get("Access-Control-Allow-Origin") != "" {
					t.Errorf("the server path answered CORS headers")
				}
				return
			}
			var got broadcast.Token
			if err := json.Unmarshal([]byte(a.body), &got); err != nil {
				t.Fatal(err)
			}
			if len(calls) != 1 || calls[0].app != tt.app || !slices.Equal(calls[0].channels, tt.channels) {
				t.Fatalf("mint calls = %+v, want one for %s %v", calls, tt.app, tt.channels)
			}
			if got.Key != "rt-jwt-"+tt.app+"-"+calls[0].room || !slices.Equal(got.Topics, tt.channels) || got.ExpiresAt.IsZero() {
				t.Errorf("token = %+v", got)
			}
			if got := testutil.ToFloat64(f.srv.m.tokens.WithLabelValues(tt.app, "server")); got != 1 {
				t.Errorf("switchyard_tokens_minted_total{app=%s,mode=server} = %v, want 1", tt.app, got)
			}
		})
	}
}

// TestTokenServerAnswerShape checks the exact JSON keys the Inngest browser
// client's token refresh takes, and the version 2 members beside them.
func TestTokenServerAnswerShape(t *testing.T) {
	f := newTokenFixture(t, nil)
	a := do(t, "POST", f.pub.URL+"/v1/realtime/token", "Bearer "+testKey, `{"room":"video-1","topics":["ai-stream"]}`)
	var got map[string]any
	if err := json.Unmarshal([]byte(a.body), &got); err != nil || a.status != 200 {
		t.Fatalf("%d %s: %v", a.status, a.body, err)
	}
	want := map[string]any{"key": "rt-jwt-ai-hero-video-1", "channel": "video-1", "topics": []any{"ai-stream"}, "expiresAt": "2026-11-23T12:01:00Z",
		"version": 2.0, "app": "ai-hero", "room": "video-1", "serverTime": float64(tokenNow.UnixMilli()), "killSwitch": false,
		"events": map[string]any{},
		"channels": []any{
			map[string]any{"name": "video-ready", "stage": "shadow", "topic": "video-ready", "realtimeChannel": "", "subscribed": false},
			map[string]any{"name": "ai-stream", "stage": "shadow", "topic": "ai-stream", "realtimeChannel": "video-1", "subscribed": true},
			map[string]any{"name": "default", "stage": "shadow", "topic": "default", "realtimeChannel": "", "subscribed": false},
		}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("answer = %v, want %v", got, want)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	// A token is a credential: no cache may keep it, on either path.
	g := grant(t, grantSecret, "ai-hero", []string{"video-1"}, tokenNow, time.Minute)
	for _, a := range []answer{a, do(t, "GET", grantURL(f.pub.URL, "ai-hero", "video-1"), "Bearer "+g, "")} {
		if a.status != 200 || a.header.Get("Cache-Control") != "no-store" {
			t.Errorf("token answer %d has Cache-Control %q, want no-store", a.status, a.header.Get("Cache-Control"))
		}
	}
}

func TestTokenMintFailures(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*Config, *Deps)
		status int
		code   string
		msg    string
		reason string
	}{
		{"upstream failed", func(_ *Config, d *Deps) {
			d.Tokens = &fakeMinter{err: &broadcast.Error{Code: broadcast.EUPSTREAM, Transport: broadcast.TransportRealtime, Message: "realtime token request failed: answered 500 after 4 attempts"}}
		}, 502, "upstream_failed", "realtime token request failed: answered 500 after 4 attempts", "upstream"},
		{"internal error hides its cause", func(_ *Config, d *Deps) {
			d.Tokens = &fakeMinter{err: fmt.Errorf("boom signkey-prod-abcdef")}
		}, 500, "internal", "internal error", "upstream"},
		{"realtime not configured", func(_ *Config, d *Deps) { d.Tokens = nil }, 404, "realtime_disabled", "realtime is not configured", "realtime_disabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTokenFixture(t, tt.mod)
			for _, mode := range []string{"server", "grant"} {
				var a answer
				if mode == "server" {
					a = do(t, "POST", f.pub.URL+"/v1/realtime/token", "Bearer "+testKey, `{"room":"video-1"}`)
				} else {
					a = do(t, "GET", grantURL(f.pub.URL, "ai-hero", "video-1"), "Bearer "+grant(t, grantSecret, "ai-hero", []string{"video-1"}, tokenNow, time.Minute), "")
				}
				if a.status != tt.status {
					t.Fatalf("%s: status = %d, want %d (%s)", mode, a.status, tt.status, a.body)
				}
				code, msg := errorOf(t, a)
				if code != tt.code || msg != tt.msg && !strings.Contains(msg, tt.msg) {
					t.Fatalf("%s: error = %s %q, want %s %q", mode, code, msg, tt.code, tt.msg)
				}
				if strings.Contains(a.body, "signkey") {
					t.Fatalf("%s: answer leaks the cause: %s", mode, a.body)
				}
			}
			if got := f.tokenErrors("ai-hero", tt.reason); got != 2 {
				t.Errorf("switchyard_token_errors_total{reason=%q} = %v, want 2", tt.reason, got)
			}
		})
	}
}

func TestTokenSeveralRealtimeChannels(t *testing.T) {
	f := newTokenFixture(t, func(_ *Config, d *Deps) { d.Tokens = &fakeMinter{multi: true} })
	a := do(t, "POST", f.pub.URL+"/v1/realtime/token", "Bearer "+testKey, `{"room":"video-1"}`)
	var got struct {
		Tokens []broadcast.Token `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(a.body), &got); err != nil || a.status != 200 {
		t.Fatalf("%d %s: %v", a.status, a.body, err)
	}
	if len(got.Tokens) != 2 || got.Tokens[1].Channel != "video-1-2" {
		t.Errorf("tokens = %+v, want two", got.Tokens)
	}
}

func TestTokenPreflight(t *testing.T) {
	f := newTokenFixture(t, nil)
	tests := []struct {
		name, app, origin string
		status            int
	}{
		{"allowed", "ai-hero", allowedOrigin, 204},
		{"second allowed", "ai-hero", "http://localhost:3000", 204},
		{"disallowed", "ai-hero", "https://evil.example", 403},
		{"suffix trick", "ai-hero", allowedOrigin + ".evil.example", 403},
		{"null origin", "ai-hero", "null", 403},
		{"no origin", "ai-hero", "", 403},
		{"unknown app", "nope", allowedOrigin, 403},
		{"app without origins", "other", allowedOrigin, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := []string{"Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "authorization"}
			if tt.origin != "" {
				hdr = append(hdr, "Origin", tt.origin)
			}
			a := do(t, "OPTIONS", grantURL(f.pub.URL, tt.app, "video-1"), "", "", hdr...)
			if a.status != tt.status {
				t.Fatalf("status = %d, want %d", a.status, tt.status)
			}
			acao := a.header.Get("Access-Control-Allow-Origin")
			if tt.status != 204 {
				if acao != "" || a.header.Get("Access-Control-Allow-Methods") != "" {
					t.Fatalf("refused preflight answered CORS headers: %v", a.header)
				}
				return
			}
			if acao != tt.origin || a.header.Get("Access-Control-Allow-Methods") != "GET" ||
				!strings.EqualFold(a.header.Get("Access-Control-Allow-Headers"), "Authorization") {
				t.Fatalf("preflight headers = %v", a.header)
			}
			if a.header.Get("Access-Control-Allow-Credentials") != "" {
				t.Errorf("credentials allowed: %v", a.header)
			}
		})
	}
	// The server path is not a CORS endpoint: a browser cannot read it.
	a := do(t, "POST", f.pub.URL+"/v1/realtime/token", "Bearer "+testKey, `{"room":"video-1"}`, "Origin", allowedOrigin)
	if a.status != 200 || a.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("POST with Origin = %d, ACAO %q; want 200 and no CORS header", a.status, a.header.Get("Access-Control-Allow-Origin"))
	}
}

func TestTokenCache(t *testing.T) {
	var calls atomic.Int32
	clock := tokenNow
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	life := 60 * time.Second
	var fail atomic.Bool
	var multi atomic.Bool
	next := TokenMinterFunc(func(_ context.Context, app, room string, channels []string) ([]broadcast.Token, error) {
		n := calls.Add(1)
		if fail.Load() {
			return nil, broadcast.Errorf(broadcast.EUPSTREAM, "down")
		}
		t := broadcast.Token{Key: fmt.Sprintf("jwt-%d", n), Channel: room, Topics: channels, ExpiresAt: now().Add(life)}
		if multi.Load() {
			return []broadcast.Token{t, t}, nil
		}
		return []broadcast.Token{t}, nil
	})
	c := &TokenCache{Now: now}
	m := c.Wrap(next, nil)
	mint := func(room string, channels ...string) broadcast.Token {
		t.Helper()
		toks, err := m.Mint(context.Background(), "ai-hero", room, channels)
		if err != nil || len(toks) == 0 {
			t.Fatalf("mint: %v %v", toks, err)
		}
		return toks[0]
	}
	a := mint("r1", "x")
	for range 5 {
		if b := mint("r1", "x"); b.Key != a.Key {
			t.Fatalf("repeat within TTL minted again: %s then %s", a.Key, b.Key)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("upstream calls = %d, want 1", calls.Load())
	}
	if b := mint("r2", "x"); b.Key == a.Key {
		t.Fatal("another room shared a token")
	}
	if b := mint("r1", "x", "y"); b.Key == a.Key {
		t.Fatal("other channels shared a token")
	}
	advance(19 * time.Second)
	if b := mint("r1", "x"); b.Key != a.Key {
		t.Fatal("token not reused at 19 s")
	}
	advance(2 * time.Second) // 21 s: past the default 20 s TTL
	b := mint("r1", "x")
	if b.Key == a.Key {
		t.Fatal("token reused past the TTL")
	}
	if left := b.ExpiresAt.Sub(now()); left < c.Margin {
		t.Fatalf("served a token with %s left, margin %s", left, c.Margin)
	}

	// A short-lived token is only reused until Margin before its expiry.
	life = 40 * time.Second
	s1 := mint("short", "x")
	advance(9 * time.Second)
	if s := mint("short", "x"); s.Key != s1.Key {
		t.Fatal("short token not reused at 9 s")
	}
	advance(2 * time.Second) // 11 s: 29 s left, under the 30 s margin
	if s := mint("short", "x"); s.Key == s1.Key {
		t.Fatal("served a token closer than the margin to its expiry")
	}

	// Errors and multi-token answers are not cached.
	fail.Store(true)
	before := calls.Load()
	for range 2 {
		if _, err := m.Mint(context.Background(), "ai-hero", "down", []string{"x"}); err == nil {
			t.Fatal("error swallowed")
		}
	}
	if calls.Load()-before != 2 {
		t.Fatalf("errors were cached")
	}
	fail.Store(false)
	multi.Store(true)
	before = calls.Load()
	for range 2 {
		if toks, _ := m.Mint(context.Background(), "ai-hero", "multi", []string{"x"}); len(toks) != 2 {
			t.Fatalf("multi answer = %d tokens", len(toks))
		}
	}
	if calls.Load()-before != 2 {
		t.Fatalf("multi-token answers were cached")
	}
}

func TestTokenCacheBounded(t *testing.T) {
	c := &TokenCache{MaxSize: 10, Now: func() time.Time { return tokenNow }}
	m := c.Wrap(TokenMinterFunc(func(_ context.Context, app, room string, ch []string) ([]broadcast.Token, error) {
		return []broadcast.Token{{Key: room, ExpiresAt: tokenNow.Add(time.Minute)}}, nil
	}), nil)
	for i := range 100 {
		if _, err := m.Mint(context.Background(), "a", fmt.Sprint("room-", i), []string{"x"}); err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	n := len(c.m)
	c.mu.Unlock()
	if n > 10 {
		t.Fatalf("cache holds %d entries, max 10", n)
	}
}

func TestTokenCacheConcurrent(t *testing.T) {
	var calls atomic.Int32
	c := &TokenCache{}
	m := c.Wrap(TokenMinterFunc(func(_ context.Context, app, room string, ch []string) ([]broadcast.Token, error) {
		calls.Add(1)
		return []broadcast.Token{{Key: "k", Channel: room, ExpiresAt: time.Now().Add(time.Minute)}}, nil
	}), nil)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				if _, err := m.Mint(context.Background(), "a", fmt.Sprint("r", (i+j)%5), []string{"x"}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != 5 {
		t.Errorf("400 mints of 5 rooms cost %d upstream calls, want 5", n)
	}
}

// FuzzTokenGrant feeds arbitrary grants (and rooms) to the browser path:
// nothing but a grant signed with the app's secret may get a token, and no
// input may cause a server error.
func FuzzTokenGrant(f *testing.F) {
	f.Add("eyJhbGciOiJub25lIn0.e30.", "video-1")
	f.Add(grant(f, grantSecret, "ai-hero", []string{"video-1"}, tokenNow, time.Minute), "video-1")
	f.Add(grant(f, otherGrantSecret, "ai-hero", []string{"video-1"}, tokenNow, time.Minute), "video-1")
	f.Add("a.b.c", "")
	s := New(Config{Apps: map[string]App{"ai-hero": {Name: "ai-hero", GrantSecret: []byte(grantSecret)}}},
		Deps{Resolver: resolverFunc(tokenStages), Tokens: &fakeMinter{}, Channels: func() []string { return tokenChannels }},
		nil, nil, func() time.Time { return tokenNow })
	h := s.Public()
	f.Fuzz(func(t *testing.T, g, room string) {
		req := httptest.NewRequest("GET", "/v1/realtime/token?"+url.Values{"app": {"ai-hero"}, "room": {room}}.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+g)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for grant %q", rec.Code, g)
		}
		if rec.Code == 200 {
			var c struct {
				jwt.RegisteredClaims
				Rooms []string `json:"rooms"`
			}
			_, err := jwt.ParseWithClaims(strings.TrimSpace(g), &c, func(*jwt.Token) (any, error) { return []byte(grantSecret), nil },
				jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithLeeway(GrantSkew),
				jwt.WithTimeFunc(func() time.Time { return tokenNow }))
			if err != nil || !slices.Contains(c.Rooms, room) {
				t.Fatalf("grant %q for room %q accepted: %v", g, room, err)
			}
		}
	})
}

// TestTokenCacheBurst: a burst of browsers of one room arriving together,
// while the first mint is still in flight, costs one upstream call. The
// test runs in a synctest bubble: synctest.Wait returns once every caller
// is blocked, so all n callers provably overlap the one mint in flight
// before it is released (a sleep could not tell a burst from callers that
// arrive one by one and are served from the cache).
func TestTokenCacheBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls, arrived atomic.Int32
		release := make(chan struct{})
		c := &TokenCache{}
		m := c.Wrap(TokenMinterFunc(func(ctx context.Context, app, room string, ch []string) ([]broadcast.Token, error) {
			calls.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return []broadcast.Token{{Key: "k-" + room, Channel: room, ExpiresAt: time.Now().Add(time.Minute)}}, nil
		}), nil)
		const n = 20
		var wg sync.WaitGroup
		errs := make([]error, n)
		keys := make([]string, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				arrived.Add(1)
				toks, err := m.Mint(context.Background(), "a", "room", []string{"x"})
				errs[i] = err
				if len(toks) == 1 {
					keys[i] = toks[0].Key
				}
			}()
		}
		synctest.Wait() // every caller is inside Mint and blocked: the burst has piled up
		if got := arrived.Load(); got != n {
			t.Errorf("%d callers arrived, want %d", got, n)
		}
		if got := calls.Load(); got != 1 {
			t.Errorf("%d callers waiting together cost %d upstream calls, want 1", n, got)
		}
		close(release)
		wg.Wait()
		for i := range n {
			if errs[i] != nil || keys[i] != "k-room" {
				t.Fatalf("caller %d: %q %v", i, keys[i], errs[i])
			}
		}
		if got := calls.Load(); got != 1 {
			t.Errorf("a burst of %d callers cost %d upstream calls, want 1", n, got)
		}
	})
}

// TestTokenCacheCallerGone: a caller that gives up does not fail the
// others waiting on the same mint. In a synctest bubble, synctest.Wait
// proves each caller is waiting on the mint before the next step.
func TestTokenCacheCallerGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		release := make(chan struct{})
		c := &TokenCache{}
		m := c.Wrap(TokenMinterFunc(func(ctx context.Context, app, room string, ch []string) ([]broadcast.Token, error) {
			calls.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return []broadcast.Token{{Key: "k", ExpiresAt: time.Now().Add(time.Minute)}}, nil
		}), nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		first := make(chan error, 1)
		go func() {
			_, err := m.Mint(ctx, "a", "room", []string{"x"})
			first <- err
		}()
		synctest.Wait() // the first caller's mint is in flight
		second := make(chan error, 1)
		go func() {
			_, err := m.Mint(context.Background(), "a", "room", []string{"x"})
			second <- err
		}()
		synctest.Wait() // the second caller waits on the same mint
		if got := calls.Load(); got != 1 {
			t.Errorf("two callers of one key cost %d upstream calls, want 1", got)
		}
		cancel()
		if err := <-first; err == nil {
			t.Error("the caller that gave up got a token")
		}
		synctest.Wait()
		var err error
		select {
		case err = <-second:
			t.Errorf("the remaining caller returned (%v) before the mint ended", err)
		default:
			close(release)
			err = <-second
		}
		if err != nil {
			t.Errorf("the remaining caller failed: %v", err)
		}
		if got := calls.Load(); got != 1 {
			t.Errorf("upstream calls = %d, want 1", got)
		}
	})
}

// TestTokenWarmsComparedChannels: before minting, the token endpoint tells
// Warm which requested channels are in a compared stage, on both paths; a
// room entirely in legacy, or a refused request, warms nothing.
func TestTokenWarmsComparedChannels(t *testing.T) {
	type call struct {
		app, room string
		channels  []string
	}
	var mu sync.Mutex
	var calls []call
	stages := func(q broadcast.RouteQuery) broadcast.Route {
		st := broadcast.StageShadow
		switch {
		case q.Room == "legacy-room":
			st = broadcast.StageLegacy
		case q.Channel == "ai-stream":
			st = broadcast.StageRealtime // past compared
		case q.Channel == "video-ready":
			st = broadcast.StageDual
		}
		return broadcast.Route{Stage: st, Channel: q.Channel}
	}
	f := newTokenFixture(t, func(_ *Config, d *Deps) {
		d.Resolver = resolverFunc(stages)
		d.Warm = func(app, room string, channels []string) {
			mu.Lock()
			calls = append(calls, call{app, room, append([]string(nil), channels...)})
			mu.Unlock()
		}
	})
	bearer := "Bearer " + testKey
	for _, tt := range []struct {
		body   string
		status int
		want   []call
	}{
		{`{"room":"video-1"}`, 200, []call{{"ai-hero", "video-1", []string{"video-ready", broadcast.DefaultChannel}}}},
		{`{"room":"video-2","topics":["ai-stream"]}`, 200, nil},
		{`{"room":"legacy-room"}`, 404, nil},
		{`{"room":"a/b"}`, 422, nil},
	} {
		mu.Lock()
		calls = nil
		mu.Unlock()
		if a := do(t, "POST", f.pub.URL+"/v1/realtime/token", bearer, tt.body); a.status != tt.status {
			t.Fatalf("%s: status %d, want %d (%s)", tt.body, a.status, tt.status, a.body)
		}
		mu.Lock()
		got := calls
		mu.Unlock()
		if len(got) != len(tt.want) || (len(got) == 1 && (got[0].app != tt.want[0].app || got[0].room != tt.want[0].room || !slices.Equal(got[0].channels, tt.want[0].channels))) {
			t.Errorf("%s: Warm calls %+v, want %+v", tt.body, got, tt.want)
		}
	}
	// The grant path warms too.
	mu.Lock()
	calls = nil
	mu.Unlock()
	g := grant(t, grantSecret, "ai-hero", []string{"video-3"}, tokenNow, time.Minute)
	if a := do(t, "GET", f.pub.URL+"/v1/realtime/token?app=ai-hero&room=video-3", "Bearer "+g, ""); a.status != 200 {
		t.Fatalf("grant path: status %d (%s)", a.status, a.body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 1 || calls[0].room != "video-3" {
		t.Errorf("grant path: Warm calls %+v, want one for video-3", calls)
	}
}
