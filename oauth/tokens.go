package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// AccessTokenType is the JWT typ of access tokens (RFC 9068 §2.1).
const AccessTokenType = "at+jwt"

// verifyLeeway absorbs clock skew between this server and its peers.
const verifyLeeway = 30 * time.Second

// AccessClaims are the claims of an RFC 9068 access token.
type AccessClaims struct {
	jwt.RegisteredClaims
	ClientID  string `json:"client_id"`
	Scope     string `json:"scope"`
	ModelName string `json:"model_name,omitempty"`
	AuthTime  int64  `json:"auth_time,omitempty"`
	Act       *Actor `json:"act,omitempty"`
	// Cnf binds the token to a DPoP key (RFC 9449 §6.1).
	Cnf *Confirmation `json:"cnf,omitempty"`
	// IDP is the trusted IdP whose subject sub is (a redeemed ID-JAG of
	// a trusted_idp with subject external); empty: sub is an agent here.
	IDP string `json:"idp,omitempty"`
}

// Confirmation is the cnf claim: the thumbprint of the key a token is
// bound to.
type Confirmation struct {
	JKT string `json:"jkt"`
}

// BoundKey is the thumbprint of the DPoP key the token is bound to, or "".
func (c *AccessClaims) BoundKey() string {
	if c.Cnf == nil {
		return ""
	}
	return c.Cnf.JKT
}

// TokenType is how the token is sent: DPoP when bound, else Bearer.
func (c *AccessClaims) TokenType() string {
	if c.BoundKey() != "" {
		return TokenTypeDPoP
	}
	return TokenTypeBearer
}

// Actor is the RFC 8693 act claim: who is acting on the subject's behalf,
// and, nested, who acted before.
type Actor struct {
	Subject string `json:"sub"`
	Act     *Actor `json:"act,omitempty"`
}

// Scopes returns the scope claim as a list.
func (c *AccessClaims) Scopes() []string { return strings.Fields(c.Scope) }

// HasScope reports whether the token carries scope s.
func (c *AccessClaims) HasScope(s string) bool { return slices.Contains(c.Scopes(), s) }

// AccessGrant is what an access token is issued for.
type AccessGrant struct {
	Subject   string
	ClientID  string
	Scopes    []string
	Audience  []string // empty: the issuer
	ModelName string
	AuthTime  time.Time
	Actor     *Actor
	// JTIPrefix is what the token descends from: its refresh-token family,
	// or the jti of the token it was exchanged from. Revoking that voids
	// this token too (Revocations checks every prefix of a jti).
	JTIPrefix string
	// NotAfter caps the expiry (a token exchanged from another never
	// outlives it); zero means the full lifetime.
	NotAfter time.Time
	// ID is the jti to use, when the caller chose it in advance (to record
	// it before signing); empty means a new one after JTIPrefix.
	ID string
	// JKT binds the token to the DPoP key of that thumbprint.
	JKT string
	// IDP names the IdP whose subject Subject is.
	IDP string
}

// IssuedToken is a signed access token and what the token response says
// about it.
type IssuedToken struct {
	Token     string
	ID        string
	ExpiresIn int64
	Scope     string
	ExpiresAt time.Time
	// Type is the token_type: DPoP for a bound token, else Bearer.
	Type string
}

// KeyLookup finds the verification key of a kid. It returns an error only
// when no key could be looked up at all (a remote issuer that cannot be
// reached); an unknown kid is (PublicKey{}, false, nil).
type KeyLookup func(ctx context.Context, kid string) (PublicKey, bool, error)

// ErrKeysUnavailable wraps the error of a KeyLookup that could not look
// keys up at all: the token cannot be judged, which is not its fault.
var ErrKeysUnavailable = errors.New("the issuer's keys cannot be fetched")

// NewAccessTokenParser returns the parser every access-token check uses:
// the allowed algorithms, the issuer, exp required, iat checked, and a
// small leeway. now may be nil (time.Now).
func NewAccessTokenParser(issuer string, now func() time.Time) *jwt.Parser {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(SupportedAlgs),
		jwt.WithIssuer(issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(verifyLeeway),
	}
	if now != nil {
		opts = append(opts, jwt.WithTimeFunc(now))
	}
	return jwt.NewParser(opts...)
}

