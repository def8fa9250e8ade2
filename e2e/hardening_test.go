package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/client"
)

// TestRequestIDPhishing: someone starts a sign-in to a real site in their
// own browser and hands the agent the request id (RFC 8628 §5.4's
// device-code phishing, applied to agents). The agent reads who a request
// is for before approving, can insist on the client and redirect host it
// means, and an approval that does not match approves nothing.
func TestRequestIDPhishing(t *testing.T) {
	site := newWebsite(t)
	c := newCaddy(t, "")
	c.start(oauthOpts(site.callback, "\t\tdynamic_client_registration open"))
	c.register(t, "phished", secret)
	host := strings.TrimPrefix(site.URL, "http://")

	// What the agent reads before approving names the client and host.
	q := pkceQuery("demo-site", site.callback, "openid profile", nil)
	started := do(t, "GET", c.base()+"/oauth2/authorize?"+q.Encode(), map[string]string{"Accept": "application/json"}, "")
	if started.status != 200 || started.json["client_id"] != "demo-site" || started.json["client_name"] != "Demo Site" ||
		started.json["redirect_host"] != host || started.json["verified"] != true {
		t.Fatalf("authorize answer: %d %s", started.status, started.body)
	}
	id := started.str("request_id")
	// So does check-status, for an agent that was handed only the id.
	if st := do(t, "GET", c.base()+"/api/check-status?request_id="+id, nil, ""); st.str("status") != "pending" ||
		st.str("client_id") != "demo-site" || st.str("client_name") != "Demo Site" || st.str("redirect_host") != host || st.data()["verified"] != true {
		t.Fatalf("check-status: %d %s", st.status, st.body)
	}

	// The agent was told it signs in to other-site, or that the browser
	// returns to another host: refused, and the request stays pending.
	approve := func(extra string) response {
		return do(t, "POST", c.base()+"/api/agent-auth", nil,
			fmt.Sprintf(`{"agent_id":"phished","agent_secret":%q,"request_id":%q%s}`, secret, id, extra))
	}
	for _, extra := range []string{
		`,"client_id":"other-site"`,
		`,"redirect_uri":"https://evil.example/callback"`,
		`,"client_id":"demo-site","redirect_uri":"evil.example"`,
	} {
		r := approve(extra)
		wantError(t, r, 400, "invalid_request")
		if !strings.Contains(r.str("error_description"), "not approved") {
			t.Fatalf("%s: %s", extra, r.body)
		}
		if st := do(t, "GET", c.base()+"/api/check-status?request_id="+id, nil, ""); st.str("status") != "pending" {
			t.Fatalf("after a refused approval (%s) the request is %s", extra, st.body)
		}
	}
	wantError(t, approve(`,"redirect_uri":"not a host/path"`), 400, "invalid_request")
	// Without request_id the fields mean nothing: refused, not ignored.
	wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil,
		fmt.Sprintf(`{"agent_id":"phished","agent_secret":%q,"client_id":"demo-site"}`, secret)), 400, "invalid_request")

	// The matching approval goes through and says what was approved.
	ok := approve(fmt.Sprintf(`,"client_id":"demo-site","redirect_uri":%q`, site.callback))
	if ok.status != 200 || ok.str("client_id") != "demo-site" || ok.str("client_name") != "Demo Site" ||
		ok.str("redirect_host") != host || ok.data()["verified"] != true || !strings.HasPrefix(ok.str("redirect_to"), site.callback+"?") {
		t.Fatalf("approval: %d %s", ok.status, ok.body)
	}

	// The Go client insists the same way.
	ac := client.New(c.base())
	creds := client.Credentials{AgentID: "phished", AgentSecret: secret}
	other := c.authorizeJSON(t, pkceQuery("demo-site", site.callback, "openid", nil))
	if _, err := ac.ApproveFor(context.Background(), other, creds, client.Expect{ClientID: "other-site"}); !client.IsCode(err, "invalid_request") {
		t.Fatalf("ApproveFor another client: %v", err)
	}
	if to, err := ac.ApproveFor(context.Background(), other, creds, client.Expect{ClientID: "demo-site", RedirectURI: site.callback}); err != nil || !strings.HasPrefix(to, site.callback) {
		t.Fatalf("ApproveFor: %q %v", to, err)
	}

	// A dynamically registered client that calls itself "Demo Site" is
	// marked unverified, and its real redirect host shows.
	reg := do(t, "POST", c.base()+"/oauth2/register", nil,
		`{"client_name":"Demo Site","redirect_uris":["https://evil.example/callback"],"token_endpoint_auth_method":"none"}`)
	if reg.status != 201 {
		t.Fatalf("register: %d %s", reg.status, reg.body)
	}
	q = pkceQuery(reg.str("client_id"), "https://evil.example/callback", "openid", nil)
	fake := do(t, "GET", c.base()+"/oauth2/authorize?"+q.Encode(), map[string]string{"Accept": "application/json"}, "")
	if fake.status != 200 || fake.json["client_name"] != "Demo Site" || fake.json["verified"] != false || fake.json["redirect_host"] != "evil.example" {
		t.Fatalf("a look-alike client: %d %s", fake.status, fake.body)
	}
	// Its sign-in page is no longer the real one's twin: it says where the
	// browser returns and that the site named itself.
	fakePage := do(t, "GET", c.base()+"/oauth2/authorize?"+q.Encode(), nil, "")
	realPage := do(t, "GET", c.base()+"/oauth2/authorize?"+pkceQuery("demo-site", site.callback, "openid", nil).Encode(), nil, "")
	if !strings.Contains(string(fakePage.body), `id="unverified"`) || !strings.Contains(string(fakePage.body), `<span id="redirect-host">evil.example</span>`) {
		t.Fatalf("the look-alike's page:\n%s", fakePage.body)
	}
	if strings.Contains(string(realPage.body), `id="unverified"`) || !strings.Contains(string(realPage.body), `<span id="redirect-host">`+host+`</span>`) {
		t.Fatalf("the real page:\n%s", realPage.body)
	}
	// Names that disguise themselves are refused at registration.
	for _, name := range []string{"Demo\u0007Site", "Demo\nSite", "Demo \u202eetiS"} {
		quoted, _ := json.Marshal(name)
		r := do(t, "POST", c.base()+"/oauth2/register", nil,
			fmt.Sprintf(`{"client_name":%s,"redirect_uris":["https://evil.example/callback"],"token_endpoint_auth_method":"none"}`, quoted))
		wantError(t, r, 400, "invalid_client_metadata")
	}
}

