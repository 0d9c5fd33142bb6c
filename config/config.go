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
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/dedupredis"
	"github.com/switchyard/switchyard/flags"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/recording"
	"github.com/switchyard/switchyard/shadow"
	"github.com/switchyard/switchyard/upstream"
)

// Config is the whole gateway configuration. See docs/configuration.md for
// every key.
type Config struct {
	Env       string         `yaml:"env"`
	Listen    string         `yaml:"listen"`
	Admin     Admin          `yaml:"admin"`
	Log       Log            `yaml:"log"`
	Flags     Flags          `yaml:"flags"`
	Channels  []Channel      `yaml:"channels"`
	Apps      map[string]App `yaml:"apps"`
	Shadow    Shadow         `yaml:"shadow"`
	Server    Server         `yaml:"server"`
	Shutdown  Shutdown       `yaml:"shutdown"`
	Upstream  Upstream       `yaml:"upstream"`
	Multicast Multicast      `yaml:"multicast"`
	// Idempotency selects where the requestId window lives (in memory, or
	// shared by the replicas on Redis).
	Idempotency Idempotency          `yaml:"idempotency"`
	Record      Record               `yaml:"record"`
	Extra       map[string]yaml.Node `yaml:",inline"`
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
	Provider     string        `yaml:"provider"` // file (default), blob, flagd, memory
	File         string        `yaml:"file"`
	Source       string        `yaml:"source"` // blob: s3://, gs://, azblob://, file:/// URL
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
	// Origins are the browser origins allowed by CORS on the token and
	// receipts paths.
	Origins []string `yaml:"origins"`
	// Sequence adds the "sy" member (message id, per-room sequence number,
	// stage, channel, acceptance time) to every envelope of the app, on
	// both transports, so that the browser client delivers each message
	// once and in order through stage changes (docs/browser.md). Off by
	// default: it changes the bytes today's PartyKit clients receive.
	Sequence bool `yaml:"sequence"`
}

// DropIn is the optional shared secret of the PartyKit-compatible path.
type DropIn struct {
	Header string `yaml:"header"` // default X-Switchyard-Secret when Secret is set
	Secret string `yaml:"secret"` // Secret
}

// Party is the app's PartyKit upstream.
type Party struct {
	URL   string `yaml:"url"`
	Party string `yaml:"party"`
	// Parties are the other parties the app publishes to, besides Party:
	// the drop-in path /apps/{app}/parties/{party}/{room} accepts Party and
	// these only (another is 404).
	Parties      []string `yaml:"parties"`
	PathPrefix   string   `yaml:"pathPrefix"`
	SecretHeader string   `yaml:"secretHeader"`
	Secret       string   `yaml:"secret"` // Secret
}

// Realtime is the app's Inngest Realtime upstream.
type Realtime struct {
	URL                string            `yaml:"url"`
	SigningKey         string            `yaml:"signingKey"`         // Secret
	FallbackSigningKey string            `yaml:"fallbackSigningKey"` // Secret
	Channel            string            `yaml:"channel"`            // template: {room} {app} {party} {channel}
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
	// ReadyWait bounds the wait of a sampled message's answering publish
	// for the comparator's watch (shadow.Config.ReadyWait); unset takes the
	// default, 0 turns the wait off.
	ReadyWait *time.Duration `yaml:"readyWait"`
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
	// PublishLoop is who serves the publish routes of the public
	// listener: "own" (default: the gateway's own HTTP/1.1 loop,
	// internal/h1serve, with every other request handed to net/http) or
	// "nethttp" (net/http serves everything, as before issue 17).
	PublishLoop string `yaml:"publishLoop"`
	// SocketIO is how the public listener's connections and the upstream
	// publish connections make their read and write system calls: "raw"
	// (default: without handing the scheduler's P over, internal/rawio)
	// or "std" (through the standard library, as before issue 17).
	SocketIO string `yaml:"socketIO"`
}

// Values of server.publishLoop.
const (
	PublishLoopOwn     = "own"
	PublishLoopNetHTTP = "nethttp"
)

// Values of server.socketIO.
const (
	SocketIORaw = "raw"
	SocketIOStd = "std"
)

