package broadcast

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// MaxRoomLen is the longest room id, in bytes, that maps one-to-one onto a
// PartyKit room and an Inngest Realtime channel.
const MaxRoomLen = 256

// MaxRealtimeBody is the largest payload Inngest Realtime passes through
// unchanged; above it the server truncates silently, so nothing larger may be
// forwarded (shared/protocols.md).
const MaxRealtimeBody = 512 << 10

// MaxBodyDepth is the deepest nesting of arrays and objects a body may
// have (the body itself at depth 1). A deeper body is refused before it is
// forwarded: PartyKit's server answers 500 to a body nested 9,000 levels
// (its JSON handling gives up), and nothing an app sends as a notification
// needs more than a few levels.
const MaxBodyDepth = 64

// DefaultChannel is the channel name of events that match no configured
// channel; its flag key is "realtime-default".
const DefaultChannel = "default"

// Message is one accepted broadcast. It is built once by NewMessage, which
// validates it and renders its envelope, and is read-only afterwards: every
// transport and the comparator may read it concurrently.
type Message struct {
	// App is the configured app that sent the message.
	App string
	// Room is the validated room id (see ValidateRoom).
	Room string
	// Name is the event name, such as "video.asset.ready".
	Name string
	// Channel is the configured channel Name belongs to, or DefaultChannel.
	Channel string
	// RequestID identifies the message for idempotency and shadow matching.
	RequestID string
	// IdempotencyKey, when not empty, makes the adapter refuse a second
	// message of the same App with the same key inside the idempotency
	// window. The broadcast API sets it to RequestID; the PartyKit-compatible
	// path leaves it empty, because apps reuse requestId as a correlation id
	// there (every streamed ai.message chunk of one answer carries the same
	// requestId).
	IdempotencyKey string
	// Party is the PartyKit party name the drop-in path named; empty means
	// the app's configured party.
	Party string
	// Body is the caller's JSON value, kept as received (never re-encoded).
	Body json.RawMessage
	// Envelope is the exact bytes published to both transports:
	// {"body":<Body>,"requestId":"...","name":"..."}, the object apps send
	// PartyKit today, so a browser handler works unchanged on either side.
	Envelope []byte
	// AcceptedAt is when the gateway accepted the message.
	AcceptedAt time.Time
	// Seq is the acceptance sequence number assigned by the adapter: it
	// increases strictly, in acceptance order, among the messages of one
	// room (it is drawn from one adapter-wide counter, so it has gaps per
	// room and never restarts); zero until the adapter accepts the message.
	Seq uint64
	// Sequence is set by the adapter for an app configured as sequenced
	// (Config.Sequenced), under the room's lock, before the message is
	// shared: the room's own gap-free number, and the "sy" member that
	// Envelope then carries. Nil for other apps.
	Sequence *Sequence
}

// NewMessage validates the parts of a message and renders its envelope. body
// must be a valid JSON value, valid UTF-8 and nested at most MaxBodyDepth
// levels; room must pass ValidateRoom; name and requestID must be non-empty
// valid UTF-8. The returned error is an *Error with code EINVALID or EROOM
// naming the field (ETOOLARGE for an envelope over MaxRealtimeBody).
func NewMessage(app, room, name, requestID string, body json.RawMessage, channel string, acceptedAt time.Time) (*Message, error) {
	if err := ValidateRoom(room); err != nil {
		return nil, err
	}
	if name == "" {
		return nil, Errorf(EINVALID, "name: required")
	}
	if len(name) > 256 || !utf8.ValidString(name) {
		return nil, Errorf(EINVALID, "name: must be valid UTF-8 of at most 256 bytes")
	}
	if requestID == "" {
		return nil, Errorf(EINVALID, "requestId: required")
	}
	if len(requestID) > 256 || !utf8.ValidString(requestID) {
		return nil, Errorf(EINVALID, "requestId: must be valid UTF-8 of at most 256 bytes")
	}
	if len(body) == 0 {
		return nil, Errorf(EINVALID, "body: required")
	}
	if !json.Valid(body) {
		return nil, Errorf(EINVALID, "body: not valid JSON")
	}
	if !utf8.Valid(body) {
		return nil, Errorf(EINVALID, "body: not valid UTF-8")
	}
	if d := jsonDepth(body); d > MaxBodyDepth {
		return nil, Errorf(EINVALID, "body: nested %d levels deep, more than %d", d, MaxBodyDepth)
	}
	if channel == "" {
		channel = DefaultChannel
	}
	m := &Message{
		App: app, Room: room, Name: name, Channel: channel, RequestID: requestID,
		Body: body, AcceptedAt: acceptedAt,
	}
	m.Envelope = AppendEnvelope(make([]byte, 0, len(body)+len(requestID)+len(name)+40), body, requestID, name)
	if len(m.Envelope) > MaxRealtimeBody {
		return nil, Errorf(ETOOLARGE, "message envelope is %d bytes, over the %d byte limit of the realtime transport", len(m.Envelope), MaxRealtimeBody)
	}
	return m, nil
}

