package legacyparty_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/upstream"
)

// fastPolicy retries quickly so failure tests stay short.
var fastPolicy = upstream.Policy{Timeout: 3 * time.Second, AttemptTimeout: time.Second, MaxAttempts: 4, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     legacyparty.Config
		wantErr string // "" means valid
	}{
		{"minimal", legacyparty.Config{URL: "http://127.0.0.1:1999"}, ""},
		{"https with path prefix", legacyparty.Config{URL: "https://pk.example.com/", PathPrefix: "/custom/"}, ""},
		{"alias", legacyparty.Config{URL: "http://h", PathPrefix: "/party"}, ""},
		{"alias with main", legacyparty.Config{URL: "http://h", PathPrefix: "/party", Party: "main"}, ""},
		{"secret", legacyparty.Config{URL: "http://h", SecretHeader: "X-Party-Secret", Secret: "s3"}, ""},
		{"missing url", legacyparty.Config{}, "url: required"},
		{"missing scheme", legacyparty.Config{URL: "127.0.0.1:1999"}, "url: missing scheme"},
		{"missing scheme host only", legacyparty.Config{URL: "localhost:1999"}, "url: missing scheme"},
		{"ws scheme", legacyparty.Config{URL: "ws://h"}, "url: scheme \"ws\" not supported"},
		{"no host", legacyparty.Config{URL: "http://"}, "url: missing host"},
		{"query", legacyparty.Config{URL: "http://h?x=1"}, "url: must not contain a query"},
		{"credentials", legacyparty.Config{URL: "http://u:p@h"}, "url: must not contain credentials"},
		{"relative prefix", legacyparty.Config{URL: "http://h", PathPrefix: "parties"}, "pathPrefix:"},
		{"bad party", legacyparty.Config{URL: "http://h", Party: "a/b"}, "party:"},
		{"alias with other party", legacyparty.Config{URL: "http://h", PathPrefix: "/party", Party: "chat"}, "party:"},
		{"secret without header", legacyparty.Config{URL: "http://h", Secret: "s"}, "secretHeader:"},
		{"bad header name", legacyparty.Config{URL: "http://h", SecretHeader: "X Secret", Secret: "s"}, "secretHeader:"},
		{"secret with newline", legacyparty.Config{URL: "http://h", SecretHeader: "X-S", Secret: "a\nb"}, "secret:"},
		{"secret with a control byte", legacyparty.Config{URL: "http://h", SecretHeader: "X-S", Secret: "a\x01b"}, "secret: contains a control byte"},
		{"secret with DEL", legacyparty.Config{URL: "http://h", SecretHeader: "X-S", Secret: "a\x7f"}, "secret: contains a control byte"},
		{"secret with a tab", legacyparty.Config{URL: "http://h", SecretHeader: "X-S", Secret: "a\tb"}, ""},
		{"secret header Host", legacyparty.Config{URL: "http://h", SecretHeader: "host", Secret: "s"}, "secretHeader: \"host\" is a header every publish sets itself"},
		{"secret header Content-Length", legacyparty.Config{URL: "http://h", SecretHeader: "Content-Length", Secret: "s"}, "secretHeader:"},
		{"secret header Content-Type", legacyparty.Config{URL: "http://h", SecretHeader: "content-type", Secret: "s"}, "secretHeader:"},
		{"secret header Connection", legacyparty.Config{URL: "http://h", SecretHeader: "Connection", Secret: "s"}, "secretHeader:"},
		{"negative policy", legacyparty.Config{URL: "http://h", Policy: upstream.Policy{MaxAttempts: -1}}, "policy:"},
		{"url with path", legacyparty.Config{URL: "http://h/base"}, "url: must not carry a path"},
		{"party with dot", legacyparty.Config{URL: "http://h", Party: "main.v2"}, "party:"},
		{"party too long", legacyparty.Config{URL: "http://h", Party: strings.Repeat("p", 65)}, "party:"},
		{"header with underscore", legacyparty.Config{URL: "http://h", SecretHeader: "X_Secret", Secret: "s"}, "secretHeader:"},
		{"header without secret", legacyparty.Config{URL: "http://h", SecretHeader: "X-S"}, "secretHeader:"},
		{"every problem, in field order", legacyparty.Config{URL: "ftp://h", Party: "a/b", Secret: "s"}, "url: scheme \"ftp\" not supported (want http or https)\nparty: \"a/b\": character '/'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want prefix %q", err, tt.wantErr)
			}
		})
	}
}

