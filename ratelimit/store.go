package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"
	memorystore "github.com/ulule/limiter/v3/drivers/store/memory"
	redisstore "github.com/ulule/limiter/v3/drivers/store/redis"
)

// Store keeps rate-limit counters: in memory (one process) or in
// Redis (shared by several Caddy instances).
type Store struct {
	store  limiter.Store
	closer func() error
}

// NewMemoryStore keeps counters in this process.
func NewMemoryStore() *Store {
	return &Store{
		store:  memorystore.NewStoreWithOptions(limiter.StoreOptions{Prefix: "auth_agent", CleanUpInterval: time.Minute}),
		closer: func() error { return nil },
	}
}

// redisTimeout bounds every Redis operation: an unreachable Redis makes a
// request fail fast (and the configured policy apply), never hang.
const redisTimeout = 300 * time.Millisecond

// NewRedisStore keeps counters in the Redis at url
// (redis://[user:password@]host:port/db, or rediss:// for TLS).
func NewRedisStore(url string) (*Store, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %v", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = redisTimeout, redisTimeout, redisTimeout, redisTimeout
	opts.MaxRetries = 0
	client := redis.NewClient(opts)
	store, err := redisstore.NewStoreWithOptions(client, limiter.StoreOptions{Prefix: "auth_agent"})
	if err != nil {
		// The limiter checks the connection when it is made; a Redis that is
		// down at start must not stop Caddy: the failure policy applies per
		// request until it is back.
		store = &lazyRedisStore{client: client}
	}
	return &Store{store: store, closer: client.Close}, nil
}

// Close releases the store's connections.
func (s *Store) Close() error { return s.closer() }

// Budget returns a budget of limit requests per period, its keys kept apart
// from other budgets' by name.
func (s *Store) Budget(name string, limit int64, period time.Duration) *RateLimiter {
	return &RateLimiter{name: name, l: limiter.New(s.store, limiter.Rate{Period: period, Limit: limit})}
}

// RateLimiter is one budget, backed by github.com/ulule/limiter/v3.
type RateLimiter struct {
	name string
	l    *limiter.Limiter
}

var _ Limiter = (*RateLimiter)(nil)

func status(c limiter.Context) Status {
	return Status{Limit: c.Limit, Remaining: c.Remaining, Reset: c.Reset, Reached: c.Reached}
}

// Take consumes one unit of key's budget.
func (r *RateLimiter) Take(ctx context.Context, key string) (Status, error) {
	c, err := r.l.Get(ctx, r.name+":"+key)
	return status(c), err
}

// Peek reports key's budget without consuming it.
func (r *RateLimiter) Peek(ctx context.Context, key string) (Status, error) {
	c, err := r.l.Peek(ctx, r.name+":"+key)
	return status(c), err
}

// Refund gives back one unit of key's budget.
func (r *RateLimiter) Refund(ctx context.Context, key string) error {
	_, err := r.l.Increment(ctx, r.name+":"+key, -1)
	return err
}

// TakeN consumes n units of key's budget in one call to the store (a
// negative n gives units back) and reports the state after it.
func (r *RateLimiter) TakeN(ctx context.Context, key string, n int64) (Status, error) {
	c, err := r.l.Increment(ctx, r.name+":"+key, n)
	return status(c), err
}

// Period is the length of the budget's window.
func (r *RateLimiter) Period() time.Duration { return r.l.Rate.Period }

// lazyRedisStore builds the real Redis store on first success, so Caddy
// starts while Redis is down.
type lazyRedisStore struct {
	client *redis.Client
	mu     sync.Mutex
	store  limiter.Store
	last   time.Time // last connection attempt
	trying bool
}

// errRedisDown is returned while Redis is known to be unreachable.
var errRedisDown = errors.New("redis is unreachable")

// real returns the store once Redis answered. While it does not, at most
// one caller per second tries to connect (outside the lock); everyone else
// fails at once, so requests never queue behind a dead Redis.
func (l *lazyRedisStore) real(ctx context.Context) (limiter.Store, error) {
	l.mu.Lock()
	if l.store != nil {
		s := l.store
		l.mu.Unlock()
		return s, nil
	}
	if l.trying || time.Since(l.last) < time.Second {
		l.mu.Unlock()
		return nil, errRedisDown
	}
	l.trying, l.last = true, time.Now()
	l.mu.Unlock()

	s, err := redisstore.NewStoreWithOptions(l.client, limiter.StoreOptions{Prefix: "auth_agent"})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trying = false
	if err != nil {
		return nil, err
	}
	l.store = s
	return s, nil
}

func (l *lazyRedisStore) Get(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	s, err := l.real(ctx)
	if err != nil {
		return limiter.Context{}, err
	}
	return s.Get(ctx, key, rate)
}

func (l *lazyRedisStore) Peek(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	s, err := l.real(ctx)
	if err != nil {
		return limiter.Context{}, err
	}
	return s.Peek(ctx, key, rate)
}

func (l *lazyRedisStore) Reset(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	s, err := l.real(ctx)
	if err != nil {
		return limiter.Context{}, err
	}
	return s.Reset(ctx, key, rate)
}

func (l *lazyRedisStore) Increment(ctx context.Context, key string, count int64, rate limiter.Rate) (limiter.Context, error) {
	s, err := l.real(ctx)
	if err != nil {
		return limiter.Context{}, err
	}
	return s.Increment(ctx, key, count, rate)
}
