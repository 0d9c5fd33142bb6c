package api

import (
	"reflect"
	"testing"
)

// decodeCases are message bodies of every shape: the common one the fast
// path takes and the ones it must leave to decodeStrict.
var decodeCases = []string{
	`{"room":"r1","name":"video-ready","body":{"a":1},"requestId":"q1"}`,
	` { "room" : "r1" , "name":"n", "body" : [1, "x]", {"y":"}"}] } `,
	`{"room":"r1","name":"n","body":"a \"quoted\" \\ string"}`,
	`{"room":"r1","name":"n","body":12.5e3}`,
	`{"room":"r1","name":"n","body":true}`,
	`{"room":"r1","name":"n","body":null}`,
	`{"room":null,"name":"n","body":{}}`,
	`{"room":"r\u00e9","name":"n","body":{}}`,
	`{"room":"r1","Room":"r2","name":"n","body":{}}`,
	`{"room":"r1","room":"r2","name":"n","body":{}}`,
	`{"ROOM":"r1","name":"n","body":{}}`,
	`{"room":"r1","name":"n","body":{},"extra":1}`,
	`{"room":"r1","name":"n","body":{}} x`,
	`{"room":"r1","name":"n","body":{}}{}`,
	`{"room":"r1","name":"n","body":{"a":}}`,
	`{"room":"r1","name":"n","body":[1,2}`,
	`{"room":"r1","name":"n","body":01}`,
	`{"room":"r1","name":"n","body":-}`,
	`{"room":"r1","name":"n","body":{}`,
	`{"room":"r1","name":"n","body":{},}`,
	`{"room":1,"name":"n","body":{}}`,
	`{"room":"r1" "name":"n"}`,
	`{"room":"tab	here","name":"n","body":{}}`,
	`{"room":"r1","name":"n","body":"\ud800"}`,
	"{\"room\":\"caf\xc3\xa9\",\"name\":\"n\",\"body\":{}}",
	"{\"room\":\"bad\xff\",\"name\":\"n\",\"body\":{}}",
	`{"requestId":"","room":"r","name":"n","body":[]}`,
	`{}`,
	` {} `,
	`[]`,
	`null`,
	``,
	`{`,
	`{"body":{"a":[{"b":"\\"}"}]}}`,
	`{"room":"r","name":"n","body":{"k":"v"}   }   `,
}

// TestDecodeMessageMatchesDecodeStrict holds the fast path to
// decodeStrict: the same value and the same error for every case.
func TestDecodeMessageMatchesDecodeStrict(t *testing.T) {
	fast := 0
	for _, c := range decodeCases {
		var want, got, probe messageRequest
		wantErr := decodeStrict([]byte(c), &want, "p.")
		gotErr := decodeMessage([]byte(c), &got, "p.")
		if decodeMessageFast([]byte(c), &probe) {
			fast++
			if wantErr != nil {
				t.Errorf("%q: fast path accepted what decodeStrict refuses (%v)", c, wantErr)
			}
		}
		if (wantErr == nil) != (gotErr == nil) || (wantErr != nil && wantErr.Error() != gotErr.Error()) {
			t.Errorf("%q: error %v, decodeStrict gives %v", c, gotErr, wantErr)
		}
		if wantErr == nil && !reflect.DeepEqual(got, want) {
			t.Errorf("%q: decoded %s, decodeStrict gives %s", c, show(got), show(want))
		}
	}
	if fast < 8 {
		t.Errorf("fast path taken for %d cases, want the common shapes (>= 8)", fast)
	}
}

func show(m messageRequest) string {
	s := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	return "room=" + s(m.Room) + " name=" + s(m.Name) + " requestId=" + s(m.RequestID) + " body=" + string(m.Body)
}

// FuzzDecodeMessageFast checks the same property on generated bodies.
func FuzzDecodeMessageFast(f *testing.F) {
	for _, c := range decodeCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want, got messageRequest
		wantErr := decodeStrict(b, &want, "")
		gotErr := decodeMessage(b, &got, "")
		if (wantErr == nil) != (gotErr == nil) || (wantErr != nil && wantErr.Error() != gotErr.Error()) {
			t.Fatalf("%q: error %v, decodeStrict gives %v", b, gotErr, wantErr)
		}
		if wantErr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: decoded %s, decodeStrict gives %s", b, show(got), show(want))
		}
	})
}

// checkDropIn holds decodeDropIn to decodeStrict into a dropInRequest.
func checkDropIn(t *testing.T, b []byte) {
	var want dropInRequest
	wantErr := decodeStrict(b, &want, "")
	var got messageRequest
	gotErr := decodeDropIn(b, &got)
	if (wantErr == nil) != (gotErr == nil) || (wantErr != nil && wantErr.Error() != gotErr.Error()) {
		t.Fatalf("%q: error %v, decodeStrict gives %v", b, gotErr, wantErr)
	}
	if wantErr == nil && (got.Room != nil || !reflect.DeepEqual(got, messageRequest{Name: want.Name, Body: want.Body, RequestID: want.RequestID})) {
		t.Fatalf("%q: decoded %s, decodeStrict gives name %v body %s requestId %v", b, show(got), want.Name, want.Body, want.RequestID)
	}
}

// TestDecodeDropInMatchesDecodeStrict: the drop-in path's fast decode
// changes no answer (a room in the body is still an unknown field there).
func TestDecodeDropInMatchesDecodeStrict(t *testing.T) {
	cases := append([]string{
		`{"name":"n","body":{"a":1},"requestId":"r"}`,
		`{"body":[1,2],"name":"n"}`,
		`{"room":"r1","name":"n","body":1}`,
	}, decodeCases...)
	for _, c := range cases {
		checkDropIn(t, []byte(c))
	}
}

func FuzzDecodeDropIn(f *testing.F) {
	for _, c := range decodeCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkDropIn(t, b) })
}

// BenchmarkDecodeMessage compares the fast path with decodeStrict on the
// benchmark's message shape.
func BenchmarkDecodeMessage(b *testing.B) {
	body := []byte(`{"room":"room-17","name":"video-ready","body":{"assetId":"a-123","status":"ready","n":17,"tags":["x","y"]},"requestId":"lg-17-123456"}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m messageRequest
			if err := decodeMessage(body, &m, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("strict", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m messageRequest
			if err := decodeStrict(body, &m, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}
