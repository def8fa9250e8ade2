package caddymodule

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/internal/metrics"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

func init() {
	caddy.RegisterModule(BadgerStorage{})
	caddy.RegisterModule(MemoryStorage{})
	caddy.RegisterModule(PostgresStorage{})
}

// Storage is a storage backend: a Caddy module in the namespace
// auth_agent.storage. Provisioning it must not open anything (so `caddy
// validate` of a running config touches nothing); the app opens it when it
// starts, once per StorageKey however many configs use it (a reload
// shares the open database with the config it replaces). A third party
// adds a backend with a module of its own implementing this and
// storage.Backend, checked with storage/storagetest.
type Storage interface {
	caddy.Module
	// StorageKey names the database: configs whose keys are equal share
	// one open handle.
	StorageKey() string
	// StorageSettings is what may not change while the database is open
	// (an encryption key's fingerprint): a reload that changes it is
	// refused.
	StorageSettings() string
	// OpenStorage opens the database.
	OpenStorage(log *zap.Logger) (storage.Backend, error)
}

// BadgerStorage is the embedded Badger database (the default): state on
// local disk, for one Caddy process.
type BadgerStorage struct {
	// The database directory. Default: Caddy's data directory +
	// /auth_agent.
	Path string `json:"path,omitempty"`
	// A file holding the key that encrypts the database at rest: 16, 24 or
	// 32 bytes, raw or hex-encoded (AES-128/192/256). Changing it needs a
	// restart, not a reload.
	EncryptionKeyFile string `json:"encryption_key_file,omitempty"`

	dir    string
	encKey []byte
}

// CaddyModule returns the Caddy module information.
func (BadgerStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "auth_agent.storage.badger",
		New: func() caddy.Module { return new(BadgerStorage) },
	}
}

// Provision resolves the directory and reads the encryption key; nothing
// is created or opened.
func (b *BadgerStorage) Provision(caddy.Context) error {
	dir := b.Path
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "auth_agent")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("auth_agent: storage path %q: %v", b.Path, err)
	}
	b.dir = abs
	if b.EncryptionKeyFile != "" {
		if b.encKey, err = readEncryptionKey(b.EncryptionKeyFile); err != nil {
			return err
		}
	}
	return nil
}

// StorageKey is the directory.
func (b *BadgerStorage) StorageKey() string { return "badger:" + b.dir }

// StorageSettings is the fingerprint of the encryption key.
func (b *BadgerStorage) StorageSettings() string {
	if b.encKey == nil {
		return ""
	}
	sum := sha256.Sum256(b.encKey)
	return hex.EncodeToString(sum[:])
}

// OpenStorage opens (or creates) the database.
func (b *BadgerStorage) OpenStorage(log *zap.Logger) (storage.Backend, error) {
	db, err := storage.OpenBadger(storage.BadgerOptions{Dir: b.dir, EncryptionKey: b.encKey, Logger: log.Named("badger")})
	if err != nil {
		return nil, err
	}
	log.Info("opened database", zap.String("dir", b.dir), zap.Bool("encrypted", b.encKey != nil))
	return db, nil
}

// UnmarshalCaddyfile reads `storage badger` (the path is optional):
//
//	storage badger <path> {
//		encryption_key_file <file>
//	}
func (b *BadgerStorage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		b.Path = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "encryption_key_file":
			if !d.NextArg() {
				return d.ArgErr()
			}
			b.EncryptionKeyFile = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("storage badger: unknown setting %q", d.Val())
		}
	}
	return nil
}

// MemoryStorage keeps state in this process only (tests and demos:
// everything is lost on exit). Every config of the process shares it.
type MemoryStorage struct{}

// CaddyModule returns the Caddy module information.
func (MemoryStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "auth_agent.storage.memory",
		New: func() caddy.Module { return new(MemoryStorage) },
	}
}

// UnmarshalCaddyfile reads `storage memory`, which takes no arguments.
func (MemoryStorage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() || d.NextBlock(0) {
		return d.Err("storage memory takes no arguments")
	}
	return nil
}

// StorageKey is the same for every memory store of the process.
func (MemoryStorage) StorageKey() string { return "memory" }

// StorageSettings has nothing to protect.
func (MemoryStorage) StorageSettings() string { return "" }

// OpenStorage makes the store.
func (MemoryStorage) OpenStorage(*zap.Logger) (storage.Backend, error) {
	return storage.NewMemory(nil), nil
}

