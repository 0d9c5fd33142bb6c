// Package realtime is Switchyard's Inngest Realtime transport: Client
// publishes messages and mints subscription tokens over HTTP, Subscriber
// holds one WebSocket subscription connection, and Watcher gives the shadow
// comparator a browser's view of a room. The wire facts it follows are in
// shared/protocols.md ("Inngest Realtime"); realtimetest is its test server.
package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/upstream"
)

// Client publishes to and mints tokens from one app's Inngest Realtime
// upstream. It is immutable after NewClient and safe for concurrent use.
type Client struct {
	app    string
	party  string // what {party} stands for when a message names none
	base   string // URL without trailing slash
	segs   []segment
	escApp string // url.QueryEscape(app)
	topics map[string]string
	auth   []string // "Bearer ..." values, primary first; empty without a key
	// pubHeaders are the publish request headers, one per auth value (or
	// one without Authorization when there is no key), validated and
	// rendered once (upstream.NewHeader).
	pubHeaders map[string]*upstream.Header
	caller     *upstream.Caller
	logger     *zap.Logger
}

var (
	_ broadcast.Publisher = (*Client)(nil)
	_ TokenSource         = (*Client)(nil)
)

// NewClient validates cfg and returns the Client of app. hc is the shared
// HTTP client (nil: a new one on upstream.NewTransport); m may be nil;
// logger nil becomes a no-op logger.
func NewClient(app string, cfg Config, hc *http.Client, m *upstream.Metrics, logger *zap.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("realtime: app %q: %w", app, err)
	}
	if hc == nil {
		hc = &http.Client{Transport: upstream.NewTransport(0)}
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	segs, _ := parseTemplate(cfg.ChannelTemplate) // validated above
	for i := range segs {
		segs[i].escLit = url.QueryEscape(segs[i].lit)
	}
	c := &Client{
		app:    app,
		party:  cfg.Party,
		base:   strings.TrimRight(cfg.URL, "/"),
		segs:   segs,
		escApp: url.QueryEscape(app),
		topics: make(map[string]string, len(cfg.Topics)),
		caller: &upstream.Caller{Client: hc, Policy: cfg.Policy.WithDefaults(), Transport: string(broadcast.TransportRealtime), Metrics: m},
		logger: logger.With(zap.String("app", app), zap.String("transport", "realtime")),
	}
	if c.party == "" {
		c.party = DefaultParty
	}
	for k, v := range cfg.Topics {
		c.topics[k] = v
	}
	for _, k := range []string{cfg.SigningKey, cfg.FallbackSigningKey} {
		if k == "" {
			continue
		}
		h, _ := HashSigningKey(k) // validated above
		c.auth = append(c.auth, "Bearer "+h)
	}
	c.pubHeaders = make(map[string]*upstream.Header, len(c.auth)+1)
	for _, a := range append([]string{""}, c.auth...) {
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		if a != "" {
			h.Set("Authorization", a)
		}
		ph, err := upstream.NewHeader(h)
		if err != nil {
			return nil, fmt.Errorf("realtime: app %q: publish header: %w", app, err)
		}
		c.pubHeaders[a] = ph
	}
	return c, nil
}

// App returns the app this client serves.
func (c *Client) App() string { return c.app }

// URL returns the configured base URL without a trailing slash.
func (c *Client) URL() string { return c.base }

// Channel expands the channel template for room of the app's default
// party (Config.Party) and the configured channel name: the channel a
// browser's token for the room covers.
func (c *Client) Channel(room, channel string) string {
	return c.PartyChannel("", room, channel)
}

// PartyChannel expands the channel template for room of party ("" is the
// app's default party) and the configured channel name.
func (c *Client) PartyChannel(party, room, channel string) string {
	if party == "" {
		party = c.party
	}
	var b strings.Builder
	for _, s := range c.segs {
		switch s.ph {
		case "":
			b.WriteString(s.lit)
		case "{room}":
			b.WriteString(room)
		case "{app}":
			b.WriteString(c.app)
		case "{party}":
			b.WriteString(party)
		case "{channel}":
			b.WriteString(channel)
		}
	}
	return b.String()
}

// Topic returns the Inngest topic of a configured channel name.
func (c *Client) Topic(channel string) string {
	if t, ok := c.topics[channel]; ok {
		return t
	}
	return channel
}

