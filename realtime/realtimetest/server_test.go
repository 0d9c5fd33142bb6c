package realtimetest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const testKey = "signkey-test-deadbeef"

func newTestServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s := NewServer(cfg)
	tb.Cleanup(s.Close)
	return s
}

func do(tb testing.TB, method, u, auth, contentType string, body []byte) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func mintToken(tb testing.TB, s *Server, auth, channel string, topics ...string) string {
	tb.Helper()
	var req []map[string]string
	for _, t := range topics {
		req = append(req, map[string]string{"channel": channel, "name": t, "kind": "run"})
	}
	body, _ := json.Marshal(req)
	status, ans := do(tb, http.MethodPost, s.URL()+"/v1/realtime/token", auth, "application/json", body)
	if status != http.StatusCreated {
		tb.Fatalf("token: status %d %q", status, ans)
	}
	var out struct{ JWT string }
	if err := json.Unmarshal(ans, &out); err != nil {
		tb.Fatal(err)
	}
	return out.JWT
}

func dial(tb testing.TB, s *Server, header http.Header, query string) (*websocket.Conn, chan map[string]json.RawMessage) {
	tb.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(s.URL(), "http", "ws", 1)+"/v1/realtime/connect"+query, header)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ws.Close() })
	ch := make(chan map[string]json.RawMessage, 2048)
	go func() {
		defer close(ch)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f map[string]json.RawMessage
			_ = json.Unmarshal(b, &f)
			ch <- f
		}
	}()
	return ws, ch
}

func recv(tb testing.TB, ch chan map[string]json.RawMessage) map[string]json.RawMessage {
	tb.Helper()
	select {
	case f := <-ch:
		return f
	case <-time.After(3 * time.Second):
		tb.Fatal("no frame")
		return nil
	}
}

func publishURL(s *Server, channel, topic string, extra url.Values) string {
	q := url.Values{"channel": {channel}, "topic": {topic}}
	for k, v := range extra {
		q[k] = v
	}
	return s.URL() + "/v1/realtime/publish?" + q.Encode()
}

func TestAuthForms(t *testing.T) {
	s := newTestServer(t, Config{SigningKey: testKey})
	hashed := "signkey-test-5f78c33274e43fa9de5659265c1d917e25c03722dcb0b8d27db8d5feaa813953"
	tests := []struct {
		auth string
		want int
	}{
		{"Bearer " + testKey, 200},
		{"Bearer " + hashed, 200},
		{"Bearer signkey-test-00", 401},
		{"", 401},
		{testKey, 401},
	}
	for _, tt := range tests {
		if got, _ := do(t, http.MethodPost, publishURL(s, "c", "t", nil), tt.auth, "", []byte(`1`)); got != tt.want {
			t.Errorf("auth %q: got %d, want %d", tt.auth, got, tt.want)
		}
	}
}

func TestPublishValidationAndRecords(t *testing.T) {
	s := newTestServer(t, Config{})
	if got, _ := do(t, http.MethodPost, s.URL()+"/v1/realtime/publish?channel=c", "", "", []byte(`1`)); got != 400 {
		t.Errorf("no topic: got %d, want 400", got)
	}
	if got, _ := do(t, http.MethodGet, publishURL(s, "c", "t", nil), "", "", nil); got != 405 {
		t.Errorf("GET: got %d, want 405", got)
	}
	if got, _ := do(t, http.MethodPost, publishURL(s, "c", "t", url.Values{"metadata": {"{"}}), "", "", []byte(`1`)); got != 400 {
		t.Errorf("bad metadata: got %d, want 400", got)
	}
	tok := mintToken(t, s, "", "c", "t")
	_, frames := dial(t, s, http.Header{"Authorization": {"Bearer " + tok}}, "")
	big := bytes.Repeat([]byte("a"), MaxBody+10)
	if got, _ := do(t, http.MethodPost, publishURL(s, "c", "t", url.Values{"run_id": {"run-1"}, "metadata": {`{"m":1}`}}), "", "", big); got != 200 {
		t.Fatalf("big publish: got %d, want 200", got)
	}
	f := recv(t, frames)
	var data string
	if err := json.Unmarshal(f["data"], &data); err != nil || len(data) != MaxBody {
		t.Errorf("data: got %d bytes (%v), want %d (truncated silently, wrapped as a string)", len(data), err, MaxBody)
	}
	if string(f["run_id"]) != `"run-1"` || string(f["metadata"]) != `{"m":1}` {
		t.Errorf("run_id/metadata: got %s %s", f["run_id"], f["metadata"])
	}
	p := s.Publishes()
	if len(p) != 1 || !p[0].Truncated || p[0].Received != MaxBody+10 {
		t.Errorf("records: got %+v", p)
	}
}

