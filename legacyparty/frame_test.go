package legacyparty

import (
	"encoding/json"
	"testing"

	"github.com/gorilla/websocket"
)

func TestClassifyFrame(t *testing.T) {
	tests := []struct {
		name string
		typ  int
		data string
		want string
	}{
		{"envelope", websocket.TextMessage, `{"body":1,"requestId":"r","name":"n"}`, ""},
		{"object with whitespace", websocket.TextMessage, " \n{\"a\":1} ", ""},
		{"binary", websocket.BinaryMessage, `{"a":1}`, SkipBinary},
		{"relay text", websocket.TextMessage, `abc: hello`, SkipNotJSON},
		{"broken object", websocket.TextMessage, `{"a":`, SkipNotJSON},
		{"empty", websocket.TextMessage, ``, SkipNotJSON},
		{"string", websocket.TextMessage, `"x"`, SkipNotObject},
		{"array", websocket.TextMessage, `[1]`, SkipNotObject},
		{"number", websocket.TextMessage, `12`, SkipNotObject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classifyFrame(tt.typ, []byte(tt.data)); got != tt.want {
				t.Errorf("classifyFrame(%q) = %q, want %q", tt.data, got, tt.want)
			}
		})
	}
}

func FuzzClassifyFrame(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `x: y`, `[]`, ``, " {}", `{"a":"\ud800"}`, "{\xff}"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, data string, text bool) {
		typ := websocket.BinaryMessage
		if text {
			typ = websocket.TextMessage
		}
		got := classifyFrame(typ, []byte(data))
		switch {
		case !text && got != SkipBinary:
			t.Fatalf("binary frame classified %q", got)
		case got == "":
			var obj map[string]json.RawMessage
			if err := json.Unmarshal([]byte(data), &obj); err != nil || obj == nil {
				t.Fatalf("accepted %q, which is not a JSON object: %v", data, err)
			}
		case text && got == SkipNotJSON && json.Valid([]byte(data)):
			t.Fatalf("valid JSON %q classified not_json", data)
		case text && got == SkipNotObject && !json.Valid([]byte(data)):
			t.Fatalf("invalid JSON %q classified not_object", data)
		}
	})
}
