package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/switchyard/switchyard/internal/rawio"
)

// Transport is the process's upstream transport. As an http.RoundTripper
// it is a tuned *http.Transport (token requests, probes, anything built as
// an *http.Request; HTTP/2 where an HTTPS upstream offers it). Its Post
// path (used by Caller.Post, that is by every publish) is an HTTP/1.1
// client of its own for the upstreams it can reach directly: one pooled
// keep-alive connection per exchange, the request written with one write
// from a reused buffer, the answer's status line and framing headers
// parsed in place, the attempt's deadline set on the connection rather
// than through a context, and no goroutine per connection. Anything it does
// not handle (a proxy from the environment, an upstream that negotiates
// HTTP/2, a URL it cannot send verbatim) goes through the *http.Transport,
// with the same limits. Safe for concurrent use.
type Transport struct {
	std *http.Transport
	h1  *h1Client
}

// TransportOptions are an operator's settings of the upstream transport.
// Zero values take the defaults.
type TransportOptions struct {
	// MaxIdleConnsPerHost is how many idle keep-alive connections are kept
	// per upstream host (default 256): size it to the expected concurrent
	// publishes per upstream, so that a burst does not open (and, over
	// HTTPS, handshake) new connections.
	MaxIdleConnsPerHost int
	// IdleConnTimeout is how long an idle connection is kept (default
	// 90s): above the interval between publishes, below the upstream's
	// own idle timeout.
	IdleConnTimeout time.Duration
	// HTTP1Only turns HTTP/2 off: HTTPS upstreams are offered HTTP/1.1
	// only (ALPN), and every publish takes the HTTP/1.1 path.
	HTTP1Only bool
	// RawSocketIO makes the HTTP/1.1 path's connections read and write
	// with raw system calls (internal/rawio); net/http's connections are
	// unchanged.
	RawSocketIO bool
}

// NewTransport is NewTransportWith(TransportOptions{MaxIdleConnsPerHost:
// maxConnsPerHost}).
func NewTransport(maxConnsPerHost int) *Transport {
	return NewTransportWith(TransportOptions{MaxIdleConnsPerHost: maxConnsPerHost})
}

// NewTransportWith returns the tuned transport to share across every
// client of the process: keep-alive pools of o.MaxIdleConnsPerHost idle
// connections per host, idle connections closed after o.IdleConnTimeout,
// dial timeout 2 s, TLS handshake timeout 3 s, no transparent gzip
// (answers are tiny), no cap on connections per host (the callers'
// concurrency and the off-path workers bound it). Publishes go over
// HTTP/1.1 (see Transport), except to an HTTPS upstream that negotiates
// HTTP/2 (ALPN), which gets HTTP/2 through the *http.Transport unless
// o.HTTP1Only.
func NewTransportWith(o TransportOptions) *Transport {
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = 256
	}
	if o.IdleConnTimeout <= 0 {
		o.IdleConnTimeout = 90 * time.Second
	}
	dialer := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	std := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		MaxIdleConns:          o.MaxIdleConnsPerHost * 4,
		MaxIdleConnsPerHost:   o.MaxIdleConnsPerHost,
		IdleConnTimeout:       o.IdleConnTimeout,
		TLSHandshakeTimeout:   3 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: 0, // bounded by the per-attempt context instead
		// A custom DialContext turns HTTP/2 off unless forced: force it,
		// so that an HTTPS upstream offering h2 gets it.
		ForceAttemptHTTP2: !o.HTTP1Only,
		// No transparent gzip: publish and token answers are a few bytes,
		// and asking for gzip costs a header map and a check per request.
		DisableCompression: true,
	}
	protos := []string{"h2", "http/1.1"}
	if o.HTTP1Only {
		// A non-nil, empty TLSNextProto turns net/http's HTTP/2 off.
		std.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		protos = []string{"http/1.1"}
	}
	return &Transport{
		std: std,
		h1: &h1Client{
			dialer:           dialer,
			handshakeTimeout: std.TLSHandshakeTimeout,
			maxIdle:          o.MaxIdleConnsPerHost,
			idleTimeout:      std.IdleConnTimeout,
			proxy:            std.Proxy,
			protos:           protos,
			rawIO:            o.RawSocketIO,
			hosts:            map[string]*hostPool{},
		},
	}
}

