package hs256

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

type testClaims struct {
	Registered
	Topics []string `json:"topics"`
}

var (
	testKey = []byte("0123456789abcdef0123456789abcdef")
	t0      = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
)

func date(t time.Time) *NumericDate { d := NewNumericDate(t); return &d }

func mustSign(tb testing.TB, claims any, key []byte) string {
	tb.Helper()
	tok, err := Sign(claims, key)
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	return tok
}

// forge builds a token with an arbitrary header, signed with key.
func forge(headerJSON, payloadJSON string, key []byte) string {
	s := enc.EncodeToString([]byte(headerJSON)) + "." + enc.EncodeToString([]byte(payloadJSON))
	h := hmac.New(sha256.New, key)
	h.Write([]byte(s))
	return s + "." + enc.EncodeToString(h.Sum(nil))
}

func TestSignVerifyRoundTrip(t *testing.T) {
	in := testClaims{Registered: Registered{Issuer: "rt.inngest.com", ExpiresAt: date(t0.Add(time.Minute)), IssuedAt: date(t0)}, Topics: []string{"a", "b"}}
	tok := mustSign(t, in, testKey)
	var got testClaims
	if err := Verify(tok, testKey, t0, 0, &got); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.Issuer != in.Issuer || *got.ExpiresAt != *in.ExpiresAt || strings.Join(got.Topics, ",") != "a,b" {
		t.Fatalf("got %+v, want %+v", got, in)
	}
	var parsed testClaims
	if err := ParseUnverified(tok, &parsed); err != nil {
		t.Fatalf("ParseUnverified: %v", err)
	}
	if got, want := parsed.ExpiresAt.Time(), t0.Add(time.Minute); !got.Equal(want) {
		t.Fatalf("exp: got %v, want %v", got, want)
	}
}

