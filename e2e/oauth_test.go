package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

const clientSecret = "0123456789abcdef0123456789abcdef"

// website is a relying party's callback: it only records what it receives.
type website struct {
	*httptest.Server
	callback string
}

func newWebsite(t *testing.T) *website {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "callback")
	}))
	t.Cleanup(srv.Close)
	return &website{Server: srv, callback: srv.URL + "/callback"}
}

// oauthOpts configures two clients for cb: a confidential website and a
// public single-page app.
func oauthOpts(cb string, extra string) string {
	return fmt.Sprintf(`		default_permissions data:read
		client demo-site {
			name "Demo Site"
			secret %s
			redirect_uri %s
			scopes openid profile email permissions data:read data:write
		}
		client spa {
			name "Single Page App"
			public
			redirect_uri %s
			scopes openid profile
		}
		client other-site {
			secret %s
			redirect_uri %s
			scopes openid profile
		}
%s`, clientSecret, cb, cb, strings.Repeat("z", 32), cb, extra)
}

var requestIDMeta = regexp.MustCompile(`<meta name="auth-agent-request-id" content="([^"]+)">`)
var requestIDScript = regexp.MustCompile(`window\.authRequest = \{request_id: "([^"]+)"\}`)

// agentSignIn does what an agent SDK does with an authorization URL: load
// the page, scrape the request id, authenticate on the back channel, and
// return the redirect the browser would follow.
func (c *caddy) agentSignIn(t *testing.T, authURL, agentID, agentSecret string) *url.URL {
	t.Helper()
	id := c.startAuthorization(t, authURL)
	r := do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":%q,"agent_secret":%q,"request_id":%q}`, agentID, agentSecret, id))
	if r.status != 200 || r.str("status") != "authenticated" || r.str("request_id") != id {
		t.Fatalf("agent-auth with request_id: %d %s", r.status, r.body)
	}
	u, err := url.Parse(r.str("redirect_to"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// startAuthorization loads the sign-in page and returns its request id.
func (c *caddy) startAuthorization(t *testing.T, authURL string) string {
	t.Helper()
	r := do(t, "GET", authURL, map[string]string{"Accept": "text/html"}, "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("authorize: %d %s", r.status, r.body)
	}
	m1, m2 := requestIDMeta.FindSubmatch(r.body), requestIDScript.FindSubmatch(r.body)
	if m1 == nil || m2 == nil || string(m1[1]) != string(m2[1]) {
		t.Fatalf("no request id in the page:\n%s", r.body)
	}
	return string(m1[1])
}

func challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

const verifier = "the-code-verifier-of-this-test-0123456789-abcdefghijklmnop"

// authorizeURL builds a request by hand, for the negative cases.
func (c *caddy) authorizeURL(params map[string]string) string {
	q := url.Values{}
	base := map[string]string{
		"response_type": "code", "client_id": "demo-site", "scope": "openid profile", "state": "st-123",
		"code_challenge": challenge(verifier), "code_challenge_method": "S256", "nonce": "n-1",
	}
	for k, v := range base {
		q.Set(k, v)
	}
	for k, v := range params {
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
	}
	return c.base() + "/oauth2/authorize?" + q.Encode()
}

func noRedirect() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func TestSignInWithStandardLibraries(t *testing.T) {
	site := newWebsite(t)
	c := newCaddy(t, "")
	c.start(oauthOpts(site.callback, ""))
	c.registerOK(t, "web-agent")
	ctx := context.Background()

	provider, err := oidc.NewProvider(ctx, c.base())
	if err != nil {
		t.Fatalf("OIDC discovery: %v", err)
	}
	cfg := oauth2.Config{
		ClientID: "demo-site", ClientSecret: clientSecret, Endpoint: provider.Endpoint(),
		RedirectURL: site.callback, Scopes: []string{oidc.ScopeOpenID, "profile", "email", "permissions"},
	}
	pkce := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("state-xyz", oauth2.S256ChallengeOption(pkce), oidc.Nonce("nonce-abc"))

	back := c.agentSignIn(t, authURL, "web-agent", secret)
	if got := back.Scheme + "://" + back.Host + back.Path; got != site.callback {
		t.Fatalf("redirect to %s, want %s", got, site.callback)
	}
	q := back.Query()
	if q.Get("state") != "state-xyz" || q.Get("iss") != c.base() || q.Get("code") == "" {
		t.Fatalf("callback query %v", q)
	}

	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(pkce))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	if tok.RefreshToken == "" || tok.TokenType != "Bearer" {
		t.Fatalf("token %+v", tok)
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: "demo-site"}).Verify(ctx, rawID)
	if err != nil {
		t.Fatalf("ID token: %v", err)
	}
	if idt.Nonce != "nonce-abc" || idt.Subject != "web-agent" {
		t.Fatalf("ID token nonce %q sub %q", idt.Nonce, idt.Subject)
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		t.Fatalf("at_hash: %v", err)
	}
	var idClaims struct {
		Name        string   `json:"name"`
		AgentID     string   `json:"agent_id"`
		ModelName   string   `json:"model_name"`
		Email       string   `json:"email"`
		Permissions []string `json:"permissions"`
		AuthTime    int64    `json:"auth_time"`
	}
	if err := idt.Claims(&idClaims); err != nil {
		t.Fatal(err)
	}
	if idClaims.AgentID != "web-agent" || idClaims.ModelName != "gpt-4" || idClaims.Email != "test@example.com" ||
		idClaims.Name != "Test User" || fmt.Sprint(idClaims.Permissions) != "[data:read]" || idClaims.AuthTime == 0 {
		t.Fatalf("ID token claims %+v", idClaims)
	}

	info, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	if info.Subject != "web-agent" || info.Email != "test@example.com" || info.EmailVerified {
		t.Fatalf("userinfo %+v", info)
	}

	// Refresh through the library: an expired token makes it use the
	// refresh token, which rotates.
	old := *tok
	old.Expiry = time.Now().Add(-time.Minute)
	fresh, err := cfg.TokenSource(ctx, &old).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if fresh.AccessToken == tok.AccessToken || fresh.RefreshToken == "" || fresh.RefreshToken == tok.RefreshToken {
		t.Fatal("refresh did not rotate")
	}
	if _, ok := fresh.Extra("id_token").(string); !ok {
		t.Fatal("refresh with openid returns a new ID token")
	}
	if _, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(fresh)); err != nil {
		t.Fatalf("userinfo with the refreshed token: %v", err)
	}

	t.Run("public client with PKCE only", func(t *testing.T) {
		spa := oauth2.Config{ClientID: "spa", Endpoint: provider.Endpoint(), RedirectURL: site.callback, Scopes: []string{"openid", "profile"}}
		spa.Endpoint.AuthStyle = oauth2.AuthStyleInParams
		v := oauth2.GenerateVerifier()
		back := c.agentSignIn(t, spa.AuthCodeURL("s2", oauth2.S256ChallengeOption(v)), "web-agent", secret)
		tok, err := spa.Exchange(ctx, back.Query().Get("code"), oauth2.VerifierOption(v))
		if err != nil {
			t.Fatalf("public exchange: %v", err)
		}
		if _, err := provider.Verifier(&oidc.Config{ClientID: "spa"}).Verify(ctx, tok.Extra("id_token").(string)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("JSON check-status for the agent's own polling", func(t *testing.T) {
		r := do(t, "GET", cfg.AuthCodeURL("s3", oauth2.S256ChallengeOption(pkce)), map[string]string{"Accept": "application/json"}, "")
		id := r.str("request_id")
		if r.status != 200 || id == "" || r.json["agent_auth_endpoint"] != c.base()+"/api/agent-auth" || r.json["expires_in"].(float64) != 300 {
			t.Fatalf("JSON authorize: %d %s", r.status, r.body)
		}
		if s := do(t, "GET", c.base()+"/api/check-status?request_id="+id, nil, ""); s.str("status") != "pending" {
			t.Fatalf("status %s", s.body)
		}
		if s := do(t, "GET", c.base()+"/api/check-status?request_id=unknown", nil, ""); s.str("status") != "expired" {
			t.Fatalf("unknown request: %s", s.body)
		}
	})
}

// tokenCall posts a form to /oauth2/token, authenticating with HTTP Basic
// when user is set.
func (c *caddy) tokenCall(t *testing.T, user, pass string, form url.Values) response {
	t.Helper()
	return c.formCall(t, "/oauth2/token", user, pass, form)
}

func (c *caddy) formCall(t *testing.T, path, user, pass string, form url.Values) response {
	t.Helper()
	h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if user != "" {
		h["Authorization"] = "Basic " + basicAuth(user, pass)
	}
	return do(t, "POST", c.base()+path, h, form.Encode())
}

// basicAuth is the credentials of HTTP Basic client authentication, each
// part form-encoded first (RFC 6749 §2.3.1).
func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(user) + ":" + url.QueryEscape(pass)))
}

