package oauth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authagent/caddy-authagent/oauth"
)

// testKey is a key pair with its public JWK.
type testKey struct {
	private crypto.Signer
	jwk     map[string]any
	method  jwt.SigningMethod
}

func newTestKey(t testing.TB, kind, kid, alg string) testKey {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	var k testKey
	switch kind {
	case "EC":
		priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		raw, _ := priv.PublicKey.ECDH()
		b := raw.Bytes()
		k = testKey{priv, map[string]any{"kty": "EC", "crv": "P-256", "x": b64(b[1:33]), "y": b64(b[33:])}, jwt.SigningMethodES256}
	case "OKP":
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		k = testKey{priv, map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(pub)}, jwt.SigningMethodEdDSA}
	case "RSA":
		priv, _ := rsa.GenerateKey(rand.Reader, 2048)
		k = testKey{priv, map[string]any{"kty": "RSA", "n": b64(priv.N.Bytes()), "e": b64(big.NewInt(int64(priv.E)).Bytes())}, jwt.SigningMethodRS256}
	}
	if kid != "" {
		k.jwk["kid"] = kid
	}
	if alg != "" {
		k.jwk["alg"] = alg
	}
	return k
}

func keySet(t testing.TB, keys ...testKey) string {
	t.Helper()
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.jwk)
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sign makes an assertion with method (the key's by default) and the
// header kid of the key.
func (k testKey) sign(t testing.TB, method jwt.SigningMethod, claims jwt.MapClaims) string {
	t.Helper()
	if method == nil {
		method = k.method
	}
	tok := jwt.NewWithClaims(method, claims)
	if kid, ok := k.jwk["kid"].(string); ok {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(k.private)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseClientKeys(t *testing.T) {
	ec, ed, rs := newTestKey(t, "EC", "ec", ""), newTestKey(t, "OKP", "", ""), newTestKey(t, "RSA", "rsa", "PS256")
	keys, err := oauth.ParseClientKeys([]byte(keySet(t, ec, ed, rs)))
	if err != nil || strings.Join(keys.Kids(), ",") != "ec,,rsa" {
		t.Fatalf("%v %v", keys.Kids(), err)
	}
	withPrivate := newTestKey(t, "EC", "leak", "")
	withPrivate.jwk["d"] = "AAAA"
	symmetric := map[string]any{"kty": "oct", "k": "c2VjcmV0"}
	for name, raw := range map[string]string{
		"private member": keySet(t, withPrivate),
		"symmetric key":  `{"keys":[` + mustJSON(symmetric) + `]}`,
		"duplicate kid":  keySet(t, ec, ec),
		"no keys":        `{"keys":[]}`,
		"not a set":      `[` + mustJSON(ec.jwk) + `]`,
		"bad key":        `{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`,
		"encryption key": `{"keys":[` + strings.Replace(mustJSON(ec.jwk), `{`, `{"use":"enc",`, 1) + `]}`,
		"RSA 1024 bits":  `{"keys":[` + mustJSON(rsaJWK(1024, 65537, false)) + `]}`,
		"RSA 8192 bits":  `{"keys":[` + mustJSON(rsaJWK(8192, 65537, false)) + `]}`,
		"RSA huge e":     `{"keys":[` + mustJSON(rsaJWK(2048, 0x7fffffff, false)) + `]}`,
		"RSA even e":     `{"keys":[` + mustJSON(rsaJWK(2048, 65536, false)) + `]}`,
		"RSA padded n":   `{"keys":[` + mustJSON(rsaJWK(2040, 65537, true)) + `]}`,
		"too large":      `{"keys":[` + strings.Repeat(" ", 16<<10) + `]}`,
	} {
		if _, err := oauth.ParseClientKeys([]byte(raw)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// rsaJWK is an RSA public JWK with an odd modulus of bits bits (random,
// not a real key: parsing is what is tested) and exponent e; padded
// prefixes zero bytes to n until it is 256 bytes long.
func rsaJWK(bits, e int, padded bool) map[string]any {
	n := make([]byte, (bits+7)/8)
	_, _ = rand.Read(n)
	n[0] |= 0x80
	n[len(n)-1] |= 1
	for padded && len(n) < 256 {
		n = append([]byte{0}, n...)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	return map[string]any{"kty": "RSA", "n": b64(n), "e": b64(big.NewInt(int64(e)).Bytes())}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestAgentAssertions: an agent registered with keys authenticates at
// /api/agent-auth with assertions its keys verify, each once; every other
// assertion, and any secret, is invalid_client.
func TestAgentAssertions(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	s := newServerAt(t, cheapParams, func() time.Time { return now })
	ec, ed := newTestKey(t, "EC", "ec-1", ""), newTestKey(t, "OKP", "", "")
	rs, ps := newTestKey(t, "RSA", "rsa-1", ""), newTestKey(t, "RSA", "ps-1", "PS256")
	reg := s.call("POST", "/api/register-agent", "", `{"agent_id":"keyed","model_name":"m","owner_email":"a@example.com","jwks":`+keySet(t, ec, ed, rs, ps)+`}`)
	if reg.Code != 201 || strings.Contains(reg.Body.String(), "agent_secret") || !strings.Contains(reg.Body.String(), `"token_endpoint_auth_method":"private_key_jwt","kids":["ec-1","","rsa-1","ps-1"]`) {
		t.Fatalf("register with keys: %d %s", reg.Code, reg.Body)
	}
	jti := 0
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		jti++
		c := jwt.MapClaims{"iss": "keyed", "sub": "keyed", "aud": issuer + "/api/agent-auth", "exp": now.Add(time.Minute).Unix(),
			"iat": now.Unix(), "jti": fmt.Sprint("j-", jti)}
		if edit != nil {
			edit(c)
		}
		return c
	}
	auth := func(assertion string) int {
		body, _ := json.Marshal(map[string]string{"client_assertion_type": oauth.ClientAssertionType, "client_assertion": assertion})
		rec := s.call("POST", "/api/agent-auth", "", string(body))
		if rec.Code != 200 {
			checkShape(t, rec)
		}
		return rec.Code
	}
	other := newTestKey(t, "EC", "ec-1", "") // the kid of a registered key, another key
	noKid := newTestKey(t, "EC", "", "")
	replayed := ec.sign(t, nil, claims(nil))
	hs, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil)).SignedString([]byte(mustJSON(ec.jwk)))
	for _, tc := range []struct {
		name   string
		raw    string
		status int
	}{
		{"ES256 by kid", replayed, 200},
		{"the same assertion again", replayed, 401},
		{"EdDSA without kid", ed.sign(t, nil, claims(nil)), 200},
		{"RS256 by an RSA key without alg", rs.sign(t, nil, claims(nil)), 200},
		{"PS256 by an RSA key without alg", rs.sign(t, jwt.SigningMethodPS256, claims(nil)), 200},
		{"PS256 by a PS256 key", ps.sign(t, jwt.SigningMethodPS256, claims(nil)), 200},
		{"RS256 by a PS256 key", ps.sign(t, jwt.SigningMethodRS256, claims(nil)), 401},
		{"aud the issuer", ec.sign(t, nil, claims(func(c jwt.MapClaims) { c["aud"] = []string{"x", issuer} })), 200},
		{"an unregistered key with a registered kid", other.sign(t, nil, claims(nil)), 401},
		{"an unregistered key without kid", noKid.sign(t, nil, claims(nil)), 401},
		{"HS256 keyed with the public key", hs, 401},
		{"alg none", none(claims(nil)), 401},
		{"iss another agent", ec.sign(t, nil, claims(func(c jwt.MapClaims) { c["iss"] = "other" })), 401},
		{"sub another agent", ec.sign(t, nil, claims(func(c jwt.MapClaims) { c["sub"] = "other" })), 401},
		{"aud another server", ec.sign(t, nil, claims(func(c jwt.MapClaims) { c["aud"] = "https://other.example.com" })), 401},
		{"aud the token endpoint", ec.sign(t, nil, claims(func(c jwt.MapClaims) { c["aud"] = issuer + "/oauth2/token" })), 200},
		{"aud another endpoint", ec.sign(t, nil, claims(func(c jwt.MapClaims) { c["aud"] = issuer + "/oauth2/revoke" })), 401},
		{"no exp", ec.sign(t, nil, claims(func(c jwt.MapClaims) { delete(c, "exp") })), 401},
		{"expired", ec.sign(t, nil, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-2 * time.Minute).Unix() })), 401},
		{"exp an hour ahead", ec.sign(t, nil, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(time.Hour).Unix() })), 401},
		{"iat in the future", ec.sign(t, nil, claims(func(c jwt.MapClaims) { c["iat"] = now.Add(5 * time.Minute).Unix() })), 401},
		{"no jti", ec.sign(t, nil, claims(func(c jwt.MapClaims) { delete(c, "jti") })), 401},
		{"not a JWT", "a.b.c", 401},
	} {
		if got := auth(tc.raw); got != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.status)
		}
	}
	// An agent with keys has no secret: any secret fails like a wrong one.
	if rec := s.call("POST", "/api/agent-auth", "", `{"agent_id":"keyed","agent_secret":"Test123456!"}`); rec.Code != 401 {
		t.Fatalf("a secret for an agent with keys: %d %s", rec.Code, rec.Body)
	}
	// Both at once is a malformed request.
	both, _ := json.Marshal(map[string]string{"agent_id": "keyed", "agent_secret": "Test123456!",
		"client_assertion_type": oauth.ClientAssertionType, "client_assertion": ec.sign(t, nil, claims(nil))})
	if rec := s.call("POST", "/api/agent-auth", "", string(both)); rec.Code != 400 {
		t.Fatalf("secret and assertion: %d %s", rec.Code, rec.Body)
	}
}

