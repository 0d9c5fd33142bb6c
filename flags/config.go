package flags

import (
	"errors"
	"fmt"
	"time"

	"github.com/switchyard/switchyard/broadcast"
)

// Flag keys. Each configured channel C has the string flag "realtime-C";
// events that match no channel use DefaultFlagKey.
const (
	// FlagPrefix starts every stage flag key.
	FlagPrefix = "realtime-"
	// KillSwitchKey is the boolean flag that forces legacy wherever it
	// evaluates true.
	KillSwitchKey = "realtime-killswitch"
	// DefaultFlagKey is the stage flag of broadcast.DefaultChannel.
	DefaultFlagKey = FlagPrefix + broadcast.DefaultChannel
)

// Provider names accepted in Config.Provider.
const (
	ProviderFile   = "file"
	ProviderFlagd  = "flagd"
	ProviderMemory = "memory"
	ProviderBlob   = "blob"
)

// Defaults applied by Config.WithDefaults. These are the gateway's defaults
// too: its config leaves them to this package.
const (
	// DefaultPollInterval is how often the file provider re-reads the flag
	// file; an edit takes effect within one interval plus evaluation.
	DefaultPollInterval = 500 * time.Millisecond
	// DefaultFlagdPort is flagd's sync port for in-process resolution.
	DefaultFlagdPort = 8015
	// DefaultCacheSize bounds the per-(app, channel, event, room) decision
	// cache of a Resolver.
	DefaultCacheSize = 50_000
	// DefaultCacheTTL is how often Resolver.Run drops the decision cache
	// even without a configuration-change event.
	DefaultCacheTTL = 10 * time.Second
)

// FlagKey returns the stage flag key of channel; "" and
// broadcast.DefaultChannel map to DefaultFlagKey.
func FlagKey(channel string) string {
	if channel == "" {
		channel = broadcast.DefaultChannel
	}
	return FlagPrefix + channel
}

// Config selects and configures the flag source. It is plain data, loaded
// from the gateway's configuration under "flags" and checked once at start
// with Validate.
type Config struct {
	// Provider is "file" (default: flagd's in-process evaluator fed from a
	// local flag file), "flagd" (in-process evaluator synced from a
	// standalone flagd) or "memory" (tests: the defaultVariant of each flag
	// in File, or legacy everywhere without File; no targeting).
	Provider string
	// File is the flagd flag definition file (JSON) for provider file.
	File string
	// Source is the flag document's URL for provider blob: s3://, gs://,
	// azblob:// or file:/// (see ParseBlobSource). Every replica of an
	// environment polls it every PollInterval.
	Source string
	// FlagdHost and FlagdPort address a standalone flagd's sync service
	// (port 8015 by default) for provider flagd.
	FlagdHost string
	FlagdPort int
	// FlagdTargetURI is a gRPC target (such as "envoy://localhost:9211/flagd-sync.service")
	// used instead of FlagdHost and FlagdPort when set.
	FlagdTargetURI string
	// Env is this deployment's environment, passed to targeting as "env".
	Env string
	// Channels are the configured channel names, without "default"; each
	// has a flag "realtime-<channel>".
	Channels []string
	// PollInterval is how often provider file re-reads the file, and
	// provider blob the object (default DefaultPollInterval).
	PollInterval time.Duration
	// CacheSize bounds the Resolver's decision cache (0: DefaultCacheSize;
	// negative: no cache, every decision is evaluated).
	CacheSize int
	// CacheTTL is how often Resolver.Run drops the decision cache (0:
	// DefaultCacheTTL). Provider events drop it sooner.
	CacheTTL time.Duration
}

// Validate reports every problem of c, each naming its field by its yaml
// name (the gateway config's key under "flags") without a package prefix (file: required for provider file;
// the caller adds its section, e.g. "flags."). It returns nil or an
// errors.Join of one error per problem. Channel names follow the one rule
// of broadcast.ValidateChannelName.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch c.Provider {
	case "", ProviderFile:
		if c.File == "" {
			add("file: required for provider file")
		}
	case ProviderFlagd:
		if c.FlagdHost == "" && c.FlagdTargetURI == "" {
			add("host: required for provider flagd (or targetUri)")
		}
		if c.FlagdPort < 0 || c.FlagdPort > 65535 {
			add("port: %d out of range 1-65535", c.FlagdPort)
		}
	case ProviderBlob:
		if c.Source == "" {
			add("source: required for provider blob (s3://, gs://, azblob:// or file:/// URL of the flag document)")
		} else if _, _, err := ParseBlobSource(c.Source); err != nil {
			add("source: %w", err)
		}
		if c.PollInterval != 0 && c.PollInterval < 100*time.Millisecond {
			add("pollInterval: %s is under 100ms (every replica reads the object store at that rate)", c.PollInterval)
		}
	case ProviderMemory:
	default:
		add("provider: unknown provider %q (want file, blob, flagd or memory)", c.Provider)
	}
	if c.Env == "" {
		add("env: required (targeting rules may select on env)")
	}
	seen := make(map[string]bool, len(c.Channels))
	for i, ch := range c.Channels {
		if err := broadcast.ValidateChannelName(ch); err != nil {
			add("channels[%d]: %w", i, err)
		} else if seen[ch] {
			add("channels[%d]: %q listed twice", i, ch)
		}
		seen[ch] = true
	}
	if c.PollInterval < 0 {
		add("pollInterval: %s is negative", c.PollInterval)
	}
	if c.CacheTTL < 0 {
		add("cacheTTL: %s is negative", c.CacheTTL)
	}
	return errors.Join(errs...)
}

// WithDefaults returns c with the zero fields set to their defaults:
// Provider ProviderFile, FlagdPort DefaultFlagdPort, PollInterval
// DefaultPollInterval, CacheSize DefaultCacheSize, CacheTTL DefaultCacheTTL.
// NewProvider and NewResolver apply it; a configuration loader that shows
// the effective values calls it instead of copying the constants.
func (c Config) WithDefaults() Config {
	if c.Provider == "" {
		c.Provider = ProviderFile
	}
	if c.FlagdPort == 0 {
		c.FlagdPort = DefaultFlagdPort
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	return c
}
