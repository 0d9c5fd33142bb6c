package broadcast

import (
	"errors"
	"fmt"
)

// Error codes. The HTTP layer maps each to one status in one place.
const (
	EINVALID   = "invalid_request"   // malformed JSON, missing or wrong-typed field: 400
	EUNAUTH    = "unauthorized"      // no or unknown credential: 401
	EFORBIDDEN = "forbidden"         // credential does not cover the app or room: 403
	ENOTFOUND  = "not_found"         // unknown route or app: 404
	EDISABLED  = "realtime_disabled" // every channel of the room is legacy: 404
	ETOOLARGE  = "payload_too_large" // body over the limit: 413
	EROOM      = "invalid_room"      // room id does not map one-to-one: 422
	ERATELIMIT = "rate_limited"      // app over its publish rate: 429
	EUPSTREAM  = "upstream_failed"   // the answering transport failed after retries: 502
	EDRAINING  = "draining"          // shutting down: 503
	EINTERNAL  = "internal"          // anything else: 500
)

// Error is the error type whose Code and Message may be shown to callers.
// Other errors are internal and shown as a generic message.
type Error struct {
	Code    string
	Message string
	// Transport names the failed upstream for EUPSTREAM.
	Transport Transport
	// RetryAfterSeconds is set for ERATELIMIT.
	RetryAfterSeconds int
	// Err is the wrapped cause; never shown to callers.
	Err error
}

// Error returns the code, the message and the cause, for logs; callers
// are shown only ErrorMessage.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a formatted client-safe message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-safe message of the first *Error in err's
// chain, or "internal error" for any other error.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
