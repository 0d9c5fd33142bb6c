package flags

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestChangeCommit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "prod.flagd.json")
	mustWrite(t, path, stagesDoc(t, "off", map[string]string{"transcript": "shadow"}))
	c, err := PrepareChange(path, "prod", "realtime-transcript", "dual")
	if err != nil {
		t.Fatal(err)
	}
	if c.From != "shadow" || c.To != "dual" || c.Diff == "" || c.Targeting {
		t.Fatalf("change = %+v", c)
	}
	if err := c.Commit(DefaultAuditFile(path), AuditRecord{User: "ana"}); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Errorf("commit without a reason: err = %v", err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if err := c.Commit(DefaultAuditFile(path), AuditRecord{Time: at, User: "ana", Reason: "parity 100%"}); err != nil {
		t.Fatal(err)
	}
	f, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Flags["realtime-transcript"].DefaultVariant; got != "dual" {
		t.Errorf("default variant = %q, want dual", got)
	}
	recs, err := ReadAudit(DefaultAuditFile(path))
	if err != nil {
		t.Fatal(err)
	}
	want := AuditRecord{Time: at, User: "ana", Env: "prod", File: path, Flag: "realtime-transcript", From: "shadow", To: "dual", Reason: "parity 100%"}
	if len(recs) != 1 || !recs[0].Time.Equal(want.Time) || recs[0].User != want.User || recs[0].Env != want.Env ||
		recs[0].File != want.File || recs[0].Flag != want.Flag || recs[0].From != want.From || recs[0].To != want.To || recs[0].Reason != want.Reason {
		t.Errorf("audit = %+v, want [%+v]", recs, want)
	}
}

// TestChangeNotMadeWithoutAudit: an audit file that cannot be opened
// leaves the flag file as it was.
func TestChangeNotMadeWithoutAudit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "prod.flagd.json")
	before := stagesDoc(t, "off", nil)
	mustWrite(t, path, before)
	c, err := PrepareChange(path, "prod", KillSwitchKey, "on")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(filepath.Join(dir, "missing", "audit.jsonl"), AuditRecord{Reason: "drill"}); err == nil {
		t.Fatal("commit with an unopenable audit file: nil error")
	}
	if got, _ := os.ReadFile(path); string(got) != string(before) {
		t.Error("the flag file changed although the change could not be audited")
	}
}

func TestPrepareChangeRefusals(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	data := strings.Replace(string(stagesDoc(t, "off", nil)), `"flags": {`, `"metadata": {"env": "staging"}, "flags": {`, 1)
	mustWrite(t, path, []byte(data))
	for _, tt := range []struct{ env, flag, variant, want string }{
		{"", KillSwitchKey, "on", "env: required"},
		{"prod", KillSwitchKey, "on", `metadata.env "staging"`},
		{"staging", "realtime-nope", "dual", "realtime-nope"},
		{"staging", "realtime-transcript", "sideways", "sideways"},
	} {
		if _, err := PrepareChange(path, tt.env, tt.flag, tt.variant); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v", tt, err)
		}
	}
}
