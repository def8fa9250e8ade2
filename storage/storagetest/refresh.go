package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/oauth"
)

// RunRefresh checks oauth.RefreshStore.
func RunRefresh(t *testing.T, newStore NewStore) {
	runCases(t, newStore, []testCase{
		{"CreateGet", testRefreshCreateGet},
		{"CreateDuplicate", testRefreshDuplicate},
		{"CreateInvalid", testRefreshInvalid},
		{"NotFound", testRefreshNotFound},
		{"Rotate", testRefreshRotate},
		{"RotateTwice", testRefreshRotateTwice},
		{"RotateInvalid", testRefreshRotateInvalid},
		{"Expiry", testRefreshExpiry},
		{"RevokeFamily", testRefreshRevokeFamily},
		{"CopyIsolation", testRefreshIsolation},
		{"ConcurrentRotate", testRefreshConcurrentRotate},
		{"RotateRacingRevoke", testRefreshRotateRacingRevoke},
		{"Retry", testRefreshRetry},
		{"RetryRefused", testRefreshRetryRefused},
		{"RetryInvalid", testRefreshRetryInvalid},
		{"ConcurrentRetry", testRefreshConcurrentRetry},
		{"RetryRacingRevoke", testRefreshRetryRacingRevoke},
	})
}

// familyLife is how long the suite's refresh families live on its clock.
const familyLife = 24 * time.Hour

func sampleRefreshGrant(family string, clock *Clock) *oauth.RefreshGrant {
	now := clock.Now()
	return &oauth.RefreshGrant{
		Family:    family,
		ClientID:  "client-1",
		AgentID:   "agent-1",
		Scopes:    []string{"openid", "data:read"},
		Resources: []string{"https://api.example.com/", "https://mcp.example.com/mcp"},
		ModelName: "gpt-test",
		AuthTime:  now.Add(-time.Minute),
		ExpiresAt: now.Add(familyLife),
		DPoPJKT:   sampleJKT,
	}
}

func copyRefreshGrant(g *oauth.RefreshGrant) *oauth.RefreshGrant {
	out := *g
	out.Scopes = slices.Clone(g.Scopes)
	out.Resources = slices.Clone(g.Resources)
	return &out
}

