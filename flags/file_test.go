package flags

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlagsValidateFile(t *testing.T) {
	good := map[string]string{KillSwitchKey: killFlag("off", ""), DefaultFlagKey: stageFlag("legacy", "")}
	with := func(key, def string) map[string]string {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		if def == "" {
			delete(m, key)
		} else {
			m[key] = def
		}
		return m
	}
	tests := []struct {
		name     string
		data     string
		channels []string
		want     string // "" = valid
	}{
		{"minimal", string(doc(t, good)), nil, ""},
		{"with channels", string(stagesDoc(t, "on", map[string]string{"ai-stream": "realtime"})), testChannels, ""},
		{"extra non-stage flag", string(doc(t, with("other-flag", `{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a"}`))), nil, ""},
		{"empty", "", nil, "empty"},
		{"not JSON", "{", nil, "not a JSON object"},
		{"array", "[]", nil, "not a JSON object"},
		{"no flags", `{"metadata":{}}`, nil, `"flags": missing`},
		{"flags array", `{"flags":[]}`, nil, `"flags": must be an object`},
		{"missing kill switch", string(doc(t, with(KillSwitchKey, ""))), nil, "flags.realtime-killswitch: missing"},
		{"missing default", string(doc(t, with(DefaultFlagKey, ""))), nil, "flags.realtime-default: missing"},
		{"missing channel", string(doc(t, good)), []string{"transcript"}, "flags.realtime-transcript: missing"},
		{"bad state", string(doc(t, with(DefaultFlagKey, `{"state":"ON","variants":{"legacy":"legacy"},"defaultVariant":"legacy"}`))), nil, `flags.realtime-default.state: "ON" is not ENABLED or DISABLED`},
		{"default not a variant", string(doc(t, with(DefaultFlagKey, `{"state":"ENABLED","variants":{"legacy":"legacy"},"defaultVariant":"shadow"}`))), nil, `flags.realtime-default.defaultVariant: "shadow" is not one of the variants`},
		{"unknown stage", string(doc(t, with(DefaultFlagKey, `{"state":"ENABLED","variants":{"legacy":"legacy","turbo":"turbo"},"defaultVariant":"legacy"}`))), nil, `variant "turbo": unknown stage`},
		{"stage value differs", string(doc(t, with(DefaultFlagKey, `{"state":"ENABLED","variants":{"legacy":"realtime"},"defaultVariant":"legacy"}`))), nil, `flags.realtime-default.variants.legacy: value must be the string "legacy"`},
		{"no default variant", string(doc(t, with(DefaultFlagKey, `{"state":"ENABLED","variants":{"legacy":"legacy"}}`))), nil, "flags.realtime-default.defaultVariant: required"},
		{"kill switch not boolean", string(doc(t, with(KillSwitchKey, `{"state":"ENABLED","variants":{"on":"yes","off":false},"defaultVariant":"off"}`))), nil, "kill switch variants must be true or false"},
		{"targeting not object", string(doc(t, with(DefaultFlagKey, `{"state":"ENABLED","variants":{"legacy":"legacy"},"defaultVariant":"legacy","targeting":"x"}`))), nil, "flags.realtime-default.targeting: must be a JSONLogic object"},
		{"schema: bad fractional", string(doc(t, with(DefaultFlagKey, `{"state":"ENABLED","variants":{"legacy":"legacy"},"defaultVariant":"legacy","targeting":{"fractional":"x"}}`))), nil, "flagd schema: at /flags/realtime-default/targeting"},
		{"metadata env not string", `{"metadata":{"env":1},` + strings.TrimPrefix(string(doc(t, good)), "{"), nil, "metadata.env: must be a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateFile([]byte(tt.data), tt.channels)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ValidateFile = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ValidateFile = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestFlagsShippedConfigsValidate(t *testing.T) {
	channels := []string{"video-upload", "video-ready", "transcript", "ai-stream"}
	for _, env := range []string{"dev", "staging", "prod"} {
		t.Run(env, func(t *testing.T) {
			path := filepath.Join("..", "configs", "flags", env+".flagd.json")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := ParseFile(data, channels)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if f.Env != env {
				t.Errorf("metadata.env = %q, want %q", f.Env, env)
			}
			if got := f.Flags[KillSwitchKey].DefaultVariant; got != "off" {
				t.Errorf("kill switch default = %q, want off", got)
			}
			if env == "prod" {
				for _, k := range f.Keys() {
					if fl := f.Flags[k]; k != KillSwitchKey && (fl.DefaultVariant != "legacy" || fl.Targeting != nil) {
						t.Errorf("prod %s: default %q targeting %s, want legacy without targeting", k, fl.DefaultVariant, fl.Targeting)
					}
				}
			}
		})
	}
}

func TestFlagsFileSet(t *testing.T) {
	data := stagesDoc(t, "off", map[string]string{"transcript": "shadow"})
	f, err := ParseFile(data, testChannels)
	if err != nil {
		t.Fatal(err)
	}
	f.Path = "prod.flagd.json"
	from, diff, err := f.Set("realtime-transcript", "dual")
	if err != nil {
		t.Fatal(err)
	}
	if from != "shadow" {
		t.Errorf("from = %q, want shadow", from)
	}
	wantDiff := `-    "realtime-transcript": {"state":"ENABLED","variants":{"legacy":"legacy","shadow":"shadow","dual":"dual","realtime":"realtime"},"defaultVariant":"shadow"},
+    "realtime-transcript": {"state":"ENABLED","variants":{"legacy":"legacy","shadow":"shadow","dual":"dual","realtime":"realtime"},"defaultVariant":"dual"},`
	if !strings.Contains(diff, wantDiff) || !strings.HasPrefix(diff, "--- prod.flagd.json\n+++ prod.flagd.json (new)\n@@ ") {
		t.Errorf("diff =\n%s\nwant it to contain\n%s", diff, wantDiff)
	}
	if got := strings.Count(diff, "\n-"); got != 1 {
		t.Errorf("diff removes %d lines, want 1:\n%s", got, diff)
	}
	want := strings.Replace(string(data), `"defaultVariant":"shadow"`, `"defaultVariant":"dual"`, 1)
	if string(f.Data) != want {
		t.Errorf("Data =\n%s\nwant\n%s", f.Data, want)
	}
	if got := f.Flags["realtime-transcript"].DefaultVariant; got != "dual" {
		t.Errorf("parsed default after Set = %q", got)
	}
	// Same value: no change, no diff.
	if from, diff, err := f.Set("realtime-transcript", "dual"); err != nil || from != "dual" || diff != "" {
		t.Errorf("Set to the current value = %q, %q, %v", from, diff, err)
	}
	refusals := []struct{ flag, variant, want string }{
		{"realtime-nope", "dual", `unknown flag "realtime-nope" (known: realtime-ai-stream,`},
		{"realtime-transcript", "turbo", `flag "realtime-transcript" has no variant "turbo" (known: dual, legacy, realtime, shadow)`},
		{KillSwitchKey, "dual", `has no variant "dual" (known: off, on)`},
	}
	for _, tt := range refusals {
		before := string(f.Data)
		if _, _, err := f.Set(tt.flag, tt.variant); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Set(%s, %s) = %v, want %q", tt.flag, tt.variant, err, tt.want)
		}
		if string(f.Data) != before {
			t.Errorf("refused Set changed the data")
		}
	}
}

func TestFlagsSetPreservesLayout(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "configs", "flags", "staging.flagd.json"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseFile(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Set(KillSwitchKey, "on"); err != nil {
		t.Fatal(err)
	}
	a, b := strings.Split(string(data), "\n"), strings.Split(string(f.Data), "\n")
	if len(a) != len(b) {
		t.Fatalf("line count %d -> %d", len(a), len(b))
	}
	changed := 0
	for i := range a {
		if a[i] != b[i] {
			changed++
			if !strings.Contains(b[i], `"defaultVariant": "on"`) {
				t.Errorf("line %d changed to %q", i+1, b[i])
			}
		}
	}
	if changed != 1 {
		t.Fatalf("%d lines changed, want 1", changed)
	}
}

func TestFlagsWriteAtomic(t *testing.T) {
	t.Run("keeps mode", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "f.json")
		mustWrite(t, path, []byte("old"))
		if err := os.Chmod(path, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := WriteAtomic(path, []byte("new")); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		info, _ := os.Stat(path)
		if string(got) != "new" || info.Mode().Perm() != 0o640 {
			t.Fatalf("content %q mode %v, want new 0640", got, info.Mode().Perm())
		}
		entries, _ := os.ReadDir(filepath.Dir(path))
		if len(entries) != 1 {
			t.Fatalf("left %d files in the dir, want 1", len(entries))
		}
	})
	t.Run("through symlink", func(t *testing.T) {
		dir, path := configMapDir(t, []byte("old"))
		if err := WriteAtomic(path, []byte("new")); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("symlink replaced: %v %v", fi, err)
		}
		target, _ := filepath.EvalSymlinks(path)
		if got, _ := os.ReadFile(target); string(got) != "new" {
			t.Fatalf("target %s = %q, want new", target, got)
		}
		if !strings.HasPrefix(target, dir) || !strings.Contains(target, "..2026_") {
			t.Fatalf("target %s not in the version dir", target)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if err := WriteAtomic(filepath.Join(t.TempDir(), "nope.json"), []byte("x")); err == nil {
			t.Fatal("WriteAtomic created a file that did not exist")
		}
	})
}

func FuzzFlagsParseFile(f *testing.F) {
	for _, env := range []string{"dev", "staging", "prod"} {
		if data, err := os.ReadFile(filepath.Join("..", "configs", "flags", env+".flagd.json")); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(`{"flags":{}}`))
	f.Add([]byte(`{"flags":{"realtime-default":{"state":"ENABLED","variants":{"legacy":"legacy"},"defaultVariant":null}}}`))
	v, err := newSchemaValidator()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := v.parse(data, nil)
		if err != nil {
			return
		}
		// A valid file survives setting a flag to another of its variants.
		for _, k := range file.Keys() {
			fl := file.Flags[k]
			for _, v := range fl.VariantNames() {
				if v == fl.DefaultVariant {
					continue
				}
				if _, _, err := file.Set(k, v); err != nil {
					t.Fatalf("Set(%s, %s) on a valid file: %v", k, v, err)
				}
				return
			}
		}
	})
}