// codeFor runs the agent through an authorization request built from params.
func (c *caddy) codeFor(t *testing.T, params map[string]string, agentID string) string {
	t.Helper()
	return c.agentSignIn(t, c.authorizeURL(params), agentID, secret).Query().Get("code")
}

func (c *caddy) redeem(t *testing.T, code, cb string) response {
	t.Helper()
	return c.tokenCall(t, "demo-site", clientSecret, url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cb}, "code_verifier": {verifier},
	})
}

func TestOAuthNegativeCases(t *testing.T) {
	site := newWebsite(t)
	cb := site.callback
	c := newCaddy(t, "")
	c.start(oauthOpts(cb, "\t\tcode_lifetime 2s"))
	c.registerOK(t, "neg-agent")
	demo := map[string]string{"redirect_uri": cb}

	userinfo := func(at string) int {
		return do(t, "GET", c.base()+"/oauth2/userinfo", bearer(at), "").status
	}

	t.Run("code replay revokes what the code issued", func(t *testing.T) {
		code := c.codeFor(t, demo, "neg-agent")
		first := c.redeem(t, code, cb)
		if first.status != 200 {
			t.Fatalf("first use: %d %s", first.status, first.body)
		}
		at, rt := first.str("access_token"), first.str("refresh_token")
		if userinfo(at) != 200 {
			t.Fatal("fresh token refused")
		}
		wantError(t, c.redeem(t, code, cb), 400, "invalid_grant")
		if s := userinfo(at); s != 401 {
			t.Fatalf("token from a replayed code still works: %d", s)
		}
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}), 400, "invalid_grant")
	})

	t.Run("refresh token reuse revokes the family", func(t *testing.T) {
		first := c.redeem(t, c.codeFor(t, demo, "neg-agent"), cb)
		rt1 := first.str("refresh_token")
		second := c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt1}})
		if second.status != 200 {
			t.Fatalf("rotation: %d %s", second.status, second.body)
		}
		rt2, at2 := second.str("refresh_token"), second.str("access_token")
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt1}}), 400, "invalid_grant")
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt2}}), 400, "invalid_grant")
		if s := userinfo(at2); s != 401 {
			t.Fatalf("access token of a revoked family still works: %d", s)
		}
		if s := userinfo(first.str("access_token")); s != 401 {
			t.Fatalf("first access token of a revoked family still works: %d", s)
		}
	})

	t.Run("refresh scope can narrow, never widen", func(t *testing.T) {
		first := c.redeem(t, c.codeFor(t, demo, "neg-agent"), cb)
		rt := first.str("refresh_token")
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "scope": {"openid profile email"}}), 400, "invalid_scope")
		r := c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "scope": {"openid"}})
		if r.status != 200 || r.str("scope") != "openid" {
			t.Fatalf("narrowing (the refused widening must not have used the token): %d %s", r.status, r.body)
		}
		wantError(t, c.tokenCall(t, "", "", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.str("refresh_token")}, "client_id": {"spa"}}), 400, "invalid_grant")
	})

	t.Run("PKCE", func(t *testing.T) {
		code := c.codeFor(t, demo, "neg-agent")
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cb}}), 400, "invalid_request")
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cb}, "code_verifier": {verifier + "x"}}), 400, "invalid_grant")
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cb}, "code_verifier": {"short"}}), 400, "invalid_grant")
		// Nothing was used up: the right verifier still redeems the code.
		if r := c.redeem(t, code, cb); r.status != 200 {
			t.Fatalf("after refused attempts: %d %s", r.status, r.body)
		}
	})

	t.Run("authorize errors are redirected with state and iss", func(t *testing.T) {
		cases := map[string]struct {
			params map[string]string
			code   string
		}{
			"plain PKCE":       {map[string]string{"code_challenge_method": "plain", "code_challenge": verifier}, "invalid_request"},
			"no PKCE":          {map[string]string{"code_challenge": "", "code_challenge_method": ""}, "invalid_request"},
			"no method":        {map[string]string{"code_challenge_method": ""}, "invalid_request"},
			"bad challenge":    {map[string]string{"code_challenge": "short"}, "invalid_request"},
			"token flow":       {map[string]string{"response_type": "token"}, "unsupported_response_type"},
			"no response_type": {map[string]string{"response_type": ""}, "invalid_request"},
			"client escalates": {map[string]string{"scope": "openid admin"}, "invalid_scope"},
			"no scope":         {map[string]string{"scope": ""}, "invalid_scope"},
			"bad resource":     {map[string]string{"resource": "not-a-uri"}, "invalid_target"},
			"prompt none":      {map[string]string{"prompt": "none"}, "login_required"},
		}
		for name, tc := range cases {
			t.Run(name, func(t *testing.T) {
				tc.params["redirect_uri"] = cb
				resp, err := noRedirect().Get(c.authorizeURL(tc.params))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				loc, _ := url.Parse(resp.Header.Get("Location"))
				if resp.StatusCode != 302 || loc == nil || !strings.HasPrefix(loc.String(), cb+"?") {
					t.Fatalf("want a redirect to the callback, got %d %q", resp.StatusCode, resp.Header.Get("Location"))
				}
				q := loc.Query()
				if q.Get("error") != tc.code || q.Get("state") != "st-123" || q.Get("iss") != c.base() || q.Get("code") != "" {
					t.Fatalf("redirect query %v", q)
				}
				if resp.Header.Get("Set-Cookie") != "" {
					t.Fatal("a refused request created a pending request")
				}
			})
		}
	})

	t.Run("unknown client and unregistered redirect_uri: 400 page, never a redirect", func(t *testing.T) {
		for name, params := range map[string]map[string]string{
			"unknown client":  {"client_id": "nobody", "redirect_uri": cb},
			"no client":       {"client_id": "", "redirect_uri": cb},
			"other host":      {"redirect_uri": "https://evil.example.com/callback"},
			"path traversal":  {"redirect_uri": cb + "/../evil"},
			"extra query":     {"redirect_uri": cb + "?next=https://evil.example.com"},
			"suffix":          {"redirect_uri": cb + "x"},
			"scheme relative": {"redirect_uri": "//evil.example.com/callback"},
			"missing":         {"redirect_uri": ""},
			"fragment":        {"redirect_uri": cb + "#frag"},
			"userinfo trick":  {"redirect_uri": strings.Replace(cb, "http://", "http://evil.example.com@", 1)},
		} {
			t.Run(name, func(t *testing.T) {
				resp, err := noRedirect().Get(c.authorizeURL(params))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 400 || resp.Header.Get("Location") != "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
					t.Fatalf("got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
				}
				if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
					t.Fatalf("error page CSP %q", csp)
				}
			})
		}
	})

	t.Run("redirect_uri at the token endpoint must match", func(t *testing.T) {
		code := c.codeFor(t, demo, "neg-agent")
		wantError(t, c.redeem(t, code, cb+"/other"), 400, "invalid_grant")
		if r := c.redeem(t, code, cb); r.status != 200 {
			t.Fatalf("the right redirect_uri after a refusal: %d", r.status)
		}
	})

	t.Run("a code used by another client", func(t *testing.T) {
		code := c.codeFor(t, demo, "neg-agent")
		r := c.tokenCall(t, "other-site", strings.Repeat("z", 32), url.Values{
			"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cb}, "code_verifier": {verifier},
		})
		wantError(t, r, 400, "invalid_grant")
		if r := c.redeem(t, code, cb); r.status != 200 {
			t.Fatalf("the rightful client after another's attempt: %d", r.status)
		}
	})

	t.Run("expired code", func(t *testing.T) {
		code := c.codeFor(t, demo, "neg-agent")
		time.Sleep(3 * time.Second)
		wantError(t, c.redeem(t, code, cb), 400, "invalid_grant")
	})

	t.Run("scope escalation by the agent", func(t *testing.T) {
		id := c.startAuthorization(t, c.authorizeURL(map[string]string{"redirect_uri": cb, "scope": "openid data:write"}))
		r := do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"neg-agent","agent_secret":%q,"request_id":%q}`, secret, id))
		wantError(t, r, 400, "invalid_scope")
		if s := do(t, "GET", c.base()+"/api/check-status?request_id="+id, nil, ""); s.str("status") != "pending" {
			t.Fatalf("a refused completion changed the request: %s", s.body)
		}
	})

	t.Run("a completed request is never overwritten", func(t *testing.T) {
		c.registerOK(t, "second-agent")
		id := c.startAuthorization(t, c.authorizeURL(demo))
		first := do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"neg-agent","agent_secret":%q,"request_id":%q}`, secret, id))
		if first.status != 200 {
			t.Fatalf("first completion: %d", first.status)
		}
		wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"second-agent","agent_secret":%q,"request_id":%q}`, secret, id)), 400, "invalid_request")
		u, _ := url.Parse(first.str("redirect_to"))
		r := c.redeem(t, u.Query().Get("code"), cb)
		if _, claims := decodeJWT(t, r.str("access_token")); claims["sub"] != "neg-agent" {
			t.Fatalf("the code speaks for %v", claims["sub"])
		}
	})

	t.Run("disabled agent", func(t *testing.T) {
		c.registerOK(t, "to-disable")
		code := c.codeFor(t, demo, "to-disable")
		c.admin(t, "PATCH", "/auth_agent/agents/to-disable", `{"disabled":true}`)
		wantError(t, c.redeem(t, code, cb), 400, "invalid_grant")
		id := c.startAuthorization(t, c.authorizeURL(demo))
		wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"to-disable","agent_secret":%q,"request_id":%q}`, secret, id)), 401, "invalid_client")
		if s := do(t, "GET", c.base()+"/api/check-status?request_id="+id, nil, ""); s.str("status") != "pending" {
			t.Fatalf("request changed: %s", s.body)
		}
	})

	t.Run("client authentication", func(t *testing.T) {
		form := url.Values{"grant_type": {"client_credentials"}}
		r := c.tokenCall(t, "demo-site", "wrong-secret", form)
		wantError(t, r, 401, "invalid_client")
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic") {
			t.Fatalf("Basic failure without challenge: %q", r.header.Get("WWW-Authenticate"))
		}
		post := url.Values{"grant_type": {"client_credentials"}, "client_id": {"demo-site"}, "client_secret": {"wrong"}}
		if r := c.tokenCall(t, "", "", post); r.status != 401 || r.header.Get("WWW-Authenticate") != "" {
			t.Fatalf("post failure: %d %q", r.status, r.header.Get("WWW-Authenticate"))
		}
		wantError(t, c.tokenCall(t, "nobody", "x", form), 401, "invalid_client")
		wantError(t, c.tokenCall(t, "", "", form), 401, "invalid_client")
		wantError(t, c.tokenCall(t, "spa", "some-secret", form), 401, "invalid_client")
		both := url.Values{"grant_type": {"client_credentials"}, "client_secret": {clientSecret}}
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, both), 400, "invalid_request")
		wantError(t, c.tokenCall(t, "", "", url.Values{"grant_type": {"client_credentials"}, "client_id": {"spa"}}), 400, "unauthorized_client")
		r = c.tokenCall(t, "", "", url.Values{"grant_type": {"client_credentials"}, "client_id": {"demo-site"}, "client_secret": {clientSecret}, "scope": {"data:read"}})
		if r.status != 200 || r.str("scope") != "data:read" || r.str("refresh_token") != "" {
			t.Fatalf("client_secret_post client_credentials: %d %s", r.status, r.body)
		}
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"client_credentials"}, "scope": {"openid"}}), 400, "invalid_scope")
	})

	t.Run("malformed and oversized bodies", func(t *testing.T) {
		tok := c.base() + "/oauth2/token"
		wantError(t, do(t, "POST", tok, map[string]string{"Content-Type": "text/plain"}, "grant_type=client_credentials"), 400, "invalid_request")
		wantError(t, do(t, "POST", tok, nil, `{"grant_type":`), 400, "invalid_request")
		wantError(t, do(t, "POST", tok, nil, `{"grant_type":["a"]}`), 400, "invalid_request")
		wantError(t, do(t, "POST", tok, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "grant_type=a&grant_type=b"), 400, "invalid_request")
		wantError(t, do(t, "POST", tok, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "grant_type=%zz"), 400, "invalid_request")
		wantError(t, do(t, "POST", tok, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "x="+strings.Repeat("a", 70<<10)), 413, "invalid_request")
		wantError(t, do(t, "POST", tok, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, ""), 400, "invalid_request")
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"password"}}), 400, "unsupported_grant_type")
		wantError(t, do(t, "GET", tok, nil, ""), 405, "invalid_request")
		// JSON bodies work as agent SDKs send them.
		r := do(t, "POST", tok, nil, `{"grant_type":"client_credentials","client_id":"neg-agent","client_secret":"Test123456!"}`)
		if r.status != 200 || r.str("scope") != "profile data:read" || r.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("agent client_credentials over JSON: %d %s", r.status, r.body)
		}
	})
}

