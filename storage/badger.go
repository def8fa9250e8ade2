package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

// Compile-time proof that Badger is a complete backend.
var (
	_ agents.Repository = (*Badger)(nil)
	_ oauth.KeyStore    = (*Badger)(nil)
	_ oauth.RecordStore = (*Badger)(nil)
)

// Errors OpenBadger and the Badger methods return; test them with errors.Is.
var (
	// ErrLocked means another process (usually another Caddy configured
	// with the same storage path) has the database open.
	ErrLocked = errors.New("auth_agent storage: database directory is locked by another process")
	// ErrEncryptionKeyMismatch means the database was written with another
	// encryption key, or encrypted while none was given, or the reverse.
	ErrEncryptionKeyMismatch = errors.New("auth_agent storage: encryption key does not match the database")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("auth_agent storage: database is closed")
)

// Key layout. Each kind of data has its own prefix so an iterator over one
// never sees another, and a record's kind is never allowed to contain "/"
// (see checkKind), so "rec/<kind>/<key>" cannot collide across kinds.
const (
	agentPrefix  = "agent/"
	keyPrefix    = "key/"
	recordPrefix = "rec/"
)

func agentKey(id string) []byte         { return []byte(agentPrefix + id) }
func signingKeyKey(id string) []byte    { return []byte(keyPrefix + id) }
func recordKey(kind, key string) []byte { return []byte(recordPrefix + kind + "/" + key) }

// BadgerOptions configures OpenBadger.
type BadgerOptions struct {
	// Dir is the database directory. It is created with mode 0700 if
	// missing, because it holds signing keys and secret hashes.
	Dir string
	// EncryptionKey turns on AES encryption at rest when set: 16, 24 or 32
	// bytes for AES-128, -192 or -256. nil means no encryption. A database
	// must always be opened with the key it was created with.
	EncryptionKey []byte
	// Logger receives Badger's warnings and errors; nil discards them.
	Logger *zap.Logger
	// GCInterval is how often value-log garbage collection runs; 0 means
	// 5 minutes.
	GCInterval time.Duration
}

const defaultGCInterval = 5 * time.Minute

// tunedBadgerOptions is the one place the database is sized. Badger's
// defaults target a dedicated database server (five 64 MiB memtables, a
// 256 MiB block cache, 1 GiB value-log files, 8 stream goroutines). This
// database holds at most some thousands of small JSON documents plus
// short-lived protocol records inside a web server, so the values below keep
// its resident memory in the tens of MiB, not hundreds.
func tunedBadgerOptions(dir string, encryptionKey []byte, logger badger.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		// Every acknowledged write must survive kill -9 (SPEC §9); Badger
		// still groups concurrent commits into one fsync.
		WithSyncWrites(true).
		// 8 MiB memtables, two of them (one being written, one being
		// flushed): thousands of records fit before a flush. Badger caps a
		// transaction at 15% of this (1.2 MiB), far above our values.
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		// Compact level 0 early: few, small tables keep reads cheap and the
		// stall threshold is never reached at this write rate.
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(2 << 20).
		// Small value-log files so garbage collection can reclaim space in
		// small steps instead of rewriting a 1 GiB file.
		WithValueLogFileSize(16 << 20).
		// The whole working set fits in these caches. The index cache is
		// also required for encryption: without it Badger decrypts table
		// indexes on every read.
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		// Two is Badger's minimum for compaction to work at all.
		WithNumCompactors(2).
		WithNumGoroutines(2).
		// Badger's metrics go to expvar, which Caddy does not expose; skip
		// the bookkeeping.
		WithMetricsEnabled(false).
		WithEncryptionKey(encryptionKey).
		WithLogger(logger)
}

// txnAttempts bounds the retries of a transaction that lost a conflict.
// Writers to the same key are already serialized by keyLocks, so a conflict
// needs a writer that skipped the lock; more than a couple in a row would
// mean something is wrong, and returning the error beats spinning.
const txnAttempts = 5

// lockStripes is the number of mutexes read-modify-write operations are
// spread over by key hash.
const lockStripes = 64

