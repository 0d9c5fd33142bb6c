package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// realtimeMode is what the fake Inngest Realtime publish endpoint does.
type realtimeMode int32

const (
	modeHealthy realtimeMode = iota // 200 with an empty body
	modeHang                        // no answer until released or the caller gives up
	modeFail                        // 500 at once
)

func (m realtimeMode) String() string {
	switch m {
	case modeHang:
		return "hung"
	case modeFail:
		return "failing"
	}
	return "healthy"
}

// fakeUpstreams are the fast in-process upstreams both the gateways and the
// direct client publish to: a PartyKit-like room POST (200 "ok", with an
// optional delay) and an Inngest-Realtime-like publish (200 empty, or hung,
// or 500, as the mode says). Each has its own keep-alive http.Server on
// 127.0.0.1:0. All methods are safe for concurrent use.
type fakeUpstreams struct {
	party, realtime       *http.Server
	partyURL, realtimeURL string

	partyDelay atomic.Int64 // nanoseconds
	mode       atomic.Int32
	partyN     atomic.Int64
	realtimeN  atomic.Int64
	hungN      atomic.Int64 // realtime publishes that started to hang
	newConns   atomic.Int64 // connections accepted by both fakes (over TLS: handshakes)

	// ca is the local CA of a -tls run (nil: plain HTTP); childEnv is what
	// a gateway process needs to trust it.
	ca       *localCA
	childEnv []string

	mu      sync.Mutex
	release chan struct{} // closed to free the hung requests
}

// maxUpstreamBody bounds what the fakes read of a request body.
const maxUpstreamBody = 1 << 20

func startUpstreams() (*fakeUpstreams, error) { return startUpstreamsTLS(nil) }

// startUpstreamsTLS starts the fakes; with ca they serve HTTPS (HTTP/2
// offered, as real upstreams do) with ca's certificate.
func startUpstreamsTLS(ca *localCA) (*fakeUpstreams, error) {
	u := &fakeUpstreams{release: make(chan struct{}), ca: ca}
	if ca != nil {
		u.childEnv = []string{"SSL_CERT_FILE=" + ca.PEMFile}
	}
	partyMux := http.NewServeMux()
	partyMux.HandleFunc("POST /parties/{party}/{room}", u.handleParty)
	rtMux := http.NewServeMux()
	rtMux.HandleFunc("POST /v1/realtime/publish", u.handleRealtime)
	var err error
	if u.party, u.partyURL, err = u.serveLocal(partyMux); err != nil {
		return nil, fmt.Errorf("party upstream: %w", err)
	}
	if u.realtime, u.realtimeURL, err = u.serveLocal(rtMux); err != nil {
		_ = u.party.Close()
		return nil, fmt.Errorf("realtime upstream: %w", err)
	}
	return u, nil
}

func (u *fakeUpstreams) serveLocal(h http.Handler) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				u.newConns.Add(1)
			}
		}}
	if u.ca != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{u.ca.Leaf}, MinVersion: tls.VersionTLS12}
		go func() { _ = srv.ServeTLS(ln, "", "") }()
		return srv, "https://" + ln.Addr().String(), nil
	}
	go func() { _ = srv.Serve(ln) }()
	return srv, "http://" + ln.Addr().String(), nil
}

func (u *fakeUpstreams) handleParty(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, io.LimitReader(r.Body, maxUpstreamBody)); err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if d := time.Duration(u.partyDelay.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	u.partyN.Add(1)
	w.Header().Set("Content-Type", "text/plain;charset=UTF-8")
	_, _ = io.WriteString(w, "ok")
}

func (u *fakeUpstreams) handleRealtime(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("channel") == "" || q.Get("topic") == "" {
		http.Error(w, "channel and topic are required", http.StatusBadRequest)
		return
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(r.Body, maxUpstreamBody)); err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	switch realtimeMode(u.mode.Load()) {
	case modeHang:
		u.mu.Lock()
		rel := u.release
		u.mu.Unlock()
		u.hungN.Add(1) // after taking rel: a setMode seen after this frees it
		select {
		case <-rel:
		case <-r.Context().Done():
			return
		}
	case modeFail:
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	u.realtimeN.Add(1)
	w.WriteHeader(http.StatusOK)
}

// setMode switches the realtime publish behaviour; leaving modeHang frees
// every hung request.
func (u *fakeUpstreams) setMode(m realtimeMode) {
	old := realtimeMode(u.mode.Swap(int32(m)))
	if old == modeHang && m != modeHang {
		u.mu.Lock()
		close(u.release)
		u.release = make(chan struct{})
		u.mu.Unlock()
	}
}

// closeIdle closes the servers' idle keep-alive connections, so that the
// gateways' upstream connection goroutines can end.
func (u *fakeUpstreams) closeIdle() {
	for _, s := range []*http.Server{u.party, u.realtime} {
		s.SetKeepAlivesEnabled(false)
		s.SetKeepAlivesEnabled(true)
	}
}

func (u *fakeUpstreams) close() {
	u.setMode(modeHealthy)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for _, s := range []*http.Server{u.party, u.realtime} {
		if err := s.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = s.Close()
		}
	}
}

// serveLocal serves h over plain HTTP on a free loopback port.
func serveLocal(h http.Handler) (*http.Server, string, error) {
	return (&fakeUpstreams{}).serveLocal(h)
}
