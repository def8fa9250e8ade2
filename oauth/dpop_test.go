package oauth_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

// proof signs a DPoP proof with k for method and u; edit changes the
// header and claims first.
func (k testKey) proof(t testing.TB, method, u string, edit func(h, c map[string]any)) string {
	t.Helper()
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	claims := jwt.MapClaims{"jti": base64.RawURLEncoding.EncodeToString(jti), "htm": method, "htu": u, "iat": time.Now().Unix()}
	tok := jwt.NewWithClaims(k.method, claims)
	tok.Header["typ"] = "dpop+jwt"
	tok.Header["jwk"] = k.jwk
	if edit != nil {
		edit(tok.Header, claims)
	}
	s, err := tok.SignedString(k.private)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (k testKey) thumbprint(t testing.TB) string {
	jkt, err := oauth.JWKThumbprint(k.jwk)
	if err != nil {
		t.Fatal(err)
	}
	return jkt
}

func TestJWKThumbprint(t *testing.T) {
	// RFC 7638 §3.1.
	var jwk map[string]any
	_ = json.Unmarshal([]byte(`{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}`), &jwk)
	got, err := oauth.JWKThumbprint(jwk)
	if err != nil || got != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Fatalf("thumbprint %q, %v", got, err)
	}
	if !oauth.ValidThumbprint(got) || oauth.ValidThumbprint("abc") || oauth.ValidThumbprint(got+"A") {
		t.Fatal("ValidThumbprint")
	}
}

