package realtime

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/realtime/realtimetest"
	"github.com/switchyard/switchyard/upstream"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"minimal", Config{URL: "http://127.0.0.1:8288"}, ""},
		{"full", Config{URL: "https://api.inngest.com/", SigningKey: testKey, FallbackSigningKey: otherKey, ChannelTemplate: "{app}:{room}:{channel}", Topics: map[string]string{"ai": "tokens"}}, ""},
		{"missing url", Config{}, "url: required"},
		{"missing scheme", Config{URL: "127.0.0.1:8288"}, "url: "},
		{"host only", Config{URL: "api.inngest.com"}, "url: missing scheme"},
		{"ftp", Config{URL: "ftp://x"}, "url: scheme"},
		{"query", Config{URL: "http://x/?a=1"}, "url: must not have a query"},
		{"bad key", Config{URL: "http://x", SigningKey: "secret"}, "signingKey: must look like signkey-{env}-{hex}"},
		{"odd hex", Config{URL: "http://x", SigningKey: "signkey-prod-abc"}, "signingKey: must look like"},
		{"bad fallback", Config{URL: "http://x", SigningKey: testKey, FallbackSigningKey: "x"}, "fallbackSigningKey: must look like"},
		{"fallback alone", Config{URL: "http://x", FallbackSigningKey: testKey}, "fallbackSigningKey: set without signingKey"},
		{"unknown placeholder", Config{URL: "http://x", ChannelTemplate: "{room}-{env}"}, `channelTemplate: unknown placeholder "{env}"`},
		{"no room", Config{URL: "http://x", ChannelTemplate: "{app}"}, "channelTemplate: \"{app}\" must contain {room}"},
		{"unbalanced", Config{URL: "http://x", ChannelTemplate: "{room"}, "channelTemplate: unterminated"},
		{"stray brace", Config{URL: "http://x", ChannelTemplate: "room}"}, "channelTemplate: unbalanced"},
		{"empty topic", Config{URL: "http://x", Topics: map[string]string{"ai": ""}}, `topics["ai"]`},
		{"url with path", Config{URL: "http://x/api"}, "url: must not carry a path"},
		{"ws scheme", Config{URL: "ws://x"}, `url: scheme "ws" not supported`},
		{"doubled brace", Config{URL: "http://x", ChannelTemplate: "{room}}"}, "channelTemplate: unbalanced"},
		{"topic with space", Config{URL: "http://x", Topics: map[string]string{"ai": "a b"}}, `topics["ai"]: topic "a b"`},
		{"every problem, in field order", Config{URL: "x", SigningKey: "nope", ChannelTemplate: "{app}"}, "url: missing scheme (want http:// or https://)\nsigningKey: must look like signkey-{env}-{hex}\nchannelTemplate:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "deadbeef") {
				t.Fatalf("error %q leaks the key", err)
			}
		})
	}
}

func TestHashSigningKey(t *testing.T) {
	got, err := HashSigningKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	if got != testKeyHash {
		t.Fatalf("got %q, want %q", got, testKeyHash)
	}
}

func TestChannelAndTopic(t *testing.T) {
	c := mustClient(t, "http://127.0.0.1:1", Config{ChannelTemplate: "{app}/{room}.{channel}", Topics: map[string]string{"ai": "tokens", "media": "tokens"}}, nil)
	if got, want := c.Channel("r1", "ai"), "app1/r1.ai"; got != want {
		t.Errorf("Channel: got %q, want %q", got, want)
	}
	if got, want := c.Topic("ai"), "tokens"; got != want {
		t.Errorf("Topic(ai): got %q, want %q", got, want)
	}
	if got, want := c.Topic("default"), "default"; got != want {
		t.Errorf("Topic(default): got %q, want %q", got, want)
	}
	if got, want := strings.Join(c.TopicsFor([]string{"ai", "default", "media"}), ","), "tokens,default"; got != want {
		t.Errorf("TopicsFor: got %q, want %q", got, want)
	}
	d := mustClient(t, "http://127.0.0.1:1", Config{}, nil)
	if got, want := d.Channel("room-9", "ai"), "room-9"; got != want {
		t.Errorf("default template: got %q, want %q", got, want)
	}
}

