package shadow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sort"
	"strconv"
	"strings"
)

// maxFrameBytes bounds the frames the comparator decodes: the largest
// realtime body plus room for the envelope. Larger frames are foreign.
const maxFrameBytes = 1 << 20

// maxDiffs bounds the differences kept per comparison; the class of the
// comparison is still exact past it.
const maxDiffs = 32

// maxValueBytes bounds each value shown in a Difference.
const maxValueBytes = 256

// Difference is one JSON path at which a received copy differs from the
// value it is compared with.
type Difference struct {
	// Path is the concrete path from the envelope root, e.g.
	// "body.items[2].id".
	Path string `json:"path"`
	// Kind is "changed" (values differ), "type" (JSON types differ),
	// "missing" (absent from the copy), "extra" (absent from the
	// original) or "precision" (numbers equal as float64, not as decimals).
	Kind string `json:"kind"`
	// Want is the original value as JSON, redacted and truncated; empty
	// for "extra".
	Want string `json:"want,omitempty"`
	// Got is the received value as JSON, redacted and truncated; empty for
	// "missing".
	Got string `json:"got,omitempty"`
}

// class is the verdict of one comparison, ordered by severity.
type class uint8

const (
	classEqual  class = iota // equal after normalisation
	classLossy               // only numbers equal as float64 but not as decimals
	classDiffer              // anything else
)

// decodeJSON decodes one JSON value with numbers kept as json.Number,
// refusing trailing data.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	return v, nil
}

// errNotEnvelope reports a frame that is JSON but not a gateway envelope.
var errNotEnvelope = errors.New("not an envelope: want a JSON object with a non-empty string requestId")

