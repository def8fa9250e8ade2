package guard_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authagent/caddy-authagent/guard"
	"github.com/authagent/caddy-authagent/oauth"
)

// proofKey is a client's DPoP key pair and its public JWK.
type proofKey struct {
	private crypto.Signer
	method  jwt.SigningMethod
	jwk     map[string]any
}

func newProofKey(tb testing.TB, alg string) proofKey {
	tb.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	switch alg {
	case oauth.AlgES256:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		raw, _ := priv.PublicKey.ECDH()
		b := raw.Bytes()
		return proofKey{priv, jwt.SigningMethodES256, map[string]any{"kty": "EC", "crv": "P-256", "x": b64(b[1:33]), "y": b64(b[33:])}}
	case oauth.AlgEdDSA:
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		return proofKey{priv, jwt.SigningMethodEdDSA, map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(pub)}}
	}
	tb.Fatalf("no proof key for %s", alg)
	return proofKey{}
}

// proof is a fresh DPoP proof (its own jti) for a request with the
// access token.
func (k proofKey) proof(tb testing.TB, method, htu, token string) string {
	tb.Helper()
	tok := jwt.NewWithClaims(k.method, jwt.MapClaims{
		"jti": rand.Text(), "htm": method, "htu": htu, "iat": time.Now().Unix(), "ath": oauth.AccessTokenHash(token)})
	tok.Header["typ"] = oauth.DPoPProofType
	tok.Header["jwk"] = k.jwk
	s, err := tok.SignedString(k.private)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkGuardDPoP is Decide on a request that passes, side by side in
// one run: a bearer token, and a DPoP-bound token with a fresh proof per
// request (ES256 and EdDSA proofs). Both tokens are served from the
// verifier's cache after the first request; what the DPoP cases add is
// the proof: its parsing, the signature, htm/htu/iat/ath, the binding to
// cnf.jkt and the replay record of its jti (in this process, as with
// Badger). Signing the proofs is the client's work: they are all made
// before the timer starts. The ratio the issue asks about is that of
// requests per second: bearer ns/op over DPoP ns/op.
func BenchmarkGuardDPoP(b *testing.B) {
	run := func(b *testing.B, alg string) {
		tokens, keys, rev := newTokens(b, oauth.AlgES256)
		g := &guard.Guard{
			Verifier: guard.NewLocalVerifier(issuer, keys.Lookup, rev), Scopes: []string{"data:read"},
			DPoP: oauth.NewDPoPVerifier(oauth.DPoPConfig{Replays: oauth.NewLocalReplays(nil)}),
		}
		grant := oauth.AccessGrant{Subject: "bot", ClientID: "bot", Scopes: []string{"profile", "data:read"}}
		var key proofKey
		scheme := oauth.TokenTypeBearer
		if alg != "" {
			key = newProofKey(b, alg)
			jkt, err := oauth.JWKThumbprint(key.jwk)
			if err != nil {
				b.Fatal(err)
			}
			grant.JKT, scheme = jkt, oauth.TokenTypeDPoP
		}
		tok, err := tokens.IssueAccessToken(grant)
		if err != nil {
			b.Fatal(err)
		}
		r := httptest.NewRequest("GET", "https://api.example.com/data", nil)
		r.Header.Set("Authorization", scheme+" "+tok.Token)
		// One proof more than b.N: the first request, before the timer,
		// puts the token's claims and the proof's key in their caches.
		var proofs []string
		if alg != "" {
			proofs = make([]string, b.N+1)
			for i := range proofs {
				proofs[i] = key.proof(b, "GET", guard.RequestURL(r), tok.Token)
			}
		}
		dpopKey := http.CanonicalHeaderKey(oauth.DPoPHeader)
		decide := func(i int) {
			if proofs != nil {
				r.Header[dpopKey] = proofs[i : i+1]
			}
			if _, e, result := g.Decide(r); e != nil {
				b.Fatalf("%s: %s %s", result, e.Code, e.Description)
			}
		}
		decide(b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			decide(i)
		}
	}
	b.Run("Bearer", func(b *testing.B) { run(b, "") })
	b.Run("DPoP-ES256", func(b *testing.B) { run(b, oauth.AlgES256) })
	b.Run("DPoP-EdDSA", func(b *testing.B) { run(b, oauth.AlgEdDSA) })
}
