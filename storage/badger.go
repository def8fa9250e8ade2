package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
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

// Key layout. Each kind of data has its own prefix ending in "/", so an
// iterator over one never sees another.
const (
	agentPrefix   = "agent/"
	clientPrefix  = "client/"
	keyPrefix     = "key/"
	secretPrefix  = "secret/"
	authReqPrefix = "authreq/"
	codePrefix    = "code/"
	refreshPrefix = "refresh/"
	// familyPrefix indexes refresh tokens by family:
	// "refam/<family>/<hash>" with an empty value. Families never contain
	// "/" (see checkFamily), so one family's prefix is no other's.
	familyPrefix = "refam/"
	// usedOncePrefix holds UseOnce's keys: "once/<key>", the value the
	// time it is recorded until, with a Badger expiry to match.
	usedOncePrefix = "once/"
	// changePrefix is followed by the sequence number as 8 big-endian
	// bytes, so key order is sequence order.
	changePrefix = "chg/"
	// The webhook outbox (badger_outbox.go): webhooks under
	// "webhook/<id>", deliveries under "dlv/<id>" with their payload
	// apart under "dlvp/<id>" (written once, so claims and updates
	// rewrite only the small record), and two indexes with 8-byte
	// order-preserving times: "dlvdue/<next attempt><id>" for each pending
	// delivery, "dlvnew/<inverted creation time><id>" for each delivery.
	webhookPrefix      = "webhook/"
	deliveryPrefix     = "dlv/"
	payloadPrefix      = "dlvp/"
	deliveryDuePrefix  = "dlvdue/"
	deliveryListPrefix = "dlvnew/"
	// trustedIdPPrefix holds the trusted IdPs of the admin API:
	// "idp/<issuer>".
	trustedIdPPrefix = "idp/"
	// legacyRecordPrefix held every protocol record before schema 2:
	// "rec/<kind>/<key>". Migration empties it.
	legacyRecordPrefix = "rec/"
)

// Keys under "meta/".
var (
	// metaSchema holds the layout version, "2". Databases without it are
	// from before the per-entity layout and are migrated at open.
	metaSchema = []byte("meta/schema")
	// metaKeysetVersion holds the signing key set's version in decimal;
	// missing means 0.
	metaKeysetVersion = []byte("meta/keyset-version")
	// metaChangeSeq holds the highest change sequence number ever handed
	// out, in decimal. Changes expire and compaction drops them, so the
	// highest stored one can fall below a number a reader has already
	// seen; this key keeps numbers from being handed out twice across
	// restarts.
	metaChangeSeq = []byte("meta/change-seq")
)

// schemaVersion is the layout this code reads and writes.
const schemaVersion = "2"

func agentKey(id string) []byte      { return []byte(agentPrefix + id) }
func clientKey(id string) []byte     { return []byte(clientPrefix + id) }
func signingKeyKey(id string) []byte { return []byte(keyPrefix + id) }
func secretKey(name string) []byte   { return []byte(secretPrefix + name) }
func authReqKey(id string) []byte    { return []byte(authReqPrefix + id) }
func codeKey(hash string) []byte     { return []byte(codePrefix + hash) }
func refreshKey(hash string) []byte  { return []byte(refreshPrefix + hash) }
func usedOnceKey(key string) []byte  { return []byte(usedOncePrefix + key) }
func familyIndexPrefix(family string) []byte {
	return []byte(familyPrefix + family + "/")
}
func familyIndexKey(family, hash string) []byte {
	return []byte(familyPrefix + family + "/" + hash)
}
func changeKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(changePrefix), seq)
}

// familyLock is the lock-stripe name every writer of a family's refresh
// tokens takes, so a rotation and a revocation of one family never overlap.
func familyLock(family string) string { return "family:" + family }

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
	// Now is the clock expiry is decided by (nil means time.Now), so tests
	// can move time by hand. Badger's own TTLs, which only let compaction
	// drop what has expired, follow the real clock.
	Now func() time.Time
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

// revokeBatch is how many refresh tokens one RevokeFamily transaction
// deletes, well inside Badger's transaction size limit however long the
// family is.
const revokeBatch = 500

