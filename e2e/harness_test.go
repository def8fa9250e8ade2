package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/client"
)

// caddyBin is the binary every test runs, built once by TestMain.
var caddyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "authagent-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	caddyBin = filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", caddyBin, "./cmd/caddy")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building caddy:", err)
		os.Exit(1)
	}
	if err := loadContract(); err != nil {
		fmt.Fprintln(os.Stderr, "the API's documents:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if !contract.report() && code == 0 {
		code = 1
	}
	os.Exit(code)
}

// caddy is one running Caddy process.
type caddy struct {
	t         *testing.T
	dir       string // home, data and config live here
	httpPort  int
	adminPort int
	cmd       *exec.Cmd
	log       *bytes.Buffer
	done      chan struct{}
	// sites is appended to the Caddyfile: more site blocks (APIs behind
	// agent_guard).
	sites string
	// globals are more global options.
	globals string
	// issuer and storage replace the defaults (this Caddy's own URL, Badger
	// in dir/db): instances of one cluster share both.
	issuer, storage string
	// siteExtra is more directives of the IdP's site.
	siteExtra string
	// raw, when set, is the whole Caddyfile (a load balancer).
	raw string
	// extraEnv is more of the process's environment (NAME=value).
	extraEnv []string
}

// freePort returns a port nothing listens on now and that no earlier call
// returned: the kernel may hand a just-closed port out again, and two
// Caddys (or a Caddy's admin and HTTP listeners) must never get the same.
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !portsGiven[port] {
			portsGiven[port] = true
			return port
		}
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// newCaddy prepares (but does not start) a Caddy whose state lives in dir.
func newCaddy(t *testing.T, dir string) *caddy {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	c := &caddy{t: t, dir: dir, httpPort: freePort(t), adminPort: freePort(t)}
	contract.watch(fmt.Sprintf("127.0.0.1:%d", c.httpPort), "api")
	contract.watch(fmt.Sprintf("127.0.0.1:%d", c.adminPort), "admin")
	return c
}

func (c *caddy) base() string { return fmt.Sprintf("http://127.0.0.1:%d", c.httpPort) }

// config renders a Caddyfile: global auth_agent settings in opts, and a
// site serving the IdP.
func (c *caddy) config(opts string) string {
	if c.raw != "" {
		return c.raw
	}
	issuer, storage := c.issuer, c.storage
	if issuer == "" {
		issuer = c.base()
	}
	if storage == "" {
		storage = filepath.Join(c.dir, "db")
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
%s
	auth_agent {
		issuer %s
		storage %s
		# Tests register and fail far more than the production budgets
		# allow; the rate-limit tests turn them back on below.
		rate_limit {
			registration off
			authentication off
			refresh off
			api off
			authorization off
		}
%s
	}
}

http://127.0.0.1:%d {
%s
	auth_agent
	respond "upstream" 200
}
%s`, c.adminPort, c.globals, issuer, storage, opts, c.httpPort, c.siteExtra, c.sites)
}

func (c *caddy) writeConfig(opts string) string {
	path := filepath.Join(c.dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(c.config(opts)), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return path
}

func (c *caddy) env() []string {
	env := append(os.Environ(), "HOME="+c.dir, "XDG_DATA_HOME="+filepath.Join(c.dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(c.dir, "config"))
	return append(env, c.extraEnv...)
}

// start runs Caddy with opts and waits until it answers.
func (c *caddy) start(opts string) {
	c.t.Helper()
	if err := c.tryStart(opts); err != nil {
		c.t.Fatalf("caddy did not start: %v\n%s", err, c.log)
	}
	c.t.Cleanup(c.stop)
}

func (c *caddy) tryStart(opts string) error {
	path := c.writeConfig(opts)
	c.log = new(bytes.Buffer)
	c.cmd = exec.Command(caddyBin, "run", "--config", path, "--adapter", "caddyfile")
	c.cmd.Env = c.env()
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		return err
	}
	c.done = make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			return fmt.Errorf("caddy exited")
		default:
		}
		resp, err := http.Get(c.base() + "/.well-known/jwks.json")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 && c.sitesListening() {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("caddy did not answer within 20s")
}

// siteAddress finds the loopback addresses of the extra sites.
var siteAddress = regexp.MustCompile(`http://(127\.0\.0\.1:\d+)`)

// sitesListening reports whether every extra site accepts connections:
// Caddy starts its servers one after another, so the IdP's answering does
// not mean a guarded API's listener is up yet.
func (c *caddy) sitesListening() bool {
	for _, m := range siteAddress.FindAllStringSubmatch(c.sites, -1) {
		conn, err := net.DialTimeout("tcp", m[1], time.Second)
		if err != nil {
			return false
		}
		conn.Close()
	}
	return true
}

// kill9 ends Caddy with SIGKILL: no cleanup, no flush.
func (c *caddy) kill9() {
	c.t.Helper()
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

func (c *caddy) stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// reload runs `caddy reload` with new options.
func (c *caddy) reload(opts string) {
	c.t.Helper()
	path := c.writeConfig(opts)
	cmd := exec.Command(caddyBin, "reload", "--config", path, "--adapter", "caddyfile", "--address", fmt.Sprintf("127.0.0.1:%d", c.adminPort))
	cmd.Env = c.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("caddy reload: %v\n%s\n%s", err, out, c.log)
	}
	// The old configuration's server closes its idle connections as it
	// stops; a POST sent on one of them just then fails with EOF, and Go
	// does not retry a POST. Clients reconnect after a reload, as ours do.
	http.DefaultClient.CloseIdleConnections()
}

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

// data returns the /api/* envelope's data object.
func (r response) data() map[string]any {
	d, _ := r.json["data"].(map[string]any)
	return d
}

func (r response) str(key string) string {
	if d := r.data(); d != nil {
		s, _ := d[key].(string)
		return s
	}
	s, _ := r.json[key].(string)
	return s
}

func do(t *testing.T, method, url string, header map[string]string, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, body: b}
	_ = json.Unmarshal(b, &r.json)
	return r
}

// wantError asserts the status and the SPEC's error shape.
func wantError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.json["error"] != code {
		t.Fatalf("want %d %s, got %d %s", status, code, r.status, r.body)
	}
	if d, _ := r.json["error_description"].(string); d == "" {
		t.Fatalf("error without error_description: %s", r.body)
	}
	if len(r.json) != 2 {
		t.Fatalf("error body has extra fields: %s", r.body)
	}
}

func registerBody(id, secret string) string {
	b, _ := json.Marshal(map[string]string{
		"agent_id": id, "agent_secret": secret, "model_name": "gpt-4",
		"owner_name": "Test User", "owner_email": "test@example.com",
	})
	return string(b)
}

func (c *caddy) register(t *testing.T, id, secret string) response {
	t.Helper()
	return do(t, "POST", c.base()+"/api/register-agent", nil, registerBody(id, secret))
}

// token is an access token the agent got for itself, through the Go
// client.
func (c *caddy) token(t *testing.T, id, secret string) string {
	t.Helper()
	tok, err := client.New(c.base()).Authenticate(context.Background(), client.Credentials{AgentID: id, AgentSecret: secret})
	if err != nil {
		t.Fatalf("agent-auth for %s: %v", id, err)
	}
	return tok.AccessToken
}

func (c *caddy) admin(t *testing.T, method, path, body string) response {
	t.Helper()
	return do(t, method, fmt.Sprintf("http://127.0.0.1:%d%s", c.adminPort, path), nil, body)
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
