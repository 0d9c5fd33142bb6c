package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/shadow"
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
	redact   *shadow.Redaction

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
	redact, err := shadow.NewRedaction(cfg.RedactPaths)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
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
		zap.Int("redactPaths", len(cfg.RedactPaths)))
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
func encodeRecordLine(buf *bytes.Buffer, m *broadcast.Message, redact *shadow.Redaction) error {
	body, err := redact.Body(m.Body)
	if err != nil {
		return fmt.Errorf("redact body: %w", err)
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