// Badger stores agents, signing keys and protocol records in an embedded
// Badger database. It is safe for concurrent use; every method that returns
// success has synced its write to disk.
type Badger struct {
	db  *badger.DB
	dir string
	log *zap.Logger

	// keyLocks serializes read-modify-write transactions on the same key.
	// Badger detects conflicts only at commit, so N goroutines updating one
	// key would otherwise redo each other's work up to N times; because the
	// directory lock makes this process the only writer, an in-process lock
	// removes those conflicts while different keys still commit in parallel
	// and share fsyncs.
	keyLocks [lockStripes]sync.Mutex

	// mu guards closed: methods hold it for reading so Close waits for
	// in-flight calls instead of closing the database under them.
	mu     sync.RWMutex
	closed bool

	stopGC    chan struct{}
	gcDone    chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// OpenBadger opens (or creates) the database in opts.Dir and starts its
// background garbage collection. The caller must Close it.
func OpenBadger(opts BadgerOptions) (*Badger, error) {
	if opts.Dir == "" {
		return nil, errors.New("auth_agent storage: no database directory given")
	}
	switch n := len(opts.EncryptionKey); n {
	case 0, 16, 24, 32:
	default:
		return nil, fmt.Errorf("auth_agent storage: encryption key must be 16, 24 or 32 bytes (AES-128, AES-192 or AES-256), got %d", n)
	}
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	interval := opts.GCInterval
	if interval <= 0 {
		interval = defaultGCInterval
	}
	// Error messages name the absolute directory: Caddy's working directory
	// is rarely where an operator looks.
	dir := opts.Dir
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth_agent storage: create database directory: %w", err)
	}
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		logger.Warn("auth_agent storage directory is accessible to other users; it holds signing keys, consider chmod 700",
			zap.String("dir", dir), zap.Stringer("mode", fi.Mode().Perm()))
	}

	var key []byte
	if len(opts.EncryptionKey) > 0 {
		// Badger keeps the slice; a caller wiping its copy must not change ours.
		key = bytes.Clone(opts.EncryptionKey)
	}
	db, err := badger.Open(tunedBadgerOptions(dir, key, newZapBadgerLogger(logger)))
	if err != nil {
		return nil, translateOpenError(dir, err)
	}
	b := &Badger{
		db:     db,
		dir:    dir,
		log:    logger,
		stopGC: make(chan struct{}),
		gcDone: make(chan struct{}),
	}
	go b.runGC(interval)
	return b, nil
}

// openError carries a message written for operators while still matching
// its sentinel with errors.Is. Badger's own messages for these cases ("Cannot
// acquire directory lock", "Encryption key mismatch") do not say what to do.
type openError struct {
	msg  string
	kind error
}

func (e *openError) Error() string { return e.msg }
func (e *openError) Unwrap() error { return e.kind }

func translateOpenError(dir string, err error) error {
	// Badger flattens wrapped errors into strings (y.Wrapf uses %+v, not
	// %w), so errors.Is alone cannot see through them.
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Cannot acquire directory lock"):
		return &openError{
			msg:  fmt.Sprintf("auth_agent storage: database directory %s is locked by another process (another Caddy using the same storage path?)", dir),
			kind: ErrLocked,
		}
	case errors.Is(err, badger.ErrEncryptionKeyMismatch) || strings.Contains(msg, badger.ErrEncryptionKeyMismatch.Error()):
		return &openError{
			msg:  fmt.Sprintf("auth_agent storage: encryption key does not match the database in %s", dir),
			kind: ErrEncryptionKeyMismatch,
		}
	}
	return fmt.Errorf("auth_agent storage: open database in %s: %w", dir, err)
}

// runGC reclaims value-log space every interval until Close. Expired TTL
// entries need nothing from us: reads never return them and compaction
// drops them.
func (b *Badger) runGC(interval time.Duration) {
	defer close(b.gcDone)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-b.stopGC:
			return
		case <-ticker.C:
		}
		// Each successful call rewrites one file; keep going until Badger
		// finds nothing worth rewriting, so one tick reclaims all it can.
		for {
			select {
			case <-b.stopGC:
				return
			default:
			}
			err := b.db.RunValueLogGC(0.5)
			if err == nil {
				continue
			}
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				b.log.Warn("auth_agent storage: value log garbage collection failed", zap.Error(err))
			}
			break
		}
	}
}

