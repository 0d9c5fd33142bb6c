package broadcast

import (
	"sync"
	"time"
)

// dedupKey identifies a request: requestIds are scoped to their app.
type dedupKey struct{ app, id string }

// dedupWindow remembers the requestIds claimed in the last window, per app,
// so a repeated requestId is not published twice. Memory is bounded: at most
// maxEntries ids are held, and claiming one more evicts the oldest. Entries
// live in shards, each a map plus a ring in claim order (which, the window
// being fixed, is also expiry order). Safe for concurrent use.
type dedupWindow struct {
	window time.Duration
	shards []dedupShard
}

type dedupShard struct {
	mu      sync.Mutex
	entries map[dedupKey]dedupEntry
	ring    []ringItem // circular, grows up to max
	head, n int
	max     int
	nextGen uint64
}

type dedupEntry struct {
	at  time.Time
	gen uint64
}

type ringItem struct {
	key dedupKey
	at  time.Time
	gen uint64
}

// newDedupWindow returns a window of the given length holding at most
// maxEntries ids (both must be positive). Small bounds use one shard, so
// the eviction order is exact; large ones spread over 32 shards of
// maxEntries/32 each.
func newDedupWindow(window time.Duration, maxEntries int) *dedupWindow {
	nShards := 1
	if maxEntries >= 2048 {
		nShards = 32
	}
	per := (maxEntries + nShards - 1) / nShards
	d := &dedupWindow{window: window, shards: make([]dedupShard, nShards)}
	for i := range d.shards {
		d.shards[i].entries = make(map[dedupKey]dedupEntry)
		d.shards[i].max = per
	}
	return d
}

func (d *dedupWindow) shard(k dedupKey) *dedupShard {
	if len(d.shards) == 1 {
		return &d.shards[0]
	}
	return &d.shards[hash2(k.app, k.id)%uint64(len(d.shards))]
}

// claim records (app, id) as seen at now. It reports dup when the id was
// claimed less than the window ago and not released since; otherwise it
// returns the claim's generation, which release needs.
func (d *dedupWindow) claim(app, id string, now time.Time) (gen uint64, dup bool) {
	k := dedupKey{app, id}
	s := d.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	cutoff := now.Add(-d.window)
	for s.n > 0 && !s.ring[s.head].at.After(cutoff) {
		s.pop()
	}
	if e, ok := s.entries[k]; ok && e.at.After(cutoff) {
		return 0, true
	}
	if s.n == s.max {
		s.pop() // evict the oldest
	}
	s.nextGen++
	gen = s.nextGen
	s.entries[k] = dedupEntry{at: now, gen: gen}
	s.push(ringItem{key: k, at: now, gen: gen})
	return gen, false
}

// release forgets the claim gen of (app, id), so the id may be claimed
// again: used when the answering publish failed and the app will retry. A
// newer claim of the same id is left alone.
func (d *dedupWindow) release(app, id string, gen uint64) {
	k := dedupKey{app, id}
	s := d.shard(k)
	s.mu.Lock()
	if e, ok := s.entries[k]; ok && e.gen == gen {
		delete(s.entries, k)
	}
	s.mu.Unlock()
}

// len returns the number of ids held (for tests).
func (d *dedupWindow) len() int {
	n := 0
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		n += len(s.entries)
		s.mu.Unlock()
	}
	return n
}

// pop drops the oldest ring item and its entry if that entry is still the
// same claim. s.mu must be held and s.n > 0.
func (s *dedupShard) pop() {
	it := s.ring[s.head]
	s.ring[s.head] = ringItem{}
	s.head = (s.head + 1) % len(s.ring)
	s.n--
	if e, ok := s.entries[it.key]; ok && e.gen == it.gen {
		delete(s.entries, it.key)
	}
}

// push appends it to the ring, growing it up to s.max. s.mu must be held
// and s.n < s.max.
func (s *dedupShard) push(it ringItem) {
	if s.n == len(s.ring) {
		size := min(s.max, max(16, 2*len(s.ring)))
		next := make([]ringItem, size)
		for i := 0; i < s.n; i++ {
			next[i] = s.ring[(s.head+i)%len(s.ring)]
		}
		s.ring, s.head = next, 0
	}
	s.ring[(s.head+s.n)%len(s.ring)] = it
	s.n++
}
