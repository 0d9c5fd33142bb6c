package flags

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	flagd "github.com/open-feature/go-sdk-contrib/providers/flagd/pkg"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"github.com/open-feature/go-sdk/openfeature/memprovider"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/switchyard/switchyard/broadcast"
)

func TestFlagsResolveEveryStage(t *testing.T) {
	f := newFileFixture(t, "", stagesDoc(t, "off", map[string]string{
		"video-upload": "legacy", "video-ready": "shadow", "transcript": "dual", "ai-stream": "realtime",
	}), nil)
	tests := []struct {
		channel     string
		wantStage   broadcast.Stage
		wantChannel string
		wantKey     string
	}{
		{"video-upload", broadcast.StageLegacy, "video-upload", "realtime-video-upload"},
		{"video-ready", broadcast.StageShadow, "video-ready", "realtime-video-ready"},
		{"transcript", broadcast.StageDual, "transcript", "realtime-transcript"},
		{"ai-stream", broadcast.StageRealtime, "ai-stream", "realtime-ai-stream"},
		{"default", broadcast.StageLegacy, "default", "realtime-default"},
		{"", broadcast.StageLegacy, "default", "realtime-default"},
		{"not-configured", broadcast.StageLegacy, "default", "realtime-default"},
	}
	for _, tt := range tests {
		t.Run(tt.channel, func(t *testing.T) {
			for range 2 { // second answer comes from the cache
				got := f.r.Resolve(broadcast.RouteQuery{App: "app1", Room: "room-1", Channel: tt.channel, Event: "e"})
				want := broadcast.Route{Stage: tt.wantStage, Channel: tt.wantChannel, FlagKey: tt.wantKey, Variant: string(tt.wantStage), Reason: "STATIC"}
				if got != want {
					t.Fatalf("Resolve = %+v, want %+v", got, want)
				}
			}
		})
	}
	if got := testutil.ToFloat64(f.metrics.evaluations.WithLabelValues("transcript", "dual")); got != 2 {
		t.Errorf("evaluations{transcript,dual} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(f.metrics.fileValid); got != 1 {
		t.Errorf("file valid gauge = %v, want 1", got)
	}
}

func TestFlagsTargetingByAppEnvEvent(t *testing.T) {
	fl := map[string]string{
		KillSwitchKey:  killFlag("off", ""),
		DefaultFlagKey: stageFlag("legacy", ""),
		// staging pilot: ai-hero in shadow
		"realtime-video-upload": stageFlag("legacy", `{"if":[{"==":[{"var":"app"},"ai-hero"]},"shadow","legacy"]}`),
		// env rollout: dual in dev only, null falls back to the default
		"realtime-video-ready": stageFlag("legacy", `{"if":[{"==":[{"var":"env"},"dev"]},"dual",null]}`),
		// event rollout
		"realtime-transcript": stageFlag("legacy", `{"if":[{"starts_with":[{"var":"event"},"transcript.partial"]},"realtime",null]}`),
		"realtime-ai-stream":  stageFlag("legacy", `{"if":[{"==":[{"var":"channel"},"ai-stream"]},"shadow",null]}`),
	}
	f := newFileFixture(t, "", doc(t, fl), nil)
	tests := []struct {
		name      string
		q         broadcast.RouteQuery
		wantStage broadcast.Stage
		wantWhy   string
	}{
		{"pilot app", broadcast.RouteQuery{App: "ai-hero", Room: "r", Channel: "video-upload"}, broadcast.StageShadow, "TARGETING_MATCH"},
		{"other app", broadcast.RouteQuery{App: "courses", Room: "r", Channel: "video-upload"}, broadcast.StageLegacy, "TARGETING_MATCH"},
		{"env dev", broadcast.RouteQuery{App: "courses", Room: "r", Channel: "video-ready"}, broadcast.StageDual, "TARGETING_MATCH"},
		{"event match", broadcast.RouteQuery{App: "a", Room: "r", Channel: "transcript", Event: "transcript.partial.v2"}, broadcast.StageRealtime, "TARGETING_MATCH"},
		{"event miss", broadcast.RouteQuery{App: "a", Room: "r", Channel: "transcript", Event: "transcript.final"}, broadcast.StageLegacy, "DEFAULT"},
		{"channel attr", broadcast.RouteQuery{App: "a", Room: "r", Channel: "ai-stream"}, broadcast.StageShadow, "TARGETING_MATCH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := f.r.Resolve(tt.q)
			if got.Stage != tt.wantStage || got.Reason != tt.wantWhy || got.Error != "" {
				t.Fatalf("Resolve(%+v) = %+v, want stage %s reason %s", tt.q, got, tt.wantStage, tt.wantWhy)
			}
		})
	}

	// The same file in another env takes the null branch.
	g := newFileFixture(t, f.path, nil, func(c *Config) { c.Env = "prod" })
	if got := g.r.Resolve(broadcast.RouteQuery{App: "courses", Room: "r", Channel: "video-ready"}); got.Stage != broadcast.StageLegacy || got.Reason != "DEFAULT" {
		t.Fatalf("prod Resolve = %+v, want legacy by DEFAULT", got)
	}
}

