package flags

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
)

// ErrorLogInterval is the shortest time between two log lines of one error
// reason; the lines in between are counted in the next line's "suppressed".
const ErrorLogInterval = 10 * time.Second

// Resolver decides the stage of each message from the OpenFeature flags:
// the kill switch first (true forces legacy), then the channel's stage
// flag. It implements broadcast.StageResolver: Resolve is safe for
// concurrent use, never blocks on I/O (flagd evaluates in process) and
// fails safe to legacy.
//
// Decisions without error are cached per (app, channel, event, room), in a
// bounded sharded map; the cache is dropped on every provider
// configuration-change, ready, error or stale event, and every
// Config.CacheTTL while Run runs (a safety net for missed events and
// time-based targeting).
//
// Lifecycle: NewResolver starts no goroutine; it registers the provider
// event handlers on the client, so that events drop the cache from the
// start. Run(ctx), in the process's errgroup, adds the CacheTTL expiry
// until ctx ends, then removes the handlers (as Close does) and returns.
// Close removes them from a Resolver used without Run, or before Run ends;
// it is idempotent. Resolve works from any goroutine in every state;
// without handlers, decisions live until CacheTTL (while Run runs) or
// until the cache evicts them.
type Resolver struct {
	client  openfeature.IClient
	env     string
	logger  *zap.Logger
	metrics *Metrics
	now     func() time.Time

	channels map[string]*channelState // configured channels and "default"
	cache    *decisionCache
	ttl      time.Duration
	gen      atomic.Uint64
	killOn   atomic.Bool // last value written to the kill switch gauge

	logMu   sync.Mutex
	logLast map[string]time.Time
	logSupp map[string]int

	internMu sync.Mutex
	interned map[broadcast.Route]*broadcast.Route

	handlers  map[openfeature.EventType]openfeature.EventCallback
	closeOnce sync.Once
	ran       atomic.Bool
}

var _ broadcast.StageResolver = (*Resolver)(nil)

type channelState struct {
	name, flagKey string
	evals         map[broadcast.Stage]prometheus.Counter
	errs          map[string]prometheus.Counter
}

// The provider events that invalidate the decision cache.
var invalidatingEvents = []openfeature.EventType{
	openfeature.ProviderConfigChange, openfeature.ProviderReady,
	openfeature.ProviderError, openfeature.ProviderStale,
}

// NewResolver returns a Resolver evaluating through client (typically
// openfeature.NewDefaultClient() after run.go set the provider). cfg
// supplies Env, Channels, CacheSize and CacheTTL; m may be shared; nil m
// means unregistered metrics, nil logger means none. It registers event
// handlers on client (no goroutine): the end of Run, or Close, removes
// them.
func NewResolver(cfg Config, client openfeature.IClient, m *Metrics, logger *zap.Logger) *Resolver {
	cfg = cfg.WithDefaults()
	if logger == nil {
		logger = zap.NewNop()
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	r := &Resolver{
		client:   client,
		env:      cfg.Env,
		logger:   logger,
		metrics:  m,
		now:      time.Now,
		channels: make(map[string]*channelState, len(cfg.Channels)+1),
		ttl:      cfg.CacheTTL,
		logLast:  make(map[string]time.Time),
		logSupp:  make(map[string]int),
		interned: make(map[broadcast.Route]*broadcast.Route),
	}
	for _, ch := range append([]string{broadcast.DefaultChannel}, cfg.Channels...) {
		cs := &channelState{
			name: ch, flagKey: FlagKey(ch),
			evals: make(map[broadcast.Stage]prometheus.Counter, broadcast.NumStages),
			errs:  make(map[string]prometheus.Counter, len(errorReasons)),
		}
		for _, s := range broadcast.Stages {
			cs.evals[s] = m.evaluations.WithLabelValues(ch, string(s))
		}
		for _, reason := range errorReasons {
			cs.errs[reason] = m.errors.WithLabelValues(ch, reason)
		}
		r.channels[ch] = cs
	}
	if cfg.CacheSize > 0 {
		r.cache = newDecisionCache(cfg.CacheSize)
	}
	r.handlers = make(map[openfeature.EventType]openfeature.EventCallback, len(invalidatingEvents))
	for _, t := range invalidatingEvents {
		fn := func(d openfeature.EventDetails) { r.onEvent(t, d) }
		r.handlers[t] = &fn
		if client != nil {
			client.AddHandler(t, &fn)
		}
	}
	return r
}

// Close removes the event handlers; Resolve keeps working (without cache
// invalidation by events, so entries then live up to Config.CacheTTL). It
// is idempotent.
func (r *Resolver) Close() error {
	r.closeOnce.Do(func() {
		if r.client != nil {
			for t, h := range r.handlers {
				r.client.RemoveHandler(t, h)
			}
		}
	})
	return nil
}

// Run drops the decision cache every Config.CacheTTL until ctx ends, so
// that no decision is served longer than that even if a provider event was
// missed or targeting depends on time ($flagd.timestamp). When ctx ends it
// removes the event handlers (Close) and returns nil. A second call
// returns an error at once. Without Run, only provider events drop the
// cache.
func (r *Resolver) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return errors.New("flags: Resolver.Run called more than once")
	}
	defer r.Close()
	if r.cache == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(r.ttl)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.gen.Add(1)
		}
	}
}

