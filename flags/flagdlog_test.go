package flags

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// captureStderr points os.Stderr at a pipe until the returned func is
// called, which restores it and returns what was written.
func captureStderr(t *testing.T) (restore func() string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		_ = r.Close()
		got <- string(b)
	}()
	var once sync.Once
	var out string
	restore = func() string {
		once.Do(func() {
			os.Stderr = saved
			_ = w.Close()
			out = <-got
		})
		return out
	}
	t.Cleanup(func() { restore() })
	return restore
}

// flagd's in-process evaluator logs through our logger, in our format:
// with log.format console, nothing reaches os.Stderr and flagd's lines
// are console lines in our output.
func TestFlagdLogsThroughOurLogger(t *testing.T) {
	restore := captureStderr(t)
	var out syncBuffer
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeLevel = zapcore.CapitalLevelEncoder
	logger := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(ec), zapcore.AddSync(&out), zapcore.DebugLevel))

	path := filepath.Join(t.TempDir(), "flags.json")
	mustWrite(t, path, stagesDoc(t, "off", nil))
	cfg := Config{Provider: ProviderFile, File: path, Env: "dev", Channels: testChannels, PollInterval: 20 * time.Millisecond}
	p, err := NewProvider(cfg, logger)
	if err != nil {
		t.Fatalf("NewProvider: %v", err)
	}
	api := isolated.NewAPI()
	if err := api.SetProviderAndWait(context.Background(), p); err != nil {
		t.Fatalf("SetProviderAndWait: %v", err)
	}
	client := api.NewClient()
	// An edit flagd applies, and one the file source refuses.
	mustWrite(t, path, stagesDoc(t, "off", map[string]string{"ai-stream": "dual"}))
	waitFor(t, 5*time.Second, "the edit to reach flagd", func() bool {
		v, _ := client.StringValue(context.Background(), FlagKey("ai-stream"), "legacy", openfeature.NewTargetlessEvaluationContext(nil))
		return v == "dual"
	})
	mustWrite(t, path, []byte(`{"flags": {`))
	waitFor(t, 5*time.Second, "the bad edit to be refused", func() bool { return strings.Contains(out.String(), "edit refused") })
	if err := api.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	if stderr := restore(); stderr != "" {
		t.Errorf("written to os.Stderr:\n%s", stderr)
	}
	var flagdLines []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "InProcess service") {
			flagdLines = append(flagdLines, line)
		}
	}
	if len(flagdLines) == 0 {
		t.Fatalf("no flagd line in our output:\n%s", out.String())
	}
	for _, line := range flagdLines {
		if strings.HasPrefix(line, "{") || !strings.Contains(line, "\tINFO\t") {
			t.Errorf("flagd line not in our console format: %s", line)
		}
	}
}

func TestRelayFlagdLines(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	in := strings.Join([]string{
		`{"level":"info","ts":"2026-01-01T00:00:00Z","msg":"hello","source":"file://x","n":3}`,
		`{"level":"fatal","ts":"2026-01-01T00:00:00Z","msg":"would exit","stacktrace":"goroutine 1"}`,
		`{"level":"warn","msg":"warned","logger":"theirs","caller":"x.go:1"}`,
		`not json`,
		``,
	}, "\n")
	relayFlagdLines(strings.NewReader(in), zap.New(core))
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

func TestZapSink(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	l := logr.New(zapSink{l: zap.New(core)}).WithName("provider").WithValues("k", "v")
	l.Info("shown", "a", 1)
	l.V(1).Info("debug, not shown")
	l.Error(errors.New("boom"), "failed", "b", 2)
	got := logs.AllUntimed()
	if len(got) != 2 {
		t.Fatalf("entries: got %d, want 2: %+v", len(got), got)
	}
	if e := got[0]; e.Level != zapcore.InfoLevel || e.Message != "shown" || e.LoggerName != "provider" ||
		e.ContextMap()["k"] != "v" || e.ContextMap()["a"] != int64(1) {
		t.Errorf("info entry: %+v %v", e, e.ContextMap())
	}
	if e := got[1]; e.Level != zapcore.ErrorLevel || e.ContextMap()["error"] != "boom" {
		t.Errorf("error entry: %+v %v", e, e.ContextMap())
	}
}
