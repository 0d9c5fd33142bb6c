package shadow

import (
	"strings"
	"testing"
)

// TestNewRedactionRefusesPathsOutsideBody pins the recorder's rule the
// gateway config reuses: a redact path must parse and start at body (the
// recorder only rewrites the body), so "name" is refused.
func TestNewRedactionRefusesPathsOutsideBody(t *testing.T) {
	tests := []struct {
		paths []string
		want  string // "" = valid
	}{
		{[]string{"body"}, ""},
		{[]string{"body.text", "body.items[*].token", `body["a.b"]`}, ""},
		{[]string{"name"}, `redactPaths[0]: path "name" must start with body`},
		{[]string{"body.text", "requestId"}, `redactPaths[1]: path "requestId" must start with body`},
		{[]string{"body..x"}, `redactPaths[0]: path "body..x": empty key`},
		{[]string{"[*]"}, "redactPaths[0]"},
	}
	for _, tt := range tests {
		_, err := NewRedaction(tt.paths)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("NewRedaction(%q) = %v, want nil", tt.paths, err)
		case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
			t.Errorf("NewRedaction(%q) = %v, want prefix %q", tt.paths, err, tt.want)
		}
	}
}