// Close stops garbage collection, waits for calls in progress and closes the
// database. Calling it again does nothing and returns nil.
func (b *Badger) Close() error {
	first := false
	b.closeOnce.Do(func() {
		first = true
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		close(b.stopGC)
		<-b.gcDone
		if err := b.db.Close(); err != nil {
			b.closeErr = fmt.Errorf("auth_agent storage: close database in %s: %w", b.dir, err)
		}
	})
	if !first {
		return nil
	}
	return b.closeErr
}

// begin checks the context and that the database is open, and holds the
// read lock Close waits on. The caller must call b.mu.RUnlock.
func (b *Badger) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (b *Badger) view(ctx context.Context, fn func(txn *badger.Txn) error) error {
	if err := b.begin(ctx); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	return b.db.View(fn)
}

// stripe returns the mutex for key (FNV-1a, inlined to stay allocation-free).
func (b *Badger) stripe(key []byte) *sync.Mutex {
	h := uint32(2166136261)
	for _, c := range key {
		h ^= uint32(c)
		h *= 16777619
	}
	return &b.keyLocks[h%lockStripes]
}

// update runs fn in a read-write transaction on key and commits it, retrying
// on a commit conflict. fn may therefore run more than once; an error from fn
// discards the transaction and is returned as it is.
func (b *Badger) update(ctx context.Context, key []byte, fn func(txn *badger.Txn) error) error {
	if err := b.begin(ctx); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	mu := b.stripe(key)
	mu.Lock()
	defer mu.Unlock()
	// The wait for the lock may have outlived the caller's request.
	if err := ctx.Err(); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		txn := b.db.NewTransaction(true)
		if err := fn(txn); err != nil {
			txn.Discard()
			return err
		}
		err := txn.Commit()
		if err == nil {
			return nil
		}
		if !errors.Is(err, badger.ErrConflict) || attempt == txnAttempts {
			return fmt.Errorf("auth_agent storage: commit: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// A short, growing pause lets the conflicting writer finish.
		time.Sleep(time.Duration(attempt) * time.Millisecond)
	}
}

func decodeAgent(item *badger.Item) (*agents.Agent, error) {
	a := new(agents.Agent)
	err := item.Value(func(v []byte) error { return json.Unmarshal(v, a) })
	if err != nil {
		return nil, fmt.Errorf("auth_agent storage: decode agent %q: %w", strings.TrimPrefix(string(item.Key()), agentPrefix), err)
	}
	return a, nil
}

// CreateAgent stores a new agent, or returns agents.ErrExists.
func (b *Badger) CreateAgent(ctx context.Context, a *agents.Agent) error {
	if err := checkAgent(a); err != nil {
		return err
	}
	val, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("auth_agent storage: encode agent %q: %w", a.ID, err)
	}
	k := agentKey(a.ID)
	return b.update(ctx, k, func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		switch {
		case err == nil:
			return agents.ErrExists
		case !errors.Is(err, badger.ErrKeyNotFound):
			return fmt.Errorf("auth_agent storage: read agent %q: %w", a.ID, err)
		}
		return txn.Set(k, val)
	})
}