func refreshDiff(got, want *oauth.RefreshGrant) string {
	if got == nil || want == nil {
		if got == want {
			return ""
		}
		return fmt.Sprintf("got %v, want %v", got, want)
	}
	var d diff
	d.str("Family", got.Family, want.Family)
	d.str("ClientID", got.ClientID, want.ClientID)
	d.str("AgentID", got.AgentID, want.AgentID)
	d.strs("Scopes", got.Scopes, want.Scopes)
	d.strs("Resources", got.Resources, want.Resources)
	d.str("ModelName", got.ModelName, want.ModelName)
	d.time("AuthTime", got.AuthTime, want.AuthTime)
	d.time("ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	d.check("Rotated", got.Rotated == want.Rotated, got.Rotated, want.Rotated)
	d.time("RotatedAt", got.RotatedAt, want.RotatedAt)
	d.str("Successor", got.Successor, want.Successor)
	d.str("DPoPJKT", got.DPoPJKT, want.DPoPJKT)
	return d.String()
}

func mustCreateRefresh(t *testing.T, s Store, hash string, g *oauth.RefreshGrant) {
	t.Helper()
	if err := s.CreateRefresh(ctx, hash, g); err != nil {
		t.Fatalf("CreateRefresh(%q): %v", hash, err)
	}
}

func mustRotate(t *testing.T, s Store, oldHash, newHash string, next *oauth.RefreshGrant) {
	t.Helper()
	if err := s.RotateRefresh(ctx, oldHash, newHash, next); err != nil {
		t.Fatalf("RotateRefresh(%q, %q): %v", oldHash, newHash, err)
	}
}

func wantRefresh(t *testing.T, s Store, hash string, want *oauth.RefreshGrant) {
	t.Helper()
	got, err := s.GetRefresh(ctx, hash)
	if err != nil {
		t.Fatalf("GetRefresh(%q): %v", hash, err)
	}
	if d := refreshDiff(got, want); d != "" {
		t.Fatalf("stored refresh token %q differs: %s", hash, d)
	}
}

func wantNoRefresh(t *testing.T, s Store, hash string) {
	t.Helper()
	if g, err := s.GetRefresh(ctx, hash); !errors.Is(err, oauth.ErrNotFound) || g != nil {
		t.Fatalf("GetRefresh(%q) = %+v, %v; want ErrNotFound", hash, g, err)
	}
}

// rotated returns a copy of g marked rotated at at into the token whose
// hash is successor ("" for a successor a retry made void).
func rotated(g *oauth.RefreshGrant, successor string, at time.Time) *oauth.RefreshGrant {
	out := copyRefreshGrant(g)
	out.Rotated, out.Successor, out.RotatedAt = true, successor, at
	return out
}

func testRefreshCreateGet(t *testing.T, s Store, clock *Clock) {
	want := sampleRefreshGrant("fam", clock)
	mustCreateRefresh(t, s, "rt-1", copyRefreshGrant(want))
	wantRefresh(t, s, "rt-1", want)

	bare := &oauth.RefreshGrant{Family: "bare", ExpiresAt: clock.Now().Add(time.Minute)}
	mustCreateRefresh(t, s, "bare", copyRefreshGrant(bare))
	wantRefresh(t, s, "bare", bare)
}

func testRefreshDuplicate(t *testing.T, s Store, clock *Clock) {
	first := sampleRefreshGrant("fam", clock)
	mustCreateRefresh(t, s, "dup", copyRefreshGrant(first))
	second := sampleRefreshGrant("other-fam", clock)
	if err := s.CreateRefresh(ctx, "dup", second); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("second CreateRefresh: got %v, want ErrExists", err)
	}
	wantRefresh(t, s, "dup", first)
	// The failed create did not join the token to the other family.
	if err := s.RevokeFamily(ctx, "other-fam"); err != nil {
		t.Fatal(err)
	}
	wantRefresh(t, s, "dup", first)
}

func testRefreshInvalid(t *testing.T, s Store, clock *Clock) {
	if err := s.CreateRefresh(ctx, "", sampleRefreshGrant("fam", clock)); err == nil || errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateRefresh with an empty hash: got %v, want an invalid-input error", err)
	}
	if err := s.CreateRefresh(ctx, "nil", nil); err == nil {
		t.Fatal("CreateRefresh with a nil grant succeeded")
	}
	if err := s.CreateRefresh(ctx, "no-family", sampleRefreshGrant("", clock)); err == nil {
		t.Fatal("CreateRefresh without a family succeeded")
	}
	noExpiry := sampleRefreshGrant("fam", clock)
	noExpiry.ExpiresAt = time.Time{}
	if err := s.CreateRefresh(ctx, "no-expiry", noExpiry); err == nil {
		t.Fatal("CreateRefresh without an expiry succeeded")
	}
	for _, h := range []string{"", "nil", "no-family", "no-expiry"} {
		wantNoRefresh(t, s, h)
	}
}

func testRefreshNotFound(t *testing.T, s Store, clock *Clock) {
	wantNoRefresh(t, s, "missing")
	if err := s.RotateRefresh(ctx, "missing", "next", sampleRefreshGrant("fam", clock)); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("RotateRefresh of a missing token: got %v, want ErrNotFound", err)
	}
	wantNoRefresh(t, s, "next")
	if err := s.RevokeFamily(ctx, "never-existed"); err != nil {
		t.Fatalf("RevokeFamily of an unknown family: %v", err)
	}
}

