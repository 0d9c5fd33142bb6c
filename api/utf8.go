package api

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/switchyard/switchyard/broadcast"
)

// checkUTF8 refuses a request body that is not valid UTF-8, naming the
// JSON path of the first string (value or field name) that is not, with
// prefix before it ("messages[2]." for a batch item). Go's JSON decoder
// would silently replace such bytes with U+FFFD, and the body is forwarded
// byte for byte: a browser's realtime socket must close on a text frame
// that is not UTF-8 (RFC 6455), so nothing that is not valid UTF-8 may
// pass. The error is an EINVALID *broadcast.Error; nil when b is valid.
func checkUTF8(b []byte, prefix string) error {
	if utf8.Valid(b) {
		return nil
	}
	at := len(validPrefix(b))
	path, key, found := invalidUTF8Path(b)
	path = joinPath(prefix, path)
	switch {
	case !found || (path == "" && !key):
		return broadcast.Errorf(broadcast.EINVALID, "request body: not valid UTF-8 at byte %d", at)
	case key && path == "":
		return broadcast.Errorf(broadcast.EINVALID, "a field name is not valid UTF-8 (byte %d)", at)
	case key:
		return broadcast.Errorf(broadcast.EINVALID, "%s: a field name is not valid UTF-8 (byte %d)", path, at)
	}
	return broadcast.Errorf(broadcast.EINVALID, "%s: not valid UTF-8 (byte %d)", path, at)
}

// validPrefix returns the longest valid UTF-8 prefix of b.
func validPrefix(b []byte) []byte {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return b[:i]
		}
		i += n
	}
	return b
}

// joinPath joins a "messages[2]." style prefix and a path inside it.
func joinPath(prefix, path string) string {
	switch {
	case prefix == "":
		return path
	case path == "":
		return prefix[:len(prefix)-1] // "messages[2]." names the item itself
	case path[0] == '[':
		return prefix[:len(prefix)-1] + path
	}
	return prefix + path
}

// invalidUTF8Path walks the JSON document b token by token and returns the
// path of the first string token whose raw bytes are not valid UTF-8
// ("body.items[2].title"; "" is the document itself), whether that string
// is a field name (then path is its object's), and false when b is not
// JSON that far or holds no such string.
func invalidUTF8Path(b []byte) (path string, key, found bool) {
	type level struct {
		object    bool
		expectKey bool
		field     string
		index     int
	}
	var stack []level
	render := func(upTo int) string {
		var sb bytes.Buffer
		for i := 0; i < upTo; i++ {
			l := stack[i]
			if l.object {
				if sb.Len() > 0 {
					sb.WriteByte('.')
				}
				sb.WriteString(l.field)
			} else {
				sb.WriteString("[" + strconv.Itoa(l.index) + "]")
			}
		}
		return sb.String()
	}
	// valueDone moves the innermost container past the value just read.
	valueDone := func() {
		if len(stack) == 0 {
			return
		}
		top := &stack[len(stack)-1]
		if top.object {
			top.expectKey = true
		} else {
			top.index++
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return "", false, false
		}
		raw := b[start:dec.InputOffset()]
		isKey := len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].expectKey
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				stack = append(stack, level{object: t == '{', expectKey: t == '{'})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
			continue
		case string:
			if !utf8.Valid(raw) {
				if isKey {
					return render(len(stack) - 1), true, true
				}
				return render(len(stack)), false, true
			}
			if isKey {
				top := &stack[len(stack)-1]
				top.field, top.expectKey = t, false
				continue
			}
		}
		valueDone()
	}
}
