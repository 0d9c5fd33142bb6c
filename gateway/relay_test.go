package gateway

import (
	"reflect"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestRelayJSONLines(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	in := strings.Join([]string{
		`{"level":"info","ts":"2026-01-01T00:00:00Z","msg":"hello","source":"file://x","n":3}`,
		`{"level":"fatal","ts":"2026-01-01T00:00:00Z","msg":"would exit","stacktrace":"goroutine 1"}`,
		`{"level":"warn","msg":"warned","logger":"theirs","caller":"x.go:1"}`,
		`not json`,
		``,
	}, "\n")
	l := zap.New(core)
	RelayJSONLines(strings.NewReader(in), func() *zap.Logger { return l })
	type entry struct {
		level  zapcore.Level
		msg    string
		fields map[string]any
	}
	want := []entry{
		{zapcore.InfoLevel, "hello", map[string]any{"source": "file://x", "n": int64(3)}},
		{zapcore.ErrorLevel, "would exit", map[string]any{}},
		{zapcore.WarnLevel, "warned", map[string]any{}},
		{zapcore.InfoLevel, "not json", map[string]any{}},
	}
	got := logs.AllUntimed()
	if len(got) != len(want) {
		t.Fatalf("entries: got %d, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := entry{got[i].Level, got[i].Message, got[i].ContextMap()}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("entry %d: got %+v, want %+v", i, g, w)
		}
	}
}
