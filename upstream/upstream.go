// Package upstream is the HTTP machinery both transports share: one tuned
// http.Transport, the per-call deadline and retry policy (exponential
// backoff with full jitter, see Backoff, on network errors, outages and 429
// with Retry-After; never on answers the message itself causes, see
// Caller.Do), bodies always drained and closed,
// and per-transport request metrics. legacyparty and realtime build their
// publish and token calls on it, and their reconnect loops on Backoff, so
// the two sides behave the same under failure.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Policy is the deadline and retry policy of one upstream. The zero value is
// not useful: call WithDefaults.
type Policy struct {
	// Timeout bounds one whole call, retries included (default 5s).
	Timeout time.Duration
	// AttemptTimeout bounds one HTTP attempt (default 2s, at most Timeout).
	AttemptTimeout time.Duration
	// MaxAttempts is the number of attempts, first one included (default 4).
	MaxAttempts int
	// BackoffBase is the ceiling of the first backoff; each retry doubles
	// it; the wait is drawn uniformly below it (Backoff, full jitter;
	// default 50ms).
	BackoffBase time.Duration
	// BackoffMax caps the ceiling of one backoff, and a honoured
	// Retry-After (default 1s).
	BackoffMax time.Duration
}

// WithDefaults returns p with zero fields set to their defaults.
func (p Policy) WithDefaults() Policy {
	if p.Timeout <= 0 {
		p.Timeout = 5 * time.Second
	}
	if p.AttemptTimeout <= 0 {
		p.AttemptTimeout = 2 * time.Second
	}
	if p.AttemptTimeout > p.Timeout {
		p.AttemptTimeout = p.Timeout
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 4
	}
	if p.BackoffBase <= 0 {
		p.BackoffBase = 50 * time.Millisecond
	}
	if p.BackoffMax <= 0 {
		p.BackoffMax = time.Second
	}
	return p
}

// Metrics are the per-transport request metrics. One Metrics is shared by
// every client of a process; it is safe for concurrent use.
type Metrics struct {
	mu       sync.RWMutex
	children map[childKey]any // see child
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	retries  *prometheus.CounterVec
	skipped  *prometheus.CounterVec
	reconn   *prometheus.CounterVec
	ready    *prometheus.HistogramVec
}

// NewMetrics registers the upstream metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_upstream_requests_total",
			Help: "HTTP requests to an upstream by transport, operation and result class (2xx, 4xx, 5xx, error).",
		}, []string{"transport", "op", "class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_upstream_request_duration_seconds",
			Help:    "Duration of one HTTP attempt to an upstream.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"transport", "op"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_upstream_retries_total",
			Help: "Retried HTTP attempts to an upstream by transport and operation.",
		}, []string{"transport", "op"}),
	}
	m.skipped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchyard_subscriber_frames_skipped_total",
		Help: "Frames a subscriber received but could not use, by transport and reason.",
	}, []string{"transport", "reason"})
	m.reconn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchyard_subscriber_reconnects_total",
		Help: "Subscriber reconnects by transport.",
	}, []string{"transport"})
	m.ready = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "switchyard_subscriber_ready_seconds",
		Help:    "Time from the start of a subscription (or of its reconnect) to proven readiness, by transport.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"transport"})
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.retries, m.skipped, m.reconn, m.ready)
	}
	return m
}

// childKey names one metric child: a request counter of (transport, op,
// class), or with class "" the attempt-duration histogram of (transport,
// op).
type childKey struct{ transport, op, class string }

