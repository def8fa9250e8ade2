// Package cache is the one bounded, expiring map the project's in-process
// caches are built on: verified tokens, introspection answers and
// remembered secret verifications.
package cache

import (
	"sync"
	"time"
)

// Cache maps keys to values until each entry's expiry, holding at most max
// entries. When full, expired entries are dropped first, then about a tenth
// of the rest, arbitrarily: every value can be computed again, so losing
// one only costs that work. It is safe for concurrent use.
type Cache[K comparable, V any] struct {
	mu      sync.RWMutex
	entries map[K]entry[V]
	max     int
	now     func() time.Time
}

type entry[V any] struct {
	value   V
	expires time.Time
}

// New returns a cache of at most max entries; now may be nil (time.Now).
func New[K comparable, V any](max int, now func() time.Time) *Cache[K, V] {
	if now == nil {
		now = time.Now
	}
	return &Cache[K, V]{entries: make(map[K]entry[V]), max: max, now: now}
}

// Get returns the value for key if it is there and has not expired.
func (c *Cache[K, V]) Get(key K) (V, bool) {
	c.mu.RLock()
	e, ok := c.entries[key]
	c.mu.RUnlock()
	if !ok || !c.now().Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.value, true
}

// Put stores value under key until expires.
func (c *Cache[K, V]) Put(key K, value V, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		c.evictLocked()
	}
	c.entries[key] = entry[V]{value: value, expires: expires}
}

// Delete drops key.
func (c *Cache[K, V]) Delete(key K) {
	c.mu.Lock()
	delete(c.entries, key)
	c.mu.Unlock()
}

// Len is the number of entries held, expired or not.
func (c *Cache[K, V]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

func (c *Cache[K, V]) evictLocked() {
	now := c.now()
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	for k := range c.entries {
		if len(c.entries) < c.max*9/10 {
			break
		}
		delete(c.entries, k)
	}
}
