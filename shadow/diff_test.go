package shadow

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func mustDecode(tb testing.TB, s string) any {
	tb.Helper()
	v, err := decodeJSON([]byte(s))
	if err != nil {
		tb.Fatalf("decode %q: %v", s, err)
	}
	return v
}

func mustPaths(tb testing.TB, ps ...string) [][]segment {
	tb.Helper()
	var out [][]segment
	for _, p := range ps {
		segs, err := parsePath(p)
		if err != nil {
			tb.Fatalf("parsePath(%q): %v", p, err)
		}
		out = append(out, segs)
	}
	return out
}

func TestCompareNumbers(t *testing.T) {
	tests := []struct {
		a, b string
		want class
	}{
		{"1", "1", classEqual},
		{"1.0", "1", classEqual},
		{"1e0", "1", classEqual},
		{"10e-1", "1", classEqual},
		{"1e21", "1e+21", classEqual},
		{"-0", "0", classEqual},
		{"12345678901234567890", "12345678901234567000", classLossy},
		{"3.14159265358979323846", "3.141592653589793", classLossy},
		{"9007199254740993", "9007199254740992", classLossy},
		{"1", "2", classDiffer},
		{"0.1", "0.10000001", classDiffer},
		{"1e400", "1e401", classDiffer}, // out of float64 range: exact only
		{"1e400", "1e400", classEqual},
		{"1e400", "10e399", classEqual},
	}
	for _, tt := range tests {
		if got := compareNumbers(json.Number(tt.a), json.Number(tt.b)); got != tt.want {
			t.Errorf("compareNumbers(%s, %s) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestDiffTrees(t *testing.T) {
	tests := []struct {
		name      string
		want, got string
		ignore    []string
		cls       class
		paths     []string
		kinds     []string
	}{
		{name: "identical", want: `{"a":1}`, got: `{"a":1}`, cls: classEqual},
		{name: "key order", want: `{"a":1,"b":{"x":[1,2],"y":"s"}}`, got: `{"b":{"y":"s","x":[1,2]},"a":1}`, cls: classEqual},
		{name: "unicode escape vs literal", want: `{"s":"caf\u00e9 \ud83d\ude00"}`, got: `{"s":"café 😀"}`, cls: classEqual},
		{name: "1.0 is 1", want: `{"n":1.0,"m":[2.50]}`, got: `{"n":1,"m":[2.5]}`, cls: classEqual},
		{name: "precision loss", want: `{"body":{"id":12345678901234567890}}`, got: `{"body":{"id":12345678901234567000}}`,
			cls: classLossy, paths: []string{"body.id"}, kinds: []string{"precision"}},
		{name: "precision loss and change", want: `{"a":12345678901234567890,"b":"x"}`, got: `{"a":12345678901234567000,"b":"y"}`,
			cls: classDiffer, paths: []string{"a", "b"}, kinds: []string{"precision", "changed"}},
		{name: "changed deep in array", want: `{"body":{"items":[{"id":1},{"id":2},{"id":3}]}}`, got: `{"body":{"items":[{"id":1},{"id":2},{"id":4}]}}`,
			cls: classDiffer, paths: []string{"body.items[2].id"}, kinds: []string{"changed"}},
		{name: "missing and extra", want: `{"a":1,"b":2}`, got: `{"a":1,"c":3}`,
			cls: classDiffer, paths: []string{"b", "c"}, kinds: []string{"missing", "extra"}},
		{name: "type change", want: `{"a":"1"}`, got: `{"a":1}`, cls: classDiffer, paths: []string{"a"}, kinds: []string{"type"}},
		{name: "null vs value", want: `{"a":null}`, got: `{"a":false}`, cls: classDiffer, paths: []string{"a"}, kinds: []string{"type"}},
		{name: "array shorter", want: `[1,2,3]`, got: `[1,2]`, cls: classDiffer, paths: []string{"[2]"}, kinds: []string{"missing"}},
		{name: "array longer", want: `[1]`, got: `[1,true]`, cls: classDiffer, paths: []string{"[1]"}, kinds: []string{"extra"}},
		{name: "odd key quoted", want: `{"a.b":{"c d":1}}`, got: `{"a.b":{"c d":2}}`, cls: classDiffer, paths: []string{`["a.b"]["c d"]`}, kinds: []string{"changed"}},
		{name: "bool", want: `{"a":true}`, got: `{"a":false}`, cls: classDiffer, paths: []string{"a"}, kinds: []string{"changed"}},
		{name: "string body", want: `{"body":"chunk \u2028"}`, got: `{"body":"chunk \u2028"}`, cls: classEqual},
		{name: "ignore path", want: `{"body":{"updatedAt":"t1","v":1}}`, got: `{"body":{"updatedAt":"t2","v":1}}`,
			ignore: []string{"body.updatedAt"}, cls: classEqual},
		{name: "ignore path absent on one side", want: `{"body":{"updatedAt":"t1","v":1}}`, got: `{"body":{"v":1}}`,
			ignore: []string{"body.updatedAt"}, cls: classEqual},
		{name: "ignore wildcard index", want: `{"body":{"items":[{"ts":1,"id":1},{"ts":2,"id":2}]}}`, got: `{"body":{"items":[{"ts":9,"id":1},{"ts":8,"id":3}]}}`,
			ignore: []string{"body.items[*].ts"}, cls: classDiffer, paths: []string{"body.items[1].id"}, kinds: []string{"changed"}},
		{name: "ignore whole element", want: `[1,2,3]`, got: `[1,9,3]`, ignore: []string{"[1]"}, cls: classEqual},
		{name: "ignore wildcard key", want: `{"body":{"a":{"t":1},"b":{"t":2}}}`, got: `{"body":{"a":{"t":3},"b":{"t":4}}}`,
			ignore: []string{"body.*.t"}, cls: classEqual},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ign := mustPaths(t, tt.ignore...)
			w := applyIgnore(mustDecode(t, tt.want), ign)
			g := applyIgnore(mustDecode(t, tt.got), ign)
			cls, diffs := diffTrees(w, g, nil)
			if cls != tt.cls {
				t.Errorf("class = %d, want %d (diffs %+v)", cls, tt.cls, diffs)
			}
			var paths, kinds []string
			for _, d := range diffs {
				paths = append(paths, d.Path)
				kinds = append(kinds, d.Kind)
			}
			if !reflect.DeepEqual(paths, tt.paths) || !reflect.DeepEqual(kinds, tt.kinds) {
				t.Errorf("paths, kinds = %q %q, want %q %q", paths, kinds, tt.paths, tt.kinds)
			}
		})
	}
}

func TestDiffValuesAndRedaction(t *testing.T) {
	want := mustDecode(t, `{"body":{"token":"s3cret","user":{"email":"a@b"},"n":1}}`)
	got := mustDecode(t, `{"body":{"token":"other","user":{"email":"c@d"},"n":2}}`)
	_, diffs := diffTrees(want, got, mustPaths(t, "body.token", "body.user.email"))
	gotDiffs := map[string]Difference{}
	for _, d := range diffs {
		gotDiffs[d.Path] = d
	}
	wantDiffs := map[string]Difference{
		"body.token":      {Path: "body.token", Kind: "changed", Want: `"[redacted]"`, Got: `"[redacted]"`},
		"body.user.email": {Path: "body.user.email", Kind: "changed", Want: `"[redacted]"`, Got: `"[redacted]"`},
		"body.n":          {Path: "body.n", Kind: "changed", Want: `1`, Got: `2`},
	}
	if !reflect.DeepEqual(gotDiffs, wantDiffs) {
		t.Errorf("diffs = %+v, want %+v", gotDiffs, wantDiffs)
	}

	// A type change above a redacted path shows the container redacted inside.
	_, diffs = diffTrees(mustDecode(t, `{"body":{"token":"s3cret"}}`), mustDecode(t, `{"body":"x"}`), mustPaths(t, "body.token"))
	if len(diffs) != 1 || diffs[0].Want != `{"token":"[redacted]"}` || diffs[0].Got != `"x"` {
		t.Errorf("diffs = %+v, want body redacted inside", diffs)
	}
	if strings.Contains(render(want, nil, mustPaths(t, "body.*"), 0), "s3cret") {
		t.Error("wildcard redaction leaked a value")
	}
}

func TestDiffCap(t *testing.T) {
	var w, g strings.Builder
	w.WriteString("[")
	g.WriteString("[")
	for i := 0; i < 100; i++ {
		if i > 0 {
			w.WriteString(",")
			g.WriteString(",")
		}
		w.WriteString("1")
		g.WriteString("2")
	}
	w.WriteString("]")
	g.WriteString("]")
	cls, diffs := diffTrees(mustDecode(t, w.String()), mustDecode(t, g.String()), nil)
	if cls != classDiffer || len(diffs) != maxDiffs {
		t.Errorf("class %d, %d diffs; want %d, %d", cls, len(diffs), classDiffer, maxDiffs)
	}
}

func TestParsePath(t *testing.T) {
	tests := []struct {
		in      string
		want    string // formatPath of the result
		wantErr bool
	}{
		{in: "body.updatedAt", want: "body.updatedAt"},
		{in: "body.items[2].id", want: "body.items[2].id"},
		{in: "body.items[*].ts", want: "body.items[*].ts"},
		{in: "body.*.t", want: "body.*.t"},
		{in: `body["a.b"]`, want: `body["a.b"]`},
		{in: `body["x]y"].z`, want: `body["x]y"].z`},
		{in: "[0]", want: "[0]"},
		{in: "", wantErr: true},
		{in: ".a", wantErr: true},
		{in: "a..b", wantErr: true},
		{in: "a[", wantErr: true},
		{in: "a[-1]", wantErr: true},
		{in: "a[01]", wantErr: true},
		{in: "a[x]", wantErr: true},
		{in: `a["x]`, wantErr: true},
		{in: "a.", wantErr: true},
	}
	for _, tt := range tests {
		segs, err := parsePath(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parsePath(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil {
			if got := formatPath(segs); got != tt.want {
				t.Errorf("formatPath(parsePath(%q)) = %q, want %q", tt.in, got, tt.want)
			}
		}
	}
}

func TestDecodeFrame(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		wantID string
	}{
		{"envelope", `{"body":{"a":1},"requestId":"r1","name":"n"}`, "r1"},
		{"leading space", " \n{\"requestId\":\"r2\"}", "r2"},
		{"no requestId", `{"body":1,"name":"n"}`, ""},
		{"empty requestId", `{"requestId":""}`, ""},
		{"numeric requestId", `{"requestId":5}`, ""},
		{"array", `[{"requestId":"r"}]`, ""},
		{"relay text", `abc: {"requestId":"r"}`, ""},
		{"binary", "\x00\x01\x02", ""},
		{"trailing data", `{"requestId":"r"} {}`, ""},
		{"truncated", `{"requestId":"r"`, ""},
		{"empty", ``, ""},
	}
	for _, tt := range tests {
		_, id, err := decodeFrame([]byte(tt.in))
		if tt.wantID == "" {
			if err == nil {
				t.Errorf("%s: decodeFrame(%q) = %q, nil; want an error", tt.name, tt.in, id)
			}
			continue
		}
		if err != nil || id != tt.wantID {
			t.Errorf("%s: decodeFrame(%q) = %q, %v; want %q", tt.name, tt.in, id, err, tt.wantID)
		}
	}
	big := make([]byte, maxFrameBytes+1)
	if _, _, err := decodeFrame(big); err == nil {
		t.Error("oversized frame accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Channels: map[string]ChannelConfig{"video": {IgnorePaths: []string{"body.updatedAt"}, RedactPaths: []string{"body.token"}}}}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
	bad := Config{Timeout: -1, MaxRooms: -2, Channels: map[string]ChannelConfig{
		"video": {IgnorePaths: []string{"body..x"}, RedactPaths: []string{"a["}, Timeout: -1},
	}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("Validate(bad) = nil")
	}
	for _, want := range []string{"timeout", "maxRooms", "channels.video.ignorePaths[0]", "channels.video.redactPaths[0]", "channels.video.timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "shadow") {
		t.Errorf("Validate error %q carries a package prefix; the caller names the section", err)
	}
	cerr := bad.Channels["video"].Validate()
	for _, want := range []string{"ignorePaths[0]: path \"body..x\"", "redactPaths[0]: path \"a[\"", "timeout: -1ns is negative"} {
		if cerr == nil || !strings.Contains(cerr.Error(), want) {
			t.Errorf("ChannelConfig.Validate() = %v, want it to contain %q", cerr, want)
		}
	}
	if cerr != nil && strings.HasPrefix(cerr.Error(), "channels") {
		t.Errorf("ChannelConfig.Validate() = %q, want fields without a channel prefix", cerr)
	}
}

func TestConfigWithDefaults(t *testing.T) {
	got := Config{MaxPending: 7, Timeout: -1}.WithDefaults()
	want := Config{Timeout: DefaultTimeout, IdleTTL: DefaultIdleTTL, MaxRooms: DefaultMaxRooms, MaxPending: 7,
		Window: DefaultWindow, QueueSize: DefaultQueueSize}
	if got.Timeout != want.Timeout || got.IdleTTL != want.IdleTTL || got.MaxRooms != want.MaxRooms ||
		got.MaxPending != want.MaxPending || got.Window != want.Window || got.QueueSize != want.QueueSize {
		t.Errorf("WithDefaults() = %+v, want %+v", got, want)
	}
}

func TestHistQuantiles(t *testing.T) {
	var h logHist
	for i := 1; i <= 100; i++ {
		h.add(float64(i) / 1000) // 1..100 ms
	}
	if p50 := h.quantile(0.5); p50 < 0.050 || p50 > 0.050*1.1 {
		t.Errorf("p50 = %v, want 50ms within 10%%", p50)
	}
	if p99 := h.quantile(0.99); p99 < 0.099 || p99 > 0.099*1.1 {
		t.Errorf("p99 = %v, want 99ms within 10%%", p99)
	}
	var s signedHist
	for _, v := range []float64{-0.2, -0.1, 0, 0.1, 0.3} {
		s.add(v)
	}
	if p50 := s.quantile(0.5); p50 != 0 {
		t.Errorf("signed p50 = %v, want 0", p50)
	}
	if p1 := s.quantile(0.01); p1 > -0.2 || p1 < -0.2*1.1 {
		t.Errorf("signed p1 = %v, want about -200ms", p1)
	}
	if p99 := s.quantile(0.99); p99 < 0.3 || p99 > 0.3*1.1 {
		t.Errorf("signed p99 = %v, want about 300ms", p99)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"body":{"a":1},"requestId":"r1","name":"n"}`, `{"requestId":5}`, `[1]`, `x: y`, "\x00", `{"requestId":"r"`,
		`{"body":12345678901234567890,"requestId":"r"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tree, id, err := decodeFrame(b)
		if err != nil {
			return
		}
		if id == "" || tree == nil || tree["requestId"] != id {
			t.Fatalf("decodeFrame(%q) = %v, %q: inconsistent", b, tree, id)
		}
		if !json.Valid(b) {
			t.Fatalf("decodeFrame accepted invalid JSON %q", b)
		}
		// A frame always equals itself, re-encoded or not.
		again, _, err := decodeFrame(b)
		if err != nil {
			t.Fatalf("second decode: %v", err)
		}
		if cls, diffs := diffTrees(tree, again, nil); cls != classEqual {
			t.Fatalf("frame differs from itself: %+v", diffs)
		}
	})
}

func FuzzDiff(f *testing.F) {
	f.Add([]byte(`{"a":1.0,"b":[1,2,{"c":"é"}]}`), []byte(`{"b":[1,2,{"c":"\u00e9"}],"a":1}`), "b[*].c")
	f.Add([]byte(`{"n":12345678901234567890}`), []byte(`{"n":12345678901234567000}`), "n")
	f.Add([]byte(`[1,2,3]`), []byte(`[1,2]`), "[0]")
	f.Add([]byte(`"s"`), []byte(`null`), "*")
	f.Fuzz(func(t *testing.T, a, b []byte, path string) {
		wa, errA := decodeJSON(a)
		wb, errB := decodeJSON(b)
		if errA != nil || errB != nil {
			return
		}
		var pats [][]segment
		if segs, err := parsePath(path); err == nil {
			pats = append(pats, segs)
			if got, err := parsePath(formatPath(segs)); err != nil || formatPath(got) != formatPath(segs) {
				t.Fatalf("path %q does not round-trip: %q, %v", path, formatPath(segs), err)
			}
		}
		wa = applyIgnore(wa, pats)
		wb = applyIgnore(wb, pats)
		cls, diffs := diffTrees(wa, wb, pats)
		if cls == classEqual && len(diffs) != 0 {
			t.Fatalf("equal with diffs %+v", diffs)
		}
		if cls != classEqual && len(diffs) == 0 {
			t.Fatalf("class %d without diffs", cls)
		}
		back, _ := diffTrees(wb, wa, pats)
		if back != cls {
			t.Fatalf("diff not symmetric: %d vs %d", cls, back)
		}
		if self, d := diffTrees(wa, wa, nil); self != classEqual {
			t.Fatalf("value differs from itself: %+v", d)
		}
		// Re-encoding keeps number text, so the value equals its re-encoding.
		enc, err := json.Marshal(wa)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		re, err := decodeJSON(enc)
		if err != nil {
			t.Fatalf("decode re-encoding %s: %v", enc, err)
		}
		if c, d := diffTrees(wa, re, nil); c != classEqual {
			t.Fatalf("value differs from its re-encoding: %+v", d)
		}
	})
}