// decodeFrame decodes a received frame into its tree and requestId. A frame
// that is not JSON, is over maxFrameBytes, or is not an object with a
// non-empty string requestId is refused.
func decodeFrame(b []byte) (map[string]any, string, error) {
	if len(b) > maxFrameBytes {
		return nil, "", fmt.Errorf("frame of %d bytes is over the %d byte limit", len(b), maxFrameBytes)
	}
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	if i == len(b) || b[i] != '{' {
		return nil, "", errNotEnvelope
	}
	v, err := decodeTree(b)
	if err != nil {
		return nil, "", fmt.Errorf("decode frame: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, "", errNotEnvelope
	}
	id, ok := obj["requestId"].(string)
	if !ok || id == "" {
		return nil, "", errNotEnvelope
	}
	return obj, id, nil
}

// compareNumbers compares two JSON number texts: equal as decimals
// (1.0 and 1), equal only as float64 (12345678901234567890 and
// 12345678901234567000), or different.
func compareNumbers(a, b json.Number) class {
	if a == b {
		return classEqual
	}
	fa, errA := strconv.ParseFloat(string(a), 64)
	fb, errB := strconv.ParseFloat(string(b), 64)
	if errA == nil && errB == nil && fa != fb {
		return classDiffer
	}
	if eq, ok := equalDecimals(string(a), string(b)); ok { // no big.Rat needed
		switch {
		case eq:
			return classEqual
		case errA == nil && errB == nil:
			return classLossy
		}
		return classDiffer
	}
	ra, okA := new(big.Rat).SetString(string(a))
	rb, okB := new(big.Rat).SetString(string(b))
	if okA && okB && ra.Cmp(rb) == 0 {
		return classEqual
	}
	if errA == nil && errB == nil { // equal as float64, not as decimals
		return classLossy
	}
	// Out of float64 range (or not a number): only exact equality counts.
	return classDiffer
}

// equalDecimals reports whether a and b are the same decimal, as big.Rat
// would find, when both are JSON numbers without an exponent
// (-?(0|[1-9][0-9]*)(\.[0-9]+)?); ok is false for any other text.
func equalDecimals(a, b string) (eq, ok bool) {
	negA, intA, fracA, okA := plainDecimal(a)
	negB, intB, fracB, okB := plainDecimal(b)
	if !okA || !okB {
		return false, false
	}
	zero := intA == "" && fracA == ""
	return intA == intB && fracA == fracB && (negA == negB || zero), true
}

// plainDecimal splits s, a JSON number without an exponent, into its sign
// and its integer and fraction digits without leading (integer) or
// trailing (fraction) zeros, so that equal values give equal parts but for
// the sign of zero; ok is false for any other text.
func plainDecimal(s string) (neg bool, intPart, frac string, ok bool) {
	if s != "" && s[0] == '-' {
		neg, s = true, s[1:]
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 || (s[0] == '0' && i > 1) {
		return false, "", "", false
	}
	intPart = strings.TrimLeft(s[:i], "0")
	if i == len(s) {
		return neg, intPart, "", true
	}
	if s[i] != '.' || i+1 == len(s) {
		return false, "", "", false
	}
	for j := i + 1; j < len(s); j++ {
		if s[j] < '0' || s[j] > '9' {
			return false, "", "", false
		}
	}
	return neg, intPart, strings.TrimRight(s[i+1:], "0"), true
}

// differ walks two decoded trees and collects differences.
type differ struct {
	path    []segment
	diffs   []Difference
	cls     class
	redact  [][]segment
	maxKeep int
}

// diffTrees compares want (the original) with got (a received copy), both
// decoded with decodeTree (or decodeJSON) and normalised by applyIgnore.
// It returns the verdict and up to maxDiffs differences sorted by path,
// values redacted per redact.
func diffTrees(want, got any, redact [][]segment) (class, []Difference) {
	// Room for the paths of most envelopes (body.a.b[2].c) at once.
	d := differ{redact: redact, maxKeep: maxDiffs, path: make([]segment, 0, 8)}
	d.walk(want, got)
	sort.Slice(d.diffs, func(i, j int) bool { return d.diffs[i].Path < d.diffs[j].Path })
	return d.cls, d.diffs
}

func (d *differ) add(kind string, want, got any, hasWant, hasGot bool) {
	c := classDiffer
	if kind == "precision" {
		c = classLossy
	}
	if c > d.cls {
		d.cls = c
	}
	if len(d.diffs) >= d.maxKeep {
		return
	}
	df := Difference{Path: formatPath(d.path), Kind: kind}
	if hasWant {
		df.Want = render(want, d.path, d.redact, maxValueBytes)
	}
	if hasGot {
		df.Got = render(got, d.path, d.redact, maxValueBytes)
	}
	d.diffs = append(d.diffs, df)
}

func (d *differ) walk(want, got any) {
	if _, ok := want.(ignored); ok {
		return
	}
	if _, ok := got.(ignored); ok {
		return
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			d.add("type", want, got, true, true)
			return
		}
		for k, wv := range w {
			d.path = append(d.path, segment{key: k})
			if gv, ok := g[k]; ok {
				d.walk(wv, gv)
			} else {
				d.add("missing", wv, nil, true, false)
			}
			d.path = d.path[:len(d.path)-1]
		}
		for k, gv := range g {
			if _, ok := w[k]; !ok {
				d.path = append(d.path, segment{key: k})
				d.add("extra", nil, gv, false, true)
				d.path = d.path[:len(d.path)-1]
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			d.add("type", want, got, true, true)
			return
		}
		for i := 0; i < len(w) || i < len(g); i++ {
			d.path = append(d.path, segment{isIdx: true, index: i})
			switch {
			case i >= len(g):
				d.add("missing", w[i], nil, true, false)
			case i >= len(w):
				d.add("extra", nil, g[i], false, true)
			default:
				d.walk(w[i], g[i])
			}
			d.path = d.path[:len(d.path)-1]
		}
	case json.Number:
		g, ok := got.(json.Number)
		if !ok {
			d.add("type", want, got, true, true)
			return
		}
		switch compareNumbers(w, g) {
		case classLossy:
			d.add("precision", want, got, true, true)
		case classDiffer:
			d.add("changed", want, got, true, true)
		}
	case string:
		g, ok := got.(string)
		if !ok {
			d.add("type", want, got, true, true)
		} else if g != w {
			d.add("changed", want, got, true, true)
		}
	case bool:
		g, ok := got.(bool)
		if !ok {
			d.add("type", want, got, true, true)
		} else if g != w {
			d.add("changed", want, got, true, true)
		}
	case nil:
		if got != nil {
			d.add("type", want, got, true, true)
		}
	default: // float64 and others never come out of decodeJSON
		d.add("type", want, got, true, true)
	}
}
