package oauth

import (
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

const pageIssuer = "https://idp.example.com"

func newPageAuthorizer(issuer string) *authorizer {
	return &authorizer{&provider{cfg: Config{
		Issuer:            issuer,
		RequestLifetime:   5 * time.Minute,
		ScopeDescriptions: map[string]string{"data:read": "Read your project's data"},
	}}}
}

// renderSignIn serves the sign-in page for c and returns the response.
func renderSignIn(t *testing.T, a *authorizer, c *Client, p *authorizeParams) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	a.signInPage(rec, c, p, "req-0123456789abcdefghij")
	res := rec.Result()
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("sign-in page: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	return res, rec.Body.String()
}

// elementText is the text of the element with the given id, tags removed
// and entities decoded.
func elementText(t *testing.T, page, id string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)<(\w+)[^>]* id="` + regexp.QuoteMeta(id) + `"[^>]*>(.*?)</(\w+)>`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no element #%s in the page:\n%s", id, page)
	}
	return html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(m[2], ""))
}

var (
	scopeItem  = regexp.MustCompile(`<li data-scope="([^"]*)">.*?<span class="words">([^<]*)</span><code>([^<]*)</code>`)
	cancelHref = regexp.MustCompile(`<a id="cancel" href="([^"]*)">([^<]*)</a>`)
	nonceAttr  = regexp.MustCompile(`<(script|style) nonce="([^"]+)">`)
)

func TestSignInPageConfiguredClient(t *testing.T) {
	a := newPageAuthorizer(pageIssuer)
	c := &Client{ID: "demo-site", Name: "Demo Site", Source: ClientFromConfig}
	p := &authorizeParams{
		redirectURI: "https://demo.example.com/callback?tenant=7",
		state:       "st&te=1",
		scopes:      []string{"openid", "profile", "email", "permissions", "data:read", "data:write"},
	}
	res, page := renderSignIn(t, a, c, p)

	if got := elementText(t, page, "client-name"); got != "Demo Site" {
		t.Errorf("client name %q", got)
	}
	if strings.Contains(page, `id="client-host"`) {
		t.Error("a configured client shows a host it has none of")
	}

	want := [][2]string{
		{"openid", "Confirm the agent's identity"},
		{"profile", "See the agent's name, model and owner's name"},
		{"email", "See the owner's email address"},
		{"permissions", "See which API permissions the agent holds"},
		{"data:read", "Read your project's data"},      // the operator's words
		{"data:write", "Use the API scope data:write"}, // no words configured
	}
	items := scopeItem.FindAllStringSubmatch(page, -1)
	if len(items) != len(want) {
		t.Fatalf("%d scope items, want %d:\n%s", len(items), len(want), page)
	}
	for i, it := range items {
		code, words, shown := html.UnescapeString(it[1]), html.UnescapeString(it[2]), html.UnescapeString(it[3])
		if code != want[i][0] || shown != want[i][0] || words != want[i][1] {
			t.Errorf("scope %d: data-scope %q, words %q, code %q; want %q %q", i, code, words, shown, want[i][0], want[i][1])
		}
	}

	// Cancel goes back to the registered redirect URI, keeping its query,
	// with access_denied, the state and the issuer (RFC 9207).
	m := cancelHref.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no cancel link:\n%s", page)
	}
	if html.UnescapeString(m[2]) != "Cancel and return to Demo Site" {
		t.Errorf("cancel link text %q", m[2])
	}
	u, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Scheme != "https" || u.Host != "demo.example.com" || u.Path != "/callback" || q.Get("tenant") != "7" {
		t.Errorf("cancel link %s is not the redirect URI", u)
	}
	if q.Get("error") != "access_denied" || q.Get("state") != "st&te=1" || q.Get("iss") != pageIssuer || q.Get("error_description") == "" || q.Has("code") {
		t.Errorf("cancel link query %v", q)
	}

	// The request id where SDKs read it, and the polling path.
	if !regexp.MustCompile(`<meta name="auth-agent-request-id" content="req-0123456789abcdefghij">`).MatchString(page) ||
		!regexp.MustCompile(`window\.authRequest = \{request_id: "req-0123456789abcdefghij"\}`).MatchString(page) {
		t.Errorf("the request id is not where agent SDKs look for it:\n%s", page)
	}
	if got := elementText(t, page, "request-id"); got != "req-0123456789abcdefghij" {
		t.Errorf("#request-id %q", got)
	}
	if !strings.Contains(page, `var url = "/api/check-status" + "?request_id="`) {
		t.Errorf("the page does not poll /api/check-status:\n%s", page)
	}
	// The expired and failed states link back with their own descriptions.
	for _, d := range []string{"The sign-in request expired", "lost contact"} {
		if !strings.Contains(page, url.QueryEscape(d)) {
			t.Errorf("no link back saying %q", d)
		}
	}
	if !strings.Contains(page, `Date.now() +  300  * 1000`) {
		t.Error("the countdown does not start from the request lifetime")
	}

	// A strict CSP whose nonce is the one on the page's script and style.
	csp := res.Header.Get("Content-Security-Policy")
	nonces := nonceAttr.FindAllStringSubmatch(page, -1)
	if len(nonces) != 2 {
		t.Fatalf("want one nonce'd style and one nonce'd script, got %v", nonces)
	}
	for _, n := range nonces {
		if !strings.Contains(csp, "'nonce-"+n[2]+"'") {
			t.Errorf("%s nonce %q is not in the CSP %q", n[1], n[2], csp)
		}
	}
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-") {
		t.Errorf("weak CSP %q", csp)
	}
	if res.Header.Get("Cache-Control") != "no-store" || res.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("headers %v", res.Header)
	}
	if regexp.MustCompile(`(?i)<(link|img)\b|src="http|url\(http`).MatchString(page) {
		t.Error("the page loads an external asset")
	}
	if strings.Contains(page, "ZgotmplZ") {
		t.Error("html/template defused a value the page needs")
	}
}

