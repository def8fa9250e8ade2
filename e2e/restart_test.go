package e2e

import (
	"fmt"
	"io/fs"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSignInSurvivesKill9: the agent approves a sign-in, Caddy is killed
// before the browser polls, and after the restart the browser holding the
// binding cookie gets its redirect and the code redeems: the pending
// request, its binding and the key codes derive from all live in the store.
func TestSignInSurvivesKill9(t *testing.T) {
	site := newWebsite(t)
	dir := t.TempDir()
	c := newCaddy(t, dir)
	c.start(oauthOpts(site.callback, ""))
	c.registerOK(t, "steady-agent")

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	page := httpGet(t, browser, c.authorizeURL(map[string]string{"redirect_uri": site.callback}), map[string]string{"Accept": "text/html"})
	m := requestIDMeta.FindSubmatch(page.body)
	if page.status != 200 || m == nil {
		t.Fatalf("sign-in page: %d %s", page.status, page.body)
	}
	id := string(m[1])
	approved := do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"steady-agent","agent_secret":%q,"request_id":%q}`, secret, id))
	if approved.status != 200 {
		t.Fatalf("approve: %d %s", approved.status, approved.body)
	}
	c.kill9()
	c.start(oauthOpts(site.callback, ""))

	status := httpGet(t, browser, c.base()+"/api/check-status?request_id="+id, nil)
	to := status.str("redirect_to")
	if status.str("status") != "authenticated" || to == "" {
		t.Fatalf("after kill -9 the bound browser got %d %s", status.status, status.body)
	}
	if to != approved.str("redirect_to") {
		t.Fatalf("the browser and the agent were told different codes:\n%s\n%s", to, approved.str("redirect_to"))
	}
	if other := do(t, "GET", c.base()+"/api/check-status?request_id="+id, nil, ""); other.str("redirect_to") != "" {
		t.Fatal("a client without the binding cookie saw the redirect")
	}
	u, err := url.Parse(to)
	if err != nil {
		t.Fatal(err)
	}
	tok := c.redeem(t, u.Query().Get("code"), site.callback)
	if tok.status != 200 || tok.str("access_token") == "" || tok.str("refresh_token") == "" {
		t.Fatalf("the code of a sign-in approved before the kill: %d %s", tok.status, tok.body)
	}
}

// TestValidateWhileRunning: `caddy validate` of Caddyfile.example succeeds
// while a Caddy runs it on the same storage, and creates no file.
func TestValidateWhileRunning(t *testing.T) {
	dir, env := runExample(t)
	if r := do(t, "POST", "http://localhost:8080/api/register-agent", nil, registerBody("example-agent", secret)); r.status != 201 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}

	before := snapshot(t, dir)
	validate := exec.Command(caddyBin, "validate", "--config", "Caddyfile.example")
	validate.Dir, validate.Env = dir, env
	out, err := validate.CombinedOutput()
	if err != nil {
		t.Fatalf("caddy validate of the running config failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Valid configuration") {
		t.Fatalf("validate said:\n%s", out)
	}
	if after := snapshot(t, dir); after != before {
		t.Fatalf("validate changed files:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The running Caddy kept its database.
	if r := do(t, "POST", "http://localhost:8080/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"example-agent","agent_secret":%q}`, secret)); r.status != 200 {
		t.Fatalf("after validate: %d %s", r.status, r.body)
	}
}

// snapshot lists every file and directory under dir. Only names count:
// the running Caddy's own database files may change size or time while it
// runs, and what validation must not do is create (or remove) any.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			rel += "/"
		}
		b.WriteString(rel + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestAdminRotateKeys: a rotation through the admin API publishes the new
// key, signs with it, and keeps the old one verifying.
func TestAdminRotateKeys(t *testing.T) {
	c := newCaddy(t, "")
	c.start("")
	old := c.token(t, c.registerOK(t, "rotating-agent"), secret)
	oldHdr, _ := decodeJWT(t, old)
	r := c.admin(t, "POST", "/auth_agent/keys/rotate", "")
	if r.status != 200 {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	wantError(t, c.admin(t, "GET", "/auth_agent/keys/rotate", ""), 405, "invalid_request")
	fresh := c.token(t, "rotating-agent", secret)
	freshHdr, _ := decodeJWT(t, fresh)
	if freshHdr["kid"] == oldHdr["kid"] {
		t.Fatal("tokens are still signed with the old key")
	}
	jwks := string(do(t, "GET", c.base()+"/.well-known/jwks.json", nil, "").body)
	if !strings.Contains(jwks, oldHdr["kid"].(string)) || !strings.Contains(jwks, freshHdr["kid"].(string)) {
		t.Fatalf("both keys must be published: %s", jwks)
	}
	for _, tok := range []string{old, fresh} {
		if p := do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), ""); p.status != 200 {
			t.Fatalf("token after rotation: %d %s", p.status, p.body)
		}
	}
}
