package shadow

import (
	"encoding/json"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard/switchyard/broadcast"
)

// frameIDCases are frames for frameRequestID: plain envelopes it reads, and
// the unusual ones it must leave to decodeFrame (or whose id is wrong).
var frameIDCases = []struct {
	frame string
	id    string // "" when frameRequestID must refuse
}{
	{`{"body":{"a":1},"requestId":"r1","name":"n"}`, "r1"},
	{` { "requestId" : "r1" , "body" : [1, "x]", {"y":"}"}] } ` + "\n", "r1"},
	{`{"body":{"requestId":"inner"},"requestId":"outer","name":"n"}`, "outer"},
	{`{"body":["requestId","x"],"requestId":"r1"}`, "r1"},
	{`{"body":"a \"requestId\":\"x\" \\","requestId":"r1"}`, "r1"},
	{`{"body":{"a":1},"requestId":"r1","name":"n","sy":{"id":"e-1","seq":1}}`, "r1"},
	{`{"requestId":"caf` + "\xc3\xa9" + `"}`, "caf\u00e9"},
	{`{"body":{"requestId":"inner"},"name":"n"}`, ""},
	{`{"body":1,"requestId":"a","requestId":"b"}`, ""},
	{`{"body":1,"requestId":"a","request\u0049d":"b"}`, ""},
	{`{"body":1,"requestId":"caf\u00e9"}`, ""},
	{`{"body":1,"requestId":"a\"b"}`, ""},
	{`{"body":1,"requestId":"bad` + "\xff" + `"}`, ""},
	{`{"body":1,"requestId":""}`, ""},
	{`{"body":1,"requestId":5}`, ""},
	{`{"body":1,"requestId":null}`, ""},
	{`{"body":1,"RequestId":"r1"}`, ""},
	{`{"body":1,"requestId":"r1"} x`, ""},
	{`{"body":1,"requestId":"r1"}{}`, ""},
	{`{"body":1,"requestId":"r1"`, ""},
	{`{"body":1,"requestId":"r1",}`, ""},
	{`{"body":{"a":1,"requestId":"r1"}`, ""},
	{`{"body":,"requestId":"r1"}`, ""},
	{`{"body" 1,"requestId":"r1"}`, ""},
	{`{"requestId":"tab	here"}`, ""},
	{`{}`, ""},
	{`[{"requestId":"r1"}]`, ""},
	{`"requestId"`, ""},
	{`conn-1: hello`, ""},
	{"\x00\x01yjs", ""},
	{``, ""},
}

func TestFrameRequestID(t *testing.T) {
	for _, c := range frameIDCases {
		id, ok := frameRequestID([]byte(c.frame))
		if ok != (c.id != "") || id != c.id {
			t.Errorf("frameRequestID(%q) = %q, %v; want %q", c.frame, id, ok, c.id)
		}
		checkFrameID(t, []byte(c.frame))
	}
	// Every envelope the gateway renders with a plain requestId is read.
	for _, id := range []string{"r1", "req-17", "caf\u00e9", "a b/c:d"} {
		for _, body := range []string{`{}`, `"s"`, `[{"requestId":"x"}]`, ` {"a" : "\"}"} `} {
			env := broadcast.AppendEnvelope(nil, json.RawMessage(body), id, "video.asset.ready")
			if got, ok := frameRequestID(env); !ok || got != id {
				t.Errorf("frameRequestID(%s) = %q, %v; want %q", env, got, ok, id)
			}
		}
	}
}

// checkFrameID holds frameRequestID to decodeFrame: on a frame that
// decodeFrame accepts, an id read is the id decoded; on valid JSON it never
// reads an id decodeFrame refuses.
func checkFrameID(t *testing.T, b []byte) {
	t.Helper()
	id, ok := frameRequestID(b)
	if !ok {
		return
	}
	_, want, err := decodeFrame(b)
	switch {
	case err == nil && id != want:
		t.Fatalf("frameRequestID(%q) = %q, decodeFrame gives %q", b, id, want)
	case err != nil && json.Valid(b):
		t.Fatalf("frameRequestID(%q) = %q on valid JSON decodeFrame refuses: %v", b, id, err)
	}
}

// FuzzFrameRequestID checks checkFrameID's property on generated frames.
func FuzzFrameRequestID(f *testing.F) {
	for _, c := range frameIDCases {
		f.Add([]byte(c.frame))
	}
	f.Fuzz(checkFrameID)
}