func TestFlagsFractionalStablePerRoom(t *testing.T) {
	frac := `{"fractional":[{"cat":[{"var":"$flagd.flagKey"},{"var":"targetingKey"}]},["legacy",50],["realtime",50]]}`
	data := doc(t, map[string]string{
		KillSwitchKey: killFlag("off", ""), DefaultFlagKey: stageFlag("legacy", ""),
		"realtime-ai-stream": stageFlag("legacy", frac),
	})
	uncached := func(c *Config) { c.CacheSize, c.Channels = -1, []string{"ai-stream"} }
	a := newFileFixture(t, "", data, uncached)
	b := newFileFixture(t, a.path, nil, uncached) // a second instance on the same file
	counts := map[broadcast.Stage]int{}
	const rooms = 200
	for i := range rooms {
		q := broadcast.RouteQuery{App: "app", Room: fmt.Sprintf("room-%d", i), Channel: "ai-stream", Event: "tok"}
		first := a.r.Resolve(q)
		if first.Error != "" || first.Reason != "TARGETING_MATCH" {
			t.Fatalf("Resolve(%s) = %+v", q.Room, first)
		}
		for range 3 {
			if got := a.r.Resolve(q); got != first {
				t.Fatalf("room %s: %+v then %+v", q.Room, first, got)
			}
		}
		if got := b.r.Resolve(q); got != first {
			t.Fatalf("room %s: instance a %+v, instance b %+v", q.Room, first, got)
		}
		// Another app in the same room lands in the same bucket: the share is per room.
		if got := a.r.Resolve(broadcast.RouteQuery{App: "other", Room: q.Room, Channel: "ai-stream"}); got.Stage != first.Stage {
			t.Fatalf("room %s: app other got %s, app app got %s", q.Room, got.Stage, first.Stage)
		}
		counts[first.Stage]++
	}
	if counts[broadcast.StageLegacy] < rooms/4 || counts[broadcast.StageRealtime] < rooms/4 {
		t.Fatalf("50/50 split over %d rooms gave %v", rooms, counts)
	}
}