func TestPublish(t *testing.T) {
	body := `{"b":1.0,"s":"\u00e9"}`
	tests := []struct {
		name       string
		serverKey  string
		cfg        Config
		fault      realtimetest.HTTPFault
		big        bool
		wantCode   string
		wantTries  int
		wantStored int
		wantAuth   string
		wantCause  error
	}{
		{name: "no auth", wantTries: 1, wantStored: 1},
		{name: "hashed key", serverKey: testKey, cfg: Config{SigningKey: testKey}, wantTries: 1, wantStored: 1, wantAuth: "Bearer " + testKeyHash},
		{name: "wrong key", serverKey: testKey, cfg: Config{SigningKey: otherKey}, wantCode: broadcast.EUPSTREAM, wantTries: 1},
		{name: "missing key", serverKey: testKey, wantCode: broadcast.EUPSTREAM, wantTries: 1},
		{name: "fallback key", serverKey: testKey, cfg: Config{SigningKey: otherKey, FallbackSigningKey: testKey}, wantTries: 2, wantStored: 1, wantAuth: "Bearer " + testKeyHash},
		{name: "both keys wrong", serverKey: testKey, cfg: Config{SigningKey: otherKey, FallbackSigningKey: "signkey-test-00"}, wantCode: broadcast.EUPSTREAM, wantTries: 2},
		{name: "oversize refused before sending", big: true, wantCode: broadcast.ETOOLARGE},
		{name: "5xx retried", fault: realtimetest.HTTPFault{Status: 503, Times: 2}, wantTries: 3, wantStored: 1},
		{name: "5xx until attempts run out", fault: realtimetest.HTTPFault{Status: 504}, wantCode: broadcast.EUPSTREAM, wantTries: 4},
		{name: "the same 500 twice stops", fault: realtimetest.HTTPFault{Status: 500}, wantCode: broadcast.EUPSTREAM, wantTries: 2},
		{name: "4xx not retried", fault: realtimetest.HTTPFault{Status: 400}, wantCode: broadcast.EUPSTREAM, wantTries: 1},
		{name: "reset retried", fault: realtimetest.HTTPFault{Reset: true, Times: 1}, wantTries: 2, wantStored: 1},
		{name: "hang hits deadline", fault: realtimetest.HTTPFault{Hang: true}, cfg: Config{Policy: hangPolicy()}, wantCode: broadcast.EUPSTREAM, wantCause: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, realtimetest.Config{SigningKey: tt.serverKey})
			srv.SetPublishFault(tt.fault)
			c := mustClient(t, srv.URL(), tt.cfg, nil)
			m := mustMessage(t, "room-1", "ai", body)
			if tt.big {
				m.Envelope = make([]byte, broadcast.MaxRealtimeBody+1) // NewMessage refuses this size itself
			}
			res, err := c.Publish(context.Background(), m)
			if got := broadcast.ErrorCode(err); got != tt.wantCode {
				t.Fatalf("code: got %q (%v), want %q", got, err, tt.wantCode)
			}
			if err != nil {
				var be *broadcast.Error
				if !errors.As(err, &be) || be.Transport != broadcast.TransportRealtime {
					t.Fatalf("error %v: want *broadcast.Error with transport realtime", err)
				}
				if strings.Contains(be.Message, "deadbeef") || strings.Contains(be.Message, "0badc0de") {
					t.Fatalf("client message %q leaks a key", be.Message)
				}
			}
			if tt.wantCause != nil && !errors.Is(err, tt.wantCause) {
				t.Fatalf("cause: got %v, want %v", err, tt.wantCause)
			}
			if tt.wantTries != 0 && res.Attempts != tt.wantTries {
				t.Fatalf("attempts: got %d, want %d", res.Attempts, tt.wantTries)
			}
			if tt.big && res.Attempts != 0 {
				t.Fatalf("attempts: got %d, want 0", res.Attempts)
			}
			pubs := srv.Publishes()
			if len(pubs) != tt.wantStored {
				t.Fatalf("server stored %d publishes, want %d", len(pubs), tt.wantStored)
			}
			if tt.wantStored == 0 {
				return
			}
			p := pubs[0]
			if got, want := string(p.Body), string(m.Envelope); got != want {
				t.Errorf("body: got %s, want %s", got, want)
			}
			if p.Channel != "room-1" || p.Topic != "ai" {
				t.Errorf("channel/topic: got %q/%q, want room-1/ai", p.Channel, p.Topic)
			}
			if p.ContentType != "application/json" {
				t.Errorf("content type: got %q", p.ContentType)
			}
			if p.Auth != tt.wantAuth {
				t.Errorf("auth: got %q, want %q", p.Auth, tt.wantAuth)
			}
		})
	}
}

