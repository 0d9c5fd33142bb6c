package shadow

import "unicode/utf8"

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
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return "", false
	}
	i = skipWS(b, i+1)
	idStart, idEnd := -1, -1
	for {
		ks, ke, next, ok := plainString(b, i)
		if !ok {
			return "", false
		}
		i = skipWS(b, next)
		if i >= len(b) || b[i] != ':' {
			return "", false
		}
		i = skipWS(b, i+1)
		if string(b[ks:ke]) == "requestId" { // compared in place, no allocation
			vs, ve, next, ok := plainString(b, i)
			if !ok || idStart >= 0 || vs == ve || !utf8.Valid(b[vs:ve]) {
				return "", false // not a plain string, or a second requestId
			}
			idStart, idEnd, i = vs, ve, next
		} else {
			end, ok := skipValue(b, i)
			if !ok {
				return "", false
			}
			i = end
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return "", false
		}
		if b[i] == '}' {
			break
		}
		if b[i] != ',' {
			return "", false
		}
		i = skipWS(b, i+1)
	}
	if idStart < 0 || skipWS(b, i+1) != len(b) {
		return "", false
	}
	return string(b[idStart:idEnd]), true
}

// skipWS returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipWS(b []byte, i int) int {
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

// plainString finds the JSON string starting at b[i] when it holds no
// escape and no control byte (its bytes are then its value, once known to
// be valid UTF-8): it returns the value's span b[start:end] and the index
// after the closing quote.
func plainString(b []byte, i int) (start, end, next int, ok bool) {
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

// skipValue returns the index just after the JSON value that starts at
// b[i], without validating it: strings are skipped with their escapes,
// objects and arrays by counting brackets outside strings, scalars up to
// the next delimiter. ok is false when b ends first or no value starts at
// b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); {
			switch b[j] {
			case '"':
				end, ok := stringEnd(b, j)
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

// stringEnd returns the index after the closing quote of the JSON string
// starting at b[i] (escapes skipped, not checked).
func stringEnd(b []byte, i int) (int, bool) {
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
