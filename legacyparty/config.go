// Package legacyparty is Switchyard's legacy transport: it publishes
// messages to PartyKit rooms over HTTP (Client) and watches rooms over
// WebSocket the way a browser does (Subscribe, Watcher), speaking the wire
// facts of shared/protocols.md. Its test server lives in partytest and a
// real PartyKit dev server for tests in partykitdev.
package legacyparty

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/upstream"
)

// Defaults of Config.
const (
	// DefaultParty is the party apps publish to ("main", the party of
	// partykit.json's "main" entry).
	DefaultParty = "main"
	// DefaultPathPrefix is the general route prefix: {prefix}/{party}/{room}.
	DefaultPathPrefix = "/parties"
	// AliasPathPrefix is PartyKit's alias of "/parties/main": with it the
	// path is {prefix}/{room} and only the party "main" can be addressed.
	// A partyserver/wrangler deployment has no alias.
	AliasPathPrefix = "/party"
	// DefaultSecretHeader is the header name the gateway config gives
	// SecretHeader when only Secret is set. Config itself applies no
	// default here: Validate wants both or neither.
	DefaultSecretHeader = "X-Party-Secret"
)

// Config locates one app's PartyKit deployment. The zero value is not
// valid: URL is required. Call Validate (NewClient and NewWatcher do).
//
// The room path is {URL}{PathPrefix}/{party}/{room}, where party is the
// message's Party, else Config.Party, and room is written as is: the
// alphabet of broadcast.ValidateRoom needs no escaping, so the segment is
// the one a browser's partysocket and an app's direct POST use for the id. With PathPrefix
// "/party" (AliasPathPrefix) the party segment is omitted, which PartyKit
// treats as party "main": Party must then be "" or "main", and so must the
// Party of every message published through it.
type Config struct {
	// URL is the base URL including the scheme, e.g. http://127.0.0.1:1999
	// (http or https; a trailing slash is ignored; no query or fragment).
	URL string
	// Party is the default party name (default "main").
	Party string
	// PathPrefix is the route prefix (default "/parties").
	PathPrefix string
	// SecretHeader and Secret, if set, are sent as a shared-secret header
	// on every publish (both or neither). The secret is never logged.
	SecretHeader string
	Secret       string
	// Policy is the publish deadline and retry policy (zero fields take
	// upstream's defaults).
	Policy upstream.Policy
}

// WithDefaults returns c with empty Party and PathPrefix filled in. With the
// alias prefix Party stays as given ("" and "main" are equivalent there).
func (c Config) WithDefaults() Config {
	c.URL = strings.TrimRight(c.URL, "/")
	if c.PathPrefix == "" {
		c.PathPrefix = DefaultPathPrefix
	}
	c.PathPrefix = strings.TrimRight(c.PathPrefix, "/")
	if c.Party == "" && c.PathPrefix != AliasPathPrefix {
		c.Party = DefaultParty
	}
	return c
}

// Validate reports every invalid field of c (after defaults), each naming
// it without a package prefix (url: missing scheme), in field order; it
// returns nil or an errors.Join of one error per problem. The URL must be
// http or https with a host and no path, query, fragment or credentials;
// PathPrefix must start with '/'; Party must pass ValidateParty (or be
// "main" with AliasPathPrefix); SecretHeader and Secret go together, the
// header a name of letters, digits and '-' (at most 64), the secret without
// line breaks or NUL; the Policy must not be negative.
func (c Config) Validate() error {
	var errs []error
	if err := validateBaseURL(c.URL, "http", "https"); err != nil {
		errs = append(errs, err)
	}
	c = c.WithDefaults()
	if err := validatePrefix(c.PathPrefix); err != nil {
		errs = append(errs, err)
	}
	if c.PathPrefix == AliasPathPrefix {
		if c.Party != "" && c.Party != DefaultParty {
			errs = append(errs, fmt.Errorf("party: %q cannot be addressed through the %q alias (only %q)", c.Party, AliasPathPrefix, DefaultParty))
		}
	} else if err := ValidateParty(c.Party); err != nil {
		errs = append(errs, fmt.Errorf("party: %w", err))
	}
	if (c.SecretHeader == "") != (c.Secret == "") {
		errs = append(errs, errors.New("secretHeader: secretHeader and secret must be set together"))
	}
	switch {
	case c.SecretHeader == "":
	case !validHeaderName(c.SecretHeader):
		errs = append(errs, fmt.Errorf("secretHeader: %q is not a valid header name (letters, digits and '-', at most 64)", c.SecretHeader))
	case upstream.WrittenByTransport(c.SecretHeader) || http.CanonicalHeaderKey(c.SecretHeader) == "Content-Type":
		errs = append(errs, fmt.Errorf("secretHeader: %q is a header every publish sets itself", c.SecretHeader))
	}
	if strings.ContainsFunc(c.Secret, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
		errs = append(errs, errors.New("secret: contains a control byte (a line break, NUL...)"))
	}
	p := c.Policy
	if p.Timeout < 0 || p.AttemptTimeout < 0 || p.MaxAttempts < 0 || p.BackoffBase < 0 || p.BackoffMax < 0 {
		errs = append(errs, errors.New("policy: durations and maxAttempts must not be negative"))
	}
	return errors.Join(errs...)
}

