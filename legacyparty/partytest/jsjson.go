package partytest

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting Reencode accepts (as Go's encoding/json).
const MaxDepth = 10000

// SyntaxError is a JSON parse failure at byte offset Offset.
type SyntaxError struct {
	Offset int
	Msg    string
}

// Error reads like V8's JSON.parse error, as PartyKit answers it.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("SyntaxError: %s in JSON at position %d", e.Msg, e.Offset)
}

// Reencode returns what JavaScript's JSON.stringify(JSON.parse(text))
// produces for the UTF-8 text src, as a PartyKit party server that
// re-broadcasts a POSTed message does:
//   - object keys keep their first-seen order, except that array-index keys
//     ("0".."4294967294") come first in ascending numeric order; a duplicate
//     key keeps its first position and its last value;
//   - numbers become float64 and are printed as Number.prototype.toString
//     does (1.0 -> 1, 12345678901234567890 -> 12345678901234567000,
//     1e21 -> 1e+21, 1e-7 -> 1e-7, -0 -> 0); out-of-range numbers
//     (Infinity) become null;
//   - strings are unescaped and re-escaped minimally: only '"', '\\' and
//     control characters are escaped (\b \t \n \f \r or \u00xx), lone
//     surrogates as \udxxx; no HTML escaping, non-ASCII raw;
//   - insignificant whitespace is removed; a leading UTF-8 BOM is dropped
//     and invalid UTF-8 becomes U+FFFD, as the Fetch API's text() decodes.
//
// Invalid JSON yields a *SyntaxError. Reencode is pure and safe for
// concurrent use.
func Reencode(src []byte) ([]byte, error) {
	src = bytes.TrimPrefix(src, []byte("\xef\xbb\xbf"))
	p := &jsParser{src: src}
	p.skipWS()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipWS()
	if p.pos != len(p.src) {
		return nil, p.errorf("Unexpected non-whitespace character after JSON")
	}
	var out bytes.Buffer
	out.Grow(len(src))
	v.write(&out)
	return out.Bytes(), nil
}

type jsKind uint8

const (
	jsScalar jsKind = iota // raw holds the output text
	jsArray
	jsObject
)

type jsValue struct {
	kind jsKind
	raw  string
	arr  []*jsValue
	keys []string // encoded keys (with quotes), first-seen order
	vals map[string]*jsValue
}

func (v *jsValue) write(out *bytes.Buffer) {
	switch v.kind {
	case jsScalar:
		out.WriteString(v.raw)
	case jsArray:
		out.WriteByte('[')
		for i, e := range v.arr {
			if i > 0 {
				out.WriteByte(',')
			}
			e.write(out)
		}
		out.WriteByte(']')
	case jsObject:
		keys := orderKeys(v.keys)
		out.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				out.WriteByte(',')
			}
			out.WriteString(k)
			out.WriteByte(':')
			v.vals[k].write(out)
		}
		out.WriteByte('}')
	}
}

// orderKeys applies ECMAScript's OrdinaryOwnPropertyKeys order: array
// indices ascending, then the other string keys in creation order.
func orderKeys(keys []string) []string {
	var idx []string
	var rest []string
	for _, k := range keys {
		if _, ok := arrayIndex(k); ok {
			idx = append(idx, k)
		} else {
			rest = append(rest, k)
		}
	}
	if len(idx) == 0 {
		return keys
	}
	sort.Slice(idx, func(i, j int) bool {
		a, _ := arrayIndex(idx[i])
		b, _ := arrayIndex(idx[j])
		return a < b
	})
	return append(idx, rest...)
}

// arrayIndex reports whether the encoded key "\"...\"" is a canonical
// array index (0 <= n < 2^32-1 written without leading zeros).
func arrayIndex(encoded string) (uint64, bool) {
	s := encoded[1 : len(encoded)-1]
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + uint64(s[i]-'0')
	}
	return n, n < math.MaxUint32
}

type jsParser struct {
	src []byte
	pos int
}

