// Package guard is the resource-server side: it decides whether a request
// to a protected API carries a valid access token with the required scopes
// (verifying tokens of this server in process, or of a remote issuer with
// its published keys), answers refusals with RFC 6750 and RFC 9728
// challenges, and serves the protected-resource metadata MCP clients read.
// It uses oauth only for the shared types: claims, keys, errors and the
// one access-token check.
package guard

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authagent/caddy-authagent/internal/cache"
	"github.com/authagent/caddy-authagent/oauth"
)

// Verifier checks an access token: signature by kid with an allowed
// algorithm, typ, iss, exp/nbf/iat, and revocation. Audience and scopes are
// the guard's to check.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*oauth.AccessClaims, error)
	Issuer() string
}

// ErrUnavailable means the token could not be checked at all (a remote
// issuer's keys or introspection endpoint could not be reached): the guard
// answers 503, not 401.
var ErrUnavailable = errors.New("the token issuer cannot be reached")

// ErrRevoked is what Verify returns for a revoked token.
var ErrRevoked = errors.New("the access token was revoked")

// ProtectedResourcePath is where RFC 9728 metadata is served.
const ProtectedResourcePath = "/.well-known/oauth-protected-resource"

// Guard decides whether a request may pass to the upstream.
type Guard struct {
	Verifier Verifier
	// Scopes are all required.
	Scopes []string
	// Resource, when set, must be in the token's aud.
	Resource string
	// DPoP checks the proofs of DPoP-bound tokens (RFC 9449 §7); nil
	// refuses such tokens.
	DPoP *oauth.DPoPVerifier
	// RequireDPoP refuses tokens sent as Bearer.
	RequireDPoP bool
	// URL is the URL the request was made to, without query (a proof's
	// htu); nil means RequestURL.
	URL func(*http.Request) string
}

// Results of a guard's decision: why a request was refused, or that it
// was allowed (the result label of auth_agent_guard_decisions_total).
const (
	ResultAllowed           = "allowed"
	ResultMissingToken      = "missing_token"
	ResultMalformedToken    = "malformed_token"
	ResultInvalidToken      = "invalid_token" // signature, issuer, type, expiry
	ResultRevoked           = "revoked"
	ResultWrongAudience     = "wrong_audience"
	ResultInsufficientScope = "insufficient_scope"
	ResultUnavailable       = "issuer_unavailable"
	// ResultDPoP: a DPoP-bound token without a good proof by its key, or
	// a bound token sent as Bearer, or a bearer token where DPoP is
	// required.
	ResultDPoP = "dpop_refused"
)

// Check authenticates the request's bearer token (Authorization header
// only) and checks audience and scopes.
func (g *Guard) Check(r *http.Request) (*oauth.AccessClaims, *oauth.Error) {
	claims, e, _ := g.Decide(r)
	return claims, e
}

// Decide is Check, and says which result it came to.
func (g *Guard) Decide(r *http.Request) (*oauth.AccessClaims, *oauth.Error, string) {
	var header string
	if v := r.Header["Authorization"]; len(v) > 0 { // Header.Get, without canonicalizing a canonical key
		header = v[0]
	}
	scheme, raw, claims, known, err := g.verifyKnown(r.Context(), header)
	if !known {
		var perr error
		scheme, raw, perr = oauth.ParseAuthorization(header)
		if errors.Is(perr, oauth.ErrNoBearer) {
			return nil, oauth.ErrMissingToken(""), ResultMissingToken
		}
		if perr != nil {
			return nil, oauth.ErrInvalidToken("", perr.Error()), ResultMalformedToken
		}
		claims, err = g.Verifier.Verify(r.Context(), raw)
	}
	switch {
	case errors.Is(err, ErrUnavailable):
		return nil, oauth.ErrTemporarilyUnavailable("the token issuer cannot be reached; retry later"), ResultUnavailable
	case errors.Is(err, ErrRevoked):
		return nil, oauth.ErrInvalidToken("", "the access token was revoked"), ResultRevoked
	case err != nil:
		return nil, oauth.ErrInvalidToken("", "the access token is invalid or expired"), ResultInvalidToken
	}
	// The binding: the one check a bearer token pays for is that it has
	// no cnf.
	if scheme == oauth.TokenTypeBearer && g.RequireDPoP {
		return nil, errDPoPRequired, ResultDPoP
	}
	if scheme != oauth.TokenTypeBearer || claims.Cnf != nil {
		urls := []string{g.requestURL(r)}
		if err := g.DPoP.CheckBinding(r.Context(), scheme, raw, claims, r.Header.Values(oauth.DPoPHeader), r.Method, urls); err != nil {
			e := oauth.AsError(err)
			if e.Status >= 500 {
				return nil, e, ResultUnavailable
			}
			return nil, e, ResultDPoP
		}
	}
	if !g.audienceOK(claims.Audience, r) {
		return nil, oauth.ErrInvalidToken("", "the access token is not meant for this resource"), ResultWrongAudience
	}
	for _, s := range g.Scopes {
		if !hasScope(claims.Scope, s) {
			return nil, oauth.ErrInsufficientScope("", g.Scopes...), ResultInsufficientScope
		}
	}
	return claims, nil, ResultAllowed
}

