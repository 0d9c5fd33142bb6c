package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/switchyard/switchyard/broadcast"
)

func (s *Server) publicMux() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/broadcast", s.instrument("public", "broadcast", s.handleBroadcast))
	mux.Handle("POST /v1/rooms/{room}/broadcast", s.instrument("public", "room_broadcast", s.handleBroadcast))
	mux.Handle("POST /v1/broadcasts", s.instrument("public", "broadcasts", s.handleBatch))
	mux.Handle("POST /apps/{app}/party/{room}", s.instrument("public", "dropin", s.handleDropIn))
	mux.Handle("POST /apps/{app}/parties/{party}/{room}", s.instrument("public", "dropin", s.handleDropIn))
	mux.Handle("POST /v1/realtime/token", s.instrument("public", "token_server", s.handleTokenServer))
	mux.Handle("GET /v1/realtime/token", s.instrument("public", "token_grant", s.handleTokenGrant))
	mux.Handle("OPTIONS /v1/realtime/token", s.instrument("public", "token_preflight", s.handleTokenPreflight))
	mux.Handle("POST /v1/receipts", s.instrument("public", "receipts", s.handleReceipts))
	mux.Handle("OPTIONS /v1/receipts", s.instrument("public", "receipts_preflight", s.handleReceiptsPreflight))
	mux.Handle("/", s.instrument("public", "other", s.notFound(mux)))
	return mux
}

// FastRoute reports whether a request with this method and request target
// (as sent) is one of the publish routes (POST /v1/broadcast,
// /v1/broadcasts, /v1/rooms/{room}/broadcast and the PartyKit drop-in
// paths): the gateway serves those on its own HTTP/1.1 loop
// (internal/h1serve), with Public as the handler all the same. A true
// answer only chooses the loop; Public still routes the request.
func (s *Server) FastRoute(method, target string) bool {
	if method != http.MethodPost {
		return false
	}
	return strings.HasPrefix(target, "/apps/") || strings.HasPrefix(target, "/v1/broadcast") || strings.HasPrefix(target, "/v1/rooms/")
}

// notFound answers 405 when the path exists for another method, else 404.
func (s *Server) notFound(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodOptions} {
			if m == r.Method {
				continue
			}
			r2 := r.Clone(r.Context())
			r2.Method = m
			if _, p := mux.Handler(r2); p != "" && p != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			s.writeError(w, r, "", "", broadcast.Errorf("method_not_allowed", "%s is not allowed here (allowed: %s)", r.Method, strings.Join(allow, ", ")))
			return
		}
		s.writeError(w, r, "", "", broadcast.Errorf(broadcast.ENOTFOUND, "no route for %s %s", r.Method, r.URL.EscapedPath()))
	}
}

// messageRequest is one message of POST /v1/broadcast(s). Pointers tell an
// absent field from an empty one.
type messageRequest struct {
	Room      *string         `json:"room"`
	Name      *string         `json:"name"`
	Body      json.RawMessage `json:"body"`
	RequestID *string         `json:"requestId"`
}

// decodeStrict decodes one JSON object into v, refusing text that is not
// valid UTF-8 (checkUTF8), unknown fields and trailing data, and turns
// decoder errors into EINVALID messages naming the field (prefixed by
// prefix, e.g. "messages[2].").
func decodeStrict(b []byte, v any, prefix string) error {
	if err := checkUTF8(b, prefix); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, prefix)
	}
	if _, err := dec.Token(); err != io.EOF {
		return broadcast.Errorf(broadcast.EINVALID, "malformed JSON: data after the top-level value")
	}
	return nil
}

func jsonError(err error, prefix string) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return broadcast.Errorf(broadcast.EINVALID, "malformed JSON: expected an object, got %s", te.Value)
		}
		return broadcast.Errorf(broadcast.EINVALID, "%s%s: must be %s, got %s", prefix, field, kindOf(te.Type.String()), te.Value)
	case errors.As(err, &se):
		return broadcast.Errorf(broadcast.EINVALID, "malformed JSON at byte %d: %s", se.Offset, se.Error())
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return broadcast.Errorf(broadcast.EINVALID, "malformed JSON: unexpected end of input")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return broadcast.Errorf(broadcast.EINVALID, "%sunknown field %s", prefix, strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return broadcast.Errorf(broadcast.EINVALID, "malformed JSON: %s", err.Error())
}

func kindOf(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case strings.Contains(goType, "string"):
		return "a string"
	}
	return "of type " + goType
}

