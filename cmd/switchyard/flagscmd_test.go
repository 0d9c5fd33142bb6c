package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/flags"
	"github.com/switchyard/switchyard/shadow"
)

// flagsTestFile copies configs/flags/<env>.flagd.json into a temp dir with
// mode 0640 and returns its path.
func flagsTestFile(t *testing.T, env string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "configs", "flags", env+".flagd.json"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), env+".flagd.json")
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	return path
}

// flagsTestRun runs the flags CLI with a fixed environment.
func flagsTestRun(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string { return env[k] }
	err = runFlags(context.Background(), args, &out, &errb, getenv)
	return out.String(), errb.String(), err
}

func flagsTestAudit(t *testing.T, path string) []flags.AuditRecord {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var recs []flags.AuditRecord
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		var r flags.AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs
}

func flagsTestDefault(t *testing.T, path, key string) string {
	t.Helper()
	f, err := flags.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f.Flags[key].DefaultVariant
}

func TestFlagsCLISet(t *testing.T) {
	path := flagsTestFile(t, "prod")
	before, _ := os.ReadFile(path)
	env := map[string]string{"USER": "alice"}
	stdout, _, err := flagsTestRun(t, env, "set", "realtime-video-ready", "shadow", "--file", path, "--env", "prod", "--reason", "pilot week 1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"--- " + path, `-      "defaultVariant": "legacy"`, `+      "defaultVariant": "shadow"`,
		"realtime-video-ready: legacy -> shadow",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if got := flagsTestDefault(t, path, "realtime-video-ready"); got != "shadow" {
		t.Fatalf("default after set = %q", got)
	}
	after, _ := os.ReadFile(path)
	if want := strings.Replace(string(before), `"realtime-video-ready": {
      "state": "ENABLED",
      "variants": {
        "legacy": "legacy",
        "shadow": "shadow",
        "dual": "dual",
        "realtime": "realtime"
      },
      "defaultVariant": "legacy"`, `"realtime-video-ready": {
      "state": "ENABLED",
      "variants": {
        "legacy": "legacy",
        "shadow": "shadow",
        "dual": "dual",
        "realtime": "realtime"
      },
      "defaultVariant": "shadow"`, 1); string(after) != want {
		t.Errorf("file after set differs beyond the one value:\n%s", after)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o640 {
		t.Errorf("mode after set = %v, want 0640", info.Mode().Perm())
	}
	recs := flagsTestAudit(t, path+".audit.jsonl")
	if len(recs) != 1 {
		t.Fatalf("audit records = %d, want 1", len(recs))
	}
	r := recs[0]
	host, _ := os.Hostname()
	if r.User != "alice" || r.Host != host || r.Env != "prod" || r.Flag != "realtime-video-ready" || r.From != "legacy" || r.To != "shadow" || r.Reason != "pilot week 1" || r.Shadow != nil {
		t.Errorf("audit record = %+v", r)
	}
	if time.Since(r.Time) > time.Minute {
		t.Errorf("audit time = %v", r.Time)
	}

	// Setting the same value again changes nothing and audits nothing.
	stdout, _, err = flagsTestRun(t, env, "set", "realtime-video-ready", "shadow", "--file", path, "--env", "prod", "--reason", "again")
	if err != nil || !strings.Contains(stdout, "already shadow") {
		t.Fatalf("repeat set: %v %q", err, stdout)
	}
	if n := len(flagsTestAudit(t, path+".audit.jsonl")); n != 1 {
		t.Fatalf("audit records after a no-op = %d, want 1", n)
	}
}

func TestFlagsCLIKillSwitch(t *testing.T) {
	path := flagsTestFile(t, "staging")
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	for i, state := range []string{"on", "off"} {
		if _, _, err := flagsTestRun(t, nil, "killswitch", state, "--file", path, "--env", "staging", "--reason", "incident 42", "--audit", audit); err != nil {
			t.Fatalf("killswitch %s: %v", state, err)
		}
		if got := flagsTestDefault(t, path, flags.KillSwitchKey); got != state {
			t.Fatalf("kill switch = %q, want %q", got, state)
		}
		recs := flagsTestAudit(t, audit)
		if len(recs) != i+1 || recs[i].Flag != flags.KillSwitchKey || recs[i].To != state {
			t.Fatalf("audit after %s: %+v", state, recs)
		}
	}
}

func TestFlagsCLIRefusals(t *testing.T) {
	path := flagsTestFile(t, "prod")
	before, _ := os.ReadFile(path)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"set", "realtime-nope", "shadow", "--env", "prod", "--reason", "r"}, `unknown flag "realtime-nope" (known: realtime-ai-stream`},
		{"unknown variant", []string{"set", "realtime-transcript", "turbo", "--env", "prod", "--reason", "r"}, `has no variant "turbo" (known: dual, legacy, realtime, shadow)`},
		{"no reason", []string{"set", "realtime-transcript", "dual", "--env", "prod"}, "--reason is required"},
		{"blank reason", []string{"set", "realtime-transcript", "dual", "--env", "prod", "--reason", "  "}, "--reason is required"},
		{"no env", []string{"set", "realtime-transcript", "dual", "--reason", "r"}, "--env is required"},
		{"wrong env", []string{"set", "realtime-transcript", "dual", "--env", "staging", "--reason", "r"}, `does not match the file's metadata.env "prod"`},
		{"killswitch bad state", []string{"killswitch", "maybe", "--env", "prod", "--reason", "r"}, "want on or off"},
		{"killswitch no reason", []string{"killswitch", "on", "--env", "prod"}, "--reason is required"},
		{"set arity", []string{"set", "realtime-transcript", "--env", "prod", "--reason", "r"}, "want FLAG VARIANT"},
		{"unknown command", []string{"flip"}, `unknown command "flip"`},
		{"get unknown", []string{"get", "realtime-x"}, `unknown flag "realtime-x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := flagsTestRun(t, nil, append(tt.args, "--file", path)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a refused command changed the file")
	}
	if _, err := os.Stat(path + ".audit.jsonl"); !os.IsNotExist(err) {
		t.Fatalf("a refused command wrote an audit file: %v", err)
	}
	if _, _, err := flagsTestRun(t, nil, "list"); err == nil || !strings.Contains(err.Error(), "--file or --source is required") {
		t.Fatalf("list without file: %v", err)
	}
	if _, _, err := flagsTestRun(t, nil, "list", "--file", path, "--source", "file:///x/flags.json"); err == nil || !strings.Contains(err.Error(), "exclusive") {
		t.Fatalf("list with file and source: %v", err)
	}
	if _, _, err := flagsTestRun(t, nil, "list", "--source", "http://x/flags.json"); err == nil || !strings.Contains(err.Error(), "scheme must be s3, gs, azblob or file") {
		t.Fatalf("list with an http source: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"flags":{}}`), 0o644)
	if _, _, err := flagsTestRun(t, nil, "set", "realtime-default", "dual", "--file", bad, "--env", "x", "--reason", "r"); err == nil || !strings.Contains(err.Error(), "flags.realtime-killswitch: missing") {
		t.Fatalf("set on an invalid file: %v", err)
	}
}

