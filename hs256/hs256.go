// Package hs256 signs and verifies compact JSON Web Tokens with HMAC-SHA256
// and nothing else. It exists so Switchyard can read the subscription tokens
// Inngest Realtime issues, verify them in its test server, and issue its own
// per-app room grants, without a general JWT library whose algorithm
// negotiation is a known source of bugs: the algorithm is pinned to HS256,
// "none" and every other algorithm are refused, signatures are compared in
// constant time and "exp" is required.
//
// Every function is pure and safe for concurrent use.
package hs256

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Sentinel errors; every error returned by Verify and ParseUnverified wraps
// exactly one of them (test with errors.Is).
var (
	// ErrMalformed: not three base64url parts, a header or payload that is
	// not a JSON object, a missing header, a typ other than JWT, a bad
	// registered claim, or an empty key.
	ErrMalformed = errors.New("hs256: malformed token")
	// ErrAlgorithm: the header names an algorithm other than HS256
	// (including "none") or none at all.
	ErrAlgorithm = errors.New("hs256: algorithm is not HS256")
	// ErrSignature: the signature does not match the key.
	ErrSignature = errors.New("hs256: signature mismatch")
	// ErrExpired: exp is missing or not after now minus the skew.
	ErrExpired = errors.New("hs256: token expired")
	// ErrNotYetValid: nbf or iat is later than now plus the skew.
	ErrNotYetValid = errors.New("hs256: token not valid yet")
)

// MaxTokenLen bounds the tokens this package will look at.
const MaxTokenLen = 16 << 10

// NumericDate is a JWT NumericDate: seconds since the Unix epoch. It decodes
// from any JSON number (fractions are truncated) and encodes as an integer.
type NumericDate int64

// UnmarshalJSON accepts a JSON number of at most 2^53 seconds.
func (d *NumericDate) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("numeric date: %w", err)
	}
	if math.IsNaN(f) || math.Abs(f) > 1<<53 {
		return fmt.Errorf("numeric date: %v out of range", f)
	}
	*d = NumericDate(int64(f))
	return nil
}

// Time returns d as a time.Time in UTC.
func (d NumericDate) Time() time.Time { return time.Unix(int64(d), 0).UTC() }

// NewNumericDate returns t truncated to the second.
func NewNumericDate(t time.Time) NumericDate { return NumericDate(t.Unix()) }

// Registered holds the registered claims this package checks. Embed it in a
// claims struct to have them encoded and decoded with the rest.
type Registered struct {
	Issuer    string       `json:"iss,omitempty"`
	Subject   string       `json:"sub,omitempty"`
	ExpiresAt *NumericDate `json:"exp,omitempty"`
	NotBefore *NumericDate `json:"nbf,omitempty"`
	IssuedAt  *NumericDate `json:"iat,omitempty"`
}

type header struct {
	Alg *string `json:"alg"`
	Typ *string `json:"typ"`
}

var (
	enc           = base64.RawURLEncoding
	encodedHeader = enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
)

// Sign encodes claims as JSON (it must encode to a JSON object) and returns
// the compact token signed with key. It does not add or check any claim:
// callers set exp themselves.
func Sign(claims any, key []byte) (string, error) {
	if len(key) == 0 {
		return "", fmt.Errorf("hs256: sign: %w: empty key", ErrMalformed)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("hs256: sign: encode claims: %w", err)
	}
	if len(payload) == 0 || payload[0] != '{' {
		return "", fmt.Errorf("hs256: sign: %w: claims must encode to a JSON object", ErrMalformed)
	}
	signing := encodedHeader + "." + enc.EncodeToString(payload)
	return signing + "." + enc.EncodeToString(mac(signing, key)), nil
}

func mac(signing string, key []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(signing))
	return h.Sum(nil)
}

type parts struct {
	signing string // header.payload
	header  header
	payload []byte
	sig     []byte
}

