package caddymodule

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/rs/cors"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/ratelimit"
)

// RateLimitConfig sets the budgets of SPEC §7. Each is "N/s", "N/m", "N/h"
// or "N/d", or "off".
type RateLimitConfig struct {
	// Registrations per client IP. Default: 5/h.
	Registration string `json:"registration,omitempty"`
	// Failed agent authentications per client IP and per (agent id,
	// client IP) (successes never count); each agent also has ceilings
	// against guessing from many addresses (10x this per window, 50x per
	// 10 windows, 200x per 60), which spare the addresses it signed in from
	// today or yesterday and leave every other one a try per 10 windows.
	// Default: 10/m.
	Authentication string `json:"authentication,omitempty"`
	// Refresh-token grants per refresh family (one sign-in of one agent at
	// one client); each agent at a client has a ceiling of 10 times this
	// over all its sign-ins, and each client one of 1000 times, a flood
	// guard. Default: 60/h.
	Refresh string `json:"refresh,omitempty"`
	// New authorization requests (sign-ins started at /oauth2/authorize)
	// per client IP. Default: 60/m.
	Authorization string `json:"authorization,omitempty"`
	// Authenticated API calls per agent (IdP /api/* and agent_guard
	// routes). Default: 1000/h.
	API string `json:"api,omitempty"`
	// Where counters live: "memory" (default; one process) or "redis"
	// (several Caddy instances share one budget).
	Store string `json:"store,omitempty"`
	// The Redis URL with store "redis": redis://[user:pass@]host:port/db.
	RedisURL string `json:"redis_url,omitempty"`
	// What happens when the store fails (Redis unreachable): "closed"
	// refuses with 503, "open" lets the request through; both log.
	// Defaults: closed for registration, authentication and refresh; open
	// for API calls.
	AuthenticationOnStoreError string `json:"authentication_on_store_error,omitempty"`
	APIOnStoreError            string `json:"api_on_store_error,omitempty"`
}

// agentCeilings set an agent's failed-authentication ceilings from the
// per-address budget: times the limit, in periods times its window.
var agentCeilings = []struct{ times, periods int64 }{{10, 1}, {50, 10}, {200, 60}}

// refreshClientFactor and refreshAgentFactor set a client's refresh
// ceiling, and an agent's at one client, from the per-family budget.
const (
	refreshClientFactor = 1000
	refreshAgentFactor  = 10
)

// Default budgets (SPEC §7).
const (
	DefaultRegistrationLimit   = "5/h"
	DefaultAuthenticationLimit = "10/m"
	DefaultRefreshLimit        = "60/h"
	DefaultAuthorizationLimit  = "60/m"
	DefaultAPILimit            = "1000/h"
)

// parseRate reads "N/s|m|h|d"; ok is false for "off".
func parseRate(s string) (limit int64, period time.Duration, on bool, err error) {
	if s == "off" {
		return 0, 0, false, nil
	}
	n, unit, found := strings.Cut(s, "/")
	limit, perr := strconv.ParseInt(n, 10, 64)
	if !found || perr != nil || limit < 1 || limit > 1e9 {
		return 0, 0, false, fmt.Errorf("%q is not N/s, N/m, N/h, N/d or off", s)
	}
	switch unit {
	case "s":
		period = time.Second
	case "m":
		period = time.Minute
	case "h":
		period = time.Hour
	case "d":
		period = 24 * time.Hour
	default:
		return 0, 0, false, fmt.Errorf("%q is not N/s, N/m, N/h, N/d or off", s)
	}
	return limit, period, true, nil
}

func (c *RateLimitConfig) withDefaults() RateLimitConfig {
	out := RateLimitConfig{}
	if c != nil {
		out = *c
	}
	for _, f := range []struct {
		v   *string
		def string
	}{
		{&out.Registration, DefaultRegistrationLimit}, {&out.Authentication, DefaultAuthenticationLimit},
		{&out.Refresh, DefaultRefreshLimit}, {&out.API, DefaultAPILimit}, {&out.Authorization, DefaultAuthorizationLimit},
		{&out.Store, "memory"}, {&out.AuthenticationOnStoreError, "closed"}, {&out.APIOnStoreError, "open"},
	} {
		if *f.v == "" {
			*f.v = f.def
		}
	}
	return out
}

