package flags

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/go-logr/logr"
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
