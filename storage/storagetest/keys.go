package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/oauth"
)

// RunKeys checks oauth.KeyStore.
func RunKeys(t *testing.T, newStore NewStore) {
	runCases(t, newStore, []testCase{
		{"Empty", testKeysEmpty},
		{"SwapRoundTrip", testKeysSwap},
		{"SwapReplacesSet", testKeysReplace},
		{"Stale", testKeysStale},
		{"Invalid", testKeysInvalid},
		{"CopyIsolation", testKeysIsolation},
		{"ConcurrentSwap", testKeysConcurrentSwap},
	})
}

// RunSecrets checks oauth.SecretStore.
func RunSecrets(t *testing.T, newStore NewStore) {
	runCases(t, newStore, []testCase{
		{"Ensure", testSecretEnsure},
		{"Invalid", testSecretInvalid},
		{"CopyIsolation", testSecretIsolation},
		{"Concurrent", testSecretConcurrent},
	})
}

// sampleKey returns a key with every field set except RetiredAt.
func sampleKey(id string, b byte) oauth.StoredKey {
	created := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	return oauth.StoredKey{
		ID:        id,
		Algorithm: "RS256",
		Private:   []byte{0x30, 0x82, b, 0x00, 0xff},
		CreatedAt: created,
		ActiveAt:  created.Add(10 * time.Minute),
	}
}

func keyDiff(got, want oauth.StoredKey) string {
	var d diff
	d.str("ID", got.ID, want.ID)
	d.str("Algorithm", got.Algorithm, want.Algorithm)
	d.check("Private", bytes.Equal(got.Private, want.Private), got.Private, want.Private)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.time("ActiveAt", got.ActiveAt, want.ActiveAt)
	d.time("RetiredAt", got.RetiredAt, want.RetiredAt)
	return d.String()
}

// wantKeys checks the stored set: its version and keys, in any order.
func wantKeys(t *testing.T, s Store, version uint64, want ...oauth.StoredKey) {
	t.Helper()
	set, err := s.SigningKeys(ctx)
	if err != nil {
		t.Fatalf("SigningKeys: %v", err)
	}
	if set.Version != version {
		t.Fatalf("key set version %d, want %d", set.Version, version)
	}
	if len(set.Keys) != len(want) {
		t.Fatalf("SigningKeys returned %d keys, want %d: %+v", len(set.Keys), len(want), set.Keys)
	}
	byID := map[string]oauth.StoredKey{}
	for _, k := range set.Keys {
		byID[k.ID] = k
	}
	for _, w := range want {
		g, ok := byID[w.ID]
		if !ok {
			t.Fatalf("key %q missing from %+v", w.ID, set.Keys)
		}
		if d := keyDiff(g, w); d != "" {
			t.Fatalf("key %q: %s", w.ID, d)
		}
	}
}

func mustSwap(t *testing.T, s Store, version uint64, keys ...oauth.StoredKey) uint64 {
	t.Helper()
	v, err := s.SwapSigningKeys(ctx, version, keys)
	if err != nil {
		t.Fatalf("SwapSigningKeys(%d): %v", version, err)
	}
	if v <= version {
		t.Fatalf("SwapSigningKeys(%d) returned version %d, want a higher one", version, v)
	}
	return v
}

func testKeysEmpty(t *testing.T, s Store, _ *Clock) {
	set, err := s.SigningKeys(ctx)
	if err != nil {
		t.Fatalf("SigningKeys: %v", err)
	}
	if set.Version != 0 || len(set.Keys) != 0 {
		t.Fatalf("empty store has key set %+v, want version 0 and no keys", set)
	}
}

