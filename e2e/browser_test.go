package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// recordViolations runs in the page before its own scripts (injected over
// the DevTools protocol, so the page's CSP does not apply to it) and keeps
// every CSP violation the page reports.
const recordViolations = `window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
	window.__cspViolations.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline"));
});`

// signInState is what the test reads from the rendered sign-in page.
type signInState struct {
	ClientName  string   `json:"clientName"`
	Scopes      []string `json:"scopes"`
	Meta        string   `json:"meta"`
	AuthRequest string   `json:"authRequest"`
	Status      string   `json:"status"`
	ScriptNonce string   `json:"scriptNonce"`
	MaxWidth    string   `json:"maxWidth"`
	Violations  []string `json:"violations"`
}

const readSignIn = `(() => {
	const meta = document.querySelector('meta[name="auth-agent-request-id"]');
	const script = document.querySelector("script");
	return {
		clientName: (document.getElementById("client-name") || {}).textContent || "",
		scopes: Array.from(document.querySelectorAll("#scopes li")).map(li => li.textContent.trim()),
		meta: meta ? meta.content : "",
		authRequest: (window.authRequest && window.authRequest.request_id) || "",
		status: (document.getElementById("status") || {dataset: {}}).dataset.state || "",
		scriptNonce: script ? script.nonce : "",
		maxWidth: getComputedStyle(document.body).maxWidth,
		violations: window.__cspViolations || null,
	};
})()`

