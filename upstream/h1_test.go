package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// rawServer accepts connections on loopback and runs serve on each; it
// counts the connections.
func rawServer(t *testing.T, serve func(c net.Conn)) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String(), &conns
}

// readRequest reads one request from br (nil at the end of the connection).
func readRequest(t *testing.T, br *bufio.Reader) *http.Request {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil
	}
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		t.Errorf("server: read body: %v", err)
	}
	return req
}

// cannedServer answers every request with the next of answers (the last
// one repeats), then keeps or closes the connection as the answer says.
func cannedServer(t *testing.T, answers ...string) (string, *atomic.Int32) {
	var n atomic.Int32
	return rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for readRequest(t, br) != nil {
			i := int(n.Add(1)) - 1
			a := answers[min(i, len(answers)-1)]
			if _, err := io.WriteString(c, a); err != nil {
				return
			}
			if strings.Contains(a, "Connection: close") || !strings.Contains(a, "\r\n\r\n") {
				return
			}
		}
	})
}

// fastCaller is a Caller on a Transport whose HTTP/1.1 path makes raw
// system calls, as the gateway's (server.socketIO raw, the default).
func fastCaller(p Policy) (*Caller, *Transport) {
	tr := NewTransportWith(TransportOptions{MaxIdleConnsPerHost: 4, RawSocketIO: true})
	return &Caller{
		Client: &http.Client{Transport: tr}, Policy: p, Transport: "legacy", Metrics: NewMetrics(prometheus.NewRegistry()),
		Sleep: func(ctx context.Context, d time.Duration) error { return ctx.Err() },
	}, tr
}

func mustHeader(t *testing.T, h http.Header) *Header {
	t.Helper()
	ph, err := NewHeader(h)
	if err != nil {
		t.Fatal(err)
	}
	return ph
}

// TestPostWireMatchesNetHTTP: the HTTP/1.1 path sends what net/http sends
// for the same publish (method, request-target, Host, headers, body).
func TestPostWireMatchesNetHTTP(t *testing.T) {
	type seen struct {
		method, uri, host, ct, secret, ua, body string
		length                                  int64
		te                                      []string
	}
	got := make(chan seen, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, r.Host, r.Header.Get("Content-Type"), r.Header.Get("X-Secret"), r.UserAgent(), string(b), r.ContentLength, r.TransferEncoding}
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	h := mustHeader(t, http.Header{"Content-Type": {"text/plain;charset=UTF-8"}, "X-Secret": {"s3"}})
	target := srv.URL + "/parties/main/a!b'(c)*%2F?x=%20y"
	fast, tr := fastCaller(Policy{})
	std := &Caller{Client: &http.Client{Transport: &http.Transport{}}, Transport: "legacy"}
	for _, body := range []string{`{"body":{"a":1},"name":"n"}`, ""} {
		var views [2]seen
		for i, c := range []*Caller{fast, std} {
			if n, err := c.Post(context.Background(), "publish", target, h, []byte(body)); err != nil || n != 1 {
				t.Fatalf("Post: %d attempts, %v", n, err)
			}
			views[i] = <-got
		}
		if views[0].method != views[1].method || views[0].uri != views[1].uri || views[0].host != views[1].host ||
			views[0].ct != views[1].ct || views[0].secret != views[1].secret || views[0].ua != views[1].ua ||
			views[0].body != views[1].body || views[0].length != views[1].length || len(views[0].te) != 0 {
			t.Errorf("HTTP/1.1 path sent %+v, net/http %+v", views[0], views[1])
		}
		if views[0].uri != "/parties/main/a!b'(c)*%2F?x=%20y" || views[0].body != body {
			t.Errorf("server saw %+v", views[0])
		}
	}
	if s := tr.stats(); s.Dials != 1 || s.Reused != 1 || s.Std != 0 {
		t.Errorf("stats %+v, want 1 dial and 1 reuse on the HTTP/1.1 path", s)
	}
}

