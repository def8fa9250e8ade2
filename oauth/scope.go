package oauth

import (
	"fmt"
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

// maxResources bounds the resource indicators of one request.
const maxResources = 10

// parseResources checks the resource parameters of a request (RFC 8707:
// the parameter may repeat); duplicates are dropped, order kept.
func parseResources(values []string) ([]string, error) {
	if len(values) > maxResources {
		return nil, ErrInvalidTarget(fmt.Sprintf("at most %d resource parameters", maxResources))
	}
	var out []string
	for _, v := range values {
		if v == "" {
			return nil, ErrInvalidTarget("resource must be an absolute URI without a fragment")
		}
		res, err := ParseResource(v)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, res) {
			out = append(out, res)
		}
	}
	return out, nil
}

// narrowResources applies the resource parameters of a token request to
// the resources authorized: each requested one must be among them (RFC
// 8707 §2.2) and the token is meant for the requested ones; with none
// requested, for all that were authorized.
func narrowResources(values []string, authorized []string) ([]string, error) {
	req, err := parseResources(values)
	if err != nil {
		return nil, err
	}
	if len(req) == 0 {
		return authorized, nil
	}
	for _, r := range req {
		if !slices.Contains(authorized, r) {
			return nil, ErrInvalidTarget("resource " + strconvQuote(r) + " was not authorized; ask for it at the authorization endpoint")
		}
	}
	return req, nil
}
