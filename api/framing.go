package api

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/switchyard/switchyard/broadcast"
)

// Request framing (issue 12, finding 3). Go's HTTP/1.1 server accepts a
// request with both Content-Length and Transfer-Encoding (it drops the
// Content-Length and reads the body chunked), merges equal duplicate
// Content-Length fields, and tolerates bare LF line ends: a proxy in front
// that frames the request otherwise would see a different request
// boundary, and a request hidden in the body would be parsed as the next
// one on the connection (request smuggling, RFC 9112 sections 6.3 and
// 11.2). None of that is visible to a handler once net/http has parsed the
// request, so the framing is checked before: GuardListener wraps each
// accepted connection in a strict HTTP/1.1 framing reader that passes on a
// request's head only once it has checked it, then exactly the body its
// framing announces, and so on. A request it refuses is replaced by a
// marker request, which the handler answers with 400 (431 for a head over
// the limit) and Connection: close, and nothing after it on the
// connection is ever passed on.

// Framing refusals: the reason in the marker path, and what the answer says.
var framingReasons = map[string]string{
	"cl-te":        "both Content-Length and Transfer-Encoding",
	"cl-twice":     "more than one Content-Length",
	"cl-bad":       "a Content-Length that is not a decimal number",
	"te-twice":     "more than one Transfer-Encoding",
	"te-bad":       "a Transfer-Encoding other than chunked",
	"te-http10":    "Transfer-Encoding on an HTTP/1.0 request",
	"fold":         "a folded header line (obs-fold)",
	"header":       "a malformed header line",
	"bare-lf":      "a line end without CR",
	"request-line": "a malformed request line",
	"too-large":    "a request head over the limit",
}

// maxChunkLine bounds a chunk-size line (size, extensions, CRLF).
const maxChunkLine = 4096

// GuardListener returns ln with every accepted connection framed strictly
// (see above) for the handlers of s: serve the public and the admin
// listener on it. Config.MaxHeaderBytes is the largest request head it
// passes on (the request line, the header fields and the blank line); the
// http.Server's own MaxHeaderBytes, which Go exceeds by 4 KiB of slack, is
// then only a backstop. Safe for concurrent use; the wrapped connections
// follow net.Conn's rules. The connections speak HTTP/1.x only: a handler
// that took a connection over (Upgrade, WebSocket) would need the guard to
// step aside first; none does.
func (s *Server) GuardListener(ln net.Listener) net.Listener {
	return &guardListener{Listener: ln, max: s.cfg.MaxHeaderBytes, marker: s.refusedPrefix}
}

type guardListener struct {
	net.Listener
	max    int
	marker string
}

func (l *guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &guardConn{Conn: c, max: l.max, marker: l.marker}, nil
}

// Body framing states.
const (
	stHead      = iota // waiting for a request head
	stBody             // remain bytes of a Content-Length body
	stChunkLine        // a chunk-size line
	stChunkData        // remain bytes of chunk data, then CRLF
	stTrailer          // trailer lines up to the empty line
	stDone             // refused or failed: nothing more is passed on
)

// guardConn frames the requests of one connection. Read is called by one
// goroutine at a time (net/http's), as net.Conn allows; the mutex only
// guards against a Read racing Close's bookkeeping.
type guardConn struct {
	net.Conn
	max    int
	marker string

	mu      sync.Mutex
	state   int
	rbuf    []byte // read buffer, allocated on first use
	pending []byte // read from the connection, not yet checked
	ready   []byte // checked, waiting for net/http's Read
	// pbuf and qbuf are the arrays pending and ready start over from each
	// time they are empty, so that a keep-alive connection does not
	// allocate them anew per request.
	pbuf, qbuf []byte
	remain     int64
	lastPost   bool  // the previous request was a POST (see head)
	err        error // returned once ready is drained in stDone
}