// RoundTrip sends req through the *http.Transport (http.RoundTripper).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.std.RoundTrip(req)
}

// CloseIdleConnections closes the idle connections of both paths (called
// by http.Client.CloseIdleConnections).
func (t *Transport) CloseIdleConnections() {
	t.std.CloseIdleConnections()
	t.h1.closeIdle()
}

// postStats are counters of the Post path, read by the tests.
type postStats struct {
	// Dials is the number of connections the Post path opened (over
	// HTTPS: full TLS handshakes).
	Dials int64
	// Reused is the number of exchanges made on a pooled connection.
	Reused int64
	// Std is the number of Post exchanges handed to the *http.Transport.
	Std int64
}

// stats returns the counters of the Post path.
func (t *Transport) stats() postStats {
	t.h1.mu.Lock()
	defer t.h1.mu.Unlock()
	return t.h1.stats
}

// Header is the fixed header of one kind of request (a client's publishes,
// per credential), validated and rendered once as HTTP/1.1 lines. It is
// immutable: build it once with NewHeader and share it.
type Header struct {
	h    http.Header
	wire []byte
}

// NewHeader validates h (field names are tokens; values hold no CR, LF or
// other control byte but tab; no name WrittenByTransport) and returns it
// rendered.
// h is copied; later changes to it are not seen.
func NewHeader(h http.Header) (*Header, error) {
	out := &Header{h: h.Clone()}
	if out.h == nil {
		out.h = http.Header{}
	}
	var buf bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(out.h)) {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, fmt.Errorf("header field name %q is not a valid token", k)
		}
		if WrittenByTransport(k) {
			return nil, fmt.Errorf("header %s is set by the transport", k)
		}
		for _, v := range out.h[k] {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("header %s: value holds a control byte", k)
			}
			buf.WriteString(k)
			buf.WriteString(": ")
			buf.WriteString(v)
			buf.WriteString("\r\n")
		}
	}
	out.wire = buf.Bytes()
	return out, nil
}

// WrittenByTransport reports whether the header name (any case) is one the
// transport writes itself on every request (Host, User-Agent,
// Content-Length, Transfer-Encoding, Connection), which a client's Header
// may not set. Config validation refuses such names where an operator
// chooses a header name.
func WrittenByTransport(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Connection":
		return true
	}
	return false
}

// HTTP returns the header as an http.Header, shared: never modify it.
func (h *Header) HTTP() http.Header { return h.h }

// Limits of the Post path's answers. An answer over them is an error of
// the exchange (the connection is closed, not reused).
const (
	maxHeaderBytes = 64 << 10 // status line and header fields
	maxDrain       = 1 << 20  // body bytes read past maxBody to keep a connection
	max1xx         = 5        // informational answers skipped before the final one
	userAgent      = "Go-http-client/1.1"
)

// errUseStd says that the Post path does not handle this target: the
// exchange goes through the *http.Transport.
var errUseStd = errors.New("upstream: target not handled by the HTTP/1.1 path")

type h1Client struct {
	dialer           *net.Dialer
	tlsConfig        *tls.Config // nil: system roots (tests set their own)
	handshakeTimeout time.Duration
	maxIdle          int
	idleTimeout      time.Duration
	proxy            func(*http.Request) (*url.URL, error)
	protos           []string // ALPN offer over HTTPS
	rawIO            bool     // connections wrapped by rawio.Wrap

	mu    sync.Mutex
	hosts map[string]*hostPool // by scheme://host[:port]
	stats postStats
}

