package storage

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage/storagetest"
)

func newTestMemory(t *testing.T, now func() time.Time) storagetest.Store {
	m := NewMemory(now)
	t.Cleanup(func() { m.Close() })
	return m
}

func TestMemoryConformance(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, newTestMemory)
}

func TestMemorySweepDropsExpired(t *testing.T) {
	ctx := context.Background()
	clock := storagetest.NewClock()
	m := NewMemory(clock.Now)
	defer m.Close()
	now := clock.Now()
	short, long := now.Add(time.Second), now.Add(time.Hour)
	for _, id := range []string{"a", "b"} {
		if err := m.CreateAuthRequest(ctx, &oauth.AuthRequest{ID: id, ExpiresAt: short}); err != nil {
			t.Fatal(err)
		}
		if err := m.CreateCode(ctx, id, &oauth.CodeGrant{ExpiresAt: short}); err != nil {
			t.Fatal(err)
		}
		if err := m.CreateRefresh(ctx, id, &oauth.RefreshGrant{Family: "f-" + id, ExpiresAt: short}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: id, Expires: short}); err != nil {
			t.Fatal(err)
		}
		if err := m.UseOnce(ctx, id, short); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.CreateAuthRequest(ctx, &oauth.AuthRequest{ID: "kept", ExpiresAt: long}); err != nil {
		t.Fatal(err)
	}
	if err := m.CreateRefresh(ctx, "kept", &oauth.RefreshGrant{Family: "f-kept", ExpiresAt: long}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "kept", Expires: long}); err != nil {
		t.Fatal(err)
	}
	if err := m.UseOnce(ctx, "kept", long); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	// Call the sweep directly rather than waiting a minute for the ticker.
	m.dropExpired()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.requests) != 1 || len(m.codes) != 0 || len(m.refresh) != 1 || len(m.families) != 1 || len(m.changes) != 1 || len(m.usedOnce) != 1 {
		t.Fatalf("after the sweep %d requests, %d codes, %d refresh tokens in %d families, %d changes and %d use-once keys are held, want 1, 0, 1, 1, 1, 1",
			len(m.requests), len(m.codes), len(m.refresh), len(m.families), len(m.changes), len(m.usedOnce))
	}
	if m.lastSeq != 3 {
		t.Fatalf("the sweep reset the change sequence to %d", m.lastSeq)
	}
}

func TestMemoryCloseTwice(t *testing.T) {
	m := NewMemory(nil)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.done:
	default:
		t.Fatal("sweep goroutine still running after Close")
	}
	// The store stays usable without its sweep.
	if err := m.CreateAgent(context.Background(), &agents.Agent{ID: "after-close"}); err != nil {
		t.Fatalf("CreateAgent after Close: %v", err)
	}
}

func TestMemoryHonoursContext(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.CreateAgent(ctx, &agents.Agent{ID: "late"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateAgent with a cancelled context: %v", err)
	}
	if _, err := m.GetAgent(context.Background(), "late"); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("a cancelled CreateAgent wrote: %v", err)
	}
	if _, err := m.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "k", Expires: time.Now().Add(time.Hour)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendChange with a cancelled context: %v", err)
	}
	if _, err := m.ChangesSince(ctx, 0, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("ChangesSince with a cancelled context: %v", err)
	}
	if list, _ := m.ChangesSince(context.Background(), 0, 0); len(list) != 0 {
		t.Fatalf("a cancelled AppendChange wrote: %v", list)
	}
	if err := m.UseOnce(ctx, "k", time.Now().Add(time.Hour)); !errors.Is(err, context.Canceled) {
		t.Fatalf("UseOnce with a cancelled context: %v", err)
	}
	if err := m.UseOnce(context.Background(), "k", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("a cancelled UseOnce recorded its key: %v", err)
	}
}

func TestMemoryNotShared(t *testing.T) {
	m := NewMemory(nil)
	defer m.Close()
	if m.Shared() {
		t.Fatal("Memory reports being shared between processes")
	}
}

// TestInvalidInputIsMarked checks that both backends wrap ErrInvalidInput
// in what they refuse, which the suite (knowing no backend) cannot check.
func TestInvalidInputIsMarked(t *testing.T) {
	t.Parallel()
	for name, s := range map[string]Backend{
		"Memory": NewMemory(nil),
		"Badger": openTestBadger(t, BadgerOptions{Dir: t.TempDir()}),
	} {
		ctx := context.Background()
		exp := time.Now().Add(time.Hour)
		g := &oauth.RefreshGrant{Family: "f", ExpiresAt: exp}
		for what, err := range map[string]error{
			"nil agent":        s.CreateAgent(ctx, nil),
			"empty agent id":   s.CreateAgent(ctx, &agents.Agent{}),
			"non-UTF-8 id":     s.CreateAgent(ctx, &agents.Agent{ID: "a\xff"}),
			"nil client":       s.CreateClient(ctx, nil),
			"empty client id":  s.CreateClient(ctx, &oauth.Client{}),
			"empty secret":     func() error { _, err := s.EnsureSecret(ctx, "", []byte("x")); return err }(),
			"nil candidate":    func() error { _, err := s.EnsureSecret(ctx, "n", nil); return err }(),
			"empty kid":        func() error { _, err := s.SwapSigningKeys(ctx, 0, []oauth.StoredKey{{}}); return err }(),
			"nil request":      s.CreateAuthRequest(ctx, nil),
			"request expiry":   s.CreateAuthRequest(ctx, &oauth.AuthRequest{ID: "r"}),
			"empty code hash":  s.CreateCode(ctx, "", &oauth.CodeGrant{ExpiresAt: exp}),
			"nil redeem":       func() error { _, err := s.RedeemCode(ctx, "c", nil); return err }(),
			"empty refresh":    s.CreateRefresh(ctx, "", g),
			"family with /":    s.CreateRefresh(ctx, "h", &oauth.RefreshGrant{Family: "a/b", ExpiresAt: exp}),
			"rotate to itself": s.RotateRefresh(ctx, "h", "h", g),
			"change kind":      func() error { _, err := s.AppendChange(ctx, oauth.Change{Key: "k", Expires: exp}); return err }(),
			"empty once key":   s.UseOnce(ctx, "", exp),
			"once expiry":      s.UseOnce(ctx, "k", time.Time{}),
			"agent rename": func() error {
				if err := s.CreateAgent(ctx, &agents.Agent{ID: "x"}); err != nil {
					return err
				}
				_, err := s.UpdateAgent(ctx, "x", func(a *agents.Agent) error { a.ID = "y"; return nil })
				return err
			}(),
		} {
			if !errors.Is(err, ErrInvalidInput) {
				t.Errorf("%s, %s: got %v, want ErrInvalidInput", name, what, err)
			}
		}
		if m, ok := s.(*Memory); ok {
			m.Close()
		}
	}
}
