package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// proof is a DPoP proof as a server reads it, after checking its header
// and its signature against the key in the header.
type proof struct {
	alg    string
	jwk    map[string]string
	claims map[string]any
}

func (p proof) claim(name string) string { s, _ := p.claims[name].(string); return s }

// jkt is the thumbprint of the proof's key, computed here from the RFC
// 7638 members of its kty.
func (p proof) jkt(t *testing.T) string {
	t.Helper()
	var members []string
	switch p.jwk["kty"] {
	case "EC":
		members = []string{"crv", "kty", "x", "y"}
	case "OKP":
		members = []string{"crv", "kty", "x"}
	case "RSA":
		members = []string{"e", "kty", "n"}
	}
	var parts []string
	for _, m := range members {
		parts = append(parts, fmt.Sprintf("%q:%q", m, p.jwk[m]))
	}
	sum := sha256.Sum256([]byte("{" + strings.Join(parts, ",") + "}"))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// readProof checks what a server checks of a proof's form: three parts,
// typ dpop+jwt, an asymmetric alg matching the key, a public JWK only, a
// signature that verifies with that JWK, and jti, htm, htu and iat there.
func readProof(t *testing.T, jws string) proof {
	t.Helper()
	parts := strings.Split(jws, ".")
	if len(parts) != 3 {
		t.Fatalf("a proof of %d parts", len(parts))
	}
	var header struct {
		Typ string         `json:"typ"`
		Alg string         `json:"alg"`
		JWK map[string]any `json:"jwk"`
	}
	var p proof
	for i, into := range []any{&header, &p.claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(b, into) != nil {
			t.Fatalf("part %d is not base64url JSON: %v", i, err)
		}
	}
	if header.Typ != "dpop+jwt" {
		t.Fatalf("typ %q", header.Typ)
	}
	p.alg, p.jwk = header.Alg, map[string]string{}
	for k, v := range header.JWK {
		s, ok := v.(string)
		if !ok {
			t.Fatalf("jwk member %s is %T", k, v)
		}
		p.jwk[k] = s
	}
	for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
		if _, ok := p.jwk[private]; ok {
			t.Fatalf("the proof's jwk has the private member %s", private)
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	input := []byte(parts[0] + "." + parts[1])
	sum := sha256.Sum256(input)
	b64 := func(name string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(p.jwk[name])
		if err != nil || len(b) == 0 {
			t.Fatalf("jwk %s: %q", name, p.jwk[name])
		}
		return b
	}
	verified := false
	switch {
	case p.alg == "ES256" && p.jwk["kty"] == "EC" && p.jwk["crv"] == "P-256":
		pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(b64("x")), Y: new(big.Int).SetBytes(b64("y"))}
		verified = len(sig) == 64 && ecdsa.Verify(pub, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	case p.alg == "EdDSA" && p.jwk["kty"] == "OKP" && p.jwk["crv"] == "Ed25519":
		verified = ed25519.Verify(ed25519.PublicKey(b64("x")), input, sig)
	case (p.alg == "PS256" || p.alg == "RS256") && p.jwk["kty"] == "RSA":
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(b64("n")), E: int(new(big.Int).SetBytes(b64("e")).Int64())}
		if p.alg == "PS256" {
			verified = rsa.VerifyPSS(pub, crypto.SHA256, sum[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		} else {
			verified = rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) == nil
		}
	default:
		t.Fatalf("alg %s with a %s key", p.alg, p.jwk["kty"])
	}
	if !verified {
		t.Fatalf("the %s proof's signature does not verify with its jwk", p.alg)
	}
	if len(p.claim("jti")) < 22 || p.claim("htm") == "" || p.claim("htu") == "" {
		t.Fatalf("claims %v", p.claims)
	}
	if iat, ok := p.claims["iat"].(float64); !ok || time.Since(time.Unix(int64(iat), 0)).Abs() > 5*time.Second {
		t.Fatalf("iat %v", p.claims["iat"])
	}
	return p
}

func newEC(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newRSA(t *testing.T, bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newDPoP(t *testing.T, key crypto.Signer) *DPoP {
	t.Helper()
	d, err := NewDPoP(key)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The access token and ath of RFC 9449's examples (§7.1).
const (
	rfcAccessToken = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
	rfcATH         = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
)

// A proof from each kind of key verifies, and says what RFC 9449 asks.
func TestDPoPProof(t *testing.T) {
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey := newRSA(t, 2048)
	rs256, err := NewDPoPWithAlg(rsaKey, "RS256")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dpop *DPoP
		key  crypto.Signer
		alg  string
	}{
		{newDPoP(t, kmsSigner{newEC(t)}), nil, "ES256"},
		{newDPoP(t, ed), ed, "EdDSA"},
		{newDPoP(t, rsaKey), rsaKey, "PS256"},
		{rs256, rsaKey, "RS256"},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			jws, err := tc.dpop.Proof(http.MethodPost, "https://API.example.com:8443/v1/things?page=2#top", rfcAccessToken, "nonce-1")
			if err != nil {
				t.Fatal(err)
			}
			p := readProof(t, jws)
			if p.alg != tc.alg {
				t.Errorf("alg %s", p.alg)
			}
			if p.claim("htm") != "POST" || p.claim("htu") != "https://API.example.com:8443/v1/things" || p.claim("ath") != rfcATH || p.claim("nonce") != "nonce-1" {
				t.Errorf("claims %v", p.claims)
			}
			if _, ok := p.jwk["alg"]; ok {
				t.Errorf("the jwk names an alg (%s) the proof may not use", p.jwk["alg"])
			}
			if jkt := p.jkt(t); tc.dpop.Thumbprint() != jkt || len(jkt) != 43 {
				t.Errorf("Thumbprint %s, the jwk's %s", tc.dpop.Thumbprint(), jkt)
			}
			if tc.key != nil {
				if jkt, err := JWKThumbprint(tc.key.Public()); err != nil || jkt != tc.dpop.Thumbprint() {
					t.Errorf("JWKThumbprint %s %v", jkt, err)
				}
			}
			// At the token endpoint: no ath, no nonce; each proof its own jti.
			again, err := tc.dpop.Proof("", "https://auth.example.com", "", "")
			if err != nil {
				t.Fatal(err)
			}
			q := readProof(t, again)
			if q.claim("htm") != "GET" || q.claim("htu") != "https://auth.example.com/" || q.claims["ath"] != nil || q.claims["nonce"] != nil || q.claim("jti") == p.claim("jti") {
				t.Errorf("a second proof: %v (first %v)", q.claims, p.claims)
			}
		})
	}
}

func TestDPoPRefusesKeysAndURLs(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for name, make := range map[string]func() (*DPoP, error){
		"nil":               func() (*DPoP, error) { return NewDPoP(nil) },
		"P-384":             func() (*DPoP, error) { return NewDPoP(p384) },
		"RSA 1024":          func() (*DPoP, error) { return NewDPoP(newRSA(t, 1024)) },
		"ES256 with RS256":  func() (*DPoP, error) { return NewDPoPWithAlg(newEC(t), "RS256") },
		"Ed25519 as ES256":  func() (*DPoP, error) { return NewDPoPWithAlg(ed, "ES256") },
		"RSA with HS256":    func() (*DPoP, error) { return NewDPoPWithAlg(newRSA(t, 2048), "HS256") },
		"RSA with alg none": func() (*DPoP, error) { return NewDPoPWithAlg(newRSA(t, 2048), "none") },
	} {
		if d, err := make(); err == nil {
			t.Errorf("%s: a DPoP (%s)", name, d.alg)
		}
	}
	d := newDPoP(t, newEC(t))
	for _, u := range []string{"/api/agent-auth", "auth.example.com/token", "http://[::1"} {
		if _, err := d.Proof("POST", u, "", ""); err == nil {
			t.Errorf("a proof for %q", u)
		}
	}
}

// RFC 7638 §3.1's example key and thumbprint.
func TestJWKThumbprintRFC7638(t *testing.T) {
	n, _ := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	jkt, err := JWKThumbprint(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537})
	if err != nil || jkt != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Fatalf("%s %v", jkt, err)
	}
}

