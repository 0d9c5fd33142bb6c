package flags

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/go-logr/logr"
	flagd "github.com/open-feature/go-sdk-contrib/providers/flagd/pkg"
	"github.com/open-feature/go-sdk/openfeature"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// flagd's provider (go-sdk-contrib providers/flagd v0.6.0) has two loggers:
//
//   - its own, a logr.Logger set with flagd.WithLogger; here a sink over
//     our zap logger (zapSink);
//   - the in-process service's (evaluator, sync sources), a zap logger it
//     builds itself in NewInProcessService on os.Stderr, JSON encoded, with
//     no option to pass ours: its lines ignored log.format and bypassed our
//     core.
//
// newFlagdProvider therefore points os.Stderr at a pipe while
// flagd.NewProvider builds that logger (the only moment it reads
// os.Stderr), and flagdProvider relays each JSON line it writes there
// through our logger: same level, message and fields, our encoder. The
// relay goroutine runs from the provider's Init to its Shutdown.

// stderrMu serialises the os.Stderr swap of newFlagdProvider: os.Stderr is
// process-global, so two providers built at once must not interleave
// their swaps.
var stderrMu sync.Mutex

// newFlagdProvider builds a flagd provider with opts whose log lines, both
// loggers', go through logger (named "flagd"). It starts nothing: the
// relay starts in Init and ends in Shutdown, which the OpenFeature API
// calls.
func newFlagdProvider(logger *zap.Logger, opts ...flagd.ProviderOption) (*flagdProvider, error) {
	logger = logger.Named("flagd")
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("flags: flagd log pipe: %w", err)
	}
	opts = append(opts, flagd.WithLogger(logr.New(zapSink{l: logger})))
	stderrMu.Lock()
	saved := os.Stderr
	os.Stderr = w
	p, err := flagd.NewProvider(opts...)
	os.Stderr = saved
	stderrMu.Unlock()
	if err != nil {
		_ = r.Close()
		_ = w.Close()
		return nil, err
	}
	return &flagdProvider{Provider: p, logger: logger, r: r, w: w, relayed: make(chan struct{})}, nil
}

// flagdProvider is flagd's provider with its in-process log lines relayed
// to our logger. Every method but Init and Shutdown is flagd's.
type flagdProvider struct {
	*flagd.Provider
	logger  *zap.Logger
	r, w    *os.File      // the pipe flagd's in-process logger writes to
	relayed chan struct{} // closed when the relay goroutine is done

	startOnce, stopOnce sync.Once
}

var (
	_ openfeature.FeatureProvider = (*flagdProvider)(nil)
	_ openfeature.StateHandler    = (*flagdProvider)(nil)
	_ openfeature.EventHandler    = (*flagdProvider)(nil)
)

// Init starts the relay of flagd's log lines, then initialises flagd's
// provider (see its Init: it blocks until the first flags are loaded or
// the deadline passes).
func (p *flagdProvider) Init(ec openfeature.EvaluationContext) error {
	p.startOnce.Do(func() {
		go func() {
			defer close(p.relayed)
			relayFlagdLines(p.r, p.logger)
		}()
	})
	return p.Provider.Init(ec)
}

// Shutdown shuts flagd's provider down, then ends the relay once it has
// logged every line flagd wrote. Lines flagd writes later are lost.
func (p *flagdProvider) Shutdown() {
	p.Provider.Shutdown()
	p.stopOnce.Do(func() {
		_ = p.w.Close()
		started := true
		p.startOnce.Do(func() { started = false })
		if started {
			<-p.relayed
		}
		_ = p.r.Close()
	})
}

// relayFlagdLines logs each line read from r through logger until r ends.
// A line that is a JSON object is logged with its level (at most error:
// flagd's panic and fatal levels must not stop us), message and fields;
// its time, logger name, caller and stack trace are dropped (ours apply).
// Any other line is logged at info as is.
func relayFlagdLines(r io.Reader, logger *zap.Logger) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		lvl, msg, fields, ok := decodeZapJSON(line)
		if !ok {
			lvl, msg, fields = zapcore.InfoLevel, string(line), nil
		}
		if ce := logger.Check(lvl, msg); ce != nil {
			ce.Write(fields...)
		}
	}
	// A line over 1 MiB, or a read error: keep draining so that flagd never
	// blocks on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

// decodeZapJSON decodes one line of zap's JSON encoder, fields in order.
func decodeZapJSON(line []byte) (lvl zapcore.Level, msg string, fields []zap.Field, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0, "", nil, false
	}
	lvl = zapcore.InfoLevel
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, "", nil, false
		}
		key, _ := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return 0, "", nil, false
		}
		switch key {
		case "level":
			s, _ := v.(string)
			if err := lvl.UnmarshalText([]byte(s)); err != nil {
				lvl = zapcore.InfoLevel
			}
		case "msg":
			msg, _ = v.(string)
		case "ts", "logger", "caller", "stacktrace":
		default:
			if n, isNum := v.(json.Number); isNum {
				if i, err := n.Int64(); err == nil {
					v = i
				} else if f, err := n.Float64(); err == nil {
					v = f
				}
			}
			fields = append(fields, zap.Any(key, v))
		}
	}
	return min(lvl, zapcore.ErrorLevel), msg, fields, true
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
