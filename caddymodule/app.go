// Package caddymodule is the Caddy glue: the auth_agent app, the HTTP
// handler serving the identity provider, the admin API routes and the
// Caddyfile parsing. Everything else lives in oauth, agents and storage.
package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/guard"
	"github.com/authagent/caddy-authagent/internal/metrics"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/ratelimit"
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
	DefaultBodyTimeout          = 10 * time.Second
	DefaultRequestLifetime      = 5 * time.Minute
	// MaxRefreshReuseGrace bounds refresh_reuse_grace: a retry comes
	// within a client's request timeout, and every second of grace is a
	// second in which a stolen refresh token goes unnoticed.
	MaxRefreshReuseGrace = time.Minute
)

// App is the auth_agent app: the state shared by every handler (the
// database, the signing keys, the agent registry) and its configuration.
type App struct {
	// The issuer identifier (required): the https URL where this server's
	// endpoints are reached, without a trailing slash, e.g.
	// "https://auth.example.com". It is the `iss` of every token.
	Issuer string `json:"issuer,omitempty"`

	// Where state is stored: a module of the auth_agent.storage namespace,
	// e.g. {"module": "badger", "path": "/var/lib/caddy/auth_agent"} or
	// {"module": "memory"}. Default: Badger in Caddy's data directory,
	// under auth_agent/.
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=auth_agent.storage inline_key=module"`

	// How long access tokens live. Default: 1h.
	AccessTokenLifetime caddy.Duration `json:"access_token_lifetime,omitempty"`

	// How long refresh tokens live. Default: 720h.
	RefreshTokenLifetime caddy.Duration `json:"refresh_token_lifetime,omitempty"`

	// How long after a refresh token was rotated a second use is taken
	// for the client retrying after it lost the answer (MCP 2026-07-28):
	// it gets a fresh successor, the first one becomes void, and the
	// family is not revoked. Later, or once the successor was used, a
	// second use revokes the family as always. Default: 0 (off); at most
	// 60s.
	RefreshReuseGrace caddy.Duration `json:"refresh_reuse_grace,omitempty"`

	// How often signing keys are replaced; the previous key stays published
	// for one more period. Default: 720h (30 days).
	KeyRotation caddy.Duration `json:"key_rotation,omitempty"`

	// The algorithm of access-token signatures: ES256 (default; ~30 µs to
	// sign, where RSA takes ~1.5 ms), RS256 (for verifiers that only know
	// RSA) or EdDSA.
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

	// How long a request to the IdP's endpoints may take to send its
	// body; slower ones get 408 and their connection is closed (Caddy's
	// own read timeout is off by default). Default: 10s.
	BodyTimeout caddy.Duration `json:"body_timeout,omitempty"`

	// Rate limits (SPEC §7). Default: registration 5/h per IP, failed
	// authentication 10/m per IP and agent, refresh 60/h per client, API
	// calls 1000/h per agent, new authorization requests 60/m per IP,
	// counted in memory.
	RateLimit *RateLimitConfig `json:"rate_limit,omitempty"`

	// Cross-origin access to the IdP's endpoints and to agent_guard
	// routes. Default: any origin.
	CORS *CORSConfig `json:"cors,omitempty"`

	// What the sign-in page says an API scope lets the site do, by scope,
	// e.g. {"data:read": "Read your data"}. Identity scopes (openid,
	// profile, email, permissions) have their own words.
	ScopeDescriptions map[string]string `json:"scope_descriptions,omitempty"`

	// Client ID Metadata Documents (MCP 2025-11-25): "on" (default) lets a
	// client_id that is an https URL name the client's metadata, fetched
	// from there; "off" refuses such client ids.
	ClientIDMetadataDocuments string `json:"client_id_metadata_documents,omitempty"`

	// Hosts whose metadata documents may be fetched even though they
	// resolve to private, loopback or link-local addresses (every other
	// such address is refused, against server-side request forgery).
	ClientIDMetadataHosts []string `json:"client_id_metadata_hosts,omitempty"`

	// Signed webhooks (Standard Webhooks): each gets the events of the
	// types it lists, delivered at least once from a durable outbox in
	// the store. More can be added through the admin API.
	Webhooks []*WebhookConfig `json:"webhooks,omitempty"`

	// DPoP (RFC 9449): "required" refuses token requests without a DPoP
	// proof; "optional" (default) binds tokens to the key of a proof when
	// one is sent.
	DPoP string `json:"dpop,omitempty"`

	// DPoP server nonces: "on" makes every proof carry a nonce this
	// server gave (in DPoP-Nonce); "off" (default).
	DPoPNonce string `json:"dpop_nonce,omitempty"`

	// How far a DPoP proof's iat may be from the server's time. Default:
	// 60s; at most 5m.
	DPoPLeeway caddy.Duration `json:"dpop_leeway,omitempty"`

	// Identity providers whose Identity Assertion JWT Authorization
	// Grants (ID-JAGs) this server redeems with the jwt-bearer grant.
	TrustedIdPs []*TrustedIdPConfig `json:"trusted_idps,omitempty"`

	// Authorization servers this server issues ID-JAGs for, by token
	// exchange of an ID token it issued.
	IDJAGAudiences []*IDJAGAudienceConfig `json:"id_jag_audiences,omitempty"`

	ctx     caddy.Context
	log     *zap.Logger
	storage Storage
	// What Provision prepared for Start: no I/O happens before Start.
	serverCfg oauth.Config
	clients   []*oauth.Client
	agentCfg  agents.Config
	repl      *caddy.Replacer
	webhooks  []events.Webhook

	storeKey string
	limitKey string
	// state is set once Start has opened everything; handlers wait on
	// ready for it (Caddy starts apps in no fixed order, so a request may
	// reach a handler a moment before its app has started).
	state    *atomic.Pointer[appState]
	ready    chan struct{}
	stopSubs func()
	// stopKeyMetrics hands the key metrics back, unless a newer config
	// took them.
	stopKeyMetrics func()
	// protected are the resources this config's guards protect with this
	// server's tokens (an ID-JAG's resource must be one).
	protected *sync.Map
}