func TestFlagsKillSwitch(t *testing.T) {
	all := map[string]string{"video-upload": "legacy", "video-ready": "shadow", "transcript": "dual", "ai-stream": "realtime"}
	t.Run("on overrides every stage", func(t *testing.T) {
		f := newFileFixture(t, "", stagesDoc(t, "on", all), nil)
		for _, ch := range append([]string{"default"}, testChannels...) {
			got := f.r.Resolve(broadcast.RouteQuery{App: "a", Room: "r", Channel: ch})
			want := broadcast.Route{Stage: broadcast.StageLegacy, Channel: ch, FlagKey: KillSwitchKey, Variant: "on", Reason: "STATIC", KillSwitch: true}
			if got != want {
				t.Errorf("%s: Resolve = %+v, want %+v", ch, got, want)
			}
		}
		if got := testutil.ToFloat64(f.metrics.killSwitch); got != 1 {
			t.Errorf("killswitch gauge = %v, want 1", got)
		}
	})
	t.Run("targeted by app", func(t *testing.T) {
		fl := map[string]string{
			KillSwitchKey:  killFlag("off", `{"if":[{"==":[{"var":"app"},"noisy"]},"on",null]}`),
			DefaultFlagKey: stageFlag("realtime", ""),
		}
		for ch, s := range all {
			fl[FlagKey(ch)] = stageFlag(s, "")
		}
		f := newFileFixture(t, "", doc(t, fl), nil)
		for _, ch := range testChannels {
			got := f.r.Resolve(broadcast.RouteQuery{App: "noisy", Room: "r", Channel: ch})
			if got.Stage != broadcast.StageLegacy || !got.KillSwitch {
				t.Errorf("noisy %s: %+v, want legacy by kill switch", ch, got)
			}
			got = f.r.Resolve(broadcast.RouteQuery{App: "quiet", Room: "r", Channel: ch})
			if got.Stage != broadcast.Stage(all[ch]) || got.KillSwitch {
				t.Errorf("quiet %s: %+v, want %s", ch, got, all[ch])
			}
		}
		if got := testutil.ToFloat64(f.metrics.killSwitch); got != 0 {
			t.Errorf("killswitch gauge after a quiet decision = %v, want 0", got)
		}
	})
}

// rawFlagdClient runs the real flagd provider in its own file mode on an
// unvalidated file, to reach the evaluation errors the validating source
// refuses to load.
func rawFlagdClient(t *testing.T, data []byte) *openfeature.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raw.json")
	mustWrite(t, path, data)
	p, err := flagd.NewProvider(flagd.WithFileResolver(), flagd.WithOfflineFilePath(path))
	if err != nil {
		t.Fatal(err)
	}
	return startClient(t, p)
}

func TestFlagsFailSafe(t *testing.T) {
	data := doc(t, map[string]string{
		KillSwitchKey:           killFlag("off", ""),
		DefaultFlagKey:          `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`,
		"realtime-transcript":   `{"state":"ENABLED","variants":{"turbo":"turbo"},"defaultVariant":"turbo"}`,
		"realtime-ai-stream":    `{"state":"ENABLED","variants":{"fast":"realtime"},"defaultVariant":"fast"}`,
		"realtime-video-upload": stageFlag("legacy", `{"if":[{"==":[{"var":"app"},"x"]},"nonexistent",null]}`),
		// realtime-video-ready is missing
	})
	client := rawFlagdClient(t, data)
	m := NewMetrics(prometheus.NewRegistry())
	r := NewResolver(Config{Env: "dev", Channels: testChannels}, client, m, nil)
	defer r.Close()
	tests := []struct {
		q          broadcast.RouteQuery
		wantReason string
	}{
		{broadcast.RouteQuery{App: "a", Room: "r", Channel: "video-ready"}, ReasonFlagNotFound},
		{broadcast.RouteQuery{App: "a", Room: "r", Channel: "default"}, ReasonTypeMismatch},
		{broadcast.RouteQuery{App: "a", Room: "r", Channel: "transcript"}, ReasonUnknownVariant},
		{broadcast.RouteQuery{App: "a", Room: "r", Channel: "ai-stream"}, ReasonUnknownVariant},
		{broadcast.RouteQuery{App: "x", Room: "r", Channel: "video-upload"}, ReasonGeneral},
	}
	for _, tt := range tests {
		t.Run(tt.q.Channel, func(t *testing.T) {
			for range 2 { // errors are never cached
				got := r.Resolve(tt.q)
				if got.Stage != broadcast.StageLegacy || !strings.HasPrefix(got.Error, tt.wantReason+":") || got.Reason != "ERROR" {
					t.Fatalf("Resolve = %+v, want legacy with error %s", got, tt.wantReason)
				}
			}
			ch := tt.q.Channel
			if got := testutil.ToFloat64(m.errors.WithLabelValues(ch, tt.wantReason)); got != 2 {
				t.Errorf("errors{%s,%s} = %v, want 2", ch, tt.wantReason, got)
			}
			if got := testutil.ToFloat64(m.evaluations.WithLabelValues(ch, "legacy")); got != 2 {
				t.Errorf("evaluations{%s,legacy} = %v, want 2", ch, got)
			}
		})
	}

	t.Run("kill switch of the wrong type", func(t *testing.T) {
		client := rawFlagdClient(t, doc(t, map[string]string{
			KillSwitchKey:  `{"state":"ENABLED","variants":{"on":"on"},"defaultVariant":"on"}`,
			DefaultFlagKey: stageFlag("realtime", ""),
		}))
		r := NewResolver(Config{Env: "dev"}, client, nil, nil)
		defer r.Close()
		got := r.Resolve(broadcast.RouteQuery{App: "a", Room: "r"})
		if got.Stage != broadcast.StageLegacy || got.FlagKey != KillSwitchKey || !strings.HasPrefix(got.Error, ReasonTypeMismatch) {
			t.Fatalf("Resolve = %+v, want legacy with a kill switch type mismatch", got)
		}
	})
	t.Run("no client", func(t *testing.T) {
		r := NewResolver(Config{Env: "dev"}, nil, nil, nil)
		if got := r.Resolve(broadcast.RouteQuery{App: "a", Room: "r"}); got.Stage != broadcast.StageLegacy || !strings.HasPrefix(got.Error, ReasonProviderNotReady) {
			t.Fatalf("Resolve = %+v, want legacy, provider not ready", got)
		}
	})
}

func TestFlagsProviderNotReadyThenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The listener accepts and never answers: the gRPC sync hangs until
	// the provider's start deadline (deadline below) passes, and the
	// provider is NOT_READY meanwhile. The deadline is long against the
	// few calls between SetProvider and the first Resolve, and the wait
	// for the failure a multiple of it (a wait equal to it races it).
	// Cleanups run last-registered first: the API (below) shuts down while
	// the connection still hangs, then the listener closes. The other
	// order races inside flagd v0.6.0's gRPC sync (Shutdown closes its
	// event channel while the connection monitor may send on it).
	t.Cleanup(func() { ln.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port

	cfg := Config{Provider: ProviderFlagd, FlagdHost: "127.0.0.1", FlagdPort: port, Env: "dev", Channels: testChannels}
	const deadline = time.Second
	p, err := NewProvider(cfg, nil, WithStartDeadline(deadline))
	if err != nil {
		t.Fatal(err)
	}
	api := isolated.NewAPI()
	t.Cleanup(func() { _ = api.Shutdown(context.Background()) })
	initErr := make(chan string, 1)
	onError := func(d openfeature.EventDetails) {
		select {
		case initErr <- d.Message:
		default:
		}
	}
	api.AddHandler(openfeature.ProviderError, &onError)
	if err := api.SetProvider(context.Background(), p); err != nil { // initialises in the background
		t.Fatal(err)
	}
	client := api.NewClient()
	m := NewMetrics(prometheus.NewRegistry())
	r := NewResolver(cfg, client, m, nil)
	defer r.Close()
	q := broadcast.RouteQuery{App: "a", Room: "r", Channel: "transcript"}
	got := r.Resolve(q)
	if got.Stage != broadcast.StageLegacy || !strings.HasPrefix(got.Error, ReasonProviderNotReady) {
		t.Fatalf("Resolve while initialising (state %s) = %+v, want legacy, provider not ready", client.State(), got)
	}
	waitFor(t, 10*deadline, "provider init to fail", func() bool { return client.State() != openfeature.NotReadyState })
	got = r.Resolve(q)
	if got.Stage != broadcast.StageLegacy || got.Error == "" {
		t.Fatalf("Resolve after failed init (state %s) = %+v, want legacy with an error", client.State(), got)
	}
	select { // the failure is the deadline given, not flagd's default
	case msg := <-initErr:
		if want := fmt.Sprintf("deadline exceeded (%dms)", deadline.Milliseconds()); !strings.Contains(msg, want) {
			t.Errorf("init error %q, want it to contain %q", msg, want)
		}
	case <-time.After(10 * deadline):
		t.Error("no provider error event")
	}
	total := 0.0
	for _, reason := range errorReasons {
		total += testutil.ToFloat64(m.errors.WithLabelValues("transcript", reason))
	}
	if total < 1 {
		t.Fatalf("flag errors counted = %v, want >= 1", total)
	}
}

func TestFlagsHotReloadEdit(t *testing.T) {
	f := newFileFixture(t, "", stagesDoc(t, "off", map[string]string{"video-ready": "legacy"}), nil)
	q := broadcast.RouteQuery{App: "a", Room: "r", Channel: "video-ready"}
	if got := f.r.Resolve(q).Stage; got != broadcast.StageLegacy {
		t.Fatalf("before: %s", got)
	}
	// An in-place edit (same inode, as an editor saving without rename).
	mustWrite(t, f.path, stagesDoc(t, "off", map[string]string{"video-ready": "shadow"}))
	waitFor(t, 2*time.Second, "in-place edit to take effect", func() bool { return f.r.Resolve(q).Stage == broadcast.StageShadow })
	// A rename-over write, as the CLI does.
	if err := WriteAtomic(f.path, stagesDoc(t, "off", map[string]string{"video-ready": "dual"})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "atomic write to take effect", func() bool { return f.r.Resolve(q).Stage == broadcast.StageDual })
	if got := testutil.ToFloat64(f.metrics.configChanges); got < 2 {
		t.Errorf("config changes = %v, want >= 2", got)
	}
}

// configMapDir lays out a Kubernetes ConfigMap volume: dir/flags.json ->
// ..data/flags.json, ..data -> ..<version>/.
func configMapDir(t *testing.T, data []byte) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	swapConfigMap(t, dir, "..2026_01_01_00_00_00.000000001", data)
	path = filepath.Join(dir, "flags.json")
	if err := os.Symlink(filepath.Join("..data", "flags.json"), path); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

// swapConfigMap writes a new version directory and atomically repoints
// ..data at it, removing the previous version as the kubelet does.
func swapConfigMap(t *testing.T, dir, version string, data []byte) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, version), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, version, "flags.json"), data)
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(version, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFlagsHotReloadSymlinkSwap(t *testing.T) {
	dir, path := configMapDir(t, stagesDoc(t, "off", map[string]string{"ai-stream": "shadow"}))
	f := newFileFixture(t, path, nil, nil)
	q := broadcast.RouteQuery{App: "a", Room: "r", Channel: "ai-stream"}
	if got := f.r.Resolve(q).Stage; got != broadcast.StageShadow {
		t.Fatalf("before: %s", got)
	}
	swapConfigMap(t, dir, "..2026_01_01_00_00_01.000000002", stagesDoc(t, "off", map[string]string{"ai-stream": "realtime"}))
	waitFor(t, 2*time.Second, "ConfigMap swap to take effect", func() bool { return f.r.Resolve(q).Stage == broadcast.StageRealtime })
	swapConfigMap(t, dir, "..2026_01_01_00_00_02.000000003", stagesDoc(t, "on", map[string]string{"ai-stream": "realtime"}))
	waitFor(t, 2*time.Second, "second swap to take effect", func() bool { return f.r.Resolve(q).KillSwitch })
}

func TestFlagsInvalidEditKeepsLastGood(t *testing.T) {
	f := newFileFixture(t, "", stagesDoc(t, "off", map[string]string{"transcript": "shadow"}), nil)
	q := broadcast.RouteQuery{App: "a", Room: "r", Channel: "transcript"}
	valid := func() float64 { return testutil.ToFloat64(f.metrics.fileValid) }
	bad := []struct {
		name string
		data []byte
	}{
		{"not JSON", []byte(`{"flags": {`)},
		{"empty", nil},
		{"unknown stage", []byte(strings.Replace(string(stagesDoc(t, "off", map[string]string{"transcript": "realtime"})), `"realtime":"realtime"`, `"realtime":"realtimee"`, 1))},
		{"missing channel flag", doc(t, map[string]string{KillSwitchKey: killFlag("off", ""), DefaultFlagKey: stageFlag("realtime", "")})},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			mustWrite(t, f.path, tt.data)
			waitFor(t, 2*time.Second, "file_valid to drop to 0", func() bool { return valid() == 0 })
			for _, ch := range []string{"transcript", "default"} {
				if got := f.r.Resolve(broadcast.RouteQuery{App: "a", Room: "r2", Channel: ch}); got.Error != "" || (ch == "transcript" && got.Stage != broadcast.StageShadow) {
					t.Fatalf("%s after a refused edit: %+v, want the last good flags", ch, got)
				}
			}
			mustWrite(t, f.path, stagesDoc(t, "off", map[string]string{"transcript": "shadow"}))
			waitFor(t, 2*time.Second, "file_valid back to 1", func() bool { return valid() == 1 })
		})
	}
	mustWrite(t, f.path, stagesDoc(t, "off", map[string]string{"transcript": "dual"}))
	waitFor(t, 2*time.Second, "a valid edit after refused ones to apply", func() bool { return f.r.Resolve(q).Stage == broadcast.StageDual })
}

func TestFlagsNewProviderRefusesInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	mustWrite(t, path, doc(t, map[string]string{KillSwitchKey: killFlag("off", "")}))
	m := NewMetrics(prometheus.NewRegistry())
	p, err := NewProvider(Config{File: path, Env: "dev"}, nil, WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	api := isolated.NewAPI()
	defer api.Shutdown(context.Background())
	err = api.SetProviderAndWait(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "flags.realtime-default: missing") {
		t.Fatalf("SetProviderAndWait = %v, want the validation error", err)
	}
	if got := testutil.ToFloat64(m.fileValid); got != 0 {
		t.Errorf("file valid = %v, want 0", got)
	}
	if _, err := NewProvider(Config{Env: "dev"}, nil); err == nil || !strings.Contains(err.Error(), "file: required for provider file") {
		t.Errorf("NewProvider without file = %v", err)
	}
}

func TestFlagsMemoryProvider(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		cfg := Config{Provider: ProviderMemory, Env: "test", Channels: testChannels}
		p, err := NewProvider(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := NewResolver(cfg, startClient(t, p), nil, nil)
		defer r.Close()
		for _, ch := range append(testChannels, "default") {
			if got := r.Resolve(broadcast.RouteQuery{App: "a", Room: "r", Channel: ch}); got.Stage != broadcast.StageLegacy || got.Error != "" {
				t.Errorf("%s: %+v", ch, got)
			}
		}
	})
	t.Run("from file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "f.json")
		mustWrite(t, path, stagesDoc(t, "off", map[string]string{"transcript": "dual"}))
		cfg := Config{Provider: ProviderMemory, File: path, Env: "test", Channels: testChannels}
		p, err := NewProvider(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := NewResolver(cfg, startClient(t, p), nil, nil)
		defer r.Close()
		if got := r.Resolve(broadcast.RouteQuery{App: "a", Room: "r", Channel: "transcript"}); got.Stage != broadcast.StageDual {
			t.Errorf("transcript: %+v", got)
		}
	})
}

