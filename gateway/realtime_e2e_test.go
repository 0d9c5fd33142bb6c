//go:build unix

package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

const e2eGrantSecret = "gateway-e2e-grant-secret-0123456789abcdef"

// realtimeTargets are the Inngest Realtime servers the realtime end-to-end
// tests run against: the in-process test server and the real dev server.
func realtimeTargets(t *testing.T) []struct{ name, url string } {
	t.Helper()
	rt := realtimetest.NewServer(realtimetest.Config{})
	t.Cleanup(rt.Close)
	return []struct{ name, url string }{{"realtimetest", rt.URL()}, {"inngest-dev", ""}}
}

// e2eConfig is a gateway in front of partyURL and realtimeURL with a room
// grant secret, every channel at stage.
func e2eConfig(t *testing.T, partyURL, realtimeURL, stage string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "flags.json"), []byte(flagFile(stage)), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := fmt.Sprintf(`env: test
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
log: {level: warn, format: json}
flags: {provider: file, file: flags.json, pollInterval: 200ms}
channels:
  - {name: video-ready, events: [video.asset.ready]}
  - {name: ai-stream, events: [ai.message]}
apps:
  ai-hero:
    apiKeys: [%q]
    grantSecret: %q
    party: {url: %q, party: main}
    realtime: {url: %q, channel: "{room}", topics: {ai-stream: ai}}
shadow: {sampleRate: 1.0, timeout: 2s}
upstream: {timeout: 3s, attemptTimeout: 1s, backoffBase: 10ms, backoffMax: 100ms}
server: {shutdownTimeout: 3s}
`, testKey, e2eGrantSecret, partyURL, realtimeURL)
	path := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRealtimeStageEndToEnd runs the token and the realtime stages end to
// end against realtimetest and the real Inngest dev server: a browser takes
// the gateway's token (server path with the API key, and browser path with
// a room grant), subscribes to Inngest Realtime with it, and receives,
// each once, what apps publish through the gateway at dual
// (realtime answers, PartyKit off the caller's path) and realtime
// (PartyKit untouched), in order within each topic (the real server orders
// nothing across topics). The token grants the room's topics and never the
// comparator's probe topic.
func TestRealtimeStageEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Inngest dev server")
	}
	for _, tg := range realtimeTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			rtURL := tg.url
			if rtURL == "" {
				rtURL = realInngest.URL(t)
			}
			for _, stage := range []string{"dual", "realtime"} {
				for _, path := range []string{"server", "grant"} {
					t.Run(stage+"/"+path, func(t *testing.T) {
						party := partytest.MustStart(t)
						g, _ := start(t, e2eConfig(t, party.URL(), rtURL, stage), nil)
						room := fmt.Sprintf("e2e-%s-%s-%x", stage, path, time.Now().UnixNano())
						tok := browserToken(t, g, path, room)
						if !slices.Equal(tok.Topics, []string{"video-ready", "ai", broadcast.DefaultChannel}) || tok.Channel != room {
							t.Errorf("token channel %q topics %v, want %q [video-ready ai default]", tok.Channel, tok.Topics, room)
						}
						var claims struct {
							Topics []struct{ Channel, Name string } `json:"topics"`
						}
						if err := json.Unmarshal([]byte(tokenClaims(t, tok.Key)), &claims); err != nil || len(claims.Topics) == 0 {
							t.Fatalf("token claims: %v (%s)", err, tokenClaims(t, tok.Key))
						}
						for _, c := range claims.Topics {
							if c.Channel != room || c.Name == realtime.ProbeTopic {
								t.Errorf("token claims topic %s/%s", c.Channel, c.Name)
							}
						}
						frames := dialRealtime(t, rtURL, tok.Key)
						// Prove the browser live: hellos until one arrives.
						live := false
						for i := 0; i < 100 && !live; i++ {
							if a := broadcastTo(g, room, "video.asset.ready", fmt.Sprintf("%s-hello-%d", room, i), map[string]any{"hello": i}); a.status != http.StatusOK {
								t.Fatalf("hello: %d %s", a.status, a.body)
							}
							select {
							case <-frames:
								live = true
							case <-time.After(100 * time.Millisecond):
							}
						}
						if !live {
							t.Fatal("the browser never received a message")
						}
						// Two messages per topic, interleaved. The real server keeps
						// order within a topic and not across topics (one Redis
						// subscription and goroutine per topic: runTopic in
						// inngest's pkg/execution/realtime/broadcaster.go), so
						// order is asserted per topic.
						sent := []struct{ event, id, topic string }{
							{"video.asset.ready", room + "-1", "video-ready"},
							{"ai.message", room + "-2", "ai"},
							{"image.resource.created", room + "-3", broadcast.DefaultChannel},
							{"video.asset.ready", room + "-4", "video-ready"},
							{"ai.message", room + "-5", "ai"},
							{"image.resource.created", room + "-6", broadcast.DefaultChannel},
						}
						for i, m := range sent {
							a := broadcastTo(g, room, m.event, m.id, map[string]any{"n": i, "s": "café"})
							if a.status != http.StatusOK || !strings.Contains(a.body, `"stage":"`+stage+`"`) {
								t.Fatalf("broadcast %s: %d %s", m.event, a.status, a.body)
							}
						}
						wantOrder := map[string][]string{} // topic -> requestIds in publish order
						byID := map[string]string{}        // requestId -> event
						for _, m := range sent {
							wantOrder[m.topic] = append(wantOrder[m.topic], m.id)
							byID[m.id] = m.event
						}
						gotOrder := map[string][]string{}
						for range sent {
							f := nextData(t, frames, room+"-hello")
							var env broadcast.Envelope
							if err := json.Unmarshal(f.Data, &env); err != nil {
								t.Fatalf("data %s: %v", f.Data, err)
							}
							if event, ok := byID[env.RequestID]; !ok || env.Name != event || f.Channel != room {
								t.Fatalf("browser got %s on %s/%s, not one of the messages sent to %s", f.Data, f.Channel, f.Topic, room)
							}
							gotOrder[f.Topic] = append(gotOrder[f.Topic], env.RequestID)
						}
						for topic, ids := range wantOrder {
							if !slices.Equal(gotOrder[topic], ids) {
								t.Fatalf("browser got %v on topic %s, want %v (each once, in publish order)", gotOrder[topic], topic, ids)
							}
						}
						// Nothing more: no duplicate arrives late.
						grace := time.After(200 * time.Millisecond)
					drain:
						for {
							select {
							case f := <-frames:
								var env broadcast.Envelope
								if json.Unmarshal(f.Data, &env) == nil && !strings.HasPrefix(env.RequestID, room+"-hello") {
									t.Fatalf("browser got an extra frame %s on %s/%s", f.Data, f.Channel, f.Topic)
								}
							case <-grace:
								break drain
							}
						}
						// PartyKit: the off-path copies at dual (each once), nothing
						// at realtime. Counted by requestId: the hellos' own
						// off-path copies may still be in their lane (they wait
						// for the comparator's PartyKit watch there).
						deadline := time.Now().Add(5 * time.Second)
						for {
							copies := map[string]int{}
							for _, p := range party.Publishes() {
								var env broadcast.Envelope
								if err := json.Unmarshal(p.Body, &env); err == nil {
									copies[env.RequestID]++
								}
							}
							done := true
							for _, m := range sent {
								want := 0
								if stage == "dual" {
									want = 1
								}
								got := copies[m.id]
								if got > want {
									t.Fatalf("PartyKit got %d copies of %s at %s, want %d", got, m.id, stage, want)
								}
								if got < want {
									done = false
									if time.Now().After(deadline) {
										t.Fatalf("PartyKit got %d copies of %s at %s, want %d", got, m.id, stage, want)
									}
								}
							}
							if stage == "realtime" && len(party.Publishes()) != 0 {
								t.Fatalf("PartyKit got %d publishes at realtime, want none", len(party.Publishes()))
							}
							if done {
								break
							}
							time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
						}
					})
				}
			}
		})
	}
}

