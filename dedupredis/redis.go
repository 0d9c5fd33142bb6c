// Package dedupredis is the idempotency window shared by the replicas of
// an environment, on Redis: broadcast.IdempotencyStore with one key per
// claimed requestId (SET NX with the window as expiry), so that the same
// requestId sent to two replicas is published once. The Multicaster bounds
// and fails open every call (broadcast.Config.SharedDedup); this package
// only speaks Redis, without retries, honouring each call's deadline.
package dedupredis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/switchyard/switchyard/broadcast"
)

// DefaultKeyPrefix starts every key when Config.KeyPrefix is empty.
const DefaultKeyPrefix = "switchyard:idem:"

// Config addresses the Redis server. It is plain data, checked by
// Validate.
type Config struct {
	// Addr is host:port of the Redis server (or of a proxy in front of a
	// primary; Cluster and Sentinel are not supported).
	Addr string
	// Username and Password authenticate (ACL user, or Password alone for
	// requirepass). Password is a secret.
	Username, Password string
	// DB is the logical database (0..15 on a default server).
	DB int
	// TLS connects with TLS (server name from Addr, system roots).
	TLS bool
	// KeyPrefix starts every key (default DefaultKeyPrefix): one Redis can
	// then serve several environments apart.
	KeyPrefix string
	// Timeout bounds dialling and each command when the caller's context
	// has no sooner deadline (default 50ms).
	Timeout time.Duration
}

// Validate reports every problem of c, each naming its field by its YAML
// key under idempotency.redis (addr: required), without a prefix.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Addr == "" {
		add("addr: required (host:port of the Redis server)")
	} else if host, port, err := net.SplitHostPort(c.Addr); err != nil || host == "" {
		add("addr: %q is not host:port", c.Addr)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		add("addr: port %q is not a number from 1 to 65535", port)
	}
	if c.DB < 0 {
		add("db: %d is negative", c.DB)
	}
	if len(c.KeyPrefix) > 64 || strings.ContainsFunc(c.KeyPrefix, func(r rune) bool { return r <= ' ' || r > '~' }) {
		add("keyPrefix: %q must be at most 64 printable ASCII characters without spaces", c.KeyPrefix)
	}
	if c.Timeout < 0 {
		add("timeout: %v is negative", c.Timeout)
	}
	if c.Username != "" && c.Password == "" {
		add("password: required when username is set")
	}
	return errors.Join(errs...)
}

// WithDefaults returns c with KeyPrefix and Timeout defaulted.
func (c Config) WithDefaults() Config {
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	if c.Timeout <= 0 {
		c.Timeout = 50 * time.Millisecond
	}
	return c
}

// Store is a broadcast.IdempotencyStore on Redis. Keys are
// KeyPrefix + app + ":" + requestId, values a token unique per claim, the
// expiry the window. It is safe for concurrent use; Close releases its
// connections.
type Store struct {
	rdb    *redis.Client
	prefix string
	// tokens are a random process prefix and a counter: unique per claim
	// without a syscall each.
	tokenBase string
	tokenSeq  atomic.Uint64
}

var _ broadcast.IdempotencyStore = (*Store)(nil)

// New returns a Store for cfg (which must pass Validate). It connects
// lazily: nothing is dialled until the first call, so a Redis that is down
// at start does not stop the gateway (its calls fail open).
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dedupredis: %w", err)
	}
	cfg = cfg.WithDefaults()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("dedupredis: token seed: %w", err)
	}
	opts := &redis.Options{
		Addr: cfg.Addr, Username: cfg.Username, Password: cfg.Password, DB: cfg.DB,
		DialTimeout: cfg.Timeout, ReadTimeout: cfg.Timeout, WriteTimeout: cfg.Timeout, PoolTimeout: cfg.Timeout,
		// Fail fast: the Multicaster fails open instead of waiting.
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
		Protocol:              2,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	}
	if cfg.TLS {
		host, _, _ := net.SplitHostPort(cfg.Addr)
		opts.TLSConfig = newTLSConfig(host)
	}
	return &Store{rdb: redis.NewClient(opts), prefix: cfg.KeyPrefix, tokenBase: hex.EncodeToString(b[:]) + "-"}, nil
}

func (s *Store) key(app, id string) string {
	return s.prefix + app + ":" + id
}

// Claim is SET key token NX PX window: dup when the key exists.
func (s *Store) Claim(ctx context.Context, app, id string, window time.Duration) (token string, dup bool, err error) {
	token = s.tokenBase + strconv.FormatUint(s.tokenSeq.Add(1), 36)
	ok, err := s.rdb.SetNX(ctx, s.key(app, id), token, window).Result()
	if err != nil {
		return "", false, fmt.Errorf("dedupredis: claim: %w", err)
	}
	if !ok {
		return "", true, nil
	}
	return token, false, nil
}

// releaseScript deletes the key only while it holds this claim's token.
var releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// Release deletes the key if it still holds token.
func (s *Store) Release(ctx context.Context, app, id, token string) error {
	if err := releaseScript.Run(ctx, s.rdb, []string{s.key(app, id)}, token).Err(); err != nil {
		return fmt.Errorf("dedupredis: release: %w", err)
	}
	return nil
}

// Ping checks that the server answers (for a readiness probe or a start
// log line; the gateway does not need it to serve).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("dedupredis: ping: %w", err)
	}
	return nil
}

// Close closes the connections. Calls after Close fail.
func (s *Store) Close() error { return s.rdb.Close() }
