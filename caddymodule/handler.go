package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/ratelimit"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler serves the identity provider's endpoints (/api/*, /oauth2/*,
// /.well-known/jwks.json) from the auth_agent app. Requests for other paths
// go on to the next handler.
type Handler struct {
	app *App
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.auth_agent",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the auth_agent app, loading it with defaults if the
// configuration does not have it (its Validate then names what is missing).
func (h *Handler) Provision(ctx caddy.Context) error {
	app, err := ctx.App("auth_agent")
	if err != nil {
		return err
	}
	h.app = app.(*App)
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	st, err := h.app.started(r.Context())
	if err != nil {
		oauth.WriteError(w, err)
		return nil
	}
	if !st.server.Handles(r.URL.Path) {
		return next.ServeHTTP(w, r)
	}
	st.handler.ServeHTTP(w, withClientInfo(r))
	return nil
}

// withClientInfo passes Caddy's client IP (which honours trusted_proxies
// and ignores forwarding headers from untrusted peers) to the rate limits,
// and the origin the client used (behind trusted proxies, the one they
// forwarded) to the DPoP checks.
func withClientInfo(r *http.Request) *http.Request {
	ctx := oauth.WithRequestOrigin(r.Context(), requestOrigin(r))
	if ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ip != "" {
		ctx = ratelimit.WithClientIP(ctx, ip)
	}
	return r.WithContext(ctx)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
