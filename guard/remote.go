package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/authagent/caddy-authagent/internal/cache"
	"github.com/authagent/caddy-authagent/oauth"
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
	keys      map[string]oauth.PublicKey
	lastFetch time.Time
	jwksURI   string
	introURI  string

	// introCache holds introspection answers by jti for
	// IntrospectionCache (never past the token's expiry): a revocation at
	// the issuer is honoured here within that time.
	introCache     *cache.Cache[string, bool]
	introMu        sync.Mutex
	introDownUntil time.Time          // after a failure, fail fast until then
	introGroup     singleflight.Group // one call per token at a time
}

// introFailureBackoff is how long a failed introspection makes the guard
// answer 503 at once instead of calling the issuer again.
const introFailureBackoff = 2 * time.Second

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
	return &RemoteVerifier{cfg: cfg, log: log, now: time.Now, keys: map[string]oauth.PublicKey{},
		parser: oauth.NewAccessTokenParser(cfg.Issuer, nil), cache: newClaimsCache(),
		introCache: cache.New[string, bool](claimsCacheMax, nil)}
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
func (v *RemoteVerifier) Verify(ctx context.Context, raw string) (*oauth.AccessClaims, error) {
	claims, err := v.cache.verify(ctx, raw, v.parser, v.key)
	if err != nil {
		return nil, err
	}
	return v.checkActive(ctx, raw, claims)
}

func (v *RemoteVerifier) verifyCached(ctx context.Context, raw string) (*oauth.AccessClaims, bool, error) {
	claims, ok := v.cache.c.Get(raw)
	if !ok {
		return nil, false, nil
	}
	claims, err := v.checkActive(ctx, raw, claims)
	return claims, true, err
}

// checkActive asks the issuer's introspection endpoint, when configured,
// whether a verified token is still active.
func (v *RemoteVerifier) checkActive(ctx context.Context, raw string, claims *oauth.AccessClaims) (*oauth.AccessClaims, error) {
	if v.cfg.IntrospectionClientID != "" {
		active, err := v.introspect(ctx, raw, claims)
		if err != nil {
			return nil, ErrUnavailable
		}
		if !active {
			return nil, ErrRevoked
		}
	}
	return claims, nil
}

// key finds a key by kid, refreshing the set when the kid is unknown and
// the last fetch is older than the interval. It returns an error only when
// no key set was ever loaded and the issuer cannot be reached.
func (v *RemoteVerifier) key(ctx context.Context, kid string) (oauth.PublicKey, bool, error) {
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
		return oauth.PublicKey{}, false, err
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
	keys := map[string]oauth.PublicKey{}
	for _, jwk := range set.Keys {
		kid, _ := jwk["kid"].(string)
		k, err := oauth.ParseJWK(jwk)
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
func (v *RemoteVerifier) introspect(ctx context.Context, raw string, claims *oauth.AccessClaims) (bool, error) {
	if active, ok := v.introCache.Get(claims.ID); ok {
		return active, nil
	}
	v.introMu.Lock()
	down := v.now().Before(v.introDownUntil)
	v.introMu.Unlock()
	if down {
		return false, errors.New("the introspection endpoint failed moments ago")
	}
	res, err, _ := v.introGroup.Do(claims.ID, func() (any, error) {
		return v.callIntrospection(ctx, raw, claims)
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
func (v *RemoteVerifier) callIntrospection(ctx context.Context, raw string, claims *oauth.AccessClaims) (bool, error) {
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
	until := v.now().Add(v.cfg.IntrospectionCache)
	if claims.ExpiresAt != nil && claims.ExpiresAt.Before(until) {
		until = claims.ExpiresAt.Time
	}
	v.introCache.Put(claims.ID, answer.Active, until)
	return answer.Active, nil
}