// issuer is an issuer's token endpoints as far as DPoP goes: it checks
// each proof and answers what answer says.
type issuer struct {
	*httptest.Server
	t      *testing.T
	mu     sync.Mutex
	seen   []seenRequest
	answer func(r seenRequest) (status int, nonce, body string)
}

// seenRequest is a request the issuer got.
type seenRequest struct {
	path      string
	auth      string // Authorization
	proof     *proof // nil: no DPoP header
	assertion string // its jti
	fields    map[string]string
}

func newIssuer(t *testing.T) *issuer {
	is := &issuer{t: t}
	is.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen := seenRequest{path: r.URL.Path, auth: r.Header.Get("Authorization"), fields: map[string]string{}}
		if h := r.Header.Values("DPoP"); len(h) > 0 {
			if len(h) != 1 {
				t.Errorf("%d DPoP headers", len(h))
			}
			p := readProof(t, h[0])
			// ath at the issuer's own resources, never at a token endpoint.
			resource := r.URL.Path == "/api/agents/profile"
			if p.claim("htm") != r.Method || p.claim("htu") != is.URL+r.URL.Path || (p.claims["ath"] != nil) != resource {
				t.Errorf("%s: proof claims %v", r.URL.Path, p.claims)
			}
			seen.proof = &p
		}
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") == "application/json" {
			_ = json.Unmarshal(body, &seen.fields)
		} else {
			form, _ := url.ParseQuery(string(body))
			for k := range form {
				seen.fields[k] = form.Get(k)
			}
		}
		if a := seen.fields["client_assertion"]; a != "" {
			var claims struct{ JTI string }
			b, _ := base64.RawURLEncoding.DecodeString(strings.Split(a, ".")[1])
			_ = json.Unmarshal(b, &claims)
			seen.assertion = claims.JTI
		}
		is.mu.Lock()
		is.seen = append(is.seen, seen)
		is.mu.Unlock()
		status, nonce, answer := is.answer(seen)
		if nonce != "" {
			w.Header().Set("DPoP-Nonce", nonce)
		}
		if status == 401 {
			w.Header().Set("WWW-Authenticate", `DPoP realm="auth_agent", error="use_dpop_nonce", algs="ES256"`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, answer)
	}))
	t.Cleanup(is.Close)
	return is
}

