package e2e

import (
	"github.com/golang-jwt/jwt/v5"

	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/internal/pgtest"
	"github.com/authagent/caddy-authagent/internal/redistest"
)

// propagation is how soon a change made through one instance holds at
// every other (SPEC §10).
const propagation = 2 * time.Second

const dbPassword = "Db-Pa55word-never-logged"

// cluster is two auth_agent instances on one PostgreSQL database and one
// Redis, behind a third Caddy that balances round-robin: the setup of
// README's "Running several instances".
type cluster struct {
	pg       *pgtest.Server
	a, b, lb *caddy
	opts     string
	site     *website
	up       *upstream
	api      string   // agent_guard on b in front of up
	idp      *testIdP // a trusted_idp of both instances
	// served counts the answers of each instance through the balancer.
	mu     sync.Mutex
	served map[string]int
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	pg := pgtest.Start(t)
	pg.CreateDatabase(t, "authagent")
	redisURL, _ := redistest.Start(t)
	cl := &cluster{pg: pg, site: newWebsite(t), up: newUpstream(t), served: map[string]int{}}
	lbPort := freePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", lbPort)
	cl.idp = newTestIdP(t)
	cl.opts = oauthOpts(cl.site.callback, fmt.Sprintf("\t\trate_limit {\n\t\t\tstore redis %s\n\t\t}\n\t\ttrusted_idp %s {\n\t\t\tclients demo-site\n\t\t\tscopes data:read\n\t\t}", redisURL, cl.idp.URL))
	cl.a, cl.b = newCaddy(t, ""), newCaddy(t, "")
	apiPort := freePort(t)
	cl.api = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	cl.b.sites = guardedSite(apiPort, "\tagent_guard {\n\t\tscopes data:read\n\t}\n", cl.up.URL)
	for name, c := range map[string]*caddy{"a": cl.a, "b": cl.b} {
		c.issuer = issuer
		// The server trusts every local connection; the password is there
		// to check that no log line shows it.
		c.storage = "postgres " + strings.Replace(pg.DSN("authagent"), "postgres@", "postgres:"+dbPassword+"@", 1)
		c.siteExtra = "\theader X-Instance " + name
	}
	// Both start at once: the schema is created by one of them, under the
	// migration lock, while the other waits.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, c := range []*caddy{cl.a, cl.b} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.tryStart(cl.opts) }()
	}
	wg.Wait()
	for i, c := range []*caddy{cl.a, cl.b} {
		t.Cleanup(c.stop)
		if errs[i] != nil {
			t.Fatalf("instance %d did not start: %v\n%s", i, errs[i], c.log)
		}
	}
	if !strings.Contains(cl.a.log.String()+cl.b.log.String(), "migrated the database schema") {
		t.Fatal("neither instance logged creating the schema")
	}
	cl.lb = &caddy{t: t, dir: t.TempDir(), httpPort: lbPort, adminPort: freePort(t)}
	cl.lb.raw = fmt.Sprintf(`{
	admin 127.0.0.1:%d
}

http://127.0.0.1:%d {
	reverse_proxy 127.0.0.1:%d 127.0.0.1:%d {
		lb_policy round_robin
		lb_try_duration 5s
		fail_duration 10s
	}
}
`, cl.lb.adminPort, lbPort, cl.a.httpPort, cl.b.httpPort)
	cl.lb.start("")
	return cl
}

// do sends a request through the balancer, noting which instance answered.
func (cl *cluster) do(t *testing.T, client *http.Client, method, path string, header map[string]string, body string) response {
	t.Helper()
	r := httpDo(t, client, method, cl.lb.base()+path, header, body)
	cl.mu.Lock()
	cl.served[r.header.Get("X-Instance")]++
	cl.mu.Unlock()
	return r
}

func (cl *cluster) form(t *testing.T, path, user, pass string, form url.Values) response {
	t.Helper()
	h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if user != "" {
		h["Authorization"] = "Basic " + basicAuth(user, pass)
	}
	return cl.do(t, http.DefaultClient, "POST", path, h, form.Encode())
}

