package caddymodule

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/storage"
)

// testStorage is a third party's backend: a module of its own in the
// auth_agent.storage namespace, over the in-memory store.
type testStorage struct {
	Name string `json:"name,omitempty"`
}

var (
	testStorageOpens atomic.Int64
	testStorageDBs   = map[string]*storage.Memory{}
)

func (testStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "auth_agent.storage.test", New: func() caddy.Module { return new(testStorage) }}
}

func (s *testStorage) StorageKey() string      { return "test:" + s.Name }
func (s *testStorage) StorageSettings() string { return "" }
func (s *testStorage) OpenStorage(*zap.Logger) (storage.Backend, error) {
	testStorageOpens.Add(1)
	db := storage.NewMemory(nil)
	testStorageDBs[s.Name] = db
	return db, nil
}

func init() { caddy.RegisterModule(testStorage{}) }

// A backend added as a module is loaded from the config, not opened by
// validation, opened once when the app starts, and holds what the
// endpoints write.
func TestThirdPartyStorageModule(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := fmt.Sprintf(`{
		"admin": {"disabled": true, "config": {"persist": false}},
		"apps": {
			"auth_agent": {
				"issuer": "http://127.0.0.1:%d",
				"storage": {"module": "test", "name": "third-party"},
				"rate_limit": {"registration": "off", "authentication": "off", "refresh": "off", "api": "off"}
			},
			"http": {"servers": {"srv0": {"listen": ["127.0.0.1:%d"], "automatic_https": {"disable": true},
				"routes": [{"handle": [{"handler": "auth_agent"}]}]}}}
		}
	}`, port, port)
	var parsed caddy.Config
	if err := json.Unmarshal([]byte(cfg), &parsed); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&parsed); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if n := testStorageOpens.Load(); n != 0 {
		t.Fatalf("validation opened the storage %d times", n)
	}
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	if n := testStorageOpens.Load(); n != 1 {
		t.Fatalf("the storage was opened %d times, want once", n)
	}
	body := `{"agent_id":"third-party-agent","agent_secret":"Test123456!","model_name":"m","owner_email":"a@example.com"}`
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/api/register-agent", port), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("register: %d", resp.StatusCode)
	}
	if _, err := testStorageDBs["third-party"].GetAgent(t.Context(), "third-party-agent"); err != nil {
		t.Fatalf("the agent is not in the module's store: %v", err)
	}
}

// The storage JSON of earlier versions ({"backend": …}) still loads.
func TestUpgradeStorageJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"backend":"memory"}`:                     `{"module":"memory"}`,
		`{"path":"/x","encryption_key_file":"/k"}`: `{"encryption_key_file":"/k","module":"badger","path":"/x"}`,
		`{"backend":"badger","path":"/x"}`:         `{"module":"badger","path":"/x"}`,
		`{"module":"memory"}`:                      `{"module":"memory"}`,
	} {
		got, legacy, err := upgradeStorageJSON(json.RawMessage(in))
		if err != nil || string(got) != want || legacy != (in != `{"module":"memory"}`) {
			t.Errorf("upgradeStorageJSON(%s) = %s, %v, %v; want %s", in, got, legacy, err, want)
		}
	}
	for _, in := range []string{`[]`, `"x"`, `{`} {
		if _, _, err := upgradeStorageJSON(json.RawMessage(in)); err == nil {
			t.Errorf("upgradeStorageJSON(%s) accepted", in)
		}
	}
	cfg := `{"admin": {"disabled": true, "config": {"persist": false}}, "apps": {"auth_agent": {"issuer": "https://auth.example.com", "storage": {"backend": "memory"}}}}`
	var parsed caddy.Config
	if err := json.Unmarshal([]byte(cfg), &parsed); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&parsed); err != nil {
		t.Fatalf("a config in the previous JSON form: %v", err)
	}
}

// The postgres module expands placeholders in its DSN, names the server
// (never the password) and checks its settings, all without connecting.
func TestPostgresStorageProvision(t *testing.T) {
	t.Setenv("AUTH_AGENT_TEST_DSN", "postgres://aa:hunter2@db.internal:6543/auth?sslmode=disable")
	p := &PostgresStorage{DSN: "{env.AUTH_AGENT_TEST_DSN}"}
	if err := p.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	if p.where != "db.internal:6543/auth" {
		t.Errorf("server: %q", p.where)
	}
	if strings.Contains(p.StorageKey(), "hunter2") {
		t.Errorf("the storage key holds the password: %s", p.StorageKey())
	}
	for name, bad := range map[string]*PostgresStorage{
		"empty after expansion": {DSN: "{env.AUTH_AGENT_UNSET_DSN}"},
		"unparsable":            {DSN: "postgres://aa:hunter2@db.internal:port/auth"},
		"min above max":         {DSN: "postgres://db/auth", MinConns: 5, MaxConns: 2},
		"negative timeout":      {DSN: "postgres://db/auth", QueryTimeout: -1},
	} {
		err := bad.Provision(caddy.Context{})
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the password: %v", name, err)
		}
	}
}