// requests returns the requests since the last call.
func (is *issuer) requests() []seenRequest {
	is.mu.Lock()
	defer is.mu.Unlock()
	s := is.seen
	is.seen = nil
	return s
}

// nonceRequired answers like an issuer with dpop_nonce on: a proof
// without the current nonce is use_dpop_nonce, and the token is bound.
func nonceRequired(current *string, token string) func(seenRequest) (int, string, string) {
	return func(r seenRequest) (int, string, string) {
		if r.proof == nil || r.proof.claim("nonce") != *current {
			return 400, *current, `{"error":"use_dpop_nonce","error_description":"Authorization server requires nonce in DPoP proof"}`
		}
		if r.path == "/api/agent-auth" {
			return 200, "", `{"success":true,"data":{"access_token":"` + token + `","token_type":"DPoP","expires_in":3600,"scope":"data:read"}}`
		}
		return 200, "", `{"access_token":"` + token + `","token_type":"DPoP","expires_in":3600,"scope":"data:read","refresh_token":"rt-next"}`
	}
}

// Token requests carry a proof; an issuer asking for a nonce gets one
// more try with it (a new proof and a new assertion), and the nonce is
// kept for the next request.
func TestDPoPTokenRequests(t *testing.T) {
	is := newIssuer(t)
	c := New(is.URL)
	ctx := context.Background()
	key := newEC(t)
	dp := newDPoP(t, key)
	creds := Credentials{AgentID: "agent", Key: key, KeyID: "k1", DPoP: dp}
	nonce := "n-1"
	is.answer = nonceRequired(&nonce, "at-1")

	tok, err := c.Authenticate(ctx, creds, "data:read")
	if err != nil || tok.AccessToken != "at-1" || tok.TokenType != "DPoP" || tok.DPoP != dp || !tok.Valid(time.Minute) {
		t.Fatalf("Authenticate: %v %v", tok, err)
	}
	seen := is.requests()
	if len(seen) != 2 || seen[0].proof.claims["nonce"] != nil || seen[1].proof.claim("nonce") != "n-1" {
		t.Fatalf("agent-auth: %d requests %+v", len(seen), seen)
	}
	if seen[0].proof.claim("jti") == seen[1].proof.claim("jti") || seen[0].assertion == "" || seen[0].assertion == seen[1].assertion {
		t.Fatal("the second try reused the proof or the assertion")
	}
	if seen[1].fields["scope"] != "data:read" || seen[1].fields["agent_id"] != "agent" || seen[1].proof.jkt(t) != dp.Thumbprint() {
		t.Fatalf("the second try: %v", seen[1].fields)
	}

	// The nonce is remembered: one request.
	tok, err = c.ClientCredentials(ctx, AgentAuth(creds), "data:read")
	if err != nil || tok.TokenType != "DPoP" || tok.DPoP != dp {
		t.Fatalf("ClientCredentials: %v %v", tok, err)
	}
	if seen = is.requests(); len(seen) != 1 || seen[0].path != "/oauth2/token" || seen[0].proof.claim("nonce") != "n-1" ||
		seen[0].fields["grant_type"] != "client_credentials" || seen[0].fields["scope"] != "data:read" || seen[0].fields["client_id"] != "agent" || seen[0].assertion == "" {
		t.Fatalf("client_credentials: %+v", seen)
	}

	// A public client's refresh token is bound: refreshed with the same
	// key, after the issuer moved to a new nonce.
	nonce = "n-2"
	tok, err = c.Refresh(ctx, "rt-1", ClientAuth{ClientID: "public-app", DPoP: dp})
	if err != nil || tok.RefreshToken != "rt-next" || tok.DPoP != dp {
		t.Fatalf("Refresh: %v %v", tok, err)
	}
	if seen = is.requests(); len(seen) != 2 || seen[1].proof.claim("nonce") != "n-2" || seen[1].fields["refresh_token"] != "rt-1" || seen[1].proof.jkt(t) != dp.Thumbprint() {
		t.Fatalf("refresh: %+v", seen)
	}

	// Once only: an issuer that wants yet another nonce gets its error.
	is.answer = func(seenRequest) (int, string, string) {
		nonce += "x"
		return 400, nonce, `{"error":"use_dpop_nonce","error_description":"again"}`
	}
	if _, err := c.Refresh(ctx, "rt-1", ClientAuth{ClientID: "public-app", DPoP: dp}); !IsCode(err, "use_dpop_nonce") || err.(*Error).Status != 400 {
		t.Fatalf("a second use_dpop_nonce: %v", err)
	}
	if seen = is.requests(); len(seen) != 2 {
		t.Fatalf("%d tries, want 2", len(seen))
	}
	// A bad proof is not tried again.
	is.answer = func(seenRequest) (int, string, string) {
		return 400, "n-3", `{"error":"invalid_dpop_proof","error_description":"bad"}`
	}
	if _, err := c.Authenticate(ctx, creds); !IsCode(err, "invalid_dpop_proof") {
		t.Fatalf("invalid_dpop_proof: %v", err)
	}
	if seen = is.requests(); len(seen) != 1 {
		t.Fatalf("%d tries of a bad proof", len(seen))
	}

	// Without DPoP: no proof, a bearer token, no key on it; revocation
	// and introspection carry no proof either.
	is.answer = func(r seenRequest) (int, string, string) {
		if r.path == "/oauth2/revoke" {
			return 200, "", ``
		}
		return 200, "", `{"success":true,"data":{"access_token":"bt","token_type":"Bearer","expires_in":60}}`
	}
	if tok, err := c.Authenticate(ctx, Credentials{AgentID: "agent", AgentSecret: "s"}); err != nil || tok.DPoP != nil || tok.TokenType != "Bearer" {
		t.Fatalf("without DPoP: %v %v", tok, err)
	}
	if err := c.Revoke(ctx, "bt", AgentAuth(creds)); err != nil {
		t.Fatal(err)
	}
	for _, r := range is.requests() {
		if r.proof != nil {
			t.Errorf("%s carried a proof", r.path)
		}
	}
}

