package oauth

import (
	"net/url"
	"slices"
	"strings"

	"github.com/authagent/caddy-authagent/agents"
)

// Identity scopes every server knows.
const (
	ScopeOpenID      = "openid"
	ScopeProfile     = "profile"
	ScopeEmail       = "email"
	ScopePermissions = "permissions"
)

// ParseScope splits a space-separated scope string (RFC 6749 §3.3), checking
// each value and dropping repeats while keeping the order.
func ParseScope(s string) ([]string, error) {
	if len(s) > 4096 {
		return nil, ErrInvalidScope("scope is longer than 4096 characters")
	}
	var out []string
	for _, f := range strings.Split(s, " ") {
		if f == "" {
			continue
		}
		if err := agents.ValidateScopeToken(f); err != nil {
			return nil, ErrInvalidScope(err.Error())
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out, nil
}

// AgentSelfScopes decides the scope of a token an agent obtains for itself:
// by default `profile` plus its permissions; a request may narrow that but
// never name anything outside it.
func AgentSelfScopes(requested string, a *agents.Agent) ([]string, error) {
	allowed := []string{ScopeProfile}
	for _, p := range a.Permissions {
		if !slices.Contains(allowed, p) {
			allowed = append(allowed, p)
		}
	}
	req, err := ParseScope(requested)
	if err != nil {
		return nil, err
	}
	if len(req) == 0 {
		return allowed, nil
	}
	for _, s := range req {
		if !slices.Contains(allowed, s) {
			return nil, ErrInvalidScope("scope " + s + " is not granted to this agent")
		}
	}
	return req, nil
}

// ParseResource checks an RFC 8707 resource indicator: an absolute URI
// without a fragment.
func ParseResource(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" || strings.Contains(s, "#") || len(s) > 2048 {
		return "", ErrInvalidTarget("resource must be an absolute URI without a fragment")
	}
	return s, nil
}
