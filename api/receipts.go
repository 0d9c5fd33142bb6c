package api

import (
	"crypto/sha256"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/receipts"
)

// ReceiptLimits bound POST /v1/receipts. Zero fields take the defaults
// named below.
type ReceiptLimits struct {
	// MaxReceipts is the most receipts one report may carry (default 500).
	MaxReceipts int
	// MaxBodyBytes bounds a report's body (default 64 KiB).
	MaxBodyBytes int64
	// PerSecond and Burst are the token bucket of one grant and room
	// (defaults 1 per second, burst 10): a page reports every few seconds.
	PerSecond float64
	Burst     int
	// MaxKeys bounds the grant and room pairs whose bucket is remembered
	// (default 10,000); beyond it idle pairs are forgotten first.
	MaxKeys int
}

func (l ReceiptLimits) withDefaults() ReceiptLimits {
	if l.MaxReceipts <= 0 {
		l.MaxReceipts = 500
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = 64 << 10
	}
	if l.PerSecond <= 0 {
		l.PerSecond = 1
	}
	if l.Burst <= 0 {
		l.Burst = 10
	}
	if l.MaxKeys <= 0 {
		l.MaxKeys = 10000
	}
	return l
}

// maxReceiptLatency bounds a reported latency; receipts outside
// [-maxReceiptSkew, maxReceiptLatency] are refused as invalid, and small
// negative values (clock offset estimates are only as good as half a round
// trip) count as zero.
const (
	maxReceiptLatency = 10 * time.Minute
	maxReceiptSkew    = 10 * time.Second
)

// grantLimiter is the token bucket of each grant and room. It holds at most
// MaxKeys buckets. Safe for concurrent use.
type grantLimiter struct {
	lim ReceiptLimits
	mu  sync.Mutex
	m   map[[32]byte]*grantBucket
}

type grantBucket struct {
	l    *rate.Limiter
	used time.Time
}

func newGrantLimiter(l ReceiptLimits) *grantLimiter {
	return &grantLimiter{lim: l.withDefaults(), m: map[[32]byte]*grantBucket{}}
}

// allow takes one token of the bucket of (grant, room) at now.
func (g *grantLimiter) allow(grant, room string, now time.Time) bool {
	k := sha256.Sum256([]byte(grant + "\x00" + room))
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.m[k]
	if b == nil {
		if len(g.m) >= g.lim.MaxKeys {
			g.evict(now)
		}
		b = &grantBucket{l: rate.NewLimiter(rate.Limit(g.lim.PerSecond), g.lim.Burst)}
		g.m[k] = b
	}
	b.used = now
	return b.l.AllowN(now, 1)
}

// evict forgets buckets idle for a minute (their bucket is full again by
// then, so forgetting them changes nothing), and, if that is not enough,
// any half. g.mu is held.
func (g *grantLimiter) evict(now time.Time) {
	for k, b := range g.m {
		if now.Sub(b.used) > time.Minute {
			delete(g.m, k)
		}
	}
	for k := range g.m {
		if len(g.m) < g.lim.MaxKeys/2 {
			break
		}
		delete(g.m, k)
	}
}

// len returns the number of buckets held (for tests).
func (g *grantLimiter) len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.m)
}

// receiptsRequest is the body of POST /v1/receipts. It travels as
// text/plain (navigator.sendBeacon, or a fetch without preflight), so the
// grant is in the body; an Authorization header is accepted too.
type receiptsRequest struct {
	App      *string          `json:"app"`
	Room     *string          `json:"room"`
	Grant    string           `json:"grant"`
	Receipts []receiptRequest `json:"receipts"`
}

// receiptRequest is one message as one browser saw it: the message's
// sequence (epoch, seq) when its app is sequenced, its channel, and the
// receive latency through each transport that delivered it. A receipt
// with neither latency reports a message the browser never received (only
// meaningful with epoch and seq).
type receiptRequest struct {
	Epoch      string   `json:"epoch"`
	Seq        uint64   `json:"seq"`
	Channel    string   `json:"channel"`
	LegacyMs   *float64 `json:"legacyMs"`
	RealtimeMs *float64 `json:"realtimeMs"`
}

// receiptsAnswer is the 202 answer.
type receiptsAnswer struct {
	Accepted int `json:"accepted"`
}

// handleReceipts is POST /v1/receipts: a browser reports, with its room
// grant, which transport delivered each message and when.
func (s *Server) handleReceipts(w http.ResponseWriter, r *http.Request) {
	if s.deps.Receipts == nil {
		s.writeError(w, r, "", "", broadcast.Errorf(broadcast.ENOTFOUND, "receipts are not collected"))
		return
	}
	if r.ContentLength > s.cfg.Receipts.MaxBodyBytes {
		s.receiptError(w, r, "", "too_large", broadcast.Errorf(broadcast.ETOOLARGE, "receipts body is %d bytes, over the %d byte limit", r.ContentLength, s.cfg.Receipts.MaxBodyBytes))
		return
	}
	b, err := readBodyLimit(w, r, s.cfg.Receipts.MaxBodyBytes)
	if err != nil {
		s.receiptError(w, r, "", reasonOf(err), err)
		return
	}
	var req receiptsRequest
	if err := decodeStrict(b, &req, ""); err != nil {
		s.receiptError(w, r, "", "invalid", err)
		return
	}
	if req.App == nil || req.Room == nil {
		s.receiptError(w, r, "", "invalid", broadcast.Errorf(broadcast.EINVALID, "app and room: required"))
		return
	}
	app, room := *req.App, *req.Room
	a, ok := s.cfg.Apps[app]
	if !ok {
		s.receiptError(w, r, "", "unknown_app", broadcast.Errorf(broadcast.ENOTFOUND, "app: unknown app %q", app))
		return
	}
	if !s.cors(w, r, a) {
		s.receiptError(w, r, app, "origin", broadcast.Errorf(broadcast.EFORBIDDEN, "origin %q is not allowed for app %q", r.Header.Get("Origin"), app))
		return
	}
	if err := broadcast.ValidateRoom(room); err != nil {
		s.receiptError(w, r, app, "invalid", err)
		return
	}
	grant := req.Grant
	if grant == "" {
		grant = bearer(r)
	}
	if reason, err := s.checkGrant(grant, a, room); err != nil {
		s.receiptError(w, r, app, reason, err)
		return
	}
	if !s.rcptLimits.allow(grant, room, s.now()) {
		s.receiptError(w, r, app, "rate_limited", &broadcast.Error{Code: broadcast.ERATELIMIT,
			Message: "too many receipt reports for this grant and room", RetryAfterSeconds: int(math.Ceil(1 / s.cfg.Receipts.PerSecond))})
		return
	}
	rs, err := s.receiptsOf(app, room, req.Receipts)
	if err != nil {
		s.receiptError(w, r, app, "invalid", err)
		return
	}
	s.deps.Receipts.Record(app, rs)
	writeJSON(w, http.StatusAccepted, receiptsAnswer{Accepted: len(rs)})
}

