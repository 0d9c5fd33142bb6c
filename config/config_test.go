package config

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/shadow"
)

const example = `
env: dev
listen: 127.0.0.1:8080
admin:
  listen: 127.0.0.1:9091
  token: ${SWITCHYARD_ADMIN_TOKEN:-}
log: {level: info, format: console}
flags: {provider: file, file: configs/flags/dev.flagd.json}
channels:
  - {name: video-upload, events: [video.asset.attached, video.asset.detached, videoResource.created]}
  - {name: video-ready,  events: [video.asset.ready, video.asset.errored]}
  - {name: transcript,   events: [transcript.ready, transcriptWithScreenshots.ready]}
  - {name: ai-stream,    events: [ai.message]}
apps:
  ai-hero:
    apiKeys: ["${AI_HERO_GATEWAY_KEY}"]
    party: {url: "http://127.0.0.1:1999", party: main}
    realtime: {url: "http://127.0.0.1:8288", signingKey: "${INNGEST_SIGNING_KEY:-}", channel: "{room}"}
shadow: {sampleRate: 1.0, timeout: 5s}
`

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseExample(t *testing.T) {
	c, err := Parse([]byte(example), env(map[string]string{"AI_HERO_GATEWAY_KEY": "key-0123456789abcdef:#x"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Apps["ai-hero"].APIKeys[0], "key-0123456789abcdef:#x"; got != want {
		t.Errorf("api key = %q, want %q", got, want)
	}
	if got, want := c.Apps["ai-hero"].Party.PathPrefix, "/parties"; got != want {
		t.Errorf("pathPrefix default = %q, want %q", got, want)
	}
	if got, want := c.Shadow.Timeout.String(), "5s"; got != want {
		t.Errorf("shadow.timeout = %q, want %q", got, want)
	}
	if got, want := c.SampleRate("video-ready"), 1.0; got != want {
		t.Errorf("sample rate = %v, want %v", got, want)
	}
	r := c.Redacted()
	if got := r.Apps["ai-hero"].APIKeys[0]; got != "[redacted]" {
		t.Errorf("redacted key = %q", got)
	}
	if c.Apps["ai-hero"].APIKeys[0] == "[redacted]" {
		t.Error("Redacted modified the original")
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	good := map[string]string{"AI_HERO_GATEWAY_KEY": "key-0123456789abcdef"}
	tests := []struct {
		name, from, to string
		env            map[string]string
		want           string
	}{
		{"unset var", "", "", map[string]string{}, "apps.ai-hero.apiKeys[0]: environment variable AI_HERO_GATEWAY_KEY is not set"},
		{"missing scheme", `url: "http://127.0.0.1:1999"`, `url: "127.0.0.1:1999"`, good, "apps.ai-hero.party.url: missing scheme"},
		{"bad scheme", `url: "http://127.0.0.1:8288"`, `url: "ftp://x"`, good, `apps.ai-hero.realtime.url: scheme "ftp"`},
		{"bad env", "env: dev", "env: qa", good, `env: "qa" is not one of`},
		{"prod needs admin token", "env: dev", "env: prod", good, "admin.token: required in env prod"},
		{"admin beyond loopback", "listen: 127.0.0.1:9091", "listen: 0.0.0.0:9091", good, "admin.token: required when admin.listen"},
		{"staging needs admin token", "env: dev", "env: staging", good, "admin.token: required in env staging"},
		{"admin on every interface", "listen: 127.0.0.1:9091", `listen: ":9091"`, good, "admin.token: required when admin.listen"},
		{"admin on IPv6 any", "listen: 127.0.0.1:9091", `listen: "[::]:9091"`, good, "admin.token: required when admin.listen"},
		{"short admin token", "token: ${SWITCHYARD_ADMIN_TOKEN:-}", "token: short-token", good, "admin.token: must be at least 16 characters"},
		{"short grant secret", "    party: {", "    grantSecret: too-short-for-hs256\n    party: {", good, "apps.ai-hero.grantSecret: must be at least 32 characters"},
		{"bad origin", "    party: {", "    origins: [\"https://www.aihero.dev/path\"]\n    party: {", good, "apps.ai-hero.origins[0]"},
		{"unknown key", "log: {", "bogus: 1\nlog: {", good, "bogus: unknown key"},
		{"dup event", "events: [ai.message]", "events: [ai.message, video.asset.ready]", good, `channels[3].events[1]: event "video.asset.ready" already belongs to channel "video-ready"`},
		{"reserved channel", "name: ai-stream", "name: default", good, `channels[3].name: "default" is reserved`},
		{"bad template", `channel: "{room}"`, `channel: "{user}"`, good, "apps.ai-hero.realtime.channel"},
		{"bad signing key", `signingKey: "${INNGEST_SIGNING_KEY:-}"`, `signingKey: "nope"`, good, "apps.ai-hero.realtime.signingKey: must look like"},
		{"short key", "", "", map[string]string{"AI_HERO_GATEWAY_KEY": "short"}, "apps.ai-hero.apiKeys[0]: must be at least 16 characters"},
		{"nested unknown key", "party: {", "party: {bogus: 1, ", good, "field bogus not found"},
		{"sample rate", "sampleRate: 1.0", "sampleRate: 2", good, "shadow.sampleRate: must be between 0 and 1"},
		{"flag file", "file: configs/flags/dev.flagd.json", "file: ''", good, "flags.file: required for provider file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(example, tt.from, tt.to, 1)
			_, err := Parse([]byte(doc), env(tt.env))
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestExpandDefaultsAndSecretsList(t *testing.T) {
	doc := strings.Replace(example, `signingKey: "${INNGEST_SIGNING_KEY:-}"`, `signingKey: "${INNGEST_SIGNING_KEY:-signkey-test-00ff}"`, 1)
	c, err := Parse([]byte(doc), env(map[string]string{"AI_HERO_GATEWAY_KEY": "key-0123456789abcdef"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Apps["ai-hero"].Realtime.SigningKey, "signkey-test-00ff"; got != want {
		t.Errorf("signingKey = %q, want %q", got, want)
	}
	secrets := c.Secrets()
	if len(secrets) != 2 {
		t.Errorf("Secrets() = %d values, want 2 (api key, signing key)", len(secrets))
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("env: ${X:-dev}\n"))
	f.Add([]byte("apps: {a: {apiKeys: [1]}}"))
	if good, err := os.ReadFile("testdata/good.yaml"); err == nil {
		f.Add(good)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, func(string) string { return "0123456789abcdef0123" })
		if err != nil {
			return
		}
		if c.Validate() != nil {
			t.Fatalf("Parse accepted a config that Validate refuses")
		}
		buildAll(t, c) // and the packages accept what Parse accepted
	})
}

// TestShippedConfigsLoad loads every config under configs/ with the
// variables they need, so a broken shipped config fails CI.
func TestShippedConfigsLoad(t *testing.T) {
	vars := map[string]string{
		"SWITCHYARD_ADMIN_TOKEN": "admin-token-0123456789", "AI_HERO_GATEWAY_KEY": "gw-key-0123456789abcdef",
		"AI_HERO_DROPIN_SECRET": "dropin-secret", "AI_HERO_PARTYKIT_URL": "https://ai-hero.example.partykit.dev",
		"INNGEST_SIGNING_KEY": "signkey-prod-0011aabb", "AI_HERO_GRANT_SECRET": "grant-secret-0123456789abcdef0123456789",
	}
	for _, name := range []string{"dev", "staging", "prod"} {
		t.Run(name, func(t *testing.T) {
			c, err := Load("../configs/"+name+".yaml", env(vars))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := c.Env, name; got != want {
				t.Errorf("env = %q, want %q", got, want)
			}
			if got, want := c.Flags.File, "../configs/flags/"+name+".flagd.json"; got != want {
				t.Errorf("flags.file = %q, want %q (relative to the config file)", got, want)
			}
		})
	}
}

func TestUnknownNestedKeysNameTheField(t *testing.T) {
	good := env(map[string]string{"AI_HERO_GATEWAY_KEY": "key-0123456789abcdef"})
	tests := []struct{ from, to, want string }{
		{"party: {", "party: {bogus: 1, ", "apps.ai-hero.party.bogus: unknown key"},
		{"{name: ai-stream,", "{name: ai-stream, sample: 1,", "channels[3].sample: unknown key"},
		{"shadow: {", "shadow: {queueSize: 1, ", "shadow.queueSize: unknown key"},
		{"realtime: {", "realtime: {channelTemplate: x, ", "apps.ai-hero.realtime.channelTemplate: unknown key"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(strings.Replace(example, tt.from, tt.to, 1)), good)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error = %v, want it to contain %q", tt.to, err, tt.want)
		}
	}
	// A merge key is YAML, not a field.
	doc := example + "upstream: &up {timeout: 5s}\nmulticast: {}\n"
	doc = strings.Replace(doc, "shadow: {sampleRate: 1.0, timeout: 5s}", "shadow:\n  <<: {timeout: 4s}\n  sampleRate: 1.0", 1)
	c, err := Parse([]byte(doc), good)
	if err != nil {
		t.Fatalf("merge key: %v", err)
	}
	if got, want := c.Shadow.Timeout.String(), "4s"; got != want {
		t.Errorf("merged shadow.timeout = %s, want %s", got, want)
	}
}

// TestShadowReadyWait: unset takes the shadow package's default (shown
// by config check), 0 turns the wait off, a value passes through.
func TestShadowReadyWait(t *testing.T) {
	vars := env(map[string]string{"AI_HERO_GATEWAY_KEY": "key-0123456789abcdef"})
	for _, tt := range []struct {
		line      string
		effective time.Duration // c.Shadow.ReadyWait after Parse
		pkg       time.Duration // ShadowConfig().ReadyWait
	}{
		{"", shadow.DefaultReadyWait, shadow.DefaultReadyWait},
		{"readyWait: 0s", 0, shadow.ReadyWaitOff},
		{"readyWait: 80ms", 80 * time.Millisecond, 80 * time.Millisecond},
	} {
		src := strings.Replace(example, "shadow: {sampleRate: 1.0, timeout: 5s}", "shadow: {sampleRate: 1.0, timeout: 5s, "+tt.line+"}", 1)
		if tt.line == "" {
			src = example
		}
		c, err := Parse([]byte(src), vars)
		if err != nil {
			t.Fatalf("%q: %v", tt.line, err)
		}
		if c.Shadow.ReadyWait == nil || *c.Shadow.ReadyWait != tt.effective {
			t.Errorf("%q: shadow.readyWait = %v, want %v", tt.line, c.Shadow.ReadyWait, tt.effective)
		}
		if got := c.ShadowConfig().ReadyWait; got != tt.pkg {
			t.Errorf("%q: ShadowConfig().ReadyWait = %v, want %v", tt.line, got, tt.pkg)
		}
	}
}

// TestRealtimeChannelCollisions: two apps on one realtime environment (the
// same URL and signing key env) may not have templates that can yield one
// Inngest channel; the default template namespaces app and party.
func TestRealtimeChannelCollisions(t *testing.T) {
	doc := func(a, b string) string {
		return `
channels: [{name: video, events: [video.ready]}]
flags: {provider: memory}
apps:
  ai-hero:
    apiKeys: ["key-ai-hero-0123456789"]
    party: {url: "http://127.0.0.1:1999"}
    realtime: {url: "http://127.0.0.1:8288", ` + a + `}
  course-builder:
    apiKeys: ["key-course-builder-0123"]
    party: {url: "http://127.0.0.1:1999", parties: [chat]}
    realtime: {url: "HTTP://127.0.0.1:8288/", ` + b + `}
`
	}
	for _, tt := range []struct {
		name, a, b, want string
	}{
		{"defaults", `signingKey: signkey-prod-00`, `signingKey: signkey-prod-11`, ""},
		{"the old default against a party prefix", `channel: "{room}"`, `channel: "{party}-{room}"`, `apps.course-builder.realtime.channel: "{party}-{room}" can yield the channel "main-x", as can apps.ai-hero.realtime.channel "{room}"`},
		{"a room cannot hold '/'", `channel: "{room}"`, `channel: "{party}/{room}"`, ""},
		{"same env, different keys", `channel: "{room}", signingKey: signkey-prod-00`, `channel: "{party}-{room}", signingKey: signkey-prod-11`, `can yield the channel`},
		{"different key env", `channel: "{room}", signingKey: signkey-prod-00`, `channel: "{party}-{room}", signingKey: signkey-branch-11`, ""},
		{"app namespaces", `channel: "{app}:{room}"`, `channel: "{app}:{party}:{room}"`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(doc(tt.a, tt.b)), env(nil))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			case tt.want == "":
				rc := c.RealtimeConfig("course-builder")
				if rc.Party != "main" || strings.Join(rc.Parties, ",") != "main,chat" {
					t.Errorf("RealtimeConfig party %q parties %v, want main and main,chat", rc.Party, rc.Parties)
				}
			}
		})
	}
}

func TestShutdownDelayDefaults(t *testing.T) {
	doc := func(env, extra string) string {
		return `env: ` + env + `
admin: {token: "admin-token-0123456789"}
channels: [{name: video, events: [video.ready]}]
flags: {provider: memory}
apps:
  ai-hero:
    apiKeys: ["key-ai-hero-0123456789"]
    party: {url: "http://127.0.0.1:1999"}
    realtime: {url: "http://127.0.0.1:8288"}
` + extra
	}
	for _, tt := range []struct {
		env, extra string
		want       time.Duration
		err        string
	}{
		{"prod", "", DefaultShutdownDelay, ""},
		{"staging", "", DefaultShutdownDelay, ""},
		{"dev", "", 0, ""},
		{"test", "", 0, ""},
		{"prod", "shutdown: {delay: 0s}", 0, ""},
		{"dev", "shutdown: {delay: 250ms}", 250 * time.Millisecond, ""},
		{"dev", "shutdown: {delay: -1s}", 0, "shutdown.delay: -1s is outside 0..5m"},
		{"dev", "shutdown: {delay: 10m}", 0, "shutdown.delay: 10m0s is outside 0..5m"},
		{"dev", "shutdown: {wait: 1s}", 0, "shutdown.wait: unknown key"},
	} {
		c, err := Parse([]byte(doc(tt.env, tt.extra)), env(nil))
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s %q: error %v, want %q", tt.env, tt.extra, err, tt.err)
			}
		case err != nil:
			t.Errorf("%s %q: %v", tt.env, tt.extra, err)
		case c.Shutdown.DelayOrZero() != tt.want:
			t.Errorf("%s %q: delay %v, want %v", tt.env, tt.extra, c.Shutdown.DelayOrZero(), tt.want)
		}
	}
}

// idempotency: memory is the default (one replica); redis takes its
// address and secret password from the environment, fills the defaults,
// feeds the Multicaster's bounds and the store's config, and never shows
// the password.
func TestIdempotencySection(t *testing.T) {
	c, err := Parse([]byte(example), env(map[string]string{"AI_HERO_GATEWAY_KEY": "key-0123456789abcdef"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Idempotency.Store != IdempotencyMemory || c.MulticastConfig().SharedDedup != nil {
		t.Errorf("default store %q, want memory and no shared store", c.Idempotency.Store)
	}
	doc := example + "idempotency: {store: redis, timeout: 80ms, redis: {addr: \"redis:6379\", password: \"${REDIS_PASSWORD}\"}}\n"
	c, err = Parse([]byte(doc), env(map[string]string{"AI_HERO_GATEWAY_KEY": "key-0123456789abcdef", "REDIS_PASSWORD": "redis-secret-value"}))
	if err != nil {
		t.Fatal(err)
	}
	rc := c.RedisConfig()
	if rc.Addr != "redis:6379" || rc.Password != "redis-secret-value" || rc.Timeout != 80*time.Millisecond || rc.KeyPrefix == "" {
		t.Errorf("redis config %+v", rc)
	}
	if mc := c.MulticastConfig(); mc.SharedDedupTimeout != 80*time.Millisecond || mc.SharedDedupBackoff != time.Second {
		t.Errorf("multicast bounds %v / %v, want 80ms / 1s", mc.SharedDedupTimeout, mc.SharedDedupBackoff)
	}
	if got := c.Redacted().Idempotency.Redis.Password; got != "[redacted]" {
		t.Errorf("redacted password %q", got)
	}
	if !slices.Contains(c.Secrets(), "redis-secret-value") {
		t.Error("Secrets() lacks the redis password")
	}
}
