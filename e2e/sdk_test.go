package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/client"
)

// The SDKs' own tests (sdk/js, sdk/react, sdk/python) run against the
// world these tests start: a real Caddy with a confidential website client
// whose redirect is the tiny website of sdk/js/test/site.mjs (the JS SDK's
// website side, a Node process), a public client for browser apps, and an
// API behind agent_guard. They get its addresses in the environment.

// sdkDir is the npm workspace of the JavaScript SDKs (sdk/package.json).
var sdkDir = filepath.Join("..", "sdk")

// publicRedirect is the public client's redirect URI: a browser app's
// page, which the React tests simulate in jsdom (nothing listens there).
const publicRedirect = "http://localhost:3000/callback"

// sdkWorld is a running Caddy, guarded API and tiny website, and the
// environment that tells an SDK's tests where they are.
type sdkWorld struct {
	caddy *caddy
	site  string // the tiny website's origin
	env   []string
}

// requireNodeSDK returns node once the JavaScript SDK is installed and
// built (`npm ci --prefix sdk`, which .ci/run runs): it skips without
// them, and fails with CI=true.
func requireNodeSDK(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(sdkDir, "node_modules", "typescript", "package.json"))
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but node or the SDKs' packages are missing (.ci/run runs npm ci --prefix sdk): %v", err)
		}
		t.Skipf("node or sdk/node_modules missing: install Node.js and run `npm ci --prefix sdk`: %v", err)
	}
	buildJSSDK.Do(func() {
		out, err := exec.Command("npm", "run", "build", "--prefix", filepath.Join(sdkDir, "js")).CombinedOutput()
		if err != nil {
			buildJSSDKErr = fmt.Errorf("building sdk/js: %v\n%s", err, out)
		}
	})
	if buildJSSDKErr != nil {
		t.Fatal(buildJSSDKErr)
	}
	return node
}

var (
	buildJSSDK    sync.Once
	buildJSSDKErr error
)

// newSDKWorld starts the world: Caddy runs with `request_lifetime 10s` and
// `authentication 3/m`, for the SDKs' expired-request and rate-limit cases.
func newSDKWorld(t *testing.T) *sdkWorld {
	t.Helper()
	node := requireNodeSDK(t)
	c := newCaddy(t, "")
	sitePort := freePort(t)
	site := "http://127.0.0.1:" + strconv.Itoa(sitePort)
	api := c.guardAPI(t, "\tagent_guard {\n\t\tscopes data:read\n\t}\n")
	c.start(fmt.Sprintf(`		default_permissions data:read
		request_lifetime 10s
		rate_limit {
			authentication 3/m
		}
		client demo-site {
			name "Demo Site"
			secret %s
			redirect_uri %s/callback
			scopes openid profile email permissions data:read data:write
		}
		client spa {
			name "Single Page App"
			public
			redirect_uri %s
			scopes openid profile email permissions data:read
		}`, clientSecret, site, publicRedirect))
	startSite(t, node, sitePort, c.base())
	return &sdkWorld{caddy: c, site: site, env: append(os.Environ(),
		"AUTHAGENT_ISSUER="+c.base(),
		"AUTHAGENT_GUARDED_URL="+api,
		"AUTHAGENT_SITE_URL="+site,
		"AUTHAGENT_CLIENT_ID=demo-site",
		"AUTHAGENT_CLIENT_SECRET="+clientSecret,
		"AUTHAGENT_REDIRECT_URI="+site+"/callback",
		"AUTHAGENT_PUBLIC_CLIENT_ID=spa",
		"AUTHAGENT_PUBLIC_REDIRECT_URI="+publicRedirect,
		"AUTHAGENT_CLOSED_PORT="+strconv.Itoa(freePort(t)),
	)}
}

// withDPoPNonces adds a second Caddy to the world for the SDKs' DPoP nonce
// retries: `dpop_nonce on` holds for the whole auth_agent app, so it gets
// an app of its own and the first Caddy's token requests stay free of
// nonces. Its API's guard has `dpop required`; it has the public client
// too, for a refresh token bound by the code exchange's proof. Its
// addresses go into the environment as AUTHAGENT_DPOP_NONCE_ISSUER and
// AUTHAGENT_DPOP_NONCE_GUARDED_URL.
func (w *sdkWorld) withDPoPNonces(t *testing.T) {
	t.Helper()
	c := newCaddy(t, "")
	api := c.guardAPI(t, "\tagent_guard {\n\t\tscopes data:read\n\t\tdpop required\n\t}\n")
	c.start(fmt.Sprintf(`		default_permissions data:read
		dpop_nonce on
		client spa {
			name "Single Page App"
			public
			redirect_uri %s
			scopes openid profile email permissions data:read
		}`, publicRedirect))
	w.env = append(w.env, "AUTHAGENT_DPOP_NONCE_ISSUER="+c.base(), "AUTHAGENT_DPOP_NONCE_GUARDED_URL="+api)
}

