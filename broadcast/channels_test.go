package broadcast

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestNewChannels(t *testing.T) {
	tests := []struct {
		name    string
		specs   []ChannelSpec
		wantErr []string // substrings; nil means valid
	}{
		{name: "valid", specs: []ChannelSpec{{Name: "ai", Events: []string{"ai.message", "ai.done"}}, {Name: "video-2", Events: []string{"video.asset.ready"}}}},
		{name: "none", specs: nil},
		{name: "empty name", specs: []ChannelSpec{{Name: "", Events: []string{"x"}}}, wantErr: []string{`channels[0].name: ""`}},
		{name: "upper case", specs: []ChannelSpec{{Name: "AI", Events: []string{"x"}}}, wantErr: []string{`channels[0].name: "AI"`}},
		{name: "too long", specs: []ChannelSpec{{Name: strings.Repeat("a", 64), Events: []string{"x"}}}, wantErr: []string{"channels[0].name"}},
		{name: "default reserved", specs: []ChannelSpec{{Name: "default", Events: []string{"x"}}}, wantErr: []string{`"default" is reserved`}},
		{name: "killswitch reserved", specs: []ChannelSpec{{Name: "killswitch", Events: []string{"x"}}}, wantErr: []string{`"killswitch" is reserved`}},
		{name: "duplicate channel", specs: []ChannelSpec{{Name: "ai", Events: []string{"x"}}, {Name: "ai", Events: []string{"y"}}}, wantErr: []string{`channels[1].name: "ai" is defined twice`}},
		{name: "no events", specs: []ChannelSpec{{Name: "ai"}}, wantErr: []string{"channels[0].events"}},
		{name: "empty event", specs: []ChannelSpec{{Name: "ai", Events: []string{""}}}, wantErr: []string{"channels[0].events[0]: empty event name"}},
		{name: "bad utf8 event", specs: []ChannelSpec{{Name: "ai", Events: []string{"\xff"}}}, wantErr: []string{"channels[0].events[0]"}},
		{name: "duplicate event", specs: []ChannelSpec{{Name: "ai", Events: []string{"x"}}, {Name: "video", Events: []string{"y", "x"}}}, wantErr: []string{`channels[1].events[1]: event "x" already belongs to channel "ai"`}},
		{name: "several problems", specs: []ChannelSpec{{Name: "default", Events: []string{"x"}}, {Name: "b", Events: []string{"x"}}}, wantErr: []string{"reserved", "already belongs"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewChannels(tt.specs)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("NewChannels: %v", err)
				}
				if c == nil {
					t.Fatal("nil Channels")
				}
				return
			}
			if err == nil {
				t.Fatalf("NewChannels: got no error, want %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestChannelsOfAndNames(t *testing.T) {
	c, err := NewChannels([]ChannelSpec{{Name: "ai", Events: []string{"ai.message", "ai.done"}}, {Name: "video", Events: []string{"video.asset.ready"}}})
	if err != nil {
		t.Fatalf("NewChannels: %v", err)
	}
	tests := []struct{ event, want string }{
		{"ai.message", "ai"},
		{"ai.done", "ai"},
		{"video.asset.ready", "video"},
		{"video.asset", DefaultChannel},
		{"", DefaultChannel},
	}
	for _, tt := range tests {
		if got := c.Of(tt.event); got != tt.want {
			t.Errorf("Of(%q): got %q, want %q", tt.event, got, tt.want)
		}
	}
	names := c.Names()
	if want := []string{"ai", "video", DefaultChannel}; !slices.Equal(names, want) {
		t.Errorf("Names: got %v, want %v", names, want)
	}
	names[0] = "changed"
	if got := c.Names()[0]; got != "ai" {
		t.Errorf("Names shares its slice: got %q after the caller changed its copy", got)
	}
	if allocs := testing.AllocsPerRun(100, func() { c.Of("ai.message") }); allocs != 0 {
		t.Errorf("Of allocates %v times, want 0", allocs)
	}
}

func FuzzNewChannels(f *testing.F) {
	f.Add("ai", "ai.message", "video", "video.ready")
	f.Add("default", "x", "x", "x")
	f.Fuzz(func(t *testing.T, n1, e1, n2, e2 string) {
		c, err := NewChannels([]ChannelSpec{{Name: n1, Events: []string{e1}}, {Name: n2, Events: []string{e2}}})
		if err != nil {
			return
		}
		// A valid mapping sends each event to its channel and lists every
		// channel once, default last.
		if got := c.Of(e1); got != n1 {
			t.Errorf("Of(%q): got %q, want %q", e1, got, n1)
		}
		if got := c.Of(e2); got != n2 {
			t.Errorf("Of(%q): got %q, want %q", e2, got, n2)
		}
		if got, want := c.Names(), []string{n1, n2, DefaultChannel}; !slices.Equal(got, want) {
			t.Errorf("Names: got %v, want %v", got, want)
		}
	})
}

func TestValidateChannelName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"ai", true}, {"video-ready", true}, {"0", true}, {strings.Repeat("a", MaxChannelNameLen), true},
		{"", false}, {"-ai", false}, {"AI", false}, {"ai_stream", false}, {"ai.stream", false},
		{strings.Repeat("a", MaxChannelNameLen+1), false}, {"default", false}, {"killswitch", false},
	}
	for _, tt := range tests {
		err := ValidateChannelName(tt.name)
		if got := err == nil; got != tt.ok {
			t.Errorf("ValidateChannelName(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), strconv.Quote(tt.name)) {
			t.Errorf("ValidateChannelName(%q) = %q, want it to start with the quoted name", tt.name, err)
		}
	}
}

func TestValidateChannelsAgreesWithNewChannels(t *testing.T) {
	for _, specs := range [][]ChannelSpec{
		nil,
		{{Name: "ai", Events: []string{"ai.message"}}},
		{{Name: "-ai", Events: []string{"x"}}},
		{{Name: "ai", Events: []string{strings.Repeat("e", MaxEventNameLen+1)}}},
		{{Name: "ai", Events: []string{"x"}}, {Name: "ai", Events: []string{"x"}}},
	} {
		_, nerr := NewChannels(specs)
		verr := ValidateChannels(specs)
		if (nerr == nil) != (verr == nil) || (nerr != nil && nerr.Error() != verr.Error()) {
			t.Errorf("specs %v: NewChannels error %v, ValidateChannels error %v", specs, nerr, verr)
		}
		if verr != nil && strings.HasPrefix(verr.Error(), "broadcast") {
			t.Errorf("error %q carries a package prefix", verr)
		}
	}
}
