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
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/internal/metrics"
)

// Signing algorithms this server can use.
const (
	AlgRS256 = "RS256"
	AlgES256 = "ES256"
	AlgEdDSA = "EdDSA"
)

// SupportedAlgs lists the algorithms keys can be made for.
var SupportedAlgs = []string{AlgRS256, AlgES256, AlgEdDSA}

// PublicKey is a verification key and the one algorithm it verifies.
type PublicKey struct {
	Alg string
	Key crypto.PublicKey
}

// signingKey is a loaded key pair.
type signingKey struct {
	PublicKey
	id       string
	method   jwt.SigningMethod
	private  crypto.Signer
	created  time.Time
	activeAt time.Time
	retired  time.Time
}

// KeyPolicy is how keys are kept: for which algorithms, how often they are
// replaced, and how long a new key is published before it signs.
type KeyPolicy struct {
	Algs     []string
	Rotation time.Duration
	// PublishDelay is how long a new key waits between being stored and
	// signing, so that every process sharing the store has loaded it into
	// its JWKS (each reloads every few seconds) first. Zero when the store
	// is this process's alone.
	PublishDelay time.Duration
}

// keyReloadInterval is how often a KeyManager re-reads the key set: keys
// another process made appear in this one's JWKS within it.
const keyReloadInterval = 5 * time.Second

// unknownKidReload bounds how often an unknown kid makes the manager re-read
// the store, so forged tokens cannot turn into a stream of reads.
const unknownKidReload = time.Second

// KeyManager owns the signing keys: one active key per algorithm in use,
// a newer key waiting for its ActiveAt, and retired keys that stay
// published for one rotation period so tokens they signed keep verifying.
// The set lives in the store; rotations are decided by compare-and-swap,
// so a rotation happens once however many processes share the store.
type KeyManager struct {
	store  KeyStore
	policy KeyPolicy
	now    func() time.Time
	log    *zap.Logger
	// events get key.rotated when this process stores a rotation; set
	// before Run (SetEvents).
	events *events.Bus

	mu         sync.RWMutex
	version    uint64
	byID       map[string]*signingKey
	all        []*signingKey // newest first
	jwks       []byte
	lastReload time.Time
}

// NewKeyManager loads the keys from store, creating or rotating whatever is
// missing or due.
func NewKeyManager(ctx context.Context, store KeyStore, p KeyPolicy, now func() time.Time, log *zap.Logger) (*KeyManager, error) {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	for _, a := range p.Algs {
		if !slices.Contains(SupportedAlgs, a) {
			return nil, fmt.Errorf("unsupported signing algorithm %q", a)
		}
	}
	if p.Rotation <= 0 {
		return nil, errors.New("key rotation period must be positive")
	}
	p.Algs = slices.Compact(slices.Sorted(slices.Values(p.Algs)))
	m := &KeyManager{store: store, policy: p, now: now, log: log}
	if err := m.Rotate(ctx, false); err != nil {
		return nil, err
	}
	return m, nil
}

// Rotate reloads the stored set and applies the rotation plan: new keys
// for algorithms whose newest key is due (all of them when force is set),
// retirements and deletions. When another process swapped the set first,
// its decision stands and the plan is made again on what it stored.
func (m *KeyManager) Rotate(ctx context.Context, force bool) error {
	for range 5 {
		set, err := m.store.SigningKeys(ctx)
		if err != nil {
			return fmt.Errorf("loading signing keys: %w", err)
		}
		next, changed, err := PlanKeys(set.Keys, m.policy, m.now(), force)
		if err != nil {
			return err
		}
		if !changed {
			return m.load(set)
		}
		v, err := m.store.SwapSigningKeys(ctx, set.Version, next)
		if errors.Is(err, ErrStale) {
			continue // another process swapped first: plan again on its set
		}
		if err != nil {
			return fmt.Errorf("storing signing keys: %w", err)
		}
		m.logPlan(ctx, set.Keys, next)
		return m.load(KeySet{Version: v, Keys: next})
	}
	return errors.New("signing keys: the key set kept changing under this rotation")
}

// SetEvents makes the manager publish key.rotated to bus.
func (m *KeyManager) SetEvents(bus *events.Bus) {
	m.mu.Lock()
	m.events = bus
	m.mu.Unlock()
}

