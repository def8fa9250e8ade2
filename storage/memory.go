package storage

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

// Compile-time proof that Memory is a complete backend.
var (
	_ agents.Repository = (*Memory)(nil)
	_ oauth.KeyStore    = (*Memory)(nil)
	_ oauth.RecordStore = (*Memory)(nil)
)

// memorySweepInterval is how often expired records are dropped. Reads
// already ignore them; the sweep only bounds memory held by records nobody
// asks for again (pending requests that were never completed, for example).
const memorySweepInterval = time.Minute

// Memory is a backend that keeps everything in process memory, for tests and
// for setups that accept losing all state on restart. It is safe for
// concurrent use. Values are copied on the way in and out, so callers can
// never change stored data through a pointer or slice they hold.
type Memory struct {
	now func() time.Time

	mu      sync.Mutex
	agents  map[string]*agents.Agent
	keys    map[string]oauth.StoredKey
	records map[memoryRecordKey]memoryRecord

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// memoryRecordKey is a struct rather than a joined string, so kinds and keys
// cannot collide here whatever they contain.
type memoryRecordKey struct{ kind, key string }

type memoryRecord struct {
	value     []byte
	expiresAt time.Time // zero: never expires
}

func (r memoryRecord) expired(now time.Time) bool {
	return !r.expiresAt.IsZero() && !now.Before(r.expiresAt)
}

// NewMemory returns an empty store and starts its once-a-minute sweep of
// expired records; stop it with Close. now is the clock used for record
// expiry (nil means time.Now), so tests can move time by hand.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	m := &Memory{
		now:     now,
		agents:  make(map[string]*agents.Agent),
		keys:    make(map[string]oauth.StoredKey),
		records: make(map[memoryRecordKey]memoryRecord),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go m.sweep()
	return m
}

func (m *Memory) sweep() {
	defer close(m.done)
	ticker := time.NewTicker(memorySweepInterval)
	defer ticker.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-ticker.C:
			m.dropExpired()
		}
	}
}

func (m *Memory) dropExpired() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for k, r := range m.records {
		if r.expired(now) {
			delete(m.records, k)
		}
	}
}

// Close stops the background sweep. The store stays usable; calling Close
// again does nothing. It always returns nil.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.done
	})
	return nil
}

// CreateAgent stores a copy of a, or returns agents.ErrExists.
func (m *Memory) CreateAgent(ctx context.Context, a *agents.Agent) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkAgent(a); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.agents[a.ID]; ok {
		return agents.ErrExists
	}
	m.agents[a.ID] = a.Clone()
	return nil
}

// GetAgent returns a copy of the agent, or agents.ErrNotFound.
func (m *Memory) GetAgent(ctx context.Context, id string) (*agents.Agent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.agents[id]
	if !ok {
		return nil, agents.ErrNotFound
	}
	return a.Clone(), nil
}

// UpdateAgent applies fn to a copy of the stored agent and stores the result
// unless fn fails; see agents.Repository. fn may not change the agent's ID.
// fn runs under the store's lock, so it must not call back into the store.
func (m *Memory) UpdateAgent(ctx context.Context, id string, fn func(*agents.Agent) error) (*agents.Agent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	stored, ok := m.agents[id]
	if !ok {
		return nil, agents.ErrNotFound
	}
	a := stored.Clone()
	if err := fn(a); err != nil {
		return nil, err
	}
	if err := checkUpdatedID(id, a); err != nil {
		return nil, err
	}
	m.agents[id] = a.Clone()
	return a.Clone(), nil
}

// DeleteAgent removes the agent, or returns agents.ErrNotFound.
func (m *Memory) DeleteAgent(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.agents[id]; !ok {
		return agents.ErrNotFound
	}
	delete(m.agents, id)
	return nil
}

