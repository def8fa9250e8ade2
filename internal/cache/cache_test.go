package cache

import (
	"testing"
	"time"
)

func TestCacheExpiresAndBounds(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New[string, int](10, func() time.Time { return now })
	c.Put("a", 1, now.Add(time.Minute))
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("Get(a) = %d, %v", v, ok)
	}
	now = now.Add(time.Minute)
	if _, ok := c.Get("a"); ok {
		t.Fatal("an entry outlived its expiry")
	}
	for i := range 100 {
		c.Put(string(rune('a'+i)), i, now.Add(time.Hour))
		if c.Len() > 10 {
			t.Fatalf("%d entries, bound is 10", c.Len())
		}
	}
	c.Put("z", 26, now.Add(time.Hour))
	c.Delete("z")
	if _, ok := c.Get("z"); ok {
		t.Fatal("deleted entry still there")
	}
}