// hostPool is one upstream origin's idle connections (last in, first out).
type hostPool struct {
	c          *h1Client
	scheme     string
	addr       string // host:port to dial
	serverName string // TLS server name (host without port)
	host       string // Host header: the URL's host as written
	std        bool   // proxied or HTTP/2: every exchange goes through std

	mu   sync.Mutex
	idle []*h1Conn
}

type h1Conn struct {
	p     *hostPool
	nc    net.Conn
	tls   bool          // nc is a *tls.Conn
	br    *bufio.Reader // reads through the h1Conn (Read)
	wbuf  []byte
	timer *time.Timer // closes the connection when idle too long (expire)
	// Guarded by p.mu: in p.idle, since when, and whether timer is armed.
	idle   bool
	idleAt time.Time
	armed  bool

	// The exchange in progress: its deadline and context.
	dl  time.Time
	ctx context.Context
}

// cancelPoll is how often a read blocked on an upstream checks whether its
// exchange was canceled. A read sets its deadline to the sooner of the
// attempt's deadline and the next poll, instead of arming a watcher per
// exchange (context.AfterFunc: four allocations per exchange, and one more
// for the Done channel of a context that had none yet); exchanges shorter
// than cancelPoll never see a poll.
const cancelPoll = 100 * time.Millisecond

// Read reads from the connection for the exchange in progress: it ends at
// the attempt's deadline (os.ErrDeadlineExceeded) or, within cancelPoll,
// when the exchange's context is canceled (its error).
func (pc *h1Conn) Read(p []byte) (int, error) {
	for {
		n, err := pc.nc.Read(p)
		if n > 0 || err == nil || pc.ctx == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		if cerr := pc.ctx.Err(); cerr != nil {
			return 0, cerr
		}
		now := time.Now()
		if !now.Before(pc.dl) {
			return 0, err
		}
		_ = pc.nc.SetReadDeadline(earlier(pc.dl, now.Add(cancelPoll)))
	}
}

