package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/canary"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/legacyparty/partykitdev"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

// canaryArgs are the flags pointing a canary at tg (its config listens on
// :0, so the URLs are given).
func canaryArgs(tg *testGateway, extra ...string) []string {
	return append([]string{"canary", "--config", tg.configPath, "--app", "ai-hero",
		"--gateway", tg.g.PublicURL(), "--admin", tg.g.AdminURL()}, extra...)
}

func TestCanaryStages(t *testing.T) {
	tests := []struct {
		stage broadcast.Stage
		want  string // verdict pattern
	}{
		{broadcast.StageLegacy, `^canary ok app=ai-hero stage=legacy legacy=[0-9.]+ms\n$`},
		{broadcast.StageShadow, `^canary ok app=ai-hero stage=shadow legacy=[0-9.]+ms realtime=[0-9.]+ms coverage=[0-9.]+% compared=\d+/[1-9]\d*\n$`},
		{broadcast.StageDual, `^canary ok app=ai-hero stage=dual legacy=[0-9.]+ms realtime=[0-9.]+ms coverage=[0-9.]+% compared=\d+/[1-9]\d*\n$`},
		{broadcast.StageRealtime, `^canary ok app=ai-hero stage=realtime realtime=[0-9.]+ms\n$`},
	}
	for _, tt := range tests {
		t.Run(string(tt.stage), func(t *testing.T) {
			party := partytest.MustStart(t)
			// The realtime server requires the config's signing key: the
			// canary must mint its token with it.
			rt := realtimetest.NewServer(realtimetest.Config{SigningKey: oncallSigningKey})
			t.Cleanup(rt.Close) // after the gateway stops (cleanups run last-in first-out)
			tg := startTestGateway(t, party.URL(), rt.URL(), tt.stage, "")
			code, stdout, stderr := runCmd(t, nil, canaryArgs(tg, "--timeout", "5s")...)
			if code != 0 || !regexp.MustCompile(tt.want).MatchString(stdout) {
				t.Fatalf("exit %d, stdout %q, want 0 and %s\nstderr:\n%s", code, stdout, tt.want, stderr)
			}
			// It went through the gateway to the default canary room.
			pubs := party.Publishes()
			if tt.stage != broadcast.StageRealtime && (len(pubs) != 1 || pubs[0].Room != canary.DefaultRoom) {
				t.Errorf("PartyKit publishes = %+v, want one to %s", pubs, canary.DefaultRoom)
			}
			if tt.stage == broadcast.StageRealtime && len(pubs) != 0 {
				t.Errorf("PartyKit got %d publishes at stage realtime", len(pubs))
			}
		})
	}
}

func TestCanaryFailureAndMetrics(t *testing.T) {
	party := partytest.MustStart(t)
	rt := realtimetest.NewServer(realtimetest.Config{SigningKey: oncallSigningKey})
	t.Cleanup(rt.Close) // after the gateway stops (cleanups run last-in first-out)
	tg := startTestGateway(t, party.URL(), rt.URL(), broadcast.StageShadow, "")
	metrics := filepath.Join(t.TempDir(), "canary.prom")

	// The key comes from the environment here; the room is a custom one.
	env := map[string]string{"SWITCHYARD_CANARY_KEY": oncallKey}
	code, stdout, _ := runCmd(t, env, canaryArgs(tg, "--room", "canary-2", "--metrics-file", metrics)...)
	if code != 0 {
		t.Fatalf("first run: exit %d, stdout %q", code, stdout)
	}
	first := time.Now()

	rt.SetDeliveryFault(realtimetest.DeliveryFault{DropAll: true})
	code, stdout, stderr := runCmd(t, env, canaryArgs(tg, "--room", "canary-2", "--timeout", "1s", "--metrics-file", metrics)...)
	want := regexp.MustCompile(`^canary FAIL app=ai-hero stage=shadow legacy=[0-9.]+ms realtime: not received within 1s coverage=[0-9.]+% compared=\d+/[1-9]\d*\n$`)
	if code != 1 || !want.MatchString(stdout) || !strings.Contains(stderr, "canary failed") {
		t.Errorf("dropped realtime: exit %d, stdout %q, stderr %q; want 1 and %s", code, stdout, stderr, want)
	}

	b, err := os.ReadFile(metrics)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, s := range []string{
		`switchyard_canary_runs_total{app="ai-hero",result="ok"} 1`,
		`switchyard_canary_runs_total{app="ai-hero",result="fail"} 1`,
		`switchyard_canary_last_success_timestamp_seconds{app="ai-hero",transport="legacy"}`,
		`switchyard_canary_last_success_timestamp_seconds{app="ai-hero",transport="realtime"}`,
		"# TYPE switchyard_canary_runs_total counter",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("metrics file lacks %q:\n%s", s, text)
		}
	}
	// realtime's last success is still the first run's; legacy's is the
	// second's.
	ts := func(transport string) float64 {
		m := regexp.MustCompile(`transport="` + transport + `"} ([0-9.e+]+)`).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("no timestamp for %s", transport)
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if l, r := ts("legacy"), ts("realtime"); !(r <= float64(first.UnixNano())/1e9 && l > r) {
		t.Errorf("last success legacy %f, realtime %f: want realtime from the first run, legacy later", l, r)
	}
}

