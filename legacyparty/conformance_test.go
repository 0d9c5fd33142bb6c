package legacyparty_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/legacyparty/partykitdev"
	"github.com/switchyard/switchyard/legacyparty/partytest"
)

// realPartyKit is the real PartyKit dev server shared by every test of this
// binary; it is started on first use.
var realPartyKit partykitdev.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	realPartyKit.Close()
	os.Exit(code)
}

// target is one server the conformance suite runs against.
type target struct {
	name string
	url  string
}

// conformanceTargets returns the in-process test server and the real
// PartyKit dev server: every conformance test runs against both.
func conformanceTargets(t *testing.T) []target {
	t.Helper()
	fake := partytest.MustStart(t)
	return []target{
		{name: "partytest", url: fake.URL()},
		{name: "partykit", url: realPartyKit.URL(t)},
	}
}

// forEachTarget runs fn as a subtest per target.
func forEachTarget(t *testing.T, fn func(t *testing.T, base string)) {
	t.Helper()
	for _, tg := range conformanceTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			fn(t, tg.url)
			if t.Failed() && tg.name == "partykit" {
				t.Logf("partykit dev output (tail):\n%s", tail(realPartyKit.Output(), 4000))
			}
		})
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// uniqueRoom returns a room id no other test uses (the real server is
// shared and rooms persist while it runs).
var roomSeq atomic.Int64

func uniqueRoom(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), roomSeq.Add(1))
}

// watcher is a test subscription collecting frames into a channel.
type watcher struct {
	sub    *legacyparty.Subscription
	frames chan []byte
}

// mustWatch subscribes to room (through prefix/party) and waits until a
// probe published to the same room arrives, so the server has registered
// the connection. base is the server URL.
func mustWatch(t *testing.T, cfg legacyparty.SubscriberConfig) *watcher {
	t.Helper()
	w := &watcher{frames: make(chan []byte, 256)}
	cfg.BackoffMin, cfg.BackoffMax = 20*time.Millisecond, 200*time.Millisecond
	w.sub = legacyparty.Subscribe(cfg, func(data []byte, _ time.Time) { w.frames <- data }, nil, nil)
	t.Cleanup(func() { _ = w.sub.Close() })
	probePath := roomURL(t, cfg.URL, cfg.PathPrefix, cfg.Party, cfg.Room)
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if w.sub.Ready() {
			status, _ := do(t, http.MethodPost, probePath, fmt.Sprintf(`{"probe":%d}`, i))
			if status != http.StatusOK {
				t.Fatalf("probe publish answered %d", status)
			}
			select {
			case f := <-w.frames:
				if bytes.Contains(f, []byte(`"probe"`)) {
					return w
				}
				t.Fatalf("unexpected frame while probing: %s", f)
			case <-time.After(100 * time.Millisecond):
			}
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Fatalf("subscription to %q not live within 15s", cfg.Room)
	return nil
}

// next returns the next non-probe frame, failing after 5 s.
func (w *watcher) next(t *testing.T) []byte {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case f := <-w.frames:
			if bytes.HasPrefix(f, []byte(`{"probe":`)) {
				continue
			}
			return f
		case <-timeout:
			t.Fatal("no frame within 5s")
			return nil
		}
	}
}

func roomURL(t *testing.T, base, prefix, party, rawRoom string) string {
	t.Helper()
	switch {
	case prefix == "":
		prefix = "/parties"
	}
	if prefix == "/party" {
		return base + prefix + "/" + rawRoom
	}
	if party == "" {
		party = "main"
	}
	return base + prefix + "/" + party + "/" + rawRoom
}

