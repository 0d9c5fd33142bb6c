// Package recording writes accepted messages to a JSON-lines recording
// (opt-in: record.file), reads recordings back with every line validated,
// and replays them through a gateway's public API. The format is documented
// in configs/recordings/README.md and below.
package recording

import (
	"bufio"
	"bytes"
	"context"
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

// Line is one line of a recording, as written and as read back.
type Line struct {
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
	// DefaultMaxBytes is the cap when Config.MaxBytes is 0.
	DefaultMaxBytes = 64 << 20
	// recordBuffer is the writer's buffer; it is flushed whenever the queue
	// runs empty, so lines reach the file promptly under low traffic.
	recordBuffer = 64 << 10
)

// Recorder appends every accepted message to a JSON-lines file (opt-in:
// record.file). Record is called on the request path, so it only hands the
// message to a bounded queue; the writer, which runs in Run, redacts,
// encodes and writes. A full queue drops the message (counted, logged at most once per
// 10 s). When the file would grow past record.maxBytes the recorder stops
// writing for good and logs it once. Record and Stats are safe for
// concurrent use. Lifecycle: New opens the file and starts nothing; Run
// writes until its ctx ends, then stops intake, writes what is queued and
// closes the file. Messages recorded before Run starts wait in the queue.
// Close releases the file of a Recorder whose Run never ran (a failed
// start); after Run it is a no-op.
type Recorder struct {
	log      *zap.Logger
	path     string
	maxBytes int64
	redact   *shadow.Redaction

	mu      sync.RWMutex // guards closed against the close of queue
	closed  bool
	queue   chan *broadcast.Message
	running atomic.Bool
	finish  sync.Once
	closeEr error

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

// Stats are a Recorder's counters: messages written, dropped because the
// queue was full, not written because of the size cap, and failed to encode
// or write; Capped is true once the cap stopped the recording.
type Stats struct {
	Recorded, Dropped, OverCap, Failed int64
	Capped                             bool
}

// Config is the recorder's part of the gateway configuration (record.*).
type Config struct {
	// File is the recording's path; empty means no recording.
	File string
	// MaxBytes caps the file's size (0 means DefaultMaxBytes).
	MaxBytes int64
	// RedactPaths are comparator-style JSON paths under body whose values
	// are written as "[redacted]" (shadow.NewRedaction's syntax).
	RedactPaths []string
}

// Validate checks c without touching the file system; its errors name the
// key under record (`redactPaths: ...`). New runs it first.
func (c Config) Validate() error {
	if c.File == "" {
		return errors.New("file: required")
	}
	if c.MaxBytes < 0 {
		return fmt.Errorf("maxBytes: %d is negative", c.MaxBytes)
	}
	if _, err := shadow.NewRedaction(c.RedactPaths); err != nil {
		return err // names redactPaths[i]
	}
	return nil
}

// New validates cfg and opens (creating with mode 0600, or appending to)
// cfg.File; it starts no goroutine (see Run). The existing size counts
// toward cfg.MaxBytes. It refuses an existing file readable by group or
// others (it may hold user data). logger nil is a no-op logger.
func New(cfg Config, logger *zap.Logger) (*Recorder, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	maxBytes := cfg.MaxBytes
	if maxBytes == 0 {
		maxBytes = DefaultMaxBytes
	}
	redact, err := shadow.NewRedaction(cfg.RedactPaths)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(cfg.File); err == nil {
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("file %s has mode %v: recordings may hold user data; chmod 600 it or remove it", cfg.File, st.Mode().Perm())
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(cfg.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	r := &Recorder{
		log: logger, path: cfg.File, maxBytes: maxBytes, redact: redact,
		queue: make(chan *broadcast.Message, recordQueue),
		f:     f, w: bufio.NewWriterSize(f, recordBuffer), written: st.Size(),
	}
	if r.written >= maxBytes {
		r.capped.Store(true)
		logger.Warn("recording not started: record.maxBytes already reached", zap.String("file", cfg.File),
			zap.Int64("size", r.written), zap.Int64("maxBytes", maxBytes))
	}
	logger.Info("recording accepted messages", zap.String("file", cfg.File), zap.Int64("maxBytes", maxBytes),
		zap.Int("redactPaths", len(cfg.RedactPaths)))
	return r, nil
}

// Record queues m for the writer and returns at once: it never waits for
// the disk. m must not be modified afterwards (accepted messages are
// read-only). A full queue, a reached cap or a closed recorder drops m and
// counts it.
func (r *Recorder) Record(m *broadcast.Message) {
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
func (r *Recorder) Stats() Stats {
	return Stats{Recorded: r.recorded.Load(), Dropped: r.dropped.Load(), OverCap: r.overCap.Load(),
		Failed: r.failed.Load(), Capped: r.capped.Load()}
}

// Run is the writer: it writes queued messages until ctx ends, then stops
// intake, writes what is still queued, flushes, syncs and closes the file,
// and returns the first write error, if any. Call it once.
func (r *Recorder) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("recording: Run called twice")
	}
	var buf bytes.Buffer
	for {
		select {
		case m := <-r.queue:
			r.write(&buf, m)
			if len(r.queue) == 0 && r.writeErr == nil {
				if err := r.w.Flush(); err != nil {
					r.writeFailed(err)
				}
			}
		case <-ctx.Done():
			return r.close(&buf)
		}
	}
}

// Close releases the file when Run never ran, writing what was queued; it
// returns the first write error. After Run (or a second Close) it returns
// nil and does nothing.
func (r *Recorder) Close() error {
	if !r.running.CompareAndSwap(false, true) {
		return nil
	}
	return r.close(&bytes.Buffer{})
}

// close stops intake, writes the queue's rest and closes the file, once.
func (r *Recorder) close(buf *bytes.Buffer) error {
	r.finish.Do(func() {
		r.mu.Lock()
		r.closed = true
		close(r.queue)
		r.mu.Unlock()
		for m := range r.queue {
			r.write(buf, m)
		}
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
			r.closeEr = fmt.Errorf("%s: %w", r.path, err)
		}
	})
	return r.closeEr
}

func (r *Recorder) write(buf *bytes.Buffer, m *broadcast.Message) {
	if r.capped.Load() {
		r.overCap.Add(1)
		return
	}
	if r.writeErr != nil {
		r.failed.Add(1)
		return
	}
	buf.Reset()
	if err := Encode(buf, m, r.redact); err != nil {
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

func (r *Recorder) writeFailed(err error) {
	r.writeErr = err
	r.failed.Add(1)
	r.log.Error("recording stopped: write failed", zap.String("file", r.path), zap.Error(err))
}

// Encode appends m's recording line, newline included, to buf, with
// redact applied to the body (nil redacts nothing).
func Encode(buf *bytes.Buffer, m *broadcast.Message, redact *shadow.Redaction) error {
	body, err := redact.Body(m.Body)
	if err != nil {
		return fmt.Errorf("redact body: %w", err)
	}
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	// Encode compacts the raw body, so a body sent with newlines still
	// makes a single line.
	return enc.Encode(Line{
		T: m.AcceptedAt.UTC().Format(time.RFC3339Nano), App: m.App, Room: m.Room, Name: m.Name,
		Channel: m.Channel, RequestID: m.RequestID, Party: m.Party, Body: body,
	})
}
