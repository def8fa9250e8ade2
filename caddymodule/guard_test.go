package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/guard"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

// testGuard is an agent_guard { scopes data:read } over this Caddy's own
// app: a local verifier and the api budget as rate_limit api sets it.
type testGuard struct {
	guard       *Guard
	tokens      *oauth.Tokens
	revocations *oauth.Revocations
}

func newTestGuard(tb testing.TB, api string) *testGuard {
	tb.Helper()
	const issuer = "http://auth.example.com"
	db := storage.NewMemory(nil)
	tb.Cleanup(func() { db.Close() })
	keys, err := oauth.NewKeyManager(context.Background(), db, oauth.KeyPolicy{Algs: []string{oauth.AlgES256}, Rotation: 24 * time.Hour}, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	limits, poolKey, err := buildLimits(&RateLimitConfig{API: api}, caddy.NewReplacer(), zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _, _ = limitStores.Delete(poolKey) })
	rev := oauth.NewRevocations(db, nil, nil)
	app := &App{state: new(atomic.Pointer[appState])}
	app.state.Store(&appState{verifier: guard.NewLocalVerifier(issuer, keys.Lookup, rev), limits: limits})
	g := &Guard{Scopes: []string{"data:read"}, app: app, log: zap.NewNop(), metadataPath: guard.MetadataPath(""), cors: newCORS(nil),
		decisions: guardCounters("test")}
	return &testGuard{guard: g, tokens: oauth.NewTokens(issuer, time.Hour, oauth.AlgES256, keys, nil), revocations: rev}
}

// token is an access token of the agent with data:read.
func (tg *testGuard) token(tb testing.TB, agent string) string {
	tb.Helper()
	tok, err := tg.tokens.IssueAccessToken(oauth.AccessGrant{
		Subject: agent, ClientID: agent + "-client", Scopes: []string{"openid", "profile", "data:read"}, ModelName: "test-model"})
	if err != nil {
		tb.Fatal(err)
	}
	return tok.Token
}

// upstreamSaw is what the handler after the guard saw.
type upstreamSaw struct {
	called       bool
	header       http.Header
	placeholders map[string]string
}

