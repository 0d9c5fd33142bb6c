package shadow

import (
	"encoding/json"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/switchyard/switchyard/internal/jsonscan"
)

// frameRequestID returns the requestId of the envelope frame b without
// decoding it, for the fast path of handle (a copy byte for byte the
// envelope sent). ok is true only when b is at most maxFrameBytes and is,
// around JSON whitespace, one object whose member keys hold no escape and no
// control byte, exactly one of them "requestId", whose value is a non-empty
// string free of escapes and control bytes and valid UTF-8: on valid JSON,
// the id decodeFrame returns. The other values are skipped, not validated,
// so the id is only a lookup key, trusted once b is found byte-identical to
// the envelope of the expectation filed under it. It allocates only the id.
func frameRequestID(b []byte) (id string, ok bool) {
	if len(b) > maxFrameBytes {
		return "", false
	}
	i := jsonscan.SkipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return "", false
	}
	i = jsonscan.SkipWS(b, i+1)
	idStart, idEnd := -1, -1
	for {
		ks, ke, next, ok := jsonscan.PlainString(b, i)
		if !ok {
			return "", false
		}
		i = jsonscan.SkipWS(b, next)
		if i >= len(b) || b[i] != ':' {
			return "", false
		}
		i = jsonscan.SkipWS(b, i+1)
		if string(b[ks:ke]) == "requestId" { // compared in place, no allocation
			vs, ve, next, ok := jsonscan.PlainString(b, i)
			if !ok || idStart >= 0 || vs == ve || !utf8.Valid(b[vs:ve]) {
				return "", false // not a plain string, or a second requestId
			}
			idStart, idEnd, i = vs, ve, next
		} else {
			end, ok := jsonscan.ValueEnd(b, i)
			if !ok {
				return "", false
			}
			i = end
		}
		i = jsonscan.SkipWS(b, i)
		if i >= len(b) {
			return "", false
		}
		if b[i] == '}' {
			break
		}
		if b[i] != ',' {
			return "", false
		}
		i = jsonscan.SkipWS(b, i+1)
	}
	if idStart < 0 || jsonscan.SkipWS(b, i+1) != len(b) {
		return "", false
	}
	return string(b[idStart:idEnd]), true
}

// maxFastDepth bounds the nesting treeParser follows; deeper values are
// left to decodeJSON (whose own limit is 10,000).
const maxFastDepth = 512

// decodeTree decodes b exactly as decodeJSON does: the same value (maps,
// slices, json.Number, strings, bools, nils), the same error. Valid JSON
// whose strings are valid UTF-8 without a \u escape of a UTF-16 surrogate,
// nested at most maxFastDepth levels, is parsed by treeParser, without
// reflection or a json.Decoder and with the strings and numbers that need
// no unescaping sharing one copy of b; anything else, errors included, is
// decoded by decodeJSON.
func decodeTree(b []byte) (any, error) {
	if v, ok := parseTree(b); ok {
		return v, nil
	}
	return decodeJSON(b)
}

// parseTree is decodeTree's fast path: ok is false when b is not in the
// subset decodeTree describes, and v must then be discarded.
func parseTree(b []byte) (v any, ok bool) {
	p := treeParsers.Get().(*treeParser)
	p.s, p.i = string(b), 0
	p.skipWS()
	v, ok = p.value(0)
	if ok {
		p.skipWS()
		ok = p.i == len(p.s)
	}
	p.release()
	if !ok {
		return nil, false
	}
	return v, true
}

// treeParsers keeps treeParsers with their scratch between parses (the
// comparator's workers parse concurrently).
var treeParsers = sync.Pool{New: func() any { return new(treeParser) }}

// maxScratch bounds the scratch a pooled treeParser keeps, in elements.
const maxScratch = 1024

// release returns p to treeParsers, its scratch emptied of references
// (a parse that failed may leave some) and dropped when large.
func (p *treeParser) release() {
	p.s = ""
	clear(p.items) // beyond len: cleared by object and array as they end
	clear(p.members)
	p.items, p.members = p.items[:0], p.members[:0]
	if cap(p.items) > maxScratch {
		p.items = nil
	}
	if cap(p.members) > maxScratch {
		p.members = nil
	}
	if cap(p.buf) > 16*maxScratch {
		p.buf = nil
	}
	treeParsers.Put(p)
}

// treeParser parses s from i. Its methods report false on anything
// outside parseTree's subset, leaving i anywhere.
type treeParser struct {
	s string
	i int
	// items and members hold the elements of the arrays and the members
	// of the objects being parsed (nested ones above their parent's), so
	// that each array and map is allocated once at its final size.
	items   []any
	members []member
	buf     []byte // scratch for unescaping
}

// member is one object member being parsed.
type member struct {
	key string
	val any
}