func testRefreshRotate(t *testing.T, s Store, clock *Clock) {
	first := sampleRefreshGrant("fam", clock)
	mustCreateRefresh(t, s, "rt-1", copyRefreshGrant(first))
	clock.Advance(time.Minute)
	next := copyRefreshGrant(first)
	next.Scopes = []string{"openid"}
	next.ModelName = "gpt-next"
	// The successor is stored as given, its key binding too: the store
	// neither copies the old token's nor drops the new one's.
	next.DPoPJKT = otherJKT
	mustRotate(t, s, "rt-1", "rt-2", copyRefreshGrant(next))
	// The old token records when it was rotated, on the store's clock,
	// and into which token.
	rotatedAt := clock.Now()
	wantRefresh(t, s, "rt-1", rotated(first, "rt-2", rotatedAt))
	wantRefresh(t, s, "rt-2", next)

	clock.Advance(time.Second)
	third := copyRefreshGrant(next)
	third.AuthTime = clock.Now()
	third.DPoPJKT = ""
	mustRotate(t, s, "rt-2", "rt-3", copyRefreshGrant(third))
	wantRefresh(t, s, "rt-1", rotated(first, "rt-2", rotatedAt))
	wantRefresh(t, s, "rt-2", rotated(next, "rt-3", clock.Now()))
	wantRefresh(t, s, "rt-3", third)
}

func testRefreshRotateTwice(t *testing.T, s Store, clock *Clock) {
	g := sampleRefreshGrant("fam", clock)
	mustCreateRefresh(t, s, "rt-1", copyRefreshGrant(g))
	mustRotate(t, s, "rt-1", "rt-2", copyRefreshGrant(g))
	if err := s.RotateRefresh(ctx, "rt-1", "rt-2b", copyRefreshGrant(g)); !errors.Is(err, oauth.ErrRefreshRotated) {
		t.Fatalf("second RotateRefresh of one token: got %v, want ErrRefreshRotated", err)
	}
	wantNoRefresh(t, s, "rt-2b")
	wantRefresh(t, s, "rt-2", g)
	// The successor rotates normally.
	mustRotate(t, s, "rt-2", "rt-3", copyRefreshGrant(g))
}

func testRefreshRotateInvalid(t *testing.T, s Store, clock *Clock) {
	g := sampleRefreshGrant("fam", clock)
	mustCreateRefresh(t, s, "rt-1", copyRefreshGrant(g))
	mustCreateRefresh(t, s, "taken", sampleRefreshGrant("fam", clock))

	if err := s.RotateRefresh(ctx, "rt-1", "taken", copyRefreshGrant(g)); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("RotateRefresh onto a live token: got %v, want ErrExists", err)
	}
	otherFamily := sampleRefreshGrant("other-fam", clock)
	noExpiry := copyRefreshGrant(g)
	noExpiry.ExpiresAt = time.Time{}
	for name, tc := range map[string]struct {
		newHash string
		next    *oauth.RefreshGrant
	}{
		"nil successor":          {"rt-2", nil},
		"empty new hash":         {"", copyRefreshGrant(g)},
		"rotation to itself":     {"rt-1", copyRefreshGrant(g)},
		"successor of no family": {"rt-2", sampleRefreshGrant("", clock)},
		"successor of another":   {"rt-2", otherFamily},
		"successor of no expiry": {"rt-2", noExpiry},
	} {
		err := s.RotateRefresh(ctx, "rt-1", tc.newHash, tc.next)
		if err == nil || errors.Is(err, oauth.ErrRefreshRotated) || errors.Is(err, oauth.ErrNotFound) {
			t.Fatalf("RotateRefresh with %s: got %v, want an invalid-input error", name, err)
		}
	}
	// Nothing was written: the token is not rotated and has no successor.
	wantRefresh(t, s, "rt-1", g)
	wantNoRefresh(t, s, "rt-2")
	wantRefresh(t, s, "taken", sampleRefreshGrant("fam", clock))
	mustRotate(t, s, "rt-1", "rt-2", copyRefreshGrant(g))
}

