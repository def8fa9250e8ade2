package caddymodule

import (
	"encoding/json"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("auth_agent", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("auth_agent", parseHandlerDirective)
	// The IdP's endpoints are public: serve them before authentication
	// handlers such as basic_auth, so users need no `order` line.
	httpcaddyfile.RegisterDirectiveOrder("auth_agent", httpcaddyfile.Before, "basic_auth")
	httpcaddyfile.RegisterHandlerDirective("agent_guard", parseGuardDirective)
	// The guard authenticates like basic_auth does, after the IdP's own
	// endpoints and before reverse_proxy.
	httpcaddyfile.RegisterDirectiveOrder("agent_guard", httpcaddyfile.After, "basic_auth")
}

// UnmarshalCaddyfile sets up the app from the global option:
//
//	auth_agent {
//		issuer <url>
//		storage <path>|badger [<path>]|memory|<module> …
//		encryption_key_file <file>
//		access_token_lifetime <duration>
//		refresh_token_lifetime <duration>
//		refresh_reuse_grace <duration>     # 0 (default): off
//		key_rotation <duration>
//		access_token_alg ES256|RS256|EdDSA
//		registration open|closed|token <token>
//		default_permissions <scope...>
//		agent <id> {
//			permissions <scope...>
//		}
//		client <id> {
//			name <text>
//			secret <secret>        # or: public
//			public
//			application_type web|native
//			redirect_uri <uri...>
//			scopes <scope...>
//			grant_types <grant...>
//			id_token_alg RS256|ES256|EdDSA
//			resource_server        # may introspect every token
//			jwks_file <path>       # public keys (a JWK Set): private_key_jwt, no secret
//			jwks_uri <url>         # or where the client publishes them
//		}
//		dynamic_client_registration off|open|token <token>
//		code_lifetime <duration>
//		request_lifetime <duration>
//		body_timeout <duration>
//		rate_limit {
//			registration <N/s|m|h|d>|off
//			authentication <N/s|m|h|d>|off
//			refresh <N/s|m|h|d>|off
//			api <N/s|m|h|d>|off
//			store memory|redis <url>
//			on_store_error authentication|api open|closed
//		}
//		cors {
//			origins <origin...>
//			allow_credentials
//			headers <request header...>
//		}
//		scope_description <scope> <text>
//		client_id_metadata_documents on|off
//		client_id_metadata_hosts <host...>
//		webhook <url> {
//			events <type...>
//			secret <whsec_…>
//		}
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	var st storageOption
	for d.NextBlock(0) {
		dir := d.Val()
		switch dir {
		case "issuer":
			if !d.NextArg() {
				return d.ArgErr()
			}
			a.Issuer = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "storage":
			if err := st.unmarshal(d); err != nil {
				return err
			}
		case "encryption_key_file":
			if !d.NextArg() {
				return d.ArgErr()
			}
			st.encryptionKeyFile = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "access_token_lifetime", "refresh_token_lifetime", "key_rotation", "code_lifetime", "request_lifetime", "body_timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("%s: %q is not a positive duration", dir, d.Val())
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			switch dir {
			case "access_token_lifetime":
				a.AccessTokenLifetime = caddy.Duration(dur)
			case "refresh_token_lifetime":
				a.RefreshTokenLifetime = caddy.Duration(dur)
			case "code_lifetime":
				a.CodeLifetime = caddy.Duration(dur)
			case "request_lifetime":
				a.RequestLifetime = caddy.Duration(dur)
			case "body_timeout":
				a.BodyTimeout = caddy.Duration(dur)
			default:
				a.KeyRotation = caddy.Duration(dur)
			}
		case "refresh_reuse_grace":
			args := d.RemainingArgs()
			if len(args) != 1 {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur < 0 || dur > MaxRefreshReuseGrace {
				return d.Errf("refresh_reuse_grace: %q is not a duration between 0s (off) and %s", args[0], MaxRefreshReuseGrace)
			}
			a.RefreshReuseGrace = caddy.Duration(dur)
		case "access_token_alg":
			if !d.NextArg() {
				return d.ArgErr()
			}
			a.AccessTokenAlg = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "registration":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && (args[0] == "open" || args[0] == "closed"):
				a.Registration = &RegistrationConfig{Mode: args[0]}
			case len(args) == 2 && args[0] == "token":
				a.Registration = &RegistrationConfig{Mode: "token", Token: args[1]}
			default:
				return d.Errf("registration: want `open`, `closed` or `token <token>`, got %q", args)
			}
		case "dynamic_client_registration":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && (args[0] == "open" || args[0] == "off"):
				a.DynamicClientRegistration = &RegistrationConfig{Mode: args[0]}
			case len(args) == 2 && args[0] == "token":
				a.DynamicClientRegistration = &RegistrationConfig{Mode: "token", Token: args[1]}
			default:
				return d.Errf("dynamic_client_registration: want `off`, `open` or `token <token>`, got %q", args)
			}
		case "client":
			if err := a.unmarshalClient(d); err != nil {
				return err
			}
		case "rate_limit":
			if err := a.unmarshalRateLimit(d); err != nil {
				return err
			}
		case "trusted_idp":
			if err := a.unmarshalTrustedIdP(d); err != nil {
				return err
			}
		case "id_jag_audience":
			if err := a.unmarshalIDJAGAudience(d); err != nil {
				return err
			}
		case "webhook":
			if err := a.unmarshalWebhook(d); err != nil {
				return err
			}
		case "cors":
			if d.NextArg() {
				return d.ArgErr()
			}
			if a.CORS == nil {
				a.CORS = new(CORSConfig)
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch setting, args := d.Val(), d.RemainingArgs(); setting {
				case "origins", "origin":
					if len(args) == 0 {
						return d.Errf("cors: origins needs at least one origin")
					}
					a.CORS.Origins = append(a.CORS.Origins, args...)
				case "allow_credentials":
					if len(args) != 0 {
						return d.Errf("cors: allow_credentials takes no value")
					}
					a.CORS.AllowCredentials = true
				case "headers", "header":
					if len(args) == 0 {
						return d.Errf("cors: headers needs at least one header name")
					}
					a.CORS.Headers = append(a.CORS.Headers, args...)
				default:
					return d.Errf("cors: unknown setting %q", setting)
				}
			}
		case "scope_description":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("scope_description: want `scope_description <scope> <text>`, got %q", args)
			}
			if a.ScopeDescriptions == nil {
				a.ScopeDescriptions = make(map[string]string)
			}
			if _, dup := a.ScopeDescriptions[args[0]]; dup {
				return d.Errf("scope_description %s is given twice", args[0])
			}
			a.ScopeDescriptions[args[0]] = args[1]
		case "dpop":
			args := d.RemainingArgs()
			if len(args) != 1 || (args[0] != "required" && args[0] != "optional") {
				return d.Errf("dpop: want required or optional, got %q", args)
			}
			a.DPoP = args[0]
		case "dpop_nonce":
			args := d.RemainingArgs()
			if len(args) != 1 || (args[0] != "on" && args[0] != "off") {
				return d.Errf("dpop_nonce: want on or off, got %q", args)
			}
			a.DPoPNonce = args[0]
		case "dpop_leeway":
			args := d.RemainingArgs()
			if len(args) != 1 {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("dpop_leeway: %q is not a positive duration", args[0])
			}
			a.DPoPLeeway = caddy.Duration(dur)
		case "client_id_metadata_documents":
			args := d.RemainingArgs()
			if len(args) != 1 || (args[0] != "on" && args[0] != "off") {
				return d.Errf("client_id_metadata_documents: want on or off, got %q", args)
			}
			a.ClientIDMetadataDocuments = args[0]
		case "client_id_metadata_hosts":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			a.ClientIDMetadataHosts = append(a.ClientIDMetadataHosts, args...)
		case "default_permissions":
			a.DefaultPermissions = append(a.DefaultPermissions, d.RemainingArgs()...)
			if len(a.DefaultPermissions) == 0 {
				return d.ArgErr()
			}
		case "agent":
			if !d.NextArg() {
				return d.ArgErr()
			}
			id := d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
			if a.Agents == nil {
				a.Agents = make(map[string]*AgentConfig)
			}
			if _, dup := a.Agents[id]; dup {
				return d.Errf("agent %q is configured twice", id)
			}
			ac := new(AgentConfig)
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "permissions":
					ac.Permissions = append(ac.Permissions, d.RemainingArgs()...)
				default:
					return d.Errf("agent %s: unknown setting %q", id, d.Val())
				}
			}
			if ac.Permissions == nil {
				ac.Permissions = []string{}
			}
			a.Agents[id] = ac
		default:
			return d.Errf("auth_agent: unknown setting %q", dir)
		}
	}
	raw, err := st.json(d)
	if err != nil {
		return err
	}
	a.StorageRaw = raw
	return nil
}

