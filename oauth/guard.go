package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Verifier checks an access token: signature by kid with an allowed
// algorithm, typ, iss, exp/nbf/iat, and revocation. Audience and scopes are
// the guard's to check.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*AccessClaims, error)
	Issuer() string
}

// ErrVerifierUnavailable means the token could not be checked at all (a
// remote issuer's keys or introspection endpoint could not be reached):
// the guard answers 503, not 401.
var ErrVerifierUnavailable = errors.New("the token issuer cannot be reached")

// errRevoked is what Verify returns for a revoked token.
var errRevoked = errors.New("the access token was revoked")

// ProtectedResourcePath is where RFC 9728 metadata is served.
const ProtectedResourcePath = "/.well-known/oauth-protected-resource"

// Guard decides whether a request may pass to the upstream.
type Guard struct {
	Verifier Verifier
	// Scopes are all required.
	Scopes []string
	// Resource, when set, must be in the token's aud.
	Resource string
}

// Check authenticates the request's bearer token (Authorization header
// only) and checks audience and scopes.
func (g *Guard) Check(r *http.Request) (*AccessClaims, *Error) {
	raw, err := ParseBearer(r.Header.Get("Authorization"))
	if errors.Is(err, errNoBearer) {
		return nil, newError("invalid_token", 401, "a bearer token is required in the Authorization header")
	}
	if err != nil {
		return nil, newError("invalid_token", 401, err.Error())
	}
	claims, err := g.Verifier.Verify(r.Context(), raw)
	switch {
	case errors.Is(err, ErrVerifierUnavailable):
		return nil, newError("temporarily_unavailable", 503, "the token issuer cannot be reached; retry later").WithHeader("Retry-After", "5")
	case errors.Is(err, errRevoked):
		return nil, newError("invalid_token", 401, "the access token was revoked")
	case err != nil:
		return nil, newError("invalid_token", 401, "the access token is invalid or expired")
	}
	if g.Resource != "" && !slices.Contains(claims.Audience, g.Resource) {
		return nil, newError("invalid_token", 401, "the access token is not meant for "+g.Resource)
	}
	var missing []string
	have := claims.Scopes()
	for _, s := range g.Scopes {
		if !slices.Contains(have, s) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return nil, newError("insufficient_scope", 403, "this request requires scope: "+strings.Join(g.Scopes, " "))
	}
	return claims, nil
}

// ProtectedResourceMetadataPath is where a resource's RFC 9728 metadata
// lives: the well-known path, followed by the resource's own path when it
// has one (RFC 9728 §3.1), so that clients find metadata naming exactly
// that resource.
func ProtectedResourceMetadataPath(resource string) string {
	if u, err := url.Parse(resource); err == nil && resource != "" {
		if p := strings.TrimSuffix(u.Path, "/"); p != "" {
			return ProtectedResourcePath + p
		}
	}
	return ProtectedResourcePath
}

// WriteGuardError answers a refused request: RFC 6750's challenge with the
// RFC 9728 resource_metadata pointer (metadataPath on this origin), and the
// body in the SPEC's shape.
func WriteGuardError(w http.ResponseWriter, r *http.Request, e *Error, scopes []string, metadataPath string) {
	origin := requestOrigin(r)
	challenge := `Bearer realm="` + r.Host + `"`
	if r.Header.Get("Authorization") != "" || e.Code != "invalid_token" {
		challenge += `, error="` + e.Code + `", error_description="` + sanitizeQuoted(e.Description) + `"`
	}
	if e.Code == "insufficient_scope" {
		challenge += `, scope="` + strings.Join(scopes, " ") + `"`
	}
	if metadataPath == "" {
		metadataPath = ProtectedResourcePath
	}
	challenge += `, resource_metadata="` + origin + metadataPath + `"`
	if e.Status == 401 || e.Status == 403 {
		e = e.WithHeader("WWW-Authenticate", challenge)
	}
	WriteError(w, e)
}

func requestOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// WriteProtectedResourceMetadata serves RFC 9728 metadata for the guarded
// site: which authorization server issues its tokens and what scopes it
// wants, so an MCP client knowing only the API's URL can get a token.
func WriteProtectedResourceMetadata(w http.ResponseWriter, r *http.Request, issuer, resource string, scopes []string) {
	if resource == "" {
		resource = requestOrigin(r)
	}
	if scopes == nil {
		scopes = []string{}
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSONCacheable(w, map[string]any{
		"resource":                 resource,
		"authorization_servers":    []string{issuer},
		"scopes_supported":         scopes,
		"bearer_methods_supported": []string{"header"},
	})
}

// LocalVerifier checks tokens of this server's own issuer in process: no
// network hop, revocations from the in-process set.
type LocalVerifier struct {
	tokens      *Tokens
	revocations *Revocations
	cache       *claimsCache
}

// NewLocalVerifier returns a verifier for tokens signed by tokens' keys.
func NewLocalVerifier(tokens *Tokens, revocations *Revocations) *LocalVerifier {
	return &LocalVerifier{tokens: tokens, revocations: revocations, cache: newClaimsCache(tokens.now)}
}

// Issuer is the issuer the verifier trusts.
func (v *LocalVerifier) Issuer() string { return v.tokens.Issuer() }

// Verify checks raw; a token already verified is served from the cache
// until it expires, but its revocation is checked every time.
func (v *LocalVerifier) Verify(_ context.Context, raw string) (*AccessClaims, error) {
	claims := v.cache.get(raw)
	if claims == nil {
		var err error
		if claims, err = v.tokens.VerifyAccessToken(raw, ""); err != nil {
			return nil, err
		}
		v.cache.put(raw, claims)
	}
	if v.revocations.Revoked(claims) {
		return nil, errRevoked
	}
	return claims, nil
}

// claimsCache remembers verified tokens until they expire, so the signature
// check runs once per token, not once per request. Tokens are immutable, so
// a cached verification stays true until exp; revocation is checked by the
// caller on every use. The key is the whole token: a lookup is one string
// hash and, on a hit, one full comparison, so a token differing in any byte
// is verified afresh.
type claimsCache struct {
	mu      sync.RWMutex
	entries map[string]cachedClaims
	now     func() time.Time
}

type cachedClaims struct {
	claims *AccessClaims
	exp    time.Time
}

// claimsCacheMax bounds the cache: about 10 MB of tokens and claims.
const claimsCacheMax = 10000

func newClaimsCache(now func() time.Time) *claimsCache {
	if now == nil {
		now = time.Now
	}
	return &claimsCache{entries: make(map[string]cachedClaims), now: now}
}

func (c *claimsCache) get(raw string) *AccessClaims {
	c.mu.RLock()
	e, ok := c.entries[raw]
	c.mu.RUnlock()
	if !ok || !c.now().Before(e.exp) {
		return nil
	}
	return e.claims
}

func (c *claimsCache) put(raw string, claims *AccessClaims) {
	if claims.ExpiresAt == nil {
		return
	}
	// A copy, so the cache does not pin the request's header buffer.
	key := strings.Clone(raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= claimsCacheMax {
		now := c.now()
		for k, e := range c.entries {
			if !now.Before(e.exp) {
				delete(c.entries, k)
			}
		}
		// Still full: drop about a tenth, arbitrarily; they only cost a
		// signature check when seen again.
		for k := range c.entries {
			if len(c.entries) < claimsCacheMax*9/10 {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = cachedClaims{claims: claims, exp: claims.ExpiresAt.Time}
}