func TestFlagsCLISymlinkAndDryRun(t *testing.T) {
	src := flagsTestFile(t, "dev")
	dir := t.TempDir()
	data, _ := os.ReadFile(src)
	version := filepath.Join(dir, "..2026_01_01")
	os.Mkdir(version, 0o755)
	os.WriteFile(filepath.Join(version, "dev.flagd.json"), data, 0o600)
	os.Symlink("..2026_01_01", filepath.Join(dir, "..data"))
	link := filepath.Join(dir, "dev.flagd.json")
	os.Symlink(filepath.Join("..data", "dev.flagd.json"), link)

	stdout, _, err := flagsTestRun(t, nil, "set", "realtime-video-upload", "dual", "--file", link, "--env", "dev", "--reason", "r", "--dry-run")
	if err != nil || !strings.Contains(stdout, "dry run") || !strings.Contains(stdout, `+      "defaultVariant": "dual"`) {
		t.Fatalf("dry run: %v\n%s", err, stdout)
	}
	if got := flagsTestDefault(t, link, "realtime-video-upload"); got != "legacy" {
		t.Fatalf("dry run wrote the file: %s", got)
	}
	if _, _, err := flagsTestRun(t, nil, "set", "realtime-video-upload", "dual", "--file", link, "--env", "dev", "--reason", "r"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("symlink replaced by a file: %v", err)
	}
	target := filepath.Join(version, "dev.flagd.json")
	if got := flagsTestDefault(t, target, "realtime-video-upload"); got != "dual" {
		t.Fatalf("target default = %q, want dual", got)
	}
	if info, _ := os.Stat(target); info.Mode().Perm() != 0o600 {
		t.Fatalf("target mode = %v, want 0600", info.Mode().Perm())
	}
}