// logPlan logs what a rotation this process stored changed and, when it
// made keys (not the first set of an empty store), publishes key.rotated.
func (m *KeyManager) logPlan(ctx context.Context, before, after []StoredKey) {
	had := map[string]StoredKey{}
	for _, k := range before {
		had[k.ID] = k
	}
	kept := map[string]bool{}
	var created, retired []string
	for _, k := range after {
		kept[k.ID] = true
		old, ok := had[k.ID]
		switch {
		case !ok:
			created = append(created, k.ID)
			m.log.Info("created signing key", zap.String("kid", k.ID), zap.String("alg", k.Algorithm), zap.Time("active_at", k.ActiveAt))
		case old.RetiredAt.IsZero() && !k.RetiredAt.IsZero():
			retired = append(retired, k.ID)
			m.log.Info("retired signing key", zap.String("kid", k.ID), zap.String("alg", k.Algorithm))
		}
	}
	for id := range had {
		if !kept[id] {
			m.log.Info("deleted signing key", zap.String("kid", id))
		}
	}
	m.mu.RLock()
	bus := m.events
	m.mu.RUnlock()
	if len(created) > 0 && len(before) > 0 {
		bus.Publish(ctx, events.KeyRotated, map[string]any{"created_kids": created, "retired_kids": retired})
	}
}

// MetricState is what the key metrics report: when the key signing for
// each algorithm was made, and when the keys are next due (the newest key
// of an algorithm one rotation period old).
func (m *KeyManager) MetricState() metrics.KeyState {
	st := metrics.KeyState{Created: map[string]time.Time{}}
	for _, alg := range m.policy.Algs {
		if k, err := m.signer(alg); err == nil && k.Alg == alg {
			st.Created[alg] = k.created
		}
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	newest := map[string]bool{}
	for _, k := range m.all { // newest first
		if newest[k.Alg] || !k.retired.IsZero() {
			continue
		}
		newest[k.Alg] = true
		if due := k.created.Add(m.policy.Rotation); st.NextRotation.IsZero() || due.Before(st.NextRotation) {
			st.NextRotation = due
		}
	}
	return st
}

// PlanKeys decides the next key set from the current one, for policy p at
// time now: it is the whole rotation decision, free of I/O. A key is
// retired once a newer key of its algorithm is active (a key of an
// algorithm p does not use: once it is a rotation period old, or at once
// when force is set) and deleted one rotation period later; an algorithm
// whose newest key is older than the rotation period (or that has none, or
// every algorithm when force is set) gets a new key, active after the
// publish delay — at once when the set was empty, as nobody can have
// published anything yet. changed reports whether next differs.
func PlanKeys(current []StoredKey, p KeyPolicy, now time.Time, force bool) (next []StoredKey, changed bool, err error) {
	keys := slices.Clone(current)
	slices.SortFunc(keys, func(a, b StoredKey) int { return b.CreatedAt.Compare(a.CreatedAt) })
	empty := len(keys) == 0
	for _, alg := range p.Algs {
		newest := slices.IndexFunc(keys, func(k StoredKey) bool { return k.Algorithm == alg && k.RetiredAt.IsZero() })
		if !force && newest >= 0 && now.Sub(keys[newest].CreatedAt) < p.Rotation {
			continue
		}
		k, err := GenerateKey(alg, now)
		if err != nil {
			return nil, false, err
		}
		if !empty {
			k.ActiveAt = now.Add(p.PublishDelay).UTC()
		}
		keys = append([]StoredKey{k}, keys...)
		changed = true
	}
	out := keys[:0]
	for i, k := range keys {
		if k.RetiredAt.IsZero() {
			switch {
			case !slices.Contains(p.Algs, k.Algorithm):
				// Another process on the store (the other config during a
				// reload, another version in a rolling deploy) may still
				// sign with it: it retires when it would have been due,
				// or at once on a forced rotation.
				if due := k.CreatedAt.Add(p.Rotation); force || !now.Before(due) {
					k.RetiredAt, changed = now.UTC(), true
					if !force {
						k.RetiredAt = due.UTC()
					}
				}
			default:
				// A newer key of this algorithm that is active takes over.
				for _, newer := range keys[:i] {
					if newer.Algorithm == k.Algorithm && newer.RetiredAt.IsZero() && !activeAt(newer).After(now) {
						k.RetiredAt, changed = activeAt(newer), true
						break
					}
				}
			}
		}
		if !k.RetiredAt.IsZero() && now.Sub(k.RetiredAt) > p.Rotation {
			changed = true
			continue
		}
		out = append(out, k)
	}
	return out, changed, nil
}

// activeAt is when k may sign; keys stored before keys had an ActiveAt
// signed from their creation.
func activeAt(k StoredKey) time.Time {
	if k.ActiveAt.IsZero() {
		return k.CreatedAt
	}
	return k.ActiveAt
}

func (m *KeyManager) load(set KeySet) error {
	byID := map[string]*signingKey{}
	var all []*signingKey
	var jwks []map[string]string
	// The JWKS lists keys by kid, whatever order the store or a rotation
	// handed them over in, so every process and every reload publishes
	// the same document.
	stored := slices.SortedFunc(slices.Values(set.Keys), func(a, b StoredKey) int { return strings.Compare(a.ID, b.ID) })
	for _, sk := range stored {
		k, err := parseKey(sk)
		if err != nil {
			return err
		}
		byID[k.id] = k
		all = append(all, k)
		jwk, err := publicJWK(k)
		if err != nil {
			return err
		}
		jwks = append(jwks, jwk)
	}
	slices.SortFunc(all, func(a, b *signingKey) int { return b.created.Compare(a.created) })
	body, err := json.Marshal(map[string]any{"keys": jwks})
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastReload = m.now()
	if set.Version < m.version {
		return nil // a slower reader of an older set: keep the newer one
	}
	m.version, m.byID, m.all, m.jwks = set.Version, byID, all, body
	return nil
}

// Run reloads the key set every few seconds (keys another process made
// appear in this one's JWKS within that time) and rotates on schedule,
// until ctx ends.
func (m *KeyManager) Run(ctx context.Context) {
	every(ctx, keyReloadInterval, nil, func(ctx context.Context) error { return m.Rotate(ctx, false) }, m.log, "reloading signing keys")
}

// JWKS returns the JSON Web Key Set of every published key.
func (m *KeyManager) JWKS() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.jwks
}

