package api

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/shadow"
)

// newAdminFixture is an admin listener with every endpoint enabled.
func newAdminFixture(t *testing.T, token string) (*Server, *httptest.Server) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s := New(Config{AdminToken: token, Apps: map[string]App{"a": {Name: "a"}}}, Deps{
		Resolver:         resolverFunc(tokenStages),
		Gatherer:         reg,
		ShadowSummary:    func() []shadow.ChannelSummary { return []shadow.ChannelSummary{{App: "a", Channel: "summary"}} },
		ShadowMismatches: func(int) []shadow.MismatchExample { return []shadow.MismatchExample{} },
		StatusPage: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("<html>status</html>"))
		}),
	}, NewMetrics(reg), nil, nil)
	s.SetReady(true)
	adm := httptest.NewServer(s.Admin())
	t.Cleanup(adm.Close)
	return s, adm
}

// adminPaths are every admin endpoint that needs the token.
var adminPaths = []string{
	"/metrics",
	"/v1/admin/routes?app=a&room=r&event=e",
	"/v1/admin/shadow/summary",
	"/v1/admin/shadow/mismatches?limit=5",
	"/",
}

func TestAdminEndpointsNeedTheToken(t *testing.T) {
	s, adm := newAdminFixture(t, adminToken)
	refused := []struct{ name, auth string }{
		{"no token", ""},
		{"wrong token", "Bearer wrong-token-0123456789"},
		{"token prefix", "Bearer " + adminToken[:len(adminToken)-1]},
		{"token with suffix", "Bearer " + adminToken + "0"},
		{"basic scheme", "Basic " + adminToken},
		{"raw token without scheme", adminToken},
		{"an app API key", "Bearer " + testKey},
	}
	for _, path := range adminPaths {
		for _, rf := range refused {
			t.Run(path+"/"+rf.name, func(t *testing.T) {
				a := do(t, "GET", adm.URL+path, rf.auth, "")
				if a.status != 401 {
					t.Fatalf("status = %d, want 401 (%s)", a.status, a.body)
				}
				if code, msg := errorOf(t, a); code != "unauthorized" || msg != "admin endpoints need Authorization: Bearer <admin token>" {
					t.Fatalf("error = %s %q", code, msg)
				}
			})
		}
		t.Run(path+"/with token", func(t *testing.T) {
			for _, auth := range []string{"Bearer " + adminToken, "bearer " + adminToken} {
				if a := do(t, "GET", adm.URL+path, auth, ""); a.status != 200 {
					t.Fatalf("with %q: status = %d, want 200 (%s)", auth[:7], a.status, a.body)
				}
			}
		})
	}
	// The token in the query string is not a credential.
	if a := do(t, "GET", adm.URL+"/metrics?token="+adminToken, "", ""); a.status != 401 {
		t.Errorf("token in the query = %d, want 401", a.status)
	}
	// Refused calls are counted under their route.
	if got := testutil.ToFloat64(s.m.requests.WithLabelValues("admin", "metrics", "401")); got < float64(len(refused)) {
		t.Errorf("switchyard_http_requests_total{route=metrics,code=401} = %v, want >= %d", got, len(refused))
	}
	// Probes carry no secret.
	for _, p := range []string{"/healthz", "/readyz"} {
		if a := do(t, "GET", adm.URL+p, "", ""); a.status != 200 {
			t.Errorf("%s without token = %d, want 200", p, a.status)
		}
	}
}

// TestAdminSurfaceHidden: without the token an unknown admin path or a wrong
// method is refused like a known one, so the admin surface cannot be mapped.
func TestAdminSurfaceHidden(t *testing.T) {
	_, adm := newAdminFixture(t, adminToken)
	for _, tt := range []struct {
		method, path string
		withToken    int
	}{
		{"GET", "/v1/admin/nope", 404},
		{"GET", "/debug/pprof/", 404},
		{"POST", "/v1/admin/routes", 405},
		{"DELETE", "/metrics", 405},
	} {
		if a := do(t, tt.method, adm.URL+tt.path, "", ""); a.status != 401 {
			t.Errorf("%s %s without token = %d, want 401", tt.method, tt.path, a.status)
		}
		if a := do(t, tt.method, adm.URL+tt.path, "Bearer "+adminToken, ""); a.status != tt.withToken {
			t.Errorf("%s %s with token = %d, want %d", tt.method, tt.path, a.status, tt.withToken)
		}
	}
}

