package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/switchyard/switchyard/adminclient"
	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/canary"
	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/flags"
	"github.com/switchyard/switchyard/gateway"
	"github.com/switchyard/switchyard/recording"
)

// adminTimeout bounds the shadow summary request of flags set and
// killswitch.
const adminTimeout = 5 * time.Second

// errCanaryFailed is returned when the canary ran but a transport failed;
// the verdict line on stdout says which.
var errCanaryFailed = errors.New("canary failed")

// cmdCanary is `switchyard canary --config FILE --app APP`: it subscribes
// like a browser to every transport the canary room's stage uses, publishes
// one synthetic message through the gateway, prints a one-line verdict and
// fails when a transport did not deliver it within --timeout.
func cmdCanary(ctx context.Context, e *env, args []string) error {
	fs := newFlags("canary")
	var o canary.Options
	var configPath, metricsFile string
	c := &adminclient.Client{}
	fs.StringVar(&configPath, "config", "", "gateway config file")
	fs.StringVar(&o.App, "app", "", "app to check")
	fs.StringVar(&o.Room, "room", canary.DefaultRoom, "room the canary message goes to")
	fs.StringVar(&o.Event, "event", canary.DefaultEvent, "event name of the canary message (its channel decides the stage)")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Second, "deadline for subscribing, and for the message to arrive on each transport")
	fs.StringVar(&c.Public, "gateway", "", "gateway base URL (default: http://{config listen})")
	fs.StringVar(&c.Admin, "admin", "", "admin base URL (default: http://{config admin.listen})")
	fs.StringVar(&c.AdminToken, "admin-token", "", "admin token (default: the config's admin.token)")
	fs.StringVar(&o.Key, "key", "", "app API key (default: env SWITCHYARD_CANARY_KEY, else the app's first apiKeys entry)")
	fs.StringVar(&metricsFile, "metrics-file", "", "write the canary metrics to this Prometheus text file (node_exporter textfile collector)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	switch {
	case configPath == "":
		return usageError("canary", "canary needs --config FILE")
	case o.App == "":
		return usageError("canary", "canary needs --app APP")
	case o.Timeout <= 0:
		return usageError("canary", "--timeout must be positive")
	}
	if err := broadcast.ValidateRoom(o.Room); err != nil {
		return usageError("canary", "--room: %v", err)
	}
	cfg, err := config.Load(configPath, e.getenv)
	if err != nil {
		return err
	}
	app, ok := cfg.Apps[o.App]
	if !ok {
		return usageError("canary", "app %q is not in %s (apps: %s)", o.App, configPath, strings.Join(cfg.AppNames(), ", "))
	}
	if c.Public == "" {
		c.Public = "http://" + dialAddr(cfg.Listen)
	}
	if c.Admin == "" {
		c.Admin = "http://" + dialAddr(cfg.Admin.Listen)
	}
	if c.AdminToken == "" {
		c.AdminToken = cfg.Admin.Token
	}
	if o.Key == "" {
		o.Key = e.getenv("SWITCHYARD_CANARY_KEY")
	}
	if o.Key == "" && len(app.APIKeys) > 0 {
		o.Key = app.APIKeys[0]
	}
	if o.Key == "" {
		return usageError("canary", "no API key: pass --key, set SWITCHYARD_CANARY_KEY, or give apps.%s.apiKeys", o.App)
	}
	logger, err := gateway.NewLogger(config.Log{Level: "warn", Format: cfg.Log.Format}, e.stderr)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	c.HTTP = &http.Client{Timeout: o.Timeout + 5*time.Second}
	res := canary.Run(ctx, o, app, c, logger)
	fmt.Fprintln(e.stdout, res.Verdict(o.App, o.Timeout))
	if metricsFile != "" {
		if err := canary.WriteMetrics(metricsFile, o.App, res, time.Now()); err != nil {
			return fmt.Errorf("--metrics-file: %w", err)
		}
	}
	if !res.OK() {
		return errCanaryFailed
	}
	return nil
}

