// Package config loads and validates the gateway's YAML configuration. A
// Config is loaded once at start by Load, validated as a whole, and read-only
// afterwards; a bad config stops the start with errors that name the field
// (`apps.ai-hero.party.url: missing scheme`). Secrets are expanded from the
// environment and never printed: Redacted returns the copy that logs and
// `config check` may show.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole gateway configuration. See docs/configuration.md for
// every key.
type Config struct {
	Env       string               `yaml:"env"`
	Listen    string               `yaml:"listen"`
	Admin     Admin                `yaml:"admin"`
	Log       Log                  `yaml:"log"`
	Flags     Flags                `yaml:"flags"`
	Channels  []Channel            `yaml:"channels"`
	Apps      map[string]App       `yaml:"apps"`
	Shadow    Shadow               `yaml:"shadow"`
	Server    Server               `yaml:"server"`
	Upstream  Upstream             `yaml:"upstream"`
	Multicast Multicast            `yaml:"multicast"`
	Record    Record               `yaml:"record"`
	Extra     map[string]yaml.Node `yaml:",inline"`
}

// Admin is the separate admin listener (metrics, health, admin API).
type Admin struct {
	Listen string `yaml:"listen"`
	// Token, when set, is required as a bearer token on every admin
	// endpoint but /healthz and /readyz. Secret.
	Token string `yaml:"token"`
}

// Log selects the zap logger.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // console or json
}

// Flags selects the OpenFeature provider.
type Flags struct {
	Provider     string        `yaml:"provider"` // file (default), flagd, memory
	File         string        `yaml:"file"`
	Host         string        `yaml:"host"`
	Port         int           `yaml:"port"`
	TargetURI    string        `yaml:"targetUri"`
	PollInterval time.Duration `yaml:"pollInterval"`
}

// Channel groups event names under one flag (`realtime-<name>`) and one
// realtime topic.
type Channel struct {
	Name   string   `yaml:"name"`
	Events []string `yaml:"events"`
	// SampleRate overrides shadow.sampleRate for this channel (0..1).
	SampleRate *float64 `yaml:"sampleRate"`
	// Timeout overrides shadow.timeout for this channel.
	Timeout time.Duration `yaml:"timeout"`
	// IgnorePaths are JSON paths the comparator does not compare.
	IgnorePaths []string `yaml:"ignorePaths"`
	// RedactPaths are JSON paths replaced by "[redacted]" in logs and
	// mismatch samples.
	RedactPaths []string `yaml:"redactPaths"`
}

// App is one sending app and its upstreams.
type App struct {
	// APIKeys are plain API keys (usually ${ENV} references). Secret.
	APIKeys []string `yaml:"apiKeys"`
	// APIKeySHA256 are hex SHA-256 digests of API keys, for configs that
	// must not hold the keys themselves.
	APIKeySHA256 []string `yaml:"apiKeySha256"`
	// DropIn guards the PartyKit-compatible path /apps/{app}/party/...
	DropIn   DropIn   `yaml:"dropIn"`
	Party    Party    `yaml:"party"`
	Realtime Realtime `yaml:"realtime"`
	// RateLimit bounds this app's publishes; zero PerSecond is unlimited.
	RateLimit RateLimit `yaml:"rateLimit"`
	// GrantSecret signs the room grants browsers present to
	// GET /v1/realtime/token. Secret. Empty disables that path.
	GrantSecret string `yaml:"grantSecret"`
	// Origins are the browser origins allowed by CORS on the token path.
	Origins []string `yaml:"origins"`
}

// DropIn is the optional shared secret of the PartyKit-compatible path.
type DropIn struct {
	Header string `yaml:"header"` // default X-Switchyard-Secret when Secret is set
	Secret string `yaml:"secret"` // Secret
}

// Party is the app's PartyKit upstream.
type Party struct {
	URL          string `yaml:"url"`
	Party        string `yaml:"party"`
	PathPrefix   string `yaml:"pathPrefix"`
	SecretHeader string `yaml:"secretHeader"`
	Secret       string `yaml:"secret"` // Secret
}

// Realtime is the app's Inngest Realtime upstream.
type Realtime struct {
	URL                string            `yaml:"url"`
	SigningKey         string            `yaml:"signingKey"`         // Secret
	FallbackSigningKey string            `yaml:"fallbackSigningKey"` // Secret
	Channel            string            `yaml:"channel"`            // template: {room} {app} {channel}
	Topics             map[string]string `yaml:"topics"`             // channel name -> topic
}

