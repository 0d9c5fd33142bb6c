package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/gateway"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/realtime/realtimetest"
	"github.com/switchyard/switchyard/recording"
)

const (
	oncallKey        = "oncall-key-0123456789abcdef"
	oncallAdminToken = "oncall-admin-token-0123456789"
	oncallSigningKey = "signkey-test-00112233445566778899aabbccddeeff"
)

// testGateway is an in-process gateway built from a config file, as the
// demo builds one, with its upstreams given by URL.
type testGateway struct {
	g          *gateway.Gateway
	configPath string
	logs       *syncBuffer
}

// startTestGateway writes a config (admin token, realtime signing key,
// channel template "ai-hero:{room}") and runs a gateway from it until the
// test ends.
func startTestGateway(t *testing.T, partyURL, realtimeURL string, stage broadcast.Stage, extra string) *testGateway {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "flags.json"), []byte(stageFlags(string(stage))), 0o644); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`env: test
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: %q}
log: {level: warn, format: json}
flags: {provider: file, file: flags.json, pollInterval: 200ms}
channels:
  - {name: video-upload, events: [video.asset.attached, video.asset.detached, videoResource.created]}
  - {name: video-ready,  events: [video.asset.ready, video.asset.errored]}
  - {name: transcript,   events: [transcript.ready, transcriptWithScreenshots.ready]}
  - {name: ai-stream,    events: [ai.message]}
apps:
  ai-hero:
    apiKeys: [%q]
    party: {url: %q, party: main}
    realtime: {url: %q, signingKey: %q, channel: "ai-hero:{room}"}
shadow: {sampleRate: 1.0, timeout: 1s}
upstream: {timeout: 3s, attemptTimeout: 1s, backoffBase: 10ms, backoffMax: 100ms}
server: {shutdownTimeout: 5s}
%s`, oncallAdminToken, oncallKey, partyURL, realtimeURL, oncallSigningKey, extra)
	path := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	logger, err := gateway.NewLogger(config.Log{Level: "warn", Format: "json"}, logs)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := runGateway(t, cfg, logger)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway logs:\n%s", logs.String())
		}
	})
	return &testGateway{g: g, configPath: path, logs: logs}
}

// writeRecording writes lines (JSON objects) as a recording file.
func writeRecording(t *testing.T, lines []string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rec.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func recLine(t time.Time, room, name, requestID, body string) string {
	return fmt.Sprintf(`{"t":%q,"app":"ai-hero","room":%q,"name":%q,"channel":"x","requestId":%q,"body":%s}`,
		t.UTC().Format(time.RFC3339Nano), room, name, requestID, body)
}

// runCmd runs the program with args and returns its exit code and output.
func runCmd(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := run(ctx, args, func(k string) string { return env[k] }, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestReplayMalformedSendsNothing: a bad line anywhere stops the replay
// before the first request.
func TestReplayMalformedSendsNothing(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	base := time.Unix(1700000000, 0)
	path := writeRecording(t, []string{
		recLine(base, "room-1", "video.asset.ready", "r1", `{"id":"v1"}`),
		recLine(base, "room-1", "video.asset.ready", "r2", `{"id":"v2"}`),
		`{"t":"2026-11-23T15:04:05Z","app":"ai-hero","room":"room 1","name":"n","requestId":"x","body":1}`,
	})
	code, stdout, stderr := runCmd(t, nil, "replay", path, "--to", srv.URL, "--app", "ai-hero", "--key", "k", "--admin", srv.URL)
	if code != 1 || !strings.Contains(stderr, "line 3: room:") {
		t.Errorf("exit %d, stderr %q; want 1 naming line 3", code, stderr)
	}
	if stdout != "" || hits.Load() != 0 {
		t.Errorf("stdout %q, %d requests; want nothing sent", stdout, hits.Load())
	}
}

func TestReplayUsage(t *testing.T) {
	path := writeRecording(t, []string{recLine(time.Unix(1700000000, 0), "r", "n", "id", "1")})
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no file", nil, []string{"replay", "--to", "http://x", "--app", "a", "--key", "k"}, "exactly one recording FILE"},
		{"no --to", nil, []string{"replay", path, "--app", "a", "--key", "k"}, "--to"},
		{"no --app", nil, []string{"replay", path, "--to", "http://x", "--key", "k"}, "--app"},
		{"no key", nil, []string{"replay", path, "--to", "http://x", "--app", "a"}, "SWITCHYARD_REPLAY_KEY"},
		{"negative speed", nil, []string{"replay", path, "--to", "http://x", "--app", "a", "--key", "k", "--speed", "-1"}, "--speed"},
		{"bad url", map[string]string{"SWITCHYARD_REPLAY_KEY": "k"}, []string{"replay", "--to", "x.example", path, "--app", "a"}, "http(s)://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, tt.env, tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 mentioning %q", code, stderr, tt.want)
			}
		})
	}
}

