package realtime_test

// Conformance suite: the wire facts of shared/protocols.md ("Inngest
// Realtime"), checked against a base URL. By default the URL is an
// in-process realtimetest server; set SWITCHYARD_INNGEST_URL (and, for a
// server that checks keys, SWITCHYARD_INNGEST_SIGNING_KEY) to run the same
// tests against a real Inngest server. See docs/conformance-realtime.md.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

const confKey = "signkey-test-0123456789abcdef"

// target is the server under test; srv is nil for a real server.
type target struct {
	url    string
	key    string
	srv    *realtimetest.Server
	client *realtime.Client
}

func conformanceTarget(t *testing.T) target {
	t.Helper()
	tg := target{url: os.Getenv("SWITCHYARD_INNGEST_URL"), key: os.Getenv("SWITCHYARD_INNGEST_SIGNING_KEY")}
	if tg.url == "" {
		tg.srv = realtimetest.NewServer(realtimetest.Config{SigningKey: confKey})
		t.Cleanup(tg.srv.Close)
		tg.url, tg.key = tg.srv.URL(), confKey
	}
	c, err := realtime.NewClient("conformance", realtime.Config{URL: tg.url, SigningKey: tg.key}, nil, nil, nil)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	tg.client = c
	return tg
}

func (tg target) auth() string {
	if tg.key == "" {
		return ""
	}
	h, _ := realtime.HashSigningKey(tg.key)
	return "Bearer " + h
}