func testRefreshExpiry(t *testing.T, s Store, clock *Clock) {
	g := sampleRefreshGrant("fam", clock)
	mustCreateRefresh(t, s, "rt-1", copyRefreshGrant(g))
	mustCreateRefresh(t, s, "idle", copyRefreshGrant(g))
	long := sampleRefreshGrant("long-fam", clock)
	long.ExpiresAt = clock.Now().Add(2 * familyLife)
	mustCreateRefresh(t, s, "long", copyRefreshGrant(long))

	clock.Advance(familyLife - time.Nanosecond)
	mustRotate(t, s, "rt-1", "rt-2", copyRefreshGrant(g))
	wantRefresh(t, s, "rt-2", g)
	if err := s.CreateRefresh(ctx, "idle", sampleRefreshGrant("fam", clock)); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateRefresh over a live token: got %v, want ErrExists", err)
	}

	clock.Advance(time.Nanosecond)
	for _, h := range []string{"rt-1", "rt-2", "idle"} {
		wantNoRefresh(t, s, h)
	}
	if err := s.RotateRefresh(ctx, "idle", "idle-2", copyRefreshGrant(g)); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("RotateRefresh of an expired token: got %v, want ErrNotFound", err)
	}
	wantNoRefresh(t, s, "idle-2")
	wantRefresh(t, s, "long", long)

	// An expired token's hash is free again, even for another family, and
	// revoking the old family leaves the new token alone.
	again := sampleRefreshGrant("new-fam", clock)
	mustCreateRefresh(t, s, "rt-2", copyRefreshGrant(again))
	wantRefresh(t, s, "rt-2", again)
	if err := s.RevokeFamily(ctx, "fam"); err != nil {
		t.Fatal(err)
	}
	wantRefresh(t, s, "rt-2", again)
	// And the new family reaches it.
	if err := s.RevokeFamily(ctx, "new-fam"); err != nil {
		t.Fatal(err)
	}
	wantNoRefresh(t, s, "rt-2")

	// An expired successor's hash can be rotated onto.
	next := copyRefreshGrant(long)
	mustRotate(t, s, "long", "idle", copyRefreshGrant(next))
	wantRefresh(t, s, "idle", next)
	if err := s.RevokeFamily(ctx, "long-fam"); err != nil {
		t.Fatal(err)
	}
	wantNoRefresh(t, s, "idle")
	wantNoRefresh(t, s, "long")
}

func testRefreshRevokeFamily(t *testing.T, s Store, clock *Clock) {
	g := sampleRefreshGrant("fam", clock)
	other := sampleRefreshGrant("fam-2", clock)
	prefix := sampleRefreshGrant("fa", clock)
	mustCreateRefresh(t, s, "a-1", copyRefreshGrant(g))
	mustRotate(t, s, "a-1", "a-2", copyRefreshGrant(g))
	mustRotate(t, s, "a-2", "a-3", copyRefreshGrant(g))
	mustCreateRefresh(t, s, "b-1", copyRefreshGrant(g))
	mustCreateRefresh(t, s, "other", copyRefreshGrant(other))
	mustCreateRefresh(t, s, "prefix", copyRefreshGrant(prefix))

	if err := s.RevokeFamily(ctx, "fam"); err != nil {
		t.Fatalf("RevokeFamily: %v", err)
	}
	for _, h := range []string{"a-1", "a-2", "a-3", "b-1"} {
		wantNoRefresh(t, s, h)
	}
	wantRefresh(t, s, "other", other)
	wantRefresh(t, s, "prefix", prefix)
	if err := s.RotateRefresh(ctx, "a-3", "a-4", copyRefreshGrant(g)); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("RotateRefresh in a revoked family: got %v, want ErrNotFound", err)
	}
	wantNoRefresh(t, s, "a-4")
	if err := s.RevokeFamily(ctx, "fam"); err != nil {
		t.Fatalf("second RevokeFamily: %v", err)
	}
	if err := s.RevokeFamily(ctx, ""); err != nil {
		t.Fatalf("RevokeFamily of the empty family: %v", err)
	}
	wantRefresh(t, s, "other", other)
	wantRefresh(t, s, "prefix", prefix)
}

