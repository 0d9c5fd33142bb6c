package api

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCheckFraming(t *testing.T) {
	for _, tt := range []struct {
		name, head string
		reason     string
		chunked    bool
		length     int64
	}{
		{"no body", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "", false, 0},
		{"length", "POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 12\r\n\r\n", "", false, 12},
		{"length with spaces", "POST / HTTP/1.1\r\nContent-Length:  7 \r\n\r\n", "", false, 7},
		{"chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", "", true, 0},
		{"HTTP/1.0 length", "POST / HTTP/1.0\r\nContent-Length: 1\r\n\r\n", "", false, 1},
		{"both", "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "cl-te", false, 0},
		{"both, other order", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", "cl-te", false, 0},
		{"equal lengths", "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "cl-twice", false, 0},
		{"length list", "POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n", "cl-bad", false, 0},
		{"signed length", "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", "cl-bad", false, 0},
		{"empty length", "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", "cl-bad", false, 0},
		{"huge length", "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", "cl-bad", false, 0},
		{"two encodings", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "te-twice", false, 0},
		{"encoding list", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "te-bad", false, 0},
		{"identity", "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", "te-bad", false, 0},
		{"encoding on 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "te-http10", false, 0},
		{"fold", "POST / HTTP/1.1\r\nX-A: 1\r\n chunked\r\n\r\n", "fold", false, 0},
		{"space before colon", "POST / HTTP/1.1\r\nContent-Length : 1\r\n\r\n", "header", false, 0},
		{"no colon", "POST / HTTP/1.1\r\nContent-Length\r\n\r\n", "header", false, 0},
		{"control in value", "POST / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", "header", false, 0},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\n", "request-line", false, 0},
		{"three parts", "GET /a b HTTP/1.1\r\n\r\n", "request-line", false, 0},
		{"lower-case version", "GET / http/1.1\r\n\r\n", "request-line", false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, reason := checkFraming([]byte(tt.head))
			if reason != tt.reason || (reason == "" && (f.chunked != tt.chunked || f.length != tt.length)) {
				t.Errorf("checkFraming = %+v %q, want chunked %v length %d reason %q", f, reason, tt.chunked, tt.length, tt.reason)
			}
		})
	}
}

func TestScanHead(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		max, end int
		reason   string
	}{
		{"complete", "GET / HTTP/1.1\r\n\r\nrest", 100, 18, ""},
		{"incomplete", "GET / HTTP/1.1\r\nHost: x\r\n", 100, -1, ""},
		{"exactly the limit", "GET / HTTP/1.1\r\n\r\n", 18, 18, ""},
		{"one over", "GET / HTTP/1.1\r\n\r\n", 17, 0, "too-large"},
		{"incomplete over", strings.Repeat("x", 20), 17, 0, "too-large"},
		{"bare LF", "GET / HTTP/1.1\nHost: x\n\n", 100, 0, "bare-lf"},
		{"bare CR", "GET / HTTP/1.1\rHost: x\r\n\r\n", 100, 0, "bare-lf"},
		{"empty request line", "\r\nGET / HTTP/1.1\r\n\r\n", 100, 0, "request-line"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			end, reason := scanHead([]byte(tt.in), tt.max)
			if end != tt.end || reason != tt.reason {
				t.Errorf("scanHead = %d %q, want %d %q", end, reason, tt.end, tt.reason)
			}
		})
	}
}

func TestChunkSize(t *testing.T) {
	for line, want := range map[string]int64{
		"0\r\n": 0, "1a\r\n": 26, "A;name=value\r\n": 10, "ffffffffffff\r\n": 0xffffffffffff,
		"\r\n": -1, "1a": -1, "1a\n": -1, " 1\r\n": -1, "1 \r\n": -1, "-1\r\n": -1, "+1\r\n": -1,
		"0x1\r\n": -1, "1000000000000000\r\n": -1, "1;\x00\r\n": -1,
	} {
		n, ok := chunkSize([]byte(line))
		if (want < 0 && ok) || (want >= 0 && (!ok || n != want)) {
			t.Errorf("chunkSize(%q) = %d %v, want %d", line, n, ok, want)
		}
	}
}

// guardedServer serves h on a loopback listener wrapped by GuardListener
// and returns its address.
func guardedServer(t *testing.T, h http.Handler, maxHeader int) (*Server, string) {
	t.Helper()
	s := New(Config{MaxHeaderBytes: maxHeader}, Deps{}, nil, nil, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.framed("public", h), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(s.GuardListener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s, ln.Addr().String()
}

// echo answers each request with its method, path and body.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
})

// exchange writes in on one connection and reads every response until the
// server closes it (or 2 s pass).
func exchange(t *testing.T, addr, in string) (answers []string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, in); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			var ne net.Error
			return answers, !(errors.As(err, &ne) && ne.Timeout())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers = append(answers, fmt.Sprintf("%d %s", resp.StatusCode, b))
	}
}