func TestFlagsCLIAdminSnapshot(t *testing.T) {
	summary := `{"channels":[{"app":"ai-hero","channel":"transcript","compared":500,"parityPercent":99.8},{"app":"ai-hero","channel":"ai-stream","compared":9}]}`
	var gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/admin/shadow/summary" {
			http.NotFound(w, r)
			return
		}
		gotAuth = r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(summary))
	}))
	defer srv.Close()
	path := flagsTestFile(t, "staging")
	env := map[string]string{"SWITCHYARD_ADMIN_TOKEN": "s3cret"}
	stdout, stderr, err := flagsTestRun(t, env, "set", "realtime-transcript", "dual", "--file", path, "--env", "staging", "--reason", "parity ok", "--admin", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if gotAuth != "Bearer s3cret" {
		t.Errorf("Authorization = %q", gotAuth)
	}
	if strings.Contains(stdout+stderr, "s3cret") {
		t.Error("token printed")
	}
	recs := flagsTestAudit(t, path+".audit.jsonl")
	var row shadow.ChannelSummary
	if err := json.Unmarshal(recs[0].Shadow, &row); err != nil || row.Channel != "transcript" || row.Compared != 500 || row.ParityPercent == nil || *row.ParityPercent != 99.8 {
		t.Errorf("shadow = %s, want the transcript row", recs[0].Shadow)
	}
	if raw, _ := os.ReadFile(path + ".audit.jsonl"); bytes.Contains(raw, []byte("s3cret")) {
		t.Error("token in the audit file")
	}

	// Unreachable admin: the change goes through with a null snapshot and a note.
	srv.Close()
	_, stderr, err = flagsTestRun(t, env, "set", "realtime-transcript", "realtime", "--file", path, "--env", "staging", "--reason", "r", "--admin", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	recs = flagsTestAudit(t, path+".audit.jsonl")
	if len(recs) != 2 || string(recs[1].Shadow) != "null" || recs[1].ShadowError == "" || !strings.Contains(stderr, "no shadow snapshot") {
		t.Fatalf("unreachable admin: record %+v, stderr %q", recs[len(recs)-1], stderr)
	}
	if raw, _ := os.ReadFile(path + ".audit.jsonl"); !bytes.Contains(raw, []byte(`"shadow":null`)) {
		t.Errorf("audit lacks an explicit null shadow:\n%s", raw)
	}
}

// TestFlagsCLISnapshotShapes: the audit keeps the channel's typed rows
// (an object for one app, an array for several, the whole summary for the
// kill switch); an answer that is not the summary document is refused with
// the reason in shadowError, and the change still goes through.
func TestFlagsCLISnapshotShapes(t *testing.T) {
	var answer atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(answer.Load().(string)))
	}))
	defer srv.Close()
	two := `{"channels":[{"app":"a","channel":"video-ready","compared":3},{"app":"b","channel":"video-ready","compared":4},{"app":"a","channel":"x"}]}`
	tests := []struct {
		name, answer, key, variant string
		want                       func(rec flags.AuditRecord) bool
	}{
		{"two apps", two, "realtime-video-ready", "dual", func(r flags.AuditRecord) bool {
			var rows []shadow.ChannelSummary
			return json.Unmarshal(r.Shadow, &rows) == nil && len(rows) == 2 && rows[1].App == "b" && rows[1].Compared == 4
		}},
		{"kill switch", two, flags.KillSwitchKey, "on", func(r flags.AuditRecord) bool {
			var s shadow.Summary
			return json.Unmarshal(r.Shadow, &s) == nil && len(s.Channels) == 3
		}},
		{"untyped shape", `{"channels":{"video-ready":{"parity":1}}}`, "realtime-video-ready", "realtime", func(r flags.AuditRecord) bool {
			return string(r.Shadow) == "null" && strings.Contains(r.ShadowError, "unexpected answer")
		}},
		{"channel absent", `{"channels":[]}`, "realtime-video-ready", "shadow", func(r flags.AuditRecord) bool {
			return string(r.Shadow) == "null" && strings.Contains(r.ShadowError, `channel "video-ready" not in the summary`)
		}},
	}
	path := flagsTestFile(t, "staging")
	for i, tt := range tests {
		answer.Store(tt.answer)
		if _, _, err := flagsTestRun(t, nil, "set", tt.key, tt.variant, "--file", path, "--env", "staging", "--reason", "r", "--admin", srv.URL); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		recs := flagsTestAudit(t, path+".audit.jsonl")
		if len(recs) != i+1 || !tt.want(recs[i]) {
			t.Errorf("%s: audit record %+v (shadow %s)", tt.name, recs[len(recs)-1], recs[len(recs)-1].Shadow)
		}
	}
}