func testRefreshIsolation(t *testing.T, s Store, clock *Clock) {
	want := sampleRefreshGrant("fam", clock)
	in := copyRefreshGrant(want)
	mustCreateRefresh(t, s, "iso", in)
	in.Scopes[0] = "admin"
	in.Family = "other"
	wantRefresh(t, s, "iso", want)

	got, _ := s.GetRefresh(ctx, "iso")
	got.Scopes[1] = "admin"
	got.Rotated = true
	wantRefresh(t, s, "iso", want)

	next := copyRefreshGrant(want)
	mustRotate(t, s, "iso", "iso-2", next)
	next.Scopes[0] = "admin"
	wantRefresh(t, s, "iso-2", want)
}

func testRefreshConcurrentRotate(t *testing.T, s Store, clock *Clock) {
	g := sampleRefreshGrant("fam", clock)
	old := "rt-0"
	mustCreateRefresh(t, s, old, copyRefreshGrant(g))
	for round := range 3 {
		next := func(i int) string { return fmt.Sprintf("rt-%d-%d", round+1, i) }
		errs := race(racers, func(i int) error {
			return s.RotateRefresh(ctx, old, next(i), copyRefreshGrant(g))
		})
		won := exactlyOne(t, "RotateRefresh", errs, oauth.ErrRefreshRotated)
		for i := range racers {
			if i == won {
				wantRefresh(t, s, next(i), g)
			} else {
				wantNoRefresh(t, s, next(i))
			}
		}
		wantRefresh(t, s, old, rotated(g, next(won), clock.Now()))
		old = next(won)
	}
}

// testRefreshRotateRacingRevoke races a rotation against a revocation of
// its family: whichever wins, no token of the family may be left.
func testRefreshRotateRacingRevoke(t *testing.T, s Store, clock *Clock) {
	const rounds = 20
	parallel(t, rounds, func(round int) error {
		fam := fmt.Sprintf("fam-%d", round)
		oldHash, newHash := fam+"-old", fam+"-new"
		g := sampleRefreshGrant(fam, clock)
		if err := s.CreateRefresh(ctx, oldHash, copyRefreshGrant(g)); err != nil {
			return err
		}
		var (
			wg                   sync.WaitGroup
			rotateErr, revokeErr error
			start                = make(chan struct{})
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			rotateErr = s.RotateRefresh(ctx, oldHash, newHash, copyRefreshGrant(g))
		}()
		go func() {
			defer wg.Done()
			<-start
			revokeErr = s.RevokeFamily(ctx, fam)
		}()
		close(start)
		wg.Wait()
		if revokeErr != nil {
			return fmt.Errorf("RevokeFamily(%q): %w", fam, revokeErr)
		}
		if rotateErr != nil && !errors.Is(rotateErr, oauth.ErrNotFound) {
			return fmt.Errorf("RotateRefresh racing RevokeFamily: %w", rotateErr)
		}
		for _, h := range []string{oldHash, newHash} {
			if _, err := s.GetRefresh(ctx, h); !errors.Is(err, oauth.ErrNotFound) {
				return fmt.Errorf("token %q of revoked family %q survived (rotation error %v): %v", h, fam, rotateErr, err)
			}
		}
		return nil
	})
}

// refreshGrace is the grace the suite's retries are given.
const refreshGrace = 10 * time.Second

func mustRetry(t *testing.T, s Store, oldHash, successor, newHash string, next *oauth.RefreshGrant) {
	t.Helper()
	if err := s.RetryRefresh(ctx, oldHash, successor, newHash, next, refreshGrace); err != nil {
		t.Fatalf("RetryRefresh(%q, %q, %q): %v", oldHash, successor, newHash, err)
	}
}

