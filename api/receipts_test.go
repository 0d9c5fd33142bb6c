package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/receipts"
)

// fakeSink records what POST /v1/receipts hands on.
type fakeSink struct {
	mu  sync.Mutex
	got map[string][]receipts.Receipt
}

func (f *fakeSink) Record(app string, rs []receipts.Receipt) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.got == nil {
		f.got = map[string][]receipts.Receipt{}
	}
	f.got[app] = append(f.got[app], rs...)
}

func (f *fakeSink) all(app string) []receipts.Receipt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]receipts.Receipt(nil), f.got[app]...)
}

func receiptsFixture(t *testing.T, limits ReceiptLimits) (*tokenFixture, *fakeSink) {
	sink := &fakeSink{}
	f := newTokenFixture(t, func(c *Config, d *Deps) {
		c.Receipts = limits
		d.Receipts = sink
		d.SequenceChannel = func(app, room, epoch string, seq uint64) (string, bool) {
			if epoch == "e1" && seq <= 10 {
				return "ai-stream", true
			}
			return "", false
		}
	})
	return f, sink
}

func receiptsBody(app, room, grant, items string) string {
	return fmt.Sprintf(`{"app":%q,"room":%q,"grant":%q,"receipts":[%s]}`, app, room, grant, items)
}

func TestReceiptsAccepted(t *testing.T) {
	f, sink := receiptsFixture(t, ReceiptLimits{})
	g := grant(t, grantSecret, "ai-hero", []string{"video-1"}, tokenNow, time.Minute)
	items := strings.Join([]string{
		`{"epoch":"e1","seq":1,"channel":"video-ready","legacyMs":12.5,"realtimeMs":8}`, // gateway's channel wins
		`{"epoch":"e1","seq":2}`,                                  // neither
		`{"channel":"video-ready","realtimeMs":-3}`,               // small negative: clock offset
		`{"epoch":"e9","seq":4,"channel":"made-up","legacyMs":1}`, // unknown channel
	}, ",")
	a := do(t, "POST", f.pub.URL+"/v1/receipts", "", receiptsBody("ai-hero", "video-1", g, items))
	if a.status != http.StatusAccepted || strings.TrimSpace(a.body) != `{"accepted":4}` {
		t.Fatalf("answer %d %s", a.status, a.body)
	}
	got := sink.all("ai-hero")
	want := []receipts.Receipt{
		{Channel: "ai-stream", Legacy: true, Realtime: true, LegacyLatency: 12500 * time.Microsecond, RealtimeLatency: 8 * time.Millisecond},
		{Channel: "ai-stream"},
		{Channel: "video-ready", Realtime: true},
		{Channel: receipts.Unknown, Legacy: true, LegacyLatency: time.Millisecond},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recorded\n %+v\nwant\n %+v", got, want)
	}
	// The grant may also travel in the Authorization header.
	a = do(t, "POST", f.pub.URL+"/v1/receipts", "Bearer "+g, receiptsBody("ai-hero", "video-1", "", `{"epoch":"e1","seq":3}`))
	if a.status != http.StatusAccepted {
		t.Errorf("grant in header: %d %s", a.status, a.body)
	}
}

