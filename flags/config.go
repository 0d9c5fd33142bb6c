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
)

// Defaults applied by Config.withDefaults.
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
	// PollInterval is how often provider file re-reads the file (default
	// DefaultPollInterval).
	PollInterval time.Duration
	// CacheSize bounds the Resolver's decision cache (0: DefaultCacheSize;
	// negative: no cache, every decision is evaluated).
	CacheSize int
	// CacheTTL is how often Resolver.Run drops the decision cache (0:
	// DefaultCacheTTL). Provider events drop it sooner.
	CacheTTL time.Duration
}

// Validate reports every problem of c, each naming its field.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch c.Provider {
	case "", ProviderFile:
		if c.File == "" {
			add("flags.file: required for provider file")
		}
	case ProviderFlagd:
		if c.FlagdHost == "" && c.FlagdTargetURI == "" {
			add("flags.flagdHost: required for provider flagd (or flags.flagdTargetUri)")
		}
		if c.FlagdPort < 0 || c.FlagdPort > 65535 {
			add("flags.flagdPort: %d out of range 1-65535", c.FlagdPort)
		}
	case ProviderMemory:
	default:
		add("flags.provider: unknown provider %q (want file, flagd or memory)", c.Provider)
	}
	if c.Env == "" {
		add("flags.env: required (targeting rules may select on env)")
	}
	seen := make(map[string]bool, len(c.Channels))
	for i, ch := range c.Channels {
		switch {
		case ch == "":
			add("flags.channels[%d]: empty channel name", i)
		case ch == broadcast.DefaultChannel:
			add("flags.channels[%d]: %q is implicit and must not be listed", i, ch)
		case ch == "killswitch":
			add("flags.channels[%d]: %q collides with the kill switch flag %s", i, ch, KillSwitchKey)
		case !validKeyPart(ch):
			add("flags.channels[%d]: %q must be 1-64 characters of a-z, 0-9, '-', '_' or '.'", i, ch)
		case seen[ch]:
			add("flags.channels[%d]: %q listed twice", i, ch)
		}
		seen[ch] = true
	}
	if c.PollInterval < 0 {
		add("flags.pollInterval: %s is negative", c.PollInterval)
	}
	if c.CacheTTL < 0 {
		add("flags.cacheTTL: %s is negative", c.CacheTTL)
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
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

func validKeyPart(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}
