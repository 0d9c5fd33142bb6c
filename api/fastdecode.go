package api

import (
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/switchyard/switchyard/internal/jsonscan"
)

// decodeMessage decodes one message object (POST /v1/broadcast, or one
// element of POST /v1/broadcasts) exactly as decodeStrict does. The common
// shape — a flat object whose keys are exactly "room", "name", "body" and
// "requestId", each at most once, the three strings free of escapes and
// the body any valid JSON value but null — is decoded by decodeMessageFast
// without reflection or a json.Decoder; anything else (errors included)
// goes through decodeStrict, so errors and edge cases (null, escapes,
// keys in other cases, duplicates) are decodeStrict's.
func decodeMessage(b []byte, req *messageRequest, prefix string) error {
	if decodeMessageFast(b, req) {
		return nil
	}
	// decodeStrict takes an interface, which would move every caller's
	// req to the heap: only this path pays for that.
	slow := new(messageRequest)
	err := decodeStrict(b, slow, prefix)
	*req = *slow
	return err
}

// decodeMessageFast fills req from b and reports true when b has the
// common shape decodeMessage describes and is valid UTF-8; otherwise it
// reports false and req must be discarded.
func decodeMessageFast(b []byte, req *messageRequest) bool {
	if !utf8.Valid(b) {
		return false
	}
	i := jsonscan.SkipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = jsonscan.SkipWS(b, i+1)
	var spans [3][2]int // room, name, requestId: value spans in b
	var seen [4]bool
	if i < len(b) && b[i] == '}' {
		return jsonscan.SkipWS(b, i+1) == len(b)
	}
	for {
		ks, ke, next, ok := jsonscan.PlainString(b, i)
		if !ok {
			return false
		}
		i = jsonscan.SkipWS(b, next)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = jsonscan.SkipWS(b, i+1)
		slot := -1
		switch string(b[ks:ke]) { // no allocation: the compiler compares in place
		case "room":
			slot = 0
		case "name":
			slot = 1
		case "requestId":
			slot = 2
		case "body":
			slot = 3
		default:
			return false
		}
		if seen[slot] {
			return false
		}
		seen[slot] = true
		if slot == 3 {
			end, ok := valueEnd(b, i)
			if !ok || b[i] == 'n' {
				return false
			}
			// The body aliases b, which the callers never reuse (a
			// request body read for this message, or an element of a
			// decoded batch).
			req.Body = json.RawMessage(b[i:end:end])
			i = end
		} else {
			vs, ve, next, ok := jsonscan.PlainString(b, i)
			if !ok {
				return false
			}
			spans[slot] = [2]int{vs, ve}
			i = next
		}
		i = jsonscan.SkipWS(b, i)
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			if jsonscan.SkipWS(b, i+1) != len(b) {
				return false
			}
			break
		}
		if b[i] != ',' {
			return false
		}
		i = jsonscan.SkipWS(b, i+1)
	}
	if seen[0] || seen[1] || seen[2] {
		// One allocation for the three strings (they live as long as the
		// message does) and one for the three pointers.
		var sb strings.Builder
		sb.Grow(spans[0][1] - spans[0][0] + spans[1][1] - spans[1][0] + spans[2][1] - spans[2][0])
		for _, sp := range spans {
			sb.Write(b[sp[0]:sp[1]])
		}
		all := sb.String()
		p := new([3]string)
		at := 0
		for k, sp := range spans {
			p[k] = all[at : at+sp[1]-sp[0]]
			at += sp[1] - sp[0]
		}
		if seen[0] {
			req.Room = &p[0]
		}
		if seen[1] {
			req.Name = &p[1]
		}
		if seen[2] {
			req.RequestID = &p[2]
		}
	}
	return true
}

// valueEnd returns the index just after the JSON value starting at b[i]
// (jsonscan.ValueEnd), and whether that value is valid JSON (json.Valid,
// which does not allocate).
func valueEnd(b []byte, i int) (int, bool) {
	j, ok := jsonscan.ValueEnd(b, i)
	if !ok || !json.Valid(b[i:j]) {
		return 0, false
	}
	return j, true
}