// Validate checks every setting, naming the bad one.
func (c *RateLimitConfig) Validate() error {
	cfg := c.withDefaults()
	for name, v := range map[string]string{"registration": cfg.Registration, "authentication": cfg.Authentication, "refresh": cfg.Refresh, "api": cfg.API, "authorization": cfg.Authorization} {
		if _, _, _, err := parseRate(v); err != nil {
			return fmt.Errorf("auth_agent: rate_limit %s: %v", name, err)
		}
	}
	switch cfg.Store {
	case "memory":
		if cfg.RedisURL != "" {
			return fmt.Errorf("auth_agent: rate_limit: redis_url needs `store redis`")
		}
	case "redis":
		if !strings.HasPrefix(cfg.RedisURL, "redis://") && !strings.HasPrefix(cfg.RedisURL, "rediss://") && !strings.HasPrefix(cfg.RedisURL, "{") {
			return fmt.Errorf("auth_agent: rate_limit store redis needs a redis:// URL, got %q", cfg.RedisURL)
		}
	default:
		return fmt.Errorf("auth_agent: rate_limit store %q must be memory or redis", cfg.Store)
	}
	for name, v := range map[string]string{"authentication_on_store_error": cfg.AuthenticationOnStoreError, "api_on_store_error": cfg.APIOnStoreError} {
		if v != "open" && v != "closed" {
			return fmt.Errorf("auth_agent: rate_limit %s %q must be open or closed", name, v)
		}
	}
	return nil
}

// limitStores shares counters across reloads, so a reload does not reset
// anyone's budget.
var limitStores = caddy.NewUsagePool()

type pooledLimitStore struct{ *ratelimit.Store }

func (p pooledLimitStore) Destruct() error { return p.Close() }

// buildLimits opens (or reuses) the counter store and makes the budgets.
// It returns the pool key to release on Cleanup.
func buildLimits(c *RateLimitConfig, repl *caddy.Replacer, log *zap.Logger) (*ratelimit.Limits, string, error) {
	cfg := c.withDefaults()
	key := "memory"
	url := ""
	if cfg.Store == "redis" {
		url = repl.ReplaceAll(cfg.RedisURL, "")
		key = "redis:" + url
	}
	val, _, err := limitStores.LoadOrNew(key, func() (caddy.Destructor, error) {
		if cfg.Store == "redis" {
			s, err := ratelimit.NewRedisStore(url)
			if err != nil {
				return nil, fmt.Errorf("auth_agent: rate_limit: %v", err)
			}
			return pooledLimitStore{s}, nil
		}
		return pooledLimitStore{ratelimit.NewMemoryStore()}, nil
	})
	if err != nil {
		return nil, "", err
	}
	store := val.(pooledLimitStore)
	limits := &ratelimit.Limits{
		AuthFailOpen: cfg.AuthenticationOnStoreError == "open",
		APIFailOpen:  cfg.APIOnStoreError == "open",
		Log:          log.Named("rate_limit"),
	}
	for _, b := range []struct {
		name string
		spec string
		dst  *ratelimit.Limiter
	}{
		{"registration", cfg.Registration, &limits.Registration},
		{"authentication", cfg.Authentication, &limits.FailedAuth},
		{"refresh", cfg.Refresh, &limits.Refresh},
		{"api", cfg.API, &limits.API},
		{"authorization", cfg.Authorization, &limits.Authorization},
	} {
		limit, period, on, _ := parseRate(b.spec)
		if on {
			*b.dst = store.Budget(b.name, limit, period)
		}
	}
	if limit, period, on, _ := parseRate(cfg.Authentication); on {
		// Failures per agent from every address together: ceilings far
		// above the per-address budget, in longer windows each (100/m,
		// 500/10m, 2000/h by default), so sustained distributed guessing
		// is locked out longer and longer; addresses the agent signed in
		// from today or yesterday are exempt, and any other gets one try
		// per 10 windows.
		for i, tier := range agentCeilings {
			limits.FailedAuthAgent = append(limits.FailedAuthAgent,
				store.Budget(fmt.Sprintf("authentication_agent_%d", i+1), limit*tier.times, period*time.Duration(tier.periods)))
		}
		limits.KnownAddresses = store.Budget("known_addresses", 1<<40, 48*time.Hour)
		limits.CeilingTries = store.Budget("authentication_ceiling_tries", 1, 10*period)
	}
	if limit, period, on, _ := parseRate(cfg.Refresh); on {
		// The per-client ceiling: far above one family's budget, only a
		// guard against a flood through many sign-ins.
		limits.RefreshClient = store.Budget("refresh_client", limit*refreshClientFactor, period)
		limits.RefreshAgent = store.Budget("refresh_agent", limit*refreshAgentFactor, period)
	}
	return limits, key, nil
}

