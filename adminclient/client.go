// Package adminclient is the one typed client of a running gateway's HTTP
// APIs, shared by the command-line tools (canary, replay, flags): the admin
// listener's routes and shadow summary, and the public listener's
// POST /v1/broadcast. Every answer is read through one body limit and every
// gateway error answer is decoded into one error type, so the tools report
// the gateway's own code and message.
package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/shadow"
)

// MaxAnswerBytes bounds every answer body the client reads; a longer answer
// is an error, never silently cut.
const MaxAnswerBytes = 8 << 20

// Error is a gateway answer other than 200 (or 201): the status, and the
// gateway's JSON error code and message where the body held one (else the
// start of the body as Message).
type Error struct {
	Op      string // "GET /v1/admin/routes"
	Status  int
	Code    string
	Message string
	// RetryAfter is the Retry-After of a 429 or 503 answer, when it had a
	// valid one (HasRetryAfter).
	RetryAfter    time.Duration
	HasRetryAfter bool
}

// Error renders "OP: STATUS CODE: MESSAGE".
func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s: %d %s: %s", e.Op, e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("%s: %d %s", e.Op, e.Status, e.Message)
}

// Client talks to one gateway. The zero value is not usable: set at least
// one of Admin (for the admin methods) and Public (for Broadcast). A Client
// is safe for concurrent use when HTTP is.
type Client struct {
	// Admin is the admin listener's base URL, e.g. http://127.0.0.1:9090.
	Admin string
	// AdminToken is sent as a bearer token on admin requests when set.
	AdminToken string
	// Public is the public listener's base URL.
	Public string
	// HTTP does the requests; nil is a client with a 30 s timeout.
	HTTP *http.Client
}

var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

// CheckBaseURL reports whether raw is an absolute http(s) URL, the form the
// Admin and Public fields take; the tools call it on their flags.
func CheckBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q must be an http(s):// URL", raw)
	}
	return nil
}

// do sends req and decodes a 2xx answer into into (when non-nil); any other
// status is an *Error.
func (c *Client) do(req *http.Request, op string, into any) (http.Header, error) {
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: read answer: %w", op, err)
	}
	if len(b) > MaxAnswerBytes {
		return nil, fmt.Errorf("%s: answer larger than %d bytes", op, MaxAnswerBytes)
	}
	if resp.StatusCode/100 != 2 {
		return resp.Header, answerError(op, resp, b)
	}
	if into != nil {
		if err := json.Unmarshal(b, into); err != nil {
			return resp.Header, fmt.Errorf("%s: unexpected answer %.200q: %w", op, b, err)
		}
	}
	return resp.Header, nil
}

func answerError(op string, resp *http.Response, b []byte) *Error {
	e := &Error{Op: op, Status: resp.StatusCode}
	var doc struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(b, &doc) == nil && doc.Error.Code != "" {
		e.Code, e.Message = doc.Error.Code, doc.Error.Message
	} else {
		s := strings.TrimSpace(string(b))
		if len(s) > 200 {
			s = s[:200] + "..."
		}
		e.Message = s
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			e.RetryAfter, e.HasRetryAfter = time.Duration(s)*time.Second, true
		}
	}
	return e
}

func (c *Client) adminGet(ctx context.Context, path string, q url.Values, into any) error {
	if c.Admin == "" {
		return errors.New("adminclient: no admin URL")
	}
	u := strings.TrimRight(c.Admin, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	req.Header.Set("Accept", "application/json")
	if c.AdminToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	}
	_, err = c.do(req, "GET "+path, into)
	return err
}

// Route asks GET /v1/admin/routes which stage the gateway resolves for q
// (app, room, event; channel may stay empty) and validates the stage.
func (c *Client) Route(ctx context.Context, q broadcast.RouteQuery) (broadcast.Route, error) {
	v := url.Values{"app": {q.App}, "room": {q.Room}}
	if q.Event != "" {
		v.Set("event", q.Event)
	}
	if q.Channel != "" {
		v.Set("channel", q.Channel)
	}
	var ans broadcast.RouteReport
	if err := c.adminGet(ctx, "/v1/admin/routes", v, &ans); err != nil {
		return broadcast.Route{}, err
	}
	if _, err := broadcast.ParseStage(string(ans.Route.Stage)); err != nil {
		return broadcast.Route{}, fmt.Errorf("GET /v1/admin/routes: %w", err)
	}
	return ans.Route, nil
}

// ShadowSummary reads GET /v1/admin/shadow/summary: the comparator's rows,
// one per app and channel.
func (c *Client) ShadowSummary(ctx context.Context) (shadow.Summary, error) {
	var ans shadow.Summary
	if err := c.adminGet(ctx, "/v1/admin/shadow/summary", nil, &ans); err != nil {
		return shadow.Summary{}, err
	}
	return ans, nil
}

// BroadcastRequest is the body of POST /v1/broadcast (docs/api.md).
type BroadcastRequest struct {
	Room      string          `json:"room"`
	Name      string          `json:"name"`
	Body      json.RawMessage `json:"body"`
	RequestID string          `json:"requestId,omitempty"`
}

// BroadcastAnswer is what a 200 from POST /v1/broadcast says.
type BroadcastAnswer struct {
	Stage      broadcast.Stage `json:"stage"`
	Deliveries map[string]struct {
		Status string `json:"status"`
	} `json:"deliveries"`
}

// Broadcast publishes one message through the public API with the app's
// API key. A 200 answer is returned with its stage validated; anything else
// is an error (an *Error for gateway answers, which callers may inspect for
// Status and RetryAfter). It does not retry.
func (c *Client) Broadcast(ctx context.Context, key string, m BroadcastRequest) (BroadcastAnswer, error) {
	if c.Public == "" {
		return BroadcastAnswer{}, errors.New("adminclient: no public URL")
	}
	body, err := json.Marshal(m)
	if err != nil {
		return BroadcastAnswer{}, fmt.Errorf("POST /v1/broadcast: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.Public, "/")+"/v1/broadcast", bytes.NewReader(body))
	if err != nil {
		return BroadcastAnswer{}, fmt.Errorf("POST /v1/broadcast: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	var ans BroadcastAnswer
	if _, err := c.do(req, "POST /v1/broadcast", &ans); err != nil {
		return BroadcastAnswer{}, err
	}
	if _, err := broadcast.ParseStage(string(ans.Stage)); err != nil {
		return BroadcastAnswer{}, fmt.Errorf("POST /v1/broadcast: answer: %w", err)
	}
	return ans, nil
}
