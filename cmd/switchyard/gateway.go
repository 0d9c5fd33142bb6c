package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/flags"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/shadow"
	"github.com/switchyard/switchyard/upstream"
)

// gateway is one running Switchyard: everything is built here, in one
// place, from the validated config. Build it with newGateway (which also
// binds both listeners, so their addresses are known at once), run it with
// Run, which serves until ctx ends and then shuts down in order.
type gateway struct {
	cfg      *config.Config
	log      *zap.Logger
	reg      *prometheus.Registry
	api      *api.Server
	mc       *broadcast.Multicaster
	cmp      *shadow.Comparator
	lgWatch  *legacyparty.Watcher
	rtWatch  *realtime.Watcher
	resolver *flags.Resolver
	recorder *recorder

	publicLn, adminLn   net.Listener
	publicSrv, adminSrv *http.Server
	started             time.Time
}

// gatewayHooks let the demo and tests adjust a gateway without a second
// wiring path.
type gatewayHooks struct {
	now func() time.Time
	// httpClient, when set, replaces the shared upstream client.
	httpClient *http.Client
}

func newGateway(cfg *config.Config, logger *zap.Logger, hooks gatewayHooks) (_ *gateway, err error) {
	started := time.Now()
	if hooks.now == nil {
		hooks.now = time.Now
	}
	g := &gateway{cfg: cfg, log: logger, reg: prometheus.NewRegistry(), started: started}
	providerSet := false
	defer func() { // a failed start releases what it had started
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
		if g.resolver != nil {
			_ = g.resolver.Close()
		}
		if providerSet {
			openfeature.Shutdown()
		}
	}()
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "switchyard_build_info", Help: "Always 1; labels name the build."}, []string{"version", "goversion"})
	g.reg.MustRegister(buildInfo)
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)

	channels, err := broadcast.NewChannels(channelSpecs(cfg))
	if err != nil {
		return nil, fmt.Errorf("channels: %w", err)
	}

	// Upstreams: one shared transport, one policy.
	hc := hooks.httpClient
	if hc == nil {
		hc = &http.Client{Transport: upstream.NewTransport(cfg.Upstream.MaxConnsPerHost)}
	}
	policy := upstream.Policy{
		Timeout: cfg.Upstream.Timeout, AttemptTimeout: cfg.Upstream.AttemptTimeout, MaxAttempts: cfg.Upstream.MaxAttempts,
		BackoffBase: cfg.Upstream.BackoffBase, BackoffMax: cfg.Upstream.BackoffMax,
	}
	um := upstream.NewMetrics(g.reg)
	legacyRouter, realtimeRouter := broadcast.AppRouter{}, broadcast.AppRouter{}
	partyCfgs := map[string]legacyparty.Config{}
	rtClients := map[string]*realtime.Client{}
	limits := map[string]broadcast.AppLimits{}
	apiApps := map[string]api.App{}
	for _, name := range cfg.AppNames() {
		a := cfg.Apps[name]
		pc := legacyparty.Config{URL: a.Party.URL, Party: a.Party.Party, PathPrefix: a.Party.PathPrefix,
			SecretHeader: a.Party.SecretHeader, Secret: a.Party.Secret, Policy: policy}
		lc, err := legacyparty.NewClient(pc, hc, um, logger.Named("legacyparty").With(zap.String("app", name)))
		if err != nil {
			return nil, fmt.Errorf("apps.%s.party: %w", name, err)
		}
		legacyRouter[name] = lc
		partyCfgs[name] = pc
		rc, err := realtime.NewClient(name, realtime.Config{URL: a.Realtime.URL, SigningKey: a.Realtime.SigningKey,
			FallbackSigningKey: a.Realtime.FallbackSigningKey, ChannelTemplate: a.Realtime.Channel,
			Topics: a.Realtime.Topics, Policy: policy}, hc, um, logger.Named("realtime"))
		if err != nil {
			return nil, fmt.Errorf("apps.%s.realtime: %w", name, err)
		}
		realtimeRouter[name] = rc
		rtClients[name] = rc
		limits[name] = broadcast.AppLimits{RatePerSecond: a.RateLimit.PerSecond, Burst: a.RateLimit.Burst}
		aa := api.App{Name: name, DropInHeader: a.DropIn.Header, DropInSecret: a.DropIn.Secret, Origins: a.Origins}
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
		apiApps[name] = aa
	}

	// Flags: the provider is process-global; this is the only place that
	// sets it.
	fcfg := flags.Config{Provider: cfg.Flags.Provider, File: cfg.Flags.File, FlagdHost: cfg.Flags.Host,
		FlagdPort: cfg.Flags.Port, FlagdTargetURI: cfg.Flags.TargetURI, Env: cfg.Env,
		Channels: cfg.ChannelNames(), PollInterval: cfg.Flags.PollInterval}
	fm := flags.NewMetrics(g.reg)
	provider, err := flags.NewProvider(fcfg, logger.Named("flags"), flags.WithMetrics(fm))
	if err != nil {
		return nil, err
	}
	providerSet = true
	if err := openfeature.SetProviderAndWait(provider); err != nil {
		return nil, fmt.Errorf("flags: provider did not start: %w", err)
	}
	g.resolver = flags.NewResolver(fcfg, openfeature.NewClient("switchyard"), fm, logger.Named("flags"))

	// Comparator: browser-like watchers on both transports.
	g.lgWatch, err = legacyparty.NewWatcher(partyCfgs, um, logger.Named("shadow.legacy"))
	if err != nil {
		return nil, err
	}
	g.rtWatch = realtime.NewWatcher(rtClients, channels.Names(), um, logger.Named("shadow.realtime"))
	scfg := shadow.Config{Timeout: cfg.Shadow.Timeout, IdleTTL: cfg.Shadow.IdleTTL, MaxRooms: cfg.Shadow.MaxRooms,
		MaxPending: cfg.Shadow.MaxPending, Window: cfg.Shadow.Window, Channels: map[string]shadow.ChannelConfig{}}
	for _, ch := range cfg.Channels {
		scfg.Channels[ch.Name] = shadow.ChannelConfig{IgnorePaths: ch.IgnorePaths, RedactPaths: ch.RedactPaths, Timeout: ch.Timeout}
	}
	if err := scfg.Validate(); err != nil {
		return nil, fmt.Errorf("shadow: %w", err)
	}
	g.cmp = shadow.New(scfg, g.lgWatch, g.rtWatch, shadow.NewMetrics(g.reg), logger.Named("shadow"), hooks.now)

	g.mc = broadcast.NewMulticaster(broadcast.Config{
		Apps: limits, Channels: cfg.ChannelNames(),
		OffPathQueue: cfg.Multicast.OffPathQueue, OffPathWorkers: cfg.Multicast.OffPathWorkers,
		OffPathTimeout: cfg.Multicast.OffPathTimeout, DedupWindow: cfg.Multicast.DedupWindow,
		DedupMaxEntries: cfg.Multicast.DedupMaxEntries, SampleRate: cfg.SampleRate,
	}, legacyRouter, realtimeRouter, g.resolver, g.cmp, broadcast.NewMetrics(g.reg), logger.Named("multicast"), hooks.now)

	if cfg.Record.File != "" {
		g.recorder, err = newRecorder(cfg.Record, logger.Named("record"))
		if err != nil {
			return nil, fmt.Errorf("record.file: %w", err)
		}
	}

	minter := &api.TokenCache{}
	deps := api.Deps{
		Broadcaster: g.mc, Resolver: g.resolver, Gatherer: g.reg,
		ShadowSummary:    g.cmp.Summary,
		ShadowMismatches: g.cmp.Mismatches,
		Tokens:           minter.Wrap(realtimeMinter(rtClients), logger),
		Channels:         channels.Names,
	}
	if g.recorder != nil {
		deps.Recorder = g.recorder.Record
	}
	deps.StatusPage = newStatusPage(g)
	g.api = api.New(api.Config{Env: cfg.Env, Apps: apiApps, ChannelOf: channels.Of, MaxBodyBytes: cfg.Server.MaxBodyBytes,
		AdminToken: cfg.Admin.Token}, deps, api.NewMetrics(g.reg), logger.Named("api"), hooks.now)
	g.api.SetReady(false)

	if g.publicLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if g.adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
		return nil, fmt.Errorf("admin.listen: %w", err)
	}
	g.publicSrv = g.server(g.api.Public())
	g.adminSrv = g.server(g.api.Admin())
	return g, nil
}