// child returns the child of k, resolving it on first use: the label sets
// are few and fixed, and WithLabelValues per request hashes the labels and
// allocates their slice.
func (m *Metrics) child(k childKey) any {
	m.mu.RLock()
	c := m.children[k]
	m.mu.RUnlock()
	if c != nil {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c = m.children[k]; c == nil {
		if k.class == "" {
			c = m.duration.WithLabelValues(k.transport, k.op)
		} else {
			c = m.requests.WithLabelValues(k.transport, k.op, k.class)
		}
		if m.children == nil {
			m.children = map[childKey]any{}
		}
		m.children[k] = c
	}
	return c
}

func (m *Metrics) counter(transport, op, class string) prometheus.Counter {
	return m.child(childKey{transport, op, class}).(prometheus.Counter)
}

func (m *Metrics) observer(transport, op string) prometheus.Observer {
	return m.child(childKey{transport, op, ""}).(prometheus.Observer)
}

// FrameSkipped counts a subscriber frame that could not be used; reason is
// a short fixed word (binary, not_json, bad_frame...). Safe on a nil *Metrics.
func (m *Metrics) FrameSkipped(transport, reason string) {
	if m != nil {
		m.skipped.WithLabelValues(transport, reason).Inc()
	}
}

// Reconnected counts a subscriber reconnect. Safe on a nil *Metrics.
func (m *Metrics) Reconnected(transport string) {
	if m != nil {
		m.reconn.WithLabelValues(transport).Inc()
	}
}

// SubscriberReady records how long a subscription took from its start (or
// the start of its reconnect) to proven readiness. Safe on a nil *Metrics.
func (m *Metrics) SubscriberReady(transport string, d time.Duration) {
	if m != nil {
		m.ready.WithLabelValues(transport).Observe(d.Seconds())
	}
}

// StatusError is returned for a final non-2xx answer. Body holds at most the
// first 512 bytes of the answer, for logs (never shown to callers).
// Repeated says that the call stopped because two attempts got this same
// answer (a 5xx the message itself causes, see Caller.Do).
type StatusError struct {
	Status   int
	Body     string
	Repeated bool
}

// Error names the status and quotes the start of the answer.
func (e *StatusError) Error() string {
	return fmt.Sprintf("upstream answered %d: %q", e.Status, e.Body)
}

// Describe is the one wording of a failed Do for callers: the final status
// or the class of error, and the attempts made — "answered 503 after 4
// attempts", "timed out after 1 attempt", "canceled after 2 attempts",
// "network error after 3 attempts". It never includes the upstream's answer
// text or address, so it is safe to show to clients. It does not say which
// upstream failed: the caller that knows adds that once (the multicast
// adapter's "legacy transport failed: ...", for example).
func Describe(err error, attempts int) string {
	var se *StatusError
	switch {
	case errors.As(err, &se) && se.Repeated:
		return fmt.Sprintf("answered %d after %s, the same answer each time: caused by the message, not retried further", se.Status, plural(attempts))
	case errors.As(err, &se):
		return fmt.Sprintf("answered %d after %s", se.Status, plural(attempts))
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out after " + plural(attempts)
	case errors.Is(err, context.Canceled):
		return "canceled after " + plural(attempts)
	default:
		return "network error after " + plural(attempts)
	}
}

func plural(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return strconv.Itoa(n) + " attempts"
}

// Response is a final 2xx answer; Body holds at most maxBody bytes.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Caller performs calls to one upstream under one Policy. It is safe for
// concurrent use and holds no per-call state.
type Caller struct {
	Client    *http.Client
	Policy    Policy
	Transport string // metric label: "legacy" or "realtime"
	Metrics   *Metrics
	// Sleep waits between attempts; nil uses a timer honouring ctx. Tests
	// may replace it.
	Sleep func(ctx context.Context, d time.Duration) error
}

// NewRequestFunc builds the request of one attempt. It is called once per
// attempt, because a request body can be read only once.
type NewRequestFunc func(ctx context.Context) (*http.Request, error)

const maxBody = 64 << 10

// Do runs one call: attempts newReq until a 2xx answer, a non-retryable
// answer, MaxAttempts, or the Timeout/ctx deadline. op labels the metrics
// ("publish", "token"). It returns the 2xx response, the number of attempts
// made, and otherwise an error: a *StatusError for a final HTTP answer, or
// the network/context error. Response bodies are always drained and closed.
//
// Retry policy, by answer: network errors, 502, 503 and 504 (an upstream
// or a proxy that is down) and 429 are retried with backoff (a Retry-After
// of a 429 or a 5xx is honoured, capped by BackoffMax). A 4xx other than 429 is final: the message is refused.
// 501 and 505 are final too (the upstream does not support the request).
// Any other 5xx (500 above all) may be the upstream choking on this very
// message (PartyKit answers 500 to a body its JSON handling gives up on):
// it is retried, but when an attempt gets the same status and the same
// answer text as the one before, the call stops there (StatusError
// Repeated) rather than sending the same body again.
func (c *Caller) Do(ctx context.Context, op string, newReq NewRequestFunc) (Response, int, error) {
	return c.run(ctx, op, &call{newReq: newReq})
}

// Post runs one POST call of body to target with the fixed header h, under
// the same policy, retries, metrics and errors as Do (body is not
// modified, and must not change until Post returns). It returns the number
// of attempts made and, on failure, the error Do would return; a 2xx
// answer's body is discarded. When the client's transport is this
// package's *Transport, each attempt is one exchange on its HTTP/1.1 path
// (see Transport), bounded by the attempt's deadline set on the
// connection, with no request object built; with any other transport, or
// a target that path does not handle, each attempt is PostRequest through
// the transport.
func (c *Caller) Post(ctx context.Context, op, target string, h *Header, body []byte) (int, error) {
	_, n, err := c.run(ctx, op, &call{target: target, header: h, body: body})
	return n, err
}

// call is what one Do or Post repeats per attempt: a request builder, or a
// POST's target, header and body.
type call struct {
	newReq NewRequestFunc
	target string
	header *Header
	body   []byte
}

func (c *Caller) run(ctx context.Context, op string, cl *call) (Response, int, error) {
	p := c.Policy.WithDefaults()
	// The call's deadline is enforced through each attempt's context and
	// the backoff check below, not through a context of its own: one timer
	// per attempt instead of two (profiles of the gateway showed the
	// timer contexts as its largest cost of its own).
	callDL := time.Now().Add(p.Timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(callDL) {
		callDL = dl
	}
	callErr := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !time.Now().Before(callDL) {
			return context.DeadlineExceeded
		}
		return nil
	}
	var lastErr error
	attempts := 0
	for attempts < p.MaxAttempts {
		if attempts > 0 && c.Metrics != nil {
			c.Metrics.retries.WithLabelValues(c.Transport, op).Inc()
		}
		attempts++
		resp, retryAfter, retry, err := c.attempt(ctx, callDL, p, op, cl)
		if err == nil {
			return resp, attempts, nil
		}
		if se, prev := statusOf(err), statusOf(lastErr); se != nil && prev != nil && stopsOnRepeat(se.Status) &&
			se.Status == prev.Status && se.Body == prev.Body {
			se.Repeated = true
			retry = false
		}
		lastErr = err
		if !retry || attempts >= p.MaxAttempts || callErr() != nil {
			break
		}
		wait := Backoff{Base: p.BackoffBase, Max: p.BackoffMax}.Delay(attempts - 1)
		if retryAfter > 0 {
			wait = min(retryAfter, p.BackoffMax)
		}
		if time.Until(callDL) < wait {
			break // the next attempt could not finish inside the deadline
		}
		if err := c.sleep(ctx, wait); err != nil {
			break
		}
	}
	if cerr := callErr(); cerr != nil && !isStatus(lastErr) {
		lastErr = fmt.Errorf("%w (after %d attempts: %v)", cerr, attempts, lastErr)
	}
	return Response{}, attempts, lastErr
}

func isStatus(err error) bool { return statusOf(err) != nil }

// statusOf returns err's *StatusError, or nil.
func statusOf(err error) *StatusError {
	var se *StatusError
	if errors.As(err, &se) {
		return se
	}
	return nil
}

// stopsOnRepeat reports whether a retried status ends the call when two
// attempts in a row get the same answer: the 5xx that are not outages.
func stopsOnRepeat(status int) bool {
	switch status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return false
	}
	return status >= 500
}

