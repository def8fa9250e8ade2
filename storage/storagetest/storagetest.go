// Package storagetest is the conformance suite every storage backend must
// pass: the same behaviour, checked the same way, whatever sits underneath.
// It depends only on the interfaces, never on a backend.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

// Store is everything a backend provides.
type Store interface {
	agents.Repository
	oauth.KeyStore
	oauth.RecordStore
}

// ttlWait is how long TTL tests sleep after writing a record with a 1s TTL.
// Some backends (Badger) keep expiry in whole seconds and round it up, so a
// 1s record may live up to just under 2s.
const ttlWait = 2200 * time.Millisecond

// Run runs the suite. newStore must return a new, empty store for each call
// and arrange its cleanup with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	t.Run("Agents", func(t *testing.T) {
		t.Run("CreateGet", func(t *testing.T) { testAgentCreateGet(t, newStore(t)) })
		t.Run("CreateDuplicate", func(t *testing.T) { testAgentDuplicate(t, newStore(t)) })
		t.Run("CreateInvalid", func(t *testing.T) { testAgentCreateInvalid(t, newStore(t)) })
		t.Run("Update", func(t *testing.T) { testAgentUpdate(t, newStore(t)) })
		t.Run("UpdateFnError", func(t *testing.T) { testAgentUpdateFnError(t, newStore(t)) })
		t.Run("UpdateCannotRename", func(t *testing.T) { testAgentUpdateRename(t, newStore(t)) })
		t.Run("Delete", func(t *testing.T) { testAgentDelete(t, newStore(t)) })
		t.Run("NotFound", func(t *testing.T) { testAgentNotFound(t, newStore(t)) })
		t.Run("List", func(t *testing.T) { testAgentList(t, newStore(t)) })
		t.Run("ListDefaultLimit", func(t *testing.T) { testAgentListDefaultLimit(t, newStore(t)) })
		t.Run("CopyIsolation", func(t *testing.T) { testAgentIsolation(t, newStore(t)) })
		t.Run("ConcurrentCreate", func(t *testing.T) { testAgentConcurrentCreate(t, newStore(t)) })
		t.Run("ConcurrentUpdate", func(t *testing.T) { testAgentConcurrentUpdate(t, newStore(t)) })
	})
	t.Run("Keys", func(t *testing.T) {
		t.Run("PutListReplaceDelete", func(t *testing.T) { testKeys(t, newStore(t)) })
		t.Run("CopyIsolation", func(t *testing.T) { testKeyIsolation(t, newStore(t)) })
	})
	t.Run("Records", func(t *testing.T) {
		t.Run("PutGetOverwriteDelete", func(t *testing.T) { testRecords(t, newStore(t)) })
		t.Run("KindsAreSeparate", func(t *testing.T) { testRecordKinds(t, newStore(t)) })
		t.Run("InvalidKind", func(t *testing.T) { testRecordInvalidKind(t, newStore(t)) })
		t.Run("CopyIsolation", func(t *testing.T) { testRecordIsolation(t, newStore(t)) })
		t.Run("Consume", func(t *testing.T) { testRecordConsume(t, newStore(t)) })
		t.Run("ConsumeRace", func(t *testing.T) { testRecordConsumeRace(t, newStore(t)) })
		t.Run("Update", func(t *testing.T) { testRecordUpdate(t, newStore(t)) })
		t.Run("ConcurrentUpdate", func(t *testing.T) { testRecordConcurrentUpdate(t, newStore(t)) })
		t.Run("Create", func(t *testing.T) { testRecordCreate(t, newStore(t)) })
		t.Run("ConcurrentCreate", func(t *testing.T) { testRecordConcurrentCreate(t, newStore(t)) })
		t.Run("List", func(t *testing.T) { testRecordList(t, newStore(t)) })
		t.Run("ListKindsAreSeparate", func(t *testing.T) { testRecordListKinds(t, newStore(t)) })
		t.Run("ListDefaultLimit", func(t *testing.T) { testRecordListDefaultLimit(t, newStore(t)) })
		t.Run("ListCopyIsolation", func(t *testing.T) { testRecordListIsolation(t, newStore(t)) })
		t.Run("NegativeTTL", func(t *testing.T) { testRecordNegativeTTL(t, newStore(t)) })
		t.Run("NoCrossTalk", func(t *testing.T) { testNoCrossTalk(t, newStore(t)) })
		t.Run("Expiry", func(t *testing.T) { testRecordExpiry(t, newStore(t)) })
	})
}

// errTest is what callbacks return to check that the store passes their
// error through and writes nothing.
var errTest = errors.New("storagetest: callback refused")

// sampleAgent returns a fully populated agent; times carry no monotonic
// reading and sit in a non-UTC zone so a lossy encoding would show.
func sampleAgent(id string) *agents.Agent {
	created := time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.FixedZone("X", 2*3600))
	return &agents.Agent{
		ID:          id,
		SecretHash:  "$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$aGFzaA",
		ModelName:   "gpt-test",
		OwnerName:   "Ada Lovelace",
		OwnerEmail:  "ada+" + id + "@example.com",
		Permissions: []string{"data:read", "data:write"},
		CreatedAt:   created,
		UpdatedAt:   created.Add(time.Hour),
		Disabled:    false,
	}
}

// agentDiff describes how got differs from want, or returns "". Times are
// compared as instants: a backend may return them in another zone.
func agentDiff(got, want *agents.Agent) string {
	if got == nil || want == nil {
		if got == want {
			return ""
		}
		return fmt.Sprintf("got %v, want %v", got, want)
	}
	var d []string
	check := func(name string, ok bool, g, w any) {
		if !ok {
			d = append(d, fmt.Sprintf("%s: got %v, want %v", name, g, w))
		}
	}
	check("ID", got.ID == want.ID, got.ID, want.ID)
	check("SecretHash", got.SecretHash == want.SecretHash, got.SecretHash, want.SecretHash)
	check("ModelName", got.ModelName == want.ModelName, got.ModelName, want.ModelName)
	check("OwnerName", got.OwnerName == want.OwnerName, got.OwnerName, want.OwnerName)
	check("OwnerEmail", got.OwnerEmail == want.OwnerEmail, got.OwnerEmail, want.OwnerEmail)
	check("Permissions", slices.Equal(got.Permissions, want.Permissions), got.Permissions, want.Permissions)
	check("CreatedAt", got.CreatedAt.Equal(want.CreatedAt), got.CreatedAt, want.CreatedAt)
	check("UpdatedAt", got.UpdatedAt.Equal(want.UpdatedAt), got.UpdatedAt, want.UpdatedAt)
	check("Disabled", got.Disabled == want.Disabled, got.Disabled, want.Disabled)
	if len(d) == 0 {
		return ""
	}
	return fmt.Sprint(d)
}

