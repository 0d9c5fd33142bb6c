package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
)

// Recording format (configs/recordings/README.md): one JSON object per
// line, in the order the writer took the messages,
//
//	{"t":"2026-11-23T15:04:05.123456789Z","app":"ai-hero","room":"video-42",
//	 "name":"video.asset.ready","channel":"video-ready","requestId":"req-1",
//	 "party":"main","body":{...}}
//
// t is the acceptance time (RFC 3339, nanoseconds), party is present only
// when the drop-in path named one, and body is the caller's JSON value with
// every record.redactPaths match replaced by the string "[redacted]".

// recordLine is one line of a recording, as written and as read back.
type recordLine struct {
	T         string          `json:"t"`
	App       string          `json:"app"`
	Room      string          `json:"room"`
	Name      string          `json:"name"`
	Channel   string          `json:"channel"`
	RequestID string          `json:"requestId"`
	Party     string          `json:"party,omitempty"`
	Body      json.RawMessage `json:"body"`
}

// Recorder sizing.
const (
	// recordQueue is how many accepted messages may wait for the writer;
	// beyond it Record drops (and counts) instead of blocking the request.
	recordQueue = 4096
	// recordDefaultMaxBytes is the cap when config.Record.MaxBytes is 0.
	recordDefaultMaxBytes = 64 << 20
	// recordBuffer is the writer's buffer; it is flushed whenever the queue
	// runs empty, so lines reach the file promptly under low traffic.
	recordBuffer = 64 << 10
)

const redactedValue = `"[redacted]"`

// recorder appends every accepted message to a JSON-lines file (opt-in:
// record.file). Record is called on the request path, so it only hands the
// message to a bounded queue; one writer goroutine redacts, encodes and
// writes. A full queue drops the message (counted, logged at most once per
// 10 s). When the file would grow past record.maxBytes the recorder stops
// writing for good and logs it once. Record and Stats are safe for
// concurrent use; Close must be called once, after the last Record that
// should be kept.
type recorder struct {
	log      *zap.Logger
	path     string
	maxBytes int64
	redact   [][]pathSeg

	mu     sync.RWMutex // guards closed against the close of queue
	closed bool
	queue  chan *broadcast.Message
	done   chan struct{}

	f        *os.File
	w        *bufio.Writer
	written  int64 // bytes in the file, writer goroutine only
	capped   atomic.Bool
	recorded atomic.Int64
	dropped  atomic.Int64 // queue full
	overCap  atomic.Int64 // not written because of the cap
	failed   atomic.Int64 // encode or write errors
	lastWarn atomic.Int64 // unix nanos of the last drop warning
	writeErr error        // first write error, writer goroutine only
}

// recorderStats are the recorder's counters.
type recorderStats struct {
	Recorded, Dropped, OverCap, Failed int64
	Capped                             bool
}

// newRecorder opens (creating with mode 0600, or appending to) cfg.File and
// starts the writer goroutine. The existing size counts toward
// cfg.MaxBytes (0 means 64 MiB). It refuses a redact path that does not
// start at body, and an existing file readable by group or others (it may
// hold user data). logger nil is a no-op logger.
func newRecorder(cfg config.Record, logger *zap.Logger) (*recorder, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	if cfg.File == "" {
		return nil, errors.New("record: file: required")
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("record: maxBytes: %d is negative", cfg.MaxBytes)
	}
	maxBytes := cfg.MaxBytes
	if maxBytes == 0 {
		maxBytes = recordDefaultMaxBytes
	}
	var redact [][]pathSeg
	for i, p := range cfg.RedactPaths {
		segs, err := parseRedactPath(p)
		if err != nil {
			return nil, fmt.Errorf("record: redactPaths[%d]: %w", i, err)
		}
		redact = append(redact, segs)
	}
	if st, err := os.Stat(cfg.File); err == nil {
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("record: file %s has mode %v: recordings may hold user data; chmod 600 it or remove it", cfg.File, st.Mode().Perm())
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("record: %w", err)
	}
	f, err := os.OpenFile(cfg.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("record: %w", err)
	}
	r := &recorder{
		log: logger, path: cfg.File, maxBytes: maxBytes, redact: redact,
		queue: make(chan *broadcast.Message, recordQueue), done: make(chan struct{}),
		f: f, w: bufio.NewWriterSize(f, recordBuffer), written: st.Size(),
	}
	if r.written >= maxBytes {
		r.capped.Store(true)
		logger.Warn("recording not started: record.maxBytes already reached", zap.String("file", cfg.File),
			zap.Int64("size", r.written), zap.Int64("maxBytes", maxBytes))
	}
	go r.run()
	logger.Info("recording accepted messages", zap.String("file", cfg.File), zap.Int64("maxBytes", maxBytes),
		zap.Int("redactPaths", len(redact)))
	return r, nil
}

