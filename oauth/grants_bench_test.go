package oauth_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

func testTime() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

// Benchmarks of each grant at the token endpoint, in process (no network),
// with the production argon2id parameters and RS256 access tokens.

// BenchmarkTokenClientCredentials runs the grant with each access-token
// algorithm in one run: ES256, the default, against RS256.
func BenchmarkTokenClientCredentials(b *testing.B) {
	for _, alg := range []string{oauth.AlgES256, oauth.AlgRS256} {
		b.Run(alg, func(b *testing.B) {
			site, _, err := oauth.NewClient(oauth.ClientSpec{ID: "site", Secret: testClientSecret, RedirectURIs: []string{testRedirect},
				Scopes: []string{"openid", "data:read"}}, oauth.ClientFromConfig, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			store := storage.NewMemory(nil)
			b.Cleanup(func() { store.Close() })
			s := newServerAlg(b, store, agents.DefaultArgon2, nil, alg, site)
			form := url.Values{"grant_type": {"client_credentials"}, "scope": {"data:read"}}
			b.ReportAllocs()
			for b.Loop() {
				if rec := s.form("/oauth2/token", form); rec.Code != 200 {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}

func BenchmarkTokenAuthorizationCode(b *testing.B) {
	s := newServer(b, agents.DefaultArgon2)
	s.seedAgent(b, "bench-agent")
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		code := s.code(b, "bench-agent")
		b.StartTimer()
		s.redeem(b, code)
	}
}

func BenchmarkTokenRefresh(b *testing.B) {
	s := newServer(b, agents.DefaultArgon2)
	s.seedAgent(b, "bench-agent")
	rt := s.redeem(b, s.code(b, "bench-agent"))["refresh_token"].(string)
	b.ReportAllocs()
	for b.Loop() {
		resp := s.form("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
		if resp.Code != 200 {
			b.Fatalf("%d %s", resp.Code, resp.Body)
		}
		rt = jsonField(b, resp.Body.Bytes(), "refresh_token")
	}
}

func BenchmarkTokenExchange(b *testing.B) {
	s := newServer(b, agents.DefaultArgon2)
	s.seedAgent(b, "bench-agent")
	at := s.redeem(b, s.code(b, "bench-agent"))["access_token"].(string)
	form := url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {at},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "scope": {"data:read"},
	}
	b.ReportAllocs()
	for b.Loop() {
		if rec := s.form("/oauth2/token", form); rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}