// TestReplayOrderAndSpeed replays interleaved rooms through a gateway on
// partytest: each room's messages arrive in recorded order (even where the
// file is not sorted), and a 1.2 s recording at --speed 4 takes at least
// the scaled 300 ms while --speed 0 just finishes.
func TestReplayOrderAndSpeed(t *testing.T) {
	party := partytest.MustStart(t)
	rt := realtimetest.NewServer(realtimetest.Config{SigningKey: oncallSigningKey})
	t.Cleanup(rt.Close) // after the gateway stops (cleanups run last-in first-out)
	tg := startTestGateway(t, party.URL(), rt.URL(), broadcast.StageLegacy, "")

	base := time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	var lines []string
	want := map[string][]string{}
	for i := range 12 {
		room := fmt.Sprintf("room-%d", i%3)
		id := fmt.Sprintf("m%02d", i)
		lines = append(lines, recLine(base.Add(time.Duration(i)*100*time.Millisecond), room, "video.asset.ready", id, fmt.Sprintf(`{"i":%d}`, i)))
	}
	// Swap two lines of room-0 in the file: the times decide the order.
	lines[0], lines[3] = lines[3], lines[0]
	for i := range 12 {
		room := fmt.Sprintf("room-%d", i%3)
		want[room] = append(want[room], fmt.Sprintf("m%02d", i))
	}
	path := writeRecording(t, lines)

	for _, tt := range []struct {
		speed   string
		atLeast time.Duration
	}{{"0", 0}, {"4", 1100 * time.Millisecond / 4}} {
		t.Run("speed "+tt.speed, func(t *testing.T) {
			before := len(party.Publishes())
			start := time.Now()
			code, stdout, stderr := runCmd(t, map[string]string{"SWITCHYARD_REPLAY_KEY": oncallKey},
				"replay", path, "--to", tg.g.PublicURL(), "--app", "ai-hero", "--speed", tt.speed)
			elapsed := time.Since(start)
			if code != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			if elapsed < tt.atLeast {
				t.Errorf("took %s, want at least %s at --speed %s", elapsed, tt.atLeast, tt.speed)
			}
			for _, s := range []string{"sent 12, ok 12, failed 0; stages: legacy=12", "12/12 100%", "no --admin"} {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			got := map[string][]string{}
			runID := ""
			for _, p := range party.Publishes()[before:] {
				env, err := broadcast.DecodeEnvelope(p.Body)
				if err != nil {
					t.Fatal(err)
				}
				orig, run, ok := strings.Cut(env.RequestID, "-replay-")
				if !ok || (runID != "" && run != runID) {
					t.Fatalf("requestId %q: want <orig>-replay-<one run id>", env.RequestID)
				}
				runID = run
				got[p.Room] = append(got[p.Room], orig)
			}
			for room, ids := range want {
				if strings.Join(got[room], ",") != strings.Join(ids, ",") {
					t.Errorf("room %s order = %v, want %v", room, got[room], ids)
				}
			}
		})
	}
}

// TestReplayFailuresAndParity: messages refused by the gateway make the
// exit status 1 with counts by status; a shadow-stage replay with --admin
// prints the comparator's figures for the replayed traffic only.
func TestReplayFailuresAndParity(t *testing.T) {
	party := partytest.MustStart(t)
	rt := realtimetest.NewServer(realtimetest.Config{SigningKey: oncallSigningKey})
	t.Cleanup(rt.Close) // after the gateway stops (cleanups run last-in first-out)
	tg := startTestGateway(t, party.URL(), rt.URL(), broadcast.StageShadow, "")
	base := time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	var lines []string
	for i := range 6 {
		lines = append(lines, recLine(base.Add(time.Duration(i)*10*time.Millisecond), "course-7", "video.asset.ready", "v", fmt.Sprintf(`{"i":%d,"d":1.5}`, i)))
	}
	lines = append(lines, `{"t":"2026-11-23T15:00:01Z","app":"other-app","room":"r","name":"n","requestId":"o","body":1}`)
	path := writeRecording(t, lines)

	code, stdout, _ := runCmd(t, nil, "replay", path, "--to", tg.g.PublicURL(), "--app", "ai-hero", "--key", "wrong-key-0123456789", "--speed", "0")
	if code != 1 || !strings.Contains(stdout, "sent 6, ok 0, failed 6 (401: 6)") || !strings.Contains(stdout, "unauthorized") {
		t.Errorf("wrong key: exit %d, stdout:\n%s\nwant 1 and 6 failures by 401", code, stdout)
	}

	warmRoom(t, tg, "course-7")
	code, stdout, stderr := runCmd(t, map[string]string{"SWITCHYARD_ADMIN_TOKEN": oncallAdminToken}, "replay", path,
		"--to", tg.g.PublicURL(), "--app", "ai-hero", "--key", oncallKey, "--speed", "0", "--admin", tg.g.AdminURL(), "--settle", "3s")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, s := range []string{"skipped 1 messages of other apps (other-app)", "sent 6, ok 6, failed 0; stages: shadow=6", "parity of the replayed traffic"} {
		if !strings.Contains(stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, stdout)
		}
	}
	row := regexp.MustCompile(`(?m)^\s*video-ready\s+(\d+)\s+(\d+)\s+.*\s(\S+)\s*$`).FindStringSubmatch(stdout)
	if row == nil {
		t.Fatalf("no video-ready parity row:\n%s", stdout)
	}
	if row[1] != "6" || row[2] != "6" || row[3] != "100.0" {
		t.Errorf("video-ready row: compared %s match %s parity %s, want 6 6 100.0 (only this run's messages)\n%s", row[1], row[2], row[3], stdout)
	}
}