// TestSignInPageInChromium loads the sign-in page in a real headless
// Chromium, lets an agent authenticate on the back channel, and follows the
// browser back to the website's callback.
func TestSignInPageInChromium(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is missing (.ci/run installs Debian's chromium): %v", chromiumPath, err)
		}
		t.Skipf("%s not found: install Debian's chromium (apt-get install chromium) to run the browser test", chromiumPath)
	}
	// Everything below, browser included, must finish within this budget.
	testCtx, cancelTest := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancelTest()
	httpc := &http.Client{Timeout: 10 * time.Second}

	// The website: it records what arrives at its callback.
	callbacks := make(chan url.Values, 4)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		select {
		case callbacks <- r.URL.Query():
		default:
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, `<!doctype html><html><head><title>Demo Site</title></head><body><h1 id="landed">Signed in to Demo Site</h1></body></html>`)
	}))
	defer site.Close()
	callback := site.URL + "/callback"

	const clientSecret = "0123456789abcdef0123456789abcdef"
	c := newCaddy(t, "")
	c.start("\t\tclient demo-site {\n\t\t\tname \"Demo Site\"\n\t\t\tsecret " + clientSecret +
		"\n\t\t\tredirect_uri " + callback + "\n\t\t\tscopes openid profile data:read\n\t\t}")
	if r := c.register(t, "browser-agent", secret); r.status != 201 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}

	verifier := randomString(t, 32)
	challenge := sha256.Sum256([]byte(verifier))
	state, nonce := randomString(t, 16), randomString(t, 16)
	authURL := c.base() + "/oauth2/authorize?" + url.Values{
		"response_type":         {"code"},
		"client_id":             {"demo-site"},
		"redirect_uri":          {callback},
		"scope":                 {"openid profile"},
		"state":                 {state},
		"nonce":                 {nonce},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(challenge[:])},
		"code_challenge_method": {"S256"},
	}.Encode()

	// The CSP as a plain HTTP client sees it (this starts a separate,
	// unused authorization request).
	plain := httpGet(t, httpc, authURL, map[string]string{"Accept": "text/html,application/xhtml+xml"})
	if plain.status != 200 || !strings.HasPrefix(plain.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET authorize: %d %s\n%s", plain.status, plain.header.Get("Content-Type"), plain.body)
	}
	checkCSP(t, "plain GET", plain.header.Get("Content-Security-Policy"))

	// The browser.
	var browserLog syncBuffer
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(testCtx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(900, 700),
		chromedp.CombinedOutput(&browserLog),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(f string, a ...any) { browserLog.printf("chromedp: "+f+"\n", a...) }))
	defer cancelBrowser()
	defer func() {
		if t.Failed() {
			t.Logf("browser output:\n%s", browserLog.String())
		}
	}()

	// step runs one browser action bounded by its own timeout.
	step := func(d time.Duration, a chromedp.Action[chromedp.Void]) error {
		ctx, cancel := context.WithTimeout(bctx, d)
		defer cancel()
		_, err := chromedp.Run(ctx, a)
		return err
	}
	// Start the browser on the test's context: a timeout on this first
	// call would bound the browser's whole life.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	var console consoleLog
	if err := chromedp.Listen(bctx, console.record); err != nil {
		t.Fatal(err)
	}
	if err := step(5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		_, err := cdp.Call(ctx, tgt, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: recordViolations})
		return err
	})); err != nil {
		t.Fatalf("installing the violation recorder: %v", err)
	}

	// 1. The sign-in page loads with its CSP and shows the client.
	var resp *network.Response
	if err := step(15*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) (err error) {
		resp, err = chromedp.NavigateResponse(authURL)(ctx, tgt)
		return err
	})); err != nil {
		t.Fatalf("navigating to the sign-in page: %v", err)
	}
	if resp.Status != 200 {
		t.Fatalf("sign-in page: status %d", resp.Status)
	}
	browserCSP := headerValue(resp.Headers, "Content-Security-Policy")
	checkCSP(t, "browser", browserCSP)
	if err := step(10*time.Second, chromedp.WaitVisible(chromedp.ID("client-name"))); err != nil {
		t.Fatalf("waiting for #client-name: %v", err)
	}
	// Let the page poll check-status a few times while pending.
	if err := step(5*time.Second, chromedp.Sleep(1200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var page1 signInState
	if err := step(5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) (err error) {
		page1, err = chromedp.Evaluate[signInState](readSignIn)(ctx, tgt)
		return err
	})); err != nil {
		t.Fatalf("reading the sign-in page: %v", err)
	}
	t.Logf("sign-in page: %+v", page1)
	if page1.Violations == nil {
		t.Fatal("the violation recorder did not run")
	}
	if len(page1.Violations) != 0 {
		t.Fatalf("CSP violations on the sign-in page: %v", page1.Violations)
	}
	if msgs := console.errors(); len(msgs) != 0 {
		t.Fatalf("console errors on the sign-in page: %v", msgs)
	}
	if page1.AuthRequest == "" {
		t.Fatal("window.authRequest is not defined: the nonce'd inline script did not run")
	}
	if page1.Meta != page1.AuthRequest {
		t.Fatalf("meta request id %q != window.authRequest.request_id %q", page1.Meta, page1.AuthRequest)
	}
	if !strings.Contains(browserCSP, "'nonce-"+page1.ScriptNonce+"'") || page1.ScriptNonce == "" {
		t.Fatalf("script nonce %q is not the one in the CSP %q", page1.ScriptNonce, browserCSP)
	}
	if page1.MaxWidth != "512px" {
		t.Fatalf("the nonce'd stylesheet did not apply: body max-width %q", page1.MaxWidth)
	}
	if page1.ClientName != "Demo Site" {
		t.Fatalf("client name %q, want Demo Site", page1.ClientName)
	}
	if !slices.Equal(page1.Scopes, []string{"openid", "profile"}) {
		t.Fatalf("scopes %q, want [openid profile]", page1.Scopes)
	}
	if page1.Status != "pending" {
		t.Fatalf("status %q before the agent authenticated, want pending", page1.Status)
	}
	requestID := page1.AuthRequest

	// The browser holds the binding cookie, HttpOnly and SameSite=Lax.
	var bind *network.Cookie
	if err := step(5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		res, err := cdp.Call(ctx, tgt, network.GetCookies, network.GetCookiesParams{URLs: []string{c.base() + "/api/check-status?request_id=" + requestID}})
		for _, ck := range res.Cookies {
			if ck.Name == "aa_bind_"+requestID {
				bind = ck
			}
		}
		return err
	})); err != nil {
		t.Fatal(err)
	}
	if bind == nil || !bind.HTTPOnly || bind.SameSite != network.CookieSameSiteLax || bind.Path != "/api/check-status" {
		t.Fatalf("binding cookie: %+v", bind)
	}

	// 2. A screenshot of the page while it waits.
	var shot []byte
	if err := step(10*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) (err error) {
		shot, err = chromedp.CaptureScreenshot()(ctx, tgt)
		return err
	})); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shotPath := filepath.Join(t.TempDir(), "signin.png")
	if err := os.WriteFile(shotPath, shot, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the sign-in page: %s", shotPath)
	if p := os.Getenv("AUTHAGENT_SIGNIN_SCREENSHOT"); p != "" {
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The CSP is enforced: an inline script without the nonce is refused.
	if err := step(5*time.Second, chromedp.Evaluate[chromedp.Void](`(() => {
		const s = document.createElement("script");
		s.textContent = "window.__injected = true";
		document.body.appendChild(s);
	})()`)); err != nil {
		t.Fatal(err)
	}
	if err := step(5*time.Second, chromedp.Poll[chromedp.Void](`window.__cspViolations.length > 0`, chromedp.WithPollingTimeout(3*time.Second))); err != nil {
		t.Fatalf("an injected inline script caused no CSP violation: %v", err)
	}
	var injected bool
	if err := step(5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) (err error) {
		injected, err = chromedp.Evaluate[bool](`window.__injected === true`)(ctx, tgt)
		return err
	})); err != nil || injected {
		t.Fatalf("an inline script without the nonce ran (err %v)", err)
	}
	// The console listener sees that violation too, so its silence on the
	// untouched page above means something.
	for deadline := time.Now().Add(3 * time.Second); len(console.errors()) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the console listener did not report the injected script's CSP violation")
		}
	}
	t.Logf("console after the injected script: %q", console.errors())

	// 3. The agent authenticates on the back channel.
	auth := httpDo(t, httpc, "POST", c.base()+"/api/agent-auth", nil,
		fmt.Sprintf(`{"agent_id":"browser-agent","agent_secret":%q,"request_id":%q}`, secret, requestID))
	if auth.status != 200 || auth.str("status") != "authenticated" || auth.str("redirect_to") == "" {
		t.Fatalf("agent-auth: %d %s", auth.status, auth.body)
	}
	redirect, err := url.Parse(auth.str("redirect_to"))
	if err != nil || !strings.HasPrefix(auth.str("redirect_to"), callback+"?") {
		t.Fatalf("redirect_to %q is not the callback", auth.str("redirect_to"))
	}

	// 4. The browser lands on the callback.
	var got url.Values
	select {
	case got = <-callbacks:
	case <-time.After(15 * time.Second):
		t.Fatalf("the browser did not reach the callback; page status: %s", pageStatus(bctx))
	}
	if got.Get("code") == "" || got.Get("state") != state || got.Get("iss") != c.base() {
		t.Fatalf("callback query %v, want a code, state %q and iss %q", got, state, c.base())
	}
	if got.Get("code") != redirect.Query().Get("code") {
		t.Fatalf("the browser got code %q, the agent was told %q", got.Get("code"), redirect.Query().Get("code"))
	}
	if err := step(10*time.Second, chromedp.WaitVisible(chromedp.ID("landed"))); err != nil {
		t.Fatalf("the callback page did not render: %v", err)
	}
	var loc string
	if err := step(5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) (err error) {
		loc, err = chromedp.Location()(ctx, tgt)
		return err
	})); err != nil || !strings.HasPrefix(loc, callback+"?") {
		t.Fatalf("browser location %q (%v), want the callback", loc, err)
	}

	// 5. Only the bound browser learns the redirect.
	status := c.base() + "/api/check-status?request_id=" + url.QueryEscape(requestID)
	other := httpGet(t, httpc, status, nil)
	if other.status != 200 || other.str("status") != "authenticated" {
		t.Fatalf("check-status without the cookie: %d %s", other.status, other.body)
	}
	if _, ok := other.data()["redirect_to"]; ok || strings.Contains(string(other.body), got.Get("code")) {
		t.Fatalf("check-status revealed the redirect to a client without the binding cookie: %s", other.body)
	}
	wrong := httpGet(t, httpc, status, map[string]string{"Cookie": "aa_bind_" + requestID + "=" + randomString(t, 32)})
	if _, ok := wrong.data()["redirect_to"]; ok || wrong.str("status") != "authenticated" {
		t.Fatalf("check-status with a wrong binding cookie: %d %s", wrong.status, wrong.body)
	}
	bound := httpGet(t, httpc, status, map[string]string{"Cookie": bind.Name + "=" + bind.Value})
	if bound.str("redirect_to") != auth.str("redirect_to") {
		t.Fatalf("check-status with the browser's cookie: %d %s", bound.status, bound.body)
	}

	// 6. The website exchanges the code.
	form := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {got.Get("code")},
		"redirect_uri":  {callback},
		"code_verifier": {verifier},
	}
	req, _ := http.NewRequestWithContext(testCtx, "POST", c.base()+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("demo-site", clientSecret)
	tok := send(t, httpc, req)
	if tok.status != 200 || tok.str("access_token") == "" || tok.str("id_token") == "" {
		t.Fatalf("token exchange: %d %s", tok.status, tok.body)
	}
	claims := jwtClaims(t, tok.str("id_token"))
	aud := fmt.Sprint(claims["aud"])
	if claims["iss"] != c.base() || claims["sub"] != "browser-agent" || claims["nonce"] != nonce ||
		(aud != "demo-site" && aud != "[demo-site]") {
		t.Fatalf("id_token claims %v", claims)
	}
}

