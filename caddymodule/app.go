// Package caddymodule is the Caddy glue: the auth_agent app, the HTTP
// handler serving the identity provider, the admin API routes and the
// Caddyfile parsing. Everything else lives in oauth, agents and storage.
package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

func init() {
	caddy.RegisterModule(App{})
}

// Defaults for the app's settings.
const (
	DefaultAccessTokenLifetime  = time.Hour
	DefaultRefreshTokenLifetime = 720 * time.Hour
	DefaultKeyRotation          = 720 * time.Hour
	DefaultCodeLifetime         = time.Minute
	DefaultRequestLifetime      = 5 * time.Minute
)

// App is the auth_agent app: the state shared by every handler (the
// database, the signing keys, the agent registry) and its configuration.
type App struct {
	// The issuer identifier (required): the https URL where this server's
	// endpoints are reached, without a trailing slash, e.g.
	// "https://auth.example.com". It is the `iss` of every token.
	Issuer string `json:"issuer,omitempty"`

	// Where and how state is stored. Default: Badger in Caddy's data
	// directory, under auth_agent/.
	Storage *StorageConfig `json:"storage,omitempty"`

	// How long access tokens live. Default: 1h.
	AccessTokenLifetime caddy.Duration `json:"access_token_lifetime,omitempty"`

	// How long refresh tokens live. Default: 720h.
	RefreshTokenLifetime caddy.Duration `json:"refresh_token_lifetime,omitempty"`

	// How often signing keys are replaced; the previous key stays published
	// for one more period. Default: 720h (30 days).
	KeyRotation caddy.Duration `json:"key_rotation,omitempty"`

	// The algorithm of access-token signatures: RS256 (default), ES256 or
	// EdDSA.
	AccessTokenAlg string `json:"access_token_alg,omitempty"`

	// Who may register agents. Default: open.
	Registration *RegistrationConfig `json:"registration,omitempty"`

	// Permissions given to newly registered agents that Agents does not name.
	DefaultPermissions []string `json:"default_permissions,omitempty"`

	// Agents whose permissions the operator fixes, by agent id. These win
	// over anything stored or set through the admin API, and only the
	// operator (admin API) or a holder of the registration token may
	// register these ids.
	Agents map[string]*AgentConfig `json:"agents,omitempty"`

	// OAuth clients (websites, apps), by client_id.
	Clients map[string]*ClientConfig `json:"clients,omitempty"`

	// RFC 7591 dynamic client registration at /oauth2/register: mode
	// "off" (default), "open" or "token" (callers send the initial access
	// token as a bearer token).
	DynamicClientRegistration *RegistrationConfig `json:"dynamic_client_registration,omitempty"`

	// How long an authorization code may be redeemed. Default: 60s.
	CodeLifetime caddy.Duration `json:"code_lifetime,omitempty"`

	// How long a pending authorization request waits for its agent.
	// Default: 5m.
	RequestLifetime caddy.Duration `json:"request_lifetime,omitempty"`

	// Rate limits (SPEC §7). Default: registration 5/h per IP, failed
	// authentication 10/m per IP and agent, refresh 60/h per client, API
	// calls 1000/h per agent, counted in memory.
	RateLimit *RateLimitConfig `json:"rate_limit,omitempty"`

	// Cross-origin access to the IdP's endpoints. Default: any origin.
	CORS *CORSConfig `json:"cors,omitempty"`

	ctx      caddy.Context
	log      *zap.Logger
	store    *sharedStore
	storeKey string
	server   *oauth.Server
	handler  http.Handler // server behind CORS
	keys     *oauth.KeyManager
	verifier *oauth.LocalVerifier
	limits   *oauth.Limits
	limitKey string
}

// running is the app of the config Caddy is running. The admin routes use
// it: Caddy provisions them before the new config's apps and does not put
// them back when a reload fails.
var running atomic.Pointer[App]

