package legacyparty

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/upstream"
)

// Client publishes messages to the rooms of one app's PartyKit deployment.
// It is safe for concurrent use, holds no per-call state, and owns no
// goroutines; the *http.Client is shared, not owned.
type Client struct {
	cfg    Config
	caller *upstream.Caller
	log    *zap.Logger
	// header is every publish's request header, validated and rendered
	// once (upstream.NewHeader).
	header *upstream.Header
}

var _ broadcast.Publisher = (*Client)(nil)

// NewClient validates cfg and returns a Client. hc is the shared HTTP client
// (nil: a client over upstream.NewTransport(0)); m may be nil; a nil logger
// is replaced by zap.NewNop(). A Client serves one app, and its lines carry
// no app field of their own: logger should name the app (the wiring hands
// each app's components a child logger with an "app" field).
func NewClient(cfg Config, hc *http.Client, m *upstream.Metrics, logger *zap.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("legacyparty: config: %w", err)
	}
	if hc == nil {
		hc = &http.Client{Transport: upstream.NewTransport(0)}
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	cfg = cfg.WithDefaults()
	h := http.Header{}
	h.Set("Content-Type", "text/plain;charset=UTF-8")
	if cfg.SecretHeader != "" {
		h.Set(cfg.SecretHeader, cfg.Secret)
	}
	header, err := upstream.NewHeader(h)
	if err != nil {
		return nil, fmt.Errorf("legacyparty: config: secretHeader: %w", err)
	}
	return &Client{
		header: header,
		cfg:    cfg,
		caller: &upstream.Caller{
			Client:    hc,
			Policy:    cfg.Policy.WithDefaults(),
			Transport: string(broadcast.TransportLegacy),
			Metrics:   m,
		},
		log: logger,
	}, nil
}

// CallBound is the longest a Publish takes, retries included, whatever its
// context: the policy's Timeout (broadcast.Bounded).
func (c *Client) CallBound() time.Duration { return c.caller.Policy.WithDefaults().Timeout }

// Publish POSTs m.Envelope, byte for byte, to the room m.Room of the party
// m.Party (or the configured party), with Content-Type
// text/plain;charset=UTF-8 as the apps send it. It blocks until PartyKit
// answered 2xx, the attempts ran out, or ctx or the policy's Timeout ended,
// retrying network errors, 5xx and 429 (see upstream.Caller). A failure is
// an *broadcast.Error: EUPSTREAM, Transport legacy, with the client-safe
// Message of upstream.Describe ("answered 503 after 4 attempts"; the
// multicast adapter adds which transport failed) and the cause in Err, or EROOM/EINVALID for a message that cannot be addressed (then no
// request is made). PublishResult.Attempts is set in every case.
func (c *Client) Publish(ctx context.Context, m *broadcast.Message) (broadcast.PublishResult, error) {
	if m == nil || len(m.Envelope) == 0 {
		return broadcast.PublishResult{}, broadcast.Errorf(broadcast.EINVALID, "message has no envelope")
	}
	target, err := c.cfg.roomTarget(c.cfg.URL, m.Party, m.Room)
	if err != nil {
		return broadcast.PublishResult{}, err
	}
	attempts, err := c.caller.Post(ctx, "publish", target, c.header, m.Envelope)
	res := broadcast.PublishResult{Attempts: attempts}
	if err != nil {
		c.log.Debug("legacy publish failed",
			zap.String("room", m.Room), zap.String("requestId", m.RequestID),
			zap.Int("attempts", attempts), zap.Error(err))
		return res, &broadcast.Error{
			Code:      broadcast.EUPSTREAM,
			Transport: broadcast.TransportLegacy,
			Message:   upstream.Describe(err, attempts),
			Err:       fmt.Errorf("legacyparty: publish %q: %w", m.Room, err),
		}
	}
	return res, nil
}
