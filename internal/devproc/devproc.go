// Package devproc holds what the test helpers that run real dev servers
// (legacyparty/partykitdev, realtime/inngestdev) share: finding the module
// root (the servers' fixtures and scripts are found relative to it), a free
// loopback port, a bounded tail of a process's output, and Shared, one
// server per test binary. It is for tests only; Shared starts only what
// its caller's launch function starts.
package devproc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// ModuleRoot walks up from the working directory to the directory that
// holds go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("module root: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// FreePort returns a loopback TCP port that was free at the time of the
// call (the caller's process binds it next; another may take it first).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Tail is an io.Writer that keeps the last Max bytes written to it; safe
// for concurrent use (a process's stdout and stderr may share one).
type Tail struct {
	Max int

	mu  sync.Mutex
	buf bytes.Buffer
}

// Write keeps p, dropping the oldest bytes beyond Max; it never fails.
func (b *Tail) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.Max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

// String returns the bytes kept.
func (b *Tail) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Process is a started dev server as Shared keeps it.
type Process interface {
	URL() string
	Output() string
	Close()
}

// Shared starts one dev server on first use and shares it among the tests
// of one test binary; partykitdev.Shared and inngestdev.Shared are it with
// their own launch and environment variable. The zero value is ready to
// use; its methods are safe for concurrent use.
type Shared[S Process] struct {
	mu      sync.Mutex // held through the first Start's launch
	done    bool       // Start has run
	started bool       // and launched srv
	srv     S
	url     string
	err     error
}

// Start returns the shared server's base URL: external when it is not
// empty (nothing is launched), else the URL of the server launch starts
// on the first call. The first call's outcome, error included, is every
// later call's.
func (p *Shared[S]) Start(external string, launch func() (S, error)) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.done {
		p.done = true
		if external != "" {
			p.url = external
		} else if p.srv, p.err = launch(); p.err == nil {
			p.started = true
			p.url = p.srv.URL()
		}
	}
	return p.url, p.err
}

// Output returns the shared server's recent output ("" if none runs).
func (p *Shared[S]) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return ""
	}
	return p.srv.Output()
}

// Close stops the shared server if one was started.
func (p *Shared[S]) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		p.srv.Close()
	}
}