func TestPublishPaths(t *testing.T) {
	tests := []struct {
		name      string
		cfg       legacyparty.Config
		msgParty  string
		room      string
		wantParty string
		wantRoom  string
		wantCode  string
	}{
		{"default party", legacyparty.Config{}, "", "r1", "main", "r1", ""},
		{"configured party", legacyparty.Config{Party: "chat"}, "", "r1", "chat", "r1", ""},
		{"message party wins", legacyparty.Config{Party: "chat"}, "main", "r1", "main", "r1", ""},
		{"alias", legacyparty.Config{PathPrefix: "/party"}, "", "r1", "main", "r1", ""},
		{"alias refuses other party", legacyparty.Config{PathPrefix: "/party"}, "chat", "r1", "", "", broadcast.EINVALID},
		{"room written as is", legacyparty.Config{}, "", "q!*'()~", "main", "q!*'()~", ""},
		{"invalid party", legacyparty.Config{}, "a b", "r1", "", "", broadcast.EINVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := partytest.MustStart(t, partytest.WithParties("main", "chat"))
			cfg := tt.cfg
			cfg.URL, cfg.Policy = srv.URL(), fastPolicy
			c := mustClient(t, cfg)
			m := mustMessage(t, tt.room, "r", `1`)
			m.Party = tt.msgParty
			_, err := c.Publish(context.Background(), m)
			if got := broadcast.ErrorCode(err); got != tt.wantCode {
				t.Fatalf("error code = %q (%v), want %q", got, err, tt.wantCode)
			}
			pubs := srv.Publishes()
			if tt.wantCode != "" {
				if len(pubs) != 0 {
					t.Fatalf("%d requests sent for a refused message", len(pubs))
				}
				return
			}
			if len(pubs) != 1 {
				t.Fatalf("got %d publishes, want 1", len(pubs))
			}
			if pubs[0].Party != tt.wantParty || pubs[0].Room != tt.wantRoom {
				t.Errorf("published to %s/%s, want %s/%s", pubs[0].Party, pubs[0].Room, tt.wantParty, tt.wantRoom)
			}
		})
	}
}

