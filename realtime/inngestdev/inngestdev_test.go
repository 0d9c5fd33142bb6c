//go:build unix

package inngestdev

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBinaryWithoutScript(t *testing.T) {
	t.Setenv(EnvBinary, "")
	root := t.TempDir() // no ../shared/tools beside it
	_, err := Binary(context.Background(), root)
	if !errors.Is(err, ErrNoScript) {
		t.Fatalf("Binary() error = %v, want ErrNoScript", err)
	}
	if !strings.Contains(err.Error(), "inngest-dev.sh") {
		t.Errorf("error %q does not name the script", err)
	}
	if _, err := Launch(context.Background(), root); !errors.Is(err, ErrNoScript) {
		t.Errorf("Launch() error = %v, want ErrNoScript", err)
	}
}

func TestBinaryScriptFailure(t *testing.T) {
	t.Setenv(EnvBinary, "")
	root := filepath.Join(t.TempDir(), "repo")
	tools := filepath.Join(root, "..", "shared", "tools")
	if err := os.MkdirAll(tools, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tools, "inngest-dev.sh"), []byte("echo /nonexistent/inngest\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Binary(context.Background(), root)
	if err == nil || errors.Is(err, ErrNoScript) || !strings.Contains(err.Error(), "not a binary") {
		t.Fatalf("Binary() error = %v, want a 'not a binary' failure", err)
	}
}

func TestSharedUsesEnvURL(t *testing.T) {
	t.Setenv(EnvURL, "http://127.0.0.1:9")
	var s Shared
	if got, want := s.URL(t), "http://127.0.0.1:9"; got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
	if got, want := Start(t), "http://127.0.0.1:9"; got != want {
		t.Errorf("Start() = %q, want %q", got, want)
	}
	s.Close() // nothing started: no-op
}

// TestLaunchRealServer starts the real dev server, publishes to it, stops
// it and starts it again on the same port.
func TestLaunchRealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Inngest dev server")
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ScriptPath)); err != nil {
		t.Skipf("no real Inngest dev server: %s absent", ScriptPath)
	}
	s, err := Launch(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(url string) int {
		resp, err := http.Post(url+"/v1/realtime/publish?channel=probe&topic=t", "application/json", strings.NewReader(`{"a":1}`))
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := publish(s.URL()); got != http.StatusOK {
		t.Errorf("publish answered %d, want 200", got)
	}
	pgid, dir, port := s.cmd.Process.Pid, s.dir, s.Port()
	s.Close()
	s.Close() // idempotent
	if err := syscall.Kill(-pgid, 0); err == nil {
		t.Errorf("process group %d still alive after Close", pgid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("working directory %s not removed: %v", dir, err)
	}
	hc := &http.Client{Timeout: time.Second}
	if resp, err := hc.Get(s.URL() + "/health"); err == nil {
		resp.Body.Close()
		t.Errorf("server still answers after Close")
	}
	again, err := LaunchOn(context.Background(), root, port)
	if err != nil {
		t.Fatalf("restart on port %d: %v", port, err)
	}
	defer again.Close()
	if again.URL() != s.URL() {
		t.Errorf("restart URL %s, want %s", again.URL(), s.URL())
	}
	if got := publish(again.URL()); got != http.StatusOK {
		t.Errorf("publish after restart answered %d, want 200", got)
	}
}
