package broadcast

import (
	"context"
	"sync"
	"time"
)

// Publisher delivers one message to one transport. Publish blocks until the
// upstream accepted the message, the attempts ran out, or ctx ended; it
// retries transient failures itself within ctx's deadline. It must be safe
// for concurrent use. The returned error wraps an *Error with code EUPSTREAM
// (or EINVALID/ETOOLARGE for a message the transport refuses before sending)
// and the PublishResult is filled in either case.
type Publisher interface {
	Publish(ctx context.Context, m *Message) (PublishResult, error)
}

// Bounded is implemented by a Publisher whose Publish returns on its own
// within CallBound of its start, whatever the deadline of its ctx (its
// retry policy's whole-call timeout, for every attempt and backoff). When
// the time the Multicaster gives a publish is at least that long, it
// publishes under the context it has instead of a timer context of its own
// per message (cancellation still reaches the publish through that
// context). CallBound must be constant.
type Bounded interface {
	CallBound() time.Duration
}

// callBound returns p's CallBound, or 0 (no bound known) when p does not
// implement Bounded.
func callBound(p Publisher) time.Duration {
	if b, ok := p.(Bounded); ok {
		return max(b.CallBound(), 0)
	}
	return 0
}

// PublishResult reports how a publish went.
type PublishResult struct {
	// Attempts is the number of HTTP requests made (0 if refused before
	// sending).
	Attempts int
}

// PublisherFunc adapts a function to Publisher.
type PublisherFunc func(ctx context.Context, m *Message) (PublishResult, error)

// Publish calls f.
func (f PublisherFunc) Publish(ctx context.Context, m *Message) (PublishResult, error) {
	return f(ctx, m)
}

// AppRouter routes each message to the Publisher of its App. It is read-only
// after construction and safe for concurrent use.
type AppRouter map[string]Publisher

// Publish delivers m through the publisher of m.App; an app without one is
// an ENOTFOUND error.
func (r AppRouter) Publish(ctx context.Context, m *Message) (PublishResult, error) {
	p, ok := r[m.App]
	if !ok {
		return PublishResult{}, Errorf(ENOTFOUND, "app %q has no publisher for this transport", m.App)
	}
	return p.Publish(ctx, m)
}

// CallBound is the longest CallBound of the router's publishers (Bounded),
// or 0 (no bound known) when the router is empty or one of them does not
// implement Bounded. Call it once the router is complete.
func (r AppRouter) CallBound() time.Duration {
	var b time.Duration
	for _, p := range r {
		pb := callBound(p)
		if pb == 0 {
			return 0
		}
		b = max(b, pb)
	}
	return b
}

// DeliveryStatus is a transport's outcome for one message, as the caller's
// answer shows it.
type DeliveryStatus string

// The delivery statuses.
const (
	// Delivered: the upstream accepted the message.
	Delivered DeliveryStatus = "delivered"
	// Failed: the upstream refused it or the attempts ran out.
	Failed DeliveryStatus = "failed"
	// Queued: handed to the off-path queue; the outcome is counted later.
	Queued DeliveryStatus = "queued"
	// Skipped: the stage does not publish to this transport, or the
	// off-path queue was full and the message was dropped for this side.
	Skipped DeliveryStatus = "skipped"
	// Duplicate: the requestId was seen inside the idempotency window.
	Duplicate DeliveryStatus = "duplicate"
)

// Delivery is one transport's outcome in the caller's answer.
type Delivery struct {
	Status   DeliveryStatus `json:"status"`
	Attempts int            `json:"attempts"`
	Duration time.Duration  `json:"-"`
	// Millis is Duration in milliseconds, for the JSON answer.
	Millis float64 `json:"ms"`
	// Reason says why a delivery was skipped or failed (client-safe).
	Reason string `json:"reason,omitempty"`
}

// Outcome is the adapter's answer for one accepted message.
type Outcome struct {
	RequestID  string                 `json:"requestId"`
	Stage      Stage                  `json:"stage"`
	Deliveries map[Transport]Delivery `json:"deliveries"`
}

// Observer is told about each sampled message of a compared stage before it
// is published. Expect must not block and must not retain ctx; it may
// retain m (messages are immutable).
type Observer interface {
	Expect(m *Message, stage Stage)
}

// WatchAwaiter may be implemented by the Observer given to NewMulticaster,
// so that the copies of a sampled message are published only once the
// observer can see them. For a message passed to Expect, the Multicaster
// calls AwaitWatch just before it publishes each copy: on the caller's
// path before the answering publish, and in the room's off-path lane
// before the off-path publish (with ctx bounded by OffPathTimeout there).
// AwaitWatch blocks until the observer's watch of m's room on t is ready,
// its own bound passes (the observer bounds the wait on the caller's path
// itself), or ctx ends; it never fails the publish, which follows in every
// case. It must be safe for concurrent use and must not retain ctx.
type WatchAwaiter interface {
	AwaitWatch(ctx context.Context, m *Message, t Transport)
}

// Watch is a browser-like subscription to one room on one transport, opened
// by a transport's WatchRoom(app, room string, onFrame func(data []byte,
// receivedAt time.Time)) (Watch, error). The subscription connects and
// reconnects in the background; onFrame is called from one goroutine per
// watch with the JSON envelope of each message received, and must not block.
type Watch interface {
	// Ready reports whether the subscription is live now, so that a message
	// published from this moment on is expected to arrive.
	Ready() bool
	// Close ends the subscription; onFrame is not called after it returns.
	Close() error
}

// ReadyNotifier may be implemented by a Watch, so that a waiter need not
// poll Ready. ReadyC returns a channel that is closed once the watch is
// ready: already closed when Ready is true now, else closed at the next
// time it turns true (or when the watch is closed). The waiter checks
// Ready again after the channel closed, since the watch may have turned
// not ready since. Safe for concurrent use.
type ReadyNotifier interface {
	ReadyC() <-chan struct{}
}

// ReadySignal is a readiness flag with the channel of ReadyNotifier, for
// Watch implementations. The zero value is not ready. Its methods are safe
// for concurrent use.
type ReadySignal struct {
	mu    sync.Mutex
	ready bool
	ch    chan struct{} // closed while ready (or once ended)
	ended bool
}

// Set turns the flag on or off and reports whether it changed. Turning it
// on closes the channel ReadyC handed out; turning it off makes ReadyC
// hand out a fresh one. After End, Set does nothing.
func (r *ReadySignal) Set(ready bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended || r.ready == ready {
		return false
	}
	r.ready = ready
	if ready {
		if r.ch == nil {
			r.ch = make(chan struct{})
		}
		close(r.ch)
	} else {
		r.ch = nil
	}
	return true
}

// Ready reports the flag.
func (r *ReadySignal) Ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready
}

// ReadyC returns a channel closed once the flag is on (already closed when
// it is on now) or once End was called.
func (r *ReadySignal) ReadyC() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ch == nil {
		r.ch = make(chan struct{})
		if r.ended {
			close(r.ch)
		}
	}
	return r.ch
}

// End turns the flag off for good and wakes every waiter: the watch was
// closed.
func (r *ReadySignal) End() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return
	}
	r.ended = true
	if r.ch == nil || !r.ready {
		if r.ch == nil {
			r.ch = make(chan struct{})
		}
		close(r.ch)
	}
	r.ready = false
}
