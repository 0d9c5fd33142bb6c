// Package h1serve serves the simple HTTP/1.1 requests of a listener on a
// connection loop of its own and hands every other connection to a
// net/http server.
//
// Why: net/http's server costs each request a background-read goroutine
// (started when the body ends, stopped after the answer by a read
// deadline in the past), a cancelable context, a bufio writer pair and a
// header map parsed through textproto; on a gateway whose requests are
// small POSTs answered in a few hundred microseconds that is a sixth of
// the process's CPU (docs/performance.md). The loop here reads the
// request head in place, builds the *http.Request the same handler
// expects, buffers the answer and writes it with one system call.
//
// What it serves itself: a request that Config.Fast accepts (method and
// request target as sent), with request line "METHOD target HTTP/1.1", a
// head that fits the read buffer (4 KiB), exactly one valid Host, a
// Content-Length no larger than Config.MaxBodyBytes, and no
// Transfer-Encoding, Expect, Upgrade or Connection token other than
// keep-alive and close. Anything else, from the first such request on,
// goes to Config.Fallback with the bytes already read replayed: net/http
// then answers it, and every later request of that connection, exactly
// as it would have. So the loop needs no error answers of its own.
//
// Differences a handler can see, all documented contracts of
// http.Handler kept: the request's context is context.Background() (it
// is not canceled when the client goes away: a handler bounds its own
// work), the ResponseWriter is not an http.Flusher or http.Hijacker, and
// an answer is written once the handler returns (1xx status codes are
// ignored). Timeouts follow the fallback's: ReadHeaderTimeout for the
// head, ReadTimeout for the whole request, WriteTimeout from the end of
// the head, IdleTimeout (else ReadTimeout) between requests.
package h1serve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"
)

// Config is what a Server serves and how.
type Config struct {
	// Handler answers every request the loop serves (required): the same
	// handler as Fallback's.
	Handler http.Handler
	// Fast reports whether the loop may serve a request with this method
	// and request target (exactly as sent). Nil: none.
	Fast func(method, target string) bool
	// Fallback serves the connections handed off (required). Its
	// timeouts apply to the loop too; its ConnState is not called for
	// the loop's own connections (see ConnState).
	Fallback *http.Server
	// MaxBodyBytes: a request with a larger Content-Length is handed off
	// (the handler's answer to it, and closing the connection when the
	// body is left unread, stay net/http's). Zero: 1 MiB.
	MaxBodyBytes int64
	// ConnState, if set, is called as net/http calls Server.ConnState,
	// for the connections the loop holds: StateNew when accepted,
	// StateActive and StateIdle around each request, StateClosed when
	// the loop closes it, StateHijacked when it hands it to Fallback
	// (whose own ConnState then sees it as new).
	ConnState func(net.Conn, http.ConnState)
	// Log receives handler panics and accept errors. Nil: none.
	Log *zap.Logger
}

// Server is the loop. Use New; safe for concurrent use.
type Server struct {
	cfg     Config
	handoff *handoffListener

	mu       sync.Mutex
	conns    map[*conn]struct{}
	closing  atomic.Bool // set under mu by Shutdown; read without it per request
	ln       net.Listener
	fallback sync.Once
}

// New returns a Server for cfg. It panics when Handler or Fallback is nil.
func New(cfg Config) *Server {
	if cfg.Handler == nil || cfg.Fallback == nil {
		panic("h1serve: Config.Handler and Config.Fallback are required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Fast == nil {
		cfg.Fast = func(string, string) bool { return false }
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Server{cfg: cfg, conns: map[*conn]struct{}{}}
}

// Serve accepts connections on ln until it fails (closed by Shutdown or
// by the caller: that error is returned, as http.Server.Serve does with
// its own; after Shutdown, http.ErrServerClosed). Fallback serves the
// handed-off connections from the first call on, until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.ln = ln
	if s.handoff == nil {
		s.handoff = newHandoffListener(ln.Addr())
	}
	s.mu.Unlock()
	s.fallback.Do(func() {
		// It returns http.ErrServerClosed once Shutdown shuts Fallback down.
		go func() { _ = s.cfg.Fallback.Serve(s.handoff) }()
	})
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() { // as net/http: back off and go on
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.cfg.Log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("delay", delay))
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		cn := &conn{s: s, rwc: c}
		if !s.track(cn) {
			_ = c.Close()
			continue
		}
		s.state(c, http.StateNew)
		go cn.serve()
	}
}

