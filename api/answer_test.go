package api

import (
	"encoding/json"
	"math"
	"testing"

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