// attempt runs one HTTP attempt under a deadline of AttemptTimeout, capped
// by callDL, the deadline of the whole call.
func (c *Caller) attempt(ctx context.Context, callDL time.Time, p Policy, op string, cl *call) (Response, time.Duration, bool, error) {
	dl := time.Now().Add(p.AttemptTimeout)
	if callDL.Before(dl) {
		dl = callDL
	}
	if cl.newReq == nil {
		if t, ok := c.Client.Transport.(*Transport); ok {
			start := time.Now()
			a, err := t.h1.post(ctx, dl, cl.target, cl.header, cl.body)
			if err != errUseStd {
				c.observe(op, start)
				if err != nil {
					c.count(op, "error")
					return Response{}, 0, true, &url.Error{Op: "Post", URL: cl.target, Err: err}
				}
				retryAfter, retry, err := c.classify(op, a.status, a.retryAfter, a.body)
				return Response{Status: a.status}, retryAfter, retry, err
			}
			t.h1.mu.Lock()
			t.h1.stats.Std++
			t.h1.mu.Unlock()
		}
	}
	actx, cancel := context.WithDeadline(ctx, dl)
	defer cancel()
	var req *http.Request
	var err error
	if cl.newReq != nil {
		req, err = cl.newReq(actx)
	} else {
		req, err = PostRequest(actx, cl.target, cl.body, cl.header.HTTP())
	}
	if err != nil {
		return Response{}, 0, false, fmt.Errorf("build request: %w", err)
	}
	start := time.Now()
	resp, err := c.send(req)
	c.observe(op, start)
	if err != nil {
		c.count(op, "error")
		return Response{}, 0, true, err
	}
	defer resp.Body.Close()
	body, readErr := readAnswer(resp)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 && readErr != nil {
		c.count(op, "2xx")
		return Response{}, 0, true, fmt.Errorf("read answer: %w", readErr)
	}
	retryAfter, retry, err := c.classify(op, resp.StatusCode, resp.Header.Get("Retry-After"), body)
	if err != nil {
		return Response{}, retryAfter, retry, err
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: body}, 0, false, nil
}

