// Package authagent is Auth Agent for Caddy: an OAuth 2.1 / OpenID Connect
// identity provider for AI agents and a gateway guarding APIs behind Caddy.
// Importing it (as xcaddy's --with does) registers its Caddy modules.
package authagent

import (
	_ "github.com/authagent/caddy-authagent/caddymodule"
)