func TestStreamingPublish(t *testing.T) {
	s := newTestServer(t, Config{})
	_, frames := dial(t, s, nil, "?token="+url.QueryEscape(mintToken(t, s, "", "c", "t")))
	body := bytes.Repeat([]byte("x"), 2500)
	if got, _ := do(t, http.MethodPost, publishURL(s, "c", "t", nil), "", "text/stream", body); got != 200 {
		t.Fatalf("status %d", got)
	}
	var kinds []string
	total := 0
	for {
		f := recv(t, frames)
		var k string
		_ = json.Unmarshal(f["kind"], &k)
		kinds = append(kinds, k)
		if k == "chunk" {
			var d string
			_ = json.Unmarshal(f["data"], &d)
			if len(d) > MaxChunk {
				t.Fatalf("chunk of %d bytes", len(d))
			}
			if f["stream_id"] == nil || len(f) != 3 {
				t.Fatalf("chunk frame %v: want only kind, stream_id, data", f)
			}
			total += len(d)
		}
		if k == "datastream-end" {
			break
		}
	}
	if got, want := strings.Join(kinds, ","), "datastream-start,chunk,chunk,chunk,datastream-end"; got != want {
		t.Errorf("kinds: got %s, want %s", got, want)
	}
	if total != len(body) {
		t.Errorf("chunked bytes: got %d, want %d", total, len(body))
	}
}

func TestDeliveryFaults(t *testing.T) {
	s := newTestServer(t, Config{})
	_, frames := dial(t, s, nil, "?token="+url.QueryEscape(mintToken(t, s, "", "c", "t", "u")))
	s.SetDeliveryFault(DeliveryFault{DropEvery: 2})
	for i := range 4 {
		do(t, http.MethodPost, publishURL(s, "c", "t", nil), "", "", []byte{byte('1' + i)})
	}
	s.SetDeliveryFault(DeliveryFault{AlterTopic: "u", Alter: func(json.RawMessage) json.RawMessage { return json.RawMessage(`"changed"`) }})
	do(t, http.MethodPost, publishURL(s, "c", "u", nil), "", "", []byte(`{"a":1}`))
	var got []string
	for range 3 {
		got = append(got, string(recv(t, frames)["data"]))
	}
	if want := `1,3,"changed"`; strings.Join(got, ",") != want {
		t.Errorf("got %s, want %s", strings.Join(got, ","), want)
	}
	if c := s.Counts(); c.Dropped != 2 || c.Publishes != 5 {
		t.Errorf("counts: %+v", c)
	}
}

func TestDelayFault(t *testing.T) {
	s := newTestServer(t, Config{})
	s.SetPublishFault(HTTPFault{Delay: 50 * time.Millisecond})
	start := time.Now()
	if got, _ := do(t, http.MethodPost, publishURL(s, "c", "t", nil), "", "", []byte(`1`)); got != 200 {
		t.Fatalf("status %d", got)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("answered before the delay")
	}
}

func TestBadClientFramesCounted(t *testing.T) {
	s := newTestServer(t, Config{})
	ws, _ := dial(t, s, nil, "?token="+url.QueryEscape(mintToken(t, s, "", "c", "t")))
	for _, f := range []string{`nope`, `{"kind":"sub","data":1}`, `{"kind":"dance"}`, `{"kind":"sub","data":"x.y.z"}`} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.Counts().BadFrames != 3 || s.Counts().BadSubs != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("counts: %+v, want 3 bad frames and 1 bad sub", s.Counts())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDecodeClientFrame(t *testing.T) {
	tests := []struct {
		in, kind string
		ok       bool
	}{
		{`{"kind":"sub","data":"a.b.c"}`, "sub", true},
		{`{"kind":"unsub","data":[{"kind":"run","env_id":"e","channel":"c","name":"t"}]}`, "unsub", true},
		{`{"kind":"unsub","data":[]}`, "unsub", true},
		{`{"kind":"unsub","data":["t"]}`, "", false},
		{`{"kind":"unsub","data":[{"channel":"c"}]}`, "", false},
		{`{"kind":"sub","data":""}`, "", false},
		{`{"kind":"sub"}`, "", false},
		{`{"data":"x"}`, "", false},
		{`[]`, "", false},
	}
	for _, tt := range tests {
		f, err := DecodeClientFrame([]byte(tt.in))
		if (err == nil) != tt.ok || (tt.ok && f.Kind != tt.kind) {
			t.Errorf("%s: got %+v %v, want ok=%v kind %q", tt.in, f, err, tt.ok, tt.kind)
		}
	}
}

func FuzzDecodeClientFrame(f *testing.F) {
	f.Add([]byte(`{"kind":"sub","data":"a.b.c"}`))
	f.Add([]byte(`{"kind":"unsub","data":[{"channel":"c","name":"t"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cf, err := DecodeClientFrame(b)
		if err != nil {
			return
		}
		switch cf.Kind {
		case "sub":
			if cf.Token == "" {
				t.Fatal("sub without token")
			}
		case "unsub":
			for _, tp := range cf.Topics {
				if tp.Channel == "" || tp.Name == "" {
					t.Fatal("unsub topic without channel or name")
				}
			}
		default:
			t.Fatalf("kind %q accepted", cf.Kind)
		}
	})
}

func FuzzDecodeTokenRequest(f *testing.F) {
	f.Add([]byte(`[{"channel":"c","name":"t","kind":"run"}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		topics, err := DecodeTokenRequest(b)
		if err != nil {
			return
		}
		if len(topics) == 0 {
			t.Fatal("accepted no topics")
		}
		for _, tp := range topics {
			if tp.Channel == "" || tp.Name == "" || tp.Kind != "run" {
				t.Fatalf("accepted %+v", tp)
			}
		}
	})
}
