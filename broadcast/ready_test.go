package broadcast

import "testing"

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestReadySignal(t *testing.T) {
	var r ReadySignal
	if r.Ready() {
		t.Fatal("zero value is ready")
	}
	ch := r.ReadyC()
	if closed(ch) {
		t.Fatal("ReadyC closed while not ready")
	}
	if !r.Set(true) || r.Set(true) {
		t.Fatal("Set(true) must report one change")
	}
	if !closed(ch) || !closed(r.ReadyC()) || !r.Ready() {
		t.Fatal("ready: the waiting channel and a new ReadyC must be closed")
	}
	if !r.Set(false) {
		t.Fatal("Set(false) reported no change")
	}
	ch2 := r.ReadyC()
	if closed(ch2) || r.Ready() {
		t.Fatal("not ready again: ReadyC must be open")
	}
	r.End()
	if !closed(ch2) || !closed(r.ReadyC()) {
		t.Fatal("End must wake waiters")
	}
	if r.Set(true) || r.Ready() {
		t.Fatal("Set after End changed the flag")
	}
	r.End() // idempotent
}
