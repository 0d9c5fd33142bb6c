package devproc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTailKeepsTheLastBytes(t *testing.T) {
	b := &Tail{Max: 8}
	for _, s := range []string{"0123456789", "ab"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got, want := b.String(), "456789ab"; got != want {
		t.Errorf("tail = %q, want %q", got, want)
	}
}

func TestModuleRootAndFreePort(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "go.mod")); err != nil || !strings.Contains(string(b), "module github.com/switchyard/switchyard") {
		t.Errorf("root %s: %v", root, err)
	}
	p, err := FreePort()
	if err != nil || p <= 0 || p > 65535 {
		t.Errorf("FreePort = %d, %v", p, err)
	}
}
