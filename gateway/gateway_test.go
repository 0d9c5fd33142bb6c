package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

const testKey = "gateway-test-key-0123456789"

// flagFile puts every channel of testConfig at stage.
func flagFile(stage string) string {
	stages := `{"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}`
	var b strings.Builder
	b.WriteString(`{"flags": {"realtime-killswitch": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}`)
	for _, ch := range []string{"video-ready", "ai-stream", "default"} {
		fmt.Fprintf(&b, `, "realtime-%s": {"state": "ENABLED", "variants": %s, "defaultVariant": %q}`, ch, stages, stage)
	}
	b.WriteString("}}\n")
	return b.String()
}

// testConfig is a gateway config on loopback ports in front of the given
// upstreams, its flag file putting every channel at stage.
func testConfig(t *testing.T, partyURL, realtimeURL, stage string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "flags.json"), []byte(flagFile(stage)), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := fmt.Sprintf(`env: test
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
flags: {provider: file, file: flags.json, pollInterval: 200ms}
channels:
  - {name: video-ready, events: [video.asset.ready]}
  - {name: ai-stream, events: [ai.message]}
apps:
  ai-hero:
    apiKeys: [%q]
    party: {url: %q, party: main}
    realtime: {url: %q, channel: "{room}"}
server: {shutdownTimeout: 5s}
`, testKey, partyURL, realtimeURL)
	path := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// running is a gateway whose Run runs in a goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's result, once done is closed
}

// start runs a gateway until the test ends.
func start(t *testing.T, cfg *config.Config, logger *zap.Logger) (*Gateway, *running) {
	t.Helper()
	g, err := New(cfg, logger, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() { r.err = g.Run(ctx); close(r.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("gateway did not stop within 10s")
		}
	})
	return g, r
}