// none is an unsigned JWT (alg none).
func none(c jwt.MapClaims) string {
	s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	return s
}

// assertionClaims are a fresh assertion's claims by id for endpoint.
func assertionClaims(id, endpoint string, now time.Time) jwt.MapClaims {
	return jwt.MapClaims{"iss": id, "sub": id, "aud": endpoint, "exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "jti": rand.Text()}
}

// TestClientAssertions: a client with keys authenticates with
// private_key_jwt at the token, introspection and revocation endpoints;
// it has no secret, and an assertion works once.
func TestClientAssertions(t *testing.T) {
	now := time.Now()
	key := newTestKey(t, "EC", "svc-1", "")
	svc, _, err := oauth.NewClient(oauth.ClientSpec{ID: "svc", Name: "Service", JWKS: keySet(t, key), Scopes: []string{"data:read"}, GrantTypes: []string{oauth.GrantClientCredentials}}, oauth.ClientFromConfig, now)
	if err != nil || svc.AuthMethod() != oauth.AuthPrivateKeyJWT || svc.SecretHash != "" {
		t.Fatalf("client with keys: %+v %v", svc, err)
	}
	s := newServerAt(t, cheapParams, nil, svc)
	post := func(path string, v url.Values) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", path, strings.NewReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	withAssertion := func(v url.Values, assertion string) url.Values {
		v.Set("client_assertion_type", oauth.ClientAssertionType)
		v.Set("client_assertion", assertion)
		return v
	}
	assertion := key.sign(t, nil, assertionClaims("svc", issuer+"/oauth2/token", now))
	rec := post("/oauth2/token", withAssertion(url.Values{"grant_type": {"client_credentials"}, "scope": {"data:read"}}, assertion))
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("client_credentials with private_key_jwt: %d %s", rec.Code, rec.Body)
	}
	if rec := post("/oauth2/token", withAssertion(url.Values{"grant_type": {"client_credentials"}}, assertion)); rec.Code != 401 {
		t.Fatalf("the assertion again: %d %s", rec.Code, rec.Body)
	}
	intro := post("/oauth2/introspect", withAssertion(url.Values{"token": {tok.AccessToken}, "client_id": {"svc"}},
		key.sign(t, nil, assertionClaims("svc", issuer, now))))
	if intro.Code != 200 || !strings.Contains(intro.Body.String(), `"active":true`) {
		t.Fatalf("introspection with private_key_jwt: %d %s", intro.Code, intro.Body)
	}
	if rec := post("/oauth2/revoke", withAssertion(url.Values{"token": {tok.AccessToken}}, key.sign(t, nil, assertionClaims("svc", issuer+"/oauth2/revoke", now)))); rec.Code != 200 {
		t.Fatalf("revocation with private_key_jwt: %d %s", rec.Code, rec.Body)
	}
	for name, v := range map[string]url.Values{
		"a secret":          {"grant_type": {"client_credentials"}, "client_id": {"svc"}, "client_secret": {"anything-at-all-0123456789abcdef"}},
		"another's kid":     withAssertion(url.Values{"grant_type": {"client_credentials"}}, newTestKey(t, "EC", "svc-1", "").sign(t, nil, assertionClaims("svc", issuer, now))),
		"client_id differs": withAssertion(url.Values{"grant_type": {"client_credentials"}, "client_id": {"other"}}, key.sign(t, nil, assertionClaims("svc", issuer, now))),
	} {
		if rec := post("/oauth2/token", v); rec.Code != 401 {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
		}
	}
	for name, v := range map[string]url.Values{
		"another assertion type": {"grant_type": {"client_credentials"}, "client_assertion_type": {"urn:x"}, "client_assertion": {"a.b.c"}},
		"assertion and secret":   withAssertion(url.Values{"grant_type": {"client_credentials"}, "client_secret": {"x"}}, assertion),
		"no assertion":           {"grant_type": {"client_credentials"}, "client_assertion_type": {oauth.ClientAssertionType}},
	} {
		if rec := post("/oauth2/token", v); rec.Code != 400 {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
		}
	}
}