// errDPoPRequired refuses a bearer token where DPoP is required.
var errDPoPRequired = oauth.DPoPRefusal("this resource takes only DPoP-bound tokens, sent with the DPoP scheme and a proof")

func (g *Guard) requestURL(r *http.Request) string {
	if g.URL != nil {
		return g.URL(r)
	}
	return RequestURL(r)
}

// RequestURL is the URL r was made to as this server sees it, without
// query: the origin oauth.RequestOrigin gives and the path.
func RequestURL(r *http.Request) string {
	return oauth.RequestOrigin(r) + r.URL.EscapedPath()
}

// cachedVerifier is a Verifier that remembers the tokens it verified (both
// of this package do).
type cachedVerifier interface {
	// verifyCached is Verify for a token verified before (revocation and
	// introspection are checked as by Verify); known is false, and nothing
	// was checked, when raw is not such a token.
	verifyCached(ctx context.Context, raw string) (claims *oauth.AccessClaims, known bool, err error)
}

// verifyKnown verifies the bearer token in header if the verifier has
// verified it before, without oauth.ParseBearer's byte-by-byte check of
// the token first: the split here is the one ParseBearer makes (scheme up
// to the first space, case-insensitive, then the token after any spaces),
// and a token the cache knows is one ParseBearer accepted, since Check is
// the only caller of Verify and always passes what ParseBearer returned.
// Any other header (known is false) takes the full path.
func (g *Guard) verifyKnown(ctx context.Context, header string) (scheme, raw string, claims *oauth.AccessClaims, known bool, err error) {
	cv, ok := g.Verifier.(cachedVerifier)
	if !ok {
		return "", "", nil, false, nil
	}
	scheme, raw, ok = strings.Cut(header, " ")
	switch {
	case !ok:
		return "", "", nil, false, nil
	case strings.EqualFold(scheme, oauth.TokenTypeBearer):
		scheme = oauth.TokenTypeBearer
	case strings.EqualFold(scheme, oauth.TokenTypeDPoP):
		scheme = oauth.TokenTypeDPoP
	default:
		return "", "", nil, false, nil
	}
	if raw = strings.TrimLeft(raw, " "); raw == "" {
		return "", "", nil, false, nil
	}
	claims, known, err = cv.verifyCached(ctx, raw)
	return scheme, raw, claims, known, err
}

// hasScope reports whether the space-separated scope list holds s, without
// splitting it into a slice.
func hasScope(scope, s string) bool {
	for f := range strings.FieldsSeq(scope) {
		if f == s {
			return true
		}
	}
	return false
}

// audienceOK reports whether a token meant for aud may be used here: with
// a Resource, aud must contain it (RFC 8707); without one, aud must name
// this site's origin, or be the issuer alone (a token issued without
// resource), so a token meant for another service never works here (MCP
// requires audience validation) — also one that names the issuer beside
// its resources, as a token granted openid does for userinfo.
func (g *Guard) audienceOK(aud []string, r *http.Request) bool {
	if g.Resource != "" {
		return slices.Contains(aud, g.Resource)
	}
	// The issuer first: it is what a token names by default, and the
	// site's origin takes building.
	if len(aud) == 1 && aud[0] == g.Verifier.Issuer() {
		return true
	}
	origin, ok := siteOrigin(r)
	if !ok {
		return false
	}
	for _, a := range aud {
		if strings.TrimSuffix(a, "/") == origin {
			return true
		}
	}
	return false
}

