// Package caddymodule is the Caddy glue: the auth_agent app, the HTTP
// handler serving the identity provider, the admin API routes and the
// Caddyfile parsing. Everything else lives in oauth, agents and storage.
package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
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
	// over anything stored or set through the admin API.
	Agents map[string]*AgentConfig `json:"agents,omitempty"`

	ctx      caddy.Context
	log      *zap.Logger
	store    *sharedStore
	storeKey string
	server   *oauth.Server
	keys     *oauth.KeyManager
}

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
	regMode, regToken := oauth.RegistrationOpen, ""
	if a.Registration != nil && a.Registration.Mode != "" {
		regMode, regToken = a.Registration.Mode, repl.ReplaceAll(a.Registration.Token, "")
		if regMode == oauth.RegistrationToken && regToken == "" {
			return errors.New("auth_agent: registration token is empty after expanding placeholders")
		}
	}

	store, key, err := openSharedStore(a.Storage, a.log)
	if err != nil {
		return err
	}
	a.store, a.storeKey = store, key

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
	a.server = oauth.NewServer(oauth.Config{
		Issuer:            a.Issuer,
		RegistrationMode:  regMode,
		RegistrationToken: regToken,
	}, registry, a.keys, tokens, a.log)
	return nil
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
	} {
		if d < 0 {
			return fmt.Errorf("auth_agent: %s %s must be positive", name, time.Duration(d))
		}
	}
	if a.KeyRotation != 0 && time.Duration(a.KeyRotation) < time.Hour {
		return fmt.Errorf("auth_agent: key_rotation %s is too short (minimum 1h)", time.Duration(a.KeyRotation))
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

// Start runs the background work: key rotation. It stops when the config
// is unloaded.
func (a *App) Start() error {
	go a.keys.Run(a.ctx)
	return nil
}

// Stop is a no-op: background loops end with the config's context, and the
// database outlives this config when the next one shares it.
func (a *App) Stop() error { return nil }

// Cleanup releases this config's hold on the database; the last holder
// closes it. It copes with a Provision that failed half-way.
func (a *App) Cleanup() error {
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
