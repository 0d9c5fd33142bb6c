package main

import (
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// hangProxy stands in front of an Inngest Realtime server (publish, token,
// and the WebSocket connect, which httputil.ReverseProxy upgrades) and can
// hang: while hung, every new request waits, unanswered, until the proxy is
// healthy again or its caller gives up. Connections already upgraded stay
// as they are. Safe for concurrent use.
type hangProxy struct {
	srv  *http.Server
	url  string
	rp   *httputil.ReverseProxy
	hung atomic.Bool

	mu      sync.Mutex
	release chan struct{} // closed when the proxy turns healthy
}

// startHangProxy proxies to target (a base URL) on 127.0.0.1:0.
func startHangProxy(target string) (*hangProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	p := &hangProxy{rp: httputil.NewSingleHostReverseProxy(u), release: make(chan struct{})}
	p.rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}
	// Callers giving up on hung requests are expected: not worth a line.
	p.rp.ErrorLog = log.New(io.Discard, "", 0)
	srv, base, err := serveLocal(p)
	if err != nil {
		return nil, err
	}
	p.srv, p.url = srv, base
	return p, nil
}

func (p *hangProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.hung.Load() {
		p.mu.Lock()
		rel := p.release
		p.mu.Unlock()
		select {
		case <-rel:
		case <-r.Context().Done():
			return
		}
	}
	p.rp.ServeHTTP(w, r)
}

// setHung hangs new requests (true) or releases them and serves again.
func (p *hangProxy) setHung(hung bool) {
	if p.hung.Swap(hung) && !hung {
		p.mu.Lock()
		close(p.release)
		p.release = make(chan struct{})
		p.mu.Unlock()
	}
}

func (p *hangProxy) close() {
	p.setHung(false)
	_ = p.srv.Close()
}
