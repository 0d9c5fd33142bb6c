// Package jsonscan holds the few byte-level JSON scanners the gateway's
// hand-written decoders share (api's request decoder, the shadow
// comparator's frame decoder). They find boundaries; they do not
// validate what they skip, and callers fall back to encoding/json
// whenever a scanner says no.
package jsonscan

// SkipWS returns the index of the first byte at or after i that is not
// JSON whitespace (space, tab, LF, CR), or len(b).
func SkipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// PlainString finds the JSON string starting at b[i] when it holds no
// escape and no control byte (its bytes are then its value, once the
// caller knows them to be valid UTF-8): it returns the value's span
// b[start:end] and the index after the closing quote. ok is false when no
// string starts at b[i], it has an escape or a control byte, or b ends
// first.
func PlainString(b []byte, i int) (start, end, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, 0, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return i + 1, j, j + 1, true
		case c == '\\' || c < 0x20:
			return 0, 0, 0, false
		}
	}
	return 0, 0, 0, false
}

// StringEnd returns the index after the closing quote of the JSON string
// whose opening quote is b[i] (escapes skipped, not checked); ok is false
// when b ends first.
func StringEnd(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

// ValueEnd returns the index just after the JSON value that starts at
// b[i], without validating it: strings are skipped with their escapes,
// objects and arrays by counting brackets outside strings, scalars up to
// the next delimiter. ok is false when b ends first or no value starts at
// b[i].
func ValueEnd(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return StringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); {
			switch b[j] {
			case '"':
				end, ok := StringEnd(b, j)
				if !ok {
					return 0, false
				}
				j = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
			j++
		}
		return 0, false
	case ',', '}', ']', ':':
		return 0, false
	}
	j := i // number, true, false, null (or junk, left to the caller)
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return j, true
		}
		j++
	}
	return j, true
}
