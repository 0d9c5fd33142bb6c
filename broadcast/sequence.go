package broadcast

import (
	"container/list"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Sequence is the part of the envelope a sequenced app's browsers read to
// deliver each message once and in order (docs/browser.md): a per-message
// id and a per-room sequence number, with what a client needs to follow
// the stages and report receipts. It is the "sy" member of the envelope
// and is present only for apps configured with sequence: true.
type Sequence struct {
	// ID identifies the message for deduplication: Epoch, "-" and Seq. The
	// two copies of one message (shadow and dual publish to both
	// transports) carry the same ID; a retried upstream attempt carries
	// the same ID too.
	ID string `json:"id"`
	// Epoch names the run of Seq numbers: one room's sequence on one
	// gateway process. It changes when the gateway restarts or forgets an
	// idle room (multicast.sequenceIdleTTL, multicast.sequenceRooms); Seq
	// starts again at 1 in a new epoch.
	Epoch string `json:"epoch"`
	// Seq numbers the room's messages 1, 2, 3... in the order the gateway
	// accepted them, without gaps within an epoch: a missing number is a
	// message the browser has not received (yet).
	Seq uint64 `json:"seq"`
	// TS is when the gateway accepted the message, Unix milliseconds.
	TS int64 `json:"ts"`
	// Stage is the stage the message was published under.
	Stage Stage `json:"stage"`
	// Channel is the configured channel of the message's event.
	Channel string `json:"channel"`
	// KillSwitch is true when the kill switch decided the stage.
	KillSwitch bool `json:"killSwitch,omitempty"`
}

// Sequencer defaults.
const (
	// DefaultSequenceRooms is how many rooms' sequences are remembered
	// when multicast.sequenceRooms is unset.
	DefaultSequenceRooms = 50000
	// DefaultSequenceIdleTTL is how long an idle room's sequence is
	// remembered when multicast.sequenceIdleTTL is unset.
	DefaultSequenceIdleTTL = time.Hour
	// sequenceRing is how many recent messages of a room the sequencer
	// remembers the channel of, so that a receipt naming a missing
	// sequence number can be counted under its channel.
	sequenceRing = 128
	seqShards    = 32
)

// sequencer numbers each room's messages. It remembers at most maxRooms
// rooms (least recently used first out) for at most ttl after their last
// use; a forgotten room starts a new epoch. Safe for concurrent use.
type sequencer struct {
	prefix  string // random per sequencer, so epochs of two processes differ
	created atomic.Uint64
	ttl     time.Duration
	perSh   int
	chanIdx map[string]uint8 // channel name -> index+1
	names   []string
	shards  [seqShards]seqShard
}

type seqShard struct {
	mu  sync.Mutex
	m   map[roomKey]*list.Element
	lru list.List // front: most recently used; values *seqRoom
}

type seqRoom struct {
	key   roomKey
	epoch string
	last  uint64
	used  time.Time
	chans [sequenceRing]uint8 // channel index+1 of seq s at s % sequenceRing
}

// newSequencer returns a sequencer for the given channel names (at most
// 255 are remembered by name; others resolve to no channel).
func newSequencer(maxRooms int, ttl time.Duration, channels []string) *sequencer {
	var b [4]byte
	_, _ = rand.Read(b[:])
	s := &sequencer{prefix: hex.EncodeToString(b[:]), ttl: ttl, perSh: max(1, (maxRooms+seqShards-1)/seqShards), chanIdx: map[string]uint8{}}
	for _, c := range append(append([]string(nil), channels...), DefaultChannel) {
		if _, dup := s.chanIdx[c]; dup || len(s.names) == 255 {
			continue
		}
		s.names = append(s.names, c)
		s.chanIdx[c] = uint8(len(s.names))
	}
	for i := range s.shards {
		s.shards[i].m = map[roomKey]*list.Element{}
	}
	return s
}

// room returns the live state of (app, room), creating it (a new epoch)
// when absent; it evicts expired and excess rooms. sh.mu must be held.
func (s *sequencer) room(sh *seqShard, app, room string, now time.Time) *seqRoom {
	k := roomKey{app, room}
	for e := sh.lru.Back(); e != nil && now.Sub(e.Value.(*seqRoom).used) >= s.ttl; e = sh.lru.Back() {
		sh.lru.Remove(e)
		delete(sh.m, e.Value.(*seqRoom).key)
	}
	if e, ok := sh.m[k]; ok {
		sh.lru.MoveToFront(e)
		r := e.Value.(*seqRoom)
		r.used = now
		return r
	}
	if sh.lru.Len() >= s.perSh {
		e := sh.lru.Back()
		sh.lru.Remove(e)
		delete(sh.m, e.Value.(*seqRoom).key)
	}
	r := &seqRoom{key: k, used: now, epoch: s.prefix + "." + strconv.FormatUint(s.created.Add(1), 36)}
	sh.m[k] = sh.lru.PushFront(r)
	return r
}

func (s *sequencer) shard(app, room string) *seqShard {
	return &s.shards[hash2(app, room)%seqShards]
}

// next assigns the next sequence number of (app, room) to a message of
// channel. Callers serialise the messages of one room (the multicaster's
// room lock), so numbers are assigned in acceptance order.
func (s *sequencer) next(app, room, channel string, now time.Time) (epoch string, seq uint64) {
	sh := s.shard(app, room)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := s.room(sh, app, room, now)
	r.last++
	r.chans[r.last%sequenceRing] = s.chanIdx[channel]
	return r.epoch, r.last
}

// peek returns the epoch of (app, room) and the last number assigned in it
// (0 when none), creating the room's state so that the epoch stays.
func (s *sequencer) peek(app, room string, now time.Time) (epoch string, last uint64) {
	sh := s.shard(app, room)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := s.room(sh, app, room, now)
	return r.epoch, r.last
}

// channelOf returns the channel of message seq of epoch in (app, room)
// while it is among the room's last sequenceRing messages.
func (s *sequencer) channelOf(app, room, epoch string, seq uint64) (string, bool) {
	sh := s.shard(app, room)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[roomKey{app, room}]
	if !ok {
		return "", false
	}
	r := e.Value.(*seqRoom)
	if r.epoch != epoch || seq == 0 || seq > r.last || r.last-seq >= sequenceRing {
		return "", false
	}
	i := r.chans[seq%sequenceRing]
	if i == 0 {
		return "", false
	}
	return s.names[i-1], true
}

// len returns the number of remembered rooms (for tests).
func (s *sequencer) len() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.Lock()
		n += len(s.shards[i].m)
		s.shards[i].mu.Unlock()
	}
	return n
}

// AppendSequencedEnvelope appends the envelope of a sequenced app:
// {"body":body,"requestId":requestID,"name":name,"sy":{...}} with sq
// encoded as Sequence is. body must already be valid JSON; it is copied
// byte for byte. The first three members are exactly AppendEnvelope's, so
// a handler written for the plain envelope reads this one unchanged.
func AppendSequencedEnvelope(dst []byte, body []byte, requestID, name string, sq *Sequence) []byte {
	dst = AppendEnvelope(dst, body, requestID, name)
	dst = dst[:len(dst)-1] // reopen the object
	dst = append(dst, `,"sy":{"id":`...)
	dst = appendJSONString(dst, sq.ID)
	dst = append(dst, `,"epoch":`...)
	dst = appendJSONString(dst, sq.Epoch)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, sq.Seq, 10)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, sq.TS, 10)
	dst = append(dst, `,"stage":`...)
	dst = appendJSONString(dst, string(sq.Stage))
	dst = append(dst, `,"channel":`...)
	dst = appendJSONString(dst, sq.Channel)
	if sq.KillSwitch {
		dst = append(dst, `,"killSwitch":true`...)
	}
	return append(dst, "}}"...)
}