// ParseAccessToken is the one check of an RFC 9068 access token, for this
// server's tokens and a remote issuer's alike: typ at+jwt, the key picked
// by kid, the algorithm that key was made for (which is what stops alg
// confusion, an HMAC token keyed with a public key), the signature, iss,
// exp/nbf/iat with leeway, and sub and jti present. Audience and scopes are
// the caller's to check.
func ParseAccessToken(ctx context.Context, parser *jwt.Parser, raw string, lookup KeyLookup) (*AccessClaims, error) {
	claims := new(AccessClaims)
	_, err := parser.ParseWithClaims(raw, claims, func(tok *jwt.Token) (any, error) {
		typ, _ := tok.Header["typ"].(string)
		if !strings.EqualFold(typ, AccessTokenType) && !strings.EqualFold(typ, "application/"+AccessTokenType) {
			return nil, errors.New("not an access token (typ)")
		}
		kid, _ := tok.Header["kid"].(string)
		key, ok, err := lookup(ctx, kid)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
		}
		if !ok {
			return nil, errors.New("unknown signing key")
		}
		if tok.Method.Alg() != key.Alg {
			return nil, errors.New("algorithm does not match the key")
		}
		return key.Key, nil
	})
	if err != nil {
		return nil, err
	}
	if claims.Subject == "" || claims.ID == "" {
		return nil, errors.New("token lacks sub or jti")
	}
	return claims, nil
}

// Tokens signs and verifies this server's access and ID tokens.
type Tokens struct {
	issuer   string
	lifetime time.Duration
	alg      string
	keys     *KeyManager
	now      func() time.Time
	parser   *jwt.Parser
}

// NewTokens returns a token service signing with the active key for alg.
func NewTokens(issuer string, lifetime time.Duration, alg string, keys *KeyManager, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	return &Tokens{issuer: issuer, lifetime: lifetime, alg: alg, keys: keys, now: now, parser: NewAccessTokenParser(issuer, now)}
}

// Issuer returns the issuer identifier tokens carry.
func (t *Tokens) Issuer() string { return t.issuer }

// Alg is the algorithm access tokens are signed with.
func (t *Tokens) Alg() string { return t.alg }

// IssueAccessToken signs an RFC 9068 access token for g.
func (t *Tokens) IssueAccessToken(g AccessGrant) (IssuedToken, error) {
	key, err := t.keys.signer(t.alg)
	if err != nil {
		return IssuedToken{}, err
	}
	now := t.now().Truncate(time.Second)
	exp := now.Add(t.lifetime)
	if !g.NotAfter.IsZero() && g.NotAfter.Before(exp) {
		exp = g.NotAfter
	}
	aud := g.Audience
	if len(aud) == 0 {
		aud = []string{t.issuer}
	}
	jti := g.ID
	if jti == "" {
		jti = NewTokenID(g.JTIPrefix)
	}
	scope := strings.Join(g.Scopes, " ")
	claims := AccessClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    t.issuer,
			Subject:   g.Subject,
			Audience:  aud,
			ExpiresAt: jwt.NewNumericDate(exp),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        jti,
		},
		ClientID:  g.ClientID,
		Scope:     scope,
		ModelName: g.ModelName,
		Act:       g.Actor,
		IDP:       g.IDP,
	}
	typ := TokenTypeBearer
	if g.JKT != "" {
		claims.Cnf, typ = &Confirmation{JKT: g.JKT}, TokenTypeDPoP
	}
	if !g.AuthTime.IsZero() {
		claims.AuthTime = g.AuthTime.Unix()
	}
	tok := jwt.NewWithClaims(key.method, claims)
	tok.Header["typ"] = AccessTokenType
	tok.Header["kid"] = key.id
	signed, err := tok.SignedString(key.private)
	if err != nil {
		return IssuedToken{}, fmt.Errorf("signing access token: %w", err)
	}
	return IssuedToken{Token: signed, ID: jti, ExpiresIn: int64(exp.Sub(now) / time.Second), Scope: scope, ExpiresAt: exp, Type: typ}, nil
}

// ExpiryOf is when a token issued now for g would expire.
func (t *Tokens) ExpiryOf(g AccessGrant) time.Time {
	exp := t.now().Truncate(time.Second).Add(t.lifetime)
	if !g.NotAfter.IsZero() && g.NotAfter.Before(exp) {
		exp = g.NotAfter
	}
	return exp
}

// NewTokenID returns a fresh jti: 128 random bits, after prefix and a dot
// when the token descends from something (Revocations checks every
// prefix).
func NewTokenID(prefix string) string {
	id := randomToken(16)
	if prefix != "" {
		return prefix + "." + id
	}
	return id
}

// VerifyAccessToken checks an access token issued here (ParseAccessToken
// with this server's keys) and that aud contains audience, unless audience
// is empty.
func (t *Tokens) VerifyAccessToken(ctx context.Context, raw, audience string) (*AccessClaims, error) {
	claims, err := ParseAccessToken(ctx, t.parser, raw, t.keys.Lookup)
	if err != nil {
		return nil, err
	}
	if audience != "" && !slices.Contains(claims.Audience, audience) {
		return nil, errors.New("token audience does not include " + audience)
	}
	return claims, nil
}

// IDGrant is what an ID token says.
type IDGrant struct {
	// Alg signs the token; empty means RS256.
	Alg         string
	Subject     string
	ClientID    string
	Nonce       string
	AuthTime    time.Time
	AccessToken string // for at_hash
	Claims      map[string]any
}