// TestIdenticalCopyIsNotDecoded: a copy byte for byte the envelope is a
// match without being decoded. The envelope here is one decodeFrame
// refuses (NewMessage never renders such): the decoding path counts both
// copies foreign and the message missing; the fast path matches it.
func TestIdenticalCopyIsNotDecoded(t *testing.T) {
	for _, decode := range []bool{false, true} {
		h := newHarness(t, Config{}, nil)
		h.c.alwaysDecode = decode
		lw, rw := h.observe(t, app, "r")
		m := h.msg(t, app, "r", "video", "ID", `{}`)
		m.Envelope = []byte(`{"body":tru,"requestId":"ID","name":"video.asset.ready"}`)
		if _, _, err := decodeFrame(m.Envelope); err == nil {
			t.Fatal("decodeFrame accepts the broken envelope")
		}
		h.c.Expect(m, broadcast.StageShadow)
		at := h.clock.Advance(time.Millisecond)
		lw.deliver(string(m.Envelope), at)
		rw.deliver(string(m.Envelope), at)
		h.pump()
		h.c.sweep(h.clock.Advance(DefaultTimeout + time.Second))
		want := map[Outcome]int{OutcomeMatch: 1}
		foreign := 0
		if decode {
			want = map[Outcome]int{OutcomeMissingLegacy: 1, OutcomeMissingRealtime: 1}
			foreign = 1
		}
		if got := h.counts(app, "video"); !reflect.DeepEqual(got, want) {
			t.Errorf("alwaysDecode %v: outcomes = %v, want %v", decode, got, want)
		}
		if got := h.foreign(broadcast.TransportLegacy) + h.foreign(broadcast.TransportRealtime); got != 2*foreign {
			t.Errorf("alwaysDecode %v: foreign = %d, want %d", decode, got, 2*foreign)
		}
	}
}

// fastPathScenario is a sequence of messages and copies run twice, with
// and without the fast path, on comparators whose rules ignore and redact.
type fastPathScenario struct {
	name string
	// msgs are the messages expected, in order: requestId and body.
	msgs [][2]string
	// copies are delivered in order: the side, the index of the message
	// whose envelope frame turns into the copy, and how many repeats.
	copies []fastPathCopy
	// want are the outcomes both paths count, and foreign their foreign
	// frames (legacy, realtime).
	want    map[Outcome]int
	foreign [2]int
}

type fastPathCopy struct {
	side   broadcast.Transport
	msg    int
	frame  func(env string) string
	repeat int // delivered 1+repeat times
}

func same(env string) string { return env }

// spaced puts whitespace between the envelope's tokens (outside strings
// containing ':' or ',', which the scenarios' bodies avoid).
func spaced(env string) string {
	return strings.NewReplacer(`,"`, `, "`, `":`, `" : `, "{", "{ ").Replace(env)
}