// storageOption collects the `storage` and `encryption_key_file` lines.
type storageOption struct {
	name              string
	module            caddy.Module
	encryptionKeyFile string
}

// unmarshal reads one of
//
//	storage <path>                    Badger in <path>
//	storage badger [<path>] [{ … }]  the same, written out
//	storage <module> …               any auth_agent.storage module
//
// A first argument that names no storage module is a path, so a directory
// literally named "memory" is written ./memory.
func (st *storageOption) unmarshal(d *caddyfile.Dispenser) error {
	if st.module != nil {
		return d.Err("storage is configured twice")
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	name := d.Val()
	if _, err := caddy.GetModule("auth_agent.storage." + name); err == nil {
		mod, err := caddyfile.UnmarshalModule(d, "auth_agent.storage."+name)
		if err != nil {
			return err
		}
		st.name, st.module = name, mod.(caddy.Module)
		return nil
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	st.name, st.module = "badger", &BadgerStorage{Path: name}
	return nil
}

// json is the storage guest module's JSON, with a top-level
// encryption_key_file moved into the Badger module; nil for the default.
func (st *storageOption) json(d *caddyfile.Dispenser) (json.RawMessage, error) {
	if st.encryptionKeyFile != "" {
		if st.module == nil {
			st.name, st.module = "badger", new(BadgerStorage)
		}
		b, ok := st.module.(*BadgerStorage)
		if !ok {
			return nil, d.Errf("encryption_key_file applies to Badger storage, not %q", st.name)
		}
		b.EncryptionKeyFile = st.encryptionKeyFile
	}
	if st.module == nil {
		return nil, nil
	}
	return caddyconfig.JSONModuleObject(st.module, "module", st.name, nil), nil
}

// unmarshalWebhook parses one `webhook <url> { events …; secret … }`
// block; several are allowed.
func (a *App) unmarshalWebhook(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("webhook needs a URL: `webhook https://hooks.example.com/auth { … }`")
	}
	wc := &WebhookConfig{URL: d.Val()}
	if d.NextArg() {
		return d.Errf("webhook takes one URL, then a block with events and secret")
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		setting := d.Val()
		args := d.RemainingArgs()
		switch setting {
		case "events", "event":
			if len(args) == 0 {
				return d.Errf("webhook %s: events needs at least one event type", wc.URL)
			}
			wc.Events = append(wc.Events, args...)
		case "secret":
			if len(args) != 1 {
				return d.Errf("webhook %s: want `secret <whsec_…>`", wc.URL)
			}
			if wc.Secret != "" {
				return d.Errf("webhook %s: secret is given twice", wc.URL)
			}
			wc.Secret = args[0]
		default:
			return d.Errf("webhook %s: unknown setting %q", wc.URL, setting)
		}
	}
	if len(wc.Events) == 0 {
		return d.Errf("webhook %s needs `events <type>…`", wc.URL)
	}
	if wc.Secret == "" {
		return d.Errf("webhook %s needs `secret <whsec_…>`", wc.URL)
	}
	a.Webhooks = append(a.Webhooks, wc)
	return nil
}

// unmarshalClient parses one `client <id> { … }` block.
func (a *App) unmarshalClient(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	id := d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	if a.Clients == nil {
		a.Clients = make(map[string]*ClientConfig)
	}
	if _, dup := a.Clients[id]; dup {
		return d.Errf("client %q is configured twice", id)
	}
	cc := new(ClientConfig)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		setting := d.Val()
		args := d.RemainingArgs()
		switch setting {
		case "name", "secret":
			if len(args) != 1 {
				return d.Errf("client %s: %s takes one value", id, setting)
			}
			if setting == "name" {
				cc.Name = args[0]
			} else {
				cc.Secret = args[0]
			}
		case "public":
			if len(args) != 0 {
				return d.Errf("client %s: public takes no value", id)
			}
			cc.Public = true
		case "application_type":
			if len(args) != 1 || (args[0] != "web" && args[0] != "native") {
				return d.Errf("client %s: application_type takes web or native", id)
			}
			cc.ApplicationType = args[0]
		case "redirect_uri", "redirect_uris":
			cc.RedirectURIs = append(cc.RedirectURIs, args...)
		case "scopes", "scope":
			cc.Scopes = append(cc.Scopes, args...)
		case "grant_types":
			cc.GrantTypes = append(cc.GrantTypes, args...)
		case "id_token_alg", "id_token_signed_response_alg":
			if len(args) != 1 {
				return d.Errf("client %s: id_token_alg takes one of RS256, ES256, EdDSA", id)
			}
			cc.IDTokenAlg = args[0]
		case "resource_server":
			if len(args) != 0 {
				return d.Errf("client %s: resource_server takes no value", id)
			}
			cc.ResourceServer = true
		case "dpop":
			if len(args) != 1 || (args[0] != "required" && args[0] != "optional") {
				return d.Errf("client %s: dpop takes required or optional", id)
			}
			cc.DPoP = args[0]
		case "jwks_file", "jwks_uri":
			if len(args) != 1 {
				return d.Errf("client %s: %s takes one value", id, setting)
			}
			if setting == "jwks_file" {
				cc.JWKSFile = args[0]
			} else {
				cc.JWKSURI = args[0]
			}
		default:
			return d.Errf("client %s: unknown setting %q", id, setting)
		}
		if len(args) == 0 && setting != "public" && setting != "resource_server" {
			return d.Errf("client %s: %s needs a value", id, setting)
		}
	}
	if cc.Public && cc.Secret != "" {
		return d.Errf("client %s: a public client has no secret", id)
	}
	if (cc.JWKSFile != "" || cc.JWKSURI != "") && (cc.Public || cc.Secret != "") {
		return d.Errf("client %s: a client with keys (jwks_file, jwks_uri) has neither a secret nor is it public", id)
	}
	if cc.JWKSFile != "" && cc.JWKSURI != "" {
		return d.Errf("client %s: jwks_file and jwks_uri exclude each other", id)
	}
	a.Clients[id] = cc
	return nil
}

