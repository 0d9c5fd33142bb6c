package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/gateway"
)

// inProcess is a whole gateway run in this process, built by the one
// wiring (package gateway) from the benchmark's config, so that it can be
// profiled with runtime/pprof.
type inProcess struct {
	public string
	stop   context.CancelFunc
	done   chan error
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
	g, err := gateway.New(cfg, zap.NewNop(), gateway.Options{})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{public: g.PublicURL(), stop: cancel, done: make(chan error, 1)}
	go func() { p.done <- g.Run(ctx) }()
	return p, nil
}

func (p *inProcess) close() {
	p.stop()
	<-p.done
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