// Shutdown stops accepting, closes the loop's idle connections, lets the
// requests in progress finish (their connections then close), and shuts
// Fallback down, all bounded by ctx: when ctx ends first the remaining
// connections are closed and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	ln := s.ln
	if s.handoff == nil {
		s.handoff = newHandoffListener(nil)
	}
	s.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	fbErr := make(chan error, 1)
	go func() { fbErr <- s.cfg.Fallback.Shutdown(ctx) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
	for {
		if s.closeIdle() == 0 {
			break
		}
		select {
		case <-ctx.Done():
			s.closeAll()
			err = ctx.Err()
		case <-tick.C:
			continue
		}
		break
	}
	if e := <-fbErr; err == nil && e != nil {
		err = e
	}
	_ = s.handoff.Close()
	return err
}

func (s *Server) isClosing() bool { return s.closing.Load() }

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeIdle closes the idle connections and returns how many are left.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.phase.CompareAndSwap(phaseIdle, phaseShut) {
			_ = c.rwc.Close()
		}
	}
	return len(s.conns)
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.phase.Store(phaseShut)
		_ = c.rwc.Close()
	}
}

func (s *Server) state(c net.Conn, st http.ConnState) {
	if s.cfg.ConnState != nil {
		s.cfg.ConnState(c, st)
	}
}

// ---- one connection ----

// bufSize is the read buffer: a head must fit in it to be served here.
const bufSize = 4096

// maxDiscard is how much of a body its handler left unread is read and
// dropped to keep the connection (net/http's maxPostHandlerReadBytes).
const maxDiscard = 256 << 10

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}

type conn struct {
	s   *Server
	rwc net.Conn
	// phase is phaseActive, phaseIdle (waiting for a request: Shutdown
	// may close it) or phaseShut (Shutdown closed it); changed by CAS so
	// that no request takes the server's lock.
	phase atomic.Int32

	remote string
	out    []byte
	resp   response
	body   body

	// The head being read: its read deadline is headDL+headDur, set
	// (headArmed) before the first read of it from the connection.
	headDL    time.Time
	headDur   time.Duration
	headArmed bool
}

// Phases of a conn.
const (
	phaseActive int32 = iota
	phaseIdle
	phaseShut
)

// setIdle moves the connection to idle (before waiting for a request) or
// back to active (a request began). It reports false when Shutdown closed
// it, or, on the way to active, when the server is closing: the caller
// then ends the connection.
func (c *conn) setIdle(idle bool) bool {
	if idle {
		return c.phase.CompareAndSwap(phaseActive, phaseIdle)
	}
	return c.phase.CompareAndSwap(phaseIdle, phaseActive) && !c.s.closing.Load()
}