func mustCreate(t *testing.T, s Store, a *agents.Agent) {
	t.Helper()
	if err := s.CreateAgent(context.Background(), a); err != nil {
		t.Fatalf("CreateAgent(%q): %v", a.ID, err)
	}
}

func mustGetAgent(t *testing.T, s Store, id string) *agents.Agent {
	t.Helper()
	a, err := s.GetAgent(context.Background(), id)
	if err != nil {
		t.Fatalf("GetAgent(%q): %v", id, err)
	}
	return a
}

func wantAgent(t *testing.T, s Store, want *agents.Agent) {
	t.Helper()
	if d := agentDiff(mustGetAgent(t, s, want.ID), want); d != "" {
		t.Fatalf("stored agent %q differs: %s", want.ID, d)
	}
}

func testAgentCreateGet(t *testing.T, s Store) {
	want := sampleAgent("agent-1")
	mustCreate(t, s, want.Clone())
	wantAgent(t, s, want)

	// Zero values and a nil permission list round-trip as well.
	bare := &agents.Agent{ID: "bare", Disabled: true}
	mustCreate(t, s, bare.Clone())
	got := mustGetAgent(t, s, "bare")
	if d := agentDiff(got, bare); d != "" {
		t.Fatalf("bare agent differs: %s", d)
	}
}

func testAgentDuplicate(t *testing.T, s Store) {
	ctx := context.Background()
	first := sampleAgent("dup")
	mustCreate(t, s, first.Clone())
	second := sampleAgent("dup")
	second.ModelName = "impostor"
	if err := s.CreateAgent(ctx, second); !errors.Is(err, agents.ErrExists) {
		t.Fatalf("second CreateAgent: got %v, want ErrExists", err)
	}
	wantAgent(t, s, first)
}

func testAgentCreateInvalid(t *testing.T, s Store) {
	ctx := context.Background()
	if err := s.CreateAgent(ctx, nil); err == nil {
		t.Fatal("CreateAgent(nil) succeeded")
	}
	if err := s.CreateAgent(ctx, &agents.Agent{ModelName: "no id"}); err == nil {
		t.Fatal("CreateAgent with an empty id succeeded")
	}
	list, err := s.ListAgents(ctx, "", 0)
	if err != nil || len(list) != 0 {
		t.Fatalf("after invalid creates, ListAgents = %d agents, %v; want none", len(list), err)
	}
}

func testAgentUpdate(t *testing.T, s Store) {
	ctx := context.Background()
	want := sampleAgent("upd")
	mustCreate(t, s, want.Clone())

	calls := 0
	got, err := s.UpdateAgent(ctx, "upd", func(a *agents.Agent) error {
		calls++
		if d := agentDiff(a, want); d != "" {
			t.Errorf("fn saw %s", d)
		}
		a.ModelName = "claude-test"
		a.Permissions = append(a.Permissions, "admin")
		a.Disabled = true
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateAgent: %v", err)
	}
	if calls == 0 {
		t.Fatal("UpdateAgent never called fn")
	}
	want.ModelName = "claude-test"
	want.Permissions = append(want.Permissions, "admin")
	want.Disabled = true
	if d := agentDiff(got, want); d != "" {
		t.Fatalf("UpdateAgent returned %s", d)
	}
	wantAgent(t, s, want)
}

func testAgentUpdateFnError(t *testing.T, s Store) {
	ctx := context.Background()
	want := sampleAgent("fn-err")
	mustCreate(t, s, want.Clone())
	got, err := s.UpdateAgent(ctx, "fn-err", func(a *agents.Agent) error {
		a.ModelName = "must not be saved"
		a.Permissions[0] = "must not be saved"
		return errTest
	})
	if !errors.Is(err, errTest) {
		t.Fatalf("UpdateAgent: got %v, want the callback's error", err)
	}
	if got != nil {
		t.Fatalf("UpdateAgent returned an agent with its error: %+v", got)
	}
	wantAgent(t, s, want)
}

func testAgentUpdateRename(t *testing.T, s Store) {
	ctx := context.Background()
	want := sampleAgent("keep-id")
	mustCreate(t, s, want.Clone())
	_, err := s.UpdateAgent(ctx, "keep-id", func(a *agents.Agent) error {
		a.ID = "other-id"
		return nil
	})
	if err == nil {
		t.Fatal("UpdateAgent changing the id succeeded")
	}
	wantAgent(t, s, want)
	if _, err := s.GetAgent(ctx, "other-id"); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("GetAgent(other-id): got %v, want ErrNotFound", err)
	}
}

func testAgentDelete(t *testing.T, s Store) {
	ctx := context.Background()
	mustCreate(t, s, sampleAgent("gone"))
	keep := sampleAgent("kept")
	mustCreate(t, s, keep.Clone())
	if err := s.DeleteAgent(ctx, "gone"); err != nil {
		t.Fatalf("DeleteAgent: %v", err)
	}
	if _, err := s.GetAgent(ctx, "gone"); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("GetAgent after delete: got %v, want ErrNotFound", err)
	}
	if err := s.DeleteAgent(ctx, "gone"); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("second DeleteAgent: got %v, want ErrNotFound", err)
	}
	wantAgent(t, s, keep)
	// The id is free again.
	again := sampleAgent("gone")
	again.ModelName = "reborn"
	mustCreate(t, s, again.Clone())
	wantAgent(t, s, again)
}

func testAgentNotFound(t *testing.T, s Store) {
	ctx := context.Background()
	if a, err := s.GetAgent(ctx, "missing"); !errors.Is(err, agents.ErrNotFound) || a != nil {
		t.Fatalf("GetAgent: got %v, %v; want nil, ErrNotFound", a, err)
	}
	called := false
	a, err := s.UpdateAgent(ctx, "missing", func(*agents.Agent) error { called = true; return nil })
	if !errors.Is(err, agents.ErrNotFound) || a != nil {
		t.Fatalf("UpdateAgent: got %v, %v; want nil, ErrNotFound", a, err)
	}
	if called {
		t.Fatal("UpdateAgent called fn for a missing agent")
	}
	if err := s.DeleteAgent(ctx, "missing"); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("DeleteAgent: got %v, want ErrNotFound", err)
	}
	if _, err := s.GetAgent(ctx, "missing"); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("UpdateAgent on a missing id created it: %v", err)
	}
}

