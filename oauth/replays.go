package oauth

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"
)

// LocalReplays records values used once in this process's memory: exact
// when no other process can accept the same values (a store only this
// process opens, as Badger's directory lock makes it), and the cheap
// first check before a shared record otherwise. Records are kept in
// buckets by when they expire, a few seconds wide, and a bucket is dropped
// whole once its time has passed: memory is what the live records need.
type LocalReplays struct {
	now    func() time.Time
	shards [64]replayShard
}

// replayBucket is how wide the expiry buckets are.
const replayBucket = 5 * time.Second

// MaxLocalReplays bounds the records held (about 130 MB): with the
// default leeway a record lives about two minutes, so this is some 16,000
// proofs a second, more than two cores verify. Past it a new value is
// refused with a 503 until records expire: memory stays bounded
// and no replay is let through.
const MaxLocalReplays = 2 << 20

type replayShard struct {
	mu      sync.Mutex
	buckets map[int64]map[[16]byte]struct{} // by the end of the bucket, in replayBucket units
	n       int
}

// NewLocalReplays returns an empty set; now may be nil.
func NewLocalReplays(now func() time.Time) *LocalReplays {
	if now == nil {
		now = time.Now
	}
	r := &LocalReplays{now: now}
	for i := range r.shards {
		r.shards[i].buckets = map[int64]map[[16]byte]struct{}{}
	}
	return r
}

// UseOnce records key until until (rounded up to the bucket), or returns
// ErrExists when it is recorded.
func (r *LocalReplays) UseOnce(_ context.Context, key string, until time.Time) error {
	sum := sha256.Sum256([]byte(key))
	var k [16]byte
	copy(k[:], sum[:16])
	s := &r.shards[k[0]&63]
	now := r.now().UnixNano() / int64(replayBucket)
	end := until.UnixNano()/int64(replayBucket) + 1
	s.mu.Lock()
	defer s.mu.Unlock()
	for b, m := range s.buckets {
		if b <= now {
			s.n -= len(m)
			delete(s.buckets, b)
			continue
		}
		if _, ok := m[k]; ok {
			return ErrExists
		}
	}
	if s.n >= MaxLocalReplays/len(r.shards) {
		return ErrTemporarilyUnavailable("this server holds too many single-use values (DPoP proofs); retry in a minute")
	}
	m := s.buckets[end]
	if m == nil {
		m = map[[16]byte]struct{}{}
		s.buckets[end] = m
	}
	m[k] = struct{}{}
	s.n++
	return nil
}

// Len is how many records are held.
func (r *LocalReplays) Len() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for _, m := range s.buckets {
			n += len(m)
		}
		s.mu.Unlock()
	}
	return n
}

// SharedReplays checks Local first, then records in Shared (a store other
// processes use too): a value used in this process costs no round trip to
// be refused, and one used at another process is refused by the store.
type SharedReplays struct {
	Local  Replays
	Shared Replays
}

// UseOnce implements Replays.
func (r SharedReplays) UseOnce(ctx context.Context, key string, until time.Time) error {
	if err := r.Local.UseOnce(ctx, key, until); err != nil {
		return err
	}
	return r.Shared.UseOnce(ctx, key, until)
}
