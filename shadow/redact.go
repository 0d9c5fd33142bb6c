package shadow

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Redaction replaces the values at JSON paths of an envelope's body with
// "[redacted]" in raw JSON, keeping every other byte and the key order. The
// paths use the comparator's syntax from the envelope root (body.text,
// body.items[*].token, body.*.email, body["a.b"], or body for the whole
// body). The traffic recorder uses it; it is read-only after NewRedaction
// and safe for concurrent use.
type Redaction struct {
	patterns [][]segment
}

// NewRedaction parses paths; each must parse and start at body, the only
// part of a message that holds user data (so "name" is refused). The error
// names the first bad path by its index (redactPaths[i]: ...) without a
// package prefix. It is the one validator of a recorder redact-path list:
// the gateway config calls it too, so a config that loads never fails here.
func NewRedaction(paths []string) (*Redaction, error) {
	r := &Redaction{}
	for i, p := range paths {
		segs, err := parsePath(p)
		if err != nil {
			return nil, fmt.Errorf("redactPaths[%d]: %w", i, err)
		}
		if segs[0].isIdx || segs[0].any || segs[0].key != "body" {
			return nil, fmt.Errorf("redactPaths[%d]: path %q must start with body (only the body is redacted)", i, p)
		}
		r.patterns = append(r.patterns, segs)
	}
	return r, nil
}

// Body returns body, the envelope's body value, with every value a path
// matches replaced by "[redacted]"; body itself when nothing matches.
func (r *Redaction) Body(body json.RawMessage) (json.RawMessage, error) {
	if r == nil || len(r.patterns) == 0 {
		return body, nil
	}
	return redactRaw(body, []segment{{key: "body"}}, r.patterns)
}

const redactedJSON = `"` + redacted + `"`

// redactRaw returns raw, which sits at path at, with every value matched by
// one of patterns replaced. Parts no pattern reaches are kept byte for byte.
func redactRaw(raw json.RawMessage, at []segment, patterns [][]segment) (json.RawMessage, error) {
	full, prefix := false, false
	for _, p := range patterns {
		f, pre := matchPrefix(p, at)
		full = full || f
		prefix = prefix || pre
	}
	if full {
		return json.RawMessage(redactedJSON), nil
	}
	trimmed := bytes.TrimSpace(raw)
	if !prefix || len(trimmed) == 0 || (trimmed[0] != '{' && trimmed[0] != '[') {
		return raw, nil
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // '{' or '['
		return nil, err
	}
	var out bytes.Buffer
	out.WriteByte(trimmed[0])
	for n := 0; dec.More(); n++ {
		if n > 0 {
			out.WriteByte(',')
		}
		seg := segment{isIdx: true, index: n}
		if trimmed[0] == '{' {
			tok, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, _ := tok.(string)
			kb, _ := json.Marshal(k) // a string always marshals
			out.Write(kb)
			out.WriteByte(':')
			seg = segment{key: k}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		rv, err := redactRaw(v, append(at[:len(at):len(at)], seg), patterns)
		if err != nil {
			return nil, err
		}
		out.Write(rv)
	}
	if _, err := dec.Token(); err != nil { // '}' or ']'
		return nil, err
	}
	out.WriteByte(trimmed[len(trimmed)-1])
	return out.Bytes(), nil
}