func testKeysSwap(t *testing.T, s Store, _ *Clock) {
	k1, k2 := sampleKey("kid-1", 1), sampleKey("kid-2", 2)
	k1.RetiredAt = time.Date(2025, 2, 1, 0, 0, 0, 0, time.FixedZone("Z", 3600))
	k2.Algorithm = "ES256"
	// A key written before ActiveAt existed has none, and keeps none.
	k3 := sampleKey("kid-3", 3)
	k3.ActiveAt = time.Time{}
	v := mustSwap(t, s, 0, k1, k2, k3)
	wantKeys(t, s, v, k1, k2, k3)
	set, _ := s.SigningKeys(ctx)
	for _, k := range set.Keys {
		if k.ID == "kid-3" && !k.ActiveAt.IsZero() {
			t.Fatalf("zero ActiveAt came back as %v", k.ActiveAt)
		}
		if k.ID != "kid-1" && !k.RetiredAt.IsZero() {
			t.Fatalf("zero RetiredAt of %s came back as %v", k.ID, k.RetiredAt)
		}
	}
}

func testKeysReplace(t *testing.T, s Store, _ *Clock) {
	k1, k2, k3 := sampleKey("kid-1", 1), sampleKey("kid-2", 2), sampleKey("kid-3", 3)
	v1 := mustSwap(t, s, 0, k1, k2)
	// Retire kid-2, drop kid-1, add kid-3.
	k2.RetiredAt = time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)
	v2 := mustSwap(t, s, v1, k2, k3)
	wantKeys(t, s, v2, k2, k3)
	// An empty set is a set too.
	v3 := mustSwap(t, s, v2)
	wantKeys(t, s, v3)
	v4 := mustSwap(t, s, v3, k1)
	wantKeys(t, s, v4, k1)
	if !(v1 < v2 && v2 < v3 && v3 < v4) {
		t.Fatalf("versions %d, %d, %d, %d do not increase", v1, v2, v3, v4)
	}
}

func testKeysStale(t *testing.T, s Store, _ *Clock) {
	k1 := sampleKey("kid-1", 1)
	v := mustSwap(t, s, 0, k1)
	for _, stale := range []uint64{0, v + 1, v + 100} {
		if _, err := s.SwapSigningKeys(ctx, stale, []oauth.StoredKey{sampleKey("intruder", 9)}); !errors.Is(err, oauth.ErrStale) {
			t.Fatalf("SwapSigningKeys(%d) with stored version %d: got %v, want ErrStale", stale, v, err)
		}
		wantKeys(t, s, v, k1)
	}
}

func testKeysInvalid(t *testing.T, s Store, _ *Clock) {
	k1 := sampleKey("kid-1", 1)
	v := mustSwap(t, s, 0, k1)
	for name, keys := range map[string][]oauth.StoredKey{
		"empty kid":     {sampleKey("", 2)},
		"duplicate kid": {sampleKey("kid-2", 2), sampleKey("kid-2", 3)},
	} {
		_, err := s.SwapSigningKeys(ctx, v, keys)
		if err == nil || errors.Is(err, oauth.ErrStale) {
			t.Fatalf("SwapSigningKeys with %s: got %v, want an invalid-input error", name, err)
		}
		wantKeys(t, s, v, k1)
	}
}

func testKeysIsolation(t *testing.T, s Store, _ *Clock) {
	want := sampleKey("kid", 7)
	in := []oauth.StoredKey{want}
	in[0].Private = bytes.Clone(want.Private)
	v := mustSwap(t, s, 0, in...)
	in[0].Private[0] = 0xee
	in[0].ID = "renamed"
	wantKeys(t, s, v, want)

	set, err := s.SigningKeys(ctx)
	if err != nil || len(set.Keys) != 1 {
		t.Fatalf("SigningKeys: %+v, %v", set, err)
	}
	set.Keys[0].Private[0] = 0xdd
	set.Keys[0].Algorithm = "none"
	wantKeys(t, s, v, want)
}

func testKeysConcurrentSwap(t *testing.T, s Store, _ *Clock) {
	var version uint64
	for round := range 4 {
		errs := race(racers, func(i int) error {
			k := sampleKey(fmt.Sprintf("round-%d-racer-%d", round, i), byte(i))
			_, err := s.SwapSigningKeys(ctx, version, []oauth.StoredKey{k})
			return err
		})
		won := exactlyOne(t, "SwapSigningKeys", errs, oauth.ErrStale)
		set, err := s.SigningKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if set.Version <= version {
			t.Fatalf("round %d: version went from %d to %d", round, version, set.Version)
		}
		version = set.Version
		wantKeys(t, s, version, sampleKey(fmt.Sprintf("round-%d-racer-%d", round, won), byte(won)))
	}
}