// write writes w for the exchange in progress. On a plain connection it
// polls for cancellation as Read does: it ends at the attempt's deadline
// (os.ErrDeadlineExceeded) or, within cancelPoll, when the exchange's
// context is canceled. A TLS write runs to the attempt's deadline.
func (pc *h1Conn) write(w []byte) error {
	for {
		n, err := pc.nc.Write(w)
		if err == nil || pc.tls || !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		w = w[n:]
		if cerr := pc.ctx.Err(); cerr != nil {
			return cerr
		}
		now := time.Now()
		if !now.Before(pc.dl) {
			return err
		}
		_ = pc.nc.SetWriteDeadline(earlier(pc.dl, now.Add(cancelPoll)))
	}
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// splitTarget splits an absolute http(s) URL into its origin
// (scheme://host[:port]) and its request-target (path and query), when the
// request-target can be sent verbatim: ok is false for anything else
// (userinfo, a fragment, bytes that are not visible ASCII), which then goes
// through the *http.Transport.
func splitTarget(target string) (origin, reqURI string, ok bool) {
	var rest string
	switch {
	case len(target) > 7 && target[:7] == "http://":
		rest = target[7:]
	case len(target) > 8 && target[:8] == "https://":
		rest = target[8:]
	default:
		return "", "", false
	}
	slash := len(rest)
	for i := 0; i < len(rest); i++ {
		if rest[i] == '/' {
			slash = i
			break
		}
	}
	if slash == len(rest) || slash == 0 {
		return "", "", false
	}
	for i := 0; i < slash; i++ {
		if c := rest[i]; c == '@' || c == '?' || c == '#' || c <= ' ' || c >= 0x7f {
			return "", "", false
		}
	}
	reqURI = rest[slash:]
	for i := 0; i < len(reqURI); i++ {
		if c := reqURI[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return "", "", false
		}
	}
	return target[:len(target)-len(rest)+slash], reqURI, true
}

// pool returns the pool of origin, creating it (and deciding whether the
// Post path handles it) on first use.
func (c *h1Client) pool(origin string) (*hostPool, error) {
	c.mu.Lock()
	p := c.hosts[origin]
	c.mu.Unlock()
	if p != nil {
		return p, nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.User != nil {
		return nil, errUseStd
	}
	p = &hostPool{c: c, scheme: u.Scheme, host: u.Host, serverName: u.Hostname()}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	p.addr = net.JoinHostPort(u.Hostname(), port)
	if c.proxy != nil {
		if pu, err := c.proxy(&http.Request{Method: http.MethodPost, URL: u, Header: http.Header{}}); err != nil || pu != nil {
			p.std = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if q := c.hosts[origin]; q != nil {
		return q, nil
	}
	c.hosts[origin] = p
	return p, nil
}

func (c *h1Client) closeIdle() {
	c.mu.Lock()
	pools := make([]*hostPool, 0, len(c.hosts))
	for _, p := range c.hosts {
		pools = append(pools, p)
	}
	c.mu.Unlock()
	for _, p := range pools {
		p.dropIdle()
	}
}

// get returns an idle connection (reused true) or nil.
func (p *hostPool) get() *h1Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	pc := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	pc.idle = false
	return pc // its idle timer, if armed, finds it busy or re-arms (expire)
}

// put returns a healthy connection to the pool, or closes it when the pool
// is full.
func (p *hostPool) put(pc *h1Conn) {
	p.mu.Lock()
	if len(p.idle) >= p.c.maxIdle {
		p.mu.Unlock()
		pc.close()
		return
	}
	pc.idle = true
	pc.idleAt = time.Now()
	p.idle = append(p.idle, pc)
	if !pc.armed {
		pc.armed = true
		pc.timer.Reset(p.c.idleTimeout)
	}
	p.mu.Unlock()
}

// expire runs when pc's idle timer fires: it closes pc if pc has been idle
// for the idle timeout, re-arms the timer for the rest when pc went idle
// again since, and disarms it while pc is busy (put arms it again). The
// timer is thus touched about once per idle timeout, not twice per
// exchange.
func (pc *h1Conn) expire() {
	p := pc.p
	p.mu.Lock()
	if !pc.idle {
		pc.armed = false
		p.mu.Unlock()
		return
	}
	if rest := p.c.idleTimeout - time.Since(pc.idleAt); rest > 0 {
		pc.timer.Reset(rest)
		p.mu.Unlock()
		return
	}
	pc.armed = false
	for i, q := range p.idle {
		if q == pc {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			break
		}
	}
	pc.idle = false
	p.mu.Unlock()
	pc.close()
}

func (pc *h1Conn) close() {
	pc.timer.Stop()
	_ = pc.nc.Close()
}

// dial opens a connection to p within dl (and the dial and handshake
// timeouts). It returns errUseStd when the upstream negotiates HTTP/2 (p
// is then marked, and every later exchange goes through std).
func (p *hostPool) dial(ctx context.Context, dl time.Time) (*h1Conn, error) {
	d := *p.c.dialer
	if d.Deadline.IsZero() || dl.Before(d.Deadline) {
		d.Deadline = dl
	}
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	if p.c.rawIO {
		nc = rawio.Wrap(nc)
	}
	if p.scheme == "https" {
		cfg := &tls.Config{}
		if p.c.tlsConfig != nil {
			cfg = p.c.tlsConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = p.serverName
		}
		cfg.NextProtos = p.c.protos
		tc := tls.Client(nc, cfg)
		hdl := time.Now().Add(p.c.handshakeTimeout)
		if dl.Before(hdl) {
			hdl = dl
		}
		hctx, cancel := context.WithDeadline(ctx, hdl)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = nc.Close()
			return nil, err
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			_ = tc.Close()
			p.mu.Lock()
			p.std = true
			p.mu.Unlock()
			return nil, errUseStd
		}
		nc = tc
	}
	p.c.mu.Lock()
	p.c.stats.Dials++
	p.c.mu.Unlock()
	_, isTLS := nc.(*tls.Conn)
	pc := &h1Conn{p: p, nc: nc, tls: isTLS, wbuf: make([]byte, 0, 1024)}
	pc.br = bufio.NewReaderSize(pc, 4096)
	pc.timer = time.AfterFunc(time.Hour, pc.expire)
	pc.timer.Stop()
	return pc, nil
}

// answer is the part of an HTTP answer the Caller needs.
type answer struct {
	status     int
	retryAfter string
	body       []byte // the first bytes (at most maxBody) of a non-2xx answer
}

// post makes one exchange of body to target under dl and ctx. It returns
// errUseStd when the target is not for this path.
func (c *h1Client) post(ctx context.Context, dl time.Time, target string, h *Header, body []byte) (answer, error) {
	origin, reqURI, ok := splitTarget(target)
	if !ok {
		return answer{}, errUseStd
	}
	p, err := c.pool(origin)
	if err != nil {
		return answer{}, err
	}
	p.mu.Lock()
	std := p.std
	p.mu.Unlock()
	if std {
		return answer{}, errUseStd
	}
	if err := ctx.Err(); err != nil {
		return answer{}, err
	}
	// A pooled connection the upstream closed while it sat idle fails
	// before any byte of an answer. The other idle connections of the
	// origin are then likely closed too (an upstream restart closes them
	// all): they are dropped, and the exchange is made again once on a new
	// connection, so that a restart costs no attempt, however full the
	// pool was (the Caller retries network errors in any case).
	for try := 0; ; try++ {
		var pc *h1Conn
		if try == 0 {
			pc = p.get()
		}
		reused := pc != nil
		if pc == nil {
			pc, err = p.dial(ctx, dl)
			if err != nil {
				return answer{}, err
			}
		}
		a, got, err := pc.exchange(ctx, dl, p.host, reqURI, h, body)
		if err == nil {
			if reused {
				c.mu.Lock()
				c.stats.Reused++
				c.mu.Unlock()
			}
			return a, nil
		}
		if reused && !got && ctx.Err() == nil && time.Now().Before(dl) {
			p.dropIdle()
			continue
		}
		return answer{}, err
	}
}

// dropIdle closes every idle connection of p.
func (p *hostPool) dropIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	for _, pc := range idle {
		pc.idle = false
	}
	p.mu.Unlock()
	for _, pc := range idle {
		pc.close()
	}
}

// exchange writes the request and reads the answer on pc, then pools or
// closes pc. got says whether any byte of an answer was read.
func (pc *h1Conn) exchange(ctx context.Context, dl time.Time, host, reqURI string, h *Header, body []byte) (a answer, got bool, err error) {
	keep := false
	defer func() {
		if keep {
			pc.p.put(pc)
		} else {
			pc.close()
		}
	}()
	// Writes end at the attempt's deadline (a request fits the socket
	// buffer unless the upstream stopped reading); reads poll for
	// cancellation (see Read).
	pc.dl, pc.ctx = dl, ctx
	defer func() { pc.ctx = nil }()
	if pc.tls {
		// A TLS write that times out leaves the connection unusable, so
		// a TLS write cannot poll: its deadline is the attempt's.
		_ = pc.nc.SetWriteDeadline(dl)
		_ = pc.nc.SetReadDeadline(earlier(dl, time.Now().Add(cancelPoll)))
	} else {
		// One call sets both directions (one runtime timer for both).
		_ = pc.nc.SetDeadline(earlier(dl, time.Now().Add(cancelPoll)))
	}
	w := pc.wbuf[:0]
	w = append(w, "POST "...)
	w = append(w, reqURI...)
	w = append(w, " HTTP/1.1\r\nHost: "...)
	w = append(w, host...)
	w = append(w, "\r\nUser-Agent: "+userAgent+"\r\nContent-Length: "...)
	w = strconv.AppendInt(w, int64(len(body)), 10)
	w = append(w, "\r\n"...)
	w = append(w, h.wire...)
	w = append(w, "\r\n"...)
	w = append(w, body...)
	if cap(w) <= 64<<10 {
		pc.wbuf = w
	}
	if err := pc.write(w); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return answer{}, false, cerr
		}
		return answer{}, false, timeoutErr(err)
	}
	a, keep, got, err = readAnswer1(pc.br)
	if err != nil {
		keep = false
		if cerr := ctx.Err(); cerr != nil {
			return answer{}, got, cerr
		}
		return answer{}, got, timeoutErr(err)
	}
	return a, true, nil
}

