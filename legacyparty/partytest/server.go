// Package partytest is an in-process PartyKit-compatible server for tests,
// faithful to shared/protocols.md and to the apps' party server: POST
// broadcasts the JSON body re-encoded as JSON.stringify(JSON.parse(body))
// would (see Reencode), GET answers {"users":[]}, OPTIONS {"ok":true},
// other methods 405, invalid JSON 500 with the parse error, an unknown
// party 404. WebSocket clients join rooms with an optional _pk connection
// id; the room id is the raw (not percent-decoded) path segment.
//
// Fault switches (FailNext, SetPublishDelay, HangPublishes,
// DropBroadcasts) and a record of publishes (Publishes) support failure
// tests; SendRaw and Disconnect drive subscriber tests.
package partytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// MaxBody is the largest POST body the server reads (1 MiB); a larger one
// is answered 413.
const MaxBody = 1 << 20

// Option configures a Server.
type Option func(*Server)

// WithParties sets the known party names (default: just "main"). The
// "/party/{room}" alias always addresses "main", known or not.
func WithParties(names ...string) Option {
	return func(s *Server) {
		s.parties = map[string]bool{}
		for _, n := range names {
			s.parties[n] = true
		}
	}
}

// WithSecret makes every POST require header: value (else 401), like an
// onBeforeRequest hook that checks a shared secret. WebSocket upgrades and
// other methods are not checked.
func WithSecret(header, value string) Option {
	return func(s *Server) { s.secretHeader, s.secret = header, value }
}

// WithSilentClose makes the server ignore a client's Close frame, as the
// dev server does when the party code does not close the connection in
// onClose; the client then has to time out.
func WithSilentClose() Option {
	return func(s *Server) { s.silentClose = true }
}

// WithListener makes the server accept on l instead of a fresh loopback
// port (e.g. to start it late on an address a client already dials).
func WithListener(l net.Listener) Option {
	return func(s *Server) { s.listener = l }
}

// Publish is one POST the server received, whatever it answered.
type Publish struct {
	Party, Room string // room as the raw path segment
	Body        []byte // as received
	Header      http.Header
	Status      int // status answered
	// Broadcast is the re-encoded frame sent to the room (nil if none).
	Broadcast []byte
	At        time.Time
}

// Server is a PartyKit-compatible test server. Its methods are safe for
// concurrent use. Create it with New, then Start it; Close releases
// everything.
type Server struct {
	parties      map[string]bool
	secretHeader string
	secret       string
	silentClose  bool
	listener     net.Listener

	hs       *httptest.Server
	upgrader websocket.Upgrader
	closing  chan struct{}
	closeMu  sync.Once

	mu         sync.Mutex
	rooms      map[string]map[*conn]bool // key: party + "/" + raw room
	publishes  []Publish
	failN      int
	failStatus int
	delay      time.Duration
	hang       bool
	drop       bool
	wg         sync.WaitGroup
}

// New returns an unstarted Server configured by opts.
func New(opts ...Option) *Server {
	s := &Server{
		parties: map[string]bool{"main": true},
		rooms:   map[string]map[*conn]bool{},
		closing: make(chan struct{}),
		upgrader: websocket.Upgrader{
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	for _, o := range opts {
		o(s)
	}
	s.hs = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	if s.listener != nil {
		s.hs.Listener.Close()
		s.hs.Listener = s.listener
	}
	return s
}

// Start starts listening on a loopback port and returns s.
func (s *Server) Start() *Server {
	s.hs.Start()
	return s
}

// MustStart returns a started Server that is closed on tb.Cleanup.
func MustStart(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s := New(opts...).Start()
	tb.Cleanup(s.Close)
	return s
}

// URL is the base URL, e.g. http://127.0.0.1:PORT (valid after Start).
func (s *Server) URL() string { return s.hs.URL }

// Close drops every WebSocket connection, releases hung publishes and
// stops the server. It is idempotent.
func (s *Server) Close() {
	s.closeMu.Do(func() {
		close(s.closing)
		s.mu.Lock()
		for _, room := range s.rooms {
			for c := range room {
				c.ws.Close()
			}
		}
		s.mu.Unlock()
		s.hs.CloseClientConnections()
		s.hs.Close()
		s.wg.Wait()
	})
}

// FailNext makes the next n publishes answer status (e.g. 500, 429)
// without broadcasting. They are still recorded.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failStatus = n, status
}

// SetPublishDelay delays each publish's answer by d (0: none); the delay
// ends early if the client gives up.
func (s *Server) SetPublishDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// HangPublishes makes publishes never answer until the client gives up or
// the server closes (on), or restores normal answers (off).
func (s *Server) HangPublishes(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hang = on
}

// DropBroadcasts makes publishes answer 200 without broadcasting (on).
func (s *Server) DropBroadcasts(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop = on
}

// Publishes returns a copy of the publishes received so far, in order.
// The record grows without bound: the server is meant for tests.
func (s *Server) Publishes() []Publish {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Publish(nil), s.publishes...)
}

// ConnIDs returns the connection ids (_pk) in the room of party, where
// room is the raw path segment (the room id itself, see
// broadcast.ValidateRoom).
func (s *Server) ConnIDs(party, rawRoom string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for c := range s.rooms[party+"/"+rawRoom] {
		ids = append(ids, c.id)
	}
	return ids
}

