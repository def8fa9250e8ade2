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
// endpoint: agents, clients and
// signing keys. It serves through the running app.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.auth_agent",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: adminPrefix,
		Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			app := running.Load()
			var st *appState
			if app != nil {
				st = app.state.Load()
			}
			if st == nil {
				oauth.WriteError(w, oauth.ErrNotFoundPath("the auth_agent app is not running"))
				return nil
			}
			if err := serveAdmin(st.server.Admin(), w, r); err != nil {
				st.server.Fail(w, r, err)
			}
			return nil
		}),
	}}
}

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