// checkCSP asserts the sign-in page's policy is strict.
func checkCSP(t *testing.T, who, csp string) {
	t.Helper()
	if !strings.Contains(csp, "default-src 'none'") ||
		!regexp.MustCompile(`script-src[^;]*'nonce-[A-Za-z0-9+/_=-]{16,}'`).MatchString(csp) ||
		strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Fatalf("%s: weak or missing Content-Security-Policy %q", who, csp)
	}
}

// headerValue reads a header from the DevTools protocol's header map, whose
// names keep the case they had on the wire.
func headerValue(h network.Headers, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			s, _ := v.(string)
			return s
		}
	}
	return ""
}

func randomString(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func httpGet(t *testing.T, c *http.Client, u string, header map[string]string) response {
	t.Helper()
	return httpDo(t, c, "GET", u, header, "")
}

func httpDo(t *testing.T, c *http.Client, method, u string, header map[string]string, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return send(t, c, req)
}

func send(t *testing.T, c *http.Client, req *http.Request) response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, body: b}
	_ = json.Unmarshal(b, &r.json)
	return r
}

// jwtClaims decodes a JWT's payload without verifying it (other tests
// verify signatures).
func jwtClaims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// pageStatus describes where the browser is, for failure messages.
func pageStatus(bctx context.Context) string {
	ctx, cancel := context.WithTimeout(bctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + " " + ((document.getElementById("status") || {}).textContent || "")`))
	if err != nil {
		return err.Error()
	}
	return s
}

// consoleLog keeps the page's console errors, exceptions and browser-log
// errors (CSP violations are reported there too).
type consoleLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *consoleLog) record(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			msg = "console." + string(ev.Type) + ": " + strings.Join(parts, " ")
		}
	case *runtime.EventExceptionThrown:
		if d := ev.ExceptionDetails; d != nil {
			msg = "exception: " + d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
		}
	case *log.EventEntryAdded:
		if e := ev.Entry; e != nil && (e.Level == log.EntryLevelError || e.Source == log.EntrySourceSecurity) {
			msg = fmt.Sprintf("log %s/%s: %s (%s)", e.Source, e.Level, e.Text, e.URL)
		}
	}
	if msg == "" {
		return
	}
	l.mu.Lock()
	l.msgs = append(l.msgs, msg)
	l.mu.Unlock()
}

func (l *consoleLog) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.msgs)
}

// syncBuffer collects the browser's output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) printf(f string, a ...any) { _, _ = fmt.Fprintf(s, f, a...) }

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