func (c *conn) serve() {
	s := c.s
	br := readers.Get().(*bufio.Reader)
	br.Reset(c.rwc)
	handedOff := false
	defer func() {
		if handedOff {
			return
		}
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			s.cfg.Log.Error("panic serving a request", zap.String("remote", c.remote), zap.Any("panic", v), zap.ByteString("stack", buf))
		}
		br.Reset(nil)
		readers.Put(br)
		_ = c.rwc.Close()
		s.untrack(c)
		s.state(c.rwc, http.StateClosed)
	}()
	fb := s.cfg.Fallback
	for first := true; ; first = false {
		if !first {
			idle := fb.IdleTimeout
			if idle == 0 {
				idle = fb.ReadTimeout
			}
			if !c.setIdle(true) {
				return
			}
			s.state(c.rwc, http.StateIdle)
			if br.Buffered() == 0 { // a pipelined request is already here
				setReadFrom(c.rwc, time.Now(), idle)
				if _, err := br.Peek(1); err != nil {
					return
				}
			}
			if !c.setIdle(false) {
				return
			}
		}
		// Each read deadline is set just before the first read that needs
		// the connection (net/http sets them all, whether a read follows or
		// not): a request that arrived whole with the first byte of its
		// head, the usual case, costs no read deadline at all.
		t0 := time.Now()
		hdr := fb.ReadHeaderTimeout
		if hdr <= 0 {
			hdr = fb.ReadTimeout
		}
		c.headDL, c.headDur, c.headArmed = t0, hdr, false
		req, n, err := c.readRequest(br, !first)
		if err != nil {
			return // closed, timed out or cut before a whole head: as net/http, no answer
		}
		if req == nil {
			handedOff = c.handOff(br, first, time.Since(t0))
			if handedOff {
				br.Reset(nil)
				readers.Put(br)
			}
			return
		}
		s.state(c.rwc, http.StateActive)
		_, _ = br.Discard(n)
		if req.ContentLength > int64(br.Buffered()) {
			setReadFrom(c.rwc, t0, fb.ReadTimeout)
		}
		if fb.WriteTimeout > 0 {
			// From the end of the head, as net/http: t0 is that time when
			// the head was already here.
			wt := t0
			if c.headArmed {
				wt = time.Now()
			}
			_ = c.rwc.SetWriteDeadline(wt.Add(fb.WriteTimeout))
		}
		if !c.serveRequest(br, req) {
			return
		}
	}
}

// setReadFrom sets c's read deadline to t0+d, or none when d is 0.
func setReadFrom(c net.Conn, t0 time.Time, d time.Duration) {
	if d > 0 {
		_ = c.SetReadDeadline(t0.Add(d))
	} else {
		_ = c.SetReadDeadline(time.Time{})
	}
}

// handOff gives the connection, with the bytes read and not consumed
// replayed first, to Fallback; spent is how long this request has taken
// so far, which Fallback's read deadlines for it are shortened by. It
// reports false when the server is closing (the caller closes the
// connection).
func (c *conn) handOff(br *bufio.Reader, first bool, spent time.Duration) bool {
	var prefix []byte
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		prefix = bytes.Clone(b)
	}
	_ = c.rwc.SetDeadline(time.Time{})
	if c.phase.Load() == phaseShut || c.s.closing.Load() {
		return false
	}
	c.s.untrack(c)
	if !first {
		c.s.state(c.rwc, http.StateActive)
	}
	c.s.state(c.rwc, http.StateHijacked)
	// net/http's readRequest sets the head's deadline, then the whole
	// request's unless they are the same time.
	fb := c.s.cfg.Fallback
	shift := 2
	if fb.ReadHeaderTimeout <= 0 || fb.ReadHeaderTimeout == fb.ReadTimeout {
		shift = 1
	}
	if !c.s.handoff.give(&replayConn{Conn: c.rwc, prefix: prefix, spent: spent, shift: shift}) {
		_ = c.rwc.Close()
	}
	return true
}

