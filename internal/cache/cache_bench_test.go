package cache

import (
	"strings"
	"testing"
	"time"
)

// BenchmarkGet is the guard's hot path: a hit on a key as long as an
// RS256 access token.
func BenchmarkGet(b *testing.B) {
	key := strings.Repeat("k", 790)
	c := New[string, *int](1000, nil)
	v := 1
	c.Put(strings.Clone(key), &v, time.Now().Add(time.Hour))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := c.Get(key); !ok {
			b.Fatal("miss")
		}
	}
}
