//go:build unix

// Package redisdev runs Debian's redis-server for tests: on a free
// loopback port, without persistence, in the foreground, killed at the
// end of the test. `make test-deps` installs redis-server
// (scripts/test-deps.sh).
package redisdev

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ReadyTimeout bounds the start of the server.
const ReadyTimeout = 10 * time.Second

// Server is one redis-server process. Its methods are safe for concurrent
// use.
type Server struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	dead bool
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return s.addr }

// Kill sends SIGKILL and waits for the process to end; calling it again
// does nothing. A killed server stays dead (tests of a Redis outage).
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return
	}
	s.dead = true
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// Start runs redis-server on a free loopback port and waits until it
// answers PING; the test is skipped when redis-server is not installed
// and fails when it does not start. The server is killed at the end of
// the test.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Skip("redis-server not installed (make test-deps installs it)")
	}
	s, err := Launch(bin)
	if err != nil {
		tb.Fatalf("redisdev: %v", err)
	}
	tb.Cleanup(s.Kill)
	return s
}

// Launch starts bin (a redis-server) as Start does, without a test.
func Launch(bin string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	for {
		if err := ping(s.addr); err == nil {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("redis-server on port %d exited before answering", port)
		case <-ctx.Done():
			s.Kill()
			return nil, fmt.Errorf("redis-server on port %d did not answer PING within %v", port, ReadyTimeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ping sends an inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return errors.New("unexpected answer " + strings.TrimSpace(line))
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
