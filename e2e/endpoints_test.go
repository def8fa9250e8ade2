package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const secret = "Test123456!"

// The seed's curl example, byte for byte.
const seedRegistration = `{
    "agent_id": "test_agent",
    "agent_secret": "Test123456!",
    "model_name": "gpt-4",
    "owner_name": "Test User",
    "owner_email": "test@example.com"
  }`

func TestAgentEndpoints(t *testing.T) {
	c := newCaddy(t, "")
	c.start(`		default_permissions data:read
		agent ops-bot {
			permissions data:read data:write
		}`)

	t.Run("register the seed example", func(t *testing.T) {
		r := do(t, "POST", c.base()+"/api/register-agent", nil, seedRegistration)
		if r.status != 201 || r.json["success"] != true {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		d := r.data()
		for k, want := range map[string]string{"agent_id": "test_agent", "model_name": "gpt-4", "owner_name": "Test User", "owner_email": "test@example.com"} {
			if d[k] != want {
				t.Errorf("%s = %v, want %s", k, d[k], want)
			}
		}
		if _, ok := d["agent_secret"]; ok {
			t.Error("a chosen secret must not be echoed back")
		}
		if _, ok := d["secret_hash"]; ok {
			t.Error("the secret hash leaked")
		}
		if fmt.Sprint(d["permissions"]) != "[data:read]" {
			t.Errorf("permissions = %v, want the default [data:read]", d["permissions"])
		}
		if d["created_at"] == nil {
			t.Error("created_at missing")
		}
	})

	t.Run("duplicate is 409", func(t *testing.T) {
		r := do(t, "POST", c.base()+"/api/register-agent", nil, seedRegistration)
		wantError(t, r, 409, "invalid_request")
	})

	t.Run("generated secret", func(t *testing.T) {
		r := do(t, "POST", c.base()+"/api/register-agent", nil, `{"agent_id":"gen-agent","model_name":"claude","owner_email":"o@example.com"}`)
		if r.status != 201 {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		gen := r.str("agent_secret")
		if len(gen) < 40 {
			t.Fatalf("generated secret %q too short", gen)
		}
		c.token(t, "gen-agent", gen)
		got := do(t, "GET", c.base()+"/api/agents/profile", bearer(c.token(t, "gen-agent", gen)), "")
		if strings.Contains(string(got.body), gen) {
			t.Fatal("the generated secret is returned again")
		}
	})

	t.Run("invalid registrations", func(t *testing.T) {
		cases := map[string]string{
			"short id":         registerBody("ab", secret),
			"long id":          registerBody(strings.Repeat("a", 65), secret),
			"bad id chars":     registerBody("bad/agent", secret),
			"space in id":      registerBody("bad agent", secret),
			"weak secret":      registerBody("weak-1", "password"),
			"no symbol":        registerBody("weak-2", "Test1234567"),
			"no upper":         registerBody("weak-3", "test123456!"),
			"short secret":     registerBody("weak-4", "Te1!"),
			"long secret":      registerBody("weak-5", "Aa1!"+strings.Repeat("x", 125)),
			"no model":         `{"agent_id":"nomodel","agent_secret":"Test123456!","owner_email":"a@example.com"}`,
			"long model":       fmt.Sprintf(`{"agent_id":"longmodel","model_name":%q,"owner_email":"a@example.com"}`, strings.Repeat("m", 129)),
			"long owner":       fmt.Sprintf(`{"agent_id":"longowner","model_name":"m","owner_name":%q,"owner_email":"a@example.com"}`, strings.Repeat("o", 129)),
			"bad email":        `{"agent_id":"bademail","model_name":"m","owner_email":"not-an-email"}`,
			"named email":      `{"agent_id":"bademail2","model_name":"m","owner_email":"Bob <bob@example.com>"}`,
			"no email":         `{"agent_id":"noemail","model_name":"m"}`,
			"control in model": `{"agent_id":"ctrl","model_name":"a\u0000b","owner_email":"a@example.com"}`,
			"wrong type":       `{"agent_id":123,"model_name":"m","owner_email":"a@example.com"}`,
			"malformed json":   `{"agent_id":`,
			"array body":       `[]`,
			"two objects":      `{} {}`,
			"empty body":       ``,
		}
		for name, body := range cases {
			t.Run(name, func(t *testing.T) {
				h := map[string]string{"Content-Type": "application/json"}
				r := do(t, "POST", c.base()+"/api/register-agent", h, body)
				wantError(t, r, 400, "invalid_request")
			})
		}
		list := c.admin(t, "GET", "/auth_agent/agents", "")
		if n := len(list.json["agents"].([]any)); n != 2 {
			t.Fatalf("bad registrations changed the store: %d agents\n%s", n, list.body)
		}
	})

	t.Run("wrong content type and oversized body", func(t *testing.T) {
		r := do(t, "POST", c.base()+"/api/register-agent", map[string]string{"Content-Type": "text/plain"}, registerBody("ctype", secret))
		wantError(t, r, 400, "invalid_request")
		big := fmt.Sprintf(`{"agent_id":"big-agent","model_name":"m","owner_email":"a@example.com","pad":%q}`, strings.Repeat("x", 70<<10))
		r = do(t, "POST", c.base()+"/api/register-agent", nil, big)
		wantError(t, r, 413, "invalid_request")
		if r := c.admin(t, "GET", "/auth_agent/agents/big-agent", ""); r.status != 404 {
			t.Fatalf("oversized registration was stored: %d", r.status)
		}
	})

	t.Run("unknown fields are ignored, permissions cannot be self-assigned", func(t *testing.T) {
		r := do(t, "POST", c.base()+"/api/register-agent", nil,
			`{"agent_id":"sneaky","agent_secret":"Test123456!","model_name":"m","owner_email":"a@example.com","permissions":["admin"],"extra":1}`)
		if r.status != 201 || fmt.Sprint(r.data()["permissions"]) != "[data:read]" {
			t.Fatalf("got %d %s", r.status, r.body)
		}
	})

	t.Run("methods", func(t *testing.T) {
		for path, allow := range map[string]string{
			"/api/register-agent": "POST", "/api/agent-auth": "POST", "/api/agents/profile": "GET, PUT",
		} {
			r := do(t, "DELETE", c.base()+path, nil, "")
			wantError(t, r, 405, "invalid_request")
			if r.header.Get("Allow") != allow {
				t.Errorf("%s Allow = %q, want %q", path, r.header.Get("Allow"), allow)
			}
		}
		wantError(t, do(t, "GET", c.base()+"/api/nothing-here", nil, ""), 404, "invalid_request")
		if r := do(t, "GET", c.base()+"/other", nil, ""); r.status != 200 || string(r.body) != "upstream" {
			t.Fatalf("paths the IdP does not own must reach the next handler: %d %s", r.status, r.body)
		}
	})

	t.Run("agent-auth", func(t *testing.T) {
		r := do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"test_agent","agent_secret":"Test123456!"}`)
		if r.status != 200 || r.json["success"] != true {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		d := r.data()
		if d["token_type"] != "Bearer" || d["expires_in"].(float64) != 3600 || d["scope"] != "profile data:read" {
			t.Fatalf("token response %s", r.body)
		}
		hdr, claims := decodeJWT(t, r.str("access_token"))
		if hdr["typ"] != "at+jwt" || hdr["alg"] != "ES256" || hdr["kid"] == nil {
			t.Fatalf("header %v", hdr)
		}
		if claims["iss"] != c.base() || claims["sub"] != "test_agent" || claims["client_id"] != "test_agent" ||
			claims["model_name"] != "gpt-4" || claims["jti"] == nil || claims["exp"] == nil || claims["iat"] == nil {
			t.Fatalf("claims %v", claims)
		}
		if fmt.Sprint(claims["aud"]) != "["+c.base()+"]" {
			t.Fatalf("aud %v", claims["aud"])
		}

		narrowed := do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"test_agent","agent_secret":"Test123456!","scope":"data:read"}`)
		if narrowed.status != 200 || narrowed.str("scope") != "data:read" {
			t.Fatalf("narrowed: %d %s", narrowed.status, narrowed.body)
		}
		wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"test_agent","agent_secret":"Test123456!","scope":"data:write"}`), 400, "invalid_scope")
		wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"test_agent","agent_secret":"Test123456!","scope":"bad\"scope"}`), 400, "invalid_scope")

		res := do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"test_agent","agent_secret":"Test123456!","resource":"https://api.example.com"}`)
		if _, cl := decodeJWT(t, res.str("access_token")); fmt.Sprint(cl["aud"]) != "[https://api.example.com]" {
			t.Fatalf("resource aud %v", cl["aud"])
		}
		wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"test_agent","agent_secret":"Test123456!","resource":"not a uri"}`), 400, "invalid_target")
		wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"test_agent","agent_secret":"Test123456!","request_id":"nope"}`), 400, "invalid_request")
		wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"test_agent"}`), 400, "invalid_request")
		wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, `not json`), 400, "invalid_request")
	})

	t.Run("operator-fixed permissions", func(t *testing.T) {
		// Nobody may claim an id the operator configured with privileges.
		wantError(t, c.register(t, "ops-bot", secret), 403, "access_denied")
		r := c.admin(t, "POST", "/auth_agent/agents", `{"agent_id":"ops-bot","agent_secret":"Test123456!","model_name":"ops","owner_email":"ops@example.com"}`)
		if r.status != 201 || fmt.Sprint(r.json["permissions"]) != "[data:read data:write]" || r.json["agent_secret"] != nil {
			t.Fatalf("admin create: %d %s", r.status, r.body)
		}
		r = do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"ops-bot","agent_secret":"Test123456!"}`)
		if r.str("scope") != "profile data:read data:write" {
			t.Fatalf("scope %q", r.str("scope"))
		}
		wantError(t, c.admin(t, "PATCH", "/auth_agent/agents/ops-bot", `{"permissions":["x"]}`), 409, "invalid_request")
		wantError(t, c.admin(t, "POST", "/auth_agent/agents", `{"agent_id":"ops-bot","agent_secret":"Test123456!","model_name":"ops","owner_email":"ops@example.com"}`), 409, "invalid_request")
		wantError(t, c.admin(t, "POST", "/auth_agent/agents", `{"agent_id":"x","model_name":"ops","owner_email":"ops@example.com"}`), 400, "invalid_request")
	})

	t.Run("failed authentication is the same for every cause", func(t *testing.T) {
		c.register(t, "disabled-agent", secret)
		if r := c.admin(t, "PATCH", "/auth_agent/agents/disabled-agent", `{"disabled":true}`); r.status != 200 || r.json["disabled"] != true {
			t.Fatalf("disable: %d %s", r.status, r.body)
		}
		var bodies []string
		for _, body := range []string{
			`{"agent_id":"test_agent","agent_secret":"Wrong123456!"}`,
			`{"agent_id":"no-such-agent","agent_secret":"Test123456!"}`,
			`{"agent_id":"disabled-agent","agent_secret":"Test123456!"}`,
		} {
			r := do(t, "POST", c.base()+"/api/agent-auth", nil, body)
			wantError(t, r, 401, "invalid_client")
			bodies = append(bodies, string(r.body))
		}
		if bodies[0] != bodies[1] || bodies[1] != bodies[2] {
			t.Fatalf("bodies differ:\n%s", strings.Join(bodies, "\n"))
		}
	})

	t.Run("profile", func(t *testing.T) {
		tok := c.token(t, "test_agent", secret)
		r := do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), "")
		if r.status != 200 || r.str("agent_id") != "test_agent" || r.str("owner_email") != "test@example.com" {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		// No secret material: neither the secret, nor its hash, nor a field
		// holding either; only how the agent authenticates.
		if d := r.data(); strings.Contains(string(r.body), "argon2") || strings.Contains(string(r.body), secret) ||
			d["agent_secret"] != nil || d["secret_hash"] != nil || d["token_endpoint_auth_method"] != "client_secret_post" || len(d) != 8 {
			t.Fatalf("profile leaks secret material: %s", r.body)
		}

		r = do(t, "PUT", c.base()+"/api/agents/profile", bearer(tok), `{"model_name":"gpt-5","owner_name":"New Owner","permissions":["admin"],"agent_id":"renamed"}`)
		if r.status != 200 || r.str("model_name") != "gpt-5" || r.str("owner_name") != "New Owner" || r.str("agent_id") != "test_agent" ||
			fmt.Sprint(r.data()["permissions"]) != "[data:read]" {
			t.Fatalf("update: %d %s", r.status, r.body)
		}
		wantError(t, do(t, "PUT", c.base()+"/api/agents/profile", bearer(tok), `{"owner_email":"nope"}`), 400, "invalid_request")
		wantError(t, do(t, "PUT", c.base()+"/api/agents/profile", bearer(tok), `{"model_name":""}`), 400, "invalid_request")
		wantError(t, do(t, "PUT", c.base()+"/api/agents/profile", bearer(tok), `{"model_name":`), 400, "invalid_request")
		if got := do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), ""); got.str("owner_email") != "test@example.com" || got.str("model_name") != "gpt-5" {
			t.Fatalf("a rejected update changed the profile: %s", got.body)
		}

		// Secret change needs the current secret.
		wantError(t, do(t, "PUT", c.base()+"/api/agents/profile", bearer(tok), `{"agent_secret":"Newer123456!"}`), 400, "invalid_request")
		wantError(t, do(t, "PUT", c.base()+"/api/agents/profile", bearer(tok), `{"agent_secret":"Newer123456!","current_agent_secret":"Wrong123456!"}`), 403, "access_denied")
		wantError(t, do(t, "PUT", c.base()+"/api/agents/profile", bearer(tok), `{"agent_secret":"weak","current_agent_secret":"Test123456!"}`), 400, "invalid_request")
		c.token(t, "test_agent", secret) // unchanged so far
		r = do(t, "PUT", c.base()+"/api/agents/profile", bearer(tok), `{"agent_secret":"Newer123456!","current_agent_secret":"Test123456!"}`)
		if r.status != 200 {
			t.Fatalf("secret change: %d %s", r.status, r.body)
		}
		wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"test_agent","agent_secret":"Test123456!"}`), 401, "invalid_client")
		c.token(t, "test_agent", "Newer123456!")
	})

	t.Run("profile needs the agent's own token", func(t *testing.T) {
		tok := c.token(t, "ops-bot", secret)
		narrow := do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"ops-bot","agent_secret":"Test123456!","scope":"data:read"}`).str("access_token")
		wantError(t, do(t, "GET", c.base()+"/api/agents/profile", bearer(narrow), ""), 403, "insufficient_scope")
		forAPI := do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"ops-bot","agent_secret":"Test123456!","resource":"https://api.example.com"}`).str("access_token")
		wantError(t, do(t, "GET", c.base()+"/api/agents/profile", bearer(forAPI), ""), 401, "invalid_token")

		cases := map[string]string{
			"missing":        "",
			"basic scheme":   "Basic dXNlcjpwYXNz",
			"empty bearer":   "Bearer ",
			"garbage":        "Bearer not-a-jwt",
			"bad chars":      "Bearer abc$def",
			"tampered":       "Bearer " + tamper(tok),
			"alg none":       "Bearer " + algNone(tok),
			"other issuer's": "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJvcHMtYm90In0.c2ln",
		}
		for name, h := range cases {
			t.Run(name, func(t *testing.T) {
				r := do(t, "GET", c.base()+"/api/agents/profile", map[string]string{"Authorization": h}, "")
				wantError(t, r, 401, "invalid_token")
				if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer realm=") {
					t.Fatalf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
				}
				r = do(t, "PUT", c.base()+"/api/agents/profile", map[string]string{"Authorization": h}, `{"model_name":"pwned"}`)
				wantError(t, r, 401, "invalid_token")
			})
		}
		if r := do(t, "GET", c.base()+"/api/agents/profile?access_token="+tok, nil, ""); r.status != 401 {
			t.Fatalf("a token in the query string must not authenticate: %d", r.status)
		}
		if got := do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), ""); got.str("model_name") != "ops" {
			t.Fatalf("a refused update changed the profile: %s", got.body)
		}
	})

	t.Run("tokens of disabled or deleted agents stop working", func(t *testing.T) {
		c.register(t, "short-lived", secret)
		tok := c.token(t, "short-lived", secret)
		c.admin(t, "PATCH", "/auth_agent/agents/short-lived", `{"disabled":true}`)
		wantError(t, do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), ""), 401, "invalid_token")
		c.admin(t, "PATCH", "/auth_agent/agents/short-lived", `{"disabled":false}`)
		// Disabling voided the old token for good; a new one works.
		wantError(t, do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), ""), 401, "invalid_token")
		time.Sleep(1100 * time.Millisecond) // tokens carry whole seconds
		tok = c.token(t, "short-lived", secret)
		if r := do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), ""); r.status != 200 {
			t.Fatalf("re-enabled agent's new token: %d", r.status)
		}
		if r := c.admin(t, "DELETE", "/auth_agent/agents/short-lived", ""); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
		wantError(t, do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), ""), 401, "invalid_token")
	})

	t.Run("jwks", func(t *testing.T) {
		r := do(t, "GET", c.base()+"/.well-known/jwks.json", nil, "")
		keys, _ := r.json["keys"].([]any)
		if r.status != 200 || len(keys) == 0 {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		// One key per algorithm, rotating together: ES256 signs access
		// tokens by default, RS256 ID tokens, and clients may register
		// ES256 or EdDSA for theirs.
		kty := map[string]string{}
		for _, raw := range keys {
			k := raw.(map[string]any)
			if k["kid"] == nil || k["use"] != "sig" || k["d"] != nil {
				t.Fatalf("key %v", k)
			}
			kty[k["alg"].(string)] = k["kty"].(string)
		}
		if kty["RS256"] != "RSA" || kty["ES256"] != "EC" || kty["EdDSA"] != "OKP" || len(kty) != 3 {
			t.Fatalf("key algorithms %v", kty)
		}
	})

	t.Run("concurrent registrations of one id: exactly one wins", func(t *testing.T) {
		var wg sync.WaitGroup
		statuses := make([]int, 8)
		for i := range statuses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.Post(c.base()+"/api/register-agent", "application/json", strings.NewReader(registerBody("racer", secret)))
				if err == nil {
					statuses[i] = resp.StatusCode
					resp.Body.Close()
				}
			}()
		}
		wg.Wait()
		created := 0
		for _, s := range statuses {
			switch s {
			case 201:
				created++
			case 409:
			default:
				t.Fatalf("status %d", s)
			}
		}
		if created != 1 {
			t.Fatalf("%d registrations succeeded", created)
		}
	})

	t.Run("a token does not outlive its agent's id being reused", func(t *testing.T) {
		c.registerOK(t, "reused-id")
		old := c.token(t, "reused-id", secret)
		c.admin(t, "DELETE", "/auth_agent/agents/reused-id", "")
		time.Sleep(1100 * time.Millisecond) // tokens carry whole seconds
		c.registerOK(t, "reused-id")
		wantError(t, do(t, "GET", c.base()+"/api/agents/profile", bearer(old), ""), 401, "invalid_token")
		if r := do(t, "GET", c.base()+"/api/agents/profile", bearer(c.token(t, "reused-id", secret)), ""); r.status != 200 {
			t.Fatalf("new token: %d", r.status)
		}
	})
}

