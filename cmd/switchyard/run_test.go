package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/flags"
)

// TestRunCommandLine covers the exit codes and messages of run itself.
func TestRunCommandLine(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("env: dev\napps:\n  ai-hero:\n    apiKeys: [\"${E2E_KEY}\"]\n    party: {url: \"127.0.0.1:1999\"}\n    realtime: {url: \"http://127.0.0.1:8288\"}\nchannels: [{name: c, events: [e]}]\nflags: {provider: memory}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"version"}, 0, "switchyard ", ""},
		{[]string{"help"}, 0, "switchyard serve --config FILE", ""},
		{nil, 2, "", "Usage:"},
		{[]string{"launch"}, 2, "", `unknown command "launch"`},
		{[]string{"serve"}, 2, "", "serve needs --config FILE"},
		{[]string{"serve", "--config"}, 2, "", "flag needs an argument"},
		{[]string{"config"}, 2, "", "config check --config FILE"},
		{[]string{"serve", "--config", filepath.Join(t.TempDir(), "missing.yaml")}, 1, "", "no such file"},
		{[]string{"serve", "--config", bad}, 1, "", "apps.ai-hero.party.url: missing scheme"},
		{[]string{"config", "check", "--config", bad}, 1, "", "apps.ai-hero.party.url: missing scheme"},
		{[]string{"demo", "--duration", "-1s"}, 2, "", "must be positive"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut strings.Builder
			code := run(context.Background(), tt.args, e2eEnv, &out, &errOut)
			if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errOut.String(), tt.err) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, out.String(), errOut.String(), tt.code, tt.out, tt.err)
			}
		})
	}
}

// TestDemoRuns runs the embedded demo briefly: the README's first command
// must work with no outside service and show every stage.
func TestDemoRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for a few seconds")
	}
	var out, errOut strings.Builder
	code := run(context.Background(), []string{"demo", "--duration", "3s", "--every", "1s"}, e2eEnv, &out, &errOut)
	if code != 0 {
		t.Fatalf("demo exited %d: %s\n%s", code, errOut.String(), out.String())
	}
	final := out.String()[strings.LastIndex(out.String(), "final:"):]
	for _, want := range []string{"video-upload    legacy", "video-ready    shadow", "transcript    shadow", "ai-stream      dual", "default  realtime", "parity %"} {
		if !strings.Contains(final, want) {
			t.Errorf("final table lacks %q:\n%s", want, final)
		}
	}
}

// TestServeRefusesABusyPort: a start that fails after the flags and the
// adapter were built (the listen address is taken) says why, exits 1, and
// leaves no goroutine of its own behind.
func TestServeRefusesABusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	path := writeE2EConfig(t, "http://127.0.0.1:1", "http://127.0.0.1:1", "legacy", "")
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	busy := strings.Replace(string(cfg), "listen: 127.0.0.1:0\n", "listen: "+ln.Addr().String()+"\n", 1)
	if err := os.WriteFile(path, []byte(busy), 0o644); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	var errOut strings.Builder
	if code := run(context.Background(), []string{"serve", "--config", path}, e2eEnv, io.Discard, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "listen: ") || !strings.Contains(errOut.String(), "address already in use") {
		t.Errorf("stderr does not say the address is taken: %s", errOut.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Errorf("%d goroutines after a failed start, %d before", n, before)
	}
}

// TestCommandHelp: `switchyard help CMD` and `switchyard CMD --help` print
// that command's usage and flags to stdout and exit 0; a usage mistake
// prints the command's usage to stderr and exits 2.
func TestCommandHelp(t *testing.T) {
	for _, c := range commands() {
		for _, args := range [][]string{append(strings.Fields(c.name), "--help"), append(strings.Fields(c.name), "-h"), append([]string{"help"}, strings.Fields(c.name)...)} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var out, errOut strings.Builder
				code := run(context.Background(), args, e2eEnv, &out, &errOut)
				if c.name == "help" && args[0] == "help" {
					if code != 0 || !strings.Contains(out.String(), "Usage:") {
						t.Fatalf("exit %d, stdout %q", code, out.String())
					}
					return
				}
				if code != 0 || !strings.HasPrefix(out.String(), "Usage: switchyard "+c.name) || errOut.Len() != 0 {
					t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and the usage of %s on stdout", code, out.String(), errOut.String(), c.name)
				}
			})
		}
	}
	for _, tt := range []struct {
		args []string
		want string // in the usage printed after the error
	}{
		{[]string{"serve", "--bogus"}, "Usage: switchyard serve --config FILE"},
		{[]string{"canary", "--config"}, "-metrics-file"},
		{[]string{"replay", "--speed", "fast"}, "Usage: switchyard replay"},
		{[]string{"flags", "list", "extra", "--file", "x"}, "switchyard flags list (--file FILE | --source URL) [--json]"},
		{[]string{"demo", "--rate", "0"}, "-duration duration"},
		{[]string{"help", "nope"}, "Usage: switchyard help"},
		{[]string{"version", "extra"}, "Usage: switchyard version"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut strings.Builder
			code := run(context.Background(), tt.args, e2eEnv, &out, &errOut)
			if code != 2 || out.Len() != 0 || !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 2 and %q on stderr", code, out.String(), errOut.String(), tt.want)
			}
		})
	}
}