// TrustedIdPConfig is a `trusted_idp` block.
type TrustedIdPConfig struct {
	// The IdP's issuer identifier (https, or http on loopback).
	Issuer string `json:"issuer"`
	// Where its keys are; default: the jwks_uri of its metadata.
	JWKSURI string `json:"jwks_uri,omitempty"`
	// This server's clients that may present its grants.
	Clients []string `json:"clients"`
	// The most its grants may carry.
	Scopes []string `json:"scopes"`
	// "agent" (default): sub names an agent here; "external": the IdP's
	// own subject, carried with idp.
	Subject string `json:"subject,omitempty"`
	// "jwt" also takes plain RFC 7523 assertions (typ JWT) whose sub is
	// an agent here.
	Grant string `json:"grant,omitempty"`
}

// IDJAGAudienceConfig is an `id_jag_audience` block.
type IDJAGAudienceConfig struct {
	// The authorization server's issuer identifier.
	Issuer string `json:"issuer"`
	// This server's clients that may ask for ID-JAGs for it.
	Clients []string `json:"clients"`
	// The client at that server the ID-JAGs name.
	ClientID string `json:"client_id"`
	// The most an ID-JAG may carry.
	Scopes []string `json:"scopes"`
}

// protect records a resource a guard of this config protects.
func (a *App) protect(resource string) {
	if a.protected == nil { // the app provisions before the guards using it
		a.protected = new(sync.Map)
	}
	a.protected.Store(resource, true)
}

// protects reports whether a guard of this config protects resource.
func (a *App) protects(resource string) bool {
	if a.protected == nil {
		return false
	}
	_, ok := a.protected.Load(resource)
	return ok
}

// appState is everything a started app serves with.
type appState struct {
	server   *oauth.Server
	handler  http.Handler // server behind CORS
	verifier *guard.LocalVerifier
	dpop     *oauth.DPoPVerifier // shared by the server and the guards
	limits   *ratelimit.Limits
	keys     *oauth.KeyManager
	webhooks *events.Dispatcher
}