// testRefreshRetry: a rotated token presented again within the grace gets
// a new successor in place of the one it had, which becomes void; the
// grace runs from the first rotation, however many retries follow.
func testRefreshRetry(t *testing.T, s Store, clock *Clock) {
	g := sampleRefreshGrant("fam", clock)
	mustCreateRefresh(t, s, "rt-1", copyRefreshGrant(g))
	mustRotate(t, s, "rt-1", "rt-2", copyRefreshGrant(g))
	rotatedAt := clock.Now()

	clock.Advance(3 * time.Second)
	retry := copyRefreshGrant(g)
	retry.Scopes = []string{"openid"}
	mustRetry(t, s, "rt-1", "rt-2", "rt-2b", copyRefreshGrant(retry))
	wantRefresh(t, s, "rt-1", rotated(g, "rt-2b", rotatedAt))
	wantRefresh(t, s, "rt-2", rotated(g, "", clock.Now()))
	wantRefresh(t, s, "rt-2b", retry)
	// The void successor is rotated with no successor: it neither rotates
	// nor is retried.
	if err := s.RotateRefresh(ctx, "rt-2", "rt-3", copyRefreshGrant(g)); !errors.Is(err, oauth.ErrRefreshRotated) {
		t.Fatalf("RotateRefresh of a successor a retry replaced: got %v, want ErrRefreshRotated", err)
	}
	if err := s.RetryRefresh(ctx, "rt-2", "rt-2b", "rt-3", copyRefreshGrant(g), refreshGrace); !errors.Is(err, oauth.ErrRefreshRotated) {
		t.Fatalf("RetryRefresh of a successor a retry replaced: got %v, want ErrRefreshRotated", err)
	}
	wantNoRefresh(t, s, "rt-3")

	// A second retry, still within the grace of the first rotation.
	clock.Advance(refreshGrace - 3*time.Second - time.Nanosecond)
	mustRetry(t, s, "rt-1", "rt-2b", "rt-2c", copyRefreshGrant(g))
	wantRefresh(t, s, "rt-1", rotated(g, "rt-2c", rotatedAt))
	wantRefresh(t, s, "rt-2b", rotated(retry, "", clock.Now()))
	wantRefresh(t, s, "rt-2c", g)

	// The grace has passed: a reuse, and nothing changes.
	clock.Advance(time.Nanosecond)
	if err := s.RetryRefresh(ctx, "rt-1", "rt-2c", "rt-2d", copyRefreshGrant(g), refreshGrace); !errors.Is(err, oauth.ErrRefreshRotated) {
		t.Fatalf("RetryRefresh once the grace passed: got %v, want ErrRefreshRotated", err)
	}
	wantNoRefresh(t, s, "rt-2d")
	wantRefresh(t, s, "rt-1", rotated(g, "rt-2c", rotatedAt))
	wantRefresh(t, s, "rt-2c", g)

	// The last successor lives on as any token does.
	mustRotate(t, s, "rt-2c", "rt-3", copyRefreshGrant(g))
	wantRefresh(t, s, "rt-3", g)
	// And revoking the family reaches every token, the void ones too.
	if err := s.RevokeFamily(ctx, "fam"); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"rt-1", "rt-2", "rt-2b", "rt-2c", "rt-3"} {
		wantNoRefresh(t, s, h)
	}
}

