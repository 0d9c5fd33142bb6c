package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// server answers with the statuses in order (the last one repeats) and
// counts the requests and the connections they came on.
func server(t *testing.T, statuses []int, header http.Header, delay time.Duration) (*httptest.Server, *atomic.Int32, *atomic.Int32) {
	t.Helper()
	var n, conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		i := int(n.Add(1)) - 1
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(statuses[min(i, len(statuses)-1)])
		_, _ = io.WriteString(w, strings.Repeat("x", 3000)) // a body to drain
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &n, &conns
}

func caller(reg prometheus.Registerer, p Policy) *Caller {
	return &Caller{
		Client: &http.Client{Transport: NewTransport(4)}, Policy: p, Transport: "legacy", Metrics: NewMetrics(reg),
		Sleep: func(ctx context.Context, d time.Duration) error { return ctx.Err() }, // no real waiting
	}
}

func post(url string) NewRequestFunc {
	return func(ctx context.Context) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"a":1}`))
	}
}

func TestDoRetries(t *testing.T) {
	tests := []struct {
		name         string
		statuses     []int
		header       http.Header
		wantAttempts int
		wantStatus   int // 0: success
	}{
		{"ok at once", []int{200}, nil, 1, 0},
		{"5xx then ok", []int{503, 500, 200}, nil, 3, 0},
		{"502 until attempts run out", []int{502}, nil, 4, 502},
		{"503 until attempts run out", []int{503}, nil, 4, 503},
		{"504 until attempts run out", []int{504}, nil, 4, 504},
		{"the same 500 twice stops", []int{500}, nil, 2, 500},
		{"500 then 503 then the same 500", []int{500, 503, 500, 500}, nil, 4, 500},
		{"507 twice stops", []int{507}, nil, 2, 507},
		{"501 is final", []int{501, 200}, nil, 1, 501},
		{"505 is final", []int{505, 200}, nil, 1, 505},
		{"422 is final", []int{422, 200}, nil, 1, 422},
		{"429 with Retry-After then ok", []int{429, 200}, http.Header{"Retry-After": {"0"}}, 2, 0},
		{"400 is final", []int{400, 200}, nil, 1, 400},
		{"401 is final", []int{401, 200}, nil, 1, 401},
		{"404 is final", []int{404, 200}, nil, 1, 404},
		{"a redirect is not followed", []int{307, 200}, http.Header{"Location": {"/elsewhere"}}, 1, 307},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, n, _ := server(t, tt.statuses, tt.header, 0)
			reg := prometheus.NewRegistry()
			c := caller(reg, Policy{MaxAttempts: 4})
			resp, attempts, err := c.Do(context.Background(), "publish", post(srv.URL))
			if attempts != tt.wantAttempts || int(n.Load()) != tt.wantAttempts {
				t.Fatalf("attempts = %d (server saw %d), want %d", attempts, n.Load(), tt.wantAttempts)
			}
			var se *StatusError
			switch {
			case tt.wantStatus == 0 && (err != nil || resp.Status/100 != 2):
				t.Fatalf("Do = %d, %v; want success", resp.Status, err)
			case tt.wantStatus != 0 && (!errors.As(err, &se) || se.Status != tt.wantStatus):
				t.Fatalf("Do error = %v, want StatusError %d", err, tt.wantStatus)
			}
			if got, want := testutil.ToFloat64(c.Metrics.retries.WithLabelValues("legacy", "publish")), float64(tt.wantAttempts-1); got != want {
				t.Errorf("retries metric = %v, want %v", got, want)
			}
		})
	}
}

// TestDoNetworkErrorRetried: a refused connection is retried, and the
// error says so after the attempts.
func TestDoNetworkErrorRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := caller(nil, Policy{MaxAttempts: 3})
	_, attempts, err := c.Do(context.Background(), "publish", post("http://"+addr))
	if err == nil || attempts != 3 {
		t.Fatalf("Do = attempts %d, err %v; want 3 attempts and an error", attempts, err)
	}
	if got := testutil.ToFloat64(c.Metrics.requests.WithLabelValues("legacy", "publish", "error")); got != 3 {
		t.Errorf("error class count = %v, want 3", got)
	}
}

// TestDoDeadline: a hung upstream is bounded by the attempt timeout and
// the whole call by Timeout.
func TestDoDeadline(t *testing.T) {
	srv, _, _ := server(t, []int{200}, nil, time.Hour)
	c := caller(nil, Policy{Timeout: 300 * time.Millisecond, AttemptTimeout: 100 * time.Millisecond, MaxAttempts: 10})
	c.Sleep = nil // real backoff, bounded by the deadline
	start := time.Now()
	_, _, err := c.Do(context.Background(), "publish", post(srv.URL))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Do took %s, far past its 300ms deadline", el)
	}
}

// TestDoDrainsBodies: answers with bodies keep the connection alive, so
// sequential calls reuse one connection.
func TestDoDrainsBodies(t *testing.T) {
	srv, n, conns := server(t, []int{200}, nil, 0)
	c := caller(nil, Policy{})
	for i := 0; i < 10; i++ {
		if _, _, err := c.Do(context.Background(), "publish", post(srv.URL)); err != nil {
			t.Fatal(err)
		}
	}
	if n.Load() != 10 || conns.Load() != 1 {
		t.Fatalf("10 calls used %d connections for %d requests, want 1", conns.Load(), n.Load())
	}
}

// TestDoRepeatedAnswer: a 500 whose answer text changes between attempts
// is an upstream having trouble, retried to the end; the same text twice
// is the message, and the error says so.
func TestDoRepeatedAnswer(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, fmt.Sprintf("internal error %d", n.Add(1)), http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	c := caller(nil, Policy{MaxAttempts: 4})
	_, attempts, err := c.Do(context.Background(), "publish", post(srv.URL))
	var se *StatusError
	if attempts != 4 || !errors.As(err, &se) || se.Repeated {
		t.Errorf("changing 500s: %d attempts, %v (repeated %v); want 4, not repeated", attempts, err, se != nil && se.Repeated)
	}
	same := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "SyntaxError: Unexpected token", http.StatusInternalServerError)
	}))
	t.Cleanup(same.Close)
	_, attempts, err = c.Do(context.Background(), "publish", post(same.URL))
	if attempts != 2 || !errors.As(err, &se) || !se.Repeated {
		t.Fatalf("the same 500: %d attempts, %v; want 2, repeated", attempts, err)
	}
	if got, want := Describe(err, attempts), "answered 500 after 2 attempts, the same answer each time: caused by the message, not retried further"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		err      error
		attempts int
		want     string
	}{
		{&StatusError{Status: 503, Body: "secret upstream text"}, 4, "answered 503 after 4 attempts"},
		{fmt.Errorf("wrapped: %w", &StatusError{Status: 401}), 1, "answered 401 after 1 attempt"},
		{fmt.Errorf("%w (after 2 attempts: boom)", context.DeadlineExceeded), 2, "timed out after 2 attempts"},
		{context.Canceled, 1, "canceled after 1 attempt"},
		{&net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1999}, Err: errors.New("refused")}, 3, "network error after 3 attempts"},
	}
	for _, tt := range tests {
		if got := Describe(tt.err, tt.attempts); got != tt.want {
			t.Errorf("Describe(%v, %d) = %q, want %q", tt.err, tt.attempts, got, tt.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "2": 2 * time.Second, "-1": 0, "soon": 0} {
		if got := retryAfter(in); got != want {
			t.Errorf("retryAfter(%q) = %s, want %s", in, got, want)
		}
	}
	if got := retryAfter(time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)); got < 59*time.Minute {
		t.Errorf("retryAfter(date in an hour) = %s", got)
	}
}

// TestPostRequest checks that PostRequest sends what
// http.NewRequestWithContext + Header.Set sends, and that GetBody rewinds.
func TestPostRequest(t *testing.T) {
	type seen struct {
		method, uri, ct, secret, body string
		length                        int64
	}
	got := make(chan seen, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, r.Header.Get("Content-Type"), r.Header.Get("X-Secret"), string(b), r.ContentLength}
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	header := http.Header{"Content-Type": {"text/plain;charset=UTF-8"}, "X-Secret": {"s3"}}
	for _, body := range []string{`{"body":{"a":1},"name":"n"}`, ""} {
		req, err := PostRequest(context.Background(), srv.URL+"/parties/main/a!b'(c)*", []byte(body), header)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := req.GetBody()
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(rc); string(b) != body {
			t.Errorf("GetBody read %q, want %q", b, body)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		s := <-got
		want := seen{"POST", "/parties/main/a!b'(c)*", "text/plain;charset=UTF-8", "s3", body, int64(len(body))}
		if s != want {
			t.Errorf("server saw %+v, want %+v", s, want)
		}
	}
	if len(header) != 2 || header.Get("Content-Type") != "text/plain;charset=UTF-8" {
		t.Errorf("the shared header was modified: %v", header)
	}
	if _, err := PostRequest(context.Background(), "http://[::1", nil, header); err == nil {
		t.Error("PostRequest accepted a malformed URL")
	}
}