// serve sends r through the guard to a next handler that records what it
// saw, with the request prepared as Caddy's server prepares it.
func (tg *testGuard) serve(r *http.Request) (*httptest.ResponseRecorder, *upstreamSaw) {
	w := httptest.NewRecorder()
	saw := &upstreamSaw{}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		saw.called, saw.header = true, r.Header.Clone()
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		saw.placeholders = map[string]string{}
		for _, k := range []string{"http.auth.agent.id", "http.auth.agent.client_id", "http.auth.agent.scopes", "http.auth.agent.model", "http.auth.user.id"} {
			saw.placeholders[k] = repl.ReplaceAll("{"+k+"}", "<unset>")
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	repl := caddy.NewReplacer()
	// What an authentication handler earlier in the route would have set.
	repl.Set("http.auth.user.id", "someone-else")
	r = caddyhttp.PrepareRequest(r, repl, w, nil)
	if err := tg.guard.ServeHTTP(w, r, next); err != nil {
		panic(err)
	}
	return w, saw
}

func TestIsAgentHeader(t *testing.T) {
	for name, want := range map[string]bool{
		"X-Agent-Id": true, "x-agent-model": true, "X_Agent_Id": true, "x_AGENT-scopes": true, "X-Agent_Client-Id": true,
		"X-Agent-": false, "X-Agent": false, "X-Agents-Id": false, "X-Forwarded-For": false, "Agent-Id": false, "Y-Agent-Id": false, "": false,
	} {
		if got := isAgentHeader(name); got != want {
			t.Errorf("isAgentHeader(%q) = %v, want %v", name, got, want)
		}
	}
}

// A request that passes: the caller's look-alikes are gone, the upstream
// learns who called from headers and placeholders, and the answer says
// where the agent stands and that it depends on the Origin.
func TestGuardServeHTTPPasses(t *testing.T) {
	tg := newTestGuard(t, "100/h")
	tok := tg.token(t, "passes")
	r := httptest.NewRequest(http.MethodGet, "http://api.example.com/data", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	for k, v := range map[string]string{"X-Agent-Id": "spoofed", "X-Agent-Model": "spoofed", "X-Agent-Extra": "spoofed"} {
		r.Header.Set(k, v)
	}
	r.Header["X_agent_id"] = []string{"spoofed"}
	r.Header["x-agent-scopes"] = []string{"spoofed"}
	w, saw := tg.serve(r)
	if !saw.called || w.Code != http.StatusNoContent {
		t.Fatalf("refused: %d %s %v", w.Code, w.Body, w.Header())
	}
	want := http.Header{
		"Authorization":     {"Bearer " + tok},
		"X-Agent-Id":        {"passes"},
		"X-Agent-Client-Id": {"passes-client"},
		"X-Agent-Scopes":    {"openid profile data:read"},
		"X-Agent-Model":     {"test-model"},
	}
	if len(saw.header) != len(want) {
		t.Fatalf("upstream headers %v, want %v", saw.header, want)
	}
	for k, v := range want {
		if got := saw.header.Values(k); len(got) != 1 || got[0] != v[0] {
			t.Errorf("upstream %s = %q, want %q", k, got, v)
		}
	}
	for k, v := range map[string]string{
		"http.auth.agent.id": "passes", "http.auth.agent.client_id": "passes-client", "http.auth.agent.scopes": "openid profile data:read",
		"http.auth.agent.model": "test-model", "http.auth.user.id": "passes",
	} {
		if saw.placeholders[k] != v {
			t.Errorf("{%s} = %q, want %q", k, saw.placeholders[k], v)
		}
	}
	h := w.Header()
	if h.Values("Vary") == nil || h.Values("Vary")[0] != "Origin" || h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS headers without an Origin: %v", h)
	}
	if h.Get("X-RateLimit-Limit") != "100" || h.Get("X-RateLimit-Remaining") != "99" || h.Get("X-RateLimit-Reset") == "" {
		t.Errorf("rate-limit headers: %v", h)
	}

	// The same token again (now from the cache), with strip_token.
	tg.guard.StripToken = true
	r = httptest.NewRequest(http.MethodGet, "http://api.example.com/data", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	w, saw = tg.serve(r)
	if !saw.called || saw.header.Get("Authorization") != "" || saw.header.Get("X-Agent-Id") != "passes" {
		t.Fatalf("strip_token: %d %v", w.Code, saw.header)
	}
	if w.Header().Get("X-RateLimit-Remaining") != "98" {
		t.Errorf("second call: %v", w.Header())
	}
}

// A browser's request gets the CORS headers, refused or not.
func TestGuardServeHTTPCORS(t *testing.T) {
	tg := newTestGuard(t, "off")
	for _, auth := range []string{"", "Bearer " + tg.token(t, "browser")} {
		r := httptest.NewRequest(http.MethodGet, "http://api.example.com/mcp", nil)
		r.Header.Set("Origin", "https://inspector.example")
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w, saw := tg.serve(r)
		if saw.called != (auth != "") {
			t.Fatalf("auth %q: called %v, status %d", auth, saw.called, w.Code)
		}
		h := w.Header()
		if h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Vary") != "Origin" || !strings.Contains(h.Get("Access-Control-Expose-Headers"), "Www-Authenticate") {
			t.Errorf("auth %q: CORS headers %v", auth, h)
		}
	}
}

// Refusals, also of a token served from the cache: no token, a token in
// the query, a revoked token, a Basic header.
func TestGuardServeHTTPRefuses(t *testing.T) {
	tg := newTestGuard(t, "off")
	tok := tg.token(t, "refused")
	ok := httptest.NewRequest(http.MethodGet, "http://api.example.com/", nil)
	ok.Header.Set("Authorization", "Bearer "+tok)
	if _, saw := tg.serve(ok); !saw.called {
		t.Fatal("a valid token was refused")
	}
	for name, h := range map[string]string{
		"none": "", "basic": "Basic " + tok, "two spaces": "Bearer  " + tok + " x", "scheme only": "Bearer",
		"lower-case scheme, cached token": "bearer " + tok,
	} {
		r := httptest.NewRequest(http.MethodGet, "http://api.example.com/?access_token="+tok, nil)
		if h != "" {
			r.Header.Set("Authorization", h)
		}
		w, saw := tg.serve(r)
		if name == "lower-case scheme, cached token" {
			if !saw.called {
				t.Errorf("%s: refused %d", name, w.Code)
			}
			continue
		}
		if saw.called || w.Code != http.StatusUnauthorized || !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer ") || w.Header().Get("Vary") != "Origin" {
			t.Errorf("%s: %d %v", name, w.Code, w.Header())
		}
	}
	if err := tg.revocations.Record(context.Background(), oauth.Change{Kind: oauth.ChangeAgentRevoked, Key: "refused", Before: time.Now(), Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if w, saw := tg.serve(ok); saw.called || w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "revoked") {
		t.Fatalf("a revoked token from the cache: %d %s", w.Code, w.Body)
	}
}
