package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/shadow"
)

const (
	testKey   = "key-ai-hero-0123456789"
	otherKey  = "key-other-app-0123456789"
	dropInSec = "dropin-secret-value"
)

// fakeBroadcaster records messages and answers with fn.
type fakeBroadcaster struct {
	mu   sync.Mutex
	msgs []*broadcast.Message
	fn   func(m *broadcast.Message) (broadcast.Outcome, error)
}

func (f *fakeBroadcaster) Broadcast(_ context.Context, m *broadcast.Message) (broadcast.Outcome, error) {
	f.mu.Lock()
	f.msgs = append(f.msgs, m)
	f.mu.Unlock()
	if f.fn != nil {
		return f.fn(m)
	}
	return broadcast.Outcome{RequestID: m.RequestID, Stage: broadcast.StageLegacy, Deliveries: map[broadcast.Transport]broadcast.Delivery{
		broadcast.TransportLegacy:   {Status: broadcast.Delivered, Attempts: 1, Duration: 1500 * time.Microsecond},
		broadcast.TransportRealtime: {Status: broadcast.Skipped},
	}}, nil
}

func (f *fakeBroadcaster) BroadcastBatch(ctx context.Context, msgs []*broadcast.Message) []broadcast.BatchResult {
	out := make([]broadcast.BatchResult, len(msgs))
	for i, m := range msgs {
		out[i].Outcome, out[i].Err = f.Broadcast(ctx, m)
	}
	return out
}

func (f *fakeBroadcaster) sent() []*broadcast.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*broadcast.Message(nil), f.msgs...)
}

func newTestServer(t *testing.T, fb *fakeBroadcaster) *httptest.Server {
	t.Helper()
	s := New(Config{
		Env: "test",
		Apps: map[string]App{
			"ai-hero": {Name: "ai-hero", KeyHashes: [][32]byte{HashKey(testKey)}, DropInHeader: "X-Switchyard-Secret", DropInSecret: dropInSec, Parties: []string{"main", "chat"}},
			"other":   {Name: "other", KeyHashes: [][32]byte{HashKey(otherKey)}},
		},
		ChannelOf: func(ev string) string {
			if ev == "ai.message" {
				return "ai-stream"
			}
			return broadcast.DefaultChannel
		},
		MaxBodyBytes: 1024,
		AdminToken:   "admin-token-0123456789",
		MaxBatch:     3,
	}, Deps{Broadcaster: fb}, NewMetrics(nil), nil, nil)
	s.SetReady(true)
	pub := httptest.NewServer(s.Public())
	t.Cleanup(pub.Close)
	return pub
}

type answer struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, method, url, auth, body string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

func errorOf(t *testing.T, a answer) (code, msg string) {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal([]byte(a.body), &e); err != nil {
		t.Fatalf("error answer %q is not the JSON error shape: %v", a.body, err)
	}
	return e.Error.Code, e.Error.Message
}

