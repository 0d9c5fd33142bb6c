package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/demo"
	"github.com/switchyard/switchyard/gateway"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand: its usage line, what it does, and its body.
// run receives the arguments after the command's name.
type command struct {
	name, args, summary string
	run                 func(ctx context.Context, e *env, args []string) error
}

// commands is the command table, in the order help lists them. It is built
// by a function so that no package-level state can be changed.
func commands() []command {
	return []command{
		{"serve", "--config FILE", "run the gateway", cmdServe},
		{"demo", "[--duration 20s] [--rate 60] [--every 2s] [--log FILE]", "run an embedded demo (no outside service)", cmdDemo},
		{"config check", "--config FILE", "validate a config exactly as serve does, and print it with secrets redacted", cmdConfigCheck},
		{"flags", "list|get|set|killswitch ...", "read and flip stage flags with an audit trail (docs/flags.md)", cmdFlags},
		{"canary", "--config FILE --app APP", "check delivery on each transport of the canary room's stage once", cmdCanary},
		{"replay", "FILE --to URL --app APP [--speed N]", "replay recorded traffic through a gateway", cmdReplay},
		{"version", "", "print the version", cmdVersion},
		{"help", "[COMMAND]", "print this help, or a command's", cmdHelp},
	}
}

// errUsage marks a command-line mistake: the command's usage is printed to
// stderr and the exit code is 2.
var errUsage = errors.New("usage")

// usageError is a command-line mistake in a named command.
func usageError(cmd, format string, a ...any) error {
	return fmt.Errorf("%w: %s: %s", errUsage, cmd, fmt.Sprintf(format, a...))
}

// env is what a command may touch of the process: arguments come
// separately; getenv supplies the environment (for ${VAR} in configs and
// the tools' defaults); stdout gets command output, stderr logs and errors.
type env struct {
	getenv         func(string) string
	stdout, stderr io.Writer
	// strayLog is the logger the lines libraries write to os.Stderr are
	// relayed through (main points os.Stderr at a pipe); commands that
	// build their own logger store it here.
	strayLog atomic.Pointer[zap.Logger]
}

// run is the whole program behind main: it parses args, runs the
// subcommand until it ends or ctx is cancelled, and returns the exit code
// (0 ok, 1 failure, 2 usage).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, getenv, stdout, stderr, nil)
}

// runWith is run with stray, the read end of the pipe main points
// os.Stderr at (nil: none): its lines are relayed through the command's
// logger (gateway.RelayJSONLines), a console logger on stderr until the
// command has built its own.
func runWith(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, stray io.Reader) int {
	e := &env{getenv: getenv, stdout: stdout, stderr: stderr}
	if stray != nil {
		if l, err := gateway.NewLogger(config.Log{Level: "info", Format: "console"}, stderr); err == nil {
			e.strayLog.Store(l)
			go gateway.RelayJSONLines(stray, e.strayLog.Load)
		}
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage())
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "--help":
		name = "help"
	case "--version":
		name = "version"
	case "config":
		if len(rest) > 0 && rest[0] == "check" {
			name, rest = "config check", rest[1:]
		} else if len(rest) == 0 || !isHelp(rest[0]) {
			return e.exit(name, usageError("config", "want `config check --config FILE`"))
		} else {
			name, rest = "config check", rest[:1]
		}
	}
	c, ok := lookup(name)
	if !ok {
		fmt.Fprintf(stderr, "switchyard: unknown command %q\n\n%s", name, topUsage())
		return 2
	}
	return e.exit(name, c.run(ctx, e, rest))
}

// exit turns a command's error into the exit code, printing what the user
// needs: the command's usage for a usage error, the error otherwise.
func (e *env) exit(name string, err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		var h *helpError
		if !errors.As(err, &h) {
			h = &helpError{}
		}
		fmt.Fprint(e.stdout, commandUsage(name, h.fs))
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(e.stderr, "switchyard: %v\n\n%s", err, commandUsage(name, nil))
		return 2
	default:
		fmt.Fprintf(e.stderr, "switchyard %s: %v\n", name, err)
		return 1
	}
}

func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func isHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

func topUsage() string {
	var b strings.Builder
	b.WriteString("switchyard: carries apps from PartyKit to Inngest Realtime without an outage.\n\nUsage:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  switchyard %s %s\n        %s\n", c.name, c.args, c.summary)
	}
	b.WriteString("\nRun `switchyard help COMMAND` or `switchyard COMMAND --help` for a command's flags.\n")
	return b.String()
}