// StorageConfig chooses the database.
type StorageConfig struct {
	// "badger" (default) keeps state on disk; "memory" keeps it in this
	// process only (development and tests: everything is lost on exit).
	Backend string `json:"backend,omitempty"`
	// The Badger directory. Default: Caddy's data directory + /auth_agent.
	Path string `json:"path,omitempty"`
	// A file holding the key that encrypts the database at rest: 16, 24 or
	// 32 bytes, raw or hex-encoded (AES-128/192/256).
	EncryptionKeyFile string `json:"encryption_key_file,omitempty"`
}

// RegistrationConfig is the policy of POST /api/register-agent.
type RegistrationConfig struct {
	// "open" (anyone), "token" (callers send Authorization: Bearer <token>)
	// or "closed".
	Mode string `json:"mode,omitempty"`
	// The registration token in token mode; placeholders such as {env.X}
	// are expanded.
	Token string `json:"token,omitempty"`
}

// ClientConfig is an OAuth client in the configuration.
type ClientConfig struct {
	// The name the sign-in page shows. Default: the client id.
	Name string `json:"name,omitempty"`
	// The client secret (at least 32 characters; placeholders such as
	// {env.X} are expanded). Required unless Public.
	Secret string `json:"secret,omitempty"`
	// A public client (a browser or native app) has no secret and
	// authenticates with PKCE alone.
	Public bool `json:"public,omitempty"`
	// The redirect URIs, matched exactly: https, or http on loopback only.
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	// The most the client may ask for. Default: openid profile email
	// permissions.
	Scopes []string `json:"scopes,omitempty"`
	// Allowed grants. Default: authorization_code and refresh_token, plus
	// client_credentials and token exchange for confidential clients.
	GrantTypes []string `json:"grant_types,omitempty"`
}