// TestReadAnswerFraming holds the answer parser to HTTP/1.1 framing,
// including the tricks a hostile or broken upstream could play.
func TestReadAnswerFraming(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		status int
		body   string // kept body (non-2xx only)
		keep   bool
		errHas string
	}{
		{"ok with length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "", true, ""},
		{"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 200, "", true, ""},
		{"bare LF lines", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 200, "", true, ""},
		{"error body kept", "HTTP/1.1 500 Internal\r\nContent-Length: 4\r\n\r\nboom", 500, "boom", true, ""},
		{"chunked", "HTTP/1.1 503 x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n", 503, "abcde", true, ""},
		{"chunked and length: chunked wins, connection not reused", "HTTP/1.1 500 x\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", 500, "a", false, ""},
		{"to the end of the connection", "HTTP/1.1 502 x\r\n\r\nbad gateway", 502, "bad gateway", false, ""},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 200, "", false, ""},
		{"HTTP/1.0 without keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200, "", false, ""},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 200, "", true, ""},
		{"100 continue skipped", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, "", true, ""},
		{"204 has no body", "HTTP/1.1 204 No Content\r\n\r\n", 204, "", true, ""},
		{"retry-after", "HTTP/1.1 429 x\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n", 429, "", true, ""},
		{"same length twice", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", 200, "", true, ""},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", 0, "", false, "Content-Length"},
		{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, "", false, "Content-Length"},
		{"length with sign", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", 0, "", false, "Content-Length"},
		{"gzip transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, "", false, "Transfer-Encoding"},
		{"101 switching", "HTTP/1.1 101 Switching Protocols\r\n\r\n", 0, "", false, "101"},
		{"HTTP/2 status line", "HTTP/2 200\r\n\r\n", 0, "", false, "status line"},
		{"status not digits", "HTTP/1.1 2x0 OK\r\n\r\n", 0, "", false, "status"},
		{"status under 100", "HTTP/1.1 099 x\r\n\r\n", 0, "", false, "status"},
		{"junk", "garbage\r\n\r\n", 0, "", false, "status line"},
		{"header without colon", "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", 0, "", false, "field name"},
		{"folded header", "HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n", 0, "", false, "field name"},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", 0, "", false, "field name"},
		{"NUL in value", "HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n", 0, "", false, "control byte"},
		{"CR in value", "HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n", 0, "", false, "control byte"},
		{"short body", "HTTP/1.1 500 x\r\nContent-Length: 10\r\n\r\nabc", 0, "", false, "unexpected EOF"},
		{"empty answer", "", 0, "", false, "EOF"},
		{"cut in the headers", "HTTP/1.1 200 OK\r\nContent-Len", 0, "", false, "EOF"},
		{"bad chunk size", "HTTP/1.1 500 x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, "", false, ""},
		{"too many 1xx", strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 7) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, "", false, "informational"},
		{"huge header", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: "+strings.Repeat("a", 3000)+"\r\n", 30) + "\r\n", 0, "", false, "over"},
		{"long header line", "HTTP/1.1 200 OK\r\nX-A: " + strings.Repeat("a", 20000) + "\r\nContent-Length: 0\r\n\r\n", 200, "", true, ""},
		{"line over the header limit", "HTTP/1.1 200 OK\r\nX-A: " + strings.Repeat("a", 70000) + "\r\n\r\n", 0, "", false, "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, keep, _, err := readAnswer1(bufio.NewReaderSize(strings.NewReader(tt.in), 4096))
			if tt.errHas != "" || (tt.status == 0 && err != nil) {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err %v, want one naming %q", err, tt.errHas)
				}
				if keep {
					t.Error("a failed answer kept its connection")
				}
				return
			}
			if tt.status == 0 {
				t.Fatalf("accepted %q: status %d", tt.in, a.status)
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.status != tt.status || string(a.body) != tt.body || keep != tt.keep {
				t.Errorf("got status %d body %q keep %v, want %d %q %v", a.status, a.body, keep, tt.status, tt.body, tt.keep)
			}
		})
	}
}

// TestReadAnswerLimits: a non-2xx body keeps its first 64 KiB; a body
// within the drain limit keeps the connection, a longer one closes it.
func TestReadAnswerLimits(t *testing.T) {
	for _, tc := range []struct {
		n    int
		keep bool
	}{{100 << 10, true}, {maxBody + maxDrain + 1, false}} {
		body := strings.Repeat("x", tc.n)
		in := "HTTP/1.1 500 x\r\nContent-Length: " + strconv.Itoa(tc.n) + "\r\n\r\n" + body + "HTTP/1.1 200 OK\r\n"
		a, keep, _, err := readAnswer1(bufio.NewReaderSize(strings.NewReader(in), 4096))
		if err != nil {
			t.Fatal(err)
		}
		if len(a.body) != maxBody || keep != tc.keep {
			t.Errorf("%d-byte body: kept %d bytes, keep %v; want %d, %v", tc.n, len(a.body), keep, maxBody, tc.keep)
		}
	}
}

// FuzzReadAnswer: whatever an upstream sends, the parser does not panic,
// and an answer it accepts is one net/http reads the same way (same status
// and, for a non-2xx answer, the same first bytes of the body).
func FuzzReadAnswer(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 500 x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 x\r\nContent-Length: 1\r\n\r\nn",
		"HTTP/1.0 503 x\r\n\r\nbody",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		a, _, _, err := readAnswer1(bufio.NewReaderSize(bytes.NewReader(in), 4096))
		if err != nil {
			return
		}
		// net/http's transport skips 1xx answers as readAnswer1 does.
		br := bufio.NewReader(bytes.NewReader(in))
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
		for err == nil && resp.StatusCode < 200 && resp.StatusCode != 101 {
			resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodPost})
		}
		if err != nil {
			t.Fatalf("accepted %q, net/http refuses it: %v", in, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != a.status {
			t.Fatalf("%q: status %d, net/http %d", in, a.status, resp.StatusCode)
		}
		if a.status >= 200 && a.status < 300 {
			return
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err == nil && !bytes.Equal(b, a.body) {
			t.Fatalf("%q: body %q, net/http %q", in, a.body, b)
		}
	})
}

// TestPostStaleConnection: an upstream that closed a pooled connection
// while it was idle costs no attempt: the exchange is made again on a new
// connection.
func TestPostStaleConnection(t *testing.T) {
	var served atomic.Int32
	base, conns := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if readRequest(t, br) == nil {
			return
		}
		served.Add(1)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// keep-alive promised, then closed: what an idle timeout does
	})
	c, tr := fastCaller(Policy{MaxAttempts: 1})
	h := mustHeader(t, http.Header{"Content-Type": {"text/plain"}})
	for i := range 3 {
		if n, err := c.Post(context.Background(), "publish", base+"/p", h, []byte("x")); err != nil || n != 1 {
			t.Fatalf("publish %d: %d attempts, %v", i, n, err)
		}
		time.Sleep(20 * time.Millisecond) // let the close arrive
	}
	if served.Load() != 3 || conns.Load() < 3 {
		t.Errorf("served %d on %d connections, want 3 on 3", served.Load(), conns.Load())
	}
	if s := tr.stats(); s.Dials != 3 {
		t.Errorf("stats %+v, want 3 dials", s)
	}
}