// readRequest reads one request head from br without consuming it: the
// request the loop serves and the head's length, or a nil request for
// one that goes to Fallback (a head longer than the buffer, or one parse
// refuses), or the read's error.
//
// After a POST (every request the loop served), up to four CR or LF bytes
// before the next request are dropped, as net/http does for old clients.
func (c *conn) readRequest(br *bufio.Reader, afterPost bool) (*http.Request, int, error) {
	for want := 1; ; {
		if !c.headArmed && want > br.Buffered() {
			setReadFrom(c.rwc, c.headDL, c.headDur)
			c.headArmed = true
		}
		b, err := br.Peek(want)
		if afterPost && err == nil {
			lead := 0
			for lead < 4 && lead < len(b) && (b[lead] == '\r' || b[lead] == '\n') {
				lead++
			}
			if lead == len(b) && lead < 4 {
				want = lead + 1
				continue
			}
			_, _ = br.Discard(lead)
			afterPost = false
			want = 1
			continue
		}
		if i := bytes.Index(b, crlfcrlf); i >= 0 {
			head := b[:i+4]
			req, ok := c.parse(head)
			if !ok {
				return nil, 0, nil
			}
			return req, len(head), nil
		}
		if err != nil {
			return nil, 0, err
		}
		if len(b) == br.Size() {
			return nil, 0, nil
		}
		want = max(br.Buffered(), len(b)+1)
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// parse builds the request of head, or reports false for anything the
// loop leaves to net/http (see the package comment).
func (c *conn) parse(head []byte) (*http.Request, bool) {
	s := c.s
	if mh := s.cfg.Fallback.MaxHeaderBytes; mh > 0 && len(head) > mh {
		return nil, false
	}
	h := string(head) // one allocation; every string below is a part of it
	line, rest, _ := cut(h, "\r\n")
	method, line, ok1 := cut(line, " ")
	target, proto, ok2 := cut(line, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || method == "" || target == "" || target[0] != '/' || !s.cfg.Fast(method, target) {
		return nil, false
	}
	for i := 0; i < len(method); i++ {
		if !httpguts.IsTokenRune(rune(method[i])) {
			return nil, false
		}
	}
	// Count the fields to size the header map and its one value slice.
	fields := 0
	for r := rest; len(r) > 2; fields++ {
		_, r, _ = cut(r, "\r\n")
	}
	hdr := make(http.Header, fields)
	values := make([]string, fields)
	var host string
	hosts := 0
	cl := int64(-1)
	closeConn := false
	for r := rest; len(r) > 2; {
		var fl string
		fl, r, _ = cut(r, "\r\n")
		name, value, ok := cut(fl, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) {
			return nil, false
		}
		value = trimOWS(value)
		if !httpguts.ValidHeaderFieldValue(value) {
			return nil, false
		}
		key := canonicalKey(name)
		switch key {
		case "Host":
			host = value
			hosts++
			continue // net/http keeps it in Request.Host only
		case "Content-Length":
			if cl >= 0 {
				return nil, false
			}
			v, err := strconv.ParseUint(value, 10, 63)
			if err != nil || value == "" || value[0] == '+' {
				return nil, false
			}
			cl = int64(v)
		case "Transfer-Encoding", "Expect", "Upgrade", "Te", "Trailer", "Http2-Settings":
			return nil, false
		case "Connection":
			for _, tok := range splitComma(value) {
				switch {
				case asciiEqualFold(tok, "close"):
					closeConn = true
				case asciiEqualFold(tok, "keep-alive"), tok == "":
				default:
					return nil, false
				}
			}
		}
		if vv, ok := hdr[key]; ok {
			hdr[key] = append(vv, value)
		} else {
			vv, values = values[:1:1], values[1:]
			vv[0] = value
			hdr[key] = vv
		}
	}
	if hosts != 1 || !httpguts.ValidHostHeader(host) || cl < 0 || cl > s.cfg.MaxBodyBytes {
		return nil, false
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, false
	}
	if c.remote == "" {
		c.remote = c.rwc.RemoteAddr().String()
	}
	req := &http.Request{
		Method: method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: hdr, ContentLength: cl, Host: host, RemoteAddr: c.remote, RequestURI: target,
		Close: closeConn,
	}
	return req, true
}

// serveRequest runs the handler on req, whose head br has consumed, and
// writes its answer. It reports whether the connection stays open.
func (c *conn) serveRequest(br *bufio.Reader, req *http.Request) bool {
	c.body = body{br: br, remain: req.ContentLength}
	if req.ContentLength > 0 {
		req.Body = &c.body
	} else {
		req.Body = http.NoBody
	}
	c.resp.reset()
	c.s.cfg.Handler.ServeHTTP(&c.resp, req)
	keep := !req.Close && !c.s.isClosing()
	if v := c.resp.header["Connection"]; len(v) > 0 {
		for _, x := range v {
			if asciiEqualFold(x, "close") {
				keep = false
			}
		}
	}
	discard := c.body.remain
	if c.body.err != nil {
		keep = false
	} else if discard > maxDiscard {
		keep = false
	}
	c.out = c.resp.render(c.out[:0], keep)
	if _, err := c.rwc.Write(c.out); err != nil {
		return false
	}
	if len(c.out) > 64<<10 {
		c.out = nil
	}
	if keep && discard > 0 {
		if _, err := br.Discard(int(discard)); err != nil {
			return false
		}
	}
	return keep
}

// ---- request body ----

// body is a request's body on the loop: exactly Content-Length bytes of
// the connection's reader; a read error sticks (and closes the connection
// after the answer).
type body struct {
	br     *bufio.Reader
	remain int64
	err    error
}

// Read reads the body; io.EOF comes with its last bytes, an early end of
// the connection is io.ErrUnexpectedEOF.
func (b *body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.br.Read(p)
	b.remain -= int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.err = err
		return n, err
	}
	if b.remain == 0 {
		return n, io.EOF
	}
	return n, nil
}

// Close does nothing: the loop drops or discards what the handler left.
func (b *body) Close() error { return nil }

// ---- answer ----

type response struct {
	header http.Header
	status int
	body   []byte
}

func (r *response) reset() {
	if r.header == nil || len(r.header) > 0 {
		clear(r.header)
		if r.header == nil {
			r.header = make(http.Header, 4)
		}
	}
	r.status = 0
	r.body = r.body[:0]
	if cap(r.body) > 64<<10 {
		r.body = nil
	}
}

// Header is the answer's header, as http.ResponseWriter's.
func (r *response) Header() http.Header { return r.header }

// WriteHeader sets the status once, as http.ResponseWriter's (1xx codes
// are ignored; a code outside 100..999 panics, as net/http's).
func (r *response) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if r.status != 0 || code < 200 {
		return
	}
	r.status = code
}

// Write buffers p as the answer's body.
func (r *response) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body = append(r.body, p...)
	return len(p), nil
}

