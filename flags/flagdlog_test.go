package flags

import (
	"errors"
	"testing"

	"github.com/go-logr/logr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

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
