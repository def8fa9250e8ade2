package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
)

// upstream is the API behind the guard: it answers with the headers it got.
type upstream struct {
	*httptest.Server
	hits atomic.Int64
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		seen := map[string]string{}
		for _, h := range []string{"X-Agent-Id", "X-Agent-Client-Id", "X-Agent-Scopes", "X-Agent-Model", "Authorization", "X-Placeholder-Agent", "X-Placeholder-Scopes"} {
			seen[h] = strings.Join(r.Header.Values(h), ",")
		}
		for name := range r.Header {
			if strings.HasPrefix(strings.ToLower(name), "x_agent") {
				seen["Spoofed"] += name + ";"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen)
	}))
	t.Cleanup(u.Close)
	return u
}

// guardAPI puts an API behind guards (agent_guard blocks) in c's config,
// proxying to a new upstream that echoes what it was told, and returns the
// API's URL.
func (c *caddy) guardAPI(t *testing.T, guards string) string {
	t.Helper()
	up := newUpstream(t)
	port := freePort(t)
	c.sites = guardedSite(port, guards, up.URL)
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// guardedSite renders an API site: guard blocks, then the proxy.
func guardedSite(port int, guards, upstreamURL string) string {
	return fmt.Sprintf(`
http://127.0.0.1:%d {
%s
	reverse_proxy %s {
		header_up X-Placeholder-Agent {http.auth.agent.id}
		header_up X-Placeholder-Scopes {http.auth.agent.scopes}
	}
}
`, port, guards, strings.TrimPrefix(upstreamURL, "http://"))
}

func TestGuardLocal(t *testing.T) {
	up := newUpstream(t)
	c := newCaddy(t, "")
	apiPort := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	c.sites = guardedSite(apiPort, `	@writes method POST PUT PATCH DELETE
	agent_guard @writes {
		scopes data:write
	}
	agent_guard {
		scopes data:read
	}`, up.URL)
	c.start(`		default_permissions data:read
		agent writer {
			permissions data:read data:write
		}`)
	c.registerOK(t, "reader")
	c.admin(t, "POST", "/auth_agent/agents", `{"agent_id":"writer","agent_secret":"Test123456!","model_name":"claude","owner_email":"w@example.com"}`)
	readTok := c.token(t, "reader", secret)
	writeTok := c.token(t, "writer", secret)

	t.Run("allowed, with headers and placeholders for the upstream", func(t *testing.T) {
		r := do(t, "GET", api+"/items", map[string]string{
			"Authorization": "Bearer " + readTok, "X-Agent-Id": "spoofed", "x-agent-scopes": "admin", "X-Agent-Model": "fake",
			"X_Agent_Id": "spoofed-underscore", "x_agent_model": "fake",
		}, "")
		if r.json["Spoofed"] != nil && r.json["Spoofed"] != "" {
			t.Fatalf("the upstream got caller-sent look-alike headers: %v", r.json["Spoofed"])
		}
		if r.status != 200 {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		for h, want := range map[string]string{
			"X-Agent-Id": "reader", "X-Agent-Client-Id": "reader", "X-Agent-Scopes": "profile data:read", "X-Agent-Model": "gpt-4",
			"X-Placeholder-Agent": "reader", "X-Placeholder-Scopes": "profile data:read", "Authorization": "Bearer " + readTok,
		} {
			if r.json[h] != want {
				t.Errorf("upstream saw %s = %q, want %q", h, r.json[h], want)
			}
		}
	})

	t.Run("refusals never reach the upstream", func(t *testing.T) {
		before := up.hits.Load()
		cases := map[string]struct {
			method, auth string
			status       int
			code         string
		}{
			"missing token":      {"GET", "", 401, "invalid_token"},
			"basic scheme":       {"GET", "Basic dXNlcjpwYXNz", 401, "invalid_token"},
			"malformed bearer":   {"GET", "Bearer a b", 401, "invalid_token"},
			"garbage token":      {"GET", "Bearer not.a.token", 401, "invalid_token"},
			"tampered payload":   {"GET", "Bearer " + tamperSub(readTok, "writer"), 401, "invalid_token"},
			"alg none":           {"GET", "Bearer " + algNone(readTok), 401, "invalid_token"},
			"missing scope":      {"POST", "Bearer " + readTok, 403, "insufficient_scope"},
			"write needs both 1": {"DELETE", "Bearer " + readTok, 403, "insufficient_scope"},
		}
		for name, tc := range cases {
			t.Run(name, func(t *testing.T) {
				r := do(t, tc.method, api+"/items", map[string]string{"Authorization": tc.auth}, "")
				wantError(t, r, tc.status, tc.code)
				ch := r.header.Get("WWW-Authenticate")
				if !strings.HasPrefix(ch, `Bearer realm="127.0.0.1:`) || !strings.Contains(ch, `resource_metadata="`+api+`/.well-known/oauth-protected-resource"`) {
					t.Fatalf("challenge %q", ch)
				}
				if tc.auth != "" && !strings.Contains(ch, `error="`+tc.code+`"`) {
					t.Fatalf("challenge without error: %q", ch)
				}
				if tc.code == "insufficient_scope" && !strings.Contains(ch, `scope="data:write"`) {
					t.Fatalf("challenge does not name the scope: %q", ch)
				}
			})
		}
		if r := do(t, "GET", api+"/items?access_token="+readTok, nil, ""); r.status != 401 {
			t.Fatalf("token in the query string: %d", r.status)
		}
		if r := do(t, "GET", api+"/items", map[string]string{"Cookie": "access_token=" + readTok}, ""); r.status != 401 {
			t.Fatalf("token in a cookie: %d", r.status)
		}
		if n := up.hits.Load() - before; n != 0 {
			t.Fatalf("%d refused requests reached the upstream", n)
		}
	})

	t.Run("writes need data:write", func(t *testing.T) {
		if r := do(t, "POST", api+"/items", bearer(writeTok), `{}`); r.status != 200 || r.json["X-Agent-Id"] != "writer" {
			t.Fatalf("write: %d %s", r.status, r.body)
		}
	})

	t.Run("revocation is honoured at once", func(t *testing.T) {
		c.registerOK(t, "to-revoke")
		tok := c.token(t, "to-revoke", secret)
		if r := do(t, "GET", api+"/items", bearer(tok), ""); r.status != 200 {
			t.Fatalf("before: %d", r.status)
		}
		c.admin(t, "PATCH", "/auth_agent/agents/to-revoke", `{"disabled":true}`)
		wantError(t, do(t, "GET", api+"/items", bearer(tok), ""), 401, "invalid_token")
	})

	t.Run("protected resource metadata", func(t *testing.T) {
		r := do(t, "GET", api+"/.well-known/oauth-protected-resource", nil, "")
		servers, _ := r.json["authorization_servers"].([]any)
		if r.status != 200 || r.json["resource"] != api || len(servers) != 1 || servers[0] != c.base() ||
			fmt.Sprint(r.json["bearer_methods_supported"]) != "[header]" || fmt.Sprint(r.json["scopes_supported"]) != "[data:read]" {
			t.Fatalf("metadata: %d %s", r.status, r.body)
		}
	})
}

func TestGuardAudience(t *testing.T) {
	up := newUpstream(t)
	c := newCaddy(t, "")
	apiPort := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	c.sites = guardedSite(apiPort, fmt.Sprintf(`	agent_guard {
		scopes data:read
		resource %s
		strip_token
	}`, api), up.URL)
	c.start("		default_permissions data:read")
	c.registerOK(t, "aud-agent")
	forIdP := c.token(t, "aud-agent", secret)
	wantError(t, do(t, "GET", api+"/x", bearer(forIdP), ""), 401, "invalid_token")
	r := do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"aud-agent","agent_secret":%q,"resource":%q}`, secret, api))
	forAPI := r.str("access_token")
	got := do(t, "GET", api+"/x", bearer(forAPI), "")
	if got.status != 200 || got.json["Authorization"] != "" {
		t.Fatalf("with the API's audience: %d %s (strip_token must remove Authorization)", got.status, got.body)
	}
	other := do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"aud-agent","agent_secret":%q,"resource":"https://other.example.com"}`, secret)).str("access_token")
	wantError(t, do(t, "GET", api+"/x", bearer(other), ""), 401, "invalid_token")
	if md := do(t, "GET", api+"/.well-known/oauth-protected-resource", nil, ""); md.json["resource"] != api {
		t.Fatalf("metadata resource %v", md.json["resource"])
	}
}

