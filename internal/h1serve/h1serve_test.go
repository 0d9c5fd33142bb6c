package h1serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echo is the handler of these tests: it answers what it was given, and
// who served it (net/http puts its server in the context; the loop does
// not).
type echoAnswer struct {
	By            string              `json:"by"`
	Method        string              `json:"method"`
	Path          string              `json:"path"`
	RawPath       string              `json:"rawPath"`
	Query         string              `json:"query"`
	RequestURI    string              `json:"requestURI"`
	Host          string              `json:"host"`
	Proto         string              `json:"proto"`
	Close         bool                `json:"close"`
	ContentLength int64               `json:"contentLength"`
	Header        map[string][]string `json:"header"`
	Body          string              `json:"body"`
	PathValue     string              `json:"pathValue"`
	RemoteSet     bool                `json:"remoteSet"`
}

func echoMux() http.Handler {
	mux := http.NewServeMux()
	echo := func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
			return
		}
		by := "loop"
		if r.Context().Value(http.ServerContextKey) != nil {
			by = "net/http"
		}
		a := echoAnswer{By: by, Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, Query: r.URL.RawQuery,
			RequestURI: r.RequestURI, Host: r.Host, Proto: r.Proto, Close: r.Close, ContentLength: r.ContentLength,
			Header: r.Header, Body: string(b), PathValue: r.PathValue("room"), RemoteSet: r.RemoteAddr != ""}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a)
	}
	mux.HandleFunc("POST /rooms/{room}", echo)
	mux.HandleFunc("GET /rooms/{room}", echo)
	mux.HandleFunc("POST /status/{code}", func(w http.ResponseWriter, r *http.Request) {
		var code int
		_, _ = fmt.Sscanf(r.PathValue("code"), "%d", &code)
		w.Header().Set("X-Evil", "a\r\nInjected: yes")
		w.Header().Add("X-Multi", "1")
		w.Header().Add("X-Multi", "2")
		if r.URL.Query().Get("close") != "" {
			w.Header().Set("Connection", "close")
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, "<html>status</html>")
	})
	mux.HandleFunc("POST /ignore-body", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ignored")
	})
	mux.HandleFunc("POST /panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	return mux
}

// fixture is a loop (Fast: every POST) and a plain net/http server, both
// with the echo handler and the same timeouts.
type fixture struct {
	loop, plain       string
	srv               *Server
	states            atomic.Int64 // open connections by ConnState, both servers
	loopErr, plainErr chan error
	plainSrv          *http.Server
}

func newFixture(t *testing.T, tune func(*http.Server)) *fixture {
	t.Helper()
	f := &fixture{loopErr: make(chan error, 1), plainErr: make(chan error, 1)}
	count := func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			f.states.Add(1)
		case http.StateClosed, http.StateHijacked:
			f.states.Add(-1)
		}
	}
	mk := func() *http.Server {
		s := &http.Server{Handler: echoMux(), ReadHeaderTimeout: 2 * time.Second, ReadTimeout: 3 * time.Second,
			WriteTimeout: 3 * time.Second, IdleTimeout: 5 * time.Second, MaxHeaderBytes: 16 << 10}
		if tune != nil {
			tune(s)
		}
		return s
	}
	fb := mk()
	fb.ConnState = count
	f.srv = New(Config{Handler: fb.Handler, Fallback: fb, ConnState: count, MaxBodyBytes: 1 << 20,
		Fast: func(method, target string) bool { return method == http.MethodPost }})
	f.plainSrv = mk()
	for _, x := range []struct {
		addr  *string
		serve func(net.Listener) error
		errs  chan error
	}{{&f.loop, f.srv.Serve, f.loopErr}, {&f.plain, f.plainSrv.Serve, f.plainErr}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		*x.addr = ln.Addr().String()
		go func() { x.errs <- x.serve(ln) }()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = f.srv.Shutdown(ctx)
		_ = f.plainSrv.Shutdown(ctx)
	})
	return f
}

// exchange writes raw on a new connection to addr and reads answers
// until n are read or the connection ends.
func exchange(t *testing.T, addr, raw string, n int) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return readAnswers(c, n)
}