func do(t *testing.T, method, target, body string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	// A fresh connection per request: workerd breaks a keep-alive
	// connection when the party answers without reading the body (PUT).
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func mustClient(t *testing.T, cfg legacyparty.Config) *legacyparty.Client {
	t.Helper()
	c, err := legacyparty.NewClient(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustMessage(t testing.TB, room, requestID string, body string) *broadcast.Message {
	t.Helper()
	m, err := broadcast.NewMessage("app", room, "video.asset.ready", requestID, json.RawMessage(body), "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func decode(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func TestConformancePublishAndReceive(t *testing.T) {
	forEachTarget(t, func(t *testing.T, base string) {
		room := uniqueRoom("recv")
		w := mustWatch(t, legacyparty.SubscriberConfig{URL: base, Room: room})
		c := mustClient(t, legacyparty.Config{URL: base})
		m := mustMessage(t, room, "req-1", `{"x":[1,"two",null,true,{"y":-2.5}],"s":"caf\u00e9 <b>&amp;</b>"}`)
		res, err := c.Publish(context.Background(), m)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		if got, want := res.Attempts, 1; got != want {
			t.Errorf("attempts = %d, want %d", got, want)
		}
		got := w.next(t)
		if !reflect.DeepEqual(decode(t, got), decode(t, m.Envelope)) {
			t.Errorf("frame = %s, want the decoded equivalent of %s", got, m.Envelope)
		}
		env, err := broadcast.DecodeEnvelope(got)
		if err != nil {
			t.Fatal(err)
		}
		if env.RequestID != "req-1" || env.Name != "video.asset.ready" {
			t.Errorf("envelope = %+v", env)
		}
	})
}

func TestConformanceReencoding(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"float with zero fraction", `{"a":1.0}`, `{"a":1}`},
		{"big integer", `{"n":12345678901234567890}`, `{"n":12345678901234567000}`},
		{"escaped non-ASCII", `{"s":"\u00e9"}`, `{"s":"é"}`},
		{"key order kept", `{"b":1,"a":2,"c":{"z":0,"y":1}}`, `{"b":1,"a":2,"c":{"z":0,"y":1}}`},
		{"array-index keys first", `{"b":1,"2":2,"1":3,"01":4}`, `{"1":3,"2":2,"b":1,"01":4}`},
		{"duplicate key", `{"a":1,"b":2,"a":3}`, `{"a":3,"b":2}`},
		{"exponents", `{"x":1e21,"y":1e-7,"z":123e-20,"w":0.000001,"v":1e20}`, `{"x":1e+21,"y":1e-7,"z":1.23e-18,"w":0.000001,"v":100000000000000000000}`},
		{"no HTML escaping", `{"h":"<&>","sl":"\/"}`, `{"h":"<&>","sl":"/"}`},
		{"control characters", `{"c":"\u0001\u001f\t\b\f\n\r\"\\"}`, `{"c":"\u0001\u001f\t\b\f\n\r\"\\"}`},
		{"lone surrogate", `{"l":"\ud800x"}`, `{"l":"\ud800x"}`},
		{"surrogate pair", `{"p":"\ud83d\ude00"}`, `{"p":"😀"}`},
		{"line separator", `{"u":"\u2028"}`, "{\"u\":\"\u2028\"}"},
		{"negative zero", `{"z":-0}`, `{"z":0}`},
		{"overflow", `{"big":1e400,"tiny":1e-400}`, `{"big":null,"tiny":0}`},
		{"whitespace", " {\n\t\"a\" : [ 1 , 2 ] } ", `{"a":[1,2]}`},
		{"float precision", `{"f":0.1,"g":3.14159265358979323846,"h":-1.5e-10}`, `{"f":0.1,"g":3.141592653589793,"h":-1.5e-10}`},
	}
	forEachTarget(t, func(t *testing.T, base string) {
		room := uniqueRoom("reenc")
		w := mustWatch(t, legacyparty.SubscriberConfig{URL: base, Room: room})
		target := roomURL(t, base, "", "", room)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if status, body := do(t, http.MethodPost, target, tt.in); status != http.StatusOK {
					t.Fatalf("publish answered %d: %s", status, body)
				}
				if got := string(w.next(t)); got != tt.want {
					t.Errorf("frame = %s, want %s", got, tt.want)
				}
			})
		}
	})
}

func TestConformanceAliasIsMainParty(t *testing.T) {
	forEachTarget(t, func(t *testing.T, base string) {
		room := uniqueRoom("alias")
		viaParties := mustWatch(t, legacyparty.SubscriberConfig{URL: base, Room: room})
		viaAlias := mustWatch(t, legacyparty.SubscriberConfig{URL: base, PathPrefix: "/party", Room: room})
		for _, cfg := range []legacyparty.Config{
			{URL: base, PathPrefix: "/party"},
			{URL: base, PathPrefix: "/parties", Party: "main"},
		} {
			c := mustClient(t, cfg)
			m := mustMessage(t, room, "via-"+cfg.PathPrefix, `"hello"`)
			if _, err := c.Publish(context.Background(), m); err != nil {
				t.Fatalf("publish via %s: %v", cfg.PathPrefix, err)
			}
			for name, w := range map[string]*watcher{"/parties/main": viaParties, "/party": viaAlias} {
				env, err := broadcast.DecodeEnvelope(w.next(t))
				if err != nil {
					t.Fatal(err)
				}
				if got, want := env.RequestID, "via-"+cfg.PathPrefix; got != want {
					t.Errorf("subscriber %s got requestId %q, want %q", name, got, want)
				}
			}
		}
	})
}

