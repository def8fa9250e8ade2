package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/internal/redistest"
)

// proxySite is a second entry point whose server trusts 127.0.0.1 as a
// proxy, so X-Forwarded-For names the client there (and only there).
func (c *caddy) withTrustedProxySite(t *testing.T) string {
	port := freePort(t)
	c.globals += fmt.Sprintf("\tservers :%d {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t\tclient_ip_headers X-Forwarded-For\n\t}\n", port)
	c.sites += fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\tauth_agent\n}\n", port)
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

func wantRateHeaders(t *testing.T, r response, limit, remaining int) {
	t.Helper()
	if r.header.Get("X-RateLimit-Limit") != strconv.Itoa(limit) || r.header.Get("X-RateLimit-Remaining") != strconv.Itoa(remaining) {
		t.Fatalf("X-RateLimit-Limit %q Remaining %q, want %d %d", r.header.Get("X-RateLimit-Limit"), r.header.Get("X-RateLimit-Remaining"), limit, remaining)
	}
	reset, err := strconv.ParseInt(r.header.Get("X-RateLimit-Reset"), 10, 64)
	if err != nil || reset < time.Now().Unix() || reset > time.Now().Add(2*time.Hour).Unix() {
		t.Fatalf("X-RateLimit-Reset %q", r.header.Get("X-RateLimit-Reset"))
	}
}

func TestRegistrationLimit(t *testing.T) {
	c := newCaddy(t, "")
	proxied := c.withTrustedProxySite(t)
	c.start("\t\trate_limit {\n\t\t\tregistration 5/h\n\t\t}")
	for i := range 5 {
		r := c.register(t, fmt.Sprintf("limited-%d", i), secret)
		if r.status != 201 {
			t.Fatalf("registration %d: %d %s", i, r.status, r.body)
		}
		wantRateHeaders(t, r, 5, 4-i)
	}
	r := c.register(t, "limited-6", secret)
	wantError(t, r, 429, "rate_limit_exceeded")
	wantRateHeaders(t, r, 5, 0)
	if ra, _ := strconv.Atoi(r.header.Get("Retry-After")); ra < 1 || ra > 3600 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	if a := c.admin(t, "GET", "/auth_agent/agents/limited-6", ""); a.status != 404 {
		t.Fatal("a refused registration was stored")
	}
	// A forged X-Forwarded-For from an untrusted peer changes nothing.
	spoofed := do(t, "POST", c.base()+"/api/register-agent", map[string]string{"X-Forwarded-For": "203.0.113.9"}, registerBody("spoofed", secret))
	wantError(t, spoofed, 429, "rate_limit_exceeded")
	// Through a trusted proxy, the forwarded client is another IP with its
	// own budget.
	viaProxy := do(t, "POST", proxied+"/api/register-agent", map[string]string{"X-Forwarded-For": "203.0.113.9"}, registerBody("proxied", secret))
	if viaProxy.status != 201 {
		t.Fatalf("another IP: %d %s", viaProxy.status, viaProxy.body)
	}
	wantRateHeaders(t, viaProxy, 5, 4)
	// The trusted proxy's own address is still limited.
	wantError(t, do(t, "POST", proxied+"/api/register-agent", nil, registerBody("proxy-self", secret)), 429, "rate_limit_exceeded")

	// A reload keeps everyone's budget.
	c.reload("\t\trate_limit {\n\t\t\tregistration 5/h\n\t\t}\n\t\tdefault_permissions data:read")
	wantError(t, c.register(t, "after-reload", secret), 429, "rate_limit_exceeded")
}

