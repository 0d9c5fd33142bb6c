package partytest_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchyard/switchyard/legacyparty/partytest"
)

func post(t *testing.T, url, body string, header http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func dial(t *testing.T, srv *partytest.Server, path string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL(), "http")+path, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *websocket.Conn) (int, string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, b, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	return typ, string(b)
}

func TestBroadcastReencodedToRawRoom(t *testing.T) {
	srv := partytest.MustStart(t)
	c := dial(t, srv, "/parties/main/a%3Ab?_pk=me")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !srv.WaitConns(ctx, "main", "a%3Ab", 1) {
		t.Fatal("connection not registered under the raw room segment")
	}
	if got := srv.ConnIDs("main", "a%3Ab"); len(got) != 1 || got[0] != "me" {
		t.Errorf("conn ids = %v, want [me]", got)
	}
	// Another spelling of the same decoded id is another room.
	if status, _ := post(t, srv.URL()+"/parties/main/a:b", `{"wrong":1}`, nil); status != 200 {
		t.Fatalf("status = %d", status)
	}
	if status, _ := post(t, srv.URL()+"/party/a%3Ab", `{"x":1.0}`, nil); status != 200 {
		t.Fatalf("status = %d", status)
	}
	if typ, got := read(t, c); typ != websocket.TextMessage || got != `{"x":1}` {
		t.Errorf("frame = %d %s, want text {\"x\":1}", typ, got)
	}
	pubs := srv.Publishes()
	if len(pubs) != 2 || string(pubs[1].Broadcast) != `{"x":1}` || pubs[1].Room != "a%3Ab" || pubs[1].Status != 200 {
		t.Errorf("publishes = %+v", pubs)
	}
}

func TestFaultSwitches(t *testing.T) {
	srv := partytest.MustStart(t)
	c := dial(t, srv, "/parties/main/r")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.WaitConns(ctx, "main", "r", 1)
	url := srv.URL() + "/parties/main/r"

	srv.FailNext(2, http.StatusBadGateway)
	for i := 0; i < 2; i++ {
		if status, _ := post(t, url, `{"n":1}`, nil); status != http.StatusBadGateway {
			t.Fatalf("failing publish %d: status = %d, want 502", i, status)
		}
	}
	srv.DropBroadcasts(true)
	if status, _ := post(t, url, `{"n":2}`, nil); status != 200 {
		t.Fatalf("dropped publish: status = %d", status)
	}
	srv.DropBroadcasts(false)
	srv.SetPublishDelay(10 * time.Millisecond)
	if status, _ := post(t, url, `{"n":3}`, nil); status != 200 {
		t.Fatalf("delayed publish: status = %d", status)
	}
	// Only n=3 was broadcast.
	if _, got := read(t, c); got != `{"n":3}` {
		t.Errorf("frame = %s, want {\"n\":3}", got)
	}
	pubs := srv.Publishes()
	var statuses []int
	for _, p := range pubs {
		statuses = append(statuses, p.Status)
	}
	if want := []int{502, 502, 200, 200}; len(statuses) != 4 || statuses[0] != want[0] || statuses[2] != want[2] {
		t.Errorf("statuses = %v, want %v", statuses, want)
	}
	if pubs[2].Broadcast != nil {
		t.Errorf("dropped publish recorded a broadcast %s", pubs[2].Broadcast)
	}

	srv.HangPublishes(true)
	hctx, hcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer hcancel()
	req, _ := http.NewRequestWithContext(hctx, http.MethodPost, url, strings.NewReader(`{}`))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("hung publish answered %d", resp.StatusCode)
	}
}

func TestSecretAndLimits(t *testing.T) {
	srv := partytest.MustStart(t, partytest.WithSecret("X-Secret", "s"), partytest.WithParties("main", "chat"))
	tests := []struct {
		name   string
		path   string
		body   string
		header http.Header
		want   int
	}{
		{"no secret", "/parties/main/r", `{}`, nil, 401},
		{"wrong secret", "/parties/main/r", `{}`, http.Header{"X-Secret": {"x"}}, 401},
		{"right secret", "/parties/main/r", `{}`, http.Header{"X-Secret": {"s"}}, 200},
		{"second party", "/parties/chat/r", `{}`, http.Header{"X-Secret": {"s"}}, 200},
		{"unknown party", "/parties/nope/r", `{}`, http.Header{"X-Secret": {"s"}}, 404},
		{"nested path is room a", "/parties/main/a/b", `{}`, http.Header{"X-Secret": {"s"}}, 200},
		{"too large", "/parties/main/r", `"` + strings.Repeat("x", partytest.MaxBody) + `"`, http.Header{"X-Secret": {"s"}}, 413},
		{"invalid JSON", "/parties/main/r", `{`, http.Header{"X-Secret": {"s"}}, 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, body := post(t, srv.URL()+tt.path, tt.body, tt.header); got != tt.want {
				t.Errorf("status = %d (%s), want %d", got, body, tt.want)
			}
		})
	}
}

func TestSendRawAndDisconnect(t *testing.T) {
	srv := partytest.MustStart(t)
	c := dial(t, srv, "/party/r")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.WaitConns(ctx, "main", "r", 1)
	if n := srv.SendRaw("main", "r", websocket.BinaryMessage, []byte{1, 2}); n != 1 {
		t.Fatalf("SendRaw reached %d, want 1", n)
	}
	if typ, got := read(t, c); typ != websocket.BinaryMessage || got != "\x01\x02" {
		t.Errorf("frame = %d %q", typ, got)
	}
	if n := srv.Disconnect("main", "r"); n != 1 {
		t.Fatalf("Disconnect dropped %d, want 1", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil {
		t.Error("connection still open after Disconnect")
	}
}