func TestVerifyRefuses(t *testing.T) {
	valid := `{"exp":` + itoa(t0.Add(time.Minute).Unix()) + `}`
	tests := []struct {
		name  string
		token string
		now   time.Time
		skew  time.Duration
		want  error
	}{
		{"alg none", forge(`{"alg":"none","typ":"JWT"}`, valid, testKey), t0, 0, ErrAlgorithm},
		{"alg none unsigned", enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString([]byte(valid)) + ".", t0, 0, ErrAlgorithm},
		{"alg HS512", forge(`{"alg":"HS512","typ":"JWT"}`, valid, testKey), t0, 0, ErrAlgorithm},
		{"alg lower case", forge(`{"alg":"hs256"}`, valid, testKey), t0, 0, ErrAlgorithm},
		{"alg missing", forge(`{"typ":"JWT"}`, valid, testKey), t0, 0, ErrAlgorithm},
		{"typ mismatch", forge(`{"alg":"HS256","typ":"JWE"}`, valid, testKey), t0, 0, ErrMalformed},
		{"header not object", forge(`["HS256"]`, valid, testKey), t0, 0, ErrMalformed},
		{"header missing", "." + enc.EncodeToString([]byte(valid)) + ".abc", t0, 0, ErrMalformed},
		{"two parts", "a.b", t0, 0, ErrMalformed},
		{"four parts", "a.b.c.d", t0, 0, ErrMalformed},
		{"bad base64", "a.b!.c", t0, 0, ErrMalformed},
		{"wrong key", forge(`{"alg":"HS256","typ":"JWT"}`, valid, []byte("other")), t0, 0, ErrSignature},
		{"payload not object", forge(`{"alg":"HS256"}`, `[1]`, testKey), t0, 0, ErrMalformed},
		{"exp missing", forge(`{"alg":"HS256"}`, `{"iat":1}`, testKey), t0, 0, ErrExpired},
		{"exp wrong type", forge(`{"alg":"HS256"}`, `{"exp":"soon"}`, testKey), t0, 0, ErrMalformed},
		{"expired", forge(`{"alg":"HS256"}`, valid, testKey), t0.Add(time.Minute), 0, ErrExpired},
		{"expired beyond skew", forge(`{"alg":"HS256"}`, valid, testKey), t0.Add(2 * time.Minute), 30 * time.Second, ErrExpired},
		{"nbf future", forge(`{"alg":"HS256"}`, `{"exp":`+itoa(t0.Add(time.Hour).Unix())+`,"nbf":`+itoa(t0.Add(time.Minute).Unix())+`}`, testKey), t0, 10 * time.Second, ErrNotYetValid},
		{"iat future", forge(`{"alg":"HS256"}`, `{"exp":`+itoa(t0.Add(time.Hour).Unix())+`,"iat":`+itoa(t0.Add(time.Minute).Unix())+`}`, testKey), t0, 10 * time.Second, ErrNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.token, testKey, tt.now, tt.skew, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyAccepts(t *testing.T) {
	exp := t0.Add(time.Minute).Unix()
	tests := []struct {
		name  string
		token string
		now   time.Time
		skew  time.Duration
	}{
		{"no typ", forge(`{"alg":"HS256"}`, `{"exp":`+itoa(exp)+`}`, testKey), t0, 0},
		{"typ lower case", forge(`{"alg":"HS256","typ":"jwt"}`, `{"exp":`+itoa(exp)+`}`, testKey), t0, 0},
		{"fractional exp", forge(`{"alg":"HS256"}`, `{"exp":`+itoa(exp)+`.5}`, testKey), t0, 0},
		{"expired within skew", forge(`{"alg":"HS256"}`, `{"exp":`+itoa(exp)+`}`, testKey), t0.Add(70 * time.Second), 30 * time.Second},
		{"iat within skew", forge(`{"alg":"HS256"}`, `{"exp":`+itoa(exp)+`,"iat":`+itoa(t0.Add(5*time.Second).Unix())+`}`, testKey), t0, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Verify(tt.token, testKey, tt.now, tt.skew, nil); err != nil {
				t.Fatalf("got %v, want nil", err)
			}
		})
	}
}

func TestSignRefuses(t *testing.T) {
	if _, err := Sign(map[string]any{"exp": 1}, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty key: got %v, want ErrMalformed", err)
	}
	if _, err := Sign([]int{1}, testKey); !errors.Is(err, ErrMalformed) {
		t.Fatalf("array claims: got %v, want ErrMalformed", err)
	}
	if err := Verify(mustSign(t, map[string]any{"exp": 1}, testKey), nil, t0, 0, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("verify with empty key: got %v, want ErrMalformed", err)
	}
}

func TestParseUnverifiedIgnoresSignature(t *testing.T) {
	tok := forge(`{"alg":"HS256"}`, `{"exp":123}`, []byte("someone else's key"))
	var c Registered
	if err := ParseUnverified(tok, &c); err != nil {
		t.Fatalf("ParseUnverified: %v", err)
	}
	if c.ExpiresAt == nil || *c.ExpiresAt != 123 {
		t.Fatalf("exp: got %v, want 123", c.ExpiresAt)
	}
	if err := ParseUnverified("x.y", &c); !errors.Is(err, ErrMalformed) {
		t.Fatalf("two parts: got %v, want ErrMalformed", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func FuzzVerify(f *testing.F) {
	f.Add(mustSign(f, map[string]any{"exp": t0.Add(time.Minute).Unix()}, testKey))
	f.Add(forge(`{"alg":"none"}`, `{"exp":1}`, testKey))
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		var c testClaims
		err := Verify(tok, testKey, t0, time.Second, &c)
		if err != nil {
			for _, s := range []error{ErrMalformed, ErrAlgorithm, ErrSignature, ErrExpired, ErrNotYetValid} {
				if errors.Is(err, s) {
					goto parse
				}
			}
			t.Fatalf("error %v wraps no sentinel", err)
		}
	parse:
		var r Registered
		_ = ParseUnverified(tok, &r)
	})
}
