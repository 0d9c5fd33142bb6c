// Package gateway is the one wiring of Switchyard: it builds every
// component from a validated config.Config and runs them under one
// lifecycle. The serve and demo commands, the end-to-end tests and the load
// generator all build their gateway here, so there is no second wiring to
// drift. Nothing here touches process-global state: the OpenFeature API is
// an isolated instance per Gateway, the Prometheus registry is the
// Gateway's own, the logger is passed in.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/dedupredis"
	"github.com/switchyard/switchyard/flags"
	"github.com/switchyard/switchyard/internal/h1serve"
	"github.com/switchyard/switchyard/internal/rawio"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/receipts"
	"github.com/switchyard/switchyard/recording"
	"github.com/switchyard/switchyard/shadow"
	"github.com/switchyard/switchyard/status"
	"github.com/switchyard/switchyard/upstream"
)

// Gateway is one Switchyard: build it with New (which also binds both
// listeners, so their addresses are known at once), run it with Run, which
// serves until ctx ends or a component fails, then shuts down in order.
// The accessors are safe for concurrent use once New returned.
type Gateway struct {
	cfg      *config.Config
	opts     Options
	log      *zap.Logger
	reg      *prometheus.Registry
	of       *openfeature.EvaluationAPI
	api      *api.Server
	mc       *broadcast.Multicaster
	cmp      *shadow.Comparator
	rtWatch  *realtime.Watcher
	lgWatch  *legacyparty.Watcher
	resolver *flags.Resolver
	recorder *recording.Recorder
	receipts *receipts.Aggregator
	dedup    *dedupredis.Store // nil unless idempotency.store is redis

	publicLn, adminLn net.Listener
	// rawPublic and rawUpstream: server.socketIO raw applied to the public
	// listener and to the upstream transport the gateway built.
	rawPublic, rawUpstream bool
	publicSrv, adminSrv    *http.Server
	// publicLoop serves the public listener: the publish routes itself,
	// the rest through publicSrv.
	publicLoop *h1serve.Server
	// publicConns counts the public listener's open connections;
	// publicClosed is set when the shutdown closed that listener itself.
	publicConns  atomic.Int64
	publicClosed atomic.Bool
	started      time.Time
}

// Options adjust a Gateway without a second wiring path. The zero value is
// what serve uses.
type Options struct {
	// Now is the clock of the comparator, the API and the status page (nil:
	// time.Now).
	Now func() time.Time
	// HTTPClient, when set, replaces the shared upstream client.
	HTTPClient *http.Client
	// Version is the build's version, shown by the status page and in
	// switchyard_build_info ("dev" when empty).
	Version string
}

// plan is everything a Gateway is built from, derived from the config by
// pure functions: building it runs every check a start runs before it
// touches a file or a socket.
type plan struct {
	channels  *broadcast.Channels
	party     map[string]legacyparty.Config
	realtime  map[string]realtime.Config
	apiApps   map[string]api.App
	flags     flags.Config
	shadow    shadow.Config
	multicast broadcast.Config
	record    *recording.Config
}

// Check runs every check New runs before it opens a file or a socket:
// `switchyard config check` calls it, so check and serve cannot disagree
// about a config. Errors name the config field.
func Check(cfg *config.Config) error {
	p, err := newPlan(cfg)
	if err != nil {
		return err
	}
	// Constructing the clients validates what only they know (URLs joined
	// with paths, templates); they start nothing.
	um := upstream.NewMetrics(prometheus.NewRegistry())
	for _, name := range cfg.AppNames() {
		if _, err := legacyparty.NewClient(p.party[name], http.DefaultClient, um, nil); err != nil {
			return fmt.Errorf("apps.%s.party: %w", name, err)
		}
		if _, err := realtime.NewClient(name, p.realtime[name], http.DefaultClient, um, nil); err != nil {
			return fmt.Errorf("apps.%s.realtime: %w", name, err)
		}
	}
	if _, err := legacyparty.NewWatcher(p.party, um, nil); err != nil {
		return fmt.Errorf("apps: %w", err)
	}
	return nil
}