// AgentConfig fixes an agent's settings.
type AgentConfig struct {
	// The scopes the agent may be granted for APIs.
	Permissions []string `json:"permissions,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "auth_agent",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision opens the database (shared with any previous config through a
// usage pool), loads the signing keys and wires the endpoints.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.log = ctx.Logger()
	if err := a.Validate(); err != nil {
		return err
	}
	repl := caddy.NewReplacer()
	regMode, regToken, err := policy(repl, "registration", a.Registration, oauth.RegistrationOpen)
	if err != nil {
		return err
	}
	dynMode, dynToken, err := policy(repl, "dynamic_client_registration", a.DynamicClientRegistration, oauth.DynamicRegistrationOff)
	if err != nil {
		return err
	}
	clients, err := a.buildClients(repl)
	if err != nil {
		return err
	}

	store, key, err := openSharedStore(a.Storage, a.log)
	if err != nil {
		return err
	}
	a.store, a.storeKey = store, key
	if a.limits, a.limitKey, err = buildLimits(a.RateLimit, repl, a.log); err != nil {
		return err
	}

	rotation := durationOr(a.KeyRotation, DefaultKeyRotation)
	alg := a.accessTokenAlg()
	algs := []string{oauth.AlgRS256, alg}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a.keys, err = oauth.NewKeyManager(pctx, store, algs, rotation, nil, a.log.Named("keys"))
	if err != nil {
		return fmt.Errorf("auth_agent: signing keys: %w", err)
	}

	perms := make(map[string][]string, len(a.Agents))
	for id, ac := range a.Agents {
		perms[id] = append([]string{}, ac.Permissions...)
	}
	registry := agents.NewService(store, store.hasher, agents.Config{
		DefaultPermissions: a.DefaultPermissions,
		Permissions:        perms,
	}, nil)
	tokens := oauth.NewTokens(a.Issuer, durationOr(a.AccessTokenLifetime, DefaultAccessTokenLifetime), alg, a.keys, nil)
	a.verifier = oauth.NewLocalVerifier(tokens, store.revocations)
	a.server = oauth.NewServer(oauth.Config{
		Issuer:                   a.Issuer,
		RegistrationMode:         regMode,
		RegistrationToken:        regToken,
		DynamicRegistration:      dynMode,
		DynamicRegistrationToken: dynToken,
		RefreshTokenLifetime:     durationOr(a.RefreshTokenLifetime, DefaultRefreshTokenLifetime),
		CodeLifetime:             durationOr(a.CodeLifetime, DefaultCodeLifetime),
		RequestLifetime:          durationOr(a.RequestLifetime, DefaultRequestLifetime),
	}, oauth.Deps{
		Agents:      registry,
		Keys:        a.keys,
		Tokens:      tokens,
		Clients:     oauth.NewClients(clients, store, nil),
		Store:       store,
		CodeKey:     store.codeKey,
		Revocations: store.revocations,
		Limits:      a.limits,
		Log:         a.log,
	})
	a.handler = corsHandler(a.CORS, a.server)
	return nil
}

// policy reads a registration-style policy (open, closed or off, token),
// expanding placeholders in the token; a token must be usable as a bearer
// token.
func policy(repl *caddy.Replacer, name string, p *RegistrationConfig, def string) (mode, token string, err error) {
	if p == nil || p.Mode == "" {
		return def, "", nil
	}
	if p.Mode != oauth.RegistrationToken {
		return p.Mode, "", nil
	}
	token = repl.ReplaceAll(p.Token, "")
	if token == "" {
		return "", "", fmt.Errorf("auth_agent: %s token is empty after expanding placeholders", name)
	}
	if _, err := oauth.ParseBearer("Bearer " + token); err != nil {
		return "", "", fmt.Errorf("auth_agent: %s token may contain only letters, digits and - . _ ~ + / =", name)
	}
	return p.Mode, token, nil
}

// buildClients turns the configured clients into protocol clients.
func (a *App) buildClients(repl *caddy.Replacer) ([]*oauth.Client, error) {
	ids := make([]string, 0, len(a.Clients))
	for id := range a.Clients {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var out []*oauth.Client
	for _, id := range ids {
		cc := a.Clients[id]
		if cc == nil {
			return nil, fmt.Errorf("auth_agent: client %q has no settings", id)
		}
		secret := repl.ReplaceAll(cc.Secret, "")
		if !cc.Public && secret == "" {
			return nil, fmt.Errorf("auth_agent: client %q needs a `secret` (at least %d characters) or `public`", id, oauth.MinConfiguredSecret)
		}
		c, _, err := oauth.NewClient(oauth.ClientSpec{
			ID: id, Name: cc.Name, Secret: secret, Public: cc.Public, RedirectURIs: cc.RedirectURIs,
			Scopes: cc.Scopes, GrantTypes: cc.GrantTypes,
		}, oauth.ClientFromConfig, time.Now())
		if err != nil {
			return nil, fmt.Errorf("auth_agent: client %q: %s", id, oauth.AsError(err).Description)
		}
		out = append(out, c)
	}
	return out, nil
}

// Validate checks the configuration; its messages name the setting and the
// bad value.
func (a *App) Validate() error {
	if a.Issuer == "" {
		return errors.New("auth_agent: issuer is required: the https URL where this server is reached, e.g. `issuer https://auth.example.com`")
	}
	u, err := url.Parse(a.Issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path[len(u.Path)-1] == '/') {
		return fmt.Errorf("auth_agent: issuer %q must be an http(s) URL with a host, no query, fragment or trailing slash", a.Issuer)
	}
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		return fmt.Errorf("auth_agent: issuer %q must use https (http is allowed only for localhost)", a.Issuer)
	}
	for name, d := range map[string]caddy.Duration{
		"access_token_lifetime": a.AccessTokenLifetime, "refresh_token_lifetime": a.RefreshTokenLifetime, "key_rotation": a.KeyRotation,
		"code_lifetime": a.CodeLifetime, "request_lifetime": a.RequestLifetime,
	} {
		if d < 0 {
			return fmt.Errorf("auth_agent: %s %s must be positive", name, time.Duration(d))
		}
	}
	if a.KeyRotation != 0 && time.Duration(a.KeyRotation) < time.Hour {
		return fmt.Errorf("auth_agent: key_rotation %s is too short (minimum 1h)", time.Duration(a.KeyRotation))
	}
	// A retired key stays published for one rotation period; a token must
	// not outlive the key that verifies it.
	if at, kr := durationOr(a.AccessTokenLifetime, DefaultAccessTokenLifetime), durationOr(a.KeyRotation, DefaultKeyRotation); at > kr {
		return fmt.Errorf("auth_agent: access_token_lifetime %s must not exceed key_rotation %s", at, kr)
	}
	if d := time.Duration(a.CodeLifetime); d != 0 && (d < time.Second || d > 10*time.Minute) {
		return fmt.Errorf("auth_agent: code_lifetime %s must be between 1s and 10m", d)
	}
	if d := time.Duration(a.RequestLifetime); d != 0 && (d < 10*time.Second || d > time.Hour) {
		return fmt.Errorf("auth_agent: request_lifetime %s must be between 10s and 1h", d)
	}
	if r := a.DynamicClientRegistration; r != nil {
		switch r.Mode {
		case "", oauth.DynamicRegistrationOff, oauth.RegistrationOpen:
		case oauth.RegistrationToken:
			if r.Token == "" {
				return errors.New("auth_agent: dynamic_client_registration token needs a token: `dynamic_client_registration token <token>`")
			}
		default:
			return fmt.Errorf("auth_agent: dynamic_client_registration %q must be off, open or token", r.Mode)
		}
	}
	if alg := a.AccessTokenAlg; alg != "" && !slices.Contains(oauth.SupportedAlgs, alg) {
		return fmt.Errorf("auth_agent: access_token_alg %q is not one of %v", alg, oauth.SupportedAlgs)
	}
	if r := a.Registration; r != nil {
		switch r.Mode {
		case "", oauth.RegistrationOpen, oauth.RegistrationClosed:
		case oauth.RegistrationToken:
			if r.Token == "" {
				return errors.New("auth_agent: registration token needs a token: `registration token <token>`")
			}
		default:
			return fmt.Errorf("auth_agent: registration %q must be open, token or closed", r.Mode)
		}
	}
	if err := agents.ValidatePermissions(a.DefaultPermissions); err != nil {
		return fmt.Errorf("auth_agent: default_permissions: %v", err)
	}
	for id, ac := range a.Agents {
		if err := agents.ValidateID(id); err != nil {
			return fmt.Errorf("auth_agent: agent %q: %v", id, err)
		}
		if ac == nil {
			return fmt.Errorf("auth_agent: agent %q has no settings", id)
		}
		if err := agents.ValidatePermissions(ac.Permissions); err != nil {
			return fmt.Errorf("auth_agent: agent %q: %v", id, err)
		}
	}
	if err := a.RateLimit.Validate(); err != nil {
		return err
	}
	if err := a.CORS.Validate(); err != nil {
		return err
	}
	if s := a.Storage; s != nil {
		switch s.Backend {
		case "", "badger":
		case "memory":
			if s.Path != "" || s.EncryptionKeyFile != "" {
				return errors.New("auth_agent: storage memory takes no path or encryption_key_file")
			}
		default:
			return fmt.Errorf("auth_agent: storage backend %q must be badger or memory", s.Backend)
		}
	}
	return nil
}