func TestPublishMetrics(t *testing.T) {
	srv := newServer(t, realtimetest.Config{})
	srv.SetPublishFault(realtimetest.HTTPFault{Status: 502, Times: 1})
	mr := newMetrics()
	c := mustClient(t, srv.URL(), Config{}, mr.m)
	if _, err := c.Publish(context.Background(), mustMessage(t, "r", "default", `1`)); err != nil {
		t.Fatal(err)
	}
	if got := mr.counter(t, "switchyard_upstream_requests_total", map[string]string{"transport": "realtime", "op": "publish", "class": "5xx"}); got != 1 {
		t.Errorf("5xx requests: got %v, want 1", got)
	}
	if got := mr.counter(t, "switchyard_upstream_retries_total", map[string]string{"transport": "realtime", "op": "publish"}); got != 1 {
		t.Errorf("retries: got %v, want 1", got)
	}
}

func TestMintToken(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		serverKey string
		cfg       Config
		fault     realtimetest.HTTPFault
		wantErr   bool
		wantCause error
		wantReqs  int
	}{
		{name: "dev server", wantReqs: 1},
		{name: "signing key", serverKey: testKey, cfg: Config{SigningKey: testKey}, wantReqs: 1},
		{name: "wrong key", serverKey: testKey, cfg: Config{SigningKey: otherKey}, wantErr: true},
		{name: "fallback key", serverKey: testKey, cfg: Config{SigningKey: otherKey, FallbackSigningKey: testKey}, wantReqs: 1},
		{name: "5xx retried", fault: realtimetest.HTTPFault{Status: 503, Times: 1}, wantReqs: 1},
		{name: "reset retried", fault: realtimetest.HTTPFault{Reset: true, Times: 1}, wantReqs: 1},
		{name: "hang hits deadline", fault: realtimetest.HTTPFault{Hang: true}, cfg: Config{Policy: hangPolicy()}, wantErr: true, wantCause: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, realtimetest.Config{SigningKey: tt.serverKey, Now: func() time.Time { return t0 }})
			srv.SetTokenFault(tt.fault)
			c := mustClient(t, srv.URL(), tt.cfg, nil)
			tok, err := c.MintToken(context.Background(), "room-1", []string{"ai", "default"})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err: got %v, want error %v", err, tt.wantErr)
			}
			if tt.wantCause != nil && !errors.Is(err, tt.wantCause) {
				t.Fatalf("cause: got %v, want %v", err, tt.wantCause)
			}
			if err != nil {
				if got := broadcast.ErrorCode(err); got != broadcast.EUPSTREAM {
					t.Fatalf("code: got %q, want %q", got, broadcast.EUPSTREAM)
				}
				return
			}
			if got := len(srv.Tokens()); got != tt.wantReqs {
				t.Fatalf("tokens issued: got %d, want %d", got, tt.wantReqs)
			}
			if tok.Channel != "room-1" || strings.Join(tok.Topics, ",") != "ai,default" {
				t.Errorf("token: got %q %v", tok.Channel, tok.Topics)
			}
			if want := t0.Add(60 * time.Second); !tok.ExpiresAt.Equal(want) {
				t.Errorf("expiresAt: got %v, want %v", tok.ExpiresAt, want)
			}
			var claims realtimetest.Claims
			if _, err := jwt.ParseWithClaims(tok.Key, &claims, func(*jwt.Token) (any, error) { return srv.JWTKey(), nil },
				jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithTimeFunc(func() time.Time { return t0 })); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if len(claims.Topics) != 2 || claims.Topics[0] != (realtimetest.TopicClaim{Kind: "run", EnvID: srv.EnvID(), Channel: "room-1", Name: "ai"}) {
				t.Errorf("topics claim: got %+v", claims.Topics)
			}
		})
	}
}