func newPlan(cfg *config.Config) (*plan, error) {
	// config.Load validated every package configuration below (config
	// calls each package's Validate); deriving them again here is pure.
	p := &plan{
		party: map[string]legacyparty.Config{}, realtime: map[string]realtime.Config{},
		apiApps: map[string]api.App{},
		flags:   cfg.FlagsConfig(), shadow: cfg.ShadowConfig(), multicast: cfg.MulticastConfig(),
	}
	var err error
	if p.channels, err = broadcast.NewChannels(cfg.ChannelSpecs()); err != nil {
		return nil, fmt.Errorf("channels: %w", err)
	}
	for _, name := range cfg.AppNames() {
		a := cfg.Apps[name]
		p.party[name], p.realtime[name] = cfg.PartyConfig(name), cfg.RealtimeConfig(name)
		aa := api.App{Name: name, DropInHeader: a.DropIn.Header, DropInSecret: a.DropIn.Secret, Origins: a.Origins,
			Sequenced: a.Sequence, Parties: p.realtime[name].Parties}
		for _, k := range a.APIKeys {
			aa.KeyHashes = append(aa.KeyHashes, api.HashKey(k))
		}
		for _, h := range a.APIKeySHA256 {
			d, err := api.ParseKeyHash(h)
			if err != nil {
				return nil, fmt.Errorf("apps.%s.apiKeySha256: %w", name, err)
			}
			aa.KeyHashes = append(aa.KeyHashes, d)
		}
		if a.GrantSecret != "" {
			aa.GrantSecret = []byte(a.GrantSecret)
		}
		p.apiApps[name] = aa
	}
	if cfg.Record.File != "" {
		rc := cfg.RecordConfig()
		p.record = &rc
	}
	return p, nil
}

