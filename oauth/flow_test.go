package oauth_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/authagent/caddy-authagent/oauth"
)

const testVerifier = "verifier-0123456789-0123456789-0123456789-0123456789"

func testChallenge() string {
	sum := sha256.Sum256([]byte(testVerifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// form posts an x-www-form-urlencoded body as the site client (Basic).
func (s testServer) form(path string, v url.Values) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("site", testClientSecret)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

// code runs authorize + agent-auth and returns an authorization code.
func (s testServer) code(tb testing.TB, agentID string) string {
	id, _ := s.startSignIn(tb)
	done := s.call("POST", "/api/agent-auth", "", fmt.Sprintf(`{"agent_id":%q,"agent_secret":"Test123456!","request_id":%q}`, agentID, id))
	var d struct {
		Data struct {
			RedirectTo string `json:"redirect_to"`
		} `json:"data"`
	}
	_ = json.Unmarshal(done.Body.Bytes(), &d)
	u, err := url.Parse(d.Data.RedirectTo)
	if err != nil || u.Query().Get("code") == "" {
		tb.Fatalf("agent-auth: %d %s", done.Code, done.Body)
	}
	return u.Query().Get("code")
}

func (s testServer) redeem(tb testing.TB, code string) map[string]any {
	rec := s.form("/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {testRedirect}, "code_verifier": {testVerifier}})
	var resp map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || rec.Code != 200 {
		tb.Fatalf("redeem: %d %s", rec.Code, rec.Body)
	}
	return resp
}

func (s testServer) seedAgent(tb testing.TB, id string) {
	if rec := s.call("POST", "/api/register-agent", "", fmt.Sprintf(`{"agent_id":%q,"agent_secret":"Test123456!","model_name":"m","owner_email":"a@example.com"}`, id)); rec.Code != 201 {
		tb.Fatalf("register: %d %s", rec.Code, rec.Body)
	}
}

func TestValidateRedirectURI(t *testing.T) {
	for uri, ok := range map[string]bool{
		"https://app.example.com/cb":         true,
		"https://app.example.com/cb?x=1":     true,
		"http://localhost:3000/cb":           true,
		"http://127.0.0.1/cb":                true,
		"http://[::1]:8080/cb":               true,
		"http://app.example.com/cb":          false,
		"https://app.example.com/cb#frag":    false,
		"https://app.example.com/cb#":        false,
		"https://user:pw@app.example.com/cb": false,
		"javascript:alert(1)":                false,
		"/relative":                          false,
		"":                                   false,
		"custom.scheme:/cb":                  false,
		"http://localhost.evil.com/cb":       false,
		"http://127.0.0.1.nip.io/cb":         false,
	} {
		if err := oauth.ValidateRedirectURI(uri); (err == nil) != ok {
			t.Errorf("ValidateRedirectURI(%q) = %v, want ok=%v", uri, err, ok)
		}
	}
}

// RFC 8252: loopback redirects match on any port, private-use schemes in
// reverse-domain form are for public clients, everything else is exact.
func TestNativeRedirects(t *testing.T) {
	spec := oauth.ClientSpec{ID: "app", Public: true, RedirectURIs: []string{
		"http://127.0.0.1/cb", "http://[::1]:9000/cb", "http://localhost/cb?x=1", "com.example.app:/cb", testRedirect,
	}}
	c, _, err := oauth.NewClient(spec, oauth.ClientFromConfig, testTime())
	if err != nil {
		t.Fatal(err)
	}
	for uri, ok := range map[string]bool{
		"http://127.0.0.1/cb":                    true,
		"http://127.0.0.1:54321/cb":              true,
		"http://[::1]/cb":                        true,
		"http://[::1]:1/cb":                      true,
		"http://localhost:3000/cb?x=1":           true,
		"com.example.app:/cb":                    true,
		testRedirect:                             true,
		"http://127.0.0.1:54321/cb2":             false,
		"http://127.0.0.1:54321/cb?":             false,
		"http://127.0.0.2:54321/cb":              false,
		"http://localhost:3000/cb":               false,
		"http://127.0.0.1:0x50/cb":               false,
		"http://127.0.0.1:99999/cb":              false,
		"https://127.0.0.1:54321/cb":             false,
		"com.example.app:/cb/":                   false,
		"com.example.App:/cb":                    false,
		"https://site.example.com:8443/callback": false,
	} {
		if got := c.MatchRedirectURI(uri); got != ok {
			t.Errorf("MatchRedirectURI(%q) = %v, want %v", uri, got, ok)
		}
	}
	confidential, _, err := oauth.NewClient(oauth.ClientSpec{ID: "site", Secret: strings.Repeat("s", 32), RedirectURIs: []string{"http://127.0.0.1/cb"}},
		oauth.ClientFromConfig, testTime())
	if err != nil || confidential.MatchRedirectURI("http://127.0.0.1:54321/cb") || !confidential.MatchRedirectURI("http://127.0.0.1/cb") {
		t.Fatalf("a confidential client's loopback redirect matches exactly: %v", err)
	}
	for name, spec := range map[string]oauth.ClientSpec{
		"private-use scheme, confidential": {ID: "a", Secret: strings.Repeat("s", 32), RedirectURIs: []string{"com.example.app:/cb"}},
		"one-label scheme":                 {ID: "a", Public: true, RedirectURIs: []string{"myapp:/cb"}},
		"opaque":                           {ID: "a", Public: true, RedirectURIs: []string{"com.example.app:cb"}},
		"empty label":                      {ID: "a", Public: true, RedirectURIs: []string{"com..app:/cb"}},
		"fragment":                         {ID: "a", Public: true, RedirectURIs: []string{"com.example.app:/cb#x"}},
	} {
		if _, _, err := oauth.NewClient(spec, oauth.ClientFromConfig, testTime()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNewClient(t *testing.T) {
	now := testTime()
	c, secret, err := oauth.NewClient(oauth.ClientSpec{ID: "gen", RedirectURIs: []string{"https://a.example.com/cb"}}, oauth.ClientFromAdmin, now)
	if err != nil || len(secret) != 43 || !c.VerifySecret(secret) || c.VerifySecret(secret+"x") || c.VerifySecret("") {
		t.Fatalf("generated secret: %v %q", err, secret)
	}
	if strings.Contains(c.SecretHash, secret) || len(c.SecretHash) != 64 {
		t.Fatal("secret stored in the clear")
	}
	if fmt.Sprint(c.GrantTypes) != "[authorization_code refresh_token client_credentials urn:ietf:params:oauth:grant-type:token-exchange]" || fmt.Sprint(c.Scopes) != "[openid profile email permissions]" {
		t.Fatalf("defaults %v %v", c.GrantTypes, c.Scopes)
	}
	bad := map[string]oauth.ClientSpec{
		"short secret":       {ID: "a", Secret: "short", RedirectURIs: []string{"https://a.example.com/cb"}},
		"public with secret": {ID: "a", Public: true, Secret: strings.Repeat("s", 32), RedirectURIs: []string{"https://a.example.com/cb"}},
		"public cc":          {ID: "a", Public: true, GrantTypes: []string{"client_credentials"}},
		"no redirect":        {ID: "a", Public: true},
		"bad redirect":       {ID: "a", Public: true, RedirectURIs: []string{"http://a.example.com/cb"}},
		"bad grant":          {ID: "a", Public: true, RedirectURIs: []string{"https://a.example.com/cb"}, GrantTypes: []string{"implicit"}},
		"bad scope":          {ID: "a", Public: true, RedirectURIs: []string{"https://a.example.com/cb"}, Scopes: []string{"a b"}},
		"bad id":             {ID: "a b", Public: true, RedirectURIs: []string{"https://a.example.com/cb"}},
		"empty id":           {ID: "", Public: true, RedirectURIs: []string{"https://a.example.com/cb"}},
		"HMAC ID tokens":     {ID: "a", Public: true, RedirectURIs: []string{"https://a.example.com/cb"}, IDTokenAlg: "HS256"},
		"none ID tokens":     {ID: "a", Public: true, RedirectURIs: []string{"https://a.example.com/cb"}, IDTokenAlg: "none"},
	}
	for name, spec := range bad {
		if _, _, err := oauth.NewClient(spec, oauth.ClientFromAdmin, now); err == nil {
			t.Errorf("%s: accepted", name)
		} else if e := oauth.AsError(err); e.Status != 400 {
			t.Errorf("%s: status %d", name, e.Status)
		}
	}
}

func FuzzRedirectURIMatching(f *testing.F) {
	for _, s := range []string{testRedirect, testRedirect + "/", testRedirect + "?a=b", "HTTPS://site.example.com/callback", "https://site.example.com/callback#", "https://site.example.com/%63allback", "https://site.example.com:443/callback"} {
		f.Add(s)
	}
	c, _, err := oauth.NewClient(oauth.ClientSpec{ID: "site", Public: true, RedirectURIs: []string{testRedirect, "http://127.0.0.1:8080/cb"}}, oauth.ClientFromConfig, testTime())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		if c.MatchRedirectURI(uri) && uri != testRedirect && uri != "http://127.0.0.1:8080/cb" {
			// Only the loopback redirect may match, on another port.
			u, err := url.Parse(uri)
			if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.EscapedPath() != "/cb" || u.RawQuery != "" ||
				u.User != nil || strings.Contains(uri, "#") || u.Port() == "" {
				t.Fatalf("%q matched without being registered", uri)
			}
		}
		if oauth.ValidateRedirectURI(uri) == nil {
			u, err := url.Parse(uri)
			if err != nil || strings.Contains(uri, "#") || u.User != nil || (u.Scheme != "https" && u.Scheme != "http") {
				t.Fatalf("accepted %q", uri)
			}
			if u.Scheme == "http" && u.Hostname() != "localhost" && !strings.HasPrefix(u.Hostname(), "127.") && u.Hostname() != "::1" && !strings.Contains(u.Hostname(), ":") {
				t.Fatalf("accepted non-loopback http %q", uri)
			}
		}
	})
}

func FuzzAuthorizeQuery(f *testing.F) {
	good := url.Values{
		"response_type": {"code"}, "client_id": {"site"}, "redirect_uri": {testRedirect}, "scope": {"openid"},
		"state": {"s"}, "code_challenge": {testChallenge()}, "code_challenge_method": {"S256"},
	}.Encode()
	for _, s := range []string{good, good + "&scope=x", "client_id=site&redirect_uri=https://evil.example.com", "%zz", "client_id=nobody", good + "&prompt=none", good + "&resource=a%23b"} {
		f.Add(s)
	}
	s := newServer(f, cheapParams)
	f.Fuzz(func(t *testing.T, rawQuery string) {
		req := httptest.NewRequest("GET", "/oauth2/authorize", nil)
		req.URL.RawQuery = rawQuery
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 400:
		case 302:
			loc := rec.Header().Get("Location")
			if !strings.HasPrefix(loc, testRedirect+"?") && !strings.HasPrefix(loc, "http://127.0.0.1:8080/cb?") {
				t.Fatalf("redirected to %q", loc)
			}
		default:
			t.Fatalf("status %d for %q", rec.Code, rawQuery)
		}
	})
}

func FuzzTokenRequest(f *testing.F) {
	for _, s := range []string{"grant_type=client_credentials", "grant_type=authorization_code&code=x&code_verifier=y&redirect_uri=" + testRedirect,
		"grant_type=refresh_token&refresh_token=abc", "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token",
		"grant_type=a&grant_type=b", "%zz", "scope=%00"} {
		f.Add(s, false)
	}
	f.Add(`{"grant_type":"client_credentials","scope":"data:read"}`, true)
	s := newServer(f, cheapParams)
	f.Fuzz(func(t *testing.T, body string, asJSON bool) {
		req := httptest.NewRequest("POST", "/oauth2/token", strings.NewReader(body))
		if asJSON {
			req.Header.Set("Content-Type", "application/json")
		} else {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		req.SetBasicAuth("site", testClientSecret)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		checkShape(t, rec)
		if rec.Code == 200 {
			var resp map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp["access_token"] == nil || resp["refresh_token"] != nil {
				t.Fatalf("unexpected success for %q: %s", body, rec.Body)
			}
		}
	})
}