// IssueIDToken signs an OpenID Connect ID token with the key of g.Alg:
// RS256 unless the client registered another (OIDC Core §3.1.3.7 makes
// RS256 the one every client accepts).
func (t *Tokens) IssueIDToken(g IDGrant) (string, error) {
	alg := g.Alg
	if alg == "" {
		alg = AlgRS256
	}
	key, err := t.keys.signer(alg)
	if err != nil {
		return "", err
	}
	now := t.now().Truncate(time.Second)
	claims := jwt.MapClaims{}
	for k, v := range g.Claims {
		claims[k] = v
	}
	claims["iss"] = t.issuer
	claims["sub"] = g.Subject
	claims["aud"] = g.ClientID
	claims["azp"] = g.ClientID
	claims["iat"] = now.Unix()
	claims["exp"] = now.Add(t.lifetime).Unix()
	if !g.AuthTime.IsZero() {
		claims["auth_time"] = g.AuthTime.Unix()
	}
	if g.Nonce != "" {
		claims["nonce"] = g.Nonce
	}
	if g.AccessToken != "" {
		// at_hash: the left half of SHA-256 of the access token (OIDC §3.1.3.6).
		sum := sha256.Sum256([]byte(g.AccessToken))
		claims["at_hash"] = base64.RawURLEncoding.EncodeToString(sum[:16])
	}
	tok := jwt.NewWithClaims(key.method, claims)
	tok.Header["typ"] = "JWT"
	tok.Header["kid"] = key.id
	return tok.SignedString(key.private)
}

// Lifetime is how long access tokens live.
func (t *Tokens) Lifetime() time.Duration { return t.lifetime }

// IDTokenClaims are what an ID token this server issued says about whom.
type IDTokenClaims struct {
	jwt.RegisteredClaims
	AuthTime int64 `json:"auth_time,omitempty"`
}

// VerifyIDToken checks an ID token this server issued to clientID: its
// signature by a key of this server with the algorithm that key was made
// for, iss, aud (and azp when present) the client, exp.
func (t *Tokens) VerifyIDToken(ctx context.Context, raw, clientID string) (*IDTokenClaims, error) {
	claims := new(IDTokenClaims)
	parser := jwt.NewParser(jwt.WithValidMethods(SupportedAlgs), jwt.WithIssuer(t.issuer), jwt.WithAudience(clientID),
		jwt.WithExpirationRequired(), jwt.WithLeeway(verifyLeeway), jwt.WithTimeFunc(t.now))
	_, err := parser.ParseWithClaims(raw, claims, func(tok *jwt.Token) (any, error) {
		if typ, _ := tok.Header["typ"].(string); typ != "" && !strings.EqualFold(typ, "JWT") {
			return nil, errors.New("not an ID token (typ)")
		}
		kid, _ := tok.Header["kid"].(string)
		key, ok, err := t.keys.Lookup(ctx, kid)
		if err != nil || !ok {
			return nil, errors.New("unknown signing key")
		}
		if tok.Method.Alg() != key.Alg {
			return nil, errors.New("algorithm does not match the key")
		}
		return key.Key, nil
	})
	if err != nil {
		return nil, err
	}
	if claims.Subject == "" || claims.IssuedAt == nil {
		return nil, errors.New("the ID token lacks sub or iat")
	}
	return claims, nil
}

// IDJAGGrant is what an ID-JAG this server issues says.
type IDJAGGrant struct {
	Subject  string
	Audience string // the authorization server's issuer
	ClientID string // the client at that server
	Scopes   []string
	Resource string
	AuthTime int64
}

// IssueIDJAG signs an Identity Assertion JWT Authorization Grant with the
// access tokens' key: typ oauth-id-jag+jwt, five minutes.
func (t *Tokens) IssueIDJAG(g IDJAGGrant) (IssuedToken, error) {
	key, err := t.keys.signer(t.alg)
	if err != nil {
		return IssuedToken{}, err
	}
	now := t.now().Truncate(time.Second)
	exp := now.Add(maxGrantLifetime)
	jti := NewTokenID("")
	scope := strings.Join(g.Scopes, " ")
	claims := jwt.MapClaims{
		"iss": t.issuer, "sub": g.Subject, "aud": g.Audience, "client_id": g.ClientID, "jti": jti,
		"iat": now.Unix(), "exp": exp.Unix(),
	}
	if scope != "" {
		claims["scope"] = scope
	}
	if g.Resource != "" {
		claims["resource"] = g.Resource
	}
	if g.AuthTime > 0 {
		claims["auth_time"] = g.AuthTime
	}
	tok := jwt.NewWithClaims(key.method, claims)
	tok.Header["typ"] = IDJAGType
	tok.Header["kid"] = key.id
	signed, err := tok.SignedString(key.private)
	if err != nil {
		return IssuedToken{}, fmt.Errorf("signing an ID-JAG: %w", err)
	}
	return IssuedToken{Token: signed, ID: jti, ExpiresIn: int64(exp.Sub(now) / time.Second), Scope: scope, ExpiresAt: exp, Type: "N_A"}, nil
}
