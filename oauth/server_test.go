package oauth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

type testServer struct {
	*oauth.Server
	store *storage.Memory
}

// testClientSecret is the secret of the test servers' "site" client.
const testClientSecret = "0123456789abcdef0123456789abcdef"

// testRedirect is the registered redirect URI of the "site" client.
const testRedirect = "https://site.example.com/callback"

func newServer(tb testing.TB, params agents.Argon2Params) testServer {
	tb.Helper()
	site, _, err := oauth.NewClient(oauth.ClientSpec{
		ID: "site", Name: "Site", Secret: testClientSecret, RedirectURIs: []string{testRedirect, "http://127.0.0.1:8080/cb"},
		Scopes: []string{"openid", "profile", "email", "data:read"},
	}, oauth.ClientFromConfig, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return newServerAt(tb, params, nil, site)
}

// newServerAt is newServer on the clock now (nil: time.Now), with the
// given configured clients.
func newServerAt(tb testing.TB, params agents.Argon2Params, now func() time.Time, clients ...*oauth.Client) testServer {
	tb.Helper()
	store := storage.NewMemory(now)
	tb.Cleanup(func() { store.Close() })
	return newServerOn(tb, store, params, now, clients...)
}

// newServerOn is a server on store, as each process sharing it would run
// one: its own keys manager, registry and view of the change log, the code
// key from the store.
func newServerOn(tb testing.TB, store *storage.Memory, params agents.Argon2Params, now func() time.Time, clients ...*oauth.Client) testServer {
	tb.Helper()
	return newServerAlg(tb, store, params, now, oauth.AlgRS256, clients...)
}

// newServerAlg is newServerOn signing access tokens with alg.
func newServerAlg(tb testing.TB, store *storage.Memory, params agents.Argon2Params, now func() time.Time, alg string, clients ...*oauth.Client) testServer {
	tb.Helper()
	return newServerWith(tb, store, params, now, alg, nil, clients...)
}

// newServerWith is newServerAlg with its configuration and dependencies
// changed by configure (nil: as they are).
func newServerWith(tb testing.TB, store *storage.Memory, params agents.Argon2Params, now func() time.Time, alg string, configure func(*oauth.Config, *oauth.Deps), clients ...*oauth.Client) testServer {
	tb.Helper()
	codeKey, err := store.EnsureSecret(context.Background(), oauth.CodeKeyName, []byte(fmt.Sprint(time.Now().UnixNano())))
	if err != nil {
		tb.Fatal(err)
	}
	keys, err := oauth.NewKeyManager(context.Background(), store, oauth.KeyPolicy{Algs: []string{oauth.AlgRS256, alg}, Rotation: 24 * time.Hour}, now, nil)
	if err != nil {
		tb.Fatal(err)
	}
	registry := agents.NewService(store, agents.NewHasher(params, 0), agents.Config{DefaultPermissions: []string{"data:read"}}, now)
	tokens := oauth.NewTokens(issuer, time.Hour, alg, keys, now)
	cfg := oauth.Config{Issuer: issuer, RegistrationMode: oauth.RegistrationOpen}
	deps := oauth.Deps{
		Agents: registry, Keys: keys, Tokens: tokens, Clients: clients, Store: store, CodeKey: codeKey, Now: now,
	}
	if configure != nil {
		configure(&cfg, &deps)
	}
	srv := oauth.NewServer(cfg, deps)
	return testServer{srv, store}
}

func (s testServer) call(method, path, auth, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

func (s testServer) agentCount(tb testing.TB) int {
	list, err := s.store.ListAgents(context.Background(), "", 1000)
	if err != nil {
		tb.Fatal(err)
	}
	return len(list)
}

func (s testServer) token(tb testing.TB, id, secret string) string {
	rec := s.call("POST", "/api/agent-auth", "", fmt.Sprintf(`{"agent_id":%q,"agent_secret":%q}`, id, secret))
	var resp struct {
		Data struct {
			AccessToken string `json:"access_token"`
		} `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.Data.AccessToken == "" {
		tb.Fatalf("agent-auth: %d %s", rec.Code, rec.Body)
	}
	return resp.Data.AccessToken
}

// checkShape fails on a 5xx or on an error body not in the SPEC's shape.
func checkShape(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if rec.Code >= 400 {
		var e map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["error"] == "" || e["error_description"] == "" || len(e) != 2 {
			t.Fatalf("error body %q", rec.Body)
		}
	}
}

var cheapParams = agents.Argon2Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

func FuzzJSONBodies(f *testing.F) {
	for _, s := range []string{
		`{"agent_id":"fuzz-agent","agent_secret":"Test123456!","model_name":"m","owner_email":"a@example.com"}`,
		`{"agent_id":"seed-agent","agent_secret":"Test123456!","scope":"profile"}`,
		`{"model_name":"x","owner_email":"b@example.com","agent_secret":"Newer123456!","current_agent_secret":"Test123456!"}`,
		`{`, `[]`, `null`, `{"agent_id":1}`, `{"scope":"a\u0000"}`, `{} {}`, `{"resource":"http://x#y"}`,
	} {
		f.Add(s)
	}
	s := newServer(f, cheapParams)
	if rec := s.call("POST", "/api/register-agent", "", `{"agent_id":"seed-agent","agent_secret":"Test123456!","model_name":"m","owner_email":"a@example.com"}`); rec.Code != 201 {
		f.Fatalf("seed: %d %s", rec.Code, rec.Body)
	}
	tok := "Bearer " + s.token(f, "seed-agent", "Test123456!")
	f.Fuzz(func(t *testing.T, body string) {
		before := s.agentCount(t)
		rec := s.call("POST", "/api/register-agent", "", body)
		checkShape(t, rec)
		if after := s.agentCount(t); rec.Code != 201 && after != before {
			t.Fatalf("a refused registration (%d) changed the store", rec.Code)
		}
		if rec.Code == 201 {
			var resp struct {
				Data struct {
					AgentID string `json:"agent_id"`
				}
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &resp)
			_ = s.store.DeleteAgent(context.Background(), resp.Data.AgentID)
		}
		checkShape(t, s.call("POST", "/api/agent-auth", "", body))
		prof, _ := s.store.GetAgent(context.Background(), "seed-agent")
		rec = s.call("PUT", "/api/agents/profile", tok, body)
		checkShape(t, rec)
		if rec.Code != 200 {
			if now, _ := s.store.GetAgent(context.Background(), "seed-agent"); now.UpdatedAt != prof.UpdatedAt || now.SecretHash != prof.SecretHash {
				t.Fatalf("a refused profile update (%d) changed the agent", rec.Code)
			}
		} else {
			// Put the secret back so later inputs can still authenticate.
			_, _ = s.store.UpdateAgent(context.Background(), "seed-agent", func(a *agents.Agent) error { a.SecretHash = prof.SecretHash; return nil })
		}
	})
}

func FuzzBearerHeader(f *testing.F) {
	s := newServer(f, cheapParams)
	s.call("POST", "/api/register-agent", "", `{"agent_id":"seed-agent","agent_secret":"Test123456!","model_name":"m","owner_email":"a@example.com"}`)
	tok := s.token(f, "seed-agent", "Test123456!")
	parts := strings.Split(tok, ".")
	for _, h := range []string{"Bearer " + tok, "Bearer " + parts[0] + "." + parts[1] + ".", "Bearer " + parts[0] + ".e30." + parts[2], "Bearer x", "Basic x", ""} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, h string) {
		rec := s.call("GET", "/api/agents/profile", h, "")
		checkShape(t, rec)
		if rec.Code != 200 && rec.Code != 401 && rec.Code != 403 {
			t.Fatalf("status %d for %q", rec.Code, h)
		}
		if rec.Code == 200 && h != "Bearer "+tok && !strings.EqualFold(strings.TrimSpace(h), "bearer "+tok) {
			// Only the issued token (modulo scheme case and spacing) authenticates.
			if got, err := oauth.ParseBearer(h); err != nil || got != tok {
				t.Fatalf("accepted %q", h)
			}
		}
	})
}

func TestServerEdgeCases(t *testing.T) {
	s := newServer(t, cheapParams)
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/api/register-agent", 405, "POST"},
		{"PATCH", "/api/agents/profile", 405, "GET, PUT"},
		{"POST", "/.well-known/jwks.json", 405, "GET, HEAD"},
		{"GET", "/api/unknown", 404, ""},
		{"GET", "/oauth2/unknown", 404, ""},
	} {
		rec := s.call(tc.method, tc.path, "", "")
		checkShape(t, rec)
		if rec.Code != tc.status || rec.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s = %d Allow %q", tc.method, tc.path, rec.Code, rec.Header().Get("Allow"))
		}
	}
	if !s.Handles("/api/x") || !s.Handles("/.well-known/jwks.json") || s.Handles("/") || s.Handles("/.well-known/other") {
		t.Error("Handles claims the wrong paths")
	}
	rec := s.call("HEAD", "/.well-known/jwks.json", "", "")
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "application/jwk-set+json" {
		t.Errorf("HEAD jwks: %d %q", rec.Code, rec.Body)
	}
	if w := oauth.AsError(fmt.Errorf("disk on fire")); w.Status != 500 || strings.Contains(w.Description, "fire") {
		t.Errorf("internal errors must not leak: %+v", w)
	}
	rec = httptest.NewRecorder()
	oauth.WriteError(rec, oauth.ErrInvalidToken("r", "bad \"quote\"\n"))
	if h := rec.Header().Get("WWW-Authenticate"); strings.ContainsAny(h, "\n") || strings.Count(h, `"`) != 6 {
		t.Errorf("challenge not escaped: %q", h)
	}
	_ = http.StatusOK
}

func jsonField(tb testing.TB, body []byte, key string) string {
	tb.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		tb.Fatal(err)
	}
	s, _ := m[key].(string)
	return s
}

func decodeSegment(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