// unmarshalRateLimit parses the `rate_limit { … }` block.
func (a *App) unmarshalRateLimit(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if a.RateLimit == nil {
		a.RateLimit = new(RateLimitConfig)
	}
	rl := a.RateLimit
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		setting := d.Val()
		args := d.RemainingArgs()
		switch setting {
		case "registration", "authentication", "refresh", "api", "authorization":
			if len(args) != 1 {
				return d.Errf("rate_limit: %s takes one value: N/s, N/m, N/h, N/d or off", setting)
			}
			if _, _, _, err := parseRate(args[0]); err != nil {
				return d.Errf("rate_limit %s: %v", setting, err)
			}
			*map[string]*string{"registration": &rl.Registration, "authentication": &rl.Authentication, "refresh": &rl.Refresh, "api": &rl.API, "authorization": &rl.Authorization}[setting] = args[0]
		case "store":
			switch {
			case len(args) == 1 && args[0] == "memory":
				rl.Store, rl.RedisURL = "memory", ""
			case len(args) == 2 && args[0] == "redis":
				rl.Store, rl.RedisURL = "redis", args[1]
			default:
				return d.Errf("rate_limit: store takes `memory` or `redis <url>`")
			}
		case "on_store_error":
			if len(args) != 2 || (args[0] != "authentication" && args[0] != "api") || (args[1] != "open" && args[1] != "closed") {
				return d.Errf("rate_limit: on_store_error takes `authentication|api open|closed`")
			}
			if args[0] == "api" {
				rl.APIOnStoreError = args[1]
			} else {
				rl.AuthenticationOnStoreError = args[1]
			}
		default:
			return d.Errf("rate_limit: unknown setting %q", setting)
		}
	}
	return nil
}

