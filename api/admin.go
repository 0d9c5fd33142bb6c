package api

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/receipts"
	"github.com/switchyard/switchyard/shadow"
)

func (s *Server) adminMux() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", s.instrument("admin", "healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	mux.Handle("GET /readyz", s.instrument("admin", "readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}))
	if s.deps.Gatherer != nil {
		mux.Handle("GET /metrics", s.instrument("admin", "metrics", s.adminAuth(promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{})).ServeHTTP))
	}
	mux.Handle("GET /v1/admin/routes", s.instrument("admin", "routes", s.adminAuth(http.HandlerFunc(s.handleRoutes)).ServeHTTP))
	mux.Handle("GET /v1/admin/shadow/summary", s.instrument("admin", "shadow_summary", s.adminAuth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.deps.ShadowSummary == nil {
			s.writeError(w, r, "", "", broadcast.Errorf(broadcast.ENOTFOUND, "the shadow comparator is not running"))
			return
		}
		doc := shadow.Summary{Channels: s.deps.ShadowSummary()}
		if doc.Channels == nil {
			doc.Channels = []shadow.ChannelSummary{}
		}
		writeJSON(w, http.StatusOK, &doc)
	})).ServeHTTP))
	mux.Handle("GET /v1/admin/shadow/mismatches", s.instrument("admin", "shadow_mismatches", s.adminAuth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.deps.ShadowMismatches == nil {
			s.writeError(w, r, "", "", broadcast.Errorf(broadcast.ENOTFOUND, "the shadow comparator is not running"))
			return
		}
		limit := 20
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				s.writeError(w, r, "", "", broadcast.Errorf(broadcast.EINVALID, "limit: must be a whole number from 1 to 1000"))
				return
			}
			limit = n
		}
		doc := shadow.MismatchReport{Mismatches: s.deps.ShadowMismatches(limit)}
		if doc.Mismatches == nil {
			doc.Mismatches = []shadow.MismatchExample{}
		}
		writeJSON(w, http.StatusOK, &doc)
	})).ServeHTTP))
	mux.Handle("GET /v1/admin/receipts/summary", s.instrument("admin", "receipts_summary", s.adminAuth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.deps.ReceiptsSummary == nil {
			s.writeError(w, r, "", "", broadcast.Errorf(broadcast.ENOTFOUND, "receipts are not collected"))
			return
		}
		doc := receipts.Summary{Channels: s.deps.ReceiptsSummary()}
		if doc.Channels == nil {
			doc.Channels = []receipts.ChannelSummary{}
		}
		writeJSON(w, http.StatusOK, &doc)
	})).ServeHTTP))
	if s.deps.StatusPage != nil {
		mux.Handle("GET /{$}", s.instrument("admin", "status", s.adminAuth(s.deps.StatusPage).ServeHTTP))
	}
	// Unknown admin paths and wrong methods need the token too, so an
	// unauthenticated caller cannot map the admin surface.
	mux.Handle("/", s.instrument("admin", "other", s.adminAuth(s.notFound(mux)).ServeHTTP))
	return mux
}

// adminAuth requires the admin bearer token, compared in constant time,
// when one is configured. It sits inside instrument, so refused calls are
// counted under their route.
func (s *Server) adminAuth(h http.Handler) http.Handler {
	if s.cfg.AdminToken == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if tok == "" || !equalSecret(tok, s.cfg.AdminToken) {
			s.writeError(w, r, "", "", broadcast.Errorf(broadcast.EUNAUTH, "admin endpoints need Authorization: Bearer <admin token>"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// handleRoutes answers the stage that would apply to a message and why, as
// a broadcast.RouteReport.
func (s *Server) handleRoutes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	app, room, event := q.Get("app"), q.Get("room"), q.Get("event")
	if _, ok := s.cfg.Apps[app]; !ok {
		s.writeError(w, r, "", "", broadcast.Errorf(broadcast.EINVALID, "app: unknown app %q", app))
		return
	}
	if err := broadcast.ValidateRoom(room); err != nil {
		s.writeError(w, r, app, "", err)
		return
	}
	if event == "" {
		s.writeError(w, r, app, "", broadcast.Errorf(broadcast.EINVALID, "event: required"))
		return
	}
	if s.deps.Resolver == nil {
		s.writeError(w, r, app, "", broadcast.Errorf(broadcast.ENOTFOUND, "no stage resolver"))
		return
	}
	ch := s.cfg.ChannelOf(event)
	route := s.deps.Resolver.Resolve(broadcast.RouteQuery{App: app, Room: room, Channel: ch, Event: event})
	writeJSON(w, http.StatusOK, &broadcast.RouteReport{App: app, Env: s.cfg.Env, Event: event, Room: room, Route: route})
}
