package broadcast

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestValidateRoom(t *testing.T) {
	for _, tt := range []struct {
		room string
		ok   bool
	}{
		{"video-42", true}, {"a:b@c", true}, {`"quote"`, true}, {"~x", true}, {"x.y", true},
		{strings.Repeat("r", MaxRoomLen), true},
		{"", false}, {".", false}, {"..", false}, {"a/b", false}, {"a?b", false}, {"a#b", false},
		{"a%20b", false}, {"a b", false}, {"a\tb", false}, {"a\x00b", false}, {"café", false},
		{strings.Repeat("r", MaxRoomLen+1), false},
	} {
		err := ValidateRoom(tt.room)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateRoom(%q) = %v, want ok=%v", tt.room, err, tt.ok)
		}
		if err != nil && ErrorCode(err) != EROOM {
			t.Errorf("ValidateRoom(%q) code = %s, want %s", tt.room, ErrorCode(err), EROOM)
		}
	}
}

func TestNewMessageEnvelope(t *testing.T) {
	at := time.Unix(1700000000, 0)
	m, err := NewMessage("app", "room", `video."ready"`, "req<1>", json.RawMessage(`{"n":1.0, "s":"\u00e9"}`), "", at)
	if err != nil {
		t.Fatal(err)
	}
	// The body is kept byte for byte; strings are JSON-escaped.
	want := `{"body":{"n":1.0, "s":"\u00e9"},"requestId":"req\u003c1\u003e","name":"video.\"ready\""}`
	if got := string(m.Envelope); got != want {
		t.Errorf("envelope = %s\nwant       %s", got, want)
	}
	if m.Channel != DefaultChannel || !m.AcceptedAt.Equal(at) {
		t.Errorf("channel %q accepted %v", m.Channel, m.AcceptedAt)
	}
	e, err := DecodeEnvelope(m.Envelope)
	if err != nil || e.RequestID != "req<1>" || e.Name != `video."ready"` {
		t.Errorf("DecodeEnvelope = %+v, %v", e, err)
	}
}

func TestNewMessageErrors(t *testing.T) {
	big := json.RawMessage(`"` + strings.Repeat("x", MaxRealtimeBody) + `"`)
	for _, tt := range []struct {
		name, room, ev, id string
		body               json.RawMessage
		code, msg          string
	}{
		{"bad room", "a/b", "e", "r", json.RawMessage(`1`), EROOM, "room:"},
		{"no name", "r", "", "r", json.RawMessage(`1`), EINVALID, "name: required"},
		{"no id", "r", "e", "", json.RawMessage(`1`), EINVALID, "requestId: required"},
		{"no body", "r", "e", "r", nil, EINVALID, "body: required"},
		{"bad body", "r", "e", "r", json.RawMessage(`{`), EINVALID, "body: not valid JSON"},
		{"bad utf8 name", "r", "\xff", "r", json.RawMessage(`1`), EINVALID, "name: must be valid UTF-8"},
		{"too large", "r", "e", "r", big, ETOOLARGE, "over the"},
	} {
		_, err := NewMessage("app", tt.room, tt.ev, tt.id, tt.body, "", time.Now())
		if ErrorCode(err) != tt.code || !strings.Contains(ErrorMessage(err), tt.msg) {
			t.Errorf("%s: error %v, want %s containing %q", tt.name, err, tt.code, tt.msg)
		}
	}
}

func TestDecodeEnvelopeRefuses(t *testing.T) {
	for _, in := range []string{`[]`, `{"body":1}`, `{"requestId":5}`, `not json`, `{"requestId":""}`} {
		if _, err := DecodeEnvelope([]byte(in)); err == nil {
			t.Errorf("DecodeEnvelope(%s) accepted", in)
		}
	}
}

// FuzzMessage: an accepted message has a valid envelope that decodes back to
// its parts, and its room survives the path-escape trip both transports
// make.
func FuzzMessage(f *testing.F) {
	f.Add("room-1", "video.asset.ready", "req-1", `{"a":[1,2.0,"\u00e9"]}`)
	f.Add("a:b@c", "ai.message", "r\"1", `"chunk"`)
	f.Add("..", "e", "r", `null`)
	f.Fuzz(func(t *testing.T, room, name, id, body string) {
		m, err := NewMessage("app", room, name, id, json.RawMessage(body), "", time.Now())
		if err != nil {
			return
		}
		if !json.Valid(m.Envelope) {
			t.Fatalf("invalid envelope %q", m.Envelope)
		}
		e, err := DecodeEnvelope(m.Envelope)
		if err != nil || e.RequestID != id || e.Name != name {
			t.Fatalf("envelope %q decodes to %+v, %v", m.Envelope, e, err)
		}
		esc := url.PathEscape(room)
		if strings.Contains(esc, "/") {
			t.Fatalf("room %q escapes to %q with a slash", room, esc)
		}
		if back, err := url.PathUnescape(esc); err != nil || back != room {
			t.Fatalf("room %q does not survive the path-escape trip: %q, %v", room, back, err)
		}
	})
}