// TestSecretPolicy: secrets that passed the old rule and were then
// accepted for authentication are refused with a 400 naming the rule, and
// nothing is stored; a secret is compared in its NFKC form.
func TestSecretPolicy(t *testing.T) {
	c := newCaddy(t, "")
	c.start("")
	n := 0
	for i, weak := range map[string]string{
		"Aa1!      ":                               "visible",
		"Aa1" + strings.Repeat("\u200b", 8):        "format",
		"Aa1!" + strings.Repeat("\u0301", 8):       "visible",
		"\u00a0\u00a0Aa1!\u00a0\u00a0\u00a0\u00a0": "visible",
		"Password1!":                               "guess",
		"Qwerty123!":                               "guess",
		"Aa1!aa1!\u202eAA":                         "format",
	} {
		n++
		id := fmt.Sprintf("weak-%d", n)
		r := c.register(t, id, i)
		wantError(t, r, 400, "invalid_request")
		if !strings.Contains(r.str("error_description"), "agent_secret") || !strings.Contains(r.str("error_description"), weak) {
			t.Errorf("%q: %s", i, r.body)
		}
		if a := c.admin(t, "GET", "/auth_agent/agents/"+id, ""); a.status != 404 {
			t.Errorf("%q was stored: %d %s", i, a.status, a.body)
		}
	}
	// The seed's secret keeps working; typed full-width, it is the same secret.
	if r := c.register(t, "wide", "Ｔｅｓｔ１２３４５６！"); r.status != 201 {
		t.Fatalf("full-width secret: %d %s", r.status, r.body)
	}
	if tok := c.token(t, "wide", secret); tok == "" {
		t.Fatal("the normalised secret does not authenticate")
	}
	// A new secret through the profile meets the same rule.
	tok := c.token(t, "wide", secret)
	r := do(t, "PUT", c.base()+"/api/agents/profile", bearer(tok), fmt.Sprintf(`{"agent_secret":"Password1!","current_agent_secret":%q}`, secret))
	wantError(t, r, 400, "invalid_request")
	if c.token(t, "wide", secret) == "" {
		t.Fatal("the refused change changed the secret")
	}
}