func (g *gateway) server(h http.Handler) *http.Server {
	s := g.cfg.Server
	return &http.Server{
		Handler: h, ReadHeaderTimeout: s.ReadHeaderTimeout, ReadTimeout: s.ReadTimeout,
		WriteTimeout: s.WriteTimeout, IdleTimeout: s.IdleTimeout, MaxHeaderBytes: s.MaxHeaderBytes,
		ErrorLog: zap.NewStdLog(g.log.Named("http")),
	}
}

func (g *gateway) closeListeners() {
	for _, ln := range []net.Listener{g.publicLn, g.adminLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// publicURL and adminURL are the bound addresses as base URLs.
func (g *gateway) publicURL() string { return "http://" + g.publicLn.Addr().String() }
func (g *gateway) adminURL() string  { return "http://" + g.adminLn.Addr().String() }

// Run serves until ctx ends, then shuts down in order within
// server.shutdownTimeout: readyz goes 503, the public listener stops taking
// requests and waits for in-flight ones, the off-path queues drain, the
// comparator's subscriptions close, the admin listener stops last.
func (g *gateway) Run(ctx context.Context) error {
	grp, gctx := errgroup.WithContext(ctx)
	bgCtx, stopBg := context.WithCancel(context.Background())
	defer stopBg()
	bg, _ := errgroup.WithContext(bgCtx)
	bg.Go(func() error { return g.mc.Run(bgCtx) })
	bg.Go(func() error { return g.cmp.Run(bgCtx) })
	bg.Go(func() error { return g.lgWatch.Run(bgCtx) })
	bg.Go(func() error { return g.rtWatch.Run(bgCtx) })
	bg.Go(func() error { return g.resolver.Run(bgCtx) })
	grp.Go(func() error { return serve(g.publicSrv, g.publicLn) })
	grp.Go(func() error { return serve(g.adminSrv, g.adminLn) })
	g.api.SetReady(true)
	g.log.Info("switchyard ready",
		zap.String("public", g.publicLn.Addr().String()), zap.String("admin", g.adminLn.Addr().String()),
		zap.String("env", g.cfg.Env), zap.Int("apps", len(g.cfg.Apps)), zap.Duration("startup", time.Since(g.started)))

	<-gctx.Done()
	g.api.SetReady(false)
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.Server.ShutdownTimeout)
	defer cancel()
	g.log.Info("shutting down", zap.Duration("deadline", g.cfg.Server.ShutdownTimeout))
	if err := g.publicSrv.Shutdown(sctx); err != nil {
		g.log.Warn("public listener did not drain", zap.Error(err))
	}
	rep := g.mc.Close(sctx)
	g.log.Info("off-path queues drained", zap.Int("drained", rep.Drained), zap.Int("dropped", rep.Dropped), zap.Int("unfinished", rep.Unfinished))
	stopBg()
	if err := bg.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		g.log.Warn("background component ended with an error", zap.Error(err))
	}
	if g.recorder != nil {
		if err := g.recorder.Close(); err != nil {
			g.log.Warn("recorder close", zap.Error(err))
		}
	}
	_ = g.resolver.Close()
	_ = openfeature.ShutdownWithContext(sctx)
	if err := g.adminSrv.Shutdown(sctx); err != nil {
		g.log.Warn("admin listener did not drain", zap.Error(err))
	}
	err := grp.Wait()
	g.log.Info("switchyard stopped")
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func serve(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

func channelSpecs(cfg *config.Config) []broadcast.ChannelSpec {
	out := make([]broadcast.ChannelSpec, len(cfg.Channels))
	for i, ch := range cfg.Channels {
		out[i] = broadcast.ChannelSpec{Name: ch.Name, Events: ch.Events}
	}
	return out
}

// realtimeMinter mints through each app's realtime client: one token per
// realtime channel the room's live channels map to.
func realtimeMinter(clients map[string]*realtime.Client) api.TokenMinter {
	return api.TokenMinterFunc(func(ctx context.Context, app, room string, channels []string) ([]api.Token, error) {
		c, ok := clients[app]
		if !ok {
			return nil, broadcast.Errorf(broadcast.ENOTFOUND, "app %q has no realtime configuration", app)
		}
		byChannel := map[string][]string{}
		var order []string
		for _, ch := range channels {
			rc := c.Channel(room, ch)
			if _, ok := byChannel[rc]; !ok {
				order = append(order, rc)
			}
			byChannel[rc] = append(byChannel[rc], ch)
		}
		out := make([]api.Token, 0, len(order))
		for _, rc := range order {
			t, err := c.MintToken(ctx, rc, c.TopicsFor(byChannel[rc]))
			if err != nil {
				return nil, fmt.Errorf("mint token for app %q: %w", app, err)
			}
			out = append(out, api.Token{Key: t.Key, Channel: t.Channel, Topics: t.Topics, ExpiresAt: t.ExpiresAt})
		}
		return out, nil
	})
}