// oneShotReader is a body without GetBody: the client must keep it to
// send it again.
type oneShotReader struct{ r io.Reader }

func (o *oneShotReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// onceOnly is a transport that reads a request's body once, as any
// transport may: http.Transport rewinds a body with GetBody by itself,
// which would hide a client that forgets to.
type onceOnly struct{}

func (onceOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	var b []byte
	if r.Body != nil {
		b, _ = io.ReadAll(r.Body)
		r.Body.Close()
	}
	r2 := r.Clone(r.Context())
	r2.Body, r2.GetBody, r2.ContentLength = io.NopCloser(bytes.NewReader(b)), nil, int64(len(b))
	return http.DefaultTransport.RoundTrip(r2)
}

// HTTPClient sends a DPoP-bound token with the DPoP scheme and a proof
// for each request, retries once with a guard's nonce (the body again),
// and sends other tokens as Bearer.
func TestHTTPClientDPoP(t *testing.T) {
	var (
		mu       sync.Mutex
		nonce    string
		hits     int
		bodies   []string
		stubborn bool // a new nonce for every request
	)
	dp := newDPoP(t, newEC(t))
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hits++
		if stubborn {
			nonce += "+"
		}
		body, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(body))
		if r.Header.Get("Authorization") != "DPoP at-1" || len(r.Header.Values("DPoP")) != 1 {
			t.Errorf("Authorization %q, DPoP %q", r.Header.Get("Authorization"), r.Header.Values("DPoP"))
			w.WriteHeader(400)
			return
		}
		p := readProof(t, r.Header.Get("DPoP"))
		sum := sha256.Sum256([]byte("at-1"))
		if p.claim("htm") != r.Method || p.claim("htu") != "http://"+r.Host+r.URL.Path || p.claim("ath") != base64.RawURLEncoding.EncodeToString(sum[:]) || p.jkt(t) != dp.Thumbprint() {
			t.Errorf("proof claims %v", p.claims)
		}
		if p.claim("nonce") != nonce {
			// Bearer first on the same line: the client must find the
			// DPoP challenge's error among the parameters.
			w.Header().Set("WWW-Authenticate", `Bearer realm="api", DPoP algs="ES256 EdDSA PS256 RS256", error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"`)
			w.Header().Set("DPoP-Nonce", nonce)
			w.WriteHeader(401)
			return
		}
		w.Header().Set("DPoP-Nonce", nonce) // the same nonce again: harmless
		fmt.Fprintf(w, "%s %s", r.URL.RawQuery, body)
	}))
	defer api.Close()
	c := New("http://auth.example.com", WithHTTPClient(&http.Client{Transport: onceOnly{}}))
	hc := c.HTTPClient(&Token{AccessToken: "at-1", TokenType: "DPoP", DPoP: dp})
	call := func(body io.Reader) (int, string, int, []string) {
		t.Helper()
		mu.Lock()
		hits, bodies = 0, nil
		mu.Unlock()
		resp, err := hc.Post(api.URL+"/v1/things?page=2", "application/json", body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		mu.Lock()
		defer mu.Unlock()
		return resp.StatusCode, string(got), hits, bodies
	}

	for name, body := range map[string]func() io.Reader{
		"a body with GetBody":    func() io.Reader { return strings.NewReader(`{"n":1}`) },
		"a body without GetBody": func() io.Reader { return &oneShotReader{strings.NewReader(`{"n":1}`)} },
	} {
		mu.Lock()
		nonce = "rs-" + name // a new nonce the client does not know yet
		mu.Unlock()
		status, got, tries, sent := call(body())
		if status != 200 || got != `page=2 {"n":1}` || tries != 2 || sent[0] != `{"n":1}` || sent[1] != `{"n":1}` {
			t.Fatalf("%s: %d %q after %d tries, bodies %q", name, status, got, tries, sent)
		}
		// The nonce is kept: the next request needs one try.
		if status, _, tries, _ := call(body()); status != 200 || tries != 1 {
			t.Fatalf("%s with the nonce known: %d after %d tries", name, status, tries)
		}
	}
	// Once only.
	mu.Lock()
	stubborn = true
	mu.Unlock()
	if status, _, tries, _ := call(strings.NewReader("{}")); status != 401 || tries != 2 {
		t.Fatalf("a guard that never takes the nonce: %d after %d tries", status, tries)
	}

	// A DPoP token without its key is not sent at all.
	if _, err := c.HTTPClient(&Token{AccessToken: "at-1", TokenType: "DPoP"}).Get(api.URL); err == nil || !strings.Contains(err.Error(), "without its key") {
		t.Fatalf("a DPoP token without a key: %v", err)
	}
}