func fastPathScenarios() []fastPathScenario {
	const body = `{"token":"s3cret","n":1,"updatedAt":"a","items":[1.0,"x"]}`
	legacyOrder := func(env string) string { // PartyKit re-encoding: other key order
		var v map[string]json.RawMessage
		if err := json.Unmarshal([]byte(env), &v); err != nil {
			panic(err)
		}
		return `{"name":` + string(v["name"]) + `,"requestId":` + string(v["requestId"]) + `,"body":` + string(v["body"]) + `}`
	}
	L, R := broadcast.TransportLegacy, broadcast.TransportRealtime
	return []fastPathScenario{
		{name: "identical", want: map[Outcome]int{OutcomeMatch: 1},
			msgs:   [][2]string{{"ID", body}},
			copies: []fastPathCopy{{side: L, frame: same}, {side: R, frame: same}}},
		{name: "identical duplicates", want: map[Outcome]int{OutcomeMatch: 1, OutcomeDuplicate: 2},
			msgs:   [][2]string{{"ID", body}},
			copies: []fastPathCopy{{side: R, frame: same, repeat: 2}, {side: L, frame: same, repeat: 1}}},
		{name: "whitespace", want: map[Outcome]int{OutcomeMatch: 1},
			msgs:   [][2]string{{"ID", body}},
			copies: []fastPathCopy{{side: L, frame: spaced}, {side: R, frame: same}}},
		{name: "trailing newline", want: map[Outcome]int{OutcomeMatch: 1},
			msgs:   [][2]string{{"ID", body}},
			copies: []fastPathCopy{{side: L, frame: func(e string) string { return e + "\n" }}, {side: R, frame: same}}},
		{name: "key order", want: map[Outcome]int{OutcomeMatch: 1},
			msgs:   [][2]string{{"ID", body}},
			copies: []fastPathCopy{{side: L, frame: legacyOrder}, {side: R, frame: same}}},
		{name: "ignored field differs", msgs: [][2]string{{"ID", body}}, want: map[Outcome]int{OutcomeMatch: 1},
			copies: []fastPathCopy{
				{side: L, frame: func(e string) string { return strings.Replace(e, `"a"`, `"b"`, 1) }},
				{side: R, frame: same},
			}},
		{name: "redacted field differs", msgs: [][2]string{{"ID", body}}, want: map[Outcome]int{OutcomeMismatch: 1},
			copies: []fastPathCopy{
				{side: L, frame: same},
				{side: R, frame: func(e string) string { return strings.Replace(e, "s3cret", "leak", 1) }},
			}},
		{name: "both differ", want: map[Outcome]int{OutcomeMismatch: 1},
			msgs: [][2]string{{"ID", body}},
			copies: []fastPathCopy{
				{side: L, frame: func(e string) string { return strings.Replace(e, `"n":1`, `"n":2`, 1) }},
				{side: R, frame: func(e string) string { return strings.Replace(e, `"n":1`, `"n":3`, 1) }},
			}},
		{name: "precision loss", want: map[Outcome]int{OutcomePrecisionLoss: 1},
			msgs: [][2]string{{"ID", `{"id":12345678901234567890}`}},
			copies: []fastPathCopy{
				{side: L, frame: func(e string) string { return strings.Replace(e, "67890}", "67000}", 1) }},
				{side: R, frame: same},
			}},
		{name: "requestId nested in the body", want: map[Outcome]int{OutcomeMatch: 1}, foreign: [2]int{1, 0},
			msgs: [][2]string{{"ID", `{"requestId":"other","x":{"requestId":"ID"}}`}},
			copies: []fastPathCopy{
				{side: L, frame: same}, {side: R, frame: same},
				{side: L, frame: func(string) string { return `{"body":{"requestId":"ID"},"name":"video.asset.ready"}` }},
			}},
		{name: "escaped requestId", want: map[Outcome]int{OutcomeMatch: 1},
			msgs: [][2]string{{"caf\u00e9 \"<q>\"", `{}`}},
			copies: []fastPathCopy{
				{side: L, frame: same},
				{side: R, frame: func(string) string {
					return `{"body":{},"requestId":"caf` + "\xc3\xa9" + ` \"\u003cq>\"","name":"video.asset.ready"}`
				}},
			}},
		{name: "escaped requestId key", want: map[Outcome]int{OutcomeMatch: 1},
			msgs: [][2]string{{"ID", `{}`}},
			copies: []fastPathCopy{
				{side: L, frame: func(e string) string { return strings.Replace(e, `"requestId"`, `"request\u0049d"`, 1) }},
				{side: R, frame: same},
			}},
		{name: "duplicate requestId keys", want: map[Outcome]int{OutcomeMatch: 1}, foreign: [2]int{0, 1},
			msgs: [][2]string{{"ID", `{}`}},
			copies: []fastPathCopy{
				{side: L, frame: func(e string) string { return strings.Replace(e, `"requestId"`, `"requestId":"other","requestId"`, 1) }},
				{side: R, frame: func(e string) string { return strings.Replace(e, `"name"`, `"requestId":"other","name"`, 1) }},
				{side: R, frame: same},
			}},
		{name: "invalid UTF-8", want: map[Outcome]int{OutcomeMatch: 1}, foreign: [2]int{0, 1},
			msgs: [][2]string{{"ID", `{"s":"\ufffd"}`}},
			copies: []fastPathCopy{
				{side: L, frame: func(string) string {
					return "{\"body\":{\"s\":\"\xff\"},\"requestId\":\"ID\",\"name\":\"video.asset.ready\"}"
				}},
				{side: R, frame: func(string) string {
					return "{\"body\":{\"s\":\"\"},\"requestId\":\"I\xffD\",\"name\":\"video.asset.ready\"}"
				}},
				{side: R, frame: same},
			}},
		{name: "not envelopes", want: map[Outcome]int{OutcomeMissingRealtime: 1}, foreign: [2]int{3, 2},
			msgs: [][2]string{{"ID", `{}`}},
			copies: []fastPathCopy{
				{side: L, frame: func(string) string { return `[{"requestId":"ID"}]` }},
				{side: L, frame: func(string) string { return `conn-1: hello` }},
				{side: R, frame: func(string) string { return "\x00\x01yjs" }},
				{side: R, frame: func(e string) string { return e + "{}" }},
				{side: L, frame: func(e string) string { return e[:len(e)-1] }},
				{side: L, frame: same},
			}},
		{name: "shared requestId", want: map[Outcome]int{OutcomeMismatch: 2, OutcomeDuplicate: 1},
			msgs: [][2]string{{"chat", `"Sure"`}, {"chat", `", here"`}},
			copies: []fastPathCopy{
				{side: L, msg: 0, frame: same}, {side: L, msg: 1, frame: same},
				{side: R, msg: 1, frame: same}, {side: R, msg: 0, frame: same}, // out of order: both mismatch
				{side: R, msg: 1, frame: same},
			}},
		{name: "missing side", want: map[Outcome]int{OutcomeMissingLegacy: 1},
			msgs:   [][2]string{{"ID", body}},
			copies: []fastPathCopy{{side: R, frame: same}}},
	}
}

