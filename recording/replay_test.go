package recording

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/shadow"
)

func TestReadRecordingMalformed(t *testing.T) {
	ok := recLine(time.Unix(1700000000, 0), "room-1", "video.asset.ready", "r1", `{"id":"v1"}`)
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"not JSON", []string{ok, ok, `{"t":`}, "line 3: not a recording object"},
		{"unknown key", []string{ok, `{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","name":"n","requestId":"x","body":1,"extra":true}`}, `line 2: not a recording object: json: unknown field "extra"`},
		{"missing t", []string{`{"app":"a","room":"r","name":"n","requestId":"x","body":1}`}, "line 1: t: required"},
		{"bad t", []string{`{"t":"yesterday","app":"a","room":"r","name":"n","requestId":"x","body":1}`}, `line 1: t: "yesterday" is not an RFC 3339 time`},
		{"bad room", []string{ok, `{"t":"2026-11-23T15:04:05Z","app":"a","room":"a/b","name":"n","requestId":"x","body":1}`}, "line 2: room: character '/'"},
		{"missing app", []string{`{"t":"2026-11-23T15:04:05Z","room":"r","name":"n","requestId":"x","body":1}`}, "line 1: app: required"},
		{"missing name", []string{`{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","requestId":"x","body":1}`}, "line 1: name: required"},
		{"empty requestId", []string{`{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","name":"n","requestId":"","body":1}`}, "line 1: requestId: required"},
		{"missing body", []string{`{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","name":"n","requestId":"x"}`}, "line 1: body: required"},
		{"bad party", []string{`{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","name":"n","requestId":"x","party":"a/b","body":1}`}, "line 1: party:"},
		{"trailing data", []string{ok + ` {}`}, "line 1: trailing data"},
		{"an array", []string{`[1,2]`}, "line 1: not a recording object"},
		{"blank lines counted", []string{ok, "", "   ", "nope"}, "line 4:"},
		{"empty file", []string{""}, "no message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(strings.Join(tt.lines, "\n")))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	entries, err := Read(strings.NewReader(ok + "\n\n" + ok + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := []int{entries[0].Line, entries[1].Line}, []int{1, 3}; got[0] != want[0] || got[1] != want[1] {
		t.Errorf("line numbers = %v, want %v", got, want)
	}
}

func TestReplayRequestID(t *testing.T) {
	if got, want := replayRequestID("req-1", "abcd", 7, false), "req-1-replay-abcd"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := replayRequestID("chat-1", "abcd", 7, true), "chat-1-replay-abcd-7"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	long := strings.Repeat("x", 256)
	a, b := replayRequestID(long, "abcd", 1, false), replayRequestID(long+"y", "abcd", 1, false)
	if len(a) > 256 || a == b || !strings.HasSuffix(a, "-replay-abcd") {
		t.Errorf("long ids: %q, %q; want distinct, at most 256 bytes", a, b)
	}
}