// fakeIdP is an authorization server whose keys the test holds, so it can
// mint every kind of bad token.
type fakeIdP struct {
	*httptest.Server
	rsa  *rsa.PrivateKey
	ec   *ecdsa.PrivateKey
	up   atomic.Bool
	jwks atomic.Int64
}

func newFakeIdP(t *testing.T) *fakeIdP {
	t.Helper()
	f := &fakeIdP{}
	f.rsa, _ = rsa.GenerateKey(rand.Reader, 2048)
	f.ec, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.up.Store(true)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": f.URL, "jwks_uri": f.URL + "/jwks"})
		case "/jwks":
			f.jwks.Add(1)
			b64 := base64.RawURLEncoding.EncodeToString
			raw := make([]byte, 0, 65)
			raw = append(raw, 4)
			raw = append(raw, f.ec.X.FillBytes(make([]byte, 32))...)
			raw = append(raw, f.ec.Y.FillBytes(make([]byte, 32))...)
			_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{
				{"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": b64(f.rsa.N.Bytes()), "e": b64(big.NewInt(int64(f.rsa.E)).Bytes())},
				{"kty": "EC", "kid": "ec-1", "alg": "ES256", "use": "sig", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])},
			}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// mint signs claims; edit changes the defaults.
func (f *fakeIdP) mint(t *testing.T, edit func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any)) string {
	t.Helper()
	now := time.Now()
	claims := jwt.MapClaims{"iss": f.URL, "sub": "remote-agent", "aud": []string{"https://api.example.com"}, "exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(), "nbf": now.Unix(), "jti": fmt.Sprint(now.UnixNano()), "client_id": "remote-client", "scope": "data:read"}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"], tok.Header["typ"] = "rsa-1", "at+jwt"
	var method jwt.SigningMethod = jwt.SigningMethodRS256
	var key any = f.rsa
	if edit != nil {
		if m, k := edit(tok.Header, claims); m != nil {
			method, key = m, k
		}
	}
	tok.Method = method
	tok.Header["alg"] = method.Alg()
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGuardRemoteIssuerRefusals(t *testing.T) {
	idp := newFakeIdP(t)
	up := newUpstream(t)
	c := newCaddy(t, "")
	apiPort := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	c.sites = guardedSite(apiPort, fmt.Sprintf(`	agent_guard {
		issuer %s
		scopes data:read
		resource https://api.example.com
		key_refresh_interval 1s
	}`, idp.URL), up.URL)
	c.start("")

	good := idp.mint(t, nil)
	if r := do(t, "GET", api+"/x", bearer(good), ""); r.status != 200 || r.json["X-Agent-Id"] != "remote-agent" || r.json["X-Agent-Client-Id"] != "remote-client" {
		t.Fatalf("good remote token: %d %s", r.status, r.body)
	}
	es := idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
		h["kid"] = "ec-1"
		return jwt.SigningMethodES256, idp.ec
	})
	if r := do(t, "GET", api+"/x", bearer(es), ""); r.status != 200 {
		t.Fatalf("ES256 remote token: %d %s", r.status, r.body)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustPKIX(t, &idp.rsa.PublicKey)})
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	before := up.hits.Load()
	for name, tok := range map[string]string{
		"expired": idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
			c["exp"], c["iat"], c["nbf"] = time.Now().Add(-2*time.Minute).Unix(), time.Now().Add(-time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
			return nil, nil
		}),
		"not yet valid": idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
			c["nbf"] = time.Now().Add(10 * time.Minute).Unix()
			return nil, nil
		}),
		"wrong issuer": idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
			c["iss"] = "https://evil.example.com"
			return nil, nil
		}),
		"wrong audience": idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
			c["aud"] = "https://other.example.com"
			return nil, nil
		}),
		"wrong typ": idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
			h["typ"] = "JWT"
			return nil, nil
		}),
		"no exp": idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
			delete(c, "exp")
			return nil, nil
		}),
		"missing scope": idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
			c["scope"] = "data:write"
			return nil, nil
		}),
		"HS256 with the public key": idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
			return jwt.SigningMethodHS256, pubPEM
		}),
		"unknown kid": idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
			h["kid"] = "nope"
			return nil, nil
		}),
		"forged with another key": idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
			return jwt.SigningMethodRS256, other
		}),
		"RSA kid, ES256 alg": idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) {
			return jwt.SigningMethodES256, idp.ec
		}),
		"alg none":         algNone(good),
		"tampered payload": tamperSub(good, "admin"),
	} {
		t.Run(name, func(t *testing.T) {
			r := do(t, "GET", api+"/x", bearer(tok), "")
			want, code := 401, "invalid_token"
			if name == "missing scope" {
				want, code = 403, "insufficient_scope"
			}
			wantError(t, r, want, code)
		})
	}
	if n := up.hits.Load() - before; n != 0 {
		t.Fatalf("%d refused requests reached the upstream", n)
	}
	// Unknown kids trigger key fetches at most once per interval.
	fetches := idp.jwks.Load()
	for range 20 {
		do(t, "GET", api+"/x", bearer(idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) { h["kid"] = "random"; return nil, nil })), "")
	}
	if n := idp.jwks.Load() - fetches; n > 2 {
		t.Fatalf("20 unknown kids caused %d key-set fetches", n)
	}

	t.Run("issuer down: cached keys keep working", func(t *testing.T) {
		idp.up.Store(false)
		defer idp.up.Store(true)
		if r := do(t, "GET", api+"/x", bearer(idp.mint(t, nil)), ""); r.status != 200 {
			t.Fatalf("cached keys: %d %s", r.status, r.body)
		}
		wantError(t, do(t, "GET", api+"/x", bearer(idp.mint(t, func(h map[string]any, c jwt.MapClaims) (jwt.SigningMethod, any) { h["kid"] = "new"; return nil, nil })), ""), 401, "invalid_token")
	})
}