// running is the app of the config Caddy is running. The admin routes use
// it: Caddy provisions them before the new config's apps and does not put
// them back when a reload fails.
var running atomic.Pointer[App]

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
	// "web" (a website) or "native" (an app on the user's device), the
	// application_type of OpenID Connect registration. A web client's
	// redirect URIs are https, or http on loopback; a native app's are
	// http on loopback (any port) or, for a public client, private-use
	// schemes such as com.example.app:/cb. Default: native when a
	// redirect URI uses a private-use scheme, else web.
	ApplicationType string `json:"application_type,omitempty"`
	// The redirect URIs, matched exactly: https, or http on loopback only
	// (see ApplicationType).
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	// The most the client may ask for. Default: openid profile email
	// permissions.
	Scopes []string `json:"scopes,omitempty"`
	// Allowed grants. Default: authorization_code and refresh_token, plus
	// client_credentials and token exchange for confidential clients.
	GrantTypes []string `json:"grant_types,omitempty"`
	// The algorithm of the client's ID tokens: RS256 (default), ES256 or
	// EdDSA.
	IDTokenAlg string `json:"id_token_signed_response_alg,omitempty"`
	// A resource server (an API, or another Caddy's agent_guard with
	// `introspect`) may introspect every token of this issuer; other
	// clients learn only about their own tokens and those naming them in
	// aud. Confidential clients only.
	ResourceServer bool `json:"resource_server,omitempty"`
	// The client's public keys (a JWK Set): it authenticates with
	// private_key_jwt instead of a secret.
	JWKS json.RawMessage `json:"jwks,omitempty"`
	// A file holding the client's public keys (a JWK Set), read when the
	// configuration loads; instead of JWKS.
	JWKSFile string `json:"jwks_file,omitempty"`
	// Where the client publishes its public keys (https, or http on a
	// loopback address), fetched when needed; instead of JWKS.
	JWKSURI string `json:"jwks_uri,omitempty"`

	// DPoP: "required" refuses the client's token requests without a
	// DPoP proof (its tokens are always bound); "optional" (default).
	DPoP string `json:"dpop,omitempty"`
}

// keySet is the client's public keys: inline, or read from jwks_file.
func (cc *ClientConfig) keySet(repl *caddy.Replacer) (string, error) {
	switch {
	case len(cc.JWKS) > 0 && cc.JWKSFile != "":
		return "", errors.New("jwks and jwks_file exclude each other")
	case len(cc.JWKS) > 0:
		return string(cc.JWKS), nil
	case cc.JWKSFile != "":
		path := repl.ReplaceAll(cc.JWKSFile, "")
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("jwks_file: %v", err)
		}
		return string(b), nil
	}
	return "", nil
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

// Provision checks the configuration and prepares what Start needs. It
// opens nothing and writes nothing, so `caddy validate` works while a
// Caddy with the same config (and storage) runs.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.log = ctx.Logger()
	a.state, a.ready = new(atomic.Pointer[appState]), make(chan struct{})
	if err := a.Validate(); err != nil {
		return err
	}
	if err := metrics.Register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("auth_agent: metrics: %v", err)
	}
	a.repl = caddy.NewReplacer()
	regMode, regToken, err := policy(a.repl, "registration", a.Registration, oauth.RegistrationOpen)
	if err != nil {
		return err
	}
	dynMode, dynToken, err := policy(a.repl, "dynamic_client_registration", a.DynamicClientRegistration, oauth.DynamicRegistrationOff)
	if err != nil {
		return err
	}
	if a.clients, err = a.buildClients(a.repl); err != nil {
		return err
	}
	if a.webhooks, err = buildWebhooks(a.repl, a.Webhooks); err != nil {
		return err
	}
	if a.StorageRaw != nil {
		raw, legacy, err := upgradeStorageJSON(a.StorageRaw)
		if err != nil {
			return fmt.Errorf("auth_agent: storage: %v", err)
		}
		if legacy {
			a.log.Warn(`auth_agent: storage {"backend": …} is the previous JSON form; write {"module": "badger"|"memory", …}`)
		}
		a.StorageRaw = raw
		mod, err := ctx.LoadModule(a, "StorageRaw")
		if err != nil {
			return fmt.Errorf("auth_agent: storage: %v", err)
		}
		a.storage = mod.(Storage)
	} else {
		def := new(BadgerStorage)
		if err := def.Provision(ctx); err != nil {
			return err
		}
		a.storage = def
	}
	perms := make(map[string][]string, len(a.Agents))
	for id, ac := range a.Agents {
		perms[id] = append([]string{}, ac.Permissions...)
	}
	a.agentCfg = agents.Config{DefaultPermissions: a.DefaultPermissions, Permissions: perms}
	a.serverCfg = oauth.Config{
		Issuer:                    a.Issuer,
		RegistrationMode:          regMode,
		RegistrationToken:         regToken,
		DynamicRegistration:       dynMode,
		DynamicRegistrationToken:  dynToken,
		RefreshTokenLifetime:      durationOr(a.RefreshTokenLifetime, DefaultRefreshTokenLifetime),
		RefreshReuseGrace:         time.Duration(a.RefreshReuseGrace),
		CodeLifetime:              durationOr(a.CodeLifetime, DefaultCodeLifetime),
		RequestLifetime:           durationOr(a.RequestLifetime, DefaultRequestLifetime),
		BodyTimeout:               durationOr(a.BodyTimeout, DefaultBodyTimeout),
		ScopeDescriptions:         a.ScopeDescriptions,
		ClientIDMetadataDocuments: a.ClientIDMetadataDocuments != "off",
		ClientIDMetadataHosts:     a.ClientIDMetadataHosts,
		DPoPRequired:              a.DPoP == "required",
		Resources:                 a.protects,
	}
	for _, t := range a.TrustedIdPs {
		idp, err := oauth.NewTrustedIdP(t.spec(), oauth.TrustedIdPFromConfig, time.Time{})
		if err != nil {
			return fmt.Errorf("auth_agent: trusted_idp %s: %s", t.Issuer, oauth.AsError(err).Description)
		}
		a.serverCfg.TrustedIdPs = append(a.serverCfg.TrustedIdPs, *idp)
	}
	for _, t := range a.IDJAGAudiences {
		a.serverCfg.IDJAGAudiences = append(a.serverCfg.IDJAGAudiences, oauth.IDJAGAudience{
			Issuer: t.Issuer, Clients: t.Clients, ClientID: t.ClientID, Scopes: t.Scopes,
		})
	}
	return nil
}

