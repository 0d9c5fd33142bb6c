package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/flags"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/upstream"
)

// inProcess is the gateway's publish path wired in this process as
// cmd/switchyard wires it (api, multicast, flag resolver on the file
// provider, both upstream clients on one shared transport), without the
// comparator (its sampling is off in the benchmark too), so that it can be
// profiled with runtime/pprof.
type inProcess struct {
	srv      *http.Server
	public   string
	mc       *broadcast.Multicaster
	resolver *flags.Resolver
}

func startInProcess(dir string, up *fakeUpstreams) (*inProcess, error) {
	if err := os.WriteFile(filepath.Join(dir, "flags.json"), []byte(stageFlags("shadow")), 0o644); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(path, []byte(gatewayConfig(up.partyURL, up.realtimeURL)), 0o644); err != nil {
		return nil, err
	}
	cfg, err := config.Load(path, func(k string) string {
		if k == "LOADGEN_KEY" {
			return loadKey
		}
		return ""
	})
	if err != nil {
		return nil, err
	}
	log := zap.NewNop()
	reg := prometheus.NewRegistry()
	specs := make([]broadcast.ChannelSpec, len(cfg.Channels))
	for i, ch := range cfg.Channels {
		specs[i] = broadcast.ChannelSpec{Name: ch.Name, Events: ch.Events}
	}
	channels, err := broadcast.NewChannels(specs)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: upstream.NewTransport(cfg.Upstream.MaxConnsPerHost)}
	policy := upstream.Policy{Timeout: cfg.Upstream.Timeout, AttemptTimeout: cfg.Upstream.AttemptTimeout,
		MaxAttempts: cfg.Upstream.MaxAttempts, BackoffBase: cfg.Upstream.BackoffBase, BackoffMax: cfg.Upstream.BackoffMax}
	um := upstream.NewMetrics(reg)
	legacyRouter, realtimeRouter := broadcast.AppRouter{}, broadcast.AppRouter{}
	apps := map[string]api.App{}
	limits := map[string]broadcast.AppLimits{}
	for name, a := range cfg.Apps {
		lc, err := legacyparty.NewClient(legacyparty.Config{URL: a.Party.URL, Party: a.Party.Party, PathPrefix: a.Party.PathPrefix, Policy: policy}, hc, um, log)
		if err != nil {
			return nil, err
		}
		rc, err := realtime.NewClient(name, realtime.Config{URL: a.Realtime.URL, ChannelTemplate: a.Realtime.Channel,
			Topics: a.Realtime.Topics, Policy: policy}, hc, um, log)
		if err != nil {
			return nil, err
		}
		legacyRouter[name], realtimeRouter[name] = lc, rc
		limits[name] = broadcast.AppLimits{}
		aa := api.App{Name: name}
		for _, k := range a.APIKeys {
			aa.KeyHashes = append(aa.KeyHashes, api.HashKey(k))
		}
		apps[name] = aa
	}
	fcfg := flags.Config{Provider: cfg.Flags.Provider, File: cfg.Flags.File, Env: cfg.Env,
		Channels: cfg.ChannelNames(), PollInterval: cfg.Flags.PollInterval}
	fm := flags.NewMetrics(reg)
	provider, err := flags.NewProvider(fcfg, log, flags.WithMetrics(fm))
	if err != nil {
		return nil, err
	}
	if err := openfeature.SetProviderAndWait(provider); err != nil {
		return nil, fmt.Errorf("flags: %w", err)
	}
	p := &inProcess{resolver: flags.NewResolver(fcfg, openfeature.NewClient("loadgen"), fm, log)}
	p.mc = broadcast.NewMulticaster(broadcast.Config{Apps: limits, Channels: cfg.ChannelNames(), SampleRate: cfg.SampleRate},
		legacyRouter, realtimeRouter, p.resolver, nil, broadcast.NewMetrics(reg), log, nil)
	a := api.New(api.Config{Env: cfg.Env, Apps: apps, ChannelOf: channels.Of, MaxBodyBytes: cfg.Server.MaxBodyBytes},
		api.Deps{Broadcaster: p.mc, Resolver: p.resolver, Gatherer: reg}, api.NewMetrics(reg), log, nil)
	a.SetReady(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.srv = &http.Server{Handler: a.Public(), ReadHeaderTimeout: 10 * time.Second}
	p.public = "http://" + ln.Addr().String()
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

func (p *inProcess) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
	p.mc.Close(ctx)
	_ = p.resolver.Close()
	_ = openfeature.ShutdownWithContext(ctx)
}

// profileInProcess runs the shadow publish path in this process under
// o.callers callers for o.profileTime and writes a CPU profile to
// o.cpuProfile and an allocation profile next to it (".allocs"). The load
// generator and the fakes run in the same process: read the profile below
// api.(*Server) and broadcast.(*Multicaster).
func profileInProcess(ctx context.Context, o options, w io.Writer) error {
	dir, err := os.MkdirTemp("", "switchyard-loadgen-prof-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	up, err := startUpstreams()
	if err != nil {
		return err
	}
	defer up.close()
	gw, err := startInProcess(dir, up)
	if err != nil {
		return err
	}
	defer gw.close()
	hc := newClient(o.callers)
	defer hc.CloseIdleConnections()
	target := &child{stage: "in-process", public: gw.public}
	rn := &runner{hc: hc, up: up}
	warm := rn.run(ctx, phase{name: "warm", target: targetGateway, gateway: target, callers: o.callers, duration: time.Second})
	if warm.ok == 0 {
		return errors.New("in-process gateway: warm-up: no message succeeded")
	}
	f, err := os.Create(o.cpuProfile)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	res := rn.run(ctx, phase{name: "profile", target: targetGateway, gateway: target, callers: o.callers, duration: o.profileTime})
	pprof.StopCPUProfile()
	af, err := os.Create(strings.TrimSuffix(o.cpuProfile, filepath.Ext(o.cpuProfile)) + ".allocs")
	if err != nil {
		return err
	}
	defer af.Close()
	if err := pprof.Lookup("allocs").WriteTo(af, 0); err != nil {
		return err
	}
	fmt.Fprintf(w, "in-process shadow gateway: %d callers, %.0f msg/s, %d failed; CPU profile %s, allocations %s (%d messages since start, warm-up included)\n",
		o.callers, res.throughput(), res.failed, o.cpuProfile, af.Name(), warm.ok+res.ok)
	return nil
}
