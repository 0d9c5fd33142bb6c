package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/switchyard/switchyard/flags"
)

const flagsUsage = `usage:
  switchyard flags list --file FILE
  switchyard flags get FLAG --file FILE
  switchyard flags set FLAG VARIANT --file FILE --env ENV --reason TEXT [options]
  switchyard flags killswitch on|off --file FILE --env ENV --reason TEXT [options]

set and killswitch options:
  --audit FILE        audit log (JSON lines); default FILE.audit.jsonl next to the flag file
  --admin URL         gateway admin API; its shadow summary for the channel is stored in the audit record
  --admin-token TOKEN bearer token for --admin (default $SWITCHYARD_ADMIN_TOKEN)
  --dry-run           validate and show the diff, write nothing

The flag file may also be given by $SWITCHYARD_FLAGS_FILE. See docs/flags.md.
`

// adminTimeout bounds the shadow summary request of set and killswitch.
const adminTimeout = 5 * time.Second

// runFlags implements "switchyard flags ..." (args exclude "flags"). It
// reads and edits a flagd flag file: list and get print, set and
// killswitch validate, show the diff, write atomically and append an audit
// record. Output goes to stdout, notes to stderr; the returned error is
// the reason for a non-zero exit.
func runFlags(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, flagsUsage)
		return errors.New("flags: missing command (list, get, set or killswitch)")
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("flags "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, flagsUsage) }
	o := flagsOptions{getenv: getenv}
	fs.StringVar(&o.file, "file", getenv("SWITCHYARD_FLAGS_FILE"), "flag file")
	if cmd == "set" || cmd == "killswitch" {
		fs.StringVar(&o.env, "env", "", "environment of the flag file")
		fs.StringVar(&o.reason, "reason", "", "why (required)")
		fs.StringVar(&o.audit, "audit", "", "audit file")
		fs.StringVar(&o.admin, "admin", "", "admin API base URL")
		fs.StringVar(&o.adminToken, "admin-token", "", "admin API token")
		fs.BoolVar(&o.dryRun, "dry-run", false, "show the diff only")
	}
	pos, err := parseInterspersed(fs, rest)
	if err != nil {
		return fmt.Errorf("flags %s: %w", cmd, err)
	}
	if o.file == "" {
		return fmt.Errorf("flags %s: --file is required (or $SWITCHYARD_FLAGS_FILE)", cmd)
	}
	switch cmd {
	case "list":
		if len(pos) != 0 {
			return fmt.Errorf("flags list: unexpected arguments %q", pos)
		}
		return flagsList(o.file, stdout)
	case "get":
		if len(pos) != 1 {
			return errors.New("flags get: want exactly one FLAG")
		}
		return flagsGet(o.file, pos[0], stdout)
	case "set":
		if len(pos) != 2 {
			return errors.New("flags set: want FLAG VARIANT")
		}
		return flagsSet(ctx, o, pos[0], pos[1], stdout, stderr)
	case "killswitch":
		if len(pos) != 1 || (pos[0] != "on" && pos[0] != "off") {
			return errors.New("flags killswitch: want on or off")
		}
		return flagsSet(ctx, o, flags.KillSwitchKey, pos[0], stdout, stderr)
	}
	fmt.Fprint(stderr, flagsUsage)
	return fmt.Errorf("flags: unknown command %q (want list, get, set or killswitch)", cmd)
}

type flagsOptions struct {
	file, env, reason, audit, admin, adminToken string
	dryRun                                      bool
	getenv                                      func(string) string
}

// parseInterspersed parses options placed before, between or after the
// positional arguments ("set FLAG VARIANT --env prod").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func flagsList(path string, stdout io.Writer) error {
	f, err := flags.LoadFile(path)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FLAG\tSTATE\tDEFAULT\tVARIANTS\tTARGETING")
	for _, k := range f.Keys() {
		fl := f.Flags[k]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k, fl.State, orDash(fl.DefaultVariant),
			strings.Join(fl.VariantNames(), ","), targetingSummary(fl.Targeting, 60))
	}
	return tw.Flush()
}

