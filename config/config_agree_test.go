package config

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/flags"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/shadow"
	"github.com/switchyard/switchyard/upstream"
)

// noEnv is the environment of the testdata configs: they use no variables.
func noEnv(string) string { return "" }

// badCase is one line of testdata/bad/want.txt.
type badCase struct{ file, want string }

// readBadCases reads testdata/bad/want.txt and checks that it and the
// directory list the same files.
func readBadCases(tb testing.TB) []badCase {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", "bad", "want.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var cases []badCase
	listed := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, want, ok := strings.Cut(line, " ")
		if !ok || want == "" {
			tb.Fatalf("want.txt: %q is not \"FILE SUBSTRING\"", line)
		}
		if listed[file] {
			tb.Fatalf("want.txt: %s listed twice", file)
		}
		listed[file] = true
		cases = append(cases, badCase{file, want})
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range files {
		if !listed[filepath.Base(p)] {
			tb.Errorf("testdata/bad/%s has no line in want.txt", filepath.Base(p))
		}
	}
	if len(files) != len(cases) {
		tb.Errorf("%d bad configs, %d lines in want.txt", len(files), len(cases))
	}
	return cases
}

// buildAll hands every package config c produces to the package's own
// validator or constructor, as the wiring does. A config that Load accepts
// must pass them all: that is the agreement between `config check` and
// `serve`.
func buildAll(t *testing.T, c *Config) {
	t.Helper()
	if _, err := broadcast.NewChannels(c.ChannelSpecs()); err != nil {
		t.Errorf("broadcast.NewChannels: %v", err)
	}
	if err := c.MulticastConfig().Validate(); err != nil {
		t.Errorf("broadcast.Config.Validate: %v", err)
	}
	if err := c.FlagsConfig().Validate(); err != nil {
		t.Errorf("flags.Config.Validate: %v", err)
	}
	if err := c.ShadowConfig().Validate(); err != nil {
		t.Errorf("shadow.Config.Validate: %v", err)
	}
	if _, err := shadow.NewRedaction(c.Record.RedactPaths); err != nil {
		t.Errorf("shadow.NewRedaction(record.redactPaths): %v", err)
	}
	for _, name := range c.AppNames() {
		if _, err := legacyparty.NewClient(c.PartyConfig(name), nil, nil, nil); err != nil {
			t.Errorf("legacyparty.NewClient(%s): %v", name, err)
		}
		if _, err := realtime.NewClient(name, c.RealtimeConfig(name), nil, nil, nil); err != nil {
			t.Errorf("realtime.NewClient(%s): %v", name, err)
		}
	}
	if _, err := legacyparty.NewWatcher(partyConfigs(c), nil, nil); err != nil {
		t.Errorf("legacyparty.NewWatcher: %v", err)
	}
}

func partyConfigs(c *Config) map[string]legacyparty.Config {
	out := map[string]legacyparty.Config{}
	for _, name := range c.AppNames() {
		out[name] = c.PartyConfig(name)
	}
	return out
}

func TestGoodConfigLoadsAndBuilds(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "good.yaml"), noEnv)
	if err != nil {
		t.Fatalf("Load(good.yaml): %v", err)
	}
	buildAll(t, c)
	if c.Flags.Provider != flags.ProviderMemory {
		t.Errorf("flags.provider = %q; good.yaml must not need a flag file", c.Flags.Provider)
	}
}

// packagePrefix matches an error line that starts with a package name: the
// caller names the field, the package must not add its own name again
// ("shadow: shadow: ...", "record.file: record: ...").
var packagePrefix = regexp.MustCompile(`(^|: )(config|shadow|flags|broadcast|legacyparty|realtime|upstream|record): `)