// commandUsage is a command's usage line, summary and flags (fs, when the
// command has a flag set; else the flags are rebuilt by running the
// command in help mode).
func commandUsage(name string, fs *flag.FlagSet) string {
	c, ok := lookup(name)
	if !ok {
		return topUsage()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: switchyard %s %s\n\n%s.\n", c.name, c.args, capitalize(c.summary))
	if name == "flags" {
		b.WriteString("\n" + flagsUsage)
		return b.String()
	}
	if fs == nil {
		fs = helpFlags(c)
	}
	if fs != nil {
		var any bool
		fs.VisitAll(func(*flag.Flag) { any = true })
		if any {
			b.WriteString("\nFlags:\n")
			fs.SetOutput(&b)
			fs.PrintDefaults()
		}
	}
	return b.String()
}

// helpFlags recovers a command's flag set by running it with --help: every
// command registers its flags before it parses, and parse hands the set
// back in a *helpError without running anything.
func helpFlags(c command) *flag.FlagSet {
	e := &env{getenv: func(string) string { return "" }, stdout: io.Discard, stderr: io.Discard}
	var h *helpError
	if errors.As(c.run(context.Background(), e, []string{"--help"}), &h) {
		return h.fs
	}
	return nil
}

// helpError is flag.ErrHelp with the flag set that was asked for help.
type helpError struct{ fs *flag.FlagSet }

func (h *helpError) Error() string { return flag.ErrHelp.Error() }
func (h *helpError) Unwrap() error { return flag.ErrHelp }

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// newFlags returns a command's FlagSet: errors are returned, never printed
// or turned into an exit.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses args with options allowed before, between and after the
// positional arguments, which it returns. -h/--help yields flag.ErrHelp.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &helpError{fs}
			}
			return nil, usageError(fs.Name(), "%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseNoArgs is parse for commands that take no positional argument.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	pos, err := parse(fs, args)
	if err == nil && len(pos) > 0 {
		err = usageError(fs.Name(), "unexpected argument %q", pos[0])
	}
	return err
}

func cmdVersion(ctx context.Context, e *env, args []string) error {
	if err := parseNoArgs(newFlags("version"), args); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, versionString())
	return nil
}

func versionString() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return fmt.Sprintf("switchyard %s (%s)", version, bi.GoVersion)
	}
	return "switchyard " + version
}

func cmdHelp(_ context.Context, e *env, args []string) error {
	name := strings.Join(args, " ")
	if name == "" || name == "help" || isHelp(name) {
		fmt.Fprint(e.stdout, topUsage())
		return nil
	}
	if _, ok := lookup(name); !ok {
		return usageError("help", "unknown command %q", name)
	}
	fmt.Fprint(e.stdout, commandUsage(name, nil))
	return nil
}

// loadConfig parses a --config flag set and loads the config it names.
func loadConfig(name string, args []string, getenv func(string) string) (*config.Config, error) {
	fs := newFlags(name)
	path := fs.String("config", "", "gateway config file (YAML; docs/configuration.md)")
	if err := parseNoArgs(fs, args); err != nil {
		return nil, err
	}
	if *path == "" {
		return nil, usageError(name, "%s needs --config FILE", name)
	}
	return config.Load(*path, getenv)
}

func cmdServe(ctx context.Context, e *env, args []string) error {
	cfg, err := loadConfig("serve", args, e.getenv)
	if err != nil {
		return err
	}
	logger, err := gateway.NewLogger(cfg.Log, e.stderr)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	e.strayLog.Store(logger.Named("lib"))
	g, err := gateway.New(cfg, logger, gateway.Options{Version: version})
	if err != nil {
		logger.Error("start failed", zap.Error(err))
		return err
	}
	return g.Run(ctx)
}

// cmdConfigCheck runs every check serve runs before it opens a socket
// (gateway.Check), then prints the config with every secret replaced by
// "[redacted]".
func cmdConfigCheck(ctx context.Context, e *env, args []string) error {
	cfg, err := loadConfig("config check", args, e.getenv)
	if err != nil {
		return err
	}
	if err := gateway.Check(cfg); err != nil {
		return err
	}
	out, err := yaml.Marshal(cfg.Redacted())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "# config is valid (env %s, %d apps, %d channels); secrets redacted\n%s", cfg.Env, len(cfg.Apps), len(cfg.Channels), out)
	return nil
}

func cmdDemo(ctx context.Context, e *env, args []string) error {
	fs := newFlags("demo")
	o := demo.Options{Version: version}
	fs.DurationVar(&o.Duration, "duration", 20*time.Second, "how long to send traffic")
	fs.IntVar(&o.Rate, "rate", 60, "messages per second, roughly")
	fs.DurationVar(&o.Every, "every", 2*time.Second, "table refresh period")
	fs.StringVar(&o.LogFile, "log", "", "gateway log file (default: a new switchyard-demo-*.log in the temporary directory)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if err := o.Validate(); err != nil {
		return usageError("demo", "%v", err)
	}
	o.Logger = func(l *zap.Logger) { e.strayLog.Store(l.Named("lib")) }
	return demo.Run(ctx, o, e.stdout)
}