// createConcurrently creates agents from several goroutines, so a backend
// that syncs every write can share fsyncs and the suite stays fast.
func createConcurrently(t *testing.T, s Store, ids []string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(ids))
	sem := make(chan struct{}, 16)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.CreateAgent(context.Background(), sampleAgent(id)); err != nil {
				errs <- fmt.Errorf("CreateAgent(%q): %w", id, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func ids(list []*agents.Agent) []string {
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.ID
	}
	return out
}

func testAgentList(t *testing.T, s Store) {
	ctx := context.Background()
	if list, err := s.ListAgents(ctx, "", 10); err != nil || len(list) != 0 {
		t.Fatalf("ListAgents on an empty store: %v, %v", ids(list), err)
	}
	// Ids whose byte order differs from insertion order, including ones
	// sharing a prefix, upper case (sorts before lower) and "-" and "_".
	want := []string{"A-upper", "a", "a-1", "a_1", "aa", "b", "b10", "b2", "bot-07", "bot-7", "z"}
	shuffled := []string{"b2", "z", "a_1", "aa", "A-upper", "bot-7", "a", "b10", "a-1", "bot-07", "b"}
	for _, id := range shuffled {
		mustCreate(t, s, sampleAgent(id))
	}
	// Other data must not show up among agents.
	if err := s.PutSigningKey(ctx, oauth.StoredKey{ID: "a-key", Algorithm: "ES256", Private: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRecord(ctx, "agent", "zz", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}

	all, err := s.ListAgents(ctx, "", 0)
	if err != nil {
		t.Fatalf("ListAgents: %v", err)
	}
	if !slices.Equal(ids(all), want) {
		t.Fatalf("ListAgents order: got %v, want %v", ids(all), want)
	}
	for _, a := range all {
		if d := agentDiff(a, sampleAgent(a.ID)); d != "" {
			t.Fatalf("listed agent %q differs: %s", a.ID, d)
		}
	}

	// Page through with limit 4.
	var paged []string
	after := ""
	for page := 0; ; page++ {
		if page > len(want) {
			t.Fatal("pagination does not end")
		}
		list, err := s.ListAgents(ctx, after, 4)
		if err != nil {
			t.Fatalf("ListAgents(%q, 4): %v", after, err)
		}
		if len(list) > 4 {
			t.Fatalf("ListAgents(%q, 4) returned %d agents", after, len(list))
		}
		if len(list) == 0 {
			break
		}
		paged = append(paged, ids(list)...)
		after = list[len(list)-1].ID
	}
	if !slices.Equal(paged, want) {
		t.Fatalf("paged listing: got %v, want %v", paged, want)
	}

	// "after" is exclusive and need not exist.
	for _, tc := range []struct {
		after string
		limit int
		want  []string
	}{
		{"a", 2, []string{"a-1", "a_1"}},
		{"a-0", 1, []string{"a-1"}},
		{"b1", 3, []string{"b10", "b2", "bot-07"}},
		{"bot-7", 10, []string{"z"}},
		{"z", 10, nil},
		{"zzz", 10, nil},
		{"", 1, []string{"A-upper"}},
		{"", -5, want},
	} {
		list, err := s.ListAgents(ctx, tc.after, tc.limit)
		if err != nil {
			t.Fatalf("ListAgents(%q, %d): %v", tc.after, tc.limit, err)
		}
		if got := ids(list); !slices.Equal(got, tc.want) {
			t.Errorf("ListAgents(%q, %d) = %v, want %v", tc.after, tc.limit, got, tc.want)
		}
	}
}

func testAgentListDefaultLimit(t *testing.T, s Store) {
	ctx := context.Background()
	var want []string
	for i := range 105 {
		want = append(want, fmt.Sprintf("bulk-%03d", i))
	}
	createConcurrently(t, s, want)
	list, err := s.ListAgents(ctx, "", 0)
	if err != nil {
		t.Fatalf("ListAgents: %v", err)
	}
	if !slices.Equal(ids(list), want[:100]) {
		t.Fatalf("ListAgents with limit 0 returned %d agents (%v...), want the first 100", len(list), ids(list)[:min(3, len(list))])
	}
	rest, err := s.ListAgents(ctx, list[len(list)-1].ID, 0)
	if err != nil {
		t.Fatalf("ListAgents: %v", err)
	}
	if !slices.Equal(ids(rest), want[100:]) {
		t.Fatalf("second page: got %v, want %v", ids(rest), want[100:])
	}
}

func testAgentIsolation(t *testing.T, s Store) {
	ctx := context.Background()
	want := sampleAgent("iso")

	in := want.Clone()
	mustCreate(t, s, in)
	in.ModelName = "mutated after create"
	in.Permissions[0] = "mutated after create"
	wantAgent(t, s, want)

	got := mustGetAgent(t, s, "iso")
	got.OwnerName = "mutated after get"
	got.Permissions[1] = "mutated after get"
	wantAgent(t, s, want)

	var seen *agents.Agent
	updated, err := s.UpdateAgent(ctx, "iso", func(a *agents.Agent) error {
		seen = a
		a.OwnerName = "Grace Hopper"
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateAgent: %v", err)
	}
	want.OwnerName = "Grace Hopper"
	updated.ModelName = "mutated after update"
	updated.Permissions[0] = "mutated after update"
	seen.OwnerEmail = "mutated-by-fn@example.com"
	seen.Permissions[1] = "mutated by fn"
	wantAgent(t, s, want)

	list, err := s.ListAgents(ctx, "", 0)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListAgents: %d agents, %v", len(list), err)
	}
	list[0].ModelName = "mutated after list"
	list[0].Permissions[0] = "mutated after list"
	wantAgent(t, s, want)
}

func testAgentConcurrentCreate(t *testing.T, s Store) {
	const racers = 16
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		winners []int
		others  []error
	)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := sampleAgent("contested")
			a.ModelName = fmt.Sprintf("racer-%d", i)
			<-start
			err := s.CreateAgent(context.Background(), a)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, i)
			} else if !errors.Is(err, agents.ErrExists) {
				others = append(others, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(others) > 0 {
		t.Fatalf("CreateAgent failed with errors other than ErrExists: %v", others)
	}
	if len(winners) != 1 {
		t.Fatalf("%d concurrent creates of one id succeeded (%v), want exactly 1", len(winners), winners)
	}
	if got := mustGetAgent(t, s, "contested").ModelName; got != fmt.Sprintf("racer-%d", winners[0]) {
		t.Fatalf("stored agent is %q, but racer-%d won", got, winners[0])
	}
}

func testAgentConcurrentUpdate(t *testing.T, s Store) {
	const workers, perWorker = 8, 10
	a := sampleAgent("counter")
	a.Permissions = nil
	mustCreate(t, s, a)
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				_, err := s.UpdateAgent(context.Background(), "counter", func(a *agents.Agent) error {
					a.Permissions = append(a.Permissions, fmt.Sprintf("w%d-%d", w, i))
					return nil
				})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("UpdateAgent: %v", err)
	}
	got := mustGetAgent(t, s, "counter").Permissions
	if len(got) != workers*perWorker {
		t.Fatalf("after %d concurrent updates the agent has %d entries: updates were lost", workers*perWorker, len(got))
	}
	seen := map[string]bool{}
	for _, p := range got {
		if seen[p] {
			t.Fatalf("entry %q applied twice", p)
		}
		seen[p] = true
	}
}

func sampleKey(id string, b byte) oauth.StoredKey {
	return oauth.StoredKey{
		ID:        id,
		Algorithm: "RS256",
		Private:   []byte{0x30, 0x82, b, 0x00, 0xff},
		CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC),
	}
}

