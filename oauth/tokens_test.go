package oauth_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

const issuer = "https://auth.example.com"

func newTokens(t testing.TB, alg string, clk *clock) (*oauth.Tokens, *oauth.KeyManager) {
	t.Helper()
	store := storage.NewMemory(nil)
	t.Cleanup(func() { store.Close() })
	keys, err := oauth.NewKeyManager(context.Background(), store, oauth.KeyPolicy{Algs: []string{alg}, Rotation: 24 * time.Hour}, clk.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	return oauth.NewTokens(issuer, time.Hour, alg, keys, clk.now), keys
}

func TestTokenRoundTrip(t *testing.T) {
	for _, alg := range oauth.SupportedAlgs {
		t.Run(alg, func(t *testing.T) {
			clk := &clock{time.Now()}
			tokens, _ := newTokens(t, alg, clk)
			tok, err := tokens.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot", Scopes: []string{"profile", "data:read"}, ModelName: "gpt-4"})
			if err != nil {
				t.Fatal(err)
			}
			c, err := tokens.VerifyAccessToken(context.Background(), tok.Token, issuer)
			if err != nil {
				t.Fatal(err)
			}
			if c.Subject != "bot" || c.ClientID != "bot" || !c.HasScope("data:read") || c.ModelName != "gpt-4" || c.ID != tok.ID || tok.ExpiresIn != 3600 {
				t.Fatalf("claims %+v", c)
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	clk := &clock{time.Now()}
	tokens, keys := newTokens(t, oauth.AlgRS256, clk)
	good, err := tokens.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot", Scopes: []string{"profile"}})
	if err != nil {
		t.Fatal(err)
	}
	forAPI, _ := tokens.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot", Audience: []string{"https://api.example.com"}})
	parts := strings.Split(good.Token, ".")
	header := func(h string) string { return base64.RawURLEncoding.EncodeToString([]byte(h)) }
	var hdr map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[0])
	_ = json.Unmarshal(raw, &hdr)
	kid := hdr["kid"].(string)

	// HS256 "signed" with the RSA public key: the classic alg confusion.
	pubDER := publicKeyPEM(t, keys)
	hmacTok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": issuer, "sub": "bot", "aud": issuer, "exp": time.Now().Add(time.Hour).Unix(), "jti": "x"})
	hmacTok.Header["kid"], hmacTok.Header["typ"] = kid, "at+jwt"
	confused, _ := hmacTok.SignedString(pubDER)

	cases := map[string]struct {
		token, audience string
		advance         time.Duration
	}{
		"garbage":       {"a.b.c", issuer, 0},
		"empty":         {"", issuer, 0},
		"alg none":      {header(`{"alg":"none","typ":"at+jwt","kid":"`+kid+`"}`) + "." + parts[1] + ".", issuer, 0},
		"wrong typ":     {header(`{"alg":"RS256","typ":"JWT","kid":"`+kid+`"}`) + "." + parts[1] + "." + parts[2], issuer, 0},
		"unknown kid":   {header(`{"alg":"RS256","typ":"at+jwt","kid":"nope"}`) + "." + parts[1] + "." + parts[2], issuer, 0},
		"tampered":      {parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin"}`)) + "." + parts[2], issuer, 0},
		"hs256 confuse": {confused, issuer, 0},
		"expired":       {good.Token, issuer, time.Hour + time.Minute},
		"not yet valid": {good.Token, issuer, -5 * time.Minute},
		"wrong aud":     {forAPI.Token, issuer, 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			clk.t = time.Now().Add(tc.advance)
			if _, err := tokens.VerifyAccessToken(context.Background(), tc.token, tc.audience); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	clk.t = time.Now()
	if _, err := tokens.VerifyAccessToken(context.Background(), good.Token, issuer); err != nil {
		t.Fatalf("the good token stopped verifying: %v", err)
	}
}

func TestVerifyRefusesOtherIssuer(t *testing.T) {
	clk := &clock{time.Now()}
	tokens, keys := newTokens(t, oauth.AlgRS256, clk)
	otherIssuer := oauth.NewTokens("https://evil.example.com", time.Hour, oauth.AlgRS256, keys, clk.now)
	tok, err := otherIssuer.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.VerifyAccessToken(context.Background(), tok.Token, ""); err == nil {
		t.Fatal("a token naming another issuer was accepted")
	}
}

// publicKeyPEM returns the PEM of the RSA key the JWKS publishes, the bytes
// an attacker would use as an HMAC secret.
func publicKeyPEM(t *testing.T, keys *oauth.KeyManager) []byte {
	t.Helper()
	var set struct {
		Keys []struct{ N, E string } `json:"keys"`
	}
	if err := json.Unmarshal(keys.JWKS(), &set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("jwks: %v", err)
	}
	n, _ := base64.RawURLEncoding.DecodeString(set.Keys[0].N)
	e, _ := base64.RawURLEncoding.DecodeString(set.Keys[0].E)
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