// WriteString buffers s as the answer's body.
func (r *response) WriteString(s string) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body = append(r.body, s...)
	return len(s), nil
}

// render writes the answer as net/http would: status line, the handler's
// fields in key order (values with CR or LF turned into spaces), then
// Date, Content-Length and Content-Type when the handler set none, and
// Connection: close when the connection ends.
func (r *response) render(out []byte, keep bool) []byte {
	status := r.status
	if status == 0 {
		status = http.StatusOK
	}
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(status), 10)
	out = append(out, ' ')
	if t := http.StatusText(status); t != "" {
		out = append(out, t...)
	} else {
		out = append(out, "status code "...)
		out = strconv.AppendInt(out, int64(status), 10)
	}
	out = append(out, "\r\n"...)
	var keysArr [16]string
	keys := keysArr[:0]
	for k := range r.header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	bodyAllowed := status != http.StatusNoContent && status != http.StatusNotModified
	for _, k := range keys {
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		if k == "Transfer-Encoding" || (k == "Content-Length" && !bodyAllowed) || (k == "Connection" && !keep) {
			continue // the body is never chunked; Connection: close is written once, below
		}
		for _, v := range r.header[k] {
			out = append(out, k...)
			out = append(out, ": "...)
			for i := 0; i < len(v); i++ {
				ch := v[i]
				if ch == '\r' || ch == '\n' {
					ch = ' '
				}
				out = append(out, ch)
			}
			out = append(out, "\r\n"...)
		}
	}
	if _, ok := r.header["Date"]; !ok {
		out = append(out, "Date: "...)
		out = appendDate(out)
		out = append(out, "\r\n"...)
	}
	if bodyAllowed {
		if _, ok := r.header["Content-Length"]; !ok {
			out = append(out, "Content-Length: "...)
			out = strconv.AppendInt(out, int64(len(r.body)), 10)
			out = append(out, "\r\n"...)
		}
		if _, ok := r.header["Content-Type"]; !ok && len(r.body) > 0 {
			out = append(out, "Content-Type: "...)
			out = append(out, http.DetectContentType(r.body)...)
			out = append(out, "\r\n"...)
		}
	}
	if !keep {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, "\r\n"...)
	if bodyAllowed {
		out = append(out, r.body...)
	}
	return out
}

