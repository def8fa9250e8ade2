package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"

	"github.com/authagent/caddy-authagent/oauth"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI mounts the operator's routes under /auth_agent/ on Caddy's admin
// endpoint: list, read, update and delete agents.
type AdminAPI struct {
	app *App
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.auth_agent",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision finds the auth_agent app without creating one: a config
// without it simply has no agents to manage.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	if app, err := ctx.AppIfConfigured("auth_agent"); err == nil {
		a.app = app.(*App)
	}
	return nil
}

// Routes returns the admin routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: oauth.AdminPrefix,
		Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			if a.app == nil || a.app.Server() == nil {
				oauth.WriteError(w, oauth.ErrNotFoundPath("the auth_agent app is not configured"))
				return nil
			}
			a.app.Server().ServeAdmin(w, r)
			return nil
		}),
	}}
}

// Interface guards
var (
	_ caddy.Provisioner = (*AdminAPI)(nil)
	_ caddy.AdminRouter = (*AdminAPI)(nil)
)
