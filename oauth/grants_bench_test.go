package oauth_test

import (
	"net/http/httptest"
	"net/url"
	"strings"
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

// BenchmarkClientAuthentication is client_credentials with each way a
// client authenticates, side by side in one run: a generated secret
// (client_secret_basic) against private_key_jwt with ES256 and EdDSA
// assertions (each fresh: its jti is recorded once; signing it is the
// client's work, done before the timer starts), and private_key_jwt ES256
// with a DPoP proof (ES256, its own key) on every request, so that the
// token is DPoP-bound (the proof's jti recorded in this process, as with
// Badger). ES256 access tokens, the memory store. The ratio is
// requests per second: client_secret_basic ns/op over the DPoP case's.
func BenchmarkClientAuthentication(b *testing.B) {
	for _, method := range []string{"client_secret_basic", "private_key_jwt ES256", "private_key_jwt EdDSA", "private_key_jwt ES256 + DPoP ES256"} {
		b.Run(method, func(b *testing.B) {
			spec := oauth.ClientSpec{ID: "svc", GrantTypes: []string{oauth.GrantClientCredentials}, Scopes: []string{"data:read"}}
			var key, dpopKey testKey
			switch method {
			case "private_key_jwt ES256":
				key = newTestKey(b, "EC", "k", "")
			case "private_key_jwt ES256 + DPoP ES256":
				key, dpopKey = newTestKey(b, "EC", "k", ""), newTestKey(b, "EC", "", "")
			case "private_key_jwt EdDSA":
				key = newTestKey(b, "OKP", "k", "")
			}
			if key.private != nil {
				spec.JWKS = keySet(b, key)
			}
			svc, secret, err := oauth.NewClient(spec, oauth.ClientFromConfig, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			store := storage.NewMemory(nil)
			b.Cleanup(func() { store.Close() })
			s := newServerAlg(b, store, agents.DefaultArgon2, nil, oauth.AlgES256, svc)
			forms := make([]url.Values, b.N)
			var proofs []string
			if dpopKey.private != nil {
				proofs = make([]string, b.N)
			}
			for i := range forms {
				forms[i] = url.Values{"grant_type": {"client_credentials"}, "scope": {"data:read"}}
				if key.private != nil {
					forms[i].Set("client_assertion_type", oauth.ClientAssertionType)
					forms[i].Set("client_assertion", key.sign(b, nil, assertionClaims("svc", issuer, time.Now())))
				}
				if proofs != nil {
					proofs[i] = dpopKey.proof(b, "POST", issuer+oauth.TokenPath, nil)
				}
			}
			wantType := oauth.TokenTypeBearer
			if proofs != nil {
				wantType = oauth.TokenTypeDPoP
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				req := httptest.NewRequest("POST", "/oauth2/token", strings.NewReader(forms[i].Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				if key.private == nil {
					req.SetBasicAuth("svc", secret)
				}
				if proofs != nil {
					req.Header.Set(oauth.DPoPHeader, proofs[i])
				}
				rec := httptest.NewRecorder()
				s.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
				if i == 0 {
					// Once, outside what is timed: the token is bound (or not).
					b.StopTimer()
					if got := jsonField(b, rec.Body.Bytes(), "token_type"); got != wantType {
						b.Fatalf("token_type %q, want %q", got, wantType)
					}
					b.StartTimer()
				}
			}
		})
	}
}
