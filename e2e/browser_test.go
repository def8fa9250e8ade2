package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"image/color"
	"image/png"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
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
		scopes: Array.from(document.querySelectorAll("#scopes li")).map(li => li.dataset.scope),
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
	requireChromium(t)
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
	b := newBrowser(t, testCtx, 900, 700)
	bctx, step, console := b.ctx, b.step, b.console

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

// requireChromium skips the test when Chromium is missing, and fails it
// when CI=true: CI installs it, so a missing browser there is a broken
// setup, not a reason to pass.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is missing (.ci/run installs Debian's chromium): %v", chromiumPath, err)
		}
		t.Skipf("%s not found: install Debian's chromium (apt-get install chromium) to run the browser test", chromiumPath)
	}
}

// tab is the one tab of a headless Chromium, the CSP violation recorder
// installed in every page it loads.
type tab struct {
	t       *testing.T
	ctx     context.Context // the tab's
	console *consoleLog
}

// newBrowser starts Chromium for the test; it ends with parent or the test.
func newBrowser(t *testing.T, parent context.Context, width, height int) *tab {
	t.Helper()
	browserLog := new(syncBuffer)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(parent,
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
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		chromedp.CombinedOutput(browserLog),
	)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(f string, a ...any) { browserLog.printf("chromedp: "+f+"\n", a...) }))
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		if t.Failed() {
			t.Logf("browser output:\n%s", browserLog.String())
		}
	})
	b := &tab{t: t, ctx: bctx, console: new(consoleLog)}
	// Start the browser on the parent context: a timeout on this first
	// call would bound the browser's whole life.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	if err := chromedp.Listen(bctx, b.console.record); err != nil {
		t.Fatal(err)
	}
	if err := b.step(5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		_, err := cdp.Call(ctx, tgt, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: recordViolations})
		return err
	})); err != nil {
		t.Fatalf("installing the violation recorder: %v", err)
	}
	return b
}

// step runs one browser action bounded by its own timeout.
func (b *tab) step(d time.Duration, a chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	_, err := chromedp.Run(ctx, a)
	return err
}

// must runs a step and fails the test, saying what it was doing, if the
// step fails.
func (b *tab) must(what string, d time.Duration, a chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := b.step(d, a); err != nil {
		b.t.Fatalf("%s: %v (page: %s)", what, err, pageStatus(b.ctx))
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) in the page.
func eval[T any](b *tab, expr string) T {
	b.t.Helper()
	var v T
	b.must("evaluating "+expr, 5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) (err error) {
		v, err = chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise)(ctx, tgt)
		return err
	}))
	return v
}

// open navigates to u and waits for the status box.
func (b *tab) open(u string) {
	b.t.Helper()
	b.must("navigating to "+u, 15*time.Second, chromedp.Navigate(u))
	b.must("waiting for #status", 10*time.Second, chromedp.WaitVisible(chromedp.ID("status")))
}

// waitState waits until the status box is in state (and, for
// authenticated, has the given data-detail, "" for none).
func (b *tab) waitState(state, detail string, d time.Duration) {
	b.t.Helper()
	expr := fmt.Sprintf(`(() => { const s = document.getElementById("status"); return !!s && s.dataset.state === %q && (s.dataset.detail || "") === %q; })()`, state, detail)
	b.must("waiting for the "+state+" state", d, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(50*time.Millisecond)))
}

// pageSize is the size of the whole page, not only the viewport, in CSS
// pixels.
func (b *tab) pageSize() (w, h float64) {
	b.t.Helper()
	b.must("measuring the page", 5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		m, err := cdp.Call(ctx, tgt, page.GetLayoutMetrics, cdp.Empty{})
		if err != nil {
			return err
		}
		if m.CSSContentSize == nil || m.CSSLayoutViewport == nil {
			return fmt.Errorf("no layout metrics: %+v", m)
		}
		w = max(m.CSSContentSize.Width, float64(m.CSSLayoutViewport.ClientWidth))
		h = max(m.CSSContentSize.Height, float64(m.CSSLayoutViewport.ClientHeight))
		return nil
	}))
	return w, h
}