func keyDiff(got, want oauth.StoredKey) string {
	if got.ID != want.ID || got.Algorithm != want.Algorithm || !bytes.Equal(got.Private, want.Private) ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.RetiredAt.Equal(want.RetiredAt) {
		return fmt.Sprintf("got %+v, want %+v", got, want)
	}
	return ""
}

// wantKeys checks the stored set of keys, whatever order it comes in.
func wantKeys(t *testing.T, s Store, want ...oauth.StoredKey) {
	t.Helper()
	got, err := s.SigningKeys(context.Background())
	if err != nil {
		t.Fatalf("SigningKeys: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("SigningKeys returned %d keys, want %d: %+v", len(got), len(want), got)
	}
	byID := map[string]oauth.StoredKey{}
	for _, k := range got {
		byID[k.ID] = k
	}
	for _, w := range want {
		g, ok := byID[w.ID]
		if !ok {
			t.Fatalf("key %q missing from %+v", w.ID, got)
		}
		if d := keyDiff(g, w); d != "" {
			t.Fatalf("key %q: %s", w.ID, d)
		}
	}
}

func testKeys(t *testing.T, s Store) {
	ctx := context.Background()
	wantKeys(t, s)
	k1, k2 := sampleKey("kid-1", 1), sampleKey("kid-2", 2)
	k2.Algorithm = "ES256"
	for _, k := range []oauth.StoredKey{k1, k2} {
		if err := s.PutSigningKey(ctx, k); err != nil {
			t.Fatalf("PutSigningKey(%q): %v", k.ID, err)
		}
	}
	wantKeys(t, s, k1, k2)

	// Replacing: retire kid-1.
	k1.RetiredAt = time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)
	if err := s.PutSigningKey(ctx, k1); err != nil {
		t.Fatalf("PutSigningKey (replace): %v", err)
	}
	wantKeys(t, s, k1, k2)

	if err := s.DeleteSigningKey(ctx, "kid-1"); err != nil {
		t.Fatalf("DeleteSigningKey: %v", err)
	}
	wantKeys(t, s, k2)
	if err := s.DeleteSigningKey(ctx, "kid-1"); err != nil {
		t.Fatalf("DeleteSigningKey of a missing key: %v", err)
	}
	if err := s.DeleteSigningKey(ctx, "never-existed"); err != nil {
		t.Fatalf("DeleteSigningKey of a missing key: %v", err)
	}
	wantKeys(t, s, k2)
}

func testKeyIsolation(t *testing.T, s Store) {
	ctx := context.Background()
	want := sampleKey("kid", 7)
	in := want
	in.Private = bytes.Clone(want.Private)
	if err := s.PutSigningKey(ctx, in); err != nil {
		t.Fatal(err)
	}
	in.Private[0] = 0xee
	wantKeys(t, s, want)
	got, err := s.SigningKeys(ctx)
	if err != nil || len(got) != 1 {
		t.Fatalf("SigningKeys: %v, %v", got, err)
	}
	got[0].Private[0] = 0xdd
	wantKeys(t, s, want)
}

func mustGetRecord(t *testing.T, s Store, kind, key string) []byte {
	t.Helper()
	v, err := s.GetRecord(context.Background(), kind, key)
	if err != nil {
		t.Fatalf("GetRecord(%q, %q): %v", kind, key, err)
	}
	return v
}

func wantRecord(t *testing.T, s Store, kind, key, want string) {
	t.Helper()
	if got := mustGetRecord(t, s, kind, key); string(got) != want {
		t.Fatalf("GetRecord(%q, %q) = %q, want %q", kind, key, got, want)
	}
}

func wantNoRecord(t *testing.T, s Store, kind, key string) {
	t.Helper()
	if v, err := s.GetRecord(context.Background(), kind, key); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("GetRecord(%q, %q) = %q, %v; want ErrNotFound", kind, key, v, err)
	}
}

func mustPut(t *testing.T, s Store, kind, key, value string, ttl time.Duration) {
	t.Helper()
	if err := s.PutRecord(context.Background(), kind, key, []byte(value), ttl); err != nil {
		t.Fatalf("PutRecord(%q, %q): %v", kind, key, err)
	}
}

func testRecords(t *testing.T, s Store) {
	ctx := context.Background()
	wantNoRecord(t, s, "code", "missing")
	mustPut(t, s, "code", "k1", "v1", 0)
	mustPut(t, s, "code", "k2", "v2", time.Hour)
	wantRecord(t, s, "code", "k1", "v1")
	wantRecord(t, s, "code", "k2", "v2")

	mustPut(t, s, "code", "k1", "v1-replaced", 0)
	wantRecord(t, s, "code", "k1", "v1-replaced")

	// Binary values and keys with any bytes, including "/", survive.
	bin := []byte{0, 1, 2, 0xff, '/', 0}
	if err := s.PutRecord(ctx, "code", "a/b\x00c", bin, 0); err != nil {
		t.Fatalf("PutRecord: %v", err)
	}
	if got := mustGetRecord(t, s, "code", "a/b\x00c"); !bytes.Equal(got, bin) {
		t.Fatalf("binary value: got %x, want %x", got, bin)
	}

	if err := s.DeleteRecord(ctx, "code", "k1"); err != nil {
		t.Fatalf("DeleteRecord: %v", err)
	}
	wantNoRecord(t, s, "code", "k1")
	wantRecord(t, s, "code", "k2", "v2")
	if err := s.DeleteRecord(ctx, "code", "k1"); err != nil {
		t.Fatalf("DeleteRecord of a missing record: %v", err)
	}
	if err := s.DeleteRecord(ctx, "code", "never-existed"); err != nil {
		t.Fatalf("DeleteRecord of a missing record: %v", err)
	}
}