func TestDPoPProofChecks(t *testing.T) {
	const u = "https://api.example.com/v1/data"
	clock := &testClock{t: time.Now()}
	nonces := oauth.NewDPoPNonces([]byte("nonce key"), clock.now)
	replays := oauth.NewLocalReplays(clock.now)
	v := oauth.NewDPoPVerifier(oauth.DPoPConfig{Replays: replays, Now: clock.now})
	withNonces := oauth.NewDPoPVerifier(oauth.DPoPConfig{Replays: replays, Nonces: nonces, Now: clock.now})
	ec, ed, rs, other := newTestKey(t, "EC", "", ""), newTestKey(t, "OKP", "", ""), newTestKey(t, "RSA", "", ""), newTestKey(t, "EC", "", "")
	req := oauth.DPoPRequest{Method: "GET", URLs: []string{u}}
	at := "the.access.token"
	withToken := oauth.DPoPRequest{Method: "GET", URLs: []string{u}, AccessToken: at}
	now := clock.now()

	for _, k := range []testKey{ec, ed, rs} {
		p, err := v.Verify(context.Background(), []string{k.proof(t, "GET", u, nil)}, req)
		if err != nil || p.JKT != k.thumbprint(t) {
			t.Fatalf("%s: %v", k.method.Alg(), err)
		}
	}
	if p, err := v.Verify(context.Background(), nil, req); p != nil || err != nil {
		t.Fatal("no header is no proof")
	}
	// Normalized: case of scheme and host, default port; query and
	// fragment are not part of htu.
	for _, htu := range []string{"HTTPS://API.example.com:443/v1/data", "https://api.example.com/v1/data"} {
		if _, err := v.Verify(context.Background(), []string{ec.proof(t, "GET", htu, nil)}, req); err != nil {
			t.Errorf("htu %s: %v", htu, err)
		}
	}
	if _, err := v.Verify(context.Background(), []string{ec.proof(t, "GET", u, func(_, c map[string]any) { c["ath"] = oauth.AccessTokenHash(at) })}, withToken); err != nil {
		t.Fatalf("ath: %v", err)
	}

	hmacProof := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"jti": "x", "htm": "GET", "htu": u, "iat": now.Unix()})
		tok.Header["typ"], tok.Header["jwk"] = "dpop+jwt", map[string]any{"kty": "oct", "k": "c2VjcmV0"}
		s, _ := tok.SignedString([]byte("secret"))
		return s
	}()
	noneProof := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"jti": "x", "htm": "GET", "htu": u, "iat": now.Unix()})
		tok.Header["typ"], tok.Header["jwk"] = "dpop+jwt", ec.jwk
		s, _ := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		return s
	}()
	forged := func() string {
		p := ec.proof(t, "GET", u, nil)
		q := other.proof(t, "GET", u, nil)
		return p[:strings.LastIndex(p, ".")] + q[strings.LastIndex(q, "."):]
	}()
	withPrivate := newTestKey(t, "EC", "", "")
	replayed := ec.proof(t, "GET", u, nil)
	if _, err := v.Verify(context.Background(), []string{replayed}, req); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		header []string
		q      oauth.DPoPRequest
		v      *oauth.DPoPVerifier
		code   string
	}{
		"two headers":         {[]string{ec.proof(t, "GET", u, nil), ec.proof(t, "GET", u, nil)}, req, v, "invalid_dpop_proof"},
		"not a JWT":           {[]string{"abc"}, req, v, "invalid_dpop_proof"},
		"typ JWT":             {[]string{ec.proof(t, "GET", u, func(h, _ map[string]any) { h["typ"] = "JWT" })}, req, v, "invalid_dpop_proof"},
		"alg HS256":           {[]string{hmacProof}, req, v, "invalid_dpop_proof"},
		"alg none":            {[]string{noneProof}, req, v, "invalid_dpop_proof"},
		"no jwk":              {[]string{ec.proof(t, "GET", u, func(h, _ map[string]any) { delete(h, "jwk") })}, req, v, "invalid_dpop_proof"},
		"private jwk":         {[]string{withPrivate.proof(t, "GET", u, func(h, _ map[string]any) { h["jwk"] = mergeJWK(withPrivate.jwk, "d", "AAAA") })}, req, v, "invalid_dpop_proof"},
		"jwk of another":      {[]string{forged}, req, v, "invalid_dpop_proof"},
		"alg not the key's":   {[]string{ec.proof(t, "GET", u, func(h, _ map[string]any) { h["jwk"] = ed.jwk })}, req, v, "invalid_dpop_proof"},
		"wrong htm":           {[]string{ec.proof(t, "POST", u, nil)}, req, v, "invalid_dpop_proof"},
		"wrong htu":           {[]string{ec.proof(t, "GET", "https://api.example.com/v1/other", nil)}, req, v, "invalid_dpop_proof"},
		"htu of another host": {[]string{ec.proof(t, "GET", "https://evil.example.com/v1/data", nil)}, req, v, "invalid_dpop_proof"},
		"iat too old":         {[]string{ec.proof(t, "GET", u, func(_, c map[string]any) { c["iat"] = now.Add(-61 * time.Second).Unix() })}, req, v, "invalid_dpop_proof"},
		"iat ahead":           {[]string{ec.proof(t, "GET", u, func(_, c map[string]any) { c["iat"] = now.Add(61 * time.Second).Unix() })}, req, v, "invalid_dpop_proof"},
		"no iat":              {[]string{ec.proof(t, "GET", u, func(_, c map[string]any) { delete(c, "iat") })}, req, v, "invalid_dpop_proof"},
		"no jti":              {[]string{ec.proof(t, "GET", u, func(_, c map[string]any) { delete(c, "jti") })}, req, v, "invalid_dpop_proof"},
		"no ath":              {[]string{ec.proof(t, "GET", u, nil)}, withToken, v, "invalid_dpop_proof"},
		"wrong ath":           {[]string{ec.proof(t, "GET", u, func(_, c map[string]any) { c["ath"] = oauth.AccessTokenHash("another") })}, withToken, v, "invalid_dpop_proof"},
		"replayed":            {[]string{replayed}, req, v, "invalid_dpop_proof"},
		"no nonce":            {[]string{ec.proof(t, "GET", u, nil)}, req, withNonces, "use_dpop_nonce"},
		"forged nonce":        {[]string{ec.proof(t, "GET", u, func(_, c map[string]any) { c["nonce"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" })}, req, withNonces, "use_dpop_nonce"},
	} {
		_, err := c.v.Verify(context.Background(), c.header, c.q)
		var e *oauth.Error
		if !errors.As(err, &e) || e.Code != c.code || e.Status != 400 {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if c.code == "use_dpop_nonce" && e.Header.Get("DPoP-Nonce") != nonces.Current() {
			t.Errorf("%s: DPoP-Nonce %q", name, e.Header.Get("DPoP-Nonce"))
		}
	}

	// A nonce is good in its window and the next, not after.
	n := nonces.Current()
	good := func(nonce string) error {
		_, err := withNonces.Verify(context.Background(), []string{ec.proof(t, "GET", u, func(_, c map[string]any) { c["nonce"] = nonce; c["iat"] = clock.now().Unix() })}, req)
		return err
	}
	if err := good(n); err != nil {
		t.Fatalf("current nonce: %v", err)
	}
	clock.advance(oauth.DPoPNonceWindow)
	if err := good(n); err != nil || nonces.Current() == n {
		t.Fatalf("previous window's nonce: %v", err)
	}
	clock.advance(oauth.DPoPNonceWindow)
	if err := good(n); err == nil {
		t.Fatal("a nonce two windows old was accepted")
	}
	// Another process with the same key accepts this one's nonces.
	if !oauth.NewDPoPNonces([]byte("nonce key"), clock.now).Valid(nonces.Current()) {
		t.Fatal("nonces are not shared through the key")
	}
	if oauth.NewDPoPNonces([]byte("another key"), clock.now).Valid(nonces.Current()) {
		t.Fatal("a nonce of another key was accepted")
	}
}

func mergeJWK(jwk map[string]any, k, v string) map[string]any {
	out := map[string]any{k: v}
	for name, val := range jwk {
		out[name] = val
	}
	return out
}

func TestDPoPRefusesProofsFromBeforeStart(t *testing.T) {
	const u = "https://auth.example.com/oauth2/token"
	ec := newTestKey(t, "EC", "", "")
	v := oauth.NewDPoPVerifier(oauth.DPoPConfig{Replays: oauth.NewLocalReplays(nil), NotBefore: time.Now()})
	old := ec.proof(t, "POST", u, func(_, c map[string]any) { c["iat"] = time.Now().Add(-2 * time.Second).Unix() })
	if _, err := v.Verify(context.Background(), []string{old}, oauth.DPoPRequest{Method: "POST", URLs: []string{u}}); err == nil {
		t.Fatal("a proof made before the verifier existed was accepted")
	}
	if _, err := v.Verify(context.Background(), []string{ec.proof(t, "POST", u, nil)}, oauth.DPoPRequest{Method: "POST", URLs: []string{u}}); err != nil {
		t.Fatal(err)
	}
}

func TestLocalReplaysExpire(t *testing.T) {
	clock := &testClock{t: time.Now()}
	r := oauth.NewLocalReplays(clock.now)
	ctx := context.Background()
	until := clock.now().Add(time.Minute)
	if err := r.UseOnce(ctx, "a", until); err != nil {
		t.Fatal(err)
	}
	if err := r.UseOnce(ctx, "a", until); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("second use: %v", err)
	}
	clock.advance(59 * time.Second)
	if err := r.UseOnce(ctx, "a", until); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("before until: %v", err)
	}
	clock.advance(10 * time.Second)
	if err := r.UseOnce(ctx, "a", clock.now().Add(time.Minute)); err != nil || r.Len() != 1 {
		t.Fatalf("after until: %v, %d held", err, r.Len())
	}
}

// dpopAgentToken gets a token at /api/agent-auth with a proof by k.
func dpopAgentToken(t *testing.T, s testServer, k testKey, id string) (string, map[string]any) {
	t.Helper()
	req := httptest.NewRequest("POST", "https://auth.example.com/api/agent-auth", strings.NewReader(`{"agent_id":"`+id+`","agent_secret":"Test123456!"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("DPoP", k.proof(t, "POST", issuer+"/api/agent-auth", nil))
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	var resp struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || rec.Code != 200 {
		t.Fatalf("agent-auth with DPoP: %d %s", rec.Code, rec.Body)
	}
	return resp.Data["access_token"].(string), resp.Data
}

func TestDPoPBoundTokens(t *testing.T) {
	s := newServer(t, cheapParams)
	s.seedAgent(t, "bot")
	ec, other := newTestKey(t, "EC", "", ""), newTestKey(t, "EC", "", "")
	at, data := dpopAgentToken(t, s, ec, "bot")
	if data["token_type"] != "DPoP" {
		t.Fatalf("token_type %v", data["token_type"])
	}
	parts := strings.Split(at, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Cnf struct {
			JKT string `json:"jkt"`
		} `json:"cnf"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.Cnf.JKT != ec.thumbprint(t) {
		t.Fatalf("cnf %s", raw)
	}

	profile := func(auth string, proof string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "https://auth.example.com/api/agents/profile", nil)
		req.Header.Set("Authorization", auth)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	u := issuer + "/api/agents/profile"
	ath := func(_, c map[string]any) { c["ath"] = oauth.AccessTokenHash(at) }
	if rec := profile("DPoP "+at, ec.proof(t, "GET", u, ath)); rec.Code != 200 {
		t.Fatalf("profile with proof: %d %s", rec.Code, rec.Body)
	}
	for name, c := range map[string]struct {
		auth, proof, code, scheme string
	}{
		"as Bearer":             {"Bearer " + at, "", "invalid_token", "DPoP"},
		"without a proof":       {"DPoP " + at, "", "invalid_dpop_proof", "DPoP"},
		"proof of another":      {"DPoP " + at, other.proof(t, "GET", u, ath), "invalid_token", "DPoP"},
		"proof without ath":     {"DPoP " + at, ec.proof(t, "GET", u, nil), "invalid_dpop_proof", "DPoP"},
		"proof for another URL": {"DPoP " + at, ec.proof(t, "GET", issuer+"/oauth2/userinfo", ath), "invalid_dpop_proof", "DPoP"},
	} {
		rec := profile(c.auth, c.proof)
		checkShape(t, rec)
		var e map[string]string
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		if rec.Code != 401 || e["error"] != c.code || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), c.scheme+" ") {
			t.Errorf("%s: %d %s %q", name, rec.Code, rec.Body, rec.Header().Get("WWW-Authenticate"))
		}
	}
	// An unbound token never goes with the DPoP scheme.
	plain := s.token(t, "bot", "Test123456!")
	if rec := profile("DPoP "+plain, ec.proof(t, "GET", u, func(_, c map[string]any) { c["ath"] = oauth.AccessTokenHash(plain) })); rec.Code != 401 {
		t.Fatalf("unbound token with the DPoP scheme: %d", rec.Code)
	}

	// Introspection says how the token is bound.
	rec := s.form("/oauth2/introspect", url.Values{"token": {at}})
	var intro map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &intro)
	// The site client learns only of its own tokens; an agent's token of
	// its own is introspected by the agent.
	req := httptest.NewRequest("POST", "/oauth2/introspect", strings.NewReader(url.Values{"token": {at}, "client_id": {"bot"}, "client_secret": {"Test123456!"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	_ = json.Unmarshal(rec.Body.Bytes(), &intro)
	if intro["token_type"] != "DPoP" || intro["cnf"].(map[string]any)["jkt"] != ec.thumbprint(t) {
		t.Fatalf("introspection %s", rec.Body)
	}
}

func TestDPoPPolicies(t *testing.T) {
	s := newServer(t, cheapParams)
	s.seedAgent(t, "bot")
	ec := newTestKey(t, "EC", "", "")
	if _, err := s.Admin().UpdateAgent(context.Background(), "bot", agents.AdminUpdate{RequireDPoP: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	rec := s.call("POST", "/api/agent-auth", "", `{"agent_id":"bot","agent_secret":"Test123456!"}`)
	checkShape(t, rec)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_dpop_proof") {
		t.Fatalf("agent requiring DPoP without a proof: %d %s", rec.Code, rec.Body)
	}
	req := httptest.NewRequest("POST", "/oauth2/token", strings.NewReader("grant_type=client_credentials&client_id=bot&client_secret=Test123456%21"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_dpop_proof") {
		t.Fatalf("client_credentials without a proof: %d %s", rec.Code, rec.Body)
	}
	if _, data := dpopAgentToken(t, s, ec, "bot"); data["token_type"] != "DPoP" {
		t.Fatal("with a proof")
	}
}

// An operator's change to a client keeps or sets its DPoP requirement:
// the change is validated as a new client, which must not lose it.
func TestClientUpdateKeepsDPoPRequirement(t *testing.T) {
	s := newServer(t, cheapParams)
	ctx := context.Background()
	if _, _, err := s.Admin().CreateClient(ctx, oauth.ClientSpec{ID: "app", Public: true, RedirectURIs: []string{testRedirect}}); err != nil {
		t.Fatal(err)
	}
	c, err := s.Admin().UpdateClient(ctx, "app", oauth.ClientPatch{RequireDPoP: ptr(true)})
	if err != nil || !c.RequireDPoP {
		t.Fatalf("setting dpop_bound_access_tokens: %+v, %v", c, err)
	}
	name := "Renamed"
	if c, err = s.Admin().UpdateClient(ctx, "app", oauth.ClientPatch{Name: &name}); err != nil || !c.RequireDPoP || c.Name != name {
		t.Fatalf("renaming a client that requires DPoP: %+v, %v", c, err)
	}
	if stored, err := s.Admin().Client(ctx, "app"); err != nil || !stored.RequireDPoP {
		t.Fatalf("stored: %+v, %v", stored, err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestDPoPAtTheTokenEndpoint(t *testing.T) {
	pub, _, err := oauth.NewClient(oauth.ClientSpec{ID: "app", Public: true, RedirectURIs: []string{testRedirect}, Scopes: []string{"openid", "data:read"}}, oauth.ClientFromConfig, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s := newServerAt(t, cheapParams, nil, pub)
	s.seedAgent(t, "bot")
	ec, other := newTestKey(t, "EC", "", ""), newTestKey(t, "EC", "", "")
	tokenURL := issuer + "/oauth2/token"

	// A code requested with dpop_jkt redeems only with that key.
	code := func(jkt string) string {
		q := url.Values{"response_type": {"code"}, "client_id": {"app"}, "redirect_uri": {testRedirect}, "scope": {"openid data:read"},
			"code_challenge": {testChallenge()}, "code_challenge_method": {"S256"}, "state": {"s"}}
		if jkt != "" {
			q.Set("dpop_jkt", jkt)
		}
		req := httptest.NewRequest("GET", "/oauth2/authorize?"+q.Encode(), nil)
		req.Header.Set("Accept", "application/json")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		var started struct {
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &started); err != nil || started.RequestID == "" {
			t.Fatalf("authorize: %d %s", rec.Code, rec.Body)
		}
		done := s.call("POST", "/api/agent-auth", "", `{"agent_id":"bot","agent_secret":"Test123456!","request_id":"`+started.RequestID+`"}`)
		var d struct {
			Data struct {
				RedirectTo string `json:"redirect_to"`
			} `json:"data"`
		}
		_ = json.Unmarshal(done.Body.Bytes(), &d)
		u, _ := url.Parse(d.Data.RedirectTo)
		return u.Query().Get("code")
	}
	token := func(v url.Values, proof string) (*httptest.ResponseRecorder, map[string]any) {
		v.Set("client_id", "app")
		req := httptest.NewRequest("POST", "/oauth2/token", strings.NewReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		var body map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec, body
	}
	redeem := func(c string) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "code": {c}, "redirect_uri": {testRedirect}, "code_verifier": {testVerifier}}
	}
	c := code(ec.thumbprint(t))
	if rec, _ := token(redeem(c), ""); rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_dpop_proof") {
		t.Fatalf("bound code without a proof: %d %s", rec.Code, rec.Body)
	}
	if rec, _ := token(redeem(c), other.proof(t, "POST", tokenURL, nil)); rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_grant") {
		t.Fatalf("bound code with another key: %d %s", rec.Code, rec.Body)
	}
	rec, body := token(redeem(c), ec.proof(t, "POST", tokenURL, nil))
	if rec.Code != 200 || body["token_type"] != "DPoP" || body["refresh_token"] == nil {
		t.Fatalf("bound code with its key: %d %s", rec.Code, rec.Body)
	}
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {body["refresh_token"].(string)}}
	// The public client's refresh token is bound: no proof, or another
	// key's, gets nothing and revokes nothing.
	if rec, _ := token(refresh, ""); rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_dpop_proof") {
		t.Fatalf("bound refresh without a proof: %d %s", rec.Code, rec.Body)
	}
	if rec, _ := token(refresh, other.proof(t, "POST", tokenURL, nil)); rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_grant") {
		t.Fatalf("bound refresh with another key: %d %s", rec.Code, rec.Body)
	}
	rec, body = token(refresh, ec.proof(t, "POST", tokenURL, nil))
	if rec.Code != 200 || body["token_type"] != "DPoP" {
		t.Fatalf("bound refresh with its key: %d %s", rec.Code, rec.Body)
	}
	next := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {body["refresh_token"].(string)}}
	if rec, _ := token(next, other.proof(t, "POST", tokenURL, nil)); rec.Code != 400 {
		t.Fatalf("the successor is bound too: %d", rec.Code)
	}

	// A replayed proof is refused; a bad dpop_jkt is refused at authorize.
	p := ec.proof(t, "POST", tokenURL, nil)
	if rec, _ := token(redeem(code("")), p); rec.Code != 200 {
		t.Fatalf("unbound code with a proof: %d %s", rec.Code, rec.Body)
	}
	if rec, _ := token(redeem(code("")), p); rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_dpop_proof") {
		t.Fatalf("replayed proof: %d %s", rec.Code, rec.Body)
	}
	q := url.Values{"response_type": {"code"}, "client_id": {"app"}, "redirect_uri": {testRedirect}, "scope": {"openid"},
		"code_challenge": {testChallenge()}, "code_challenge_method": {"S256"}, "dpop_jkt": {"not-a-thumbprint"}}
	req := httptest.NewRequest("GET", "/oauth2/authorize?"+q.Encode(), nil)
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if loc := rec.Header().Get("Location"); rec.Code != http.StatusFound || !strings.Contains(loc, "error=invalid_request") {
		t.Fatalf("bad dpop_jkt: %d %s", rec.Code, loc)
	}
}

// A process that keeps its replay records in memory (Badger's) writes to
// the store what the process after a restart could not refuse otherwise.
func TestDPoPRecordsSurviveARestart(t *testing.T) {
	const u = "https://auth.example.com/oauth2/token"
	clock := &testClock{t: time.Now()}
	durable := storage.NewMemory(clock.now)
	t.Cleanup(func() { durable.Close() })
	process := func() *oauth.DPoPVerifier {
		return oauth.NewDPoPVerifier(oauth.DPoPConfig{Replays: oauth.NewLocalReplays(clock.now), NotBefore: clock.now(), Durable: durable, Now: clock.now})
	}
	ec := newTestKey(t, "EC", "", "")
	req := oauth.DPoPRequest{Method: "POST", URLs: []string{u}}
	first := process()
	clock.advance(2 * time.Minute) // past its first leeway: records in memory only
	now := clock.now()
	ahead := ec.proof(t, "POST", u, func(_, c map[string]any) { c["iat"] = now.Add(50 * time.Second).Unix() })
	current := ec.proof(t, "POST", u, func(_, c map[string]any) { c["iat"] = now.Unix() })
	for _, p := range []string{ahead, current} {
		if _, err := first.Verify(context.Background(), []string{p}, req); err != nil {
			t.Fatal(err)
		}
	}
	clock.advance(2 * time.Second)
	second := process()
	for name, p := range map[string]string{"a proof dated ahead": ahead, "a proof of before the start": current} {
		if _, err := second.Verify(context.Background(), []string{p}, req); err == nil {
			t.Errorf("%s was accepted again after a restart", name)
		}
	}
	// A new proof in the new process's first leeway is recorded in the
	// store too, and accepted once.
	fresh := ec.proof(t, "POST", u, func(_, c map[string]any) { c["iat"] = clock.now().Add(time.Second).Unix() })
	if _, err := second.Verify(context.Background(), []string{fresh}, req); err != nil {
		t.Fatal(err)
	}
	if _, err := process().Verify(context.Background(), []string{fresh}, req); err == nil {
		t.Fatal("a proof of a process's first leeway was accepted again after another restart")
	}
}

func TestDPoPBindingOfAnotherMethodIsRefused(t *testing.T) {
	v := oauth.NewDPoPVerifier(oauth.DPoPConfig{Replays: oauth.NewLocalReplays(nil)})
	claims := &oauth.AccessClaims{Cnf: &oauth.Confirmation{}} // cnf {"x5t#S256": …}
	err := v.CheckBinding(context.Background(), oauth.TokenTypeBearer, "t", claims, nil, "GET", []string{"https://api.example.com/"})
	var e *oauth.Error
	if !errors.As(err, &e) || e.Status != 401 || e.Code != "invalid_token" {
		t.Fatalf("a token bound by an unchecked method: %v", err)
	}
}

// A token request whose credentials fail does not spend its proof.
func TestDPoPProofSpentOnlyAfterAuthentication(t *testing.T) {
	s := newServer(t, cheapParams)
	s.seedAgent(t, "bot")
	ec := newTestKey(t, "EC", "", "")
	proof := ec.proof(t, "POST", issuer+"/api/agent-auth", nil)
	send := func(secret string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "https://auth.example.com/api/agent-auth", strings.NewReader(`{"agent_id":"bot","agent_secret":"`+secret+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("DPoP", proof)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	if rec := send("wrong-secret-1"); rec.Code != 401 {
		t.Fatalf("wrong secret: %d %s", rec.Code, rec.Body)
	}
	if rec := send("Test123456!"); rec.Code != 200 {
		t.Fatalf("the proof was spent by a failed authentication: %d %s", rec.Code, rec.Body)
	}
	if rec := send("Test123456!"); rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_dpop_proof") {
		t.Fatalf("replayed after success: %d %s", rec.Code, rec.Body)
	}
}