// screenshot takes a PNG of the whole page, checks that it is a picture
// of something, and writes it to dir.
func (b *tab) screenshot(dir, name string) string {
	b.t.Helper()
	w, h := b.pageSize()
	return b.screenshotSized(dir, name, w, h)
}

// screenshotSized is screenshot for a page of a size measured earlier:
// while a navigation is under way Chromium answers no command that needs
// the page (page.GetLayoutMetrics among them), but still captures it.
func (b *tab) screenshotSized(dir, name string, w, h float64) string {
	b.t.Helper()
	var shot []byte
	b.must("screenshot "+name, 10*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		yes := true
		r, err := cdp.Call(ctx, tgt, page.CaptureScreenshot, page.CaptureScreenshotParams{
			Format: page.CaptureScreenshotFormatPng, Clip: &page.Viewport{Width: w, Height: h, Scale: 1},
			CaptureBeyondViewport: &yes, FromSurface: &yes,
		})
		shot = r.Data
		return err
	}))
	checkPicture(b.t, name, shot)
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
	return path
}

// reportStatus has every page the tab loads report each change of its
// status box over a DevTools binding. The page's "returning you" state
// lasts while the browser navigates away, and then Chromium holds back
// every command to the page (Runtime.evaluate and the DOM domain wait for
// the next document) but still delivers the page's own calls.
func (b *tab) reportStatus() <-chan statusView {
	b.t.Helper()
	reports := make(chan statusView, 64)
	if err := chromedp.Listen(b.ctx, func(ev any) {
		if ev, ok := ev.(*runtime.EventBindingCalled); ok && ev.Name == "__statusChanged" {
			var v statusView
			if json.Unmarshal([]byte(ev.Payload), &v) == nil {
				select {
				case reports <- v:
				default:
				}
			}
		}
	}); err != nil {
		b.t.Fatal(err)
	}
	observer := `document.addEventListener("DOMContentLoaded", () => {
	const s = document.getElementById("status");
	if (!s || typeof window.__statusChanged !== "function") { return; }
	new MutationObserver(() => window.__statusChanged(JSON.stringify(` + readStatus + `))).observe(s, {attributes: true, childList: true, subtree: true, characterData: true});
});`
	b.must("installing the status observer", 5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tgt, runtime.AddBinding, runtime.AddBindingParams{Name: "__statusChanged"}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tgt, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: observer})
		return err
	}))
	return reports
}

// checkPicture fails unless shot is a PNG of a page with something on it:
// a blank or single-colour capture has (almost) no variance.
func checkPicture(t *testing.T, name string, shot []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", name, err)
	}
	bounds := img.Bounds()
	if bounds.Dx() < 300 || bounds.Dy() < 300 {
		t.Fatalf("screenshot %s is %v, too small for a page", name, bounds)
	}
	var n, sum, sumSq float64
	colours := map[color.RGBA]bool{}
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 2 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 2 {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			l := 0.2126*float64(c.R) + 0.7152*float64(c.G) + 0.0722*float64(c.B)
			n, sum, sumSq = n+1, sum+l, sumSq+l*l
			if len(colours) < 1000 {
				colours[c] = true
			}
		}
	}
	mean := sum / n
	stddev := math.Sqrt(max(0, sumSq/n-mean*mean))
	t.Logf("screenshot %s: %dx%d, luminance mean %.1f, stddev %.1f, %d+ colours", name, bounds.Dx(), bounds.Dy(), mean, stddev, len(colours))
	if stddev < 4 || len(colours) < 50 {
		t.Fatalf("screenshot %s looks blank: luminance stddev %.1f, %d colours", name, stddev, len(colours))
	}
}

// interceptStatus hands every check-status request the page makes to
// handle, over the DevTools fetch domain, until the returned stop is called.
func (b *tab) interceptStatus(handle func(ctx context.Context, ev fetch.EventRequestPaused) error) (stop func()) {
	b.t.Helper()
	ictx, cancel := context.WithCancel(b.ctx)
	events := chromedp.Events(ictx, fetch.RequestPaused) // subscribed from here on
	b.must("enabling request interception", 5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		_, err := cdp.Call(ctx, tgt, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/api/check-status?*"}}})
		return err
	}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range events {
			if err != nil {
				return
			}
			hctx, hcancel := context.WithTimeout(b.ctx, 5*time.Second)
			if err := handle(hctx, ev); err != nil && ictx.Err() == nil {
				b.t.Errorf("intercepting %s: %v", ev.Request.URL, err)
			}
			hcancel()
		}
	}()
	return func() {
		b.must("disabling request interception", 5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
			_, err := cdp.Call(ctx, tgt, fetch.Disable, cdp.Empty{})
			return err
		}))
		cancel()
		<-done
	}
}