func TestAdminWithoutTokenConfigured(t *testing.T) {
	// Config refuses this outside dev on loopback; the API then serves
	// openly (config/config_test.go covers the refusal).
	_, adm := newAdminFixture(t, "")
	for _, p := range adminPaths {
		if a := do(t, "GET", adm.URL+p, "", ""); a.status != 200 {
			t.Errorf("%s = %d, want 200 without a configured token", p, a.status)
		}
	}
}

// TestKeySelectsApp: an app's key can publish only as that app. There is
// no field naming the app on the key paths, and the drop-in path of another
// app needs that app's secret.
func TestKeySelectsApp(t *testing.T) {
	fb := &fakeBroadcaster{}
	srv := newTestServer(t, fb)
	for _, tt := range []struct {
		name, method, path, auth, body string
		hdr                            []string
		status                         int
		msg                            string
	}{
		{"app field refused", "POST", "/v1/broadcast", "Bearer " + otherKey, `{"app":"ai-hero","room":"r","name":"n","body":1}`, nil, 400, `unknown field \"app\"`},
		{"app field in a batch refused", "POST", "/v1/broadcasts", "Bearer " + otherKey, `{"messages":[{"app":"ai-hero","room":"r","name":"n","body":1}]}`, nil, 400, `messages[0].unknown field \"app\"`},
		{"other app's key on the drop-in path", "POST", "/apps/ai-hero/party/r", "Bearer " + otherKey, `{"body":1,"name":"n"}`, nil, 401, "missing or wrong X-Switchyard-Secret header"},
		{"API key as drop-in secret", "POST", "/apps/ai-hero/party/r", "", `{"body":1,"name":"n"}`, []string{"X-Switchyard-Secret", testKey}, 401, "missing or wrong"},
		{"key in the query string", "POST", "/v1/broadcast?key=" + testKey, "", `{"room":"r","name":"n","body":1}`, nil, 401, "missing Authorization"},
		{"key in another header", "POST", "/v1/broadcast", "", `{"room":"r","name":"n","body":1}`, []string{"X-Api-Key", testKey}, 401, "missing Authorization"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := do(t, tt.method, srv.URL+tt.path, tt.auth, tt.body, tt.hdr...)
			if a.status != tt.status || !strings.Contains(a.body, tt.msg) {
				t.Fatalf("got %d %s, want %d containing %q", a.status, a.body, tt.status, tt.msg)
			}
		})
	}
	if n := len(fb.sent()); n != 0 {
		t.Fatalf("%d refused messages were forwarded", n)
	}
	for _, tt := range []struct{ key, app string }{{testKey, "ai-hero"}, {otherKey, "other"}} {
		a := do(t, "POST", srv.URL+"/v1/broadcast", "Bearer "+tt.key, `{"room":"r","name":"n","body":1}`)
		if a.status != 200 {
			t.Fatalf("publish = %d %s", a.status, a.body)
		}
		msgs := fb.sent()
		if got := msgs[len(msgs)-1].App; got != tt.app {
			t.Errorf("key of %s published as app %q", tt.app, got)
		}
	}
}