func (r *Resolver) onEvent(t openfeature.EventType, d openfeature.EventDetails) {
	r.gen.Add(1)
	if t == openfeature.ProviderConfigChange {
		r.metrics.configChanges.Inc()
		r.logger.Info("flag configuration changed", zap.Strings("flags", d.FlagChanges), zap.String("provider", d.ProviderName))
		return
	}
	if t != openfeature.ProviderReady {
		r.logger.Warn("flag provider event", zap.String("event", string(t)), zap.String("provider", d.ProviderName), zap.String("message", d.Message))
	}
}

// Resolve returns the stage of one message and why. q.Channel names a
// configured channel; "" or any other value uses the default channel's
// flag. On any evaluation error the stage is legacy, Route.Error says why,
// switchyard_flag_errors_total counts it and a log line is written at most
// once per ErrorLogInterval per reason.
func (r *Resolver) Resolve(q broadcast.RouteQuery) broadcast.Route {
	cs := r.channels[q.Channel]
	if cs == nil {
		cs = r.channels[broadcast.DefaultChannel]
	}
	var (
		buf  [256]byte
		key  []byte
		gen  uint64
		hash uint64
	)
	if r.cache != nil {
		gen = r.gen.Load()
		key = appendKey(buf[:0], q.App, cs.name, q.Event, q.Room)
		hash = r.cache.hash(key)
		if rt, ok := r.cache.get(hash, key, gen); ok {
			r.count(cs, rt)
			return *rt
		}
	}
	rt := r.evaluate(q, cs)
	r.count(cs, &rt)
	if r.cache != nil && rt.Error == "" {
		r.cache.put(hash, key, r.intern(rt), gen)
	}
	return rt
}

// intern returns a shared pointer to a Route equal to rt, so that cached
// entries of the same decision share one Route.
func (r *Resolver) intern(rt broadcast.Route) *broadcast.Route {
	r.internMu.Lock()
	defer r.internMu.Unlock()
	if p, ok := r.interned[rt]; ok {
		return p
	}
	if len(r.interned) >= maxInterned {
		clear(r.interned)
	}
	p := &rt
	r.interned[rt] = p
	return p
}

// maxInterned bounds the distinct decisions interned; a decision is a
// channel, flag, variant and reason, so real files stay far below it.
const maxInterned = 4096

func (r *Resolver) count(cs *channelState, rt *broadcast.Route) {
	if c := cs.evals[rt.Stage]; c != nil {
		c.Inc()
	}
	// Write the gauge only on change: a store per decision would make
	// every core contend for its cache line.
	if r.killOn.Load() != rt.KillSwitch && r.killOn.CompareAndSwap(!rt.KillSwitch, rt.KillSwitch) {
		if rt.KillSwitch {
			r.metrics.killSwitch.Set(1)
		} else {
			r.metrics.killSwitch.Set(0)
		}
	}
}

func (r *Resolver) evaluate(q broadcast.RouteQuery, cs *channelState) broadcast.Route {
	if r.client == nil {
		return r.fail(cs, q, KillSwitchKey, "", ReasonProviderNotReady, errors.New("no OpenFeature client"))
	}
	ec := openfeature.NewEvaluationContext(q.Room, map[string]any{
		"app": q.App, "env": r.env, "channel": cs.name, "event": q.Event,
	})
	ctx := context.Background()
	ks, err := r.client.BooleanValueDetails(ctx, KillSwitchKey, false, ec)
	if err != nil {
		return r.fail(cs, q, KillSwitchKey, ks.Variant, reasonOf(ks.ErrorCode), err)
	}
	if ks.Value {
		return broadcast.Route{
			Stage: broadcast.StageLegacy, Channel: cs.name, FlagKey: KillSwitchKey,
			Variant: ks.Variant, Reason: string(ks.Reason), KillSwitch: true,
		}
	}
	d, err := r.client.StringValueDetails(ctx, cs.flagKey, string(broadcast.StageLegacy), ec)
	if err != nil {
		return r.fail(cs, q, cs.flagKey, d.Variant, reasonOf(d.ErrorCode), err)
	}
	stage, perr := broadcast.ParseStage(d.Value)
	if perr != nil {
		return r.fail(cs, q, cs.flagKey, d.Variant, ReasonUnknownVariant, fmt.Errorf("variant %q: value %w", d.Variant, perr))
	}
	if d.Variant != "" && d.Variant != d.Value {
		return r.fail(cs, q, cs.flagKey, d.Variant, ReasonUnknownVariant,
			fmt.Errorf("variant %q is not a stage name (value %q); variants must be named after their stage", d.Variant, d.Value))
	}
	return broadcast.Route{
		Stage: stage, Channel: cs.name, FlagKey: cs.flagKey,
		Variant: d.Variant, Reason: string(d.Reason),
	}
}