func TestAdminAPI(t *testing.T) {
	c := newCaddy(t, "")
	c.start("")
	for _, id := range []string{"agent-c", "agent-a", "agent-b"} {
		c.register(t, id, secret)
	}
	r := c.admin(t, "GET", "/auth_agent/agents?limit=2", "")
	list := r.json["agents"].([]any)
	if r.status != 200 || len(list) != 2 || list[0].(map[string]any)["agent_id"] != "agent-a" || r.json["next"] != "agent-b" {
		t.Fatalf("page 1: %d %s", r.status, r.body)
	}
	r = c.admin(t, "GET", "/auth_agent/agents?limit=2&after=agent-b", "")
	if list := r.json["agents"].([]any); len(list) != 1 || list[0].(map[string]any)["agent_id"] != "agent-c" {
		t.Fatalf("page 2: %s", r.body)
	}
	if strings.Contains(string(r.body), "argon2") {
		t.Fatal("admin API leaks secret hashes")
	}
	if r := c.admin(t, "GET", "/auth_agent/agents/agent-a", ""); r.status != 200 || r.json["agent_id"] != "agent-a" {
		t.Fatalf("get: %d %s", r.status, r.body)
	}
	r = c.admin(t, "PATCH", "/auth_agent/agents/agent-a", `{"permissions":["data:read","data:write"]}`)
	if r.status != 200 || fmt.Sprint(r.json["permissions"]) != "[data:read data:write]" {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	if s := do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"agent-a","agent_secret":"Test123456!"}`).str("scope"); s != "profile data:read data:write" {
		t.Fatalf("new permissions not in effect: %q", s)
	}
	wantError(t, c.admin(t, "PATCH", "/auth_agent/agents/agent-a", `{"permissions":["bad scope"]}`), 400, "invalid_request")
	wantError(t, c.admin(t, "PATCH", "/auth_agent/agents/agent-a", `{}`), 400, "invalid_request")
	wantError(t, c.admin(t, "PATCH", "/auth_agent/agents/agent-a", `{"disabled":"yes"}`), 400, "invalid_request")
	wantError(t, c.admin(t, "PATCH", "/auth_agent/agents/nobody", `{"disabled":true}`), 404, "invalid_request")
	wantError(t, c.admin(t, "GET", "/auth_agent/agents/nobody", ""), 404, "invalid_request")
	wantError(t, c.admin(t, "DELETE", "/auth_agent/agents/nobody", ""), 404, "invalid_request")
	wantError(t, c.admin(t, "GET", "/auth_agent/agents?limit=0", ""), 400, "invalid_request")
	wantError(t, c.admin(t, "PUT", "/auth_agent/agents", `{}`), 405, "invalid_request")
	wantError(t, c.admin(t, "GET", "/auth_agent/other", ""), 404, "invalid_request")
	if r := c.admin(t, "DELETE", "/auth_agent/agents/agent-b", ""); r.status != 200 {
		t.Fatalf("delete: %d", r.status)
	}
	wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"agent-b","agent_secret":"Test123456!"}`), 401, "invalid_client")
	if r := c.register(t, "agent-b", secret); r.status != 201 {
		t.Fatalf("a deleted id can be registered again: %d", r.status)
	}
}