// New builds a Gateway from a validated config: every component is
// constructed inert (nothing runs until Run), the flag provider is started
// on the Gateway's own OpenFeature API instance, and both listeners are
// bound. logger nil is a no-op logger. A failed New releases everything it
// had acquired. Several gateways may be built and run in one process,
// concurrently.
func New(cfg *config.Config, logger *zap.Logger, opts Options) (_ *Gateway, err error) {
	started := time.Now()
	if logger == nil {
		logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	p, err := newPlan(cfg)
	if err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, opts: opts, log: logger, reg: prometheus.NewRegistry(), of: isolated.NewAPI(), started: started}
	defer func() { // a failed start releases what it had acquired
		if err == nil {
			return
		}
		g.closeListeners()
		if g.mc != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			g.mc.Close(ctx)
			cancel()
		}
		if g.recorder != nil {
			_ = g.recorder.Close()
		}
		if g.dedup != nil {
			_ = g.dedup.Close()
		}
		if g.resolver != nil {
			_ = g.resolver.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = g.of.Shutdown(ctx)
		cancel()
	}()
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "switchyard_build_info", Help: "Always 1; labels name the build."}, []string{"version", "goversion"})
	g.reg.MustRegister(buildInfo)
	buildInfo.WithLabelValues(opts.Version, runtime.Version()).Set(1)

	// Upstreams: one shared transport, one policy.
	hc := opts.HTTPClient
	if hc == nil {
		to := cfg.Upstream.TransportOptions()
		to.RawSocketIO = cfg.Server.SocketIO == config.SocketIORaw
		hc = &http.Client{Transport: upstream.NewTransportWith(to)}
		g.rawUpstream = to.RawSocketIO
	}
	um := upstream.NewMetrics(g.reg)
	legacyRouter, realtimeRouter := broadcast.AppRouter{}, broadcast.AppRouter{}
	rtClients := map[string]*realtime.Client{}
	for _, name := range cfg.AppNames() {
		lc, err := legacyparty.NewClient(p.party[name], hc, um, logger.Named("legacyparty").With(zap.String("app", name)))
		if err != nil {
			return nil, fmt.Errorf("apps.%s.party: %w", name, err)
		}
		legacyRouter[name] = lc
		rc, err := realtime.NewClient(name, p.realtime[name], hc, um, logger.Named("realtime"))
		if err != nil {
			return nil, fmt.Errorf("apps.%s.realtime: %w", name, err)
		}
		realtimeRouter[name] = rc
		rtClients[name] = rc
	}

	// Flags: the provider runs on this Gateway's own OpenFeature API.
	fm := flags.NewMetrics(g.reg)
	provider, err := flags.NewProvider(p.flags, logger.Named("flags"), flags.WithMetrics(fm))
	if err != nil {
		return nil, err
	}
	if err := g.of.SetProviderAndWait(context.Background(), provider); err != nil {
		return nil, fmt.Errorf("flags: provider did not start: %w", err)
	}
	g.resolver = flags.NewResolver(p.flags, g.of.NewClient(), fm, logger.Named("flags"))

	// Comparator: browser-like watchers on both transports.
	if g.lgWatch, err = legacyparty.NewWatcher(p.party, um, logger.Named("shadow.legacy")); err != nil {
		return nil, err
	}
	g.rtWatch = realtime.NewWatcher(rtClients, p.channels.Names(), um, logger.Named("shadow.realtime"))
	g.cmp = shadow.New(p.shadow, g.lgWatch, g.rtWatch, shadow.NewMetrics(g.reg), logger.Named("shadow"), opts.Now)

	// Idempotency shared by the replicas (Redis), when configured; it
	// connects lazily, so a Redis down at start fails open rather than
	// stopping the gateway.
	if cfg.Idempotency.Store == config.IdempotencyRedis {
		if g.dedup, err = dedupredis.New(cfg.RedisConfig()); err != nil {
			return nil, fmt.Errorf("idempotency.redis: %w", err)
		}
		p.multicast.SharedDedup = g.dedup
	}
	g.mc = broadcast.NewMulticaster(p.multicast, legacyRouter, realtimeRouter, g.resolver, g.cmp,
		broadcast.NewMetrics(g.reg), logger.Named("multicast"), opts.Now)

	if p.record != nil {
		if g.recorder, err = recording.New(*p.record, logger.Named("record")); err != nil {
			return nil, fmt.Errorf("record: %w", err)
		}
	}

	// Receipts: what users' browsers report receiving.
	g.receipts = receipts.New(receipts.Config{Apps: cfg.AppNames(), Channels: p.channels.Names()},
		receipts.NewMetrics(g.reg), opts.Now)

	minter := &api.TokenCache{}
	deps := api.Deps{
		Broadcaster: g.mc, Resolver: g.resolver, Gatherer: g.reg,
		ShadowSummary:    g.cmp.Summary,
		ShadowMismatches: g.cmp.Mismatches,
		Tokens:           minter.Wrap(realtimeMinter(rtClients), logger),
		Channels:         p.channels.Names,
		Topic: func(app, channel string) string {
			if c, ok := rtClients[app]; ok {
				return c.Topic(channel)
			}
			return channel
		},
		Events: p.channels.Events,
		RealtimeURL: func(app string) string {
			if c, ok := rtClients[app]; ok {
				return c.URL()
			}
			return ""
		},
		Sequence:        g.mc.RoomSequence,
		SequenceChannel: g.mc.SequenceChannel,
		Receipts:        g.receipts,
		ReceiptsSummary: g.receipts.Summary,
	}
	if g.recorder != nil {
		deps.Recorder = g.recorder.Record
	}
	deps.Warm = func(app, room string, channels []string) {
		for _, ch := range channels {
			if g.mc.Sampled(app, room, ch) {
				g.cmp.Warm(app, room)
				return
			}
		}
	}
	flagFile := ""
	if cfg.Flags.Provider == "" || cfg.Flags.Provider == flags.ProviderFile {
		flagFile = cfg.Flags.File
	}
	instance, _ := os.Hostname()
	deps.StatusPage = status.New(status.Config{
		Env: cfg.Env, Version: opts.Version, Instance: instance, Started: started,
		Apps: cfg.AppNames(), Channels: append(cfg.ChannelNames(), broadcast.DefaultChannel), FlagFile: flagFile,
		Resolve: g.resolver.Resolve, Summary: g.cmp.Summary, Mismatches: g.cmp.Mismatches,
		Receipts: g.receipts.Summary,
		Gatherer: g.reg, Now: opts.Now, Log: logger.Named("status"),
	})
	g.api = api.New(api.Config{Env: cfg.Env, Apps: p.apiApps, ChannelOf: p.channels.Of, MaxBodyBytes: cfg.Server.MaxBodyBytes,
		AdminToken: cfg.Admin.Token, MaxHeaderBytes: cfg.Server.MaxHeaderBytes}, deps, api.NewMetrics(g.reg), logger.Named("api"), opts.Now)
	g.api.SetReady(false)

	// Both listeners frame requests strictly before net/http parses them
	// (api.Server.GuardListener: request smuggling).
	if g.publicLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if cfg.Server.SocketIO == config.SocketIORaw {
		g.publicLn = rawio.Listener(g.publicLn)
		g.rawPublic = true
	}
	g.publicLn = g.api.GuardListener(g.publicLn)
	if g.adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
		return nil, fmt.Errorf("admin.listen: %w", err)
	}
	g.adminLn = g.api.GuardListener(g.adminLn)
	g.publicSrv = g.server(g.api.Public())
	countConns := func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			g.publicConns.Add(1)
		case http.StateClosed, http.StateHijacked:
			g.publicConns.Add(-1)
		}
	}
	g.publicSrv.ConnState = countConns
	// The publish routes are served by a loop of our own; every other
	// request, and the rest of its connection, by publicSrv.
	g.publicLoop = h1serve.New(h1serve.Config{
		Handler: g.publicSrv.Handler, Fast: g.api.FastRoute, Fallback: g.publicSrv,
		MaxBodyBytes: cfg.Server.MaxBodyBytes, ConnState: countConns, Log: g.log.Named("http"),
	})
	g.adminSrv = g.server(g.api.Admin())
	return g, nil
}