// siteOrigin is the origin the request was made to, for the audience
// check. Caddy routes by host name whatever port Host names, so a port in
// Host other than the one the connection arrived on names another service
// (https://api.example.com:8443), never this site: no origin then.
func siteOrigin(r *http.Request) (string, bool) {
	scheme, defaultPort := "http", "80"
	if r.TLS != nil {
		scheme, defaultPort = "https", "443"
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		return scheme + "://" + r.Host, true
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return "", false
	}
	if _, localPort, err := net.SplitHostPort(local.String()); err != nil || localPort != port {
		return "", false
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == defaultPort {
		return scheme + "://" + host, true
	}
	return scheme + "://" + host + ":" + port, true
}

// MetadataPath is where a resource's RFC 9728 metadata lives: the
// well-known path, followed by the resource's own path when it has one
// (RFC 9728 §3.1), so that clients find metadata naming exactly that
// resource.
func MetadataPath(resource string) string {
	if u, err := url.Parse(resource); err == nil && resource != "" {
		if p := strings.TrimSuffix(u.Path, "/"); p != "" {
			return ProtectedResourcePath + p
		}
	}
	return ProtectedResourcePath
}

// Challenges are what a guard's refusals offer.
type Challenges struct {
	// Scopes the resource wants, on the 401 too (MCP 2025-11-25): clients
	// pick what to ask for from it before any 403 step-up.
	Scopes []string
	// MetadataPath is where the resource's RFC 9728 metadata is, on this
	// origin; "" means ProtectedResourcePath.
	MetadataPath string
	// DPoP offers the DPoP scheme beside Bearer (RFC 9449 §7.1);
	// RequireDPoP offers it alone.
	DPoP, RequireDPoP bool
}

// WriteError answers a refused request: the RFC 6750 challenge (realm =
// the site, with the error only when credentials were sent, RFC 6750 §3.1)
// with the RFC 9728 resource_metadata pointer to the metadata on this
// origin, and the DPoP challenge with its algorithms (carrying the error
// when it is about DPoP, or the request used that scheme); the body in the
// SPEC's shape.
func WriteError(w http.ResponseWriter, r *http.Request, e *oauth.Error, c Challenges) {
	path := c.MetadataPath
	if path == "" {
		path = ProtectedResourcePath
	}
	if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden {
		md := requestOrigin(r) + path
		bearer := oauth.Challenge{Realm: r.Host, ResourceMetadata: md, Scope: c.Scopes}
		dpop := oauth.Challenge{Scheme: oauth.TokenTypeDPoP, Realm: r.Host, ResourceMetadata: md, Scope: c.Scopes, Algs: oauth.DPoPAlgs}
		auth := r.Header.Get("Authorization")
		failed := &bearer
		if c.RequireDPoP || oauth.IsDPoPError(e) || len(auth) > 5 && strings.EqualFold(auth[:5], "DPoP ") {
			failed = &dpop
		}
		if auth != "" || e.Code != "invalid_token" {
			failed.Error, failed.Description = e.Code, e.Description
		}
		var challenges []string
		if !c.RequireDPoP {
			challenges = append(challenges, bearer.String())
		}
		if c.DPoP || c.RequireDPoP {
			challenges = append(challenges, dpop.String())
		}
		e = e.WithHeaderValues("WWW-Authenticate", challenges...)
	}
	oauth.WriteError(w, e)
}

func requestOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// WriteMetadata serves RFC 9728 metadata for the guarded site: which
// authorization server issues its tokens and what scopes it wants, so an
// MCP client knowing only the API's URL can get a token. The resource is
// the guard's, or the site's origin: the identifier the metadata URL was
// built from (RFC 9728 §3.3), so strict clients accept it.
func WriteMetadata(w http.ResponseWriter, r *http.Request, issuer, resource string, scopes []string, requireDPoP bool) {
	if resource == "" {
		resource = requestOrigin(r)
	}
	if scopes == nil {
		scopes = []string{}
	}
	body, _ := json.Marshal(map[string]any{
		"resource":                          resource,
		"authorization_servers":             []string{issuer},
		"scopes_supported":                  scopes,
		"bearer_methods_supported":          []string{"header"},
		"dpop_signing_alg_values_supported": oauth.DPoPAlgs,
		"dpop_bound_access_tokens_required": requireDPoP,
	})
	oauth.WritePublicJSON(w, "application/json", body)
}

// RevocationChecker says whether a verified token was revoked since it was
// issued (oauth.Revocations: the process's view of the change log).
type RevocationChecker interface {
	Revoked(*oauth.AccessClaims) bool
}

// LocalVerifier checks tokens of this server's own issuer in process: no
// network hop, keys from the key manager, revocations from the in-process
// view of the change log.
type LocalVerifier struct {
	issuer      string
	parser      *jwt.Parser
	keys        oauth.KeyLookup
	revocations RevocationChecker
	cache       *claimsCache
}

// NewLocalVerifier returns a verifier for tokens of issuer signed by the
// keys lookup finds.
func NewLocalVerifier(issuer string, keys oauth.KeyLookup, revocations RevocationChecker) *LocalVerifier {
	return &LocalVerifier{issuer: issuer, parser: oauth.NewAccessTokenParser(issuer, nil), keys: keys, revocations: revocations, cache: newClaimsCache()}
}

// Issuer is the issuer the verifier trusts.
func (v *LocalVerifier) Issuer() string { return v.issuer }

// Verify checks raw; a token already verified is served from the cache
// until it expires, but its revocation is checked every time.
func (v *LocalVerifier) Verify(ctx context.Context, raw string) (*oauth.AccessClaims, error) {
	claims, err := v.cache.verify(ctx, raw, v.parser, v.keys)
	if err != nil {
		return nil, err
	}
	return v.checkRevoked(claims)
}

func (v *LocalVerifier) verifyCached(_ context.Context, raw string) (*oauth.AccessClaims, bool, error) {
	claims, ok := v.cache.c.Get(raw)
	if !ok {
		return nil, false, nil
	}
	claims, err := v.checkRevoked(claims)
	return claims, true, err
}

func (v *LocalVerifier) checkRevoked(claims *oauth.AccessClaims) (*oauth.AccessClaims, error) {
	if v.revocations.Revoked(claims) {
		return nil, ErrRevoked
	}
	return claims, nil
}

// claimsCache remembers verified tokens until they expire, so the signature
// check runs once per token, not once per request. Tokens are immutable, so
// a cached verification stays true until exp (no staleness); revocation is
// checked by the caller on every use. The key is the whole token: a lookup
// is one string hash and, on a hit, one full comparison, so a token
// differing in any byte is verified afresh.
type claimsCache struct {
	c *cache.Cache[string, *oauth.AccessClaims]
}

// claimsCacheMax bounds the cache: about 10 MB of tokens and claims.
const claimsCacheMax = 10000

func newClaimsCache() *claimsCache {
	return &claimsCache{c: cache.New[string, *oauth.AccessClaims](claimsCacheMax, nil)}
}

// verify returns the cached claims of raw, or checks it with
// oauth.ParseAccessToken and caches the result.
func (c *claimsCache) verify(ctx context.Context, raw string, p *jwt.Parser, keys oauth.KeyLookup) (*oauth.AccessClaims, error) {
	if claims, ok := c.c.Get(raw); ok {
		return claims, nil
	}
	claims, err := oauth.ParseAccessToken(ctx, p, raw, keys)
	if errors.Is(err, oauth.ErrKeysUnavailable) {
		return nil, ErrUnavailable
	}
	if err != nil {
		return nil, err
	}
	// A copy of the key, so the cache does not pin the request's header.
	c.c.Put(strings.Clone(raw), claims, claims.ExpiresAt.Time)
	return claims, nil
}