// dates caches the Date field's value for the current second.
var dates atomic.Pointer[dateCache]

type dateCache struct {
	sec int64
	val []byte
}

func appendDate(out []byte) []byte {
	now := time.Now()
	sec := now.Unix()
	if d := dates.Load(); d != nil && d.sec == sec {
		return append(out, d.val...)
	}
	d := &dateCache{sec: sec, val: now.UTC().AppendFormat(nil, http.TimeFormat)}
	dates.Store(d)
	return append(out, d.val...)
}

// ---- hand-off ----

// replayConn is a connection handed to Fallback: the bytes the loop read
// and did not serve come first, and the request they begin keeps the
// deadlines it had. net/http sets two read deadlines for a connection's
// first request, the head's (t0 + ReadHeaderTimeout) and the whole
// request's (t0 + ReadTimeout, a second call only when that is another
// time), t0 being when it starts reading: both are moved back by the time
// the loop already spent on that request, so a slow client gains nothing
// from the hand-off (TestHandOffKeepsDeadlines holds net/http to it).
type replayConn struct {
	net.Conn
	prefix []byte
	spent  time.Duration
	shift  int // deadlines still to move back
}

// SetReadDeadline moves t back by the time spent before the hand-off,
// for the first request's two deadlines (see replayConn).
func (c *replayConn) SetReadDeadline(t time.Time) error {
	if c.shift > 0 {
		c.shift--
		if !t.IsZero() {
			t = t.Add(-c.spent)
		}
	}
	return c.Conn.SetReadDeadline(t)
}

// Read returns the replayed bytes first, then the connection's.
func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// handoffListener is the listener Fallback serves: it accepts the
// connections the loop gives it.
type handoffListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// Accept returns the next handed-off connection, or net.ErrClosed.
func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept; connections given later are closed by their giver.
func (l *handoffListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

// Addr is the loop's listener's address.
func (l *handoffListener) Addr() net.Addr { return l.addr }

// ---- small parsing helpers ----

func cut(s, sep string) (before, after string, found bool) {
	for i := 0; i+len(sep) <= len(s); i++ {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func splitComma(s string) []string {
	var out []string
	for {
		tok, rest, more := cut(s, ",")
		out = append(out, trimOWS(tok))
		if !more {
			return out
		}
		s = rest
	}
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// common are header names whose canonical form is kept without an
// allocation when a request spells them in another case.
var common = []string{"Accept", "Accept-Encoding", "Authorization", "Connection", "Content-Length", "Content-Type",
	"Host", "User-Agent", "X-Forwarded-For", "X-Request-Id", "Idempotency-Key", "X-Switchyard-Room"}

// canonicalKey is textproto.CanonicalMIMEHeaderKey without an allocation
// when name is already canonical or a common name.
func canonicalKey(name string) string {
	upper := true
	canonical := true
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if upper && 'a' <= ch && ch <= 'z' || !upper && 'A' <= ch && ch <= 'Z' {
			canonical = false
			break
		}
		upper = ch == '-'
	}
	if canonical {
		return name
	}
	for _, c := range common {
		if asciiEqualFold(c, name) {
			return c
		}
	}
	return http.CanonicalHeaderKey(name)
}