func testRecordKinds(t *testing.T, s Store) {
	ctx := context.Background()
	mustPut(t, s, "code", "same", "a code", 0)
	mustPut(t, s, "refresh", "same", "a refresh token", 0)
	// Keys that would look like another kind's key if joined naively.
	mustPut(t, s, "x", "y/z", "x + y/z", 0)
	mustPut(t, s, "xy", "z", "xy + z", 0)
	wantRecord(t, s, "code", "same", "a code")
	wantRecord(t, s, "refresh", "same", "a refresh token")
	wantRecord(t, s, "x", "y/z", "x + y/z")
	wantRecord(t, s, "xy", "z", "xy + z")
	wantNoRecord(t, s, "x", "yz")
	if _, err := s.ConsumeRecord(ctx, "code", "same"); err != nil {
		t.Fatalf("ConsumeRecord: %v", err)
	}
	wantRecord(t, s, "refresh", "same", "a refresh token")
	if err := s.DeleteRecord(ctx, "refresh", "same"); err != nil {
		t.Fatal(err)
	}
	wantRecord(t, s, "x", "y/z", "x + y/z")
}

func testRecordInvalidKind(t *testing.T, s Store) {
	ctx := context.Background()
	// "x" + "y/z" is stored so that a backend joining kind and key with "/"
	// and not checking would find it under kind "x/y", key "z".
	mustPut(t, s, "x", "y/z", "real", 0)
	for _, kind := range []string{"x/y", "/", "a/", "/a", ""} {
		if err := s.PutRecord(ctx, kind, "z", []byte("v"), 0); err == nil {
			t.Errorf("PutRecord(kind %q) succeeded", kind)
		}
		if v, err := s.GetRecord(ctx, kind, "z"); err == nil || errors.Is(err, oauth.ErrNotFound) {
			t.Errorf("GetRecord(kind %q) = %q, %v; want an invalid-kind error", kind, v, err)
		}
		if v, err := s.ConsumeRecord(ctx, kind, "z"); err == nil || errors.Is(err, oauth.ErrNotFound) {
			t.Errorf("ConsumeRecord(kind %q) = %q, %v; want an invalid-kind error", kind, v, err)
		}
		err := s.UpdateRecord(ctx, kind, "z", func(b []byte) ([]byte, error) { return []byte("changed"), nil })
		if err == nil || errors.Is(err, oauth.ErrNotFound) {
			t.Errorf("UpdateRecord(kind %q) = %v; want an invalid-kind error", kind, err)
		}
		if err := s.DeleteRecord(ctx, kind, "z"); err == nil {
			t.Errorf("DeleteRecord(kind %q) succeeded", kind)
		}
		if err := s.CreateRecord(ctx, kind, "z", []byte("v"), 0); err == nil || errors.Is(err, oauth.ErrExists) {
			t.Errorf("CreateRecord(kind %q) = %v; want an invalid-kind error", kind, err)
		}
		if list, err := s.ListRecords(ctx, kind, "", 0); err == nil || len(list) != 0 {
			t.Errorf("ListRecords(kind %q) = %v, %v; want an invalid-kind error", kind, recordKeys(list), err)
		}
	}
	wantRecord(t, s, "x", "y/z", "real")
	wantRecords(t, s, "x", "", 0, "y/z")
}

func testRecordIsolation(t *testing.T, s Store) {
	ctx := context.Background()
	in := []byte("original")
	if err := s.PutRecord(ctx, "iso", "k", in, 0); err != nil {
		t.Fatal(err)
	}
	in[0] = 'X'
	wantRecord(t, s, "iso", "k", "original")

	got := mustGetRecord(t, s, "iso", "k")
	got[0] = 'Y'
	wantRecord(t, s, "iso", "k", "original")

	var seen, returned []byte
	err := s.UpdateRecord(ctx, "iso", "k", func(b []byte) ([]byte, error) {
		seen = b
		returned = append([]byte(nil), "updated"...)
		return returned, nil
	})
	if err != nil {
		t.Fatalf("UpdateRecord: %v", err)
	}
	seen[0] = 'Z'
	returned[0] = 'Z'
	wantRecord(t, s, "iso", "k", "updated")
}

func testRecordConsume(t *testing.T, s Store) {
	ctx := context.Background()
	mustPut(t, s, "code", "once", "the value", time.Hour)
	mustPut(t, s, "code", "other", "untouched", 0)
	v, err := s.ConsumeRecord(ctx, "code", "once")
	if err != nil || string(v) != "the value" {
		t.Fatalf("first ConsumeRecord = %q, %v; want the value", v, err)
	}
	if v, err := s.ConsumeRecord(ctx, "code", "once"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("second ConsumeRecord = %q, %v; want ErrNotFound", v, err)
	}
	wantNoRecord(t, s, "code", "once")
	wantRecord(t, s, "code", "other", "untouched")
	if v, err := s.ConsumeRecord(ctx, "code", "never-existed"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("ConsumeRecord of a missing record = %q, %v; want ErrNotFound", v, err)
	}
	// A consumed key can be written again.
	mustPut(t, s, "code", "once", "second life", 0)
	wantRecord(t, s, "code", "once", "second life")
}

func testRecordConsumeRace(t *testing.T, s Store) {
	const racers, rounds = 16, 5
	for round := range rounds {
		key := fmt.Sprintf("race-%d", round)
		mustPut(t, s, "code", key, "prize", time.Hour)
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			mu      sync.Mutex
			winners int
			others  []error
		)
		for range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				v, err := s.ConsumeRecord(context.Background(), "code", key)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && string(v) == "prize":
					winners++
				case err == nil:
					others = append(others, fmt.Errorf("got value %q", v))
				case !errors.Is(err, oauth.ErrNotFound):
					others = append(others, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(others) > 0 {
			t.Fatalf("round %d: unexpected results: %v", round, others)
		}
		if winners != 1 {
			t.Fatalf("round %d: %d of %d concurrent consumers got the record, want exactly 1", round, winners, racers)
		}
		wantNoRecord(t, s, "code", key)
	}
}