func readAnswers(c net.Conn, n int) []*http.Response {
	br := bufio.NewReader(c)
	var out []*http.Response
	for len(out) < n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		out = append(out, resp)
	}
	return out
}

func bodyOf(t *testing.T, r *http.Response) string {
	t.Helper()
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	return string(b)
}

func echoOf(t *testing.T, r *http.Response) echoAnswer {
	t.Helper()
	var a echoAnswer
	if err := json.Unmarshal([]byte(bodyOf(t, r)), &a); err != nil {
		t.Fatalf("answer %d %q: %v", r.StatusCode, bodyOf(t, r), err)
	}
	return a
}

// describe renders an answer without what may differ between two servers:
// the Date field, and who served it.
func describe(t *testing.T, r *http.Response) string {
	t.Helper()
	var keys []string
	for k := range r.Header {
		if k != "Date" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s close=%v\n", r.Status, r.Close)
	bd := bodyOf(t, r)
	var a echoAnswer
	echo := json.Unmarshal([]byte(bd), &a) == nil && a.By != ""
	for _, k := range keys {
		if k == "Content-Length" && echo {
			continue // "by" differs; ReadResponse read exactly that length
		}
		fmt.Fprintf(&b, "%s: %q\n", k, r.Header[k])
	}
	if echo {
		a.By = ""
		nb, _ := json.Marshal(a)
		bd = string(nb)
	}
	b.WriteString(bd)
	return b.String()
}

// TestAnswersMatchNetHTTP sends the same requests to the loop and to
// net/http with the same handler: every answer is the same (Date aside),
// and the loop served exactly the requests it is meant to.
func TestAnswersMatchNetHTTP(t *testing.T) {
	f := newFixture(t, nil)
	long := strings.Repeat("x", 5000)
	cases := []struct {
		name, raw string
		loop      bool // served by the loop (else handed off)
	}{
		{"post", "POST /rooms/r1?a=b&c HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nContent-Type: application/json\r\nX-Two: 1\r\nx-two: 2\r\n\r\nhello", true},
		{"empty body", "POST /rooms/r1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", true},
		{"escaped path", "POST /rooms/a%2Fb%20c HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 0\r\n\r\n", true},
		{"lower-case fields and OWS", "POST /rooms/r HTTP/1.1\r\nhost:h\r\ncontent-length:\t3 \r\nauthorization:   Bearer x  \r\nuser-agent: u\r\nX_Under: 1\r\n\r\nabc", true},
		{"connection close", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", true},
		{"connection keep-alive", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", true},
		{"status 201", "POST /status/201 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", true},
		{"status 204", "POST /status/204 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", true},
		{"status 599", "POST /status/599 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", true},
		{"handler closes", "POST /status/503?close=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", true},
		{"not found", "POST /nowhere HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", true},
		{"405", "POST /ignore-body/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", true},
		// Handed off: net/http answers them as it always did.
		{"get", "GET /rooms/r1 HTTP/1.1\r\nHost: h\r\n\r\n", false},
		{"http/1.0", "POST /rooms/r HTTP/1.0\r\nHost: h\r\nContent-Length: 0\r\n\r\n", false},
		{"no host", "POST /rooms/r HTTP/1.1\r\nContent-Length: 0\r\n\r\n", false},
		{"two hosts", "POST /rooms/r HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n", false},
		{"bad host", "POST /rooms/r HTTP/1.1\r\nHost: a b\r\nContent-Length: 0\r\n\r\n", false},
		{"no length", "POST /rooms/r HTTP/1.1\r\nHost: h\r\n\r\n", false},
		{"chunked", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false},
		{"signed length", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", false},
		{"two lengths", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", false},
		{"expect", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc", false},
		{"upgrade", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n", false},
		{"absolute form", "POST http://h/rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", false},
		{"bad field name", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nBad Name: 1\r\nContent-Length: 0\r\n\r\n", false},
		{"control byte in value", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\nContent-Length: 0\r\n\r\n", false},
		{"body over MaxBodyBytes", "POST /ignore-body HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\nabc", false},
		{"head over the buffer", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nX-Long: " + long + "\r\nContent-Length: 0\r\n\r\n", false},
		{"bad method", "P@ST /rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := exchange(t, f.plain, tc.raw, 1)
			got := exchange(t, f.loop, tc.raw, 1)
			if len(want) != 1 || len(got) != 1 {
				t.Fatalf("answers: net/http %d, loop %d", len(want), len(got))
			}
			if d, w := describe(t, got[0]), describe(t, want[0]); d != w {
				t.Errorf("loop answered\n%s\nnet/http answered\n%s", d, w)
			}
			var a echoAnswer
			if json.Unmarshal([]byte(bodyOf(t, got[0])), &a) == nil && a.By != "" {
				if (a.By == "loop") != tc.loop {
					t.Errorf("served by %s, want the loop: %v", a.By, tc.loop)
				}
			} else if tc.loop && got[0].Header.Get("Date") == "" {
				t.Errorf("no Date field")
			}
		})
	}
}

// TestKeepAliveMixesLoopAndHandOff: one connection, requests written one
// at a time and then pipelined in one write: the loop serves the POSTs
// until the first GET, net/http serves that and every later request, and
// every answer comes back once, in order.
func TestKeepAliveMixesLoopAndHandOff(t *testing.T) {
	f := newFixture(t, nil)
	post := func(room, b string) string {
		return fmt.Sprintf("POST /rooms/%s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", room, len(b), b)
	}
	get := func(room string) string { return "GET /rooms/" + room + " HTTP/1.1\r\nHost: h\r\n\r\n" }
	seq := []string{post("1", "a"), post("2", "bb"), get("3"), post("4", "cccc"), get("5")}
	wantBy := []string{"loop", "loop", "net/http", "net/http", "net/http"}
	for _, pipelined := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelined=%v", pipelined), func(t *testing.T) {
			c, err := net.Dial("tcp", f.loop)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			var answers []*http.Response
			if pipelined {
				_, _ = io.WriteString(c, strings.Join(seq, ""))
				answers = readAnswers(c, len(seq))
			} else {
				br := bufio.NewReader(c)
				for _, r := range seq {
					_, _ = io.WriteString(c, r)
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body = io.NopCloser(bytes.NewReader(b))
					answers = append(answers, resp)
				}
			}
			if len(answers) != len(seq) {
				t.Fatalf("%d answers, want %d", len(answers), len(seq))
			}
			for i, resp := range answers {
				a := echoOf(t, resp)
				if a.PathValue != fmt.Sprint(i+1) || a.By != wantBy[i] {
					t.Errorf("answer %d: room %q by %s, want room %d by %s", i, a.PathValue, a.By, i+1, wantBy[i])
				}
			}
		})
	}
}

// TestConnectionCloseOnce: a handler's Connection: close and the loop's
// own are one field on the wire.
func TestConnectionCloseOnce(t *testing.T) {
	f := newFixture(t, nil)
	for _, raw := range []string{
		"POST /status/503?close=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
		"POST /status/503?close=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
	} {
		c, err := net.Dial("tcp", f.loop)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, raw)
		b, _ := io.ReadAll(c)
		c.Close()
		if n := strings.Count(strings.ToLower(string(b)), "\r\nconnection:"); n != 1 || !strings.Contains(string(b), "\r\nConnection: close\r\n") {
			t.Errorf("answer has %d Connection fields:\n%s", n, b)
		}
	}
}

// TestBodyLeftUnread: a handler that does not read a small body keeps the
// connection (the body is dropped, the next request is served); a
// request it cannot keep up with ends in Connection: close.
func TestBodyLeftUnread(t *testing.T) {
	f := newFixture(t, nil)
	small := "POST /ignore-body HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789"
	next := "POST /rooms/after HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
	got := exchange(t, f.loop, small+next, 2)
	if len(got) != 2 || got[0].Close || echoOf(t, got[1]).PathValue != "after" || echoOf(t, got[1]).By != "loop" {
		t.Fatalf("after an unread small body: %d answers", len(got))
	}
	big := strings.Repeat("z", 300<<10)
	raw := fmt.Sprintf("POST /ignore-body HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", len(big), big) + next
	got = exchange(t, f.loop, raw, 2)
	if len(got) != 1 || !got[0].Close || bodyOf(t, got[0]) != "ignored" {
		t.Fatalf("after an unread 300 KiB body: %d answers (want 1, with Connection: close)", len(got))
	}
}

// TestTruncatedBody: the client ends the connection inside the body; the
// handler sees the error, and nothing is served after it.
func TestTruncatedBody(t *testing.T) {
	f := newFixture(t, func(s *http.Server) {
		s.ReadTimeout = 300 * time.Millisecond
		s.ReadHeaderTimeout = 200 * time.Millisecond
	})
	got := exchange(t, f.loop, "POST /rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc", 2)
	if len(got) != 1 || got[0].StatusCode != http.StatusBadRequest || !strings.Contains(bodyOf(t, got[0]), "body:") || !got[0].Close {
		t.Fatalf("truncated body: %d answers", len(got))
	}
}

// TestSlowClientsAreCut: a slow head, a slow body, and an idle connection
// end at their timeouts, on the loop and after a hand-off alike (the
// hand-off does not restart the clock: TestHandOffKeepsDeadlines).
func TestSlowClientsAreCut(t *testing.T) {
	const hdr, whole, idle = 300 * time.Millisecond, 600 * time.Millisecond, 1500 * time.Millisecond
	const (
		pipelined = "POST /rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok"
		served    = "\x00served\x00" // marks a case whose first request is answered first
	)
	f := newFixture(t, func(s *http.Server) { s.ReadHeaderTimeout, s.ReadTimeout, s.IdleTimeout = hdr, whole, idle })
	cases := []struct {
		name   string
		first  string // written at once
		drip   string // then one byte every 50 ms
		within time.Duration
	}{
		{"slow head", "POST /rooms/r HTTP/1.1\r\nHost: h\r\n", strings.Repeat("X-A: b\r\n", 100), hdr},
		{"slow body", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n", strings.Repeat("b", 100), whole},
		{"slow head after a hand-off", "POST /rooms/r HTTP/1.1\r\nHost: h\r\nX-Long: " + strings.Repeat("l", 5000) + "\r\n", strings.Repeat("X-A: b\r\n", 100), hdr},
		{"slow body after a hand-off", "GET /rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n", strings.Repeat("b", 100), whole},
		// The loop sets a read deadline only before a read that needs the
		// connection; a request after another, or pipelined behind one,
		// must still be cut.
		{"second request, slow head", served + "POST /rooms/r HTTP/1.1\r\nHost: h\r\n", strings.Repeat("X-A: b\r\n", 100), hdr},
		{"second request, slow body", served + "POST /rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n", strings.Repeat("b", 100), whole},
		{"pipelined, slow body", pipelined + "POST /rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n", strings.Repeat("b", 100), whole},
		{"pipelined, slow head", pipelined + "POST /rooms/r HTTP/1.1\r\nHost: h\r\n", strings.Repeat("X-A: b\r\n", 100), hdr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", f.loop)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			first := tc.first
			if rest, ok := strings.CutPrefix(first, served); ok {
				// A whole request first, answered before the clock starts.
				_, _ = io.WriteString(c, pipelined)
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				if resp.StatusCode != 200 || br.Buffered() != 0 {
					t.Fatalf("first request: %d, %d bytes more", resp.StatusCode, br.Buffered())
				}
				first = rest
			}
			start := time.Now()
			_, _ = io.WriteString(c, first)
			ended := make(chan time.Duration, 1)
			go func() {
				_, _ = io.Copy(io.Discard, c)
				ended <- time.Since(start)
			}()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for i := 0; i < len(tc.drip); i++ {
				select {
				case d := <-ended:
					if d < tc.within-50*time.Millisecond || d > tc.within+250*time.Millisecond {
						t.Fatalf("cut after %v, want about %v", d, tc.within)
					}
					return
				case <-tick.C:
					_, _ = c.Write([]byte{tc.drip[i]})
				}
			}
			t.Fatalf("not cut after %v", time.Since(start))
		})
	}
	t.Run("idle", func(t *testing.T) {
		c, err := net.Dial("tcp", f.loop)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "POST /rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = br.ReadByte()
		if d := time.Since(start); err == nil || d < idle-50*time.Millisecond || d > idle+250*time.Millisecond {
			t.Fatalf("idle connection: %v after %v, want closed after about %v", err, d, idle)
		}
	})
}

// TestHandOffKeepsDeadlines holds net/http to what replayConn assumes:
// its first request on a handed-off connection sets the head's deadline
// and then, when it differs, the whole request's. If a Go release changes
// that, this fails.
func TestHandOffKeepsDeadlines(t *testing.T) {
	for _, tc := range []struct {
		name              string
		header, readWhole time.Duration
		want              int
	}{
		{"both", 300 * time.Millisecond, 600 * time.Millisecond, 2},
		{"same", 300 * time.Millisecond, 300 * time.Millisecond, 1},
		{"whole only", 0, 600 * time.Millisecond, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var sets []time.Time
			srv := &http.Server{ReadHeaderTimeout: tc.header, ReadTimeout: tc.readWhole,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.ReadAll(r.Body) })}
			a, b := net.Pipe()
			defer b.Close()
			rc := &recordingConn{Conn: a, mu: &mu, sets: &sets}
			ln := newHandoffListener(nil)
			go func() { _ = srv.Serve(ln) }()
			defer srv.Close()
			start := time.Now()
			if !ln.give(rc) {
				t.Fatal("not accepted")
			}
			go func() { _, _ = io.Copy(io.Discard, b) }()
			_, _ = io.WriteString(b, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")
			time.Sleep(200 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			// The calls before the answer: the request's deadlines; after it
			// comes the idle one.
			var first []time.Duration
			for _, s := range sets {
				if !s.IsZero() {
					first = append(first, s.Sub(start).Round(100*time.Millisecond))
				}
			}
			wantD := []time.Duration{max(tc.header, tc.readWhole)}
			if tc.header > 0 {
				wantD = []time.Duration{tc.header}
			}
			if tc.want == 2 {
				wantD = append(wantD, tc.readWhole)
			}
			if len(first) < tc.want || !slices.Equal(first[:tc.want], wantD) {
				t.Fatalf("net/http set read deadlines at %v (rounded), want first %v", first, wantD)
			}
		})
	}
}

type recordingConn struct {
	net.Conn
	mu   *sync.Mutex
	sets *[]time.Time
}

func (c *recordingConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	*c.sets = append(*c.sets, t)
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

// TestShutdown: idle connections are closed at once, a request in its
// handler finishes and is answered, Serve returns http.ErrServerClosed,
// and every connection is accounted for.
func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	fb := &http.Server{ReadHeaderTimeout: time.Second}
	var open atomic.Int64
	count := func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	fb.ConnState = count
	fb.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	s := New(Config{Handler: fb.Handler, Fallback: fb, ConnState: count, Fast: func(m, _ string) bool { return m == http.MethodPost }})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	// An idle loop connection, an idle handed-off one, a busy loop one.
	idle, idleR := dial()
	_, _ = io.WriteString(idle, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
	idleFB, idleFBR := dial()
	_, _ = io.WriteString(idleFB, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
	for _, r := range []*bufio.Reader{idleR, idleFBR} {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(resp.Body); string(b) != "done" {
			t.Fatalf("answer %q", b)
		}
	}
	busy, busyR := dial()
	_, _ = io.WriteString(busy, "POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	for _, r := range []*bufio.Reader{idleR, idleFBR} {
		if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("idle connection at shutdown: %v, want EOF", err)
		}
	}
	close(release)
	resp, err := http.ReadResponse(busyR, nil)
	if err != nil || resp.StatusCode != http.StatusOK || !resp.Close {
		t.Fatalf("busy request at shutdown: %v %+v, want 200 with Connection: close", err, resp)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	if n := open.Load(); n != 0 {
		t.Fatalf("%d connections still counted open", n)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("the listener still accepts")
	}
}

// TestPanicClosesOnlyItsConnection: a handler panic on the loop closes
// that connection without an answer; the server goes on.
func TestPanicClosesOnlyItsConnection(t *testing.T) {
	f := newFixture(t, nil)
	got := exchange(t, f.loop, "POST /panic HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 1)
	if len(got) != 0 {
		t.Fatalf("a panicking handler was answered %s", got[0].Status)
	}
	got = exchange(t, f.loop, "POST /rooms/ok HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 1)
	if len(got) != 1 || echoOf(t, got[0]).PathValue != "ok" {
		t.Fatal("the server stopped after a panic")
	}
}

// TestConnStateBalances: after requests of every kind the open
// connections counted through ConnState return to zero.
func TestConnStateBalances(t *testing.T) {
	f := newFixture(t, nil)
	for _, raw := range []string{
		"POST /rooms/a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
		"GET /rooms/a HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /rooms/a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\nGET /rooms/b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
		"POST /panic HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
		"POST /rooms/a HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
		"garbage\r\n\r\n",
	} {
		exchange(t, f.loop, raw, 2)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.states.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
	if n := f.states.Load(); n != 0 {
		t.Fatalf("%d connections counted open after all closed", n)
	}
}

// FuzzParse: whatever head the loop accepts, net/http's parser accepts
// too and reads the same request from it.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"POST /rooms/r HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
		"POST /a%2Fb?x=%zz HTTP/1.1\r\nhost: h:1\r\ncontent-length: 0\r\nX: a, b\r\nx: c\r\n\r\n",
		"POST /r HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 0\r\nConnection: close, keep-alive\r\n\r\n",
		"POST /r HTTP/1.1\r\nHost: h\r\nContent-Length: 00\r\nX-\x80: y\r\n\r\n",
		"POST /r HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nX: \xff\r\n\r\n",
	} {
		f.Add(s)
	}
	srv := New(Config{Handler: http.NotFoundHandler(), Fallback: &http.Server{}, Fast: func(string, string) bool { return true }})
	f.Fuzz(func(t *testing.T, head string) {
		i := strings.Index(head, "\r\n\r\n")
		if i < 0 {
			return
		}
		head = head[:i+4]
		c := &conn{s: srv, rwc: fakeConn{}}
		got, ok := c.parse([]byte(head))
		if !ok {
			return
		}
		want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			t.Fatalf("loop accepted %q, net/http refused it: %v", head, err)
		}
		delete(want.Header, "Host")
		if got.Method != want.Method || got.URL.String() != want.URL.String() || got.Host != want.Host ||
			got.ContentLength != want.ContentLength || got.RequestURI != want.RequestURI || got.Close != want.Close ||
			fmt.Sprint(got.Header) != fmt.Sprint(want.Header) {
			t.Fatalf("head %q:\nloop     %s %s host=%q len=%d close=%v %v\nnet/http %s %s host=%q len=%d close=%v %v", head,
				got.Method, got.URL, got.Host, got.ContentLength, got.Close, got.Header,
				want.Method, want.URL, want.Host, want.ContentLength, want.Close, want.Header)
		}
	})
}

type fakeConn struct{ net.Conn }

func (fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// TestLeadingLineEndsAfterPost: net/http drops up to four CR or LF bytes
// after a POST before the next request (old clients send them); the loop
// answers such connections as net/http does.
func TestLeadingLineEndsAfterPost(t *testing.T) {
	f := newFixture(t, nil)
	post := "POST /rooms/a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"
	for _, lead := range []string{"", "\r\n", "\n", "\r\n\r\n", "\r\n\r\n\r\n", "\n\n\n\n\n"} {
		raw := post + lead + strings.Replace(post, "/a", "/b", 1)
		want := exchange(t, f.plain, raw, 2)
		got := exchange(t, f.loop, raw, 2)
		var ws, gs []string
		for _, r := range want {
			ws = append(ws, describe(t, r))
		}
		for _, r := range got {
			gs = append(gs, describe(t, r))
		}
		if !slices.Equal(gs, ws) {
			t.Errorf("lead %q: loop answered %q, net/http %q", lead, gs, ws)
		}
		if len(got) == 2 && lead != "\r\n\r\n\r\n" && lead != "\n\n\n\n\n" && echoOf(t, got[1]).By != "loop" {
			t.Errorf("lead %q: second request served by %s", lead, echoOf(t, got[1]).By)
		}
	}
}
