//go:build unix

// Package inngestdev runs a real Inngest dev server (`inngest dev`) for
// tests, so that suites check the gateway against Inngest Realtime itself
// and not only against realtimetest. It mirrors legacyparty/partykitdev.
//
// The binary comes from the shared tool script ../shared/tools/inngest-dev.sh
// (relative to the module root: the shared/ folder beside the checkout),
// which prints the path of a cached build (and builds it once, which takes
// minutes; scripts/test-deps.sh does that first). When the script is
// absent, Start and Shared skip the test with a message saying so; every
// other failure fails the test. Setting SWITCHYARD_INNGEST_URL to a running
// server's base URL skips the start-up.
package inngestdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/devproc"
)

// EnvURL names the environment variable that points the tests at an
// already running Inngest server instead of starting one (the realtime
// conformance suite reads it too).
const EnvURL = "SWITCHYARD_INNGEST_URL"

// EnvBinary names the environment variable that gives the dev server
// binary's path instead of the tool script (the browser test reads it
// too).
const EnvBinary = "SWITCHYARD_INNGEST_DEV"

// ScriptPath is the tool script's path relative to the module root.
const ScriptPath = "../shared/tools/inngest-dev.sh"

// ReadyTimeout bounds the start-up of the dev server (the binary itself
// answers in well under a second once built).
const ReadyTimeout = 30 * time.Second

// BinaryTimeout bounds the script that finds (or, the first time, builds)
// the binary.
const BinaryTimeout = 20 * time.Minute

// ErrNoScript is returned (wrapped) when the tool script is absent.
var ErrNoScript = errors.New("inngestdev: tool script not found")

// Server is a running dev server process. Its methods are safe for
// concurrent use.
type Server struct {
	url  string
	port int
	cmd  *exec.Cmd
	dir  string
	out  *devproc.Tail
	done chan struct{}
	once sync.Once
}

// URL is the base URL, e.g. http://127.0.0.1:PORT.
func (s *Server) URL() string { return s.url }

// Port is the loopback port of the API (for LaunchOn).
func (s *Server) Port() int { return s.port }

// Output returns the last 64 KiB the process wrote (stdout and stderr).
func (s *Server) Output() string {
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// Close kills the server's process group, waits for it and removes its
// working directory. It is idempotent; a Server for an external URL has
// nothing to close.
func (s *Server) Close() {
	s.once.Do(func() {
		if s.cmd == nil || s.cmd.Process == nil {
			return
		}
		pgid := s.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.done
		if s.dir != "" {
			_ = os.RemoveAll(s.dir)
		}
	})
}

// Binary returns the path of the dev server binary: SWITCHYARD_INNGEST_DEV
// when set, else what the tool script under moduleRoot prints. The error
// wraps ErrNoScript when the script is absent.
func Binary(ctx context.Context, moduleRoot string) (string, error) {
	if bin := os.Getenv(EnvBinary); bin != "" {
		return bin, nil
	}
	script := filepath.Join(moduleRoot, ScriptPath)
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("%w: %s (the shared/ folder beside the checkout): %w", ErrNoScript, filepath.Clean(script), err)
	}
	ctx, cancel := context.WithTimeout(ctx, BinaryTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("inngestdev: %s: %w; stderr:\n%s", script, err, stderr.String())
	}
	bin := strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(bin, '\n'); i >= 0 {
		bin = bin[i+1:]
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		return "", fmt.Errorf("inngestdev: %s printed %q, which is not a binary", script, bin)
	}
	return bin, nil
}

// Launch starts the dev server on free loopback ports in its own process
// group and working directory and waits until GET /health answers 200 (at
// most ReadyTimeout, or until ctx ends). The caller owns the Server and
// must Close it.
func Launch(ctx context.Context, moduleRoot string) (*Server, error) {
	port, err := devproc.FreePort()
	if err != nil {
		return nil, err
	}
	return LaunchOn(ctx, moduleRoot, port)
}

// LaunchOn is Launch with the API on a given loopback port: a test that
// crashes the server (Close) starts it again on the port of the first one.
// The connect gateway and its gRPC ports, which the dev server also opens,
// get fresh free ports each time.
func LaunchOn(ctx context.Context, moduleRoot string, port int) (*Server, error) {
	bin, err := Binary(ctx, moduleRoot)
	if err != nil {
		return nil, err
	}
	var extra [3]int
	for i := range extra {
		if extra[i], err = devproc.FreePort(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "inngestdev-")
	if err != nil {
		return nil, fmt.Errorf("inngestdev: %w", err)
	}
	cmd := exec.Command(bin, "dev", "--no-discovery", "--no-poll", "--host", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--connect-gateway-port", strconv.Itoa(extra[0]),
		"--connect-executor-grpc-port", strconv.Itoa(extra[1]),
		"--connect-gateway-grpc-port", strconv.Itoa(extra[2]))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DO_NOT_TRACK=1", "INNGEST_DEV=1")
	out := &devproc.Tail{Max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("inngestdev: start %s: %w", bin, err)
	}
	s := &Server{url: "http://127.0.0.1:" + strconv.Itoa(port), port: port, cmd: cmd, dir: dir, out: out, done: make(chan struct{})}
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(s.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/health", nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-s.done:
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("inngestdev: dev server exited before it was ready (%v); output:\n%s", waitErr, out.String())
		case <-ctx.Done():
			s.Close()
			return nil, fmt.Errorf("inngestdev: dev server not ready within %s: %w; output:\n%s", ReadyTimeout, ctx.Err(), out.String())
		case <-poll.C:
		}
	}
}

// Start returns the base URL of an Inngest dev server for tb: the value of
// SWITCHYARD_INNGEST_URL if set, else a server started for tb alone and
// killed on tb.Cleanup (its output is logged if tb failed). It skips tb,
// saying why, only when the tool script is absent; any other failure is
// tb.Fatal.
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
	if errors.Is(err, ErrNoScript) {
		tb.Skipf("no real Inngest dev server: %v", err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("inngest dev output:\n%s", s.Output())
		}
		s.Close()
	})
	return s.URL()
}

// Shared starts one dev server on first use and shares it among the tests
// of one test binary. Declare one in the test package and Close it after
// m.Run in TestMain. The zero value is ready to use; its methods are safe
// for concurrent use.
type Shared struct {
	devproc.Shared[*Server]
}

// URL returns the shared server's base URL, starting it on first call
// (SWITCHYARD_INNGEST_URL wins if set). It skips tb when the tool script is absent and calls tb.Fatal for any
// other failure, on this and every later call.
func (p *Shared) URL(tb testing.TB) string {
	tb.Helper()
	u, err := p.Start(os.Getenv(EnvURL), func() (*Server, error) {
		root, err := ModuleRoot()
		if err != nil {
			return nil, err
		}
		return Launch(context.Background(), root)
	})
	if errors.Is(err, ErrNoScript) {
		tb.Skipf("no real Inngest dev server: %v", err)
	}
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
		return "", fmt.Errorf("inngestdev: %w", err)
	}
	return root, nil
}