// PostgresStorage is a PostgreSQL database, shared by every Caddy instance
// configured with it: the way to run several.
type PostgresStorage struct {
	// The connection string, URL (postgres://user:password@host/db) or
	// key=value form; placeholders such as {env.AUTH_AGENT_DATABASE_URL}
	// are expanded.
	DSN string `json:"dsn,omitempty"`
	// The most connections this instance opens. Default: 10.
	MaxConns int `json:"max_conns,omitempty"`
	// The connections kept open when idle. Default: 1.
	MinConns int `json:"min_conns,omitempty"`
	// How long one store call may take before it fails (and the request
	// is answered 503). Default: 5s.
	QueryTimeout caddy.Duration `json:"query_timeout,omitempty"`

	dsn   string
	where string
}

// CaddyModule returns the Caddy module information.
func (PostgresStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "auth_agent.storage.postgres",
		New: func() caddy.Module { return new(PostgresStorage) },
	}
}

// Provision expands placeholders in the DSN and checks that it parses;
// nothing is opened.
func (p *PostgresStorage) Provision(caddy.Context) error {
	p.dsn = caddy.NewReplacer().ReplaceKnown(p.DSN, "")
	if strings.TrimSpace(p.dsn) == "" {
		return fmt.Errorf("auth_agent: storage postgres: no dsn (it is empty after expanding placeholders: %q)", p.DSN)
	}
	if p.MaxConns < 0 || p.MinConns < 0 || (p.MaxConns > 0 && p.MinConns > p.MaxConns) {
		return fmt.Errorf("auth_agent: storage postgres: min_conns %d and max_conns %d must be positive, min no more than max", p.MinConns, p.MaxConns)
	}
	if p.QueryTimeout < 0 {
		return fmt.Errorf("auth_agent: storage postgres: query_timeout must be positive")
	}
	where, err := storage.PostgresServer(p.dsn)
	if err != nil {
		return err
	}
	p.where = where
	return nil
}

// StorageKey names the database by a digest of the DSN, which may hold a
// password.
func (p *PostgresStorage) StorageKey() string {
	sum := sha256.Sum256([]byte(p.dsn))
	return "postgres:" + hex.EncodeToString(sum[:])
}

// StorageSettings: the pool settings of the first config stay until the
// pool closes; nothing needs a restart.
func (p *PostgresStorage) StorageSettings() string { return "" }

// OpenStorage connects, creates or migrates the schema.
func (p *PostgresStorage) OpenStorage(log *zap.Logger) (storage.Backend, error) {
	db, err := storage.OpenPostgres(storage.PostgresOptions{
		DSN:       p.dsn,
		MaxConns:  int32(min(p.MaxConns, 1<<20)),
		MinConns:  int32(min(p.MinConns, 1<<20)),
		OpTimeout: time.Duration(p.QueryTimeout),
		Logger:    log.Named("postgres"),
	})
	if err != nil {
		return nil, err
	}
	log.Info("opened database", zap.String("postgres", db.Where()))
	return db, nil
}

// UnmarshalCaddyfile reads
//
//	storage postgres <dsn> {
//		max_conns <n>
//		min_conns <n>
//		query_timeout <duration>
//	}
func (p *PostgresStorage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if !d.NextArg() {
		return d.Err("storage postgres needs a DSN (quote one in key=value form)")
	}
	p.DSN = d.Val()
	if d.NextArg() {
		return d.Err("storage postgres takes one DSN; quote one in key=value form")
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if !d.NextArg() {
			return d.ArgErr()
		}
		val := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch name {
		case "max_conns", "min_conns":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 {
				return d.Errf("storage postgres: %s: %q is not a positive number", name, val)
			}
			if name == "max_conns" {
				p.MaxConns = n
			} else {
				p.MinConns = n
			}
		case "query_timeout":
			dur, err := caddy.ParseDuration(val)
			if err != nil || dur <= 0 {
				return d.Errf("storage postgres: query_timeout: %q is not a positive duration", val)
			}
			p.QueryTimeout = caddy.Duration(dur)
		default:
			return d.Errf("storage postgres: unknown setting %q", name)
		}
	}
	return nil
}

// stores shares open databases between configs: Caddy starts a new config
// before it stops the old one, and Badger allows one opener per directory,
// so a reload must reuse the handle instead of opening it again.
var stores = caddy.NewUsagePool()

