package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/agents"
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
	populate(b, s, n)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.GetAgent(ctx, fmt.Sprintf("bench-%08d", i%n)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBadgerConsumeRecord measures redeeming an authorization code: a
// read and a delete in one synced transaction.
func BenchmarkBadgerConsumeRecord(b *testing.B) {
	s := openTestBadger(b, BadgerOptions{Dir: b.TempDir()})
	ctx := context.Background()
	// Write the records in one batch (one fsync), outside the timer.
	wb := s.db.NewWriteBatch()
	value := make([]byte, 256)
	for i := range b.N {
		if err := wb.Set(recordKey("code", fmt.Sprintf("%08d", i)), value); err != nil {
			b.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.ConsumeRecord(ctx, "code", fmt.Sprintf("%08d", i)); err != nil {
			b.Fatal(err)
		}
	}
}

func populate(b *testing.B, s *Badger, n int) {
	b.Helper()
	wb := s.db.NewWriteBatch()
	for i := range n {
		id := fmt.Sprintf("bench-%08d", i)
		val, err := json.Marshal(benchAgent(id))
		if err != nil {
			b.Fatal(err)
		}
		if err := wb.Set(agentKey(id), val); err != nil {
			b.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		b.Fatal(err)
	}
}
