package broadcast

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestValidateRoom(t *testing.T) {
	for _, tt := range []struct {
		room string
		ok   bool
	}{
		{"video-42", true}, {"a:b@c", true}, {"~x", true}, {"x.y", true}, {"...", true},
		{"AZaz09-._~!$&'()*+,;=:@", true},
		{strings.Repeat("r", MaxRoomLen), true},
		{"", false}, {".", false}, {"..", false}, {"a/b", false}, {"a?b", false}, {"a#b", false},
		{"a%20b", false}, {"a%7Cb", false}, {"a b", false}, {"a\tb", false}, {"a\x00b", false}, {"café", false},
		{`"quote"`, false}, {"a|b", false}, {"a[b", false}, {"a]b", false}, {"a^b", false}, {"a`b", false},
		{"a{b", false}, {"a}b", false}, {"a<b", false}, {"a>b", false}, {`a\b`, false}, {"a\x7fb", false},
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
		{"bad utf8 body", "r", "e", "r", json.RawMessage(`"caf` + "\xe9" + `"`), EINVALID, "body: not valid UTF-8"},
		{"too deep", "r", "e", "r", json.RawMessage(strings.Repeat("[", MaxBodyDepth+1) + strings.Repeat("]", MaxBodyDepth+1)), EINVALID, "body: nested 65 levels deep, more than 64"},
		{"9,000 levels", "r", "e", "r", json.RawMessage(strings.Repeat(`{"a":`, 9000) + "1" + strings.Repeat("}", 9000)), EINVALID, "nested 9000 levels"},
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

func TestBodyDepthLimit(t *testing.T) {
	for _, tt := range []struct {
		body string
		ok   bool
	}{
		{strings.Repeat("[", MaxBodyDepth) + strings.Repeat("]", MaxBodyDepth), true},
		{`{"s":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"[[["}`, true}, // brackets in strings do not count
		{`"\\"`, true},
		{strings.Repeat(`{"a":[`, 32) + strings.Repeat("]}", 32), true},
		{strings.Repeat(`{"a":[`, 33) + strings.Repeat("]}", 33), false},
	} {
		_, err := NewMessage("app", "r", "e", "id", json.RawMessage(tt.body), "", time.Now())
		if (err == nil) != tt.ok {
			t.Errorf("body of %d bytes: err %v, want ok=%v", len(tt.body), err, tt.ok)
		}
	}
}

// FuzzMessage: an accepted message has a valid envelope that decodes back to
// its parts, its body is valid UTF-8 nested at most MaxBodyDepth levels,
// and its room is its own path segment: it needs no escaping, so it
// survives every parser's trip unchanged.
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
		if !utf8.Valid(m.Body) || jsonDepth(m.Body) > MaxBodyDepth {
			t.Fatalf("body %q accepted", m.Body)
		}
		u, err := url.Parse("http://h/parties/main/" + room)
		if err != nil || u.EscapedPath() != "/parties/main/"+room || u.Path != "/parties/main/"+room {
			t.Fatalf("room %q is not its own path segment: %v %v", room, u, err)
		}
	})
}