func testRecordUpdate(t *testing.T, s Store) {
	ctx := context.Background()
	mustPut(t, s, "req", "r1", "pending", 0)
	err := s.UpdateRecord(ctx, "req", "r1", func(b []byte) ([]byte, error) {
		if string(b) != "pending" {
			t.Errorf("fn got %q, want %q", b, "pending")
		}
		return append(b, "+authenticated"...), nil
	})
	if err != nil {
		t.Fatalf("UpdateRecord: %v", err)
	}
	wantRecord(t, s, "req", "r1", "pending+authenticated")

	err = s.UpdateRecord(ctx, "req", "r1", func(b []byte) ([]byte, error) {
		b[0] = 'X' // even in-place changes must not leak out
		return []byte("must not be saved"), errTest
	})
	if !errors.Is(err, errTest) {
		t.Fatalf("UpdateRecord: got %v, want the callback's error", err)
	}
	wantRecord(t, s, "req", "r1", "pending+authenticated")

	called := false
	err = s.UpdateRecord(ctx, "req", "missing", func(b []byte) ([]byte, error) { called = true; return b, nil })
	if !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("UpdateRecord of a missing record: got %v, want ErrNotFound", err)
	}
	if called {
		t.Fatal("UpdateRecord called fn for a missing record")
	}
	wantNoRecord(t, s, "req", "missing")
}

func testRecordConcurrentUpdate(t *testing.T, s Store) {
	const workers, perWorker = 8, 10
	mustPut(t, s, "ctr", "n", "", time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				err := s.UpdateRecord(context.Background(), "ctr", "n", func(b []byte) ([]byte, error) {
					return append(b, '.'), nil
				})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("UpdateRecord: %v", err)
	}
	if got := mustGetRecord(t, s, "ctr", "n"); len(got) != workers*perWorker {
		t.Fatalf("after %d concurrent updates the record has %d marks: updates were lost", workers*perWorker, len(got))
	}
}

func testRecordNegativeTTL(t *testing.T, s Store) {
	ctx := context.Background()
	mustPut(t, s, "revoked", "jti", "old", 0)
	if err := s.PutRecord(ctx, "revoked", "jti", []byte("already expired"), -time.Second); err != nil {
		t.Fatalf("PutRecord with a negative ttl: %v", err)
	}
	wantNoRecord(t, s, "revoked", "jti")
	if err := s.PutRecord(ctx, "revoked", "fresh", []byte("already expired"), -time.Second); err != nil {
		t.Fatalf("PutRecord with a negative ttl: %v", err)
	}
	wantNoRecord(t, s, "revoked", "fresh")
}

// testNoCrossTalk checks that agents, keys and records with the same name
// live apart.
func testNoCrossTalk(t *testing.T, s Store) {
	ctx := context.Background()
	mustCreate(t, s, sampleAgent("shared"))
	if err := s.PutSigningKey(ctx, sampleKey("shared", 1)); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "agent", "shared", "record", 0)
	mustPut(t, s, "key", "shared", "record", 0)
	if err := s.DeleteSigningKey(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRecord(ctx, "agent", "shared"); err != nil {
		t.Fatal(err)
	}
	wantAgent(t, s, sampleAgent("shared"))
	wantRecord(t, s, "key", "shared", "record")
	if err := s.DeleteAgent(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	wantRecord(t, s, "key", "shared", "record")
	wantKeys(t, s)
}

// testRecordExpiry checks every TTL rule after a single wait, so the suite
// sleeps once however few parallel slots the test run has.
func testRecordExpiry(t *testing.T, s Store) {
	ctx := context.Background()
	// Expire: reads, consumes and updates all miss; longer and unlimited
	// records stay.
	mustPut(t, s, "code", "short", "soon gone", time.Second)
	mustPut(t, s, "code", "consume-late", "soon gone", time.Second)
	mustPut(t, s, "code", "update-late", "soon gone", time.Second)
	mustPut(t, s, "code", "long", "stays", time.Hour)
	mustPut(t, s, "code", "forever", "stays", 0)
	wantRecord(t, s, "code", "short", "soon gone")

	// UpdateRecord keeps the expiry: an updated 1s record still expires,
	// and an updated unlimited one does not start to.
	mustPut(t, s, "req", "expiring", "pending", time.Second)
	mustPut(t, s, "req", "permanent", "pending", 0)
	for _, key := range []string{"expiring", "permanent"} {
		err := s.UpdateRecord(ctx, "req", key, func([]byte) ([]byte, error) { return []byte("authenticated"), nil })
		if err != nil {
			t.Fatalf("UpdateRecord(%q): %v", key, err)
		}
		wantRecord(t, s, "req", key, "authenticated")
	}

	// PutRecord replaces the expiry along with the value, both ways.
	mustPut(t, s, "rt", "extended", "v1", time.Second)
	mustPut(t, s, "rt", "extended", "v2", 0)
	mustPut(t, s, "rt", "shortened", "v1", 0)
	mustPut(t, s, "rt", "shortened", "v2", time.Second)
	wantRecord(t, s, "rt", "shortened", "v2")

	// CreateRecord: a live 1s record blocks a create until it expires, a
	// created 1s record expires, and listing hides expired records.
	mustCreateRecord(t, s, "once", "expiring", "first", time.Second)
	mustCreateRecord(t, s, "once", "created-short", "soon gone", time.Second)
	mustCreateRecord(t, s, "once", "created-forever", "stays", 0)
	if err := s.CreateRecord(ctx, "once", "expiring", []byte("too early"), 0); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateRecord over a live 1s record: got %v, want ErrExists", err)
	}
	mustPut(t, s, "list", "a", "short", time.Second)
	mustPut(t, s, "list", "b", "long", time.Hour)
	mustPut(t, s, "list", "c", "short", time.Second)
	mustPut(t, s, "list", "d", "forever", 0)
	mustPut(t, s, "list", "e", "short", time.Second)
	wantRecords(t, s, "list", "", 0, "a", "b", "c", "d", "e")

	time.Sleep(ttlWait)

	wantNoRecord(t, s, "code", "short")
	if v, err := s.ConsumeRecord(ctx, "code", "consume-late"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("ConsumeRecord of an expired record = %q, %v; want ErrNotFound", v, err)
	}
	called := false
	err := s.UpdateRecord(ctx, "code", "update-late", func([]byte) ([]byte, error) { called = true; return []byte("revived"), nil })
	if !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("UpdateRecord of an expired record: got %v, want ErrNotFound", err)
	}
	if called {
		t.Fatal("UpdateRecord called fn for an expired record")
	}
	wantNoRecord(t, s, "code", "update-late")
	if err := s.DeleteRecord(ctx, "code", "short"); err != nil {
		t.Fatalf("DeleteRecord of an expired record: %v", err)
	}
	wantRecord(t, s, "code", "long", "stays")
	wantRecord(t, s, "code", "forever", "stays")
	// An expired key can be written again.
	mustPut(t, s, "code", "short", "back", 0)
	wantRecord(t, s, "code", "short", "back")

	wantNoRecord(t, s, "req", "expiring")
	wantRecord(t, s, "req", "permanent", "authenticated")

	wantRecord(t, s, "rt", "extended", "v2")
	wantNoRecord(t, s, "rt", "shortened")

	mustCreateRecord(t, s, "once", "expiring", "second", 0)
	wantRecord(t, s, "once", "expiring", "second")
	wantNoRecord(t, s, "once", "created-short")
	wantRecord(t, s, "once", "created-forever", "stays")
	// An expired record must not count for concurrent creators either.
	raceCreate(t, s, "once", "created-short")

	wantRecords(t, s, "list", "", 0, "b", "d")
	wantRecords(t, s, "list", "a", 1, "b")
	wantRecords(t, s, "list", "b", 1, "d")
	wantRecords(t, s, "list", "d", 0)
}

