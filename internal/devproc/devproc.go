// Package devproc holds what the test helpers that run real dev servers
// (legacyparty/partykitdev, realtime/inngestdev) share: finding the module
// root (the servers' fixtures and scripts are found relative to it), a free
// loopback port, and a bounded tail of a process's output. It is for tests
// only and starts nothing itself.
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