// skipWS advances i past JSON whitespace.
func (p *treeParser) skipWS() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// value parses the value at i, inside depth levels of nesting.
func (p *treeParser) value(depth int) (any, bool) {
	if p.i >= len(p.s) {
		return nil, false
	}
	switch p.s[p.i] {
	case '{':
		return p.object(depth + 1)
	case '[':
		return p.array(depth + 1)
	case '"':
		s, ok := p.str()
		return s, ok
	case 't':
		return true, p.literal("true")
	case 'f':
		return false, p.literal("false")
	case 'n':
		return nil, p.literal("null")
	}
	return p.number()
}

// literal consumes lit at i; what follows is checked by the caller (as
// for every value, a delimiter or the end must come next).
func (p *treeParser) literal(lit string) bool {
	if !strings.HasPrefix(p.s[p.i:], lit) {
		return false
	}
	p.i += len(lit)
	return true
}

// number parses a JSON number at i into the json.Number of its text.
func (p *treeParser) number() (any, bool) {
	s, i := p.s, p.i
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = digits(s, i+1)
	default:
		return nil, false
	}
	if i < len(s) && s[i] == '.' {
		j := digits(s, i+1)
		if j == i+1 {
			return nil, false
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := digits(s, i)
		if j == i {
			return nil, false
		}
		i = j
	}
	n := json.Number(s[p.i:i])
	p.i = i
	return n, true
}

// digits returns the index of the first byte at or after i that is not an
// ASCII digit.
func digits(s string, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// str parses the string at i (a '"'). Without escapes its value is a
// substring of s; a control byte, invalid UTF-8, an unknown escape or a
// \u escape of a surrogate (which decodeJSON may pair or replace) is
// refused.
func (p *treeParser) str() (string, bool) {
	s := p.s
	start := p.i + 1
	for i := start; i < len(s); {
		switch c := s[i]; {
		case c == '"':
			p.i = i + 1
			return s[start:i], true
		case c == '\\':
			return p.unescape(start, i)
		case c < 0x20:
			return "", false
		case c < utf8.RuneSelf:
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				return "", false
			}
			i += n
		}
	}
	return "", false
}

// unescape continues str from the escape at i of the string whose value
// starts at start, building the value in p.buf.
func (p *treeParser) unescape(start, i int) (string, bool) {
	s := p.s
	b := append(p.buf[:0], s[start:i]...)
	for i < len(s) {
		switch c := s[i]; {
		case c == '"':
			p.i, p.buf = i+1, b
			return string(b), true
		case c == '\\':
			if i+1 >= len(s) {
				return "", false
			}
			switch e := s[i+1]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := hex4(s, i+2)
				if !ok || utf16.IsSurrogate(r) {
					return "", false
				}
				b = utf8.AppendRune(b, r)
				i += 4
			default:
				return "", false
			}
			i += 2
		case c < 0x20:
			return "", false
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				return "", false
			}
			b = append(b, s[i:i+n]...)
			i += n
		}
	}
	return "", false
}

// hex4 parses the four hex digits at s[i:i+4].
func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// object parses the object at i (a '{'), at nesting level depth, into a
// map allocated once its members are known; a later duplicate key wins,
// as in decodeJSON.
func (p *treeParser) object(depth int) (any, bool) {
	if depth > maxFastDepth {
		return nil, false
	}
	p.i++
	p.skipWS()
	mark := len(p.members)
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return map[string]any{}, true
	}
	for {
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return nil, false
		}
		k, ok := p.str()
		if !ok {
			return nil, false
		}
		p.skipWS()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return nil, false
		}
		p.i++
		p.skipWS()
		v, ok := p.value(depth)
		if !ok {
			return nil, false
		}
		p.members = append(p.members, member{k, v})
		p.skipWS()
		if p.i >= len(p.s) {
			return nil, false
		}
		switch p.s[p.i] {
		case ',':
			p.i++
			p.skipWS()
			continue
		case '}':
			p.i++
		default:
			return nil, false
		}
		break
	}
	ms := p.members[mark:]
	m := make(map[string]any, len(ms))
	for i := range ms {
		m[ms[i].key] = ms[i].val
		ms[i] = member{} // drop the references from the scratch
	}
	p.members = p.members[:mark]
	return m, true
}

// array parses the array at i (a '['), at nesting level depth, into a
// slice allocated once its elements are known (non-nil when empty, as in
// decodeJSON).
func (p *treeParser) array(depth int) (any, bool) {
	if depth > maxFastDepth {
		return nil, false
	}
	p.i++
	p.skipWS()
	mark := len(p.items)
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return []any{}, true
	}
	for {
		v, ok := p.value(depth)
		if !ok {
			return nil, false
		}
		p.items = append(p.items, v)
		p.skipWS()
		if p.i >= len(p.s) {
			return nil, false
		}
		switch p.s[p.i] {
		case ',':
			p.i++
			p.skipWS()
			continue
		case ']':
			p.i++
		default:
			return nil, false
		}
		break
	}
	a := make([]any, len(p.items)-mark)
	copy(a, p.items[mark:])
	clear(p.items[mark:])
	p.items = p.items[:mark]
	return a, true
}
