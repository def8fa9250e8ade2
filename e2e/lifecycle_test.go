package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/client"
)

// TestReloadKeepsAgents reloads with a changed config while clients keep
// calling, and checks every agent, key and token survives and no request
// fails.
func TestReloadKeepsAgents(t *testing.T) {
	c := newCaddy(t, "")
	c.start("		default_permissions data:read")
	for i := range 20 {
		if r := c.register(t, fmt.Sprintf("agent-%02d", i), secret); r.status != 201 {
			t.Fatalf("register: %d %s", r.status, r.body)
		}
	}
	tok := c.token(t, "agent-00", secret)
	jwksBefore := do(t, "GET", c.base()+"/.well-known/jwks.json", nil, "").body

	// Caddy binds a new SO_REUSEPORT socket for each config and closes the
	// old one when the old config stops; the kernel resets connections
	// still queued on the old socket, before Caddy has read a byte of
	// them. Nothing was acknowledged on those, and clients retry them, as
	// this one does (a few times: each retry dials again). Keep-alive
	// connections, as real clients hold, make such dials rare. Every
	// request must end in a 200.
	client := &http.Client{Transport: contract.wrap(&http.Transport{MaxIdleConnsPerHost: 8})}
	defer client.CloseIdleConnections()
	var failures, calls, resets atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", c.base()+"/api/agents/profile", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				for attempt := 0; err != nil && attempt < 5; attempt++ {
					resets.Add(1)
					time.Sleep(10 * time.Millisecond)
					resp, err = client.Do(req)
				}
				calls.Add(1)
				if err != nil || resp.StatusCode != 200 {
					if failures.Add(1) == 1 {
						if err != nil {
							firstFailure.Store(err.Error())
						} else {
							firstFailure.Store(resp.Status)
						}
					}
				}
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	for i := range 3 {
		c.reload(fmt.Sprintf("		default_permissions data:read extra:%d\n		access_token_lifetime %dm", i, 30+i))
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed during reloads; first: %v", f, calls.Load(), firstFailure.Load())
	}
	if calls.Load() < 10 {
		t.Fatalf("only %d requests ran during the reloads", calls.Load())
	}
	t.Logf("%d requests during 3 reloads, %d connection resets retried", calls.Load(), resets.Load())

	list := c.admin(t, "GET", "/auth_agent/agents", "")
	if n := len(list.json["agents"].([]any)); n != 20 {
		t.Fatalf("%d agents after reload, want 20", n)
	}
	if got := do(t, "GET", c.base()+"/.well-known/jwks.json", nil, "").body; string(got) != string(jwksBefore) {
		t.Fatalf("signing keys changed across reload:\n%s\n%s", jwksBefore, got)
	}
	// The new config is in effect: new default permissions and lifetime.
	r := c.register(t, "after-reload", secret)
	if fmt.Sprint(r.data()["permissions"]) != "[data:read extra:2]" {
		t.Fatalf("new config not in effect: %s", r.body)
	}
	a := do(t, "POST", c.base()+"/api/agent-auth", nil, `{"agent_id":"after-reload","agent_secret":"Test123456!"}`)
	if a.data()["expires_in"].(float64) != 32*60 {
		t.Fatalf("new lifetime not in effect: %s", a.body)
	}
}

