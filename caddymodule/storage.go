package caddymodule

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

func init() {
	caddy.RegisterModule(BadgerStorage{})
	caddy.RegisterModule(MemoryStorage{})
}

// Storage is a storage backend: a Caddy module in the namespace
// auth_agent.storage. Provisioning it must not open anything (so `caddy
// validate` of a running config touches nothing); the app opens it when it
// starts, once per StorageKey however many configs use it (a reload
// shares the open database with the config it replaces). A third party
// adds a backend with a module of its own implementing this and
// storage.Backend, checked with storage/storagetest.
type Storage interface {
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
	revocations := oauth.NewRevocations(db, nil, log.Named("changes"))
	if err := revocations.Sync(ctx); err != nil {
		return nil, fmt.Errorf("auth_agent: reading the change log: %v", err)
	}
	follow, stop := context.WithCancel(context.Background())
	go revocations.Run(follow)
	return &sharedStore{Backend: db, settings: settings, codeKey: codeKey, revocations: revocations, stop: stop}, nil
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
	_ caddy.Provisioner     = (*BadgerStorage)(nil)
	_ caddyfile.Unmarshaler = (*BadgerStorage)(nil)
	_ caddyfile.Unmarshaler = (*MemoryStorage)(nil)
)
