package flags

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	flagd "github.com/open-feature/go-sdk-contrib/providers/flagd/pkg"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/memprovider"
	"go.uber.org/zap"

	isync "github.com/open-feature/flagd/core/pkg/sync"

	"github.com/switchyard/switchyard/broadcast"
)

// ProviderOption adjusts NewProvider.
type ProviderOption func(*providerOptions)

type providerOptions struct {
	metrics       *Metrics
	startDeadline time.Duration
}

// WithMetrics makes the file provider report switchyard_flag_file_valid on
// m. Without it the gauge of no Metrics moves.
func WithMetrics(m *Metrics) ProviderOption {
	return func(o *providerOptions) { o.metrics = m }
}

// WithStartDeadline bounds the flagd provider's start (the first load of
// the flags: initialisation fails when they have not arrived within d) and
// each of its in-process evaluations; d is rounded down to the
// millisecond, and d < 1 ms keeps DefaultStartDeadline. Tests of a start
// that fails pass a short d and wait a multiple of it.
func WithStartDeadline(d time.Duration) ProviderOption {
	return func(o *providerOptions) { o.startDeadline = d }
}

// DefaultStartDeadline is the start deadline of NewProvider without
// WithStartDeadline. flagd's own default, 500 ms, fails the start of a
// gateway on a loaded machine; evaluation in process never needs it.
const DefaultStartDeadline = 5 * time.Second

// NewProvider builds the OpenFeature provider cfg selects. It does not
// start it: the caller hands it to openfeature.SetProviderAndWait (run.go,
// the only place that sets the process-global provider), which initialises
// it, and shuts it down through openfeature.Shutdown.
//
//   - "file": flagd's in-process evaluator (the real flagd provider, with
//     fractional, sem_ver, starts_with... targeting) fed by a validating
//     file source. The source re-reads cfg.File every cfg.PollInterval
//     (following symlinks, so ConfigMap "..data" swaps are seen), validates
//     each new content with ValidateFile against cfg.Channels and hands only
//     valid content to flagd: an invalid edit keeps the last good flags and
//     sets switchyard_flag_file_valid to 0. An invalid or missing file at
//     start makes initialisation fail with the validation error.
//   - "blob": flagd's in-process evaluator fed by flagd's own blob sync
//     source (gocloud.dev) polling cfg.Source every cfg.PollInterval, the
//     document shared by every replica of an environment; each content is
//     validated as for "file" before flagd sees it (blobSource).
//   - "flagd": flagd's in-process evaluator synced over gRPC from a
//     standalone flagd (cfg.FlagdHost:cfg.FlagdPort or cfg.FlagdTargetURI);
//     several gateway instances then share one flag source.
//   - "memory": an in-memory provider with the defaultVariant of each flag
//     of cfg.File (targeting ignored), or legacy everywhere and the kill
//     switch off without a file. For tests and local runs.
//
// logger receives the source's messages and, named "flagd", flagd's
// provider's own; nil means none. flagd's in-process service logs JSON to
// os.Stderr on its own (see flagdlog.go): the switchyard binary relays
// those lines through its logger. NewProvider touches no process state and
// may run concurrently.
func NewProvider(cfg Config, logger *zap.Logger, opts ...ProviderOption) (openfeature.FeatureProvider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("flags: config: %w", err)
	}
	cfg = cfg.WithDefaults()
	if logger == nil {
		logger = zap.NewNop()
	}
	o := providerOptions{startDeadline: DefaultStartDeadline}
	for _, opt := range opts {
		opt(&o)
	}
	if o.startDeadline < time.Millisecond {
		o.startDeadline = DefaultStartDeadline
	}
	deadlineMs := int(o.startDeadline / time.Millisecond)
	switch cfg.Provider {
	case ProviderFlagd:
		fo := []flagd.ProviderOption{
			flagd.WithInProcessResolver(),
			flagd.WithDeadline(deadlineMs),
			flagd.WithOfflineFilePath(""), // ignore FLAGD_OFFLINE_FLAG_SOURCE_PATH
		}
		if cfg.FlagdTargetURI != "" {
			fo = append(fo, flagd.WithTargetUri(cfg.FlagdTargetURI))
		} else {
			fo = append(fo, flagd.WithHost(cfg.FlagdHost), flagd.WithPort(uint16(cfg.FlagdPort)))
		}
		p, err := newFlagdProvider(logger, fo...)
		if err != nil {
			return nil, fmt.Errorf("flags: flagd provider: %w", err)
		}
		return p, nil
	case ProviderMemory:
		return newMemoryProvider(cfg)
	case ProviderBlob:
		src, err := newBlobSource(cfg.Source, cfg.Channels, cfg.PollInterval, o.metrics, logger.Named("flagsource"))
		if err != nil {
			return nil, fmt.Errorf("flags: source: %w", err)
		}
		p, err := newFlagdProvider(logger,
			flagd.WithInProcessResolver(),
			flagd.WithDeadline(deadlineMs),
			flagd.WithOfflineFilePath(""),
			flagd.WithCustomSyncProviderAndUri(src, cfg.Source),
		)
		if err != nil {
			return nil, fmt.Errorf("flags: flagd provider for %s: %w", cfg.Source, err)
		}
		return p, nil
	default:
		abs, err := filepath.Abs(cfg.File)
		if err != nil {
			return nil, fmt.Errorf("flags: flag file %s: %w", cfg.File, err)
		}
		src := newFileSource(abs, cfg.Channels, cfg.PollInterval, o.metrics, logger.Named("flagfile"))
		p, err := newFlagdProvider(logger,
			flagd.WithInProcessResolver(),
			flagd.WithDeadline(deadlineMs),
			flagd.WithOfflineFilePath(""), // the custom source below is the only one
			flagd.WithCustomSyncProviderAndUri(src, "file://"+abs),
		)
		if err != nil {
			return nil, fmt.Errorf("flags: flagd provider for %s: %w", cfg.File, err)
		}
		return p, nil
	}
}

