package realtime

import (
	"strings"
	"testing"

	"github.com/switchyard/switchyard/broadcast"
)

func TestOverlap(t *testing.T) {
	chans := []string{"video", "ai-stream", "default"}
	scope := func(tpl, app string, parties ...string) Scope {
		return Scope{Template: tpl, App: app, Parties: parties, Channels: chans}
	}
	for _, tt := range []struct {
		name    string
		a, b    Scope
		overlap bool
	}{
		{"defaults of two apps", scope("", "ai-hero"), scope("", "course-builder"), false},
		{"defaults, app name a prefix of the other", scope("", "ai"), scope("", "ai-hero"), false},
		{"both {room}", scope("{room}", "a"), scope("{room}", "b"), true},
		{"{app}:{room} against {room}", scope("{app}:{room}", "a"), scope("{room}", "b"), true},
		{"{app}:{room} against {app}-{room}", scope("{app}:{room}", "a"), scope("{app}-{room}", "b"), false},
		{"app namespaces", scope("{app}:{room}", "a"), scope("{app}:{room}", "b"), false},
		{"prefix app names without a separator", scope("{app}{room}", "ai"), scope("{app}{room}", "ai-hero"), true},
		{"literal namespaces", scope("x/{room}", "a"), scope("y/{room}", "b"), false},
		{"channel names overlap rooms", scope("{room}-{channel}", "a"), scope("{room}", "b"), true},
		{"channel suffixes disjoint", scope("r:{room}:c:{channel}", "a"), scope("r:{room}:d:{channel}", "b"), false},
		{"room alphabet has no '/'", scope("a/{room}", "a"), scope("{room}", "b"), false},
		{"parties", scope("{app}:{party}:{room}", "a", "main"), scope("a:chat:{room}", "b"), false},
		{"same app, same party", scope("{app}:{party}:{room}", "a", "main"), scope("a:main:{room}", "b"), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w, ok, err := Overlap(tt.a, tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.overlap {
				t.Fatalf("Overlap = %q, %v; want %v", w, ok, tt.overlap)
			}
			if !ok {
				return
			}
			// The witness is a channel name both scopes really produce.
			if !yields(t, tt.a, w) || !yields(t, tt.b, w) {
				t.Errorf("witness %q is not yielded by both scopes", w)
			}
		})
	}
	if _, _, err := Overlap(scope("{nope}", "a"), scope("", "b")); err == nil {
		t.Error("a template that does not parse gave no error")
	}
}

// yields reports whether some (party, room, channel) of s expands to w, by
// brute force over the parties and channels and every split of w.
func yields(t *testing.T, s Scope, w string) bool {
	t.Helper()
	parties := s.Parties
	if len(parties) == 0 {
		parties = []string{DefaultParty}
	}
	for _, p := range parties {
		for _, ch := range s.Channels {
			c, err := NewClient(s.App, Config{URL: "http://x", ChannelTemplate: s.Template, Party: p}, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i <= len(w); i++ {
				for j := i + 1; j <= len(w); j++ {
					room := w[i:j]
					if broadcast.ValidateRoom(room) == nil && c.PartyChannel(p, room, ch) == w {
						return true
					}
				}
			}
		}
	}
	return false
}

func TestScopeCollision(t *testing.T) {
	chans := []string{"ready", "video-ready", "default"}
	for _, tt := range []struct {
		name string
		s    Scope
		want string
	}{
		{"default template, two parties", Scope{App: "a", Parties: []string{"main", "chat"}, Channels: chans}, ""},
		{"no {party}, one party", Scope{Template: "{app}:{room}", App: "a", Parties: []string{"main"}, Channels: chans}, ""},
		{"no {party}, two parties", Scope{Template: "{app}:{room}", App: "a", Parties: []string{"main", "chat"}, Channels: chans}, `party "main" and for a room of party "chat"`},
		{"parties run into the room", Scope{Template: "{party}{room}", App: "a", Parties: []string{"a", "ab"}, Channels: chans}, `party "a" and for a room of party "ab"`},
		{"channels run into the room", Scope{Template: "{room}-{channel}", App: "a", Channels: chans}, `channel "ready" and for another room's channel "video-ready"`},
		{"channels after a separator rooms may hold, but channels not", Scope{Template: "{app}:{room}:{channel}", App: "a", Channels: chans}, ""},
		{"channel first, separated", Scope{Template: "{channel}/{room}", App: "a", Channels: chans}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Collision()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Collision = %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Collision = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestDefaultChannelTemplate(t *testing.T) {
	c, err := NewClient("ai-hero", Config{URL: "http://x", Party: "main"}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Channel("video-42", "video"), "ai-hero:main:video-42"; got != want {
		t.Errorf("Channel = %q, want %q", got, want)
	}
	if got, want := c.PartyChannel("chat", "video-42", "video"), "ai-hero:chat:video-42"; got != want {
		t.Errorf("PartyChannel = %q, want %q", got, want)
	}
	d, err := NewClient("ai-hero", Config{URL: "http://x"}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.Channel("r", "video"), "ai-hero:"+DefaultParty+":r"; got != want {
		t.Errorf("without Party: Channel = %q, want %q", got, want)
	}
}

func TestSigningKeyEnv(t *testing.T) {
	for key, want := range map[string]string{
		"": "", "signkey-prod-00ff": "prod", "signkey-branch-abcd": "branch", "nope": "",
	} {
		if got := SigningKeyEnv(key); got != want {
			t.Errorf("SigningKeyEnv(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestConfigRefusesPartiesWithoutPartyPlaceholder(t *testing.T) {
	c := Config{URL: "http://x", ChannelTemplate: "{app}:{room}", Party: "main", Parties: []string{"main", "chat"}}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `channelTemplate: "{app}:{room}" has no {party}, but the app publishes to the parties main, chat`) {
		t.Fatalf("Validate = %v", err)
	}
	c.ChannelTemplate = ""
	if err := c.Validate(); err != nil {
		t.Fatalf("default template: %v", err)
	}
	c.Parties = []string{"main", "main"}
	c.ChannelTemplate = "{room}"
	if err := c.Validate(); err != nil {
		t.Fatalf("one distinct party: %v", err)
	}
}
