package realtime

import (
	"fmt"
	"slices"

	"github.com/switchyard/switchyard/broadcast"
)

// Scope is every channel name one app's template can produce: the template
// expanded with the app's name, each of its parties and each configured
// channel name, for every room id broadcast.ValidateRoom allows.
type Scope struct {
	// Template is the channel template ("" is DefaultChannelTemplate).
	Template string
	// App is the app's name ({app}).
	App string
	// Parties are every party the app publishes to ({party}); empty is
	// DefaultParty alone.
	Parties []string
	// Channels are every configured channel name, broadcast.DefaultChannel
	// included ({channel}); empty is DefaultChannel alone.
	Channels []string
}

// Overlap reports whether a and b can yield one channel name, and returns
// such a name (a short one: the search is breadth first). Room ids are taken as any non-empty
// string of their alphabet (the MaxRoomLen bound and the "." and ".."
// exceptions are left out, which can only find more overlaps, never miss
// one). It fails only for a template that does not parse.
//
// The gateway config asks it for every two apps on one realtime
// environment: an overlap means a token of one app for some room can
// receive another app's messages.
func Overlap(a, b Scope) (string, bool, error) {
	na, err := compile(a)
	if err != nil {
		return "", false, err
	}
	nb, err := compile(b)
	if err != nil {
		return "", false, err
	}
	w, ok := intersect(na, nb)
	return w, ok, nil
}

// Collision reports two different (party, room) pairs of s that can yield
// one channel name: for two of its parties, a channel name both can yield,
// and when the template names {channel}, for two configured channels of
// one party, a name both can yield (rooms of one party and channel map
// one-to-one by construction: {room} is the only varying part). It returns
// nil when none can, or an error naming the parties or channels and the
// channel name. Parties without {party} are Config.Validate's refusal; here
// they only make the overlap explicit.
func (s Scope) Collision() error {
	segs, err := parseTemplate(s.Template)
	if err != nil {
		return err
	}
	parties := distinct(s.Parties)
	if len(parties) == 0 {
		parties = []string{DefaultParty}
	}
	for i := range parties {
		for j := i + 1; j < len(parties); j++ {
			a, b := s, s
			a.Parties, b.Parties = parties[i:i+1], parties[j:j+1]
			if w, ok, _ := Overlap(a, b); ok {
				return fmt.Errorf("%q yields %q for a room of party %q and for a room of party %q", templateOrDefault(s.Template), w, parties[i], parties[j])
			}
		}
	}
	if !hasPlaceholder(segs, "{channel}") {
		return nil
	}
	chans := distinct(s.Channels)
	for _, p := range parties {
		for i := range chans {
			for j := i + 1; j < len(chans); j++ {
				a, b := s, s
				a.Parties, b.Parties = []string{p}, []string{p}
				a.Channels, b.Channels = chans[i:i+1], chans[j:j+1]
				if w, ok, _ := Overlap(a, b); ok {
					return fmt.Errorf("%q yields %q for a room's channel %q and for another room's channel %q", templateOrDefault(s.Template), w, chans[i], chans[j])
				}
			}
		}
	}
	return nil
}

// byteSet is a set of bytes.
type byteSet [4]uint64

func (s *byteSet) add(c byte)      { s[c>>6] |= 1 << (c & 63) }
func (s *byteSet) has(c byte) bool { return s[c>>6]&(1<<(c&63)) != 0 }
func (s byteSet) and(o byteSet) (r byteSet) {
	for i := range s {
		r[i] = s[i] & o[i]
	}
	return r
}
func (s byteSet) empty() bool { return s == byteSet{} }

// pick returns a member of a non-empty set, a lower-case letter or digit
// when there is one, so that witnesses read well.
func (s byteSet) pick() byte {
	for _, c := range []byte("xyzabcdefghijklmnopqrstuvw0123456789") {
		if s.has(c) {
			return c
		}
	}
	for c := 0; c < 256; c++ {
		if s.has(byte(c)) {
			return byte(c)
		}
	}
	return 0
}

var roomSet = func() (s byteSet) {
	for c := 0; c < 256; c++ {
		if broadcast.RoomByte(byte(c)) {
			s.add(byte(c))
		}
	}
	return s
}()

// nfa is a nondeterministic automaton over bytes: state 0 starts, accept
// ends; eps are moves that read nothing.
type nfa struct {
	edges  [][]edge
	eps    [][]int
	accept int
}

type edge struct {
	set byteSet
	to  int
}

func (n *nfa) state() int {
	n.edges = append(n.edges, nil)
	n.eps = append(n.eps, nil)
	return len(n.edges) - 1
}

// literal adds the states reading str from state from and returns the last.
func (n *nfa) literal(from int, str string) int {
	for i := 0; i < len(str); i++ {
		to := n.state()
		var set byteSet
		set.add(str[i])
		n.edges[from] = append(n.edges[from], edge{set, to})
		from = to
	}
	return from
}

// compile builds the automaton of every channel name s can yield.
func compile(s Scope) (*nfa, error) {
	segs, err := parseTemplate(s.Template)
	if err != nil {
		return nil, err
	}
	parties := distinct(s.Parties)
	if len(parties) == 0 {
		parties = []string{DefaultParty}
	}
	chans := distinct(s.Channels)
	if len(chans) == 0 {
		chans = []string{broadcast.DefaultChannel}
	}
	n := &nfa{}
	cur := n.state()
	oneOf := func(alts []string) {
		end := n.state()
		for _, a := range alts {
			last := n.literal(cur, a)
			n.eps[last] = append(n.eps[last], end)
		}
		cur = end
	}
	for _, seg := range segs {
		switch seg.ph {
		case "":
			cur = n.literal(cur, seg.lit)
		case "{app}":
			cur = n.literal(cur, s.App)
		case "{party}":
			oneOf(parties)
		case "{channel}":
			oneOf(chans)
		case "{room}":
			r := n.state()
			n.edges[cur] = append(n.edges[cur], edge{roomSet, r})
			n.edges[r] = append(n.edges[r], edge{roomSet, r})
			cur = r
		}
	}
	n.accept = cur
	return n, nil
}

// intersect searches the product of a and b breadth first for a string
// both accept, and returns it.
func intersect(a, b *nfa) (string, bool) {
	type pair struct{ a, b int }
	type step struct {
		from pair
		c    byte
		read bool
	}
	start := pair{0, 0}
	prev := map[pair]step{start: {}}
	queue := []pair{start}
	visit := func(p pair, s step) {
		if _, seen := prev[p]; !seen {
			prev[p] = s
			queue = append(queue, p)
		}
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p.a == a.accept && p.b == b.accept {
			var out []byte
			for q := p; q != start; q = prev[q].from {
				if s := prev[q]; s.read {
					out = append(out, s.c)
				}
			}
			slices.Reverse(out)
			return string(out), true
		}
		for _, x := range a.eps[p.a] {
			visit(pair{x, p.b}, step{from: p})
		}
		for _, y := range b.eps[p.b] {
			visit(pair{p.a, y}, step{from: p})
		}
		for _, ea := range a.edges[p.a] {
			for _, eb := range b.edges[p.b] {
				if common := ea.set.and(eb.set); !common.empty() {
					visit(pair{ea.to, eb.to}, step{from: p, c: common.pick(), read: true})
				}
			}
		}
	}
	return "", false
}