func TestBroadcastErrors(t *testing.T) {
	fb := &fakeBroadcaster{}
	srv := newTestServer(t, fb)
	bearer := "Bearer " + testKey
	big := `{"room":"r","name":"n","body":"` + strings.Repeat("x", 2000) + `"}`
	tests := []struct {
		name, auth, body string
		status           int
		code, msg        string
	}{
		{"no key", "", `{"room":"r","name":"n","body":1}`, 401, "unauthorized", "missing Authorization"},
		{"unknown key", "Bearer nope-nope-nope-nope", `{"room":"r","name":"n","body":1}`, 401, "unauthorized", "unknown API key"},
		{"malformed JSON", bearer, `{"room":`, 400, "invalid_request", "malformed JSON"},
		{"not an object", bearer, `[1,2]`, 400, "invalid_request", "expected an object"},
		{"trailing data", bearer, `{"room":"r","name":"n","body":1} {}`, 400, "invalid_request", "data after the top-level value"},
		{"unknown field", bearer, `{"room":"r","name":"n","body":1,"roomId":"x"}`, 400, "invalid_request", `unknown field "roomId"`},
		{"missing room", bearer, `{"name":"n","body":1}`, 400, "invalid_request", "room: required"},
		{"room wrong type", bearer, `{"room":5,"name":"n","body":1}`, 400, "invalid_request", "room: must be a string, got number"},
		{"missing name", bearer, `{"room":"r","body":1}`, 400, "invalid_request", "name: required"},
		{"missing body", bearer, `{"room":"r","name":"n"}`, 400, "invalid_request", "body: required"},
		{"empty requestId", bearer, `{"room":"r","name":"n","body":1,"requestId":""}`, 400, "invalid_request", "requestId: must not be empty"},
		{"requestId wrong type", bearer, `{"room":"r","name":"n","body":1,"requestId":7}`, 400, "invalid_request", "requestId: must be a string"},
		{"too large", bearer, big, 413, "payload_too_large", "over the 1024 byte limit"},
		{"room with slash", bearer, `{"room":"a/b","name":"n","body":1}`, 422, "invalid_room", `character '/'`},
		{"room with space", bearer, `{"room":"a b","name":"n","body":1}`, 422, "invalid_room", "whitespace"},
		{"room empty", bearer, `{"room":"","name":"n","body":1}`, 422, "invalid_room", "room: required"},
		{"room dotdot", bearer, `{"room":"..","name":"n","body":1}`, 422, "invalid_room", "not a usable path segment"},
		{"room too long", bearer, `{"room":"` + strings.Repeat("r", 257) + `","name":"n","body":1}`, 422, "invalid_room", "longer than 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := do(t, "POST", srv.URL+"/v1/broadcast", tt.auth, tt.body)
			if a.status != tt.status {
				t.Fatalf("status = %d, want %d (%s)", a.status, tt.status, a.body)
			}
			code, msg := errorOf(t, a)
			if code != tt.code || !strings.Contains(msg, tt.msg) {
				t.Fatalf("error = %s %q, want %s containing %q", code, msg, tt.code, tt.msg)
			}
		})
	}
	if n := len(fb.sent()); n != 0 {
		t.Fatalf("%d invalid messages were forwarded", n)
	}
}

func TestBroadcastUpstreamAndDrainingErrors(t *testing.T) {
	tests := []struct {
		err       error
		status    int
		code      string
		transport string
		header    string
	}{
		{&broadcast.Error{Code: broadcast.EUPSTREAM, Transport: broadcast.TransportLegacy, Message: "legacy transport failed: answered 500 after 4 attempts"}, 502, "upstream_failed", "legacy", ""},
		{broadcast.Errorf(broadcast.EDRAINING, "shutting down"), 503, "draining", "", ""},
		{&broadcast.Error{Code: broadcast.ERATELIMIT, Message: "app ai-hero is over its publish rate", RetryAfterSeconds: 2}, 429, "rate_limited", "", "2"},
		{io.ErrUnexpectedEOF, 500, "internal", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			fb := &fakeBroadcaster{fn: func(*broadcast.Message) (broadcast.Outcome, error) { return broadcast.Outcome{}, tt.err }}
			srv := newTestServer(t, fb)
			a := do(t, "POST", srv.URL+"/v1/broadcast", "Bearer "+testKey, `{"room":"r","name":"n","body":1}`)
			if a.status != tt.status {
				t.Fatalf("status = %d, want %d", a.status, tt.status)
			}
			var e errorBody
			_ = json.Unmarshal([]byte(a.body), &e)
			if e.Error.Code != tt.code || e.Error.Transport != tt.transport {
				t.Fatalf("error = %+v, want code %s transport %q", e.Error, tt.code, tt.transport)
			}
			if tt.code == "internal" && e.Error.Message != "internal error" {
				t.Fatalf("internal error leaked its cause: %q", e.Error.Message)
			}
			if got := a.header.Get("Retry-After"); got != tt.header {
				t.Fatalf("Retry-After = %q, want %q", got, tt.header)
			}
		})
	}
}