// newMessage validates one decoded request and builds the message. A
// missing requestId is generated.
func (s *Server) newMessage(app string, req *messageRequest, prefix string, idempotent bool) (*broadcast.Message, error) {
	if req.Room == nil {
		return nil, broadcast.Errorf(broadcast.EINVALID, "%sroom: required", prefix)
	}
	if req.Name == nil {
		return nil, broadcast.Errorf(broadcast.EINVALID, "%sname: required", prefix)
	}
	if req.Body == nil {
		return nil, broadcast.Errorf(broadcast.EINVALID, "%sbody: required", prefix)
	}
	id := ""
	if req.RequestID != nil {
		if *req.RequestID == "" {
			return nil, broadcast.Errorf(broadcast.EINVALID, "%srequestId: must not be empty (omit it to have one generated)", prefix)
		}
		id = *req.RequestID
	} else {
		id = NewRequestID()
	}
	m, err := broadcast.NewMessage(app, *req.Room, *req.Name, id, req.Body, s.cfg.ChannelOf(*req.Name), s.now())
	if err != nil {
		var e *broadcast.Error
		if prefix != "" && errors.As(err, &e) {
			return nil, &broadcast.Error{Code: e.Code, Message: prefix + e.Message}
		}
		return nil, err
	}
	if idempotent {
		m.IdempotencyKey = id
	}
	return m, nil
}

// deliveryAnswer is the JSON answer of one accepted message. Its
// deliveries are a struct, not a map: the same JSON for fewer allocations.
type deliveryAnswer struct {
	RequestID  string          `json:"requestId"`
	Stage      broadcast.Stage `json:"stage"`
	Deliveries deliveries      `json:"deliveries"`
}

type deliveries struct {
	Legacy   *broadcast.Delivery `json:"legacy,omitempty"`
	Realtime *broadcast.Delivery `json:"realtime,omitempty"`
}

func answerOf(o broadcast.Outcome) deliveryAnswer {
	a := deliveryAnswer{RequestID: o.RequestID, Stage: o.Stage}
	for t, d := range o.Deliveries {
		d := d
		d.Millis = math.Round(float64(d.Duration.Microseconds())) / 1000
		switch t {
		case broadcast.TransportLegacy:
			a.Deliveries.Legacy = &d
		case broadcast.TransportRealtime:
			a.Deliveries.Realtime = &d
		}
	}
	return a
}

func (s *Server) accepted(m *broadcast.Message) {
	if s.deps.Recorder != nil {
		s.deps.Recorder(m)
	}
}

// decodeAuthed authenticates the app by its API key, reads the body and
// decodes it strictly into v. On failure it has answered the error and
// reports false.
func (s *Server) decodeAuthed(w http.ResponseWriter, r *http.Request, v any) (app string, ok bool) {
	app, b, ok := s.readAuthed(w, r)
	if !ok {
		return app, false
	}
	if err := decodeStrict(b, v, ""); err != nil {
		s.writeError(w, r, app, "", err)
		return app, false
	}
	return app, true
}

// decodeMessageAuthed is decodeAuthed for one message object
// (decodeMessage), with req kept off the heap.
func (s *Server) decodeMessageAuthed(w http.ResponseWriter, r *http.Request, req *messageRequest) (app string, ok bool) {
	app, b, ok := s.readAuthed(w, r)
	if !ok {
		return app, false
	}
	if err := decodeMessage(b, req, ""); err != nil {
		s.writeError(w, r, app, "", err)
		return app, false
	}
	return app, true
}

// readAuthed authenticates the app by its API key and reads the body. On
// failure it has answered the error and reports false.
func (s *Server) readAuthed(w http.ResponseWriter, r *http.Request) (app string, b []byte, ok bool) {
	app, err := s.authApp(r)
	if err != nil {
		s.writeError(w, r, "", "", err)
		return "", nil, false
	}
	b, err = s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, app, "", err)
		return app, nil, false
	}
	return app, b, true
}

// RoomHeader is the request header that names the room of a
// POST /v1/broadcast (and of every message of a POST /v1/broadcasts), so a
// load balancer can route by room without reading the body. It is
// optional; when present it must equal the body's room(s).
const RoomHeader = "X-Switchyard-Room"

// affinityRoom returns the room a request names outside its body: the
// {room} path segment of POST /v1/rooms/{room}/broadcast (decoded), else
// the RoomHeader, else "" (none). fromPath tells which.
func affinityRoom(r *http.Request) (room string, fromPath bool) {
	if p := r.PathValue("room"); p != "" {
		return p, true
	}
	return r.Header.Get(RoomHeader), false
}

