package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

// runbookBlocks returns the ```sh blocks of docs/runbook.md in order.
func runbookBlocks(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../../docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []string
	var cur *strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```sh"):
			cur = &strings.Builder{}
		case cur != nil && strings.HasPrefix(line, "```"):
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return blocks
}

// TestRunbookCommands runs every shell block of docs/runbook.md, verbatim
// and in order, with bash against a running prod-like gateway (admin token
// set, the prod flag file): move a channel to shadow, dual and realtime,
// roll back with the kill switch and verify, read the audit file. Only the
// admin address is pointed at the test gateway, and xdg-open is a stand-in
// that checks the saved page.
func TestRunbookCommands(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run the runbook: run `make test-deps`", tool)
		}
	}
	blocks := runbookBlocks(t)
	if len(blocks) < 8 {
		t.Fatalf("found %d shell blocks in docs/runbook.md, want the whole runbook", len(blocks))
	}
	work := t.TempDir()
	bin := filepath.Join(work, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "switchyard"), ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(bin, "xdg-open"), []byte("#!/bin/sh\ngrep -q '<svg' \"$1\" && grep -q 'transcript' \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The prod flag file, at the path the runbook names, relative to work.
	flags, err := os.ReadFile("../../configs/flags/prod.flagd.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(work, "configs/flags"), 0o755); err != nil {
		t.Fatal(err)
	}
	flagPath := filepath.Join(work, "configs/flags/prod.flagd.json")
	if err := os.WriteFile(flagPath, flags, 0o644); err != nil {
		t.Fatal(err)
	}

	party := partytest.New().Start()
	t.Cleanup(party.Close)
	rt := realtimetest.NewServer(realtimetest.Config{})
	t.Cleanup(rt.Close)
	const adminToken = "runbook-admin-token-0123456789"
	cfgPath := filepath.Join(work, "prod.yaml")
	cfg := fmt.Sprintf(`env: prod
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: %q}
log: {level: info, format: json}
flags: {provider: file, file: configs/flags/prod.flagd.json, pollInterval: 200ms}
channels:
  - {name: video-upload, events: [video.asset.attached, video.asset.detached, videoResource.created]}
  - {name: video-ready,  events: [video.asset.ready, video.asset.errored]}
  - {name: transcript,   events: [transcript.ready, transcriptWithScreenshots.ready]}
  - {name: ai-stream,    events: [ai.message]}
apps:
  ai-hero:
    apiKeys: ["${E2E_KEY}"]
    party: {url: %q}
    realtime: {url: %q}
shadow: {sampleRate: 1.0, timeout: 1s}
`, adminToken, party.URL(), rt.URL())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	g := startServe(t, cfgPath)

	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for i, b := range blocks {
		b = strings.ReplaceAll(b, "http://127.0.0.1:9091", g.admin)
		fmt.Fprintf(&script, "echo '=== block %d'\n%s\n", i+1, b)
		if strings.Contains(b, "flags set") || strings.Contains(b, "killswitch") {
			// The gateway re-reads the flag file every 200ms.
			script.WriteString("sleep 1\n")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "SWITCHYARD_ADMIN_TOKEN="+adminToken)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the runbook failed: %v\n%s", err, out)
	}
	outputs := map[int]string{}
	cur := 0
	for _, line := range strings.Split(string(out), "\n") {
		if _, err := fmt.Sscanf(line, "=== block %d", &cur); err == nil {
			continue
		}
		outputs[cur] += line + "\n"
	}

	// Each `routes | jq .route` block shows the stage the step promised,
	// compared with the answer quoted in the runbook where it quotes one.
	var routes []map[string]any
	for i := 1; i <= len(blocks); i++ {
		if !strings.Contains(blocks[i-1], "jq .route") || strings.Contains(blocks[i-1], "shadow/summary") {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(outputs[i]), &r); err != nil {
			t.Fatalf("block %d printed %q, not a route: %v", i, outputs[i], err)
		}
		routes = append(routes, r)
		for _, line := range strings.Split(blocks[i-1], "\n") {
			quoted := strings.TrimPrefix(line, "# ")
			var want map[string]any
			if quoted == line || json.Unmarshal([]byte(quoted), &want) != nil {
				continue
			}
			for k, v := range want {
				if r[k] != v {
					t.Errorf("block %d: route %s = %v, the runbook says %v", i, k, r[k], v)
				}
			}
		}
	}
	if len(routes) != 2 {
		t.Fatalf("found %d route checks after flips, want 2 (after shadow, after the kill switch)", len(routes))
	}
	if routes[0]["stage"] != "shadow" || routes[1]["stage"] != "legacy" || routes[1]["killSwitch"] != true {
		t.Errorf("routes after the flips = %v", routes)
	}
	// The audit file is the change log: three flips and two kill switch uses.
	audit, err := os.ReadFile(flagPath + ".audit.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(audit), `"flag":"realtime-transcript"`); got != 3 {
		t.Errorf("audit has %d transcript changes, want 3", got)
	}
	if got := strings.Count(string(audit), `"flag":"realtime-killswitch"`); got != 2 {
		t.Errorf("audit has %d kill switch changes, want 2", got)
	}
	if strings.Contains(string(audit), adminToken) {
		t.Error("the admin token leaked into the audit file")
	}
	last := blocks[len(blocks)-1]
	if !strings.Contains(last, ".audit.jsonl") || strings.Count(outputs[len(blocks)], "\n") < 5 {
		t.Errorf("the audit block printed too little:\n%s", outputs[len(blocks)])
	}
}
