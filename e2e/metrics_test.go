package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads Caddy's admin /metrics: every family by name.
func (c *caddy) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	r := c.admin(t, "GET", "/metrics", "")
	if r.status != 200 {
		t.Fatalf("GET /metrics: %d %s", r.status, r.body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(r.body)))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// metric is the value of the series of name whose labels include want (a
// counter's or gauge's value, a histogram's count); -1 when there is none.
func metric(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && have[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// auditEvents are the audit log lines in log, in order.
func auditEvents(log string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["logger"] == "auth_agent.audit" {
			out = append(out, line)
		}
	}
	return out
}

// TestMetricsAndAudit runs a scripted flow through a real Caddy and reads
// each metric's count on the admin /metrics and each audit event in the
// audit log, routed to a file of its own as README shows; no audit line
// carries a secret, code or token.
func TestMetricsAndAudit(t *testing.T) {
	site := newWebsite(t)
	cb := site.callback
	up := newUpstream(t)
	c := newCaddy(t, "")
	auditFile := filepath.Join(c.dir, "audit.log")
	c.globals = fmt.Sprintf("\tlog audit {\n\t\toutput file %s\n\t\tformat json\n\t\tinclude auth_agent.audit\n\t}\n\tlog default {\n\t\texclude auth_agent.audit\n\t}\n", auditFile)
	apiPort := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	c.sites = guardedSite(apiPort, "\tagent_guard {\n\t\tscopes data:read\n\t\tsite orders\n\t}\n", up.URL)
	opts := oauthOpts(cb, "\t\trate_limit {\n\t\t\tapi 3/m\n\t\t}")
	c.start(opts)
	secrets := []string{secret, clientSecret} // nothing of these may reach the audit log

	// Registration, authentication (right and wrong), a token for the agent.
	c.registerOK(t, "metric-agent")
	tok := c.token(t, "metric-agent", secret)
	secrets = append(secrets, tok)
	wrong := do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"metric-agent","agent_secret":"Wrong-Secret-123!"}`)
	wantError(t, wrong, 401, "invalid_client")
	secrets = append(secrets, "Wrong-Secret-123!")

	// Client credentials, right and wrong.
	cc := c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"client_credentials"}, "scope": {"data:read"}})
	if cc.status != 200 {
		t.Fatalf("client_credentials: %d %s", cc.status, cc.body)
	}
	secrets = append(secrets, cc.str("access_token"))
	if r := c.tokenCall(t, "demo-site", "not-the-secret-of-demo-site-000000", url.Values{"grant_type": {"client_credentials"}}); r.status != 401 {
		t.Fatalf("wrong client secret: %d %s", r.status, r.body)
	}

	// A sign-in: requested, approved, redeemed; a refresh, its reuse, a
	// revocation.
	code := c.codeFor(t, map[string]string{"redirect_uri": cb, "scope": "openid profile data:read"}, "metric-agent")
	secrets = append(secrets, code)
	grant := c.redeem(t, code, cb)
	if grant.status != 200 {
		t.Fatalf("redeem: %d %s", grant.status, grant.body)
	}
	rt := grant.str("refresh_token")
	secrets = append(secrets, rt, grant.str("access_token"), grant.str("id_token"))
	refreshed := c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
	if refreshed.status != 200 {
		t.Fatalf("refresh: %d %s", refreshed.status, refreshed.body)
	}
	secrets = append(secrets, refreshed.str("refresh_token"), refreshed.str("access_token"))
	wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}), 400, "invalid_grant")
	if r := c.formCall(t, "/oauth2/revoke", "demo-site", clientSecret, url.Values{"token": {grant.str("access_token")}}); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	// An authorization request refused (unknown scope).
	if r := do(t, "GET", c.authorizeURL(map[string]string{"redirect_uri": cb, "scope": "openid nonsense:scope"}), nil, ""); r.status >= 500 {
		t.Fatalf("refused authorization: %d", r.status)
	}

	// The guard: allowed, no token, a revoked token, then the agent's API
	// budget (3/m, one spent on nothing yet by guard-agent) runs out.
	c.registerOK(t, "guard-agent")
	gtok := c.token(t, "guard-agent", secret)
	secrets = append(secrets, gtok)
	for range 3 {
		if r := do(t, "GET", api+"/x", bearer(gtok), ""); r.status != 200 {
			t.Fatalf("guarded call: %d %s", r.status, r.body)
		}
	}
	wantError(t, do(t, "GET", api+"/x", bearer(gtok), ""), 429, "rate_limit_exceeded")
	if r := do(t, "GET", api+"/x", nil, ""); r.status != 401 {
		t.Fatalf("no token: %d", r.status)
	}
	if r := do(t, "GET", api+"/x", bearer(grant.str("access_token")), ""); r.status != 401 {
		t.Fatalf("revoked token: %d", r.status)
	}

	// The operator: a client made and changed, an agent disabled and one
	// deleted, the keys rotated.
	if r := c.admin(t, "POST", "/auth_agent/clients", `{"client_id":"ops-client","client_name":"Ops","redirect_uris":["https://ops.example/cb"],"scopes":["openid"]}`); r.status != 201 {
		t.Fatalf("create client: %d %s", r.status, r.body)
	} else {
		secrets = append(secrets, r.str("client_secret"))
	}
	if r := c.admin(t, "PATCH", "/auth_agent/clients/ops-client", `{"client_name":"Ops 2"}`); r.status != 200 {
		t.Fatalf("patch client: %d %s", r.status, r.body)
	}
	if r := c.admin(t, "PATCH", "/auth_agent/agents/guard-agent", `{"disabled":true}`); r.status != 200 {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	if r := c.admin(t, "DELETE", "/auth_agent/agents/guard-agent", ""); r.status != 200 && r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := c.admin(t, "POST", "/auth_agent/keys/rotate", ""); r.status != 200 {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}

	fams := c.scrape(t)
	for _, w := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"auth_agent_tokens_issued_total", map[string]string{"grant": "agent_auth", "client": "agent"}, 2},
		{"auth_agent_tokens_issued_total", map[string]string{"grant": "client_credentials", "client": "demo-site"}, 1},
		{"auth_agent_tokens_issued_total", map[string]string{"grant": "authorization_code", "client": "demo-site"}, 1},
		{"auth_agent_tokens_issued_total", map[string]string{"grant": "refresh_token", "client": "demo-site"}, 1},
		{"auth_agent_authentications_total", map[string]string{"result": "success", "reason": "agent_secret"}, 3}, // two tokens and the sign-in
		{"auth_agent_authentications_total", map[string]string{"result": "failure", "reason": "invalid_credentials"}, 1},
		{"auth_agent_authentications_total", map[string]string{"result": "failure", "reason": "wrong_secret"}, 1},
		{"auth_agent_authentications_total", map[string]string{"result": "success", "reason": "client_secret_basic"}, 5},
		{"auth_agent_signins_total", map[string]string{"outcome": "requested"}, 1},
		{"auth_agent_signins_total", map[string]string{"outcome": "approved"}, 1},
		{"auth_agent_signins_total", map[string]string{"outcome": "redeemed"}, 1},
		{"auth_agent_signins_total", map[string]string{"outcome": "refused"}, 1},
		{"auth_agent_guard_decisions_total", map[string]string{"site": "orders", "result": "allowed"}, 3},
		{"auth_agent_guard_decisions_total", map[string]string{"site": "orders", "result": "rate_limited"}, 1},
		{"auth_agent_guard_decisions_total", map[string]string{"site": "orders", "result": "missing_token"}, 1},
		{"auth_agent_guard_decisions_total", map[string]string{"site": "orders", "result": "revoked"}, 1},
		{"auth_agent_ratelimit_rejections_total", map[string]string{"budget": "api"}, 1},
	} {
		if got := metric(fams, w.name, w.labels); got != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.want)
		}
	}
	for _, op := range []string{"CreateAgent", "GetAgent", "RedeemCode", "RotateRefresh", "AppendChange"} {
		if n := metric(fams, "auth_agent_storage_operation_seconds", map[string]string{"backend": "badger", "operation": op}); n < 1 {
			t.Errorf("storage latency of %s: %v observations", op, n)
		}
	}
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		if age := metric(fams, "auth_agent_signing_key_age_seconds", map[string]string{"alg": alg}); age < 0 || age > 600 {
			t.Errorf("key age of %s: %v", alg, age)
		}
	}
	if next := metric(fams, "auth_agent_signing_key_next_rotation_seconds", nil); next <= 0 {
		t.Errorf("next rotation in %v s", next)
	}
	// No label holds an agent id (only ids an operator wrote).
	for name, f := range fams {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if strings.Contains(l.GetValue(), "metric-agent") || strings.Contains(l.GetValue(), "guard-agent") {
					t.Errorf("%s has an agent id in label %s", name, l.GetName())
				}
			}
		}
	}

	raw, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	audit := string(raw)
	if n := len(auditEvents(c.log.String())); n != 0 {
		t.Errorf("%d audit lines in the default log, which excludes them", n)
	}
	var types []string
	for _, e := range auditEvents(audit) {
		if e["msg"] != e["event"] || e["event_id"] == nil {
			t.Errorf("audit line without event and event_id: %v", e)
		}
		types = append(types, fmt.Sprint(e["event"]))
	}
	for _, want := range []string{
		"agent.registered", "agent.authenticated", "agent.authentication_failed", "client.authentication_failed",
		"token.issued", "signin.completed", "token.refreshed", "refresh.reuse_detected", "token.revoked",
		"client.registered", "client.updated", "agent.disabled", "agent.deleted", "key.rotated",
	} {
		if !slices.Contains(types, want) {
			t.Errorf("no %s audit event; got %v", want, types)
		}
	}
	for _, line := range strings.Split(audit, "\n") {
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				t.Errorf("an audit line holds a secret, code or token: %s", line)
			}
		}
	}

	// A reload keeps the counts (a changed config: Caddy skips an
	// identical one).
	c.reload(opts + "\n\t\tcode_lifetime 59s")
	if got := metric(c.scrape(t), "auth_agent_tokens_issued_total", map[string]string{"grant": "client_credentials", "client": "demo-site"}); got != 1 {
		t.Errorf("after a reload, tokens issued by client_credentials = %v, want 1", got)
	}
}
