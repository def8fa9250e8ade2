package e2e

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const idjagSecret = "abcdef0123456789abcdef0123456789"

// testIdP is an identity provider this test signs ID-JAGs for: RFC 8414
// metadata and a key set on 127.0.0.1.
type testIdP struct {
	*httptest.Server
	key jwkPair
}

func newTestIdP(t *testing.T) *testIdP {
	t.Helper()
	idp := &testIdP{key: newECPair(t, "idp-1")}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": idp.URL, "jwks_uri": idp.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(idp.key.set()))
	})
	idp.Server = httptest.NewServer(mux)
	t.Cleanup(idp.Close)
	return idp
}

// grant signs an ID-JAG (typ oauth-id-jag+jwt unless edit changes it)
// with key for the server aud and client.
func (idp *testIdP) grant(t *testing.T, key jwkPair, aud, client, sub string, edit func(h map[string]any, c jwt.MapClaims)) string {
	t.Helper()
	now := time.Now()
	claims := jwt.MapClaims{"iss": idp.URL, "sub": sub, "aud": aud, "client_id": client, "jti": rand.Text(),
		"iat": now.Unix(), "exp": now.Add(4 * time.Minute).Unix(), "scope": "mcp:tools"}
	tok := jwt.NewWithClaims(key.method, claims)
	tok.Header["typ"] = "oauth-id-jag+jwt"
	tok.Header["kid"] = key.public["kid"]
	if edit != nil {
		edit(tok.Header, claims)
	}
	s, err := tok.SignedString(key.signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestIDJAG: enterprise-managed authorization between two Caddy instances
// on separate storage — A the agents' IdP, B the authorization server of
// an MCP server trusting A — driven by oauth4webapi's
// genericTokenEndpointRequest and the MCP TypeScript SDK; then every
// refusal, at B (grants of a test IdP signed here) and at A.
func TestIDJAG(t *testing.T) {
	node := oauth4webapiNode(t)
	upstream := newMCPServer(t)
	idp, platform := newTestIdP(t), newTestIdP(t)
	down := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // a trusted IdP nobody answers for
	a, b := newCaddy(t, ""), newCaddy(t, "")
	resource := b.guardMCP(t, upstream)
	redirect := fmt.Sprintf("http://127.0.0.1:%d/callback", freePort(t))
	a.start(fmt.Sprintf(`		client mcp-desktop {
			name "MCP Desktop"
			secret %s
			redirect_uri %s
			scopes openid profile
		}
		client other-app {
			secret %s
			redirect_uri %s
			scopes openid profile
		}
		id_jag_audience %s {
			clients mcp-desktop other-app
			client_id mcp-desktop-b
			scopes mcp:tools
		}`, idjagSecret, redirect, idjagSecret, redirect, b.base()))
	b.start(fmt.Sprintf(`		client mcp-desktop-b {
			secret %s
			grant_types client_credentials
			scopes mcp:tools
		}
		client elsewhere {
			secret %s
			grant_types client_credentials
			scopes mcp:tools
		}
		agent local-agent {
			permissions mcp:tools
		}
		trusted_idp %s {
			clients mcp-desktop-b
			scopes mcp:tools
			subject external
		}
		trusted_idp %s {
			clients mcp-desktop-b elsewhere
			scopes mcp:tools
			subject agent
		}
		trusted_idp %s {
			clients mcp-desktop-b
			scopes mcp:tools
			grant jwt
		}
		trusted_idp %s {
			clients mcp-desktop-b
			scopes mcp:tools
		}`, idjagSecret, idjagSecret, a.base(), idp.URL, platform.URL, down))
	a.registerOK(t, "enterprise-agent")

	runScript(t, node, "idjag.mjs", b,
		"IDP_ISSUER="+a.base(), "IDP_CLIENT_ID=mcp-desktop", "IDP_CLIENT_SECRET="+idjagSecret, "REDIRECT_URI="+redirect,
		"AGENT_ID=enterprise-agent", "AGENT_SECRET="+secret,
		"AS_ISSUER="+b.base(), "AS_CLIENT_ID=mcp-desktop-b", "AS_CLIENT_SECRET="+idjagSecret, "MCP_URL="+resource, "TOOL=add")
	calls := upstream.callsBy("mcp-desktop-b")
	if len(calls) == 0 || calls[0].Get("X-Agent-Id") != "enterprise-agent" || calls[0].Get("X-Agent-Idp") != a.base() {
		t.Fatalf("the tool call did not reach the MCP server as A's agent: %v", calls)
	}

	// At B: grants of the test IdP, each refused.
	if r := b.admin(t, "POST", "/auth_agent/agents", fmt.Sprintf(`{"agent_id":"local-agent","agent_secret":%q,"model_name":"m","owner_email":"ops@example.com"}`, secret)); r.status != 201 {
		t.Fatalf("create local-agent: %d %s", r.status, r.body)
	}
	b.registerOK(t, "disabled-agent")
	if r := b.admin(t, "PATCH", "/auth_agent/agents/disabled-agent", `{"disabled":true}`); r.status != 200 {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	redeem := func(client, assertion string, extra url.Values) response {
		form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}}
		for k, v := range extra {
			form[k] = v
		}
		return do(t, "POST", b.base()+"/oauth2/token", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic " + basicAuth(client, idjagSecret)}, form.Encode())
	}
	good := idp.grant(t, idp.key, b.base(), "mcp-desktop-b", "local-agent", func(_ map[string]any, c jwt.MapClaims) { c["resource"] = resource })
	r := redeem("mcp-desktop-b", good, nil)
	if r.status != 200 || r.json["refresh_token"] != nil {
		t.Fatalf("a good grant for a local agent: %d %s", r.status, r.body)
	}
	if _, claims := decodeJWT(t, r.json["access_token"].(string)); claims["sub"] != "local-agent" || claims["idp"] != nil || !audIs(claims["aud"], resource) {
		t.Fatalf("the token of a local agent's grant: %v", claims)
	}
	// An agent platform's plain RFC 7523 assertion, where grant jwt
	// allows it: typ JWT, aud the token endpoint, sub a local agent.
	plain := platform.grant(t, platform.key, b.base()+"/oauth2/token", "", "local-agent", func(h map[string]any, c jwt.MapClaims) {
		h["typ"] = "JWT"
		delete(c, "client_id")
	})
	if r := redeem("mcp-desktop-b", plain, nil); r.status != 200 {
		t.Fatalf("a plain assertion where grant jwt allows it: %d %s", r.status, r.body)
	}
	// An IdP that is down: its grants fail at once, with a log line.
	unreachable := &testIdP{Server: &httptest.Server{URL: down}, key: newECPair(t, "down-1")}
	start := time.Now()
	wantError(t, redeem("mcp-desktop-b", unreachable.grant(t, unreachable.key, b.base(), "mcp-desktop-b", "local-agent", nil), nil), 400, "invalid_grant")
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("a grant of an IdP that is down took %v", d)
	}
	// The log arrives through a pipe: wait for it.
	eventually(t, 2*time.Second, "the log line of an IdP that is down", func() string {
		if !strings.Contains(b.log.String(), "the keys of a trusted IdP cannot be fetched") {
			return "not logged yet"
		}
		return ""
	})
	stranger := newTestIdP(t)
	for name, c := range map[string]struct {
		client, assertion string
		extra             url.Values
		code              string
	}{
		"replayed":              {"mcp-desktop-b", good, nil, "invalid_grant"},
		"an untrusted issuer":   {"mcp-desktop-b", stranger.grant(t, stranger.key, b.base(), "mcp-desktop-b", "local-agent", nil), nil, "invalid_grant"},
		"a key not in its JWKS": {"mcp-desktop-b", idp.grant(t, newECPair(t, "idp-1"), b.base(), "mcp-desktop-b", "local-agent", nil), nil, "invalid_grant"},
		"aud another server":    {"mcp-desktop-b", idp.grant(t, idp.key, "https://other.example.com", "mcp-desktop-b", "local-agent", nil), nil, "invalid_grant"},
		"client_id another":     {"elsewhere", idp.grant(t, idp.key, b.base(), "mcp-desktop-b", "local-agent", nil), nil, "invalid_grant"},
		"expired": {"mcp-desktop-b", idp.grant(t, idp.key, b.base(), "mcp-desktop-b", "local-agent", func(_ map[string]any, c jwt.MapClaims) {
			c["iat"], c["exp"] = time.Now().Add(-10*time.Minute).Unix(), time.Now().Add(-5*time.Minute).Unix()
		}), nil, "invalid_grant"},
		"typ JWT, grant jwt off": {"mcp-desktop-b", idp.grant(t, idp.key, b.base(), "mcp-desktop-b", "local-agent", func(h map[string]any, _ jwt.MapClaims) { h["typ"] = "JWT" }), nil, "invalid_grant"},
		"a scope beyond policy":  {"mcp-desktop-b", idp.grant(t, idp.key, b.base(), "mcp-desktop-b", "local-agent", func(_ map[string]any, c jwt.MapClaims) { c["scope"] = "mcp:tools admin:all" }), nil, "invalid_scope"},
		"an unguarded resource":  {"mcp-desktop-b", idp.grant(t, idp.key, b.base(), "mcp-desktop-b", "local-agent", func(_ map[string]any, c jwt.MapClaims) { c["resource"] = "https://unguarded.example.com/mcp" }), nil, "invalid_target"},
		"a disabled agent":       {"mcp-desktop-b", idp.grant(t, idp.key, b.base(), "mcp-desktop-b", "disabled-agent", nil), nil, "invalid_grant"},
		"exp an hour ahead":      {"mcp-desktop-b", idp.grant(t, idp.key, b.base(), "mcp-desktop-b", "local-agent", func(_ map[string]any, c jwt.MapClaims) { c["exp"] = time.Now().Add(time.Hour).Unix() }), nil, "invalid_grant"},
		"another resource asked": {"mcp-desktop-b", idp.grant(t, idp.key, b.base(), "mcp-desktop-b", "local-agent", func(_ map[string]any, c jwt.MapClaims) { c["resource"] = resource }), url.Values{"resource": {"https://other.example.com/"}}, "invalid_target"},
	} {
		t.Run("B refuses "+name, func(t *testing.T) {
			wantError(t, redeem(c.client, c.assertion, c.extra), 400, c.code)
		})
	}

	// At A: ID-JAGs only for listed audiences, for the client's own ID
	// token.
	idToken := func(client string) string {
		t.Helper()
		q := pkceQuery(client, redirect, "openid", nil)
		code := a.approve(t, a.authorizeJSON(t, q), "enterprise-agent")
		r := a.formCall(t, "/oauth2/token", client, idjagSecret, url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"redirect_uri": {redirect}, "code_verifier": {verifier}})
		if r.status != 200 {
			t.Fatalf("sign-in at A: %d %s", r.status, r.body)
		}
		return r.json["id_token"].(string)
	}
	exchange := func(client, subject, audience string) response {
		return a.formCall(t, "/oauth2/token", client, idjagSecret, url.Values{
			"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "requested_token_type": {"urn:ietf:params:oauth:token-type:id-jag"},
			"subject_token": {subject}, "subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}, "audience": {audience},
		})
	}
	desktopID := idToken("mcp-desktop")
	if r := exchange("mcp-desktop", desktopID, b.base()); r.status != 200 || r.json["token_type"] != "N_A" {
		t.Fatalf("an ID-JAG for B: %d %s", r.status, r.body)
	}
	wantError(t, exchange("mcp-desktop", desktopID, "https://unlisted.example.com"), 400, "invalid_target")
	wantError(t, exchange("other-app", desktopID, b.base()), 400, "invalid_grant")
	eventually(t, 2*time.Second, "the ID-JAG audit events", func() string {
		if !strings.Contains(a.log.String(), "id_jag.issued") || !strings.Contains(b.log.String(), "id_jag.refused") || !strings.Contains(b.log.String(), "id_jag.accepted") {
			return "the audit logs lack the ID-JAG events"
		}
		return ""
	})
}