func TestPublishSendsExactBytesAndHeaders(t *testing.T) {
	srv := partytest.MustStart(t, partytest.WithSecret("X-Party-Secret", "hunter2"))
	c := mustClient(t, legacyparty.Config{URL: srv.URL(), SecretHeader: "X-Party-Secret", Secret: "hunter2", Policy: fastPolicy})
	m := mustMessage(t, "room", "req", `{"n":1.0,"big":12345678901234567890, "s":"\u00e9<>"}`)
	res, err := c.Publish(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 1 {
		t.Errorf("attempts = %d, want 1", res.Attempts)
	}
	pubs := srv.Publishes()
	if len(pubs) != 1 {
		t.Fatalf("got %d publishes, want 1", len(pubs))
	}
	if got, want := string(pubs[0].Body), string(m.Envelope); got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
	if got, want := pubs[0].Header.Get("Content-Type"), "text/plain;charset=UTF-8"; got != want {
		t.Errorf("Content-Type = %q, want %q", got, want)
	}
	if got, want := pubs[0].Header.Get("X-Party-Secret"), "hunter2"; got != want {
		t.Errorf("secret header = %q, want %q", got, want)
	}
}

func TestPublishWrongSecretIsNotRetried(t *testing.T) {
	srv := partytest.MustStart(t, partytest.WithSecret("X-Party-Secret", "right"))
	c := mustClient(t, legacyparty.Config{URL: srv.URL(), SecretHeader: "X-Party-Secret", Secret: "wrong", Policy: fastPolicy})
	res, err := c.Publish(context.Background(), mustMessage(t, "room", "req", `1`))
	assertUpstreamError(t, err, "answered 401 after 1 attempt")
	if res.Attempts != 1 {
		t.Errorf("attempts = %d, want 1", res.Attempts)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("error %q leaks the secret", err)
	}
}

// assertUpstreamError checks a legacy EUPSTREAM error and its client-safe
// message, upstream.Describe's (the multicast adapter, not the transport,
// says which transport failed).
func assertUpstreamError(t *testing.T, err error, wantMsg string) {
	t.Helper()
	var be *broadcast.Error
	if !errors.As(err, &be) {
		t.Fatalf("error = %v, want *broadcast.Error", err)
	}
	if be.Code != broadcast.EUPSTREAM || be.Transport != broadcast.TransportLegacy {
		t.Errorf("code, transport = %q, %q, want %q, %q", be.Code, be.Transport, broadcast.EUPSTREAM, broadcast.TransportLegacy)
	}
	if be.Message != wantMsg {
		t.Errorf("message = %q, want %q", be.Message, wantMsg)
	}
	if be.Err == nil {
		t.Error("cause not wrapped")
	}
}

func TestPublishRetries(t *testing.T) {
	tests := []struct {
		name         string
		failN        int
		status       int
		wantErr      string // "" means success
		wantAttempts int
	}{
		{"5xx then success", 2, 502, "", 3},
		{"the same 500 twice: the message", 10, 500, "answered 500 after 2 attempts, the same answer each time: caused by the message, not retried further", 2},
		{"503 exhausts attempts", 10, 503, "answered 503 after 4 attempts", 4},
		{"429 with Retry-After", 1, 429, "", 2},
		{"404 not retried", 10, 404, "answered 404 after 1 attempt", 1},
		{"400 not retried", 10, 400, "answered 400 after 1 attempt", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := partytest.MustStart(t)
			srv.FailNext(tt.failN, tt.status)
			reg := prometheus.NewRegistry()
			metrics := upstream.NewMetrics(reg)
			c, err := legacyparty.NewClient(legacyparty.Config{URL: srv.URL(), Policy: fastPolicy}, nil, metrics, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.Publish(context.Background(), mustMessage(t, "room", "req", `1`))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("publish: %v", err)
				}
			} else {
				assertUpstreamError(t, err, tt.wantErr)
			}
			if res.Attempts != tt.wantAttempts {
				t.Errorf("attempts = %d, want %d", res.Attempts, tt.wantAttempts)
			}
			if got := len(srv.Publishes()); got != tt.wantAttempts {
				t.Errorf("server saw %d requests, want %d", got, tt.wantAttempts)
			}
			if got, want := counterSum(t, reg, "switchyard_upstream_retries_total"), float64(tt.wantAttempts-1); got != want {
				t.Errorf("retries metric = %v, want %v", got, want)
			}
		})
	}
}

// counterSum returns the sum of every series of the counter name in reg.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestPublishRetriesNetworkErrors(t *testing.T) {
	// The first two connections are cut before any answer, then a real
	// server answers.
	srv := partytest.MustStart(t)
	var cut atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cut.Add(1) <= 2 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, srv.URL()+r.URL.RequestURI(), r.Body)
		req.Header = r.Header
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(proxy.Close)
	c := mustClient(t, legacyparty.Config{URL: proxy.URL, Policy: fastPolicy})
	res, err := c.Publish(context.Background(), mustMessage(t, "room", "req", `1`))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if got, want := res.Attempts, 3; got != want {
		t.Errorf("attempts = %d, want %d", got, want)
	}
	if got, want := len(srv.Publishes()), 1; got != want {
		t.Errorf("server saw %d publishes, want %d", got, want)
	}
}

func TestPublishConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := mustClient(t, legacyparty.Config{URL: "http://" + addr, Policy: fastPolicy})
	res, err := c.Publish(context.Background(), mustMessage(t, "room", "req", `1`))
	assertUpstreamError(t, err, "network error after 4 attempts")
	if res.Attempts != 4 {
		t.Errorf("attempts = %d, want 4", res.Attempts)
	}
	if strings.Contains(broadcast.ErrorMessage(err), addr) {
		t.Errorf("client-safe message %q names the upstream address", broadcast.ErrorMessage(err))
	}
}

