package flags

import (
	"encoding/json"
	"fmt"
	"io"
	"os/user"
	"strings"
	"text/tabwriter"
)

// View is one flag as `switchyard flags list --json` prints it.
type View struct {
	Flag      string          `json:"flag"`
	State     string          `json:"state"`
	Default   string          `json:"defaultVariant"`
	Variants  []string        `json:"variants"`
	Targeting json.RawMessage `json:"targeting,omitempty"`
}

// Views returns every flag of f, sorted by key.
func (f *File) Views() []View {
	views := make([]View, 0, len(f.Flags))
	for _, k := range f.Keys() {
		fl := f.Flags[k]
		views = append(views, View{Flag: k, State: fl.State, Default: fl.DefaultVariant, Variants: fl.VariantNames(), Targeting: fl.Targeting})
	}
	return views
}

// WriteTable prints f's flags as an aligned table (one flag a line,
// targeting cut to 60 runes) for people.
func (f *File) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FLAG\tSTATE\tDEFAULT\tVARIANTS\tTARGETING")
	for _, v := range f.Views() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Flag, v.State, orDash(v.Default),
			strings.Join(v.Variants, ","), TargetingSummary(v.Targeting, 60))
	}
	return tw.Flush()
}

// Describe prints one flag of f for people; an unknown key is an error
// that lists the known ones.
func (f *File) Describe(key string, w io.Writer) error {
	fl, ok := f.Flags[key]
	if !ok {
		return fmt.Errorf("unknown flag %q (known: %s)", key, strings.Join(f.Keys(), ", "))
	}
	_, err := fmt.Fprintf(w, "flag:      %s\nstate:     %s\ndefault:   %s\nvariants:  %s\ntargeting: %s\n",
		key, fl.State, orDash(fl.DefaultVariant), strings.Join(fl.VariantNames(), ", "), TargetingSummary(fl.Targeting, 0))
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// CurrentUser names who makes a change, for the audit record: $SUDO_USER,
// else $USER (through getenv), else the OS user, else "unknown".
func CurrentUser(getenv func(string) string) string {
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