func TestSignInPageMetadataDocumentClient(t *testing.T) {
	a := newPageAuthorizer("https://login.example.net/idp/")
	c := &Client{ID: "https://app.example.com/oauth/client.json", Name: "Example App", Source: ClientFromDocument, Public: true}
	p := &authorizeParams{redirectURI: "https://app.example.com/cb", state: "xyz", scopes: []string{"openid", "data:read"}}
	_, page := renderSignIn(t, a, c, p)

	if got := elementText(t, page, "client-name"); got != "Example App" {
		t.Errorf("client name %q", got)
	}
	if got := elementText(t, page, "client-host"); got != "app.example.com" {
		t.Errorf("client host %q, want app.example.com", got)
	}
	if !strings.Contains(page, `var url = "/idp/api/check-status"`) {
		t.Error("an issuer under a path polls outside it")
	}
	if !strings.Contains(page, "Identity provider · login.example.net") {
		t.Error("the foot does not name the identity provider's host")
	}

	// Without a name the host stands in for it.
	c.Name = ""
	_, page = renderSignIn(t, a, c, p)
	if got := elementText(t, page, "client-name"); got != "app.example.com" {
		t.Errorf("nameless metadata client shown as %q", got)
	}
}

func TestSignInPageNativeRedirect(t *testing.T) {
	a := newPageAuthorizer(pageIssuer)
	c := &Client{ID: "cli", Name: "CLI", Public: true, Source: ClientFromConfig}
	p := &authorizeParams{redirectURI: "com.example.cli:/callback", state: "s1", scopes: []string{"openid"}}
	_, page := renderSignIn(t, a, c, p)
	m := cancelHref.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no cancel link for a private-use scheme:\n%s", page)
	}
	u, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil || u.Scheme != "com.example.cli" || u.Path != "/callback" || u.Query().Get("error") != "access_denied" || u.Query().Get("state") != "s1" {
		t.Errorf("cancel link %q (%v)", m[1], err)
	}

	// A scheme no registration allows gives no link at all.
	p.redirectURI = "javascript:alert(1)"
	_, page = renderSignIn(t, a, c, p)
	if strings.Contains(page, `id="cancel"`) || strings.Contains(page, "javascript:") {
		t.Errorf("a javascript: redirect became a link:\n%s", page)
	}
}

func TestSignInPageEscapesClientName(t *testing.T) {
	a := newPageAuthorizer(pageIssuer)
	hostile := `</script><script>alert(1)</script><img src=x onerror=alert(2)>"'&`
	c := &Client{ID: "https://evil.example/c", Name: hostile, Source: ClientFromDocument}
	p := &authorizeParams{redirectURI: "https://evil.example/cb", state: `"><b>`, scopes: []string{"openid", `x<y`}}
	_, page := renderSignIn(t, a, c, p)

	if n := strings.Count(page, "<script"); n != 1 {
		t.Errorf("%d <script> tags, want the page's own one", n)
	}
	for _, bad := range []string{"<img", "<b>", "x<y"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q unescaped", bad)
		}
	}
	if got := elementText(t, page, "client-name"); got != hostile {
		t.Errorf("client name shown as %q, want it verbatim as text", got)
	}
	if !strings.Contains(page, `var site = "\u003c/script\u003e\u003cscript\u003ealert(1)`) {
		t.Errorf("the name is not escaped for the script:\n%s", page)
	}
	if got := elementText(t, page, "client-host"); got != "evil.example" {
		t.Errorf("client host %q", got)
	}
	if strings.HasPrefix(initial(hostile), "<") || initial(hostile) != "S" {
		t.Errorf("initial %q", initial(hostile))
	}
}