func TestCanaryUsageAndSetupErrors(t *testing.T) {
	party := partytest.MustStart(t)
	rt := realtimetest.NewServer(realtimetest.Config{SigningKey: oncallSigningKey})
	t.Cleanup(rt.Close) // after the gateway stops (cleanups run last-in first-out)
	tg := startTestGateway(t, party.URL(), rt.URL(), broadcast.StageShadow, "")
	tests := []struct {
		name     string
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{"no app", []string{"canary", "--config", tg.configPath}, 2, "", "--app"},
		{"no config", []string{"canary", "--app", "ai-hero"}, 2, "", "--config"},
		{"unknown app", []string{"canary", "--config", tg.configPath, "--app", "nope"}, 2, "", `app "nope" is not in`},
		{"bad room", canaryArgs(tg, "--room", "a b"), 2, "", "--room"},
		{"wrong admin token", canaryArgs(tg, "--admin-token", "wrong-token-0123456789"), 1, "canary FAIL app=ai-hero route: GET /v1/admin/routes: 401 unauthorized", "canary failed"},
		{"wrong key", canaryArgs(tg, "--key", "wrong-key-0123456789"), 1, "canary FAIL app=ai-hero stage=shadow publish: 401 unauthorized", ""},
		{"gateway down", canaryArgs(tg, "--admin", "http://127.0.0.1:1", "--timeout", "1s"), 1, "canary FAIL app=ai-hero route:", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, nil, tt.args...)
			if code != tt.code || !strings.Contains(stdout, tt.inStdout) || !strings.Contains(stderr, tt.inStderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, stdout, stderr, tt.code, tt.inStdout, tt.inStderr)
			}
		})
	}
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:8080":   "127.0.0.1:8080",
		":8080":          "127.0.0.1:8080",
		"[::]:9091":      "127.0.0.1:9091",
		"10.0.0.5:8080":  "10.0.0.5:8080",
		"localhost:1999": "localhost:1999",
	} {
		if got := dialAddr(in); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCanaryAndReplayRealPartyKit runs the canary and a replay against a
// gateway whose party upstream is the real PartyKit dev server.
func TestCanaryAndReplayRealPartyKit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the PartyKit dev server")
	}
	pk := partykitdev.Start(t)
	rt := realtimetest.NewServer(realtimetest.Config{SigningKey: oncallSigningKey})
	t.Cleanup(rt.Close) // after the gateway stops (cleanups run last-in first-out)
	tg := startTestGateway(t, pk, rt.URL(), broadcast.StageShadow, "")

	t.Run("canary", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, nil, canaryArgs(tg)...)
		want := regexp.MustCompile(`^canary ok app=ai-hero stage=shadow legacy=[0-9.]+ms realtime=[0-9.]+ms coverage=[0-9.]+% compared=\d+/[1-9]\d*\n$`)
		if code != 0 || !want.MatchString(stdout) {
			t.Fatalf("exit %d, stdout %q, want %s\nstderr:\n%s", code, stdout, want, stderr)
		}
		t.Log(strings.TrimSpace(stdout))
	})

	t.Run("replay", func(t *testing.T) {
		// A browser on one room sees the replayed messages in order, as
		// PartyKit re-encoded them.
		b := dialPartyRoom(t, pk, "chat-clx7k2m9p0001vq08hz3f4t1a")
		warmRoom(t, tg, "chat-clx7k2m9p0001vq08hz3f4t1a")
		b.drain()
		code, stdout, stderr := runCmd(t, nil, "replay", "../../configs/recordings/course-platform.jsonl",
			"--to", tg.g.PublicURL(), "--app", "ai-hero", "--key", oncallKey, "--speed", "0",
			"--admin", tg.g.AdminURL(), "--admin-token", oncallAdminToken, "--settle", "4s")
		if code != 0 || !strings.Contains(stdout, "failed 0") || !strings.Contains(stdout, "parity of the replayed traffic") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		t.Logf("replay output:\n%s", stdout)
		row := regexp.MustCompile(`(?m)^\s*ai-stream\s+(\d+)\s+(\d+)\s`).FindStringSubmatch(stdout)
		if row == nil || row[1] == "0" || row[1] != row[2] {
			t.Errorf("ai-stream row %v: want every compared chunk matched\n%s", row, stdout)
		}
		// Delivery to PartyKit is at-least-once: an upstream attempt that
		// timed out on a loaded machine is retried although PartyKit may
		// have broadcast it, so a browser dedupes by requestId, as here.
		var names []string
		seen := map[string]bool{}
		for _, env := range b.until(t, "resource.chat.completed") {
			if !seen[env.RequestID] {
				seen[env.RequestID] = true
				names = append(names, env.Name)
			}
		}
		if len(names) < 3 || names[0] != "resource.chat.prompted" || names[len(names)-1] != "resource.chat.completed" {
			t.Errorf("browser saw %v, want prompted, chunks, completed", names)
		}
		for _, n := range names[1 : len(names)-1] {
			if n != "ai.message" {
				t.Errorf("browser saw %v, want only ai.message between prompted and completed", names)
				break
			}
		}
	})
}