func (c *guardConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ready) == 0 && len(c.pending) == 0 && c.state == stBody && len(p) > 0 {
		// The common case of a body: straight from the connection, at most
		// what the framing announced.
		n, err := c.Conn.Read(p[:min(int64(len(p)), c.remain)])
		if c.remain -= int64(n); c.remain == 0 {
			c.state = stHead
		}
		if n > 0 || err == nil {
			return n, nil
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	for len(c.ready) == 0 {
		if c.state == stDone {
			return 0, c.err
		}
		if progressed := c.step(); progressed {
			continue
		}
		if err := c.fill(); err != nil {
			if len(c.ready) > 0 {
				break
			}
			return 0, err
		}
	}
	n := copy(p, c.ready)
	c.ready = c.ready[n:]
	return n, nil
}

// fill reads more bytes from the connection into pending.
func (c *guardConn) fill() error {
	if c.rbuf == nil {
		c.rbuf = make([]byte, 4<<10)
	}
	n, err := c.Conn.Read(c.rbuf)
	if len(c.pending) == 0 {
		c.pending = c.pbuf[:0]
	}
	c.pending = append(c.pending, c.rbuf[:n]...)
	if len(c.pending) == n {
		c.pbuf = c.pending
	}
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	if errors.Is(err, io.EOF) && c.state != stHead {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// step moves checked bytes from pending to ready as the state allows and
// reports whether it did anything (false: more input is needed).
func (c *guardConn) step() bool {
	switch c.state {
	case stHead:
		return c.head()
	case stBody:
		if len(c.pending) == 0 {
			return false
		}
		n := min(int64(len(c.pending)), c.remain)
		c.release(int(n))
		if c.remain -= n; c.remain == 0 {
			c.state = stHead
		}
		return true
	case stChunkLine:
		i := bytes.IndexByte(c.pending, '\n')
		if i < 0 {
			if len(c.pending) > maxChunkLine {
				c.fail()
				return true
			}
			return false
		}
		size, ok := chunkSize(c.pending[:i+1])
		if !ok {
			c.fail()
			return true
		}
		c.release(i + 1)
		if size == 0 {
			c.state = stTrailer
		} else {
			c.state, c.remain = stChunkData, size+2
		}
		return true
	case stChunkData:
		if len(c.pending) == 0 {
			return false
		}
		n := min(int64(len(c.pending)), c.remain)
		// The two bytes after the data must be CRLF.
		for i := int64(0); i < n; i++ {
			left := c.remain - i
			if (left == 2 && c.pending[i] != '\r') || (left == 1 && c.pending[i] != '\n') {
				c.fail()
				return true
			}
		}
		c.release(int(n))
		if c.remain -= n; c.remain == 0 {
			c.state = stChunkLine
		}
		return true
	case stTrailer:
		i := bytes.IndexByte(c.pending, '\n')
		if i < 0 {
			if len(c.pending) > c.max {
				c.fail()
				return true
			}
			return false
		}
		line := c.pending[:i+1]
		if !bytes.HasSuffix(line, []byte("\r\n")) || (len(line) > 2 && !validFieldLine(line[:len(line)-2])) {
			c.fail()
			return true
		}
		c.release(i + 1)
		if len(line) == 2 {
			c.state = stHead
		}
		return true
	}
	return false
}

// release passes on the first n pending bytes.
func (c *guardConn) release(n int) {
	if len(c.ready) == 0 {
		c.ready = c.qbuf[:0]
	}
	c.ready = append(c.ready, c.pending[:n]...)
	if len(c.ready) == n {
		c.qbuf = c.ready
	}
	c.pending = c.pending[n:]
}

// fail ends the connection in the middle of a body that does not follow
// its framing: net/http sees the body end early (the handler answers 400)
// and closes the connection; nothing after it is passed on.
func (c *guardConn) fail() {
	c.state, c.pending, c.err = stDone, nil, io.ErrUnexpectedEOF
}

// refuse replaces the request at the start of pending by the marker
// request, the last thing passed on.
func (c *guardConn) refuse(reason string) {
	c.ready = append(c.ready, "GET "+c.marker+reason+" HTTP/1.1\r\nHost: switchyard\r\nConnection: close\r\n\r\n"...)
	c.state, c.pending, c.err = stDone, nil, io.EOF
}

// head checks a complete request head at the start of pending and passes
// it on, or refuses the request.
func (c *guardConn) head() bool {
	if len(c.pending) == 0 {
		return false
	}
	// After a POST net/http drops up to four CR or LF bytes before the next
	// request (a tolerance for old clients): pass exactly those on.
	if c.lastPost {
		n := 0
		for n < 4 && n < len(c.pending) && (c.pending[n] == '\r' || c.pending[n] == '\n') {
			n++
		}
		if n == len(c.pending) && n < 4 {
			return false // more may follow
		}
		if n > 0 {
			c.release(n)
			c.lastPost = false
			return true
		}
	}
	end, reason := scanHead(c.pending, c.max)
	switch {
	case reason != "":
		c.refuse(reason)
		return true
	case end < 0:
		return false
	}
	f, reason := checkFraming(c.pending[:end])
	if reason != "" {
		c.refuse(reason)
		return true
	}
	c.lastPost = f.post
	c.release(end)
	switch {
	case f.chunked:
		c.state = stChunkLine
	case f.length > 0:
		c.state, c.remain = stBody, f.length
	}
	return true
}

// scanHead finds the end of the request head at the start of b: the index
// after its blank line, or -1 when more bytes are needed. It refuses a
// head with a bare LF or CR, or one over max bytes.
func scanHead(b []byte, max int) (end int, reason string) {
	lineStart := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			if i+1 < len(b) && b[i+1] != '\n' {
				return 0, "bare-lf"
			}
		case '\n':
			if i == 0 || b[i-1] != '\r' {
				return 0, "bare-lf"
			}
			if i+1 > max {
				return 0, "too-large"
			}
			if i-1 == lineStart { // an empty line ends the head
				if lineStart == 0 {
					return 0, "request-line"
				}
				return i + 1, ""
			}
			lineStart = i + 1
		}
	}
	if len(b) >= max {
		return 0, "too-large"
	}
	return -1, ""
}

// framing is what a checked head says about its body.
type framing struct {
	chunked bool
	length  int64
	post    bool
}

// checkFraming parses a complete head (ending with the blank line) and
// returns its body framing, or the reason it is refused. It allocates
// nothing.
func checkFraming(head []byte) (framing, string) {
	crlf := []byte("\r\n")
	requestLine, rest, _ := bytes.Cut(head[:len(head)-4], crlf)
	method, line, ok := bytes.Cut(requestLine, []byte(" "))
	target, version, ok2 := bytes.Cut(line, []byte(" "))
	if !ok || !ok2 || !isToken(method) || len(target) == 0 || bytes.ContainsAny(target, " \t") || hasCTL(target) ||
		(string(version) != "HTTP/1.1" && string(version) != "HTTP/1.0") {
		return framing{}, "request-line"
	}
	f := framing{post: string(method) == http.MethodPost}
	var lengths, encodings int
	var length, encoding []byte
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, crlf)
		if line[0] == ' ' || line[0] == '\t' {
			return f, "fold"
		}
		if !validFieldLine(line) {
			return f, "header"
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			lengths++
			length = value
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			encodings++
			encoding = value
		}
	}
	switch {
	case lengths > 0 && encodings > 0:
		return f, "cl-te"
	case lengths > 1:
		return f, "cl-twice"
	case encodings > 1:
		return f, "te-twice"
	case encodings == 1 && string(version) == "HTTP/1.0":
		return f, "te-http10"
	case encodings == 1 && !bytes.EqualFold(encoding, []byte("chunked")):
		return f, "te-bad"
	case encodings == 1:
		f.chunked = true
	case lengths == 1:
		n, ok := decimal(length)
		if !ok {
			return f, "cl-bad"
		}
		f.length = n
	}
	return f, ""
}