// upgradeStorageJSON accepts the storage JSON of earlier versions, which
// named the backend in "backend" (default badger) instead of "module", and
// rewrites it to the guest-module form; legacy reports whether it did.
func upgradeStorageJSON(raw json.RawMessage) (json.RawMessage, bool, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, false, err
	}
	if _, ok := fields["module"]; ok {
		return raw, false, nil
	}
	module := json.RawMessage(`"badger"`)
	if b, ok := fields["backend"]; ok {
		module = b
		delete(fields, "backend")
	}
	fields["module"] = module
	out, err := json.Marshal(fields)
	return out, true, err
}

// hasher bounds concurrent argon2id work for the whole process: every
// config, old and new during a reload, shares it.
var hasher = agents.NewHasher(agents.DefaultArgon2, 0)

// verifiedSecrets is the process's memo of verified agent secrets, shared
// by every configuration: a reload keeps it, so agents authenticating in
// a loop do not all pay argon2id again at once.
var verifiedSecrets = agents.NewVerifiedMemo(nil)

func init() { metrics.SetVerificationSource(hasher.Verifications) }

// keyPublishDelay is how long a new signing key waits between being stored
// and signing when several processes share the store: each reloads keys
// every few seconds, so all publish it first.
const keyPublishDelay = 15 * time.Second

// Start opens the database (shared with any previous config through a
// usage pool), the rate-limit counters and the signing keys, wires the
// endpoints, and starts the background work (key reloads and rotation,
// which stop when the config is unloaded).
func (a *App) Start() error {
	st, err := a.start()
	if err != nil {
		close(a.ready) // waiting requests get 503
		return err
	}
	a.state.Store(st)
	close(a.ready)
	running.Store(a)
	go st.keys.Run(a.ctx)
	go st.webhooks.Run(a.ctx)
	return nil
}