func TestBroadcastAccepted(t *testing.T) {
	fb := &fakeBroadcaster{}
	srv := newTestServer(t, fb)
	a := do(t, "POST", srv.URL+"/v1/broadcast", "Bearer "+testKey, `{"room":"video-1","name":"ai.message","body":{"n":1.0,"s":"é"}}`)
	if a.status != 200 {
		t.Fatalf("status = %d (%s)", a.status, a.body)
	}
	var got deliveryAnswer
	if err := json.Unmarshal([]byte(a.body), &got); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got.RequestID, "sy-") || len(got.RequestID) != 27 {
		t.Errorf("generated requestId = %q, want sy- and 24 hex digits", got.RequestID)
	}
	if d := got.Deliveries.Legacy; d == nil || d.Status != broadcast.Delivered || d.Attempts != 1 || d.Millis != 1.5 {
		t.Errorf("legacy delivery = %+v, want delivered, 1 attempt, 1.5 ms", d)
	}
	msgs := fb.sent()
	if len(msgs) != 1 {
		t.Fatalf("forwarded %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.App != "ai-hero" || m.Room != "video-1" || m.Channel != "ai-stream" || m.IdempotencyKey != m.RequestID {
		t.Errorf("message = app %q room %q channel %q idem %q", m.App, m.Room, m.Channel, m.IdempotencyKey)
	}
	want := `{"body":{"n":1.0,"s":"é"},"requestId":"` + got.RequestID + `","name":"ai.message"}`
	if string(m.Envelope) != want {
		t.Errorf("envelope = %s, want %s (body byte for byte)", m.Envelope, want)
	}
	// The other app's key selects the other app.
	do(t, "POST", srv.URL+"/v1/broadcast", "Bearer "+otherKey, `{"room":"r","name":"n","body":1,"requestId":"x"}`)
	if msgs := fb.sent(); msgs[1].App != "other" {
		t.Errorf("other key published as app %q", msgs[1].App)
	}
}

func TestDropIn(t *testing.T) {
	fb := &fakeBroadcaster{}
	srv := newTestServer(t, fb)
	body := `{"body":{"id":"v1"},"requestId":"r1","name":"video.asset.ready"}`
	sec := []string{"X-Switchyard-Secret", dropInSec}
	tests := []struct {
		name, path, body string
		hdr              []string
		status           int
		want             string
	}{
		{"ok party alias", "/apps/ai-hero/party/video-1", body, sec, 200, "ok"},
		{"ok parties", "/apps/ai-hero/parties/main/video-1", body, sec, 200, "ok"},
		{"no secret", "/apps/ai-hero/party/video-1", body, nil, 401, "missing or wrong X-Switchyard-Secret header"},
		{"wrong secret", "/apps/ai-hero/party/video-1", body, []string{"X-Switchyard-Secret", "nope"}, 401, "missing or wrong"},
		{"unknown app", "/apps/nope/party/video-1", body, sec, 404, `unknown app \"nope\"`},
		{"declared party", "/apps/ai-hero/parties/chat/video-1", body, sec, 200, "ok"},
		{"room as written", "/apps/ai-hero/party/a(b)!*'", body, sec, 200, "ok"},
		{"escaped room", "/apps/ai-hero/party/a%20b", body, sec, 422, "character '%'"},
		{"escaped party", "/apps/ai-hero/parties/ma%69n/video-1", body, sec, 400, "party:"},
		{"bad party", "/apps/ai-hero/parties/ma.in/video-1", body, sec, 400, "party:"},
		{"undeclared party", "/apps/ai-hero/parties/other/video-1", body, sec, 404, `app \"ai-hero\" has no party \"other\" (declared: main, chat)`},
		{"other app: default party only", "/apps/other/parties/chat/video-1", body, nil, 404, `has no party \"chat\" (declared: main)`},
		{"invalid UTF-8 in the body", "/apps/ai-hero/party/video-1", `{"body":{"t":"caf` + "\xe9" + `"},"requestId":"r1","name":"n"}`, sec, 400, "body.t: not valid UTF-8"},
		{"invalid JSON", "/apps/ai-hero/party/video-1", `{"body":`, sec, 400, "malformed JSON"},
		{"missing name", "/apps/ai-hero/party/video-1", `{"body":1,"requestId":"r"}`, sec, 400, "name: required"},
		{"other app needs no secret", "/apps/other/party/video-1", body, nil, 200, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := do(t, "POST", srv.URL+tt.path, "", tt.body, append([]string{"Content-Type", "text/plain;charset=UTF-8"}, tt.hdr...)...)
			if a.status != tt.status || !strings.Contains(a.body, tt.want) {
				t.Fatalf("got %d %q, want %d containing %q", a.status, a.body, tt.status, tt.want)
			}
		})
	}
	msgs := fb.sent()
	if len(msgs) != 5 {
		t.Fatalf("forwarded %d messages, want 5", len(msgs))
	}
	// The default party, named or not, is Party ""; a declared other party
	// is named; the room is the raw segment.
	if msgs[0].Party != "" || msgs[1].Party != "" || msgs[2].Party != "chat" || msgs[0].IdempotencyKey != "" {
		t.Errorf("party = %q/%q/%q, idempotency key %q; want \"\"/\"\"/chat and none on the drop-in path", msgs[0].Party, msgs[1].Party, msgs[2].Party, msgs[0].IdempotencyKey)
	}
	if msgs[3].Room != "a(b)!*'" {
		t.Errorf("room = %q, want the raw segment a(b)!*'", msgs[3].Room)
	}
	if string(msgs[0].Envelope) != body {
		t.Errorf("envelope = %s, want %s", msgs[0].Envelope, body)
	}
}