// TestNoSecretInLogs drives every refusal of the API with a debug logger
// and finds no key, grant, token or secret in any log entry.
func TestNoSecretInLogs(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	fm := &fakeMinter{}
	s := New(Config{
		Apps: map[string]App{
			"ai-hero": {Name: "ai-hero", KeyHashes: [][32]byte{HashKey(testKey)}, GrantSecret: []byte(grantSecret),
				DropInHeader: "X-Switchyard-Secret", DropInSecret: dropInSec, Origins: []string{allowedOrigin}},
		},
		AdminToken: adminToken,
	}, Deps{Resolver: resolverFunc(tokenStages), Tokens: fm, Channels: func() []string { return tokenChannels },
		Broadcaster: &fakeBroadcaster{fn: func(*broadcast.Message) (broadcast.Outcome, error) {
			return broadcast.Outcome{}, &broadcast.Error{Code: broadcast.EUPSTREAM, Transport: broadcast.TransportLegacy, Message: "legacy failed"}
		}}}, NewMetrics(nil), zap.New(core), func() time.Time { return tokenNow })
	pub := httptest.NewServer(s.Public())
	defer pub.Close()
	adm := httptest.NewServer(s.Admin())
	defer adm.Close()

	good := grant(t, grantSecret, "ai-hero", []string{"video-1"}, tokenNow, time.Minute)
	bad := []string{
		grant(t, grantSecret, "ai-hero", []string{"video-1"}, tokenNow, time.Hour),
		grant(t, grantSecret, "ai-hero", []string{"video-1"}, tokenNow.Add(-time.Hour), time.Minute),
		grant(t, "not-the-secret-0123456789abcdef0123", "ai-hero", []string{"video-1"}, tokenNow, time.Minute),
		rawJWT(t, `{"alg":"none"}`, GrantClaims{App: "ai-hero", Rooms: []string{"video-1"}, Exp: tokenNow.Add(time.Minute).Unix()}, nil),
	}
	secrets := append([]string{testKey, grantSecret, dropInSec, adminToken, good}, bad...)

	// Successes first: the credentials are really in use.
	if a := do(t, "GET", grantURL(pub.URL, "ai-hero", "video-1"), "Bearer "+good, "", "Origin", allowedOrigin); a.status != 200 {
		t.Fatalf("good grant = %d %s", a.status, a.body)
	}
	if a := do(t, "POST", pub.URL+"/v1/realtime/token", "Bearer "+testKey, `{"room":"video-1"}`); a.status != 200 {
		t.Fatalf("good key = %d %s", a.status, a.body)
	}
	if a := do(t, "GET", adm.URL+"/v1/admin/routes?app=ai-hero&room=r&event=e", "Bearer "+adminToken, ""); a.status != 200 {
		t.Fatalf("admin token = %d %s", a.status, a.body)
	}
	// Then every refusal, with secrets in the wrong places.
	for _, g := range append(bad, testKey, adminToken) {
		do(t, "GET", grantURL(pub.URL, "ai-hero", "video-1"), "Bearer "+g, "")
		do(t, "GET", grantURL(pub.URL, "ai-hero", "video-2"), "Bearer "+good, "", "Origin", "https://evil.example")
	}
	do(t, "GET", grantURL(pub.URL, "ai-hero", "legacy-room"), "Bearer "+grant(t, grantSecret, "ai-hero", []string{"legacy-room"}, tokenNow, time.Minute), "")
	for _, k := range []string{adminToken, grantSecret, dropInSec, good, testKey + "x"} {
		do(t, "POST", pub.URL+"/v1/realtime/token", "Bearer "+k, `{"room":"video-1"}`)
		do(t, "POST", pub.URL+"/v1/broadcast", "Bearer "+k, `{"room":"r","name":"n","body":1}`)
		do(t, "POST", pub.URL+"/apps/ai-hero/party/r", "", `{"body":1,"name":"n"}`, "X-Switchyard-Secret", k)
		do(t, "GET", adm.URL+"/metrics", "Bearer "+k, "")
	}
	do(t, "POST", pub.URL+"/v1/broadcast", "Bearer "+testKey, `{"room":"r","name":"n","body":1}`) // 502, logged at error
	fm.setErr(&broadcast.Error{Code: broadcast.EUPSTREAM, Transport: broadcast.TransportRealtime, Message: "token failed", Err: context.DeadlineExceeded})
	do(t, "POST", pub.URL+"/v1/realtime/token", "Bearer "+testKey, `{"room":"video-1"}`)

	if logs.Len() < 20 {
		t.Fatalf("only %d log entries: the refusals were not logged at debug", logs.Len())
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		for _, sec := range secrets {
			if strings.Contains(line, sec) {
				t.Errorf("log entry holds a secret (%s...): %s", sec[:8], line)
			}
		}
	}
}

func toString(v any) string {
	if e, ok := v.(error); ok {
		return e.Error()
	}
	return fmt.Sprint(v)
}
