package shadow

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