// Shutdown is how the gateway leaves a load balancer on SIGTERM.
type Shutdown struct {
	// Delay is how long the public listener keeps serving after readyz
	// turned 503, so that the load balancer stops sending before the
	// listener closes. Nil takes the env's default: DefaultShutdownDelay in
	// staging and prod, none in dev and test; an explicit 0s means none.
	// Delay reads it.
	Delay *time.Duration `yaml:"delay"`
}

// DelayOrZero is Delay, or 0 when unset.
func (s Shutdown) DelayOrZero() time.Duration {
	if s.Delay == nil {
		return 0
	}
	return *s.Delay
}

// Upstream is the deadline and retry policy shared by both transports.
type Upstream struct {
	Timeout         time.Duration `yaml:"timeout"`
	AttemptTimeout  time.Duration `yaml:"attemptTimeout"`
	MaxAttempts     int           `yaml:"maxAttempts"`
	BackoffBase     time.Duration `yaml:"backoffBase"`
	BackoffMax      time.Duration `yaml:"backoffMax"`
	MaxConnsPerHost int           `yaml:"maxConnsPerHost"`
	// IdleConnTimeout is how long an idle upstream connection is kept.
	IdleConnTimeout time.Duration `yaml:"idleConnTimeout"`
	// Protocol is "auto" (HTTP/2 to an HTTPS upstream that offers it,
	// HTTP/1.1 otherwise) or "http1" (never HTTP/2).
	Protocol string `yaml:"protocol"`
}

// TransportOptions are the upstream transport's settings of u
// (upstream.NewTransportWith).
func (u Upstream) TransportOptions() upstream.TransportOptions {
	return upstream.TransportOptions{
		MaxIdleConnsPerHost: u.MaxConnsPerHost,
		IdleConnTimeout:     u.IdleConnTimeout,
		HTTP1Only:           u.Protocol == ProtocolHTTP1,
	}
}

// Multicast sizes the off-path side and the idempotency window.
type Multicast struct {
	OffPathQueue    int           `yaml:"offPathQueue"`
	OffPathWorkers  int           `yaml:"offPathWorkers"`
	OffPathTimeout  time.Duration `yaml:"offPathTimeout"`
	DedupWindow     time.Duration `yaml:"dedupWindow"`
	DedupMaxEntries int           `yaml:"dedupMaxEntries"`
	SequenceRooms   int           `yaml:"sequenceRooms"`
	SequenceIdleTTL time.Duration `yaml:"sequenceIdleTTL"`
}

// Idempotency selects the requestId window's store. The window's length
// and in-memory bound stay multicast.dedupWindow and dedupMaxEntries.
type Idempotency struct {
	// Store is "memory" (default: one replica's window) or "redis" (the
	// in-memory window plus one shared by every replica on Redis).
	Store string `yaml:"store"`
	// Timeout bounds one shared check; past it the message is published
	// without it (fail open, counted).
	Timeout time.Duration `yaml:"timeout"`
	// Backoff is how long the shared store is not asked after a failure.
	Backoff time.Duration `yaml:"backoff"`
	Redis   Redis         `yaml:"redis"`
}

// Redis addresses the shared idempotency store.
type Redis struct {
	Addr      string `yaml:"addr"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"` // Secret
	DB        int    `yaml:"db"`
	TLS       bool   `yaml:"tls"`
	KeyPrefix string `yaml:"keyPrefix"`
}

// Idempotency stores accepted in idempotency.store.
const (
	IdempotencyMemory = "memory"
	IdempotencyRedis  = "redis"
)

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
	if unknown := unknownKeys(root.Content[0], reflect.TypeOf(Config{}), ""); len(unknown) > 0 {
		return nil, fmt.Errorf("config: %w", errors.Join(unknown...))
	}
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true) // a backstop: unknownKeys names the field first
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