// TestAmbiguousRequestsRefused: what the server does not support is
// refused rather than ignored, and a JSON body that a proxy could read
// differently (a key twice, a key in another case) is invalid_request.
func TestAmbiguousRequestsRefused(t *testing.T) {
	site := newWebsite(t)
	c := newCaddy(t, "")
	c.start(oauthOpts(site.callback, ""))
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for extra, code := range map[string]string{
		"response_mode=fragment":                       "invalid_request",
		"response_mode=form_post":                      "invalid_request",
		"request=eyJhbGciOiJub25lIn0.e30.":             "request_not_supported",
		"request_uri=https%3A%2F%2Fevil.example%2Freq": "request_uri_not_supported",
		"state=" + strings.Repeat("s", 513):            "invalid_request",
		"nonce=" + strings.Repeat("n", 513):            "invalid_request",
		"response_mode=query&response_mode=fragment":   "invalid_request",
	} {
		q := pkceQuery("demo-site", site.callback, "openid", nil).Encode()
		if strings.HasPrefix(extra, "state=") {
			q = strings.Replace(q, "state=st-1", extra, 1)
		} else {
			q += "&" + extra
		}
		resp, err := noRedirects.Get(c.base() + "/oauth2/authorize?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := resp.Location()
		if resp.StatusCode != http.StatusFound || loc == nil || loc.Query().Get("error") != code || !strings.HasPrefix(loc.String(), site.callback) {
			t.Errorf("%.40s: %d %v, want a redirect with error=%s", extra, resp.StatusCode, loc, code)
		}
	}
	// 512 bytes of state are fine.
	q := strings.Replace(pkceQuery("demo-site", site.callback, "openid", nil).Encode(), "state=st-1", "state="+strings.Repeat("s", 512), 1)
	if r := do(t, "GET", c.base()+"/oauth2/authorize?"+q, map[string]string{"Accept": "application/json"}, ""); r.status != 200 {
		t.Fatalf("512 bytes of state: %d %s", r.status, r.body)
	}

	for _, body := range []string{
		`{"agent_id":"dup-1","agent_id":"dup-2","agent_secret":"Test123456!","model_name":"m","owner_email":"o@example.com"}`,
		`{"Agent_ID":"case-1","agent_secret":"Test123456!","model_name":"m","owner_email":"o@example.com"}`,
		`{"agent_id":"case-2","agent_secret":"Test123456!","AGENT_SECRET":"Other123456!","model_name":"m","owner_email":"o@example.com"}`,
	} {
		wantError(t, do(t, "POST", c.base()+"/api/register-agent", nil, body), 400, "invalid_request")
	}
	for _, id := range []string{"dup-1", "dup-2", "case-1", "case-2"} {
		if r := c.admin(t, "GET", "/auth_agent/agents/"+id, ""); r.status != 404 {
			t.Errorf("%s was stored: %d", id, r.status)
		}
	}
	c.register(t, "strict", secret)
	wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil,
		fmt.Sprintf(`{"agent_id":"strict","agent_secret":"wrong","agent_secret":%q}`, secret)), 400, "invalid_request")
	wantError(t, do(t, "POST", c.base()+"/oauth2/token", nil,
		fmt.Sprintf(`{"grant_type":"client_credentials","client_id":"strict","Client_Secret":%q}`, secret)), 400, "invalid_request")
	if r := do(t, "POST", c.base()+"/oauth2/token", nil,
		fmt.Sprintf(`{"grant_type":"client_credentials","client_id":"strict","client_secret":%q}`, secret)); r.status != 200 {
		t.Fatalf("the strict body itself: %d %s", r.status, r.body)
	}
	// Discovery says what is not supported.
	d := do(t, "GET", c.base()+"/.well-known/openid-configuration", nil, "")
	if d.json["request_parameter_supported"] != false || d.json["request_uri_parameter_supported"] != false {
		t.Fatalf("discovery: %s", d.body)
	}
}

