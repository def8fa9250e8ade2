package oauth

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authagent/caddy-authagent/internal/cache"
)

// Keys instead of secrets (RFC 7523 §2.2, OpenID Connect Core §9): a
// client or an agent registers public keys and authenticates with a JWT
// it signs, the client assertion, so it never sends a secret.

// Client assertion parameters.
const (
	ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	AuthPrivateKeyJWT   = "private_key_jwt"
)

// AssertionAlgs are the algorithms assertions may be signed with: the
// asymmetric ones, never none or HMAC.
var AssertionAlgs = []string{AlgES256, AlgEdDSA, AlgPS256, AlgRS256}

// AlgPS256 is RSASSA-PSS with SHA-256, accepted from clients' keys.
const AlgPS256 = "PS256"

const (
	// maxAssertionLifetime bounds exp - now: an assertion is made for one
	// request, and its jti is remembered until exp.
	maxAssertionLifetime = 5 * time.Minute
	// assertionSkew is the clock difference tolerated on iat and exp.
	assertionSkew = 60 * time.Second
	// maxClientKeys and maxJWKSBytes bound a registered key set,
	// maxAssertionBytes an assertion.
	maxClientKeys     = 16
	maxJWKSBytes      = 16 << 10
	maxAssertionBytes = 16 << 10
)

// clientKey is one public key of a client or an agent, with the algorithms
// it may verify (an RSA key without alg: RS256 and PS256).
type clientKey struct {
	kid  string
	algs []string
	key  any
}

// ClientKeys is a client's or an agent's public key set.
type ClientKeys []clientKey

// Kids are the key ids of the set, in order ("" for a key without one).
func (ks ClientKeys) Kids() []string {
	out := make([]string, 0, len(ks))
	for _, k := range ks {
		out = append(out, k.kid)
	}
	return out
}

// privateMembers are the JWK members of private (or symmetric) keys: a set
// holding one is refused, not trimmed, since whoever sent it leaked a key.
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// ParseClientKeys reads a JWK Set of public signing keys (RFC 7517): RSA
// of 2048 bits or more, EC P-256 or Ed25519, with use "sig" or none, at
// most 16 keys with distinct kids. A key with a private member is refused.
func ParseClientKeys(raw []byte) (ClientKeys, error) {
	if len(raw) > maxJWKSBytes {
		return nil, fmt.Errorf("the key set is larger than %d bytes", maxJWKSBytes)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, errors.New("the key set must be a JWK Set: {\"keys\": [...]}")
	}
	if len(set.Keys) == 0 || len(set.Keys) > maxClientKeys {
		return nil, fmt.Errorf("the key set must hold 1 to %d keys", maxClientKeys)
	}
	var out ClientKeys
	for i, jwk := range set.Keys {
		for _, m := range privateMembers {
			if _, ok := jwk[m]; ok {
				return nil, fmt.Errorf("key %d holds the private member %q: register public keys only (and replace the leaked key)", i, m)
			}
		}
		kid, _ := jwk["kid"].(string)
		if len(kid) > 256 {
			return nil, fmt.Errorf("key %d: kid is longer than 256 characters", i)
		}
		if kid != "" && slices.ContainsFunc(out, func(k clientKey) bool { return k.kid == kid }) {
			return nil, fmt.Errorf("key %d: kid %q is used twice", i, kid)
		}
		alg, _ := jwk["alg"].(string)
		pk, err := ParseJWK(jwk)
		if err != nil {
			return nil, fmt.Errorf("key %d: %v", i, err)
		}
		algs := []string{pk.Alg}
		if pk.Alg == AlgRS256 && alg == "" {
			algs = []string{AlgRS256, AlgPS256}
		}
		out = append(out, clientKey{kid: kid, algs: algs, key: pk.Key})
	}
	return out, nil
}

// CompactKeySet checks a JWK Set of public keys (ParseClientKeys) and
// returns it as compact JSON, as it is stored.
func CompactKeySet(raw string) (string, error) {
	if _, err := ParseClientKeys([]byte(raw)); err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(raw)); err != nil {
		return "", err
	}
	return b.String(), nil
}

