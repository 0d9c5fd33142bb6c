package main

import (
	"bytes"
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
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime/realtimetest"
	"github.com/switchyard/switchyard/shadow"
)

const (
	oncallKey        = "oncall-key-0123456789abcdef"
	oncallAdminToken = "oncall-admin-token-0123456789"
	oncallSigningKey = "signkey-test-00112233445566778899aabbccddeeff"
)

// testGateway is an in-process gateway built from a config file, as the
// demo builds one, with its upstreams given by URL.
type testGateway struct {
	g          *gateway
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
	logger, err := newLogger(config.Log{Level: "warn", Format: "json"}, logs)
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

func TestReadRecordingMalformed(t *testing.T) {
	ok := recLine(time.Unix(1700000000, 0), "room-1", "video.asset.ready", "r1", `{"id":"v1"}`)
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"not JSON", []string{ok, ok, `{"t":`}, "line 3: not a recording object"},
		{"unknown key", []string{ok, `{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","name":"n","requestId":"x","body":1,"extra":true}`}, `line 2: not a recording object: json: unknown field "extra"`},
		{"missing t", []string{`{"app":"a","room":"r","name":"n","requestId":"x","body":1}`}, "line 1: t: required"},
		{"bad t", []string{`{"t":"yesterday","app":"a","room":"r","name":"n","requestId":"x","body":1}`}, `line 1: t: "yesterday" is not an RFC 3339 time`},
		{"bad room", []string{ok, `{"t":"2026-11-23T15:04:05Z","app":"a","room":"a/b","name":"n","requestId":"x","body":1}`}, "line 2: room: character '/'"},
		{"missing app", []string{`{"t":"2026-11-23T15:04:05Z","room":"r","name":"n","requestId":"x","body":1}`}, "line 1: app: required"},
		{"missing name", []string{`{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","requestId":"x","body":1}`}, "line 1: name: required"},
		{"empty requestId", []string{`{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","name":"n","requestId":"","body":1}`}, "line 1: requestId: required"},
		{"missing body", []string{`{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","name":"n","requestId":"x"}`}, "line 1: body: required"},
		{"bad party", []string{`{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","name":"n","requestId":"x","party":"a/b","body":1}`}, "line 1: party:"},
		{"trailing data", []string{ok + ` {}`}, "line 1: trailing data"},
		{"an array", []string{`[1,2]`}, "line 1: not a recording object"},
		{"blank lines counted", []string{ok, "", "   ", "nope"}, "line 4:"},
		{"empty file", []string{""}, "no message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readRecording(strings.NewReader(strings.Join(tt.lines, "\n")))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	entries, err := readRecording(strings.NewReader(ok + "\n\n" + ok + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := []int{entries[0].line, entries[1].line}, []int{1, 3}; got[0] != want[0] || got[1] != want[1] {
		t.Errorf("line numbers = %v, want %v", got, want)
	}
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

func TestReplayRequestID(t *testing.T) {
	if got, want := replayRequestID("req-1", "abcd", 7, false), "req-1-replay-abcd"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := replayRequestID("chat-1", "abcd", 7, true), "chat-1-replay-abcd-7"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	long := strings.Repeat("x", 256)
	a, b := replayRequestID(long, "abcd", 1, false), replayRequestID(long+"y", "abcd", 1, false)
	if len(a) > 256 || a == b || !strings.HasSuffix(a, "-replay-abcd") {
		t.Errorf("long ids: %q, %q; want distinct, at most 256 bytes", a, b)
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
				"replay", path, "--to", tg.g.publicURL(), "--app", "ai-hero", "--speed", tt.speed)
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

	code, stdout, _ := runCmd(t, nil, "replay", path, "--to", tg.g.publicURL(), "--app", "ai-hero", "--key", "wrong-key-0123456789", "--speed", "0")
	if code != 1 || !strings.Contains(stdout, "sent 6, ok 0, failed 6 (401: 6)") || !strings.Contains(stdout, "unauthorized") {
		t.Errorf("wrong key: exit %d, stdout:\n%s\nwant 1 and 6 failures by 401", code, stdout)
	}

	warmRoom(t, tg, "course-7")
	code, stdout, stderr := runCmd(t, map[string]string{"SWITCHYARD_ADMIN_TOKEN": oncallAdminToken}, "replay", path,
		"--to", tg.g.publicURL(), "--app", "ai-hero", "--key", oncallKey, "--speed", "0", "--admin", tg.g.adminURL(), "--settle", "3s")
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
		req, _ := http.NewRequest(http.MethodPost, tg.g.publicURL()+"/v1/broadcast", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+oncallKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		time.Sleep(100 * time.Millisecond)
		for _, s := range tg.g.cmp.Summary() {
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
	entries, err := readRecording(f)
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
	code, stdout, stderr := runCmd(t, nil, "replay", "../../configs/recordings/course-platform.jsonl", "--to", tg.g.publicURL(),
		"--app", "ai-hero", "--key", oncallKey, "--speed", "0")
	if want := fmt.Sprintf("sent %d, ok %d, failed 0", len(entries), len(entries)); code != 0 || !strings.Contains(stdout, want) {
		t.Fatalf("exit %d, want 0 and %q\nstdout:\n%s\nstderr:\n%s", code, want, stdout, stderr)
	}
	if got := len(rt.Publishes()); got != len(entries) {
		t.Errorf("realtime publishes = %d, want %d", got, len(entries))
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
		req, _ := http.NewRequest(http.MethodPost, tg.g.publicURL()+"/v1/broadcast", strings.NewReader(body))
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
	if err := tg.g.recorder.Close(); err != nil { // flush now; the gateway's own Close is then a no-op
		t.Fatal(err)
	}
	recs, _ := readLines(t, recPath)
	if len(recs) != 5 {
		t.Fatalf("recorded %d lines, want 5", len(recs))
	}
	for i, r := range recs {
		if r.RequestID != fmt.Sprintf("t-%d", i) || string(r.Body) != `{"id":"v9","text":"[redacted]"}` || r.Channel != "transcript" {
			t.Errorf("line %d = %+v", i+1, r)
		}
	}
	code, stdout, stderr := runCmd(t, nil, "replay", recPath, "--to", tg.g.publicURL(), "--app", "ai-hero", "--key", oncallKey, "--speed", "0")
	if code != 0 || !strings.Contains(stdout, "sent 5, ok 5, failed 0") {
		t.Errorf("replay of the recording: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func FuzzDecodeRecordLine(f *testing.F) {
	f.Add([]byte(`{"t":"2026-11-23T15:04:05.123456789Z","app":"ai-hero","room":"video-42","name":"video.asset.ready","channel":"video-ready","requestId":"req-1","body":{"id":"v1"}}`))
	f.Add([]byte(`{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","name":"ai.message","channel":"ai-stream","requestId":"c","party":"main","body":"chunk"}`))
	f.Add([]byte(`{"t":"2026-11-23T15:04:05+01:00","app":"a","room":"r","name":"n","requestId":"x","body":[1,2,{"a":null}]}`))
	f.Add([]byte(`{"t":"x","app":"a","room":"r","name":"n","requestId":"x","body":1}`))
	f.Add([]byte(`{"t":"2026-11-23T15:04:05Z","app":"a","room":"a%2F","name":"n","requestId":"x","body":1} {}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, at, err := decodeRecordLine(b)
		if err != nil {
			return
		}
		if rec.App == "" || rec.Name == "" || rec.RequestID == "" || len(rec.Body) == 0 || at.IsZero() && rec.T == "" {
			t.Fatalf("accepted an incomplete line: %+v", rec)
		}
		if err := broadcast.ValidateRoom(rec.Room); err != nil {
			t.Fatalf("accepted room %q: %v", rec.Room, err)
		}
		if !json.Valid(rec.Body) {
			t.Fatalf("accepted body %q", rec.Body)
		}
		// What the recorder would write for it decodes to the same line.
		m, err := broadcast.NewMessage(rec.App, rec.Room, rec.Name, rec.RequestID, rec.Body, rec.Channel, at)
		if err != nil {
			return // e.g. a body too large for the realtime transport
		}
		m.Party = rec.Party
		var buf bytes.Buffer
		if err := encodeRecordLine(&buf, m, nil); err != nil {
			t.Fatal(err)
		}
		again, at2, err := decodeRecordLine(buf.Bytes())
		if err != nil {
			t.Fatalf("re-encoded line %s: %v", buf.Bytes(), err)
		}
		if !at2.Equal(at) || again.Room != rec.Room || again.Name != rec.Name || again.RequestID != rec.RequestID || again.Party != rec.Party {
			t.Fatalf("round trip changed the line: %+v -> %+v", rec, again)
		}
		var x, y any
		if json.Unmarshal(rec.Body, &x) != nil || json.Unmarshal(again.Body, &y) != nil || fmt.Sprint(x) != fmt.Sprint(y) {
			t.Fatalf("round trip changed the body: %s -> %s", rec.Body, again.Body)
		}
	})
}

func TestProgressDraw(t *testing.T) {
	st := &replayStats{byStatus: map[string]int{}, byStage: map[broadcast.Stage]int{}}
	st.sent.Store(5)
	st.ok.Store(4)
	var tty, plain bytes.Buffer
	p := &progress{w: &tty, total: 10, tty: true}
	p.draw(st, time.Now(), false)
	st.sent.Store(10)
	st.ok.Store(9)
	p.draw(st, time.Now(), true)
	if got := tty.String(); !strings.HasPrefix(got, "\r[###############...............] 5/10  50%  ok 4  failed 1") ||
		strings.Count(got, "\r") != 2 || strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
		t.Errorf("terminal progress = %q, want two \\r-redrawn lines and one final newline", got)
	}
	q := &progress{w: &plain, total: 10}
	q.draw(st, time.Now(), false)
	q.draw(st, time.Now(), true)
	if got := plain.String(); strings.Contains(got, "\r") || strings.Count(got, "\n") != 2 || !strings.Contains(got, "10/10 100%  ok 9  failed 1") {
		t.Errorf("plain progress = %q, want two whole lines", got)
	}
	if isTerminal(&plain) {
		t.Error("a buffer is not a terminal")
	}
}

func TestDiffSummaries(t *testing.T) {
	row := func(ch string, match, missing, compared int64) shadow.ChannelSummary {
		return shadow.ChannelSummary{App: "ai-hero", Channel: ch, Compared: compared,
			Outcomes: map[shadow.Outcome]int64{shadow.OutcomeMatch: match, shadow.OutcomeMissingRealtime: missing}}
	}
	before := []shadow.ChannelSummary{row("video-ready", 10, 1, 11), row("transcript", 50, 0, 50)}
	after := []shadow.ChannelSummary{row("video-ready", 16, 2, 18), row("transcript", 40, 0, 40), row("ai-stream", 3, 0, 3)}
	got := map[string][3]int64{}
	for _, d := range diffSummaries(before, after) {
		got[d.Channel] = [3]int64{d.Compared, d.Outcomes[shadow.OutcomeMatch], d.Outcomes[shadow.OutcomeMissingRealtime]}
	}
	want := map[string][3]int64{
		"video-ready": {7, 6, 1},
		"transcript":  {0, 0, 0}, // the window rotated counts out: clamped, never negative
		"ai-stream":   {3, 3, 0},
	}
	for ch, w := range want {
		if got[ch] != w {
			t.Errorf("%s: got %v, want %v", ch, got[ch], w)
		}
	}
}