// TestAudienceAtUserinfoAndIntrospection: userinfo takes only tokens meant
// for the issuer, and introspection tells a caller about a token only when
// it was issued to the caller or names it in aud (RFC 7662 §4).
func TestAudienceAtUserinfoAndIntrospection(t *testing.T) {
	site := newWebsite(t)
	c := newCaddy(t, "")
	c.start(oauthOpts(site.callback, "\t\tclient api-gateway {\n\t\t\tsecret "+clientSecret+"\n\t\t\tgrant_types client_credentials\n\t\t\tresource_server\n\t\t}"))
	c.registerOK(t, "aud-agent")
	const api = "https://api.example"
	other := strings.Repeat("z", 32)
	userinfo := func(tok string) response { return do(t, "GET", c.base()+"/oauth2/userinfo", bearer(tok), "") }
	active := func(user, pass, tok string) any {
		return c.formCall(t, "/oauth2/introspect", user, pass, url.Values{"token": {tok}}).json["active"]
	}

	// A code-flow token for an API, granted openid, names the issuer too.
	code := c.codeFor(t, map[string]string{"redirect_uri": site.callback, "scope": "openid profile data:read", "resource": api}, "aud-agent")
	grant := c.redeem(t, code, site.callback)
	at := grant.str("access_token")
	if aud := audOf(t, at); !slices.Equal(aud, []string{api, c.base()}) {
		t.Fatalf("aud %v", aud)
	}
	if r := userinfo(at); r.status != 200 || r.json["sub"] != "aud-agent" {
		t.Fatalf("userinfo with a code-flow token: %d %s", r.status, r.body)
	}
	// The same token exchanged for the API alone reads no userinfo.
	ex := c.tokenCall(t, "demo-site", clientSecret, url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {at},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "scope": {"openid data:read"}, "resource": {api},
	})
	if ex.status != 200 || !slices.Equal(audOf(t, ex.str("access_token")), []string{api}) {
		t.Fatalf("exchange: %d %s", ex.status, ex.body)
	}
	wantError(t, userinfo(ex.str("access_token")), 401, "invalid_token")

	// Introspection: demo-site learns about its tokens; other-site does not,
	// nor about the agent's own; a token whose aud names other-site, it does.
	if active("demo-site", clientSecret, at) != true || active("demo-site", clientSecret, grant.str("refresh_token")) != true {
		t.Fatal("the client's own tokens are not active to it")
	}
	self := c.token(t, "aud-agent", secret)
	for name, tok := range map[string]string{"access": at, "refresh": grant.str("refresh_token"), "agent's": self} {
		r := c.formCall(t, "/oauth2/introspect", "other-site", other, url.Values{"token": {tok}})
		if r.status != 200 || r.json["active"] != false || len(r.json) != 1 {
			t.Errorf("other-site introspected demo-site's %s token: %s", name, r.body)
		}
	}
	// A resource server of the configuration checks whatever is presented
	// to it.
	for _, tok := range []string{at, self} {
		if active("api-gateway", clientSecret, tok) != true {
			t.Error("the resource server does not learn about a token presented to it")
		}
	}
	if active("api-gateway", clientSecret, grant.str("refresh_token")) != false {
		t.Error("the resource server learns about another client's refresh token")
	}
	named := c.tokenCall(t, "demo-site", clientSecret, url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {at},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "audience": {"other-site"},
	})
	if named.status != 200 || active("other-site", other, named.str("access_token")) != true {
		t.Fatalf("a token naming other-site in aud: %d %s", named.status, named.body)
	}
}

