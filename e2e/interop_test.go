package e2e

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
)

// The failures widely used OAuth and MCP clients ran into, each through a
// real Caddy: SPEC §5 "Decisions of 2026-12" and §6.

// docServer serves Client ID Metadata Documents over TLS on 127.0.0.1;
// certFile is its certificate, for the Caddy that fetches them to trust.
type docServer struct {
	*httptest.Server
	certFile string
	docs     map[string]map[string]any // by path
}

func newDocServer(t *testing.T) *docServer {
	t.Helper()
	d := &docServer{docs: map[string]map[string]any{}}
	d.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, ok := d.docs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=60")
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(d.Close)
	d.certFile = filepath.Join(t.TempDir(), "doc-server.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.Certificate().Raw})
	if err := os.WriteFile(d.certFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// add publishes a document at path naming clientID (its own URL unless a
// test says otherwise) and returns the URL.
func (d *docServer) add(path string, doc map[string]any) string {
	u := d.URL + path
	if _, ok := doc["client_id"]; !ok {
		doc["client_id"] = u
	}
	d.docs[path] = doc
	return u
}

// authorizeJSON starts an authorization request the way a headless client
// does (Accept: application/json) and returns the request id.
func (c *caddy) authorizeJSON(t *testing.T, q url.Values) string {
	t.Helper()
	r := do(t, "GET", c.base()+"/oauth2/authorize?"+q.Encode(), map[string]string{"Accept": "application/json"}, "")
	if r.status != 200 || r.str("request_id") == "" {
		t.Fatalf("authorize %s: %d %s", q.Encode(), r.status, r.body)
	}
	return r.str("request_id")
}

// approve completes a request as the agent and returns the code.
func (c *caddy) approve(t *testing.T, requestID, agentID string) string {
	t.Helper()
	r := do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":%q,"agent_secret":%q,"request_id":%q}`, agentID, secret, requestID))
	if r.status != 200 {
		t.Fatalf("approve: %d %s", r.status, r.body)
	}
	u, err := url.Parse(r.str("redirect_to"))
	if err != nil || u.Query().Get("code") == "" {
		t.Fatalf("redirect_to %q", r.str("redirect_to"))
	}
	return u.Query().Get("code")
}

// pkceQuery is an authorization request of clientID for scope, with more
// parameters (repeated ones too) in extra.
func pkceQuery(clientID, redirectURI, scope string, extra url.Values) url.Values {
	q := url.Values{
		"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirectURI}, "scope": {scope},
		"state": {"st-1"}, "code_challenge": {challenge(verifier)}, "code_challenge_method": {"S256"},
	}
	for k, v := range extra {
		q[k] = v
	}
	return q
}

func audOf(t *testing.T, tok string) []string {
	t.Helper()
	_, claims := decodeJWT(t, tok)
	switch a := claims["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			s, _ := v.(string)
			out = append(out, s)
		}
		return out
	}
	return nil
}

func TestInteroperability(t *testing.T) {
	site := newWebsite(t)
	cb := site.callback
	up := newUpstream(t)
	docs := newDocServer(t)
	c := newCaddy(t, "")
	apiPort, mcpPort := freePort(t), freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	mcpOrigin := fmt.Sprintf("http://127.0.0.1:%d", mcpPort)
	mcpResource := mcpOrigin + "/mcp"
	c.sites = guardedSite(apiPort, "\tagent_guard {\n\t\tscopes data:read\n\t}", up.URL) +
		guardedSite(mcpPort, fmt.Sprintf("\tagent_guard {\n\t\tscopes mcp:tools\n\t\tresource %s\n\t}", mcpResource), up.URL)
	c.extraEnv = []string{"SSL_CERT_FILE=" + docs.certFile}
	c.start(oauthOpts(cb, `		default_permissions mcp:tools
		dynamic_client_registration open
		scope_description mcp:tools "Use the MCP server's tools"
		client_id_metadata_hosts 127.0.0.1
		client native-app {
			public
			redirect_uri http://127.0.0.1/callback com.example.app:/cb
			scopes openid profile mcp:tools
		}
		client es-site {
			secret `+clientSecret+`
			redirect_uri `+cb+`
			scopes openid profile
			id_token_alg ES256
		}`))
	c.registerOK(t, "interop-agent")
	c.registerOK(t, "other-agent")
	public := func(clientID, code, redirectURI string, extra url.Values) response {
		form := url.Values{"grant_type": {"authorization_code"}, "client_id": {clientID}, "code": {code},
			"redirect_uri": {redirectURI}, "code_verifier": {verifier}}
		for k, v := range extra {
			form[k] = v
		}
		return c.tokenCall(t, "", "", form)
	}

	t.Run("registration without scope may ask for API scopes", func(t *testing.T) {
		r := do(t, "POST", c.base()+"/oauth2/register", nil,
			fmt.Sprintf(`{"client_name":"MCP Inspector","redirect_uris":[%q],"token_endpoint_auth_method":"none"}`, cb))
		if r.status != 201 {
			t.Fatalf("register: %d %s", r.status, r.body)
		}
		if _, ok := r.json["scope"]; ok {
			t.Fatalf("a client registered without scope is shown a scope: %s", r.body)
		}
		id := r.str("client_id")
		if v := c.admin(t, "GET", "/auth_agent/clients/"+id, ""); v.json["any_scope"] != true {
			t.Fatalf("admin view: %s", v.body)
		}
		req := c.authorizeJSON(t, pkceQuery(id, cb, "mcp:tools", url.Values{"resource": {mcpResource}}))
		tok := public(id, c.approve(t, req, "interop-agent"), cb, nil)
		if tok.status != 200 || tok.str("scope") != "mcp:tools" || tok.str("refresh_token") == "" {
			t.Fatalf("token: %d %s", tok.status, tok.body)
		}
		if aud := audOf(t, tok.str("access_token")); !slices.Equal(aud, []string{mcpResource}) {
			t.Fatalf("aud %q, want the resource", aud)
		}
		if r := do(t, "GET", mcpResource, bearer(tok.str("access_token")), ""); r.status != 200 {
			t.Fatalf("the MCP guard refused the token: %d %s", r.status, r.body)
		}
		// The agent's permissions still bound what is granted.
		req = c.authorizeJSON(t, pkceQuery(id, cb, "data:write", nil))
		deny := do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"interop-agent","agent_secret":%q,"request_id":%q}`, secret, req))
		wantError(t, deny, 400, "invalid_scope")
	})

	t.Run("guard without resource holds the audience", func(t *testing.T) {
		agentToken := func(resource string) string {
			form := url.Values{"grant_type": {"client_credentials"}, "scope": {"data:read"}}
			if resource != "" {
				form.Set("resource", resource)
			}
			r := c.tokenCall(t, "interop-agent", secret, form)
			if r.status != 200 {
				t.Fatalf("client_credentials: %d %s", r.status, r.body)
			}
			return r.str("access_token")
		}
		for name, tc := range map[string]struct {
			resource string
			status   int
		}{
			"the issuer":             {"", 200},
			"this site's origin":     {api, 200},
			"with a trailing slash":  {api + "/", 200},
			"another service":        {"https://unrelated.example.com/api", 401},
			"another port":           {mcpOrigin, 401},
			"a path on another site": {mcpResource, 401},
		} {
			r := do(t, "GET", api+"/items", bearer(agentToken(tc.resource)), "")
			if r.status != tc.status {
				t.Errorf("%s: %d %s", name, r.status, r.body)
			}
			if tc.status == 401 {
				wantError(t, r, 401, "invalid_token")
			}
		}
	})

	t.Run("resource at the token endpoint narrows to what was authorized", func(t *testing.T) {
		a, b := "https://a.example.com/api", "https://b.example.com/api"
		// Granted openid, the tokens also name the issuer (for userinfo).
		q := pkceQuery("demo-site", cb, "openid data:read", url.Values{"resource": {a, b}})
		code := c.approve(t, c.authorizeJSON(t, q), "interop-agent")
		redeem := func(extra url.Values) response {
			form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cb}, "code_verifier": {verifier}}
			for k, v := range extra {
				form[k] = v
			}
			return c.tokenCall(t, "demo-site", clientSecret, form)
		}
		wantError(t, redeem(url.Values{"resource": {"https://c.example.com/"}}), 400, "invalid_target")
		// The refused request did not spend the code.
		tok := redeem(url.Values{"resource": {a}})
		if tok.status != 200 {
			t.Fatalf("redeem for a: %d %s", tok.status, tok.body)
		}
		if aud := audOf(t, tok.str("access_token")); !slices.Equal(aud, []string{a, c.base()}) {
			t.Fatalf("aud %q, want [a]", aud)
		}
		refresh := func(rt string, resource ...string) response {
			form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
			if len(resource) > 0 {
				form["resource"] = resource
			}
			return c.tokenCall(t, "demo-site", clientSecret, form)
		}
		wantError(t, refresh(tok.str("refresh_token"), "https://c.example.com/"), 400, "invalid_target")
		next := refresh(tok.str("refresh_token"), b)
		if next.status != 200 {
			t.Fatalf("refresh for b: %d %s", next.status, next.body)
		}
		if aud := audOf(t, next.str("access_token")); !slices.Equal(aud, []string{b, c.base()}) {
			t.Fatalf("aud %q, want [b]", aud)
		}
		all := refresh(next.str("refresh_token"))
		if aud := audOf(t, all.str("access_token")); !slices.Equal(aud, []string{a, b, c.base()}) {
			t.Fatalf("aud without resource %q, want both authorized", aud)
		}
		both := refresh(all.str("refresh_token"), b, a)
		if aud := audOf(t, both.str("access_token")); both.status != 200 || !slices.Equal(aud, []string{b, a, c.base()}) {
			t.Fatalf("resource repeated at the token endpoint: %d %s", both.status, both.body)
		}
		// A request naming no resource gets tokens for the issuer, and may
		// not ask for one at the token endpoint.
		code = c.approve(t, c.authorizeJSON(t, pkceQuery("demo-site", cb, "openid", nil)), "interop-agent")
		wantError(t, redeem(url.Values{"resource": {a}}), 400, "invalid_target")
		if aud := audOf(t, redeem(nil).str("access_token")); !slices.Equal(aud, []string{c.base()}) {
			t.Fatalf("aud %q, want the issuer", aud)
		}
	})

	t.Run("protected resource metadata names the resource it was built from", func(t *testing.T) {
		r := do(t, "GET", mcpOrigin+"/.well-known/oauth-protected-resource/mcp", nil, "")
		if r.status != 200 || r.json["resource"] != mcpResource {
			t.Fatalf("path metadata: %d %s", r.status, r.body)
		}
		if as, _ := r.json["authorization_servers"].([]any); len(as) != 1 || as[0] != c.base() {
			t.Fatalf("authorization_servers %v", r.json["authorization_servers"])
		}
		wantError(t, do(t, "GET", mcpOrigin+"/.well-known/oauth-protected-resource", nil, ""), 404, "invalid_request")
		wantError(t, do(t, "GET", mcpOrigin+"/.well-known/oauth-authorization-server", nil, ""), 404, "invalid_request")
		wantError(t, do(t, "GET", mcpOrigin+"/.well-known/openid-configuration/mcp", nil, ""), 404, "invalid_request")
		root := do(t, "GET", api+"/.well-known/oauth-protected-resource", nil, "")
		if root.status != 200 || root.json["resource"] != api {
			t.Fatalf("origin metadata: %d %s", root.status, root.body)
		}
	})

	t.Run("the challenge names the scopes and the metadata", func(t *testing.T) {
		r := do(t, "POST", mcpResource, nil, `{"jsonrpc":"2.0","id":1,"method":"initialize"}`)
		wantError(t, r, 401, "invalid_token")
		ch := r.header.Get("WWW-Authenticate")
		for _, want := range []string{`scope="mcp:tools"`, `resource_metadata="` + mcpOrigin + `/.well-known/oauth-protected-resource/mcp"`} {
			if !strings.Contains(ch, want) {
				t.Errorf("WWW-Authenticate %q lacks %s", ch, want)
			}
		}
	})

	t.Run("agents introspect and revoke their own tokens", func(t *testing.T) {
		mine := c.token(t, "interop-agent", secret)
		theirs := c.token(t, "other-agent", secret)
		introspect := func(tok string) response {
			r := c.formCall(t, "/oauth2/introspect", "interop-agent", secret, url.Values{"token": {tok}})
			if r.status != 200 {
				t.Fatalf("introspect: %d %s", r.status, r.body)
			}
			return r
		}
		if r := introspect(mine); r.json["active"] != true || r.json["sub"] != "interop-agent" {
			t.Fatalf("own token: %s", r.body)
		}
		if r := introspect(theirs); r.json["active"] != false || len(r.json) != 1 {
			t.Fatalf("another agent's token is shown: %s", r.body)
		}
		wantError(t, c.formCall(t, "/oauth2/introspect", "interop-agent", "Wrong123456!", url.Values{"token": {mine}}), 401, "invalid_client")
		if r := c.formCall(t, "/oauth2/revoke", "interop-agent", secret, url.Values{"token": {theirs}}); r.status != 200 {
			t.Fatalf("revoke another's: %d %s", r.status, r.body)
		}
		if r := do(t, "GET", api+"/items", bearer(theirs), ""); r.status != 200 {
			t.Fatalf("another agent's token was revoked: %d", r.status)
		}
		if r := c.formCall(t, "/oauth2/revoke", "interop-agent", secret, url.Values{"token": {mine}}); r.status != 200 {
			t.Fatalf("revoke own: %d %s", r.status, r.body)
		}
		if r := introspect(mine); r.json["active"] != false {
			t.Fatalf("revoked token still active: %s", r.body)
		}
		wantError(t, do(t, "GET", api+"/items", bearer(mine), ""), 401, "invalid_token")
	})

	t.Run("token exchange of an agent's and a client's own tokens", func(t *testing.T) {
		exchange := func(user, pass, subject string, extra url.Values) response {
			form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {subject},
				"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}}
			for k, v := range extra {
				form[k] = v
			}
			return c.tokenCall(t, user, pass, form)
		}
		own := c.token(t, "interop-agent", secret)
		r := exchange("interop-agent", secret, own, url.Values{"scope": {"data:read"}, "resource": {api}})
		if r.status != 200 {
			t.Fatalf("agent exchange: %d %s", r.status, r.body)
		}
		_, claims := decodeJWT(t, r.str("access_token"))
		if act, _ := claims["act"].(map[string]any); act["sub"] != "interop-agent" || claims["sub"] != "interop-agent" || claims["scope"] != "data:read" {
			t.Fatalf("exchanged claims %v", claims)
		}
		if g := do(t, "GET", api+"/items", bearer(r.str("access_token")), ""); g.status != 200 {
			t.Fatalf("the exchanged token at the API: %d %s", g.status, g.body)
		}
		wantError(t, exchange("other-agent", secret, own, nil), 400, "invalid_grant")

		cc := c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"client_credentials"}, "scope": {"data:read data:write"}})
		if cc.status != 200 {
			t.Fatalf("client_credentials: %d %s", cc.status, cc.body)
		}
		r = exchange("demo-site", clientSecret, cc.str("access_token"), url.Values{"scope": {"data:read"}})
		if r.status != 200 || r.str("scope") != "data:read" {
			t.Fatalf("client exchange: %d %s", r.status, r.body)
		}
		if in := c.formCall(t, "/oauth2/introspect", "demo-site", clientSecret, url.Values{"token": {r.str("access_token")}}); in.json["active"] != true {
			t.Fatalf("the exchanged client token introspects as %s", in.body)
		}
	})

	t.Run("native apps: loopback on any port and private-use schemes", func(t *testing.T) {
		for _, redirect := range []string{"http://127.0.0.1:54321/callback", "http://127.0.0.1/callback", "com.example.app:/cb"} {
			req := c.authorizeJSON(t, pkceQuery("native-app", redirect, "mcp:tools", nil))
			code := c.approve(t, req, "interop-agent")
			if r := public("native-app", code, redirect, nil); r.status != 200 {
				t.Fatalf("%s: %d %s", redirect, r.status, r.body)
			}
		}
		// The code is bound to the redirect it was issued for, port included.
		code := c.approve(t, c.authorizeJSON(t, pkceQuery("native-app", "http://127.0.0.1:50001/callback", "mcp:tools", nil)), "interop-agent")
		wantError(t, public("native-app", code, "http://127.0.0.1:50002/callback", nil), 400, "invalid_grant")
		for _, bad := range []string{"http://127.0.0.1:54321/other", "http://localhost:54321/callback", "com.example.evil:/cb", "http://127.0.0.1:99999/callback"} {
			r := do(t, "GET", c.base()+"/oauth2/authorize?"+pkceQuery("native-app", bad, "mcp:tools", nil).Encode(), nil, "")
			if r.status != 400 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
				t.Errorf("%s: %d %s", bad, r.status, r.header)
			}
		}
		// Errors go back to the app through its scheme.
		q := pkceQuery("native-app", "com.example.app:/cb", "mcp:tools", nil)
		q.Del("code_challenge")
		r := httpGet(t, noRedirect(), c.base()+"/oauth2/authorize?"+q.Encode(), nil)
		if loc := r.header.Get("Location"); r.status != 302 || !strings.HasPrefix(loc, "com.example.app:/cb?") || !strings.Contains(loc, "error=invalid_request") {
			t.Fatalf("error redirect: %d %q", r.status, loc)
		}
		// Registration: private-use schemes for public clients only.
		reg := func(body string) response { return do(t, "POST", c.base()+"/oauth2/register", nil, body) }
		if r := reg(`{"redirect_uris":["com.example.desktop:/oauth"],"token_endpoint_auth_method":"none"}`); r.status != 201 {
			t.Fatalf("public native registration: %d %s", r.status, r.body)
		}
		wantError(t, reg(`{"redirect_uris":["com.example.desktop:/oauth"]}`), 400, "invalid_redirect_uri")
		wantError(t, reg(`{"redirect_uris":["javascript:/alert"],"token_endpoint_auth_method":"none"}`), 400, "invalid_redirect_uri")
		wantError(t, reg(`{"redirect_uris":["com.example.desktop:oauth"],"token_endpoint_auth_method":"none"}`), 400, "invalid_redirect_uri")
	})

	t.Run("client ID metadata documents", func(t *testing.T) {
		disc := do(t, "GET", c.base()+"/.well-known/oauth-authorization-server", nil, "")
		if disc.json["client_id_metadata_document_supported"] != true {
			t.Fatalf("discovery: %s", disc.body)
		}
		id := docs.add("/clients/inspector.json", map[string]any{
			"client_name": "Doc Inspector", "redirect_uris": []string{cb}, "token_endpoint_auth_method": "none",
			"grant_types": []string{"authorization_code", "refresh_token"},
		})
		page := do(t, "GET", c.base()+"/oauth2/authorize?"+pkceQuery(id, cb, "mcp:tools", nil).Encode(), map[string]string{"Accept": "text/html"}, "")
		if page.status != 200 || !strings.Contains(string(page.body), "Doc Inspector") || !strings.Contains(string(page.body), `id="client-host"`) {
			t.Fatalf("sign-in page: %d %s", page.status, page.body)
		}
		code := c.approve(t, c.authorizeJSON(t, pkceQuery(id, cb, "mcp:tools", url.Values{"resource": {mcpResource}})), "interop-agent")
		tok := public(id, code, cb, nil)
		if tok.status != 200 || tok.str("refresh_token") == "" {
			t.Fatalf("token: %d %s", tok.status, tok.body)
		}
		if _, claims := decodeJWT(t, tok.str("access_token")); claims["client_id"] != id {
			t.Fatalf("client_id claim %v", claims["client_id"])
		}
		if r := do(t, "GET", mcpResource, bearer(tok.str("access_token")), ""); r.status != 200 {
			t.Fatalf("guard: %d %s", r.status, r.body)
		}
		// What cannot be used is an error page, never a redirect.
		mismatch := docs.add("/clients/mismatch.json", map[string]any{"client_id": "https://elsewhere.example/c.json", "redirect_uris": []string{cb}})
		secretful := docs.add("/clients/secret.json", map[string]any{"redirect_uris": []string{cb}, "token_endpoint_auth_method": "client_secret_basic"})
		private := strings.Replace(id, "127.0.0.1", "localhost", 1)
		for name, bad := range map[string]string{
			"client_id differs": mismatch, "secret method": secretful, "not found": docs.URL + "/clients/missing.json",
			"private address": private, "plain http": strings.Replace(id, "https://", "http://", 1),
			"unregistered redirect": id,
		} {
			q := pkceQuery(bad, cb, "mcp:tools", nil)
			if name == "unregistered redirect" {
				q.Set("redirect_uri", "https://evil.example/cb")
			}
			r := httpGet(t, noRedirect(), c.base()+"/oauth2/authorize?"+q.Encode(), map[string]string{"Accept": "text/html"})
			if r.status != 400 || r.header.Get("Location") != "" {
				t.Errorf("%s: %d %s", name, r.status, r.body)
			}
		}
	})

	t.Run("ID tokens signed with the algorithm the client registered", func(t *testing.T) {
		idToken := func(clientID, user, pass string) string {
			code := c.approve(t, c.authorizeJSON(t, pkceQuery(clientID, cb, "openid profile", url.Values{"nonce": {"n-1"}})), "interop-agent")
			form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cb}, "code_verifier": {verifier}}
			if user == "" {
				form.Set("client_id", clientID)
			}
			r := c.tokenCall(t, user, pass, form)
			if r.status != 200 || r.str("id_token") == "" {
				t.Fatalf("%s: %d %s", clientID, r.status, r.body)
			}
			return r.str("id_token")
		}
		ctx := context.Background()
		provider, err := oidc.NewProvider(ctx, c.base())
		if err != nil {
			t.Fatal(err)
		}
		es := idToken("es-site", "es-site", clientSecret)
		if h, _ := decodeJWT(t, es); h["alg"] != "ES256" {
			t.Fatalf("es-site ID token header %v", h)
		}
		if _, err := provider.Verifier(&oidc.Config{ClientID: "es-site", SupportedSigningAlgs: []string{oidc.ES256}}).Verify(ctx, es); err != nil {
			t.Fatalf("go-oidc, ES256: %v", err)
		}
		// The default stays RS256, which every OpenID client accepts.
		rs := idToken("demo-site", "demo-site", clientSecret)
		if _, err := provider.Verifier(&oidc.Config{ClientID: "demo-site"}).Verify(ctx, rs); err != nil {
			t.Fatalf("go-oidc, RS256: %v", err)
		}
		// RFC 7591 metadata names it too; an unknown algorithm is refused.
		reg := do(t, "POST", c.base()+"/oauth2/register", nil,
			fmt.Sprintf(`{"redirect_uris":[%q],"token_endpoint_auth_method":"none","scope":"openid profile","id_token_signed_response_alg":"EdDSA"}`, cb))
		if reg.status != 201 || reg.str("id_token_signed_response_alg") != "EdDSA" {
			t.Fatalf("register: %d %s", reg.status, reg.body)
		}
		ed := idToken(reg.str("client_id"), "", "")
		if h, _ := decodeJWT(t, ed); h["alg"] != "EdDSA" {
			t.Fatalf("EdDSA client's ID token header %v", h)
		}
		if _, err := provider.Verifier(&oidc.Config{ClientID: reg.str("client_id"), SupportedSigningAlgs: []string{oidc.EdDSA}}).Verify(ctx, ed); err != nil {
			t.Fatalf("go-oidc, EdDSA: %v", err)
		}
		wantError(t, do(t, "POST", c.base()+"/oauth2/register", nil,
			fmt.Sprintf(`{"redirect_uris":[%q],"id_token_signed_response_alg":"HS256"}`, cb)), 400, "invalid_client_metadata")
		disc := do(t, "GET", c.base()+"/.well-known/openid-configuration", nil, "")
		if algs := fmt.Sprint(disc.json["id_token_signing_alg_values_supported"]); algs != "[RS256 ES256 EdDSA]" {
			t.Fatalf("id_token_signing_alg_values_supported %s", algs)
		}
		if h, _ := decodeJWT(t, c.token(t, "interop-agent", secret)); h["alg"] != "ES256" {
			t.Fatalf("access tokens are ES256 by default: %v", h)
		}
	})

	t.Run("CORS for browser MCP clients", func(t *testing.T) {
		origin := "https://inspector.example"
		pre := do(t, "OPTIONS", mcpResource, map[string]string{
			"Origin": origin, "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version",
		}, "")
		if pre.status >= 300 || pre.header.Get("Access-Control-Allow-Origin") == "" || pre.header.Get("WWW-Authenticate") != "" {
			t.Fatalf("guard preflight: %d %v", pre.status, pre.header)
		}
		if h := strings.ToLower(pre.header.Get("Access-Control-Allow-Headers")); !strings.Contains(h, "mcp-protocol-version") || !strings.Contains(h, "authorization") {
			t.Fatalf("allowed headers %q", h)
		}
		patch := do(t, "OPTIONS", api+"/items/1", map[string]string{"Origin": origin, "Access-Control-Request-Method": "PATCH"}, "")
		if patch.status >= 300 || patch.header.Get("Access-Control-Allow-Origin") == "" {
			t.Fatalf("PATCH preflight: %d %v", patch.status, patch.header)
		}
		denied := do(t, "POST", mcpResource, map[string]string{"Origin": origin}, `{}`)
		if denied.status != 401 || denied.header.Get("Access-Control-Allow-Origin") == "" ||
			!strings.Contains(strings.ToLower(denied.header.Get("Access-Control-Expose-Headers")), "www-authenticate") {
			t.Fatalf("401 without CORS: %d %v", denied.status, denied.header)
		}
		md := do(t, "GET", mcpOrigin+"/.well-known/oauth-protected-resource/mcp", map[string]string{"Origin": origin}, "")
		if md.header.Get("Access-Control-Allow-Origin") == "" {
			t.Fatalf("metadata without CORS: %v", md.header)
		}
		idp := do(t, "OPTIONS", c.base()+"/oauth2/token", map[string]string{
			"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, mcp-protocol-version",
		}, "")
		if idp.header.Get("Access-Control-Allow-Origin") == "" {
			t.Fatalf("IdP preflight with mcp-protocol-version: %d %v", idp.status, idp.header)
		}
		if up.hits.Load() == 0 {
			t.Fatal("nothing reached the upstream at all")
		}
	})
}

// Only registrations that create something spend the registration budget.
func TestInvalidRegistrationsSpendNoBudget(t *testing.T) {
	c := newCaddy(t, "")
	proxied := c.withTrustedProxySite(t)
	c.start("\t\tdynamic_client_registration open\n\t\trate_limit {\n\t\t\tregistration 2/h\n\t\t\tauthentication 10/m\n\t\t}")
	for i := range 3 {
		wantError(t, c.register(t, fmt.Sprintf("typo-%d", i), "weak"), 400, "invalid_request")
		wantError(t, do(t, "POST", c.base()+"/oauth2/register", nil, `{"redirect_uris":["http://example.com/cb"]}`), 400, "invalid_redirect_uri")
	}
	for i := range 2 {
		if r := c.register(t, fmt.Sprintf("fine-%d", i), secret); r.status != 201 {
			t.Fatalf("registration %d after typos: %d %s", i, r.status, r.body)
		}
		if r := do(t, "POST", c.base()+"/oauth2/register", nil, `{"redirect_uris":["https://app.example.com/cb"]}`); r.status != 201 {
			t.Fatalf("client registration %d after typos: %d %s", i, r.status, r.body)
		}
	}
	wantError(t, c.register(t, "one-too-many", secret), 429, "rate_limit_exceeded")
	if a := c.admin(t, "GET", "/auth_agent/agents/typo-0", ""); a.status != 404 {
		t.Fatal("an invalid registration was stored")
	}

	// Failed registrations are bounded by the failed-authentication budget
	// of the IP (here another one, behind a trusted proxy).
	from := map[string]string{"X-Forwarded-For": "203.0.113.7"}
	for i := range 10 {
		wantError(t, do(t, "POST", proxied+"/api/register-agent", from, registerBody(fmt.Sprintf("junk-%d", i), "weak")), 400, "invalid_request")
	}
	wantError(t, do(t, "POST", proxied+"/api/register-agent", from, registerBody("junk-10", "weak")), 429, "rate_limit_exceeded")
}