func TestMintTokenExpiredAtHandshake(t *testing.T) {
	srv := newServer(t, realtimetest.Config{})
	c := mustClient(t, srv.URL(), Config{}, nil)
	tok, err := c.MintToken(context.Background(), "room-1", []string{"ai"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Advance(61 * time.Second)
	resp, err := http.Get(srv.URL() + "/v1/realtime/connect?token=" + tok.Key)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if got, want := resp.StatusCode, http.StatusUnauthorized; got != want {
		t.Fatalf("status: got %d, want %d", got, want)
	}
}

func TestMintTokenRefusesArguments(t *testing.T) {
	c := mustClient(t, "http://127.0.0.1:1", Config{}, nil)
	for _, tc := range []struct {
		channel string
		topics  []string
	}{{"", []string{"a"}}, {"c", nil}, {"c", []string{""}}} {
		if _, err := c.MintToken(context.Background(), tc.channel, tc.topics); broadcast.ErrorCode(err) != broadcast.EINVALID {
			t.Errorf("MintToken(%q, %q): got %v, want %s", tc.channel, tc.topics, err, broadcast.EINVALID)
		}
	}
}

func TestDecodeTokenAnswer(t *testing.T) {
	good := signHS256(t, jwt.MapClaims{"exp": 1700000000}, "k")
	noExp := signHS256(t, jwt.MapClaims{"iss": "rt.inngest.com"}, "k")
	tests := []struct {
		name   string
		status int
		body   string
		want   string // error substring, "" for success
	}{
		{"ok", 201, `{"jwt":"` + good + `"}`, ""},
		{"ok 200", 200, `{"jwt":"` + good + `"}`, ""},
		{"204", 204, ``, "status 204"},
		{"empty", 201, ``, "not a JSON object"},
		{"array", 201, `["x"]`, "not a JSON object"},
		{"jwt missing", 201, `{"token":"x"}`, `"jwt" missing`},
		{"jwt number", 201, `{"jwt":1}`, `field "jwt"`},
		{"jwt garbage", 201, `{"jwt":"abc"}`, "jwt:"},
		{"no exp", 201, `{"jwt":"` + noExp + `"}`, "no exp"},
		{"truncated", 201, `{"jwt":"` + good, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jwt, exp, err := decodeTokenAnswer(tt.status, []byte(tt.body))
			if tt.want == "" {
				if err != nil || jwt != good || exp.Unix() != 1700000000 {
					t.Fatalf("got %q %v %v, want the token, exp 1700000000", jwt, exp, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), good) {
				t.Fatalf("error leaks the token")
			}
		})
	}
}

func FuzzDecodeTokenAnswer(f *testing.F) {
	good := signHS256(f, jwt.MapClaims{"exp": 1700000000}, "k")
	f.Add(201, []byte(`{"jwt":"`+good+`"}`))
	f.Add(201, []byte(`{"jwt":null}`))
	f.Add(500, []byte(``))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		jwt, exp, err := decodeTokenAnswer(status, body)
		if err == nil && (jwt == "" || exp.IsZero() && jwt == "") {
			t.Fatalf("accepted an answer without a token")
		}
	})
}