// TestBadConfigsNameTheField loads every testdata/bad config: each must be
// refused with an error naming the field want.txt gives, and no line of it
// may repeat a package prefix.
func TestBadConfigsNameTheField(t *testing.T) {
	cases := readBadCases(t)
	if len(cases) < 22 {
		t.Errorf("%d bad configs, want at least 22", len(cases))
	}
	for _, tc := range cases {
		t.Run(strings.TrimSuffix(tc.file, ".yaml"), func(t *testing.T) {
			_, err := Load(filepath.Join("testdata", "bad", tc.file), noEnv)
			if err == nil {
				t.Fatalf("Load succeeded, want an error containing %q", tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("error = %q, want it to contain %q", msg, tc.want)
			}
			for i, line := range strings.Split(strings.TrimPrefix(msg, "config: "), "\n") {
				if packagePrefix.MatchString(line) {
					t.Errorf("error line %d %q repeats a package prefix", i, line)
				}
			}
		})
	}
}

// TestBadConfigsDifferFromGood checks the form of each bad config: a first
// line naming its fault, then a document that differs from good.yaml.
func TestBadConfigsDifferFromGood(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", "good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	body := string(good[strings.Index(string(good), "env:"):])
	for _, tc := range readBadCases(t) {
		bad, err := os.ReadFile(filepath.Join("testdata", "bad", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		first, rest, _ := strings.Cut(string(bad), "\n")
		if !strings.HasPrefix(first, "# Bad: ") {
			t.Errorf("%s: first line %q does not name the fault (# Bad: ...)", tc.file, first)
		}
		if rest == body {
			t.Errorf("%s: identical to good.yaml", tc.file)
		}
	}
}

// TestDefaultsComeFromThePackages pins that a config without the package
// sections shows the packages' own defaults, not copies of them.
func TestDefaultsComeFromThePackages(t *testing.T) {
	c, err := Parse([]byte(example), env(map[string]string{"AI_HERO_GATEWAY_KEY": "key-0123456789abcdef"}))
	if err != nil {
		t.Fatal(err)
	}
	sd, fd, md, ud := shadow.Config{}.WithDefaults(), flags.Config{}.WithDefaults(), broadcast.Config{}.WithDefaults(), upstream.Policy{}.WithDefaults()
	for _, x := range []struct {
		name      string
		got, want any
	}{
		{"shadow.idleTTL", c.Shadow.IdleTTL, sd.IdleTTL},
		{"shadow.maxRooms", c.Shadow.MaxRooms, sd.MaxRooms},
		{"shadow.maxPending", c.Shadow.MaxPending, shadow.DefaultMaxPending},
		{"shadow.window", c.Shadow.Window, sd.Window},
		{"flags.pollInterval", c.Flags.PollInterval, flags.DefaultPollInterval},
		{"flags.port", c.Flags.Port, fd.FlagdPort},
		{"multicast.offPathQueue", c.Multicast.OffPathQueue, md.OffPathQueue},
		{"multicast.offPathWorkers", c.Multicast.OffPathWorkers, md.OffPathWorkers},
		{"multicast.offPathTimeout", c.Multicast.OffPathTimeout, md.OffPathTimeout},
		{"multicast.dedupWindow", c.Multicast.DedupWindow, md.DedupWindow},
		{"multicast.dedupMaxEntries", c.Multicast.DedupMaxEntries, md.DedupMaxEntries},
		{"multicast.sequenceRooms", c.Multicast.SequenceRooms, md.SequenceRooms},
		{"multicast.sequenceIdleTTL", c.Multicast.SequenceIdleTTL, md.SequenceIdleTTL},
		{"upstream", c.UpstreamPolicy(), ud},
		{"apps.ai-hero.party.pathPrefix", c.Apps["ai-hero"].Party.PathPrefix, legacyparty.DefaultPathPrefix},
	} {
		if x.got != x.want {
			t.Errorf("%s = %v, want the package default %v", x.name, x.got, x.want)
		}
	}
}

func TestPackageConfigsCarryTheConfig(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "good.yaml"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ShadowConfig().Channels["video-ready"].IgnorePaths; len(got) != 1 || got[0] != "body.updatedAt" {
		t.Errorf("ShadowConfig video-ready ignorePaths = %q", got)
	}
	if got, want := c.ShadowConfig().Channels["ai-stream"].Timeout.String(), "10s"; got != want {
		t.Errorf("ShadowConfig ai-stream timeout = %s, want %s", got, want)
	}
	if got, want := c.FlagsConfig().Channels, c.ChannelNames(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("FlagsConfig channels = %q, want %q", got, want)
	}
	mc := c.MulticastConfig()
	if got := mc.Apps["ai-hero"]; got.RatePerSecond != 100 || got.Burst != 101 {
		t.Errorf("MulticastConfig ai-hero limits = %+v, want 100/s burst 101", got)
	}
	if !mc.Sequenced["ai-hero"] || len(mc.Sequenced) != 1 {
		t.Errorf("MulticastConfig sequenced apps = %v, want ai-hero only (apps.ai-hero.sequence)", mc.Sequenced)
	}
	if got := mc.SampleRate("ai-stream"); got != 0.5 {
		t.Errorf("MulticastConfig sample rate of ai-stream = %v, want 0.5", got)
	}
	pc := c.PartyConfig("ai-hero")
	if pc.SecretHeader != legacyparty.DefaultSecretHeader || pc.Policy != c.UpstreamPolicy() {
		t.Errorf("PartyConfig = %+v, want the default secret header and the upstream policy", pc)
	}
	rc := c.RealtimeConfig("ai-hero")
	if rc.ChannelTemplate != "{app}:{room}" || rc.Topics["ai-stream"] != "ai" || rc.Policy != c.UpstreamPolicy() {
		t.Errorf("RealtimeConfig = %+v", rc)
	}
	if got := c.PartyConfig("nope").Validate(); got == nil {
		t.Error("PartyConfig of an unknown app validates")
	}
}
