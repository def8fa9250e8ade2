package storage

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

func benchAgent(id string) *agents.Agent {
	now := time.Now()
	return &agents.Agent{
		ID:          id,
		SecretHash:  "$argon2id$v=19$m=65536,t=3,p=2$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA",
		ModelName:   "gpt-bench",
		OwnerName:   "Bench Owner",
		OwnerEmail:  "bench@example.com",
		Permissions: []string{"data:read", "data:write"},
		CreatedAt:   now,
		UpdatedAt:   now,
	}
}

// BenchmarkBadgerCreateAgent measures one synced write from one goroutine:
// the latency a registration pays.
func BenchmarkBadgerCreateAgent(b *testing.B) {
	s := openTestBadger(b, BadgerOptions{Dir: b.TempDir()})
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.CreateAgent(ctx, benchAgent(fmt.Sprintf("bench-%08d", i))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBadgerCreateAgentParallel shows the throughput when concurrent
// writers share fsyncs (Badger's group commit).
func BenchmarkBadgerCreateAgentParallel(b *testing.B) {
	s := openTestBadger(b, BadgerOptions{Dir: b.TempDir()})
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.CreateAgent(ctx, benchAgent(fmt.Sprintf("bench-%08d", next.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkBadgerGetAgent measures a read, the guard's and token endpoint's
// common case.
func BenchmarkBadgerGetAgent(b *testing.B) {
	s := openTestBadger(b, BadgerOptions{Dir: b.TempDir()})
	ctx := context.Background()
	const n = 1000
	err := s.db.Update(func(txn *badger.Txn) error {
		for i := range n {
			id := fmt.Sprintf("bench-%08d", i)
			if err := writeJSON(txn, agentKey(id), toAgentRecord(benchAgent(id)), 0, "agent"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.GetAgent(ctx, fmt.Sprintf("bench-%08d", i%n)); err != nil {
			b.Fatal(err)
		}
	}
}

func benchCodeGrant() *oauth.CodeGrant {
	now := time.Now()
	return &oauth.CodeGrant{
		ClientID:      "bench-client",
		RedirectURI:   "https://app.example.com/callback",
		Scopes:        []string{"openid", "profile", "data:read"},
		Nonce:         "n-0S6_WzA2Mj",
		CodeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
		AgentID:       "bench-agent",
		ModelName:     "gpt-bench",
		AuthTime:      now,
		ExpiresAt:     now.Add(time.Minute),
	}
}

// BenchmarkBadgerRedeemCode measures an authorization code's life: storing
// it when the agent approves, then redeeming it at the token endpoint, two
// synced transactions.
func BenchmarkBadgerRedeemCode(b *testing.B) {
	s := openTestBadger(b, BadgerOptions{Dir: b.TempDir()})
	ctx := context.Background()
	red := oauth.Redemption{AccessTokenID: "fam.at", AccessTokenExpires: time.Now().Add(time.Hour), Family: "fam"}
	redeem := func(*oauth.CodeGrant) (oauth.Redemption, error) { return red, nil }
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		hash := fmt.Sprintf("code-%08d", i)
		if err := s.CreateCode(ctx, hash, benchCodeGrant()); err != nil {
			b.Fatal(err)
		}
		if _, err := s.RedeemCode(ctx, hash, redeem); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBadgerRotateRefresh measures a refresh grant: one synced
// transaction that marks the presented token rotated and stores its
// successor with its family index entry.
func BenchmarkBadgerRotateRefresh(b *testing.B) {
	s := openTestBadger(b, BadgerOptions{Dir: b.TempDir()})
	ctx := context.Background()
	g := &oauth.RefreshGrant{
		Family:    "bench-family",
		ClientID:  "bench-client",
		AgentID:   "bench-agent",
		Scopes:    []string{"openid", "data:read"},
		ModelName: "gpt-bench",
		AuthTime:  time.Now(),
		ExpiresAt: time.Now().Add(24 * time.Hour),
	}
	if err := s.CreateRefresh(ctx, "rt-00000000", g); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.RotateRefresh(ctx, fmt.Sprintf("rt-%08d", i), fmt.Sprintf("rt-%08d", i+1), g); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBadgerAppendChange measures a revocation's entry in the change
// log, which is appended under one mutex and so never shares an fsync.
func BenchmarkBadgerAppendChange(b *testing.B) {
	s := openTestBadger(b, BadgerOptions{Dir: b.TempDir()})
	ctx := context.Background()
	c := oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "bench-family.access-token-id", Expires: time.Now().Add(time.Hour)}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.AppendChange(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}