func (a *App) start() (*appState, error) {
	store, key, err := openSharedStore(a.storage, a.log)
	if err != nil {
		return nil, err
	}
	a.storeKey = key
	limits, limitKey, err := buildLimits(a.RateLimit, a.repl, a.log)
	if err != nil {
		return nil, err
	}
	a.limitKey = limitKey
	if store.Shared() && limitKey == "memory" {
		a.log.Warn("the storage is shared by several Caddy instances but rate limits are counted in memory: each instance grants the full budget; set `rate_limit { store redis <url> }`")
	}
	// A key for every algorithm, rotating together: access tokens use one,
	// ID tokens whichever their client registered (at run time too).
	policy := oauth.KeyPolicy{
		Algs:     oauth.SupportedAlgs,
		Rotation: durationOr(a.KeyRotation, DefaultKeyRotation),
	}
	if store.Shared() {
		policy.PublishDelay = keyPublishDelay
	}
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	keys, err := oauth.NewKeyManager(ctx, store, policy, nil, a.log.Named("keys"))
	if err != nil {
		return nil, fmt.Errorf("auth_agent: signing keys: %w", err)
	}
	webhooks, err := newDispatcher(ctx, store, a.webhooks, a)
	if err != nil {
		return nil, err
	}
	bus := events.NewBus(a.log.Named("audit"), a.log.Named("events"), nil, webhooks)
	webhooks.SetEvents(bus)
	keys.SetEvents(bus)
	a.stopKeyMetrics = metrics.SetKeySource(keys.MetricState)
	agentCfg := a.agentCfg
	agentCfg.Memo = verifiedSecrets
	registry := agents.NewService(store, hasher, agentCfg, nil)
	a.stopSubs = store.revocations.Subscribe(func(c oauth.Change) {
		if c.Kind == oauth.ChangeAgentUpdated || c.Kind == oauth.ChangeAgentRevoked {
			registry.Forget(c.Key)
		}
	})
	tokens := oauth.NewTokens(a.Issuer, durationOr(a.AccessTokenLifetime, DefaultAccessTokenLifetime), a.accessTokenAlg(), keys, nil)
	dpop := oauth.DPoPConfig{Leeway: time.Duration(a.DPoPLeeway), Replays: store.replays, NotBefore: store.dpopNotBefore, Durable: store.dpopDurable}
	if a.DPoPNonce == "on" {
		dpop.Nonces = oauth.NewDPoPNonces(store.dpopNonceKey, nil)
	}
	server := oauth.NewServer(a.serverCfg, oauth.Deps{
		Agents:      registry,
		Keys:        keys,
		Tokens:      tokens,
		Clients:     a.clients,
		Store:       store,
		CodeKey:     store.codeKey,
		Revocations: store.revocations,
		Limits:      limits,
		DPoP:        oauth.NewDPoPVerifier(dpop),
		Events:      bus,
		Log:         a.log,
	})
	return &appState{
		server:   server,
		handler:  newCORS(a.CORS).Handler(server),
		verifier: guard.NewLocalVerifier(a.Issuer, keys.Lookup, store.revocations),
		dpop:     server.DPoP(),
		limits:   limits,
		keys:     keys,
		webhooks: webhooks,
	}, nil
}

// startWait bounds how long a request waits for its app to start.
const startWait = 10 * time.Second