func memStage(def string) memprovider.InMemoryFlag {
	return memprovider.InMemoryFlag{State: memprovider.Enabled, DefaultVariant: def,
		Variants: map[string]any{"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}}
}

func memFlags(stage string) map[string]memprovider.InMemoryFlag {
	return map[string]memprovider.InMemoryFlag{
		KillSwitchKey:  {State: memprovider.Enabled, DefaultVariant: "off", Variants: map[string]any{"on": true, "off": false}},
		DefaultFlagKey: memStage(stage),
	}
}

func TestFlagsCacheInvalidatedOnConfigChange(t *testing.T) {
	p := memprovider.NewInMemoryProvider(memFlags("shadow"))
	client := startClient(t, p)
	m := NewMetrics(prometheus.NewRegistry())
	r := NewResolver(Config{Env: "dev", CacheTTL: time.Hour}, client, m, nil)
	defer r.Close()
	q := broadcast.RouteQuery{App: "a", Room: "r"}
	if got := r.Resolve(q).Stage; got != broadcast.StageShadow {
		t.Fatalf("before: %s", got)
	}
	if got := r.cache.len(); got != 1 {
		t.Fatalf("cache entries = %d, want 1", got)
	}
	p.UpdateFlags(memFlags("realtime"))
	waitFor(t, 2*time.Second, "config change to drop the cache", func() bool { return r.Resolve(q).Stage == broadcast.StageRealtime })
	if got := testutil.ToFloat64(m.configChanges); got < 1 {
		t.Errorf("config changes = %v, want >= 1", got)
	}
}

func TestFlagsCacheBoundedAndExpires(t *testing.T) {
	client := startClient(t, memprovider.NewInMemoryProvider(memFlags("dual")))
	r := NewResolver(Config{Env: "dev", CacheSize: 128, CacheTTL: 20 * time.Millisecond}, client, nil, nil)
	defer r.Close()
	for i := range 5000 {
		r.Resolve(broadcast.RouteQuery{App: "a", Room: fmt.Sprintf("room-%d", i)})
	}
	if got, limit := r.cache.len(), 128; got > limit {
		t.Fatalf("cache entries = %d, want <= %d", got, limit)
	}
	key := appendKey(nil, "a", "default", "", "room-4999")
	if _, ok := r.cache.get(r.cache.hash(key), key, r.gen.Load()); !ok {
		t.Fatal("most recent decision not cached")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitFor(t, 2*time.Second, "Run to expire the cache", func() bool {
		_, ok := r.cache.get(r.cache.hash(key), key, r.gen.Load())
		return !ok
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	uncached := NewResolver(Config{Env: "dev", CacheSize: -1}, client, nil, nil)
	defer uncached.Close()
	if uncached.cache != nil {
		t.Fatal("negative CacheSize kept a cache")
	}
	if got := uncached.Resolve(broadcast.RouteQuery{App: "a", Room: "r"}); got.Stage != broadcast.StageDual {
		t.Fatalf("uncached Resolve = %+v", got)
	}
}

func TestFlagsErrorLogRateLimited(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	client := startClient(t, memprovider.NewInMemoryProvider(nil)) // every flag missing
	r := NewResolver(Config{Env: "dev"}, client, nil, zap.New(core))
	defer r.Close()
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for range 100 {
		if got := r.Resolve(broadcast.RouteQuery{App: "a", Room: "r"}); got.Stage != broadcast.StageLegacy || got.Error == "" {
			t.Fatalf("Resolve = %+v", got)
		}
	}
	lines := logs.FilterMessage("flag evaluation failed; using legacy")
	if got := lines.Len(); got != 1 {
		t.Fatalf("log lines = %d, want 1", got)
	}
	now = now.Add(ErrorLogInterval)
	r.Resolve(broadcast.RouteQuery{App: "a", Room: "r"})
	all := logs.FilterMessage("flag evaluation failed; using legacy").All()
	if len(all) != 2 {
		t.Fatalf("log lines after the interval = %d, want 2", len(all))
	}
	if got := all[1].ContextMap()["suppressed"]; got != int64(99) {
		t.Fatalf("suppressed = %v, want 99", got)
	}
	if got := all[1].ContextMap()["reason"]; got != ReasonFlagNotFound {
		t.Fatalf("reason = %v", got)
	}
}

func TestFlagsConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"file ok", Config{File: "f.json", Env: "dev", Channels: []string{"a", "b-c"}}, ""},
		{"file missing", Config{Env: "dev"}, "file: required for provider file"},
		{"flagd ok", Config{Provider: "flagd", FlagdHost: "flagd", Env: "dev"}, ""},
		{"flagd uri ok", Config{Provider: "flagd", FlagdTargetURI: "envoy://localhost:9211/flagd-sync.service", Env: "dev"}, ""},
		{"flagd no host", Config{Provider: "flagd", Env: "dev"}, "host: required"},
		{"flagd bad port", Config{Provider: "flagd", FlagdHost: "h", FlagdPort: 70000, Env: "dev"}, "port: 70000 out of range"},
		{"memory ok", Config{Provider: "memory", Env: "dev"}, ""},
		{"unknown provider", Config{Provider: "launchdarkly", Env: "dev"}, "provider: unknown provider"},
		{"no env", Config{Provider: "memory"}, "env: required"},
		{"default listed", Config{Provider: "memory", Env: "d", Channels: []string{"default"}}, "channels[0]"},
		{"dup channel", Config{Provider: "memory", Env: "d", Channels: []string{"a", "a"}}, "channels[1]: \"a\" listed twice"},
		{"bad channel", Config{Provider: "memory", Env: "d", Channels: []string{"A B"}}, "channels[0]"},
		{"negative poll", Config{Provider: "memory", Env: "d", PollInterval: -time.Second}, "pollInterval"},
		{"channel with leading dash", Config{Provider: "memory", Env: "d", Channels: []string{"-a"}}, "channels[0]: \"-a\" must be"},
		{"channel with dot", Config{Provider: "memory", Env: "d", Channels: []string{"a.b"}}, "channels[0]: \"a.b\" must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
			if strings.HasPrefix(err.Error(), "flags") {
				t.Fatalf("Validate = %q carries a package prefix; the caller names the section", err)
			}
		})
	}
}

// handlerClient records the event handlers added to and removed from the
// real client it wraps.
type handlerClient struct {
	openfeature.IClient
	mu      sync.Mutex
	added   map[openfeature.EventCallback]bool
	removed map[openfeature.EventCallback]bool
}

func (c *handlerClient) AddHandler(t openfeature.EventType, cb openfeature.EventCallback) {
	c.mu.Lock()
	c.added[cb] = true
	c.mu.Unlock()
	c.IClient.AddHandler(t, cb)
}

func (c *handlerClient) RemoveHandler(t openfeature.EventType, cb openfeature.EventCallback) {
	c.mu.Lock()
	c.removed[cb] = true
	c.mu.Unlock()
	c.IClient.RemoveHandler(t, cb)
}

// The Resolver's lifetime: handlers from NewResolver, the end of Run
// removes them, a second Run is an error, Resolve still works.
func TestResolverRunLifecycle(t *testing.T) {
	client := &handlerClient{IClient: startClient(t, memprovider.NewInMemoryProvider(memFlags("shadow"))),
		added: map[openfeature.EventCallback]bool{}, removed: map[openfeature.EventCallback]bool{}}
	r := NewResolver(Config{Env: "dev", CacheTTL: time.Hour}, client, nil, nil)
	if got, want := len(client.added), len(invalidatingEvents); got != want {
		t.Fatalf("handlers added: got %d, want %d", got, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitFor(t, 2*time.Second, "Run to start", r.ran.Load)
	if err := r.Run(context.Background()); err == nil {
		t.Error("second Run: got nil, want an error")
	}
	client.mu.Lock()
	removedEarly := len(client.removed)
	client.mu.Unlock()
	if removedEarly != 0 {
		t.Errorf("handlers removed while Run runs: %d", removedEarly)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	client.mu.Lock()
	for cb := range client.added {
		if !client.removed[cb] {
			t.Error("a handler is still registered after Run returned")
		}
	}
	client.mu.Unlock()
	if got := r.Resolve(broadcast.RouteQuery{App: "a", Room: "r"}).Stage; got != broadcast.StageShadow {
		t.Errorf("Resolve after Run: got %s, want shadow", got)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close after Run: %v", err)
	}
}