// TestFlagsListJSON: `flags list --json` prints every flag as typed JSON.
func TestFlagsListJSON(t *testing.T) {
	path := flagsTestFile(t, "dev")
	stdout, _, err := flagsTestRun(t, nil, "list", "--json", "--file", path)
	if err != nil {
		t.Fatal(err)
	}
	var views []flags.View
	if err := json.Unmarshal([]byte(stdout), &views); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	byName := map[string]flags.View{}
	for _, v := range views {
		byName[v.Flag] = v
	}
	if ks, ok := byName["realtime-killswitch"]; !ok || ks.Default != "off" || len(ks.Variants) != 2 {
		t.Errorf("killswitch = %+v", ks)
	}
	if len(views) < 3 {
		t.Errorf("%d flags, want every flag of the file", len(views))
	}
}

// TestConfigCheckAgreesWithServe: for every bad config of
// config/testdata/bad (each the good config with one fault), `config check`
// and `serve` both exit 1 with the same error, naming the field want.txt
// gives; the good config passes check, and serve starts from it and stops
// cleanly. Check and serve cannot disagree about a config.
func TestConfigCheckAgreesWithServe(t *testing.T) {
	dir := "../../config/testdata"
	wantText, err := os.ReadFile(filepath.Join(dir, "bad", "want.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, line := range strings.Split(string(wantText), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, sub, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("want.txt line %q", line)
		}
		want[file] = sub
	}
	files, err := filepath.Glob(filepath.Join(dir, "bad", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 || len(files) != len(want) {
		t.Fatalf("%d bad configs, %d lines in want.txt; want at least 20, one line each", len(files), len(want))
	}
	errLine := func(cmd, out string) string {
		return strings.TrimSpace(strings.TrimPrefix(out, "switchyard "+cmd+": "))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			var cOut, cErr, sOut, sErr strings.Builder
			checkCode := run(context.Background(), []string{"config", "check", "--config", f}, e2eEnv, &cOut, &cErr)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			serveCode := run(ctx, []string{"serve", "--config", f}, e2eEnv, &sOut, &sErr)
			if checkCode != 1 || serveCode != 1 {
				t.Fatalf("config check exit %d (%s), serve exit %d (%s); want both 1", checkCode, cErr.String(), serveCode, sErr.String())
			}
			ce, se := errLine("config check", cErr.String()), errLine("serve", sErr.String())
			if ce != se {
				t.Errorf("check and serve disagree:\ncheck: %s\nserve: %s", ce, se)
			}
			if sub := want[filepath.Base(f)]; !strings.Contains(ce, sub) {
				t.Errorf("error %q does not name %q", ce, sub)
			}
		})
	}
	t.Run("good.yaml", func(t *testing.T) {
		good := filepath.Join(dir, "good.yaml")
		var out, errOut strings.Builder
		if code := run(context.Background(), []string{"config", "check", "--config", good}, e2eEnv, &out, &errOut); code != 0 {
			t.Fatalf("config check of the good config: exit %d: %s", code, errOut.String())
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		logs := &syncBuffer{}
		go func() { done <- run(ctx, []string{"serve", "--config", good}, e2eEnv, io.Discard, logs) }()
		secWait(t, 10*time.Second, "the good config's gateway to be ready", func() bool {
			return strings.Contains(logs.String(), "switchyard ready")
		})
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve of the good config: exit %d: %s", code, logs.String())
		}
	})
}
