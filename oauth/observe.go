package oauth

import (
	"context"
	"errors"
	"go.uber.org/zap"
	"net/http"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/internal/metrics"
	"github.com/authagent/caddy-authagent/ratelimit"
)

// What the provider tells its metrics and its event bus (the audit log and
// webhooks). Metric labels come from fixed lists or the configuration
// (clientLabel); events carry ids, never a secret, code or token.

// Authentication methods and failure reasons: the reason label of
// auth_agent_authentications_total.
const (
	authClientSecretBasic = "client_secret_basic"
	authClientSecretPost  = "client_secret_post"
	authNone              = "none" // a public client, identified only
	authAgentSecret       = "agent_secret"
	authPrivateKeyJWT     = AuthPrivateKeyJWT

	failUnknownClient      = "unknown_client"
	failWrongSecret        = "wrong_secret"
	failBadAssertion       = "bad_assertion"       // a client's private_key_jwt assertion did not verify
	failSecretNotAllowed   = "secret_not_allowed"  // a public client sent one
	failInvalidCredentials = "invalid_credentials" // an agent: unknown, wrong secret or disabled, alike
)

// Grant labels beside the RFC grant types.
const grantAgentAuth = "agent_auth" // POST /api/agent-auth

// Sign-in outcomes: the outcome label of auth_agent_signins_total.
const (
	signinRequested = "requested" // a valid authorization request was stored
	signinRefused   = "refused"   // the authorization request was refused
	signinApproved  = "approved"  // the agent approved it
	signinFailed    = "failed"    // the agent's approval was refused (expired, used, scope)
	signinRedeemed  = "redeemed"  // the client exchanged the code
)

// clientLabel is a client's metrics label: its id when an operator named
// it (the configuration or the admin API), dynamic for the rest, whose
// number anyone can grow.
func clientLabel(c *Client) string {
	switch c.Source {
	case ClientFromConfig, ClientFromAdmin:
		return c.ID
	}
	return "dynamic"
}

// label is the caller's metrics label: its client's, or agent.
func (c caller) label() string {
	if c.client != nil {
		return clientLabel(c.client)
	}
	return "agent"
}

// maxEventID bounds an id taken from a request (one that failed to
// authenticate can be anything) in an event.
const maxEventID = 128

func eventID(id string) string {
	if len(id) > maxEventID {
		return id[:maxEventID] + "…"
	}
	return id
}

// authSucceeded records a successful authentication; an agent's is an
// audit event too (a client's shows in the token events that follow).
func (p *provider) authSucceeded(r *http.Request, method string, a *agents.Agent) {
	metrics.Authentication("success", method)
	if a != nil {
		p.events.Publish(r.Context(), events.AgentAuthenticated, map[string]any{
			"agent_id": a.ID, "method": method, "endpoint": r.URL.Path, "remote_ip": ratelimit.ClientIP(r),
		})
	}
}

// agentAuthFailed records a failed authentication of the agent id.
func (p *provider) agentAuthFailed(r *http.Request, id string) {
	metrics.Authentication("failure", failInvalidCredentials)
	p.events.Publish(r.Context(), events.AgentAuthFailed, map[string]any{
		"agent_id": eventID(id), "reason": failInvalidCredentials, "endpoint": r.URL.Path, "remote_ip": ratelimit.ClientIP(r),
	})
}

// chargeAttempt charges an authentication attempt of agentID to the
// failed-authentication budgets; a refusal because the agent itself is
// being guessed at from many addresses is an audit event.
func (p *provider) chargeAttempt(w http.ResponseWriter, r *http.Request, agentID string) (*ratelimit.Attempt, error) {
	try, err := p.limits.ChargeAttempt(r.Context(), w, ratelimit.ClientIP(r), agentID)
	var ex *ratelimit.Exceeded
	if errors.As(err, &ex) && ex.Budget == ratelimit.BudgetAgentCeiling {
		p.log.Warn("failed authentications of one agent from many addresses reached its ceiling", zap.String("agent_id", eventID(agentID)))
		p.events.Publish(r.Context(), events.AgentAuthThrottled, map[string]any{
			"agent_id": eventID(agentID), "endpoint": r.URL.Path, "remote_ip": ratelimit.ClientIP(r), "retry_after": ex.RetryAfter,
		})
	}
	return try, err
}

// clientAuthFailed records a failed authentication of the client id.
func (p *provider) clientAuthFailed(r *http.Request, id, reason string) {
	metrics.Authentication("failure", reason)
	p.events.Publish(r.Context(), events.ClientAuthFailed, map[string]any{
		"client_id": eventID(id), "reason": reason, "endpoint": r.URL.Path, "remote_ip": ratelimit.ClientIP(r),
	})
}

// issued records an access token issued with grant to the caller; typ is
// the audit event (token.issued, token.refreshed, token.exchanged).
func (p *provider) issued(ctx context.Context, typ, grant string, c caller, tok IssuedToken, subject string) {
	metrics.TokenIssued(grant, c.label())
	p.events.Publish(ctx, typ, map[string]any{
		"grant": grant, "client_id": c.id(), "subject": subject, "jti": tok.ID, "scope": tok.Scope,
	})
}

// agentView is an agent in an event: who it is, never how to reach its
// owner or its secret.
func agentView(a *agents.Agent) map[string]any {
	perms := a.Permissions
	if perms == nil {
		perms = []string{}
	}
	return map[string]any{"agent_id": a.ID, "model_name": a.ModelName, "permissions": perms, "disabled": a.Disabled}
}

// clientView is a client in an event.
func clientView(c *Client) map[string]any {
	return map[string]any{"client_id": c.ID, "client_name": c.Name, "source": c.Source, "public": c.Public,
		"redirect_uris": c.RedirectURIs, "grant_types": c.GrantTypes}
}

// withBy adds who made a change: self (the agent), admin (the operator) or
// dynamic (RFC 7591 registration).
func withBy(m map[string]any, by string) map[string]any {
	m["by"] = by
	return m
}