func TestGuardRemoteIssuerDownAtStart(t *testing.T) {
	idp := newFakeIdP(t)
	idp.up.Store(false)
	up := newUpstream(t)
	c := newCaddy(t, "")
	apiPort := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	c.sites = guardedSite(apiPort, fmt.Sprintf("\tagent_guard {\n\t\tissuer %s\n\t\tresource https://api.example.com\n\t\tkey_refresh_interval 1s\n\t}", idp.URL), up.URL)
	c.start("")
	r := do(t, "GET", api+"/x", bearer(idp.mint(t, nil)), "")
	wantError(t, r, 503, "temporarily_unavailable")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	idp.up.Store(true)
	time.Sleep(1100 * time.Millisecond)
	if r := do(t, "GET", api+"/x", bearer(idp.mint(t, nil)), ""); r.status != 200 {
		t.Fatalf("after the issuer came back: %d %s", r.status, r.body)
	}
}

// TestGuardRemoteCaddyIdP: the guard in one Caddy trusts a second Caddy
// acting as IdP, follows its key rotation, and revokes through
// introspection.
func TestGuardRemoteCaddyIdP(t *testing.T) {
	site := newWebsite(t)
	idp := newCaddy(t, "")
	// The gateway introspects as a resource server of the IdP: an ordinary
	// client learns only about its own tokens.
	gateway := "\t\tclient gateway {\n\t\t\tsecret " + clientSecret + "\n\t\t\tgrant_types client_credentials\n\t\t\tresource_server\n\t\t}\n"
	idp.start(oauthOpts(site.callback, gateway+"\t\taccess_token_alg RS256"))
	idp.registerOK(t, "remote-agent")

	up := newUpstream(t)
	gw := newCaddy(t, "")
	apiPort := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	gw.sites = guardedSite(apiPort, fmt.Sprintf(`	agent_guard {
		issuer %s
		scopes data:read
		key_refresh_interval 1s
		introspect gateway %s
	}`, idp.base(), clientSecret), up.URL)
	gw.start("")

	tok := idp.token(t, "remote-agent", secret)
	if r := do(t, "GET", api+"/x", bearer(tok), ""); r.status != 200 {
		t.Fatalf("IdP token at the gateway: %d %s", r.status, r.body)
	}
	// A DPoP-bound token of the remote issuer: accepted with its proof,
	// refused as Bearer and with another key's proof.
	key := newECPair(t, "")
	r := do(t, "POST", idp.base()+"/api/agent-auth", map[string]string{"DPoP": key.proof(t, "POST", idp.base()+"/api/agent-auth", nil)},
		fmt.Sprintf(`{"agent_id":"remote-agent","agent_secret":%q}`, secret))
	bound := r.str("access_token")
	if r.status != 200 || r.str("token_type") != "DPoP" {
		t.Fatalf("a DPoP-bound token at the IdP: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", api+"/x", map[string]string{"Authorization": "DPoP " + bound, "DPoP": key.proof(t, "GET", api+"/x", ath(bound))}, ""); r.status != 200 {
		t.Fatalf("the IdP's DPoP-bound token at the gateway: %d %s", r.status, r.body)
	}
	wantError(t, do(t, "GET", api+"/x", bearer(bound), ""), 401, "invalid_token")
	wantError(t, do(t, "GET", api+"/x", map[string]string{"Authorization": "DPoP " + bound, "DPoP": newECPair(t, "").proof(t, "GET", api+"/x", ath(bound))}, ""), 401, "invalid_token")
	// Rotation at the IdP: a new signing key (here: a new algorithm) is
	// picked up on its first unknown kid.
	idp.reload(oauthOpts(site.callback, gateway+"\t\taccess_token_alg ES256"))
	time.Sleep(1100 * time.Millisecond)
	rotated := idp.token(t, "remote-agent", secret)
	if h, _ := decodeJWT(t, rotated); h["alg"] != "ES256" {
		t.Fatalf("IdP did not rotate: %v", h)
	}
	if r := do(t, "GET", api+"/x", bearer(rotated), ""); r.status != 200 {
		t.Fatalf("token signed with the new key: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", api+"/x", bearer(tok), ""); r.status != 200 {
		t.Fatalf("token signed with the previous key: %d", r.status)
	}
	wantError(t, do(t, "GET", api+"/x", bearer(tamperSub(rotated, "admin")), ""), 401, "invalid_token")

	// Revocation at the IdP reaches the gateway through introspection
	// within its cache time.
	idp.admin(t, "PATCH", "/auth_agent/agents/remote-agent", `{"disabled":true}`)
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := do(t, "GET", api+"/x", bearer(rotated), "")
		if r.status == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked token still accepted after 15s: %d", r.status)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// IdP down: introspection cannot answer, so the gateway says 503.
	idp.stop()
	wantError(t, do(t, "GET", api+"/x", bearer(tok), ""), 503, "temporarily_unavailable")
}

// TestMCPDiscoveryWalk is what an MCP client does knowing only the API's
// URL.
func TestMCPDiscoveryWalk(t *testing.T) {
	up := newUpstream(t)
	c := newCaddy(t, "")
	apiPort := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	c.sites = guardedSite(apiPort, fmt.Sprintf("\tagent_guard {\n\t\tscopes data:read\n\t\tresource %s/mcp\n\t}", api), up.URL)
	c.start("\t\tdefault_permissions data:read\n\t\tdynamic_client_registration open")
	c.registerOK(t, "mcp-agent")
	cb := newWebsite(t).callback

	// 1. The API refuses and points at its metadata.
	r := do(t, "POST", api+"/mcp", nil, `{"jsonrpc":"2.0","method":"tools/list","id":1}`)
	wantError(t, r, 401, "invalid_token")
	ch := r.header.Get("WWW-Authenticate")
	i := strings.Index(ch, `resource_metadata="`)
	if i < 0 {
		t.Fatalf("no resource_metadata in %q", ch)
	}
	mdURL := strings.SplitN(ch[i+len(`resource_metadata="`):], `"`, 2)[0]
	if mdURL != api+"/.well-known/oauth-protected-resource/mcp" {
		t.Fatalf("metadata of a resource with a path lives under that path (RFC 9728 §3.1): %s", mdURL)
	}
	// 2. Protected-resource metadata names the authorization server.
	md := do(t, "GET", mdURL, nil, "")
	resource := md.json["resource"].(string)
	if resource != api+"/mcp" {
		t.Fatalf("metadata names %s", resource)
	}
	as := md.json["authorization_servers"].([]any)[0].(string)
	// 3. Authorization-server metadata gives the endpoints.
	asm := do(t, "GET", as+"/.well-known/oauth-authorization-server", nil, "")
	regEndpoint, _ := asm.json["registration_endpoint"].(string)
	if regEndpoint == "" || fmt.Sprint(asm.json["code_challenge_methods_supported"]) != "[S256]" {
		t.Fatalf("AS metadata: %s", asm.body)
	}
	// 4. Dynamic registration as a public client.
	reg := do(t, "POST", regEndpoint, nil, fmt.Sprintf(`{"client_name":"MCP Inspector","redirect_uris":[%q],"token_endpoint_auth_method":"none","scope":"openid data:read"}`, cb))
	clientID := reg.str("client_id")
	if reg.status != 201 || clientID == "" {
		t.Fatalf("registration: %d %s", reg.status, reg.body)
	}
	// 5. Authorization code + PKCE with resource.
	cfg := oauth2.Config{ClientID: clientID, RedirectURL: cb, Scopes: []string{"data:read"},
		Endpoint: oauth2.Endpoint{AuthURL: asm.json["authorization_endpoint"].(string), TokenURL: asm.json["token_endpoint"].(string), AuthStyle: oauth2.AuthStyleInParams}}
	v := oauth2.GenerateVerifier()
	back := c.agentSignIn(t, cfg.AuthCodeURL("mcp-state", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("resource", resource)), "mcp-agent", secret)
	tok, err := cfg.Exchange(context.Background(), back.Query().Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	// 6. The token's audience is the API.
	if _, claims := decodeJWT(t, tok.AccessToken); fmt.Sprint(claims["aud"]) != "["+resource+"]" {
		t.Fatalf("aud %v, want %s", claims["aud"], resource)
	}
	// 7. The API answers.
	r = do(t, "POST", api+"/mcp", bearer(tok.AccessToken), `{"jsonrpc":"2.0","method":"tools/list","id":1}`)
	if r.status != 200 || r.json["X-Agent-Id"] != "mcp-agent" || r.json["X-Agent-Client-Id"] != clientID {
		t.Fatalf("API: %d %s", r.status, r.body)
	}
	_ = url.Values{}
}

func tamperSub(tok, sub string) string {
	parts := strings.Split(tok, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	_ = json.Unmarshal(raw, &claims)
	claims["sub"] = sub
	raw, _ = json.Marshal(claims)
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

func mustPKIX(t *testing.T, pub any) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