// TestPostHungUpstream: an upstream that takes the request and never
// answers ends the attempt at its deadline, counted as a timeout, and a
// canceled caller is let go at once.
func TestPostHungUpstream(t *testing.T) {
	release := make(chan struct{})
	base, _ := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		readRequest(t, br)
		<-release
	})
	defer close(release)
	c, _ := fastCaller(Policy{Timeout: 300 * time.Millisecond, AttemptTimeout: 100 * time.Millisecond, MaxAttempts: 2})
	h := mustHeader(t, http.Header{})
	start := time.Now()
	n, err := c.Post(context.Background(), "publish", base+"/p", h, []byte("x"))
	if err == nil || n != 2 || !errors.Is(err, context.DeadlineExceeded) || Describe(err, n) != "timed out after 2 attempts" {
		t.Fatalf("hung upstream: %d attempts, %v (%s)", n, err, Describe(err, n))
	}
	var ue *url.Error
	if !errors.As(err, &ue) || ue.Op != "Post" {
		t.Errorf("error %v is not a *url.Error of Post", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	c2, _ := fastCaller(Policy{Timeout: 10 * time.Second, AttemptTimeout: 10 * time.Second, MaxAttempts: 1})
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	n, err = c2.Post(ctx, "publish", base+"/p", h, []byte("x"))
	if !errors.Is(err, context.Canceled) || Describe(err, n) != "canceled after 1 attempt" {
		t.Fatalf("canceled: %d attempts, %v", n, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancel took %v", d)
	}
}

// TestPostUpstreamStopsReading: a request larger than the socket buffers
// to an upstream that stops reading. The write waits past the cancellation
// poll while the attempt lasts (a slow reader gets the whole request, over
// TLS too, where a timed-out write would break the connection), ends at
// the attempt's deadline when the upstream never reads, and at once when
// the caller cancels.
func TestPostUpstreamStopsReading(t *testing.T) {
	big := bytes.Repeat([]byte("b"), 32<<20) // more than loopback buffers hold
	const pause = 3 * cancelPoll
	h := mustHeader(t, http.Header{})
	slowReader := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(pause)
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil || n != int64(len(big)) {
			t.Errorf("server read %d of %d bytes: %v", n, len(big), err)
		}
	}
	t.Run("slow reader", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(slowReader))
		defer srv.Close()
		for _, raw := range []bool{true, false} {
			c, tr := fastCaller(Policy{Timeout: 10 * time.Second, AttemptTimeout: 10 * time.Second, MaxAttempts: 1})
			tr.h1.rawIO = raw
			if _, err := c.Post(context.Background(), "publish", srv.URL+"/p", h, big); err != nil {
				t.Fatalf("a reader pausing %v (raw system calls %v): %v", pause, raw, err)
			}
		}
	})
	t.Run("slow reader over TLS", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(slowReader))
		srv.StartTLS()
		defer srv.Close()
		roots := x509.NewCertPool()
		roots.AddCert(srv.Certificate())
		c, tr := fastCaller(Policy{Timeout: 10 * time.Second, AttemptTimeout: 10 * time.Second, MaxAttempts: 1})
		tr.h1.tlsConfig = &tls.Config{RootCAs: roots}
		if _, err := c.Post(context.Background(), "publish", srv.URL+"/p", h, big); err != nil {
			t.Fatalf("a TLS reader pausing %v: %v", pause, err)
		}
		if s := tr.stats(); s.Dials != 1 || s.Std != 0 {
			t.Errorf("not on the pooled HTTP/1.1 path: %+v", s)
		}
	})
	release := make(chan struct{})
	base, _ := rawServer(t, func(c net.Conn) {
		_, _ = bufio.NewReader(c).ReadString('\n')
		<-release
	})
	defer close(release)
	t.Run("never reads", func(t *testing.T) {
		const attempt = 500 * time.Millisecond
		c, _ := fastCaller(Policy{Timeout: attempt, AttemptTimeout: attempt, MaxAttempts: 1})
		start := time.Now()
		n, err := c.Post(context.Background(), "publish", base+"/p", h, big)
		d := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) || Describe(err, n) != "timed out after 1 attempt" {
			t.Fatalf("upstream not reading: %d attempts, %v", n, err)
		}
		if d < attempt-50*time.Millisecond || d > attempt+time.Second {
			t.Errorf("ended after %v, want about %v", d, attempt)
		}
	})
	t.Run("caller cancels", func(t *testing.T) {
		c, _ := fastCaller(Policy{Timeout: 10 * time.Second, AttemptTimeout: 10 * time.Second, MaxAttempts: 1})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		n, err := c.Post(ctx, "publish", base+"/p", h, big)
		if !errors.Is(err, context.Canceled) || Describe(err, n) != "canceled after 1 attempt" {
			t.Fatalf("canceled: %d attempts, %v", n, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("cancel took %v", d)
		}
	})
}