// testRefreshRetryRefused: what is not a retry changes nothing.
func testRefreshRetryRefused(t *testing.T, s Store, clock *Clock) {
	g := sampleRefreshGrant("fam", clock)
	mustCreateRefresh(t, s, "live", copyRefreshGrant(g))
	mustCreateRefresh(t, s, "rt-1", copyRefreshGrant(g))
	mustRotate(t, s, "rt-1", "rt-2", copyRefreshGrant(g))
	rotatedAt := clock.Now()
	// Rotated by a version that recorded neither when nor into what.
	legacy := rotated(g, "", time.Time{})
	mustCreateRefresh(t, s, "legacy", copyRefreshGrant(legacy))
	mustCreateRefresh(t, s, "rt-x", copyRefreshGrant(g))
	for name, tc := range map[string]struct {
		old, successor string
		grace          time.Duration
		want           error
	}{
		"a token not rotated": {"live", "rt-2", refreshGrace, oauth.ErrStale},
		"another successor":   {"rt-1", "other", refreshGrace, oauth.ErrStale},
		"no grace":            {"rt-1", "rt-2", 0, oauth.ErrRefreshRotated},
		"a missing token":     {"missing", "rt-2", refreshGrace, oauth.ErrNotFound},
		"its successor, live": {"rt-2", "rt-1", refreshGrace, oauth.ErrStale},
		"an earlier rotation": {"legacy", "rt-x", refreshGrace, oauth.ErrRefreshRotated},
	} {
		if err := s.RetryRefresh(ctx, tc.old, tc.successor, "new", copyRefreshGrant(g), tc.grace); !errors.Is(err, tc.want) {
			t.Errorf("RetryRefresh of %s: got %v, want %v", name, err, tc.want)
		}
	}
	wantNoRefresh(t, s, "new")
	wantRefresh(t, s, "live", g)
	wantRefresh(t, s, "legacy", legacy)
	wantRefresh(t, s, "rt-x", g)
	wantRefresh(t, s, "rt-1", rotated(g, "rt-2", rotatedAt))
	wantRefresh(t, s, "rt-2", g)

	// A successor that was used: presenting its predecessor is a reuse,
	// even within the grace.
	mustRotate(t, s, "rt-2", "rt-3", copyRefreshGrant(g))
	if err := s.RetryRefresh(ctx, "rt-1", "rt-2", "new", copyRefreshGrant(g), refreshGrace); !errors.Is(err, oauth.ErrRefreshRotated) {
		t.Fatalf("RetryRefresh after its successor was used: got %v, want ErrRefreshRotated", err)
	}
	wantNoRefresh(t, s, "new")
	wantRefresh(t, s, "rt-2", rotated(g, "rt-3", clock.Now()))
	wantRefresh(t, s, "rt-3", g)

	// Onto a live token.
	mustCreateRefresh(t, s, "rt-a", copyRefreshGrant(g))
	mustRotate(t, s, "rt-a", "rt-b", copyRefreshGrant(g))
	if err := s.RetryRefresh(ctx, "rt-a", "rt-b", "live", copyRefreshGrant(g), refreshGrace); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("RetryRefresh onto a live token: got %v, want ErrExists", err)
	}
	wantRefresh(t, s, "rt-a", rotated(g, "rt-b", clock.Now()))
	wantRefresh(t, s, "rt-b", g)

	// A family revoked, or expired, leaves nothing to retry.
	if err := s.RevokeFamily(ctx, "fam"); err != nil {
		t.Fatal(err)
	}
	if err := s.RetryRefresh(ctx, "rt-a", "rt-b", "new", copyRefreshGrant(g), refreshGrace); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("RetryRefresh in a revoked family: got %v, want ErrNotFound", err)
	}
	short := sampleRefreshGrant("short", clock)
	short.ExpiresAt = clock.Now().Add(time.Second)
	mustCreateRefresh(t, s, "short-1", copyRefreshGrant(short))
	mustRotate(t, s, "short-1", "short-2", copyRefreshGrant(short))
	clock.Advance(time.Second)
	if err := s.RetryRefresh(ctx, "short-1", "short-2", "short-3", copyRefreshGrant(short), refreshGrace); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("RetryRefresh of an expired token: got %v, want ErrNotFound", err)
	}
	wantNoRefresh(t, s, "new")
	wantNoRefresh(t, s, "short-3")
}

func testRefreshRetryInvalid(t *testing.T, s Store, clock *Clock) {
	g := sampleRefreshGrant("fam", clock)
	mustCreateRefresh(t, s, "rt-1", copyRefreshGrant(g))
	mustRotate(t, s, "rt-1", "rt-2", copyRefreshGrant(g))
	for name, tc := range map[string]struct {
		successor, newHash string
		next               *oauth.RefreshGrant
		grace              time.Duration
	}{
		"nil successor grant":    {"rt-2", "rt-3", nil, refreshGrace},
		"empty new hash":         {"rt-2", "", copyRefreshGrant(g), refreshGrace},
		"empty successor":        {"", "rt-3", copyRefreshGrant(g), refreshGrace},
		"retry to itself":        {"rt-2", "rt-1", copyRefreshGrant(g), refreshGrace},
		"successor as new":       {"rt-2", "rt-2", copyRefreshGrant(g), refreshGrace},
		"successor as old":       {"rt-1", "rt-3", copyRefreshGrant(g), refreshGrace},
		"another family":         {"rt-2", "rt-3", sampleRefreshGrant("other-fam", clock), refreshGrace},
		"negative grace":         {"rt-2", "rt-3", copyRefreshGrant(g), -time.Second},
		"successor of no family": {"rt-2", "rt-3", sampleRefreshGrant("", clock), refreshGrace},
	} {
		err := s.RetryRefresh(ctx, "rt-1", tc.successor, tc.newHash, tc.next, tc.grace)
		if err == nil || errors.Is(err, oauth.ErrRefreshRotated) || errors.Is(err, oauth.ErrNotFound) || errors.Is(err, oauth.ErrStale) {
			t.Errorf("RetryRefresh with %s: got %v, want an invalid-input error", name, err)
		}
	}
	wantRefresh(t, s, "rt-1", rotated(g, "rt-2", clock.Now()))
	wantRefresh(t, s, "rt-2", g)
	wantNoRefresh(t, s, "rt-3")
}