func TestFlagsCLIListAndGet(t *testing.T) {
	path := flagsTestFile(t, "dev")
	stdout, _, err := flagsTestRun(t, nil, "list", "--file", path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 7 || !strings.HasPrefix(lines[0], "FLAG") {
		t.Fatalf("list:\n%s", stdout)
	}
	for _, want := range []string{"realtime-transcript", "dual", "realtime-killswitch", "off,on", `{"fractional":`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("list lacks %q:\n%s", want, stdout)
		}
	}
	stdout, _, err = flagsTestRun(t, map[string]string{"SWITCHYARD_FLAGS_FILE": path}, "get", "realtime-ai-stream")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"flag:      realtime-ai-stream", "default:   realtime", "variants:  dual, legacy, realtime, shadow", `targeting: {"fractional":[{"cat":`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("get lacks %q:\n%s", want, stdout)
		}
	}
}

// The shared source (flags provider blob): set and killswitch write the
// document every replica polls, with the audit record beside it in the
// bucket; list and get read it; a refused change writes nothing.
func TestFlagsCLISource(t *testing.T) {
	path := flagsTestFile(t, "prod")
	source := "file://" + path
	env := map[string]string{"USER": "oncall", "SWITCHYARD_FLAGS_SOURCE": source}
	out, _, err := flagsTestRun(t, env, "set", "realtime-transcript", "shadow", "--env", "prod", "--reason", "shadow transcript")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "audit: "+source+".audit.jsonl") {
		t.Errorf("output does not name the audit object:\n%s", out)
	}
	if got := flagsTestDefault(t, path, "realtime-transcript"); got != "shadow" {
		t.Errorf("document default = %q, want shadow", got)
	}
	if _, _, err := flagsTestRun(t, env, "killswitch", "on", "--env", "prod", "--reason", "incident"); err != nil {
		t.Fatal(err)
	}
	recs, err := flags.ReadAuditBlob(context.Background(), source)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].To != "shadow" || recs[1].Flag != flags.KillSwitchKey || recs[1].To != "on" || recs[1].User != "oncall" || recs[1].File != source {
		t.Fatalf("audit = %+v", recs)
	}
	out, _, err = flagsTestRun(t, env, "get", flags.KillSwitchKey)
	if err != nil || !strings.Contains(out, "default:   on") {
		t.Fatalf("get through the source: %v\n%s", err, out)
	}
	before, _ := os.ReadFile(path)
	if _, _, err := flagsTestRun(t, env, "set", "realtime-transcript", "nope", "--env", "prod", "--reason", "r"); err == nil {
		t.Fatal("an unknown variant was accepted")
	}
	if _, _, err := flagsTestRun(t, env, "set", "realtime-transcript", "dual", "--env", "staging", "--reason", "r"); err == nil || !strings.Contains(err.Error(), "metadata.env") {
		t.Fatalf("wrong env: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a refused change wrote the document")
	}
}
