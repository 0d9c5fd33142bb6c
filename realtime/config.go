package realtime

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/switchyard/switchyard/upstream"
)

// DefaultChannelTemplate maps a room onto the Inngest channel
// "{app}:{party}:{room}", e.g. "ai-hero:main:video-42"; the configured
// channels become topics of that channel. Inngest takes any string as a
// channel name (it hashes it into its topic key, so the length does not
// matter) and its own examples separate the parts of a channel name with
// ':', as here. App names and parties cannot hold ':' (config and
// legacyparty rules), so the first two colons end the app and the party and
// every (app, party, room) has its own channel: two apps on one Inngest
// environment, or two parties of one app, never share one.
const DefaultChannelTemplate = "{app}:{party}:{room}"

// DefaultParty is the party {party} stands for when a message names none
// and Config.Party is empty: PartyKit's default party.
const DefaultParty = "main"

// Config is one app's Inngest Realtime configuration. It is plain data,
// validated once by Validate (NewClient calls it).
type Config struct {
	// URL is the API base, e.g. http://127.0.0.1:8288 (dev server) or
	// https://api.inngest.com. Paths /v1/realtime/... are appended.
	URL string
	// SigningKey is the app's signing key, signkey-{env}-{hex}. Empty sends
	// no Authorization header (the dev server needs none).
	SigningKey string
	// FallbackSigningKey is tried once when the upstream answers 401/403
	// with SigningKey (key rotation).
	FallbackSigningKey string
	// ChannelTemplate builds the Inngest channel from {room}, {app},
	// {party} and {channel} (the configured channel name); default
	// DefaultChannelTemplate. It must contain {room} so that rooms never
	// share a channel, and {party} when Parties holds more than one party.
	ChannelTemplate string
	// Party is what {party} stands for when a message names no party (the
	// app's configured PartyKit party); empty is DefaultParty.
	Party string
	// Parties are every party the app's messages may name (Party among
	// them); used by Validate only.
	Parties []string
	// Topics maps a configured channel name to its Inngest topic; a channel
	// absent from the map uses its own name as topic.
	Topics map[string]string
	// Policy is the deadline and retry policy of publish and token calls.
	Policy upstream.Policy
}

var (
	signingKeyRe = regexp.MustCompile(`^(signkey-[a-z0-9]+-)([0-9a-fA-F]+)$`)
	placeholders = map[string]bool{"{room}": true, "{app}": true, "{party}": true, "{channel}": true}
)

// Validate reports every problem of c, each naming its field by the yaml
// name above without a package prefix (url: missing scheme, channelTemplate:
// ..., topics["ai"]: ...), in field order; it returns nil or an
// errors.Join of one error per problem. The URL must be http or https with
// a host and no path, query, fragment or credentials; signing keys must
// pass HashSigningKey; ChannelTemplate must parse (empty is
// DefaultChannelTemplate) and name {party} when Parties holds two or more
// distinct parties; a topic is 1 to 256 bytes without whitespace and is
// not ProbeTopic. Whether templates of several apps can yield one channel
// is Overlap's question, asked by the gateway config.
func (c Config) Validate() error {
	var errs []error
	if err := validateURL(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("url: %w", err))
	}
	if c.SigningKey != "" {
		if _, err := HashSigningKey(c.SigningKey); err != nil {
			errs = append(errs, fmt.Errorf("signingKey: %w", err))
		}
	}
	if c.FallbackSigningKey != "" {
		if c.SigningKey == "" {
			errs = append(errs, errors.New("fallbackSigningKey: set without signingKey"))
		} else if _, err := HashSigningKey(c.FallbackSigningKey); err != nil {
			errs = append(errs, fmt.Errorf("fallbackSigningKey: %w", err))
		}
	}
	if segs, err := parseTemplate(c.ChannelTemplate); err != nil {
		errs = append(errs, fmt.Errorf("channelTemplate: %w", err))
	} else if ps := distinct(c.Parties); len(ps) > 1 && !hasPlaceholder(segs, "{party}") {
		errs = append(errs, fmt.Errorf("channelTemplate: %q has no {party}, but the app publishes to the parties %s: their rooms of one name would share a channel (use e.g. %q)",
			templateOrDefault(c.ChannelTemplate), strings.Join(ps, ", "), DefaultChannelTemplate))
	}
	chans := make([]string, 0, len(c.Topics))
	for ch := range c.Topics {
		chans = append(chans, ch)
	}
	sort.Strings(chans)
	for _, ch := range chans {
		if topic := c.Topics[ch]; ch == "" {
			errs = append(errs, errors.New("topics: empty channel name"))
		} else if topic == "" || strings.ContainsAny(topic, " \t\r\n") || len(topic) > 256 {
			errs = append(errs, fmt.Errorf("topics[%q]: topic %q must be 1 to 256 bytes without whitespace", ch, topic))
		} else if topic == ProbeTopic {
			errs = append(errs, fmt.Errorf("topics[%q]: topic %q is reserved for the comparator's readiness probes", ch, topic))
		}
	}
	return errors.Join(errs...)
}