// RateLimit is a token bucket.
type RateLimit struct {
	PerSecond float64 `yaml:"perSecond"`
	Burst     int     `yaml:"burst"`
}

// Shadow configures the comparator.
type Shadow struct {
	SampleRate float64       `yaml:"sampleRate"`
	Timeout    time.Duration `yaml:"timeout"`
	IdleTTL    time.Duration `yaml:"idleTTL"`
	MaxRooms   int           `yaml:"maxRooms"`
	MaxPending int           `yaml:"maxPending"`
	Window     time.Duration `yaml:"window"`
}

// Server holds the HTTP server limits of both listeners.
type Server struct {
	ReadHeaderTimeout time.Duration `yaml:"readHeaderTimeout"`
	ReadTimeout       time.Duration `yaml:"readTimeout"`
	WriteTimeout      time.Duration `yaml:"writeTimeout"`
	IdleTimeout       time.Duration `yaml:"idleTimeout"`
	MaxHeaderBytes    int           `yaml:"maxHeaderBytes"`
	MaxBodyBytes      int64         `yaml:"maxBodyBytes"`
	ShutdownTimeout   time.Duration `yaml:"shutdownTimeout"`
}

// Upstream is the deadline and retry policy shared by both transports.
type Upstream struct {
	Timeout         time.Duration `yaml:"timeout"`
	AttemptTimeout  time.Duration `yaml:"attemptTimeout"`
	MaxAttempts     int           `yaml:"maxAttempts"`
	BackoffBase     time.Duration `yaml:"backoffBase"`
	BackoffMax      time.Duration `yaml:"backoffMax"`
	MaxConnsPerHost int           `yaml:"maxConnsPerHost"`
}

// Multicast sizes the off-path side and the idempotency window.
type Multicast struct {
	OffPathQueue    int           `yaml:"offPathQueue"`
	OffPathWorkers  int           `yaml:"offPathWorkers"`
	OffPathTimeout  time.Duration `yaml:"offPathTimeout"`
	DedupWindow     time.Duration `yaml:"dedupWindow"`
	DedupMaxEntries int           `yaml:"dedupMaxEntries"`
}

// Record configures the opt-in traffic recorder.
type Record struct {
	File        string   `yaml:"file"`
	MaxBytes    int64    `yaml:"maxBytes"`
	RedactPaths []string `yaml:"redactPaths"`
}

// MaxBodyLimit is the largest allowed server.maxBodyBytes: what realtime
// accepts, less room for the envelope around the body.
const MaxBodyLimit = 512<<10 - 1024

// Load reads the YAML file at path, expands ${VAR} and ${VAR:-default} from
// getenv in every scalar, applies defaults and validates. The error lists
// every problem found, each naming its field.
func Load(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data, getenv)
	if err != nil {
		return nil, err
	}
	// A relative flag file is relative to the config file, so a config and
	// its flags can be mounted together anywhere.
	if c.Flags.File != "" && !filepath.IsAbs(c.Flags.File) {
		c.Flags.File = filepath.Join(filepath.Dir(path), c.Flags.File)
	}
	return c, nil
}

// Parse is Load on bytes.
func Parse(data []byte, getenv func(string) string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(root.Content) == 0 {
		return nil, errors.New("config: empty document")
	}
	var errs []error
	expandNode(root.Content[0], "", getenv, &errs)
	if len(errs) > 0 {
		return nil, fmt.Errorf("config: %w", errors.Join(errs...))
	}
	expanded, err := yaml.Marshal(root.Content[0])
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &c, nil
}

var varRe = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandNode expands variables in scalar values (never in keys), recording
// one error per unset variable without a default, named by its field path.
func expandNode(n *yaml.Node, path string, getenv func(string) string, errs *[]error) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			expandNode(n.Content[i+1], join(path, n.Content[i].Value), getenv, errs)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			expandNode(c, fmt.Sprintf("%s[%d]", path, i), getenv, errs)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return
		}
		n.Value = varRe.ReplaceAllStringFunc(n.Value, func(m string) string {
			sub := varRe.FindStringSubmatch(m)
			v := getenv(sub[1])
			if v != "" {
				return v
			}
			if sub[2] != "" {
				return sub[3]
			}
			*errs = append(*errs, fmt.Errorf("%s: environment variable %s is not set and has no default", path, sub[1]))
			return ""
		})
		// An expanded value is data, not YAML: keep it a string.
		n.Tag = "!!str"
		if n.Value == "" || looksNonString(n.Value) {
			n.Style = yaml.DoubleQuotedStyle
		}
	}
}