// started returns the started app's state, waiting (within the request's
// context) for Start when a request arrives first.
func (a *App) started(ctx context.Context) (*appState, error) {
	if st := a.state.Load(); st != nil {
		return st, nil
	}
	t := time.NewTimer(startWait)
	defer t.Stop()
	select {
	case <-a.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
	}
	if st := a.state.Load(); st != nil {
		return st, nil
	}
	return nil, oauth.ErrTemporarilyUnavailable("the auth_agent app is not running")
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
		jwks, err := cc.keySet(repl)
		if err != nil {
			return nil, fmt.Errorf("auth_agent: client %q: %v", id, err)
		}
		jwksURI := repl.ReplaceAll(cc.JWKSURI, "")
		if !cc.Public && secret == "" && jwks == "" && jwksURI == "" {
			return nil, fmt.Errorf("auth_agent: client %q needs a `secret` (at least %d characters), keys (`jwks_file`, `jwks_uri`) or `public`", id, oauth.MinConfiguredSecret)
		}
		c, _, err := oauth.NewClient(oauth.ClientSpec{
			ID: id, Name: cc.Name, Secret: secret, Public: cc.Public, RedirectURIs: cc.RedirectURIs,
			Scopes: cc.Scopes, GrantTypes: cc.GrantTypes, IDTokenAlg: cc.IDTokenAlg, ResourceServer: cc.ResourceServer, JWKS: jwks, JWKSURI: jwksURI,
			RequireDPoP: cc.DPoP == "required", ApplicationType: cc.ApplicationType,
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
	if err := oauth.ValidateIssuer(a.Issuer); err != nil {
		return fmt.Errorf("auth_agent: %v", err)
	}
	for name, d := range map[string]caddy.Duration{
		"access_token_lifetime": a.AccessTokenLifetime, "refresh_token_lifetime": a.RefreshTokenLifetime, "key_rotation": a.KeyRotation,
		"code_lifetime": a.CodeLifetime, "request_lifetime": a.RequestLifetime, "body_timeout": a.BodyTimeout,
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
	if d := time.Duration(a.BodyTimeout); d != 0 && (d < time.Second || d > 10*time.Minute) {
		return fmt.Errorf("auth_agent: body_timeout %s must be between 1s and 10m", d)
	}
	if d := time.Duration(a.RequestLifetime); d != 0 && (d < 10*time.Second || d > time.Hour) {
		return fmt.Errorf("auth_agent: request_lifetime %s must be between 10s and 1h", d)
	}
	if d := time.Duration(a.RefreshReuseGrace); d < 0 || d > MaxRefreshReuseGrace {
		return fmt.Errorf("auth_agent: refresh_reuse_grace %s must be between 0s (off) and %s", d, MaxRefreshReuseGrace)
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
	if err := validateIDJAG(a.TrustedIdPs, a.IDJAGAudiences); err != nil {
		return err
	}
	switch a.DPoP {
	case "", "required", "optional":
	default:
		return fmt.Errorf("auth_agent: dpop %q must be required or optional", a.DPoP)
	}
	switch a.DPoPNonce {
	case "", "on", "off":
	default:
		return fmt.Errorf("auth_agent: dpop_nonce %q must be on or off", a.DPoPNonce)
	}
	if d := time.Duration(a.DPoPLeeway); d != 0 && (d < time.Second || d > 5*time.Minute) {
		return fmt.Errorf("auth_agent: dpop_leeway %s must be between 1s and 5m", d)
	}
	for id, cc := range a.Clients {
		if cc != nil && cc.DPoP != "" && cc.DPoP != "required" && cc.DPoP != "optional" {
			return fmt.Errorf("auth_agent: client %q: dpop %q must be required or optional", id, cc.DPoP)
		}
		if cc != nil && cc.ApplicationType != "" && cc.ApplicationType != oauth.AppNative && cc.ApplicationType != oauth.AppWeb {
			return fmt.Errorf("auth_agent: client %q: application_type %q must be native or web", id, cc.ApplicationType)
		}
	}
	switch a.ClientIDMetadataDocuments {
	case "", "on", "off":
	default:
		return fmt.Errorf("auth_agent: client_id_metadata_documents %q must be on or off", a.ClientIDMetadataDocuments)
	}
	for _, h := range a.ClientIDMetadataHosts {
		if h == "" || strings.ContainsAny(h, "/:@ ") {
			return fmt.Errorf("auth_agent: client_id_metadata_hosts: %q is not a host name", h)
		}
	}
	for sc, text := range a.ScopeDescriptions {
		if err := agents.ValidateScopeToken(sc); err != nil {
			return fmt.Errorf("auth_agent: scope_description: %q is not a valid scope", sc)
		}
		if text == "" || len(text) > 200 {
			return fmt.Errorf("auth_agent: scope_description %s: the description must be 1 to 200 characters", sc)
		}
	}
	if err := a.CORS.Validate(); err != nil {
		return err
	}
	if err := validateWebhooks(a.Webhooks); err != nil {
		return err
	}
	return nil
}

func (a *App) accessTokenAlg() string {
	if a.AccessTokenAlg == "" {
		return oauth.AlgES256
	}
	return a.AccessTokenAlg
}

// Stop hands the admin routes back; background loops end with the config's
// context, and the database outlives this config when the next one shares
// it.
func (a *App) Stop() error {
	running.CompareAndSwap(a, nil)
	if a.stopSubs != nil {
		a.stopSubs()
	}
	if a.stopKeyMetrics != nil {
		a.stopKeyMetrics()
	}
	return nil
}

// Cleanup releases this config's hold on the database and the counters;
// the last holder closes them. It copes with a Provision or Start that
// failed half-way, and with a config that was only validated.
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

func durationOr(d caddy.Duration, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return time.Duration(d)
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