// sharedStore is an open database and what every config using it in this
// process shares: the code key and the view of the change log.
type sharedStore struct {
	storage.Backend
	settings string
	// codeKey derives authorization codes; it lives in the store, so every
	// process (and a restarted one) derives the same codes.
	codeKey []byte
	// revocations follows the store's change log until the last config
	// using the store is gone.
	revocations *oauth.Revocations
	stop        context.CancelFunc
	// replays record the jti of DPoP proofs: in this process when no other
	// can open the store (Badger), then proofs made before it opened are
	// refused (dpopNotBefore: they may have been used by the process
	// before) and those a restarted process could not tell from new ones
	// go to the store too (dpopDurable, see oauth.DPoPConfig.Durable); in
	// the store always when it is shared.
	replays       oauth.Replays
	dpopNotBefore time.Time
	dpopDurable   oauth.Replays
	// dpopNonceKey derives DPoP nonces, the same in every process.
	dpopNonceKey []byte
}

// Destruct stops following the change log and closes the database when the
// last config using it is gone.
func (s *sharedStore) Destruct() error {
	s.stop()
	return s.Close()
}

// openSharedStore returns the pooled database of mod, opening it (and
// reading its code key and change log) if no config has it open yet.
func openSharedStore(mod Storage, log *zap.Logger) (*sharedStore, string, error) {
	key := mod.StorageKey()
	val, _, err := stores.LoadOrNew(key, func() (caddy.Destructor, error) {
		db, err := mod.OpenStorage(log)
		if err != nil {
			return nil, err
		}
		backend := mod.CaddyModule().ID.Name()
		db = storage.Timed(db, func(op string, d time.Duration) { metrics.StorageOperation(backend, op, d) })
		s, err := newSharedStore(db, mod.StorageSettings(), log)
		if err != nil {
			_ = db.Close()
			return nil, err
		}
		return s, nil
	})
	if err != nil {
		return nil, "", err
	}
	s := val.(*sharedStore)
	if s.settings != mod.StorageSettings() {
		_, _ = stores.Delete(key)
		return nil, "", fmt.Errorf("auth_agent: the storage settings (encryption key) of %s changed; the open database keeps them until Caddy restarts", strings.TrimPrefix(key, "badger:"))
	}
	return s, key, nil
}

func newSharedStore(db storage.Backend, settings string, log *zap.Logger) (*sharedStore, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	candidate := make([]byte, 32)
	if _, err := rand.Read(candidate); err != nil {
		return nil, err
	}
	codeKey, err := db.EnsureSecret(ctx, oauth.CodeKeyName, candidate)
	if err != nil {
		return nil, fmt.Errorf("auth_agent: reading the code key: %v", err)
	}
	if _, err := rand.Read(candidate); err != nil {
		return nil, err
	}
	nonceKey, err := db.EnsureSecret(ctx, oauth.DPoPNonceKeyName, candidate)
	if err != nil {
		return nil, fmt.Errorf("auth_agent: reading the DPoP nonce key: %v", err)
	}
	revocations := oauth.NewRevocations(db, nil, log.Named("changes"))
	if err := revocations.Sync(ctx); err != nil {
		return nil, fmt.Errorf("auth_agent: reading the change log: %v", err)
	}
	follow, stop := context.WithCancel(context.Background())
	go revocations.Run(follow)
	s := &sharedStore{Backend: db, settings: settings, codeKey: codeKey, revocations: revocations, stop: stop, dpopNonceKey: nonceKey}
	local := oauth.NewLocalReplays(nil)
	if db.Shared() {
		s.replays = oauth.SharedReplays{Local: local, Shared: db}
	} else {
		s.replays, s.dpopNotBefore, s.dpopDurable = local, time.Now(), db
	}
	return s, nil
}

// readEncryptionKey reads an AES key from a file: 16, 24 or 32 raw bytes, or
// the same as hex (surrounding whitespace ignored).
func readEncryptionKey(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth_agent: encryption_key_file: %v", err)
	}
	if key, err := hex.DecodeString(strings.TrimSpace(string(raw))); err == nil && validAESKeyLen(len(key)) {
		return key, nil
	}
	if validAESKeyLen(len(raw)) {
		return raw, nil
	}
	return nil, fmt.Errorf("auth_agent: encryption_key_file %s must hold a 16, 24 or 32-byte key, raw or hex-encoded", path)
}

func validAESKeyLen(n int) bool { return n == 16 || n == 24 || n == 32 }

// Interface guards
var (
	_ Storage               = (*BadgerStorage)(nil)
	_ Storage               = (*MemoryStorage)(nil)
	_ Storage               = (*PostgresStorage)(nil)
	_ caddy.Provisioner     = (*PostgresStorage)(nil)
	_ caddyfile.Unmarshaler = (*PostgresStorage)(nil)
	_ caddy.Provisioner     = (*BadgerStorage)(nil)
	_ caddyfile.Unmarshaler = (*BadgerStorage)(nil)
	_ caddyfile.Unmarshaler = (*MemoryStorage)(nil)
)