func (p *jsParser) errorf(format string, args ...any) error {
	return &SyntaxError{Offset: p.pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *jsParser) unexpected() error {
	if p.pos >= len(p.src) {
		return p.errorf("Unexpected end of JSON input")
	}
	r, _ := utf8.DecodeRune(p.src[p.pos:])
	return p.errorf("Unexpected token '%c'", r)
}

func (p *jsParser) skipWS() {
	for p.pos < len(p.src) {
		switch p.src[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jsParser) value(depth int) (*jsValue, error) {
	if depth > MaxDepth {
		return nil, p.errorf("Maximum nesting depth exceeded")
	}
	if p.pos >= len(p.src) {
		return nil, p.unexpected()
	}
	switch c := p.src[p.pos]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		return &jsValue{raw: s}, nil
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	}
	return nil, p.unexpected()
}

func (p *jsParser) literal(word string) (*jsValue, error) {
	if !bytes.HasPrefix(p.src[p.pos:], []byte(word)) {
		for i := 0; i < len(word); i++ {
			if p.pos >= len(p.src) || p.src[p.pos] != word[i] {
				return nil, p.unexpected()
			}
			p.pos++
		}
	}
	p.pos += len(word)
	return &jsValue{raw: word}, nil
}

func (p *jsParser) object(depth int) (*jsValue, error) {
	p.pos++ // '{'
	v := &jsValue{kind: jsObject, vals: map[string]*jsValue{}}
	p.skipWS()
	if p.pos < len(p.src) && p.src[p.pos] == '}' {
		p.pos++
		return v, nil
	}
	for {
		p.skipWS()
		if p.pos >= len(p.src) || p.src[p.pos] != '"' {
			return nil, p.unexpected()
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		p.skipWS()
		if p.pos >= len(p.src) || p.src[p.pos] != ':' {
			return nil, p.unexpected()
		}
		p.pos++
		p.skipWS()
		e, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		if _, dup := v.vals[k]; !dup {
			v.keys = append(v.keys, k)
		}
		v.vals[k] = e
		p.skipWS()
		if p.pos >= len(p.src) {
			return nil, p.unexpected()
		}
		switch p.src[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return v, nil
		default:
			return nil, p.unexpected()
		}
	}
}

func (p *jsParser) array(depth int) (*jsValue, error) {
	p.pos++ // '['
	v := &jsValue{kind: jsArray}
	p.skipWS()
	if p.pos < len(p.src) && p.src[p.pos] == ']' {
		p.pos++
		return v, nil
	}
	for {
		p.skipWS()
		e, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		v.arr = append(v.arr, e)
		p.skipWS()
		if p.pos >= len(p.src) {
			return nil, p.unexpected()
		}
		switch p.src[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return v, nil
		default:
			return nil, p.unexpected()
		}
	}
}

// str parses a JSON string at p.pos and returns its JSON.stringify form.
func (p *jsParser) str() (string, error) {
	p.pos++ // opening quote
	var units []uint16
	for {
		if p.pos >= len(p.src) {
			return "", p.errorf("Unterminated string")
		}
		c := p.src[p.pos]
		switch {
		case c == '"':
			p.pos++
			return quoteUnits(units), nil
		case c < 0x20:
			return "", p.errorf("Bad control character in string literal")
		case c == '\\':
			if p.pos+1 >= len(p.src) {
				p.pos++
				return "", p.errorf("Unterminated string")
			}
			e := p.src[p.pos+1]
			var u uint16
			switch e {
			case '"', '\\', '/':
				u = uint16(e)
			case 'b':
				u = '\b'
			case 'f':
				u = '\f'
			case 'n':
				u = '\n'
			case 'r':
				u = '\r'
			case 't':
				u = '\t'
			case 'u':
				if p.pos+6 > len(p.src) {
					p.pos++
					return "", p.errorf("Bad Unicode escape")
				}
				n, err := strconv.ParseUint(string(p.src[p.pos+2:p.pos+6]), 16, 16)
				if err != nil || strings.ContainsAny(string(p.src[p.pos+2:p.pos+6]), "+-_") {
					p.pos++
					return "", p.errorf("Bad Unicode escape")
				}
				u = uint16(n)
				p.pos += 4
			default:
				p.pos++
				return "", p.errorf("Bad escaped character")
			}
			units = append(units, u)
			p.pos += 2
		case c < utf8.RuneSelf:
			units = append(units, uint16(c))
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.src[p.pos:])
			units = utf16.AppendRune(units, r) // RuneError for invalid UTF-8
			p.pos += size
		}
	}
}

const hexDigits = "0123456789abcdef"

// quoteUnits renders UTF-16 code units as JSON.stringify (ES2019,
// well-formed) does.
func quoteUnits(units []uint16) string {
	var b strings.Builder
	b.Grow(len(units) + 2)
	b.WriteByte('"')
	for i := 0; i < len(units); i++ {
		u := units[i]
		switch {
		case u == '"':
			b.WriteString(`\"`)
		case u == '\\':
			b.WriteString(`\\`)
		case u == '\b':
			b.WriteString(`\b`)
		case u == '\t':
			b.WriteString(`\t`)
		case u == '\n':
			b.WriteString(`\n`)
		case u == '\f':
			b.WriteString(`\f`)
		case u == '\r':
			b.WriteString(`\r`)
		case u < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hexDigits[u>>4])
			b.WriteByte(hexDigits[u&0xf])
		case u >= 0xd800 && u < 0xdc00 && i+1 < len(units) && units[i+1] >= 0xdc00 && units[i+1] < 0xe000:
			b.WriteRune(utf16.DecodeRune(rune(u), rune(units[i+1])))
			i++
		case u >= 0xd800 && u < 0xe000:
			b.WriteString(`\u`)
			for shift := 12; shift >= 0; shift -= 4 {
				b.WriteByte(hexDigits[(u>>shift)&0xf])
			}
		default:
			b.WriteRune(rune(u))
		}
	}
	b.WriteByte('"')
	return b.String()
}

func (p *jsParser) number() (*jsValue, error) {
	start := p.pos
	i := p.pos
	digits := func() int {
		n := 0
		for i < len(p.src) && p.src[i] >= '0' && p.src[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if p.src[i] == '-' {
		i++
	}
	if i < len(p.src) && p.src[i] == '0' {
		i++
	} else if digits() == 0 {
		p.pos = i
		return nil, p.errorf("No number after minus sign")
	}
	if i < len(p.src) && p.src[i] == '.' {
		i++
		if digits() == 0 {
			p.pos = i
			return nil, p.errorf("Unterminated fractional number")
		}
	}
	if i < len(p.src) && (p.src[i] == 'e' || p.src[i] == 'E') {
		i++
		if i < len(p.src) && (p.src[i] == '+' || p.src[i] == '-') {
			i++
		}
		if digits() == 0 {
			p.pos = i
			return nil, p.errorf("Exponent part is missing a number")
		}
	}
	p.pos = i
	f, err := strconv.ParseFloat(string(p.src[start:i]), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		p.pos = start
		return nil, p.errorf("Bad number")
	}
	return &jsValue{raw: FormatNumber(f)}, nil
}

// FormatNumber renders f as JSON.stringify does: Number::toString for
// finite values (shortest round-trip digits; plain notation for exponents
// -7 < e < 21, otherwise d.ddde±x), "0" for -0, and "null" for NaN and
// ±Infinity.
func FormatNumber(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "null"
	}
	if f == 0 {
		return "0"
	}
	sign := ""
	if f < 0 {
		sign = "-"
		f = -f
	}
	// Shortest digits and exponent: d.ddde±XX.
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mant, expStr, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	exp, _ := strconv.Atoi(expStr)
	k := len(digits)
	n := exp + 1 // value = 0.digits × 10^n
	var out string
	switch {
	case k <= n && n <= 21:
		out = digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		out = digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		out = "0." + strings.Repeat("0", -n) + digits
	default:
		es := "+"
		if n-1 < 0 {
			es = "-"
		}
		x := n - 1
		if x < 0 {
			x = -x
		}
		if k == 1 {
			out = digits + "e" + es + strconv.Itoa(x)
		} else {
			out = digits[:1] + "." + digits[1:] + "e" + es + strconv.Itoa(x)
		}
	}
	return sign + out
}
