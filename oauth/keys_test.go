package oauth_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func jwksKids(t *testing.T, m *oauth.KeyManager) map[string]string {
	t.Helper()
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(m.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	kids := map[string]string{}
	for _, k := range set.Keys {
		if k["use"] != "sig" || k["kid"] == "" || k["d"] != "" {
			t.Fatalf("bad published key %v", k)
		}
		kids[k["kid"]] = k["alg"]
	}
	return kids
}

func TestKeyRotation(t *testing.T) {
	ctx := context.Background()
	store := storage.NewMemory(nil)
	defer store.Close()
	clk := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	const period = 24 * time.Hour

	m, err := oauth.NewKeyManager(ctx, store, oauth.KeyPolicy{Algs: []string{oauth.AlgRS256, oauth.AlgES256, oauth.AlgEdDSA}, Rotation: period}, clk.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := jwksKids(t, m)
	if len(first) != 3 {
		t.Fatalf("want one key per algorithm, got %v", first)
	}

	// A second manager on the same store (a reload) uses the same keys.
	again, err := oauth.NewKeyManager(ctx, store, oauth.KeyPolicy{Algs: []string{oauth.AlgRS256, oauth.AlgES256, oauth.AlgEdDSA}, Rotation: period}, clk.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(jwksKids(t, again)) != 3 {
		t.Fatal("a second start made new keys")
	}

	clk.t = clk.t.Add(period + time.Minute)
	if err := m.Rotate(ctx, false); err != nil {
		t.Fatal(err)
	}
	second := jwksKids(t, m)
	if len(second) != 6 {
		t.Fatalf("after one rotation both generations must be published, got %d keys", len(second))
	}
	for kid := range first {
		if _, ok := second[kid]; !ok {
			t.Fatalf("previous key %s unpublished too early", kid)
		}
	}

	clk.t = clk.t.Add(period + time.Minute)
	if err := m.Rotate(ctx, false); err != nil {
		t.Fatal(err)
	}
	third := jwksKids(t, m)
	for kid := range first {
		if _, ok := third[kid]; ok {
			t.Fatalf("key %s outlived two periods", kid)
		}
	}
	if len(third) != 6 {
		t.Fatalf("want current and previous generation, got %d keys", len(third))
	}
	stored, _ := store.SigningKeys(ctx)
	if len(stored.Keys) != 6 {
		t.Fatalf("%d keys stored, want 6", len(stored.Keys))
	}
}

func TestKeyManagerDropsUnconfiguredAlgorithms(t *testing.T) {
	ctx := context.Background()
	store := storage.NewMemory(nil)
	defer store.Close()
	clk := &clock{time.Now()}
	if _, err := oauth.NewKeyManager(ctx, store, oauth.KeyPolicy{Algs: []string{oauth.AlgRS256, oauth.AlgES256}, Rotation: time.Hour}, clk.now, nil); err != nil {
		t.Fatal(err)
	}
	m, err := oauth.NewKeyManager(ctx, store, oauth.KeyPolicy{Algs: []string{oauth.AlgRS256}, Rotation: time.Hour}, clk.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(jwksKids(t, m)); n != 2 {
		t.Fatalf("the retired ES256 key must stay published for a period: %d keys", n)
	}
	// Another process may still sign with it: it retires when it would
	// have been due (after one period), and stays published one more.
	clk.t = clk.t.Add(2*time.Hour + time.Minute)
	if err := m.Rotate(ctx, false); err != nil {
		t.Fatal(err)
	}
	for _, alg := range jwksKids(t, m) {
		if alg == oauth.AlgES256 {
			t.Fatal("unconfigured algorithm still published after its period")
		}
	}
	if _, err := oauth.NewKeyManager(ctx, store, oauth.KeyPolicy{Algs: []string{"HS256"}, Rotation: time.Hour}, nil, nil); err == nil {
		t.Fatal("HS256 accepted as a signing algorithm")
	}
}