// Badger stores agents and the authorization server's records in an
// embedded Badger database. It is safe for concurrent use; every method that
// returns success has synced its write to disk. The directory lock makes
// the process that opened it the only one using it.
type Badger struct {
	db  *badger.DB
	dir string
	log *zap.Logger
	now func() time.Time

	// keyLocks serializes read-modify-write transactions on the same key.
	// Badger detects conflicts only at commit, so N goroutines updating one
	// key would otherwise redo each other's work up to N times; because the
	// directory lock makes this process the only writer, an in-process lock
	// removes those conflicts while different keys still commit in parallel
	// and share fsyncs.
	keyLocks [lockStripes]sync.Mutex

	// seqMu is held from choosing a change's sequence number until its
	// append has committed, so sequence order is commit order: a reader
	// never sees number n+1 while n can still appear.
	seqMu   sync.Mutex
	lastSeq uint64

	// mu guards closed: methods hold it for reading so Close waits for
	// in-flight calls instead of closing the database under them.
	mu     sync.RWMutex
	closed bool

	stopGC    chan struct{}
	gcDone    chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// OpenBadger opens (or creates) the database in opts.Dir, migrates a
// database written in the previous layout, and starts its background
// garbage collection. The caller must Close it.
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
	now := opts.Now
	if now == nil {
		now = time.Now
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
		now:    now,
		stopGC: make(chan struct{}),
		gcDone: make(chan struct{}),
	}
	if err := b.loadLastSeq(); err != nil {
		db.Close()
		return nil, err
	}
	if err := b.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	go b.runGC(interval)
	return b, nil
}

// Shared reports false: the directory lock lets one process at a time use
// the database.
func (b *Badger) Shared() bool { return false }

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

// stripeIndex hashes name to a lock stripe (FNV-1a, inlined to stay
// allocation-free).
func stripeIndex(name []byte) int {
	h := uint32(2166136261)
	for _, c := range name {
		h ^= uint32(c)
		h *= 16777619
	}
	return int(h % lockStripes)
}

// lock takes the stripes of every name, in stripe order so that two calls
// taking overlapping sets cannot deadlock, and returns their release.
func (b *Badger) lock(names ...[]byte) (unlock func()) {
	idx := make([]int, 0, len(names))
	for _, n := range names {
		idx = append(idx, stripeIndex(n))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		b.keyLocks[i].Lock()
	}
	return func() {
		for _, i := range slices.Backward(idx) {
			b.keyLocks[i].Unlock()
		}
	}
}

// commit runs fn in a read-write transaction and commits it, retrying on a
// commit conflict. fn may therefore run more than once; an error from fn
// discards the transaction and is returned as it is.
func (b *Badger) commit(ctx context.Context, fn func(txn *badger.Txn) error) error {
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

// update runs fn in a committed read-write transaction while holding the
// lock stripes of names (the keys fn reads and writes, or lock names such
// as familyLock).
func (b *Badger) update(ctx context.Context, names [][]byte, fn func(txn *badger.Txn) error) error {
	if err := b.begin(ctx); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	unlock := b.lock(names...)
	defer unlock()
	// The wait for the lock may have outlived the caller's request.
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.commit(ctx, fn)
}

// updateKey is update for a transaction on the one key k.
func (b *Badger) updateKey(ctx context.Context, k []byte, fn func(txn *badger.Txn) error) error {
	return b.update(ctx, [][]byte{k}, fn)
}

// nativeExpiry returns the Badger ExpiresAt (Unix seconds) for a record that
// the injected clock says expires at expiresAt. Badger's TTL only lets
// compaction drop the record, while reads decide expiry by the clock; so it
// is set one second after the same distance from the real time, rounded up,
// and a clock far from real time never makes Badger drop a live record
// early. It is at least 1: 0 would mean "never expires".
func nativeExpiry(realNow, clockNow, expiresAt time.Time) uint64 {
	return max(badgerExpiry(realNow, expiresAt.Sub(clockNow)+time.Second), 1)
}

// badgerExpiry returns the Unix second at which a record written at now with
// ttl expires, or 0 when that is before 1970. Badger stores expiry in whole
// seconds and Entry.WithTTL truncates, so a 1s record written at x.9s would
// be gone 0.1s later; rounding up instead guarantees a record lives at least
// ttl (and less than ttl+1s).
func badgerExpiry(now time.Time, ttl time.Duration) uint64 {
	t := now.Add(ttl)
	sec := t.Unix()
	if t.Nanosecond() > 0 {
		sec++
	}
	if sec < 0 {
		return 0
	}
	return uint64(sec)
}

func (b *Badger) expiryOf(expiresAt time.Time) uint64 {
	return nativeExpiry(time.Now(), b.now(), expiresAt)
}

// readJSON decodes the value under key into a new T. It returns a nil T (and
// no error) when the key is missing.
func readJSON[T any](txn *badger.Txn, key []byte, what string) (*T, *badger.Item, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("auth_agent storage: read %s: %w", what, err)
	}
	v := new(T)
	if err := item.Value(func(raw []byte) error { return json.Unmarshal(raw, v) }); err != nil {
		return nil, nil, fmt.Errorf("auth_agent storage: decode %s: %w", what, err)
	}
	return v, item, nil
}

