package broadcast

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"unicode/utf8"
)

// ChannelSpec is one configured channel: a name (its flag key is
// "realtime-<name>") and the exact event names that belong to it.
type ChannelSpec struct {
	Name   string
	Events []string
}

// Channels maps event names to channel names. It is built once by
// NewChannels, read-only afterwards and safe for concurrent use.
type Channels struct {
	byEvent map[string]string
	names   []string
}

// MaxChannelNameLen is the longest channel name.
const MaxChannelNameLen = 63

// reservedChannels are the names no configured channel may take: the
// implicit channel of unmatched events and the kill switch flag's suffix.
var reservedChannels = [...]string{DefaultChannel, "killswitch"}

// ValidateChannelName is the one rule for a channel name, used by
// NewChannels, flags.Config.Validate and the gateway config: 1 to MaxChannelNameLen lower-case
// ASCII letters, digits and '-', starting with a letter or digit (the name
// becomes the flag key "realtime-<name>"), and not "default" or
// "killswitch" (reserved flag keys). The error starts with the quoted name
// and does not name a field; callers prefix their field path.
func ValidateChannelName(name string) error {
	for _, r := range reservedChannels {
		if name == r {
			return fmt.Errorf("%q is reserved", name)
		}
	}
	if !validChannelName(name) {
		return fmt.Errorf("%q must be 1-%d lower-case letters, digits and '-', starting with a letter or digit", name, MaxChannelNameLen)
	}
	return nil
}

// MaxEventNameLen is the longest event name, in bytes.
const MaxEventNameLen = 256

// ValidateChannels reports every problem of specs, each naming its spec by
// index the way the gateway config does (channels[1].name: ...,
// channels[0].events[2]: ...): a name that fails ValidateChannelName or is
// used twice, a channel without events, an event name that is empty, not
// valid UTF-8 or longer than MaxEventNameLen bytes, and an event listed by
// two channels. No specs at all is valid (every event is then in
// DefaultChannel). It returns nil or an errors.Join of one error per
// problem, without a package prefix.
func ValidateChannels(specs []ChannelSpec) error {
	_, err := NewChannels(specs)
	return err
}

// NewChannels validates specs (see ValidateChannels) and builds the event
// to channel mapping. The error is the one ValidateChannels returns.
func NewChannels(specs []ChannelSpec) (*Channels, error) {
	c := &Channels{byEvent: make(map[string]string), names: make([]string, 0, len(specs)+1)}
	var errs []error
	seen := make(map[string]bool, len(specs))
	for i, s := range specs {
		if err := ValidateChannelName(s.Name); err != nil {
			errs = append(errs, fmt.Errorf("channels[%d].name: %w", i, err))
		} else if seen[s.Name] {
			errs = append(errs, fmt.Errorf("channels[%d].name: %q is defined twice", i, s.Name))
		}
		seen[s.Name] = true
		c.names = append(c.names, s.Name)
		if len(s.Events) == 0 {
			errs = append(errs, fmt.Errorf("channels[%d].events: channel %q needs at least one event", i, s.Name))
		}
		for j, ev := range s.Events {
			switch prev, dup := c.byEvent[ev]; {
			case ev == "":
				errs = append(errs, fmt.Errorf("channels[%d].events[%d]: empty event name", i, j))
			case len(ev) > MaxEventNameLen || !utf8.ValidString(ev):
				errs = append(errs, fmt.Errorf("channels[%d].events[%d]: event name must be valid UTF-8 of at most %d bytes", i, j, MaxEventNameLen))
			case dup:
				errs = append(errs, fmt.Errorf("channels[%d].events[%d]: event %q already belongs to channel %q", i, j, ev, prev))
			default:
				c.byEvent[ev] = s.Name
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c.names = append(c.names, DefaultChannel)
	return c, nil
}

func validChannelName(s string) bool {
	if s == "" || len(s) > MaxChannelNameLen || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// Of returns the channel event belongs to, or DefaultChannel for an event
// no channel lists. It allocates nothing.
func (c *Channels) Of(event string) string {
	if ch, ok := c.byEvent[event]; ok {
		return ch
	}
	return DefaultChannel
}

// Names returns the configured channel names in configuration order followed
// by DefaultChannel: every value Of can return. The slice is a fresh copy the
// caller owns.
func (c *Channels) Names() []string { return slices.Clone(c.names) }

// Events returns every configured event name mapped to its channel (events
// not listed are in DefaultChannel). The map is a fresh copy the caller
// owns.
func (c *Channels) Events() map[string]string { return maps.Clone(c.byEvent) }
