package flags

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"github.com/prometheus/client_golang/prometheus"
)

var testChannels = []string{"video-upload", "video-ready", "transcript", "ai-stream"}

// stageFlag renders a stage flag with every stage as a variant.
func stageFlag(def, targeting string) string {
	s := `{"state":"ENABLED","variants":{"legacy":"legacy","shadow":"shadow","dual":"dual","realtime":"realtime"},"defaultVariant":"` + def + `"`
	if targeting != "" {
		s += `,"targeting":` + targeting
	}
	return s + "}"
}

// killFlag renders the kill switch.
func killFlag(def, targeting string) string {
	s := `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"` + def + `"`
	if targeting != "" {
		s += `,"targeting":` + targeting
	}
	return s + "}"
}

// doc renders a flag file from raw flag definitions, formatted one flag a
// line, keys sorted.
func doc(tb testing.TB, flags map[string]string) []byte {
	tb.Helper()
	var b strings.Builder
	b.WriteString("{\n  \"flags\": {\n")
	for i, k := range sortedKeys(flags) {
		if i > 0 {
			b.WriteString(",\n")
		}
		b.WriteString("    \"" + k + "\": " + flags[k])
	}
	b.WriteString("\n  }\n}\n")
	if !json.Valid([]byte(b.String())) {
		tb.Fatalf("test flag file is not JSON:\n%s", b.String())
	}
	return []byte(b.String())
}

// stagesDoc is a file with the given stage per channel (missing channels
// legacy) and the kill switch default.
func stagesDoc(tb testing.TB, kill string, stages map[string]string) []byte {
	tb.Helper()
	fl := map[string]string{KillSwitchKey: killFlag(kill, ""), DefaultFlagKey: stageFlag("legacy", "")}
	for _, ch := range testChannels {
		fl[FlagKey(ch)] = stageFlag("legacy", "")
	}
	for ch, s := range stages {
		fl[FlagKey(ch)] = stageFlag(s, "")
	}
	return doc(tb, fl)
}

func mustWrite(tb testing.TB, path string, data []byte) {
	tb.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// startClient sets p on a fresh isolated OpenFeature API, waits for it to
// be ready and returns a client; the API is shut down at cleanup.
func startClient(tb testing.TB, p openfeature.FeatureProvider) *openfeature.Client {
	tb.Helper()
	api := isolated.NewAPI()
	tb.Cleanup(func() { _ = api.Shutdown(context.Background()) })
	if err := api.SetProviderAndWait(context.Background(), p); err != nil {
		tb.Fatalf("SetProviderAndWait: %v", err)
	}
	return api.NewClient()
}

type fixture struct {
	cfg     Config
	path    string
	metrics *Metrics
	reg     *prometheus.Registry
	client  *openfeature.Client
	r       *Resolver
}

// newFileFixture writes data to a temp flag file (or uses path when data
// is nil), starts the file provider on it and returns a resolver.
func newFileFixture(tb testing.TB, path string, data []byte, mod func(*Config)) *fixture {
	tb.Helper()
	if data != nil {
		path = filepath.Join(tb.TempDir(), "flags.json")
		mustWrite(tb, path, data)
	}
	cfg := Config{Provider: ProviderFile, File: path, Env: "dev", Channels: testChannels, PollInterval: 20 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	p, err := NewProvider(cfg, nil, WithMetrics(m))
	if err != nil {
		tb.Fatalf("NewProvider: %v", err)
	}
	client := startClient(tb, p)
	r := NewResolver(cfg, client, m, nil)
	tb.Cleanup(func() { _ = r.Close() })
	return &fixture{cfg: cfg, path: path, metrics: m, reg: reg, client: client, r: r}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