func TestReceiptsRefused(t *testing.T) {
	f, sink := receiptsFixture(t, ReceiptLimits{MaxReceipts: 3, MaxBodyBytes: 2048})
	good := grant(t, grantSecret, "ai-hero", []string{"video-1"}, tokenNow, time.Minute)
	expired := grant(t, grantSecret, "ai-hero", []string{"video-1"}, tokenNow.Add(-20*time.Minute), 10*time.Minute)
	one := `{"epoch":"e1","seq":1,"legacyMs":5}`
	for _, c := range []struct {
		name, body       string
		status           int
		code, msg, label string
	}{
		{"not JSON", `{"app":`, 400, broadcast.EINVALID, "malformed JSON", "invalid"},
		{"unknown field", `{"app":"ai-hero","room":"video-1","grant":"x","receipts":[],"extra":1}`, 400, broadcast.EINVALID, "unknown field", "invalid"},
		{"no room", `{"app":"ai-hero","grant":"x","receipts":[]}`, 400, broadcast.EINVALID, "app and room: required", "invalid"},
		{"unknown app", receiptsBody("nope", "video-1", good, one), 404, broadcast.ENOTFOUND, `unknown app "nope"`, "unknown_app"},
		{"no grant", receiptsBody("ai-hero", "video-1", "", one), 401, broadcast.EUNAUTH, "room grant", "unauthorized"},
		{"expired grant", receiptsBody("ai-hero", "video-1", expired, one), 401, broadcast.EUNAUTH, "room grant refused: expired", "grant_expired"},
		{"other room", receiptsBody("ai-hero", "video-2", good, one), 403, broadcast.EFORBIDDEN, `does not cover room "video-2"`, "wrong_room"},
		{"bad room", receiptsBody("ai-hero", "a/b", good, one), 422, broadcast.EROOM, "room:", "invalid"},
		{"empty", receiptsBody("ai-hero", "video-1", good, ""), 400, broadcast.EINVALID, "receipts: empty", "invalid"},
		{"too many", receiptsBody("ai-hero", "video-1", good, one+","+one+","+one+","+one), 400, broadcast.EINVALID, "more than 3", "invalid"},
		{"neither without seq", receiptsBody("ai-hero", "video-1", good, `{"channel":"ai-stream"}`), 400, broadcast.EINVALID, "receipts[0]: a message received by neither", "invalid"},
		{"seq without epoch", receiptsBody("ai-hero", "video-1", good, `{"seq":3,"legacyMs":1}`), 400, broadcast.EINVALID, "receipts[0]: epoch and seq go together", "invalid"},
		{"latency too high", receiptsBody("ai-hero", "video-1", good, `{"epoch":"e1","seq":1,"realtimeMs":900000}`), 400, broadcast.EINVALID, "receipts[0].realtimeMs", "invalid"},
		{"latency overflowing a duration", receiptsBody("ai-hero", "video-1", good, `{"epoch":"e1","seq":1,"realtimeMs":1e300}`), 400, broadcast.EINVALID, "receipts[0].realtimeMs", "invalid"},
		{"latency too negative", receiptsBody("ai-hero", "video-1", good, `{"epoch":"e1","seq":1,"legacyMs":-60000}`), 400, broadcast.EINVALID, "receipts[0].legacyMs", "invalid"},
		{"bad channel", receiptsBody("ai-hero", "video-1", good, `{"channel":"Not A Channel","legacyMs":1}`), 400, broadcast.EINVALID, "receipts[0].channel", "invalid"},
		{"wrong type", receiptsBody("ai-hero", "video-1", good, `{"epoch":"e1","seq":"1","legacyMs":1}`), 400, broadcast.EINVALID, "seq", "invalid"},
		{"too large", receiptsBody("ai-hero", "video-1", good, `{"epoch":"`+strings.Repeat("e", 3000)+`","seq":1,"legacyMs":1}`), 413, broadcast.ETOOLARGE, "over the 2048 byte limit", "too_large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := do(t, "POST", f.pub.URL+"/v1/receipts", "", c.body)
			var e errorBody
			if err := json.Unmarshal([]byte(a.body), &e); err != nil || a.status != c.status || e.Error.Code != c.code || !strings.Contains(e.Error.Message, c.msg) {
				t.Errorf("answer %d %s, want %d %s containing %q", a.status, a.body, c.status, c.code, c.msg)
			}
			app := "ai-hero"
			if c.label == "unknown_app" || c.name == "not JSON" || c.name == "unknown field" || c.name == "no room" || c.name == "too large" {
				app = "unknown"
			}
			if got := testutil.ToFloat64(f.srv.m.rcptErr.WithLabelValues(app, c.label)); got < 1 {
				t.Errorf("switchyard_browser_receipts_refused_total{app=%s,reason=%s} = %v, want at least 1", app, c.label, got)
			}
		})
	}
	if got := sink.all("ai-hero"); len(got) != 0 {
		t.Errorf("refused reports were recorded: %+v", got)
	}
}