func mustCreateRecord(t *testing.T, s Store, kind, key, value string, ttl time.Duration) {
	t.Helper()
	if err := s.CreateRecord(context.Background(), kind, key, []byte(value), ttl); err != nil {
		t.Fatalf("CreateRecord(%q, %q): %v", kind, key, err)
	}
}

func recordKeys(list []oauth.Record) []string {
	out := make([]string, len(list))
	for i, r := range list {
		out[i] = r.Key
	}
	return out
}

// wantRecords checks the keys ListRecords returns, in order.
func wantRecords(t *testing.T, s Store, kind, after string, limit int, want ...string) []oauth.Record {
	t.Helper()
	list, err := s.ListRecords(context.Background(), kind, after, limit)
	if err != nil {
		t.Fatalf("ListRecords(%q, after %q, limit %d): %v", kind, after, limit, err)
	}
	if got := recordKeys(list); !slices.Equal(got, want) {
		t.Fatalf("ListRecords(%q, after %q, limit %d) = %q, want %q", kind, after, limit, got, want)
	}
	return list
}

func testRecordCreate(t *testing.T, s Store) {
	ctx := context.Background()
	in := []byte("first")
	if err := s.CreateRecord(ctx, "client", "c1", in, time.Hour); err != nil {
		t.Fatalf("CreateRecord: %v", err)
	}
	in[0] = 'X' // the store keeps its own copy
	wantRecord(t, s, "client", "c1", "first")

	if err := s.CreateRecord(ctx, "client", "c1", []byte("second"), 0); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("duplicate CreateRecord: got %v, want ErrExists", err)
	}
	wantRecord(t, s, "client", "c1", "first")

	// A record written by PutRecord, with or without expiry, is taken too.
	mustPut(t, s, "client", "put", "by put", 0)
	if err := s.CreateRecord(ctx, "client", "put", []byte("create"), time.Hour); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateRecord over a PutRecord: got %v, want ErrExists", err)
	}
	wantRecord(t, s, "client", "put", "by put")

	// The same key in another kind is free.
	mustCreateRecord(t, s, "clients", "c1", "other kind", 0)
	wantRecord(t, s, "clients", "c1", "other kind")
	wantRecord(t, s, "client", "c1", "first")

	// Deleting or consuming frees the key.
	if err := s.DeleteRecord(ctx, "client", "c1"); err != nil {
		t.Fatal(err)
	}
	mustCreateRecord(t, s, "client", "c1", "after delete", 0)
	wantRecord(t, s, "client", "c1", "after delete")
	if _, err := s.ConsumeRecord(ctx, "client", "c1"); err != nil {
		t.Fatal(err)
	}
	mustCreateRecord(t, s, "client", "c1", "after consume", 0)
	wantRecord(t, s, "client", "c1", "after consume")

	// Binary values and keys with "/" work as with PutRecord.
	bin := []byte{0, 1, 0xff, '/'}
	if err := s.CreateRecord(ctx, "client", "a/b\x00c", bin, 0); err != nil {
		t.Fatalf("CreateRecord: %v", err)
	}
	if got := mustGetRecord(t, s, "client", "a/b\x00c"); !bytes.Equal(got, bin) {
		t.Fatalf("binary value: got %x, want %x", got, bin)
	}

	// A negative ttl describes a record that has already expired: nothing
	// is stored, and a live record is still reported.
	if err := s.CreateRecord(ctx, "client", "neg", []byte("v"), -time.Second); err != nil {
		t.Fatalf("CreateRecord with a negative ttl: %v", err)
	}
	wantNoRecord(t, s, "client", "neg")
	if err := s.CreateRecord(ctx, "client", "put", []byte("v"), -time.Second); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateRecord with a negative ttl over a live record: got %v, want ErrExists", err)
	}
	wantRecord(t, s, "client", "put", "by put")
}