func TestGuardListenerServesPlainRequests(t *testing.T) {
	_, addr := guardedServer(t, echo, 4096)
	in := "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" +
		"\r\n" + // a stray CRLF after a POST, which net/http drops
		"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nde\r\n1\r\nf\r\n0\r\nX-T: 1\r\n\r\n" +
		"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	answers, closed := exchange(t, addr, in)
	want := []string{"200 POST /a abc", "200 POST /b def", "200 GET /c "}
	if strings.Join(answers, "|") != strings.Join(want, "|") || !closed {
		t.Errorf("answers %q closed %v, want %q and closed", answers, closed, want)
	}
}

func TestGuardListenerRefusesAndReadsNoFurther(t *testing.T) {
	hidden := "GET /hidden HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tt := range []struct {
		name, in, want string
	}{
		{"CL.TE", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden, "400"},
		{"after a good request", "GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx" + hidden, "400"},
		{"bare LF", "POST /a HTTP/1.1\nHost: x\nContent-Length: 0\n\n" + hidden, "400"},
		{"head over the limit", "GET /a HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", 300) + "\r\n\r\n" + hidden, "431"},
		{"bad chunk size", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + hidden, "400 body:"},
		{"chunk without CRLF", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n" + hidden, "400 body:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, addr := guardedServer(t, echo, 256)
			answers, closed := exchange(t, addr, tt.in)
			if !closed {
				t.Errorf("connection left open")
			}
			for _, a := range answers {
				if strings.Contains(a, "/hidden") {
					t.Fatalf("the hidden request was served: %q", answers)
				}
			}
			if len(answers) == 0 || !strings.HasPrefix(answers[len(answers)-1], tt.want) {
				t.Errorf("answers %q, want the last to start with %q", answers, tt.want)
			}
		})
	}
}

func TestFramingAnswerShape(t *testing.T) {
	s, addr := guardedServer(t, echo, 256)
	answers, _ := exchange(t, addr, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
	if len(answers) != 1 || !strings.Contains(answers[0], `"code":"invalid_request","message":"request framing refused: both Content-Length and Transfer-Encoding"`) {
		t.Errorf("answers %q", answers)
	}
	answers, _ = exchange(t, addr, "GET /a HTTP/1.1\r\nX: "+strings.Repeat("p", 300)+"\r\n\r\n")
	if len(answers) != 1 || !strings.Contains(answers[0], `431 {"error":{"code":"header_too_large","message":"request head over 256 bytes`) {
		t.Errorf("answers %q", answers)
	}
	// The marker path is per Server: another Server's is not answered.
	other := New(Config{}, Deps{}, nil, nil, nil)
	if other.refusedPrefix == s.refusedPrefix {
		t.Error("two servers share a marker prefix")
	}
}

// FuzzGuardConn: whatever bytes arrive, the guard never panics, and what
// it passes on is a prefix of the input, or a prefix followed by the
// marker request and nothing else.
func FuzzGuardConn(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\nT: 1\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		gc := &guardConn{Conn: &pipeConn{r: bytes.NewReader(in)}, max: 512, marker: "/m/"}
		out, _ := io.ReadAll(io.LimitReader(gc, int64(len(in))+1024))
		if bytes.HasPrefix(in, out) {
			return
		}
		i := bytes.Index(out, []byte("GET /m/"))
		if i < 0 || !bytes.HasPrefix(in, out[:i]) || !bytes.HasSuffix(out, []byte("Connection: close\r\n\r\n")) {
			t.Fatalf("passed on %q for input %q", out, in)
		}
	})
}

// pipeConn is a net.Conn reading from r (writes are discarded).
type pipeConn struct {
	net.Conn
	r io.Reader
}

func (p *pipeConn) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeConn) Write(b []byte) (int, error) { return len(b), nil }

// BenchmarkGuardConn: the framing guard's cost per request for a typical
// publish (a 180-byte head and a 120-byte body), 100 pipelined requests per
// operation.
func BenchmarkGuardConn(b *testing.B) {
	body := strings.Repeat("b", 120)
	req := "POST /v1/broadcast HTTP/1.1\r\nHost: switchyard:8080\r\nAuthorization: Bearer key-0123456789abcdef\r\nContent-Type: application/json\r\nUser-Agent: node\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
	in := []byte(strings.Repeat(req, 100))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	buf := make([]byte, 4096)
	for b.Loop() {
		gc := &guardConn{Conn: &pipeConn{r: bytes.NewReader(in)}, max: 16 << 10, marker: "/m/"}
		for {
			if _, err := gc.Read(buf); err != nil {
				break
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100, "ns/request")
}