func TestReceiptsOriginAndRateLimit(t *testing.T) {
	f, sink := receiptsFixture(t, ReceiptLimits{PerSecond: 0.5, Burst: 2})
	g := grant(t, grantSecret, "ai-hero", []string{"video-1", "video-2"}, tokenNow, time.Minute)
	body := receiptsBody("ai-hero", "video-1", g, `{"epoch":"e1","seq":1,"legacyMs":5}`)

	req, _ := http.NewRequest("POST", f.pub.URL+"/v1/receipts", strings.NewReader(body))
	req.Header.Set("Origin", "https://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("foreign origin: %d ACAO %q, want 403 without ACAO", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	req, _ = http.NewRequest("POST", f.pub.URL+"/v1/receipts", strings.NewReader(body))
	req.Header.Set("Origin", allowedOrigin)
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Access-Control-Allow-Origin") != allowedOrigin {
		t.Errorf("allowed origin: %d ACAO %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}

	// Burst 2: the first (above) and second pass, the third is refused
	// with Retry-After; another room of the same grant has its own bucket.
	if a := do(t, "POST", f.pub.URL+"/v1/receipts", "", body); a.status != http.StatusAccepted {
		t.Fatalf("second report: %d %s", a.status, a.body)
	}
	a := do(t, "POST", f.pub.URL+"/v1/receipts", "", body)
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") != "2" {
		t.Errorf("third report: %d Retry-After %q %s, want 429 with Retry-After 2", a.status, a.header.Get("Retry-After"), a.body)
	}
	if a := do(t, "POST", f.pub.URL+"/v1/receipts", "", receiptsBody("ai-hero", "video-2", g, `{"epoch":"e1","seq":1,"legacyMs":5}`)); a.status != http.StatusAccepted {
		t.Errorf("other room of the same grant: %d %s", a.status, a.body)
	}
	if got := len(sink.all("ai-hero")); got != 3 {
		t.Errorf("%d receipts recorded, want 3", got)
	}
	if got := testutil.ToFloat64(f.srv.m.rcptErr.WithLabelValues("ai-hero", "rate_limited")); got != 1 {
		t.Errorf("rate_limited refusals = %v, want 1", got)
	}

	// Preflight.
	req, _ = http.NewRequest("OPTIONS", f.pub.URL+"/v1/receipts?app=ai-hero", nil)
	req.Header.Set("Origin", allowedOrigin)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || !strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestGrantLimiterIsBounded(t *testing.T) {
	g := newGrantLimiter(ReceiptLimits{MaxKeys: 100})
	now := tokenNow
	for i := range 1000 {
		if !g.allow(fmt.Sprintf("grant-%d", i), "room", now) {
			t.Fatalf("first report of grant %d refused", i)
		}
	}
	if n := g.len(); n > 100 {
		t.Errorf("limiter holds %d buckets, bound 100", n)
	}
}

// A sequenced app's token answer carries the room's sequence start and a
// token covering every channel's topic once one channel is past legacy;
// the events map and topics come from the deps.
func TestTokenAnswerSequencedApp(t *testing.T) {
	f := newTokenFixture(t, func(c *Config, d *Deps) {
		a := c.Apps["ai-hero"]
		a.Sequenced = true
		c.Apps["ai-hero"] = a
		d.Sequence = func(app, room string) (string, uint64) { return "ep.1", 41 }
		d.Topic = func(app, ch string) string {
			if ch == "ai-stream" {
				return "ai"
			}
			return ch
		}
		d.Events = func() map[string]string { return map[string]string{"ai.message": "ai-stream"} }
	})
	a := do(t, "POST", f.pub.URL+"/v1/realtime/token", "Bearer "+testKey, `{"room":"mixed"}`)
	var got TokenAnswer
	if err := json.Unmarshal([]byte(a.body), &got); err != nil || a.status != 200 {
		t.Fatalf("%d %s: %v", a.status, a.body, err)
	}
	if got.Sequence == nil || *got.Sequence != (SequenceStart{Epoch: "ep.1", Last: 41}) {
		t.Errorf("sequence = %+v", got.Sequence)
	}
	if calls := f.minter.seen(); len(calls) != 1 || strings.Join(calls[0].channels, ",") != "video-ready,ai-stream,default" {
		t.Errorf("mint calls %+v, want every channel of the room", calls)
	}
	if got.Events["ai.message"] != "ai-stream" || len(got.Channels) != 3 || got.Channels[1].Topic != "ai" ||
		got.Channels[0].Stage != broadcast.StageLegacy || got.Channels[1].Stage != broadcast.StageShadow || !got.Channels[0].Subscribed {
		t.Errorf("answer = %+v", got)
	}
	// Every channel at legacy: still 404, the client keeps PartyKit.
	if a := do(t, "POST", f.pub.URL+"/v1/realtime/token", "Bearer "+testKey, `{"room":"legacy-room"}`); a.status != 404 || !strings.Contains(a.body, broadcast.EDISABLED) {
		t.Errorf("legacy room: %d %s", a.status, a.body)
	}
}

// FuzzReceipts feeds arbitrary bodies to POST /v1/receipts with a valid
// grant: no input may cause a server error, an accepted report counts
// exactly the receipts it carried, and a refused one counts none.
func FuzzReceipts(f *testing.F) {
	g := grant(f, grantSecret, "ai-hero", []string{"video-1"}, tokenNow, time.Minute)
	for _, items := range []string{
		`{"epoch":"e1","seq":1,"legacyMs":1.5,"realtimeMs":2}`,
		`{"epoch":"e1","seq":2}`,
		`{"channel":"ai-stream","legacyMs":-1}`,
		`{"epoch":"","seq":0,"realtimeMs":1e308}`,
		`{"seq":18446744073709551615,"epoch":"x","legacyMs":"NaN"}`,
	} {
		f.Add(receiptsBody("ai-hero", "video-1", g, items))
	}
	f.Add(`{"app":"ai-hero","room":"video-1","grant":"` + g + `","receipts":null}`)
	f.Add(`[]`)
	sink := &fakeSink{}
	s := New(Config{Apps: map[string]App{"ai-hero": {Name: "ai-hero", GrantSecret: []byte(grantSecret)}},
		Receipts: ReceiptLimits{PerSecond: 1e9, Burst: 1 << 30}},
		Deps{Receipts: sink, Channels: func() []string { return tokenChannels }}, nil, nil, func() time.Time { return tokenNow })
	h := s.Public()
	f.Fuzz(func(t *testing.T, body string) {
		before := len(sink.all("ai-hero"))
		req := httptest.NewRequest("POST", "/v1/receipts", strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		after := len(sink.all("ai-hero"))
		switch {
		case rec.Code >= 500:
			t.Fatalf("status %d for %q", rec.Code, body)
		case rec.Code == http.StatusAccepted:
			var a receiptsAnswer
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || a.Accepted != after-before || a.Accepted < 1 {
				t.Fatalf("accepted %s but recorded %d", rec.Body, after-before)
			}
		case after != before:
			t.Fatalf("refused with %d but recorded %d receipts", rec.Code, after-before)
		}
	})
}