func publish(t *testing.T, g *Gateway, room string) int {
	t.Helper()
	body := fmt.Sprintf(`{"room":%q,"name":"video.asset.ready","requestId":"r-%s","body":{"ok":true}}`, room, room)
	req, _ := http.NewRequest(http.MethodPost, g.PublicURL()+"/v1/broadcast", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestGatewaysRunSideBySide: two gateways in one process, each on its own
// OpenFeature API instance, resolve their own flag files (the global
// provider of old would have given both the second one's stages), and can
// run in parallel tests.
func TestGatewaysRunSideBySide(t *testing.T) {
	t.Parallel()
	party := partytest.MustStart(t)
	rt := realtimetest.NewServer(realtimetest.Config{})
	t.Cleanup(rt.Close)
	legacy, _ := start(t, testConfig(t, party.URL(), rt.URL(), "legacy"), nil)
	dual, _ := start(t, testConfig(t, party.URL(), rt.URL(), "dual"), nil)
	for _, tt := range []struct {
		g    *Gateway
		want string
	}{{legacy, "legacy"}, {dual, "dual"}} {
		resp, err := http.Get(tt.g.AdminURL() + "/v1/admin/routes?app=ai-hero&room=r1&event=video.asset.ready")
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		_, _ = fmt.Fprint(&b, readAll(t, resp))
		if !strings.Contains(b.String(), `"stage":"`+tt.want+`"`) {
			t.Errorf("gateway with %s flags answered %s", tt.want, b.String())
		}
	}
	if got := publish(t, dual, "side-1"); got != http.StatusOK {
		t.Errorf("publish = %d", got)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// TestServersHaveLimits: both listeners carry the configured timeouts and
// header limit.
func TestServersHaveLimits(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "http://127.0.0.1:1", "http://127.0.0.1:1", "legacy")
	g, _ := start(t, cfg, nil)
	for name, s := range map[string]*http.Server{"public": g.publicSrv, "admin": g.adminSrv} {
		if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.WriteTimeout <= 0 || s.IdleTimeout <= 0 {
			t.Errorf("%s server timeouts: header %s read %s write %s idle %s; want all set", name, s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.IdleTimeout)
		}
		if s.MaxHeaderBytes != cfg.Server.MaxHeaderBytes || s.MaxHeaderBytes <= 0 {
			t.Errorf("%s MaxHeaderBytes = %d, want %d", name, s.MaxHeaderBytes, cfg.Server.MaxHeaderBytes)
		}
	}
}

// TestRunStopsOnFirstFailure: a long-lived part that fails while the
// gateway runs (here the admin listener, closed under it) is logged when it
// happens, starts the ordered shutdown, and is what Run returns; a clean
// stop returns nil.
func TestRunStopsOnFirstFailure(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.InfoLevel)
	logger := zap.New(core)
	g, r := start(t, testConfig(t, "http://127.0.0.1:1", "http://127.0.0.1:1", "legacy"), logger)
	waitReady(t, g)
	_ = g.adminLn.Close()
	select {
	case <-r.done:
		if r.err == nil || !strings.Contains(r.err.Error(), "serve") {
			t.Fatalf("Run = %v, want the listener's error", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the admin listener failed")
	}
	if n := logs.FilterMessage("listener failed; shutting down").Len(); n != 1 {
		t.Errorf("failure logged %d times, want once", n)
	}
	if logs.FilterMessage("switchyard stopped").Len() != 1 {
		t.Error("the ordered shutdown did not finish")
	}

	g2, r2 := start(t, testConfig(t, "http://127.0.0.1:1", "http://127.0.0.1:1", "legacy"), nil)
	waitReady(t, g2)
	r2.cancel()
	<-r2.done
	if r2.err != nil {
		t.Errorf("clean stop: Run = %v, want nil", r2.err)
	}
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, g *Gateway) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(g.AdminURL() + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("gateway not ready within 10s")
}

// TestCheckHasNoSideEffects: Check derives every component's
// configuration without creating the recording file.
func TestCheckHasNoSideEffects(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "http://127.0.0.1:1", "http://127.0.0.1:1", "legacy")
	rec := filepath.Join(t.TempDir(), "rec.jsonl")
	cfg.Record.File = rec
	if err := Check(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rec); !os.IsNotExist(err) {
		t.Errorf("Check created the recording file: %v", err)
	}
	// Bad configs are refused by config.Load, which check and serve share
	// (TestConfigCheckAgreesWithServe in cmd/switchyard).
}

// TestPublishLoopSetting: with server.publishLoop own (the default) and
// nethttp, and server.socketIO raw (the default) and std, one keep-alive
// connection carries publishes, a request that only net/http serves, and
// publishes again: each publish is answered 200 and reaches PartyKit
// once, and the other request gets its usual answer.
func TestPublishLoopSetting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ loop, io string }{
		{config.PublishLoopOwn, config.SocketIORaw},
		{config.PublishLoopNetHTTP, config.SocketIORaw},
		{config.PublishLoopOwn, config.SocketIOStd},
		{config.PublishLoopNetHTTP, config.SocketIOStd},
	} {
		loop := tc.loop
		t.Run(loop+"-"+tc.io, func(t *testing.T) {
			party := partytest.MustStart(t)
			rt := realtimetest.NewServer(realtimetest.Config{})
			t.Cleanup(rt.Close)
			cfg := testConfig(t, party.URL(), rt.URL(), "legacy")
			if loop == config.PublishLoopNetHTTP {
				cfg.Server.PublishLoop = loop
			}
			if tc.io == config.SocketIOStd {
				cfg.Server.SocketIO = tc.io
			}
			g, _ := start(t, cfg, nil)
			if got := g.rawIO(); got != (tc.io == config.SocketIORaw) {
				t.Fatalf("socketIO %s: raw system calls %v", tc.io, got)
			}
			waitReady(t, g)
			var want any = g.publicLoop
			if loop == config.PublishLoopNetHTTP {
				want = g.publicSrv
			}
			if any(g.public()) != want {
				t.Fatalf("publishLoop %s serves with %T", loop, g.public())
			}
			tr := &http.Transport{MaxConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			var conns atomic.Int32
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
				if !i.Reused {
					conns.Add(1)
				}
			}}
			room := "loop-" + loop + "-" + tc.io
			do := func(method, path, body string) (int, string) {
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, g.PublicURL()+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+testKey)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				return resp.StatusCode, readAll(t, resp)
			}
			var ids []string
			for i := range 5 {
				if i == 2 {
					if st, b := do(http.MethodGet, "/v1/nowhere", ""); st != http.StatusNotFound || !strings.Contains(b, `"not_found"`) {
						t.Fatalf("GET /v1/nowhere: %d %s", st, b)
					}
				}
				id := fmt.Sprintf("%s-%d", room, i)
				ids = append(ids, id)
				body := fmt.Sprintf(`{"room":%q,"name":"video.asset.ready","requestId":%q,"body":{"i":%d}}`, room, id, i)
				if st, b := do(http.MethodPost, "/v1/broadcast", body); st != http.StatusOK || !strings.Contains(b, `"delivered"`) {
					t.Fatalf("publish %d: %d %s", i, st, b)
				}
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1 (keep-alive across the loop and net/http)", n)
			}
			var got []string
			for _, p := range party.Publishes() {
				var env broadcast.Envelope
				if json.Unmarshal(p.Body, &env) == nil && strings.HasPrefix(env.RequestID, room) {
					got = append(got, env.RequestID)
				}
			}
			if !slices.Equal(got, ids) {
				t.Fatalf("PartyKit got %v, want %v", got, ids)
			}
		})
	}
}