// dialAddr turns a listen address into one to dial: an unspecified host
// (":8080", "0.0.0.0:8080", "[::]:8080") becomes loopback.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// cmdReplay is `switchyard replay FILE --to URL --app APP ...`: it replays
// a recording through POST /v1/broadcast and reports the comparator's
// parity for the replayed traffic. It fails on a malformed file before
// sending anything, and when any message failed.
func cmdReplay(ctx context.Context, e *env, args []string) error {
	fs := newFlags("replay")
	var o recording.ReplayOptions
	c := &adminclient.Client{HTTP: &http.Client{Timeout: 30 * time.Second}}
	fs.StringVar(&c.Public, "to", "", "gateway base URL (public listener)")
	fs.StringVar(&o.App, "app", "", "app whose messages to replay (the key must be this app's)")
	fs.StringVar(&o.Key, "key", "", "app API key (default: env SWITCHYARD_REPLAY_KEY)")
	fs.Float64Var(&o.Speed, "speed", 1, "time scale: 2 is twice as fast, 0 as fast as possible (per-room order kept)")
	fs.StringVar(&c.Admin, "admin", "", "admin base URL, for the comparator's parity summary")
	fs.StringVar(&c.AdminToken, "admin-token", "", "admin token (default: env SWITCHYARD_ADMIN_TOKEN)")
	fs.IntVar(&o.Concurrency, "concurrency", 16, "most requests in flight")
	fs.DurationVar(&o.Settle, "settle", 8*time.Second, "longest wait for the comparator to decide the replayed messages")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return usageError("replay", "replay needs exactly one recording FILE, got %d", len(pos))
	case c.Public == "":
		return usageError("replay", "replay needs --to URL (the gateway)")
	case o.App == "":
		return usageError("replay", "replay needs --app APP")
	case o.Speed < 0:
		return usageError("replay", "--speed must be 0 or more")
	case o.Concurrency < 1:
		return usageError("replay", "--concurrency must be at least 1")
	}
	o.File = pos[0]
	if o.Key == "" {
		o.Key = e.getenv("SWITCHYARD_REPLAY_KEY")
	}
	if o.Key == "" {
		return usageError("replay", "replay needs --key KEY or env SWITCHYARD_REPLAY_KEY")
	}
	if c.AdminToken == "" {
		c.AdminToken = e.getenv("SWITCHYARD_ADMIN_TOKEN")
	}
	for _, u := range []struct{ flag, v string }{{"--to", c.Public}, {"--admin", c.Admin}} {
		if u.v == "" {
			continue
		}
		if err := adminclient.CheckBaseURL(u.v); err != nil {
			return usageError("replay", "%s %v", u.flag, err)
		}
	}
	f, err := os.Open(o.File)
	if err != nil {
		return err
	}
	entries, err := recording.Read(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", o.File, err)
	}
	return recording.Replay(ctx, o, entries, c, e.stdout)
}

const flagsUsage = `Commands:
  switchyard flags list (--file FILE | --source URL) [--json]
  switchyard flags get FLAG (--file FILE | --source URL)
  switchyard flags set FLAG VARIANT (--file FILE | --source URL) --env ENV --reason TEXT [options]
  switchyard flags killswitch on|off (--file FILE | --source URL) --env ENV --reason TEXT [options]

--source is the flag document every replica of an environment polls (flags
provider blob): s3://BUCKET/KEY.json?region=R, gs://BUCKET/KEY.json,
azblob://CONTAINER/KEY.json or file:///DIR/KEY.json.

set and killswitch options:
  --audit FILE        audit log (JSON lines); default FILE.audit.jsonl next to the flag file
                      (for --source: the object KEY.json.audit.jsonl beside the document)
  --admin URL         gateway admin API; its shadow summary for the channel is stored in the audit record
  --admin-token TOKEN bearer token for --admin (default $SWITCHYARD_ADMIN_TOKEN)
  --dry-run           validate and show the diff, write nothing

The flag file may also be given by $SWITCHYARD_FLAGS_FILE, the source by
$SWITCHYARD_FLAGS_SOURCE. See docs/flags.md.
`