// checkAffinity reconciles a message's room with the room named outside
// the body (the path or RoomHeader): an absent body room takes the path's;
// a body room that differs is refused, so that a load balancer that routed
// by one room never carries a message of another.
func checkAffinity(req *messageRequest, room string, fromPath bool, prefix string) error {
	if room == "" {
		return nil
	}
	if req.Room == nil {
		if fromPath {
			r := room // a copy, so that room itself does not escape on every call
			req.Room = &r
			return nil
		}
		return broadcast.Errorf(broadcast.EINVALID, "%sroom: required", prefix)
	}
	if *req.Room != room {
		where := "the " + RoomHeader + " header"
		if fromPath {
			where = "the path"
		}
		return broadcast.Errorf(broadcast.EINVALID, "%sroom: %q differs from the room %q named by %s", prefix, *req.Room, room, where)
	}
	return nil
}

// handleBroadcast serves POST /v1/broadcast and its room-addressed form
// POST /v1/rooms/{room}/broadcast (same body, room optional there).
func (s *Server) handleBroadcast(w http.ResponseWriter, r *http.Request) {
	var req messageRequest
	app, ok := s.decodeMessageAuthed(w, r, &req)
	if !ok {
		return
	}
	room, fromPath := affinityRoom(r)
	if err := checkAffinity(&req, room, fromPath, ""); err != nil {
		s.writeError(w, r, app, "", err)
		return
	}
	m, err := s.newMessage(app, &req, "", true)
	if err != nil {
		s.writeError(w, r, app, "", err)
		return
	}
	if s.deps.Broadcaster == nil {
		s.writeError(w, r, app, m.RequestID, broadcast.Errorf(broadcast.EDRAINING, "not ready"))
		return
	}
	out, err := s.deps.Broadcaster.Broadcast(r.Context(), m)
	if err != nil {
		s.writeError(w, r, app, m.RequestID, err)
		return
	}
	s.accepted(m)
	writeOutcome(w, out)
}

type batchRequest struct {
	Messages []json.RawMessage `json:"messages"`
}

type batchItem struct {
	*deliveryAnswer
	Error *batchError `json:"error,omitempty"`
}

