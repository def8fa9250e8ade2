package agents_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/storage"
)

// cheap keeps tests fast; production uses DefaultArgon2.
var cheap = agents.Argon2Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

func TestValidateID(t *testing.T) {
	for id, ok := range map[string]bool{
		"abc": true, "test_agent": true, "A-b_9": true, strings.Repeat("x", 64): true,
		"ab": false, strings.Repeat("x", 65): false, "a b c": false, "a/bc": false, "ünï": false, "": false, "abc\n": false,
	} {
		if err := agents.ValidateID(id); (err == nil) != ok {
			t.Errorf("ValidateID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestValidateSecret(t *testing.T) {
	long := "Aa1!" + strings.Repeat("qZ7-mK2_", 16)[:124]
	for s, ok := range map[string]bool{
		"Test123456!": true, "aB3$aB3$aB": true, "Kröte-Gärten42": true, long: true,
		"Ｔｅｓｔ１２３４５６！":    true, // full-width: the seed's secret once normalised
		"Test12345!"[:9]: false, long + "x": false, "test123456!": false, "TEST123456!": false,
		"TestTestTest!": false, "Test1234567": false, "Test 1234567": false, "Test123456!\x00": false, "\xff\xfeTest123456!": false,
		// What an attacker got accepted before (issue 14): spaces as the
		// symbol, zero-width and combining padding, no-break spaces, and
		// the common-password lists.
		"Aa1!      ":                               false,
		"Aa1" + strings.Repeat("\u200b", 8):        false,
		"Aa1!" + strings.Repeat("\u0301", 8):       false,
		"\u00a0\u00a0Aa1!\u00a0\u00a0\u00a0\u00a0": false,
		"Password1!":                               false, "Qwerty123!": false, "Welcome1!x": false,
		"Test123456!\u202e": false, "Test\n123456!": false,
		// Blanks that are not whitespace, separators and code points
		// nobody can see (found in review).
		"Aa1" + strings.Repeat("\u2800", 7): false,
		"Kröte-Gärten42\u3164":              false,
		"Kröte-Gärten42\uffa0":              false,
		"Kröte-Gärten42\u115f":              false,
		"Kröte-Gärten42\u2028":              false,
		"Kröte-Gärten42\u0378":              false,
		"Kröte-Gärten42\ue000":              false,
		"Kröte-Gärten42\ufe0f":              false,
	} {
		if err := agents.ValidateSecret("agent_secret", s); (err == nil) != ok {
			t.Errorf("ValidateSecret(%q) = %v, want ok=%v", s, err, ok)
		}
	}
	// Each refusal names its rule.
	for s, rule := range map[string]string{
		"Aa1!      ": "visible", "Password1!": "guess", "Aa1" + strings.Repeat("\u200b", 8): "format", "Test1234567": "symbol",
	} {
		if err := agents.ValidateSecret("agent_secret", s); err == nil || !strings.Contains(err.Error(), rule) {
			t.Errorf("ValidateSecret(%q) = %v, want the %s rule", s, err, rule)
		}
	}
}

func TestValidateEmailAndText(t *testing.T) {
	for s, ok := range map[string]bool{
		"test@example.com": true, "a.b+c@sub.example.org": true, "ops@localhost": true,
		"": false, "nope": false, "a@b": false, "Bob <bob@example.com>": false, "a@@example.com": false,
		strings.Repeat("a", 250) + "@example.com": false, " a@example.com": false,
	} {
		if err := agents.ValidateEmail(s); (err == nil) != ok {
			t.Errorf("ValidateEmail(%q) = %v, want ok=%v", s, err, ok)
		}
	}
	if agents.ValidateModelName("") == nil || agents.ValidateModelName(strings.Repeat("m", 129)) == nil || agents.ValidateModelName("   ") == nil {
		t.Error("bad model names accepted")
	}
	if agents.ValidateModelName("gpt-4") != nil || agents.ValidateModelName(strings.Repeat("é", 128)) != nil {
		t.Error("good model names refused")
	}
	if agents.ValidateOwnerName("") != nil || agents.ValidateOwnerName("x\ty") == nil {
		t.Error("owner name rules")
	}
	if agents.ValidatePermissions([]string{"a", "a"}) == nil || agents.ValidatePermissions([]string{"a b"}) == nil || agents.ValidatePermissions([]string{"data:read"}) != nil {
		t.Error("permission rules")
	}
}

func TestHasher(t *testing.T) {
	h := agents.NewHasher(cheap, 1)
	ctx := context.Background()
	enc, err := h.Hash(ctx, "Test123456!")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("encoding %q", enc)
	}
	if ok, err := h.Verify(ctx, "Test123456!", enc); !ok || err != nil {
		t.Fatalf("verify: %v %v", ok, err)
	}
	if ok, _ := h.Verify(ctx, "Test123456?", enc); ok {
		t.Fatal("wrong secret verified")
	}
	// Parameters come from the hash: a hasher with other costs still verifies.
	if ok, _ := agents.NewHasher(agents.DefaultArgon2, 1).Verify(ctx, "Test123456!", enc); !ok {
		t.Fatal("hash made with other parameters did not verify")
	}
	other, _ := h.Hash(ctx, "Test123456!")
	if other == enc {
		t.Fatal("salt is not random")
	}
	for _, bad := range []string{"", "plain", "$argon2i$v=19$m=64,t=1,p=1$c2FsdA$a2V5a2V5a2V5a2V5a2V5", "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=64,t=1,p=1$!!$a2V5", "$argon2id$v=18$m=64,t=1,p=1$c2FsdA$a2V5a2V5a2V5a2V5a2V5"} {
		if _, err := h.Verify(ctx, "x", bad); err == nil {
			t.Errorf("malformed hash %q accepted", bad)
		}
	}
}

func TestHasherBoundsConcurrency(t *testing.T) {
	h := agents.NewHasher(agents.Argon2Params{Memory: 8 * 1024, Iterations: 3, Parallelism: 1, SaltLength: 16, KeyLength: 32}, 1)
	// With the only slot busy, a request whose context ends gives up instead
	// of queuing forever.
	var wg sync.WaitGroup
	wg.Add(1)
	started := make(chan struct{})
	go func() {
		defer wg.Done()
		close(started)
		for range 20 {
			_, _ = h.Hash(context.Background(), "x")
		}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	var gaveUp bool
	for range 50 {
		if _, err := h.Hash(ctx, "y"); errors.Is(err, context.DeadlineExceeded) {
			gaveUp = true
			break
		}
	}
	wg.Wait()
	if !gaveUp {
		t.Fatal("a waiting hash never observed its context ending")
	}
}

func newService(t *testing.T, cfg agents.Config) (*agents.Service, *storage.Memory) {
	t.Helper()
	repo := storage.NewMemory(nil)
	t.Cleanup(func() { repo.Close() })
	return agents.NewService(repo, agents.NewHasher(cheap, 2), cfg, nil), repo
}

func TestServiceRegisterAndAuthenticate(t *testing.T) {
	ctx := context.Background()
	svc, repo := newService(t, agents.Config{DefaultPermissions: []string{"data:read"}, Permissions: map[string][]string{"ops": {"data:write"}}})
	a, gen, err := svc.Register(ctx, agents.Registration{AgentID: "bot-1", AgentSecret: "Test123456!", ModelName: "m", OwnerEmail: "o@example.com"}, false)
	if err != nil || gen != "" || a.ID != "bot-1" || strings.Join(a.Permissions, ",") != "data:read" {
		t.Fatalf("register: %+v %q %v", a, gen, err)
	}
	stored, _ := repo.GetAgent(ctx, "bot-1")
	if !strings.HasPrefix(stored.SecretHash, "$argon2id$") || strings.Contains(stored.SecretHash, "Test123456!") {
		t.Fatalf("stored hash %q", stored.SecretHash)
	}
	if _, _, err := svc.Register(ctx, agents.Registration{AgentID: "bot-1", AgentSecret: "Test123456!", ModelName: "m", OwnerEmail: "o@example.com"}, false); !errors.Is(err, agents.ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	var ve *agents.ValidationError
	if _, _, err := svc.Register(ctx, agents.Registration{AgentID: "bot-2", AgentSecret: "weak", ModelName: "m", OwnerEmail: "o@example.com"}, false); !errors.As(err, &ve) || ve.Field != "agent_secret" {
		t.Fatalf("weak secret: %v", err)
	}
	if _, _, err := svc.Register(ctx, agents.Registration{AgentID: "ops", ModelName: "m", OwnerEmail: "o@example.com"}, false); !errors.Is(err, agents.ErrReserved) {
		t.Fatalf("a configured id was registered by an untrusted caller: %v", err)
	}
	ops, gen, err := svc.Register(ctx, agents.Registration{AgentID: "ops", ModelName: "m", OwnerEmail: "o@example.com"}, true)
	if err != nil || gen == "" || strings.Join(ops.Permissions, ",") != "data:write" {
		t.Fatalf("generated: %+v %q %v", ops, gen, err)
	}
	if _, err := svc.Authenticate(ctx, "ops", gen); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ id, secret string }{{"bot-1", "Wrong123456!"}, {"nobody", "Test123456!"}, {"", ""}} {
		if _, err := svc.Authenticate(ctx, tc.id, tc.secret); !errors.Is(err, agents.ErrInvalidCredentials) {
			t.Errorf("Authenticate(%q): %v", tc.id, err)
		}
	}
	// Twice: the second call is served by the verification cache; both must
	// refuse once the agent is disabled.
	for range 2 {
		if _, err := svc.Authenticate(ctx, "bot-1", "Test123456!"); err != nil {
			t.Fatal(err)
		}
	}
	disabled := true
	if _, err := svc.AdminUpdate(ctx, "bot-1", agents.AdminUpdate{Disabled: &disabled}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, "bot-1", "Test123456!"); !errors.Is(err, agents.ErrInvalidCredentials) {
		t.Fatalf("disabled agent authenticated: %v", err)
	}
	perms := []string{"x"}
	if _, err := svc.AdminUpdate(ctx, "ops", agents.AdminUpdate{Permissions: &perms}); !errors.Is(err, agents.ErrPermissionsFixed) {
		t.Fatalf("fixed permissions changed: %v", err)
	}
}

func TestServiceSecretChange(t *testing.T) {
	ctx := context.Background()
	svc, _ := newService(t, agents.Config{})
	if _, _, err := svc.Register(ctx, agents.Registration{AgentID: "bot-1", AgentSecret: "Test123456!", ModelName: "m", OwnerEmail: "o@example.com"}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, "bot-1", "Test123456!"); err != nil { // now cached
		t.Fatal(err)
	}
	newSecret := "Newer123456!"
	if _, err := svc.UpdateProfile(ctx, "bot-1", agents.ProfileUpdate{NewSecret: &newSecret, CurrentSecret: "Wrong123456!"}); !errors.Is(err, agents.ErrInvalidCredentials) {
		t.Fatalf("wrong current secret: %v", err)
	}
	if _, err := svc.UpdateProfile(ctx, "bot-1", agents.ProfileUpdate{NewSecret: &newSecret, CurrentSecret: "Test123456!"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, "bot-1", "Test123456!"); !errors.Is(err, agents.ErrInvalidCredentials) {
		t.Fatalf("old secret still accepted (stale cache?): %v", err)
	}
	if _, err := svc.Authenticate(ctx, "bot-1", newSecret); err != nil {
		t.Fatal(err)
	}
}

func TestGenerateSecret(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		s, err := agents.GenerateSecret()
		if err != nil || agents.ValidateSecret("s", s) != nil || len(s) != 43 || seen[s] {
			t.Fatalf("GenerateSecret() = %q, %v", s, err)
		}
		seen[s] = true
	}
}

func FuzzValidateSecret(f *testing.F) {
	for _, s := range []string{"Test123456!", "Aa1!      ", "Password1!", "Ｔｅｓｔ１２３４５６！", "Aa1\u200b\u200b\u200b\u200b\u200b\u200b\u200b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 1024 {
			return
		}
		if agents.ValidateSecret("agent_secret", s) != nil {
			return
		}
		n := agents.NormalizeSecret(s)
		if agents.NormalizeSecret(n) != n {
			t.Fatalf("normalising %q twice changes it", s)
		}
		if agents.ValidateSecret("agent_secret", n) != nil {
			t.Fatalf("%q is accepted but its normal form is not", s)
		}
	})
}