func (a *App) accessTokenAlg() string {
	if a.AccessTokenAlg == "" {
		return oauth.AlgRS256
	}
	return a.AccessTokenAlg
}

// Start runs the background work (key rotation, which stops when the config
// is unloaded) and makes this the app the admin routes use.
func (a *App) Start() error {
	go a.keys.Run(a.ctx)
	running.Store(a)
	return nil
}

// Stop hands the admin routes back; background loops end with the config's
// context, and the database outlives this config when the next one shares
// it.
func (a *App) Stop() error {
	running.CompareAndSwap(a, nil)
	return nil
}

// Cleanup releases this config's hold on the database; the last holder
// closes it. It copes with a Provision that failed half-way.
func (a *App) Cleanup() error {
	if a.limitKey != "" {
		_, _ = limitStores.Delete(a.limitKey)
		a.limitKey = ""
	}
	if a.storeKey == "" {
		return nil
	}
	_, err := stores.Delete(a.storeKey)
	a.storeKey = ""
	return err
}

// Server returns the protocol server the handlers dispatch to.
func (a *App) Server() *oauth.Server { return a.server }

func durationOr(d caddy.Duration, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return time.Duration(d)
}

func isLoopbackHost(h string) bool {
	return h == "localhost" || h == "127.0.0.1" || h == "::1"
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
