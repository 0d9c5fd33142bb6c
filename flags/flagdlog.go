package flags

import (
	"github.com/go-logr/logr"
	flagd "github.com/open-feature/go-sdk-contrib/providers/flagd/pkg"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// flagd's provider (go-sdk-contrib providers/flagd v0.6.0) has two loggers:
//
//   - its own, a logr.Logger set with flagd.WithLogger: here a sink over
//     our zap logger (zapSink), so its lines follow log.format;
//   - the in-process service's (evaluator, sync sources), a zap logger it
//     builds itself on os.Stderr, JSON encoded, with no option to pass
//     ours. Redirecting os.Stderr from here would be process-global state
//     set outside main (and a data race with every zap.New); instead the
//     switchyard binary's main points os.Stderr at a pipe before anything
//     runs and relays those JSON lines through the process logger
//     (gateway.RelayJSONLines), so serve's output follows log.format.

// newFlagdProvider builds a flagd provider with opts whose own logger is
// logger (named "flagd").
func newFlagdProvider(logger *zap.Logger, opts ...flagd.ProviderOption) (*flagd.Provider, error) {
	opts = append(opts, flagd.WithLogger(logr.New(zapSink{l: logger.Named("flagd")})))
	return flagd.NewProvider(opts...)
}

// zapSink is a logr.LogSink over a zap logger, for flagd.WithLogger:
// V-level 0 logs at info, higher ones at debug.
type zapSink struct{ l *zap.Logger }

var _ logr.LogSink = zapSink{}

func (zapSink) Init(logr.RuntimeInfo) {}

func zapLevel(v int) zapcore.Level {
	if v <= 0 {
		return zapcore.InfoLevel
	}
	return zapcore.DebugLevel
}

func (s zapSink) Enabled(level int) bool { return s.l.Core().Enabled(zapLevel(level)) }

func (s zapSink) Info(level int, msg string, kv ...any) {
	s.l.Sugar().Logw(zapLevel(level), msg, kv...)
}

func (s zapSink) Error(err error, msg string, kv ...any) {
	s.l.Sugar().Errorw(msg, append(kv, zap.Error(err))...)
}

func (s zapSink) WithValues(kv ...any) logr.LogSink {
	return zapSink{l: s.l.Sugar().With(kv...).Desugar()}
}

func (s zapSink) WithName(name string) logr.LogSink { return zapSink{l: s.l.Named(name)} }
