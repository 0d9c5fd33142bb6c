package broadcast

import (
	"context"
	"sync"
)

// hash2 is FNV-1a over a, a zero byte and b. It allocates nothing.
func hash2(a, b string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(a); i++ {
		h ^= uint64(a[i])
		h *= prime
	}
	h *= prime // the separator byte 0
	for i := 0; i < len(b); i++ {
		h ^= uint64(b[i])
		h *= prime
	}
	// final avalanche (from splitmix64) so low bits are usable as a shard
	// or lane index
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// roomKey identifies a room: room ids are scoped to their app.
type roomKey struct{ app, room string }

// roomState serialises the publishes of one room. It exists while anyone
// holds a reference: a Broadcast between acquire and release, or an off-path
// job between enqueue and completion. Idle rooms cost nothing.
type roomState struct {
	key  roomKey
	h    uint64 // hash2 of key
	refs int    // guarded by the shard's mu

	// sem is the room lock (a one-slot channel, so that waiting for it
	// honours a context). Go wakes blocked senders in FIFO order, so
	// concurrent callers of one room are served roughly in arrival order;
	// the acceptance order is the order in which they take sem.
	sem chan struct{}

	// pmu guards the rest, per transport index: pending counts the
	// off-path jobs of this room queued or in flight; q[t][qh[t]:] are the
	// queued ones in order; scheduled says the room is in the ready queue
	// or being served; waiter is closed when pending[waitT] drops to zero.
	pmu       sync.Mutex
	pending   [2]int
	q         [2][]offJob
	qh        [2]int
	scheduled [2]bool
	waiter    chan struct{}
	waitT     int
}

// lock takes the room lock or fails when ctx ends first.
// tryLock takes the room lock if it is free.
func (st *roomState) tryLock() bool {
	select {
	case st.sem <- struct{}{}:
		return true
	default:
		return false
	}
}

// idleFor reports whether the room has no off-path job of transport index
// t queued or in flight.
func (st *roomState) idleFor(t int) bool {
	st.pmu.Lock()
	defer st.pmu.Unlock()
	return st.pending[t] == 0
}

func (st *roomState) lock(ctx context.Context) error {
	select {
	case st.sem <- struct{}{}:
		return nil
	default:
	}
	select {
	case st.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (st *roomState) unlock() { <-st.sem }

// donePending uncounts an off-path job of transport index t and wakes a
// waiter once none is left.
func (st *roomState) donePending(t int) {
	st.pmu.Lock()
	st.pending[t]--
	if st.pending[t] == 0 && st.waiter != nil && st.waitT == t {
		close(st.waiter)
		st.waiter = nil
	}
	st.pmu.Unlock()
}

// waitIdle blocks until the room has no off-path job of transport index t
// queued or in flight, or ctx ends. The caller holds the room lock, so no
// new job of the room can be queued meanwhile, and it is the only waiter.
func (st *roomState) waitIdle(ctx context.Context, t int) error {
	st.pmu.Lock()
	if st.pending[t] == 0 {
		st.pmu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	st.waiter, st.waitT = ch, t
	st.pmu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		st.pmu.Lock()
		if st.waiter == ch {
			st.waiter = nil
		}
		st.pmu.Unlock()
		return ctx.Err()
	}
}

// rooms is the sharded map of live room states.
type rooms struct {
	shards [64]roomShard
	pool   sync.Pool
}

type roomShard struct {
	mu sync.Mutex
	m  map[roomKey]*roomState
	_  [48]byte // keep shards on separate cache lines
}

func newRooms() *rooms {
	r := &rooms{}
	for i := range r.shards {
		r.shards[i].m = make(map[roomKey]*roomState)
	}
	r.pool.New = func() any { return &roomState{sem: make(chan struct{}, 1)} }
	return r
}

// acquire returns the state of (app, room) with one more reference; h is
// hash2(app, room).
func (r *rooms) acquire(app, room string, h uint64) *roomState {
	k := roomKey{app, room}
	s := &r.shards[h%uint64(len(r.shards))]
	s.mu.Lock()
	st := s.m[k]
	if st == nil {
		st = r.pool.Get().(*roomState)
		st.key, st.h = k, h
		s.m[k] = st
	}
	st.refs++
	s.mu.Unlock()
	return st
}

// ref adds a reference to a state the caller already holds one on.
func (r *rooms) ref(st *roomState, h uint64) {
	s := &r.shards[h%uint64(len(r.shards))]
	s.mu.Lock()
	st.refs++
	s.mu.Unlock()
}

// release drops one reference; the last one removes the room.
func (r *rooms) release(st *roomState, h uint64) {
	s := &r.shards[h%uint64(len(r.shards))]
	s.mu.Lock()
	st.refs--
	if st.refs == 0 {
		delete(s.m, st.key)
		st.key = roomKey{}
		r.pool.Put(st)
	}
	s.mu.Unlock()
}

// len returns the number of live rooms (for tests).
func (r *rooms) len() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
