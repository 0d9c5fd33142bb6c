package recording

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/shadow"
)

// mustMessage builds an accepted message for recorder tests.
func mustMessage(tb testing.TB, room, name, requestID, body string, at time.Time) *broadcast.Message {
	tb.Helper()
	m, err := broadcast.NewMessage("ai-hero", room, name, requestID, json.RawMessage(body), "video-ready", at)
	if err != nil {
		tb.Fatalf("NewMessage: %v", err)
	}
	return m
}

// readLines returns the lines of a recording file, each decoded and
// validated by the replay decoder.
func readLines(tb testing.TB, path string) ([]Line, []string) {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var recs []Line
	var raw []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, MaxLineBytes)
	for n := 1; sc.Scan(); n++ {
		rec, _, err := DecodeLine(sc.Bytes())
		if err != nil {
			tb.Fatalf("line %d %q: %v", n, sc.Text(), err)
		}
		recs = append(recs, rec)
		raw = append(raw, sc.Text())
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		tb.Fatalf("file does not end with a newline: %q", b[max(0, len(b)-40):])
	}
	return recs, raw
}

func TestRecorderFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rec.jsonl")
	r, err := New(Config{File: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := running(t, r)
	at := time.Date(2026, 11, 23, 15, 4, 5, 123456789, time.FixedZone("CET", 3600))
	m1 := mustMessage(t, "video-42", "video.asset.ready", "req-1", "{\n  \"id\": \"v1\",\n  \"duration\": 1.0, \"html\": \"<b>&</b>\"\n}", at)
	m2 := mustMessage(t, "chat-1", "ai.message", "req-2", `"Sure, here"`, at.Add(time.Millisecond))
	m2.Party = "main"
	r.Record(m1)
	r.Record(m2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("file mode = %v, want %v", got, want)
	}
	recs, raw := readLines(t, path)
	if got, want := len(recs), 2; got != want {
		t.Fatalf("lines = %d, want %d", got, want)
	}
	want := []string{
		`{"t":"2026-11-23T14:04:05.123456789Z","app":"ai-hero","room":"video-42","name":"video.asset.ready","channel":"video-ready","requestId":"req-1","body":{"id":"v1","duration":1.0,"html":"<b>&</b>"}}`,
		`{"t":"2026-11-23T14:04:05.124456789Z","app":"ai-hero","room":"chat-1","name":"ai.message","channel":"video-ready","requestId":"req-2","party":"main","body":"Sure, here"}`,
	}
	for i := range want {
		if raw[i] != want[i] {
			t.Errorf("line %d\n got %s\nwant %s", i+1, raw[i], want[i])
		}
	}
	if got := r.Stats(); got.Recorded != 2 || got.Dropped != 0 || got.Capped {
		t.Errorf("stats = %+v, want 2 recorded", got)
	}
}

func TestRecorderRedaction(t *testing.T) {
	tests := []struct {
		name  string
		paths []string
		body  string
		want  string
	}{
		{"field", []string{"body.text"}, `{"id":1,"text":"secret words"}`, `{"id":1,"text":"[redacted]"}`},
		{"whole body", []string{"body"}, `{"id":1,"text":"x"}`, `"[redacted]"`},
		{"string body untouched by a field path", []string{"body.text"}, `"chunk"`, `"chunk"`},
		{"key order and bytes kept", []string{"body.text"}, `{"z":1.50,"text":"x","a":{"b":12345678901234567890}}`, `{"z":1.50,"text":"[redacted]","a":{"b":12345678901234567890}}`},
		{"array wildcard", []string{"body.items[*].token"}, `{"items":[{"token":"t1","id":1},{"id":2},{"token":"t3"}]}`, `{"items":[{"token":"[redacted]","id":1},{"id":2},{"token":"[redacted]"}]}`},
		{"array index", []string{"body.items[1]"}, `{"items":["a","b","c"]}`, `{"items":["a","[redacted]","c"]}`},
		{"key wildcard", []string{"body.*.email"}, `{"user":{"email":"a@b.c","n":1},"owner":{"email":"d@e.f"}}`, `{"user":{"email":"[redacted]","n":1},"owner":{"email":"[redacted]"}}`},
		{"quoted key", []string{`body["a.b"]`}, `{"a.b":"x","a":{"b":"y"}}`, `{"a.b":"[redacted]","a":{"b":"y"}}`},
		{"no match keeps body", []string{"body.missing"}, `{"id":"v1"}`, `{"id":"v1"}`},
		{"several paths", []string{"body.text", "body.srt"}, `{"text":"a","srt":"b","id":3}`, `{"text":"[redacted]","srt":"[redacted]","id":3}`},
		{"object value redacted whole", []string{"body.user"}, `{"user":{"email":"x"},"id":1}`, `{"user":"[redacted]","id":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			segs, err := shadow.NewRedaction(tt.paths)
			if err != nil {
				t.Fatalf("NewRedaction(%q): %v", tt.paths, err)
			}
			var buf bytes.Buffer
			if err := Encode(&buf, mustMessage(t, "r", "n", "id", tt.body, time.Unix(0, 0)), segs); err != nil {
				t.Fatal(err)
			}
			rec, _, err := DecodeLine(buf.Bytes())
			if err != nil {
				t.Fatalf("decode %s: %v", buf.Bytes(), err)
			}
			if got := string(rec.Body); got != tt.want {
				t.Errorf("body = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseRedactPathErrors(t *testing.T) {
	for _, p := range []string{"", "text", "name", "requestId", ".body", "body.", "body[", "body[x]", "body[-1]", `body["a`, "*", "[0]"} {
		if _, err := shadow.NewRedaction([]string{p}); err == nil {
			t.Errorf("NewRedaction(%q) = nil error, want one", p)
		}
	}
	if _, err := New(Config{File: filepath.Join(t.TempDir(), "r"), RedactPaths: []string{"body.ok", "text"}}, nil); err == nil || !strings.Contains(err.Error(), "redactPaths[1]") {
		t.Errorf("New with a bad path: err = %v, want one naming redactPaths[1]", err)
	}
}

func TestRecorderCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rec.jsonl")
	core, logs := observer.New(zapcore.InfoLevel)
	var one bytes.Buffer
	m := mustMessage(t, "room-1", "video.asset.ready", "req-00", `{"id":"v1"}`, time.Unix(1700000000, 0))
	if err := Encode(&one, m, nil); err != nil {
		t.Fatal(err)
	}
	maxBytes := int64(one.Len()*3 + one.Len()/2) // room for three lines
	r, err := New(Config{File: path, MaxBytes: maxBytes}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	stop := running(t, r)
	for i := range 10 {
		r.Record(mustMessage(t, "room-1", "video.asset.ready", fmt.Sprintf("req-%02d", i), `{"id":"v1"}`, time.Unix(1700000000, 0)))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	recs, _ := readLines(t, path)
	if got, want := len(recs), 3; got != want {
		t.Fatalf("lines = %d, want %d", got, want)
	}
	for i, rec := range recs {
		if want := fmt.Sprintf("req-%02d", i); rec.RequestID != want {
			t.Errorf("line %d requestId = %q, want %q", i+1, rec.RequestID, want)
		}
	}
	st, _ := os.Stat(path)
	if st.Size() > maxBytes {
		t.Errorf("size %d over the cap %d", st.Size(), maxBytes)
	}
	s := r.Stats()
	if !s.Capped || s.Recorded != 3 || s.OverCap != 7 {
		t.Errorf("stats = %+v, want capped, 3 recorded, 7 over the cap", s)
	}
	if got := logs.FilterMessage("recording stopped: record.maxBytes reached").Len(); got != 1 {
		t.Errorf("cap logged %d times, want once", got)
	}

	// A restart appends, and the existing size counts toward the cap.
	r2, err := New(Config{File: path, MaxBytes: maxBytes}, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop2 := running(t, r2)
	r2.Record(m)
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	if recs, _ := readLines(t, path); len(recs) != 3 {
		t.Errorf("after a restart at the cap: %d lines, want 3", len(recs))
	}
}

func TestRecorderRefusesReadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rec.jsonl")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // umask-proof
		t.Fatal(err)
	}
	if _, err := New(Config{File: path}, nil); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("New on a 0644 file: err = %v, want a chmod hint", err)
	}
	if _, err := New(Config{File: filepath.Join(t.TempDir(), "no", "such", "dir", "r")}, nil); err == nil {
		t.Error("New in a missing directory: nil error")
	}
}

func TestRecorderConcurrentRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rec.jsonl")
	r, err := New(Config{File: path, RedactPaths: []string{"body.text"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := running(t, r)
	const writers, each = 8, 300
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r.Record(mustMessage(t, fmt.Sprintf("room-%d", w), "transcript.ready", fmt.Sprintf("w%d-%04d", w, i),
					`{"text":"secret","n":1}`, time.Now()))
			}
		}()
	}
	wg.Wait()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	r.Record(mustMessage(t, "late", "transcript.ready", "late", `{}`, time.Now())) // after Run ended: dropped, no panic
	s := r.Stats()
	if got, want := s.Recorded+s.Dropped, int64(writers*each+1); got != want {
		t.Errorf("recorded %d + dropped %d = %d, want %d", s.Recorded, s.Dropped, got, want)
	}
	recs, _ := readLines(t, path)
	if got := int64(len(recs)); got != s.Recorded {
		t.Errorf("lines = %d, stats say %d recorded", got, s.Recorded)
	}
	last := map[string]string{}
	for i, rec := range recs {
		if string(rec.Body) != `{"text":"[redacted]","n":1}` {
			t.Fatalf("line %d body = %s, want redacted", i+1, rec.Body)
		}
		// One writer's messages keep its order in the file.
		w := strings.SplitN(rec.RequestID, "-", 2)[0]
		if rec.RequestID <= last[w] {
			t.Fatalf("line %d: %s after %s", i+1, rec.RequestID, last[w])
		}
		last[w] = rec.RequestID
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close after Run = %v, want nil", err)
	}
}

// BenchmarkRecord is the request path's cost: a hand-off to the queue.
// Compare with BenchmarkRecordInline, which is what a mutex+bufio recorder
// would do on the request path (redact, encode, buffered write).
func BenchmarkRecord(b *testing.B) {
	r, err := New(Config{File: filepath.Join(b.TempDir(), "r"), MaxBytes: 1 << 40, RedactPaths: []string{"body.text"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	stop := running(b, r)
	m := mustMessage(b, "video-42", "transcript.ready", "req-1", `{"id":"v1","text":"Welcome to the lesson, today we build an agent.","language":"en","confidence":0.93}`, time.Now())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Record(m)
		}
	})
	b.StopTimer()
	_ = stop()
	s := r.Stats()
	b.ReportMetric(float64(s.Dropped)/float64(s.Dropped+s.Recorded), "dropped/op")
}

func BenchmarkRecordInline(b *testing.B) {
	segs, _ := shadow.NewRedaction([]string{"body.text"})
	m := mustMessage(b, "video-42", "transcript.ready", "req-1", `{"id":"v1","text":"Welcome to the lesson, today we build an agent.","language":"en","confidence":0.93}`, time.Now())
	f, err := os.Create(filepath.Join(b.TempDir(), "r"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var mu sync.Mutex
	w := bufio.NewWriterSize(f, recordBuffer)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var buf bytes.Buffer
		for pb.Next() {
			buf.Reset()
			_ = Encode(&buf, m, segs)
			mu.Lock()
			_, _ = w.Write(buf.Bytes())
			mu.Unlock()
		}
	})
}

// running starts r's Run as the gateway does and returns the function that
// ends it (cancels its context) and returns Run's error.
func running(tb testing.TB, r *Recorder) func() error {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	tb.Cleanup(func() { _ = stop() })
	return stop
}

// TestRecorderLifecycle: New starts nothing; messages recorded before Run
// wait and are written once it runs; Run twice is refused; Close after Run
// does nothing; Close without Run writes the queue and releases the file.
func TestRecorderLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rec.jsonl")
	before := runtime.NumGoroutine()
	r, err := New(Config{File: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := runtime.NumGoroutine(); n != before {
		t.Errorf("New started %d goroutines", n-before)
	}
	r.Record(mustMessage(t, "room-1", "video.asset.ready", "early", `{}`, time.Unix(1700000000, 0)))
	stop := running(t, r)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err == nil {
		t.Error("a second Run: nil error")
	}
	if recs, _ := readLines(t, path); len(recs) != 1 || recs[0].RequestID != "early" {
		t.Errorf("lines = %+v, want the message recorded before Run", recs)
	}

	path2 := filepath.Join(t.TempDir(), "rec2.jsonl")
	r2, err := New(Config{File: path2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r2.Record(mustMessage(t, "room-1", "video.asset.ready", "queued", `{}`, time.Unix(1700000000, 0)))
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	if recs, _ := readLines(t, path2); len(recs) != 1 {
		t.Errorf("Close without Run wrote %d lines, want 1", len(recs))
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "file: required"},
		{Config{File: "x", MaxBytes: -1}, "maxBytes: -1 is negative"},
		{Config{File: "x", RedactPaths: []string{"name"}}, "redactPaths"},
	} {
		if err := tt.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v, want %q", tt.cfg, err, tt.want)
		}
	}
	if err := (Config{File: "x", RedactPaths: []string{"body.text"}}).Validate(); err != nil {
		t.Errorf("a good config: %v", err)
	}
}