func TestBatch(t *testing.T) {
	fb := &fakeBroadcaster{fn: func(m *broadcast.Message) (broadcast.Outcome, error) {
		if m.RequestID == "fail" {
			return broadcast.Outcome{}, &broadcast.Error{Code: broadcast.EUPSTREAM, Transport: broadcast.TransportRealtime, Message: "realtime failed"}
		}
		return broadcast.Outcome{RequestID: m.RequestID, Stage: broadcast.StageRealtime}, nil
	}}
	srv := newTestServer(t, fb)
	bearer := "Bearer " + testKey
	for _, tt := range []struct {
		name, body string
		status     int
		msg        string
	}{
		{"missing", `{}`, 400, "messages: required"},
		{"empty", `{"messages":[]}`, 400, "messages: empty"},
		{"too many", `{"messages":[{},{},{},{}]}`, 400, "more than 3"},
		{"bad item", `{"messages":[{"room":"r","name":"n","body":1},{"room":"r","body":1}]}`, 400, "messages[1].name: required"},
		{"bad room", `{"messages":[{"room":"a b","name":"n","body":1}]}`, 422, "messages[0].room:"},
		{"dup id", `{"messages":[{"room":"r","name":"n","body":1,"requestId":"a"},{"room":"r","name":"n","body":2,"requestId":"a"}]}`, 400, "same as messages[0]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := do(t, "POST", srv.URL+"/v1/broadcasts", bearer, tt.body)
			if a.status != tt.status || !strings.Contains(a.body, tt.msg) {
				t.Fatalf("got %d %q, want %d containing %q", a.status, a.body, tt.status, tt.msg)
			}
		})
	}
	if n := len(fb.sent()); n != 0 {
		t.Fatalf("an invalid batch forwarded %d messages", n)
	}
	a := do(t, "POST", srv.URL+"/v1/broadcasts", bearer, `{"messages":[{"room":"r","name":"n","body":1,"requestId":"a"},{"room":"r","name":"n","body":2,"requestId":"fail"}]}`)
	var got struct {
		Results []struct {
			RequestID string      `json:"requestId"`
			Error     *batchError `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(a.body), &got); err != nil || a.status != 200 {
		t.Fatalf("batch answer %d %q: %v", a.status, a.body, err)
	}
	if len(got.Results) != 2 || got.Results[0].RequestID != "a" || got.Results[1].Error == nil ||
		got.Results[1].Error.Status != 502 || got.Results[1].Error.Transport != "realtime" {
		t.Fatalf("results = %+v", got.Results)
	}
}

func TestNotFoundRoute(t *testing.T) {
	srv := newTestServer(t, &fakeBroadcaster{})
	a := do(t, "GET", srv.URL+"/nope", "", "")
	if code, _ := errorOf(t, a); a.status != 404 || code != "not_found" {
		t.Fatalf("got %d %s", a.status, a.body)
	}
	a = do(t, "GET", srv.URL+"/v1/broadcast", "", "")
	if a.status != 405 {
		t.Fatalf("GET /v1/broadcast = %d, want 405", a.status)
	}
}

func TestAdminAuthAndReadiness(t *testing.T) {
	s := New(Config{AdminToken: "admin-token-0123456789", Apps: map[string]App{"a": {Name: "a"}}},
		Deps{Resolver: resolverFunc(func(q broadcast.RouteQuery) broadcast.Route {
			return broadcast.Route{Stage: broadcast.StageShadow, Channel: q.Channel, FlagKey: "realtime-" + q.Channel}
		})}, NewMetrics(nil), nil, nil)
	adm := httptest.NewServer(s.Admin())
	defer adm.Close()
	if a := do(t, "GET", adm.URL+"/readyz", "", ""); a.status != 503 {
		t.Fatalf("readyz before ready = %d, want 503", a.status)
	}
	s.SetReady(true)
	if a := do(t, "GET", adm.URL+"/readyz", "", ""); a.status != 200 {
		t.Fatalf("readyz = %d, want 200", a.status)
	}
	if a := do(t, "GET", adm.URL+"/healthz", "", ""); a.status != 200 {
		t.Fatalf("healthz = %d", a.status)
	}
	for _, path := range []string{"/v1/admin/routes?app=a&room=r&event=e", "/v1/admin/shadow/summary", "/v1/admin/shadow/mismatches"} {
		for _, auth := range []string{"", "Bearer wrong-token-0123456789"} {
			if a := do(t, "GET", adm.URL+path, auth, ""); a.status != 401 {
				t.Errorf("%s with auth %q = %d, want 401", path, auth, a.status)
			}
		}
	}
	a := do(t, "GET", adm.URL+"/v1/admin/routes?app=a&room=r&event=e", "Bearer admin-token-0123456789", "")
	if a.status != 200 || !strings.Contains(a.body, `"stage":"shadow"`) {
		t.Fatalf("routes = %d %s", a.status, a.body)
	}
	for _, tt := range []struct{ q, msg string }{
		{"app=zz&room=r&event=e", "app: unknown app"},
		{"app=a&room=a/b&event=e", "room:"},
		{"app=a&room=r", "event: required"},
	} {
		a := do(t, "GET", adm.URL+"/v1/admin/routes?"+tt.q, "Bearer admin-token-0123456789", "")
		if a.status/100 != 4 || !strings.Contains(a.body, tt.msg) {
			t.Errorf("routes?%s = %d %s, want 4xx containing %q", tt.q, a.status, a.body, tt.msg)
		}
	}
}

type resolverFunc func(q broadcast.RouteQuery) broadcast.Route

func (f resolverFunc) Resolve(q broadcast.RouteQuery) broadcast.Route { return f(q) }

func FuzzDecodeMessage(f *testing.F) {
	f.Add([]byte(`{"room":"r","name":"n","body":{"a":[1,2]},"requestId":"x"}`))
	f.Add([]byte(`{"room":5}`))
	f.Add([]byte(`{"body":"\u00e9"}`))
	s := New(Config{}, Deps{}, nil, nil, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		var req messageRequest
		if err := decodeStrict(data, &req, ""); err != nil {
			if broadcast.ErrorCode(err) != broadcast.EINVALID {
				t.Fatalf("decode error with code %s", broadcast.ErrorCode(err))
			}
			return
		}
		m, err := s.newMessage("app", &req, "", true)
		if err != nil {
			if c := broadcast.ErrorCode(err); c != broadcast.EINVALID && c != broadcast.EROOM && c != broadcast.ETOOLARGE {
				t.Fatalf("validation error with code %s", c)
			}
			return
		}
		if _, err := broadcast.DecodeEnvelope(m.Envelope); err != nil || !json.Valid(m.Envelope) {
			t.Fatalf("accepted message has an invalid envelope %q: %v", m.Envelope, err)
		}
	})
}

// decodeExactly decodes body into v, refusing fields v does not have.
func decodeExactly(t *testing.T, body string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, body, err)
	}
}

// The admin documents are the types their owners export: a client decodes
// them with no field left over.
func TestAdminDocumentsAreTyped(t *testing.T) {
	p := 99.5
	s := New(Config{Env: "dev", Apps: map[string]App{"a": {Name: "a"}}}, Deps{
		Resolver: resolverFunc(func(q broadcast.RouteQuery) broadcast.Route {
			return broadcast.Route{Stage: broadcast.StageShadow, Channel: q.Channel, FlagKey: "realtime-" + q.Channel}
		}),
		ShadowSummary: func() []shadow.ChannelSummary {
			return []shadow.ChannelSummary{{App: "a", Channel: "ai", Compared: 2, ParityPercent: &p,
				Outcomes: map[shadow.Outcome]int64{shadow.OutcomeMatch: 2}}}
		},
		ShadowMismatches: func(limit int) []shadow.MismatchExample {
			return []shadow.MismatchExample{{App: "a", Channel: "ai", Outcome: shadow.OutcomeMismatch}}[:min(limit, 1)]
		},
	}, NewMetrics(nil), nil, nil)
	adm := httptest.NewServer(s.Admin())
	defer adm.Close()

	var route broadcast.RouteReport
	decodeExactly(t, do(t, "GET", adm.URL+"/v1/admin/routes?app=a&room=r&event=e", "", "").body, &route)
	want := broadcast.RouteReport{App: "a", Env: "dev", Event: "e", Room: "r",
		Route: broadcast.Route{Stage: broadcast.StageShadow, Channel: "default", FlagKey: "realtime-default"}}
	if route != want {
		t.Errorf("routes: got %+v, want %+v", route, want)
	}

	var sum shadow.Summary
	decodeExactly(t, do(t, "GET", adm.URL+"/v1/admin/shadow/summary", "", "").body, &sum)
	if len(sum.Channels) != 1 || sum.Channels[0].Compared != 2 || *sum.Channels[0].ParityPercent != p {
		t.Errorf("summary: got %+v", sum)
	}

	var mm shadow.MismatchReport
	decodeExactly(t, do(t, "GET", adm.URL+"/v1/admin/shadow/mismatches?limit=1", "", "").body, &mm)
	if len(mm.Mismatches) != 1 || mm.Mismatches[0].Outcome != shadow.OutcomeMismatch {
		t.Errorf("mismatches: got %+v", mm)
	}

	// Nil reports are answered as empty lists, never null.
	s2 := New(Config{}, Deps{
		ShadowSummary:    func() []shadow.ChannelSummary { return nil },
		ShadowMismatches: func(int) []shadow.MismatchExample { return nil },
	}, NewMetrics(nil), nil, nil)
	adm2 := httptest.NewServer(s2.Admin())
	defer adm2.Close()
	if got, want := do(t, "GET", adm2.URL+"/v1/admin/shadow/summary", "", "").body, "{\"channels\":[]}\n"; got != want {
		t.Errorf("empty summary: got %q, want %q", got, want)
	}
	if got, want := do(t, "GET", adm2.URL+"/v1/admin/shadow/mismatches", "", "").body, "{\"mismatches\":[]}\n"; got != want {
		t.Errorf("empty mismatches: got %q, want %q", got, want)
	}
}

// Each failed item of a batch is logged once, where the batch handler
// handles it, as a single request's failure is: server faults at error
// level, refusals at debug; with the app, the channel and the status class,
// never the body.
func TestBatchItemFailuresAreLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	fb := &fakeBroadcaster{fn: func(m *broadcast.Message) (broadcast.Outcome, error) {
		switch m.RequestID {
		case "fails":
			return broadcast.Outcome{RequestID: m.RequestID}, &broadcast.Error{Code: broadcast.EUPSTREAM, Transport: broadcast.TransportLegacy,
				Message: "legacy transport failed: answered 503 after 3 attempts"}
		case "refused":
			return broadcast.Outcome{RequestID: m.RequestID}, &broadcast.Error{Code: broadcast.ETOOLARGE, Transport: broadcast.TransportRealtime,
				Message: "realtime transport refused the message"}
		}
		return broadcast.Outcome{RequestID: m.RequestID, Stage: broadcast.StageLegacy}, nil
	}}
	s := New(Config{
		Apps: map[string]App{"ai-hero": {Name: "ai-hero", KeyHashes: [][32]byte{HashKey(testKey)}}},
		ChannelOf: func(ev string) string {
			if ev == "ai.message" {
				return "ai-stream"
			}
			return broadcast.DefaultChannel
		},
	}, Deps{Broadcaster: fb}, NewMetrics(nil), zap.New(core), nil)
	s.SetReady(true)
	pub := httptest.NewServer(s.Public())
	defer pub.Close()

	const marker = "BODY-MARKER-do-not-log"
	body := `{"messages":[` +
		`{"room":"r","name":"ai.message","requestId":"ok","body":{"t":"` + marker + `"}},` +
		`{"room":"r","name":"ai.message","requestId":"fails","body":{"t":"` + marker + `"}},` +
		`{"room":"r","name":"video.ready","requestId":"refused","body":{"t":"` + marker + `"}}]}`
	if a := do(t, "POST", pub.URL+"/v1/broadcasts", "Bearer "+testKey, body); a.status != 200 {
		t.Fatalf("batch = %d %s", a.status, a.body)
	}

	type want struct {
		level                zapcore.Level
		channel, class, code string
		requestID, transport string
	}
	wants := map[string]want{
		"fails":   {zapcore.ErrorLevel, "ai-stream", "5xx", broadcast.EUPSTREAM, "fails", "legacy"},
		"refused": {zapcore.DebugLevel, broadcast.DefaultChannel, "4xx", broadcast.ETOOLARGE, "refused", "realtime"},
	}
	seen := map[string]int{}
	for _, e := range logs.All() {
		f := e.ContextMap()
		id, _ := f["requestId"].(string)
		w, ok := wants[id]
		if !ok {
			t.Errorf("unexpected log entry %q %v", e.Message, f)
			continue
		}
		seen[id]++
		if e.Level != w.level {
			t.Errorf("%s: level %s, want %s", id, e.Level, w.level)
		}
		for k, v := range map[string]string{"app": "ai-hero", "channel": w.channel, "statusClass": w.class,
			"code": w.code, "transport": w.transport, "route": "broadcasts"} {
			if got, _ := f[k].(string); got != v {
				t.Errorf("%s: field %s = %q, want %q", id, k, got, v)
			}
		}
		line := e.Message
		for k, v := range f {
			line += " " + k + "=" + toString(v)
		}
		if strings.Contains(line, marker) {
			t.Errorf("%s: log entry holds the message body: %s", id, line)
		}
	}
	for id := range wants {
		if seen[id] != 1 {
			t.Errorf("%s: logged %d times, want once", id, seen[id])
		}
	}
}

func TestCheckUTF8NamesThePath(t *testing.T) {
	for _, tt := range []struct {
		name, body, prefix, want string
	}{
		{"valid", `{"a":"café"}`, "", ""},
		{"top-level field", `{"name":"x` + "\xff" + `"}`, "", "name: not valid UTF-8 (byte 10)"},
		{"nested value", `{"body":{"items":[1,{"t":"` + "\xe9" + `"}]}}`, "", "body.items[1].t: not valid UTF-8"},
		{"field name in body", `{"body":{"k` + "\xc3" + `":1}}`, "", "body: a field name is not valid UTF-8"},
		{"top-level field name", `{"k` + "\xc3" + `":1}`, "", "a field name is not valid UTF-8"},
		{"batch item prefix", `{"body":["` + "\x80" + `"]}`, "messages[2].", "messages[2].body[0]: not valid UTF-8"},
		{"item itself", `"` + "\x80" + `"`, "messages[2].", "messages[2]: not valid UTF-8"},
		{"surrogate half", `{"s":"` + "\xed\xa0\x80" + `"}`, "", "s: not valid UTF-8"},
		{"not JSON before the bad byte", `{"a":` + "\xff", "", "request body: not valid UTF-8 at byte 5"},
		{"escaped lone surrogate is JSON's business", `{"s":"\ud800"}`, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkUTF8([]byte(tt.body), tt.prefix)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("checkUTF8 = %v, want nil", err)
				}
				return
			}
			if broadcast.ErrorCode(err) != broadcast.EINVALID || !strings.Contains(broadcast.ErrorMessage(err), tt.want) {
				t.Fatalf("checkUTF8 = %v, want EINVALID containing %q", err, tt.want)
			}
		})
	}
}

// TestShutdownPhases: while leaving, public answers close their
// connection; while draining, every public request is 503 draining; the
// admin listener is not affected.
func TestShutdownPhases(t *testing.T) {
	fb := &fakeBroadcaster{}
	s := New(Config{Apps: map[string]App{"ai-hero": {Name: "ai-hero", KeyHashes: [][32]byte{HashKey(testKey)}}}}, Deps{Broadcaster: fb}, nil, nil, nil)
	s.SetReady(true)
	pub, adm := httptest.NewServer(s.Public()), httptest.NewServer(s.Admin())
	t.Cleanup(pub.Close)
	t.Cleanup(adm.Close)
	body := `{"room":"r","name":"n","body":1}`
	publish := func() (answer, bool) {
		req, _ := http.NewRequest("POST", pub.URL+"/v1/broadcast", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, resp.Header, string(b)}, resp.Close
	}
	if a, closed := publish(); a.status != 200 || closed {
		t.Fatalf("serving: %d, Connection: close %v", a.status, closed)
	}
	s.SetReady(false)
	s.SetLeaving()
	if a, closed := publish(); a.status != 200 || !closed {
		t.Errorf("leaving: %d, Connection: close %v; want 200 and close", a.status, closed)
	}
	s.SetDraining()
	a, closed := publish()
	if code, _ := errorOf(t, a); a.status != 503 || code != broadcast.EDRAINING || !closed {
		t.Errorf("draining: %d %s, Connection: close %v; want 503 draining and close", a.status, a.body, closed)
	}
	if n := len(fb.sent()); n != 2 {
		t.Errorf("%d messages forwarded, want 2 (none while draining)", n)
	}
	if a := do(t, "GET", adm.URL+"/readyz", "", ""); a.status != 503 {
		t.Errorf("readyz = %d, want 503", a.status)
	}
	if a := do(t, "GET", adm.URL+"/healthz", "", ""); a.status != 200 {
		t.Errorf("healthz = %d, want 200 (the admin listener keeps serving)", a.status)
	}
}

// The room-addressed forms a load balancer hashes on: the path form takes
// its room from the path (a body room must agree), the header form must
// agree with the body (and with every message of a batch), and the plain
// form without a header is unchanged.
func TestRoomAffinityForms(t *testing.T) {
	fb := &fakeBroadcaster{}
	srv := newTestServer(t, fb)
	bearer := "Bearer " + testKey
	tests := []struct {
		name, path, body string
		hdr              []string
		status           int
		room, msg        string
	}{
		{"path form, no body room", "/v1/rooms/video-7/broadcast", `{"name":"n","body":1}`, nil, 200, "video-7", ""},
		{"path form, same body room", "/v1/rooms/video-7/broadcast", `{"room":"video-7","name":"n","body":1}`, nil, 200, "video-7", ""},
		{"path form, escaped room", "/v1/rooms/video%3A7/broadcast", `{"name":"n","body":1}`, nil, 200, "video:7", ""},
		{"path form, other body room", "/v1/rooms/video-7/broadcast", `{"room":"video-8","name":"n","body":1}`, nil, 400, "", `room: "video-8" differs from the room "video-7" named by the path`},
		{"path form, bad room", "/v1/rooms/a%20b/broadcast", `{"name":"n","body":1}`, nil, 422, "", "whitespace"},
		{"header form, same room", "/v1/broadcast", `{"room":"video-9","name":"n","body":1}`, []string{RoomHeader, "video-9"}, 200, "video-9", ""},
		{"header form, other room", "/v1/broadcast", `{"room":"video-9","name":"n","body":1}`, []string{RoomHeader, "video-1"}, 400, "", "named by the X-Switchyard-Room header"},
		{"header form, no body room", "/v1/broadcast", `{"name":"n","body":1}`, []string{RoomHeader, "video-9"}, 400, "", "room: required"},
		{"plain form", "/v1/broadcast", `{"room":"video-3","name":"n","body":1}`, nil, 200, "video-3", ""},
		{"batch header, agreeing", "/v1/broadcasts", `{"messages":[{"room":"b","name":"n","body":1},{"room":"b","name":"n","body":2}]}`, []string{RoomHeader, "b"}, 200, "b", ""},
		{"batch header, one other room", "/v1/broadcasts", `{"messages":[{"room":"b","name":"n","body":1},{"room":"c","name":"n","body":2}]}`, []string{RoomHeader, "b"}, 400, "", `messages[1].room: "c" differs`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fb.sent())
			a := do(t, "POST", srv.URL+tt.path, bearer, tt.body, tt.hdr...)
			if a.status != tt.status {
				t.Fatalf("status = %d, want %d (%s)", a.status, tt.status, a.body)
			}
			sent := fb.sent()[before:]
			if tt.status != 200 {
				if _, msg := errorOf(t, a); !strings.Contains(msg, tt.msg) {
					t.Fatalf("message %q, want it to contain %q", msg, tt.msg)
				}
				if len(sent) != 0 {
					t.Fatalf("%d refused messages were forwarded", len(sent))
				}
				return
			}
			if len(sent) == 0 {
				t.Fatal("nothing forwarded")
			}
			for _, m := range sent {
				if m.Room != tt.room || m.IdempotencyKey == "" {
					t.Fatalf("forwarded room %q idem %q, want room %q with an idempotency key", m.Room, m.IdempotencyKey, tt.room)
				}
			}
		})
	}
}