// ListAgents returns copies of up to limit agents (100 when limit <= 0)
// ordered by id, starting strictly after the id after.
func (m *Memory) ListAgents(ctx context.Context, after string, limit int) ([]*agents.Agent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultListLimit
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Sorting every call is fine at the sizes this backend is meant for.
	ids := make([]string, 0, len(m.agents))
	for id := range m.agents {
		if id > after {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) > limit {
		ids = ids[:limit]
	}
	var out []*agents.Agent
	for _, id := range ids {
		out = append(out, m.agents[id].Clone())
	}
	return out, nil
}

func cloneKey(k oauth.StoredKey) oauth.StoredKey {
	k.Private = bytes.Clone(k.Private)
	return k
}

// SigningKeys returns copies of every stored key, ordered by id.
func (m *Memory) SigningKeys(ctx context.Context) ([]oauth.StoredKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []oauth.StoredKey
	for _, k := range m.keys {
		out = append(out, cloneKey(k))
	}
	// Same order as Badger, so nothing comes to depend on map order.
	slices.SortFunc(out, func(a, b oauth.StoredKey) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// PutSigningKey creates or replaces the key with k.ID.
func (m *Memory) PutSigningKey(ctx context.Context, k oauth.StoredKey) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkKeyID(k.ID); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[k.ID] = cloneKey(k)
	return nil
}

// DeleteSigningKey removes a key; a missing key is not an error.
func (m *Memory) DeleteSigningKey(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, id)
	return nil
}

// PutRecord stores a copy of value under (kind, key), replacing any previous
// value and expiry. A ttl of zero means no expiry; a negative ttl describes a
// record that has already expired, so it removes any previous value instead.
func (m *Memory) PutRecord(ctx context.Context, kind, key string, value []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkKind(kind); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.putLocked(memoryRecordKey{kind, key}, value, ttl)
	return nil
}

// putLocked stores a copy of value under rk (a negative ttl removes it).
// The caller holds m.mu.
func (m *Memory) putLocked(rk memoryRecordKey, value []byte, ttl time.Duration) {
	if ttl < 0 {
		delete(m.records, rk)
		return
	}
	r := memoryRecord{value: bytes.Clone(value)}
	if ttl > 0 {
		r.expiresAt = m.now().Add(ttl)
	}
	m.records[rk] = r
}

// live returns the unexpired record under rk. The caller holds m.mu.
func (m *Memory) live(rk memoryRecordKey) (memoryRecord, bool) {
	r, ok := m.records[rk]
	if !ok {
		return memoryRecord{}, false
	}
	if r.expired(m.now()) {
		delete(m.records, rk)
		return memoryRecord{}, false
	}
	return r, true
}

// GetRecord returns a copy of the value, or oauth.ErrNotFound when the
// record is missing or expired.
func (m *Memory) GetRecord(ctx context.Context, kind, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.live(memoryRecordKey{kind, key})
	if !ok {
		return nil, oauth.ErrNotFound
	}
	return bytes.Clone(r.value), nil
}

// CreateRecord stores a copy of value under (kind, key) only if no live
// record is there, returning oauth.ErrExists otherwise; check and write
// happen under one lock. A ttl of zero means no expiry; a negative ttl
// describes a record that has already expired, so nothing is stored (but a
// live record still makes it return oauth.ErrExists).
func (m *Memory) CreateRecord(ctx context.Context, kind, key string, value []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkKind(kind); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rk := memoryRecordKey{kind, key}
	if _, ok := m.live(rk); ok {
		return oauth.ErrExists
	}
	m.putLocked(rk, value, ttl)
	return nil
}

// ListRecords returns copies of up to limit live records of kind (100 when
// limit <= 0) ordered by key, starting strictly after the key after ("" for
// the first page, which includes a record stored under the empty key).
func (m *Memory) ListRecords(ctx context.Context, kind, after string, limit int) ([]oauth.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultListLimit
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	// Sorting every call is fine at the sizes this backend is meant for.
	var keys []string
	for rk, r := range m.records {
		if rk.kind != kind {
			continue
		}
		if r.expired(now) {
			delete(m.records, rk)
			continue
		}
		if after == "" || rk.key > after {
			keys = append(keys, rk.key)
		}
	}
	slices.Sort(keys)
	if len(keys) > limit {
		keys = keys[:limit]
	}
	var out []oauth.Record
	for _, k := range keys {
		out = append(out, oauth.Record{Key: k, Value: bytes.Clone(m.records[memoryRecordKey{kind, k}].value)})
	}
	return out, nil
}

// ConsumeRecord returns the value and deletes the record under one lock, so
// exactly one of any number of concurrent callers gets it.
func (m *Memory) ConsumeRecord(ctx context.Context, kind, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rk := memoryRecordKey{kind, key}
	r, ok := m.live(rk)
	if !ok {
		return nil, oauth.ErrNotFound
	}
	delete(m.records, rk)
	// The stored slice was a private copy and is no longer stored, so it can
	// be handed out as it is.
	return r.value, nil
}

// UpdateRecord applies fn to a copy of the stored value and stores the result
// with the record's original expiry, unless fn fails. fn runs under the
// store's lock, so it must not call back into the store.
func (m *Memory) UpdateRecord(ctx context.Context, kind, key string, fn func([]byte) ([]byte, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkKind(kind); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rk := memoryRecordKey{kind, key}
	r, ok := m.live(rk)
	if !ok {
		return oauth.ErrNotFound
	}
	val, err := fn(bytes.Clone(r.value))
	if err != nil {
		return err
	}
	// fn may keep the slice it returned; store a copy.
	m.records[rk] = memoryRecord{value: bytes.Clone(val), expiresAt: r.expiresAt}
	return nil
}

// DeleteRecord removes the record; a missing record is not an error.
func (m *Memory) DeleteRecord(ctx context.Context, kind, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkKind(kind); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.records, memoryRecordKey{kind, key})
	return nil
}