// statusView is what TestSignInScreenshots reads from the page.
type statusView struct {
	State        string `json:"state"`
	Detail       string `json:"detail"`
	Title        string `json:"title"`
	Text         string `json:"text"`
	ActionShown  bool   `json:"actionShown"`
	ActionHref   string `json:"actionHref"`
	CancelShown  bool   `json:"cancelShown"`
	CancelHref   string `json:"cancelHref"`
	SpinnerShown bool   `json:"spinnerShown"`
	Expires      string `json:"expires"`
	ClientName   string `json:"clientName"`
	RequestID    string `json:"requestID"`
	AuthRequest  string `json:"authRequest"`
	Scopes       []struct {
		Code  string `json:"code"`
		Words string `json:"words"`
		Shown string `json:"shown"`
	} `json:"scopes"`
	Violations []string `json:"violations"`
}

const readStatus = `(() => {
	const $ = id => document.getElementById(id);
	const shown = el => !!el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
	const text = id => ($(id) || {}).textContent || "";
	const s = $("status");
	return {
		state: s.dataset.state || "", detail: s.dataset.detail || "",
		title: text("status-title"), text: text("status-text"),
		actionShown: shown($("status-action")), actionHref: $("status-action").href,
		cancelShown: shown($("cancel")), cancelHref: ($("cancel") || {}).href || "",
		spinnerShown: shown(s.querySelector(".spinner")),
		expires: text("expires"),
		clientName: text("client-name"), requestID: text("request-id"),
		authRequest: (window.authRequest && window.authRequest.request_id) || "",
		scopes: Array.from(document.querySelectorAll("#scopes li")).map(li => ({
			code: li.dataset.scope, words: li.querySelector(".words").textContent, shown: li.querySelector("code").textContent,
		})),
		violations: window.__cspViolations || null,
	};
})()`

// backToSite checks that link goes to the callback with access_denied, the
// state and the issuer, and returns its error_description.
func backToSite(t *testing.T, what, link, callback, state, issuer string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil || !strings.HasPrefix(link, callback+"?") {
		t.Fatalf("%s link %q is not the callback %s", what, link, callback)
	}
	q := u.Query()
	if q.Get("error") != "access_denied" || q.Get("state") != state || q.Get("iss") != issuer || q.Has("code") || q.Get("error_description") == "" {
		t.Fatalf("%s link query %v, want error=access_denied, state %q, iss %q", what, q, state, issuer)
	}
	return q.Get("error_description")
}

