package jsonscan

import "testing"

func TestScanners(t *testing.T) {
	for _, tc := range []struct {
		in   string
		i    int
		want int
	}{{"  \t\r\n x", 0, 6}, {"x", 0, 0}, {"   ", 1, 3}, {"", 0, 0}} {
		if got := SkipWS([]byte(tc.in), tc.i); got != tc.want {
			t.Errorf("SkipWS(%q, %d) = %d, want %d", tc.in, tc.i, got, tc.want)
		}
	}
	for _, tc := range []struct {
		in               string
		start, end, next int
		ok               bool
	}{
		{`"abc",`, 1, 4, 5, true},
		{`""`, 1, 1, 2, true},
		{`"a\"b"`, 0, 0, 0, false},
		{"\"a\x01\"", 0, 0, 0, false},
		{`"abc`, 0, 0, 0, false},
		{`abc"`, 0, 0, 0, false},
		{``, 0, 0, 0, false},
	} {
		s, e, n, ok := PlainString([]byte(tc.in), 0)
		if s != tc.start || e != tc.end || n != tc.next || ok != tc.ok {
			t.Errorf("PlainString(%q) = %d %d %d %v, want %d %d %d %v", tc.in, s, e, n, ok, tc.start, tc.end, tc.next, tc.ok)
		}
	}
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{{`"a\"b" x`, 6, true}, {`"a\\" x`, 5, true}, {`""`, 2, true}, {`"abc\"`, 0, false}, {`"`, 0, false}} {
		got, ok := StringEnd([]byte(tc.in), 0)
		if got != tc.want || ok != tc.ok {
			t.Errorf("StringEnd(%q) = %d %v, want %d %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestValueEnd(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{`"a\"b", 1`, 6, true},
		{`{"a":[1,"]}"],"b":{}} x`, 21, true},
		{`[1,[2,[3]]],`, 11, true},
		{`123}`, 3, true},
		{`true `, 4, true},
		{`nul`, 3, true}, // scalars are not checked: the caller does
		{`{"a":1`, 0, false},
		{`["x]`, 0, false},
		{`,1`, 0, false},
		{`}`, 0, false},
		{``, 0, false},
	} {
		got, ok := ValueEnd([]byte(tc.in), 0)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ValueEnd(%q) = %d %v, want %d %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
