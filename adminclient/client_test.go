package adminclient

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/broadcast"
)

func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestRouteAndSummary(t *testing.T) {
	var gotAuth, gotQuery string
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotQuery = r.Header.Get("Authorization"), r.URL.RawQuery
		switch r.URL.Path {
		case "/v1/admin/routes":
			_ = json.NewEncoder(w).Encode(broadcast.RouteReport{App: "a", Room: "r", Route: broadcast.Route{Stage: broadcast.StageDual, Channel: "c"}})
		case "/v1/admin/shadow/summary":
			w.Write([]byte(`{"channels":[{"app":"a","channel":"c","compared":2},{"app":"b","channel":"c"}]}`))
		}
	})
	c := &Client{Admin: srv.URL + "/", AdminToken: "tok"}
	rt, err := c.Route(context.Background(), broadcast.RouteQuery{App: "a", Room: "r", Event: "e"})
	if err != nil || rt.Stage != broadcast.StageDual || rt.Channel != "c" {
		t.Fatalf("Route = %+v, %v", rt, err)
	}
	if gotAuth != "Bearer tok" || gotQuery != "app=a&event=e&room=r" {
		t.Errorf("auth %q, query %q", gotAuth, gotQuery)
	}
	sum, err := c.ShadowSummary(context.Background())
	if err != nil || len(sum.Channels) != 2 || len(sum.For("a")) != 1 || sum.For("a")[0].Compared != 2 || len(sum.For("")) != 2 {
		t.Fatalf("ShadowSummary = %+v, %v", sum, err)
	}
}

// TestErrors: a gateway error answer becomes an *Error with the gateway's
// code and message (and Retry-After); a body that is not the typed
// document, a bad stage and an oversized answer are errors, never a
// partial result.
func TestErrors(t *testing.T) {
	var answer func(w http.ResponseWriter)
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) { answer(w) })
	c := &Client{Admin: srv.URL, Public: srv.URL, HTTP: &http.Client{Timeout: 5 * time.Second}}
	ctx := context.Background()

	answer = func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(`{"error":{"code":"rate_limited","message":"slow down"}}`))
	}
	_, err := c.Broadcast(ctx, "k", BroadcastRequest{Room: "r", Name: "n", Body: json.RawMessage(`1`)})
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 429 || ae.Code != "rate_limited" || ae.Message != "slow down" || !ae.HasRetryAfter || ae.RetryAfter != 3*time.Second {
		t.Errorf("429: %#v", err)
	}
	if !strings.Contains(err.Error(), "POST /v1/broadcast: 429 rate_limited: slow down") {
		t.Errorf("message %q", err)
	}

	answer = func(w http.ResponseWriter) { w.WriteHeader(502); w.Write([]byte("<html>bad gateway</html>")) }
	_, err = c.ShadowSummary(ctx)
	if !errors.As(err, &ae) || ae.Status != 502 || ae.Code != "" || ae.Message != "<html>bad gateway</html>" || ae.HasRetryAfter {
		t.Errorf("502: %#v", err)
	}

	answer = func(w http.ResponseWriter) { w.Write([]byte(`{"channels":{"c":{}}}`)) }
	if _, err = c.ShadowSummary(ctx); err == nil || !strings.Contains(err.Error(), "unexpected answer") {
		t.Errorf("untyped summary: %v", err)
	}

	answer = func(w http.ResponseWriter) { w.Write([]byte(`{"stage":"sideways"}`)) }
	if _, err = c.Broadcast(ctx, "k", BroadcastRequest{Room: "r", Name: "n", Body: json.RawMessage(`1`)}); err == nil {
		t.Error("a bad stage in the answer: nil error")
	}

	answer = func(w http.ResponseWriter) {
		w.Write([]byte(`{"channels":[`))
		w.Write([]byte(strings.Repeat(`{"app":"a"},`, MaxAnswerBytes/12+1)))
		w.Write([]byte(`{}]}`))
	}
	if _, err = c.ShadowSummary(ctx); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized answer: %v", err)
	}

	if _, err := (&Client{}).ShadowSummary(ctx); err == nil {
		t.Error("no admin URL: nil error")
	}
	for _, u := range []string{"x.example", "ftp://x", "http://", ""} {
		if CheckBaseURL(u) == nil {
			t.Errorf("CheckBaseURL(%q) = nil", u)
		}
	}
	if CheckBaseURL("https://gw.example:8443") != nil {
		t.Error("a good URL refused")
	}
}