func split(token string) (parts, error) {
	var p parts
	if len(token) > MaxTokenLen {
		return p, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenLen)
	}
	h, rest, ok := strings.Cut(token, ".")
	if !ok {
		return p, fmt.Errorf("%w: want three dot-separated parts", ErrMalformed)
	}
	pl, s, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(s, ".") {
		return p, fmt.Errorf("%w: want three dot-separated parts", ErrMalformed)
	}
	if h == "" {
		return p, fmt.Errorf("%w: header missing", ErrMalformed)
	}
	hb, err := enc.DecodeString(h)
	if err != nil {
		return p, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if err := decodeObject(hb, &p.header); err != nil {
		return p, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if p.header.Typ != nil && !strings.EqualFold(*p.header.Typ, "JWT") {
		return p, fmt.Errorf("%w: header typ %q is not JWT", ErrMalformed, *p.header.Typ)
	}
	if p.payload, err = enc.DecodeString(pl); err != nil {
		return p, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if p.sig, err = enc.DecodeString(s); err != nil {
		return p, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	p.signing = token[:len(h)+1+len(pl)]
	return p, nil
}

// decodeObject decodes b, which must be one JSON object, into v.
func decodeObject(b []byte, v any) error {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	if i == len(b) || b[i] != '{' {
		return errors.New("not a JSON object")
	}
	return json.Unmarshal(b, v)
}

// Verify checks token against key at time now and, when it is valid, decodes
// its payload into claims (a pointer, or nil to skip). It refuses, in order:
// a malformed token or header (ErrMalformed), an alg other than HS256
// (ErrAlgorithm), a bad signature (ErrSignature, compared in constant time),
// a missing exp or one at or before now-skew (ErrExpired), and an nbf or iat
// after now+skew (ErrNotYetValid).
func Verify(token string, key []byte, now time.Time, skew time.Duration, claims any) error {
	if len(key) == 0 {
		return fmt.Errorf("hs256: verify: %w: empty key", ErrMalformed)
	}
	p, err := split(token)
	if err != nil {
		return fmt.Errorf("hs256: verify: %w", err)
	}
	if p.header.Alg == nil || *p.header.Alg != "HS256" {
		alg := "<missing>"
		if p.header.Alg != nil {
			alg = *p.header.Alg
		}
		return fmt.Errorf("hs256: verify: %w: alg %q", ErrAlgorithm, alg)
	}
	if !hmac.Equal(p.sig, mac(p.signing, key)) {
		return fmt.Errorf("hs256: verify: %w", ErrSignature)
	}
	var reg Registered
	if err := decodeObject(p.payload, &reg); err != nil {
		return fmt.Errorf("hs256: verify: %w: payload: %v", ErrMalformed, err)
	}
	if reg.ExpiresAt == nil {
		return fmt.Errorf("hs256: verify: %w: exp missing", ErrExpired)
	}
	if !now.Add(-skew).Before(reg.ExpiresAt.Time()) {
		return fmt.Errorf("hs256: verify: %w: exp %s", ErrExpired, reg.ExpiresAt.Time().Format(time.RFC3339))
	}
	late := now.Add(skew)
	if reg.NotBefore != nil && reg.NotBefore.Time().After(late) {
		return fmt.Errorf("hs256: verify: %w: nbf %s", ErrNotYetValid, reg.NotBefore.Time().Format(time.RFC3339))
	}
	if reg.IssuedAt != nil && reg.IssuedAt.Time().After(late) {
		return fmt.Errorf("hs256: verify: %w: iat %s", ErrNotYetValid, reg.IssuedAt.Time().Format(time.RFC3339))
	}
	if claims != nil {
		if err := json.Unmarshal(p.payload, claims); err != nil {
			return fmt.Errorf("hs256: verify: %w: claims: %v", ErrMalformed, err)
		}
	}
	return nil
}

// ParseUnverified decodes the payload of token into claims WITHOUT checking
// the signature, algorithm or times: use it only to read a token this
// process received from a trusted upstream over an authenticated channel
// (for example the exp of an Inngest subscription token). It still refuses a
// token that is not a well-formed compact JWT with a JSON header
// (ErrMalformed).
func ParseUnverified(token string, claims any) error {
	p, err := split(token)
	if err != nil {
		return fmt.Errorf("hs256: parse: %w", err)
	}
	if claims == nil {
		claims = &Registered{}
	}
	if err := decodeObject(p.payload, claims); err != nil {
		return fmt.Errorf("hs256: parse: %w: payload: %v", ErrMalformed, err)
	}
	return nil
}