// TestFastPathMatchesDecoding holds the fast path to the decoding path:
// for every scenario the outcomes, foreign counts, summaries and mismatch
// examples are the same.
func TestFastPathMatchesDecoding(t *testing.T) {
	cfg := Config{Channels: map[string]ChannelConfig{
		"video": {RedactPaths: []string{"body.token"}, IgnorePaths: []string{"body.updatedAt"}},
	}}
	type result struct {
		Outcomes         map[Outcome]int
		Foreign          [2]int
		Summary          []ChannelSummary
		Examples         []MismatchExample
		PendingAfterExit float64
	}
	run := func(t *testing.T, sc fastPathScenario, decode bool) result {
		h := newHarness(t, cfg, nil)
		h.c.alwaysDecode = decode
		lw, rw := h.observe(t, app, "r")
		var ms []*broadcast.Message
		for _, m := range sc.msgs {
			msg := h.msg(t, app, "r", "video", m[0], m[1])
			h.c.Expect(msg, broadcast.StageShadow)
			ms = append(ms, msg)
		}
		for _, cp := range sc.copies {
			f := cp.frame(string(ms[cp.msg].Envelope))
			for i := 0; i <= cp.repeat; i++ {
				at := h.clock.Advance(3 * time.Millisecond)
				if cp.side == broadcast.TransportLegacy {
					lw.deliver(f, at)
				} else {
					rw.deliver(f, at)
				}
				h.pump()
			}
		}
		h.c.sweep(h.clock.Advance(DefaultTimeout + time.Second))
		return result{
			Outcomes: h.counts(app, "video"),
			Foreign:  [2]int{h.foreign(broadcast.TransportLegacy), h.foreign(broadcast.TransportRealtime)},
			Summary:  h.c.Summary(), Examples: h.c.Mismatches(0),
			PendingAfterExit: testutil.ToFloat64(h.c.m.pending),
		}
	}
	for _, sc := range fastPathScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			fast, slow := run(t, sc, false), run(t, sc, true)
			if !reflect.DeepEqual(fast, slow) {
				f, _ := json.MarshalIndent(fast, "", " ")
				s, _ := json.MarshalIndent(slow, "", " ")
				t.Errorf("fast path:\n%s\ndecoding path:\n%s", f, s)
			}
			if !reflect.DeepEqual(fast.Outcomes, sc.want) || fast.Foreign != sc.foreign {
				t.Errorf("outcomes %v, foreign %v; want %v, %v", fast.Outcomes, fast.Foreign, sc.want, sc.foreign)
			}
		})
	}
}

// treeCases are JSON texts for decodeTree: the subset parseTree takes and
// what it must leave to decodeJSON.
var treeCases = []string{
	`{"body":{"a":1,"b":[1.0,-0,2e10,3.5E-2,"x",true,false,null,{}],"c":[]},"requestId":"r1","name":"n"}`,
	` { "a" : [ 1 , 2 ] , "a" : "dup" } ` + "\n",
	`"caf\u00e9 \"q\" \\ \/ \b\f\n\r\t \u0000 \uffff"`,
	"\"caf\xc3\xa9 \xef\xbf\xbd\"",
	`"\ud83d\ude00"`, `"\ud800"`, `"\ude00x"`, `"\uD83D\uDE00"`,
	"\"bad\xff\"", "\"tab\there\"", `"\x"`, `"\u12"`, `"\u12g4"`,
	`123`, `-0.5e+3`, `01`, `-`, `1.`, `.5`, `1e`, `1e+`, `+1`, `0x10`, `1.5.2`, `NaN`, `Infinity`,
	`true`, `tru`, `truex`, `nulls`, `[1,]`, `[,1]`, `{"a":1,}`, `{"a" 1}`, `{a:1}`, `{"a":1}}`, `[[[]]]`,
	`{"a":1} {}`, `{"a":1}x`, ``, ` `, "\ufeff{}", `[` + strings.Repeat(`[`, 600) + strings.Repeat(`]`, 601),
	`{"a":` + strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat(`}`, 101),
	`[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34]`,
	`{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10}`,
}

