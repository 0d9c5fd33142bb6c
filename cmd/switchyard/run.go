package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/yaml.v3"

	"github.com/switchyard/switchyard/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `switchyard: carries apps from PartyKit to Inngest Realtime without an outage.

Usage:
  switchyard serve --config FILE        run the gateway
  switchyard demo [--duration 20s]      run an embedded demo (no outside service)
  switchyard config check --config FILE validate a config and print it, secrets redacted
  switchyard flags list|get|set|killswitch ...   read and flip stage flags (see docs/flags.md)
  switchyard canary --config FILE --app APP      check delivery on each transport once
  switchyard replay FILE --to URL --app APP [--speed N]   replay recorded traffic
  switchyard version                    print the version
`

// errUsage marks a command-line mistake: the usage is printed, exit code 2.
var errUsage = errors.New("usage")

// run is the whole program behind main: it parses args, runs the
// subcommand until it ends or ctx is cancelled, and returns the exit code
// (0 ok, 1 failure, 2 usage). getenv supplies the environment (for ${VAR}
// in configs); stdout gets command output, stderr logs and errors.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], getenv, stderr)
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "config":
		if len(args) < 2 || args[1] != "check" {
			err = fmt.Errorf("%w: want `config check --config FILE`", errUsage)
			break
		}
		err = cmdConfigCheck(args[2:], getenv, stdout)
	case "flags":
		err = runFlags(ctx, args[1:], stdout, stderr, getenv)
	case "canary":
		err = cmdCanary(ctx, args[1:], getenv, stdout, stderr)
	case "replay":
		err = cmdReplay(ctx, args[1:], getenv, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(stderr, "switchyard: %v\n\n%s", err, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "switchyard: %v\n", err)
		return 1
	}
}

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		return fmt.Sprintf("switchyard %s (%s)", v, bi.GoVersion)
	}
	return "switchyard " + v
}

// flagSet returns a FlagSet that reports errors instead of exiting.
func flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected argument %q", errUsage, fs.Name(), fs.Arg(0))
	}
	return nil
}

func loadConfig(args []string, name string, getenv func(string) string) (*config.Config, error) {
	fs := flagSet(name)
	path := fs.String("config", "", "config file")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if *path == "" {
		return nil, fmt.Errorf("%w: %s needs --config FILE", errUsage, name)
	}
	return config.Load(*path, getenv)
}

func cmdServe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := loadConfig(args, "serve", getenv)
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	g, err := newGateway(cfg, logger, gatewayHooks{})
	if err != nil {
		logger.Error("start failed", zap.Error(err))
		return err
	}
	return g.Run(ctx)
}

// cmdConfigCheck validates a config and prints it with every secret
// replaced by "[redacted]".
func cmdConfigCheck(args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(args, "config check", getenv)
	if err != nil {
		return err
	}
	out, err := yaml.Marshal(cfg.Redacted())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# config is valid (env %s, %d apps, %d channels); secrets redacted\n%s", cfg.Env, len(cfg.Apps), len(cfg.Channels), out)
	return nil
}

// newLogger builds the process logger writing to w. Nothing below main
// replaces zap's globals.
func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if strings.EqualFold(c.Format, "json") {
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), nil
}
