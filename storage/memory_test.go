package storage

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage/storagetest"
)

func TestMemoryConformance(t *testing.T) {
	// Parallel with the other backends' suites: most of each run is TTL
	// waits.
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) storagetest.Store {
		m := NewMemory(nil)
		t.Cleanup(func() { m.Close() })
		return m
	})
}

// fakeClock is a hand-moved clock for the Memory store.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestMemoryExpiryFollowsClock(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	m := NewMemory(clock.Now)
	defer m.Close()

	if err := m.PutRecord(ctx, "code", "c", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := m.PutRecord(ctx, "code", "forever", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute - time.Nanosecond)
	if _, err := m.GetRecord(ctx, "code", "c"); err != nil {
		t.Fatalf("record gone before its ttl: %v", err)
	}
	// UpdateRecord keeps the original deadline, not a fresh minute.
	if err := m.UpdateRecord(ctx, "code", "c", func([]byte) ([]byte, error) { return []byte("w"), nil }); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Nanosecond)
	if _, err := m.GetRecord(ctx, "code", "c"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("record at its deadline: got %v, want ErrNotFound", err)
	}
	if _, err := m.GetRecord(ctx, "code", "forever"); err != nil {
		t.Fatalf("record without ttl: %v", err)
	}
}

func TestMemorySweepDropsExpired(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	m := NewMemory(clock.Now)
	defer m.Close()
	for _, key := range []string{"a", "b"} {
		if err := m.PutRecord(ctx, "req", key, []byte("v"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.PutRecord(ctx, "req", "kept", []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	// Call the sweep directly rather than waiting a minute for the ticker.
	m.dropExpired()
	m.mu.Lock()
	n := len(m.records)
	m.mu.Unlock()
	if n != 1 {
		t.Fatalf("after the sweep %d records are held, want 1", n)
	}
}

func TestMemoryCloseTwice(t *testing.T) {
	m := NewMemory(nil)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.done:
	default:
		t.Fatal("sweep goroutine still running after Close")
	}
}

func TestMemoryHonoursContext(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.PutRecord(ctx, "k", "v", nil, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("PutRecord with a cancelled context: %v", err)
	}
	if _, err := m.GetRecord(context.Background(), "k", "v"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("a cancelled PutRecord wrote: %v", err)
	}
	if err := m.CreateRecord(ctx, "k", "v", nil, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateRecord with a cancelled context: %v", err)
	}
	if _, err := m.GetRecord(context.Background(), "k", "v"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("a cancelled CreateRecord wrote: %v", err)
	}
	if _, err := m.ListRecords(ctx, "k", "", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("ListRecords with a cancelled context: %v", err)
	}
}

// TestMemoryCreateAndListFollowClock checks CreateRecord and ListRecords
// against the exact deadline, which the conformance suite can only
// approach with a real sleep.
func TestMemoryCreateAndListFollowClock(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	m := NewMemory(clock.Now)
	defer m.Close()

	if err := m.CreateRecord(ctx, "client", "a", []byte("first"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := m.PutRecord(ctx, "client", "b", []byte("long"), time.Hour); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute - time.Nanosecond)
	if err := m.CreateRecord(ctx, "client", "a", []byte("early"), 0); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateRecord just before the deadline: got %v, want ErrExists", err)
	}
	if list, err := m.ListRecords(ctx, "client", "", 0); err != nil || len(list) != 2 {
		t.Fatalf("ListRecords just before the deadline: %v, %v; want 2 records", list, err)
	}
	clock.Advance(time.Nanosecond)
	list, err := m.ListRecords(ctx, "client", "", 0)
	if err != nil || len(list) != 1 || list[0].Key != "b" {
		t.Fatalf("ListRecords at the deadline: %v, %v; want only b", list, err)
	}
	if err := m.CreateRecord(ctx, "client", "a", []byte("second"), 0); err != nil {
		t.Fatalf("CreateRecord at the deadline: %v", err)
	}
	// The new record has no expiry.
	clock.Advance(24 * time.Hour)
	if v, err := m.GetRecord(ctx, "client", "a"); err != nil || string(v) != "second" {
		t.Fatalf("GetRecord after a day: %q, %v; want second", v, err)
	}
}