// MaxPartyLen is the longest party name, in bytes.
const MaxPartyLen = 64

// ValidateParty is the one rule for a party name, used by the config, the
// client and the watcher: 1 to MaxPartyLen ASCII letters, digits, '-' or
// '_' (a path segment PartyKit and partyserver route as is). The error does
// not name a field; callers prefix theirs.
func ValidateParty(name string) error {
	if name == "" {
		return errors.New("required")
	}
	if len(name) > MaxPartyLen {
		return fmt.Errorf("%d bytes, longer than %d", len(name), MaxPartyLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%q: character %q at byte %d is not allowed (letters, digits, '-', '_')", name, c, i)
		}
	}
	return nil
}

// roomPath returns {prefix}[/{party}]/{room}, the room unescaped (see
// Config). party "" means the configured default. It fails
// (EINVALID/EROOM *broadcast.Error) for a bad party or room.
func (c Config) roomPath(party, room string) (string, error) {
	return c.roomTarget("", party, room)
}

// roomTarget is base + roomPath(party, room), in one allocation.
func (c Config) roomTarget(base, party, room string) (string, error) {
	if err := broadcast.ValidateRoom(room); err != nil {
		return "", err
	}
	if c.PathPrefix == AliasPathPrefix {
		if party != "" && party != DefaultParty {
			return "", broadcast.Errorf(broadcast.EINVALID, "party: %q cannot be addressed through the %q alias", party, AliasPathPrefix)
		}
		return base + c.PathPrefix + "/" + room, nil
	}
	if party == "" {
		party = c.Party
	}
	if err := ValidateParty(party); err != nil {
		return "", broadcast.Errorf(broadcast.EINVALID, "party: %v", err)
	}
	return base + c.PathPrefix + "/" + party + "/" + room, nil
}

func validateBaseURL(raw string, schemes ...string) error {
	if raw == "" {
		return errors.New("url: required")
	}
	if !strings.Contains(raw, "://") {
		return errors.New("url: missing scheme (want e.g. http://127.0.0.1:1999)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("url: %w", err)
	}
	ok := false
	for _, s := range schemes {
		ok = ok || u.Scheme == s
	}
	if !ok {
		return fmt.Errorf("url: scheme %q not supported (want %s)", u.Scheme, strings.Join(schemes, " or "))
	}
	if u.Host == "" {
		return errors.New("url: missing host")
	}
	if u.User != nil {
		return errors.New("url: must not contain credentials")
	}
	if u.RawQuery != "" || u.Fragment != "" || strings.Contains(raw, "?") || strings.Contains(raw, "#") {
		return errors.New("url: must not contain a query or fragment")
	}
	if u.Path != "" && u.Path != "/" {
		return errors.New("url: must not carry a path (use pathPrefix)")
	}
	return nil
}

func validatePrefix(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("pathPrefix: %q must start with '/'", p)
	}
	if strings.ContainsAny(p, "?#% \t\r\n") {
		return fmt.Errorf("pathPrefix: %q contains a character that is not allowed", p)
	}
	return nil
}

// validHeaderName is the rule for SecretHeader: 1 to 64 ASCII letters,
// digits and '-' (a token every proxy passes through unchanged).
func validHeaderName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