func TestTokenExchangeIntrospectRevoke(t *testing.T) {
	site := newWebsite(t)
	c := newCaddy(t, "")
	c.start(oauthOpts(site.callback, ""))
	c.registerOK(t, "ex-agent")
	first := c.redeem(t, c.codeFor(t, map[string]string{"redirect_uri": site.callback, "scope": "openid profile data:read"}, "ex-agent"), site.callback)
	at, rt := first.str("access_token"), first.str("refresh_token")
	var exchanged string

	t.Run("token exchange narrows and names the actor", func(t *testing.T) {
		r := c.tokenCall(t, "demo-site", clientSecret, url.Values{
			"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {at},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "scope": {"data:read"},
			"resource": {"https://api.example.com"},
		})
		if r.status != 200 || r.str("issued_token_type") != "urn:ietf:params:oauth:token-type:access_token" || r.str("scope") != "data:read" || r.str("refresh_token") != "" {
			t.Fatalf("exchange: %d %s", r.status, r.body)
		}
		_, claims := decodeJWT(t, r.str("access_token"))
		act, _ := claims["act"].(map[string]any)
		if claims["sub"] != "ex-agent" || act["sub"] != "demo-site" || fmt.Sprint(claims["aud"]) != "[https://api.example.com]" {
			t.Fatalf("claims %v", claims)
		}
		if r.json["expires_in"].(float64) > first.json["expires_in"].(float64) {
			t.Fatal("an exchanged token outlives its subject token")
		}
		exchanged = r.str("access_token")
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{
			"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {at},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "scope": {"data:write"},
		}), 400, "invalid_scope")
		// A token issued to demo-site is not other-site's to exchange.
		wantError(t, c.tokenCall(t, "other-site", strings.Repeat("z", 32), url.Values{
			"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {at},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		}), 400, "invalid_grant")
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{
			"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {"not-a-token"},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		}), 400, "invalid_grant")
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{
			"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {at},
		}), 400, "invalid_request")
	})

	t.Run("introspection", func(t *testing.T) {
		r := c.formCall(t, "/oauth2/introspect", "demo-site", clientSecret, url.Values{"token": {at}})
		if r.status != 200 || r.json["active"] != true || r.json["sub"] != "ex-agent" || r.json["client_id"] != "demo-site" || r.json["scope"] != "openid profile data:read" {
			t.Fatalf("introspect access token: %d %s", r.status, r.body)
		}
		r = c.formCall(t, "/oauth2/introspect", "demo-site", clientSecret, url.Values{"token": {rt}})
		if r.json["active"] != true || r.json["token_type"] != "refresh_token" {
			t.Fatalf("introspect refresh token: %s", r.body)
		}
		if r := c.formCall(t, "/oauth2/introspect", "demo-site", clientSecret, url.Values{"token": {"garbage"}}); r.status != 200 || r.json["active"] != false || len(r.json) != 1 {
			t.Fatalf("garbage: %s", r.body)
		}
		wantError(t, c.formCall(t, "/oauth2/introspect", "", "", url.Values{"token": {at}}), 401, "invalid_client")
		wantError(t, c.formCall(t, "/oauth2/introspect", "", "", url.Values{"token": {at}, "client_id": {"spa"}}), 401, "invalid_client")
		cc := c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"client_credentials"}, "scope": {"data:read"}})
		if r := c.formCall(t, "/oauth2/introspect", "demo-site", clientSecret, url.Values{"token": {cc.str("access_token")}}); r.json["active"] != true || r.json["sub"] != "demo-site" {
			t.Fatalf("a client's own token: %s", r.body)
		}
		wantError(t, c.formCall(t, "/oauth2/introspect", "demo-site", clientSecret, url.Values{}), 400, "invalid_request")
	})

	t.Run("revocation", func(t *testing.T) {
		if r := c.formCall(t, "/oauth2/revoke", "demo-site", clientSecret, url.Values{"token": {"unknown-token"}}); r.status != 200 {
			t.Fatalf("unknown token: %d", r.status)
		}
		// Another client cannot revoke demo-site's tokens.
		if r := c.formCall(t, "/oauth2/revoke", "other-site", strings.Repeat("z", 32), url.Values{"token": {at}}); r.status != 200 {
			t.Fatalf("foreign revoke: %d", r.status)
		}
		if s := do(t, "GET", c.base()+"/oauth2/userinfo", bearer(at), ""); s.status != 200 {
			t.Fatalf("a foreign client revoked the token: %d", s.status)
		}
		wantError(t, c.formCall(t, "/oauth2/revoke", "demo-site", "wrong", url.Values{"token": {at}}), 401, "invalid_client")
		if r := c.formCall(t, "/oauth2/revoke", "demo-site", clientSecret, url.Values{"token": {rt}, "token_type_hint": {"refresh_token"}}); r.status != 200 {
			t.Fatalf("revoke: %d %s", r.status, r.body)
		}
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}), 400, "invalid_grant")
		if s := do(t, "GET", c.base()+"/oauth2/userinfo", bearer(at), ""); s.status != 401 {
			t.Fatalf("revoking the refresh token leaves its access token working: %d", s.status)
		}
		if r := c.formCall(t, "/oauth2/introspect", "demo-site", clientSecret, url.Values{"token": {at}}); r.json["active"] != false {
			t.Fatalf("revoked token introspects active: %s", r.body)
		}
		if r := c.formCall(t, "/oauth2/introspect", "demo-site", clientSecret, url.Values{"token": {exchanged}}); r.json["active"] != false {
			t.Fatalf("a token exchanged from a revoked one is still active: %s", r.body)
		}
	})

	t.Run("userinfo needs openid and refuses revoked tokens", func(t *testing.T) {
		self := c.token(t, "ex-agent", secret)
		wantError(t, do(t, "GET", c.base()+"/oauth2/userinfo", bearer(self), ""), 403, "insufficient_scope")
		wantError(t, do(t, "GET", c.base()+"/oauth2/userinfo", nil, ""), 401, "invalid_token")
	})
}