// GetAgent returns the agent or agents.ErrNotFound.
func (b *Badger) GetAgent(ctx context.Context, id string) (*agents.Agent, error) {
	var a *agents.Agent
	err := b.view(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(agentKey(id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return agents.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("auth_agent storage: read agent %q: %w", id, err)
		}
		a, err = decodeAgent(item)
		return err
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// UpdateAgent applies fn to the stored agent in one transaction; see
// agents.Repository. fn may not change the agent's ID, and must not call back
// into the store: it runs under the key's lock.
func (b *Badger) UpdateAgent(ctx context.Context, id string, fn func(*agents.Agent) error) (*agents.Agent, error) {
	k := agentKey(id)
	var out *agents.Agent
	err := b.update(ctx, k, func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return agents.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("auth_agent storage: read agent %q: %w", id, err)
		}
		a, err := decodeAgent(item)
		if err != nil {
			return err
		}
		if err := fn(a); err != nil {
			return err
		}
		if err := checkUpdatedID(id, a); err != nil {
			return err
		}
		val, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("auth_agent storage: encode agent %q: %w", id, err)
		}
		if err := txn.Set(k, val); err != nil {
			return err
		}
		// fn may have kept its pointer; the caller gets its own copy.
		out = a.Clone()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteAgent removes the agent, or returns agents.ErrNotFound.
func (b *Badger) DeleteAgent(ctx context.Context, id string) error {
	k := agentKey(id)
	return b.update(ctx, k, func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return agents.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("auth_agent storage: read agent %q: %w", id, err)
		}
		return txn.Delete(k)
	})
}

// ListAgents returns up to limit agents (100 when limit <= 0) ordered by id,
// starting strictly after the id after.
func (b *Badger) ListAgents(ctx context.Context, after string, limit int) ([]*agents.Agent, error) {
	if limit <= 0 {
		limit = defaultListLimit
	}
	var out []*agents.Agent
	err := b.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(agentPrefix)
		opts.PrefetchSize = min(limit, opts.PrefetchSize)
		it := txn.NewIterator(opts)
		defer it.Close()
		// Keys share the prefix, so byte order of keys is byte order of ids:
		// seeking to "agent/<after>" lands on after itself or the next id.
		start := agentKey(after)
		for it.Seek(start); it.Valid() && len(out) < limit; it.Next() {
			item := it.Item()
			if after != "" && bytes.Equal(item.Key(), start) {
				continue
			}
			a, err := decodeAgent(item)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SigningKeys returns every stored signing key, ordered by id.
func (b *Badger) SigningKeys(ctx context.Context) ([]oauth.StoredKey, error) {
	var out []oauth.StoredKey
	err := b.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(keyPrefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var k oauth.StoredKey
			err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &k) })
			if err != nil {
				return fmt.Errorf("auth_agent storage: decode signing key %q: %w", strings.TrimPrefix(string(it.Item().Key()), keyPrefix), err)
			}
			out = append(out, k)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PutSigningKey creates or replaces the key with k.ID.
func (b *Badger) PutSigningKey(ctx context.Context, k oauth.StoredKey) error {
	if err := checkKeyID(k.ID); err != nil {
		return err
	}
	val, err := json.Marshal(k)
	if err != nil {
		return fmt.Errorf("auth_agent storage: encode signing key %q: %w", k.ID, err)
	}
	dbKey := signingKeyKey(k.ID)
	return b.update(ctx, dbKey, func(txn *badger.Txn) error { return txn.Set(dbKey, val) })
}

// DeleteSigningKey removes a key; a missing key is not an error.
func (b *Badger) DeleteSigningKey(ctx context.Context, id string) error {
	dbKey := signingKeyKey(id)
	return b.update(ctx, dbKey, func(txn *badger.Txn) error { return txn.Delete(dbKey) })
}

// badgerExpiry returns the Unix second at which a record written at now with
// ttl expires. Badger stores expiry in whole seconds and Entry.WithTTL
// truncates, so a 1s record written at x.9s would be gone 0.1s later; rounding
// up instead guarantees a record lives at least ttl (and less than ttl+1s).
func badgerExpiry(now time.Time, ttl time.Duration) uint64 {
	t := now.Add(ttl)
	sec := t.Unix()
	if t.Nanosecond() > 0 {
		sec++
	}
	return uint64(sec)
}

// PutRecord stores value under (kind, key), replacing any previous value and
// expiry. A ttl of zero means no expiry; a negative ttl describes a record
// that has already expired, so it removes any previous value instead.
func (b *Badger) PutRecord(ctx context.Context, kind, key string, value []byte, ttl time.Duration) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	k := recordKey(kind, key)
	return b.update(ctx, k, func(txn *badger.Txn) error {
		if ttl < 0 {
			return txn.Delete(k)
		}
		e := badger.NewEntry(k, value)
		if ttl > 0 {
			e.ExpiresAt = badgerExpiry(time.Now(), ttl)
		}
		return txn.SetEntry(e)
	})
}

// CreateRecord stores value under (kind, key) only if no live record is
// there, returning oauth.ErrExists otherwise; the check and the write are one
// transaction under the key's lock. A ttl of zero means no expiry; a negative
// ttl describes a record that has already expired, so nothing is written
// (but a live record still makes it return oauth.ErrExists).
func (b *Badger) CreateRecord(ctx context.Context, kind, key string, value []byte, ttl time.Duration) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	k := recordKey(kind, key)
	return b.update(ctx, k, func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("auth_agent storage: read %s record: %w", kind, err)
		default:
			// Badger hides expired items from Get, but the second may tick
			// over between its check and ours; an expired record is free.
			expiresAt := item.ExpiresAt()
			if expiresAt == 0 || expiresAt > uint64(time.Now().Unix()) {
				return oauth.ErrExists
			}
		}
		if ttl < 0 {
			return nil
		}
		e := badger.NewEntry(k, value)
		if ttl > 0 {
			e.ExpiresAt = badgerExpiry(time.Now(), ttl)
		}
		return txn.SetEntry(e)
	})
}