// TopicsFor returns the distinct topics of channels, in first-seen order.
func (c *Client) TopicsFor(channels []string) []string {
	out := make([]string, 0, len(channels))
	seen := make(map[string]bool, len(channels))
	for _, ch := range channels {
		t := c.Topic(ch)
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// ChannelTopics is one Inngest channel of a room with the topics that the
// configured channels mapping onto it publish to: what one subscription
// token covers.
type ChannelTopics struct {
	Channel string
	Topics  []string
}

// GroupChannels maps the configured channel names channels of room onto
// their Inngest channels (Channel) and returns one entry per distinct
// Inngest channel, in first-seen order, with the distinct topics (Topic) of
// the names that map onto it, in first-seen order. A subscriber of the room
// needs one token per entry. The result is the caller's. Safe for
// concurrent use.
func (c *Client) GroupChannels(room string, channels []string) []ChannelTopics {
	var out []ChannelTopics
	index := make(map[string]int, len(channels))
	for _, ch := range channels {
		name, topic := c.Channel(room, ch), c.Topic(ch)
		i, ok := index[name]
		if !ok {
			i = len(out)
			index[name] = i
			out = append(out, ChannelTopics{Channel: name})
		}
		if !slices.Contains(out[i].Topics, topic) {
			out[i].Topics = append(out[i].Topics, topic)
		}
	}
	return out
}

// Publish sends m.Envelope, byte for byte, to the channel and topic of
// m.Party, m.Room and m.Channel (PartyChannel, Topic). It refuses an envelope over
// broadcast.MaxRealtimeBody before sending (ETOOLARGE, zero attempts),
// retries transient failures under the configured Policy within ctx, and
// retries once with the fallback key on 401/403. Failures are
// *broadcast.Error with code EUPSTREAM. Safe for concurrent use.
func (c *Client) Publish(ctx context.Context, m *broadcast.Message) (broadcast.PublishResult, error) {
	if m == nil {
		return broadcast.PublishResult{}, broadcast.Errorf(broadcast.EINVALID, "message: required")
	}
	if len(m.Envelope) > broadcast.MaxRealtimeBody {
		return broadcast.PublishResult{}, &broadcast.Error{
			Code: broadcast.ETOOLARGE, Transport: broadcast.TransportRealtime,
			Message: fmt.Sprintf("message envelope is %d bytes, over the %d byte limit of the realtime transport", len(m.Envelope), broadcast.MaxRealtimeBody),
		}
	}
	target := c.publishURL(m.Party, m.Room, m.Channel)
	attempts, err := c.post(ctx, "publish", target, m.Envelope)
	res := broadcast.PublishResult{Attempts: attempts}
	if err != nil {
		return res, upstreamError("publish", err, attempts, fmt.Errorf("realtime: publish room %q: %w", m.Room, err))
	}
	return res, nil
}

// CallBound is the longest a Publish takes, retries and the fallback
// key's call included, whatever its context: the policy's Timeout per
// signing key (broadcast.Bounded).
func (c *Client) CallBound() time.Duration {
	return c.caller.Policy.WithDefaults().Timeout * time.Duration(max(len(c.auth), 1))
}

// ProbeTopic is the topic of the comparator's readiness probes (see
// Watcher): a topic of every room's channel that no browser token grants,
// since no configured channel may map to it (Config.Validate refuses it as
// a topic, and channel names cannot hold a '.').
const ProbeTopic = "switchyard.probe"

// Probe publishes body to the ProbeTopic of an Inngest channel through the
// normal publish API, under ctx and the client's retry policy. Its
// requests are counted under the op "probe", apart from the publishes of
// messages. Safe for concurrent use.
func (c *Client) Probe(ctx context.Context, channel string, body []byte) error {
	target := c.base + "/v1/realtime/publish?channel=" + url.QueryEscape(channel) + "&topic=" + url.QueryEscape(ProbeTopic)
	attempts, err := c.post(ctx, "probe", target, body)
	if err != nil {
		return upstreamError("probe", err, attempts, fmt.Errorf("realtime: probe channel %q: %w", channel, err))
	}
	return nil
}

// publishURL is the publish target of a message of party, room and
// channel: the same URL as c.base + "/v1/realtime/publish?channel=" +
// url.QueryEscape(c.PartyChannel(party, room, channel)) + "&topic=" +
// url.QueryEscape(c.Topic(channel)) (the query url.Values.Encode gives),
// built in one allocation: query escaping is byte by byte, so the channel
// is escaped segment by segment, the template's literals escaped once in
// NewClient.
func (c *Client) publishURL(party, room, channel string) string {
	if party == "" {
		party = c.party
	}
	topic := url.QueryEscape(c.Topic(channel))
	parts := make([]string, 0, 8)
	for _, s := range c.segs {
		switch s.ph {
		case "":
			parts = append(parts, s.escLit)
		case "{room}":
			parts = append(parts, url.QueryEscape(room))
		case "{app}":
			parts = append(parts, c.escApp)
		case "{party}":
			parts = append(parts, url.QueryEscape(party))
		case "{channel}":
			parts = append(parts, url.QueryEscape(channel))
		}
	}
	n := len(c.base) + len(publishPath) + len(topicParam) + len(topic)
	for _, p := range parts {
		n += len(p)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(c.base)
	b.WriteString(publishPath)
	for _, p := range parts {
		b.WriteString(p)
	}
	b.WriteString(topicParam)
	b.WriteString(topic)
	return b.String()
}

const (
	publishPath = "/v1/realtime/publish?channel="
	topicParam  = "&topic="
)

// call runs one upstream call with the primary key and, after a 401/403,
// once more with the fallback key. attempts adds up both.
func (c *Client) call(ctx context.Context, op string, build func(ctx context.Context, auth string) (*http.Request, error)) (upstream.Response, int, error) {
	keys := c.auth
	if len(keys) == 0 {
		keys = []string{""}
	}
	total := 0
	var lastErr error
	for i, auth := range keys {
		resp, n, err := c.caller.Do(ctx, op, func(ctx context.Context) (*http.Request, error) { return build(ctx, auth) })
		total += n
		if err == nil {
			if i > 0 {
				c.logger.Warn("realtime: primary signing key refused, fallback key accepted", zap.String("op", op))
			}
			return resp, total, nil
		}
		lastErr = err
		var se *upstream.StatusError
		if !errors.As(err, &se) || (se.Status != http.StatusUnauthorized && se.Status != http.StatusForbidden) {
			break
		}
	}
	return upstream.Response{}, total, lastErr
}

// post is call for a POST of body to target with the publish headers:
// upstream.Caller.Post with the primary key and, after a 401/403, once
// more with the fallback key. attempts adds up both.
func (c *Client) post(ctx context.Context, op, target string, body []byte) (int, error) {
	if len(c.auth) == 0 {
		return c.caller.Post(ctx, op, target, c.pubHeaders[""], body)
	}
	total := 0
	var lastErr error
	for i, auth := range c.auth {
		n, err := c.caller.Post(ctx, op, target, c.pubHeaders[auth], body)
		total += n
		if err == nil {
			if i > 0 {
				c.logger.Warn("realtime: primary signing key refused, fallback key accepted", zap.String("op", op))
			}
			return total, nil
		}
		lastErr = err
		var se *upstream.StatusError
		if !errors.As(err, &se) || (se.Status != http.StatusUnauthorized && se.Status != http.StatusForbidden) {
			break
		}
	}
	return total, lastErr
}

// upstreamError wraps cause in a client-safe EUPSTREAM error whose message
// is upstream.Describe's, with "signing key refused: " before it for a
// 401/403. A publish says no more (the multicast adapter adds "realtime
// transport failed: "); a token request, which the API answers as is,
// starts with "realtime token request failed: ".
func upstreamError(op string, status error, attempts int, cause error) *broadcast.Error {
	msg := upstream.Describe(status, attempts)
	var se *upstream.StatusError
	if errors.As(status, &se) && (se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden) {
		msg = "signing key refused: " + msg
	}
	if op == "token" {
		msg = tokenFailed + msg
	}
	return &broadcast.Error{Code: broadcast.EUPSTREAM, Transport: broadcast.TransportRealtime, Message: msg, Err: cause}
}

// tokenFailed starts the client-safe message of a failed token request.
const tokenFailed = "realtime token request failed: "

// TokenSource mints subscription tokens; *Client is one. Implementations
// must be safe for concurrent use.
type TokenSource interface {
	MintToken(ctx context.Context, channel string, topics []string) (broadcast.Token, error)
}

type tokenTopic struct {
	Channel string `json:"channel"`
	Name    string `json:"name"`
	Kind    string `json:"kind"`
}

// MintToken asks the upstream for a token subscribing to topics of channel
// (POST /v1/realtime/token, signing-key auth, fallback key on 401/403) and
// validates the answer. Errors are *broadcast.Error with code EUPSTREAM (or
// EINVALID for bad arguments). The token is never logged. Safe for
// concurrent use.
func (c *Client) MintToken(ctx context.Context, channel string, topics []string) (broadcast.Token, error) {
	if channel == "" {
		return broadcast.Token{}, broadcast.Errorf(broadcast.EINVALID, "channel: required")
	}
	if len(topics) == 0 {
		return broadcast.Token{}, broadcast.Errorf(broadcast.EINVALID, "topics: at least one required")
	}
	reqBody := make([]tokenTopic, len(topics))
	for i, t := range topics {
		if t == "" {
			return broadcast.Token{}, broadcast.Errorf(broadcast.EINVALID, "topics[%d]: empty", i)
		}
		reqBody[i] = tokenTopic{Channel: channel, Name: t, Kind: "run"}
	}
	body, err := json.Marshal(reqBody)
	if err != nil {
		return broadcast.Token{}, fmt.Errorf("realtime: token: encode: %w", err)
	}
	target := c.base + "/v1/realtime/token"
	resp, attempts, err := c.call(ctx, "token", func(ctx context.Context, auth string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return req, nil
	})
	if err != nil {
		return broadcast.Token{}, upstreamError("token", err, attempts, fmt.Errorf("realtime: token for channel %q: %w", channel, err))
	}
	jwt, exp, err := decodeTokenAnswer(resp.Status, resp.Body)
	if err != nil {
		return broadcast.Token{}, &broadcast.Error{Code: broadcast.EUPSTREAM, Transport: broadcast.TransportRealtime,
			Message: tokenFailed + "the answer was not usable",
			Err:     fmt.Errorf("realtime: token for channel %q: %w", channel, err)}
	}
	return broadcast.Token{Key: jwt, Channel: channel, Topics: append([]string(nil), topics...), ExpiresAt: exp}, nil
}

// decodeTokenAnswer validates a token endpoint answer: status 200 or 201, a
// JSON object with a non-empty string "jwt" that parses as a compact JWT
// carrying an exp. The error never contains the token.
func decodeTokenAnswer(status int, body []byte) (string, time.Time, error) {
	if status != http.StatusCreated && status != http.StatusOK {
		return "", time.Time{}, fmt.Errorf("answer status %d, want 201", status)
	}
	var ans struct {
		JWT *string `json:"jwt"`
	}
	b := bytes.TrimSpace(body)
	if len(b) == 0 || b[0] != '{' {
		return "", time.Time{}, errors.New("answer is not a JSON object")
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return "", time.Time{}, fmt.Errorf("answer: %v", jsonErrorShape(err))
	}
	if ans.JWT == nil || *ans.JWT == "" {
		return "", time.Time{}, errors.New(`answer: "jwt" missing or empty`)
	}
	var reg jwt.RegisteredClaims
	if err := parseUnverified(*ans.JWT, &reg); err != nil {
		return "", time.Time{}, fmt.Errorf("answer: jwt: %w", err)
	}
	if reg.ExpiresAt == nil {
		return "", time.Time{}, errors.New("answer: jwt has no exp claim")
	}
	return *ans.JWT, reg.ExpiresAt.UTC(), nil
}

// maxTokenBytes bounds the subscription tokens this package reads; a longer
// one is refused before it is decoded. Inngest's tokens are a few hundred
// bytes.
const maxTokenBytes = 16 << 10

// parseUnverified decodes the claims of token WITHOUT checking its
// signature or times: only for tokens this process received from its own
// authenticated call to Inngest (to read their exp and topics). It refuses
// a token over maxTokenBytes, or one that is not a compact JWS with a JSON
// header naming a known alg and a JSON object payload. Errors never
// contain the token.
func parseUnverified(token string, claims jwt.Claims) error {
	if len(token) > maxTokenBytes {
		return fmt.Errorf("token longer than %d bytes", maxTokenBytes)
	}
	_, _, err := jwt.NewParser().ParseUnverified(token, claims)
	return err
}

// jsonErrorShape keeps the type of a JSON decode error without echoing the
// input (which may hold a token).
func jsonErrorShape(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q has JSON type %s, want %s", te.Field, te.Value, te.Type)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at offset %d", se.Offset)
	}
	return errors.New("invalid JSON")
}