func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "auth_agent", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the handler, which takes no arguments:
//
//	auth_agent
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() || d.NextBlock(0) {
		return d.Err("auth_agent takes no arguments here; configure it in the global auth_agent option")
	}
	return nil
}

func parseHandlerDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	if err := handler.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return handler, nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)

// UnmarshalCaddyfile sets up the guard:
//
//	agent_guard [<matcher>] {
//		scopes <scope...>
//		resource <uri>
//		issuer <url>
//		strip_token
//		introspect <client_id> <client_secret>
//		key_refresh_interval <duration>
//		site <name>
//	}
func (g *Guard) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		setting := d.Val()
		args := d.RemainingArgs()
		switch setting {
		case "scopes", "scope":
			if len(args) == 0 {
				return d.ArgErr()
			}
			g.Scopes = append(g.Scopes, args...)
		case "resource", "issuer", "site":
			if len(args) != 1 {
				return d.Errf("agent_guard: %s takes one value", setting)
			}
			switch setting {
			case "resource":
				g.Resource = args[0]
			case "issuer":
				g.Issuer = args[0]
			default:
				g.Site = args[0]
			}
		case "strip_token":
			if len(args) != 0 {
				return d.Errf("agent_guard: strip_token takes no value")
			}
			g.StripToken = true
		case "dpop":
			if len(args) != 1 || (args[0] != "required" && args[0] != "optional") {
				return d.Errf("agent_guard: dpop takes required or optional")
			}
			g.DPoP = args[0]
		case "introspect":
			if len(args) != 2 {
				return d.Errf("agent_guard: introspect takes a client id and a secret")
			}
			g.Introspection = &IntrospectionConfig{ClientID: args[0], ClientSecret: args[1]}
		case "key_refresh_interval":
			if len(args) != 1 {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("agent_guard: key_refresh_interval %q is not a positive duration", args[0])
			}
			g.KeyRefreshInterval = caddy.Duration(dur)
		default:
			return d.Errf("agent_guard: unknown setting %q", setting)
		}
	}
	return nil
}

func parseGuardDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	g := new(Guard)
	if err := g.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return g, nil
}

var _ caddyfile.Unmarshaler = (*Guard)(nil)
