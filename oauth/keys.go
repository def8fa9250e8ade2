package oauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// Signing algorithms this server can use.
const (
	AlgRS256 = "RS256"
	AlgES256 = "ES256"
	AlgEdDSA = "EdDSA"
)

// SupportedAlgs lists the algorithms keys can be made for.
var SupportedAlgs = []string{AlgRS256, AlgES256, AlgEdDSA}

// signingKey is a loaded key pair.
type signingKey struct {
	id      string
	alg     string
	method  jwt.SigningMethod
	private crypto.Signer
	public  crypto.PublicKey
	created time.Time
	retired time.Time
}

// KeyManager owns the signing keys: one active key per algorithm in use,
// plus retired keys that stay published for one rotation period so tokens
// they signed keep verifying.
type KeyManager struct {
	store    KeyStore
	algs     []string
	rotation time.Duration
	now      func() time.Time
	log      *zap.Logger

	mu         sync.RWMutex
	active     map[string]*signingKey // by alg
	byID       map[string]*signingKey
	jwks       []byte
	lastReload time.Time
}

// unknownKidReload bounds how often an unknown kid makes the manager re-read
// the store (another config of this process may have rotated), so forged
// tokens cannot turn into a stream of database reads.
const unknownKidReload = 10 * time.Second

// NewKeyManager loads the keys from store, creating or rotating whatever is
// missing or due, for each of algs.
func NewKeyManager(ctx context.Context, store KeyStore, algs []string, rotation time.Duration, now func() time.Time, log *zap.Logger) (*KeyManager, error) {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	for _, a := range algs {
		if !slices.Contains(SupportedAlgs, a) {
			return nil, fmt.Errorf("unsupported signing algorithm %q", a)
		}
	}
	if rotation <= 0 {
		return nil, errors.New("key rotation period must be positive")
	}
	m := &KeyManager{store: store, algs: slices.Compact(slices.Sorted(slices.Values(algs))), rotation: rotation, now: now, log: log}
	if err := m.Rotate(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Rotate reloads the stored keys, makes a new key for each algorithm whose
// active key is older than the rotation period, retires the old one, and
// deletes keys retired more than a period ago.
func (m *KeyManager) Rotate(ctx context.Context) error {
	stored, err := m.store.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("loading signing keys: %w", err)
	}
	now := m.now()
	// Newest first, so the first unretired key of an algorithm is its active one.
	slices.SortFunc(stored, func(a, b StoredKey) int { return b.CreatedAt.Compare(a.CreatedAt) })
	keep := stored[:0]
	activeByAlg := map[string]bool{}
	for _, k := range stored {
		retire := false
		switch {
		case !k.RetiredAt.IsZero():
		case !slices.Contains(m.algs, k.Algorithm), activeByAlg[k.Algorithm]:
			retire = true // no longer configured, or superseded by a newer key
		case now.Sub(k.CreatedAt) >= m.rotation:
			retire = true // due: a new key is made below
		default:
			activeByAlg[k.Algorithm] = true
		}
		if retire {
			k.RetiredAt = now
			if err := m.store.PutSigningKey(ctx, k); err != nil {
				return fmt.Errorf("retiring signing key: %w", err)
			}
			m.log.Info("retired signing key", zap.String("kid", k.ID), zap.String("alg", k.Algorithm))
		}
		if now.Sub(k.RetiredAt) > m.rotation && !k.RetiredAt.IsZero() {
			if err := m.store.DeleteSigningKey(ctx, k.ID); err != nil {
				return fmt.Errorf("deleting signing key: %w", err)
			}
			continue
		}
		keep = append(keep, k)
	}
	for _, alg := range m.algs {
		if activeByAlg[alg] {
			continue
		}
		k, err := GenerateKey(alg, now)
		if err != nil {
			return err
		}
		if err := m.store.PutSigningKey(ctx, k); err != nil {
			return fmt.Errorf("storing signing key: %w", err)
		}
		m.log.Info("created signing key", zap.String("kid", k.ID), zap.String("alg", alg))
		keep = append([]StoredKey{k}, keep...)
	}
	return m.load(keep)
}

func (m *KeyManager) load(stored []StoredKey) error {
	active := map[string]*signingKey{}
	byID := map[string]*signingKey{}
	var jwks []map[string]string
	for _, sk := range stored {
		k, err := parseKey(sk)
		if err != nil {
			return err
		}
		byID[k.id] = k
		if k.retired.IsZero() {
			if cur, ok := active[k.alg]; !ok || k.created.After(cur.created) {
				active[k.alg] = k
			}
		}
		jwk, err := publicJWK(k)
		if err != nil {
			return err
		}
		jwks = append(jwks, jwk)
	}
	body, err := json.Marshal(map[string]any{"keys": jwks})
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.active, m.byID, m.jwks = active, byID, body
	m.mu.Unlock()
	return nil
}

// Run rotates keys on schedule until ctx ends.
func (m *KeyManager) Run(ctx context.Context) {
	interval := min(m.rotation/10, time.Hour)
	t := time.NewTicker(max(interval, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.Rotate(ctx); err != nil && ctx.Err() == nil {
				m.log.Error("rotating signing keys", zap.Error(err))
			}
		}
	}
}

// JWKS returns the JSON Web Key Set of every published key.
func (m *KeyManager) JWKS() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.jwks
}

