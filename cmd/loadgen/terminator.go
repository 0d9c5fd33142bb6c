package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// terminator is HAProxy (Debian's package, installed by make test-deps)
// terminating TLS in front of a real dev server, as a CDN or load balancer
// does in front of PartyKit and Inngest in production: HTTPS with the
// run's local CA, ALPN h2 and http/1.1, HTTP keep-alive to the clients
// and to the server.
type terminator struct {
	url string // https://127.0.0.1:PORT
	cmd *exec.Cmd
	log string
}

// startTerminator runs haproxy in the foreground on a free loopback port,
// forwarding to backend (host:port), with ca's leaf certificate.
func startTerminator(ctx context.Context, dir string, ca *localCA, backend string) (*terminator, error) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		return nil, fmt.Errorf("TLS terminator: haproxy not found (make test-deps installs it): %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Leaf.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("TLS terminator: key: %w", err)
	}
	pemFile := filepath.Join(dir, "leaf.pem")
	pemData := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Leaf.Certificate[0]}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	if err := os.WriteFile(pemFile, pemData, 0o600); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cfg := fmt.Sprintf(`global
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 120s
frontend tls
  bind %s ssl crt %s alpn h2,http/1.1
  default_backend dev
backend dev
  http-reuse always
  server dev %s
`, addr, pemFile, backend)
	cfgFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "haproxy", "-c", "-f", cfgFile).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("TLS terminator: haproxy -c: %v: %s", err, strings.TrimSpace(string(out)))
	}
	t := &terminator{url: "https://" + addr, log: filepath.Join(dir, "haproxy.log")}
	logf, err := os.Create(t.log)
	if err != nil {
		return nil, err
	}
	t.cmd = exec.Command("haproxy", "-f", cfgFile, "-db")
	t.cmd.Stdout, t.cmd.Stderr = logf, logf
	if err := t.cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("TLS terminator: %w", err)
	}
	_ = logf.Close()
	// Ready once it completes a TLS handshake with the CA's trust.
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := tls.Dialer{Config: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = c.Close()
			return t, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.close()
			log, _ := os.ReadFile(t.log)
			return nil, errors.Join(fmt.Errorf("TLS terminator did not come up on %s: %w", addr, err), errors.New(strings.TrimSpace(string(log))))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// close stops haproxy, bounded in time.
func (t *terminator) close() {
	if t.cmd == nil || t.cmd.Process == nil {
		return
	}
	_ = t.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = t.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = t.cmd.Process.Kill()
		<-done
	}
}
