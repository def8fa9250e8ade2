package oauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// RemoteConfig configures verification of another server's tokens.
type RemoteConfig struct {
	// Issuer is the authorization server's issuer identifier; its metadata
	// is read from Issuer + /.well-known/oauth-authorization-server (or
	// openid-configuration).
	Issuer string
	// RefreshInterval is the least time between two fetches of the key set
	// (an unknown kid triggers a fetch at most this often). Default 30s.
	RefreshInterval time.Duration
	// IntrospectionClientID and IntrospectionSecret, when set, make every
	// token also be checked at the issuer's introspection endpoint (so its
	// revocations count), with answers cached for IntrospectionCache
	// (default 10s).
	IntrospectionClientID string
	IntrospectionSecret   string
	IntrospectionCache    time.Duration
	// HTTPClient fetches metadata and keys; default: 5-second timeout.
	HTTPClient *http.Client
}

// RemoteVerifier checks tokens of a remote issuer with its published keys,
// cached; the network is used only to refresh keys (on an unknown kid, at
// most once per interval) and, if configured, for introspection.
type RemoteVerifier struct {
	cfg    RemoteConfig
	log    *zap.Logger
	now    func() time.Time
	parser *jwt.Parser
	cache  *claimsCache

	fetchMu   sync.Mutex // one fetch at a time
	mu        sync.RWMutex
	keys      map[string]remoteKey
	lastFetch time.Time
	jwksURI   string
	introURI  string

	introMu        sync.Mutex
	introCache     map[string]introAnswer // jti → answer
	introDownUntil time.Time              // after a failure, fail fast until then
	introGroup     singleflight.Group     // one call per token at a time
}

// introFailureBackoff is how long a failed introspection makes the guard
// answer 503 at once instead of calling the issuer again.
const introFailureBackoff = 2 * time.Second

type remoteKey struct {
	alg string
	key crypto.PublicKey
}

type introAnswer struct {
	active bool
	until  time.Time
}

// NewRemoteVerifier returns a verifier for cfg.Issuer; keys are fetched on
// first use (call Prefetch to fetch them now).
func NewRemoteVerifier(cfg RemoteConfig, log *zap.Logger) *RemoteVerifier {
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 30 * time.Second
	}
	if cfg.IntrospectionCache <= 0 {
		cfg.IntrospectionCache = 10 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if log == nil {
		log = zap.NewNop()
	}
	v := &RemoteVerifier{cfg: cfg, log: log, now: time.Now, keys: map[string]remoteKey{}, introCache: map[string]introAnswer{}}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(SupportedAlgs),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(verifyLeeway),
	)
	v.cache = newClaimsCache(v.now)
	return v
}

// Issuer is the issuer the verifier trusts.
func (v *RemoteVerifier) Issuer() string { return v.cfg.Issuer }

// Prefetch loads the metadata and keys now (at start), logging failures:
// an issuer that is down at start is retried on the first token.
func (v *RemoteVerifier) Prefetch(ctx context.Context) {
	if err := v.refresh(ctx, true); err != nil {
		v.log.Warn("could not fetch the issuer's keys; will retry on demand", zap.String("issuer", v.cfg.Issuer), zap.Error(err))
	}
}

// Verify checks raw against the issuer's keys (and introspection when
// configured).
func (v *RemoteVerifier) Verify(ctx context.Context, raw string) (*AccessClaims, error) {
	claims := v.cache.get(raw)
	if claims == nil {
		claims = new(AccessClaims)
		var unavailable bool
		_, err := v.parser.ParseWithClaims(raw, claims, func(tok *jwt.Token) (any, error) {
			typ, _ := tok.Header["typ"].(string)
			if !strings.EqualFold(typ, AccessTokenType) && !strings.EqualFold(typ, "application/"+AccessTokenType) {
				return nil, errors.New("not an access token (typ)")
			}
			kid, _ := tok.Header["kid"].(string)
			k, ok, err := v.key(ctx, kid)
			if err != nil {
				unavailable = true
				return nil, err
			}
			if !ok {
				return nil, errors.New("unknown signing key")
			}
			if tok.Method.Alg() != k.alg {
				return nil, errors.New("algorithm does not match the key")
			}
			return k.key, nil
		})
		if unavailable {
			return nil, ErrVerifierUnavailable
		}
		if err != nil {
			return nil, err
		}
		if claims.Subject == "" || claims.ID == "" {
			return nil, errors.New("token lacks sub or jti")
		}
		v.cache.put(raw, claims)
	}
	if v.cfg.IntrospectionClientID != "" {
		active, err := v.introspect(ctx, raw, claims)
		if err != nil {
			return nil, ErrVerifierUnavailable
		}
		if !active {
			return nil, errRevoked
		}
	}
	return claims, nil
}

