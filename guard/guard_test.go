package guard_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/guard"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

const issuer = "https://auth.example.com"

// newTokens is this server's token service over a fresh store, and the
// view of that store's change log.
func newTokens(tb testing.TB, alg string) (*oauth.Tokens, *oauth.KeyManager, *oauth.Revocations) {
	tb.Helper()
	store := storage.NewMemory(nil)
	tb.Cleanup(func() { store.Close() })
	keys, err := oauth.NewKeyManager(context.Background(), store, oauth.KeyPolicy{Algs: []string{alg}, Rotation: 24 * time.Hour}, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return oauth.NewTokens(issuer, time.Hour, alg, keys, nil), keys, oauth.NewRevocations(store, nil, nil)
}

func newGuard(tb testing.TB, scopes ...string) (*guard.Guard, *oauth.Tokens, *oauth.Revocations) {
	tb.Helper()
	tokens, keys, rev := newTokens(tb, oauth.AlgRS256)
	return &guard.Guard{Verifier: guard.NewLocalVerifier(issuer, keys.Lookup, rev), Scopes: scopes}, tokens, rev
}

func TestGuardCheck(t *testing.T) {
	g, tokens, _ := newGuard(t, "data:read")
	ok, _ := tokens.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot", Scopes: []string{"data:read"}})
	noScope, _ := tokens.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot", Scopes: []string{"profile"}})
	for name, tc := range map[string]struct {
		auth   string
		status int
	}{
		"valid":     {"Bearer " + ok.Token, 0},
		"twice":     {"Bearer " + ok.Token, 0}, // from the cache
		"no scope":  {"Bearer " + noScope.Token, 403},
		"missing":   {"", 401},
		"malformed": {"Bearer a b", 401},
		"garbage":   {"Bearer x.y.z", 401},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		_, e := g.Check(r)
		switch {
		case tc.status == 0 && e != nil:
			t.Errorf("%s: refused: %v", name, e)
		case tc.status != 0 && (e == nil || e.Status != tc.status):
			t.Errorf("%s: got %v, want %d", name, e, tc.status)
		}
	}
	g.Resource = "https://api.example.com"
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer "+ok.Token)
	if _, e := g.Check(r); e == nil || e.Status != 401 {
		t.Fatalf("token for another audience accepted: %v", e)
	}
}

// Without a resource the token must be meant for this site's origin or
// the issuer; a port in Host that the connection did not arrive on names
// another service.
func TestGuardAudienceWithoutResource(t *testing.T) {
	g, tokens, _ := newGuard(t)
	for name, tc := range map[string]struct {
		aud, host, local string
		tls, ok          bool
	}{
		"the issuer":                {"", "api.example.com", "10.0.0.1:443", true, true},
		"the origin":                {"https://api.example.com", "api.example.com", "10.0.0.1:443", true, true},
		"the origin with a slash":   {"https://api.example.com/", "api.example.com", "10.0.0.1:443", true, true},
		"default port written":      {"https://api.example.com", "api.example.com:443", "10.0.0.1:443", true, true},
		"its own port":              {"http://127.0.0.1:8081", "127.0.0.1:8081", "127.0.0.1:8081", false, true},
		"another service":           {"https://other.example.com", "api.example.com", "10.0.0.1:443", true, false},
		"another scheme":            {"http://api.example.com", "api.example.com", "10.0.0.1:443", true, false},
		"a port it did not come on": {"https://api.example.com:8443", "api.example.com:8443", "10.0.0.1:443", true, false},
		"a path of the origin":      {"https://api.example.com/mcp", "api.example.com", "10.0.0.1:443", true, false},
		// A token for another service that also names the issuer (granted
		// openid, for userinfo) is that service's, not this one's.
		"another service and the issuer": {"https://other.example.com " + issuer, "api.example.com", "10.0.0.1:443", true, false},
		"this origin and the issuer":     {"https://api.example.com " + issuer, "api.example.com", "10.0.0.1:443", true, true},
	} {
		grant := oauth.AccessGrant{Subject: "bot", ClientID: "bot"}
		if tc.aud != "" {
			grant.Audience = strings.Fields(tc.aud)
		}
		tok, _ := tokens.IssueAccessToken(grant)
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = tc.host
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		local, _ := net.ResolveTCPAddr("tcp", tc.local)
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
		r.Header.Set("Authorization", "Bearer "+tok.Token)
		if _, e := g.Check(r); (e == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", name, e, tc.ok)
		}
	}
}

func TestGuardErrorChallenge(t *testing.T) {
	g, _, _ := newGuard(t, "data:read", "data:write")
	for _, auth := range []string{"", "Bearer nope"} {
		r := httptest.NewRequest("GET", "http://api.example.com/x", nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		_, e := g.Check(r)
		rec := httptest.NewRecorder()
		guard.WriteError(rec, r, e, guard.Challenges{Scopes: g.Scopes})
		ch := rec.Header().Get("WWW-Authenticate")
		if !strings.Contains(ch, `resource_metadata="http://api.example.com/.well-known/oauth-protected-resource"`) {
			t.Errorf("challenge %q", ch)
		}
		if (auth == "") == strings.Contains(ch, "error=") {
			t.Errorf("RFC 6750 §3.1: error code only when credentials were sent: %q", ch)
		}
	}
}

// The revocation set is checked on every request, also for cached tokens.
func TestGuardRevocationBeatsCache(t *testing.T) {
	g, tokens, rev := newGuard(t)
	tok, _ := tokens.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot"})
	if _, err := g.Verifier.Verify(context.Background(), tok.Token); err != nil {
		t.Fatal(err)
	}
	if err := rev.Record(context.Background(), oauth.Change{Kind: oauth.ChangeAgentRevoked, Key: "bot", Before: time.Now(), Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Verifier.Verify(context.Background(), tok.Token); err == nil {
		t.Fatal("a cached token of a revoked agent was accepted")
	}
}

// BenchmarkGuardVerify is the guard's hot path: bearer parsing, the cached
// verification, revocation, audience and scope checks.
func BenchmarkGuardVerify(b *testing.B) {
	for _, alg := range oauth.SupportedAlgs {
		b.Run(alg+"/cached", func(b *testing.B) {
			tokens, keys, rev := newTokens(b, alg)
			g := &guard.Guard{Verifier: guard.NewLocalVerifier(issuer, keys.Lookup, rev), Scopes: []string{"data:read"}}
			tok, _ := tokens.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot", Scopes: []string{"profile", "data:read"}})
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", "Bearer "+tok.Token)
			b.ReportAllocs()
			for b.Loop() {
				if _, e := g.Check(r); e != nil {
					b.Fatal(e)
				}
			}
		})
	}
	b.Run("RS256/uncached", func(b *testing.B) {
		tokens, _, _ := newTokens(b, oauth.AlgRS256)
		tok, _ := tokens.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot", Scopes: []string{"profile", "data:read"}})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tokens.VerifyAccessToken(context.Background(), tok.Token, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func FuzzGuardBearer(f *testing.F) {
	g, tokens, _ := newGuard(f, "data:read")
	ok, _ := tokens.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot", Scopes: []string{"data:read"}})
	parts := strings.Split(ok.Token, ".")
	for _, s := range []string{"Bearer " + ok.Token, "Bearer " + parts[0] + "." + parts[1] + ".", "Bearer " + parts[0] + ".eyJzdWIiOiJ4In0." + parts[2], "Bearer", "bearer x.y.z", "Basic abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, auth string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", auth)
		claims, e := g.Check(r)
		if e == nil {
			if got, err := oauth.ParseBearer(auth); err != nil || got != ok.Token || claims.Subject != "bot" {
				t.Fatalf("accepted %q", auth)
			}
			return
		}
		if e.Status != 401 && e.Status != 403 {
			t.Fatalf("status %d for %q", e.Status, auth)
		}
	})
}
