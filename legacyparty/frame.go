package legacyparty

import (
	"encoding/json"

	"github.com/gorilla/websocket"
)

// Skip reasons counted by upstream.Metrics.FrameSkipped("legacy", reason).
const (
	SkipBinary    = "binary"     // a binary frame (Yjs and the like)
	SkipNotJSON   = "not_json"   // a text frame that is not JSON ("{id}: {msg}" relays)
	SkipNotObject = "not_object" // valid JSON, but not an object (no envelope)
)

// classifyFrame decides whether a frame received from PartyKit is a JSON
// envelope candidate. It returns "" for a usable frame and otherwise the
// skip reason. data is not retained.
func classifyFrame(messageType int, data []byte) string {
	if messageType != websocket.TextMessage {
		return SkipBinary
	}
	i := 0
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	if i == len(data) || data[i] != '{' {
		if json.Valid(data) {
			return SkipNotObject
		}
		return SkipNotJSON
	}
	if !json.Valid(data) {
		return SkipNotJSON
	}
	return ""
}
