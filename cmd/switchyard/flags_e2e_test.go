package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

// routeOf asks the running gateway which stage applies.
func routeOf(t *testing.T, admin, event string) (stage string, kill bool) {
	t.Helper()
	resp, err := http.Get(admin + "/v1/admin/routes?app=ai-hero&room=course-1&event=" + event)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Route struct {
			Stage      string `json:"stage"`
			KillSwitch bool   `json:"killSwitch"`
		} `json:"route"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &got); err != nil || resp.StatusCode != 200 {
		t.Fatalf("routes answered %d %s", resp.StatusCode, b)
	}
	return got.Route.Stage, got.Route.KillSwitch
}

// waitStage polls the admin routes until the stage is want (hot reload
// must take effect within 2 s; allow 5 s on a loaded machine).
func waitStage(t *testing.T, admin, event, want string, wantKill bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		stage, kill := routeOf(t, admin, event)
		if stage == want && kill == wantKill {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stage of %s = %s (kill switch %v), want %s (%v) within 5s", event, stage, kill, want, wantKill)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFlagsCLIRoundTripThroughGateway flips a channel with `switchyard
// flags set` and the kill switch with `switchyard flags killswitch`
// against a running gateway's flag file, and sees each take effect in the
// gateway's routes and answers, with an audit record per change.
func TestFlagsCLIRoundTripThroughGateway(t *testing.T) {
	party := partytest.New().Start()
	t.Cleanup(party.Close)
	rt := realtimetest.NewServer(realtimetest.Config{})
	t.Cleanup(rt.Close) // after the gateway's own cleanup (LIFO)
	path := writeE2EConfig(t, party.URL(), rt.URL(), "legacy", "")
	flagFile := filepath.Join(filepath.Dir(path), "flags.json")
	g := startServe(t, path)
	waitStage(t, g.admin, "video.asset.ready", "legacy", false)

	flagsCLI := func(args ...string) string {
		t.Helper()
		var out, errOut strings.Builder
		code := run(context.Background(), append([]string{"flags"}, args...), e2eEnv, &out, &errOut)
		if code != 0 {
			t.Fatalf("switchyard flags %v exited %d: %s", args, code, errOut.String())
		}
		return out.String()
	}
	out := flagsCLI("set", "realtime-video-ready", "shadow", "--file", flagFile, "--env", "test", "--reason", "pilot shadow", "--admin", g.admin)
	for _, want := range []string{`-      "defaultVariant": "legacy"`, `+      "defaultVariant": "shadow"`, "realtime-video-ready: legacy -> shadow"} {
		if !strings.Contains(out, want) {
			t.Errorf("set output lacks %q:\n%s", want, out)
		}
	}
	waitStage(t, g.admin, "video.asset.ready", "shadow", false)
	waitStage(t, g.admin, "transcript.ready", "legacy", false) // other channels untouched

	status, body := post(t, g.public+"/v1/broadcast", e2eKey, "", `{"room":"course-1","name":"video.asset.ready","body":{"id":1}}`)
	if status != 200 || !strings.Contains(body, `"stage":"shadow"`) {
		t.Fatalf("broadcast after set = %d %s, want stage shadow", status, body)
	}

	flagsCLI("killswitch", "on", "--file", flagFile, "--env", "test", "--reason", "rollback drill", "--admin", g.admin)
	waitStage(t, g.admin, "video.asset.ready", "legacy", true)
	status, body = post(t, g.public+"/v1/broadcast", e2eKey, "", `{"room":"course-1","name":"video.asset.ready","body":{"id":2}}`)
	if status != 200 || !strings.Contains(body, `"stage":"legacy"`) {
		t.Fatalf("broadcast with kill switch on = %d %s, want stage legacy", status, body)
	}
	flagsCLI("killswitch", "off", "--file", flagFile, "--env", "test", "--reason", "drill over")
	waitStage(t, g.admin, "video.asset.ready", "shadow", false)

	// Refused changes leave the running gateway as it was.
	var errOut strings.Builder
	if code := run(context.Background(), []string{"flags", "set", "realtime-video-ready", "sideways", "--file", flagFile, "--env", "test", "--reason", "x"}, e2eEnv, io.Discard, &errOut); code == 0 {
		t.Fatal("an unknown variant was accepted")
	}
	if !strings.Contains(errOut.String(), "sideways") {
		t.Errorf("refusal does not name the variant: %s", errOut.String())
	}
	waitStage(t, g.admin, "video.asset.ready", "shadow", false)

	// One audit record per change, in order, with who/where/why.
	f, err := os.Open(flagFile + ".audit.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 3 {
		t.Fatalf("audit has %d records, want 3", len(recs))
	}
	for i, want := range []struct{ flag, from, to, reason string }{
		{"realtime-video-ready", "legacy", "shadow", "pilot shadow"},
		{"realtime-killswitch", "off", "on", "rollback drill"},
		{"realtime-killswitch", "on", "off", "drill over"},
	} {
		r := recs[i]
		if r["flag"] != want.flag || r["from"] != want.from || r["to"] != want.to || r["reason"] != want.reason || r["env"] != "test" {
			t.Errorf("audit[%d] = %v, want %+v", i, r, want)
		}
		for _, k := range []string{"time", "user", "host"} {
			if s, _ := r[k].(string); s == "" {
				t.Errorf("audit[%d] lacks %s", i, k)
			}
		}
	}
	if _, ok := recs[0]["shadow"]; !ok {
		t.Errorf("audit[0] lacks the admin snapshot: %v", recs[0])
	}
}