func mustEnsureSecret(t *testing.T, s Store, name, candidate string) string {
	t.Helper()
	v, err := s.EnsureSecret(ctx, name, []byte(candidate))
	if err != nil {
		t.Fatalf("EnsureSecret(%q): %v", name, err)
	}
	return string(v)
}

func testSecretEnsure(t *testing.T, s Store, _ *Clock) {
	if got := mustEnsureSecret(t, s, "code-key", "first"); got != "first" {
		t.Fatalf("first EnsureSecret returned %q, want the candidate", got)
	}
	if got := mustEnsureSecret(t, s, "code-key", "second"); got != "first" {
		t.Fatalf("second EnsureSecret returned %q, want the stored %q", got, "first")
	}
	if got := mustEnsureSecret(t, s, "other-key", "other"); got != "other" {
		t.Fatalf("EnsureSecret of another name returned %q", got)
	}
	bin := []byte{0, 1, 0xff, '/', 0}
	got, err := s.EnsureSecret(ctx, "binary", bin)
	if err != nil || !bytes.Equal(got, bin) {
		t.Fatalf("EnsureSecret of binary: %x, %v", got, err)
	}
	if got := mustEnsureSecret(t, s, "code-key", "third"); got != "first" {
		t.Fatalf("EnsureSecret after other names returned %q", got)
	}
}

func testSecretInvalid(t *testing.T, s Store, _ *Clock) {
	if _, err := s.EnsureSecret(ctx, "", []byte("x")); err == nil {
		t.Fatal("EnsureSecret with an empty name succeeded")
	}
	for _, candidate := range [][]byte{nil, {}} {
		if _, err := s.EnsureSecret(ctx, "empty", candidate); err == nil {
			t.Fatalf("EnsureSecret with candidate %q succeeded", candidate)
		}
	}
	// Nothing was stored by the failed calls.
	if got := mustEnsureSecret(t, s, "empty", "real"); got != "real" {
		t.Fatalf("EnsureSecret after failed calls returned %q", got)
	}
}

func testSecretIsolation(t *testing.T, s Store, _ *Clock) {
	in := []byte("secret-value")
	got, err := s.EnsureSecret(ctx, "iso", in)
	if err != nil {
		t.Fatal(err)
	}
	in[0] = 'X'
	got[1] = 'Y'
	if got := mustEnsureSecret(t, s, "iso", "other"); got != "secret-value" {
		t.Fatalf("stored secret changed through a caller's slice: %q", got)
	}
	got, _ = s.EnsureSecret(ctx, "iso", []byte("other"))
	got[0] = 'Z'
	if got := mustEnsureSecret(t, s, "iso", "other"); got != "secret-value" {
		t.Fatalf("stored secret changed through a returned slice: %q", got)
	}
}

func testSecretConcurrent(t *testing.T, s Store, _ *Clock) {
	got := make([]string, racers)
	errs := race(racers, func(i int) error {
		v, err := s.EnsureSecret(ctx, "contested", fmt.Appendf(nil, "candidate-%d", i))
		got[i] = string(v)
		return err
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != got[0] {
			t.Fatalf("racer %d got %q, racer 0 got %q: concurrent EnsureSecret returned different values", i, v, got[0])
		}
	}
	var candidates []string
	for i := range racers {
		candidates = append(candidates, fmt.Sprintf("candidate-%d", i))
	}
	if !slices.Contains(candidates, got[0]) {
		t.Fatalf("EnsureSecret returned %q, which no racer offered", got[0])
	}
	if v := mustEnsureSecret(t, s, "contested", "late"); v != got[0] {
		t.Fatalf("later EnsureSecret returned %q, want %q", v, got[0])
	}
}