func looksNonString(s string) bool {
	return s != strings.TrimSpace(s) || strings.ContainsAny(s, ":#{}[],&*!|>'\"%@`")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (c *Config) applyDefaults() {
	if c.Env == "" {
		c.Env = "dev"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = "127.0.0.1:9091"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "console"
		if c.Env == "staging" || c.Env == "prod" {
			c.Log.Format = "json"
		}
	}
	if c.Flags.Provider == "" {
		c.Flags.Provider = "file"
	}
	if c.Flags.PollInterval == 0 {
		c.Flags.PollInterval = time.Second
	}
	for name, a := range c.Apps {
		// An empty key is an unset rotation slot (${NEXT_KEY:-}): ignore it.
		a.APIKeys = slices.DeleteFunc(slices.Clone(a.APIKeys), func(k string) bool { return k == "" })
		if a.Party.Party == "" {
			a.Party.Party = "main"
		}
		if a.Party.PathPrefix == "" {
			a.Party.PathPrefix = "/parties"
		}
		if a.Party.Secret != "" && a.Party.SecretHeader == "" {
			a.Party.SecretHeader = "X-Party-Secret"
		}
		if a.DropIn.Secret != "" && a.DropIn.Header == "" {
			a.DropIn.Header = "X-Switchyard-Secret"
		}
		if a.Realtime.Channel == "" {
			a.Realtime.Channel = "{room}"
		}
		if a.RateLimit.PerSecond > 0 && a.RateLimit.Burst == 0 {
			a.RateLimit.Burst = int(a.RateLimit.PerSecond) + 1
		}
		c.Apps[name] = a
	}
	s := &c.Shadow
	if s.Timeout == 0 {
		s.Timeout = 5 * time.Second
	}
	if s.IdleTTL == 0 {
		s.IdleTTL = 5 * time.Minute
	}
	if s.MaxRooms == 0 {
		s.MaxRooms = 10000
	}
	if s.MaxPending == 0 {
		s.MaxPending = 100000
	}
	if s.Window == 0 {
		s.Window = 15 * time.Minute
	}
	v := &c.Server
	if v.ReadHeaderTimeout == 0 {
		v.ReadHeaderTimeout = 5 * time.Second
	}
	if v.ReadTimeout == 0 {
		v.ReadTimeout = 15 * time.Second
	}
	if v.WriteTimeout == 0 {
		v.WriteTimeout = 30 * time.Second
	}
	if v.IdleTimeout == 0 {
		v.IdleTimeout = 120 * time.Second
	}
	if v.MaxHeaderBytes == 0 {
		v.MaxHeaderBytes = 16 << 10
	}
	if v.MaxBodyBytes == 0 {
		v.MaxBodyBytes = 256 << 10
	}
	if v.ShutdownTimeout == 0 {
		v.ShutdownTimeout = 15 * time.Second
	}
	u := &c.Upstream
	if u.Timeout == 0 {
		u.Timeout = 5 * time.Second
	}
	if u.AttemptTimeout == 0 {
		u.AttemptTimeout = 2 * time.Second
	}
	if u.MaxAttempts == 0 {
		u.MaxAttempts = 4
	}
	if u.BackoffBase == 0 {
		u.BackoffBase = 50 * time.Millisecond
	}
	if u.BackoffMax == 0 {
		u.BackoffMax = time.Second
	}
	if u.MaxConnsPerHost == 0 {
		u.MaxConnsPerHost = 256
	}
	m := &c.Multicast
	if m.OffPathQueue == 0 {
		m.OffPathQueue = 4096
	}
	if m.OffPathWorkers == 0 {
		m.OffPathWorkers = 64
	}
	if m.OffPathTimeout == 0 {
		m.OffPathTimeout = 5 * time.Second
	}
	if m.DedupWindow == 0 {
		m.DedupWindow = 10 * time.Minute
	}
	if m.DedupMaxEntries == 0 {
		m.DedupMaxEntries = 100000
	}
	if c.Record.File != "" && c.Record.MaxBytes == 0 {
		c.Record.MaxBytes = 64 << 20
	}
}

var (
	nameRe   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	partyRe  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	headerRe = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	hexKeyRe = regexp.MustCompile(`^[0-9a-f]{64}$`)
	signRe   = regexp.MustCompile(`^signkey-[a-z0-9]+-[0-9a-fA-F]+$`)
)

// Validate checks the whole config and returns every problem, each naming
// its field. Load calls it after applying defaults.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	for k := range c.Extra {
		bad(k, "unknown key")
	}
	switch c.Env {
	case "dev", "test", "staging", "prod":
	default:
		bad("env", "%q is not one of dev, test, staging, prod", c.Env)
	}
	if err := checkListen(c.Listen); err != nil {
		bad("listen", "%v", err)
	}
	if err := checkListen(c.Admin.Listen); err != nil {
		bad("admin.listen", "%v", err)
	}
	if c.Listen == c.Admin.Listen && !strings.HasSuffix(c.Listen, ":0") {
		bad("admin.listen", "must differ from listen")
	}
	if c.Admin.Token == "" && (c.Env == "staging" || c.Env == "prod") {
		bad("admin.token", "required in env %s", c.Env)
	}
	if c.Admin.Token == "" && !loopback(c.Admin.Listen) {
		bad("admin.token", "required when admin.listen (%s) is not a loopback address", c.Admin.Listen)
	}
	if c.Admin.Token != "" && len(c.Admin.Token) < 16 {
		bad("admin.token", "must be at least 16 characters")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		bad("log.format", "%q is not console or json", c.Log.Format)
	}
	switch c.Flags.Provider {
	case "file":
		if c.Flags.File == "" {
			bad("flags.file", "required for provider file")
		}
	case "flagd":
		if c.Flags.TargetURI == "" && c.Flags.Host == "" {
			bad("flags.host", "required for provider flagd (or flags.targetUri)")
		}
		if c.Flags.Port < 0 || c.Flags.Port > 65535 {
			bad("flags.port", "%d is not a port", c.Flags.Port)
		}
	case "memory":
	default:
		bad("flags.provider", "%q is not file, flagd or memory", c.Flags.Provider)
	}
	if c.Flags.PollInterval < 0 {
		bad("flags.pollInterval", "must not be negative")
	}
	if len(c.Channels) == 0 {
		bad("channels", "at least one channel is required")
	}
	seenCh, seenEv := map[string]bool{}, map[string]string{}
	for i, ch := range c.Channels {
		f := fmt.Sprintf("channels[%d]", i)
		switch {
		case !nameRe.MatchString(ch.Name):
			bad(f+".name", "%q must be lower-case letters, digits and '-' (1-63)", ch.Name)
		case ch.Name == "default" || ch.Name == "killswitch":
			bad(f+".name", "%q is reserved", ch.Name)
		case seenCh[ch.Name]:
			bad(f+".name", "%q is defined twice", ch.Name)
		}
		seenCh[ch.Name] = true
		if len(ch.Events) == 0 {
			bad(f+".events", "at least one event is required")
		}
		for j, ev := range ch.Events {
			if ev == "" {
				bad(fmt.Sprintf("%s.events[%d]", f, j), "empty event name")
			} else if prev, ok := seenEv[ev]; ok {
				bad(fmt.Sprintf("%s.events[%d]", f, j), "event %q already belongs to channel %q", ev, prev)
			}
			seenEv[ev] = ch.Name
		}
		if ch.SampleRate != nil && (*ch.SampleRate < 0 || *ch.SampleRate > 1) {
			bad(f+".sampleRate", "must be between 0 and 1")
		}
		if ch.Timeout < 0 {
			bad(f+".timeout", "must not be negative")
		}
	}
	if len(c.Apps) == 0 {
		bad("apps", "at least one app is required")
	}
	keyOwner := map[string]string{}
	for _, name := range c.AppNames() {
		a := c.Apps[name]
		f := "apps." + name
		if !nameRe.MatchString(name) {
			bad(f, "app name must be lower-case letters, digits and '-' (1-63)")
		}
		if len(a.APIKeys)+len(a.APIKeySHA256) == 0 {
			bad(f+".apiKeys", "at least one API key (apiKeys or apiKeySha256) is required")
		}
		for i, k := range a.APIKeys {
			kf := fmt.Sprintf("%s.apiKeys[%d]", f, i)
			if len(k) < 16 {
				bad(kf, "must be at least 16 characters")
				continue
			}
			h := sha256.Sum256([]byte(k))
			hk := hex.EncodeToString(h[:])
			if o, ok := keyOwner[hk]; ok {
				bad(kf, "the same key is already configured for app %q", o)
			}
			keyOwner[hk] = name
		}
		for i, h := range a.APIKeySHA256 {
			kf := fmt.Sprintf("%s.apiKeySha256[%d]", f, i)
			h = strings.ToLower(h)
			if !hexKeyRe.MatchString(h) {
				bad(kf, "must be 64 hex digits (SHA-256 of the key)")
				continue
			}
			if o, ok := keyOwner[h]; ok {
				bad(kf, "the same key is already configured for app %q", o)
			}
			keyOwner[h] = name
		}
		if a.DropIn.Header != "" && !headerRe.MatchString(a.DropIn.Header) {
			bad(f+".dropIn.header", "%q is not a valid header name", a.DropIn.Header)
		}
		if err := checkURL(a.Party.URL); err != nil {
			bad(f+".party.url", "%v", err)
		}
		if !partyRe.MatchString(a.Party.Party) {
			bad(f+".party.party", "%q must be letters, digits, '_' or '-'", a.Party.Party)
		}
		if !strings.HasPrefix(a.Party.PathPrefix, "/") || strings.HasSuffix(a.Party.PathPrefix, "/") || strings.ContainsAny(a.Party.PathPrefix, "?#% ") {
			bad(f+".party.pathPrefix", "%q must start with '/' and not end with '/'", a.Party.PathPrefix)
		}
		if a.Party.SecretHeader != "" && !headerRe.MatchString(a.Party.SecretHeader) {
			bad(f+".party.secretHeader", "%q is not a valid header name", a.Party.SecretHeader)
		}
		if a.Realtime.URL != "" {
			if err := checkURL(a.Realtime.URL); err != nil {
				bad(f+".realtime.url", "%v", err)
			}
		} else {
			bad(f+".realtime.url", "required")
		}
		for _, k := range []struct{ field, v string }{{"signingKey", a.Realtime.SigningKey}, {"fallbackSigningKey", a.Realtime.FallbackSigningKey}} {
			if k.v != "" && !signRe.MatchString(k.v) {
				bad(f+".realtime."+k.field, "must look like signkey-{env}-{hex}")
			}
		}
		if a.Realtime.FallbackSigningKey != "" && a.Realtime.SigningKey == "" {
			bad(f+".realtime.fallbackSigningKey", "set without signingKey")
		}
		if err := checkTemplate(a.Realtime.Channel); err != nil {
			bad(f+".realtime.channel", "%v", err)
		}
		for ch, topic := range a.Realtime.Topics {
			if !seenCh[ch] && ch != "default" {
				bad(f+".realtime.topics."+ch, "no channel named %q", ch)
			}
			if topic == "" {
				bad(f+".realtime.topics."+ch, "empty topic")
			}
		}
		if a.RateLimit.PerSecond < 0 || a.RateLimit.Burst < 0 {
			bad(f+".rateLimit", "must not be negative")
		}
		if a.GrantSecret != "" && len(a.GrantSecret) < 32 {
			bad(f+".grantSecret", "must be at least 32 characters")
		}
		for i, o := range a.Origins {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
				bad(fmt.Sprintf("%s.origins[%d]", f, i), "%q must be scheme://host[:port]", o)
			}
		}
	}
	s := c.Shadow
	if s.SampleRate < 0 || s.SampleRate > 1 {
		bad("shadow.sampleRate", "must be between 0 and 1")
	}
	if s.Timeout < 0 || s.IdleTTL < 0 || s.Window < 0 {
		bad("shadow", "durations must not be negative")
	}
	if s.MaxRooms < 0 || s.MaxPending < 0 {
		bad("shadow", "limits must not be negative")
	}
	if c.Server.MaxBodyBytes < 0 || c.Server.MaxBodyBytes > MaxBodyLimit {
		bad("server.maxBodyBytes", "%d is outside 1..%d (realtime truncates larger bodies)", c.Server.MaxBodyBytes, MaxBodyLimit)
	}
	if c.Server.MaxHeaderBytes < 0 {
		bad("server.maxHeaderBytes", "must not be negative")
	}
	if c.Upstream.MaxAttempts < 0 || c.Upstream.MaxAttempts > 10 {
		bad("upstream.maxAttempts", "must be between 1 and 10")
	}
	if c.Upstream.AttemptTimeout > c.Upstream.Timeout {
		bad("upstream.attemptTimeout", "must not exceed upstream.timeout")
	}
	if c.Multicast.OffPathQueue < 0 || c.Multicast.OffPathWorkers < 0 || c.Multicast.DedupMaxEntries < 0 {
		bad("multicast", "sizes must not be negative")
	}
	if c.Record.MaxBytes < 0 {
		bad("record.maxBytes", "must not be negative")
	}
	return errors.Join(errs...)
}