func FuzzDecodeRecordLine(f *testing.F) {
	f.Add([]byte(`{"t":"2026-11-23T15:04:05.123456789Z","app":"ai-hero","room":"video-42","name":"video.asset.ready","channel":"video-ready","requestId":"req-1","body":{"id":"v1"}}`))
	f.Add([]byte(`{"t":"2026-11-23T15:04:05Z","app":"a","room":"r","name":"ai.message","channel":"ai-stream","requestId":"c","party":"main","body":"chunk"}`))
	f.Add([]byte(`{"t":"2026-11-23T15:04:05+01:00","app":"a","room":"r","name":"n","requestId":"x","body":[1,2,{"a":null}]}`))
	f.Add([]byte(`{"t":"x","app":"a","room":"r","name":"n","requestId":"x","body":1}`))
	f.Add([]byte(`{"t":"2026-11-23T15:04:05Z","app":"a","room":"a%2F","name":"n","requestId":"x","body":1} {}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, at, err := DecodeLine(b)
		if err != nil {
			return
		}
		if rec.App == "" || rec.Name == "" || rec.RequestID == "" || len(rec.Body) == 0 || at.IsZero() && rec.T == "" {
			t.Fatalf("accepted an incomplete line: %+v", rec)
		}
		if err := broadcast.ValidateRoom(rec.Room); err != nil {
			t.Fatalf("accepted room %q: %v", rec.Room, err)
		}
		if !json.Valid(rec.Body) {
			t.Fatalf("accepted body %q", rec.Body)
		}
		// What the recorder would write for it decodes to the same line.
		m, err := broadcast.NewMessage(rec.App, rec.Room, rec.Name, rec.RequestID, rec.Body, rec.Channel, at)
		if err != nil {
			return // e.g. a body too large for the realtime transport
		}
		m.Party = rec.Party
		var buf bytes.Buffer
		if err := Encode(&buf, m, nil); err != nil {
			t.Fatal(err)
		}
		again, at2, err := DecodeLine(buf.Bytes())
		if err != nil {
			t.Fatalf("re-encoded line %s: %v", buf.Bytes(), err)
		}
		if !at2.Equal(at) || again.Room != rec.Room || again.Name != rec.Name || again.RequestID != rec.RequestID || again.Party != rec.Party {
			t.Fatalf("round trip changed the line: %+v -> %+v", rec, again)
		}
		var x, y any
		if json.Unmarshal(rec.Body, &x) != nil || json.Unmarshal(again.Body, &y) != nil || fmt.Sprint(x) != fmt.Sprint(y) {
			t.Fatalf("round trip changed the body: %s -> %s", rec.Body, again.Body)
		}
	})
}

func TestProgressDraw(t *testing.T) {
	st := &replayStats{byStatus: map[string]int{}, byStage: map[broadcast.Stage]int{}}
	st.sent.Store(5)
	st.ok.Store(4)
	var tty, plain bytes.Buffer
	p := &progress{w: &tty, total: 10, tty: true}
	p.draw(st, time.Now(), false)
	st.sent.Store(10)
	st.ok.Store(9)
	p.draw(st, time.Now(), true)
	if got := tty.String(); !strings.HasPrefix(got, "\r[###############...............] 5/10  50%  ok 4  failed 1") ||
		strings.Count(got, "\r") != 2 || strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
		t.Errorf("terminal progress = %q, want two \\r-redrawn lines and one final newline", got)
	}
	q := &progress{w: &plain, total: 10}
	q.draw(st, time.Now(), false)
	q.draw(st, time.Now(), true)
	if got := plain.String(); strings.Contains(got, "\r") || strings.Count(got, "\n") != 2 || !strings.Contains(got, "10/10 100%  ok 9  failed 1") {
		t.Errorf("plain progress = %q, want two whole lines", got)
	}
	if isTerminal(&plain) {
		t.Error("a buffer is not a terminal")
	}
}

func TestDiffSummaries(t *testing.T) {
	row := func(ch string, match, missing, compared int64) shadow.ChannelSummary {
		return shadow.ChannelSummary{App: "ai-hero", Channel: ch, Compared: compared,
			Outcomes: map[shadow.Outcome]int64{shadow.OutcomeMatch: match, shadow.OutcomeMissingRealtime: missing}}
	}
	before := []shadow.ChannelSummary{row("video-ready", 10, 1, 11), row("transcript", 50, 0, 50)}
	after := []shadow.ChannelSummary{row("video-ready", 16, 2, 18), row("transcript", 40, 0, 40), row("ai-stream", 3, 0, 3)}
	got := map[string][3]int64{}
	for _, d := range diffSummaries(before, after) {
		got[d.Channel] = [3]int64{d.Compared, d.Outcomes[shadow.OutcomeMatch], d.Outcomes[shadow.OutcomeMissingRealtime]}
	}
	want := map[string][3]int64{
		"video-ready": {7, 6, 1},
		"transcript":  {0, 0, 0}, // the window rotated counts out: clamped, never negative
		"ai-stream":   {3, 3, 0},
	}
	for ch, w := range want {
		if got[ch] != w {
			t.Errorf("%s: got %v, want %v", ch, got[ch], w)
		}
	}
}

func recLine(t time.Time, room, name, requestID, body string) string {
	return fmt.Sprintf(`{"t":%q,"app":"ai-hero","room":%q,"name":%q,"channel":"x","requestId":%q,"body":%s}`,
		t.UTC().Format(time.RFC3339Nano), room, name, requestID, body)
}