// timeoutErr turns the connection's deadline error into
// context.DeadlineExceeded, as an attempt's context would have ended it.
func timeoutErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

// errMalformed wraps every framing error of an answer.
var errMalformed = errors.New("malformed HTTP answer")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errMalformed}, args...)...)
}

// readAnswer1 reads one final answer from br: the status line and header
// fields (at most maxHeaderBytes), skipping up to max1xx informational
// answers, then the body by its framing (Content-Length, chunked, or up to
// the end of the connection), keeping at most maxBody bytes of a non-2xx
// body and draining the rest up to maxDrain. keep says whether the
// connection can carry another exchange; got whether any byte was read.
func readAnswer1(br *bufio.Reader) (a answer, keep, got bool, err error) {
	var (
		clen    int64 = -1
		chunked bool
		close   bool
	)
	for n1xx := 0; ; n1xx++ {
		line, err := readLine(br, maxHeaderBytes)
		if len(line) > 0 || err == nil {
			got = true
		}
		if err != nil {
			return a, false, got, err
		}
		status, http10, err := parseStatusLine(line)
		if err != nil {
			return a, false, true, err
		}
		a.status = status
		close = http10
		clen, chunked = -1, false
		budget := maxHeaderBytes - len(line)
		for {
			line, err := readLine(br, budget)
			if err != nil {
				return a, false, true, err
			}
			budget -= len(line) + 2
			if len(line) == 0 {
				break
			}
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 {
				return a, false, true, malformed("header line without a field name")
			}
			name, value := line[:colon], trimOWS(line[colon+1:])
			if !validFieldName(name) {
				return a, false, true, malformed("invalid header field name %q", name)
			}
			if !validFieldValue(value) {
				return a, false, true, malformed("control byte in header %s", name)
			}
			switch {
			case asciiEqualFold(name, "content-length"):
				n, ok := parseContentLength(value)
				if !ok || (clen >= 0 && n != clen) {
					return a, false, true, malformed("invalid Content-Length %q", value)
				}
				clen = n
			case asciiEqualFold(name, "transfer-encoding"):
				// An HTTP/1.0 message with a transfer coding has faulty
				// framing (RFC 9112 6.1): refused.
				if !asciiEqualFold(value, "chunked") || chunked || http10 {
					return a, false, true, malformed("unsupported Transfer-Encoding %q", value)
				}
				chunked = true
			case asciiEqualFold(name, "connection"):
				if tokenListHas(value, "close") {
					close = true
				} else if http10 && tokenListHas(value, "keep-alive") {
					close = false
				}
			case asciiEqualFold(name, "retry-after"):
				a.retryAfter = string(value)
			}
		}
		if status == http.StatusSwitchingProtocols {
			return a, false, true, malformed("unexpected 101 Switching Protocols")
		}
		if status >= 200 || n1xx >= max1xx {
			if status < 200 {
				return a, false, true, malformed("too many informational answers")
			}
			break
		}
	}
	ok2xx := a.status >= 200 && a.status < 300
	switch {
	case a.status == http.StatusNoContent || a.status == http.StatusNotModified:
		return a, !close, true, nil
	case chunked:
		// Content-Length beside chunked is ignored (RFC 9112 6.3), and
		// the connection is not reused after such an answer.
		if clen >= 0 {
			close = true
		}
		cr := httputil.NewChunkedReader(br)
		body, err := readBody(cr, ok2xx)
		if err != nil {
			return a, false, true, err
		}
		a.body = body
		// Read the last chunk and the trailer; a body over the drain
		// limit ends the connection.
		if _, err := io.CopyN(io.Discard, cr, maxDrain); err != io.EOF {
			return a, false, true, nil
		}
		if err := skipTrailer(br); err != nil {
			return a, false, true, nil
		}
		return a, !close, true, nil
	case clen >= 0:
		if !ok2xx {
			n := min(clen, maxBody)
			a.body = make([]byte, n)
			if _, err := io.ReadFull(br, a.body); err != nil {
				return a, false, true, unexpectedEOF(err)
			}
			clen -= n
		}
		if clen > maxDrain {
			return a, false, true, nil
		}
		if _, err := br.Discard(int(clen)); err != nil {
			return a, false, true, unexpectedEOF(err)
		}
		return a, !close, true, nil
	default:
		// No framing: the body runs to the end of the connection.
		body, err := readBody(br, ok2xx)
		if err != nil {
			return a, false, true, err
		}
		a.body = body
		return a, false, true, nil
	}
}

