package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/oauth"
)

// RunClients checks oauth.ClientStore.
func RunClients(t *testing.T, newStore NewStore) {
	runCases(t, newStore, []testCase{
		{"CreateGet", testClientCreateGet},
		{"CreateDuplicate", testClientDuplicate},
		{"CreateInvalid", testClientCreateInvalid},
		{"Update", testClientUpdate},
		{"PublicKeys", testClientKeys},
		{"UpdateFnError", testClientUpdateFnError},
		{"UpdateCannotRename", testClientUpdateRename},
		{"Delete", testClientDelete},
		{"NotFound", testClientNotFound},
		{"List", testClientList},
		{"ListDefaultLimit", testClientListDefaultLimit},
		{"CopyIsolation", testClientIsolation},
		{"ConcurrentCreate", testClientConcurrentCreate},
		{"ConcurrentUpdate", testClientConcurrentUpdate},
	})
}

func sampleClient(id string) *oauth.Client {
	return &oauth.Client{
		ID:              id,
		Name:            "Client " + id,
		SecretHash:      "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Public:          false,
		RedirectURIs:    []string{"https://app.example.com/cb", "http://127.0.0.1:8080/cb"},
		Scopes:          []string{"openid", "profile", "data:read"},
		GrantTypes:      []string{"authorization_code", "refresh_token"},
		IDTokenAlg:      "ES256",
		RequireDPoP:     true,
		Source:          "admin",
		ApplicationType: oauth.AppWeb,
		CreatedAt:       time.Date(2025, 4, 5, 6, 7, 8, 999999999, time.FixedZone("Y", -5*3600)),
	}
}

func clientDiff(got, want *oauth.Client) string {
	if got == nil || want == nil {
		if got == want {
			return ""
		}
		return fmt.Sprintf("got %v, want %v", got, want)
	}
	var d diff
	d.str("ID", got.ID, want.ID)
	d.str("Name", got.Name, want.Name)
	d.str("SecretHash", got.SecretHash, want.SecretHash)
	d.check("Public", got.Public == want.Public, got.Public, want.Public)
	d.strs("RedirectURIs", got.RedirectURIs, want.RedirectURIs)
	d.strs("Scopes", got.Scopes, want.Scopes)
	d.strs("GrantTypes", got.GrantTypes, want.GrantTypes)
	d.str("IDTokenAlg", got.IDTokenAlg, want.IDTokenAlg)
	d.str("JWKS", got.JWKS, want.JWKS)
	d.str("JWKSURI", got.JWKSURI, want.JWKSURI)
	d.check("RequireDPoP", got.RequireDPoP == want.RequireDPoP, got.RequireDPoP, want.RequireDPoP)
	d.str("ApplicationType", got.ApplicationType, want.ApplicationType)
	d.str("Source", got.Source, want.Source)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	return d.String()
}

func copyClient(c *oauth.Client) *oauth.Client {
	out := *c
	out.RedirectURIs = slices.Clone(c.RedirectURIs)
	out.Scopes = slices.Clone(c.Scopes)
	out.GrantTypes = slices.Clone(c.GrantTypes)
	return &out
}

func mustCreateClient(t *testing.T, s Store, c *oauth.Client) {
	t.Helper()
	if err := s.CreateClient(ctx, c); err != nil {
		t.Fatalf("CreateClient(%q): %v", c.ID, err)
	}
}

func mustGetClient(t *testing.T, s Store, id string) *oauth.Client {
	t.Helper()
	c, err := s.GetClient(ctx, id)
	if err != nil {
		t.Fatalf("GetClient(%q): %v", id, err)
	}
	return c
}

func wantClient(t *testing.T, s Store, want *oauth.Client) {
	t.Helper()
	if d := clientDiff(mustGetClient(t, s, want.ID), want); d != "" {
		t.Fatalf("stored client %q differs: %s", want.ID, d)
	}
}