// keySetCache holds parsed key sets by the hash of their text: a client or
// an agent authenticating in a loop would otherwise have its stored set
// parsed (and its points checked) on every request. Sets are read-only once
// parsed.
type keySetCache = cache.Cache[[sha256.Size]byte, ClientKeys]

const (
	keySetCacheEntries = 1000
	keySetCacheTTL     = 10 * time.Minute
)

// keySet is the parsed form of a stored key set.
func (p *provider) keySet(jwks string) (ClientKeys, error) {
	sum := sha256.Sum256([]byte(jwks))
	if ks, ok := p.keySets.Get(sum); ok {
		return ks, nil
	}
	ks, err := ParseClientKeys([]byte(jwks))
	if err != nil {
		return nil, err
	}
	p.keySets.Put(sum, ks, p.now().Add(keySetCacheTTL))
	return ks, nil
}

// forAssertion are the keys that may have signed a JWT with header alg and
// kid: the key with that kid, or without a kid every key of that alg
// (clients such as the MCP SDK send none).
func (ks ClientKeys) forAssertion(alg, kid string) []any {
	var out []any
	for _, k := range ks {
		if slices.Contains(k.algs, alg) && (kid == "" || k.kid == kid) {
			out = append(out, k.key)
		}
	}
	return out
}

// assertion is a verified client assertion.
type assertion struct {
	subject string
	jti     string
	exp     time.Time
}

// assertionKid reads the kid of an assertion's header, unverified ("" when
// it has none or is no JWT).
func assertionKid(raw string) string {
	tok, _, err := jwt.NewParser().ParseUnverified(raw, jwt.MapClaims{})
	if err != nil {
		return ""
	}
	kid, _ := tok.Header["kid"].(string)
	return kid
}

// assertionSubject reads iss of an assertion without verifying it, to know
// whose keys verify it when the request names no client_id.
func assertionSubject(raw string) (string, error) {
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, claims); err != nil {
		return "", errors.New("client_assertion is not a JWT")
	}
	iss, _ := claims["iss"].(string)
	if iss == "" {
		return "", errors.New("client_assertion has no iss")
	}
	return iss, nil
}

// verifyAssertion checks a client assertion of subject against keys:
// alg from the allow-list and the key's, the signature, iss = sub =
// subject, aud naming one of audiences, exp at most five minutes ahead,
// iat not in the future, and a jti. The jti's single use is the caller's
// to record.
func verifyAssertion(raw, subject string, keys ClientKeys, audiences []string, now time.Time) (*assertion, error) {
	claims := new(jwt.RegisteredClaims)
	parser := jwt.NewParser(jwt.WithValidMethods(AssertionAlgs), jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		jwt.WithLeeway(assertionSkew), jwt.WithTimeFunc(func() time.Time { return now }))
	_, err := parser.ParseWithClaims(raw, claims, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		candidates := keys.forAssertion(tok.Method.Alg(), kid)
		if len(candidates) == 0 {
			return nil, errors.New("no registered key of this alg and kid")
		}
		set := jwt.VerificationKeySet{}
		for _, k := range candidates {
			set.Keys = append(set.Keys, k)
		}
		return set, nil
	})
	switch {
	case err != nil:
		return nil, fmt.Errorf("client_assertion: %w", err)
	case claims.Issuer != subject || claims.Subject != subject:
		return nil, errors.New("client_assertion: iss and sub must both be the client_id")
	case !slices.ContainsFunc(audiences, func(a string) bool { return slices.Contains(claims.Audience, a) }):
		return nil, errors.New("client_assertion: aud must name this issuer")
	case claims.ExpiresAt.Sub(now) > maxAssertionLifetime+assertionSkew:
		return nil, errors.New("client_assertion: exp is more than 5 minutes ahead")
	case claims.ID == "" || len(claims.ID) > 256:
		return nil, errors.New("client_assertion: a jti (at most 256 characters) is required")
	}
	return &assertion{subject: subject, jti: claims.ID, exp: claims.ExpiresAt.Time}, nil
}

// replayKey is what records an assertion's jti: per subject (two clients
// may pick the same jti), hashed to a fixed length.
func (a *assertion) replayKey() string {
	sum := sha256.Sum256([]byte(a.subject + "\x00" + a.jti))
	return "assertion:" + hex.EncodeToString(sum[:])
}
