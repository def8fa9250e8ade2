package storage

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

// legacyEntry is one record as the previous layout wrote it.
type legacyEntry struct {
	key string
	val []byte
	ttl time.Duration // 0: none
}

// writeLegacy writes entries with raw Badger, as the previous version did.
func writeLegacy(t *testing.T, dir string, entries []legacyEntry) {
	t.Helper()
	db, err := badger.Open(tunedBadgerOptions(dir, nil, newZapBadgerLogger(zap.NewNop())))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		for _, e := range entries {
			entry := badger.NewEntry([]byte(e.key), e.val)
			if e.ttl != 0 {
				entry = entry.WithTTL(e.ttl)
			}
			if err := txn.SetEntry(entry); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func unix(t time.Time) []byte { return strconv.AppendInt(nil, t.Unix(), 10) }

func TestBadgerMigratesPreviousLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Now().Truncate(time.Second)
	created := time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

	agent := &agents.Agent{ID: "agent-1", SecretHash: "$argon2id$x", ModelName: "m", OwnerName: "Ada", OwnerEmail: "ada@example.com",
		Permissions: []string{"data:read"}, CreatedAt: created, UpdatedAt: created, Disabled: true}
	// The previous key JSON: no active_at.
	legacyKey := map[string]any{"kid": "kid-1", "alg": "ES256", "private_pkcs8": []byte{0x30, 1, 2}, "created_at": created}
	legacyClient := map[string]any{"client_id": "app", "client_name": "App", "secret_sha256": "abc", "redirect_uris": []string{"https://app/cb"},
		"scopes": []string{"openid"}, "grant_types": []string{"authorization_code", "refresh_token"}, "source": "admin", "created_at": created}
	refreshExp := now.Add(24 * time.Hour)
	var legacyRefreshIn func(string, bool, time.Time) []byte
	legacyRefresh := func(rotated bool, exp time.Time) []byte {
		return legacyRefreshIn("fam-1", rotated, exp)
	}
	legacyRefreshIn = func(family string, rotated bool, exp time.Time) []byte {
		return mustJSON(t, map[string]any{"family": family, "client_id": "app", "agent_id": "agent-1", "scopes": []string{"openid", "data:read"},
			"resource": "https://api/", "model_name": "m", "auth_time": created.Unix(), "rotated": rotated, "expires_at": exp})
	}
	tokenExp := now.Add(10 * time.Minute)
	familyUntil := now.Add(48 * time.Hour)
	since1, since2 := now.Add(-time.Minute), now.Add(-2*time.Minute)

	writeLegacy(t, dir, []legacyEntry{
		{"agent/agent-1", mustJSON(t, agent), 0},
		{"key/kid-1", mustJSON(t, legacyKey), 0},
		{"rec/client/app", mustJSON(t, legacyClient), 0},
		{"rec/refresh/h1", legacyRefresh(true, refreshExp), 24 * time.Hour},
		{"rec/refresh/h2", legacyRefresh(false, refreshExp), 24 * time.Hour},
		{"rec/refresh/h-old", legacyRefresh(false, now.Add(-time.Hour)), time.Hour},
		{"rec/refresh/h-revoked", legacyRefreshIn("fam-9", false, refreshExp), 24 * time.Hour},
		{"rec/revoked/jti-1", unix(tokenExp), 11 * time.Minute},
		{"rec/revoked/jti-old", unix(now.Add(-time.Hour)), time.Hour},
		{"rec/revoked/jti-bad", []byte("not a number"), time.Hour},
		{"rec/revoked_family/fam-9", unix(familyUntil), 48 * time.Hour},
		{"rec/revoked_sub/agent-1", unix(since1), 2 * time.Hour},
		{"rec/revoked_sub/agent-2", unix(since2), 0},
		{"rec/pending/req-1", []byte(`{"client_id":"app"}`), 10 * time.Minute},
		{"rec/code/c-1", []byte(`{"client_id":"app"}`), time.Minute},
	})

	core, logs := observer.New(zapcore.InfoLevel)
	b, err := OpenBadger(BadgerOptions{Dir: dir, Logger: zap.New(core)})
	if err != nil {
		t.Fatalf("OpenBadger of a previous-layout database: %v", err)
	}

	// Agents and keys were already in place.
	got, err := b.GetAgent(ctx, "agent-1")
	if err != nil || got.OwnerEmail != agent.OwnerEmail || !got.CreatedAt.Equal(created) || !got.Disabled || got.RequireDPoP {
		t.Fatalf("agent after migration: %+v, %v", got, err)
	}
	set, err := b.SigningKeys(ctx)
	if err != nil || set.Version != 0 || len(set.Keys) != 1 {
		t.Fatalf("keys after migration: %+v, %v", set, err)
	}
	if k := set.Keys[0]; k.ID != "kid-1" || k.Algorithm != "ES256" || !k.ActiveAt.IsZero() || !k.RetiredAt.IsZero() || !k.CreatedAt.Equal(created) || len(k.Private) != 3 {
		t.Fatalf("key after migration: %+v", k)
	}

	c, err := b.GetClient(ctx, "app")
	if err != nil || c.Name != "App" || c.SecretHash != "abc" || c.Public || len(c.GrantTypes) != 2 || c.Source != "admin" || !c.CreatedAt.Equal(created) ||
		c.RequireDPoP {
		t.Fatalf("client after migration: %+v, %v", c, err)
	}

	for hash, rotated := range map[string]bool{"h1": true, "h2": false} {
		g, err := b.GetRefresh(ctx, hash)
		if err != nil {
			t.Fatalf("refresh token %s after migration: %v", hash, err)
		}
		if g.Family != "fam-1" || g.ClientID != "app" || g.AgentID != "agent-1" || len(g.Scopes) != 2 || !slices.Equal(g.Resources, []string{"https://api/"}) ||
			g.ModelName != "m" || !g.AuthTime.Equal(time.Unix(created.Unix(), 0)) || !g.ExpiresAt.Equal(refreshExp) || g.Rotated != rotated ||
			g.DPoPJKT != "" {
			t.Fatalf("refresh token %s after migration: %+v", hash, g)
		}
	}
	if _, err := b.GetRefresh(ctx, "h-old"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("expired refresh token after migration: %v", err)
	}
	if _, err := b.GetRefresh(ctx, "h-revoked"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("a refresh token of a family revoked before the migration: %v", err)
	}

	changes, err := b.ChangesSince(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]oauth.Change{}
	for _, ch := range changes {
		byKey[ch.Key] = ch
	}
	if len(changes) != 4 || len(byKey) != 4 {
		t.Fatalf("changes after migration: %+v", changes)
	}
	for key, want := range map[string]oauth.Change{
		"jti-1":   {Kind: oauth.ChangeTokenRevoked, Expires: tokenExp.Add(30 * time.Second)},
		"fam-9":   {Kind: oauth.ChangeFamilyRevoked, Expires: familyUntil},
		"agent-2": {Kind: oauth.ChangeAgentRevoked, Before: since2, Expires: since2.Add(366 * 24 * time.Hour)},
	} {
		ch := byKey[key]
		if ch.Kind != want.Kind || !ch.Before.Equal(want.Before) || !ch.Expires.Equal(want.Expires) {
			t.Errorf("change %s: got %+v, want %+v", key, ch, want)
		}
	}
	// agent-1's revocation expires with its Badger TTL (two hours, in
	// whole seconds).
	if ch := byKey["agent-1"]; ch.Kind != oauth.ChangeAgentRevoked || !ch.Before.Equal(since1) ||
		ch.Expires.Before(now.Add(2*time.Hour)) || ch.Expires.After(now.Add(2*time.Hour+2*time.Second)) {
		t.Errorf("change agent-1: %+v", byKey["agent-1"])
	}

	// The family index was built: revoking the family reaches both tokens.
	if err := b.RevokeFamily(ctx, "fam-1"); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"h1", "h2"} {
		if _, err := b.GetRefresh(ctx, h); !errors.Is(err, oauth.ErrNotFound) {
			t.Fatalf("refresh token %s after revoking its migrated family: %v", h, err)
		}
	}

	// Nothing is left of the previous layout, and the schema is recorded.
	err = b.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(legacyRecordPrefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			t.Errorf("left after migration: %q", it.Item().Key())
		}
		item, err := txn.Get(metaSchema)
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if string(v) != schemaVersion {
				t.Errorf("meta/schema = %q", v)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessageSnippet("dropping unreadable record").Len() != 1 {
		t.Errorf("want one warning about the unreadable record; logs: %v", logs.All())
	}
	if logs.FilterMessageSnippet("migrated database").Len() != 1 {
		t.Errorf("want one note of the migration; logs: %v", logs.All())
	}
	last := changes[len(changes)-1].Seq
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopening does not migrate again, and numbering continues.
	b = openTestBadger(t, BadgerOptions{Dir: dir})
	again, err := b.ChangesSince(ctx, 0, 0)
	if err != nil || len(again) != 4 {
		t.Fatalf("changes after reopening: %+v, %v", again, err)
	}
	seq, err := b.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "new", Expires: now.Add(time.Hour)})
	if err != nil || seq <= last {
		t.Fatalf("AppendChange after migration: %d, %v; want above %d", seq, err, last)
	}
}

// TestBadgerNewDatabaseHasSchema checks that a new database is marked with
// the current schema at once, so a later version never mistakes it for the
// previous layout.
func TestBadgerNewDatabaseHasSchema(t *testing.T) {
	b := openTestBadger(t, BadgerOptions{Dir: t.TempDir()})
	err := b.view(context.Background(), func(txn *badger.Txn) error {
		item, err := txn.Get(metaSchema)
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err == nil && string(v) != schemaVersion {
			t.Errorf("meta/schema = %q", v)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