func clientIDs(list []*oauth.Client) []string {
	out := make([]string, len(list))
	for i, c := range list {
		out[i] = c.ID
	}
	return out
}

func testClientCreateGet(t *testing.T, s Store, _ *Clock) {
	want := sampleClient("client-1")
	mustCreateClient(t, s, copyClient(want))
	wantClient(t, s, want)

	public := sampleClient("public")
	public.Public, public.SecretHash, public.Source = true, "", "dynamic"
	public.ApplicationType, public.RedirectURIs = oauth.AppNative, []string{"http://127.0.0.1/cb", "com.example.app:/cb"}
	mustCreateClient(t, s, copyClient(public))
	wantClient(t, s, public)

	bare := &oauth.Client{ID: "bare"}
	mustCreateClient(t, s, copyClient(bare))
	wantClient(t, s, bare)
}

func testClientDuplicate(t *testing.T, s Store, _ *Clock) {
	first := sampleClient("dup")
	mustCreateClient(t, s, copyClient(first))
	second := sampleClient("dup")
	second.Name = "impostor"
	if err := s.CreateClient(ctx, second); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("second CreateClient: got %v, want ErrExists", err)
	}
	wantClient(t, s, first)
}

func testClientCreateInvalid(t *testing.T, s Store, _ *Clock) {
	if err := s.CreateClient(ctx, nil); err == nil {
		t.Fatal("CreateClient(nil) succeeded")
	}
	if err := s.CreateClient(ctx, &oauth.Client{Name: "no id"}); err == nil || errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateClient with an empty id: got %v, want an invalid-input error", err)
	}
	if list, err := s.ListClients(ctx, "", 0); err != nil || len(list) != 0 {
		t.Fatalf("after invalid creates, ListClients = %q, %v; want none", clientIDs(list), err)
	}
	if _, err := s.GetClient(ctx, ""); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("GetClient(\"\"): got %v, want ErrNotFound", err)
	}
}

