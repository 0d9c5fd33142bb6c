package api

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/switchyard/switchyard/broadcast"
)

// TestAppendAnswerMatchesJSON holds the hand encoder to encoding/json.
func TestAppendAnswerMatchesJSON(t *testing.T) {
	d := func(status string, attempts int, ms float64, reason string) *broadcast.Delivery {
		return &broadcast.Delivery{Status: broadcast.DeliveryStatus(status), Attempts: attempts, Millis: ms, Reason: reason}
	}
	cases := []deliveryAnswer{
		{RequestID: "lg-1-2", Stage: "shadow", Deliveries: deliveries{Legacy: d("delivered", 1, 0.412, ""), Realtime: d("queued", 0, 0, "")}},
		{RequestID: "r", Stage: "legacy", Deliveries: deliveries{Legacy: d("delivered", 3, 1234.5, "")}},
		{RequestID: "r", Stage: "realtime", Deliveries: deliveries{Realtime: d("failed", 4, 5000, `answered 503 after 4 attempts <&> "x" \ é`)}},
		{RequestID: "ünï\u2028code\x01", Stage: "dual"},
		{RequestID: "tiny", Stage: "dual", Deliveries: deliveries{Legacy: d("delivered", 1, 1e-7, ""), Realtime: d("delivered", 1, 3e21, "")}},
		{RequestID: "neg", Stage: "dual", Deliveries: deliveries{Legacy: d("delivered", 1, -0.001, ""), Realtime: d("delivered", 1, math.Round(123456.789*1000)/1000, "")}},
		{},
	}
	for _, a := range cases {
		want, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendAnswer(nil, &a); string(got) != string(want) {
			t.Errorf("appendAnswer = %s\nencoding/json gives %s", got, want)
		}
	}
}

func BenchmarkAppendAnswer(b *testing.B) {
	a := deliveryAnswer{RequestID: "lg-17-123456", Stage: "shadow", Deliveries: deliveries{
		Legacy:   &broadcast.Delivery{Status: "delivered", Attempts: 1, Millis: 0.412},
		Realtime: &broadcast.Delivery{Status: "queued"},
	}}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = appendAnswer(buf[:0], &a)
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(a); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestWriteOutcomeMatchesWriteJSON: the answer of the broadcast path is
// byte for byte, headers included, what writeJSON writes for answerOf.
func TestWriteOutcomeMatchesWriteJSON(t *testing.T) {
	outcomes := []broadcast.Outcome{
		{RequestID: "r1", Stage: broadcast.StageShadow, Deliveries: map[broadcast.Transport]broadcast.Delivery{
			broadcast.TransportLegacy:   {Status: broadcast.Delivered, Attempts: 1, Duration: 412345 * time.Nanosecond},
			broadcast.TransportRealtime: {Status: broadcast.Queued},
		}},
		{RequestID: "r2", Stage: broadcast.StageRealtime, Deliveries: map[broadcast.Transport]broadcast.Delivery{
			broadcast.TransportRealtime: {Status: broadcast.Failed, Attempts: 4, Duration: 5 * time.Second, Reason: `answered 503 "x" <&>`},
		}},
		{RequestID: "r3", Stage: broadcast.StageLegacy},
	}
	for _, o := range outcomes {
		got, want := httptest.NewRecorder(), httptest.NewRecorder()
		writeOutcome(got, o)
		writeJSON(want, http.StatusOK, answerOf(o))
		if got.Code != want.Code || got.Body.String() != want.Body.String() ||
			got.Header().Get("Content-Type") != want.Header().Get("Content-Type") ||
			got.Header().Get("X-Content-Type-Options") != want.Header().Get("X-Content-Type-Options") {
			t.Errorf("writeOutcome: %d %v %s\nwriteJSON: %d %v %s", got.Code, got.Header(), got.Body, want.Code, want.Header(), want.Body)
		}
	}
}