// fromAddress is an HTTP client whose connections come from the loopback
// address ip (127.0.0.50, …): a distinct client as the server sees it.
func fromAddress(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout:       10 * time.Second,
		Transport:     contract.wrap(&http.Transport{DialContext: d.DialContext}),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// TestAuthorizeFlood: new authorization requests are a budget per address
// (each is a stored record and needs no credentials); other addresses and
// existing requests are unaffected.
func TestAuthorizeFlood(t *testing.T) {
	site := newWebsite(t)
	c := newCaddy(t, "")
	c.start(oauthOpts(site.callback, "\t\trate_limit {\n\t\t\tauthorization 5/m\n\t\t}"))
	c.registerOK(t, "flooded")
	url := c.base() + "/oauth2/authorize?" + pkceQuery("demo-site", site.callback, "openid", nil).Encode()
	get := func(hc *http.Client, accept string) *http.Response {
		req, _ := http.NewRequest("GET", url, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	attacker, other := fromAddress("127.0.0.50"), fromAddress("127.0.0.51")
	for i := range 5 {
		resp := get(attacker, "")
		if resp.StatusCode != 200 || resp.Header.Get("X-RateLimit-Limit") != "5" || resp.Header.Get("X-RateLimit-Remaining") != fmt.Sprint(4-i) {
			t.Fatalf("request %d: %d %v", i, resp.StatusCode, resp.Header)
		}
	}
	for _, accept := range []string{"", "application/json"} {
		resp := get(attacker, accept)
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Set-Cookie") != "" {
			t.Fatalf("past the budget (Accept %q): %d %v", accept, resp.StatusCode, resp.Header)
		}
	}
	r := do(t, "GET", url, map[string]string{"Accept": "application/json"}, "") // 127.0.0.1
	if r.status != 200 {
		t.Fatalf("another address: %d %s", r.status, r.body)
	}
	if resp := get(other, "application/json"); resp.StatusCode != 200 {
		t.Fatalf("a third address: %d", resp.StatusCode)
	}
	// The other address's request goes on as usual.
	c.approve(t, r.str("request_id"), "flooded")
}

// TestSlowBodiesTimeOut: connections that send their body a byte at a time
// are answered 408 and closed once body_timeout passes, instead of being
// held open for as long as the client likes; others are served meanwhile.
func TestSlowBodiesTimeOut(t *testing.T) {
	c := newCaddy(t, "")
	c.start("\t\tbody_timeout 2s")
	const conns = 20
	type result struct {
		status string
		after  time.Duration
		err    error
	}
	results := make(chan result, conns)
	for i := range conns {
		// Half to an endpoint that reads the body (408 once the deadline
		// passes), half to one that answers without reading it (405 at
		// once; the unread body must not hold the connection either).
		path := "/api/register-agent"
		if i%2 == 1 {
			path = "/.well-known/jwks.json"
		}
		go func() {
			start := time.Now()
			conn, err := net.Dial("tcp", strings.TrimPrefix(c.base(), "http://"))
			if err != nil {
				results <- result{err: err}
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{", path, strings.TrimPrefix(c.base(), "http://"))
			// A byte every 500 ms until the server answers (bounded: 20 bytes).
			go func() {
				for range 20 {
					time.Sleep(500 * time.Millisecond)
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
			conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			br := bufio.NewReader(conn)
			line, err := br.ReadString('\n')
			if err == nil {
				// …and the connection is closed once the deadline passed,
				// not left to trickle on (EOF, or a reset: the client was
				// still sending).
				conn.SetReadDeadline(start.Add(5 * time.Second))
				var netErr net.Error
				if _, rerr := io.Copy(io.Discard, br); errors.As(rerr, &netErr) && netErr.Timeout() {
					err = fmt.Errorf("the connection stayed open after the answer: %v", rerr)
				}
			}
			results <- result{status: path + " " + strings.TrimSpace(line), after: time.Since(start), err: err}
		}()
	}
	// Meanwhile the server answers others at once.
	if r := c.register(t, "patient", secret); r.status != 201 {
		t.Fatalf("a normal registration during the slow ones: %d %s", r.status, r.body)
	}
	for range conns {
		r := <-results
		ok := r.status == "/api/register-agent HTTP/1.1 408 Request Timeout" || r.status == "/.well-known/jwks.json HTTP/1.1 405 Method Not Allowed"
		if r.err != nil || !ok || r.after > 6*time.Second {
			t.Fatalf("a slow body: %q, closed after %s (%v)", r.status, r.after, r.err)
		}
	}
}

// TestReloadKeepsVerifiedSecrets: the memo of verified agent secrets
// outlives a reload, so agents authenticating in a loop do not all pay
// argon2id again after one (measured as argon2id verifications, not time).
func TestReloadKeepsVerifiedSecrets(t *testing.T) {
	c := newCaddy(t, "")
	c.start("")
	c.registerOK(t, "looping")
	verifications := func() float64 {
		return metric(c.scrape(t), "auth_agent_secret_hash_verifications_total", nil)
	}
	c.token(t, "looping", secret)
	first := verifications()
	if first < 1 {
		t.Fatalf("no verification counted: %v", first)
	}
	c.token(t, "looping", secret)
	if v := verifications(); v != first {
		t.Fatalf("a repeated authentication ran argon2id: %v → %v", first, v)
	}
	for i := range 2 {
		c.reload(fmt.Sprintf("\t\tcode_lifetime %ds", 50+i)) // a changed config: Caddy skips an identical one
		c.token(t, "looping", secret)
		if v := verifications(); v != first {
			t.Fatalf("after a reload the memo was empty: %v → %v", first, v)
		}
	}
	// A wrong secret is still verified, memo or not.
	r := do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"looping","agent_secret":"Wrong-Secret-1!"}`)
	wantError(t, r, 401, "invalid_client")
	if v := verifications(); v != first+1 {
		t.Fatalf("a wrong secret: %v → %v", first, v)
	}
}

// TestRefreshBudgetPerSignIn: the refresh budget is one sign-in's (its
// refresh family), so one agent refreshing through a public client — any
// MCP client — does not lock every other agent of that client out.
func TestRefreshBudgetPerSignIn(t *testing.T) {
	site := newWebsite(t)
	c := newCaddy(t, "")
	c.start(oauthOpts(site.callback, "\t\trate_limit {\n\t\t\trefresh 3/h\n\t\t}"))
	signIn := func(agent string) string {
		c.registerOK(t, agent)
		q := pkceQuery("spa", site.callback, "openid profile", nil)
		code := c.approve(t, c.authorizeJSON(t, q), agent)
		r := c.formCall(t, "/oauth2/token", "", "", url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"redirect_uri": {site.callback}, "code_verifier": {verifier}, "client_id": {"spa"}})
		if r.status != 200 {
			t.Fatalf("sign-in of %s: %d %s", agent, r.status, r.body)
		}
		return r.str("refresh_token")
	}
	refresh := func(rt string) response {
		return c.formCall(t, "/oauth2/token", "", "", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"spa"}})
	}
	busy, quiet := signIn("busy-agent"), signIn("quiet-agent")
	for i := range 3 {
		r := refresh(busy)
		if r.status != 200 || r.header.Get("X-RateLimit-Limit") != "3" || r.header.Get("X-RateLimit-Remaining") != fmt.Sprint(2-i) {
			t.Fatalf("refresh %d: %d %v %s", i, r.status, r.header, r.body)
		}
		busy = r.str("refresh_token")
	}
	r := refresh(busy)
	wantError(t, r, 429, "rate_limit_exceeded")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// The other agent of the same public client refreshes as usual.
	if r := refresh(quiet); r.status != 200 || r.header.Get("X-RateLimit-Remaining") != "2" {
		t.Fatalf("another agent of the client: %d %v %s", r.status, r.header, r.body)
	}
}

// TestNoTargetedLockout: failures from one address lock that address out,
// never the agent from its own; guessing from many addresses meets the
// agent's ceiling (audited, counted), which still spares the addresses the
// agent signed in from.
func TestNoTargetedLockout(t *testing.T) {
	c := newCaddy(t, "")
	c.start("\t\trate_limit {\n\t\t\tauthentication 3/m\n\t\t}") // agent ceiling: 30/m
	c.registerOK(t, "target")
	auth := func(from, secret string) *http.Response {
		body := fmt.Sprintf(`{"agent_id":"target","agent_secret":%q}`, secret)
		resp, err := fromAddress(from).Post(c.base()+"/api/agent-auth", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if r := auth("127.0.0.60", secret); r.StatusCode != 200 {
		t.Fatalf("the agent from its own address: %d", r.StatusCode)
	}
	// One attacker address: locked out after 3 failures…
	for i := range 3 {
		if r := auth("127.0.0.50", "Wrong-Secret-1!"); r.StatusCode != 401 {
			t.Fatalf("guess %d: %d", i, r.StatusCode)
		}
	}
	if r := auth("127.0.0.50", "Wrong-Secret-1!"); r.StatusCode != 429 {
		t.Fatalf("the attacker past its budget: %d", r.StatusCode)
	}
	// …while the agent signs in from any other address.
	if r := auth("127.0.0.61", secret); r.StatusCode != 200 {
		t.Fatalf("the agent from another address after the attacker's guesses: %d", r.StatusCode)
	}
	// Eleven addresses, three guesses each: the agent's ceiling (30) holds.
	refused := 0
	for a := 70; a <= 80; a++ {
		for range 3 {
			switch r := auth(fmt.Sprintf("127.0.0.%d", a), "Wrong-Secret-1!"); r.StatusCode {
			case 401:
			case 429:
				refused++
				if r.Header.Get("Retry-After") == "" {
					t.Fatal("429 without Retry-After")
				}
			default:
				t.Fatalf("distributed guess: %d", r.StatusCode)
			}
		}
	}
	// 30 failures fit in the ceiling: the first attacker's 3 and 27 of
	// these (successes are refunded, refused attempts not counted); past
	// it, each of the last two addresses has one try, and its other two
	// wait.
	if refused != 4 {
		t.Fatalf("the agent's ceiling refused only %d of 33 distributed guesses", refused)
	}
	// Addresses the agent signed in from still work; a new one waits.
	for _, known := range []string{"127.0.0.60", "127.0.0.61"} {
		if r := auth(known, secret); r.StatusCode != 200 {
			t.Fatalf("the agent from its known address %s: %d", known, r.StatusCode)
		}
	}
	// A new address has one try while the agent is under attack: right,
	// it gets in (and is known from then on); wrong, it gets no second.
	if r := auth("127.0.0.90", secret); r.StatusCode != 200 {
		t.Fatalf("the agent from a new address while under attack: %d", r.StatusCode)
	}
	if r := auth("127.0.0.90", secret); r.StatusCode != 200 {
		t.Fatalf("the agent's new address, known now: %d", r.StatusCode)
	}
	if r := auth("127.0.0.91", "Wrong-Secret-1!"); r.StatusCode != 401 {
		t.Fatalf("a new guesser's one try: %d", r.StatusCode)
	}
	if r := auth("127.0.0.91", secret); r.StatusCode != 429 {
		t.Fatalf("a new guesser's second try: %d", r.StatusCode)
	}
	if v := metric(c.scrape(t), "auth_agent_ratelimit_rejections_total", map[string]string{"budget": "authentication_agent"}); v < 3 {
		t.Fatalf("rejections by the agent's ceiling: %v", v)
	}
	if !strings.Contains(c.log.String(), `"agent.authentication_throttled"`) {
		t.Fatal("no agent.authentication_throttled audit event")
	}
}

// TestPermissionRemovalIsImmediate: once an operator takes a permission
// away, the agent's tokens carrying it stop working at once (TestCluster
// checks another instance within 2 s); tokens without it, and new ones,
// work.
func TestPermissionRemovalIsImmediate(t *testing.T) {
	site := newWebsite(t)
	c := newCaddy(t, "")
	api := c.guardAPI(t, "\tagent_guard {\n\t\tscopes data:write\n\t}\n")
	c.start(oauthOpts(site.callback, ""))
	c.registerOK(t, "narrowed")
	if r := c.admin(t, "PATCH", "/auth_agent/agents/narrowed", `{"permissions":["data:read","data:write"]}`); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	// A code approved before the change and redeemed after it.
	code := c.codeFor(t, map[string]string{"redirect_uri": site.callback, "scope": "openid data:read data:write"}, "narrowed")
	both := c.token(t, "narrowed", secret) // profile data:read data:write
	writeOnly := do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":"narrowed","agent_secret":%q,"scope":"data:write"}`, secret)).str("access_token")
	for _, tok := range []string{both, writeOnly} {
		if r := do(t, "GET", api+"/x", bearer(tok), ""); r.status != 200 {
			t.Fatalf("before: %d %s", r.status, r.body)
		}
	}
	if r := c.admin(t, "PATCH", "/auth_agent/agents/narrowed", `{"permissions":["data:write"]}`); r.status != 200 {
		t.Fatalf("narrow: %d %s", r.status, r.body)
	}
	wantError(t, do(t, "GET", api+"/x", bearer(both), ""), 401, "invalid_token")
	if r := c.redeem(t, code, site.callback); r.status != 200 || r.str("scope") != "openid data:write" {
		t.Fatalf("a code approved before the change grants %q (%d %s)", r.str("scope"), r.status, r.body)
	}
	self := url.Values{"token": {both}}
	if r := c.formCall(t, "/oauth2/introspect", "narrowed", secret, self); r.json["active"] != false {
		t.Fatalf("introspection of a token with a removed permission: %s", r.body)
	}
	if r := do(t, "GET", api+"/x", bearer(writeOnly), ""); r.status != 200 {
		t.Fatalf("a token within the remaining permissions: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", api+"/x", bearer(c.token(t, "narrowed", secret)), ""); r.status != 200 {
		t.Fatalf("a new token: %d %s", r.status, r.body)
	}
	// Given back, the permission makes new tokens work; the old token
	// stays void. (Tokens say when they were issued to the second, so a
	// token issued in the second of a change counts as issued before it.)
	if r := c.admin(t, "PATCH", "/auth_agent/agents/narrowed", `{"permissions":["data:read","data:write"]}`); r.status != 200 {
		t.Fatalf("grant again: %d %s", r.status, r.body)
	}
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1100 * time.Millisecond)))
	if r := do(t, "GET", api+"/x", bearer(c.token(t, "narrowed", secret)), ""); r.status != 200 {
		t.Fatalf("a new token after the grant: %d %s", r.status, r.body)
	}
	wantError(t, do(t, "GET", api+"/x", bearer(both), ""), 401, "invalid_token")
}
