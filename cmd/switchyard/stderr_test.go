package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

// TestBinaryOutputFollowsLogFormat: the built binary with log.format
// console writes no JSON line to stderr. flagd's in-process service logs
// JSON to os.Stderr on its own; main relays those lines through the
// process logger, so they arrive as console lines too.
func TestBinaryOutputFollowsLogFormat(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "switchyard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	party := partytest.MustStart(t)
	rt := realtimetest.NewServer(realtimetest.Config{})
	t.Cleanup(rt.Close)
	path := writeE2EConfig(t, party.URL(), rt.URL(), "shadow", "")
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	console := strings.Replace(string(cfg), "log: {level: debug, format: json}", "log: {level: info, format: console}", 1)
	if console == string(cfg) {
		t.Fatal("the e2e config's log line changed; update this test")
	}
	if err := os.WriteFile(path, []byte(console), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd := exec.Command(bin, "serve", "--config", path)
	cmd.Env = append(os.Environ(), "E2E_KEY="+e2eKey)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	secWait(t, 20*time.Second, "the binary to be ready", func() bool { return strings.Contains(stderr.String(), "switchyard ready") })
	// flagd logs its service's start while the provider initialises,
	// before ready; the relay may lag behind our own lines a little.
	secWait(t, 10*time.Second, "flagd's in-process service line", func() bool { return strings.Contains(stderr.String(), "InProcess service") })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "{") {
			t.Errorf("a JSON line with log.format console: %s", line)
		}
		if strings.Contains(line, "InProcess service") && !strings.Contains(line, "\tINFO\tlib\t") {
			t.Errorf("flagd's line is not a console line of our logger: %q", line)
		}
	}
}