func TestFailedAuthenticationLimit(t *testing.T) {
	c := newCaddy(t, "")
	proxied := c.withTrustedProxySite(t)
	c.start("\t\trate_limit {\n\t\t\tauthentication 10/m\n\t\t}")
	// Registered first: an IP whose failures spent the budget may not
	// register either (failed registrations count there too).
	for _, id := range []string{"victim", "bystander", "busy-agent", "burst-target"} {
		c.registerOK(t, id)
	}
	// Successes never count.
	for range 15 {
		c.token(t, "busy-agent", secret)
	}
	for i := range 10 {
		r := do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"victim","agent_secret":"Wrong123456!"}`)
		wantError(t, r, 401, "invalid_client")
		wantRateHeaders(t, r, 10, 9-i)
	}
	wantError(t, c.register(t, "late-comer", secret), 429, "rate_limit_exceeded")
	// A burst of parallel guesses cannot slip in under the limit either.
	var wg sync.WaitGroup
	var checked, refused atomic.Int64
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := map[string]string{"X-Forwarded-For": "198.51.100.77", "Content-Type": "application/json"}
			req, _ := http.NewRequest("POST", proxied+"/api/agent-auth", strings.NewReader(`{"agent_id":"burst-target","agent_secret":"Wrong123456!"}`))
			for k, v := range h {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			resp.Body.Close()
			switch resp.StatusCode {
			case 401:
				checked.Add(1)
			case 429:
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	if checked.Load() > 10 || checked.Load()+refused.Load() != 30 {
		t.Fatalf("30 parallel guesses: %d checked, %d refused (at most 10 may be checked)", checked.Load(), refused.Load())
	}
	// The eleventh attempt is refused before the secret is even checked,
	// right or wrong, for that agent ...
	r := do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"victim","agent_secret":"Test123456!"}`)
	wantError(t, r, 429, "rate_limit_exceeded")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	// ... and for that IP, whatever agent it tries.
	wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"bystander","agent_secret":"Test123456!"}`), 429, "rate_limit_exceeded")
	wantError(t, do(t, "POST", c.base()+"/oauth2/token", nil, `{"grant_type":"client_credentials","client_id":"bystander","client_secret":"Test123456!"}`), 429, "rate_limit_exceeded")
	// From another IP the agent gets in: one address's failures never lock
	// it out of another (TestNoTargetedLockout has the agent's ceilings).
	other := map[string]string{"X-Forwarded-For": "198.51.100.20"}
	if r := do(t, "POST", proxied+"/api/agent-auth", other, `{"agent_id":"victim","agent_secret":"Test123456!"}`); r.status != 200 {
		t.Fatalf("the agent from another IP: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", proxied+"/api/agent-auth", other, `{"agent_id":"bystander","agent_secret":"Test123456!"}`); r.status != 200 {
		t.Fatalf("another agent from another IP: %d %s", r.status, r.body)
	}
}

func TestRefreshAndAPILimits(t *testing.T) {
	site := newWebsite(t)
	up := newUpstream(t)
	c := newCaddy(t, "")
	apiPort := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	c.sites = guardedSite(apiPort, "\tagent_guard {\n\t\tscopes data:read\n\t}", up.URL)
	c.start(oauthOpts(site.callback, "\t\trate_limit {\n\t\t\trefresh 3/h\n\t\t\tapi 4/m\n\t\t}"))
	c.registerOK(t, "busy")

	rt := c.redeem(t, c.codeFor(t, map[string]string{"redirect_uri": site.callback}, "busy"), site.callback).str("refresh_token")
	// Junk refresh tokens do not spend the client's budget.
	for range 5 {
		wantError(t, c.tokenCall(t, "demo-site", clientSecret, map[string][]string{"grant_type": {"refresh_token"}, "refresh_token": {"junk"}}), 400, "invalid_grant")
	}
	for i := range 3 {
		r := c.tokenCall(t, "demo-site", clientSecret, map[string][]string{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
		if r.status != 200 {
			t.Fatalf("refresh %d: %d %s", i, r.status, r.body)
		}
		wantRateHeaders(t, r, 3, 2-i)
		rt = r.str("refresh_token")
	}
	r := c.tokenCall(t, "demo-site", clientSecret, map[string][]string{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
	wantError(t, r, 429, "rate_limit_exceeded")
	// The refused refresh did not use the token up.
	c.reload(oauthOpts(site.callback, "\t\trate_limit {\n\t\t\trefresh off\n\t\t\tapi 4/m\n\t\t}"))
	if r := c.tokenCall(t, "demo-site", clientSecret, map[string][]string{"grant_type": {"refresh_token"}, "refresh_token": {rt}}); r.status != 200 {
		t.Fatalf("the refresh token after a 429: %d %s", r.status, r.body)
	}

	tok := c.token(t, "busy", secret)
	for i := range 2 {
		r := do(t, "GET", api+"/x", bearer(tok), "")
		if r.status != 200 {
			t.Fatalf("guarded call %d: %d", i, r.status)
		}
		wantRateHeaders(t, r, 4, 3-i)
	}
	for i := range 2 {
		r := do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), "")
		if r.status != 200 {
			t.Fatalf("profile %d: %d", i, r.status)
		}
		wantRateHeaders(t, r, 4, 1-i)
	}
	hits := up.hits.Load()
	wantError(t, do(t, "GET", api+"/x", bearer(tok), ""), 429, "rate_limit_exceeded")
	wantError(t, do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), ""), 429, "rate_limit_exceeded")
	if up.hits.Load() != hits {
		t.Fatal("a rate-limited call reached the upstream")
	}
}

func TestRedisSharedBudget(t *testing.T) {
	redisURL, stopRedis := redistest.Start(t)
	opts := fmt.Sprintf("\t\trate_limit {\n\t\t\tregistration 5/h\n\t\t\tapi 1000/h\n\t\t\tstore redis %s\n\t\t}", redisURL)
	up := newUpstream(t)
	a, b := newCaddy(t, ""), newCaddy(t, "")
	apiPort := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	b.sites = guardedSite(apiPort, "\tagent_guard\n", up.URL)
	a.start(opts)
	b.start(opts)

	for i := range 3 {
		a.registerOK(t, fmt.Sprintf("on-a-%d", i))
	}
	r := b.register(t, "on-b-0", secret)
	if r.status != 201 {
		t.Fatalf("b: %d %s", r.status, r.body)
	}
	wantRateHeaders(t, r, 5, 1) // b sees a's three registrations
	b.registerOK(t, "on-b-1")
	wantError(t, a.register(t, "on-a-3", secret), 429, "rate_limit_exceeded")
	wantError(t, b.register(t, "on-b-2", secret), 429, "rate_limit_exceeded")

	tok := b.token(t, "on-b-0", secret)
	if r := do(t, "GET", api+"/x", bearer(tok), ""); r.status != 200 {
		t.Fatalf("guarded call: %d", r.status)
	}

	// Redis goes away: authentication-side limits fail closed (503), API
	// calls fail open, and nothing hangs.
	stopRedis()
	start := time.Now()
	reg := b.register(t, "while-down", secret)
	wantError(t, reg, 503, "temporarily_unavailable")
	if r := do(t, "GET", api+"/x", bearer(tok), ""); r.status != 200 {
		t.Fatalf("API call with Redis down (fails open): %d %s", r.status, r.body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("requests with Redis down took %s", d)
	}
	if !strings.Contains(b.log.String(), "rate limiter store failed") {
		t.Fatal("no log line about the failing store")
	}
}

func TestCORS(t *testing.T) {
	t.Run("configured origins", func(t *testing.T) {
		c := newCaddy(t, "")
		c.start("\t\tcors {\n\t\t\torigins https://app.example.com\n\t\t}")
		r := do(t, "GET", c.base()+"/.well-known/jwks.json", map[string]string{"Origin": "https://app.example.com"}, "")
		if r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Origin") {
			t.Fatalf("allowed origin: %v", r.header)
		}
		r = do(t, "GET", c.base()+"/.well-known/jwks.json", map[string]string{"Origin": "https://evil.example.com"}, "")
		if r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("disallowed origin got %q", r.header.Get("Access-Control-Allow-Origin"))
		}
		before := len(c.admin(t, "GET", "/auth_agent/agents", "").json["agents"].([]any))
		pre := do(t, "OPTIONS", c.base()+"/api/register-agent", map[string]string{
			"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type", // as browsers send it
		}, "")
		if pre.status/100 != 2 || pre.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || pre.header.Get("Access-Control-Max-Age") != "600" ||
			!strings.Contains(pre.header.Get("Access-Control-Allow-Methods"), "POST") || !strings.Contains(strings.ToLower(pre.header.Get("Access-Control-Allow-Headers")), "authorization") {
			t.Fatalf("preflight: %d %v", pre.status, pre.header)
		}
		if pre.header.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatal("credentials allowed without being configured")
		}
		if after := len(c.admin(t, "GET", "/auth_agent/agents", "").json["agents"].([]any)); after != before {
			t.Fatal("a preflight reached the handler")
		}
	})
	t.Run("wildcard", func(t *testing.T) {
		c := newCaddy(t, "")
		c.start("")
		r := do(t, "POST", c.base()+"/api/agent-auth", map[string]string{"Origin": "https://anywhere.example"}, `{"agent_id":"x","agent_secret":"y"}`)
		if r.header.Get("Access-Control-Allow-Origin") != "*" || r.header.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatalf("wildcard: %v", r.header)
		}
	})
}