// unknownKeys returns one "path.key: unknown key ..." error per mapping key of
// n that the type t it decodes into does not have, below the top level
// (whose unknown keys Validate reports from Config.Extra), so that the error
// names the field rather than a line.
func unknownKeys(n *yaml.Node, t reflect.Type, path string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var errs []error
	switch {
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, c := range n.Content {
			errs = append(errs, unknownKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, unknownKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))...)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct && t != reflect.TypeOf(yaml.Node{}):
		fields, inline := map[string]reflect.Type{}, false
		for i := 0; i < t.NumField(); i++ {
			name, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if opts == "inline" {
				inline = true
				continue
			}
			fields[name] = t.Field(i).Type
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			ft, ok := fields[k]
			switch {
			case n.Content[i].Tag == "!!merge": // <<: *anchor, checked by the decoder
			case ok:
				errs = append(errs, unknownKeys(n.Content[i+1], ft, join(path, k))...)
			case !inline:
				errs = append(errs, fmt.Errorf("%s: unknown key (field %s not found)", join(path, k), k))
			}
		}
	}
	return errs
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

// Defaults the config package owns: the listeners, logging, the HTTP
// servers, the drop-in header, the rate-limit burst and the recorder cap.
// Every other default belongs to the package that uses the value (shadow,
// flags, broadcast, legacyparty, realtime, upstream) and is read from it.
const (
	// DefaultEnv is the env of a config that names none.
	DefaultEnv = "dev"
	// DefaultListen is the public listener's address.
	DefaultListen = "127.0.0.1:8080"
	// DefaultAdminListen is the admin listener's address.
	DefaultAdminListen = "127.0.0.1:9091"
	// DefaultDropInHeader carries the drop-in path's shared secret when
	// apps.*.dropIn.secret is set without a header.
	DefaultDropInHeader = "X-Switchyard-Secret"
	// DefaultShutdownDelay is shutdown.delay in staging and prod: long
	// enough for Kubernetes to take the pod out of the Service's endpoints
	// (the endpoints controller, then every kube-proxy and ingress, react
	// within a few seconds of the pod turning not ready / terminating).
	DefaultShutdownDelay = 5 * time.Second
	// DefaultMaxConnsPerHost is upstream.maxConnsPerHost when unset; it
	// equals what upstream.NewTransport applies to 0, which that package
	// does not export.
	DefaultMaxConnsPerHost = 256
	// DefaultIdleConnTimeout is upstream.idleConnTimeout when unset.
	DefaultIdleConnTimeout = 90 * time.Second
	// ProtocolAuto and ProtocolHTTP1 are the values of upstream.protocol.
	ProtocolAuto  = "auto"
	ProtocolHTTP1 = "http1"
)