func TestDiscoveryAndClientRegistration(t *testing.T) {
	site := newWebsite(t)
	c := newCaddy(t, "")
	c.start(oauthOpts(site.callback, ""))

	for _, path := range []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"} {
		r := do(t, "GET", c.base()+path, nil, "")
		if r.status != 200 || r.json["issuer"] != c.base() || r.json["jwks_uri"] != c.base()+"/.well-known/jwks.json" ||
			fmt.Sprint(r.json["code_challenge_methods_supported"]) != "[S256]" || r.json["authorization_response_iss_parameter_supported"] != true ||
			r.json["agent_auth_endpoint"] != c.base()+"/api/agent-auth" || r.json["registration_endpoint"] != nil {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		if _, env := r.json["success"]; env {
			t.Fatal("discovery must not be wrapped in the /api envelope")
		}
	}
	wantError(t, do(t, "POST", c.base()+"/oauth2/register", nil, `{"redirect_uris":["https://app.example.com/cb"]}`), 403, "access_denied")

	c.reload(oauthOpts(site.callback, "\t\tdynamic_client_registration token initial-token-1"))
	wantError(t, do(t, "POST", c.base()+"/oauth2/register", nil, `{"redirect_uris":["https://app.example.com/cb"]}`), 401, "invalid_token")
	reg := do(t, "POST", c.base()+"/oauth2/register", bearer("initial-token-1"), `{"redirect_uris":["https://app.example.com/cb"],"client_name":"MCP Client","token_endpoint_auth_method":"none","scope":"openid profile"}`)
	if reg.status != 201 || reg.json["client_secret"] != nil || reg.json["token_endpoint_auth_method"] != "none" {
		t.Fatalf("register public: %d %s", reg.status, reg.body)
	}
	conf := do(t, "POST", c.base()+"/oauth2/register", bearer("initial-token-1"), `{"redirect_uris":["http://127.0.0.1:9/cb"],"client_name":"Backend"}`)
	if conf.status != 201 || len(conf.str("client_secret")) < 43 || conf.json["client_secret_expires_at"].(float64) != 0 {
		t.Fatalf("register confidential: %d %s", conf.status, conf.body)
	}
	// The new client authenticates with its generated secret.
	id, sec := conf.str("client_id"), conf.str("client_secret")
	if r := c.formCall(t, "/oauth2/introspect", id, sec, url.Values{"token": {"x"}}); r.status != 200 {
		t.Fatalf("dynamic client auth: %d %s", r.status, r.body)
	}
	for name, body := range map[string]string{
		"http redirect":   `{"redirect_uris":["http://app.example.com/cb"]}`,
		"fragment":        `{"redirect_uris":["https://app.example.com/cb#x"]}`,
		"no redirect":     `{"redirect_uris":[]}`,
		"javascript":      `{"redirect_uris":["javascript:alert(1)"]}`,
		"implicit":        `{"redirect_uris":["https://a.example.com/cb"],"response_types":["token"]}`,
		"bad auth method": `{"redirect_uris":["https://a.example.com/cb"],"token_endpoint_auth_method":"private_key_jwt"}`,
		"bad grant":       `{"redirect_uris":["https://a.example.com/cb"],"grant_types":["password"]}`,
		"self-serve cc":   `{"redirect_uris":["https://a.example.com/cb"],"grant_types":["client_credentials"],"scope":"admin"}`,
		"malformed":       `{"redirect_uris":`,
	} {
		t.Run(name, func(t *testing.T) {
			r := do(t, "POST", c.base()+"/oauth2/register", bearer("initial-token-1"), body)
			if r.status != 400 {
				t.Fatalf("got %d %s", r.status, r.body)
			}
		})
	}
	// Agent ids and client ids never collide.
	wantError(t, c.register(t, "demo-site", secret), 409, "invalid_request")
	wantError(t, c.admin(t, "POST", "/auth_agent/agents", `{"agent_id":"other-site","model_name":"m","owner_email":"a@example.com"}`), 409, "invalid_request")
	list := c.admin(t, "GET", "/auth_agent/clients", "")
	if n := len(list.json["clients"].([]any)); n != 5 {
		t.Fatalf("%d clients, want 3 configured + 2 registered: %s", n, list.body)
	}
	if strings.Contains(string(list.body), "secret_sha256") || strings.Contains(string(list.body), sec) {
		t.Fatal("client listing leaks secrets")
	}

	t.Run("admin client CRUD", func(t *testing.T) {
		r := c.admin(t, "POST", "/auth_agent/clients", `{"client_id":"admin-made","client_name":"Admin Made","redirect_uris":["https://app.example.com/cb"],"scopes":["openid","data:read"]}`)
		if r.status != 201 || len(r.str("client_secret")) < 43 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		wantError(t, c.admin(t, "POST", "/auth_agent/clients", `{"client_id":"admin-made","redirect_uris":["https://app.example.com/cb"]}`), 409, "invalid_request")
		wantError(t, c.admin(t, "POST", "/auth_agent/clients", `{"client_id":"demo-site","redirect_uris":["https://app.example.com/cb"]}`), 409, "invalid_request")
		if r := c.admin(t, "GET", "/auth_agent/clients/admin-made", ""); r.status != 200 || r.json["client_name"] != "Admin Made" {
			t.Fatalf("get: %d %s", r.status, r.body)
		}
		r = c.admin(t, "PATCH", "/auth_agent/clients/admin-made", `{"client_name":"Renamed","redirect_uris":["https://app.example.com/cb2"]}`)
		if r.status != 200 || r.json["client_name"] != "Renamed" || fmt.Sprint(r.json["redirect_uris"]) != "[https://app.example.com/cb2]" || fmt.Sprint(r.json["scopes"]) != "[openid data:read]" {
			t.Fatalf("update: %d %s", r.status, r.body)
		}
		wantError(t, c.admin(t, "PATCH", "/auth_agent/clients/admin-made", `{"redirect_uris":["http://evil.example.com/cb"]}`), 400, "invalid_redirect_uri")
		wantError(t, c.admin(t, "PATCH", "/auth_agent/clients/admin-made", `{"grant_types":[]}`), 400, "invalid_client_metadata")
		wantError(t, c.admin(t, "PATCH", "/auth_agent/clients/demo-site", `{"client_name":"x"}`), 409, "invalid_request")
		wantError(t, c.admin(t, "PATCH", "/auth_agent/clients/nobody", `{"client_name":"x"}`), 404, "invalid_request")
		if r := c.admin(t, "GET", "/auth_agent/clients/admin-made", ""); r.json["client_name"] != "Renamed" {
			t.Fatalf("refused updates changed the client: %s", r.body)
		}
		wantError(t, c.admin(t, "DELETE", "/auth_agent/clients/demo-site", ""), 409, "invalid_request")
		if r := c.admin(t, "DELETE", "/auth_agent/clients/admin-made", ""); r.status != 200 {
			t.Fatalf("delete: %d", r.status)
		}
		wantError(t, c.admin(t, "GET", "/auth_agent/clients/admin-made", ""), 404, "invalid_request")
	})
}
