package shadow

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A path names a node of a decoded envelope, from the envelope root:
// "body.updatedAt", "body.items[2].id", "body.items[*].ts", `body["a.b"]`,
// "name". A key segment "*" matches any key and "[*]" any array index; both
// are meant for ignore and redact paths. Paths reported in differences never
// hold wildcards.

// segment is one step of a path: an object key, an array index, or a
// wildcard of either kind.
type segment struct {
	key   string
	index int  // valid when isIndex
	isIdx bool // an array index (or [*])
	any   bool // wildcard: "*" for keys, "[*]" for indexes
}

// parsePath parses the path syntax described above. It refuses empty paths,
// empty keys, negative or malformed indexes and unterminated brackets.
func parsePath(s string) ([]segment, error) {
	if s == "" {
		return nil, fmt.Errorf("empty path")
	}
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("path %q: not valid UTF-8", s)
	}
	var segs []segment
	i := 0
	first := true
	for i < len(s) {
		switch {
		case s[i] == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("path %q: unterminated '[' at byte %d", s, i)
			}
			inner := s[i+1 : i+end]
			switch {
			case inner == "*":
				segs = append(segs, segment{isIdx: true, any: true})
			case strings.HasPrefix(inner, `"`):
				// A quoted key may hold ']' itself: decode from i+1 to the first
				// '"]' that ends a valid JSON string.
				k, n, err := quotedKey(s[i+1:])
				if err != nil {
					return nil, fmt.Errorf("path %q: key at byte %d: %w", s, i, err)
				}
				segs = append(segs, segment{key: k})
				end = n + 1 // s[i+1+n] is ']'
			default:
				n, err := strconv.Atoi(inner)
				if err != nil || n < 0 || inner != strconv.Itoa(n) {
					return nil, fmt.Errorf("path %q: index %q at byte %d is not a non-negative integer or *", s, inner, i)
				}
				segs = append(segs, segment{isIdx: true, index: n})
			}
			i += end + 1
		case s[i] == '.':
			if first {
				return nil, fmt.Errorf("path %q: starts with '.'", s)
			}
			i++
			fallthrough
		default:
			j := i
			for j < len(s) && s[j] != '.' && s[j] != '[' {
				j++
			}
			if j == i {
				return nil, fmt.Errorf("path %q: empty key at byte %d", s, i)
			}
			k := s[i:j]
			if k == "*" {
				segs = append(segs, segment{any: true})
			} else {
				segs = append(segs, segment{key: k})
			}
			i = j
		}
		first = false
	}
	return segs, nil
}

// quotedKey decodes a JSON string at the start of s that is followed by ']'
// and returns the key and the offset of that ']'.
func quotedKey(s string) (string, int, error) {
	for j := 1; j < len(s); j++ {
		if s[j] == '"' && j+1 < len(s) && s[j+1] == ']' {
			var k string
			if err := json.Unmarshal([]byte(s[:j+1]), &k); err == nil {
				return k, j + 1, nil
			}
		}
	}
	return "", 0, fmt.Errorf("unterminated quoted key")
}

// formatPath renders concrete segments: identifiers after dots, other keys
// quoted in brackets, indexes in brackets.
func formatPath(segs []segment) string {
	var b strings.Builder
	for i, s := range segs {
		switch {
		case s.isIdx && s.any:
			b.WriteString("[*]")
		case s.isIdx:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.index))
			b.WriteByte(']')
		case s.any:
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteByte('*')
		case isIdent(s.key):
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s.key)
		default:
			q, _ := json.Marshal(s.key) // a string always marshals
			b.WriteByte('[')
			b.Write(q)
			b.WriteByte(']')
		}
	}
	return b.String()
}