// readBody reads r to its end, keeping the first maxBody bytes unless
// discard, and draining up to maxDrain more; a longer body stops there
// (the caller closes the connection).
func readBody(r io.Reader, discard bool) ([]byte, error) {
	var body []byte
	if !discard {
		var err error
		body, err = io.ReadAll(io.LimitReader(r, maxBody))
		if err != nil {
			return nil, unexpectedEOF(err)
		}
	}
	if _, err := io.CopyN(io.Discard, r, maxDrain); err != nil && err != io.EOF {
		return nil, unexpectedEOF(err)
	}
	return body, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readLine reads one line of at most limit bytes without its line ending
// (CRLF or a bare LF). The slice is valid until the next read of br.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// A line longer than the buffer (rare): gather it.
		long := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull && len(long) <= limit {
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if err != nil && err != bufio.ErrBufferFull {
		if err == io.EOF && len(line) > 0 {
			return line, io.ErrUnexpectedEOF
		}
		return line, err
	}
	if len(line) > limit || err == bufio.ErrBufferFull {
		return nil, malformed("header over %d bytes", maxHeaderBytes)
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// parseStatusLine parses "HTTP/1.x SSS[ reason]".
func parseStatusLine(line []byte) (status int, http10 bool, err error) {
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return 0, false, malformed("invalid status line %q", truncate(line))
	}
	switch line[7] {
	case '0':
		http10 = true
	case '1':
	default:
		return 0, false, malformed("unsupported version in %q", truncate(line))
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, false, malformed("invalid status code in %q", truncate(line))
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 {
		return 0, false, malformed("invalid status code in %q", truncate(line))
	}
	return status, http10, nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// validFieldName reports whether b is an RFC 9110 token.
func validFieldName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// validFieldValue reports whether b holds no control byte but tab (RFC
// 9110 field-value; obs-text is allowed, as net/http allows it).
func validFieldValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// tokenListHas reports whether the comma-separated list v holds tok (case
// insensitive).
func tokenListHas(v []byte, tok string) bool {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var item []byte
		if i < 0 {
			item, v = v, nil
		} else {
			item, v = v[:i], v[i+1:]
		}
		if asciiEqualFold(trimOWS(item), tok) {
			return true
		}
	}
	return false
}

// skipTrailer reads the trailer fields after the last chunk up to the
// blank line.
func skipTrailer(br *bufio.Reader) error {
	budget := maxHeaderBytes
	for {
		line, err := readLine(br, budget)
		if err != nil {
			return err
		}
		budget -= len(line) + 2
		if len(line) == 0 {
			return nil
		}
	}
}
