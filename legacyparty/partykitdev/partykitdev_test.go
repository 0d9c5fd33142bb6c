//go:build unix

package partykitdev

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLaunchWithoutNodeModules(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, FixtureDir), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Launch(context.Background(), root)
	if err == nil || !strings.Contains(err.Error(), "run `make test-deps` (npm ci in test/partykit)") {
		t.Fatalf("Launch() error = %v, want the install hint", err)
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Errorf("ModuleRoot() = %s, which holds no go.mod", root)
	}
	if _, err := os.Stat(filepath.Join(root, FixtureDir, "partykit.json")); err != nil {
		t.Errorf("fixture not found under %s: %v", root, err)
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

func TestLaunchRealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node; covered by the conformance suite")
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Launch(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	pgid := s.cmd.Process.Pid
	s.Close()
	s.Close() // idempotent
	// The whole process group is gone (workerd included).
	if err := killCheck(pgid); err == nil {
		t.Errorf("process group %d still alive after Close", pgid)
	}
	if !strings.Contains(s.Output(), "PartyKit") {
		t.Errorf("output not captured: %q", s.Output())
	}
}