// CORSConfig sets cross-origin access to the IdP's endpoints.
type CORSConfig struct {
	// Allowed origins, e.g. "https://app.example.com". Default: "*" (any
	// origin; fine for development, too open for production).
	Origins []string `json:"origins,omitempty"`
	// Let browsers send credentials (cookies, HTTP auth). Only with
	// explicit origins: never combined with "*".
	AllowCredentials bool `json:"allow_credentials,omitempty"`
	// Request headers browsers may send besides Content-Type and
	// Authorization. Default: Mcp-Protocol-Version, Mcp-Session-Id and
	// Last-Event-ID, which browser MCP clients send.
	Headers []string `json:"headers,omitempty"`
}

// Validate refuses credentials with a wildcard origin.
func (c *CORSConfig) Validate() error {
	if c == nil {
		return nil
	}
	for _, o := range c.Origins {
		if o == "*" && c.AllowCredentials {
			return fmt.Errorf("auth_agent: cors: allow_credentials cannot be combined with origin *")
		}
		if o != "*" && !strings.HasPrefix(o, "https://") && !strings.HasPrefix(o, "http://") {
			return fmt.Errorf("auth_agent: cors: origin %q must be * or an http(s) origin", o)
		}
	}
	for _, h := range c.Headers {
		if h == "" || strings.ContainsAny(h, " \t,:;\"()/<>?=@[]{}\\") {
			return fmt.Errorf("auth_agent: cors: %q is not a header name", h)
		}
	}
	return nil
}

// defaultCORSHeaders are the request headers allowed besides Content-Type
// and Authorization unless the configuration names others: those browser
// MCP clients send.
var defaultCORSHeaders = []string{"Mcp-Protocol-Version", "Mcp-Session-Id", "Last-Event-ID"}

// newCORS is github.com/rs/cors set up from c, for the IdP's endpoints
// and the guard's routes alike: preflight requests are answered without
// reaching the handler behind, and browsers may read the challenge
// (WWW-Authenticate), the MCP session and where they stand against the
// rate limits.
func newCORS(c *CORSConfig) *cors.Cors {
	origins := []string{"*"}
	creds := false
	headers := defaultCORSHeaders
	if c != nil {
		if len(c.Origins) > 0 {
			origins, creds = c.Origins, c.AllowCredentials
		}
		if len(c.Headers) > 0 {
			headers = c.Headers
		}
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions},
		AllowedHeaders: append([]string{"Content-Type", "Authorization", "DPoP"}, headers...),
		ExposedHeaders: []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After",
			"WWW-Authenticate", "DPoP-Nonce", "Mcp-Session-Id", "Mcp-Protocol-Version"},
		AllowCredentials: creds,
		MaxAge:           600,
	})
}