// raceCreate has 16 goroutines create (kind, key) at once and checks that
// exactly one succeeds, the rest get ErrExists, and the winner's value is
// stored.
func raceCreate(t *testing.T, s Store, kind, key string) {
	t.Helper()
	const racers = 16
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		winners []int
		others  []error
	)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := s.CreateRecord(context.Background(), kind, key, fmt.Appendf(nil, "racer-%d", i), time.Hour)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, i)
			} else if !errors.Is(err, oauth.ErrExists) {
				others = append(others, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(others) > 0 {
		t.Fatalf("CreateRecord(%q, %q) failed with errors other than ErrExists: %v", kind, key, others)
	}
	if len(winners) != 1 {
		t.Fatalf("%d of %d concurrent CreateRecord(%q, %q) succeeded (%v), want exactly 1", len(winners), racers, kind, key, winners)
	}
	wantRecord(t, s, kind, key, fmt.Sprintf("racer-%d", winners[0]))
}

func testRecordConcurrentCreate(t *testing.T, s Store) {
	const rounds = 5
	for round := range rounds {
		raceCreate(t, s, "client", fmt.Sprintf("race-%d", round))
	}
}

func testRecordList(t *testing.T, s Store) {
	ctx := context.Background()
	wantRecords(t, s, "rt", "", 10)
	// Keys whose byte order differs from insertion order: shared prefixes,
	// upper case (sorts before lower), "/", "-", "_" and a high byte.
	want := []string{"A", "a", "a-1", "a/b", "a_1", "aa", "b", "b10", "b2", "z", "z\xff"}
	shuffled := []string{"b2", "z\xff", "a_1", "aa", "A", "a/b", "a", "b10", "a-1", "z", "b"}
	for i, key := range shuffled {
		if i%2 == 0 {
			mustPut(t, s, "rt", key, "v:"+key, time.Hour)
		} else {
			mustCreateRecord(t, s, "rt", key, "v:"+key, 0)
		}
	}
	all := wantRecords(t, s, "rt", "", 0, want...)
	for _, r := range all {
		if string(r.Value) != "v:"+r.Key {
			t.Fatalf("listed record %q has value %q, want %q", r.Key, r.Value, "v:"+r.Key)
		}
	}
	wantRecords(t, s, "rt", "", -1, want...)
	wantRecords(t, s, "rt", "", len(want), want...)

	// Page through with limit 3.
	var paged []string
	after := ""
	for page := 0; ; page++ {
		if page > len(want) {
			t.Fatalf("paging does not end; so far %q", paged)
		}
		list, err := s.ListRecords(ctx, "rt", after, 3)
		if err != nil {
			t.Fatalf("ListRecords(after %q): %v", after, err)
		}
		if len(list) > 3 {
			t.Fatalf("ListRecords(limit 3) returned %d records", len(list))
		}
		if len(list) == 0 {
			break
		}
		paged = append(paged, recordKeys(list)...)
		after = list[len(list)-1].Key
	}
	if !slices.Equal(paged, want) {
		t.Fatalf("paged ListRecords: got %q, want %q", paged, want)
	}

	// after is exclusive, and need not be a stored key.
	wantRecords(t, s, "rt", "a", 2, "a-1", "a/b")
	wantRecords(t, s, "rt", "a.", 2, "a/b", "a_1")
	wantRecords(t, s, "rt", "B", 1, "a")
	wantRecords(t, s, "rt", "z", 0, "z\xff")
	wantRecords(t, s, "rt", "z\xff", 0)
	wantRecords(t, s, "rt", "\xff", 0)

	// Deleted and consumed records are gone from the list.
	if err := s.DeleteRecord(ctx, "rt", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeRecord(ctx, "rt", "b"); err != nil {
		t.Fatal(err)
	}
	wantRecords(t, s, "rt", "", 4, "A", "a-1", "a/b", "a_1")
	wantRecords(t, s, "rt", "aa", 2, "b10", "b2")

	// The empty key is a key like any other and comes first.
	mustCreateRecord(t, s, "rt", "", "empty", 0)
	list := wantRecords(t, s, "rt", "", 2, "", "A")
	if string(list[0].Value) != "empty" {
		t.Fatalf("record under the empty key has value %q", list[0].Value)
	}
}

// testRecordListKinds checks that ListRecords sees only its own kind, in
// particular not kinds it is a prefix of, nor agents or signing keys.
func testRecordListKinds(t *testing.T, s Store) {
	ctx := context.Background()
	mustPut(t, s, "client", "b", "client b", 0)
	mustCreateRecord(t, s, "client", "d", "client d", time.Hour)
	mustPut(t, s, "clients", "a", "clients a", 0)
	mustPut(t, s, "clients", "c", "clients c", 0)
	mustPut(t, s, "client-x", "a", "client-x a", 0)
	mustPut(t, s, "clien", "t", "clien t", 0)
	mustPut(t, s, "clien", "t/a", "clien t/a", 0)
	mustPut(t, s, "c", "lient/a", "c lient/a", 0)
	mustPut(t, s, "Client", "a", "Client a", 0)
	mustCreate(t, s, sampleAgent("client"))
	if err := s.PutSigningKey(ctx, sampleKey("client", 1)); err != nil {
		t.Fatal(err)
	}

	for _, page := range []struct {
		kind, after string
		limit       int
		want        []string
	}{
		{"client", "", 0, []string{"b", "d"}},
		{"client", "", 1, []string{"b"}},
		{"client", "b", 0, []string{"d"}},
		{"client", "d", 0, nil},
		{"clients", "", 0, []string{"a", "c"}},
		{"clients", "a", 0, []string{"c"}},
		{"client-x", "", 0, []string{"a"}},
		{"clien", "", 0, []string{"t", "t/a"}},
		{"c", "", 0, []string{"lient/a"}},
		{"Client", "", 0, []string{"a"}},
		{"cl", "", 0, nil},
		{"agent", "", 0, nil},
		{"key", "", 0, nil},
	} {
		list := wantRecords(t, s, page.kind, page.after, page.limit, page.want...)
		for _, r := range list {
			if want := page.kind + " " + r.Key; string(r.Value) != want {
				t.Fatalf("ListRecords(%q) returned %q = %q, want value %q", page.kind, r.Key, r.Value, want)
			}
		}
	}
}

func testRecordListDefaultLimit(t *testing.T, s Store) {
	const n = 105
	var (
		wg   sync.WaitGroup
		errs = make(chan error, n)
		sem  = make(chan struct{}, 16)
		want []string
	)
	for i := range n {
		key := fmt.Sprintf("k%03d", i)
		want = append(want, key)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.CreateRecord(context.Background(), "many", key, []byte(key), time.Hour); err != nil {
				errs <- fmt.Errorf("CreateRecord(%q): %w", key, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantRecords(t, s, "many", "", 0, want[:100]...)
	wantRecords(t, s, "many", "", -5, want[:100]...)
	wantRecords(t, s, "many", want[99], 0, want[100:]...)
	wantRecords(t, s, "many", "", n+10, want...)
}

func testRecordListIsolation(t *testing.T, s Store) {
	mustPut(t, s, "iso", "a", "alpha", 0)
	mustCreateRecord(t, s, "iso", "b", "bravo", time.Hour)
	list := wantRecords(t, s, "iso", "", 0, "a", "b")
	for _, r := range list {
		for i := range r.Value {
			r.Value[i] = 'X'
		}
		// Growing the slice must not write into anything the store holds.
		_ = append(r.Value[:1], "ZZZZZZZZ"...)
	}
	wantRecord(t, s, "iso", "a", "alpha")
	wantRecord(t, s, "iso", "b", "bravo")
	list = wantRecords(t, s, "iso", "", 0, "a", "b")
	if string(list[0].Value) != "alpha" || string(list[1].Value) != "bravo" {
		t.Fatalf("ListRecords after changing a returned slice: %q, %q", list[0].Value, list[1].Value)
	}
}