func reasonOf(code openfeature.ErrorCode) string {
	switch code {
	case openfeature.ProviderNotReadyCode:
		return ReasonProviderNotReady
	case openfeature.ProviderFatalCode:
		return ReasonProviderFatal
	case openfeature.FlagNotFoundCode:
		return ReasonFlagNotFound
	case openfeature.TypeMismatchCode:
		return ReasonTypeMismatch
	case openfeature.ParseErrorCode:
		return ReasonParseError
	case openfeature.InvalidContextCode, openfeature.TargetingKeyMissingCode:
		return ReasonInvalidContext
	}
	return ReasonGeneral
}

func (r *Resolver) fail(cs *channelState, q broadcast.RouteQuery, flagKey, variant, reason string, err error) broadcast.Route {
	cs.errs[reason].Inc()
	msg := reason + ": " + err.Error()
	r.logLimited(reason, func(suppressed int) {
		r.logger.Warn("flag evaluation failed; using legacy",
			zap.String("reason", reason), zap.String("flag", flagKey), zap.String("channel", cs.name),
			zap.String("app", q.App), zap.Error(err), zap.Int("suppressed", suppressed))
	})
	return broadcast.Route{
		Stage: broadcast.StageLegacy, Channel: cs.name, FlagKey: flagKey,
		Variant: variant, Reason: string(openfeature.ErrorReason), Error: msg,
	}
}

// logLimited calls log at most once per ErrorLogInterval per reason,
// passing the number of calls suppressed since the last one.
func (r *Resolver) logLimited(reason string, log func(suppressed int)) {
	now := r.now()
	r.logMu.Lock()
	last, seen := r.logLast[reason]
	if seen && now.Sub(last) < ErrorLogInterval {
		r.logSupp[reason]++
		r.logMu.Unlock()
		return
	}
	n := r.logSupp[reason]
	r.logLast[reason] = now
	r.logSupp[reason] = 0
	r.logMu.Unlock()
	log(n)
}

// appendKey renders the cache key: each part length-prefixed so that no
// two distinct queries share a key.
func appendKey(dst []byte, parts ...string) []byte {
	for _, p := range parts {
		n := len(p)
		dst = append(dst, byte(n>>8), byte(n))
		dst = append(dst, p...)
	}
	return dst
}

const cacheShards = 64

// decisionCache is a bounded map of cached decisions, sharded by key hash
// with a mutex per shard. Routes are stored by pointer and never mutated.
type decisionCache struct {
	seed     maphash.Seed
	perShard int
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu  sync.RWMutex
	gen uint64
	m   map[string]cacheEntry
	_   [40]byte // keep hot shards on separate cache lines
}

type cacheEntry struct {
	route *broadcast.Route
	gen   uint64
}

func newDecisionCache(size int) *decisionCache {
	c := &decisionCache{seed: maphash.MakeSeed(), perShard: max(size/cacheShards, 1)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]cacheEntry)
	}
	return c
}

func (c *decisionCache) hash(key []byte) uint64 { return maphash.Bytes(c.seed, key) }

func (c *decisionCache) get(hash uint64, key []byte, gen uint64) (*broadcast.Route, bool) {
	s := &c.shards[hash%cacheShards]
	s.mu.RLock()
	e, ok := s.m[string(key)]
	s.mu.RUnlock()
	if !ok || e.gen != gen {
		return nil, false
	}
	return e.route, true
}

func (c *decisionCache) put(hash uint64, key []byte, rt *broadcast.Route, gen uint64) {
	s := &c.shards[hash%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen < gen {
		// Everything older than gen is stale: drop it all at once.
		clear(s.m)
		s.gen = gen
	}
	if gen < s.gen {
		return // evaluated before an invalidation; do not cache
	}
	if _, ok := s.m[string(key)]; !ok && len(s.m) >= c.perShard {
		for k := range s.m { // random victim: map iteration starts anywhere
			delete(s.m, k)
			break
		}
	}
	s.m[string(key)] = cacheEntry{route: rt, gen: gen}
}

func (c *decisionCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