// TestPostRetriesAndMetrics: the HTTP/1.1 path is classified and counted
// as Do's: 503 retried, 400 final, the attempts and classes counted.
func TestPostRetriesAndMetrics(t *testing.T) {
	base, conns := cannedServer(t,
		"HTTP/1.1 503 busy\r\nContent-Length: 4\r\n\r\nbusy",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	c, _ := fastCaller(Policy{})
	h := mustHeader(t, http.Header{})
	n, err := c.Post(context.Background(), "publish", base+"/p", h, []byte("x"))
	if err != nil || n != 2 {
		t.Fatalf("503 then 200: %d attempts, %v", n, err)
	}
	if conns.Load() != 1 {
		t.Errorf("%d connections, want the one kept alive", conns.Load())
	}
	base2, _ := cannedServer(t, "HTTP/1.1 400 Bad Request\r\nContent-Length: 7\r\n\r\nno room")
	n, err = c.Post(context.Background(), "publish", base2+"/p", h, []byte("x"))
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 400 || se.Body != "no room" || n != 1 {
		t.Fatalf("400: %d attempts, %v", n, err)
	}
	reg := prometheus.NewRegistry()
	c.Metrics = NewMetrics(reg)
	_, _ = c.Post(context.Background(), "publish", base2+"/p", h, []byte("x"))
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "switchyard_upstream_requests_total" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "class" && l.GetValue() == "4xx" && m.GetCounter().GetValue() == 1 {
						found = true
					}
				}
			}
		}
	}
	if !found {
		t.Error("the 400 was not counted under class 4xx")
	}
}