func isIdent(k string) bool {
	if k == "" || k == "*" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '_' || c == '$' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'):
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// matchPrefix reports how pattern relates to the concrete path p: full when
// the pattern matches p exactly, prefix when p is a proper prefix of some
// path the pattern matches (so a descendant of p may match).
func matchPrefix(pattern, p []segment) (full, prefix bool) {
	if len(p) > len(pattern) {
		return false, false
	}
	for i := range p {
		if !segMatch(pattern[i], p[i]) {
			return false, false
		}
	}
	return len(p) == len(pattern), len(p) < len(pattern)
}

func segMatch(pat, s segment) bool {
	if pat.isIdx != s.isIdx {
		return false
	}
	if pat.any {
		return true
	}
	if pat.isIdx {
		return pat.index == s.index
	}
	return pat.key == s.key
}

// ignored marks an array element removed by an ignore path; it equals
// anything.
type ignored struct{}

// MarshalJSON shows an ignored element as "[ignored]".
func (ignored) MarshalJSON() ([]byte, error) { return []byte(`"[ignored]"`), nil }

// applyIgnore removes from tree every node an ignore pattern matches: object
// members are deleted, array elements replaced by ignored{} so the other
// indexes keep their positions. tree must be a freshly decoded value that
// the caller owns; the (possibly replaced) root is returned.
func applyIgnore(tree any, patterns [][]segment) any {
	for _, p := range patterns {
		tree = ignoreOne(tree, p)
	}
	return tree
}

func ignoreOne(v any, p []segment) any {
	if len(p) == 0 {
		return ignored{}
	}
	seg, rest := p[0], p[1:]
	switch n := v.(type) {
	case map[string]any:
		if seg.isIdx {
			return v
		}
		if seg.any {
			for k, c := range n {
				if len(rest) == 0 {
					delete(n, k)
				} else {
					n[k] = ignoreOne(c, rest)
				}
			}
			return v
		}
		c, ok := n[seg.key]
		if !ok {
			return v
		}
		if len(rest) == 0 {
			delete(n, seg.key)
		} else {
			n[seg.key] = ignoreOne(c, rest)
		}
	case []any:
		if !seg.isIdx {
			return v
		}
		if seg.any {
			for i := range n {
				n[i] = ignoreOne(n[i], rest)
			}
			return v
		}
		if seg.index < len(n) {
			n[seg.index] = ignoreOne(n[seg.index], rest)
		}
	}
	return v
}

// redacted is the value shown in place of a redacted node.
const redacted = "[redacted]"

// redactClone returns v with every node a pattern matches (relative to the
// concrete position at) replaced by "[redacted]". v is not modified; only
// the containers on the way to a redacted node are copied.
func redactClone(v any, at []segment, patterns [][]segment) any {
	if len(patterns) == 0 {
		return v
	}
	deeper := false
	for _, p := range patterns {
		full, prefix := matchPrefix(p, at)
		if full {
			return redacted
		}
		deeper = deeper || prefix
	}
	if !deeper {
		return v
	}
	switch n := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(n))
		for k, c := range n {
			out[k] = redactClone(c, append(at[:len(at):len(at)], segment{key: k}), patterns)
		}
		return out
	case []any:
		out := make([]any, len(n))
		for i, c := range n {
			out[i] = redactClone(c, append(at[:len(at):len(at)], segment{isIdx: true, index: i}), patterns)
		}
		return out
	}
	return v
}

// render marshals v for display, redacted per patterns and cut to max
// bytes.
func render(v any, at []segment, patterns [][]segment, maxBytes int) string {
	if _, ok := v.(ignored); ok {
		return ""
	}
	// For people (logs, the status page, which escapes HTML itself): no
	// \u003c for '<'.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(redactClone(v, at, patterns)); err != nil {
		return fmt.Sprintf("<unprintable: %v>", err)
	}
	return truncate(strings.TrimSuffix(b.String(), "\n"), maxBytes)
}

func truncate(s string, maxBytes int) string {
	if maxBytes <= 0 || len(s) <= maxBytes {
		return s
	}
	cut := maxBytes
	for cut > 0 && cut < len(s) && s[cut]&0xC0 == 0x80 { // keep UTF-8 whole
		cut--
	}
	return s[:cut] + "...(truncated)"
}
