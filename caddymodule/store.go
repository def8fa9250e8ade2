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
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

// database is what the app needs from a storage backend.
type database interface {
	agents.Repository
	oauth.KeyStore
	oauth.RecordStore
	Close() error
}

// stores shares open databases between configs: Caddy provisions a new
// config before it cleans up the old one, and Badger allows one opener per
// directory, so a reload must reuse the handle instead of opening it again.
var stores = caddy.NewUsagePool()

// sharedStore is a pooled database plus what must be shared with it.
type sharedStore struct {
	database
	// hasher bounds concurrent argon2id work for everything using this
	// database, old and new config alike during a reload.
	hasher *agents.Hasher
	// keyFingerprint tells whether a reload asks for another encryption key.
	keyFingerprint string
	// codeKey derives authorization codes; it never leaves this process, so
	// the database holds only hashes of codes.
	codeKey []byte
	// revocations is the in-process revocation set every config and guard
	// of this database checks.
	revocations *oauth.Revocations
}

func newSharedStore(db database, fingerprint string) *sharedStore {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return &sharedStore{database: db, hasher: agents.NewHasher(agents.DefaultArgon2, 0), keyFingerprint: fingerprint,
		codeKey: key, revocations: oauth.NewRevocations(nil)}
}

// Destruct closes the database when the last config using it is gone.
func (s *sharedStore) Destruct() error { return s.Close() }

// openSharedStore returns the pooled database for cfg and its pool key.
func openSharedStore(cfg *StorageConfig, log *zap.Logger) (*sharedStore, string, error) {
	if cfg == nil {
		cfg = new(StorageConfig)
	}
	if cfg.Backend == "memory" {
		val, _, err := stores.LoadOrNew("memory", func() (caddy.Destructor, error) {
			return newSharedStore(storage.NewMemory(nil), ""), nil
		})
		if err != nil {
			return nil, "", err
		}
		return val.(*sharedStore), "memory", nil
	}

	dir := cfg.Path
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "auth_agent")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", fmt.Errorf("auth_agent: storage path %q: %v", cfg.Path, err)
	}
	var encKey []byte
	if cfg.EncryptionKeyFile != "" {
		if encKey, err = readEncryptionKey(cfg.EncryptionKeyFile); err != nil {
			return nil, "", err
		}
	}
	fingerprint := ""
	if encKey != nil {
		sum := sha256.Sum256(encKey)
		fingerprint = hex.EncodeToString(sum[:])
	}
	poolKey := "badger:" + dir
	val, _, err := stores.LoadOrNew(poolKey, func() (caddy.Destructor, error) {
		db, err := storage.OpenBadger(storage.BadgerOptions{Dir: dir, EncryptionKey: encKey, Logger: log.Named("badger")})
		if err != nil {
			return nil, err
		}
		log.Info("opened database", zap.String("dir", dir), zap.Bool("encrypted", encKey != nil))
		s := newSharedStore(db, fingerprint)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.revocations.Load(ctx, db); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("auth_agent: loading revocations: %v", err)
		}
		return s, nil
	})
	if err != nil {
		return nil, "", err
	}
	s := val.(*sharedStore)
	if s.keyFingerprint != fingerprint {
		_, _ = stores.Delete(poolKey)
		return nil, "", fmt.Errorf("auth_agent: the encryption key of %s changed; the open database keeps its key until Caddy restarts", dir)
	}
	return s, poolKey, nil
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
