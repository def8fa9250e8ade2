package oauth_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

// BenchmarkRegister: POST /api/register-agent with the production argon2id
// parameters (one hash per registration).
func BenchmarkRegister(b *testing.B) {
	s := newServer(b, agents.DefaultArgon2)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		rec := s.call("POST", "/api/register-agent", "", fmt.Sprintf(`{"agent_id":"bench-%d","agent_secret":"Test123456!","model_name":"m","owner_email":"a@example.com"}`, i))
		if rec.Code != 201 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkAgentAuth: POST /api/agent-auth for one agent in a loop, which
// the verification cache serves after the first argon2id check; the cost
// left is the RS256 signature.
func BenchmarkAgentAuth(b *testing.B) {
	s := newServer(b, agents.DefaultArgon2)
	s.call("POST", "/api/register-agent", "", `{"agent_id":"bench","agent_secret":"Test123456!","model_name":"m","owner_email":"a@example.com"}`)
	b.ReportAllocs()
	for b.Loop() {
		if rec := s.call("POST", "/api/agent-auth", "", `{"agent_id":"bench","agent_secret":"Test123456!"}`); rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkAgentAuthFailed: wrong secrets are never cached, so each one
// costs a full argon2id verification.
func BenchmarkAgentAuthFailed(b *testing.B) {
	s := newServer(b, agents.DefaultArgon2)
	s.call("POST", "/api/register-agent", "", `{"agent_id":"bench","agent_secret":"Test123456!","model_name":"m","owner_email":"a@example.com"}`)
	b.ReportAllocs()
	for b.Loop() {
		if rec := s.call("POST", "/api/agent-auth", "", `{"agent_id":"bench","agent_secret":"Wrong123456!"}`); rec.Code != 401 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

func BenchmarkSignAccessToken(b *testing.B) {
	for _, alg := range oauth.SupportedAlgs {
		b.Run(alg, func(b *testing.B) {
			tokens, _ := newTokens(b, alg, &clock{time.Now()})
			g := oauth.AccessGrant{Subject: "bot", ClientID: "bot", Scopes: []string{"profile", "data:read"}, ModelName: "gpt-4"}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tokens.IssueAccessToken(g); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyAccessToken(b *testing.B) {
	for _, alg := range oauth.SupportedAlgs {
		b.Run(alg, func(b *testing.B) {
			clk := &clock{time.Now()}
			tokens, _ := newTokens(b, alg, clk)
			tok, _ := tokens.IssueAccessToken(oauth.AccessGrant{Subject: "bot", ClientID: "bot", Scopes: []string{"profile"}})
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tokens.VerifyAccessToken(context.Background(), tok.Token, issuer); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