// distinct returns the distinct non-empty strings of ss, in order.
func distinct(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func hasPlaceholder(segs []segment, ph string) bool {
	for _, s := range segs {
		if s.ph == ph {
			return true
		}
	}
	return false
}

func templateOrDefault(tpl string) string {
	if tpl == "" {
		return DefaultChannelTemplate
	}
	return tpl
}

// SigningKeyEnv returns the environment part of a signing key
// (signkey-{env}-{hex} gives env), or "" for no key or one that does not
// have that shape. Two apps with the same realtime URL and signing key env
// may publish into one Inngest environment.
func SigningKeyEnv(key string) string {
	m := signingKeyRe.FindStringSubmatch(key)
	if m == nil {
		return ""
	}
	return strings.TrimSuffix(strings.TrimPrefix(m[1], "signkey-"), "-")
}

func validateURL(raw string) error {
	if raw == "" {
		return errors.New("required")
	}
	if !strings.Contains(raw, "://") {
		return errors.New("missing scheme (want http:// or https://)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("scheme %q not supported (want http or https)", u.Scheme)
	case u.Host == "":
		return errors.New("missing host")
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("must not have a query or fragment")
	case u.User != nil:
		return errors.New("must not carry credentials")
	case u.Path != "" && u.Path != "/":
		return errors.New("must not carry a path (the API paths are appended to it)")
	}
	return nil
}

// HashSigningKey returns the bearer form of a signing key:
// signkey-{env}-{hex(sha256(hexdecode(keyhex)))}, prefix kept. It fails when
// key does not look like signkey-{env}-{hex} with an even number of hex
// digits. The error never contains the key.
func HashSigningKey(key string) (string, error) {
	m := signingKeyRe.FindStringSubmatch(key)
	if m == nil {
		return "", errors.New("must look like signkey-{env}-{hex}")
	}
	raw, err := hex.DecodeString(m[2])
	if err != nil {
		return "", errors.New("must look like signkey-{env}-{hex}: hex part does not decode")
	}
	sum := sha256.Sum256(raw)
	return m[1] + hex.EncodeToString(sum[:]), nil
}

// segment is one piece of a parsed channel template: literal text or a
// placeholder.
type segment struct {
	lit    string
	escLit string // url.QueryEscape(lit), set by NewClient
	ph     string // "", "{room}", "{app}" or "{channel}"
}

func parseTemplate(tpl string) ([]segment, error) {
	if tpl == "" {
		tpl = DefaultChannelTemplate
	}
	var segs []segment
	hasRoom := false
	rest := tpl
	for rest != "" {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			segs = append(segs, segment{lit: rest})
			break
		}
		if rest[i] == '}' {
			return nil, fmt.Errorf("unbalanced '}' in %q", tpl)
		}
		if i > 0 {
			segs = append(segs, segment{lit: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("unterminated placeholder in %q", tpl)
		}
		ph := rest[i : i+j+1]
		if !placeholders[ph] {
			return nil, fmt.Errorf("unknown placeholder %q (want {room}, {app}, {party} or {channel})", ph)
		}
		hasRoom = hasRoom || ph == "{room}"
		segs = append(segs, segment{ph: ph})
		rest = rest[i+j+1:]
	}
	if !hasRoom {
		return nil, fmt.Errorf("%q must contain {room}", tpl)
	}
	return segs, nil
}