// key finds a key by kid, refreshing the set when the kid is unknown and
// the last fetch is older than the interval. It returns an error only when
// no key set was ever loaded and the issuer cannot be reached.
func (v *RemoteVerifier) key(ctx context.Context, kid string) (remoteKey, bool, error) {
	v.mu.RLock()
	k, ok := v.keys[kid]
	loaded := !v.lastFetch.IsZero() && len(v.keys) > 0
	v.mu.RUnlock()
	if ok {
		return k, true, nil
	}
	err := v.refresh(ctx, false)
	v.mu.RLock()
	k, ok = v.keys[kid]
	loaded = loaded || len(v.keys) > 0
	v.mu.RUnlock()
	if !ok && !loaded {
		// Nothing was ever fetched: the token cannot be judged at all.
		if err == nil {
			err = errors.New("the issuer's keys have not been fetched yet")
		}
		return remoteKey{}, false, err
	}
	return k, ok, nil
}

// refresh fetches metadata and keys unless the last attempt is recent.
// Cached keys stay in use when the issuer is down.
func (v *RemoteVerifier) refresh(ctx context.Context, force bool) error {
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	v.mu.RLock()
	recent := v.now().Sub(v.lastFetch) < v.cfg.RefreshInterval
	v.mu.RUnlock()
	if recent && !force {
		return nil
	}
	v.mu.Lock()
	v.lastFetch = v.now()
	v.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	jwksURI, introURI, err := v.metadata(ctx)
	if err != nil {
		return err
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := v.getJSON(ctx, jwksURI, &set); err != nil {
		return fmt.Errorf("key set: %w", err)
	}
	keys := map[string]remoteKey{}
	for _, jwk := range set.Keys {
		kid, _ := jwk["kid"].(string)
		k, err := parseJWK(jwk)
		if err != nil || kid == "" {
			continue // keys we cannot use (encryption keys, unknown types) are skipped
		}
		keys[kid] = k
	}
	if len(keys) == 0 {
		return errors.New("the issuer publishes no usable signing key")
	}
	v.mu.Lock()
	v.keys, v.jwksURI, v.introURI = keys, jwksURI, introURI
	v.mu.Unlock()
	return nil
}

// metadata reads the issuer's RFC 8414 (or OIDC discovery) document.
func (v *RemoteVerifier) metadata(ctx context.Context) (jwksURI, introspection string, err error) {
	var md struct {
		Issuer                string `json:"issuer"`
		JWKSURI               string `json:"jwks_uri"`
		IntrospectionEndpoint string `json:"introspection_endpoint"`
	}
	err = v.getJSON(ctx, v.cfg.Issuer+"/.well-known/oauth-authorization-server", &md)
	if err != nil {
		err = v.getJSON(ctx, v.cfg.Issuer+"/.well-known/openid-configuration", &md)
	}
	if err != nil {
		return "", "", fmt.Errorf("metadata: %w", err)
	}
	if md.Issuer != v.cfg.Issuer {
		return "", "", fmt.Errorf("metadata names issuer %q, not %q", md.Issuer, v.cfg.Issuer)
	}
	if md.JWKSURI == "" {
		return "", "", errors.New("metadata has no jwks_uri")
	}
	return md.JWKSURI, md.IntrospectionEndpoint, nil
}

func (v *RemoteVerifier) getJSON(ctx context.Context, u string, dst any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(dst)
}

// introspect asks the issuer whether the token is active, caching the
// answer briefly (never past the token's expiry).
func (v *RemoteVerifier) introspect(ctx context.Context, raw string, claims *AccessClaims) (bool, error) {
	now := v.now()
	v.introMu.Lock()
	a, ok := v.introCache[claims.ID]
	if ok && now.Before(a.until) {
		v.introMu.Unlock()
		return a.active, nil
	}
	if now.Before(v.introDownUntil) {
		v.introMu.Unlock()
		return false, errors.New("the introspection endpoint failed moments ago")
	}
	v.introMu.Unlock()
	res, err, _ := v.introGroup.Do(claims.ID, func() (any, error) {
		return v.callIntrospection(ctx, raw, claims, now)
	})
	if err != nil {
		v.introMu.Lock()
		v.introDownUntil = v.now().Add(introFailureBackoff)
		v.introMu.Unlock()
		return false, err
	}
	return res.(bool), nil
}

// callIntrospection asks the issuer and caches the answer.
func (v *RemoteVerifier) callIntrospection(ctx context.Context, raw string, claims *AccessClaims, now time.Time) (bool, error) {
	// Shared by every request waiting on this token: not tied to one of
	// them going away.
	ctx = context.WithoutCancel(ctx)
	v.mu.RLock()
	endpoint := v.introURI
	v.mu.RUnlock()
	if endpoint == "" {
		if err := v.refresh(ctx, false); err != nil {
			return false, err
		}
		v.mu.RLock()
		endpoint = v.introURI
		v.mu.RUnlock()
		if endpoint == "" {
			return false, errors.New("the issuer has no introspection endpoint")
		}
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ictx, http.MethodPost, endpoint, strings.NewReader(url.Values{"token": {raw}}.Encode()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(v.cfg.IntrospectionClientID), url.QueryEscape(v.cfg.IntrospectionSecret))
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("introspection: %s", resp.Status)
	}
	var answer struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&answer); err != nil {
		return false, err
	}
	until := now.Add(v.cfg.IntrospectionCache)
	if claims.ExpiresAt != nil && claims.ExpiresAt.Before(until) {
		until = claims.ExpiresAt.Time
	}
	v.introMu.Lock()
	if len(v.introCache) >= claimsCacheMax {
		for k, e := range v.introCache {
			if !now.Before(e.until) {
				delete(v.introCache, k)
			}
		}
		if len(v.introCache) >= claimsCacheMax {
			clear(v.introCache)
		}
	}
	v.introCache[claims.ID] = introAnswer{active: answer.Active, until: until}
	v.introMu.Unlock()
	return answer.Active, nil
}

