package shadow

import (
	"encoding/json"
	"fmt"
)

// For returns the rows of app (all rows when app is empty), in order.
func (s Summary) For(app string) []ChannelSummary {
	if app == "" {
		return s.Channels
	}
	var out []ChannelSummary
	for _, c := range s.Channels {
		if c.App == app {
			out = append(out, c)
		}
	}
	return out
}

// Snapshot is what a flag change's audit record keeps of the summary: with
// channel empty (the kill switch) the whole summary; else the channel's
// rows, one row as an object, several (one per app) as an array. A channel
// with no row is an error.
func (s Summary) Snapshot(channel string) (json.RawMessage, error) {
	if channel == "" {
		return json.Marshal(s)
	}
	var found []ChannelSummary
	for _, row := range s.Channels {
		if row.Channel == channel {
			found = append(found, row)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("channel %q not in the summary", channel)
	case 1:
		return json.Marshal(found[0])
	}
	return json.Marshal(found)
}