// decimal parses 1 to 18 ASCII digits (no sign, no spaces).
func decimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// validFieldLine reports whether line (without CRLF) is name ":" value
// with a token name (no whitespace before the colon) and a value without
// control characters other than HTAB.
func validFieldLine(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	return i > 0 && isToken(line[:i]) && !hasCTL(line[i+1:])
}

// chunkSize parses a chunk-size line (with CRLF): hex digits, then
// optionally ";" extensions. It refuses anything else.
func chunkSize(line []byte) (int64, bool) {
	if !bytes.HasSuffix(line, []byte("\r\n")) {
		return 0, false
	}
	line = line[:len(line)-2]
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		if hasCTL(line[i:]) {
			return 0, false
		}
		line = line[:i]
	}
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		switch {
		case c >= '0' && c <= '9':
			n = n<<4 | int64(c-'0')
		case c >= 'a' && c <= 'f':
			n = n<<4 | int64(c-'a'+10)
		case c >= 'A' && c <= 'F':
			n = n<<4 | int64(c-'A'+10)
		default:
			return 0, false
		}
	}
	return n, true
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func hasCTL(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return true
		}
	}
	return false
}

// newRefusedPrefix returns the path prefix of the marker requests of one
// Server: random, so that no caller can ask for a framing refusal it did
// not cause (which would only close its own connection anyway).
func newRefusedPrefix() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "/.switchyard-framing/" + hex.EncodeToString(b[:]) + "/"
}

// framed answers the marker requests of GuardListener in front of h: 400
// invalid_request naming the refusal (431 header_too_large for a head
// over the limit), with Connection: close; other requests go to h.
func (s *Server) framed(listener string, h http.Handler) http.Handler {
	refused := s.instrument(listener, "framing_refused", func(w http.ResponseWriter, r *http.Request) {
		s.refusedFraming(w, r, strings.TrimPrefix(r.URL.Path, s.refusedPrefix))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, s.refusedPrefix) {
			refused.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) refusedFraming(w http.ResponseWriter, r *http.Request, reason string) {
	w.Header().Set("Connection", "close")
	what, known := framingReasons[reason]
	if !known {
		what = "an unknown problem"
	}
	if reason == "too-large" {
		s.writeError(w, r, "", "", broadcast.Errorf(eHeaderTooLarge, "request head over %d bytes (request line, header fields and the blank line)", s.cfg.MaxHeaderBytes))
		return
	}
	s.writeError(w, r, "", "", broadcast.Errorf(broadcast.EINVALID, "request framing refused: %s", what))
}

// eHeaderTooLarge is the code of a request head over the limit (431).
const eHeaderTooLarge = "header_too_large"
