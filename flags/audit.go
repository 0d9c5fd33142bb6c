package flags

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// AuditRecord is one line of a flag file's audit trail (JSON lines, one
// per change, appended): who changed which flag of which environment's
// file, from what to what, why, and the comparator's figures for the flag's
// channel at that moment.
type AuditRecord struct {
	Time   time.Time `json:"time"`
	User   string    `json:"user"`
	Host   string    `json:"host"`
	Env    string    `json:"env"`
	File   string    `json:"file"`
	Flag   string    `json:"flag"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
	// Shadow is the channel's rows of the admin shadow summary (every row
	// for the kill switch), or null when the summary was asked for but
	// could not be had; absent when it was not asked for.
	Shadow      json.RawMessage `json:"shadow,omitempty"`
	ShadowError string          `json:"shadowError,omitempty"`
}

// DefaultAuditFile is the audit file of a flag file when none is named:
// FILE.audit.jsonl beside it.
func DefaultAuditFile(flagFile string) string { return flagFile + ".audit.jsonl" }

// Change is a validated edit of one flag's default variant in a flag
// file, not yet written: PrepareChange makes it, Commit writes it with its
// audit record. A Change is not safe for concurrent use.
type Change struct {
	// Path is the flag file; Env the environment it serves.
	Path, Env string
	// Flag, From and To: the flag key and its default variant before and
	// after.
	Flag, From, To string
	// Diff is the unified diff of the file; empty when nothing changes.
	Diff string
	// Targeting reports that the flag has targeting rules, so To applies
	// only where they return no variant.
	Targeting bool

	file *File
}

// PrepareChange loads the flag file at path, checks that it serves env
// (its metadata.env, when set, must equal env), and computes the edit that
// sets flag's default variant to variant. It writes nothing.
func PrepareChange(path, env, flag, variant string) (*Change, error) {
	if env == "" {
		return nil, errors.New("env: required (the environment this flag file serves)")
	}
	f, err := LoadFile(path)
	if err != nil {
		return nil, err
	}
	if f.Env != "" && f.Env != env {
		return nil, fmt.Errorf("env %s does not match the file's metadata.env %q: wrong file?", env, f.Env)
	}
	from, diff, err := f.Set(flag, variant)
	if err != nil {
		return nil, err
	}
	return &Change{Path: path, Env: env, Flag: flag, From: from, To: variant, Diff: diff,
		Targeting: f.Flags[flag].Targeting != nil, file: f}, nil
}

// Commit writes the change: it opens the audit file first (a change that
// cannot be audited is not made), replaces the flag file atomically, then
// appends rec, completed with the change's env, file, flag, from and to.
// rec.Reason is required. An error after the flag file was replaced says
// so.
func (c *Change) Commit(auditPath string, rec AuditRecord) error {
	if strings.TrimSpace(rec.Reason) == "" {
		return errors.New("reason: required: say why, it goes to the audit file")
	}
	if c.Diff == "" {
		return nil
	}
	rec.Env, rec.File, rec.Flag, rec.From, rec.To = c.Env, c.Path, c.Flag, c.From, c.To
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode audit record: %w", err)
	}
	af, err := os.OpenFile(auditPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	defer af.Close()
	if err := WriteAtomic(c.Path, c.file.Data); err != nil {
		return err
	}
	if _, err := af.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("%s changed but the audit record was not written to %s: %w", c.Flag, auditPath, err)
	}
	if err := af.Close(); err != nil {
		return fmt.Errorf("%s changed but closing the audit file %s failed: %w", c.Flag, auditPath, err)
	}
	return nil
}

// ReadAudit reads an audit file's records, oldest first; a malformed line
// is an error naming its number.
func ReadAudit(path string) ([]AuditRecord, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read audit file: %w", err)
	}
	var out []AuditRecord
	for i, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var r AuditRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("%s: line %d: %w", path, i+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}