func TestErrorPage(t *testing.T) {
	a := newPageAuthorizer(pageIssuer)
	rec := httptest.NewRecorder()
	a.errorPage(rec, http.StatusBadRequest, `Unknown client "<x>".`)
	page := rec.Body.String()
	if rec.Code != http.StatusBadRequest || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("error page: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if got := elementText(t, page, "message"); got != `Unknown client "<x>".` || strings.Contains(page, "<x>") {
		t.Errorf("message %q", got)
	}
	m := nonceAttr.FindStringSubmatch(page)
	if m == nil || !strings.Contains(rec.Header().Get("Content-Security-Policy"), "'nonce-"+m[2]+"'") {
		t.Errorf("the error page's style nonce is not in its CSP")
	}
	if strings.Contains(page, "<script") {
		t.Error("the error page needs no script")
	}
}

func TestSignInPageMarksSelfRegisteredClients(t *testing.T) {
	a := newPageAuthorizer(pageIssuer)
	p := &authorizeParams{redirectURI: "https://App.example:8443/cb", state: "s", scopes: []string{"openid"}}
	for source, unverified := range map[string]bool{
		ClientFromConfig: false, ClientFromAdmin: false, ClientFromDynamic: true, ClientFromDocument: true,
	} {
		c := &Client{ID: "c1", Name: "Demo Site", Source: source}
		if source == ClientFromDocument {
			c.ID = "https://app.example/client.json"
		}
		_, page := renderSignIn(t, a, c, p)
		if got := strings.Contains(page, `id="unverified"`); got != unverified {
			t.Errorf("%s: unverified mark %v, want %v", source, got, unverified)
		}
		if !strings.Contains(page, `<span id="redirect-host">app.example:8443</span>`) {
			t.Errorf("%s: the redirect host is not shown", source)
		}
	}
}

func TestClientNamesCannotDisguise(t *testing.T) {
	for _, name := range []string{"Demo\aSite", "Demo\nSite", "Demo \u202eetiS", "Demo\u200bSite", "Demo\u2028Site", "Demo\ue000", "\xffDemo"} {
		_, _, err := NewClient(ClientSpec{ID: "c1", Name: name, Public: true, RedirectURIs: []string{"https://app.example/cb"}}, ClientFromDynamic, t0)
		if err == nil || AsError(err).Status != 400 {
			t.Errorf("client_name %q: %v", name, err)
		}
	}
	if _, _, err := NewClient(ClientSpec{ID: "c1", Name: "Démo Site — 2", Public: true, RedirectURIs: []string{"https://app.example/cb"}}, ClientFromDynamic, t0); err != nil {
		t.Errorf("an ordinary name: %v", err)
	}
}

func TestOnlyConfiguredClientsAreResourceServers(t *testing.T) {
	spec := ClientSpec{ID: "rs", Secret: strings.Repeat("s", 32), GrantTypes: []string{GrantClientCredentials}, ResourceServer: true}
	if c, _, err := NewClient(spec, ClientFromConfig, t0); err != nil || !c.ResourceServer {
		t.Fatalf("a configured resource server: %v", err)
	}
	for _, source := range []string{ClientFromAdmin, ClientFromDynamic} {
		if _, _, err := NewClient(spec, source, t0); err == nil {
			t.Errorf("%s client became a resource server", source)
		}
	}
	spec.Public, spec.Secret = true, ""
	if _, _, err := NewClient(spec, ClientFromConfig, t0); err == nil {
		t.Error("a public resource server")
	}
}

func TestSignInPageShowsLookAlikeHostsAsPunycode(t *testing.T) {
	a := newPageAuthorizer(pageIssuer)
	c := &Client{ID: "c1", Name: "Demo", Source: ClientFromDynamic}
	_, page := renderSignIn(t, a, c, &authorizeParams{redirectURI: "https://d\u0435mo.example/cb", state: "s", scopes: []string{"openid"}})
	if !strings.Contains(page, `<span id="redirect-host">xn--dmo-`) {
		t.Errorf("a look-alike host is not shown as punycode:\n%s", page)
	}
}