func (m *KeyManager) signer(alg string) (*signingKey, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	k, ok := m.active[alg]
	if !ok {
		return nil, fmt.Errorf("no active %s signing key", alg)
	}
	return k, nil
}

func (m *KeyManager) publicKey(kid string) (*signingKey, bool) {
	m.mu.RLock()
	k, ok := m.byID[kid]
	m.mu.RUnlock()
	if ok || kid == "" {
		return k, ok
	}
	m.mu.Lock()
	if m.now().Sub(m.lastReload) < unknownKidReload {
		m.mu.Unlock()
		return nil, false
	}
	m.lastReload = m.now()
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stored, err := m.store.SigningKeys(ctx)
	if err != nil || m.load(stored) != nil {
		return nil, false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	k, ok = m.byID[kid]
	return k, ok
}

// GenerateKey makes a new key for alg: RSA 2048, P-256 or Ed25519.
func GenerateKey(alg string, now time.Time) (StoredKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case AlgRS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case AlgES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case AlgEdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return StoredKey{}, fmt.Errorf("unsupported signing algorithm %q", alg)
	}
	if err != nil {
		return StoredKey{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return StoredKey{}, err
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return StoredKey{}, err
	}
	sum := sha256.Sum256(pub)
	return StoredKey{
		ID:        base64.RawURLEncoding.EncodeToString(sum[:16]),
		Algorithm: alg,
		Private:   der,
		CreatedAt: now.UTC(),
	}, nil
}

func parseKey(sk StoredKey) (*signingKey, error) {
	parsed, err := x509.ParsePKCS8PrivateKey(sk.Private)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", sk.ID, err)
	}
	k := &signingKey{id: sk.ID, alg: sk.Algorithm, created: sk.CreatedAt, retired: sk.RetiredAt}
	switch p := parsed.(type) {
	case *rsa.PrivateKey:
		k.private, k.method = p, jwt.SigningMethodRS256
	case *ecdsa.PrivateKey:
		k.private, k.method = p, jwt.SigningMethodES256
	case ed25519.PrivateKey:
		k.private, k.method = p, jwt.SigningMethodEdDSA
	default:
		return nil, fmt.Errorf("signing key %s: unsupported key type %T", sk.ID, parsed)
	}
	if k.method.Alg() != sk.Algorithm {
		return nil, fmt.Errorf("signing key %s: stored as %s but is a %s key", sk.ID, sk.Algorithm, k.method.Alg())
	}
	k.public = k.private.Public()
	return k, nil
}

func publicJWK(k *signingKey) (map[string]string, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	jwk := map[string]string{"kid": k.id, "alg": k.alg, "use": "sig"}
	switch pub := k.public.(type) {
	case *rsa.PublicKey:
		jwk["kty"] = "RSA"
		jwk["n"] = b64(pub.N.Bytes())
		jwk["e"] = b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		ecdh, err := pub.ECDH()
		if err != nil {
			return nil, err
		}
		raw := ecdh.Bytes() // 0x04 || X || Y, each 32 bytes
		jwk["kty"], jwk["crv"] = "EC", "P-256"
		jwk["x"], jwk["y"] = b64(raw[1:33]), b64(raw[33:65])
	case ed25519.PublicKey:
		jwk["kty"], jwk["crv"], jwk["x"] = "OKP", "Ed25519", b64(pub)
	default:
		return nil, fmt.Errorf("unsupported public key type %T", pub)
	}
	return jwk, nil
}