// AppNames returns the configured app names, sorted.
func (c *Config) AppNames() []string {
	names := make([]string, 0, len(c.Apps))
	for n := range c.Apps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ChannelNames returns the configured channel names in config order.
func (c *Config) ChannelNames() []string {
	out := make([]string, len(c.Channels))
	for i, ch := range c.Channels {
		out[i] = ch.Name
	}
	return out
}

// SampleRate returns the shadow sample rate of a channel.
func (c *Config) SampleRate(channel string) float64 {
	for _, ch := range c.Channels {
		if ch.Name == channel && ch.SampleRate != nil {
			return *ch.SampleRate
		}
	}
	return c.Shadow.SampleRate
}

// Secrets returns every secret value in the config (API keys, signing keys,
// shared secrets, grant secrets, the admin token), for log-scrubbing tests.
func (c *Config) Secrets() []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	add(c.Admin.Token)
	for _, a := range c.Apps {
		for _, k := range a.APIKeys {
			add(k)
		}
		add(a.DropIn.Secret)
		add(a.Party.Secret)
		add(a.Realtime.SigningKey)
		add(a.Realtime.FallbackSigningKey)
		add(a.GrantSecret)
	}
	return out
}

const redacted = "[redacted]"

func redact(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// Redacted returns a deep-enough copy with every secret replaced by
// "[redacted]" (empty stays empty, so "unset" remains visible). It is what
// logs and `config check` print.
func (c *Config) Redacted() *Config {
	r := *c
	r.Extra = nil
	r.Admin.Token = redact(c.Admin.Token)
	r.Apps = make(map[string]App, len(c.Apps))
	for n, a := range c.Apps {
		keys := make([]string, len(a.APIKeys))
		for i, k := range a.APIKeys {
			keys[i] = redact(k)
		}
		a.APIKeys = keys
		a.DropIn.Secret = redact(a.DropIn.Secret)
		a.Party.Secret = redact(a.Party.Secret)
		a.Realtime.SigningKey = redact(a.Realtime.SigningKey)
		a.Realtime.FallbackSigningKey = redact(a.Realtime.FallbackSigningKey)
		a.GrantSecret = redact(a.GrantSecret)
		r.Apps[n] = a
	}
	return &r
}

func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("%q: host must be an IP address or localhost", addr)
	}
	if port == "" {
		return fmt.Errorf("%q: missing port", addr)
	}
	return nil
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkURL(raw string) error {
	if raw == "" {
		return errors.New("required")
	}
	if !strings.Contains(raw, "://") {
		return errors.New("missing scheme")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme %q is not http or https", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("missing host")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("must not carry a query, fragment or user info")
	}
	if u.Path != "" && u.Path != "/" {
		return errors.New("must not carry a path (use party.pathPrefix)")
	}
	return nil
}

var placeholderRe = regexp.MustCompile(`\{([^}]*)\}`)

func checkTemplate(t string) error {
	if !strings.Contains(t, "{room}") {
		return fmt.Errorf("%q must contain {room} so each room has its own channel", t)
	}
	for _, m := range placeholderRe.FindAllStringSubmatch(t, -1) {
		switch m[1] {
		case "room", "app", "channel":
		default:
			return fmt.Errorf("unknown placeholder {%s} (want {room}, {app} or {channel})", m[1])
		}
	}
	return nil
}