// startSite runs the tiny website until the test ends (its standard input
// closing stops it).
func startSite(t *testing.T, node string, port int, issuer string) {
	t.Helper()
	cmd := exec.Command(node, filepath.Join("test", "site.mjs"), strconv.Itoa(port), issuer, "demo-site", clientSecret)
	cmd.Dir = filepath.Join(sdkDir, "js")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(strings.Builder)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.HasPrefix(line, "listening ")
		io.Copy(io.Discard, stdout)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("the tiny website did not start: %s", stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the tiny website did not start in 15 s: %s", stderr)
	}
}

// run runs an SDK's test command in dir with the world's environment.
func (w *sdkWorld) run(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = w.env
	out, err := cmd.CombinedOutput()
	t.Logf("%s %s:\n%s", name, strings.Join(args, " "), out)
	if err != nil {
		t.Fatalf("the SDK's tests in %s failed: %v", dir, err)
	}
}

// TestJavaScriptSDK runs @authagent/sdk's tests (sdk/js/test) against the
// world: the agent side and the website side, and their errors, and DPoP
// with and without server nonces.
func TestJavaScriptSDK(t *testing.T) {
	w := newSDKWorld(t)
	w.withDPoPNonces(t)
	w.run(t, filepath.Join(sdkDir, "js"), "npm", "test")
}

// TestReactSDK runs @authagent/react's tests (sdk/react/test): a real React
// renderer in jsdom, signing in through the real issuer.
func TestReactSDK(t *testing.T) {
	w := newSDKWorld(t)
	w.run(t, filepath.Join(sdkDir, "react"), "npm", "test")
}

// pytest finds a Python with pytest: Debian's (python3-pytest, which
// .ci/run installs), else the first python3 on PATH that has it. The test
// skips without one, and fails with CI=true.
func pytest(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(py); err == nil && exec.Command(path, "-m", "pytest", "--version").Run() == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no python3 with pytest: install Debian's python3-pytest")
	}
	t.Skip("no python3 with pytest: install Debian's python3-pytest")
	return ""
}