type batchError struct {
	Status    int    `json:"status"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	Transport string `json:"transport,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}

func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) {
	var req batchRequest
	app, ok := s.decodeAuthed(w, r, &req)
	if !ok {
		return
	}
	switch {
	case req.Messages == nil:
		s.writeError(w, r, app, "", broadcast.Errorf(broadcast.EINVALID, "messages: required"))
		return
	case len(req.Messages) == 0:
		s.writeError(w, r, app, "", broadcast.Errorf(broadcast.EINVALID, "messages: empty"))
		return
	case len(req.Messages) > s.cfg.MaxBatch:
		s.writeError(w, r, app, "", broadcast.Errorf(broadcast.EINVALID, "messages: %d messages, more than %d", len(req.Messages), s.cfg.MaxBatch))
		return
	}
	// Validate every message before any is forwarded.
	msgs := make([]*broadcast.Message, len(req.Messages))
	seen := make(map[string]int, len(req.Messages))
	room := r.Header.Get(RoomHeader)
	for i, raw := range req.Messages {
		prefix := fmt.Sprintf("messages[%d].", i)
		var mr messageRequest
		if err := decodeMessage(raw, &mr, prefix); err != nil {
			s.writeError(w, r, app, "", err)
			return
		}
		if err := checkAffinity(&mr, room, false, prefix); err != nil {
			s.writeError(w, r, app, "", err)
			return
		}
		m, err := s.newMessage(app, &mr, prefix, true)
		if err != nil {
			s.writeError(w, r, app, "", err)
			return
		}
		if j, ok := seen[m.RequestID]; ok {
			s.writeError(w, r, app, m.RequestID, broadcast.Errorf(broadcast.EINVALID, "%srequestId: same as messages[%d]", prefix, j))
			return
		}
		seen[m.RequestID] = i
		msgs[i] = m
	}
	if s.deps.Broadcaster == nil {
		s.writeError(w, r, app, "", broadcast.Errorf(broadcast.EDRAINING, "not ready"))
		return
	}
	results := s.deps.Broadcaster.BroadcastBatch(r.Context(), msgs)
	items := make([]batchItem, len(results))
	for i, res := range results {
		if res.Err != nil {
			be := &batchError{Code: broadcast.ErrorCode(res.Err), Message: broadcast.ErrorMessage(res.Err), RequestID: msgs[i].RequestID}
			be.Status = statusOf(be.Code)
			var e *broadcast.Error
			if errors.As(res.Err, &e) {
				be.Transport = string(e.Transport)
			}
			s.m.rejected(app, be.Code)
			s.logBatchItem(w, app, msgs[i], be, res.Err)
			items[i].Error = be
			continue
		}
		s.accepted(msgs[i])
		a := answerOf(res.Outcome)
		items[i].deliveryAnswer = &a
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": items})
}

// logBatchItem logs one failed item of a batch, once, as writeError logs a
// single request's failure: server faults (5xx) at error level with the
// error, refusals at debug with the client-safe message. The fields name
// the app, channel, requestId, code, status class and transport; never the
// body or a credential.
func (s *Server) logBatchItem(w http.ResponseWriter, app string, m *broadcast.Message, be *batchError, err error) {
	if be.Status < 500 && !s.log.Core().Enabled(zapcore.DebugLevel) {
		return
	}
	fields := []zap.Field{
		zap.String("route", routeOf(w)), zap.String("app", app), zap.String("channel", m.Channel),
		zap.String("requestId", be.RequestID), zap.String("code", be.Code),
		zap.String("statusClass", statusClass(be.Status)), zap.String("transport", be.Transport),
	}
	if be.Status >= 500 {
		s.log.Error("batch item failed", append(fields, zap.Error(err))...)
		return
	}
	s.log.Debug("batch item refused", append(fields, zap.String("message", be.Message))...)
}

// statusClass is "4xx", "5xx"... for an HTTP status.
func statusClass(status int) string {
	return strconv.Itoa(status/100) + "xx"
}

// dropInRequest is what apps POST to PartyKit today.
type dropInRequest struct {
	Body      json.RawMessage `json:"body"`
	RequestID *string         `json:"requestId"`
	Name      *string         `json:"name"`
}

// decodeDropIn decodes a drop-in body into mr (Room left nil) exactly as
// decodeStrict decodes it into a dropInRequest. The common shape, a
// message object without a room, is decoded without reflection
// (decodeMessageFast); anything else, errors included, is decodeStrict's.
func decodeDropIn(b []byte, mr *messageRequest) error {
	if decodeMessageFast(b, mr) && mr.Room == nil {
		return nil
	}
	req := new(dropInRequest)
	err := decodeStrict(b, req, "")
	*mr = messageRequest{Name: req.Name, Body: req.Body, RequestID: req.RequestID}
	return err
}

// handleDropIn is the PartyKit-compatible publish: an app migrates by
// pointing its party URL at {switchyard}/apps/{app}. As PartyKit does, the
// room is the raw last path segment (never percent-decoded), and so is the
// party of /apps/{app}/parties/{party}/{room}, which must be one the app
// declared (App.Parties): another party is 404, as PartyKit answers an
// unknown party. The app's default party is published as Party "" (the
// same message as /apps/{app}/party/{room}).
func (s *Server) handleDropIn(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	a, ok := s.cfg.Apps[app]
	if !ok {
		s.writeError(w, r, "", "", broadcast.Errorf(broadcast.ENOTFOUND, "unknown app %q", app))
		return
	}
	if a.DropInSecret != "" && !equalSecret(r.Header.Get(a.DropInHeader), a.DropInSecret) {
		s.writeError(w, r, app, "", broadcast.Errorf(broadcast.EUNAUTH, "missing or wrong %s header", a.DropInHeader))
		return
	}
	segs := strings.Split(rawPath(r), "/")
	room := segs[len(segs)-1]
	party := ""
	if r.PathValue("party") != "" {
		party = segs[len(segs)-2]
		if !validParty(party) {
			s.writeError(w, r, app, "", broadcast.Errorf(broadcast.EINVALID, "party: %q must be letters, digits, '_' or '-'", party))
			return
		}
		parties := a.parties()
		switch {
		case party == parties[0]:
			party = ""
		case !slices.Contains(parties[1:], party):
			s.writeError(w, r, app, "", broadcast.Errorf(broadcast.ENOTFOUND, "app %q has no party %q (declared: %s)", app, party, strings.Join(parties, ", ")))
			return
		}
	}
	b, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, app, "", err)
		return
	}
	var mr messageRequest
	if err := decodeDropIn(b, &mr); err != nil {
		s.writeError(w, r, app, "", err)
		return
	}
	mr.Room = &room
	m, err := s.newMessage(app, &mr, "", false)
	if err != nil {
		s.writeError(w, r, app, "", err)
		return
	}
	m.Party = party
	if s.deps.Broadcaster == nil {
		s.writeError(w, r, app, m.RequestID, broadcast.Errorf(broadcast.EDRAINING, "not ready"))
		return
	}
	if _, err := s.deps.Broadcaster.Broadcast(r.Context(), m); err != nil {
		s.writeError(w, r, app, m.RequestID, err)
		return
	}
	s.accepted(m)
	w.Header()["Content-Type"] = contentTypeText // shared, never modified (see writeAnswerOf)
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "ok")
}

// rawPath is the path of the request-target exactly as the caller wrote
// it (r.URL.EscapedPath would re-escape some characters), without the
// query.
func rawPath(r *http.Request) string {
	p := r.RequestURI
	if p == "" { // a request built in-process
		return r.URL.EscapedPath()
	}
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	return p
}

func validParty(p string) bool {
	if len(p) == 0 || len(p) > 64 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
