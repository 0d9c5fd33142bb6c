package api

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/switchyard/switchyard/broadcast"
)

var (
	contentTypeJSON = []string{"application/json"}
	contentTypeText = []string{"text/plain;charset=UTF-8"}
	noSniff         = []string{"nosniff"}
)

// answerBufs holds the buffers of writeAnswer. Buffers that grew past
// 4 KiB are not kept.
var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeOutcome writes the 200 answer of one accepted message of outcome o:
// the same bytes as writeJSON(w, http.StatusOK, answerOf(o)), appended
// without reflection into a pooled buffer, the deliveries on the stack.
func writeOutcome(w http.ResponseWriter, o broadcast.Outcome) {
	a := deliveryAnswer{RequestID: o.RequestID, Stage: o.Stage}
	var legacy, realtime broadcast.Delivery
	if d, ok := o.Deliveries[broadcast.TransportLegacy]; ok {
		legacy = d
		legacy.Millis = math.Round(float64(d.Duration.Microseconds())) / 1000
		a.Deliveries.Legacy = &legacy
	}
	if d, ok := o.Deliveries[broadcast.TransportRealtime]; ok {
		realtime = d
		realtime.Millis = math.Round(float64(d.Duration.Microseconds())) / 1000
		a.Deliveries.Realtime = &realtime
	}
	writeAnswerOf(w, &a)
}

// writeAnswerOf writes a as a 200 answer (see writeOutcome).
func writeAnswerOf(w http.ResponseWriter, a *deliveryAnswer) {
	bp := answerBufs.Get().(*[]byte)
	b := appendAnswer((*bp)[:0], a)
	b = append(b, '\n')
	// Shared, never-modified value slices: Header.Set would allocate one
	// per call (net/http only reads them; a later Set or Add replaces or
	// reallocates, as their capacity is their length).
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["X-Content-Type-Options"] = noSniff
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	if cap(b) <= 4<<10 {
		*bp = b
		answerBufs.Put(bp)
	}
}

// appendAnswer appends the JSON of a, as encoding/json encodes it.
func appendAnswer(b []byte, a *deliveryAnswer) []byte {
	b = append(b, `{"requestId":`...)
	b = appendJSONString(b, a.RequestID)
	b = append(b, `,"stage":`...)
	b = appendJSONString(b, string(a.Stage))
	b = append(b, `,"deliveries":{`...)
	if a.Deliveries.Legacy != nil {
		b = append(b, `"legacy":`...)
		b = appendDelivery(b, a.Deliveries.Legacy)
	}
	if a.Deliveries.Realtime != nil {
		if a.Deliveries.Legacy != nil {
			b = append(b, ',')
		}
		b = append(b, `"realtime":`...)
		b = appendDelivery(b, a.Deliveries.Realtime)
	}
	return append(b, "}}"...)
}

func appendDelivery(b []byte, d *broadcast.Delivery) []byte {
	b = append(b, `{"status":`...)
	b = appendJSONString(b, string(d.Status))
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(d.Attempts), 10)
	b = append(b, `,"ms":`...)
	b = appendJSONFloat(b, d.Millis)
	if d.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, d.Reason)
	}
	return append(b, '}')
}

// appendJSONString appends s as encoding/json quotes it. Printable ASCII
// other than the characters encoding/json escapes is copied as is; any
// other string is left to json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			// A copy goes to json.Marshal, so that s itself does not
			// escape (the answer's deliveries stay on the stack).
			q, _ := json.Marshal(strings.Clone(s)) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONFloat appends f as encoding/json encodes a float64 (NaN and
// infinities, which it refuses, never occur in a duration).
func appendJSONFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, '0')
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
