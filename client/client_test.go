package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Answers that are not the API's (a proxy's error page, a redirect away)
// become *Error values, never a panic or a zero result.
func TestAnswersThatAreNotTheAPIs(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/agent-auth":
			http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
		case "/api/agents/profile":
			fmt.Fprint(w, `{"success":true}`)
		case "/oauth2/authorize":
			http.Redirect(w, r, "https://elsewhere.example/", http.StatusFound)
		case "/oauth2/revoke":
			w.Header().Set("Retry-After", "7")
			w.Header().Set("X-RateLimit-Limit", "10")
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", "1900000000")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":"rate_limit_exceeded","error_description":"slow down"}`)
		}
	}))
	defer srv.Close()
	c := New(srv.URL)
	ctx := context.Background()
	creds := Credentials{AgentID: "a", AgentSecret: "s"}

	if _, err := c.Authenticate(ctx, creds); !IsCode(err, ErrorResponse) || err.(*Error).Status != 502 {
		t.Errorf("HTML 502: %v", err)
	}
	if _, err := c.Profile(ctx, "tok"); !IsCode(err, ErrorResponse) {
		t.Errorf("an envelope without data: %v", err)
	}
	if _, err := c.SignIn(ctx, srv.URL+"/oauth2/authorize?client_id=x", creds); !IsCode(err, ErrorResponse) {
		t.Errorf("a redirect away: %v", err)
	}
	err := c.Revoke(ctx, "tok", AgentAuth(creds))
	e, ok := err.(*Error)
	if !ok || e.Code != "rate_limit_exceeded" || e.RetryAfter.Seconds() != 7 || e.RateLimit == nil || e.RateLimit.Limit != 10 || e.RateLimit.Reset.Unix() != 1900000000 {
		t.Errorf("429: %#v", err)
	}
	if !strings.Contains(err.Error(), "rate_limit_exceeded: slow down") {
		t.Errorf("message %q", err.Error())
	}
}

// Credentials go only to the issuer.
func TestSignInRefusesAnotherHost(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits++ }))
	defer srv.Close()
	c := New("https://auth.example.com")
	if _, err := c.SignIn(context.Background(), srv.URL+"/oauth2/authorize", Credentials{AgentID: "a", AgentSecret: "s"}); !IsCode(err, "invalid_request") || hits != 0 {
		t.Fatalf("another host: %v, %d requests", err, hits)
	}
}

func TestTokenNeverPrintsItself(t *testing.T) {
	tok := &Token{AccessToken: "secret-access", RefreshToken: "secret-refresh", IDToken: "secret-id", TokenType: "Bearer"}
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok)} {
		if strings.Contains(s, "secret-") {
			t.Fatalf("printed: %s", s)
		}
	}
}

// kmsSigner is a crypto.Signer that is not an *ecdsa.PrivateKey, as a KMS
// or HSM key is.
type kmsSigner struct{ key *ecdsa.PrivateKey }

func (k kmsSigner) Public() crypto.PublicKey { return k.key.Public() }
func (k kmsSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.key.Sign(r, digest, opts)
}

// An ES256 assertion from any crypto.Signer verifies: R || S of 32 bytes
// each, over the JWS signing input.
func TestAssertionFromAnySigner(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ { // short r or s (leading zero bytes) come up now and then
		jws, err := assertion(kmsSigner{key}, "k1", "agent", "https://auth.example.com", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(jws, ".")
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil || len(sig) != 64 {
			t.Fatalf("signature of %d bytes: %v", len(sig), err)
		}
		sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		if !ecdsa.Verify(&key.PublicKey, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			t.Fatal("the assertion's signature does not verify")
		}
	}
}