// signer returns the key that signs for alg now: the newest active key of
// that algorithm. Until a newly configured algorithm's first key is
// active, tokens are signed with the newest active key of another
// algorithm (an RS256 key always exists, for ID tokens).
func (m *KeyManager) signer(alg string) (*signingKey, error) {
	now := m.now()
	m.mu.RLock()
	defer m.mu.RUnlock()
	var fallback *signingKey
	for _, k := range m.all {
		if !k.retired.IsZero() && !k.retired.After(now) || k.activeAt.After(now) {
			continue
		}
		if k.Alg == alg {
			return k, nil
		}
		if fallback == nil || k.Alg == AlgRS256 {
			fallback = k
		}
	}
	if fallback != nil {
		return fallback, nil
	}
	return nil, fmt.Errorf("no active %s signing key", alg)
}

// Lookup finds the public key of kid, re-reading the store (at most once a
// second) for a kid it does not know: another process may have just made
// it.
func (m *KeyManager) Lookup(ctx context.Context, kid string) (PublicKey, bool, error) {
	m.mu.RLock()
	k, ok := m.byID[kid]
	recent := m.now().Sub(m.lastReload) < unknownKidReload
	m.mu.RUnlock()
	if ok {
		return k.PublicKey, true, nil
	}
	if kid == "" || recent {
		return PublicKey{}, false, nil
	}
	set, err := m.store.SigningKeys(ctx)
	if err != nil {
		m.mu.Lock()
		m.lastReload = m.now()
		m.mu.Unlock()
		return PublicKey{}, false, nil
	}
	if err := m.load(set); err != nil {
		return PublicKey{}, false, nil
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if k, ok = m.byID[kid]; ok {
		return k.PublicKey, true, nil
	}
	return PublicKey{}, false, nil
}

// KeyInfo describes a published key (never its private part).
type KeyInfo struct {
	ID        string    `json:"kid"`
	Algorithm string    `json:"alg"`
	CreatedAt time.Time `json:"created_at"`
	ActiveAt  time.Time `json:"active_at"`
	RetiredAt time.Time `json:"retired_at,omitzero"`
}

// Keys lists the published keys, newest first.
func (m *KeyManager) Keys() []KeyInfo {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]KeyInfo, 0, len(m.all))
	for _, k := range m.all {
		out = append(out, KeyInfo{ID: k.id, Algorithm: k.Alg, CreatedAt: k.created, ActiveAt: k.activeAt, RetiredAt: k.retired})
	}
	return out
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
		ActiveAt:  now.UTC(),
	}, nil
}