// partyRoom is a browser-like subscription to one PartyKit room.
type partyRoom struct {
	frames chan []byte
}

// dialPartyRoom subscribes to room of the party at base and waits until the
// subscription is connected.
func dialPartyRoom(t *testing.T, base, room string) *partyRoom {
	t.Helper()
	p := &partyRoom{frames: make(chan []byte, 1024)}
	s := legacyparty.Subscribe(legacyparty.SubscriberConfig{URL: base, Party: "main", Room: room}, func(b []byte, _ time.Time) {
		select {
		case p.frames <- b:
		default:
		}
	}, nil, nil)
	t.Cleanup(func() { _ = s.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !s.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("room %s: not connected within 10s", room)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

// drain forgets the frames received so far.
func (p *partyRoom) drain() {
	for {
		select {
		case <-p.frames:
		default:
			return
		}
	}
}

// until returns the envelopes received up to and including the first one
// named name (at most 10 s).
func (p *partyRoom) until(t *testing.T, name string) []broadcast.Envelope {
	t.Helper()
	var out []broadcast.Envelope
	timeout := time.After(10 * time.Second)
	for {
		select {
		case b := <-p.frames:
			env, err := broadcast.DecodeEnvelope(b)
			if err != nil {
				t.Fatalf("frame %q: %v", b, err)
			}
			out = append(out, env)
			if env.Name == name {
				return out
			}
		case <-timeout:
			t.Fatalf("no %s within 10s; got %d frames", name, len(out))
		}
	}
}