// eventually retries check until it returns "" or within elapses, and
// fails with its last complaint.
func eventually(t *testing.T, within time.Duration, what string, check func() string) {
	t.Helper()
	start := time.Now()
	for {
		msg := check()
		if msg == "" {
			t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v: %s", what, within, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCluster runs the IdP as two instances on one PostgreSQL behind a
// round-robin load balancer (SPEC §10).
func TestCluster(t *testing.T) {
	cl := newCluster(t)
	cb := cl.site.callback

	t.Run("memory rate limits on a shared store are warned about", func(t *testing.T) {
		c := newCaddy(t, "")
		c.issuer, c.storage = cl.a.issuer, cl.a.storage
		c.start(oauthOpts(cb, ""))
		c.stop()
		if !strings.Contains(c.log.String(), "store redis <url>") {
			t.Fatalf("no warning naming the fix:\n%s", c.log)
		}
	})

	t.Run("every endpoint across instances", func(t *testing.T) {
		if r := cl.do(t, http.DefaultClient, "POST", "/api/register-agent", nil, registerBody("lb-agent", secret)); r.status != 201 {
			t.Fatalf("register: %d %s", r.status, r.body)
		}
		if r := cl.do(t, http.DefaultClient, "POST", "/api/register-agent", nil, registerBody("lb-agent", secret)); r.status != 409 {
			t.Fatalf("duplicate registration on the other instance: %d %s", r.status, r.body)
		}
		auth := cl.do(t, http.DefaultClient, "POST", "/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"lb-agent","agent_secret":%q}`, secret))
		tok := auth.str("access_token")
		if auth.status != 200 || tok == "" {
			t.Fatalf("agent-auth: %d %s", auth.status, auth.body)
		}
		for range 2 { // once on each instance
			if r := cl.do(t, http.DefaultClient, "GET", "/api/agents/profile", bearer(tok), ""); r.status != 200 || r.str("agent_id") != "lb-agent" {
				t.Fatalf("profile: %d %s", r.status, r.body)
			}
		}
		if r := cl.do(t, http.DefaultClient, "PUT", "/api/agents/profile", bearer(tok), `{"owner_name":"Cluster Owner"}`); r.status != 200 {
			t.Fatalf("profile update: %d %s", r.status, r.body)
		}
		for range 2 {
			if r := cl.do(t, http.DefaultClient, "GET", "/api/agents/profile", bearer(tok), ""); r.str("owner_name") != "Cluster Owner" {
				t.Fatalf("profile after the update: %d %s", r.status, r.body)
			}
		}
		cc := cl.form(t, "/oauth2/token", "lb-agent", secret, url.Values{"grant_type": {"client_credentials"}, "scope": {"data:read"}})
		if cc.status != 200 || cc.str("access_token") == "" {
			t.Fatalf("client_credentials: %d %s", cc.status, cc.body)
		}
		for _, path := range []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/.well-known/jwks.json"} {
			if r := cl.do(t, http.DefaultClient, "GET", path, nil, ""); r.status != 200 {
				t.Fatalf("%s: %d", path, r.status)
			}
		}

		// "Sign in with Auth Agent": page, approval, poll, exchange,
		// userinfo, refresh and refresh reuse, request after request on
		// alternating instances.
		jar, _ := cookiejar.New(nil)
		browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		authorize := strings.TrimPrefix(cl.a.authorizeURL(map[string]string{"redirect_uri": cb, "scope": "openid profile data:read"}), cl.a.base())
		page := cl.do(t, browser, "GET", authorize, map[string]string{"Accept": "text/html"}, "")
		m := requestIDMeta.FindSubmatch(page.body)
		if page.status != 200 || m == nil {
			t.Fatalf("sign-in page: %d %s", page.status, page.body)
		}
		id := string(m[1])
		pending := cl.do(t, browser, "GET", "/api/check-status?request_id="+id, nil, "")
		if pending.status != 200 || pending.str("status") != "pending" {
			t.Fatalf("status before approval: %d %s", pending.status, pending.body)
		}
		approved := cl.do(t, http.DefaultClient, "POST", "/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"lb-agent","agent_secret":%q,"request_id":%q}`, secret, id))
		if approved.status != 200 || approved.str("status") != "authenticated" {
			t.Fatalf("approval: %d %s", approved.status, approved.body)
		}
		again := cl.do(t, http.DefaultClient, "POST", "/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"lb-agent","agent_secret":%q,"request_id":%q}`, secret, id))
		wantError(t, again, 400, "invalid_request")
		status := cl.do(t, browser, "GET", "/api/check-status?request_id="+id, nil, "")
		if status.str("status") != "authenticated" || status.str("redirect_to") != approved.str("redirect_to") {
			t.Fatalf("the bound browser's poll: %d %s", status.status, status.body)
		}
		u, _ := url.Parse(status.str("redirect_to"))
		form := url.Values{"grant_type": {"authorization_code"}, "code": {u.Query().Get("code")}, "redirect_uri": {cb}, "code_verifier": {verifier}}
		tokens := cl.form(t, "/oauth2/token", "demo-site", clientSecret, form)
		if tokens.status != 200 || tokens.str("refresh_token") == "" || tokens.str("id_token") == "" {
			t.Fatalf("code exchange: %d %s", tokens.status, tokens.body)
		}
		for range 2 {
			if r := cl.do(t, http.DefaultClient, "GET", "/oauth2/userinfo", bearer(tokens.str("access_token")), ""); r.status != 200 || r.json["sub"] != "lb-agent" {
				t.Fatalf("userinfo: %d %s", r.status, r.body)
			}
		}
		rt := tokens.str("refresh_token")
		refresh := func(rt string) response {
			return cl.form(t, "/oauth2/token", "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
		}
		next := refresh(rt)
		if next.status != 200 || next.str("refresh_token") == "" {
			t.Fatalf("refresh: %d %s", next.status, next.body)
		}
		third := refresh(next.str("refresh_token"))
		if third.status != 200 {
			t.Fatalf("second refresh: %d %s", third.status, third.body)
		}
		wantError(t, refresh(rt), 400, "invalid_grant") // reuse: the family is revoked
		wantError(t, refresh(third.str("refresh_token")), 400, "invalid_grant")
		// A replayed code is refused wherever it lands.
		wantError(t, cl.form(t, "/oauth2/token", "demo-site", clientSecret, form), 400, "invalid_grant")

		cl.mu.Lock()
		defer cl.mu.Unlock()
		if cl.served["a"] < 5 || cl.served["b"] < 5 || len(cl.served) != 2 {
			t.Fatalf("answers per instance: %v", cl.served)
		}
	})

	t.Run("values PostgreSQL cannot hold are refused, not a 500", func(t *testing.T) {
		// At authorize, the client's error goes back to it by redirect.
		for name, param := range map[string]map[string]string{
			"state with NUL":  {"redirect_uri": cb, "state": "a\x00b"},
			"nonce with NUL":  {"redirect_uri": cb, "nonce": "\x00"},
			"nonce not UTF-8": {"redirect_uri": cb, "nonce": "a\xffb"},
		} {
			resp, err := noRedirect().Get(cl.a.authorizeURL(param))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if loc, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != 302 || loc.Query().Get("error") != "invalid_request" {
				t.Errorf("%s: %d %s", name, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
		for name, r := range map[string]response{
			"client_name with NUL": do(t, "POST", cl.a.base()+"/oauth2/register", nil,
				fmt.Sprintf(`{"client_name":"a\u0000b","redirect_uris":[%q],"token_endpoint_auth_method":"none"}`, cb)),
			"owner_name with NUL":      do(t, "POST", cl.a.base()+"/api/register-agent", nil, strings.Replace(registerBody("nul-agent", secret), "Test User", `Test\u0000User`, 1)),
			"agent_id with NUL":        do(t, "POST", cl.a.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"a\u0000b","agent_secret":%q}`, secret)),
			"request_id with NUL":      do(t, "GET", cl.a.base()+"/api/check-status?request_id=a%00b", nil, ""),
			"client_id with NUL":       cl.a.formCall(t, "/oauth2/token", "a\x00b", "x", url.Values{"grant_type": {"client_credentials"}}),
			"refresh token with NUL":   cl.a.formCall(t, "/oauth2/token", "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"a\x00b"}}),
			"admin client id with NUL": cl.a.admin(t, "POST", "/auth_agent/clients", fmt.Sprintf(`{"client_id":"a\u0000b","redirect_uris":[%q]}`, cb)),
		} {
			// Writes are refused (4xx); lookups find nothing (an unknown
			// request is reported expired).
			if r.status >= 500 || (r.status < 400 && name != "request_id with NUL") {
				t.Errorf("%s: %d %s", name, r.status, r.body)
			}
		}
	})

	t.Run("a client assertion used at a is refused at b", func(t *testing.T) {
		key := newECPair(t, "cluster-1")
		if r := do(t, "POST", cl.a.base()+"/api/register-agent", nil, fmt.Sprintf(`{"agent_id":"keyed-agent","model_name":"m","owner_email":"a@example.com","jwks":%s}`, key.set())); r.status != 201 {
			t.Fatalf("register with keys at a: %d %s", r.status, r.body)
		}
		assertion := key.assertion(t, "keyed-agent", cl.a.issuer, nil)
		form := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion}}
		if r := cl.a.formCall(t, "/oauth2/token", "", "", form); r.status != 200 {
			t.Fatalf("the assertion at a: %d %s", r.status, r.body)
		}
		wantError(t, cl.b.formCall(t, "/oauth2/token", "", "", form), 401, "invalid_client")
	})

	t.Run("a DPoP proof used at a is refused at b", func(t *testing.T) {
		key := newECPair(t, "")
		tokenURL := cl.a.issuer + "/oauth2/token"
		proof := key.proof(t, "POST", tokenURL, nil)
		h := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "DPoP": proof}
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"keyed-agent-dpop"}, "client_secret": {secret}}.Encode()
		cl.a.registerOK(t, "keyed-agent-dpop")
		if r := do(t, "POST", cl.a.base()+"/oauth2/token", h, form); r.status != 200 || r.json["token_type"] != "DPoP" {
			t.Fatalf("the proof at a: %d %s", r.status, r.body)
		}
		wantError(t, do(t, "POST", cl.b.base()+"/oauth2/token", h, form), 400, "invalid_dpop_proof")
	})

	t.Run("an ID-JAG redeemed at a is refused at b", func(t *testing.T) {
		cl.a.registerOK(t, "enterprise-agent")
		grant := cl.idp.grant(t, cl.idp.key, cl.a.issuer, "demo-site", "enterprise-agent", func(_ map[string]any, c jwt.MapClaims) { c["scope"] = "data:read" })
		form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {grant}}
		if r := cl.a.formCall(t, "/oauth2/token", "demo-site", clientSecret, form); r.status != 200 {
			t.Fatalf("the ID-JAG at a: %d %s", r.status, r.body)
		}
		wantError(t, cl.b.formCall(t, "/oauth2/token", "demo-site", clientSecret, form), 400, "invalid_grant")
	})

	t.Run("revocation reaches the other instance", func(t *testing.T) {
		cl.a.registerOK(t, "revoked-agent")
		code := cl.a.agentSignIn(t, cl.a.authorizeURL(map[string]string{"redirect_uri": cb, "scope": "openid profile data:read"}), "revoked-agent", secret).Query().Get("code")
		tok := cl.a.redeem(t, code, cb).str("access_token")
		if r := do(t, "GET", cl.api+"/x", bearer(tok), ""); r.status != 200 {
			t.Fatalf("b's guard before revocation: %d %s", r.status, r.body)
		}
		if r := cl.a.formCall(t, "/oauth2/revoke", "demo-site", clientSecret, url.Values{"token": {tok}}); r.status != 200 {
			t.Fatalf("revoke at a: %d %s", r.status, r.body)
		}
		eventually(t, propagation, "b's guard refuses the token revoked at a", func() string {
			if r := do(t, "GET", cl.api+"/x", bearer(tok), ""); r.status != 401 {
				return fmt.Sprintf("%d", r.status)
			}
			return ""
		})
		eventually(t, propagation, "b's introspection says inactive", func() string {
			if r := cl.b.formCall(t, "/oauth2/introspect", "demo-site", clientSecret, url.Values{"token": {tok}}); r.json["active"] != false {
				return string(r.body)
			}
			return ""
		})
		// b timed how long the change took to reach it.
		if n := metric(cl.b.scrape(t), "auth_agent_change_propagation_seconds", nil); n < 1 {
			t.Errorf("b observed %v change propagations", n)
		}
	})

	t.Run("a permission removed at a is refused at b", func(t *testing.T) {
		cl.a.registerOK(t, "narrowed-agent")
		if r := cl.a.admin(t, "PATCH", "/auth_agent/agents/narrowed-agent", `{"permissions":["data:read","data:write"]}`); r.status != 200 {
			t.Fatalf("grant at a: %d %s", r.status, r.body)
		}
		tok := cl.a.token(t, "narrowed-agent", secret) // profile data:read data:write
		if r := do(t, "GET", cl.api+"/x", bearer(tok), ""); r.status != 200 {
			t.Fatalf("b's guard before: %d %s", r.status, r.body)
		}
		if r := cl.a.admin(t, "PATCH", "/auth_agent/agents/narrowed-agent", `{"permissions":["data:write"]}`); r.status != 200 {
			t.Fatalf("narrow at a: %d %s", r.status, r.body)
		}
		eventually(t, propagation, "b's guard refuses a token with a removed permission", func() string {
			if r := do(t, "GET", cl.api+"/x", bearer(tok), ""); r.status != 401 {
				return fmt.Sprintf("%d", r.status)
			}
			return ""
		})
		eventually(t, propagation, "b's introspection says inactive", func() string {
			r := cl.b.formCall(t, "/oauth2/introspect", "narrowed-agent", secret, url.Values{"token": {tok}})
			if r.json["active"] != false {
				return string(r.body)
			}
			return ""
		})
	})

	t.Run("an agent disabled at b is refused at a", func(t *testing.T) {
		cl.b.registerOK(t, "disabled-agent")
		tok := cl.a.token(t, "disabled-agent", secret) // a remembers the verified secret
		if r := cl.b.admin(t, "PATCH", "/auth_agent/agents/disabled-agent", `{"disabled":true}`); r.status != 200 {
			t.Fatalf("disable at b: %d %s", r.status, r.body)
		}
		eventually(t, propagation, "a refuses the disabled agent", func() string {
			r := do(t, "POST", cl.a.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"disabled-agent","agent_secret":%q}`, secret))
			if r.status != 401 {
				return fmt.Sprintf("agent-auth %d", r.status)
			}
			if r := do(t, "GET", cl.a.base()+"/api/agents/profile", bearer(tok), ""); r.status != 401 {
				return fmt.Sprintf("profile with an earlier token %d", r.status)
			}
			return ""
		})
	})

	t.Run("a secret changed at a is the only one b accepts", func(t *testing.T) {
		cl.a.registerOK(t, "rekeyed-agent")
		tok := cl.b.token(t, "rekeyed-agent", secret) // b remembers the old secret
		const newSecret = "An0ther-Secret-For-Rekeying!"
		r := do(t, "PUT", cl.a.base()+"/api/agents/profile", bearer(tok), fmt.Sprintf(`{"agent_secret":%q,"current_agent_secret":%q}`, newSecret, secret))
		if r.status != 200 {
			t.Fatalf("change the secret at a: %d %s", r.status, r.body)
		}
		eventually(t, propagation, "b refuses the old secret", func() string {
			if r := do(t, "POST", cl.b.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"rekeyed-agent","agent_secret":%q}`, secret)); r.status != 401 {
				return fmt.Sprintf("old secret: %d", r.status)
			}
			return ""
		})
		cl.b.token(t, "rekeyed-agent", newSecret)
	})

	t.Run("a client made at a is known at b, and its deletion too", func(t *testing.T) {
		r := cl.a.admin(t, "POST", "/auth_agent/clients", fmt.Sprintf(`{"client_id":"later-site","client_name":"Later Site","redirect_uris":[%q],"scopes":["openid","profile"]}`, cb))
		id, sec := r.str("client_id"), r.str("client_secret")
		if r.status != 201 || id == "" || sec == "" {
			t.Fatalf("create client at a: %d %s", r.status, r.body)
		}
		probe := func() int {
			return cl.b.formCall(t, "/oauth2/introspect", id, sec, url.Values{"token": {"x"}}).status
		}
		if s := probe(); s != 200 {
			t.Fatalf("the new client at b: %d", s)
		}
		if r := cl.a.admin(t, "DELETE", "/auth_agent/clients/"+id, ""); r.status != 204 && r.status != 200 {
			t.Fatalf("delete client at a: %d %s", r.status, r.body)
		}
		eventually(t, propagation, "b forgets the deleted client", func() string {
			if s := probe(); s != 401 {
				return fmt.Sprintf("%d", s)
			}
			return ""
		})
	})

	t.Run("key rotation at a is published by b first", func(t *testing.T) {
		cl.a.registerOK(t, "rotation-agent")
		gw := newCaddy(t, "")
		gwPort := freePort(t)
		gwAPI := fmt.Sprintf("http://127.0.0.1:%d", gwPort)
		gw.sites = guardedSite(gwPort, fmt.Sprintf("\tagent_guard {\n\t\tissuer %s\n\t\tkey_refresh_interval 1s\n\t}\n", cl.lb.base()), cl.up.URL)
		gw.start("")
		before := cl.a.token(t, "rotation-agent", secret)
		oldHdr, _ := decodeJWT(t, before)
		if r := cl.a.admin(t, "POST", "/auth_agent/keys/rotate", ""); r.status != 200 {
			t.Fatalf("rotate at a: %d %s", r.status, r.body)
		}
		var rotated string
		eventually(t, 40*time.Second, "a signs with the new key", func() string {
			tok := cl.a.token(t, "rotation-agent", secret)
			h, _ := decodeJWT(t, tok)
			if h["kid"] == oldHdr["kid"] {
				return "still the old kid"
			}
			// The moment a signs with it, b already publishes it.
			if jwks := string(do(t, "GET", cl.b.base()+"/.well-known/jwks.json", nil, "").body); !strings.Contains(jwks, h["kid"].(string)) {
				t.Fatalf("a signs with %v before b publishes it: %s", h["kid"], jwks)
			}
			rotated = tok
			return ""
		})
		for _, tok := range []string{rotated, before} {
			if r := do(t, "GET", cl.api+"/x", bearer(tok), ""); r.status != 200 {
				t.Fatalf("b's guard: %d %s", r.status, r.body)
			}
			if r := do(t, "GET", gwAPI+"/x", bearer(tok), ""); r.status != 200 {
				t.Fatalf("the remote guard reading the cluster's JWKS: %d %s", r.status, r.body)
			}
		}
	})

	t.Run("kill -9 of one instance during registrations", func(t *testing.T) {
		client := &http.Client{Timeout: 20 * time.Second}
		var (
			mu    sync.Mutex
			acked []string
			after atomic.Int64 // 201s that started after the kill
			n     atomic.Int64
			wg    sync.WaitGroup
		)
		killed := make(chan struct{})
		stop := time.Now().Add(4 * time.Second)
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					id := fmt.Sprintf("burst-%d-%d", w, n.Add(1))
					wasKilled := isClosed(killed)
					status, err := post(client, cl.lb.base()+"/api/register-agent", registerBody(id, secret))
					if err == nil && status == 201 {
						mu.Lock()
						acked = append(acked, id)
						mu.Unlock()
						if wasKilled {
							after.Add(1)
						}
					}
				}
			}()
		}
		time.Sleep(time.Second)
		cl.b.kill9()
		close(killed)
		wg.Wait()
		if after.Load() == 0 {
			t.Fatal("no registration succeeded after the kill: the surviving instance did not serve")
		}
		t.Logf("%d registrations acknowledged, %d after the kill", len(acked), after.Load())
		for _, id := range acked {
			cl.a.token(t, id, secret)
		}
		cl.b.start(cl.opts)
	})

	t.Run("caddy reload keeps the instance on the database", func(t *testing.T) {
		cl.a.reload(cl.opts + "\n\t\taccess_token_lifetime 30m\n")
		cl.a.registerOK(t, "reloaded-agent")
		tok := cl.a.token(t, "reloaded-agent", secret)
		if r := do(t, "GET", cl.api+"/x", bearer(tok), ""); r.status != 200 {
			t.Fatalf("a token of the reloaded instance at b's guard: %d %s", r.status, r.body)
		}
		if r := do(t, "GET", cl.b.base()+"/api/agents/profile", bearer(tok), ""); r.str("agent_id") != "reloaded-agent" {
			t.Fatalf("the agent registered after the reload, at b: %d %s", r.status, r.body)
		}
	})

	// Last: it stops the database.
	t.Run("PostgreSQL down for 10 seconds under load", func(t *testing.T) {
		cl.a.registerOK(t, "outage-agent")
		guarded := cl.a.token(t, "outage-agent", secret)
		client := &http.Client{Timeout: 20 * time.Second}
		var (
			mu       sync.Mutex
			acked    []string
			statuses = map[int]int{}
			problems []string
			n        atomic.Int64
			wg       sync.WaitGroup
		)
		note := func(status int, err error, took time.Duration, what string) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("%s: %v", what, err))
			case took > 12*time.Second:
				problems = append(problems, fmt.Sprintf("%s took %v", what, took))
			case status >= 500 && status != 503:
				problems = append(problems, fmt.Sprintf("%s: %d", what, status))
			}
			statuses[status]++
		}
		stop := time.Now().Add(16 * time.Second)
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					id := fmt.Sprintf("outage-%d-%d", w, n.Add(1))
					start := time.Now()
					status, err := post(client, cl.lb.base()+"/api/register-agent", registerBody(id, secret))
					note(status, err, time.Since(start), "register")
					if err == nil && status == 201 {
						mu.Lock()
						acked = append(acked, id)
						mu.Unlock()
					}
					start = time.Now()
					status, err = post(client, cl.lb.base()+"/api/agent-auth", fmt.Sprintf(`{"agent_id":"outage-agent","agent_secret":%q}`, secret))
					note(status, err, time.Since(start), "agent-auth")
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
		// The guard keeps verifying from its key set and caches.
		var guardRefusals atomic.Int64
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				req, _ := http.NewRequest("GET", cl.api+"/x", nil)
				req.Header.Set("Authorization", "Bearer "+guarded)
				start := time.Now()
				resp, err := client.Do(req)
				status := 0
				if err == nil {
					status = resp.StatusCode
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				note(status, err, time.Since(start), "guarded")
				if status != 200 {
					guardRefusals.Add(1)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		time.Sleep(2 * time.Second)
		cl.pg.Stop()
		time.Sleep(time.Second)
		down := do(t, "POST", cl.a.base()+"/api/register-agent", nil, registerBody("while-down", secret))
		wantError(t, down, 503, "temporarily_unavailable")
		if down.header.Get("Retry-After") == "" {
			t.Error("a 503 without Retry-After")
		}
		time.Sleep(9 * time.Second)
		if err := cl.pg.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		t.Logf("answers during the outage run: %v", statuses)
		for _, p := range problems {
			t.Error(p)
		}
		if statuses[503] == 0 {
			t.Error("no 503 while the database was down")
		}
		if g := guardRefusals.Load(); g != 0 {
			t.Errorf("the guard refused %d requests while the database was down", g)
		}
		eventually(t, 20*time.Second, "full service after the database is back", func() string {
			for i := range 2 { // both instances
				if r := cl.do(t, http.DefaultClient, "POST", "/api/register-agent", nil, registerBody(fmt.Sprintf("back-%d-%d", i, time.Now().UnixNano()%1e9), secret)); r.status != 201 {
					return fmt.Sprintf("register %d %s", r.status, r.body)
				}
			}
			return ""
		})
		for _, id := range acked {
			cl.a.token(t, id, secret)
		}
		t.Logf("%d registrations acknowledged during the run, all found", len(acked))
		for _, c := range []*caddy{cl.a, cl.b} {
			if strings.Contains(c.log.String(), dbPassword) {
				t.Error("an instance logged the database password")
			}
		}
	})
}

// TestPostgresDownAtStart: Caddy refuses to start, naming the server but
// not the password.
func TestPostgresDownAtStart(t *testing.T) {
	c := newCaddy(t, "")
	closed := freePort(t)
	c.storage = fmt.Sprintf("postgres postgres://aa:%s@127.0.0.1:%d/auth?sslmode=disable&connect_timeout=3", dbPassword, closed)
	if err := c.tryStart(""); err == nil {
		c.stop()
		t.Fatal("Caddy started without its database")
	}
	c.stop()
	log := c.log.String()
	if !strings.Contains(log, fmt.Sprintf("127.0.0.1:%d/auth", closed)) {
		t.Errorf("the error does not name the server:\n%s", log)
	}
	if strings.Contains(log, dbPassword) {
		t.Errorf("the log shows the password:\n%s", log)
	}
}

func post(client *http.Client, u, body string) (int, error) {
	resp, err := client.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