// ListRecords returns copies of up to limit live records of kind (100 when
// limit <= 0) ordered by key, starting strictly after the key after ("" for
// the first page, which includes a record stored under the empty key).
func (b *Badger) ListRecords(ctx context.Context, kind, after string, limit int) ([]oauth.Record, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultListLimit
	}
	// The "/" ending the prefix keeps kind "client" from seeing "clients":
	// kinds never contain "/", so "rec/client/" is no prefix of theirs.
	prefix := recordKey(kind, "")
	var out []oauth.Record
	err := b.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		opts.PrefetchSize = min(limit, opts.PrefetchSize)
		// Expired entries are skipped by the iterator itself.
		it := txn.NewIterator(opts)
		defer it.Close()
		// As in ListAgents: seeking to "rec/<kind>/<after>" lands on after
		// itself or the next key, and after itself is skipped.
		start := recordKey(kind, after)
		for it.Seek(start); it.Valid() && len(out) < limit; it.Next() {
			item := it.Item()
			if after != "" && bytes.Equal(item.Key(), start) {
				continue
			}
			val, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("auth_agent storage: read %s record: %w", kind, err)
			}
			// string() copies the key, which Badger reuses after Next.
			out = append(out, oauth.Record{Key: string(item.Key()[len(prefix):]), Value: val})
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetRecord returns a copy of the value, or oauth.ErrNotFound when the
// record is missing or expired.
func (b *Badger) GetRecord(ctx context.Context, kind, key string) ([]byte, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	var val []byte
	err := b.view(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(recordKey(kind, key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return oauth.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("auth_agent storage: read %s record: %w", kind, err)
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	return val, nil
}

// ConsumeRecord reads and deletes the record in one transaction: of any
// number of concurrent callers exactly one gets the value, the others
// oauth.ErrNotFound.
func (b *Badger) ConsumeRecord(ctx context.Context, kind, key string) ([]byte, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	k := recordKey(kind, key)
	var val []byte
	err := b.update(ctx, k, func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return oauth.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("auth_agent storage: read %s record: %w", kind, err)
		}
		if val, err = item.ValueCopy(nil); err != nil {
			return err
		}
		return txn.Delete(k)
	})
	if err != nil {
		return nil, err
	}
	return val, nil
}

// UpdateRecord applies fn to a copy of the stored value and writes the result
// with the record's original expiry, in one transaction. fn must not call
// back into the store: it runs under the key's lock.
func (b *Badger) UpdateRecord(ctx context.Context, kind, key string, fn func([]byte) ([]byte, error)) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	k := recordKey(kind, key)
	return b.update(ctx, k, func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return oauth.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("auth_agent storage: read %s record: %w", kind, err)
		}
		// Badger hides expired items from Get, but the second may tick over
		// between its check and ours; an expired record must not be revived.
		expiresAt := item.ExpiresAt()
		if expiresAt != 0 && expiresAt <= uint64(time.Now().Unix()) {
			return oauth.ErrNotFound
		}
		old, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		val, err := fn(old)
		if err != nil {
			return err
		}
		// Reusing the stored expiry is exact, where recomputing a remaining
		// TTL and calling WithTTL would drift by up to a second per update.
		e := badger.NewEntry(k, val)
		e.ExpiresAt = expiresAt
		return txn.SetEntry(e)
	})
}

// DeleteRecord removes the record; a missing record is not an error.
func (b *Badger) DeleteRecord(ctx context.Context, kind, key string) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	k := recordKey(kind, key)
	return b.update(ctx, k, func(txn *badger.Txn) error { return txn.Delete(k) })
}