// TestPythonSDK runs the Python SDK's tests (sdk/python/tests) against the
// world, and DPoP with and without server nonces.
func TestPythonSDK(t *testing.T) {
	py := pytest(t)
	w := newSDKWorld(t)
	w.withDPoPNonces(t)
	w.env = append(w.env, "PYTHONDONTWRITEBYTECODE=1")
	w.run(t, filepath.Join("..", "sdk", "python"), py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests")
}

// TestGoClientSignsInToTheJSWebsite: the Go client's agent side signs in
// to the tiny website, whose JS SDK exchanges the code and verifies the ID
// token.
func TestGoClientSignsInToTheJSWebsite(t *testing.T) {
	w := newSDKWorld(t)
	ctx := context.Background()
	ac := client.New(w.caddy.base())
	creds := client.Credentials{AgentID: "go-js", AgentSecret: secret}
	if _, err := ac.RegisterAgent(ctx, client.Registration{AgentID: creds.AgentID, AgentSecret: secret, ModelName: "m", OwnerName: "O", OwnerEmail: "o@example.com"}); err != nil {
		t.Fatal(err)
	}
	// The browser: it keeps the site's session cookie, and follows no
	// redirect (the agent answers the sign-in, not the browser).
	jar, _ := cookiejar.New(nil)
	noRedirects := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirects.Get(w.site + "/login?scope=openid+profile+email")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("/login: %d", resp.StatusCode)
	}
	redirect, err := ac.SignIn(ctx, resp.Header.Get("Location"), creds)
	if err != nil {
		t.Fatalf("SignIn: %v", err)
	}
	resp, err = noRedirects.Get(redirect)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var done struct {
		Sub    string         `json:"sub"`
		Scope  string         `json:"scope"`
		Claims map[string]any `json:"claims"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&done); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/callback: %d %+v %v", resp.StatusCode, done, err)
	}
	if done.Sub != "go-js" || done.Claims["email"] != "o@example.com" || done.Scope != "openid profile email" {
		t.Fatalf("the website signed in %+v", done)
	}
}

// TestSDKPackagesArePublishable packs the npm packages as `npm publish`
// would (without publishing) and reads the Python package's metadata:
// versions, licences, entry points and the files each ships.
func TestSDKPackagesArePublishable(t *testing.T) {
	requireNodeSDK(t)
	cmd := exec.Command("npm", "pack", "--dry-run", "--json", "--workspace", "@authagent/sdk", "--workspace", "@authagent/react")
	cmd.Dir = sdkDir
	cmd.Stderr = io.Discard
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("npm pack: %v\n%s", err, out)
	}
	// npm prints the build's output before the JSON.
	var packs []struct {
		Name, Version string
		Files         []struct{ Path string }
	}
	if err := json.Unmarshal(out[strings.Index(string(out), "\n[")+1:], &packs); err != nil {
		t.Fatalf("npm pack --json: %v\n%s", err, out)
	}
	if len(packs) != 2 {
		t.Fatalf("packed %d packages, want 2", len(packs))
	}
	for _, p := range packs {
		files := map[string]bool{}
		for _, f := range p.Files {
			files[f.Path] = true
			if strings.HasPrefix(f.Path, "test/") || strings.Contains(f.Path, "node_modules") {
				t.Errorf("%s ships %s", p.Name, f.Path)
			}
		}
		for _, want := range []string{"package.json", "README.md", "LICENSE", "dist/index.js", "dist/index.d.ts"} {
			if !files[want] {
				t.Errorf("%s does not ship %s (has %v)", p.Name, want, files)
			}
		}
		if p.Version != "0.1.0" {
			t.Errorf("%s version %s", p.Name, p.Version)
		}
		var manifest struct {
			License string `json:"license"`
			Type    string `json:"type"`
			Exports map[string]any
		}
		dir := map[string]string{"@authagent/sdk": "js", "@authagent/react": "react"}[p.Name]
		b, err := os.ReadFile(filepath.Join(sdkDir, dir, "package.json"))
		if err != nil || json.Unmarshal(b, &manifest) != nil || manifest.License != "Apache-2.0" || manifest.Type != "module" || manifest.Exports["."] == nil {
			t.Errorf("%s manifest: %+v %v", p.Name, manifest, err)
		}
	}

	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 to read sdk/python/pyproject.toml")
	}
	script := `import sys, tomllib, pathlib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
for key in ("name", "version", "description", "readme", "requires-python", "license", "authors", "classifiers", "urls"):
    assert p.get(key), key
assert p["name"] == "authagent" and p["dependencies"] == [], p
assert pathlib.Path(p["readme"]).is_file() and pathlib.Path("LICENSE").is_file()
assert pathlib.Path("src/authagent/py.typed").is_file()
print(p["name"], p["version"])`
	cmd = exec.Command(py, "-c", script)
	cmd.Dir = filepath.Join("..", "sdk", "python")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sdk/python/pyproject.toml: %v\n%s", err, out)
	}
}

// TestSDKQuickStarts runs the quick starts of sdk/js/README.md and
// sdk/python/README.md as written — the first of each, the one of "An
// agent with a key, no secret" and the one of "DPoP-bound tokens" (which
// calls Caddyfile.example's guarded API) — each against a fresh Caddy on
// Caddyfile.example (its ports, its issuer http://localhost:8080).
func TestSDKQuickStarts(t *testing.T) {
	jsReadme := filepath.Join(sdkDir, "js", "README.md")
	pyReadme := filepath.Join("..", "sdk", "python", "README.md")
	t.Run("js", func(t *testing.T) {
		runJSQuickStart(t, readmeBlock(t, jsReadme, "js"))
	})
	t.Run("js with a key", func(t *testing.T) {
		runJSQuickStart(t, readmeBlockUnder(t, jsReadme, keyedQuickStart, "js"))
	})
	t.Run("js with DPoP", func(t *testing.T) {
		out := runJSQuickStart(t, readmeBlockUnder(t, jsReadme, dpopQuickStart, "js"))
		mustCallGuardedAPI(t, out)
	})
	t.Run("python", func(t *testing.T) {
		runPythonQuickStart(t, pytest(t), readmeBlock(t, pyReadme, "python"), true)
	})
	t.Run("python with a key", func(t *testing.T) {
		runPythonQuickStart(t, pythonWithCryptography(t), readmeBlockUnder(t, pyReadme, keyedQuickStart, "python"), true)
	})
	t.Run("python with DPoP", func(t *testing.T) {
		out := runPythonQuickStart(t, pythonWithCryptography(t), readmeBlockUnder(t, pyReadme, dpopQuickStart, "python"), false)
		mustCallGuardedAPI(t, out)
	})
}

// mustCallGuardedAPI checks that a DPoP quick start got through
// Caddyfile.example's guarded API (its answer names the agent's scopes)
// and that its token was DPoP-bound.
func mustCallGuardedAPI(t *testing.T, out string) {
	t.Helper()
	if !strings.Contains(out, "your scopes: profile data:read") || !strings.Contains(out, "DPoP profile data:read") {
		t.Fatalf("the DPoP quick start did not get a bound token through the guarded API:\n%s", out)
	}
}

// pythonWithCryptography is a Python with pytest and the cryptography
// package: the SDK takes a signing function, and its quick starts with a
// key sign with cryptography (Debian's python3-cryptography), which the
// SDK does not depend on. The test skips without it, and fails with CI=true.
func pythonWithCryptography(t *testing.T) string {
	t.Helper()
	py := pytest(t)
	if exec.Command(py, "-c", "import cryptography").Run() != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but the cryptography package is missing (.ci/run installs Debian's python3-cryptography)")
		}
		t.Skip("the quick starts with a key use the cryptography package: install Debian's python3-cryptography")
	}
	return py
}

// keyedQuickStart is the heading of the SDK READMEs' quick start of an
// agent that holds a key.
const keyedQuickStart = "## An agent with a key, no secret"

// dpopQuickStart is the heading of the SDK READMEs' quick start of
// DPoP-bound tokens.
const dpopQuickStart = "## DPoP-bound tokens"

// runJSQuickStart runs a JavaScript quick start against Caddyfile.example;
// it must print the agent's data:read. It returns what it printed.
func runJSQuickStart(t *testing.T, code string) string {
	t.Helper()
	node := requireNodeSDK(t)
	dir := t.TempDir()
	// The script imports "@authagent/sdk" as an installed package would be.
	if err := os.MkdirAll(filepath.Join(dir, "node_modules", "@authagent"), 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(filepath.Join(sdkDir, "js"))
	if err := os.Symlink(abs, filepath.Join(dir, "node_modules", "@authagent", "sdk")); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "quickstart.mjs")
	if err := os.WriteFile(script, []byte(code), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _ = runExample(t)
	out, err := exec.Command(node, script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "data:read") {
		t.Fatalf("the quick start: %v\n%s", err, out)
	}
	return string(out)
}

// runPythonQuickStart runs a Python quick start against
// Caddyfile.example, given the authorization_url of a website; it must
// print the agent's data:read and, when signsIn, leave the website's
// callback in redirect. It returns what it printed.
func runPythonQuickStart(t *testing.T, py, code string, signsIn bool) string {
	t.Helper()
	_, _ = runExample(t)
	// authorization_url is what a website gives the agent: here, one
	// for Caddyfile.example's demo-site.
	website := "authorization_url = " + strconv.Quote("http://localhost:8080/oauth2/authorize?response_type=code&client_id=demo-site"+
		"&redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcallback&scope=openid+profile&state=s-1"+
		"&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256") + "\n"
	if signsIn {
		code += "\nassert redirect.startswith('http://localhost:3000/callback?'), redirect\n"
	}
	cmd := exec.Command(py, "-c", website+code)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join("..", "sdk", "python", "src"), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "data:read") {
		t.Fatalf("the quick start: %v\n%s", err, out)
	}
	return string(out)
}

// readmeBlock is the first fenced block of lang in a README.
func readmeBlock(t *testing.T, path, lang string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fencedBlock(t, path, string(b), lang)
}

// readmeBlockUnder is the first fenced block of lang after the line
// heading in a README.
func readmeBlockUnder(t *testing.T, path, heading, lang string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no heading %q", path, heading)
	}
	return fencedBlock(t, path, rest, lang)
}

func fencedBlock(t *testing.T, path, text, lang string) string {
	t.Helper()
	_, rest, ok := strings.Cut(text, "```"+lang+"\n")
	code, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatalf("%s has no %s block", path, lang)
	}
	return code
}

// runExample runs Caddy on Caddyfile.example, as README's first command
// does, in a directory of its own, until the test ends; it returns that
// directory and the process's environment.
func runExample(t *testing.T) (dir string, env []string) {
	t.Helper()
	for _, port := range []string{"8080", "8081", "2019"} {
		l, err := net.Listen("tcp", "localhost:"+port)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("Caddyfile.example's port %s is taken: %v", port, err)
			}
			t.Skipf("Caddyfile.example's port %s is taken: %v", port, err)
		}
		l.Close()
	}
	for _, host := range []string{"localhost", "127.0.0.1"} {
		contract.watch(host+":8080", "api")
		contract.watch(host+":2019", "admin")
	}
	dir = t.TempDir()
	example, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile.example"), example, 0o600); err != nil {
		t.Fatal(err)
	}
	env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data-home"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config-home"))
	run := exec.Command(caddyBin, "run", "--config", "Caddyfile.example")
	run.Dir, run.Env = dir, env
	log := new(syncBuffer)
	run.Stdout, run.Stderr = log, log
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = run.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = run.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = run.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := http.Get("http://localhost:8080/.well-known/jwks.json")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return dir, env
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Caddyfile.example did not start:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
