package broadcast

import (
	"errors"
	"fmt"
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

// NewChannels validates specs and builds the event to channel mapping. A
// channel name must be 1 to MaxChannelNameLen lower-case ASCII letters,
// digits and '-', must not be "default" or "killswitch" (reserved flag
// keys), and must be unique; each channel needs at least one event; an event
// name must be non-empty valid UTF-8 of at most 256 bytes and belong to one
// channel only. The error lists every problem, each naming the spec index
// and the offending value.
func NewChannels(specs []ChannelSpec) (*Channels, error) {
	c := &Channels{byEvent: make(map[string]string), names: make([]string, 0, len(specs)+1)}
	var errs []error
	seen := make(map[string]bool, len(specs))
	for i, s := range specs {
		switch {
		case !validChannelName(s.Name):
			errs = append(errs, fmt.Errorf("channels[%d].name: %q must be 1-%d lower-case letters, digits and '-'", i, s.Name, MaxChannelNameLen))
		case s.Name == DefaultChannel || s.Name == "killswitch":
			errs = append(errs, fmt.Errorf("channels[%d].name: %q is reserved", i, s.Name))
		case seen[s.Name]:
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
			case len(ev) > 256 || !utf8.ValidString(ev):
				errs = append(errs, fmt.Errorf("channels[%d].events[%d]: event name must be valid UTF-8 of at most 256 bytes", i, j))
			case dup:
				errs = append(errs, fmt.Errorf("channels[%d].events[%d]: event %q already belongs to channel %q", i, j, ev, prev))
			default:
				c.byEvent[ev] = s.Name
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("broadcast: channels: %w", errors.Join(errs...))
	}
	c.names = append(c.names, DefaultChannel)
	return c, nil
}

func validChannelName(s string) bool {
	if s == "" || len(s) > MaxChannelNameLen {
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