// writeJSON stores v under key; expiresAt is Badger's (0: never).
func writeJSON(txn *badger.Txn, key []byte, v any, expiresAt uint64, what string) error {
	val, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("auth_agent storage: encode %s: %w", what, err)
	}
	e := badger.NewEntry(key, val)
	e.ExpiresAt = expiresAt
	if err := txn.SetEntry(e); err != nil {
		return fmt.Errorf("auth_agent storage: write %s: %w", what, err)
	}
	return nil
}

func deleteKey(txn *badger.Txn, key []byte, what string) error {
	if err := txn.Delete(key); err != nil {
		return fmt.Errorf("auth_agent storage: delete %s: %w", what, err)
	}
	return nil
}

// listJSON returns up to limit records under prefix (100 when limit <= 0),
// in key order, starting strictly after prefix+after.
func listJSON[T, O any](b *Badger, ctx context.Context, prefix, after string, limit int, what string, conv func(T) O) ([]O, error) {
	if limit <= 0 {
		limit = defaultListLimit
	}
	var out []O
	err := b.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefix)
		opts.PrefetchSize = min(limit, opts.PrefetchSize)
		it := txn.NewIterator(opts)
		defer it.Close()
		// Keys share the prefix, so byte order of keys is byte order of ids:
		// seeking to "<prefix><after>" lands on after itself or the next id.
		start := []byte(prefix + after)
		for it.Seek(start); it.Valid() && len(out) < limit; it.Next() {
			item := it.Item()
			if after != "" && bytes.Equal(item.Key(), start) {
				continue
			}
			var v T
			if err := item.Value(func(raw []byte) error { return json.Unmarshal(raw, &v) }); err != nil {
				return fmt.Errorf("auth_agent storage: decode %s %q: %w", what, item.Key()[len(prefix):], err)
			}
			out = append(out, conv(v))
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// --- agents ---

// CreateAgent stores a new agent, or returns agents.ErrExists.
func (b *Badger) CreateAgent(ctx context.Context, a *agents.Agent) error {
	if err := checkAgent(a); err != nil {
		return err
	}
	rec := toAgentRecord(a)
	k := agentKey(a.ID)
	return b.updateKey(ctx, k, func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		switch {
		case err == nil:
			return agents.ErrExists
		case !errors.Is(err, badger.ErrKeyNotFound):
			return fmt.Errorf("auth_agent storage: read agent %q: %w", a.ID, err)
		}
		return writeJSON(txn, k, rec, 0, "agent")
	})
}

