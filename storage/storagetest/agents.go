package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/agents"
)

// RunAgents checks agents.Repository.
func RunAgents(t *testing.T, newStore NewStore) {
	runCases(t, newStore, []testCase{
		{"CreateGet", testAgentCreateGet},
		{"CreateDuplicate", testAgentDuplicate},
		{"CreateInvalid", testAgentCreateInvalid},
		{"Update", testAgentUpdate},
		{"PublicKeys", testAgentKeys},
		{"UpdateFnError", testAgentUpdateFnError},
		{"UpdateCannotRename", testAgentUpdateRename},
		{"Delete", testAgentDelete},
		{"NotFound", testAgentNotFound},
		{"List", testAgentList},
		{"ListDefaultLimit", testAgentListDefaultLimit},
		{"CopyIsolation", testAgentIsolation},
		{"ConcurrentCreate", testAgentConcurrentCreate},
		{"ConcurrentUpdate", testAgentConcurrentUpdate},
	})
}

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
		RequireDPoP: true,
	}
}

// agentDiff describes how got differs from want, or returns "".
func agentDiff(got, want *agents.Agent) string {
	if got == nil || want == nil {
		if got == want {
			return ""
		}
		return fmt.Sprintf("got %v, want %v", got, want)
	}
	var d diff
	d.str("ID", got.ID, want.ID)
	d.str("SecretHash", got.SecretHash, want.SecretHash)
	d.str("ModelName", got.ModelName, want.ModelName)
	d.str("OwnerName", got.OwnerName, want.OwnerName)
	d.str("OwnerEmail", got.OwnerEmail, want.OwnerEmail)
	d.strs("Permissions", got.Permissions, want.Permissions)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.time("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	d.check("Disabled", got.Disabled == want.Disabled, got.Disabled, want.Disabled)
	d.str("JWKS", got.JWKS, want.JWKS)
	d.check("RequireDPoP", got.RequireDPoP == want.RequireDPoP, got.RequireDPoP, want.RequireDPoP)
	return d.String()
}

func mustCreateAgent(t *testing.T, s Store, a *agents.Agent) {
	t.Helper()
	if err := s.CreateAgent(ctx, a); err != nil {
		t.Fatalf("CreateAgent(%q): %v", a.ID, err)
	}
}

func mustGetAgent(t *testing.T, s Store, id string) *agents.Agent {
	t.Helper()
	a, err := s.GetAgent(ctx, id)
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

func testAgentCreateGet(t *testing.T, s Store, _ *Clock) {
	want := sampleAgent("agent-1")
	mustCreateAgent(t, s, want.Clone())
	wantAgent(t, s, want)

	// Zero values and a nil permission list round-trip as well.
	bare := &agents.Agent{ID: "bare", Disabled: true}
	mustCreateAgent(t, s, bare.Clone())
	if d := agentDiff(mustGetAgent(t, s, "bare"), bare); d != "" {
		t.Fatalf("bare agent differs: %s", d)
	}
}

func testAgentDuplicate(t *testing.T, s Store, _ *Clock) {
	first := sampleAgent("dup")
	mustCreateAgent(t, s, first.Clone())
	second := sampleAgent("dup")
	second.ModelName = "impostor"
	if err := s.CreateAgent(ctx, second); !errors.Is(err, agents.ErrExists) {
		t.Fatalf("second CreateAgent: got %v, want ErrExists", err)
	}
	wantAgent(t, s, first)
}

func testAgentCreateInvalid(t *testing.T, s Store, _ *Clock) {
	if err := s.CreateAgent(ctx, nil); err == nil {
		t.Fatal("CreateAgent(nil) succeeded")
	}
	if err := s.CreateAgent(ctx, &agents.Agent{ModelName: "no id"}); err == nil || errors.Is(err, agents.ErrExists) {
		t.Fatalf("CreateAgent with an empty id: got %v, want an invalid-input error", err)
	}
	list, err := s.ListAgents(ctx, "", 0)
	if err != nil || len(list) != 0 {
		t.Fatalf("after invalid creates, ListAgents = %d agents, %v; want none", len(list), err)
	}
	// Nothing can be stored under the empty id, so it is simply unknown.
	if _, err := s.GetAgent(ctx, ""); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("GetAgent(\"\"): got %v, want ErrNotFound", err)
	}
}

func testAgentUpdate(t *testing.T, s Store, _ *Clock) {
	want := sampleAgent("upd")
	mustCreateAgent(t, s, want.Clone())

	calls := 0
	got, err := s.UpdateAgent(ctx, "upd", func(a *agents.Agent) error {
		calls++
		if d := agentDiff(a, want); d != "" {
			t.Errorf("fn saw %s", d)
		}
		a.ModelName = "claude-test"
		a.Permissions = append(a.Permissions, "admin")
		a.Disabled = true
		a.UpdatedAt = a.UpdatedAt.Add(time.Minute)
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
	want.UpdatedAt = want.UpdatedAt.Add(time.Minute)
	if d := agentDiff(got, want); d != "" {
		t.Fatalf("UpdateAgent returned %s", d)
	}
	wantAgent(t, s, want)

	// The DPoP policy, kept above by an update that left it, turns off
	// and on again.
	for _, require := range []bool{false, true} {
		got, err := s.UpdateAgent(ctx, "upd", func(a *agents.Agent) error {
			if d := agentDiff(a, want); d != "" {
				t.Errorf("fn saw %s", d)
			}
			a.RequireDPoP = require
			return nil
		})
		if err != nil {
			t.Fatalf("UpdateAgent: %v", err)
		}
		want.RequireDPoP = require
		if d := agentDiff(got, want); d != "" {
			t.Fatalf("UpdateAgent setting RequireDPoP to %v returned %s", require, d)
		}
		wantAgent(t, s, want)
	}
}

// keyAgent returns an agent that holds keys instead of a secret.
func keyAgent(id string) *agents.Agent {
	a := sampleAgent(id)
	a.SecretHash, a.JWKS = "", sampleJWKS
	return a
}

// testAgentKeys checks that an agent's keys round-trip through every
// operation, and that moving between a secret and keys leaves nothing of
// the previous one.
func testAgentKeys(t *testing.T, s Store, _ *Clock) {
	want := map[string]*agents.Agent{"keys": keyAgent("keys"), "secret": sampleAgent("secret")}
	for _, a := range want {
		mustCreateAgent(t, s, a.Clone())
	}
	checkAll := func(when string) {
		t.Helper()
		for _, a := range want {
			wantAgent(t, s, a)
		}
		list, err := s.ListAgents(ctx, "", 0)
		if err != nil || len(list) != len(want) {
			t.Fatalf("ListAgents %s: %d agents, %v", when, len(list), err)
		}
		for _, a := range list {
			if d := agentDiff(a, want[a.ID]); d != "" {
				t.Fatalf("listed agent %q differs %s: %s", a.ID, when, d)
			}
		}
	}
	checkAll("after create")

	steps := []struct{ id, secret, jwks string }{
		{"secret", "", sampleJWKS},                                 // a secret replaced by keys
		{"keys", "$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$bmV3", ""}, // keys replaced by a secret
		{"secret", "", `{"keys":[]}`},                              // other keys
	}
	for _, step := range steps {
		got, err := s.UpdateAgent(ctx, step.id, func(a *agents.Agent) error {
			if d := agentDiff(a, want[step.id]); d != "" {
				t.Errorf("fn saw %s", d)
			}
			a.SecretHash, a.JWKS = step.secret, step.jwks
			return nil
		})
		if err != nil {
			t.Fatalf("UpdateAgent(%q): %v", step.id, err)
		}
		want[step.id].SecretHash, want[step.id].JWKS = step.secret, step.jwks
		if d := agentDiff(got, want[step.id]); d != "" {
			t.Fatalf("UpdateAgent(%q) returned %s", step.id, d)
		}
		checkAll("after updating " + step.id)
	}
}

func testAgentUpdateFnError(t *testing.T, s Store, _ *Clock) {
	want := sampleAgent("fn-err")
	mustCreateAgent(t, s, want.Clone())
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

func testAgentUpdateRename(t *testing.T, s Store, _ *Clock) {
	want := sampleAgent("keep-id")
	mustCreateAgent(t, s, want.Clone())
	mustCreateAgent(t, s, sampleAgent("other-id"))
	_, err := s.UpdateAgent(ctx, "keep-id", func(a *agents.Agent) error {
		a.ID = "other-id"
		a.ModelName = "renamed"
		return nil
	})
	if err == nil {
		t.Fatal("UpdateAgent changing the id succeeded")
	}
	wantAgent(t, s, want)
	wantAgent(t, s, sampleAgent("other-id"))
	_, err = s.UpdateAgent(ctx, "keep-id", func(a *agents.Agent) error {
		a.ID = "new-id"
		return nil
	})
	if err == nil {
		t.Fatal("UpdateAgent changing the id to a free one succeeded")
	}
	if _, err := s.GetAgent(ctx, "new-id"); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("GetAgent(new-id): got %v, want ErrNotFound", err)
	}
}

func testAgentDelete(t *testing.T, s Store, _ *Clock) {
	mustCreateAgent(t, s, sampleAgent("gone"))
	keep := sampleAgent("kept")
	mustCreateAgent(t, s, keep.Clone())
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
	mustCreateAgent(t, s, again.Clone())
	wantAgent(t, s, again)
}

func testAgentNotFound(t *testing.T, s Store, _ *Clock) {
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

func agentIDs(list []*agents.Agent) []string {
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.ID
	}
	return out
}

// listIDs are ids whose byte order differs from insertion order: shared
// prefixes, upper case (sorts before lower), "-", "_", "~" and a multi-byte
// character (which sorts after all of ASCII).
var (
	listIDs         = []string{"A-upper", "a", "a-1", "a_1", "aa", "b", "b10", "b2", "bot-07", "bot-7", "z", "z~", "zé"}
	listIDsShuffled = []string{"b2", "zé", "z", "a_1", "aa", "A-upper", "bot-7", "z~", "a", "b10", "a-1", "bot-07", "b"}
	// listPages are (after, limit) pages of listIDs; after is exclusive and
	// need not exist.
	listPages = []struct {
		after string
		limit int
		want  []string
	}{
		{"a", 2, []string{"a-1", "a_1"}},
		{"a-0", 1, []string{"a-1"}},
		{"B", 1, []string{"a"}},
		{"b1", 3, []string{"b10", "b2", "bot-07"}},
		{"bot-7", 10, []string{"z", "z~", "zé"}},
		{"z", 10, []string{"z~", "zé"}},
		{"z~", 1, []string{"zé"}},
		{"zé", 10, nil},
		{"\xff", 10, nil},
		{"", 1, []string{"A-upper"}},
		{"", -5, listIDs},
	}
)

// pageThrough lists everything with pages of limit and returns the ids.
func pageThrough(t *testing.T, limit int, list func(after string, limit int) ([]string, error)) []string {
	t.Helper()
	var all []string
	after := ""
	for page := 0; ; page++ {
		if page > 1000 {
			t.Fatalf("paging does not end; so far %q", all)
		}
		ids, err := list(after, limit)
		if err != nil {
			t.Fatalf("list after %q: %v", after, err)
		}
		if len(ids) > limit {
			t.Fatalf("list after %q with limit %d returned %d", after, limit, len(ids))
		}
		if len(ids) == 0 {
			return all
		}
		all = append(all, ids...)
		after = ids[len(ids)-1]
	}
}

// checkListing checks a listing of ids against listIDs: the first page of
// the default size holds them all in byte order, paging through them with
// pages of pageSize finds them all once, and each of listPages is right.
func checkListing(t *testing.T, what string, pageSize int, list func(after string, limit int) ([]string, error)) {
	t.Helper()
	all, err := list("", 0)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !slices.Equal(all, listIDs) {
		t.Fatalf("%s order: got %q, want %q", what, all, listIDs)
	}
	if paged := pageThrough(t, pageSize, list); !slices.Equal(paged, listIDs) {
		t.Fatalf("%s paged: got %q, want %q", what, paged, listIDs)
	}
	for _, tc := range listPages {
		got, err := list(tc.after, tc.limit)
		if err != nil {
			t.Fatalf("%s(%q, %d): %v", what, tc.after, tc.limit, err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s(%q, %d) = %q, want %q", what, tc.after, tc.limit, got, tc.want)
		}
	}
}

func testAgentList(t *testing.T, s Store, clock *Clock) {
	if list, err := s.ListAgents(ctx, "", 10); err != nil || len(list) != 0 {
		t.Fatalf("ListAgents on an empty store: %v, %v", agentIDs(list), err)
	}
	for _, id := range listIDsShuffled {
		mustCreateAgent(t, s, sampleAgent(id))
	}
	// Other data must not show up among agents.
	mustCreateClient(t, s, sampleClient("agent-zz"))
	mustCreateClient(t, s, sampleClient("a0"))
	mustEnsureSecret(t, s, "agent", "x")
	mustCreateAuthRequest(t, s, sampleAuthRequest("a00", clock))

	checkListing(t, "ListAgents", 4, func(after string, limit int) ([]string, error) {
		list, err := s.ListAgents(ctx, after, limit)
		return agentIDs(list), err
	})
	all, _ := s.ListAgents(ctx, "", 0)
	for _, a := range all {
		if d := agentDiff(a, sampleAgent(a.ID)); d != "" {
			t.Fatalf("listed agent %q differs: %s", a.ID, d)
		}
	}
	// Deleted agents are gone from the list.
	if err := s.DeleteAgent(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.ListAgents(ctx, "", 2); !slices.Equal(agentIDs(list), []string{"A-upper", "a-1"}) {
		t.Fatalf("ListAgents after a delete: %q", agentIDs(list))
	}
}

// bulkIDs returns n ids in byte order.
func bulkIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

func testAgentListDefaultLimit(t *testing.T, s Store, _ *Clock) {
	want := bulkIDs("bulk", 105)
	parallel(t, len(want), func(i int) error { return s.CreateAgent(ctx, sampleAgent(want[i])) })
	list, err := s.ListAgents(ctx, "", 0)
	if err != nil {
		t.Fatalf("ListAgents: %v", err)
	}
	if !slices.Equal(agentIDs(list), want[:100]) {
		t.Fatalf("ListAgents with limit 0 returned %d agents, want the first 100", len(list))
	}
	rest, err := s.ListAgents(ctx, list[len(list)-1].ID, 0)
	if err != nil {
		t.Fatalf("ListAgents: %v", err)
	}
	if !slices.Equal(agentIDs(rest), want[100:]) {
		t.Fatalf("second page: got %v, want %v", agentIDs(rest), want[100:])
	}
	all, err := s.ListAgents(ctx, "", 200)
	if err != nil || len(all) != len(want) {
		t.Fatalf("ListAgents with limit 200: %d agents, %v", len(all), err)
	}
}

func testAgentIsolation(t *testing.T, s Store, _ *Clock) {
	want := sampleAgent("iso")

	in := want.Clone()
	mustCreateAgent(t, s, in)
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

func testAgentConcurrentCreate(t *testing.T, s Store, _ *Clock) {
	errs := race(racers, func(i int) error {
		a := sampleAgent("contested")
		a.ModelName = fmt.Sprintf("racer-%d", i)
		return s.CreateAgent(ctx, a)
	})
	won := exactlyOne(t, "CreateAgent", errs, agents.ErrExists)
	if got := mustGetAgent(t, s, "contested").ModelName; got != fmt.Sprintf("racer-%d", won) {
		t.Fatalf("stored agent is %q, but racer-%d won", got, won)
	}
}

func testAgentConcurrentUpdate(t *testing.T, s Store, _ *Clock) {
	const workers, perWorker = 8, 10
	a := sampleAgent("counter")
	a.Permissions = nil
	mustCreateAgent(t, s, a)
	parallel(t, workers, func(w int) error {
		for i := range perWorker {
			_, err := s.UpdateAgent(ctx, "counter", func(a *agents.Agent) error {
				a.Permissions = append(a.Permissions, fmt.Sprintf("w%d-%d", w, i))
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
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
