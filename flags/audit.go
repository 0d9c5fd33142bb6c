package flags

import (
	"context"
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
	// blob, when set, holds the document instead of Path (PrepareBlobChange),
	// read with modification time mod.
	blob *BlobStore
	mod  time.Time
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

// PrepareBlobChange is PrepareChange on the flag document of a blob source
// (see ParseBlobSource): the document every replica of an environment
// polls. It reads the document through st and writes nothing; Commit
// writes it back through st, and the audit record beside it in the bucket
// (BlobStore.AuditKey) unless an audit file is named.
func PrepareBlobChange(ctx context.Context, st *BlobStore, env, flag, variant string) (*Change, error) {
	if env == "" {
		return nil, errors.New("env: required (the environment this flag document serves)")
	}
	data, mod, err := st.Read(ctx)
	if err != nil {
		return nil, err
	}
	f, err := ParseFile(data, nil)
	if err != nil {
		return nil, fmt.Errorf("flags: %s: %w", st.Source, err)
	}
	f.Path = st.Source
	if f.Env != "" && f.Env != env {
		return nil, fmt.Errorf("env %s does not match the document's metadata.env %q: wrong source?", env, f.Env)
	}
	from, diff, err := f.Set(flag, variant)
	if err != nil {
		return nil, err
	}
	return &Change{Path: st.Source, Env: env, Flag: flag, From: from, To: variant, Diff: diff,
		Targeting: f.Flags[flag].Targeting != nil, file: f, blob: st, mod: mod}, nil
}

// blobCommitTimeout bounds the writes of a blob Commit.
const blobCommitTimeout = 30 * time.Second

// Commit writes the change: it opens the audit file first (a change that
// cannot be audited is not made), replaces the flag file atomically, then
// appends rec, completed with the change's env, file, flag, from and to.
// rec.Reason is required. An error after the flag file was replaced says
// so. For a change of a blob source (PrepareBlobChange) an empty auditPath
// means the audit object beside the document in the bucket; the document
// is one object write, visible to every replica at its next poll.
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
	if c.blob != nil && auditPath == "" {
		ctx, cancel := context.WithTimeout(context.Background(), blobCommitTimeout)
		defer cancel()
		if err := c.blob.checkAudit(ctx); err != nil {
			return err
		}
		if err := c.blob.Write(ctx, c.file.Data, c.mod); err != nil {
			return err
		}
		if err := c.blob.appendAudit(ctx, line); err != nil {
			return fmt.Errorf("%s changed but the audit record was not written: %w", c.Flag, err)
		}
		return nil
	}
	af, err := os.OpenFile(auditPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	defer af.Close()
	if c.blob != nil {
		ctx, cancel := context.WithTimeout(context.Background(), blobCommitTimeout)
		defer cancel()
		if err := c.blob.Write(ctx, c.file.Data, c.mod); err != nil {
			return err
		}
	} else if err := WriteAtomic(c.Path, c.file.Data); err != nil {
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
	return parseAudit(path, data)
}

// parseAudit decodes the JSON lines of an audit trail named path.
func parseAudit(path string, data []byte) ([]AuditRecord, error) {
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