func TestConformanceConnectionID(t *testing.T) {
	forEachTarget(t, func(t *testing.T, base string) {
		room := uniqueRoom("pk")
		// Two subscribers with distinct _pk both receive; a fixed _pk is
		// accepted by the handshake.
		a := mustWatch(t, legacyparty.SubscriberConfig{URL: base, Room: room, ConnID: "conn-a"})
		b := mustWatch(t, legacyparty.SubscriberConfig{URL: base, Room: room, ConnID: "conn-b"})
		if status, body := do(t, http.MethodPost, roomURL(t, base, "", "", room), `{"k":"v"}`); status != http.StatusOK {
			t.Fatalf("publish answered %d: %s", status, body)
		}
		for _, w := range []*watcher{a, b} {
			if got, want := string(w.next(t)), `{"k":"v"}`; got != want {
				t.Errorf("frame = %s, want %s", got, want)
			}
		}
	})
}

func TestConformanceHTTP(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string // appended to base; {room} is replaced
		body       string
		wantStatus int
		wantJSON   string // if set, the answer decodes to this
		wantText   string // if set, the answer contains this
	}{
		{"publish to empty room", http.MethodPost, "/parties/main/{room}", `{"a":1}`, 200, "", ""},
		{"publish via alias", http.MethodPost, "/party/{room}", `{"a":1}`, 200, "", ""},
		{"invalid JSON", http.MethodPost, "/parties/main/{room}", `{bad`, 500, "", "SyntaxError"},
		{"empty body", http.MethodPost, "/parties/main/{room}", ``, 500, "", "SyntaxError"},
		{"trailing garbage", http.MethodPost, "/parties/main/{room}", `{"a":1} x`, 500, "", "SyntaxError"},
		{"unknown party", http.MethodPost, "/parties/nope/{room}", `{"a":1}`, 404, "", ""},
		{"unknown party GET", http.MethodGet, "/parties/nope/{room}", ``, 404, "", ""},
		{"no room", http.MethodPost, "/parties/main/", `{"a":1}`, 404, "", ""},
		{"not a party path", http.MethodGet, "/nothing-here", ``, 404, "", ""},
		{"GET", http.MethodGet, "/parties/main/{room}", ``, 200, `{"users":[]}`, ""},
		{"OPTIONS", http.MethodOptions, "/parties/main/{room}", ``, 200, `{"ok":true}`, ""},
		{"PUT", http.MethodPut, "/parties/main/{room}", `{"a":1}`, 405, "", ""},
		{"DELETE", http.MethodDelete, "/parties/main/{room}", ``, 405, "", ""},
		{"PATCH", http.MethodPatch, "/party/{room}", `{"a":1}`, 405, "", ""},
	}
	forEachTarget(t, func(t *testing.T, base string) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				path := strings.ReplaceAll(tt.path, "{room}", uniqueRoom("http"))
				status, body := do(t, tt.method, base+path, tt.body)
				if status != tt.wantStatus {
					t.Fatalf("status = %d, want %d (body %q)", status, tt.wantStatus, body)
				}
				if tt.wantJSON != "" && !reflect.DeepEqual(decode(t, body), decode(t, []byte(tt.wantJSON))) {
					t.Errorf("body = %s, want %s", body, tt.wantJSON)
				}
				if tt.wantText != "" && !strings.Contains(string(body), tt.wantText) {
					t.Errorf("body = %q, want it to contain %q", body, tt.wantText)
				}
			})
		}
	})
}

// TestConformanceRoomIDs publishes through the Client to rooms of every
// character class broadcast.ValidateRoom allows and receives on a
// Subscriber: both write the id as its own path segment. (The gateway-level
// proof that this is also the room of a browser's partysocket and of an
// app's direct POST is test/adversarial's TestFinding5RoomIDsOneMapping.)
func TestConformanceRoomIDs(t *testing.T) {
	rooms := []string{`a:b@c`, `~x`, `a+b`, `a=b&c`, `$x!*'()`, `a,b;c`, `..x`, `x.`, `-_.x`, `AZaz09`}
	forEachTarget(t, func(t *testing.T, base string) {
		c := mustClient(t, legacyparty.Config{URL: base})
		for _, id := range rooms {
			t.Run(id, func(t *testing.T) {
				if err := broadcast.ValidateRoom(id); err != nil {
					t.Fatalf("test room %q is not valid: %v", id, err)
				}
				room := id + uniqueRoom("")
				w := mustWatch(t, legacyparty.SubscriberConfig{URL: base, Room: room})
				m := mustMessage(t, room, "rid", `{"room":`+string(mustJSON(t, room))+`}`)
				if _, err := c.Publish(context.Background(), m); err != nil {
					t.Fatalf("publish: %v", err)
				}
				if !reflect.DeepEqual(decode(t, w.next(t)), decode(t, m.Envelope)) {
					t.Errorf("room %q: wrong frame", room)
				}
			})
		}
	})
}

