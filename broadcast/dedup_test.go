package broadcast

import (
	"fmt"
	"testing"
	"time"
)

func TestDedupWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := newDedupWindow(time.Minute, 3)
	claim := func(app, id string, at time.Time) (uint64, bool) {
		t.Helper()
		return d.claim(app, id, at)
	}
	genA, dup := claim("app", "a", t0)
	if dup {
		t.Fatal("first claim of a: duplicate")
	}
	if _, dup := claim("app", "a", t0.Add(59*time.Second)); !dup {
		t.Error("a inside the window: not duplicate")
	}
	if _, dup := claim("other", "a", t0); dup {
		t.Error("a of another app: duplicate")
	}
	// Released: the next claim goes through; a stale release of the old
	// generation does not undo the newer claim.
	d.release("app", "a", genA)
	if _, dup := claim("app", "a", t0.Add(time.Second)); dup {
		t.Error("a after release: duplicate")
	}
	d.release("app", "a", genA)
	if _, dup := claim("app", "a", t0.Add(2*time.Second)); !dup {
		t.Error("stale release forgot the newer claim")
	}
	// Expiry.
	if _, dup := claim("app", "a", t0.Add(2*time.Minute)); dup {
		t.Error("a after the window: duplicate")
	}
	// Bound: never more than 3 entries, oldest evicted first.
	for i := 0; i < 10; i++ {
		claim("app", fmt.Sprint("x", i), t0.Add(2*time.Minute))
		if got := d.len(); got > 3 {
			t.Fatalf("entries: got %d, want at most 3", got)
		}
	}
	if _, dup := claim("app", "x9", t0.Add(2*time.Minute)); !dup {
		t.Error("newest id evicted")
	}
	if _, dup := claim("app", "x0", t0.Add(2*time.Minute)); dup {
		t.Error("oldest id not evicted")
	}
}

func TestDedupWindowSharded(t *testing.T) {
	const maxEntries = 4096
	d := newDedupWindow(time.Minute, maxEntries)
	if got, want := len(d.shards), 32; got != want {
		t.Fatalf("shards: got %d, want %d", got, want)
	}
	now := time.Now()
	for i := 0; i < 2*maxEntries; i++ {
		d.claim("app", fmt.Sprint(i), now)
	}
	if got := d.len(); got > maxEntries {
		t.Errorf("entries: got %d, want at most %d", got, maxEntries)
	}
	if _, dup := d.claim("app", fmt.Sprint(2*maxEntries-1), now); !dup {
		t.Error("recent id forgotten")
	}
}