func cmdFlags(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && isHelp(args[0]) {
		return &helpError{}
	}
	return runFlags(ctx, args, e.stdout, e.stderr, e.getenv)
}

// flagsOptions are the flags of `switchyard flags ...`.
type flagsOptions struct {
	file, source, env, reason, audit, adminToken string
	admin                                        string
	dryRun, json                                 bool
	getenv                                       func(string) string
}

// runFlags implements "switchyard flags ..." (args exclude "flags"). It
// reads and edits a flagd flag file: list and get print, set and
// killswitch validate, show the diff, write atomically and append an audit
// record (flags.Change). Output goes to stdout, notes to stderr; the
// returned error is the reason for a non-zero exit.
func runFlags(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return usageError("flags", "missing command (list, get, set or killswitch)")
	}
	cmd, rest := args[0], args[1:]
	fs := newFlags("flags " + cmd)
	o := flagsOptions{getenv: getenv}
	fs.StringVar(&o.file, "file", getenv("SWITCHYARD_FLAGS_FILE"), "flag file")
	fs.StringVar(&o.source, "source", getenv("SWITCHYARD_FLAGS_SOURCE"), "shared flag document URL (provider blob)")
	switch cmd {
	case "list":
		fs.BoolVar(&o.json, "json", false, "print the flags as a JSON array")
	case "set", "killswitch":
		fs.StringVar(&o.env, "env", "", "environment of the flag file")
		fs.StringVar(&o.reason, "reason", "", "why (required)")
		fs.StringVar(&o.audit, "audit", "", "audit file")
		fs.StringVar(&o.admin, "admin", "", "admin API base URL")
		fs.StringVar(&o.adminToken, "admin-token", "", "admin API token")
		fs.BoolVar(&o.dryRun, "dry-run", false, "show the diff only")
	case "get":
	default:
		return usageError("flags", "unknown command %q (want list, get, set or killswitch)", cmd)
	}
	pos, err := parse(fs, rest)
	if err != nil {
		return err
	}
	switch {
	case o.file == "" && o.source == "":
		return usageError("flags "+cmd, "--file or --source is required (or $SWITCHYARD_FLAGS_FILE, $SWITCHYARD_FLAGS_SOURCE)")
	case o.file != "" && o.source != "":
		return usageError("flags "+cmd, "--file and --source are exclusive: name the flag file or the shared source, not both")
	}
	switch cmd {
	case "list":
		if len(pos) != 0 {
			return usageError("flags list", "unexpected arguments %q", pos)
		}
		f, err := o.load(ctx)
		if err != nil {
			return err
		}
		if o.json {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(f.Views())
		}
		return f.WriteTable(stdout)
	case "get":
		if len(pos) != 1 {
			return usageError("flags get", "want exactly one FLAG")
		}
		f, err := o.load(ctx)
		if err != nil {
			return err
		}
		return f.Describe(pos[0], stdout)
	case "set":
		if len(pos) != 2 {
			return usageError("flags set", "want FLAG VARIANT")
		}
		return flagsSet(ctx, o, pos[0], pos[1], stdout, stderr)
	default: // killswitch
		if len(pos) != 1 || (pos[0] != "on" && pos[0] != "off") {
			return usageError("flags killswitch", "want on or off")
		}
		return flagsSet(ctx, o, flags.KillSwitchKey, pos[0], stdout, stderr)
	}
}

