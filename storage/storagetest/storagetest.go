// Package storagetest is the conformance suite every storage backend must
// pass: the same behaviour, checked the same way, whatever sits underneath.
// It depends only on the interfaces (agents.Repository, oauth.Store and
// events.Outbox), never on a backend.
//
// Every test gets a new store and its own hand-moved Clock, which the store
// must use to decide expiry; the suite checks expiry by advancing that
// clock, never by sleeping.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/oauth"
)

// Store is everything a backend provides to the server.
type Store interface {
	agents.Repository
	oauth.Store
	events.Outbox
}

// NewStore returns a new, empty store whose expiry follows now, and arranges
// its cleanup with t.Cleanup. It is called once per test.
type NewStore func(t *testing.T, now func() time.Time) Store

// Clock is a hand-moved clock: Now returns the same time until Advance
// moves it. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock set to a fixed time well away from the real one
// (mid-2024, in a non-UTC zone, with nanoseconds), so a backend that mixes
// the real clock into expiry decisions, or loses precision, shows it.
func NewClock() *Clock {
	return &Clock{now: time.Date(2024, 6, 1, 12, 30, 45, 123456789, time.FixedZone("X", 2*3600))}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Run runs the whole suite.
func Run(t *testing.T, newStore NewStore) {
	t.Run("Agents", func(t *testing.T) { RunAgents(t, newStore) })
	t.Run("Clients", func(t *testing.T) { RunClients(t, newStore) })
	t.Run("Keys", func(t *testing.T) { RunKeys(t, newStore) })
	t.Run("Secrets", func(t *testing.T) { RunSecrets(t, newStore) })
	t.Run("AuthRequests", func(t *testing.T) { RunAuthRequests(t, newStore) })
	t.Run("Codes", func(t *testing.T) { RunCodes(t, newStore) })
	t.Run("Refresh", func(t *testing.T) { RunRefresh(t, newStore) })
	t.Run("Replay", func(t *testing.T) { RunReplay(t, newStore) })
	t.Run("Changes", func(t *testing.T) { RunChanges(t, newStore) })
	t.Run("Outbox", func(t *testing.T) { RunOutbox(t, newStore) })
	t.Run("TrustedIdPs", func(t *testing.T) { RunTrustedIdPs(t, newStore) })
	t.Run("Separation", func(t *testing.T) { runCases(t, newStore, []testCase{{"SameIDsLiveApart", testSeparation}}) })
}

// testCase is one test of the suite: it gets a new store and its clock.
type testCase struct {
	name string
	fn   func(t *testing.T, s Store, clock *Clock)
}

// runCases runs every case as a parallel subtest with its own store and
// clock: backends that sync every write spend most of a test waiting on the
// disk, which parallel tests share.
func runCases(t *testing.T, newStore NewStore, cases []testCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := NewClock()
			tc.fn(t, newStore(t, clock.Now), clock)
		})
	}
}

// ctx is the context of every call the suite makes.
var ctx = context.Background()

// errTest is what callbacks return to check that the store passes their
// error through and writes nothing.
var errTest = errors.New("storagetest: callback refused")

// racers is how many goroutines the concurrency tests start at once.
const racers = 16

// race runs fn(i) for i in [0, n) in n goroutines released together, and
// returns their errors by index.
func race(n int, fn func(i int) error) []error {
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// parallel runs fn for every i in [0, n), at most 16 at a time, and fails
// the test with the first error: it fills a store quickly where a backend
// shares fsyncs between concurrent writes.
func parallel(t *testing.T, n int, fn func(i int) error) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 16)
		errs = make([]error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// winners returns the indexes whose error is nil, and fails the test if any
// other error is not one of allowed.
func winners(t *testing.T, what string, errs []error, allowed ...error) []int {
	t.Helper()
	var won []int
	for i, err := range errs {
		if err == nil {
			won = append(won, i)
			continue
		}
		if !slices.ContainsFunc(allowed, func(a error) bool { return errors.Is(err, a) }) {
			t.Fatalf("%s #%d failed with %v, want nil or one of %v", what, i, err, allowed)
		}
	}
	return won
}

// exactlyOne checks that exactly one of the racers succeeded and returns
// its index.
func exactlyOne(t *testing.T, what string, errs []error, allowed ...error) int {
	t.Helper()
	won := winners(t, what, errs, allowed...)
	if len(won) != 1 {
		t.Fatalf("%d of %d concurrent %s succeeded (%v), want exactly 1", len(won), len(errs), what, won)
	}
	return won[0]
}

// diff collects field differences between a got and a want value.
type diff []string

func (d *diff) check(name string, ok bool, got, want any) {
	if !ok {
		*d = append(*d, fmt.Sprintf("%s: got %v, want %v", name, got, want))
	}
}

func (d *diff) str(name, got, want string) { d.check(name, got == want, got, want) }

func (d *diff) strs(name string, got, want []string) {
	d.check(name, slices.Equal(got, want), got, want)
}

// time compares instants: a backend may return them in another zone, and
// without the monotonic reading.
func (d *diff) time(name string, got, want time.Time) { d.check(name, got.Equal(want), got, want) }

func (d diff) String() string {
	if len(d) == 0 {
		return ""
	}
	return fmt.Sprint([]string(d))
}

// testSeparation checks that records of different kinds stored under the
// same id live apart: deleting, revoking or expiring one leaves the others.
func testSeparation(t *testing.T, s Store, clock *Clock) {
	const id = "shared"
	mustCreateAgent(t, s, sampleAgent(id))
	mustCreateClient(t, s, sampleClient(id))
	mustCreateIdP(t, s, sampleIdP(id))
	mustEnsureSecret(t, s, id, "secret")
	mustCreateAuthRequest(t, s, sampleAuthRequest(id, clock))
	mustCreateCode(t, s, id, sampleCodeGrant(clock))
	mustCreateRefresh(t, s, id, sampleRefreshGrant(id, clock))
	mustUseOnce(t, s, id, clock.Now().Add(time.Hour))
	if _, err := s.SwapSigningKeys(ctx, 0, []oauth.StoredKey{sampleKey(id, 1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeAgentUpdated, Key: id, Expires: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}

	if err := s.DeleteAgent(ctx, id); err != nil {
		t.Fatal(err)
	}
	wantClient(t, s, sampleClient(id))
	if err := s.DeleteClient(ctx, id); err != nil {
		t.Fatal(err)
	}
	wantIdP(t, s, sampleIdP(id))
	if err := s.DeleteTrustedIdP(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeFamily(ctx, id); err != nil {
		t.Fatal(err)
	}
	wantAuthRequest(t, s, sampleAuthRequest(id, clock))
	if _, err := s.RedeemCode(ctx, id, func(*oauth.CodeGrant) (oauth.Redemption, error) {
		return oauth.Redemption{AccessTokenID: "at"}, nil
	}); err != nil {
		t.Fatalf("RedeemCode after deleting other records with the same id: %v", err)
	}
	if got := mustEnsureSecret(t, s, id, "other"); got != "secret" {
		t.Fatalf("secret = %q after deleting other records with the same id", got)
	}
	wantKeys(t, s, 1, sampleKey(id, 1))
	changes := mustChangesSince(t, s, 0, 0)
	if len(changes) != 1 || changes[0].Key != id {
		t.Fatalf("change log after deleting other records: %+v", changes)
	}
	wantUsed(t, s, id, clock.Now().Add(time.Hour))
	if _, err := s.GetAgent(ctx, id); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("GetAgent after delete: %v", err)
	}
	if _, err := s.GetRefresh(ctx, id); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("GetRefresh after RevokeFamily: %v", err)
	}
}