// Record queues m for the writer and returns at once: it never waits for
// the disk. m must not be modified afterwards (accepted messages are
// read-only). A full queue, a reached cap or a closed recorder drops m and
// counts it.
func (r *recorder) Record(m *broadcast.Message) {
	if m == nil {
		return
	}
	if r.capped.Load() {
		r.overCap.Add(1)
		return
	}
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		r.dropped.Add(1)
		return
	}
	select {
	case r.queue <- m:
		r.mu.RUnlock()
	default:
		r.mu.RUnlock()
		r.dropped.Add(1)
		now := time.Now().UnixNano()
		if last := r.lastWarn.Load(); now-last > int64(10*time.Second) && r.lastWarn.CompareAndSwap(last, now) {
			r.log.Warn("recording dropped messages: the writer is behind", zap.Int64("droppedTotal", r.dropped.Load()))
		}
	}
}

// Stats returns the counters; safe for concurrent use.
func (r *recorder) Stats() recorderStats {
	return recorderStats{Recorded: r.recorded.Load(), Dropped: r.dropped.Load(), OverCap: r.overCap.Load(),
		Failed: r.failed.Load(), Capped: r.capped.Load()}
}

// Close stops intake, writes what is queued, flushes, syncs and closes the
// file. It returns the first write error, if any. Calling it again returns
// nil.
func (r *recorder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.queue)
	r.mu.Unlock()
	<-r.done
	err := r.writeErr
	if ferr := r.w.Flush(); ferr != nil && err == nil {
		err = ferr
	}
	if serr := r.f.Sync(); serr != nil && err == nil {
		err = serr
	}
	if cerr := r.f.Close(); cerr != nil && err == nil {
		err = cerr
	}
	s := r.Stats()
	r.log.Info("recording closed", zap.String("file", r.path), zap.Int64("recorded", s.Recorded),
		zap.Int64("dropped", s.Dropped), zap.Int64("overCap", s.OverCap), zap.Int64("failed", s.Failed))
	if err != nil {
		return fmt.Errorf("record: %s: %w", r.path, err)
	}
	return nil
}

// run is the writer goroutine: it owns w, written and writeErr.
func (r *recorder) run() {
	defer close(r.done)
	var buf bytes.Buffer
	for m := range r.queue {
		r.write(&buf, m)
		if len(r.queue) == 0 && r.writeErr == nil {
			if err := r.w.Flush(); err != nil {
				r.writeFailed(err)
			}
		}
	}
}

func (r *recorder) write(buf *bytes.Buffer, m *broadcast.Message) {
	if r.capped.Load() {
		r.overCap.Add(1)
		return
	}
	if r.writeErr != nil {
		r.failed.Add(1)
		return
	}
	buf.Reset()
	if err := encodeRecordLine(buf, m, r.redact); err != nil {
		r.failed.Add(1)
		r.log.Warn("recording: message not encodable", zap.String("app", m.App), zap.String("room", m.Room),
			zap.String("requestId", m.RequestID), zap.Error(err))
		return
	}
	if r.written+int64(buf.Len()) > r.maxBytes {
		r.capped.Store(true)
		r.overCap.Add(1)
		r.log.Warn("recording stopped: record.maxBytes reached", zap.String("file", r.path),
			zap.Int64("maxBytes", r.maxBytes), zap.Int64("recorded", r.recorded.Load()))
		return
	}
	n, err := r.w.Write(buf.Bytes())
	r.written += int64(n)
	if err != nil {
		r.writeFailed(err)
		return
	}
	r.recorded.Add(1)
}

func (r *recorder) writeFailed(err error) {
	r.writeErr = err
	r.failed.Add(1)
	r.log.Error("recording stopped: write failed", zap.String("file", r.path), zap.Error(err))
}

// encodeRecordLine appends m's recording line, newline included, to buf.
func encodeRecordLine(buf *bytes.Buffer, m *broadcast.Message, redact [][]pathSeg) error {
	body := m.Body
	if len(redact) > 0 {
		var err error
		if body, err = redactJSON(body, nil, redact); err != nil {
			return fmt.Errorf("redact body: %w", err)
		}
	}
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	// Encode compacts the raw body, so a body sent with newlines still
	// makes a single line.
	return enc.Encode(recordLine{
		T: m.AcceptedAt.UTC().Format(time.RFC3339Nano), App: m.App, Room: m.Room, Name: m.Name,
		Channel: m.Channel, RequestID: m.RequestID, Party: m.Party, Body: body,
	})
}

// pathSeg is one step of a redact path: an object key, an array index, or
// a wildcard of either kind. The syntax is the comparator's (docs/shadow.md):
// body.text, body.items[2].id, body.items[*].token, body.*.secret,
// body["a.b"]; paths start at the envelope root, so they begin with body.
type pathSeg struct {
	key   string
	index int
	isIdx bool
	any   bool
}