func parseKey(sk StoredKey) (*signingKey, error) {
	parsed, err := x509.ParsePKCS8PrivateKey(sk.Private)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", sk.ID, err)
	}
	k := &signingKey{id: sk.ID, created: sk.CreatedAt, activeAt: activeAt(sk), retired: sk.RetiredAt}
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
	k.PublicKey = PublicKey{Alg: sk.Algorithm, Key: k.private.Public()}
	return k, nil
}

func publicJWK(k *signingKey) (map[string]string, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	jwk := map[string]string{"kid": k.id, "alg": k.Alg, "use": "sig"}
	switch pub := k.Key.(type) {
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

// ParseJWK reads a public signing key from a JWK: RSA (2048 bits or more;
// RS256, or PS256 when its alg says so), EC P-256 or Ed25519. The algorithm
// is the JWK's alg, or the one its type implies; a key is only ever used
// with that algorithm.
func ParseJWK(jwk map[string]any) (PublicKey, error) {
	str := func(k string) string { s, _ := jwk[k].(string); return s }
	b64 := func(k string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(str(k)) }
	if use := str("use"); use != "" && use != "sig" {
		return PublicKey{}, errors.New("not a signing key")
	}
	alg := str("alg")
	switch str("kty") {
	case "RSA":
		n, err1 := b64("n")
		e, err2 := b64("e")
		if err1 != nil || err2 != nil || len(n) == 0 || n[0] == 0 || len(e) == 0 || e[0] == 0 {
			return PublicKey{}, errors.New("bad RSA key")
		}
		// 2048 to 4096 bits, odd, with a public exponent of 3 to 65537: a
		// verification then costs what it should (a huge modulus or
		// exponent makes each one cost a CPU for a long time).
		bits := new(big.Int).SetBytes(n).BitLen()
		exp := new(big.Int).SetBytes(e)
		if bits < 2048 || bits > 4096 || n[len(n)-1]&1 == 0 || exp.BitLen() > 17 || exp.Int64() < 3 || exp.Int64() > 65537 || exp.Bit(0) == 0 {
			return PublicKey{}, errors.New("an RSA key must have 2048 to 4096 bits and a public exponent from 3 to 65537")
		}
		if alg == "" {
			alg = AlgRS256
		}
		if alg != AlgRS256 && alg != AlgPS256 {
			return PublicKey{}, errors.New("unsupported algorithm")
		}
		return PublicKey{Alg: alg, Key: &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}}, nil
	case "EC":
		x, err1 := b64("x")
		y, err2 := b64("y")
		if err1 != nil || err2 != nil || str("crv") != "P-256" || len(x) != 32 || len(y) != 32 {
			return PublicKey{}, errors.New("bad EC key")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return PublicKey{}, err
		}
		if alg != "" && alg != AlgES256 {
			return PublicKey{}, errors.New("unsupported algorithm")
		}
		return PublicKey{Alg: AlgES256, Key: pub}, nil
	case "OKP":
		x, err := b64("x")
		if err != nil || str("crv") != "Ed25519" || len(x) != ed25519.PublicKeySize {
			return PublicKey{}, errors.New("bad Ed25519 key")
		}
		if alg != "" && alg != AlgEdDSA && alg != "Ed25519" {
			return PublicKey{}, errors.New("unsupported algorithm")
		}
		return PublicKey{Alg: AlgEdDSA, Key: ed25519.PublicKey(x)}, nil
	}
	return PublicKey{}, errors.New("unsupported key type")
}