func testClientUpdate(t *testing.T, s Store, _ *Clock) {
	want := sampleClient("upd")
	mustCreateClient(t, s, copyClient(want))
	calls := 0
	got, err := s.UpdateClient(ctx, "upd", func(c *oauth.Client) error {
		calls++
		if d := clientDiff(c, want); d != "" {
			t.Errorf("fn saw %s", d)
		}
		c.Name = "Renamed app"
		c.RedirectURIs = append(c.RedirectURIs, "https://new.example.com/cb")
		c.Public, c.SecretHash = true, ""
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateClient: %v", err)
	}
	if calls == 0 {
		t.Fatal("UpdateClient never called fn")
	}
	want.Name = "Renamed app"
	want.RedirectURIs = append(want.RedirectURIs, "https://new.example.com/cb")
	want.Public, want.SecretHash = true, ""
	if d := clientDiff(got, want); d != "" {
		t.Fatalf("UpdateClient returned %s", d)
	}
	wantClient(t, s, want)

	// The DPoP policy, kept above by an update that left it, turns off
	// and on again.
	for _, require := range []bool{false, true} {
		got, err := s.UpdateClient(ctx, "upd", func(c *oauth.Client) error {
			if d := clientDiff(c, want); d != "" {
				t.Errorf("fn saw %s", d)
			}
			c.RequireDPoP = require
			return nil
		})
		if err != nil {
			t.Fatalf("UpdateClient: %v", err)
		}
		want.RequireDPoP = require
		if d := clientDiff(got, want); d != "" {
			t.Fatalf("UpdateClient setting RequireDPoP to %v returned %s", require, d)
		}
		wantClient(t, s, want)
	}

	// So does the application type, to each value and back to none (a
	// client stored before it existed).
	for _, typ := range []string{oauth.AppNative, "", oauth.AppWeb} {
		got, err := s.UpdateClient(ctx, "upd", func(c *oauth.Client) error {
			c.ApplicationType = typ
			return nil
		})
		if err != nil {
			t.Fatalf("UpdateClient: %v", err)
		}
		want.ApplicationType = typ
		if d := clientDiff(got, want); d != "" {
			t.Fatalf("UpdateClient setting ApplicationType to %q returned %s", typ, d)
		}
		wantClient(t, s, want)
	}
}

// sampleJWKS is a JWK Set as a client or agent registers it: indented,
// its members in no canonical order, so a store that normalised the JSON
// (PostgreSQL's jsonb, a decode and re-encode) would show.
const sampleJWKS = `{"keys": [
  {"kty": "EC", "crv": "P-256", "kid": "key-1", "use": "sig", "alg": "ES256",
   "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
  {"kty":"OKP","crv":"Ed25519","kid":"key-2","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
]}`

// keyClient returns a confidential client that authenticates with keys
// (private_key_jwt) instead of a secret: with its keys, or the URL they
// are fetched from.
func keyClient(id, jwks, jwksURI string) *oauth.Client {
	c := sampleClient(id)
	c.SecretHash, c.JWKS, c.JWKSURI = "", jwks, jwksURI
	return c
}

// testClientKeys checks that a client's keys, or their URL, round-trip
// through every operation, and that moving between a secret, keys and a
// URL leaves nothing of the previous one.
func testClientKeys(t *testing.T, s Store, _ *Clock) {
	const uri = "https://app.example.com/.well-known/jwks.json?v=2"
	want := map[string]*oauth.Client{
		"keys":   keyClient("keys", sampleJWKS, ""),
		"keyuri": keyClient("keyuri", "", uri),
		"secret": sampleClient("secret"),
	}
	for _, c := range want {
		mustCreateClient(t, s, copyClient(c))
	}
	for _, c := range want {
		wantClient(t, s, c)
	}
	list, err := s.ListClients(ctx, "", 0)
	if err != nil || len(list) != len(want) {
		t.Fatalf("ListClients: %q, %v", clientIDs(list), err)
	}
	for _, c := range list {
		if d := clientDiff(c, want[c.ID]); d != "" {
			t.Fatalf("listed client %q differs: %s", c.ID, d)
		}
	}

	steps := []struct {
		id           string
		secret, jwks string
		uri          string
	}{
		{"secret", "", sampleJWKS, ""},    // a secret replaced by keys
		{"keys", "", "", uri},             // keys replaced by their URL
		{"keyuri", "", sampleJWKS, ""},    // a URL replaced by keys
		{"keys", "0a1b2c", "", ""},        // back to a secret
		{"keyuri", "", `{"keys":[]}`, ""}, // other keys
	}
	for _, step := range steps {
		got, err := s.UpdateClient(ctx, step.id, func(c *oauth.Client) error {
			if d := clientDiff(c, want[step.id]); d != "" {
				t.Errorf("fn saw %s", d)
			}
			c.SecretHash, c.JWKS, c.JWKSURI = step.secret, step.jwks, step.uri
			return nil
		})
		if err != nil {
			t.Fatalf("UpdateClient(%q): %v", step.id, err)
		}
		want[step.id].SecretHash, want[step.id].JWKS, want[step.id].JWKSURI = step.secret, step.jwks, step.uri
		if d := clientDiff(got, want[step.id]); d != "" {
			t.Fatalf("UpdateClient(%q) returned %s", step.id, d)
		}
		wantClient(t, s, want[step.id])
	}
	list, err = s.ListClients(ctx, "", 0)
	if err != nil || len(list) != len(want) {
		t.Fatalf("ListClients: %q, %v", clientIDs(list), err)
	}
	for _, c := range list {
		if d := clientDiff(c, want[c.ID]); d != "" {
			t.Fatalf("listed client %q differs after updates: %s", c.ID, d)
		}
	}
}

func testClientUpdateFnError(t *testing.T, s Store, _ *Clock) {
	want := sampleClient("fn-err")
	mustCreateClient(t, s, copyClient(want))
	got, err := s.UpdateClient(ctx, "fn-err", func(c *oauth.Client) error {
		c.Name = "must not be saved"
		c.Scopes[0] = "must not be saved"
		return errTest
	})
	if !errors.Is(err, errTest) {
		t.Fatalf("UpdateClient: got %v, want the callback's error", err)
	}
	if got != nil {
		t.Fatalf("UpdateClient returned a client with its error: %+v", got)
	}
	wantClient(t, s, want)
}

func testClientUpdateRename(t *testing.T, s Store, _ *Clock) {
	want := sampleClient("keep-id")
	mustCreateClient(t, s, copyClient(want))
	mustCreateClient(t, s, sampleClient("other-id"))
	for _, to := range []string{"other-id", "new-id", ""} {
		_, err := s.UpdateClient(ctx, "keep-id", func(c *oauth.Client) error {
			c.ID = to
			c.Name = "renamed"
			return nil
		})
		if err == nil {
			t.Fatalf("UpdateClient changing the id to %q succeeded", to)
		}
	}
	wantClient(t, s, want)
	wantClient(t, s, sampleClient("other-id"))
	if _, err := s.GetClient(ctx, "new-id"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("GetClient(new-id): got %v, want ErrNotFound", err)
	}
}

func testClientDelete(t *testing.T, s Store, _ *Clock) {
	mustCreateClient(t, s, sampleClient("gone"))
	keep := sampleClient("kept")
	mustCreateClient(t, s, copyClient(keep))
	if err := s.DeleteClient(ctx, "gone"); err != nil {
		t.Fatalf("DeleteClient: %v", err)
	}
	if _, err := s.GetClient(ctx, "gone"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("GetClient after delete: got %v, want ErrNotFound", err)
	}
	if err := s.DeleteClient(ctx, "gone"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("second DeleteClient: got %v, want ErrNotFound", err)
	}
	wantClient(t, s, keep)
	again := sampleClient("gone")
	again.Name = "reborn"
	mustCreateClient(t, s, copyClient(again))
	wantClient(t, s, again)
}

func testClientNotFound(t *testing.T, s Store, _ *Clock) {
	if c, err := s.GetClient(ctx, "missing"); !errors.Is(err, oauth.ErrNotFound) || c != nil {
		t.Fatalf("GetClient: got %v, %v; want nil, ErrNotFound", c, err)
	}
	called := false
	c, err := s.UpdateClient(ctx, "missing", func(*oauth.Client) error { called = true; return nil })
	if !errors.Is(err, oauth.ErrNotFound) || c != nil {
		t.Fatalf("UpdateClient: got %v, %v; want nil, ErrNotFound", c, err)
	}
	if called {
		t.Fatal("UpdateClient called fn for a missing client")
	}
	if err := s.DeleteClient(ctx, "missing"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("DeleteClient: got %v, want ErrNotFound", err)
	}
	if _, err := s.GetClient(ctx, "missing"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("UpdateClient on a missing id created it: %v", err)
	}
}

func testClientList(t *testing.T, s Store, clock *Clock) {
	if list, err := s.ListClients(ctx, "", 10); err != nil || len(list) != 0 {
		t.Fatalf("ListClients on an empty store: %q, %v", clientIDs(list), err)
	}
	for _, id := range listIDsShuffled {
		mustCreateClient(t, s, sampleClient(id))
	}
	// Other data must not show up among clients.
	mustCreateAgent(t, s, sampleAgent("client-zz"))
	mustCreateAgent(t, s, sampleAgent("a0"))
	mustEnsureSecret(t, s, "client", "x")
	mustCreateCode(t, s, "a00", sampleCodeGrant(clock))

	checkListing(t, "ListClients", 3, func(after string, limit int) ([]string, error) {
		list, err := s.ListClients(ctx, after, limit)
		return clientIDs(list), err
	})
	all, _ := s.ListClients(ctx, "", 0)
	for _, c := range all {
		if d := clientDiff(c, sampleClient(c.ID)); d != "" {
			t.Fatalf("listed client %q differs: %s", c.ID, d)
		}
	}
	if err := s.DeleteClient(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.ListClients(ctx, "", 2); !slices.Equal(clientIDs(list), []string{"A-upper", "a-1"}) {
		t.Fatalf("ListClients after a delete: %q", clientIDs(list))
	}
}

func testClientListDefaultLimit(t *testing.T, s Store, _ *Clock) {
	want := bulkIDs("client", 105)
	parallel(t, len(want), func(i int) error { return s.CreateClient(ctx, sampleClient(want[i])) })
	list, err := s.ListClients(ctx, "", 0)
	if err != nil {
		t.Fatalf("ListClients: %v", err)
	}
	if !slices.Equal(clientIDs(list), want[:100]) {
		t.Fatalf("ListClients with limit 0 returned %d clients, want the first 100", len(list))
	}
	rest, err := s.ListClients(ctx, list[len(list)-1].ID, -1)
	if err != nil {
		t.Fatalf("ListClients: %v", err)
	}
	if !slices.Equal(clientIDs(rest), want[100:]) {
		t.Fatalf("second page: got %q, want %q", clientIDs(rest), want[100:])
	}
}

func testClientIsolation(t *testing.T, s Store, _ *Clock) {
	want := sampleClient("iso")
	in := copyClient(want)
	mustCreateClient(t, s, in)
	in.Name = "mutated after create"
	in.RedirectURIs[0] = "https://evil.example/cb"
	in.Scopes[0] = "admin"
	in.GrantTypes[0] = "password"
	wantClient(t, s, want)

	got := mustGetClient(t, s, "iso")
	got.RedirectURIs[0] = "https://evil.example/cb"
	got.Scopes = append(got.Scopes[:1], "admin")
	wantClient(t, s, want)

	var seen *oauth.Client
	updated, err := s.UpdateClient(ctx, "iso", func(c *oauth.Client) error {
		seen = c
		c.Name = "Updated"
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateClient: %v", err)
	}
	want.Name = "Updated"
	updated.GrantTypes[0] = "password"
	seen.RedirectURIs[1] = "https://evil.example/cb"
	seen.Name = "mutated by fn"
	wantClient(t, s, want)

	list, err := s.ListClients(ctx, "", 0)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListClients: %d clients, %v", len(list), err)
	}
	list[0].Scopes[0] = "mutated after list"
	wantClient(t, s, want)
}

func testClientConcurrentCreate(t *testing.T, s Store, _ *Clock) {
	errs := race(racers, func(i int) error {
		c := sampleClient("contested")
		c.Name = fmt.Sprintf("racer-%d", i)
		return s.CreateClient(ctx, c)
	})
	won := exactlyOne(t, "CreateClient", errs, oauth.ErrExists)
	if got := mustGetClient(t, s, "contested").Name; got != fmt.Sprintf("racer-%d", won) {
		t.Fatalf("stored client is %q, but racer-%d won", got, won)
	}
}

func testClientConcurrentUpdate(t *testing.T, s Store, _ *Clock) {
	const workers, perWorker = 8, 10
	c := sampleClient("counter")
	c.RedirectURIs = nil
	mustCreateClient(t, s, c)
	parallel(t, workers, func(w int) error {
		for i := range perWorker {
			_, err := s.UpdateClient(ctx, "counter", func(c *oauth.Client) error {
				c.RedirectURIs = append(c.RedirectURIs, fmt.Sprintf("https://w%d-%d.example/cb", w, i))
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	got := mustGetClient(t, s, "counter").RedirectURIs
	slices.Sort(got)
	if len(slices.Compact(got)) != workers*perWorker {
		t.Fatalf("after %d concurrent updates the client has %d distinct redirect URIs: updates were lost", workers*perWorker, len(got))
	}
}