// signHS256 signs claims with key through the JWT library.
func signHS256(tb testing.TB, claims jwt.Claims, key string) string {
	tb.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// TestUpstreamErrorMessage: the client-safe wording of failed calls is
// upstream.Describe's; a token request says what failed, a publish leaves
// that to the multicast adapter.
func TestUpstreamErrorMessage(t *testing.T) {
	cause := errors.New("cause")
	tests := []struct {
		op       string
		status   error
		attempts int
		want     string
	}{
		{"publish", &upstream.StatusError{Status: 503}, 4, "answered 503 after 4 attempts"},
		{"publish", &upstream.StatusError{Status: 401}, 2, "signing key refused: answered 401 after 2 attempts"},
		{"token", &upstream.StatusError{Status: 500}, 4, "realtime token request failed: answered 500 after 4 attempts"},
		{"token", &upstream.StatusError{Status: 403}, 2, "realtime token request failed: signing key refused: answered 403 after 2 attempts"},
		{"token", context.DeadlineExceeded, 1, "realtime token request failed: timed out after 1 attempt"},
	}
	for _, tt := range tests {
		e := upstreamError(tt.op, tt.status, tt.attempts, cause)
		if e.Message != tt.want || e.Code != broadcast.EUPSTREAM || e.Transport != broadcast.TransportRealtime || !errors.Is(e, cause) {
			t.Errorf("upstreamError(%s, %v, %d) = %+v, want message %q", tt.op, tt.status, tt.attempts, e, tt.want)
		}
	}
}

func TestGroupChannels(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		channels []string
		want     []ChannelTopics
	}{
		{"one channel per room, topics per configured channel", Config{}, []string{"ai", "default", "ai"},
			[]ChannelTopics{{Channel: "r1", Topics: []string{"ai", "default"}}}},
		{"a channel per configured channel", Config{ChannelTemplate: "{app}:{room}:{channel}"}, []string{"ai", "default"},
			[]ChannelTopics{{Channel: "app1:r1:ai", Topics: []string{"ai"}}, {Channel: "app1:r1:default", Topics: []string{"default"}}}},
		{"topics shared by two names", Config{Topics: map[string]string{"ai": "msg", "chat": "msg"}}, []string{"chat", "ai", "video"},
			[]ChannelTopics{{Channel: "r1", Topics: []string{"msg", "video"}}}},
		{"no channels", Config{}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustClient(t, "http://127.0.0.1:1", tt.cfg, nil)
			got := c.GroupChannels("r1", tt.channels)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("GroupChannels: got %+v, want %+v", got, tt.want)
			}
			// Each entry is what TopicsFor gives for the names of its channel.
			for _, g := range got {
				var names []string
				for _, ch := range tt.channels {
					if c.Channel("r1", ch) == g.Channel {
						names = append(names, ch)
					}
				}
				if want := c.TopicsFor(names); !reflect.DeepEqual(g.Topics, want) {
					t.Errorf("%s: topics %v, TopicsFor gives %v", g.Channel, g.Topics, want)
				}
			}
		})
	}
}

// TestPublishURLMatchesQueryEscape holds publishURL to the URL the
// straightforward url.QueryEscape concatenation builds.
func TestPublishURLMatchesQueryEscape(t *testing.T) {
	for _, tpl := range []string{"", "{app}:{party}:{room}", "rooms/{room}?x={channel}&y=ü", "{room}"} {
		c, err := NewClient("my app&co", Config{URL: "http://127.0.0.1:1", ChannelTemplate: tpl, Topics: map[string]string{"video-ready": "vid/eo:ready"}}, nil, nil, nil)
		if err != nil {
			t.Fatalf("template %q: %v", tpl, err)
		}
		for _, m := range []struct{ party, room, channel string }{
			{"", "room-1", "video-ready"}, {"main", "a!b'(c)*:@$&+,;=", "default"}, {"other_p", "r~._-", "x y"},
		} {
			want := c.base + "/v1/realtime/publish?channel=" + url.QueryEscape(c.PartyChannel(m.party, m.room, m.channel)) +
				"&topic=" + url.QueryEscape(c.Topic(m.channel))
			if got := c.publishURL(m.party, m.room, m.channel); got != want {
				t.Errorf("template %q, %+v: publishURL = %q, want %q", tpl, m, got, want)
			}
		}
	}
}
