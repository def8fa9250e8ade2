package storagetest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/oauth"
)

// RunReplay checks oauth.ReplayStore.
func RunReplay(t *testing.T, newStore NewStore) {
	runCases(t, newStore, []testCase{
		{"UseOnce", testUseOnce},
		{"Expiry", testUseOnceExpiry},
		{"RefusalKeepsExpiry", testUseOnceRefusalKeepsExpiry},
		{"PastExpiry", testUseOncePastExpiry},
		{"KeysAreOpaque", testUseOnceOpaque},
		{"Invalid", testUseOnceInvalid},
		{"Concurrent", testUseOnceConcurrent},
		{"ConcurrentAfterExpiry", testUseOnceConcurrentAfterExpiry},
		{"ConcurrentKeys", testUseOnceConcurrentKeys},
	})
}

// replayKey is a key of the kind the server records: a prefix and a hash.
func replayKey(name string) string {
	h := sha256.Sum256([]byte(name))
	return "dpop:" + hex.EncodeToString(h[:])
}

func mustUseOnce(t *testing.T, s Store, key string, until time.Time) {
	t.Helper()
	if err := s.UseOnce(ctx, key, until); err != nil {
		t.Fatalf("UseOnce(%q): %v", key, err)
	}
}

func wantUsed(t *testing.T, s Store, key string, until time.Time) {
	t.Helper()
	if err := s.UseOnce(ctx, key, until); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("UseOnce(%q) of a recorded key: got %v, want ErrExists", key, err)
	}
}

func testUseOnce(t *testing.T, s Store, clock *Clock) {
	until := clock.Now().Add(shortLife)
	a, b := replayKey("a"), replayKey("b")
	mustUseOnce(t, s, a, until)
	wantUsed(t, s, a, until)
	wantUsed(t, s, a, until.Add(time.Hour))
	mustUseOnce(t, s, b, until)
	wantUsed(t, s, b, until)
	wantUsed(t, s, a, until)
}

func testUseOnceExpiry(t *testing.T, s Store, clock *Clock) {
	short, long := replayKey("short"), replayKey("long")
	mustUseOnce(t, s, short, clock.Now().Add(shortLife))
	mustUseOnce(t, s, long, clock.Now().Add(time.Hour))

	clock.Advance(shortLife - time.Nanosecond)
	wantUsed(t, s, short, clock.Now().Add(shortLife))

	clock.Advance(time.Nanosecond)
	// An expired record is as good as none: the key may be used again,
	// and is then recorded until the new time.
	mustUseOnce(t, s, short, clock.Now().Add(shortLife))
	wantUsed(t, s, short, clock.Now().Add(shortLife))
	wantUsed(t, s, long, clock.Now().Add(shortLife))

	clock.Advance(shortLife)
	mustUseOnce(t, s, short, clock.Now().Add(shortLife))
	wantUsed(t, s, long, clock.Now().Add(shortLife))
	clock.Advance(time.Hour)
	mustUseOnce(t, s, long, clock.Now().Add(shortLife))
}

// testUseOnceRefusalKeepsExpiry checks that a refused call, whatever its
// until, leaves the record as it was.
func testUseOnceRefusalKeepsExpiry(t *testing.T, s Store, clock *Clock) {
	k := replayKey("k")
	mustUseOnce(t, s, k, clock.Now().Add(shortLife))
	wantUsed(t, s, k, clock.Now().Add(24*time.Hour))
	clock.Advance(shortLife)
	mustUseOnce(t, s, k, clock.Now().Add(shortLife))
}

// testUseOncePastExpiry checks that a key recorded until a time already
// past is recorded as good as not at all.
func testUseOncePastExpiry(t *testing.T, s Store, clock *Clock) {
	k := replayKey("past")
	for range 2 {
		mustUseOnce(t, s, k, clock.Now())
		mustUseOnce(t, s, k, clock.Now().Add(-time.Hour))
	}
	mustUseOnce(t, s, k, clock.Now().Add(time.Nanosecond))
	wantUsed(t, s, k, clock.Now().Add(time.Hour))
}

// testUseOnceOpaque checks that keys are compared whole, as bytes: keys
// that share a prefix, differ in case or in a separator are different,
// and the longest the server makes are kept.
func testUseOnceOpaque(t *testing.T, s Store, clock *Clock) {
	until := clock.Now().Add(shortLife)
	long := "client_assertion:" + strings.Repeat("https://app.example.com/~x%20y", 9) + ":" + replayKey("h")
	keys := []string{"jti:abc", "jti:ab", "jti:abcd", "jti:ABC", "jti/abc", "jti:abc/", "jti:abc ", " jti:abc",
		`jti:"a\b"`, "x", long, long[:len(long)-1]}
	for _, k := range keys {
		mustUseOnce(t, s, k, until)
	}
	for _, k := range keys {
		wantUsed(t, s, k, until)
	}
	if len(long) < 300 {
		t.Fatalf("the long key has %d bytes, want at least 300", len(long))
	}
}

func testUseOnceInvalid(t *testing.T, s Store, clock *Clock) {
	if err := s.UseOnce(ctx, "", clock.Now().Add(shortLife)); err == nil || errors.Is(err, oauth.ErrExists) {
		t.Fatalf("UseOnce with an empty key: got %v, want an invalid-input error", err)
	}
	k := replayKey("no-expiry")
	if err := s.UseOnce(ctx, k, time.Time{}); err == nil || errors.Is(err, oauth.ErrExists) {
		t.Fatalf("UseOnce without an expiry: got %v, want an invalid-input error", err)
	}
	// The refused call recorded nothing.
	mustUseOnce(t, s, k, clock.Now().Add(shortLife))
}

func testUseOnceConcurrent(t *testing.T, s Store, clock *Clock) {
	k := replayKey("contested")
	until := clock.Now().Add(shortLife)
	errs := race(racers, func(int) error { return s.UseOnce(ctx, k, until) })
	exactlyOne(t, "UseOnce", errs, oauth.ErrExists)
	wantUsed(t, s, k, until)
}

// testUseOnceConcurrentAfterExpiry races callers over an expired record,
// which each of them may replace.
func testUseOnceConcurrentAfterExpiry(t *testing.T, s Store, clock *Clock) {
	k := replayKey("again")
	mustUseOnce(t, s, k, clock.Now().Add(time.Second))
	clock.Advance(time.Second)
	until := clock.Now().Add(shortLife)
	for round := range 3 {
		errs := race(racers, func(int) error { return s.UseOnce(ctx, k, until) })
		exactlyOne(t, fmt.Sprintf("UseOnce (round %d)", round), errs, oauth.ErrExists)
		clock.Advance(shortLife)
		until = clock.Now().Add(shortLife)
	}
}

// testUseOnceConcurrentKeys checks that callers with different keys do not
// refuse each other.
func testUseOnceConcurrentKeys(t *testing.T, s Store, clock *Clock) {
	until := clock.Now().Add(shortLife)
	errs := race(racers, func(i int) error { return s.UseOnce(ctx, replayKey(fmt.Sprint("key", i)), until) })
	if won := winners(t, "UseOnce", errs); len(won) != racers {
		t.Fatalf("%d of %d UseOnce calls with different keys succeeded", len(won), racers)
	}
	for i := range racers {
		wantUsed(t, s, replayKey(fmt.Sprint("key", i)), until)
	}
}
