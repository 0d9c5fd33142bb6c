package dedupredis

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/dedupredis/redisdev"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Addr: "127.0.0.1:6379"}, ""},
		{Config{}, "addr: required"},
		{Config{Addr: "redis"}, `addr: "redis" is not host:port`},
		{Config{Addr: "redis:0"}, `port "0"`},
		{Config{Addr: "redis:6379", DB: -1}, "db: -1 is negative"},
		{Config{Addr: "redis:6379", KeyPrefix: "a b"}, "keyPrefix"},
		{Config{Addr: "redis:6379", Timeout: -time.Second}, "timeout: -1s is negative"},
		{Config{Addr: "redis:6379", Username: "u"}, "password: required when username is set"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: %v, want nil", tt.cfg, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%+v: %v, want an error containing %q", tt.cfg, err, tt.want)
		}
	}
}

func newStore(t *testing.T, addr, prefix string) *Store {
	t.Helper()
	s, err := New(Config{Addr: addr, KeyPrefix: prefix, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Two stores on one Redis (two replicas) agree: the second claim of an id
// is a duplicate, another app's or prefix's is not, a release with the
// wrong token keeps the claim, the right one frees it, and the window
// expires.
func TestStoreAgainstRedis(t *testing.T) {
	srv := redisdev.Start(t)
	a, b := newStore(t, srv.Addr(), "t1:"), newStore(t, srv.Addr(), "t1:")
	other := newStore(t, srv.Addr(), "t2:")
	ctx := context.Background()
	tok, dup, err := a.Claim(ctx, "app", "r1", time.Minute)
	if err != nil || dup || tok == "" {
		t.Fatalf("first claim: %q %v %v", tok, dup, err)
	}
	if _, dup, err := b.Claim(ctx, "app", "r1", time.Minute); err != nil || !dup {
		t.Fatalf("claim on the other replica: dup=%v err=%v, want a duplicate", dup, err)
	}
	if _, dup, _ := b.Claim(ctx, "app2", "r1", time.Minute); dup {
		t.Error("another app's id: duplicate")
	}
	if _, dup, _ := other.Claim(ctx, "app", "r1", time.Minute); dup {
		t.Error("another key prefix: duplicate")
	}
	if err := b.Release(ctx, "app", "r1", "not-the-token"); err != nil {
		t.Fatal(err)
	}
	if _, dup, _ := b.Claim(ctx, "app", "r1", time.Minute); !dup {
		t.Error("a release with another token freed the claim")
	}
	if err := a.Release(ctx, "app", "r1", tok); err != nil {
		t.Fatal(err)
	}
	if _, dup, _ := b.Claim(ctx, "app", "r1", time.Minute); dup {
		t.Error("released id: still a duplicate")
	}
	if _, dup, _ := a.Claim(ctx, "app", "short", 50*time.Millisecond); dup {
		t.Fatal("short: duplicate at first")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, dup, err := a.Claim(ctx, "app", "short", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !dup {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the 50ms window did not expire within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Concurrent claims of one id on several stores: exactly one wins.
func TestStoreConcurrentClaims(t *testing.T) {
	srv := redisdev.Start(t)
	stores := []*Store{newStore(t, srv.Addr(), ""), newStore(t, srv.Addr(), ""), newStore(t, srv.Addr(), "")}
	for round := range 20 {
		id := "id-" + string(rune('a'+round))
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for _, s := range stores {
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, dup, err := s.Claim(context.Background(), "app", id, time.Minute)
					if err != nil {
						t.Error(err)
						return
					}
					if !dup {
						mu.Lock()
						wins++
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%s: %d claims won, want exactly 1", id, wins)
		}
	}
}

// A Redis that is gone makes calls fail within the caller's deadline, with
// an error (the Multicaster then fails open).
func TestStoreDownFailsFast(t *testing.T) {
	srv := redisdev.Start(t)
	s := newStore(t, srv.Addr(), "")
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := s.Claim(ctx, "app", "x", time.Minute)
	if err == nil {
		t.Fatal("claim against a killed Redis: no error")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("claim took %v against a killed Redis, want within the 100ms deadline", d)
	}
}

// BenchmarkBroadcast measures what the shared check adds to one
// idempotent Broadcast (answering publish to a no-op transport): "memory"
// is the in-memory window alone, "redis" adds the claim on a local Redis.
// The difference is the added latency per message.
func BenchmarkBroadcast(b *testing.B) {
	srv := redisdev.Start(b)
	store, err := New(Config{Addr: srv.Addr()})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	nop := publisherFunc(func(context.Context, *broadcast.Message) (broadcast.PublishResult, error) {
		return broadcast.PublishResult{Attempts: 1}, nil
	})
	resolver := stageFunc(func(q broadcast.RouteQuery) broadcast.Route { return broadcast.Route{Stage: broadcast.StageLegacy} })
	for _, tc := range []struct {
		name  string
		store broadcast.IdempotencyStore
	}{{"memory", nil}, {"redis", store}} {
		b.Run(tc.name, func(b *testing.B) {
			mc := broadcast.NewMulticaster(broadcast.Config{SharedDedup: tc.store, SharedDedupTimeout: time.Second},
				nop, nop, resolver, nil, nil, nil, nil)
			run := strconv.FormatInt(time.Now().UnixNano(), 36)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := run + "-" + strconv.Itoa(i)
				m, err := broadcast.NewMessage("app", "room", "e", id, json.RawMessage(`{}`), "", time.Now())
				if err != nil {
					b.Fatal(err)
				}
				m.IdempotencyKey = id
				out, err := mc.Broadcast(ctx, m)
				if err != nil || out.Deliveries[broadcast.TransportLegacy].Status != broadcast.Delivered {
					b.Fatalf("%+v %v", out, err)
				}
			}
			b.StopTimer()
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			mc.Close(cctx)
		})
	}
}

type publisherFunc func(context.Context, *broadcast.Message) (broadcast.PublishResult, error)

func (f publisherFunc) Publish(ctx context.Context, m *broadcast.Message) (broadcast.PublishResult, error) {
	return f(ctx, m)
}

type stageFunc func(broadcast.RouteQuery) broadcast.Route

func (f stageFunc) Resolve(q broadcast.RouteQuery) broadcast.Route { return f(q) }
