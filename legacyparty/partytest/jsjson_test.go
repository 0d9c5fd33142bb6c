package partytest

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestReencode(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":1.0}`, `{"a":1}`},
		{`12345678901234567890`, `12345678901234567000`},
		{`"\u00e9"`, `"é"`},
		{`{"z":1,"a":2}`, `{"z":1,"a":2}`},
		{`{"b":1,"10":2,"9":3,"-1":4,"4294967294":5,"4294967295":6}`, `{"9":3,"10":2,"4294967294":5,"b":1,"-1":4,"4294967295":6}`},
		{`{"a":1,"b":2,"a":3}`, `{"a":3,"b":2}`},
		{`[1e21,1e-7,1e-6,123456789012345680000,0.1,-0,5e-324,1.7976931348623157e308]`, `[1e+21,1e-7,0.000001,123456789012345680000,0.1,0,5e-324,1.7976931348623157e+308]`},
		{`[1e400,-1e400,1e-400]`, `[null,null,0]`},
		{`"<>&\/\u2028"`, "\"<>&/\u2028\""},
		{`"\u0000\u001F\b\f\n\r\t\"\\"`, `"\u0000\u001f\b\f\n\r\t\"\\"`},
		{`"\uD83D\uDE00"`, `"😀"`},
		{`"\ud83d"`, `"\ud83d"`},
		{`"\ude00\ud83d"`, `"\ude00\ud83d"`},
		{"\"\xff\"", "\"\uFFFD\""},
		{"\xef\xbb\xbf{}", `{}`},
		{" [ true , false , null , { } , [ ] ] ", `[true,false,null,{},[]]`},
		{`{"__proto__":1}`, `{"__proto__":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Reencode([]byte(tt.in))
			if err != nil {
				t.Fatalf("Reencode: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("Reencode(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestReencodeErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{``, "Unexpected end of JSON input"},
		{`{bad`, "Unexpected token"},
		{`{"a":1,}`, "Unexpected token"},
		{`[1,]`, "Unexpected token"},
		{`01`, "Unexpected non-whitespace"},
		{`-`, "No number after minus sign"},
		{`1.`, "Unterminated fractional number"},
		{`1e`, "Exponent part is missing a number"},
		{`"abc`, "Unterminated string"},
		{"\"a\tb\"", "Bad control character"},
		{`"\x"`, "Bad escaped character"},
		{`"\u12G4"`, "Bad Unicode escape"},
		{`"\u+123"`, "Bad Unicode escape"},
		{`tru`, "Unexpected end of JSON input"},
		{`nul1`, "Unexpected token"},
		{`NaN`, "Unexpected token"},
		{`{"a":1} {}`, "Unexpected non-whitespace"},
		{"\v1", "Unexpected token"},
		{strings.Repeat("[", MaxDepth+2), "Maximum nesting depth"},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 20)], func(t *testing.T) {
			_, err := Reencode([]byte(tt.in))
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Reencode(%q) error = %v, want *SyntaxError", tt.in, err)
			}
			if !strings.HasPrefix(err.Error(), "SyntaxError: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestFormatNumber(t *testing.T) {
	tests := []struct {
		f    float64
		want string
	}{
		{0, "0"}, {math.Copysign(0, -1), "0"}, {1, "1"}, {-1.5, "-1.5"}, {100, "100"},
		{1e20, "100000000000000000000"}, {1e21, "1e+21"}, {1.5e21, "1.5e+21"},
		{0.000001, "0.000001"}, {1e-7, "1e-7"}, {1.25e-7, "1.25e-7"}, {123.456, "123.456"},
		{math.NaN(), "null"}, {math.Inf(1), "null"}, {math.Inf(-1), "null"},
		{math.MaxFloat64, "1.7976931348623157e+308"}, {4.9e-324, "5e-324"},
		{12345678901234567890, "12345678901234567000"},
	}
	for _, tt := range tests {
		if got := FormatNumber(tt.f); got != tt.want {
			t.Errorf("FormatNumber(%v) = %s, want %s", tt.f, got, tt.want)
		}
	}
}

// FuzzReencode checks, for any input, that Reencode accepts exactly what
// encoding/json accepts (as JSON.parse would), that its output is valid
// JSON with the same decoded value, and that re-encoding is idempotent.
func FuzzReencode(f *testing.F) {
	for _, s := range []string{`{"a":1.0}`, `12345678901234567890`, `"\u00e9\ud800"`, `{"2":1,"1":0,"b":[]}`, `[1e400]`, `{"a":1,"a":2}`, "\"\xff\"", ` [ ] `, `{`, `-0.0e-0`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Reencode(in)
		valid := json.Valid(in)
		if strings.HasPrefix(string(in), "\xef\xbb\xbf") {
			valid = json.Valid(in[3:])
		}
		if (err == nil) != valid {
			t.Fatalf("Reencode(%q) err = %v, but json.Valid = %v", in, err, valid)
		}
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("Reencode(%q) = %q, not valid JSON", in, out)
		}
		again, err := Reencode(out)
		if err != nil || string(again) != string(out) {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", in, out, again, err)
		}
		var a, b any
		if json.Unmarshal(in, &a) != nil { // e.g. 1e400 does not fit Go's float64
			return
		}
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("decode %q: %v", out, err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("value changed: %q -> %q", in, out)
		}
	})
}