func TestPublishDeadline(t *testing.T) {
	tests := []struct {
		name    string
		policy  upstream.Policy
		ctx     time.Duration // caller deadline; 0 = none
		wantMsg string
	}{
		{"policy timeout", upstream.Policy{Timeout: 150 * time.Millisecond, AttemptTimeout: 50 * time.Millisecond, BackoffBase: time.Millisecond, BackoffMax: time.Millisecond}, 0, "timed out after"},
		{"caller deadline", upstream.Policy{Timeout: time.Minute, AttemptTimeout: time.Minute}, 150 * time.Millisecond, "timed out after 1 attempt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := partytest.MustStart(t)
			srv.HangPublishes(true)
			c := mustClient(t, legacyparty.Config{URL: srv.URL(), Policy: tt.policy})
			ctx := context.Background()
			if tt.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctx)
				defer cancel()
			}
			start := time.Now()
			_, err := c.Publish(ctx, mustMessage(t, "room", "req", `1`))
			if elapsed := time.Since(start); elapsed > 10*time.Second {
				t.Errorf("publish returned after %v: deadline not respected", elapsed)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error = %v, want it to wrap context.DeadlineExceeded", err)
			}
			if msg := broadcast.ErrorMessage(err); !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.wantMsg)
			}
		})
	}
}

func TestPublishDrainsBodiesAndReusesConnections(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, strings.Repeat("ok", 10000)) // larger than one read
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := legacyparty.NewClient(legacyparty.Config{URL: srv.URL, Policy: fastPolicy}, &http.Client{Transport: upstream.NewTransport(4)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := c.Publish(context.Background(), mustMessage(t, "room", "req", `1`)); err != nil {
			t.Fatal(err)
		}
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("%d connections for 10 sequential publishes, want 1 (body not drained?)", got)
	}
}

func TestPublishRefusesNilMessage(t *testing.T) {
	c := mustClient(t, legacyparty.Config{URL: "http://127.0.0.1:1"})
	res, err := c.Publish(context.Background(), nil)
	if got, want := broadcast.ErrorCode(err), broadcast.EINVALID; got != want {
		t.Errorf("code = %q, want %q", got, want)
	}
	if res.Attempts != 0 {
		t.Errorf("attempts = %d, want 0", res.Attempts)
	}
}

// jsonKeys returns the top-level keys of one JSON object, duplicates kept
// (json.Unmarshal into a map would hide them).
func jsonKeys(t *testing.T, line []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("log line %s is not a JSON object: %v", line, err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("log line %s: %v", line, err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("log line %s: %v", line, err)
		}
	}
	return keys
}

// The wiring hands each app's Client a logger that already names the app
// (as it does every per-app component); the Client's own lines must not
// add a second "app" key to the JSON.
func TestClientLogNamesTheAppOnce(t *testing.T) {
	srv := partytest.MustStart(t)
	srv.FailNext(10, http.StatusInternalServerError)
	var buf bytes.Buffer
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&buf), zapcore.DebugLevel)
	logger := zap.New(core).Named("legacyparty").With(zap.String("app", "app"))
	c, err := legacyparty.NewClient(legacyparty.Config{URL: srv.URL(), Policy: upstream.Policy{MaxAttempts: 1, Timeout: time.Second}}, nil, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(context.Background(), mustMessage(t, "room", "req", `1`)); err == nil {
		t.Fatal("Publish: got nil, want the upstream failure")
	}
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	found := false
	for _, line := range lines {
		if !bytes.Contains(line, []byte("legacy publish failed")) {
			continue
		}
		found = true
		n := 0
		for _, k := range jsonKeys(t, line) {
			if k == "app" {
				n++
			}
		}
		if n != 1 {
			t.Errorf(`"app" appears %d times in %s, want once`, n, line)
		}
	}
	if !found {
		t.Fatalf("no publish failure logged; log:\n%s", buf.String())
	}
}