// TestKill9KeepsAcknowledgedAgents registers agents from several clients,
// SIGKILLs Caddy in the middle, restarts it and finds every agent whose
// registration was acknowledged.
func TestKill9KeepsAcknowledgedAgents(t *testing.T) {
	dir := t.TempDir()
	c := newCaddy(t, dir)
	c.start("")
	tokBefore := c.token(t, c.registerOK(t, "before-kill"), secret)

	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-agent-%03d", w, i)
				resp, err := http.Post(c.base()+"/api/register-agent", "application/json", strings.NewReader(registerBody(id, secret)))
				if err != nil {
					return // the server is gone
				}
				resp.Body.Close()
				if resp.StatusCode == 201 {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	c.kill9()
	close(stop)
	wg.Wait()
	if len(acked) < 5 {
		t.Fatalf("only %d registrations before the kill", len(acked))
	}

	c2 := newCaddy(t, dir)
	c2.start("")
	for _, id := range acked {
		if r := c2.admin(t, "GET", "/auth_agent/agents/"+id, ""); r.status != 200 {
			t.Fatalf("acknowledged agent %s lost after kill -9 (%d of %d acknowledged)", id, r.status, len(acked))
		}
	}
	c2.token(t, acked[len(acked)-1], secret)
	// Signing keys persisted too: a token from before the kill still verifies.
	// (The issuer is the old port, so check the key id is still published.)
	hdr, _ := decodeJWT(t, tokBefore)
	if !strings.Contains(string(do(t, "GET", c2.base()+"/.well-known/jwks.json", nil, "").body), hdr["kid"].(string)) {
		t.Fatal("the signing key did not survive the restart")
	}
	t.Logf("%d acknowledged registrations all survived kill -9", len(acked))
}

// TestTokensSurviveRestart: same port, same issuer: a token issued before a
// restart is accepted after it.
func TestTokensSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	c := newCaddy(t, dir)
	c.start("")
	tok := c.token(t, c.registerOK(t, "restart-agent"), secret)
	c.stop()
	c.start("")
	if r := do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), ""); r.status != 200 {
		t.Fatalf("token from before the restart: %d %s", r.status, r.body)
	}
	// Revocations survive a restart too: disabling voids the token, and
	// after kill -9, restart and re-enabling it stays void.
	c.admin(t, "PATCH", "/auth_agent/agents/restart-agent", `{"disabled":true}`)
	c.kill9()
	c.start("")
	c.admin(t, "PATCH", "/auth_agent/agents/restart-agent", `{"disabled":false}`)
	wantError(t, do(t, "GET", c.base()+"/api/agents/profile", bearer(tok), ""), 401, "invalid_token")
}

// TestSecondProcessOnSameDirectory: a second Caddy on the same storage fails
// with a message naming the directory, and the first keeps serving.
func TestSecondProcessOnSameDirectory(t *testing.T) {
	dir := t.TempDir()
	c := newCaddy(t, dir)
	c.start("")
	c2 := newCaddy(t, dir) // same storage path, other ports
	err := c2.tryStart("")
	c2.stop()
	if err == nil {
		t.Fatal("a second process opened the same database")
	}
	want := filepath.Join(dir, "db")
	if !strings.Contains(c2.log.String(), want) || !strings.Contains(c2.log.String(), "locked") {
		t.Fatalf("error does not name the locked directory %s:\n%s", want, c2.log)
	}
	c.registerOK(t, "still-serving")
}

// TestEncryptedStorage: with encryption_key_file, nothing readable is on disk.
func TestEncryptedStorage(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "db.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCaddy(t, dir)
	c.start("		encryption_key_file " + keyFile)
	body := strings.Replace(registerBody("secret-keeper", secret), "test@example.com", "plaintext-marker@example.com", 1)
	if r := do(t, "POST", c.base()+"/api/register-agent", nil, body); r.status != 201 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	c.stop()
	err := filepath.Walk(filepath.Join(dir, "db"), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(raw), "plaintext-marker") {
			t.Errorf("%s holds plaintext", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.start("		encryption_key_file " + keyFile)
	c.token(t, "secret-keeper", secret)
}

// TestIdleAndLoadedRSS reports the binary's resident memory idle and after a
// burst of registrations and authentications (measured, not asserted).
func TestIdleAndLoadedRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	c := newCaddy(t, "")
	c.start("")
	time.Sleep(500 * time.Millisecond)
	idle := rssKiB(t, c.cmd.Process.Pid)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				id := fmt.Sprintf("rss-%d-%d", w, i)
				for _, req := range []struct{ path, body string }{
					{"/api/register-agent", registerBody(id, secret)},
					{"/api/agent-auth", fmt.Sprintf(`{"agent_id":%q,"agent_secret":%q}`, id, secret)},
				} {
					resp, err := http.Post(c.base()+req.path, "application/json", strings.NewReader(req.body))
					if err != nil || resp.StatusCode >= 300 {
						failed.Add(1)
					}
					if resp != nil {
						resp.Body.Close()
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d requests failed under load", n)
	}
	loaded := rssKiB(t, c.cmd.Process.Pid)
	t.Logf("RSS idle %d KiB, after 200 concurrent registrations+authentications %d KiB", idle, loaded)
}

func rssKiB(t *testing.T, pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skip("no /proc")
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		var kib int
		if _, err := fmt.Sscanf(s.Text(), "VmRSS: %d kB", &kib); err == nil {
			return kib
		}
	}
	return 0
}

// registerOK registers the agent id (with the tests' secret) through the
// Go client.
func (c *caddy) registerOK(t *testing.T, id string) string {
	t.Helper()
	_, err := client.New(c.base()).RegisterAgent(context.Background(), client.Registration{
		AgentID: id, AgentSecret: secret, ModelName: "gpt-4", OwnerName: "Test User", OwnerEmail: "test@example.com"})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	return id
}