func TestRegistrationPolicies(t *testing.T) {
	// The token comes through a placeholder, as operators keep it out of
	// the Caddyfile.
	t.Setenv("AA_TEST_REG_TOKEN", "reg-token-123")
	c := newCaddy(t, "")
	c.start("		registration token {env.AA_TEST_REG_TOKEN}")
	t.Run("token", func(t *testing.T) {
		wantError(t, c.register(t, "no-token", secret), 401, "invalid_token")
		r := do(t, "POST", c.base()+"/api/register-agent", bearer("wrong"), registerBody("wrong-token", secret))
		wantError(t, r, 401, "invalid_token")
		r = do(t, "POST", c.base()+"/api/register-agent", bearer("reg-token-123"), registerBody("with-token", secret))
		if r.status != 201 {
			t.Fatalf("got %d %s", r.status, r.body)
		}
	})
	t.Run("closed", func(t *testing.T) {
		c.reload("		registration closed")
		wantError(t, c.register(t, "closed-agent", secret), 403, "access_denied")
		c.token(t, "with-token", secret) // existing agents still authenticate
	})
}

func decodeJWT(t *testing.T, tok string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatal(err)
		}
	}
	return header, claims
}

// tamper changes the payload's subject and keeps the signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	raw = []byte(strings.Replace(string(raw), `"sub":"ops-bot"`, `"sub":"test_agent"`, 1))
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

// algNone re-signs nothing: header alg none, signature empty.
func algNone(tok string) string {
	parts := strings.Split(tok, ".")
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`))
	return h + "." + parts[1] + "."
}