// classify counts a final answer of status and says whether the call
// retries it (after retryAfter, from its Retry-After header, when set), or
// returns the *StatusError that ends it; nil error for a 2xx.
func (c *Caller) classify(op string, status int, retryAfterHdr string, body []byte) (time.Duration, bool, error) {
	switch {
	case status >= 200 && status < 300:
		c.count(op, "2xx")
		return 0, false, nil
	case status == http.StatusNotImplemented || status == http.StatusHTTPVersionNotSupported:
		c.count(op, "5xx")
		return 0, false, &StatusError{Status: status, Body: snippet(body)}
	case status >= 500:
		c.count(op, "5xx")
		return retryAfter(retryAfterHdr), true, &StatusError{Status: status, Body: snippet(body)}
	case status == http.StatusTooManyRequests:
		c.count(op, "4xx")
		return retryAfter(retryAfterHdr), true, &StatusError{Status: status, Body: snippet(body)}
	default: // other 4xx, and 3xx: redirects are not followed
		c.count(op, classOf(status))
		return 0, false, &StatusError{Status: status, Body: snippet(body)}
	}
}

func classOf(status int) string {
	switch status / 100 {
	case 1:
		return "1xx"
	case 2:
		return "2xx"
	case 3:
		return "3xx"
	case 4:
		return "4xx"
	}
	return "5xx"
}

// send makes one exchange through the transport of c.Client. Redirects are
// not followed: an upstream publish or token call answering 3xx is an
// error like any other final answer (following it would turn a POST into a
// GET), and going to the transport directly also spares the copy of the
// headers http.Client makes for redirects on every request. Errors are
// wrapped in *url.Error as http.Client wraps them.
func (c *Caller) send(req *http.Request) (*http.Response, error) {
	rt := c.Client.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		return nil, &url.Error{Op: urlErrorOp(req.Method), URL: req.URL.String(), Err: err}
	}
	return resp, nil
}

// urlErrorOp is the Op of the *url.Error http.Client returns: "Post" for
// POST.
func urlErrorOp(method string) string {
	if method == "" {
		return "Get"
	}
	return method[:1] + strings.ToLower(method[1:])
}

// readAnswer reads at most maxBody bytes of resp's body and drains the rest
// (up to 1 MiB) so that the connection can be reused. A body of a known
// length within maxBody (publish answers: "ok" or empty) is read into a
// buffer of exactly that size; net/http reports the end of such a body with
// its last bytes, so the connection is released without a further read.
func readAnswer(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= maxBody {
		body := make([]byte, n)
		_, err := io.ReadFull(resp.Body, body)
		return body, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // drain for keep-alive
	return body, err
}

// count and observe use the metric children resolved once (Metrics.child).
func (c *Caller) count(op, class string) {
	if c.Metrics != nil {
		c.Metrics.counter(c.Transport, op, class).Inc()
	}
}

func (c *Caller) observe(op string, start time.Time) {
	if c.Metrics != nil {
		c.Metrics.observer(c.Transport, op).Observe(time.Since(start).Seconds())
	}
}

func (c *Caller) sleep(ctx context.Context, d time.Duration) error {
	if c.Sleep != nil {
		return c.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryAfter parses a Retry-After header given in seconds; 0 if absent or
// not a non-negative integer.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		if t, err := http.ParseTime(v); err == nil {
			return time.Until(t)
		}
		return 0
	}
	return time.Duration(n) * time.Second
}

func snippet(b []byte) string {
	if len(b) > 512 {
		b = b[:512]
	}
	return string(b)
}