// receiptsOf validates the receipts of one report and resolves each one's
// channel: the gateway's own record of a sequenced message wins over what
// the browser says; a channel the gateway does not know is counted as
// receipts.Unknown.
func (s *Server) receiptsOf(app, room string, in []receiptRequest) ([]receipts.Receipt, error) {
	switch {
	case in == nil:
		return nil, broadcast.Errorf(broadcast.EINVALID, "receipts: required")
	case len(in) == 0:
		return nil, broadcast.Errorf(broadcast.EINVALID, "receipts: empty")
	case len(in) > s.cfg.Receipts.MaxReceipts:
		return nil, broadcast.Errorf(broadcast.EINVALID, "receipts: %d receipts, more than %d", len(in), s.cfg.Receipts.MaxReceipts)
	}
	var known []string
	if s.deps.Channels != nil {
		known = s.deps.Channels()
	}
	out := make([]receipts.Receipt, len(in))
	for i, q := range in {
		rc := receipts.Receipt{Channel: receipts.Unknown}
		if len(q.Epoch) > 64 || !utf8.ValidString(q.Epoch) {
			return nil, broadcast.Errorf(broadcast.EINVALID, "receipts[%d].epoch: must be valid UTF-8 of at most 64 bytes", i)
		}
		if (q.Epoch == "") != (q.Seq == 0) {
			return nil, broadcast.Errorf(broadcast.EINVALID, "receipts[%d]: epoch and seq go together (seq from 1)", i)
		}
		if q.LegacyMs == nil && q.RealtimeMs == nil && q.Seq == 0 {
			return nil, broadcast.Errorf(broadcast.EINVALID, "receipts[%d]: a message received by neither transport needs its epoch and seq", i)
		}
		if q.Channel != "" && !validReceiptChannel(q.Channel) {
			return nil, broadcast.Errorf(broadcast.EINVALID, "receipts[%d].channel: %q is not a channel name", i, q.Channel)
		}
		for t, ms := range [2]*float64{q.LegacyMs, q.RealtimeMs} {
			if ms == nil {
				continue
			}
			// Bounds checked on the float: a huge value would overflow the
			// conversion to a Duration.
			if math.IsNaN(*ms) || *ms < -float64(maxReceiptSkew.Milliseconds()) || *ms > float64(maxReceiptLatency.Milliseconds()) {
				return nil, broadcast.Errorf(broadcast.EINVALID, "receipts[%d].%s: %v is outside -%d..%d ms", i,
					[2]string{"legacyMs", "realtimeMs"}[t], *ms, maxReceiptSkew.Milliseconds(), maxReceiptLatency.Milliseconds())
			}
			d := max(time.Duration(*ms*float64(time.Millisecond)), 0)
			if t == 0 {
				rc.Legacy, rc.LegacyLatency = true, d
			} else {
				rc.Realtime, rc.RealtimeLatency = true, d
			}
		}
		resolved := false
		if q.Seq != 0 && s.deps.SequenceChannel != nil {
			if ch, ok := s.deps.SequenceChannel(app, room, q.Epoch, q.Seq); ok {
				rc.Channel, resolved = ch, true
			}
		}
		if !resolved && slices.Contains(known, q.Channel) {
			rc.Channel = q.Channel
		}
		out[i] = rc
	}
	return out, nil
}

// validReceiptChannel reports whether c may be a channel name (the
// configured rule, or the default channel).
func validReceiptChannel(c string) bool {
	return c == broadcast.DefaultChannel || broadcast.ValidateChannelName(c) == nil
}

// reasonOf maps a body-reading error to a receipts refusal reason.
func reasonOf(err error) string {
	if broadcast.ErrorCode(err) == broadcast.ETOOLARGE {
		return "too_large"
	}
	return "invalid"
}

func (s *Server) receiptError(w http.ResponseWriter, r *http.Request, app, reason string, err error) {
	s.m.rcptErr.WithLabelValues(s.appLabel(app), reason).Inc()
	s.writeError(w, r, app, "", err)
}

// handleReceiptsPreflight answers the CORS preflight of POST /v1/receipts
// (a fetch with a JSON Content-Type or an Authorization header needs one;
// navigator.sendBeacon with text/plain does not).
func (s *Server) handleReceiptsPreflight(w http.ResponseWriter, r *http.Request) {
	s.preflight(w, r, "POST", "Authorization, Content-Type")
}