// TestPostMalformedAnswerNotReused: an answer the parser refuses is a
// network error of the attempt (retried), and its connection is not used
// again.
func TestPostMalformedAnswerNotReused(t *testing.T) {
	base, conns := cannedServer(t,
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	c, _ := fastCaller(Policy{})
	n, err := c.Post(context.Background(), "publish", base+"/p", mustHeader(t, http.Header{}), []byte("x"))
	if err != nil || n != 2 {
		t.Fatalf("%d attempts, %v", n, err)
	}
	if conns.Load() != 2 {
		t.Errorf("%d connections, want a new one after the malformed answer", conns.Load())
	}
}

// TestPostIdlePool: idle connections are kept up to the pool size and
// closed after the idle timeout; CloseIdleConnections closes them.
func TestPostIdlePool(t *testing.T) {
	var open atomic.Int32
	base, _ := rawServer(t, func(c net.Conn) {
		open.Add(1)
		defer open.Add(-1)
		br := bufio.NewReader(c)
		for readRequest(t, br) != nil {
			time.Sleep(30 * time.Millisecond)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	c, tr := fastCaller(Policy{})
	tr.h1.idleTimeout = 300 * time.Millisecond
	h := mustHeader(t, http.Header{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Post(context.Background(), "publish", base+"/p", h, []byte("x")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	p, _ := tr.h1.pool(base)
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	if idle != 4 {
		t.Errorf("%d idle connections, want the pool size 4", idle)
	}
	waitFor(t, func() bool { return open.Load() == 0 }, "idle connections closed after the idle timeout")

	if _, err := c.Post(context.Background(), "publish", base+"/p", h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return open.Load() == 1 }, "one connection")
	c.Client.CloseIdleConnections()
	waitFor(t, func() bool { return open.Load() == 0 }, "CloseIdleConnections closes the pool")
}

// TestPostIdleTimeoutCountsFromLastUse: a connection used more often than
// the idle timeout stays the one connection, and is closed an idle timeout
// after its last use, not after its first.
func TestPostIdleTimeoutCountsFromLastUse(t *testing.T) {
	const idleTimeout = time.Second // far above a loaded machine's oversleep
	var accepted, open atomic.Int32
	closed := make(chan time.Time, 1)
	base, _ := rawServer(t, func(c net.Conn) {
		accepted.Add(1)
		open.Add(1)
		defer open.Add(-1)
		br := bufio.NewReader(c)
		for readRequest(t, br) != nil {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
		select {
		case closed <- time.Now():
		default: // a second connection: the test fails on the count
		}
	})
	c, tr := fastCaller(Policy{})
	tr.h1.idleTimeout = idleTimeout
	h := mustHeader(t, http.Header{})
	var last time.Time
	for range 12 { // 2.4 s, more than two idle timeouts
		if _, err := c.Post(context.Background(), "publish", base+"/p", h, []byte("x")); err != nil {
			t.Fatal(err)
		}
		last = time.Now()
		time.Sleep(idleTimeout / 5)
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("%d connections for requests %v apart, want 1 (closed while in use)", n, idleTimeout/5)
	}
	select {
	case at := <-closed:
		if d := at.Sub(last); d < idleTimeout-50*time.Millisecond {
			t.Fatalf("closed %v after its last use, want about %v", d, idleTimeout)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the idle connection was never closed")
	}
	if n := open.Load(); n != 0 {
		t.Fatalf("%d connections open", n)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting: %s", what)
}

// TestPostFallsBackToNetHTTP: a proxied upstream, a target with userinfo
// or a fragment, and a custom RoundTripper go through net/http.
func TestPostFallsBackToNetHTTP(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	h := mustHeader(t, http.Header{})

	c, tr := fastCaller(Policy{MaxAttempts: 1})
	proxyURL, _ := url.Parse(srv.URL) // the server answers the proxied request itself
	tr.h1.proxy = func(*http.Request) (*url.URL, error) { return proxyURL, nil }
	tr.std.Proxy = tr.h1.proxy
	if _, err := c.Post(context.Background(), "publish", "http://upstream.invalid/p", h, []byte("x")); err != nil {
		t.Fatalf("proxied: %v", err)
	}
	if s := tr.stats(); s.Std != 1 || s.Dials != 0 {
		t.Errorf("proxied: stats %+v, want it through net/http", s)
	}

	c2, tr2 := fastCaller(Policy{MaxAttempts: 1})
	u, _ := url.Parse(srv.URL)
	for _, target := range []string{"http://user:pw@" + u.Host + "/p", srv.URL + "/p#frag"} {
		if _, err := c2.Post(context.Background(), "publish", target, h, []byte("x")); err != nil {
			t.Fatalf("%s: %v", target, err)
		}
	}
	if s := tr2.stats(); s.Std != 2 || s.Dials != 0 {
		t.Errorf("stats %+v, want both through net/http", s)
	}
	if _, err := c2.Post(context.Background(), "publish", "http://[::1/p", h, nil); err == nil {
		t.Error("a malformed URL was accepted")
	}

	custom := &Caller{Client: &http.Client{Transport: &http.Transport{}}, Transport: "legacy"}
	if _, err := custom.Post(context.Background(), "publish", srv.URL+"/p", h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != 4 {
		t.Errorf("server saw %d requests, want 4", hits.Load())
	}
}

// TestPostTLS: over HTTPS, an upstream offering only HTTP/1.1 is served
// on the pooled path with one handshake for many messages; one offering
// HTTP/2 gets HTTP/2 through net/http, unless HTTP1Only.
func TestPostTLS(t *testing.T) {
	for _, tc := range []struct{ h2, http1Only bool }{{false, false}, {true, false}, {true, true}} {
		h2 := tc.h2
		var protos sync.Map
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			protos.Store(r.Proto, true)
			_, _ = io.WriteString(w, "ok")
		}))
		srv.EnableHTTP2 = h2
		srv.StartTLS()
		roots := x509.NewCertPool()
		roots.AddCert(srv.Certificate())
		c, tr := fastCaller(Policy{MaxAttempts: 1})
		if tc.http1Only {
			tr = NewTransportWith(TransportOptions{MaxIdleConnsPerHost: 4, HTTP1Only: true})
			c.Client = &http.Client{Transport: tr}
		}
		tr.h1.tlsConfig = &tls.Config{RootCAs: roots}
		tr.std.TLSClientConfig = &tls.Config{RootCAs: roots}
		h := mustHeader(t, http.Header{})
		for i := range 5 {
			if _, err := c.Post(context.Background(), "publish", srv.URL+"/p", h, []byte("x")); err != nil {
				t.Fatalf("h2 %v, publish %d: %v", h2, i, err)
			}
		}
		s := tr.stats()
		_, sawH1 := protos.Load("HTTP/1.1")
		_, sawH2 := protos.Load("HTTP/2.0")
		if (!h2 || tc.http1Only) && (s.Dials != 1 || s.Reused != 4 || !sawH1 || sawH2) {
			t.Errorf("HTTP/1.1 (h2 offered %v, HTTP1Only %v): stats %+v, h1 %v h2 %v", h2, tc.http1Only, s, sawH1, sawH2)
		}
		if h2 && !tc.http1Only && (s.Std != 5 || !sawH2 || sawH1) {
			t.Errorf("HTTP/2 upstream: stats %+v, h1 %v h2 %v", s, sawH1, sawH2)
		}
		srv.Close()
	}
	// An untrusted certificate is a failed attempt, never a delivery.
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	c, _ := fastCaller(Policy{MaxAttempts: 1})
	if _, err := c.Post(context.Background(), "publish", srv.URL+"/p", mustHeader(t, http.Header{}), []byte("x")); err == nil {
		t.Error("an untrusted certificate was accepted")
	}
}

func TestNewHeaderRefuses(t *testing.T) {
	for _, h := range []http.Header{
		{"Bad Name": {"x"}},
		{"X-A": {"a\r\nInjected: 1"}},
		{"X-A": {"a\x00"}},
		{"Content-Length": {"3"}},
		{"Host": {"evil"}},
		{"Transfer-Encoding": {"chunked"}},
	} {
		if _, err := NewHeader(h); err == nil {
			t.Errorf("NewHeader(%v) accepted", h)
		}
	}
	src := http.Header{"X-A": {"1"}}
	ph := mustHeader(t, src)
	src.Set("X-A", "2")
	if ph.HTTP().Get("X-A") != "1" || string(ph.wire) != "X-A: 1\r\n" {
		t.Errorf("header changed with its source: %v %q", ph.HTTP(), ph.wire)
	}
}

func TestSplitTarget(t *testing.T) {
	for _, tc := range []struct{ in, origin, uri string }{
		{"http://h:1/a?b=c", "http://h:1", "/a?b=c"},
		{"https://h/x", "https://h", "/x"},
		{"http://[::1]:80/p", "http://[::1]:80", "/p"},
	} {
		o, u, ok := splitTarget(tc.in)
		if !ok || o != tc.origin || u != tc.uri {
			t.Errorf("splitTarget(%q) = %q %q %v", tc.in, o, u, ok)
		}
	}
	for _, in := range []string{"ftp://h/x", "http://h", "http:///x", "http://u@h/x", "http://h/a b", "http://h/a#f", "http://h/\x7f", "http://h/é"} {
		if _, _, ok := splitTarget(in); ok {
			t.Errorf("splitTarget(%q) accepted", in)
		}
	}
}

// BenchmarkPost compares one publish exchange on the HTTP/1.1 path with
// the same call through net/http (PostRequest on an *http.Transport), side
// by side against the same keep-alive server: allocations per call are
// the Caller's and the client's only (the server's are counted too, and
// are the same on both sides).
func BenchmarkPost(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	h, err := NewHeader(http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer signkey-prod-0123456789abcdef"}})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"body":{"assetId":"a-123","status":"ready"},"requestId":"lg-17-123456","name":"video-ready"}`)
	target := srv.URL + "/parties/main/room-17"
	std := NewTransport(8)
	for _, tc := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"h1", NewTransport(8)},
		{"nethttp", std.std}, // the same tuned *http.Transport, without the Post path
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := &Caller{Client: &http.Client{Transport: tc.rt}, Transport: "legacy", Metrics: NewMetrics(nil)}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Post(ctx, "publish", target, h, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPostUpstreamRestartFullPool: an upstream that closes every
// connection at once (a restart) while the pool is full costs no publish
// an attempt: the first stale connection found drops the others, and the
// exchange is made on a new connection.
func TestPostUpstreamRestartFullPool(t *testing.T) {
	var mu sync.Mutex
	var live []net.Conn
	base, _ := rawServer(t, func(c net.Conn) {
		mu.Lock()
		live = append(live, c)
		mu.Unlock()
		br := bufio.NewReader(c)
		for readRequest(t, br) != nil {
			time.Sleep(20 * time.Millisecond) // so that the callers overlap
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	})
	c, tr := fastCaller(Policy{MaxAttempts: 1})
	h := mustHeader(t, http.Header{})
	post := func() (int, error) { return c.Post(context.Background(), "publish", base+"/p", h, []byte("x")) }
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := post(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	p, _ := tr.h1.pool(base)
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	if idle != 4 {
		t.Fatalf("%d idle connections, want a full pool of 4", idle)
	}
	mu.Lock()
	for _, c := range live {
		_ = c.Close() // the restart
	}
	mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	for i := range 4 {
		if n, err := post(); err != nil || n != 1 {
			t.Fatalf("publish %d after the restart: %d attempts, %v", i, n, err)
		}
	}
}
