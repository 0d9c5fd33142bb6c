//go:build unix

// Package partykitdev runs the real PartyKit dev server of the npm fixture
// in test/partykit for tests, so that the conformance suite checks the
// wire facts against PartyKit itself and not only against partytest.
//
// The fixture must be installed first: `make test-deps` (npm ci in
// test/partykit). Setting SWITCHYARD_PARTYKIT_URL to a running server's
// base URL skips the start-up.
package partykitdev

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/devproc"
)

// EnvURL names the environment variable that points the tests at an
// already running PartyKit server instead of starting one.
const EnvURL = "SWITCHYARD_PARTYKIT_URL"

// ReadyTimeout bounds the start-up of the dev server.
const ReadyTimeout = 60 * time.Second

// FixtureDir is the fixture's path relative to the module root.
const FixtureDir = "test/partykit"

// Server is a running dev server process. Its methods are safe for
// concurrent use.
type Server struct {
	url  string
	port int
	cmd  *exec.Cmd
	out  *devproc.Tail
	done chan struct{}
	once sync.Once
}

// URL is the base URL, e.g. http://127.0.0.1:PORT.
func (s *Server) URL() string { return s.url }

// Port is the loopback port the server listens on (for LaunchOn).
func (s *Server) Port() int { return s.port }

// Output returns the last 64 KiB the process wrote (stdout and stderr).
func (s *Server) Output() string {
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// Close kills the server's whole process group and waits for it (at most
// about 2 s for grandchildren to disappear). It is
// idempotent; a Server for an external URL has nothing to close.
func (s *Server) Close() {
	s.once.Do(func() {
		if s.cmd == nil || s.cmd.Process == nil {
			return
		}
		pgid := s.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.done
		// The grandchildren (workerd) die asynchronously: wait briefly
		// until the group is empty so no port or CPU outlives Close.
		for i := 0; i < 200 && syscall.Kill(-pgid, 0) == nil; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// Launch starts the dev server of the fixture under moduleRoot on a free
// loopback port in its own process group and waits until it answers HTTP
// (at most ReadyTimeout, or until ctx ends). The caller owns the Server and
// must Close it. It fails if the fixture's node_modules is missing.
func Launch(ctx context.Context, moduleRoot string) (*Server, error) {
	port, err := devproc.FreePort()
	if err != nil {
		return nil, fmt.Errorf("partykitdev: %w", err)
	}
	return LaunchOn(ctx, moduleRoot, port)
}

// LaunchOn is Launch on a given loopback port: a test that crashes the
// server (Close) starts it again on the port of the first one, so that the
// gateway under test, configured with that URL, sees a restart. It fails
// when the port is taken.
func LaunchOn(ctx context.Context, moduleRoot string, port int) (*Server, error) {
	dir := filepath.Join(moduleRoot, FixtureDir)
	bin := filepath.Join(dir, "node_modules", ".bin", "partykit")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("partykitdev: %s not installed: run `make test-deps` (npm ci in test/partykit): %w", bin, err)
	}
	cmd := exec.Command(bin, "dev", "--port", strconv.Itoa(port), "--no-hotkeys",
		"--disable-request-cf-fetch", "--persist", "false")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NO_UPDATE_NOTIFIER=1", "CI=1", "BROWSER=none")
	out := &devproc.Tail{Max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("partykitdev: start %s: %w", bin, err)
	}
	s := &Server{url: "http://127.0.0.1:" + strconv.Itoa(port), port: port, cmd: cmd, out: out, done: make(chan struct{})}
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(s.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/parties/main/ready-probe", nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("partykitdev: dev server exited before it was ready (%v); output:\n%s", waitErr, out.String())
		case <-ctx.Done():
			s.Close()
			return nil, fmt.Errorf("partykitdev: dev server not ready within %s: %w; output:\n%s", ReadyTimeout, ctx.Err(), out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Start returns the base URL of a PartyKit server for tb: the value of
// SWITCHYARD_PARTYKIT_URL if set, else a dev server started for tb alone
// and killed on tb.Cleanup (its output is logged if tb failed). It calls
// tb.Fatal if the fixture is not installed or the server does not start;
// it never skips. Start-up takes seconds: prefer Shared.
func Start(tb testing.TB) string {
	tb.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	root, err := ModuleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	s, err := Launch(context.Background(), root)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("partykit dev output:\n%s", s.Output())
		}
		s.Close()
	})
	return s.URL()
}

// Shared starts one dev server on first use and shares it among the tests
// of one test binary. Declare one in the test package and Close it after
// m.Run in TestMain:
//
//	var pk partykitdev.Shared
//	func TestMain(m *testing.M) { code := m.Run(); pk.Close(); os.Exit(code) }
//
// The zero value is ready to use; its methods are safe for concurrent use.
type Shared struct {
	devproc.Shared[*Server]
}

// URL returns the shared server's base URL, starting it on first call
// (SWITCHYARD_PARTYKIT_URL wins if set). It calls tb.Fatal when the server cannot be
// started, on this and every later call.
func (p *Shared) URL(tb testing.TB) string {
	tb.Helper()
	u, err := p.Start(os.Getenv(EnvURL), func() (*Server, error) {
		root, err := ModuleRoot()
		if err != nil {
			return nil, err
		}
		return Launch(context.Background(), root)
	})
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// ModuleRoot walks up from the working directory to the directory that
// holds go.mod (devproc.ModuleRoot).
func ModuleRoot() (string, error) {
	root, err := devproc.ModuleRoot()
	if err != nil {
		return "", fmt.Errorf("partykitdev: %w", err)
	}
	return root, nil
}