// rawIO reports whether the public listener's connections and the
// upstream publish connections make raw system calls (server.socketIO).
func (g *Gateway) rawIO() bool { return g.rawPublic && g.rawUpstream }

// public serves the public listener: the own loop, or net/http alone
// with server.publishLoop nethttp.
func (g *Gateway) public() interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
} {
	if g.cfg.Server.PublishLoop == config.PublishLoopNetHTTP {
		return g.publicSrv
	}
	return g.publicLoop
}

func (g *Gateway) server(h http.Handler) *http.Server {
	s := g.cfg.Server
	return &http.Server{
		Handler: h, ReadHeaderTimeout: s.ReadHeaderTimeout, ReadTimeout: s.ReadTimeout,
		WriteTimeout: s.WriteTimeout, IdleTimeout: s.IdleTimeout, MaxHeaderBytes: s.MaxHeaderBytes,
		ErrorLog: zap.NewStdLog(g.log.Named("http")),
	}
}

func (g *Gateway) closeListeners() {
	for _, ln := range []net.Listener{g.publicLn, g.adminLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// PublicURL is the public listener's bound address as a base URL.
func (g *Gateway) PublicURL() string { return "http://" + g.publicLn.Addr().String() }

// AdminURL is the admin listener's bound address as a base URL.
func (g *Gateway) AdminURL() string { return "http://" + g.adminLn.Addr().String() }

// Comparator is the gateway's shadow comparator (the demo reads its
// summary).
func (g *Gateway) Comparator() *shadow.Comparator { return g.cmp }

// Receipts is the gateway's aggregator of browser receipts.
func (g *Gateway) Receipts() *receipts.Aggregator { return g.receipts }

// Resolver is the gateway's stage resolver.
func (g *Gateway) Resolver() *flags.Resolver { return g.resolver }

// Registry is the gateway's own Prometheus registry.
func (g *Gateway) Registry() *prometheus.Registry { return g.reg }

// component is a long-lived part run under Run's errgroup.
type component struct {
	name string
	run  func(context.Context) error
}

// Run serves until ctx ends or a component fails, then shuts down in order.
// First, for the load balancer: readyz goes 503 at once and the public
// listener keeps serving for shutdown.delay, every answer with
// Connection: close (api.Server.SetLeaving). Then, within
// server.shutdownTimeout: requests still arriving on open connections get
// 503 draining (SetDraining), the public listener stops accepting and waits
// for in-flight requests, the off-path queues drain, the background
// components (comparator, watchers, resolver, recorder) are stopped, the
// flag provider shuts down, the admin listener stops last.
//
// Every long-lived component runs under one errgroup; the first one to fail
// (return an error while it was meant to run) is logged at once and starts
// the shutdown, and Run returns that error. Run returns nil after a clean
// stop through ctx. Call it once.
func (g *Gateway) Run(ctx context.Context) error {
	trigger, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	// Background components outlive the trigger: they stop only after the
	// public listener and the off-path queues drained.
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBg()
	var bg errgroup.Group
	start := func(c component, ctx context.Context) {
		bg.Go(func() error {
			err := c.run(ctx)
			if err != nil && ctx.Err() == nil {
				g.log.Error("component failed; shutting down", zap.String("component", c.name), zap.Error(err))
				stop(fmt.Errorf("%s: %w", c.name, err))
				return err
			}
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, http.ErrServerClosed) {
				g.log.Warn("component ended with an error during shutdown", zap.String("component", c.name), zap.Error(err))
			}
			return nil
		})
	}
	for _, c := range g.components() {
		start(c, bgCtx)
	}
	var srv errgroup.Group
	for _, s := range []struct {
		name string
		srv  interface{ Serve(net.Listener) error }
		ln   net.Listener
	}{{"public listener", g.public(), g.publicLn}, {"admin listener", g.adminSrv, g.adminLn}} {
		srv.Go(func() error {
			err := s.srv.Serve(s.ln)
			if s.name == "public listener" && g.publicClosed.Load() && errors.Is(err, net.ErrClosed) {
				err = nil // the shutdown closed it (see drainPublic)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				err = fmt.Errorf("serve %s: %w", s.ln.Addr(), err)
				g.log.Error("listener failed; shutting down", zap.String("component", s.name), zap.Error(err))
				stop(err)
				return err
			}
			return nil
		})
	}
	g.api.SetReady(true)
	g.log.Info("switchyard ready",
		zap.String("public", g.publicLn.Addr().String()), zap.String("admin", g.adminLn.Addr().String()),
		zap.String("env", g.cfg.Env), zap.Int("apps", len(g.cfg.Apps)), zap.Duration("startup", time.Since(g.started)))

	<-trigger.Done()
	cause := context.Cause(trigger)
	g.api.SetReady(false)
	g.api.SetLeaving()
	delay := g.cfg.Shutdown.DelayOrZero()
	if delay > 0 {
		g.log.Info("shutting down: readyz 503, serving for shutdown.delay", zap.Duration("delay", delay))
		t := time.NewTimer(delay)
		<-t.C
	}
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.Server.ShutdownTimeout)
	defer cancel()
	g.log.Info("shutting down", zap.Duration("deadline", g.cfg.Server.ShutdownTimeout))
	g.drainPublic(sctx, min(delay, maxDrainGrace))
	if err := g.public().Shutdown(sctx); err != nil {
		g.log.Warn("public listener did not drain", zap.Error(err))
	}
	rep := g.mc.Close(sctx)
	g.log.Info("off-path queues drained", zap.Int("drained", rep.Drained), zap.Int("dropped", rep.Dropped), zap.Int("unfinished", rep.Unfinished))
	if g.dedup != nil {
		_ = g.dedup.Close()
	}
	stopBg()
	_ = bg.Wait() // failures were logged when they happened
	_ = g.resolver.Close()
	if err := g.of.Shutdown(sctx); err != nil {
		g.log.Warn("flag provider shutdown", zap.Error(err))
	}
	if err := g.adminSrv.Shutdown(sctx); err != nil {
		g.log.Warn("admin listener did not drain", zap.Error(err))
	}
	_ = srv.Wait()
	g.log.Info("switchyard stopped")
	if cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
		return cause
	}
	return nil
}