// uniq returns a channel name no other run uses.
func uniq(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

func (tg target) post(t *testing.T, path string, q url.Values, contentType, auth string, body []byte) (int, []byte) {
	t.Helper()
	u := strings.TrimRight(tg.url, "/") + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b
}

func (tg target) publish(t *testing.T, channel, topic, contentType string, body []byte) {
	t.Helper()
	status, ans := tg.post(t, "/v1/realtime/publish", url.Values{"channel": {channel}, "topic": {topic}}, contentType, tg.auth(), body)
	if status != http.StatusOK {
		t.Fatalf("publish: status %d (%q), want 200", status, ans)
	}
	if len(ans) != 0 {
		t.Fatalf("publish: answer body %q, want empty", ans)
	}
}

func (tg target) token(t *testing.T, channel string, topics ...string) string {
	t.Helper()
	tok, err := tg.client.MintToken(context.Background(), channel, topics)
	if err != nil {
		t.Fatalf("MintToken: %v", err)
	}
	return tok.Key
}

func (tg target) wsURL(token string) string {
	u := strings.Replace(strings.TrimRight(tg.url, "/"), "http", "ws", 1)
	return u + "/v1/realtime/connect?token=" + url.QueryEscape(token)
}

// confConn is a test subscription: the text frames received, less the
// settle probes (see settle).
type confConn struct {
	ws      *websocket.Conn
	frames  <-chan []byte
	probe   string     // the prefix of this connection's probes
	settles int64      // settles so far: the current probe is probe-N (settle's own)
	probed  chan int64 // N of each probe-N that arrived
}

// probeEvery is how long settle waits for one probe before publishing the
// next; probeWithin bounds the whole settle.
const (
	probeEvery  = 50 * time.Millisecond
	probeWithin = 10 * time.Second
)

// dial connects with token, subscribed to channel/topic (the token's), and
// returns once the subscription is in effect (settle).
func (tg target) dial(t *testing.T, token, channel, topic string) *confConn {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(tg.wsURL(token), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	t.Cleanup(func() { _ = ws.Close() })
	ch := make(chan []byte, 64)
	c := &confConn{ws: ws, frames: ch, probe: uniq("probe"), probed: make(chan int64, 64)}
	go func() {
		defer close(ch)
		for {
			typ, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if typ != websocket.TextMessage {
				continue
			}
			var f struct {
				Kind string `json:"kind"`
				Data struct {
					Probe string `json:"probe"`
				} `json:"data"`
			}
			if json.Unmarshal(b, &f) == nil && f.Kind == "data" && strings.HasPrefix(f.Data.Probe, c.probe+"-") {
				var n int64
				if _, err := fmt.Sscanf(strings.TrimPrefix(f.Data.Probe, c.probe+"-"), "%d", &n); err == nil {
					select {
					case c.probed <- n:
					default: // settle reads until its own; a full buffer holds only old ones
					}
				}
				continue
			}
			ch <- b
		}
	}()
	c.settle(t, tg, channel, topic)
	return c
}

// settle returns once a message published on channel/topic reaches c. The
// protocol acknowledges no subscription (connect or sub frame): instead of
// waiting a guessed time, it publishes probes, one per probeEvery, until one
// arrives. The probes never reach c.frames.
func (c *confConn) settle(t *testing.T, tg target, channel, topic string) {
	t.Helper()
	c.settles++
	n := c.settles
	body := []byte(fmt.Sprintf(`{"probe":"%s-%d"}`, c.probe, n))
	deadline := time.Now().Add(probeWithin)
	for {
		tg.publish(t, channel, topic, "application/json", body)
		wait := time.After(probeEvery)
	probes:
		for {
			select {
			case got := <-c.probed:
				if got == n {
					return
				} // a late probe of an earlier settle proves nothing now
			case <-wait:
				break probes
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscription to %s/%s not in effect within %s", channel, topic, probeWithin)
		}
	}
}

// next returns the next data frame, or nil after wait.
func next(t *testing.T, ch <-chan []byte, wait time.Duration) map[string]json.RawMessage {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case b, ok := <-ch:
			if !ok {
				return nil
			}
			var f map[string]json.RawMessage
			if err := json.Unmarshal(b, &f); err != nil {
				t.Fatalf("frame is not a JSON object: %q", b)
			}
			if string(f["kind"]) == `"data"` {
				return f
			}
		case <-deadline:
			return nil
		}
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func TestConformancePublishFrameShape(t *testing.T) {
	tg := conformanceTarget(t)
	ch := uniq("conf-shape")
	frames := tg.dial(t, tg.token(t, ch, "updates"), ch, "updates").frames
	body := []byte(`{"body":{"n":1.5,"s":"é"},"requestId":"r-1","name":"video.asset.ready"}`)
	tg.publish(t, ch, "updates", "application/json", body)
	f := next(t, frames, 5*time.Second)
	if f == nil {
		t.Fatal("no data frame received")
	}
	if !jsonEqual(t, f["data"], body) {
		t.Errorf("data: got %s, want %s", f["data"], body)
	}
	var channel, topic, env, created string
	for k, dst := range map[string]*string{"channel": &channel, "topic": &topic, "env_id": &env, "created_at": &created} {
		if err := json.Unmarshal(f[k], dst); err != nil {
			t.Errorf("%s: %s is not a string", k, f[k])
		}
	}
	if channel != ch || topic != "updates" {
		t.Errorf("channel/topic: got %q/%q, want %q/updates", channel, topic, ch)
	}
	if env == "" {
		t.Errorf("env_id empty")
	}
	if _, err := time.Parse(time.RFC3339Nano, created); err != nil {
		t.Errorf("created_at %q: %v", created, err)
	}
}

func TestConformancePassthroughAndWrapping(t *testing.T) {
	tg := conformanceTarget(t)
	ch := uniq("conf-wrap")
	frames := tg.dial(t, tg.token(t, ch, "t"), ch, "t").frames
	tests := []struct {
		name, contentType, body, want string
	}{
		{"json object", "application/json", `{"a":[1,2]}`, `{"a":[1,2]}`},
		{"json string", "application/json", `"hi"`, `"hi"`},
		{"not json", "text/plain", `hello world`, `"hello world"`},
		{"json without content type", "", `[true]`, `[true]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg.publish(t, ch, "t", tt.contentType, []byte(tt.body))
			f := next(t, frames, 5*time.Second)
			if f == nil {
				t.Fatal("no data frame received")
			}
			if !jsonEqual(t, f["data"], []byte(tt.want)) {
				t.Errorf("data: got %s, want %s", f["data"], tt.want)
			}
		})
	}
}

type confClaims struct {
	jwt.RegisteredClaims
	Topics []struct {
		Kind    string `json:"kind"`
		EnvID   string `json:"env_id"`
		Channel string `json:"channel"`
		Name    string `json:"name"`
	} `json:"topics"`
}

func TestConformanceTokenShape(t *testing.T) {
	tg := conformanceTarget(t)
	ch := uniq("conf-token")
	body := []byte(`[{"channel":"` + ch + `","name":"a","kind":"run"},{"channel":"` + ch + `","name":"b","kind":"run"}]`)
	status, ans := tg.post(t, "/v1/realtime/token", nil, "application/json", tg.auth(), body)
	if status != http.StatusCreated {
		t.Fatalf("status %d, want 201", status)
	}
	var out struct {
		JWT string `json:"jwt"`
	}
	if err := json.Unmarshal(ans, &out); err != nil || out.JWT == "" {
		t.Fatalf("answer %q: want {\"jwt\":...}", ans)
	}
	if !strings.HasPrefix(out.JWT, "eyJ") || strings.Count(out.JWT, ".") != 2 {
		t.Fatalf("jwt is not a compact JWS")
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	hb, _ := base64URL(strings.SplitN(out.JWT, ".", 2)[0])
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr.Alg != "HS256" {
		t.Fatalf("header %s: want alg HS256", hb)
	}
	var c confClaims
	if _, _, err := jwt.NewParser().ParseUnverified(out.JWT, &c); err != nil {
		t.Fatal(err)
	}
	if c.Issuer != "rt.inngest.com" {
		t.Errorf("iss: got %q", c.Issuer)
	}
	if c.ExpiresAt == nil || c.IssuedAt == nil || c.ExpiresAt.Sub(c.IssuedAt.Time) != 60*time.Second {
		t.Errorf("exp-iat: got %v-%v, want 60 s", c.ExpiresAt, c.IssuedAt)
	}
	if len(c.Topics) != 2 || c.Topics[0].Kind != "run" || c.Topics[0].Channel != ch || c.Topics[0].Name != "a" || c.Topics[1].Name != "b" || c.Topics[0].EnvID == "" {
		t.Errorf("topics claim: got %+v", c.Topics)
	}
}

func TestConformanceBadTokens401(t *testing.T) {
	tg := conformanceTarget(t)
	tok := tg.token(t, uniq("conf-bad"), "t")
	parts := strings.Split(tok, ".")
	forged := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
	tests := map[string]string{"garbage": "not-a-jwt", "bad signature": forged, "missing": ""}
	if tg.srv != nil {
		expired := tg.token(t, uniq("conf-exp"), "t")
		tg.srv.Advance(61 * time.Second)
		tests["expired"] = expired
		t.Cleanup(func() { tg.srv.Advance(-61 * time.Second) })
	} else if os.Getenv("SWITCHYARD_INNGEST_WAIT_EXPIRY") != "" {
		expired := tg.token(t, uniq("conf-exp"), "t")
		time.Sleep(61 * time.Second)
		tests["expired"] = expired
	} else {
		t.Log("expired-token case skipped against a real server (set SWITCHYARD_INNGEST_WAIT_EXPIRY=1 to wait 61 s)")
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			ws, resp, err := websocket.DefaultDialer.Dial(tg.wsURL(tok), nil)
			if err == nil {
				_ = ws.Close()
				t.Fatal("handshake succeeded, want 401")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("got %v, want HTTP 401 before the upgrade", err)
			}
		})
	}
}

func TestConformanceWrongKey401(t *testing.T) {
	tg := conformanceTarget(t)
	if tg.key == "" {
		t.Skip("no signing key in use (the dev server does not check keys)")
	}
	wrong := "signkey-test-" + strings.Repeat("ab", 32)
	h, _ := realtime.HashSigningKey(wrong)
	for _, path := range []string{"/v1/realtime/publish", "/v1/realtime/token"} {
		for _, auth := range []string{"Bearer " + h, ""} {
			status, _ := tg.post(t, path, url.Values{"channel": {"c"}, "topic": {"t"}}, "application/json", auth, []byte(`[{"channel":"c","name":"t","kind":"run"}]`))
			if status != http.StatusUnauthorized {
				t.Errorf("%s with auth %q: status %d, want 401", path, strings.TrimPrefix(auth, "Bearer ")[:min(len(auth), 12)], status)
			}
		}
	}
}

func TestConformanceSubUnsub(t *testing.T) {
	tg := conformanceTarget(t)
	x, y, z := uniq("conf-x"), uniq("conf-y"), uniq("conf-z")
	conn := tg.dial(t, tg.token(t, x, "t"), x, "t")
	ws, frames := conn.ws, conn.frames
	tokY := tg.token(t, y, "t")
	if err := ws.WriteJSON(map[string]any{"kind": "sub", "data": tokY}); err != nil {
		t.Fatal(err)
	}
	conn.settle(t, tg, y, "t")
	tg.publish(t, y, "t", "application/json", []byte(`{"on":"y"}`))
	if f := next(t, frames, 5*time.Second); f == nil || !jsonEqual(t, f["data"], []byte(`{"on":"y"}`)) {
		t.Fatalf("after sub: got %v, want the message on y", f)
	}
	var c confClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tokY, &c); err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteJSON(map[string]any{"kind": "unsub", "data": c.Topics}); err != nil {
		t.Fatal(err)
	}
	// An unsubscription cannot be probed; a sub frame sent after it can,
	// and the server handles one connection's frames in order: once z's
	// probe arrives, the unsub of y is in effect.
	if err := ws.WriteJSON(map[string]any{"kind": "sub", "data": tg.token(t, z, "t")}); err != nil {
		t.Fatal(err)
	}
	conn.settle(t, tg, z, "t")
	tg.publish(t, y, "t", "application/json", []byte(`{"on":"y2"}`))
	tg.publish(t, x, "t", "application/json", []byte(`{"on":"x"}`))
	for {
		f := next(t, frames, 2*time.Second)
		if f == nil {
			t.Fatal("no message on x (still subscribed)")
		}
		if jsonEqual(t, f["data"], []byte(`{"on":"y2"}`)) {
			t.Fatal("received a message on y after unsub")
		}
		if jsonEqual(t, f["data"], []byte(`{"on":"x"}`)) {
			break
		}
	}
	if f := next(t, frames, 300*time.Millisecond); f != nil {
		t.Fatalf("unexpected frame after unsub: %v", f)
	}
}

func TestConformanceNoSubscribers(t *testing.T) {
	tg := conformanceTarget(t)
	tg.publish(t, uniq("conf-empty"), "t", "application/json", []byte(`{"nobody":"listens"}`))
	m, err := broadcast.NewMessage("conformance", uniq("conf-room"), "video.asset.ready", "r-1", json.RawMessage(`{"a":1}`), "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	res, err := tg.client.Publish(context.Background(), m)
	if err != nil {
		t.Fatalf("client publish with no subscribers: %v", err)
	}
	if res.Attempts != 1 {
		t.Fatalf("attempts: got %d, want 1", res.Attempts)
	}
}

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