func TestHTTPClientBearer(t *testing.T) {
	var auth, proof []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth, proof = r.Header.Values("Authorization"), r.Header.Values("DPoP")
	}))
	defer api.Close()
	resp, err := New(api.URL).HTTPClient(&Token{AccessToken: "bt", TokenType: "Bearer"}).Get(api.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(auth) != 1 || auth[0] != "Bearer bt" || proof != nil {
		t.Fatalf("Authorization %q, DPoP %q", auth, proof)
	}
}

// The token goes only to the origin the caller named: a redirect
// elsewhere is handed back, not followed.
func TestHTTPClientKeepsTheTokenHome(t *testing.T) {
	elsewhereHits := 0
	elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhereHits++ }))
	defer elsewhere.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/here" {
			http.Redirect(w, r, "/there", http.StatusFound)
			return
		}
		if r.URL.Path == "/there" && r.Header.Get("Authorization") == "Bearer bt" {
			http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusFound)
			return
		}
		w.WriteHeader(500)
	}))
	defer api.Close()
	resp, err := New(api.URL).HTTPClient(&Token{AccessToken: "bt", TokenType: "Bearer"}).Get(api.URL + "/here")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Request.URL.Path != "/there" || elsewhereHits != 0 {
		t.Fatalf("%d at %s, %d requests elsewhere", resp.StatusCode, resp.Request.URL, elsewhereHits)
	}
}

