package broadcast

import "time"

// Token is a realtime subscription token as a browser's Inngest client
// takes it (the object its token refresh returns, encoded as
// {"key","channel","topics","expiresAt"}): Key is the JWT Inngest issued for
// Topics of the Inngest channel Channel, ExpiresAt that JWT's exp. The
// realtime transport mints it and the API hands it out unchanged; it is a
// credential, so Key is never logged.
type Token struct {
	Key       string    `json:"key"`
	Channel   string    `json:"channel"`
	Topics    []string  `json:"topics"`
	ExpiresAt time.Time `json:"expiresAt"`
}
