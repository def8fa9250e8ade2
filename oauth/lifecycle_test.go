package oauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

// testClock is a clock tests move by hand, safe for concurrent use.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func siteClient(tb testing.TB) *oauth.Client {
	site, _, err := oauth.NewClient(oauth.ClientSpec{
		ID: "site", Name: "Site", Secret: testClientSecret, RedirectURIs: []string{testRedirect},
		Scopes: []string{"openid", "profile", "email", "data:read"},
	}, oauth.ClientFromConfig, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return site
}

// startSignIn runs /oauth2/authorize as a browser does and returns the
// request id and the binding cookie.
func (s testServer) startSignIn(tb testing.TB) (string, string) {
	tb.Helper()
	q := url.Values{
		"response_type": {"code"}, "client_id": {"site"}, "redirect_uri": {testRedirect}, "scope": {"openid profile data:read"},
		"state": {"s"}, "code_challenge": {testChallenge()}, "code_challenge_method": {"S256"},
	}
	req := httptest.NewRequest("GET", "/oauth2/authorize?"+q.Encode(), nil)
	req.Header.Set("Accept", "application/json")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	var a struct {
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || a.RequestID == "" || len(rec.Result().Cookies()) != 1 {
		tb.Fatalf("authorize: %d %s", rec.Code, rec.Body)
	}
	return a.RequestID, rec.Result().Cookies()[0].Value
}

func (s testServer) checkStatus(tb testing.TB, id, binding string) (status, redirect string) {
	tb.Helper()
	req := httptest.NewRequest("GET", "/api/check-status?request_id="+id, nil)
	if binding != "" {
		req.Header.Set("Cookie", "aa_bind_"+id+"="+binding)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	var resp struct {
		Data struct {
			Status     string `json:"status"`
			RedirectTo string `json:"redirect_to"`
		} `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || rec.Code != 200 {
		tb.Fatalf("check-status: %d %s", rec.Code, rec.Body)
	}
	return resp.Data.Status, resp.Data.RedirectTo
}

// The request lifetime is judged by the server's clock: no waiting.
func TestExpiredAuthorizationRequest(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	s := newServerAt(t, cheapParams, clk.now, siteClient(t))
	s.seedAgent(t, "late-agent")
	id, binding := s.startSignIn(t)
	if st, _ := s.checkStatus(t, id, binding); st != "pending" {
		t.Fatalf("status %s", st)
	}
	clk.advance(5*time.Minute + time.Second)
	if st, _ := s.checkStatus(t, id, binding); st != "expired" {
		t.Fatalf("after the request lifetime: %s", st)
	}
	rec := s.call("POST", "/api/agent-auth", "", fmt.Sprintf(`{"agent_id":"late-agent","agent_secret":"Test123456!","request_id":%q}`, id))
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_request") {
		t.Fatalf("late approval: %d %s", rec.Code, rec.Body)
	}
}

// A code lives code_lifetime after the approval, by the server's clock.
func TestExpiredCode(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	s := newServerAt(t, cheapParams, clk.now, siteClient(t))
	s.seedAgent(t, "slow-site")
	code := s.code(t, "slow-site")
	clk.advance(61 * time.Second)
	rec := s.form("/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {testRedirect}, "code_verifier": {testVerifier}})
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_grant") {
		t.Fatalf("expired code: %d %s", rec.Code, rec.Body)
	}
}

// Everything a sign-in needs is in the store: a request approved through
// one process is handed to its browser, and its code redeemed, by another
// process on the same store (or the same one after a restart).
func TestSignInAcrossProcesses(t *testing.T) {
	store := storage.NewMemory(nil)
	t.Cleanup(func() { store.Close() })
	a := newServerOn(t, store, cheapParams, nil, siteClient(t))
	b := newServerOn(t, store, cheapParams, nil, siteClient(t))
	a.seedAgent(t, "roaming")
	id, binding := a.startSignIn(t)
	done := a.call("POST", "/api/agent-auth", "", fmt.Sprintf(`{"agent_id":"roaming","agent_secret":"Test123456!","request_id":%q}`, id))
	if done.Code != 200 {
		t.Fatalf("approve: %d %s", done.Code, done.Body)
	}
	st, redirect := b.checkStatus(t, id, binding)
	if st != "authenticated" || redirect == "" {
		t.Fatalf("other process: %s %q", st, redirect)
	}
	if _, leaked := b.checkStatus(t, id, "wrong"); leaked != "" {
		t.Fatal("the redirect was shown to another browser")
	}
	u, _ := url.Parse(redirect)
	tokens := b.redeem(t, u.Query().Get("code"))
	if tokens["refresh_token"] == nil || tokens["id_token"] == nil {
		t.Fatalf("tokens %v", tokens)
	}
	// A replay at the first process finds the redemption and revokes it.
	rec := a.form("/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {u.Query().Get("code")}, "redirect_uri": {testRedirect}, "code_verifier": {testVerifier}})
	if rec.Code != 400 {
		t.Fatalf("replay: %d %s", rec.Code, rec.Body)
	}
	if err := b.Revocations().Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec := b.call("GET", "/oauth2/userinfo", "Bearer "+tokens["access_token"].(string), ""); rec.Code != 401 {
		t.Fatalf("a token of a replayed code still works at the other process: %d", rec.Code)
	}
	rt := b.form("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tokens["refresh_token"].(string)}})
	if rt.Code != 400 {
		t.Fatalf("the refresh family of a replayed code still refreshes: %d %s", rt.Code, rt.Body)
	}
}

// A revocation written by one process reaches another when it reads the
// change log.
func TestRevocationReachesOtherProcess(t *testing.T) {
	store := storage.NewMemory(nil)
	t.Cleanup(func() { store.Close() })
	a := newServerOn(t, store, cheapParams, nil)
	b := newServerOn(t, store, cheapParams, nil)
	a.seedAgent(t, "watched")
	tok := "Bearer " + a.token(t, "watched", "Test123456!")
	if rec := b.call("GET", "/api/agents/profile", tok, ""); rec.Code != 200 {
		t.Fatalf("profile at b: %d %s", rec.Code, rec.Body)
	}
	disabled := true
	if _, err := a.Admin().UpdateAgent(context.Background(), "watched", agents.AdminUpdate{Disabled: &disabled}); err != nil {
		t.Fatal(err)
	}
	enabled := false
	if _, err := a.Admin().UpdateAgent(context.Background(), "watched", agents.AdminUpdate{Disabled: &enabled}); err != nil {
		t.Fatal(err)
	}
	if rec := a.call("GET", "/api/agents/profile", tok, ""); rec.Code != 401 {
		t.Fatalf("the disabling process still accepts the token: %d", rec.Code)
	}
	if err := b.Revocations().Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec := b.call("GET", "/api/agents/profile", tok, ""); rec.Code != 401 {
		t.Fatalf("the other process accepts a revoked token after reading the log: %d", rec.Code)
	}
}

// Two processes due for a rotation at the same moment make one new key
// between them, and it signs only after the publish delay.
func TestKeyRotationDecidedOnce(t *testing.T) {
	ctx := context.Background()
	clk := &testClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	store := storage.NewMemory(clk.now)
	t.Cleanup(func() { store.Close() })
	policy := oauth.KeyPolicy{Algs: []string{oauth.AlgES256}, Rotation: time.Hour, PublishDelay: 15 * time.Second}
	var managers []*oauth.KeyManager
	for range 4 {
		m, err := oauth.NewKeyManager(ctx, store, policy, clk.now, nil)
		if err != nil {
			t.Fatal(err)
		}
		managers = append(managers, m)
	}
	set, _ := store.SigningKeys(ctx)
	if len(set.Keys) != 1 {
		t.Fatalf("four starts on an empty store made %d keys", len(set.Keys))
	}
	first := set.Keys[0].ID
	clk.advance(time.Hour + time.Second)
	var wg sync.WaitGroup
	for _, m := range managers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.Rotate(ctx, false); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	set, _ = store.SigningKeys(ctx)
	if len(set.Keys) != 2 {
		t.Fatalf("a rotation due in four processes made %d keys, want 2", len(set.Keys))
	}
	tokens := oauth.NewTokens(issuer, time.Minute, oauth.AlgES256, managers[1], clk.now)
	kidOf := func() string {
		tok, err := tokens.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot"})
		if err != nil {
			t.Fatal(err)
		}
		var hdr struct{ Kid string }
		raw, _ := decodeSegment(strings.Split(tok.Token, ".")[0])
		_ = json.Unmarshal(raw, &hdr)
		return hdr.Kid
	}
	for _, m := range managers {
		if err := m.Rotate(ctx, false); err != nil { // every process reloads
			t.Fatal(err)
		}
		if n := strings.Count(string(m.JWKS()), `"kid"`); n != 2 {
			t.Fatalf("a process publishes %d keys, want both", n)
		}
	}
	if kid := kidOf(); kid != first {
		t.Fatal("the new key signed before its publish delay passed")
	}
	clk.advance(16 * time.Second)
	if kid := kidOf(); kid == first {
		t.Fatal("the new key does not sign after its publish delay")
	}
}

// Disabling an agent voids its grants too: after it is enabled again, a
// refresh token it held before does not refresh.
func TestDisableVoidsRefreshTokens(t *testing.T) {
	s := newServerAt(t, cheapParams, nil, siteClient(t))
	s.seedAgent(t, "paused")
	tokens := s.redeem(t, s.code(t, "paused"))
	ctx := context.Background()
	for _, disabled := range []bool{true, false} {
		if _, err := s.Admin().UpdateAgent(ctx, "paused", agents.AdminUpdate{Disabled: &disabled}); err != nil {
			t.Fatal(err)
		}
	}
	rec := s.form("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tokens["refresh_token"].(string)}})
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_grant") {
		t.Fatalf("a refresh token from before the agent was disabled: %d %s", rec.Code, rec.Body)
	}
}

// Disabling an agent that does not exist is a 404 that records nothing:
// no revocation waits for an agent registered later with that id.
func TestDisablingAnUnknownAgentRecordsNothing(t *testing.T) {
	s := newServerAt(t, cheapParams, nil)
	ctx := context.Background()
	before, err := s.store.ChangesSince(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	disabled := true
	if _, err := s.Admin().UpdateAgent(ctx, "nobody", agents.AdminUpdate{Disabled: &disabled}); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("disabling an unknown agent: %v", err)
	}
	after, err := s.store.ChangesSince(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("the refusal recorded %d changes", len(after)-len(before))
	}
}

// state and nonce that no store could keep as text (NUL, invalid UTF-8)
// are the client's error, sent back by redirect on every backend: nothing
// is stored.
func TestAuthorizeRefusesUnstorableStateAndNonce(t *testing.T) {
	s := newServerAt(t, cheapParams, nil, siteClient(t))
	for _, bad := range []map[string]string{{"state": "a\x00b"}, {"nonce": "\x00"}, {"state": "a\xffb"}, {"nonce": "\xc3"}} {
		q := url.Values{
			"response_type": {"code"}, "client_id": {"site"}, "redirect_uri": {testRedirect}, "scope": {"openid"},
			"code_challenge": {testChallenge()}, "code_challenge_method": {"S256"},
		}
		for k, v := range bad {
			q.Set(k, v)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", "/oauth2/authorize?"+q.Encode(), nil))
		loc, _ := url.Parse(rec.Header().Get("Location"))
		if rec.Code != 302 || loc.Query().Get("error") != "invalid_request" || len(rec.Result().Cookies()) != 0 {
			t.Errorf("%q: %d %s", bad, rec.Code, rec.Header().Get("Location"))
		}
	}
}

// A subject token past its exp (within the verification leeway) does not
// exchange: the result could not outlive it, so it would come out with
// expires_in 0 or less.
func TestExchangeRefusesAnExpiredSubject(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := newServerAt(t, cheapParams, clock, siteClient(t))
	s.seedAgent(t, "exchanger")
	subject := s.redeem(t, s.code(t, "exchanger"))["access_token"].(string)
	exchange := func() *httptest.ResponseRecorder {
		return s.form("/oauth2/token", url.Values{
			"grant_type": {oauth.GrantTokenExchange}, "subject_token": {subject},
			"subject_token_type": {oauth.TokenTypeAccessToken}, "scope": {"openid"},
		})
	}
	if rec := exchange(); rec.Code != 200 {
		t.Fatalf("a live subject: %d %s", rec.Code, rec.Body)
	}
	mu.Lock()
	now = now.Add(time.Hour + 5*time.Second) // past exp, within the leeway
	mu.Unlock()
	if rec := exchange(); rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_grant") {
		t.Fatalf("an expired subject: %d %s", rec.Code, rec.Body)
	}
}