// browserToken asks g for room's realtime token: on the server path with
// the app's API key, or on the browser path with a room grant.
func browserToken(t *testing.T, g *Gateway, path, room string) broadcast.Token {
	t.Helper()
	var req *http.Request
	if path == "server" {
		req, _ = http.NewRequest(http.MethodPost, g.PublicURL()+"/v1/realtime/token", strings.NewReader(fmt.Sprintf(`{"room":%q}`, room)))
		req.Header.Set("Authorization", "Bearer "+testKey)
	} else {
		now := time.Now()
		grant, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"app": "ai-hero", "rooms": []string{room}, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		}).SignedString([]byte(e2eGrantSecret))
		if err != nil {
			t.Fatal(err)
		}
		req, _ = http.NewRequest(http.MethodGet, g.PublicURL()+"/v1/realtime/token?app=ai-hero&room="+url.QueryEscape(room), nil)
		req.Header.Set("Authorization", "Bearer "+grant)
	}
	resp, err := parityClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token (%s path): %d %s", path, resp.StatusCode, b)
	}
	var tok broadcast.Token
	if err := json.Unmarshal(b, &tok); err != nil {
		t.Fatalf("token answer %s: %v", b, err)
	}
	return tok
}

// dataFrame is a kind:"data" frame of the subscription protocol.
type dataFrame struct {
	Kind    string          `json:"kind"`
	Channel string          `json:"channel"`
	Topic   string          `json:"topic"`
	Data    json.RawMessage `json:"data"`
}

// dialRealtime subscribes like a browser with token and returns its data
// frames; the connection closes when the test ends.
func dialRealtime(t *testing.T, base, token string) <-chan dataFrame {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/v1/realtime/connect?token="+url.QueryEscape(token), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", base, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { _ = ws.Close() })
	out := make(chan dataFrame, 64)
	go func() {
		defer close(out)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f dataFrame
			if json.Unmarshal(b, &f) == nil && f.Kind == "data" {
				out <- f
			}
		}
	}()
	return out
}

// nextData returns the next data frame whose envelope's requestId does not
// start with skip, failing after 10 s or on a probe.
func nextData(t *testing.T, frames <-chan dataFrame, skip string) dataFrame {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatal("browser connection closed")
			}
			if f.Topic == realtime.ProbeTopic {
				t.Fatalf("a readiness probe reached the browser: %s", f.Data)
			}
			var env broadcast.Envelope
			if json.Unmarshal(f.Data, &env) == nil && strings.HasPrefix(env.RequestID, skip) {
				continue
			}
			return f
		case <-timeout:
			t.Fatal("no data frame within 10s")
		}
	}
}