// warmRoom publishes to room until the comparator has matched a message
// there, so that it watches the room on both sides before a test's traffic.
func warmRoom(t *testing.T, tg *testGateway, room string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		body := fmt.Sprintf(`{"room":%q,"name":"video.asset.ready","requestId":"warm-%s-%d","body":{"warm":%d}}`, room, room, i, i)
		req, _ := http.NewRequest(http.MethodPost, tg.g.PublicURL()+"/v1/broadcast", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+oncallKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		time.Sleep(100 * time.Millisecond)
		for _, s := range tg.g.Comparator().Summary() {
			if s.Channel == "video-ready" && s.Outcomes["match"] > 0 {
				return
			}
		}
	}
	t.Fatalf("room %s: no match within 15s", room)
}

// TestReplayCoursePlatform replays the shipped recording as fast as
// possible: every line is valid and accepted.
func TestReplayCoursePlatform(t *testing.T) {
	f, err := os.Open("../../configs/recordings/course-platform.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := recording.Read(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(entries); n < 60 || n > 150 {
		t.Errorf("course-platform.jsonl has %d lines, want 60 to 150", n)
	}
	party := partytest.MustStart(t)
	rt := realtimetest.NewServer(realtimetest.Config{SigningKey: oncallSigningKey})
	t.Cleanup(rt.Close) // after the gateway stops (cleanups run last-in first-out)
	tg := startTestGateway(t, party.URL(), rt.URL(), broadcast.StageDual, "")
	code, stdout, stderr := runCmd(t, nil, "replay", "../../configs/recordings/course-platform.jsonl", "--to", tg.g.PublicURL(),
		"--app", "ai-hero", "--key", oncallKey, "--speed", "0")
	if want := fmt.Sprintf("sent %d, ok %d, failed 0", len(entries), len(entries)); code != 0 || !strings.Contains(stdout, want) {
		t.Fatalf("exit %d, want 0 and %q\nstdout:\n%s\nstderr:\n%s", code, want, stdout, stderr)
	}
	messages := 0
	for _, p := range rt.Publishes() {
		if p.Topic != realtime.ProbeTopic { // the comparator's readiness probes
			messages++
		}
	}
	if messages != len(entries) {
		t.Errorf("realtime publishes of messages = %d, want %d", messages, len(entries))
	}
}

// TestRecordThenReplay: a gateway with record.file writes what it accepts
// (redacted), and the recording replays cleanly.
func TestRecordThenReplay(t *testing.T) {
	party := partytest.MustStart(t)
	rt := realtimetest.NewServer(realtimetest.Config{SigningKey: oncallSigningKey})
	t.Cleanup(rt.Close) // after the gateway stops (cleanups run last-in first-out)
	recPath := filepath.Join(t.TempDir(), "traffic.jsonl")
	tg := startTestGateway(t, party.URL(), rt.URL(), broadcast.StageLegacy,
		fmt.Sprintf("record: {file: %q, redactPaths: [body.text]}\n", recPath))
	for i := range 5 {
		body := fmt.Sprintf(`{"room":"video-9","name":"transcript.ready","requestId":"t-%d","body":{"id":"v9","text":"private %d"}}`, i, i)
		req, _ := http.NewRequest(http.MethodPost, tg.g.PublicURL()+"/v1/broadcast", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+oncallKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("broadcast %d = %d", i, resp.StatusCode)
		}
	}
	// The recorder flushes whenever its queue runs empty.
	var recs []recording.Line
	secWait(t, 10*time.Second, "5 recorded lines", func() bool {
		recs = readRecordingLines(t, recPath)
		return len(recs) == 5
	})
	for i, r := range recs {
		if r.RequestID != fmt.Sprintf("t-%d", i) || string(r.Body) != `{"id":"v9","text":"[redacted]"}` || r.Channel != "transcript" {
			t.Errorf("line %d = %+v", i+1, r)
		}
	}
	code, stdout, stderr := runCmd(t, nil, "replay", recPath, "--to", tg.g.PublicURL(), "--app", "ai-hero", "--key", oncallKey, "--speed", "0")
	if code != 0 || !strings.Contains(stdout, "sent 5, ok 5, failed 0") {
		t.Errorf("replay of the recording: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// readRecordingLines decodes the complete lines of a recording file.
func readRecordingLines(t *testing.T, path string) []recording.Line {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []recording.Line
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if !strings.HasSuffix(line, "\n") {
			break // a line being written
		}
		var l recording.Line
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("recording line %q: %v", line, err)
		}
		out = append(out, l)
	}
	return out
}