// checkTree holds decodeTree to decodeJSON: the same value, the same error.
func checkTree(t *testing.T, b []byte) {
	t.Helper()
	want, wantErr := decodeJSON(b)
	got, gotErr := decodeTree(b)
	if (wantErr == nil) != (gotErr == nil) || (wantErr != nil && wantErr.Error() != gotErr.Error()) {
		t.Fatalf("decodeTree(%q) error %v, decodeJSON gives %v", b, gotErr, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeTree(%q) = %#v, decodeJSON gives %#v", b, got, want)
	}
	if v, ok := parseTree(b); ok && (wantErr != nil || !reflect.DeepEqual(v, want)) {
		t.Fatalf("parseTree(%q) = %#v, decodeJSON gives %#v, %v", b, v, want, wantErr)
	}
}

func TestDecodeTreeMatchesDecodeJSON(t *testing.T) {
	fast := 0
	for _, c := range append(treeCases, frameCasesText()...) {
		checkTree(t, []byte(c))
		if _, ok := parseTree([]byte(c)); ok {
			fast++
		}
	}
	if fast < 20 {
		t.Errorf("parseTree took %d cases, want the common ones (>= 20)", fast)
	}
}

func frameCasesText() []string {
	var out []string
	for _, c := range frameIDCases {
		out = append(out, c.frame)
	}
	return out
}

// FuzzDecodeTree checks checkTree's property on generated texts.
func FuzzDecodeTree(f *testing.F) {
	for _, c := range append(treeCases, frameCasesText()...) {
		f.Add([]byte(c))
	}
	f.Fuzz(checkTree)
}

// compareNumbersRat is compareNumbers as it was before equalDecimals: the
// reference it is held to.
func compareNumbersRat(a, b json.Number) class {
	if a == b {
		return classEqual
	}
	fa, errA := strconv.ParseFloat(string(a), 64)
	fb, errB := strconv.ParseFloat(string(b), 64)
	if errA == nil && errB == nil && fa != fb {
		return classDiffer
	}
	ra, okA := new(big.Rat).SetString(string(a))
	rb, okB := new(big.Rat).SetString(string(b))
	if okA && okB && ra.Cmp(rb) == 0 {
		return classEqual
	}
	if errA == nil && errB == nil {
		return classLossy
	}
	return classDiffer
}

var numberCases = []string{
	"123", "123.0", "123.00", "0123", "-123", "-123.0", "0", "-0", "0.0", "-0.000", "0.5", "-0.50", "00", "1.",
	".5", "-", "", "1e2", "100", "100.0", "1E2", "1/2", "0x10", "1_0", "+1", "abc", "1.5.2", "1.2a",
	"12345678901234567890", "12345678901234567000", "12345678901234567890.0", "12345678901234567000.000",
	"1" + strings.Repeat("0", 400), "1" + strings.Repeat("0", 400) + ".0", "1" + strings.Repeat("0", 401),
	"0." + strings.Repeat("0", 400) + "1", "0." + strings.Repeat("0", 400) + "10", "1.0000000000000000001",
}

func TestCompareNumbersMatchesRat(t *testing.T) {
	for _, a := range numberCases {
		for _, b := range numberCases {
			if got, want := compareNumbers(json.Number(a), json.Number(b)), compareNumbersRat(json.Number(a), json.Number(b)); got != want {
				t.Errorf("compareNumbers(%q, %q) = %d, big.Rat gives %d", a, b, got, want)
			}
		}
	}
}

func FuzzCompareNumbers(f *testing.F) {
	for i, a := range numberCases {
		f.Add(a, numberCases[(i+1)%len(numberCases)])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if got, want := compareNumbers(json.Number(a), json.Number(b)), compareNumbersRat(json.Number(a), json.Number(b)); got != want {
			t.Fatalf("compareNumbers(%q, %q) = %d, big.Rat gives %d", a, b, got, want)
		}
	})
}
