package storage

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/internal/pgtest"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage/storagetest"
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

// The operations below run on each backend: BenchmarkBadger* on a
// Badger directory, BenchmarkPostgres/* on a PostgreSQL server started for
// the run with fsync on (as a production server runs), so the two compare.
var benchOps = []struct {
	name string
	fn   func(b *testing.B, s storagetest.Store)
}{
	{"CreateAgent", benchCreateAgent},
	{"CreateAgentParallel", benchCreateAgentParallel},
	{"GetAgent", benchGetAgent},
	{"RedeemCode", benchRedeemCode},
	{"RotateRefresh", benchRotateRefresh},
	{"UseOnceParallel", benchUseOnceParallel},
	{"AppendChange", benchAppendChange},
	{"ChangesSince", benchChangesSince},
}

func BenchmarkBadgerCreateAgent(b *testing.B) { benchCreateAgent(b, benchBadger(b)) }
func BenchmarkBadgerCreateAgentParallel(b *testing.B) {
	benchCreateAgentParallel(b, benchBadger(b))
}
func BenchmarkBadgerGetAgent(b *testing.B)      { benchGetAgent(b, benchBadger(b)) }
func BenchmarkBadgerRedeemCode(b *testing.B)    { benchRedeemCode(b, benchBadger(b)) }
func BenchmarkBadgerRotateRefresh(b *testing.B) { benchRotateRefresh(b, benchBadger(b)) }
func BenchmarkBadgerUseOnceParallel(b *testing.B) {
	benchUseOnceParallel(b, benchBadger(b))
}
func BenchmarkBadgerAppendChange(b *testing.B) { benchAppendChange(b, benchBadger(b)) }
func BenchmarkBadgerChangesSince(b *testing.B) { benchChangesSince(b, benchBadger(b)) }

func benchBadger(b *testing.B) *Badger { return openTestBadger(b, BadgerOptions{Dir: b.TempDir()}) }

// BenchmarkPostgres runs every operation on one PostgreSQL server.
func BenchmarkPostgres(b *testing.B) {
	srv := pgtest.StartDurable(b)
	var dbs atomic.Int64
	for _, op := range benchOps {
		b.Run(op.name, func(b *testing.B) {
			// A new database for every round the benchmark is run.
			db := fmt.Sprintf("bench%d", dbs.Add(1))
			srv.CreateDatabase(b, db)
			p, err := OpenPostgres(PostgresOptions{DSN: srv.DSN(db), MaxConns: 16})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			op.fn(b, p)
		})
	}
}

// benchCreateAgent measures one durable write from one goroutine: the
// latency a registration pays.
func benchCreateAgent(b *testing.B, s storagetest.Store) {
	ctx := context.Background()
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := s.CreateAgent(ctx, benchAgent(fmt.Sprintf("bench-%08d", next.Add(1)))); err != nil {
			b.Fatal(err)
		}
	}
}

// benchCreateAgentParallel shows the throughput when concurrent writers
// share fsyncs (group commit).
func benchCreateAgentParallel(b *testing.B, s storagetest.Store) {
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.CreateAgent(ctx, benchAgent(fmt.Sprintf("bench-p-%08d", next.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchGetAgent measures a read, the token endpoint's common case.
func benchGetAgent(b *testing.B, s storagetest.Store) {
	ctx := context.Background()
	const n = 200
	for i := range n {
		if err := s.CreateAgent(ctx, benchAgent(fmt.Sprintf("bench-%08d", i))); err != nil {
			b.Fatal(err)
		}
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

// benchRedeemCode measures an authorization code's life: storing it when
// the agent approves, then redeeming it at the token endpoint, two durable
// transactions.
func benchRedeemCode(b *testing.B, s storagetest.Store) {
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

// benchRotateRefresh measures a refresh grant: one durable transaction
// that marks the presented token rotated and stores its successor.
func benchRotateRefresh(b *testing.B, s storagetest.Store) {
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

// benchUseOnceParallel measures recording the jtis of DPoP proofs and
// client assertions, one durable write per request, from concurrent
// requests that share fsyncs.
func benchUseOnceParallel(b *testing.B, s storagetest.Store) {
	ctx := context.Background()
	until := time.Now().Add(5 * time.Minute)
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := fmt.Sprintf("dpop:%064x", next.Add(1))
			if err := s.UseOnce(ctx, key, until); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchAppendChange measures a revocation's entry in the change log, which
// is appended in sequence order and so never shares a commit.
func benchAppendChange(b *testing.B, s storagetest.Store) {
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

// benchChangesSince measures the poll every process makes each second when
// nothing changed: the read of an empty tail of the log.
func benchChangesSince(b *testing.B, s storagetest.Store) {
	ctx := context.Background()
	var last uint64
	for range 100 {
		seq, err := s.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "k", Expires: time.Now().Add(time.Hour)})
		if err != nil {
			b.Fatal(err)
		}
		last = seq
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.ChangesSince(ctx, last, 1000); err != nil {
			b.Fatal(err)
		}
	}
}