// WaitConns blocks until the room has at least n connections or ctx ends;
// it reports whether the count was reached.
func (s *Server) WaitConns(ctx context.Context, party, rawRoom string, n int) bool {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if len(s.ConnIDs(party, rawRoom)) >= n {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// SendRaw sends one frame of the given gorilla/websocket message type
// (websocket.TextMessage or websocket.BinaryMessage) to every connection
// of the room, bypassing re-encoding, and returns how many it reached.
func (s *Server) SendRaw(party, rawRoom string, messageType int, data []byte) int {
	return s.broadcast(party+"/"+rawRoom, frame{typ: messageType, data: append([]byte(nil), data...)})
}

// Disconnect drops every connection of the room abruptly (no Close frame)
// and returns how many it dropped.
func (s *Server) Disconnect(party, rawRoom string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	room := s.rooms[party+"/"+rawRoom]
	n := len(room)
	for c := range room {
		c.ws.Close()
		delete(room, c)
	}
	return n
}

type frame struct {
	typ  int
	data []byte
}

type conn struct {
	ws   *websocket.Conn
	id   string
	send chan frame
}

// route splits the raw path into party and raw room; ok is false for
// paths that are not rooms. As in PartyKit, segments after the room are
// ignored: /parties/main/a/b is room "a".
func (s *Server) route(r *http.Request) (party, room string, ok bool) {
	p := r.URL.EscapedPath()
	if rest, found := strings.CutPrefix(p, "/parties/"); found {
		party, rest, _ = strings.Cut(rest, "/")
		room, _, _ = strings.Cut(rest, "/")
		return party, room, party != "" && room != ""
	}
	if rest, found := strings.CutPrefix(p, "/party/"); found {
		room, _, _ = strings.Cut(rest, "/")
		return "main", room, room != ""
	}
	return "", "", false
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	party, room, ok := s.route(r)
	if !ok || !s.parties[party] {
		http.Error(w, "Not found", http.StatusNotFound)
		return
	}
	if websocket.IsWebSocketUpgrade(r) {
		s.serveWS(w, r, party, room)
		return
	}
	switch r.Method {
	case http.MethodPost:
		s.servePublish(w, r, party, room)
	case http.MethodGet:
		writeJSON(w, `{"users":[]}`)
	case http.MethodOptions:
		writeJSON(w, `{"ok":true}`)
	default:
		http.Error(w, "Method not allowed", http.StatusMethodNotAllowed)
	}
}

func writeJSON(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, body)
}

func (s *Server) servePublish(w http.ResponseWriter, r *http.Request, party, room string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	rec := Publish{Party: party, Room: room, Body: body, Header: r.Header.Clone(), At: time.Now()}
	status, answer := http.StatusOK, "ok"
	var out []byte

	s.mu.Lock()
	delay, hang, drop := s.delay, s.hang, s.drop
	failing := s.failN > 0
	if failing {
		s.failN--
		status, answer = s.failStatus, http.StatusText(s.failStatus)
	}
	s.mu.Unlock()

	switch {
	case failing:
	case err != nil:
		status, answer = http.StatusBadRequest, "read body: "+err.Error()
	case len(body) > MaxBody:
		status, answer = http.StatusRequestEntityTooLarge, "body too large"
	case s.secretHeader != "" && r.Header.Get(s.secretHeader) != s.secret:
		status, answer = http.StatusUnauthorized, "Unauthorized"
	default:
		out, err = Reencode(body)
		if err != nil {
			status, answer = http.StatusInternalServerError, err.Error()
		}
	}
	if hang {
		delay = time.Hour
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
		case <-s.closing:
		}
		t.Stop()
	}
	if status == http.StatusOK && !drop {
		rec.Broadcast = out
		s.broadcast(party+"/"+room, frame{typ: websocket.TextMessage, data: out})
	}
	rec.Status = status
	s.mu.Lock()
	s.publishes = append(s.publishes, rec)
	s.mu.Unlock()
	if r.Context().Err() != nil {
		return
	}
	w.Header().Set("Content-Type", "text/plain;charset=UTF-8")
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "0")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, answer)
}

func (s *Server) broadcast(key string, f frame) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.rooms[key] {
		select {
		case c.send <- f:
			n++
		default: // slow consumer: drop it, as a server would
			c.ws.Close()
			delete(s.rooms[key], c)
		}
	}
	return n
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request, party, room string) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	id := r.URL.Query().Get("_pk")
	if id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	c := &conn{ws: ws, id: id, send: make(chan frame, 256)}
	key := party + "/" + room
	s.mu.Lock()
	select {
	case <-s.closing:
		s.mu.Unlock()
		ws.Close()
		return
	default:
	}
	if s.rooms[key] == nil {
		s.rooms[key] = map[*conn]bool{}
	}
	s.rooms[key][c] = true
	s.wg.Add(1)
	s.mu.Unlock()

	if s.silentClose {
		ws.SetCloseHandler(func(int, string) error { return nil })
	}
	done := make(chan struct{})
	go func() { // the one writer of this connection
		defer s.wg.Done()
		for {
			select {
			case f := <-c.send:
				_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := ws.WriteMessage(f.typ, f.data); err != nil {
					ws.Close()
					return
				}
			case <-done:
				return
			}
		}
	}()
	// The reader: client messages are ignored, as by the apps' server.
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if s.silentClose && errors.As(err, &ce) {
			<-s.closing // keep the connection open, unanswered
		}
		break
	}
	close(done)
	s.mu.Lock()
	delete(s.rooms[key], c)
	if len(s.rooms[key]) == 0 {
		delete(s.rooms, key)
	}
	s.mu.Unlock()
	ws.Close()
}