func newMemoryProvider(cfg Config) (*memprovider.InMemoryProvider, error) {
	mem := make(map[string]memprovider.InMemoryFlag)
	stage := func(v string) memprovider.InMemoryFlag {
		vars := make(map[string]any, broadcast.NumStages)
		for _, s := range broadcast.Stages {
			vars[string(s)] = string(s)
		}
		return memprovider.InMemoryFlag{State: memprovider.Enabled, DefaultVariant: v, Variants: vars}
	}
	if cfg.File == "" {
		mem[KillSwitchKey] = memprovider.InMemoryFlag{
			State: memprovider.Enabled, DefaultVariant: "off",
			Variants: map[string]any{"on": true, "off": false},
		}
		mem[DefaultFlagKey] = stage(string(broadcast.StageLegacy))
		for _, ch := range cfg.Channels {
			mem[FlagKey(ch)] = stage(string(broadcast.StageLegacy))
		}
		return memprovider.NewInMemoryProvider(mem), nil
	}
	data, err := readLimited(cfg.File)
	if err != nil {
		return nil, err
	}
	f, err := ParseFile(data, cfg.Channels)
	if err != nil {
		return nil, fmt.Errorf("flags: %s: %w", cfg.File, err)
	}
	for key, fl := range f.Flags {
		vars := make(map[string]any, len(fl.Variants))
		for name, raw := range fl.Variants {
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, fmt.Errorf("flags: %s: flags.%s.variants.%s: %w", cfg.File, key, name, err)
			}
			vars[name] = v
		}
		state := memprovider.Enabled
		if fl.State == "DISABLED" {
			state = memprovider.Disabled
		}
		mem[key] = memprovider.InMemoryFlag{State: state, DefaultVariant: fl.DefaultVariant, Variants: vars}
	}
	return memprovider.NewInMemoryProvider(mem), nil
}

// fileSource is a flagd sync source (isync.ISync) that polls one flag file
// and forwards only content that passes ValidateFile. Polling (rather than
// inotify on the file) sees in-place edits, rename-over writes and
// ConfigMap symlink swaps alike, whether or not the old target is deleted.
type fileSource struct {
	path     string
	channels []string
	interval time.Duration
	metrics  *Metrics
	logger   *zap.Logger

	mu       sync.Mutex
	ready    bool
	seen     []byte // last content read, valid or not
	lastGood []byte // last content forwarded
	v        *schemaValidator
}

var _ isync.ISync = (*fileSource)(nil)

func newFileSource(path string, channels []string, interval time.Duration, m *Metrics, logger *zap.Logger) *fileSource {
	return &fileSource{path: path, channels: channels, interval: interval, metrics: m, logger: logger}
}

// Init reads and validates the file once; an unusable file fails the
// provider's initialisation.
func (s *fileSource) Init(context.Context) error {
	v, err := newSchemaValidator()
	if err != nil {
		return err
	}
	data, err := readLimited(s.path)
	if err != nil {
		s.setValid(false)
		return err
	}
	if _, err := v.parse(data, s.channels); err != nil {
		s.setValid(false)
		return fmt.Errorf("flags: %s: %w", s.path, err)
	}
	s.mu.Lock()
	s.v, s.seen, s.lastGood = v, data, data
	s.mu.Unlock()
	s.setValid(true)
	s.logger.Info("flag file loaded", zap.String("path", s.path))
	return nil
}

func (s *fileSource) setValid(ok bool) { s.metrics.setFileValid(ok) }

func (s *fileSource) send(ctx context.Context, out chan<- isync.DataSync, data []byte) bool {
	select {
	case out <- isync.DataSync{FlagData: string(data), Source: "file://" + s.path}:
		return true
	case <-ctx.Done():
		return false
	}
}

// Sync sends the content read by Init, then polls until ctx ends.
func (s *fileSource) Sync(ctx context.Context, out chan<- isync.DataSync) error {
	s.mu.Lock()
	first := s.lastGood
	s.mu.Unlock()
	if !s.send(ctx, out, first) {
		return nil
	}
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if data, ok := s.poll(); ok {
				if !s.send(ctx, out, data) {
					return nil
				}
			}
		}
	}
}

// poll reads the file and returns content to forward, if it changed and
// is valid.
func (s *fileSource) poll() ([]byte, bool) {
	data, err := readLimited(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.seen != nil {
			s.logger.Warn("flag file unreadable; keeping the last good flags", zap.String("path", s.path), zap.Error(err))
			s.setValid(false)
		}
		s.seen = nil
		return nil, false
	}
	if bytes.Equal(data, s.seen) {
		return nil, false
	}
	s.seen = data
	if _, err := s.v.parse(data, s.channels); err != nil {
		s.logger.Warn("flag file edit refused; keeping the last good flags", zap.String("path", s.path), zap.Error(err))
		s.setValid(false)
		return nil, false
	}
	s.setValid(true)
	if bytes.Equal(data, s.lastGood) {
		return nil, false
	}
	s.lastGood = data
	s.logger.Info("flag file changed", zap.String("path", s.path))
	return data, true
}

// ReSync sends the last good content again.
func (s *fileSource) ReSync(ctx context.Context, out chan<- isync.DataSync) error {
	s.mu.Lock()
	data := s.lastGood
	s.mu.Unlock()
	if data != nil {
		s.send(ctx, out, data)
	}
	return nil
}

// IsReady reports whether the first content was sent.
func (s *fileSource) IsReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}