// parseJWK reads a public signing key: RSA, EC P-256 or Ed25519. The
// algorithm is the JWK's alg, or the one its type implies; a key is only
// ever used with that algorithm.
func parseJWK(jwk map[string]any) (remoteKey, error) {
	str := func(k string) string { s, _ := jwk[k].(string); return s }
	b64 := func(k string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(str(k)) }
	if use := str("use"); use != "" && use != "sig" {
		return remoteKey{}, errors.New("not a signing key")
	}
	alg := str("alg")
	switch str("kty") {
	case "RSA":
		n, err1 := b64("n")
		e, err2 := b64("e")
		if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
			return remoteKey{}, errors.New("bad RSA key")
		}
		if alg == "" {
			alg = AlgRS256
		}
		if alg != AlgRS256 {
			return remoteKey{}, errors.New("unsupported algorithm")
		}
		return remoteKey{alg: alg, key: &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}}, nil
	case "EC":
		x, err1 := b64("x")
		y, err2 := b64("y")
		if err1 != nil || err2 != nil || str("crv") != "P-256" || len(x) != 32 || len(y) != 32 {
			return remoteKey{}, errors.New("bad EC key")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return remoteKey{}, err
		}
		if alg == "" {
			alg = AlgES256
		}
		if alg != AlgES256 {
			return remoteKey{}, errors.New("unsupported algorithm")
		}
		return remoteKey{alg: alg, key: pub}, nil
	case "OKP":
		x, err := b64("x")
		if err != nil || str("crv") != "Ed25519" || len(x) != ed25519.PublicKeySize {
			return remoteKey{}, errors.New("bad Ed25519 key")
		}
		if alg == "" {
			alg = AlgEdDSA
		}
		if alg != AlgEdDSA && alg != "Ed25519" {
			return remoteKey{}, errors.New("unsupported algorithm")
		}
		return remoteKey{alg: AlgEdDSA, key: ed25519.PublicKey(x)}, nil
	}
	return remoteKey{}, errors.New("unsupported key type")
}