// TestConformanceRawRoomSegment checks that the room id is the raw path
// segment: "a%3Ab" and "a:b" are different rooms.
func TestConformanceRawRoomSegment(t *testing.T) {
	forEachTarget(t, func(t *testing.T, base string) {
		suffix := uniqueRoom("")
		w := mustWatch(t, legacyparty.SubscriberConfig{URL: base, Room: "a:b" + suffix})
		for _, raw := range []string{"a%3Ab" + suffix, "a:b" + suffix} {
			if status, body := do(t, http.MethodPost, roomURL(t, base, "", "", raw), `{"raw":"`+raw+`"}`); status != http.StatusOK {
				t.Fatalf("publish to %s answered %d: %s", raw, status, body)
			}
		}
		if got, want := string(w.next(t)), `{"raw":"a:b`+suffix+`"}`; got != want {
			t.Errorf("first frame = %s, want %s (a percent-encoded segment must be another room)", got, want)
		}
	})
}

// TestConformanceExtraSegmentsIgnored checks that path segments after the
// room are ignored: /parties/main/{room}/x publishes to {room}.
func TestConformanceExtraSegmentsIgnored(t *testing.T) {
	forEachTarget(t, func(t *testing.T, base string) {
		room := uniqueRoom("nested")
		w := mustWatch(t, legacyparty.SubscriberConfig{URL: base, Room: room})
		if status, body := do(t, http.MethodPost, roomURL(t, base, "", "", room)+"/extra", `{"nested":true}`); status != http.StatusOK {
			t.Fatalf("publish answered %d: %s", status, body)
		}
		if got, want := string(w.next(t)), `{"nested":true}`; got != want {
			t.Errorf("frame = %s, want %s", got, want)
		}
	})
}

// TestConformanceCloseAnswered checks that a subscription closes cleanly
// and stops delivering: the fixture's onClose closes the connection.
func TestConformanceCloseAnswered(t *testing.T) {
	forEachTarget(t, func(t *testing.T, base string) {
		room := uniqueRoom("close")
		w := mustWatch(t, legacyparty.SubscriberConfig{URL: base, Room: room, CloseTimeout: 5 * time.Second})
		start := time.Now()
		if err := w.sub.Close(); err != nil {
			t.Fatal(err)
		}
		if elapsed := time.Since(start); elapsed >= 4*time.Second {
			t.Errorf("Close took %v: the server did not answer the Close frame", elapsed)
		}
		if w.sub.Ready() {
			t.Error("Ready() after Close")
		}
		if status, _ := do(t, http.MethodPost, roomURL(t, base, "", "", room), `{"after":"close"}`); status != http.StatusOK {
			t.Fatalf("publish answered %d", status)
		}
		select {
		case f := <-w.frames:
			t.Errorf("frame after Close: %s", f)
		case <-time.After(100 * time.Millisecond):
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConformanceReadyMeansDelivered: a subscription is Ready once its
// handshake succeeded and the server answered its ping; from that moment a
// single publish to a fresh room reaches it, with no retry (PartyKit adds
// the connection to the room before it answers the upgrade). It logs the
// time to ready of fresh rooms (docs/shadow.md quotes the real server's).
func TestConformanceReadyMeansDelivered(t *testing.T) {
	forEachTarget(t, func(t *testing.T, base string) {
		const rooms = 30
		c := mustClient(t, legacyparty.Config{URL: base})
		var ready []time.Duration
		for i := 0; i < rooms; i++ {
			room := uniqueRoom("ready")
			frames := make(chan []byte, 4)
			start := time.Now()
			sub := legacyparty.Subscribe(legacyparty.SubscriberConfig{URL: base, Room: room},
				func(data []byte, _ time.Time) { frames <- data }, nil, nil)
			select {
			case <-sub.ReadyC():
			case <-time.After(15 * time.Second):
				t.Fatalf("room %d: not ready within 15s", i)
			}
			if !sub.Ready() {
				t.Fatalf("room %d: ReadyC closed but Ready is false", i)
			}
			ready = append(ready, time.Since(start))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := c.Publish(ctx, mustMessage(t, room, fmt.Sprint("first-", i), `{"n":1}`))
			cancel()
			if err != nil {
				t.Fatalf("room %d: publish: %v", i, err)
			}
			select {
			case f := <-frames:
				if !bytes.Contains(f, []byte(fmt.Sprintf(`"first-%d"`, i))) {
					t.Fatalf("room %d: got %s, want the first message", i, f)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("room %d: the message published once the watch was ready never arrived", i)
			}
			_ = sub.Close()
			if sub.Ready() {
				t.Errorf("room %d: Ready after Close", i)
			}
		}
		slices.Sort(ready)
		t.Logf("time to ready of %d fresh rooms: p50 %v, p99 %v, max %v", rooms,
			ready[rooms/2].Round(100*time.Microsecond), ready[(rooms*99+99)/100-1].Round(100*time.Microsecond), ready[rooms-1].Round(100*time.Microsecond))
	})
}