func flagsGet(path, key string, stdout io.Writer) error {
	f, err := flags.LoadFile(path)
	if err != nil {
		return err
	}
	fl, ok := f.Flags[key]
	if !ok {
		return fmt.Errorf("flags get: unknown flag %q (known: %s)", key, strings.Join(f.Keys(), ", "))
	}
	fmt.Fprintf(stdout, "flag:      %s\nstate:     %s\ndefault:   %s\nvariants:  %s\ntargeting: %s\n",
		key, fl.State, orDash(fl.DefaultVariant), strings.Join(fl.VariantNames(), ", "), targetingSummary(fl.Targeting, 0))
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// targetingSummary is the rule as compact JSON, cut to limit runes when
// limit > 0, or "none".
func targetingSummary(t json.RawMessage, limit int) string {
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

// auditRecord is one line of the audit file.
type auditRecord struct {
	Time   time.Time `json:"time"`
	User   string    `json:"user"`
	Host   string    `json:"host"`
	Env    string    `json:"env"`
	File   string    `json:"file"`
	Flag   string    `json:"flag"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
	// Shadow is the channel's entry of the admin shadow summary, as
	// served, or null when --admin was given but the summary could not be
	// had; absent without --admin.
	Shadow      json.RawMessage `json:"shadow,omitempty"`
	ShadowError string          `json:"shadowError,omitempty"`
}

func flagsSet(ctx context.Context, o flagsOptions, key, variant string, stdout, stderr io.Writer) error {
	if strings.TrimSpace(o.reason) == "" {
		return errors.New("flags: --reason is required: say why, it goes to the audit file")
	}
	if o.env == "" {
		return errors.New("flags: --env is required (the environment this flag file serves)")
	}
	f, err := flags.LoadFile(o.file)
	if err != nil {
		return err
	}
	if f.Env != "" && f.Env != o.env {
		return fmt.Errorf("flags: --env %s does not match the file's metadata.env %q: wrong file?", o.env, f.Env)
	}
	from, diff, err := f.Set(key, variant)
	if err != nil {
		return err
	}
	if diff == "" {
		fmt.Fprintf(stdout, "%s is already %s; nothing to do\n", key, variant)
		return nil
	}
	fmt.Fprint(stdout, diff)
	if f.Flags[key].Targeting != nil {
		fmt.Fprintf(stderr, "note: %s has targeting rules; %s applies only where they return null or no variant (see docs/flags.md)\n", key, variant)
	}
	if o.dryRun {
		fmt.Fprintln(stdout, "dry run: nothing written")
		return nil
	}
	auditPath := o.audit
	if auditPath == "" {
		auditPath = o.file + ".audit.jsonl"
	}
	rec := auditRecord{
		Time: time.Now().UTC(), User: currentUser(o.getenv), Env: o.env, File: o.file,
		Flag: key, From: from, To: variant, Reason: o.reason,
	}
	rec.Host, _ = os.Hostname()
	if o.admin != "" {
		token := o.adminToken
		if token == "" {
			token = o.getenv("SWITCHYARD_ADMIN_TOKEN")
		}
		snap, err := shadowSnapshot(ctx, o.admin, token, key)
		if err != nil {
			rec.Shadow, rec.ShadowError = json.RawMessage("null"), err.Error()
			fmt.Fprintf(stderr, "warning: no shadow snapshot in the audit record: %v\n", err)
		} else {
			rec.Shadow = snap
		}
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("flags: encode audit record: %w", err)
	}
	// Open the audit file before touching the flag file: a change that
	// cannot be audited is not made.
	af, err := os.OpenFile(auditPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("flags: open audit file: %w", err)
	}
	defer af.Close()
	if err := flags.WriteAtomic(o.file, f.Data); err != nil {
		return err
	}
	if _, err := af.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("flags: %s changed but the audit record was not written to %s: %w", key, auditPath, err)
	}
	if err := af.Close(); err != nil {
		return fmt.Errorf("flags: %s changed but closing the audit file %s failed: %w", key, auditPath, err)
	}
	fmt.Fprintf(stdout, "%s: %s -> %s (%s); audit: %s\n", key, orDash(from), variant, o.file, auditPath)
	return nil
}

func currentUser(getenv func(string) string) string {
	for _, k := range []string{"SUDO_USER", "USER"} {
		if v := getenv(k); v != "" {
			return v
		}
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "unknown"
}

// shadowSnapshot fetches GET {admin}/v1/admin/shadow/summary and returns
// the entry of key's channel as served: for the kill switch, the whole
// summary. It accepts a summary shaped {"channels": {C: {...}}},
// {"channels": [{"channel": C, ...}]}, [{"channel": C, ...}] or {C: {...}};
// several entries of one channel (one per app, say) are returned as an
// array.
func shadowSnapshot(ctx context.Context, admin, token, key string) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	url := strings.TrimRight(admin, "/") + "/v1/admin/shadow/summary"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("shadow summary: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("shadow summary: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("shadow summary: read: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("shadow summary: GET %s: HTTP %d", url, resp.StatusCode)
	}
	if !json.Valid(body) {
		return nil, fmt.Errorf("shadow summary: GET %s: response is not JSON", url)
	}
	if key == flags.KillSwitchKey {
		return compact(body), nil
	}
	channel := strings.TrimPrefix(key, flags.FlagPrefix)
	found := channelEntries(body, channel)
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("shadow summary: channel %q not in the summary", channel)
	case 1:
		return compact(found[0]), nil
	}
	arr, err := json.Marshal(found)
	if err != nil {
		return nil, fmt.Errorf("shadow summary: %w", err)
	}
	return arr, nil
}

func compact(b []byte) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

// channelEntries finds the summary entries of channel in the shapes
// shadowSnapshot documents.
func channelEntries(body []byte, channel string) []json.RawMessage {
	fromList := func(list []json.RawMessage) []json.RawMessage {
		var out []json.RawMessage
		for _, e := range list {
			var head struct {
				Channel string `json:"channel"`
			}
			if json.Unmarshal(e, &head) == nil && head.Channel == channel {
				out = append(out, e)
			}
		}
		return out
	}
	var list []json.RawMessage
	if json.Unmarshal(body, &list) == nil {
		return fromList(list)
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil {
		return nil
	}
	if chans, ok := obj["channels"]; ok {
		var byName map[string]json.RawMessage
		if json.Unmarshal(chans, &byName) == nil {
			if e, ok := byName[channel]; ok {
				return []json.RawMessage{e}
			}
			return nil
		}
		if json.Unmarshal(chans, &list) == nil {
			return fromList(list)
		}
		return nil
	}
	if e, ok := obj[channel]; ok {
		return []json.RawMessage{e}
	}
	return nil
}