// TestSignInScreenshots drives the real sign-in page through each of its
// states in headless Chromium, checks what a person sees in each, and keeps
// a full-page PNG of each in $AUTH_AGENT_SCREENSHOTS (or a temporary
// directory).
func TestSignInScreenshots(t *testing.T) {
	requireChromium(t)
	testCtx, cancelTest := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancelTest()
	httpc := &http.Client{Timeout: 10 * time.Second}
	dir := os.Getenv("AUTH_AGENT_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	// The website. A callback with a code waits until the test releases it,
	// so the page's "returning you" state stays on screen long enough for
	// a screenshot; the browser keeps showing a page until the next one
	// answers.
	arrivals := make(chan url.Values, 8)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseCallback := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseCallback()
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		select {
		case arrivals <- q:
		default:
		}
		if q.Get("code") != "" {
			select {
			case <-release:
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}
		outcome := "Signed in."
		if e := q.Get("error"); e != "" {
			outcome = "Sign-in not completed (" + e + "): " + q.Get("error_description")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = fmt.Fprintf(w, `<!doctype html><html><head><title>Demo Site</title></head>
<body style="font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#17202d">
<h1 id="landed">Demo Site</h1><p id="outcome">%s</p></body></html>`, html.EscapeString(outcome))
	}))
	defer site.Close()
	callback := site.URL + "/callback"

	c := newCaddy(t, "")
	c.start(`		default_permissions data:read
		scope_description data:read "Read your project's data"
		client demo-site {
			name "Demo Site"
			public
			redirect_uri ` + callback + `
			scopes openid profile email data:read
		}`)
	if r := c.register(t, "screenshot-agent", secret); r.status != 201 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	authorizeURL := func(state string) string {
		sum := sha256.Sum256([]byte(randomString(t, 32)))
		return c.base() + "/oauth2/authorize?" + url.Values{
			"response_type": {"code"}, "client_id": {"demo-site"}, "redirect_uri": {callback},
			"scope": {"openid profile email data:read"}, "state": {state},
			"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
		}.Encode()
	}
	approve := func(requestID string) {
		t.Helper()
		auth := httpDo(t, httpc, "POST", c.base()+"/api/agent-auth", nil,
			fmt.Sprintf(`{"agent_id":"screenshot-agent","agent_secret":%q,"request_id":%q}`, secret, requestID))
		if auth.status != 200 || auth.str("status") != "authenticated" {
			t.Fatalf("agent-auth: %d %s", auth.status, auth.body)
		}
	}

	b := newBrowser(t, testCtx, 1280, 900)
	reports := b.reportStatus()
	var shots []string
	read := func() statusView { t.Helper(); return eval[statusView](b, readStatus) }

	// 1. Pending: who asks, for what in plain words, the request id to
	// copy, and a progress indicator while the agent has not answered.
	state := randomString(t, 12)
	b.open(authorizeURL(state))
	b.must("letting the page poll", 5*time.Second, chromedp.Sleep(1200*time.Millisecond))
	v := read()
	if v.State != "pending" || !strings.HasPrefix(v.Title, "Waiting for the agent") || !v.SpinnerShown || !v.CancelShown || v.ActionShown {
		t.Fatalf("pending page: %+v", v)
	}
	if v.Violations == nil || len(v.Violations) != 0 {
		t.Fatalf("CSP violations on the sign-in page: %v", v.Violations)
	}
	if msgs := b.console.errors(); len(msgs) != 0 {
		t.Fatalf("console errors on the sign-in page: %v", msgs)
	}
	if v.ClientName != "Demo Site" || v.RequestID == "" || v.RequestID != v.AuthRequest {
		t.Fatalf("client %q, request id %q (window.authRequest %q)", v.ClientName, v.RequestID, v.AuthRequest)
	}
	wantScopes := [][2]string{
		{"openid", "Confirm the agent's identity"},
		{"profile", "See the agent's name, model and owner's name"},
		{"email", "See the owner's email address"},
		{"data:read", "Read your project's data"},
	}
	if len(v.Scopes) != len(wantScopes) {
		t.Fatalf("scopes %+v", v.Scopes)
	}
	for i, sc := range v.Scopes {
		if sc.Code != wantScopes[i][0] || sc.Shown != wantScopes[i][0] || sc.Words != wantScopes[i][1] {
			t.Errorf("scope %d: %+v, want %q %q", i, sc, wantScopes[i][0], wantScopes[i][1])
		}
	}
	if !regexp.MustCompile(`^Expires in [0-5]:[0-5][0-9]$`).MatchString(v.Expires) {
		t.Errorf("countdown %q", v.Expires)
	}
	backToSite(t, "cancel", v.CancelHref, callback, state, c.base())
	shots = append(shots, b.screenshot(dir, "1-pending"))

	// The same page on a phone.
	b.must("narrow viewport", 5*time.Second, chromedp.EmulateViewport(390, 844))
	if w := eval[float64](b, `document.querySelector(".card").getBoundingClientRect().width`); w > 390 || w < 300 {
		t.Errorf("on a 390px screen the card is %vpx wide", w)
	}
	if eval[bool](b, `document.documentElement.scrollWidth > window.innerWidth`) {
		t.Error("the page scrolls sideways on a 390px screen")
	}
	shots = append(shots, b.screenshot(dir, "2-pending-narrow"))
	b.must("wide viewport", 5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		_, err := cdp.Call(ctx, tgt, emulation.ClearDeviceMetricsOverride, cdp.Empty{})
		return err
	}))
	// The browser applies the override's removal with its next resize:
	// wait for it rather than read the width at once.
	b.must("waiting for the 1280px viewport again", 5*time.Second, chromedp.Poll[chromedp.Void](`window.innerWidth === 1280`, chromedp.WithPollingTimeout(3*time.Second)))

	// Copy puts the request id on the clipboard.
	for _, perm := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(b.ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: perm}, Setting: browser.PermissionSettingGranted, Origin: c.base(),
		}); err != nil {
			t.Fatalf("granting %s: %v", perm, err)
		}
	}
	b.must("clicking Copy", 5*time.Second, chromedp.Click(chromedp.ID("copy")))
	b.must("waiting for Copied", 5*time.Second, chromedp.Poll[chromedp.Void](`document.getElementById("copy-label").textContent === "Copied"`, chromedp.WithPollingTimeout(3*time.Second)))
	if got := eval[string](b, `navigator.clipboard.readText()`); got != v.RequestID {
		t.Errorf("clipboard holds %q, want the request id %q", got, v.RequestID)
	}

	// 2. Approved: the agent answers on the back channel; the page says so
	// and heads back to the site (whose answer the test holds back).
	w, h := b.pageSize()
	for len(reports) > 0 {
		<-reports
	}
	approve(v.RequestID)
	for v.State != "authenticated" {
		select {
		case v = <-reports:
		case <-time.After(5 * time.Second):
			t.Fatalf("the page did not report the approval; last report %+v", v)
		}
	}
	var landed url.Values
	select {
	case landed = <-arrivals:
	case <-time.After(10 * time.Second):
		t.Fatalf("the browser did not head for the callback; page: %+v", v)
	}
	if landed.Get("code") == "" || landed.Get("state") != state {
		t.Fatalf("callback query %v", landed)
	}
	if v.Title != "Signed in — returning you to Demo Site…" || v.Detail != "" || v.SpinnerShown || v.CancelShown || v.ActionShown || v.Expires != "" {
		t.Fatalf("approved page: %+v", v)
	}
	shots = append(shots, b.screenshotSized(dir, "3-approved", w, h))
	releaseCallback()
	b.must("landing on the site", 10*time.Second, chromedp.WaitVisible(chromedp.ID("landed")))
	if loc := eval[string](b, `location.href`); !strings.HasPrefix(loc, callback+"?") || !strings.Contains(loc, "code=") {
		t.Fatalf("after approval the browser is at %q", loc)
	}

	// 3. Expired: the page asks about a request id the server no longer
	// knows, which it reports as expired, as it does once a request's
	// lifetime is over (the real lifetime would cost minutes).
	state = randomString(t, 12)
	stop := b.interceptStatus(func(ctx context.Context, ev fetch.EventRequestPaused) error {
		u, err := url.Parse(ev.Request.URL)
		if err != nil {
			return err
		}
		q := u.Query()
		q.Set("request_id", "expired-"+q.Get("request_id"))
		u.RawQuery = q.Encode()
		_, err = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID, URL: u.String()})
		return err
	})
	b.open(authorizeURL(state))
	b.waitState("expired", "", 5*time.Second)
	stop()
	v = read()
	if v.Title != "This sign-in request expired" || !strings.Contains(v.Text, "Start again from Demo Site") ||
		!v.ActionShown || v.CancelShown || v.SpinnerShown || v.Expires != "Expired" {
		t.Fatalf("expired page: %+v", v)
	}
	if d := backToSite(t, "expired", v.ActionHref, callback, state, c.base()); !strings.Contains(d, "expired") {
		t.Errorf("the expired state's link says %q", d)
	}
	shots = append(shots, b.screenshot(dir, "4-expired"))

	// 4. Error: check-status fails (the connection refused, then a 503),
	// and the page says it lost contact; it keeps trying and recovers when
	// the server answers again.
	state = randomString(t, 12)
	var failed atomic.Int32
	stop = b.interceptStatus(func(ctx context.Context, ev fetch.EventRequestPaused) error {
		var err error
		if failed.Add(1)%2 == 1 {
			_, err = chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonConnectionRefused})
		} else {
			_, err = chromedp.Call(ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{
				RequestID: ev.RequestID, ResponseCode: 503, Body: []byte(`{"error":"temporarily_unavailable"}`),
				ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "application/json"}},
			})
		}
		return err
	})
	b.open(authorizeURL(state))
	b.waitState("error", "", 8*time.Second)
	v = read()
	if v.Title != "Can't check on this sign-in" || !strings.Contains(v.Text, "lost contact") || !v.ActionShown || v.CancelShown || v.SpinnerShown {
		t.Fatalf("error page: %+v", v)
	}
	if n := failed.Load(); n < 3 {
		t.Errorf("the page gave up after %d failed checks", n)
	}
	backToSite(t, "error", v.ActionHref, callback, state, c.base())
	shots = append(shots, b.screenshot(dir, "5-error"))
	stop()
	b.waitState("pending", "", 8*time.Second)
	if v = read(); !v.CancelShown || v.ActionShown || !v.SpinnerShown {
		t.Fatalf("after recovering: %+v", v)
	}

	// 5. Cancel: the link takes the browser back to the site with
	// access_denied and the state.
	b.must("clicking cancel", 5*time.Second, chromedp.Click(chromedp.ID("cancel")))
	select {
	case landed = <-arrivals:
	case <-time.After(10 * time.Second):
		t.Fatalf("cancel did not reach the callback; page: %s", pageStatus(b.ctx))
	}
	if landed.Get("error") != "access_denied" || landed.Get("state") != state || landed.Get("iss") != c.base() || landed.Has("code") {
		t.Fatalf("cancel arrived with %v", landed)
	}
	b.must("landing on the site", 10*time.Second, chromedp.WaitVisible(chromedp.ID("landed")))
	if loc := eval[string](b, `location.href`); !strings.HasPrefix(loc, callback+"?") || !strings.Contains(loc, "error=access_denied") {
		t.Fatalf("after cancel the browser is at %q", loc)
	}
	if got := eval[string](b, `document.getElementById("outcome").textContent`); !strings.Contains(got, "access_denied") {
		t.Errorf("the site shows %q", got)
	}
	shots = append(shots, b.screenshot(dir, "6-cancelled-landing"))

	// 6. Signed in from another browser: this browser lacks the request's
	// binding cookie, so it learns only that the agent authenticated.
	state = randomString(t, 12)
	b.open(authorizeURL(state))
	id := eval[string](b, `window.authRequest.request_id`)
	b.must("dropping the binding cookie", 5*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		_, err := cdp.Call(ctx, tgt, network.DeleteCookies, network.DeleteCookiesParams{Name: "aa_bind_" + id, URL: c.base() + "/api/check-status"})
		return err
	}))
	approve(id)
	b.waitState("authenticated", "elsewhere", 5*time.Second)
	v = read()
	if v.Title != "Sign-in completed in another browser" || !strings.Contains(v.Text, "close this page") || v.CancelShown || v.ActionShown || v.SpinnerShown {
		t.Fatalf("elsewhere page: %+v", v)
	}
	shots = append(shots, b.screenshot(dir, "7-elsewhere"))
	select {
	case q := <-arrivals:
		t.Fatalf("a browser without the binding cookie reached the callback: %v", q)
	default:
	}

	// 7. The page for a request that cannot go back to any site.
	var resp *network.Response
	b.must("opening the error page", 10*time.Second, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) (err error) {
		resp, err = chromedp.NavigateResponse(c.base()+"/oauth2/authorize?response_type=code&client_id=nobody&redirect_uri="+url.QueryEscape(callback))(ctx, tgt)
		return err
	}))
	checkCSP(t, "error page", headerValue(resp.Headers, "Content-Security-Policy"))
	if got := eval[string](b, `document.getElementById("message").textContent`); resp.Status != 400 || got != "Unknown client." {
		t.Fatalf("error page: %d %q", resp.Status, got)
	}
	if vs := eval[[]string](b, `window.__cspViolations`); len(vs) != 0 {
		t.Fatalf("CSP violations on the error page: %v", vs)
	}
	shots = append(shots, b.screenshot(dir, "8-error-page"))
	t.Logf("screenshots:\n%s", strings.Join(shots, "\n"))
}