// GetAgent returns the agent or agents.ErrNotFound.
func (b *Badger) GetAgent(ctx context.Context, id string) (*agents.Agent, error) {
	var out *agents.Agent
	err := b.view(ctx, func(txn *badger.Txn) error {
		rec, _, err := readJSON[agentRecord](txn, agentKey(id), "agent")
		if err != nil {
			return err
		}
		if rec == nil {
			return agents.ErrNotFound
		}
		out = rec.agent()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateAgent applies fn to the stored agent in one transaction; see
// agents.Repository. fn may not change the agent's ID, and must not call back
// into the store: it runs under the key's lock.
func (b *Badger) UpdateAgent(ctx context.Context, id string, fn func(*agents.Agent) error) (*agents.Agent, error) {
	k := agentKey(id)
	var out *agents.Agent
	err := b.updateKey(ctx, k, func(txn *badger.Txn) error {
		rec, _, err := readJSON[agentRecord](txn, k, "agent")
		if err != nil {
			return err
		}
		if rec == nil {
			return agents.ErrNotFound
		}
		a := rec.agent()
		if err := fn(a); err != nil {
			return err
		}
		if err := checkAgentRename(id, a); err != nil {
			return err
		}
		if err := writeJSON(txn, k, toAgentRecord(a), 0, "agent"); err != nil {
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
	return b.updateKey(ctx, k, func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return agents.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("auth_agent storage: read agent %q: %w", id, err)
		}
		return deleteKey(txn, k, "agent")
	})
}

// ListAgents returns up to limit agents (100 when limit <= 0) ordered by id,
// starting strictly after the id after.
func (b *Badger) ListAgents(ctx context.Context, after string, limit int) ([]*agents.Agent, error) {
	return listJSON(b, ctx, agentPrefix, after, limit, "agent", agentRecord.agent)
}

// --- clients ---

// CreateClient stores a new client, or returns oauth.ErrExists.
func (b *Badger) CreateClient(ctx context.Context, c *oauth.Client) error {
	if err := checkClient(c); err != nil {
		return err
	}
	rec := toClientRecord(c)
	k := clientKey(c.ID)
	return b.updateKey(ctx, k, func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		switch {
		case err == nil:
			return oauth.ErrExists
		case !errors.Is(err, badger.ErrKeyNotFound):
			return fmt.Errorf("auth_agent storage: read client %q: %w", c.ID, err)
		}
		return writeJSON(txn, k, rec, 0, "client")
	})
}

// GetClient returns the client or oauth.ErrNotFound.
func (b *Badger) GetClient(ctx context.Context, id string) (*oauth.Client, error) {
	var out *oauth.Client
	err := b.view(ctx, func(txn *badger.Txn) error {
		rec, _, err := readJSON[clientRecord](txn, clientKey(id), "client")
		if err != nil {
			return err
		}
		if rec == nil {
			return oauth.ErrNotFound
		}
		out = rec.client()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateClient applies fn to the stored client in one transaction; see
// oauth.ClientStore. fn may not change the client's ID, and must not call
// back into the store: it runs under the key's lock.
func (b *Badger) UpdateClient(ctx context.Context, id string, fn func(*oauth.Client) error) (*oauth.Client, error) {
	k := clientKey(id)
	var out *oauth.Client
	err := b.updateKey(ctx, k, func(txn *badger.Txn) error {
		rec, item, err := readJSON[clientRecord](txn, k, "client")
		if err != nil {
			return err
		}
		if rec == nil {
			return oauth.ErrNotFound
		}
		c := rec.client()
		if err := fn(c); err != nil {
			return err
		}
		if err := checkClientRename(id, c); err != nil {
			return err
		}
		if err := writeJSON(txn, k, toClientRecord(c), item.ExpiresAt(), "client"); err != nil {
			return err
		}
		out = cloneClient(c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteClient removes the client, or returns oauth.ErrNotFound.
func (b *Badger) DeleteClient(ctx context.Context, id string) error {
	k := clientKey(id)
	return b.updateKey(ctx, k, func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return oauth.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("auth_agent storage: read client %q: %w", id, err)
		}
		return deleteKey(txn, k, "client")
	})
}

// ListClients returns up to limit clients (100 when limit <= 0) ordered by
// id, starting strictly after the id after.
func (b *Badger) ListClients(ctx context.Context, after string, limit int) ([]*oauth.Client, error) {
	return listJSON(b, ctx, clientPrefix, after, limit, "client", clientRecord.client)
}

// --- signing keys ---

func readKeysetVersion(txn *badger.Txn) (uint64, error) {
	item, err := txn.Get(metaKeysetVersion)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("auth_agent storage: read signing key set version: %w", err)
	}
	var v uint64
	err = item.Value(func(raw []byte) error {
		v, err = strconv.ParseUint(string(raw), 10, 64)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("auth_agent storage: decode signing key set version: %w", err)
	}
	return v, nil
}

// SigningKeys returns the stored set, its keys ordered by id.
func (b *Badger) SigningKeys(ctx context.Context) (oauth.KeySet, error) {
	var set oauth.KeySet
	err := b.view(ctx, func(txn *badger.Txn) error {
		v, err := readKeysetVersion(txn)
		if err != nil {
			return err
		}
		set.Version = v
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(keyPrefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var k keyRecord
			err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &k) })
			if err != nil {
				return fmt.Errorf("auth_agent storage: decode signing key %q: %w", it.Item().Key()[len(keyPrefix):], err)
			}
			set.Keys = append(set.Keys, k.key())
		}
		return nil
	})
	if err != nil {
		return oauth.KeySet{}, err
	}
	return set, nil
}

// SwapSigningKeys replaces the set with keys if the stored version is still
// version, in one transaction: keys not in the new set are deleted, the new
// ones written and the version incremented. It returns the new version, or
// oauth.ErrStale when another swap got there first.
func (b *Badger) SwapSigningKeys(ctx context.Context, version uint64, keys []oauth.StoredKey) (uint64, error) {
	if err := checkKeySet(keys); err != nil {
		return 0, err
	}
	recs := make([]keyRecord, len(keys))
	keep := make(map[string]bool, len(keys))
	for i, k := range keys {
		recs[i] = toKeyRecord(k)
		keep[k.ID] = true
	}
	next := version + 1
	// Every writer of key/ takes the version's lock, so the set is swapped
	// whole.
	err := b.updateKey(ctx, metaKeysetVersion, func(txn *badger.Txn) error {
		stored, err := readKeysetVersion(txn)
		if err != nil {
			return err
		}
		if stored != version {
			return oauth.ErrStale
		}
		var drop [][]byte
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(keyPrefix)
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		for it.Rewind(); it.Valid(); it.Next() {
			if k := it.Item().KeyCopy(nil); !keep[string(k[len(keyPrefix):])] {
				drop = append(drop, k)
			}
		}
		it.Close()
		for _, k := range drop {
			if err := deleteKey(txn, k, "signing key"); err != nil {
				return err
			}
		}
		for _, r := range recs {
			if err := writeJSON(txn, signingKeyKey(r.ID), r, 0, "signing key"); err != nil {
				return err
			}
		}
		if err := txn.Set(metaKeysetVersion, strconv.AppendUint(nil, next, 10)); err != nil {
			return fmt.Errorf("auth_agent storage: write signing key set version: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return next, nil
}

// --- secrets ---

// EnsureSecret returns the secret stored under name, storing candidate
// first when there is none, in one transaction under the name's lock.
func (b *Badger) EnsureSecret(ctx context.Context, name string, candidate []byte) ([]byte, error) {
	if err := checkSecret(name, candidate); err != nil {
		return nil, err
	}
	k := secretKey(name)
	var out []byte
	err := b.updateKey(ctx, k, func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		switch {
		case err == nil:
			out, err = item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("auth_agent storage: read secret %q: %w", name, err)
			}
			return nil
		case !errors.Is(err, badger.ErrKeyNotFound):
			return fmt.Errorf("auth_agent storage: read secret %q: %w", name, err)
		}
		out = bytes.Clone(candidate)
		if err := txn.Set(k, bytes.Clone(candidate)); err != nil {
			return fmt.Errorf("auth_agent storage: write secret %q: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// --- authorization requests ---

// CreateAuthRequest stores a new request until r.ExpiresAt, or returns
// oauth.ErrExists while a live request has the id.
func (b *Badger) CreateAuthRequest(ctx context.Context, r *oauth.AuthRequest) error {
	if err := checkAuthRequest(r); err != nil {
		return err
	}
	rec := toAuthRequestRecord(r)
	k := authReqKey(r.ID)
	return b.updateKey(ctx, k, func(txn *badger.Txn) error {
		old, _, err := readJSON[authRequestRecord](txn, k, "authorization request")
		if err != nil {
			return err
		}
		if old != nil && !expired(old.ExpiresAt, b.now()) {
			return oauth.ErrExists
		}
		return writeJSON(txn, k, rec, b.expiryOf(rec.ExpiresAt), "authorization request")
	})
}

// GetAuthRequest returns the request, or oauth.ErrNotFound when it is
// missing or expired.
func (b *Badger) GetAuthRequest(ctx context.Context, id string) (*oauth.AuthRequest, error) {
	var out *oauth.AuthRequest
	err := b.view(ctx, func(txn *badger.Txn) error {
		rec, _, err := readJSON[authRequestRecord](txn, authReqKey(id), "authorization request")
		if err != nil {
			return err
		}
		if rec == nil || expired(rec.ExpiresAt, b.now()) {
			return oauth.ErrNotFound
		}
		out = rec.authRequest()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ApproveAuthRequest records a on the pending request in one transaction
// under the request's lock, keeping its expiry; see oauth.AuthRequestStore.
func (b *Badger) ApproveAuthRequest(ctx context.Context, id string, a oauth.Approval) (*oauth.AuthRequest, error) {
	if err := checkApproval(id, a); err != nil {
		return nil, err
	}
	k := authReqKey(id)
	var out *oauth.AuthRequest
	err := b.updateKey(ctx, k, func(txn *badger.Txn) error {
		rec, item, err := readJSON[authRequestRecord](txn, k, "authorization request")
		if err != nil {
			return err
		}
		if rec == nil || expired(rec.ExpiresAt, b.now()) {
			return oauth.ErrNotFound
		}
		if rec.Approval != nil {
			return oauth.ErrNotPending
		}
		rec.Approval = toApprovalRecord(&a)
		// Reusing the stored expiry is exact, where recomputing it would
		// drift by up to a second per update.
		if err := writeJSON(txn, k, rec, item.ExpiresAt(), "authorization request"); err != nil {
			return err
		}
		out = rec.authRequest()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// --- authorization codes ---

// CreateCode stores the grant under hash until g.ExpiresAt, or returns
// oauth.ErrExists while a live code has the hash.
func (b *Badger) CreateCode(ctx context.Context, hash string, g *oauth.CodeGrant) error {
	if err := checkCode(hash, g); err != nil {
		return err
	}
	rec := toCodeRecord(g)
	k := codeKey(hash)
	return b.updateKey(ctx, k, func(txn *badger.Txn) error {
		old, _, err := readJSON[codeRecord](txn, k, "authorization code")
		if err != nil {
			return err
		}
		if old != nil && !expired(old.ExpiresAt, b.now()) {
			return oauth.ErrExists
		}
		return writeJSON(txn, k, rec, b.expiryOf(rec.ExpiresAt), "authorization code")
	})
}

// RedeemCode redeems the code once, in one transaction under the code's
// lock; see oauth.CodeStore. redeem runs at most once per call (a retried
// transaction reuses its answer) and gets a copy of the grant: only the
// Redemption it returns is recorded. It must not call back into the store.
func (b *Badger) RedeemCode(ctx context.Context, hash string, redeem func(*oauth.CodeGrant) (oauth.Redemption, error)) (*oauth.CodeGrant, error) {
	if err := checkRedeem(redeem); err != nil {
		return nil, err
	}
	k := codeKey(hash)
	var (
		out     *oauth.CodeGrant
		used    bool
		decided *oauth.Redemption
	)
	err := b.updateKey(ctx, k, func(txn *badger.Txn) error {
		out, used = nil, false
		rec, item, err := readJSON[codeRecord](txn, k, "authorization code")
		if err != nil {
			return err
		}
		if rec == nil || expired(rec.ExpiresAt, b.now()) {
			return oauth.ErrNotFound
		}
		if rec.Redemption != nil {
			// Nothing to write: the caller gets the first redemption.
			out, used = rec.grant(), true
			return nil
		}
		if decided == nil {
			red, err := redeem(cloneCodeGrant(rec.grant()))
			if err != nil {
				return err
			}
			decided = &red
		}
		rec.Redemption = toRedemptionRecord(decided)
		if err := writeJSON(txn, k, rec, item.ExpiresAt(), "authorization code"); err != nil {
			return err
		}
		out = rec.grant()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if used {
		return out, oauth.ErrCodeUsed
	}
	return out, nil
}

// --- refresh tokens ---

// putRefresh writes rec under hash with its family index entry, both with
// the same Badger expiry, first unindexing an expired token of another
// family that the write replaces (old may be nil).
func (b *Badger) putRefresh(txn *badger.Txn, hash string, rec refreshRecord, old *refreshRecord) error {
	if old != nil && old.Family != rec.Family {
		if err := deleteKey(txn, familyIndexKey(old.Family, hash), "refresh family index"); err != nil {
			return err
		}
	}
	exp := b.expiryOf(rec.ExpiresAt)
	if err := writeJSON(txn, refreshKey(hash), rec, exp, "refresh token"); err != nil {
		return err
	}
	e := badger.NewEntry(familyIndexKey(rec.Family, hash), nil)
	e.ExpiresAt = exp
	if err := txn.SetEntry(e); err != nil {
		return fmt.Errorf("auth_agent storage: write refresh family index: %w", err)
	}
	return nil
}

// CreateRefresh stores a new refresh token until g.ExpiresAt, indexed by its
// family, or returns oauth.ErrExists while a live token has the hash.
func (b *Badger) CreateRefresh(ctx context.Context, hash string, g *oauth.RefreshGrant) error {
	if err := checkRefresh(hash, g); err != nil {
		return err
	}
	rec := toRefreshRecord(g)
	k := refreshKey(hash)
	return b.update(ctx, [][]byte{[]byte(familyLock(g.Family)), k}, func(txn *badger.Txn) error {
		old, _, err := readJSON[refreshRecord](txn, k, "refresh token")
		if err != nil {
			return err
		}
		if old != nil && !expired(old.ExpiresAt, b.now()) {
			return oauth.ErrExists
		}
		return b.putRefresh(txn, hash, rec, old)
	})
}

// GetRefresh returns the grant (rotated or not), or oauth.ErrNotFound when
// it is missing, expired or its family was revoked.
func (b *Badger) GetRefresh(ctx context.Context, hash string) (*oauth.RefreshGrant, error) {
	var out *oauth.RefreshGrant
	err := b.view(ctx, func(txn *badger.Txn) error {
		rec, _, err := readJSON[refreshRecord](txn, refreshKey(hash), "refresh token")
		if err != nil {
			return err
		}
		if rec == nil || expired(rec.ExpiresAt, b.now()) {
			return oauth.ErrNotFound
		}
		out = rec.grant()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RotateRefresh marks the token under oldHash rotated (keeping its expiry)
// and stores next under newHash, in one transaction holding the locks of
// both tokens and of their family, so it cannot interleave with a
// RevokeFamily of that family. next must be of the old token's family, and
// newHash must be free (oauth.ErrExists otherwise).
func (b *Badger) RotateRefresh(ctx context.Context, oldHash, newHash string, next *oauth.RefreshGrant) error {
	if err := checkRotate(oldHash, newHash, next); err != nil {
		return err
	}
	rec := toRefreshRecord(next)
	oldKey, newKey := refreshKey(oldHash), refreshKey(newHash)
	return b.update(ctx, [][]byte{[]byte(familyLock(next.Family)), oldKey, newKey}, func(txn *badger.Txn) error {
		now := b.now()
		old, item, err := readJSON[refreshRecord](txn, oldKey, "refresh token")
		if err != nil {
			return err
		}
		if old == nil || expired(old.ExpiresAt, now) {
			return oauth.ErrNotFound
		}
		if old.Rotated {
			return oauth.ErrRefreshRotated
		}
		if err := checkSameFamily(old.grant(), next); err != nil {
			return err
		}
		taken, _, err := readJSON[refreshRecord](txn, newKey, "refresh token")
		if err != nil {
			return err
		}
		if taken != nil && !expired(taken.ExpiresAt, now) {
			return oauth.ErrExists
		}
		old.Rotated, old.RotatedAt, old.Successor = true, now, newHash
		if err := writeJSON(txn, oldKey, old, item.ExpiresAt(), "refresh token"); err != nil {
			return err
		}
		return b.putRefresh(txn, newHash, rec, taken)
	})
}

// RetryRefresh replaces the successor of the rotated token under oldHash
// with next under newHash, in one transaction holding the locks of the
// three tokens and of their family; see oauth.RefreshStore.
func (b *Badger) RetryRefresh(ctx context.Context, oldHash, successor, newHash string, next *oauth.RefreshGrant, grace time.Duration) error {
	if err := checkRetry(oldHash, successor, newHash, next, grace); err != nil {
		return err
	}
	rec := toRefreshRecord(next)
	oldKey, succKey, newKey := refreshKey(oldHash), refreshKey(successor), refreshKey(newHash)
	return b.update(ctx, [][]byte{[]byte(familyLock(next.Family)), oldKey, succKey, newKey}, func(txn *badger.Txn) error {
		now := b.now()
		old, oldItem, err := readJSON[refreshRecord](txn, oldKey, "refresh token")
		if err != nil {
			return err
		}
		if old == nil || expired(old.ExpiresAt, now) {
			return oauth.ErrNotFound
		}
		if err := decideRetry(old.grant(), successor, grace, now); err != nil {
			return err
		}
		if err := checkSameFamily(old.grant(), next); err != nil {
			return err
		}
		succ, succItem, err := readJSON[refreshRecord](txn, succKey, "refresh token")
		if err != nil {
			return err
		}
		var current *oauth.RefreshGrant
		if succ != nil && !expired(succ.ExpiresAt, now) {
			current = succ.grant()
		}
		if err := decideSuperseded(old.grant(), current); err != nil {
			return err
		}
		taken, _, err := readJSON[refreshRecord](txn, newKey, "refresh token")
		if err != nil {
			return err
		}
		if taken != nil && !expired(taken.ExpiresAt, now) {
			return oauth.ErrExists
		}
		succ.Rotated, succ.RotatedAt, succ.Successor = true, now, ""
		if err := writeJSON(txn, succKey, succ, succItem.ExpiresAt(), "refresh token"); err != nil {
			return err
		}
		old.Successor = newHash
		if err := writeJSON(txn, oldKey, old, oldItem.ExpiresAt(), "refresh token"); err != nil {
			return err
		}
		return b.putRefresh(txn, newHash, rec, taken)
	})
}

// RevokeFamily deletes every refresh token of the family, found through the
// family index, under the family's lock: a rotation of the family either
// committed before (and its successor is deleted here) or runs after and
// finds its token gone. A long family is deleted in several transactions,
// all under the lock. A family with no tokens is not an error.
func (b *Badger) RevokeFamily(ctx context.Context, family string) error {
	if checkFamily(family) != nil {
		// No token can be stored under such a family.
		return nil
	}
	if err := b.begin(ctx); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	unlock := b.lock([]byte(familyLock(family)))
	defer unlock()
	prefix := familyIndexPrefix(family)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := 0
		err := b.commit(ctx, func(txn *badger.Txn) error {
			var hashes []string
			opts := badger.DefaultIteratorOptions
			opts.Prefix = prefix
			opts.PrefetchValues = false
			it := txn.NewIterator(opts)
			for it.Rewind(); it.Valid() && len(hashes) < revokeBatch; it.Next() {
				hashes = append(hashes, string(it.Item().Key()[len(prefix):]))
			}
			it.Close()
			n = len(hashes)
			for _, h := range hashes {
				if err := deleteKey(txn, familyIndexKey(family, h), "refresh family index"); err != nil {
					return err
				}
				// The index entry may be stale: the hash may since have been
				// reused, after expiring, by a token of another family.
				rec, _, err := readJSON[refreshRecord](txn, refreshKey(h), "refresh token")
				if err != nil {
					return err
				}
				if rec != nil && rec.Family == family {
					if err := deleteKey(txn, refreshKey(h), "refresh token"); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n < revokeBatch {
			return nil
		}
	}
}

// --- single-use keys ---

// UseOnce records key until until, or returns oauth.ErrExists while key is
// recorded and not expired, in one transaction under the key's lock (and
// retried on a conflict), so of concurrent callers exactly one succeeds;
// see oauth.ReplayStore. Badger's expiry drops the record once it is gone.
func (b *Badger) UseOnce(ctx context.Context, key string, until time.Time) error {
	if err := checkUseOnce(key, until); err != nil {
		return err
	}
	rec := usedOnceRecord{Until: until}
	k := usedOnceKey(key)
	return b.updateKey(ctx, k, func(txn *badger.Txn) error {
		old, _, err := readJSON[usedOnceRecord](txn, k, "use-once key")
		if err != nil {
			return err
		}
		if old != nil && !expired(old.Until, b.now()) {
			return oauth.ErrExists
		}
		return writeJSON(txn, k, rec, b.expiryOf(rec.Until), "use-once key")
	})
}

// --- change log ---

// loadLastSeq finds the highest change sequence number handed out: the
// highest stored change (by reverse iteration, including expired and
// deleted versions) or the persisted high-water mark, whichever is higher.
func (b *Badger) loadLastSeq() error {
	return b.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(changePrefix)
		opts.Reverse = true
		opts.AllVersions = true
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		it.Seek(changeKey(math.MaxUint64))
		if it.Valid() {
			if k := it.Item().Key(); len(k) == len(changePrefix)+8 {
				b.lastSeq = binary.BigEndian.Uint64(k[len(changePrefix):])
			}
		}
		item, err := txn.Get(metaChangeSeq)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("auth_agent storage: read change sequence: %w", err)
		}
		var mark uint64
		err = item.Value(func(raw []byte) error {
			mark, err = strconv.ParseUint(string(raw), 10, 64)
			return err
		})
		if err != nil {
			return fmt.Errorf("auth_agent storage: decode change sequence: %w", err)
		}
		b.lastSeq = max(b.lastSeq, mark)
		return nil
	})
}

// writeChange stores c under its sequence number and raises the high-water
// mark. The caller holds b.seqMu (or is migrating, before any caller).
func (b *Badger) writeChange(txn *badger.Txn, c oauth.Change, expiresAt uint64) error {
	if err := writeJSON(txn, changeKey(c.Seq), toChangeRecord(c), expiresAt, "change"); err != nil {
		return err
	}
	if err := txn.Set(metaChangeSeq, strconv.AppendUint(nil, c.Seq, 10)); err != nil {
		return fmt.Errorf("auth_agent storage: write change sequence: %w", err)
	}
	return nil
}

// AppendChange stores c with the next sequence number and returns it. The
// number is chosen and committed under one mutex, so numbers grow with
// commit order; a failed append leaves a gap, never a reused number.
func (b *Badger) AppendChange(ctx context.Context, c oauth.Change) (uint64, error) {
	if err := checkChange(c); err != nil {
		return 0, err
	}
	if err := b.begin(ctx); err != nil {
		return 0, err
	}
	defer b.mu.RUnlock()
	b.seqMu.Lock()
	defer b.seqMu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.lastSeq++
	c.Seq = b.lastSeq
	exp := b.expiryOf(c.Expires)
	err := b.commit(ctx, func(txn *badger.Txn) error { return b.writeChange(txn, c, exp) })
	if err != nil {
		return 0, err
	}
	return c.Seq, nil
}

// ChangesSince returns up to limit unexpired changes (100 when limit <= 0)
// with a sequence number above after, in order.
func (b *Badger) ChangesSince(ctx context.Context, after uint64, limit int) ([]oauth.Change, error) {
	if limit <= 0 {
		limit = defaultListLimit
	}
	if after == math.MaxUint64 {
		return nil, b.view(ctx, func(*badger.Txn) error { return nil })
	}
	var out []oauth.Change
	err := b.view(ctx, func(txn *badger.Txn) error {
		now := b.now()
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(changePrefix)
		opts.PrefetchSize = min(limit, opts.PrefetchSize)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(changeKey(after + 1)); it.Valid() && len(out) < limit; it.Next() {
			var r changeRecord
			if err := it.Item().Value(func(raw []byte) error { return json.Unmarshal(raw, &r) }); err != nil {
				return fmt.Errorf("auth_agent storage: decode change %x: %w", it.Item().Key()[len(changePrefix):], err)
			}
			if !expired(r.Expires, now) {
				out = append(out, r.change())
			}
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