// TestAgentReplacesKeys: PUT /api/agents/keys takes new keys only with an
// assertion by a key the agent holds now; the old keys stop working.
func TestAgentReplacesKeys(t *testing.T) {
	now := time.Now()
	s := newServerAt(t, cheapParams, nil)
	k1, k2 := newTestKey(t, "EC", "k1", ""), newTestKey(t, "OKP", "k2", "")
	if rec := s.call("POST", "/api/register-agent", "", `{"agent_id":"rotator","model_name":"m","owner_email":"a@example.com","jwks":`+keySet(t, k1)+`}`); rec.Code != 201 {
		t.Fatalf("register: %d %s", rec.Code, rec.Body)
	}
	put := func(body map[string]any) *httptest.ResponseRecorder {
		b, _ := json.Marshal(body)
		return s.call("PUT", "/api/agents/keys", "", string(b))
	}
	newKeys := json.RawMessage(keySet(t, k2))
	if rec := put(map[string]any{"jwks": newKeys}); rec.Code != 401 {
		t.Fatalf("without an assertion: %d %s", rec.Code, rec.Body)
	}
	if rec := put(map[string]any{"jwks": newKeys, "client_assertion_type": oauth.ClientAssertionType,
		"client_assertion": k2.sign(t, nil, assertionClaims("rotator", issuer+"/api/agents/keys", now))}); rec.Code != 401 {
		t.Fatalf("by the new key: %d %s", rec.Code, rec.Body)
	}
	leaked := newTestKey(t, "EC", "k3", "")
	leaked.jwk["d"] = "AAAA"
	if rec := put(map[string]any{"jwks": json.RawMessage(keySet(t, leaked)), "client_assertion_type": oauth.ClientAssertionType,
		"client_assertion": k1.sign(t, nil, assertionClaims("rotator", issuer, now))}); rec.Code != 400 {
		t.Fatalf("a private key: %d %s", rec.Code, rec.Body)
	}
	// An assertion made to get a token (aud the issuer, or the token
	// endpoint) does not replace keys: only one made for this endpoint.
	for _, aud := range []string{issuer, issuer + "/oauth2/token"} {
		if rec := put(map[string]any{"jwks": newKeys, "client_assertion_type": oauth.ClientAssertionType,
			"client_assertion": k1.sign(t, nil, assertionClaims("rotator", aud, now))}); rec.Code != 401 {
			t.Fatalf("an assertion for %s: %d %s", aud, rec.Code, rec.Body)
		}
	}
	rec := put(map[string]any{"jwks": newKeys, "client_assertion_type": oauth.ClientAssertionType,
		"client_assertion": k1.sign(t, nil, assertionClaims("rotator", issuer+"/api/agents/keys", now))})
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"kids":["k2"]`) {
		t.Fatalf("replace: %d %s", rec.Code, rec.Body)
	}
	auth := func(k testKey) int {
		b, _ := json.Marshal(map[string]string{"client_assertion_type": oauth.ClientAssertionType,
			"client_assertion": k.sign(t, nil, assertionClaims("rotator", issuer, now))})
		return s.call("POST", "/api/agent-auth", "", string(b)).Code
	}
	if auth(k1) != 401 || auth(k2) != 200 {
		t.Fatalf("after the replacement: old key %d, new key %d", auth(k1), auth(k2))
	}
}

// TestClientKeysAtJWKSURI: a client that publishes its keys is fetched
// once, again for a new kid only after a minute has passed since the last
// fetch, and a set that cannot be fetched fails the authentication, fast.
func TestClientKeysAtJWKSURI(t *testing.T) {
	k1, k2, k9 := newTestKey(t, "EC", "k1", ""), newTestKey(t, "OKP", "k2", ""), newTestKey(t, "EC", "k9", "")
	var mu sync.Mutex
	published, fetches := keySet(t, k1), 0
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fetches++
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(published))
	}))
	defer jwksSrv.Close()
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	svc, _, err := oauth.NewClient(oauth.ClientSpec{ID: "svc", JWKSURI: jwksSrv.URL + "/jwks.json", GrantTypes: []string{oauth.GrantClientCredentials}, Scopes: []string{"data:read"}}, oauth.ClientFromConfig, now)
	if err != nil || svc.AuthMethod() != oauth.AuthPrivateKeyJWT {
		t.Fatalf("a client with a jwks_uri: %v", err)
	}
	s := newServerAt(t, cheapParams, clock, svc)
	grant := func(k testKey) int {
		v := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {oauth.ClientAssertionType},
			"client_assertion": {k.sign(t, nil, assertionClaims("svc", issuer, clock()))}}
		req := httptest.NewRequest("POST", "/oauth2/token", strings.NewReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec.Code
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return fetches }
	if grant(k1) != 200 || grant(k1) != 200 || count() != 1 {
		t.Fatalf("k1: fetched %d times", count())
	}
	mu.Lock()
	published = keySet(t, k1, k2) // the client rotates
	mu.Unlock()
	if grant(k2) != 401 || grant(k9) != 401 || count() != 1 {
		t.Fatalf("a new kid within the minute: fetched %d times", count())
	}
	mu.Lock()
	now = now.Add(61 * time.Second)
	mu.Unlock()
	if grant(k2) != 200 || count() != 2 {
		t.Fatalf("k2 after a minute: fetched %d times", count())
	}
	if grant(k9) != 401 || grant(k9) != 401 || count() != 2 {
		t.Fatalf("an unknown kid right after a fetch: fetched %d times", count())
	}
	jwksSrv.Close()
	mu.Lock()
	now = now.Add(10 * time.Minute) // the cached set expired; the server is gone
	mu.Unlock()
	start := time.Now()
	if grant(k1) != 401 || time.Since(start) > 6*time.Second {
		t.Fatalf("with the key set unreachable: not a quick 401 (%v)", time.Since(start))
	}
	// A self-registered client's jwks_uri must be https (and is fetched
	// from public addresses only); an operator's may be http on loopback.
	for uri, operator := range map[string]bool{"https://app.example.com/jwks.json": false, "http://127.0.0.1:8443/jwks.json": true, "https://keys.example.com/": true} {
		if err := oauth.CheckJWKSURI(uri, operator); err != nil {
			t.Errorf("%s (operator %v): %v", uri, operator, err)
		}
	}
	for uri, operator := range map[string]bool{"http://127.0.0.1:8443/jwks.json": false, "http://keys.example.com/jwks.json": true, "https://user:pw@keys.example.com/jwks.json": true, "https://keys.example.com/jwks.json#x": false, "ftp://keys.example.com/jwks.json": true} {
		if err := oauth.CheckJWKSURI(uri, operator); err == nil {
			t.Errorf("%s (operator %v) accepted", uri, operator)
		}
	}
}

// An operator's change to a client with keys keeps its keys (the
// re-validation used to drop them, and the client could no longer
// authenticate).
func TestAdminChangeKeepsClientKeys(t *testing.T) {
	ctx := context.Background()
	s := newServerAt(t, cheapParams, nil)
	k := newTestKey(t, "EC", "job-1", "")
	if _, secret, err := s.Admin().CreateClient(ctx, oauth.ClientSpec{ID: "job", JWKS: keySet(t, k), GrantTypes: []string{oauth.GrantClientCredentials}, Scopes: []string{"data:read"}}); err != nil || secret != "" {
		t.Fatalf("create a client with keys: %q %v", secret, err)
	}
	name := "Renamed job"
	c, err := s.Admin().UpdateClient(ctx, "job", oauth.ClientPatch{Name: &name})
	if err != nil || c.AuthMethod() != oauth.AuthPrivateKeyJWT || c.SecretHash != "" || c.JWKS == "" {
		t.Fatalf("after a change: %+v %v", c, err)
	}
	v := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {oauth.ClientAssertionType},
		"client_assertion": {k.sign(t, nil, assertionClaims("job", issuer, time.Now()))}}
	req := httptest.NewRequest("POST", "/oauth2/token", strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("the key after a change: %d %s", rec.Code, rec.Body)
	}
}

// A self-registered client naming an operator's jwks_uri cannot spoil the
// operator's cached set: the two are fetched, and cached, apart.
func TestRemoteKeySetsKeepOperatorsApart(t *testing.T) {
	k := newTestKey(t, "EC", "op-1", "")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(keySet(t, k)))
	}))
	defer srv.Close()
	r := oauth.NewRemoteKeySets(nil, nil, nil)
	ctx := context.Background()
	if keys, err := r.Keys(ctx, srv.URL, true, "op-1"); err != nil || len(keys) != 1 {
		t.Fatalf("the operator's set: %v", err)
	}
	if _, err := r.Keys(ctx, srv.URL, false, "unknown"); err == nil {
		t.Fatal("a self-registered client fetched from a loopback address")
	}
	if keys, err := r.Keys(ctx, srv.URL, true, "op-1"); err != nil || len(keys) != 1 {
		t.Fatalf("the operator's set after the other's failure: %v", err)
	}
}