// load reads and validates the flag file or the shared source's document.
func (o flagsOptions) load(ctx context.Context) (*flags.File, error) {
	if o.source == "" {
		return flags.LoadFile(o.file)
	}
	ctx, cancel := context.WithTimeout(ctx, sourceTimeout)
	defer cancel()
	st, err := flags.OpenBlob(ctx, o.source)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	data, _, err := st.Read(ctx)
	if err != nil {
		return nil, err
	}
	f, err := flags.ParseFile(data, nil)
	if err != nil {
		return nil, fmt.Errorf("flags: %s: %w", o.source, err)
	}
	f.Path = o.source
	return f, nil
}

// sourceTimeout bounds the reads of a shared flag source.
const sourceTimeout = 30 * time.Second

func flagsSet(ctx context.Context, o flagsOptions, key, variant string, stdout, stderr io.Writer) error {
	if strings.TrimSpace(o.reason) == "" {
		return errors.New("--reason is required: say why, it goes to the audit file")
	}
	if o.env == "" {
		return errors.New("--env is required (the environment this flag file serves)")
	}
	var ch *flags.Change
	var err error
	if o.source != "" {
		sctx, cancel := context.WithTimeout(ctx, sourceTimeout)
		defer cancel()
		st, err := flags.OpenBlob(sctx, o.source)
		if err != nil {
			return err
		}
		defer st.Close()
		ch, err = flags.PrepareBlobChange(sctx, st, o.env, key, variant)
		if err != nil {
			return err
		}
	} else if ch, err = flags.PrepareChange(o.file, o.env, key, variant); err != nil {
		return err
	}
	if ch.Diff == "" {
		fmt.Fprintf(stdout, "%s is already %s; nothing to do\n", key, variant)
		return nil
	}
	fmt.Fprint(stdout, ch.Diff)
	if ch.Targeting {
		fmt.Fprintf(stderr, "note: %s has targeting rules; %s applies only where they return null or no variant (see docs/flags.md)\n", key, variant)
	}
	if o.dryRun {
		fmt.Fprintln(stdout, "dry run: nothing written")
		return nil
	}
	auditPath := o.audit
	if auditPath == "" && o.source == "" {
		auditPath = flags.DefaultAuditFile(o.file)
	}
	rec := flags.AuditRecord{User: flags.CurrentUser(o.getenv), Reason: o.reason}
	rec.Host, _ = os.Hostname()
	if o.admin != "" {
		token := o.adminToken
		if token == "" {
			token = o.getenv("SWITCHYARD_ADMIN_TOKEN")
		}
		snap, err := shadowSnapshot(ctx, &adminclient.Client{Admin: o.admin, AdminToken: token}, key)
		if err != nil {
			rec.Shadow, rec.ShadowError = json.RawMessage("null"), err.Error()
			fmt.Fprintf(stderr, "warning: no shadow snapshot in the audit record: %v\n", err)
		} else {
			rec.Shadow = snap
		}
	}
	if err := ch.Commit(auditPath, rec); err != nil {
		return err
	}
	where := o.file
	if o.source != "" {
		where = o.source
		if auditPath == "" {
			auditPath = o.source + ".audit.jsonl"
		}
	}
	fmt.Fprintf(stdout, "%s: %s -> %s (%s); audit: %s\n", key, cmp.Or(ch.From, "-"), variant, where, auditPath)
	return nil
}

// shadowSnapshot reads the admin shadow summary and returns what the audit
// record keeps of it (shadow.Summary.Snapshot): the whole summary for the
// kill switch, the flag's channel's rows otherwise.
func shadowSnapshot(ctx context.Context, c *adminclient.Client, key string) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	sum, err := c.ShadowSummary(ctx)
	if err != nil {
		return nil, fmt.Errorf("shadow summary: %w", err)
	}
	channel := ""
	if key != flags.KillSwitchKey {
		channel = strings.TrimPrefix(key, flags.FlagPrefix)
	}
	snap, err := sum.Snapshot(channel)
	if err != nil {
		return nil, fmt.Errorf("shadow summary: %w", err)
	}
	return snap, nil
}