// parseRedactPath parses one redact path; the first segment must be body,
// the only part of a message a recording redacts.
func parseRedactPath(s string) ([]pathSeg, error) {
	if s == "" {
		return nil, errors.New("empty path")
	}
	var segs []pathSeg
	for i := 0; i < len(s); {
		switch {
		case s[i] == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("path %q: unterminated '[' at byte %d", s, i)
			}
			inner := s[i+1 : i+end]
			switch {
			case inner == "*":
				segs = append(segs, pathSeg{isIdx: true, any: true})
			case strings.HasPrefix(inner, `"`):
				k, n, err := quotedPathKey(s[i+1:])
				if err != nil {
					return nil, fmt.Errorf("path %q: key at byte %d: %w", s, i, err)
				}
				segs = append(segs, pathSeg{key: k})
				end = n + 1
			default:
				n, err := strconv.Atoi(inner)
				if err != nil || n < 0 || inner != strconv.Itoa(n) {
					return nil, fmt.Errorf("path %q: index %q at byte %d is not a non-negative integer or *", s, inner, i)
				}
				segs = append(segs, pathSeg{isIdx: true, index: n})
			}
			i += end + 1
		default:
			if s[i] == '.' {
				if i == 0 {
					return nil, fmt.Errorf("path %q: starts with '.'", s)
				}
				i++
			}
			j := i
			for j < len(s) && s[j] != '.' && s[j] != '[' {
				j++
			}
			if j == i {
				return nil, fmt.Errorf("path %q: empty key at byte %d", s, i)
			}
			if k := s[i:j]; k == "*" {
				segs = append(segs, pathSeg{any: true})
			} else {
				segs = append(segs, pathSeg{key: k})
			}
			i = j
		}
	}
	if segs[0].isIdx || segs[0].any || segs[0].key != "body" {
		return nil, fmt.Errorf("path %q: must start with body (paths are from the envelope root; only the body is redacted)", s)
	}
	return segs[1:], nil
}

// quotedPathKey decodes a JSON string at the start of s followed by ']' and
// returns the key and the offset of that ']'.
func quotedPathKey(s string) (string, int, error) {
	for j := 1; j < len(s); j++ {
		if s[j] == '"' && j+1 < len(s) && s[j+1] == ']' {
			var k string
			if err := json.Unmarshal([]byte(s[:j+1]), &k); err == nil {
				return k, j + 1, nil
			}
		}
	}
	return "", 0, errors.New("unterminated quoted key")
}

// redactJSON returns raw with every value matched by one of patterns
// (relative to raw, which sits at path at) replaced by "[redacted]". Parts
// no pattern reaches are kept byte for byte, and object keys keep their
// order; raw is returned unchanged when nothing matches.
func redactJSON(raw json.RawMessage, at []pathSeg, patterns [][]pathSeg) (json.RawMessage, error) {
	full, prefix := false, false
	for _, p := range patterns {
		f, pre := matchSegs(p, at)
		full = full || f
		prefix = prefix || pre
	}
	if full {
		return json.RawMessage(redactedValue), nil
	}
	if !prefix {
		return raw, nil
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || (trimmed[0] != '{' && trimmed[0] != '[') {
		return raw, nil
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // '{' or '['
		return nil, err
	}
	var out bytes.Buffer
	out.WriteByte(trimmed[0])
	for n := 0; dec.More(); n++ {
		if n > 0 {
			out.WriteByte(',')
		}
		seg := pathSeg{isIdx: true, index: n}
		if trimmed[0] == '{' {
			tok, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, _ := tok.(string)
			kb, _ := json.Marshal(k) // a string always marshals
			out.Write(kb)
			out.WriteByte(':')
			seg = pathSeg{key: k}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		child := append(at[:len(at):len(at)], seg)
		rv, err := redactJSON(v, child, patterns)
		if err != nil {
			return nil, err
		}
		out.Write(rv)
	}
	if _, err := dec.Token(); err != nil { // '}' or ']'
		return nil, err
	}
	if trimmed[0] == '{' {
		out.WriteByte('}')
	} else {
		out.WriteByte(']')
	}
	return out.Bytes(), nil
}

// matchSegs reports whether pattern matches the concrete path p exactly
// (full) or reaches below it (prefix).
func matchSegs(pattern, p []pathSeg) (full, prefix bool) {
	if len(p) > len(pattern) {
		return false, false
	}
	for i := range p {
		ps, s := pattern[i], p[i]
		if ps.isIdx != s.isIdx || (!ps.any && (ps.key != s.key || ps.index != s.index)) {
			return false, false
		}
	}
	return len(p) == len(pattern), len(p) < len(pattern)
}
