package shadow

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Defaults applied by New (through Config.WithDefaults) to zero Config
// fields. These are the gateway's defaults too: its config leaves them to
// this package.
const (
	DefaultTimeout = 5 * time.Second
	DefaultIdleTTL = 5 * time.Minute
	// DefaultMaxRooms is DefaultRoomBudget / RoomCostBytes (2048 rooms).
	DefaultMaxRooms   = DefaultRoomBudget / RoomCostBytes
	DefaultMaxPending = 20000
	DefaultWindow     = 15 * time.Minute
	DefaultQueueSize  = 4096
	// DefaultReadyWait bounds how long the answering publish of a sampled
	// message waits for the answering transport's watch of its room. It
	// covers the slowest time to ready measured on loopback dev servers
	// (PartyKit's fresh-room dial p99 under 100 ms, Inngest's probe p99
	// under 40 ms; docs/shadow.md) with a margin for a loaded host.
	DefaultReadyWait = 250 * time.Millisecond
	// MaxReadyWait is the largest ReadyWait Validate accepts: the wait is
	// on the caller's path.
	MaxReadyWait = 2 * time.Second
	// ReadyWaitOff as ReadyWait turns the wait off: the answering publish
	// of a message whose watch is not ready goes at once, and that copy is
	// unobserved unless the watch happens to see it.
	ReadyWaitOff time.Duration = -1
)

// The cost of an observed room and the memory budget the default
// MaxRooms is derived from (docs/shadow.md, "Bounds").
const (
	// RoomCostBytes is what one observed room costs, measured against the
	// real dev servers by test/adversarial's TestHeldRoomCost (1,000
	// rooms, two runs) and rounded up: its PartyKit subscription 22-26 KiB
	// of heap and goroutine stacks (23-31 KiB resident) and one file
	// descriptor; its Inngest subscription, a sub on the app's one shared
	// connection, 5-11 KiB (5-24 KiB resident) and no descriptor of its
	// own; the comparator's own state under 1 KiB. The suite fails when the
	// measured heap cost exceeds 1.5 times this figure.
	RoomCostBytes = 48 << 10
	// DefaultRoomBudget is the memory the observed rooms may take when
	// maxRooms is not set: 96 MiB, so 2048 rooms and as many sockets.
	DefaultRoomBudget = 96 << 20
)

// Config tunes the comparator. Zero fields take the defaults above. It is
// read once by New and not retained by reference.
type Config struct {
	// Timeout is how long after Expect a copy may still arrive before the
	// message is decided missing on that side; also how long a decided
	// message is kept to detect duplicate copies.
	Timeout time.Duration
	// IdleTTL closes a room's subscriptions after no message was expected
	// in it for this long.
	IdleTTL time.Duration
	// MaxRooms caps the observed rooms, bursts included: at no moment do
	// more rooms hold (or wait for) subscriptions. A message of a new room
	// that finds the table full is unobserved and makes the comparator
	// close the least recently used rooms; the room is admitted on a later
	// message. Each room costs about RoomCostBytes and, on PartyKit, one
	// file descriptor.
	MaxRooms int
	// MaxPending caps the expectations held at once; past it a message is
	// counted dropped instead of being compared.
	MaxPending int
	// Window is the length of the sliding window Summary covers (15
	// buckets).
	Window time.Duration
	// Channels holds per-channel rules by channel name.
	Channels map[string]ChannelConfig
	// QueueSize bounds the received frames waiting to be processed, over
	// all workers; a frame that does not fit is dropped, and a message that
	// then misses a copy is counted dropped rather than missing.
	QueueSize int
	// ReadyWait bounds how long AwaitWatch holds the answering publish of
	// a sampled message whose room's watch on the answering transport is
	// not ready yet (DefaultReadyWait when zero, ReadyWaitOff to publish
	// at once). Past it the copy is published and, unless the watch sees
	// it anyway, the message is unobserved with the reason
	// <transport>_not_ready. The off-path copy waits in its lane instead,
	// bounded by the multicaster's off-path timeout.
	ReadyWait time.Duration
}

// ChannelConfig holds the comparison rules of one channel. Paths use the
// syntax of docs/shadow.md from the envelope root: "body.updatedAt",
// "body.items[*].ts", `body["a.b"]`.
type ChannelConfig struct {
	// IgnorePaths are removed from the original and from both copies
	// before comparing.
	IgnorePaths []string
	// RedactPaths have their values shown as "[redacted]" in logs and
	// examples; they are still compared.
	RedactPaths []string
	// Timeout overrides Config.Timeout for this channel when positive.
	Timeout time.Duration
}

// Validate reports every invalid field of c, each naming it without a
// package prefix: negative durations or sizes (timeout: -1s is negative;
// ReadyWaitOff is not one), a readyWait over MaxReadyWait, and every
// channel's problems (channels.ai.ignorePaths[0]: ..., see
// ChannelConfig.Validate). It returns nil or an errors.Join of one error
// per problem. Zero fields are valid: they take the defaults.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"timeout", c.Timeout}, {"idleTTL", c.IdleTTL}, {"window", c.Window}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %v is negative", f.name, f.v))
		}
	}
	switch {
	case c.ReadyWait == ReadyWaitOff:
	case c.ReadyWait < 0:
		errs = append(errs, fmt.Errorf("readyWait: %v is negative", c.ReadyWait))
	case c.ReadyWait > MaxReadyWait:
		errs = append(errs, fmt.Errorf("readyWait: %v is over %v (the wait is on the caller's path)", c.ReadyWait, MaxReadyWait))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"maxRooms", c.MaxRooms}, {"maxPending", c.MaxPending}, {"queueSize", c.QueueSize}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %d is negative", f.name, f.v))
		}
	}
	names := make([]string, 0, len(c.Channels))
	for n := range c.Channels {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		errs = append(errs, c.Channels[n].problems("channels."+n+".")...)
	}
	return errors.Join(errs...)
}

// Validate reports every invalid field of one channel's rules, each naming
// it without a prefix: a negative timeout, and each ignore or redact path
// that does not parse (ignorePaths[0]: path "body..x": empty key at byte
// 5). It returns nil or an errors.Join of one error per problem.
func (c ChannelConfig) Validate() error { return errors.Join(c.problems("")...) }

// problems lists the channel's problems, each field name after prefix.
func (c ChannelConfig) problems(prefix string) []error {
	var errs []error
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%stimeout: %v is negative", prefix, c.Timeout))
	}
	for i, p := range c.IgnorePaths {
		if _, err := parsePath(p); err != nil {
			errs = append(errs, fmt.Errorf("%signorePaths[%d]: %w", prefix, i, err))
		}
	}
	for i, p := range c.RedactPaths {
		if _, err := parsePath(p); err != nil {
			errs = append(errs, fmt.Errorf("%sredactPaths[%d]: %w", prefix, i, err))
		}
	}
	return errs
}

// WithDefaults returns c with every zero or negative size and duration set
// to its Default* constant (ReadyWaitOff is kept). New applies it; a configuration loader that
// shows the effective values calls it instead of copying the constants.
func (c Config) WithDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.IdleTTL <= 0 {
		c.IdleTTL = DefaultIdleTTL
	}
	if c.MaxRooms <= 0 {
		c.MaxRooms = DefaultMaxRooms
	}
	if c.MaxPending <= 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.ReadyWait == 0 || (c.ReadyWait < 0 && c.ReadyWait != ReadyWaitOff) {
		c.ReadyWait = DefaultReadyWait
	}
	return c
}

// rules are the parsed comparison rules of one channel.
type rules struct {
	ignore  [][]segment
	redact  [][]segment
	timeout time.Duration
}