func TestChallengeError(t *testing.T) {
	for _, tc := range []struct {
		headers []string
		want    string
	}{
		{[]string{`DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"`}, "use_dpop_nonce"},
		{[]string{`Bearer error="invalid_token"`, `DPoP algs="ES256", error="use_dpop_nonce"`}, "use_dpop_nonce"},
		{[]string{`Bearer realm="a, b", error="invalid_token", DPoP error=invalid_dpop_proof`}, "invalid_dpop_proof"},
		{[]string{`dpop ERROR = "use_dpop_nonce"`}, "use_dpop_nonce"},
		{[]string{`Bearer error="use_dpop_nonce"`}, ""},
		{[]string{`DPoP algs="ES256 EdDSA"`}, ""},
		{[]string{`Basic realm="x\"DPoP error=use_dpop_nonce"`}, ""},
		{[]string{`DPoP error="unterminated`}, "unterminated"},
		{nil, ""},
	} {
		h := http.Header{}
		for _, v := range tc.headers {
			h.Add("WWW-Authenticate", v)
		}
		if got := challengeError(h, "DPoP"); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.headers, got, tc.want)
		}
	}
}

// The issuer's own resources (the profile) take a DPoP-bound token this
// client got with the DPoP scheme and a proof carrying ath; a 401
// use_dpop_nonce is tried once more. A token the client does not know as
// bound goes as Bearer.
func TestProfileWithDPoPToken(t *testing.T) {
	is := newIssuer(t)
	c := New(is.URL)
	ctx := context.Background()
	dp := newDPoP(t, newEC(t))
	nonce := "n-1"
	is.answer = func(r seenRequest) (int, string, string) {
		switch {
		case r.path == "/api/agent-auth":
			return nonceRequired(&nonce, "at-bound")(r)
		case r.auth == "Bearer plain":
			return 200, "", `{"success":true,"data":{"agent_id":"agent"}}`
		case r.auth != "DPoP at-bound" || r.proof == nil || r.proof.claim("ath") != tokenHash("at-bound"):
			return 400, "", `{"error":"invalid_request","error_description":"wrong"}`
		case r.proof.claim("nonce") != nonce:
			return 401, nonce, `{"error":"use_dpop_nonce","error_description":"nonce"}`
		}
		return 200, "", `{"success":true,"data":{"agent_id":"agent","model_name":"m"}}`
	}
	tok, err := c.Authenticate(ctx, Credentials{AgentID: "agent", AgentSecret: "s", DPoP: dp})
	if err != nil {
		t.Fatal(err)
	}
	is.requests()
	nonce = "n-2" // the profile wants another nonce than the token endpoint gave
	if a, err := c.Profile(ctx, tok.AccessToken); err != nil || a.ModelName != "m" {
		t.Fatalf("Profile with a bound token: %+v %v", a, err)
	}
	if seen := is.requests(); len(seen) != 2 || seen[1].proof.claim("nonce") != "n-2" {
		t.Fatalf("profile: %+v", seen)
	}
	if a, err := c.Profile(ctx, "plain"); err != nil || a.AgentID != "agent" {
		t.Fatalf("Profile with a bearer token: %+v %v", a, err)
	}
	if seen := is.requests(); len(seen) != 1 || seen[0].proof != nil {
		t.Fatalf("a bearer token with a proof: %+v", seen)
	}
}
