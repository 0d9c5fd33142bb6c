package devproc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

type fakeProc struct {
	url    string
	closed atomic.Int32
}

func (f *fakeProc) URL() string    { return f.url }
func (f *fakeProc) Output() string { return "out of " + f.url }
func (f *fakeProc) Close()         { f.closed.Add(1) }

// TestShared: concurrent first calls launch once and all get its URL; an
// external URL launches nothing; a failed launch is every later call's
// error; Output and Close reach only a launched server.
func TestShared(t *testing.T) {
	var s Shared[*fakeProc]
	if s.Output() != "" {
		t.Error("output before any start")
	}
	s.Close() // nothing started: no-op, and Start still works after it
	var launches atomic.Int32
	proc := &fakeProc{url: "http://127.0.0.1:1"}
	launch := func() (*fakeProc, error) {
		launches.Add(1)
		time.Sleep(20 * time.Millisecond)
		return proc, nil
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if u, err := s.Start("", launch); u != proc.url || err != nil {
				t.Errorf("Start = %q, %v", u, err)
			}
		})
	}
	wg.Wait()
	if n := launches.Load(); n != 1 {
		t.Errorf("%d launches, want 1", n)
	}
	if s.Output() != "out of "+proc.url {
		t.Errorf("Output = %q", s.Output())
	}
	s.Close()
	if proc.closed.Load() != 1 {
		t.Errorf("closed %d times, want 1", proc.closed.Load())
	}

	var ext Shared[*fakeProc]
	if u, err := ext.Start("http://external:9", launch); u != "http://external:9" || err != nil || launches.Load() != 1 {
		t.Errorf("external: %q, %v, %d launches", u, err, launches.Load())
	}
	ext.Close()

	var failed Shared[*fakeProc]
	boom := errors.New("boom")
	for range 2 {
		if _, err := failed.Start("", func() (*fakeProc, error) { return nil, boom }); !errors.Is(err, boom) {
			t.Errorf("failed launch: %v", err)
		}
	}
	failed.Close()
	if failed.Output() != "" {
		t.Error("output of a failed launch")
	}
}