// applyDefaults fills every zero field with its effective value, so that
// `config check` shows what runs. Package-owned defaults come from the
// package's WithDefaults; a negative value is left for Validate to refuse.
func (c *Config) applyDefaults() {
	if c.Env == "" {
		c.Env = DefaultEnv
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = DefaultAdminListen
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
	fd := flags.Config{}.WithDefaults()
	setZero(&c.Flags.Provider, fd.Provider)
	setZero(&c.Flags.Port, fd.FlagdPort)
	setZero(&c.Flags.PollInterval, fd.PollInterval)
	for name, a := range c.Apps {
		// An empty key is an unset rotation slot (${NEXT_KEY:-}): ignore it.
		a.APIKeys = slices.DeleteFunc(slices.Clone(a.APIKeys), func(k string) bool { return k == "" })
		pd := legacyparty.Config{Party: a.Party.Party, PathPrefix: a.Party.PathPrefix}.WithDefaults()
		a.Party.Party, a.Party.PathPrefix = pd.Party, pd.PathPrefix
		if a.Party.Secret != "" {
			setZero(&a.Party.SecretHeader, legacyparty.DefaultSecretHeader)
		}
		if a.DropIn.Secret != "" {
			setZero(&a.DropIn.Header, DefaultDropInHeader)
		}
		setZero(&a.Realtime.Channel, realtime.DefaultChannelTemplate)
		if a.RateLimit.PerSecond > 0 && a.RateLimit.Burst == 0 {
			a.RateLimit.Burst = int(a.RateLimit.PerSecond) + 1
		}
		c.Apps[name] = a
	}
	s, sd := &c.Shadow, shadow.Config{}.WithDefaults()
	setZero(&s.Timeout, sd.Timeout)
	setZero(&s.IdleTTL, sd.IdleTTL)
	setZero(&s.MaxRooms, sd.MaxRooms)
	setZero(&s.MaxPending, sd.MaxPending)
	setZero(&s.Window, sd.Window)
	if s.ReadyWait == nil {
		rw := sd.ReadyWait
		s.ReadyWait = &rw
	}
	v := &c.Server
	setZero(&v.ReadHeaderTimeout, 5*time.Second)
	setZero(&v.ReadTimeout, 15*time.Second)
	setZero(&v.WriteTimeout, 30*time.Second)
	setZero(&v.IdleTimeout, 120*time.Second)
	setZero(&v.MaxHeaderBytes, 16<<10)
	setZero(&v.MaxBodyBytes, 256<<10)
	setZero(&v.ShutdownTimeout, 15*time.Second)
	setZero(&v.PublishLoop, PublishLoopOwn)
	setZero(&v.SocketIO, SocketIORaw)
	if c.Shutdown.Delay == nil {
		d := time.Duration(0)
		if c.Env == "staging" || c.Env == "prod" {
			d = DefaultShutdownDelay
		}
		c.Shutdown.Delay = &d
	}
	u, ud := &c.Upstream, upstream.Policy{}.WithDefaults()
	setZero(&u.Timeout, ud.Timeout)
	setZero(&u.AttemptTimeout, ud.AttemptTimeout)
	setZero(&u.MaxAttempts, ud.MaxAttempts)
	setZero(&u.BackoffBase, ud.BackoffBase)
	setZero(&u.BackoffMax, ud.BackoffMax)
	setZero(&u.MaxConnsPerHost, DefaultMaxConnsPerHost)
	setZero(&u.IdleConnTimeout, DefaultIdleConnTimeout)
	setZero(&u.Protocol, ProtocolAuto)
	m, md := &c.Multicast, broadcast.Config{}.WithDefaults()
	setZero(&m.OffPathQueue, md.OffPathQueue)
	setZero(&m.OffPathWorkers, md.OffPathWorkers)
	setZero(&m.OffPathTimeout, md.OffPathTimeout)
	setZero(&m.DedupWindow, md.DedupWindow)
	setZero(&m.DedupMaxEntries, md.DedupMaxEntries)
	setZero(&m.SequenceRooms, md.SequenceRooms)
	setZero(&m.SequenceIdleTTL, md.SequenceIdleTTL)
	setZero(&c.Idempotency.Store, IdempotencyMemory)
	setZero(&c.Idempotency.Timeout, md.SharedDedupTimeout)
	setZero(&c.Idempotency.Backoff, md.SharedDedupBackoff)
	if c.Idempotency.Store == IdempotencyRedis {
		setZero(&c.Idempotency.Redis.KeyPrefix, dedupredis.DefaultKeyPrefix)
	}
	if c.Record.File != "" {
		setZero(&c.Record.MaxBytes, int64(recording.DefaultMaxBytes))
	}
}

// effectiveParties is p.Parties with the default party (p.Party, or
// legacyparty.DefaultParty with the alias prefix) first, each once.
func effectiveParties(p Party) []string {
	def := p.Party
	if def == "" {
		def = legacyparty.DefaultParty
	}
	out := []string{def}
	for _, x := range p.Parties {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// setZero sets *p to def when *p is the zero value.
func setZero[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

var (
	appNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	headerRe  = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	hexKeyRe  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidateAppName is the one rule for an app name (the key under apps, a
// path segment of /apps/{app}/... and a metrics label): 1 to 63 lower-case
// ASCII letters, digits and '-', starting with a letter or digit. The error
// does not name a field.
func ValidateAppName(name string) error {
	if !appNameRe.MatchString(name) {
		return fmt.Errorf("%q must be 1-63 lower-case letters, digits and '-', starting with a letter or digit", name)
	}
	return nil
}

// Validate checks the whole config and returns every problem, each naming
// its YAML field path (channels[1].ignorePaths[0]: ...,
// apps.ai-hero.realtime.channel: ...). Load calls it after applying
// defaults. The package-owned parts are checked by the packages' own
// validators, on the very configs ShadowConfig, FlagsConfig,
// MulticastConfig, ChannelSpecs, PartyConfig and RealtimeConfig hand to the
// wiring, and the recorder's redact paths by shadow.NewRedaction: a config
// Validate accepts is not refused by those packages' constructors for a
// configuration reason.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	keys := make([]string, 0, len(c.Extra))
	for k := range c.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
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

	// flags: the channel list is checked once, below, by broadcast's rule.
	fc := c.FlagsConfig()
	fc.Channels = nil
	errs = append(errs, under("flags.", fc.Validate())...)

	if len(c.Channels) == 0 {
		bad("channels", "at least one channel is required")
	}
	errs = append(errs, under("", broadcast.ValidateChannels(c.ChannelSpecs()))...)
	channel := map[string]bool{broadcast.DefaultChannel: true}
	for i, ch := range c.Channels {
		f := fmt.Sprintf("channels[%d]", i)
		channel[ch.Name] = true
		if ch.SampleRate != nil && !isRate(*ch.SampleRate) {
			bad(f+".sampleRate", "must be between 0 and 1")
		}
		errs = append(errs, under(f+".", c.shadowChannel(ch).Validate())...)
	}

	if len(c.Apps) == 0 {
		bad("apps", "at least one app is required")
	}
	upstreamOK := len(c.upstreamProblems()) == 0
	keyOwner := map[string]string{}
	for _, name := range c.AppNames() {
		a := c.Apps[name]
		f := "apps." + name
		if err := ValidateAppName(name); err != nil {
			bad(f, "app name %v", err)
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
			bad(f+".dropIn.header", "%q is not a valid header name (letters, digits and '-', at most 64)", a.DropIn.Header)
		}
		// The upstream policy is reported once, under upstream.
		pc := c.PartyConfig(name)
		if !upstreamOK {
			pc.Policy = upstream.Policy{}
		}
		errs = append(errs, under(f+".party.", pc.Validate())...)
		for i, p := range a.Party.Parties {
			pf := fmt.Sprintf("%s.party.parties[%d]", f, i)
			if err := legacyparty.ValidateParty(p); err != nil {
				bad(pf, "%v", err)
			} else if pc.WithDefaults().PathPrefix == legacyparty.AliasPathPrefix && p != legacyparty.DefaultParty {
				bad(pf, "%q cannot be addressed through the %q alias (only %q)", p, legacyparty.AliasPathPrefix, legacyparty.DefaultParty)
			}
		}
		rc := c.RealtimeConfig(name)
		rcErr := rc.Validate()
		errs = append(errs, under(f+".realtime.", rcErr, "channelTemplate", "channel")...)
		if rcErr == nil {
			if err := c.realtimeScope(name).Collision(); err != nil {
				bad(f+".realtime.channel", "%v: one subscriber would receive the other's messages", err)
			}
		}
		topics := make([]string, 0, len(a.Realtime.Topics))
		for ch := range a.Realtime.Topics {
			topics = append(topics, ch)
		}
		sort.Strings(topics)
		for _, ch := range topics {
			if !channel[ch] {
				bad(f+".realtime.topics."+ch, "no channel named %q", ch)
			}
		}
		if !(a.RateLimit.PerSecond >= 0) || math.IsInf(a.RateLimit.PerSecond, 0) || a.RateLimit.Burst < 0 {
			bad(f+".rateLimit", "must be finite and not negative")
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

	errs = append(errs, c.channelCollisions()...)

	if !isRate(c.Shadow.SampleRate) {
		bad("shadow.sampleRate", "must be between 0 and 1")
	}
	if rw := c.Shadow.ReadyWait; rw != nil && (*rw < 0 || *rw > shadow.MaxReadyWait) {
		bad("shadow.readyWait", "%v is outside 0 (no wait) to %v", *rw, shadow.MaxReadyWait)
	}
	sc := c.ShadowConfig()
	sc.Channels = nil // checked above, under channels[i]
	sc.ReadyWait = 0  // checked above, in the config's own terms
	errs = append(errs, under("shadow.", sc.Validate())...)

	if c.Server.MaxBodyBytes < 0 || c.Server.MaxBodyBytes > MaxBodyLimit {
		bad("server.maxBodyBytes", "%d is outside 1..%d (realtime truncates larger bodies)", c.Server.MaxBodyBytes, MaxBodyLimit)
	}
	if c.Server.MaxHeaderBytes < 0 {
		bad("server.maxHeaderBytes", "must not be negative")
	}
	switch c.Server.PublishLoop {
	case "", PublishLoopOwn, PublishLoopNetHTTP:
	default:
		bad("server.publishLoop", "%q is not one of %q, %q", c.Server.PublishLoop, PublishLoopOwn, PublishLoopNetHTTP)
	}
	switch c.Server.SocketIO {
	case "", SocketIORaw, SocketIOStd:
	default:
		bad("server.socketIO", "%q is not one of %q, %q", c.Server.SocketIO, SocketIORaw, SocketIOStd)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"readHeaderTimeout", c.Server.ReadHeaderTimeout}, {"readTimeout", c.Server.ReadTimeout},
		{"writeTimeout", c.Server.WriteTimeout}, {"idleTimeout", c.Server.IdleTimeout},
		{"shutdownTimeout", c.Server.ShutdownTimeout},
	} {
		if d.v < 0 {
			bad("server."+d.field, "%v is negative", d.v)
		}
	}
	if d := c.Shutdown.DelayOrZero(); d < 0 || d > 5*time.Minute {
		bad("shutdown.delay", "%v is outside 0..5m", d)
	}
	errs = append(errs, c.upstreamProblems()...)
	errs = append(errs, under("multicast.", c.MulticastConfig().Validate(),
		"sharedDedupTimeout", "idempotency.timeout", "sharedDedupBackoff", "idempotency.backoff")...)
	switch c.Idempotency.Store {
	case IdempotencyMemory:
	case IdempotencyRedis:
		errs = append(errs, under("idempotency.redis.", c.RedisConfig().Validate())...)
	default:
		bad("idempotency.store", "%q is not memory or redis", c.Idempotency.Store)
	}
	if c.Record.File != "" {
		errs = append(errs, under("record.", c.RecordConfig().Validate())...)
	} else if _, err := shadow.NewRedaction(c.Record.RedactPaths); err != nil {
		errs = append(errs, under("record.", err)...) // kept for when a file is set
	}
	return errors.Join(errs...)
}

// realtimeScope is every Inngest channel name app's template can yield.
func (c *Config) realtimeScope(app string) realtime.Scope {
	a := c.Apps[app]
	return realtime.Scope{Template: a.Realtime.Channel, App: app, Parties: effectiveParties(a.Party),
		Channels: append(c.ChannelNames(), broadcast.DefaultChannel)}
}

// realtimeEnv identifies the Inngest environment an app publishes into,
// as far as the config tells: the realtime URL (scheme and host, case
// folded, without a trailing slash) and the env part of the signing key
// ("" without a key: the dev server). Different keys of one env part may
// still be one environment (a rotation, or two keys of one account), so the
// env part, not the key, decides.
func (c *Config) realtimeEnv(app string) (url, keyEnv string) {
	r := c.Apps[app].Realtime
	return strings.ToLower(strings.TrimRight(r.URL, "/")), realtime.SigningKeyEnv(r.SigningKey)
}

// channelCollisions refuses two apps on one realtime environment whose
// channel templates can yield the same Inngest channel: a token of one app
// for some room would then receive the other app's messages. The error is
// reported on the later app (in name order), with a channel name both
// yield.
func (c *Config) channelCollisions() []error {
	var errs []error
	names := c.AppNames()
	for j, b := range names {
		if c.RealtimeConfig(b).Validate() != nil {
			continue // reported above
		}
		ub, eb := c.realtimeEnv(b)
		for _, a := range names[:j] {
			if ua, ea := c.realtimeEnv(a); ua != ub || ea != eb || c.RealtimeConfig(a).Validate() != nil {
				continue
			}
			w, ok, err := realtime.Overlap(c.realtimeScope(a), c.realtimeScope(b))
			if err != nil || !ok {
				continue
			}
			env := eb
			if env == "" {
				env = "none"
			}
			errs = append(errs, fmt.Errorf("apps.%s.realtime.channel: %q can yield the channel %q, as can apps.%s.realtime.channel %q, on one realtime environment (url %s, signing key env %s): a token of one app would receive the other's messages; namespace both, e.g. with the default %q",
				b, tmplName(c.Apps[b].Realtime.Channel), w, a, tmplName(c.Apps[a].Realtime.Channel), ub, env, realtime.DefaultChannelTemplate))
			break
		}
	}
	return errs
}

func tmplName(t string) string {
	if t == "" {
		return realtime.DefaultChannelTemplate
	}
	return t
}

// upstreamProblems checks the upstream section (the upstream package has
// no validator of its own).
func (c *Config) upstreamProblems() []error {
	var errs []error
	u := c.Upstream
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"timeout", u.Timeout}, {"attemptTimeout", u.AttemptTimeout},
		{"backoffBase", u.BackoffBase}, {"backoffMax", u.BackoffMax},
		{"idleConnTimeout", u.IdleConnTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("upstream.%s: %v is negative", d.field, d.v))
		}
	}
	if u.MaxAttempts < 0 || u.MaxAttempts > 10 {
		errs = append(errs, errors.New("upstream.maxAttempts: must be between 1 and 10"))
	}
	if u.AttemptTimeout > u.Timeout && u.Timeout >= 0 {
		errs = append(errs, errors.New("upstream.attemptTimeout: must not exceed upstream.timeout"))
	}
	if u.MaxConnsPerHost < 0 {
		errs = append(errs, fmt.Errorf("upstream.maxConnsPerHost: %d is negative", u.MaxConnsPerHost))
	}
	switch u.Protocol {
	case "", ProtocolAuto, ProtocolHTTP1:
	default:
		errs = append(errs, fmt.Errorf("upstream.protocol: %q is not one of %q, %q", u.Protocol, ProtocolAuto, ProtocolHTTP1))
	}
	return errs
}

// isRate reports whether r is a share between 0 and 1 (NaN is not).
func isRate(r float64) bool { return r >= 0 && r <= 1 }

// fieldError is a package's problem put under its YAML field path; it
// unwraps to the package's error.
type fieldError struct {
	msg string
	err error
}

func (e *fieldError) Error() string { return e.msg }
func (e *fieldError) Unwrap() error { return e.err }

// under returns each problem joined in err (a package validator's result,
// whose messages start with the package's own field name) with prefix, the
// field path of the package's section, put in front. renames are pairs of
// a package field name and the YAML key it is configured under, applied to
// the leading field name only.
func under(prefix string, err error, renames ...string) []error {
	if err == nil {
		return nil
	}
	leaves := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		leaves = j.Unwrap()
	}
	out := make([]error, 0, len(leaves))
	for _, e := range leaves {
		msg := e.Error()
		for i := 0; i+1 < len(renames); i += 2 {
			if rest, ok := strings.CutPrefix(msg, renames[i]); ok && rest != "" && strings.ContainsRune(":.[", rune(rest[0])) {
				msg = renames[i+1] + rest
				break
			}
		}
		out = append(out, &fieldError{msg: prefix + msg, err: e})
	}
	return out
}

// ChannelSpecs returns the configured channels as broadcast.NewChannels
// takes them, in config order.
func (c *Config) ChannelSpecs() []broadcast.ChannelSpec {
	out := make([]broadcast.ChannelSpec, len(c.Channels))
	for i, ch := range c.Channels {
		out[i] = broadcast.ChannelSpec{Name: ch.Name, Events: ch.Events}
	}
	return out
}

// ShadowConfig returns the comparator's configuration: the shadow section
// and each channel's rules, keyed by channel name. QueueSize is left to
// the shadow package's default.
func (c *Config) ShadowConfig() shadow.Config {
	s := c.Shadow
	out := shadow.Config{Timeout: s.Timeout, IdleTTL: s.IdleTTL, MaxRooms: s.MaxRooms, MaxPending: s.MaxPending,
		Window: s.Window, Channels: make(map[string]shadow.ChannelConfig, len(c.Channels))}
	switch {
	case s.ReadyWait == nil: // the package default
	case *s.ReadyWait == 0:
		out.ReadyWait = shadow.ReadyWaitOff
	default:
		out.ReadyWait = *s.ReadyWait
	}
	for _, ch := range c.Channels {
		out.Channels[ch.Name] = c.shadowChannel(ch)
	}
	return out
}

func (c *Config) shadowChannel(ch Channel) shadow.ChannelConfig {
	return shadow.ChannelConfig{IgnorePaths: ch.IgnorePaths, RedactPaths: ch.RedactPaths, Timeout: ch.Timeout}
}

// FlagsConfig returns the flag source's configuration: the flags section,
// env and the channel names. A relative flag file is already relative to
// the config file (Load resolves it).
func (c *Config) FlagsConfig() flags.Config {
	f := c.Flags
	return flags.Config{Provider: f.Provider, File: f.File, Source: f.Source, FlagdHost: f.Host, FlagdPort: f.Port,
		FlagdTargetURI: f.TargetURI, Env: c.Env, Channels: c.ChannelNames(), PollInterval: f.PollInterval}
}

// MulticastConfig returns the multicast adapter's configuration: the
// multicast section, each app's rate limit, the channel names and the
// per-channel sample rate (c.SampleRate, which reads c: keep c unchanged
// while the adapter runs).
func (c *Config) MulticastConfig() broadcast.Config {
	m := c.Multicast
	apps := make(map[string]broadcast.AppLimits, len(c.Apps))
	sequenced := map[string]bool{}
	for name, a := range c.Apps {
		apps[name] = broadcast.AppLimits{RatePerSecond: a.RateLimit.PerSecond, Burst: a.RateLimit.Burst}
		if a.Sequence {
			sequenced[name] = true
		}
	}
	return broadcast.Config{Apps: apps, Channels: c.ChannelNames(),
		OffPathQueue: m.OffPathQueue, OffPathWorkers: m.OffPathWorkers, OffPathTimeout: m.OffPathTimeout,
		DedupWindow: m.DedupWindow, DedupMaxEntries: m.DedupMaxEntries, SampleRate: c.SampleRate,
		Sequenced: sequenced, SequenceRooms: m.SequenceRooms, SequenceIdleTTL: m.SequenceIdleTTL, SharedDedupTimeout: c.Idempotency.Timeout, SharedDedupBackoff: c.Idempotency.Backoff}
}

// RedisConfig returns the shared idempotency store's configuration
// (idempotency.redis, with idempotency.timeout bounding each command);
// meaningful when idempotency.store is redis.
func (c *Config) RedisConfig() dedupredis.Config {
	r := c.Idempotency.Redis
	return dedupredis.Config{Addr: r.Addr, Username: r.Username, Password: r.Password, DB: r.DB, TLS: r.TLS,
		KeyPrefix: r.KeyPrefix, Timeout: c.Idempotency.Timeout}
}

// UpstreamPolicy returns the deadline and retry policy both transports
// share (the upstream section but maxConnsPerHost, which sizes
// upstream.NewTransport).
func (c *Config) UpstreamPolicy() upstream.Policy {
	u := c.Upstream
	return upstream.Policy{Timeout: u.Timeout, AttemptTimeout: u.AttemptTimeout, MaxAttempts: u.MaxAttempts,
		BackoffBase: u.BackoffBase, BackoffMax: u.BackoffMax}
}

// PartyConfig returns app's PartyKit client configuration, with the shared
// upstream policy. An unknown app gives a config without URL, which its
// Validate refuses.
func (c *Config) PartyConfig(app string) legacyparty.Config {
	p := c.Apps[app].Party
	return legacyparty.Config{URL: p.URL, Party: p.Party, PathPrefix: p.PathPrefix,
		SecretHeader: p.SecretHeader, Secret: p.Secret, Policy: c.UpstreamPolicy()}
}

// RealtimeConfig returns app's Inngest Realtime client configuration, with
// the shared upstream policy. An unknown app gives a config without URL,
// which its Validate refuses.
func (c *Config) RealtimeConfig(app string) realtime.Config {
	a := c.Apps[app]
	r, parties := a.Realtime, effectiveParties(a.Party)
	return realtime.Config{URL: r.URL, SigningKey: r.SigningKey, FallbackSigningKey: r.FallbackSigningKey,
		ChannelTemplate: r.Channel, Party: parties[0], Parties: parties, Topics: r.Topics, Policy: c.UpstreamPolicy()}
}

// RecordConfig is the recorder's configuration (record.*); meaningful when
// record.file is set.
func (c *Config) RecordConfig() recording.Config {
	return recording.Config{File: c.Record.File, MaxBytes: c.Record.MaxBytes, RedactPaths: c.Record.RedactPaths}
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
	add(c.Idempotency.Redis.Password)
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
	r.Idempotency.Redis.Password = redact(c.Idempotency.Redis.Password)
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
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || port != strconv.Itoa(n) {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
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