// jsonDepth returns the deepest nesting of arrays and objects in b, a valid
// JSON value (a scalar is depth 0). It allocates nothing.
func jsonDepth(b []byte) int {
	depth, deepest, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++ // the escaped byte cannot end the string
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
			deepest = max(deepest, depth)
		case ']', '}':
			depth--
		}
	}
	return deepest
}

// AppendEnvelope appends {"body":body,"requestId":requestID,"name":name} to
// dst. body must already be valid JSON; it is copied byte for byte.
func AppendEnvelope(dst []byte, body json.RawMessage, requestID, name string) []byte {
	dst = append(dst, `{"body":`...)
	dst = append(dst, body...)
	dst = append(dst, `,"requestId":`...)
	dst = appendJSONString(dst, requestID)
	dst = append(dst, `,"name":`...)
	dst = appendJSONString(dst, name)
	return append(dst, '}')
}

func appendJSONString(dst []byte, s string) []byte {
	simple := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x7f || c == '<' || c == '>' || c == '&' {
			simple = false
			break
		}
	}
	if simple {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, err := json.Marshal(s)
	if err != nil { // unreachable for a string; keep a valid document regardless
		return strconv.AppendQuote(dst, s)
	}
	return append(dst, b...)
}

// RoomPunctuation are the characters other than ASCII letters and digits
// a room id may hold: RFC 3986's unreserved and sub-delims characters and
// ':' and '@', i.e. a path segment's characters without percent-encoding.
const RoomPunctuation = "-._~!$&'()*+,;=:@"

// roomBytes[c] says whether byte c may appear in a room id.
var roomBytes = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for i := 0; i < len(RoomPunctuation); i++ {
		t[RoomPunctuation[i]] = true
	}
	return t
}()

// RoomByte reports whether c may appear in a room id (see ValidateRoom).
func RoomByte(c byte) bool { return roomBytes[c] }

// ValidateRoom is the one rule for a room id, on every path that names a
// room (the broadcast API, the PartyKit-compatible drop-in path, the token
// endpoint, the watchers, replay): 1 to MaxRoomLen bytes, each an ASCII
// letter or digit or one of RoomPunctuation, and not "." or "..".
//
// The rule makes the room id its own path segment: these are exactly the
// characters that every URL parser on the way leaves as they are in a path
// (Go's net/url, the WHATWG parser of browsers and of PartyKit's workerd,
// RFC 3986), so a browser's partysocket URL, an app's direct POST to
// PartyKit, the drop-in path (whose raw last segment is the id) and the
// gateway's own publish all write the id unescaped and name one PartyKit
// room, and the Inngest channel carries the id as is. Characters that some
// parser escapes or rewrites (space, '"', '<', '>', '\', '^', '`', '{',
// '|', '}', '[', ']', '%', non-ASCII) would make one id name two rooms, and
// are refused. The error is an *Error with code EROOM naming the first
// offending byte.
func ValidateRoom(room string) error {
	if room == "" {
		return Errorf(EROOM, "room: required")
	}
	if len(room) > MaxRoomLen {
		return Errorf(EROOM, "room: %d bytes, longer than %d", len(room), MaxRoomLen)
	}
	if room == "." || room == ".." {
		return Errorf(EROOM, "room: %q is not a usable path segment", room)
	}
	for i := 0; i < len(room); i++ {
		c := room[i]
		switch {
		case roomBytes[c]:
		case c <= 0x20 || c >= 0x7f:
			return Errorf(EROOM, "room: byte %d is whitespace, a control character or not ASCII (allowed: letters, digits and %s)", i, RoomPunctuation)
		default:
			return Errorf(EROOM, "room: character %q at byte %d is not allowed (allowed: letters, digits and %s)", c, i, RoomPunctuation)
		}
	}
	return nil
}

// Envelope is the decoded form of the wire envelope, for subscribers and
// tests. Body stays raw.
type Envelope struct {
	Body      json.RawMessage `json:"body"`
	RequestID string          `json:"requestId"`
	Name      string          `json:"name"`
	// Sy is present in the envelopes of sequenced apps.
	Sy *Sequence `json:"sy,omitempty"`
}

// DecodeEnvelope parses a frame received from either transport. It fails
// when the frame is not a JSON object or lacks a string requestId.
func DecodeEnvelope(b []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return Envelope{}, fmt.Errorf("broadcast: decode envelope: %w", err)
	}
	if e.RequestID == "" {
		return Envelope{}, fmt.Errorf("broadcast: decode envelope: requestId missing")
	}
	return e, nil
}