// maxDrainGrace bounds drainPublic's wait for open connections.
const maxDrainGrace = time.Second

// drainPublic is the end of shutdown.delay: from now on every request on
// the public listener is answered 503 draining with Connection: close, and
// the listener stops accepting. The connections still open (idle
// keep-alive ones, or one whose request is on its way) get grace, at most
// until ctx ends, to send it and be answered rather than be cut
// (http.Server.Shutdown would close an idle connection, and drop a request
// it reads after it began, without an answer); then Shutdown closes what
// is left.
func (g *Gateway) drainPublic(ctx context.Context, grace time.Duration) {
	g.api.SetDraining()
	g.publicClosed.Store(true)
	if err := g.publicLn.Close(); err != nil {
		g.log.Warn("closing the public listener", zap.Error(err))
	}
	if grace <= 0 {
		return
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for g.publicConns.Load() > 0 {
		select {
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		case <-poll.C:
		}
	}
}

// components lists the long-lived parts Run starts, each with its own
// Run(ctx) error.
func (g *Gateway) components() []component {
	cs := []component{
		{"multicaster", g.mc.Run},
		{"comparator", g.cmp.Run},
		{"legacy watcher", g.lgWatch.Run},
		{"realtime watcher", g.rtWatch.Run},
		{"flag resolver", g.resolver.Run},
	}
	if g.recorder != nil {
		cs = append(cs, component{"recorder", g.recorder.Run})
	}
	return cs
}

// realtimeMinter mints through each app's realtime client: one token per
// realtime channel the room's live channels map to (Client.GroupChannels).
func realtimeMinter(clients map[string]*realtime.Client) api.TokenMinter {
	return api.TokenMinterFunc(func(ctx context.Context, app, room string, channels []string) ([]broadcast.Token, error) {
		c, ok := clients[app]
		if !ok {
			return nil, broadcast.Errorf(broadcast.ENOTFOUND, "app %q has no realtime configuration", app)
		}
		groups := c.GroupChannels(room, channels)
		out := make([]broadcast.Token, 0, len(groups))
		for _, g := range groups {
			t, err := c.MintToken(ctx, g.Channel, g.Topics)
			if err != nil {
				return nil, fmt.Errorf("mint token for app %q: %w", app, err)
			}
			out = append(out, t)
		}
		return out, nil
	})
}