// testRefreshConcurrentRetry: of concurrent retries of one token exactly
// one succeeds; the others find its successor changed.
func testRefreshConcurrentRetry(t *testing.T, s Store, clock *Clock) {
	g := sampleRefreshGrant("fam", clock)
	mustCreateRefresh(t, s, "rt-0", copyRefreshGrant(g))
	mustRotate(t, s, "rt-0", "rt-1", copyRefreshGrant(g))
	rotatedAt := clock.Now()
	successor := "rt-1"
	for round := range 3 {
		next := func(i int) string { return fmt.Sprintf("rt-%d-%d", round+1, i) }
		errs := race(racers, func(i int) error {
			return s.RetryRefresh(ctx, "rt-0", successor, next(i), copyRefreshGrant(g), refreshGrace)
		})
		won := exactlyOne(t, "RetryRefresh", errs, oauth.ErrStale)
		for i := range racers {
			if i == won {
				wantRefresh(t, s, next(i), g)
			} else {
				wantNoRefresh(t, s, next(i))
			}
		}
		wantRefresh(t, s, "rt-0", rotated(g, next(won), rotatedAt))
		wantRefresh(t, s, successor, rotated(g, "", clock.Now()))
		successor = next(won)
	}
}

// testRefreshRetryRacingRevoke races a retry against a revocation of its
// family: whichever wins, no token of the family may be left.
func testRefreshRetryRacingRevoke(t *testing.T, s Store, clock *Clock) {
	const rounds = 20
	parallel(t, rounds, func(round int) error {
		fam := fmt.Sprintf("fam-%d", round)
		hashes := []string{fam + "-old", fam + "-next", fam + "-retry"}
		g := sampleRefreshGrant(fam, clock)
		if err := s.CreateRefresh(ctx, hashes[0], copyRefreshGrant(g)); err != nil {
			return err
		}
		if err := s.RotateRefresh(ctx, hashes[0], hashes[1], copyRefreshGrant(g)); err != nil {
			return err
		}
		var (
			wg                  sync.WaitGroup
			retryErr, revokeErr error
			start               = make(chan struct{})
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			retryErr = s.RetryRefresh(ctx, hashes[0], hashes[1], hashes[2], copyRefreshGrant(g), refreshGrace)
		}()
		go func() {
			defer wg.Done()
			<-start
			revokeErr = s.RevokeFamily(ctx, fam)
		}()
		close(start)
		wg.Wait()
		if revokeErr != nil {
			return fmt.Errorf("RevokeFamily(%q): %w", fam, revokeErr)
		}
		if retryErr != nil && !errors.Is(retryErr, oauth.ErrNotFound) {
			return fmt.Errorf("RetryRefresh racing RevokeFamily: %w", retryErr)
		}
		for _, h := range hashes {
			if _, err := s.GetRefresh(ctx, h); !errors.Is(err, oauth.ErrNotFound) {
				return fmt.Errorf("token %q of revoked family %q survived (retry error %v): %v", h, fam, retryErr, err)
			}
		}
		return nil
	})
}
