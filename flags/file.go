package flags

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	flagdschema "github.com/open-feature/flagd-schemas/json"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/switchyard/switchyard/broadcast"
)

// MaxFileSize is the largest flag file accepted.
const MaxFileSize = 1 << 20

// File is a parsed and validated flagd flag definition file. Data holds the
// exact bytes; Set edits them in place so formatting and comments-free
// layout survive. A File is not safe for concurrent mutation.
type File struct {
	// Path is where the file was loaded from ("" for ParseFile).
	Path string
	// Data is the file's bytes; Set replaces it.
	Data []byte
	// Env is the top-level metadata.env of the file, "" if absent.
	Env string
	// Flags maps each flag key to its definition.
	Flags map[string]*Flag
	// channels is what the file was validated against.
	channels []string
	v        *schemaValidator
}

// Flag is one flag definition of a File.
type Flag struct {
	Key   string
	State string
	// Variants maps each variant name to its JSON value.
	Variants map[string]json.RawMessage
	// DefaultVariant is "" when absent or null (flagd then answers the
	// code default, legacy).
	DefaultVariant string
	// Targeting is the JSONLogic rule, nil when absent or empty.
	Targeting json.RawMessage
}

// VariantNames returns the variant names in sorted order.
func (f *Flag) VariantNames() []string {
	names := make([]string, 0, len(f.Variants))
	for n := range f.Variants {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Keys returns the flag keys in sorted order.
func (f *File) Keys() []string {
	keys := make([]string, 0, len(f.Flags))
	for k := range f.Flags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// LoadFile reads and validates the flag file at path (following symlinks),
// requiring the kill switch and the default channel's flag.
func LoadFile(path string) (*File, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	f, err := ParseFile(data, nil)
	if err != nil {
		return nil, fmt.Errorf("flags: %s: %w", path, err)
	}
	f.Path = path
	return f, nil
}

func readLimited(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("flags: read flag file: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("flags: read flag file %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("flags: flag file %s: larger than %d bytes", path, MaxFileSize)
	}
	return data, nil
}

// ValidateFile reports whether data is a flag file the gateway accepts:
// flagd's JSON schema, a "flags" object whose flags have state ENABLED or
// DISABLED, a non-empty variants object and a defaultVariant naming one of
// them; every "realtime-*" stage flag has only stage-named variants whose
// value is their own name ("shadow": "shadow"); the kill switch
// "realtime-killswitch" has boolean variants; the kill switch,
// "realtime-default" and "realtime-<c>" for each c in channels are present.
// The error lists every problem found, each naming the flag and field.
func ValidateFile(data []byte, channels []string) error {
	_, err := ParseFile(data, channels)
	return err
}

// ParseFile validates data (see ValidateFile) and returns its parsed form.
func ParseFile(data []byte, channels []string) (*File, error) {
	v, err := newSchemaValidator()
	if err != nil {
		return nil, err
	}
	return v.parse(data, channels)
}

// schemaValidator holds flagd's compiled JSON schema. It is immutable and
// safe for concurrent use.
type schemaValidator struct{ schema *jsonschema.Schema }

func newSchemaValidator() (*schemaValidator, error) {
	c := jsonschema.NewCompiler()
	for url, doc := range map[string]string{
		"https://flagd.dev/schema/v0/flagd.json":     flagdschema.FlagdSchema,
		"https://flagd.dev/schema/v0/flags.json":     flagdschema.FlagSchema,
		"https://flagd.dev/schema/v0/targeting.json": flagdschema.TargetingSchema,
	} {
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
		if err != nil {
			return nil, fmt.Errorf("flags: load flagd schema %s: %w", url, err)
		}
		if err := c.AddResource(url, inst); err != nil {
			return nil, fmt.Errorf("flags: load flagd schema %s: %w", url, err)
		}
	}
	s, err := c.Compile("https://flagd.dev/schema/v0/flagd.json")
	if err != nil {
		return nil, fmt.Errorf("flags: compile flagd schema: %w", err)
	}
	return &schemaValidator{schema: s}, nil
}

type rawFile struct {
	Flags    map[string]json.RawMessage `json:"flags"`
	Metadata map[string]any             `json:"metadata"`
}

type rawFlag struct {
	State          *string                    `json:"state"`
	Variants       map[string]json.RawMessage `json:"variants"`
	DefaultVariant *string                    `json:"defaultVariant"`
	Targeting      json.RawMessage            `json:"targeting"`
}

func (v *schemaValidator) parse(data []byte, channels []string) (*File, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("flag file is empty")
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("flag file is larger than %d bytes", MaxFileSize)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	flagsRaw, ok := top["flags"]
	if !ok {
		return nil, errors.New(`"flags": missing`)
	}
	if t := bytes.TrimSpace(flagsRaw); len(t) == 0 || t[0] != '{' {
		return nil, errors.New(`"flags": must be an object keyed by flag key`)
	}
	var rf rawFile
	if err := json.Unmarshal(data, &rf); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := v.schema.Validate(inst); err != nil {
		add("does not match the flagd schema: %s", schemaError(err))
	}

	f := &File{Data: data, Flags: make(map[string]*Flag, len(rf.Flags)), channels: channels, v: v}
	if env, ok := rf.Metadata["env"]; ok {
		s, isString := env.(string)
		if !isString {
			add(`metadata.env: must be a string`)
		}
		f.Env = s
	}
	for _, key := range sortedKeys(rf.Flags) {
		var r rawFlag
		if err := json.Unmarshal(rf.Flags[key], &r); err != nil {
			add("flags.%s: %v", key, err)
			continue
		}
		fl := &Flag{Key: key, Variants: r.Variants}
		switch {
		case r.State == nil:
			add("flags.%s.state: missing (want ENABLED or DISABLED)", key)
		case *r.State != "ENABLED" && *r.State != "DISABLED":
			add("flags.%s.state: %q is not ENABLED or DISABLED", key, *r.State)
		default:
			fl.State = *r.State
		}
		if len(r.Variants) == 0 {
			add("flags.%s.variants: missing or empty", key)
		}
		if r.DefaultVariant != nil {
			fl.DefaultVariant = *r.DefaultVariant
			if _, ok := r.Variants[fl.DefaultVariant]; !ok {
				add("flags.%s.defaultVariant: %q is not one of the variants %v", key, fl.DefaultVariant, fl.VariantNames())
			}
		}
		if t := bytes.TrimSpace(r.Targeting); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
			if t[0] != '{' {
				add("flags.%s.targeting: must be a JSONLogic object", key)
			} else if !bytes.Equal(t, []byte("{}")) {
				fl.Targeting = t
			}
		}
		switch {
		case key == KillSwitchKey:
			for _, name := range fl.VariantNames() {
				if val := string(bytes.TrimSpace(r.Variants[name])); val != "true" && val != "false" {
					add("flags.%s.variants.%s: kill switch variants must be true or false, not %s", key, name, val)
				}
			}
			if r.DefaultVariant == nil {
				add("flags.%s.defaultVariant: required", key)
			}
		case strings.HasPrefix(key, FlagPrefix):
			for _, name := range fl.VariantNames() {
				if _, err := broadcast.ParseStage(name); err != nil {
					add("flags.%s.variants: variant %q: %v", key, name, err)
					continue
				}
				var val string
				if err := json.Unmarshal(r.Variants[name], &val); err != nil || val != name {
					add("flags.%s.variants.%s: value must be the string %q, not %s", key, name, name, bytes.TrimSpace(r.Variants[name]))
				}
			}
			if r.DefaultVariant == nil {
				add("flags.%s.defaultVariant: required", key)
			}
		}
		f.Flags[key] = fl
	}
	required := []string{KillSwitchKey, DefaultFlagKey}
	for _, ch := range channels {
		required = append(required, FlagKey(ch))
	}
	for _, key := range required {
		if _, ok := rf.Flags[key]; !ok {
			add("flags.%s: missing", key)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return f, nil
}

// schemaError condenses a schema validation error to its first few leaf
// problems, one "at LOCATION: PROBLEM" each; the full tree of a oneOf
// mismatch runs to pages.
func schemaError(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	p := message.NewPrinter(language.English)
	var leaves []string
	seen := map[string]bool{}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "/" + strings.Join(e.InstanceLocation, "/")
			msg := "at " + loc + ": " + e.ErrorKind.LocalizedString(p)
			if !seen[msg] {
				seen[msg] = true
				leaves = append(leaves, msg)
			}
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	const show = 4
	if len(leaves) > show {
		return strings.Join(leaves[:show], "; ") + fmt.Sprintf("; and %d more", len(leaves)-show)
	}
	return strings.Join(leaves, "; ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Set makes variant the defaultVariant of flag, editing only that value in
// Data, and revalidates the result. It returns the previous default
// variant and a unified diff of the change (empty when nothing changed). An
// unknown flag or variant is refused with an error naming the known ones;
// f is unchanged on error.
func (f *File) Set(flag, variant string) (from string, diff string, err error) {
	fl, ok := f.Flags[flag]
	if !ok {
		return "", "", fmt.Errorf("flags: unknown flag %q (known: %s)", flag, strings.Join(f.Keys(), ", "))
	}
	if _, ok := fl.Variants[variant]; !ok {
		return "", "", fmt.Errorf("flags: flag %q has no variant %q (known: %s)", flag, variant, strings.Join(fl.VariantNames(), ", "))
	}
	from = fl.DefaultVariant
	if from == variant {
		return from, "", nil
	}
	start, end, err := valueSpan(f.Data, "flags", flag, "defaultVariant")
	if err != nil {
		return "", "", fmt.Errorf("flags: locate %s.defaultVariant: %w", flag, err)
	}
	quoted, err := json.Marshal(variant)
	if err != nil {
		return "", "", fmt.Errorf("flags: encode variant: %w", err)
	}
	out := make([]byte, 0, len(f.Data)+len(quoted))
	out = append(out, f.Data[:start]...)
	out = append(out, quoted...)
	out = append(out, f.Data[end:]...)
	if f.v == nil {
		if f.v, err = newSchemaValidator(); err != nil {
			return "", "", err
		}
	}
	nf, err := f.v.parse(out, f.channels)
	if err != nil {
		return "", "", fmt.Errorf("flags: edited file does not validate: %w", err)
	}
	if got := nf.Flags[flag].DefaultVariant; got != variant {
		return "", "", fmt.Errorf("flags: edit of %s.defaultVariant did not take (found %q); is the key duplicated?", flag, got)
	}
	name := f.Path
	if name == "" {
		name = "flags"
	}
	diff = UnifiedDiff(name, f.Data, out)
	f.Data, f.Env, f.Flags = nf.Data, nf.Env, nf.Flags
	return from, diff, nil
}

// valueSpan returns the byte offsets [start, end) of the value at the
// object path in data.
func valueSpan(data []byte, path ...string) (start, end int, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	for depth, want := range path {
		tok, err := dec.Token()
		if err != nil {
			return 0, 0, err
		}
		if d, ok := tok.(json.Delim); !ok || d != '{' {
			return 0, 0, fmt.Errorf("%s: not an object", strings.Join(path[:depth], "."))
		}
		for {
			tok, err := dec.Token()
			if err != nil {
				return 0, 0, err
			}
			if d, ok := tok.(json.Delim); ok && d == '}' {
				return 0, 0, fmt.Errorf("%s: not found", strings.Join(path[:depth+1], "."))
			}
			key, _ := tok.(string)
			if key == want {
				break
			}
			if err := skipValue(dec); err != nil {
				return 0, 0, err
			}
		}
	}
	start = int(dec.InputOffset())
	for start < len(data) && (data[start] == ' ' || data[start] == '\t' || data[start] == '\n' || data[start] == '\r' || data[start] == ':') {
		start++
	}
	tok, err := dec.Token()
	if err != nil {
		return 0, 0, err
	}
	if _, ok := tok.(json.Delim); ok {
		return 0, 0, fmt.Errorf("%s: not a scalar", strings.Join(path, "."))
	}
	return start, int(dec.InputOffset()), nil
}

func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			default:
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

// UnifiedDiff returns a unified diff of one hunk covering every changed
// line of old and new with two lines of context, or "" if they are equal.
func UnifiedDiff(name string, old, new []byte) string {
	if bytes.Equal(old, new) {
		return ""
	}
	a := strings.SplitAfter(string(old), "\n")
	b := strings.SplitAfter(string(new), "\n")
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	const ctx = 2
	lo := max(pre-ctx, 0)
	hiA := min(len(a)-suf+ctx, len(a))
	hiB := min(len(b)-suf+ctx, len(b))
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s (new)\n@@ -%d,%d +%d,%d @@\n", name, name, lo+1, hiA-lo, lo+1, hiB-lo)
	line := func(prefix, s string) {
		sb.WriteString(prefix)
		sb.WriteString(strings.TrimSuffix(s, "\n"))
		sb.WriteByte('\n')
	}
	for _, s := range a[lo:pre] {
		line(" ", s)
	}
	for _, s := range a[pre : len(a)-suf] {
		line("-", s)
	}
	for _, s := range b[pre : len(b)-suf] {
		line("+", s)
	}
	for _, s := range a[len(a)-suf : hiA] {
		line(" ", s)
	}
	return sb.String()
}

// WriteAtomic replaces the file at path with data: it writes a temporary
// file in the same directory as the final target, with the target's
// permission bits, syncs it and renames it over the target. When path is a
// symbolic link (a ConfigMap-style "..data" link, say) the link's target is
// replaced and the link is kept. Readers see the old or the new content,
// never a mix.
func WriteAtomic(path string, data []byte) error {
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("flags: write %s: %w", path, err)
	}
	info, err := os.Stat(target)
	if err != nil {
		return fmt.Errorf("flags: write %s: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("flags: write %s: %s is not a regular file", path, target)
	}
	dir := filepath.Dir(target)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return fmt.Errorf("flags: write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("flags: write %s: %w", tmpName, err)
	}
	if err := tmp.Chmod(info.Mode().Perm()); err != nil {
		return fmt.Errorf("flags: chmod %s: %w", tmpName, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("flags: sync %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("flags: close %s: %w", tmpName, err)
	}
	if err := os.Rename(tmpName, target); err != nil {
		return fmt.Errorf("flags: rename %s over %s: %w", tmpName, target, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// TargetingSummary renders a flag's targeting rule as compact JSON, cut to
// limit runes when limit > 0, "none" when there is none and "(invalid)"
// when it is not JSON. It is for people (the flags CLI), not for parsing.
func TargetingSummary(t json.RawMessage, limit int) string {
	if len(t) == 0 {
		return "none"
	}
	var b bytes.Buffer
	if err := json.Compact(&b, t); err != nil {
		return "(invalid)"
	}
	s := b.String()
	if r := []rune(s); limit > 0 && len(r) > limit {
		s = string(r[:limit-3]) + "..."
	}
	return s
}
