package caddymodule

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/cors"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/guard"
	"github.com/authagent/caddy-authagent/internal/metrics"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/ratelimit"
)

func init() {
	caddy.RegisterModule(Guard{})
}

// Guard lets a request through to the next handler (typically
// reverse_proxy) only with a valid bearer token carrying the required
// scopes. It tells the upstream who called through headers and
// placeholders, and serves RFC 9728 protected-resource metadata at
// /.well-known/oauth-protected-resource.
//
// Placeholders set for the handlers after it:
//
//	{http.auth.agent.id}         the token's subject (agent id)
//	{http.auth.agent.client_id}  the client the token was issued to
//	{http.auth.agent.scopes}     the token's scopes, space-separated
//	{http.auth.agent.model}      the agent's model name
//	{http.auth.agent.idp}        the trusted IdP whose subject the token
//	                             names (a redeemed ID-JAG of an external
//	                             subject); empty for agents of this server
//
// and the same in X-Agent-Id, X-Agent-Client-Id, X-Agent-Scopes and
// X-Agent-Model request headers (any such headers the caller sent are
// removed first). {http.auth.user.id} is set to the agent id too, as
// Caddy's own authentication handler does.
type Guard struct {
	// Scopes the token must all carry.
	Scopes []string `json:"scopes,omitempty"`

	// When set, the token's aud must contain this resource (RFC 8707).
	Resource string `json:"resource,omitempty"`

	// A remote authorization server whose tokens to accept (its keys come
	// from its metadata and JWKS, cached). Default: this Caddy's own
	// auth_agent app, checked in process.
	Issuer string `json:"issuer,omitempty"`

	// Remove the Authorization header before the upstream sees it. (A
	// DPoP proof is always removed: the guard spent it.)
	StripToken bool `json:"strip_token,omitempty"`

	// DPoP (RFC 9449): "required" refuses tokens sent as Bearer: only
	// DPoP-bound tokens with a proof of their key pass; "optional"
	// (default) takes both, a bound token only with its proof.
	DPoP string `json:"dpop,omitempty"`

	// With a remote issuer: also check every token at its introspection
	// endpoint (answers cached for a few seconds), so revocations there
	// count here.
	Introspection *IntrospectionConfig `json:"introspection,omitempty"`

	// With a remote issuer: the least time between two fetches of its key
	// set. Default: 30s.
	KeyRefreshInterval caddy.Duration `json:"key_refresh_interval,omitempty"`

	// Site names this guard in the site label of its metrics. Default: the
	// resource, or "default".
	Site string `json:"site,omitempty"`

	// app is this Caddy's auth_agent app, when it has one: its verifier
	// checks local tokens, and its API budget applies on guarded routes.
	app          *App
	remote       *guard.RemoteVerifier
	metadataPath string
	cors         *cors.Cors
	poolKey      string
	log          *zap.Logger
	// decisions count this guard's results (guard.Result*, and
	// rate_limited), resolved once.
	decisions map[string]prometheus.Counter
}

// guardResults are the result labels of a guard's decisions.
var guardResults = []string{
	guard.ResultAllowed, guard.ResultMissingToken, guard.ResultMalformedToken, guard.ResultInvalidToken,
	guard.ResultRevoked, guard.ResultWrongAudience, guard.ResultInsufficientScope, guard.ResultUnavailable, guard.ResultDPoP,
	resultRateLimited, resultAppUnavailable,
}

// guardCounters are the decision counters of the guards of site.
func guardCounters(site string) map[string]prometheus.Counter {
	m := make(map[string]prometheus.Counter, len(guardResults))
	for _, res := range guardResults {
		m[res] = metrics.GuardCounter(site, res)
	}
	return m
}

const (
	resultRateLimited    = "rate_limited"
	resultAppUnavailable = "app_unavailable" // this Caddy's auth_agent app is not running
)

// IntrospectionConfig is the client the guard introspects as.
type IntrospectionConfig struct {
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Guard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.agent_guard",
		New: func() caddy.Module { return new(Guard) },
	}
}

// remoteVerifiers shares a remote issuer's cached keys across reloads and
// across the guards of one config.
var remoteVerifiers = caddy.NewUsagePool()

type pooledVerifier struct{ *guard.RemoteVerifier }

func (pooledVerifier) Destruct() error { return nil }

// Provision picks the verifier: this Caddy's auth_agent app (ready once
// the app has started), or a remote issuer's.
func (g *Guard) Provision(ctx caddy.Context) error {
	g.log = ctx.Logger()
	if err := g.Validate(); err != nil {
		return err
	}
	app, appErr := ctx.AppIfConfigured("auth_agent")
	if appErr == nil {
		g.app = app.(*App)
		if g.Issuer == "" && g.Resource != "" {
			g.app.protect(g.Resource)
		}
	}
	if g.Issuer == "" {
		if appErr != nil {
			return fmt.Errorf("agent_guard: no issuer is set and this Caddy has no auth_agent app; set `issuer <url>` or configure the global auth_agent option: %v", appErr)
		}
	} else {
		cfg := guard.RemoteConfig{Issuer: g.Issuer, RefreshInterval: time.Duration(g.KeyRefreshInterval)}
		if in := g.Introspection; in != nil {
			repl := caddy.NewReplacer()
			cfg.IntrospectionClientID = in.ClientID
			cfg.IntrospectionSecret = repl.ReplaceAll(in.ClientSecret, "")
		}
		g.poolKey = fmt.Sprintf("%s|%s|%s|%d", cfg.Issuer, cfg.IntrospectionClientID, cfg.IntrospectionSecret, cfg.RefreshInterval)
		val, loaded, err := remoteVerifiers.LoadOrNew(g.poolKey, func() (caddy.Destructor, error) {
			return pooledVerifier{guard.NewRemoteVerifier(cfg, g.log)}, nil
		})
		if err != nil {
			return err
		}
		g.remote = val.(pooledVerifier).RemoteVerifier
		if !loaded {
			go g.remote.Prefetch(ctx)
		}
	}
	g.metadataPath = guard.MetadataPath(g.Resource)
	g.decisions = guardCounters(cmp.Or(g.Site, g.Resource, "default"))
	if err := metrics.Register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("agent_guard: metrics: %v", err)
	}
	// Browser MCP clients call guarded routes across origins: the same
	// CORS policy as the IdP's endpoints.
	var corsCfg *CORSConfig
	if g.app != nil {
		corsCfg = g.app.CORS
	}
	g.cors = newCORS(corsCfg)
	return nil
}

// Validate checks the configuration.
func (g *Guard) Validate() error {
	for _, s := range g.Scopes {
		if err := agents.ValidateScopeToken(s); err != nil {
			return fmt.Errorf("agent_guard: scopes: %q is not a valid scope", s)
		}
	}
	if g.Resource != "" {
		if _, err := oauth.ParseResource(g.Resource); err != nil {
			return fmt.Errorf("agent_guard: resource %q must be an absolute URI without a fragment", g.Resource)
		}
	}
	if g.Issuer != "" {
		if err := oauth.ValidateIssuer(g.Issuer); err != nil {
			return fmt.Errorf("agent_guard: %v", err)
		}
	} else if g.Introspection != nil {
		return errors.New("agent_guard: introspection needs a remote issuer; tokens of this Caddy's own issuer are checked in process")
	}
	if in := g.Introspection; in != nil && (in.ClientID == "" || in.ClientSecret == "") {
		return errors.New("agent_guard: introspection needs a client id and a secret")
	}
	if g.DPoP != "" && g.DPoP != "required" && g.DPoP != "optional" {
		return fmt.Errorf("agent_guard: dpop %q must be required or optional", g.DPoP)
	}
	if g.KeyRefreshInterval < 0 {
		return errors.New("agent_guard: key_refresh_interval must be positive")
	}
	if len(g.Site) > 64 || strings.ContainsFunc(g.Site, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("agent_guard: site %q must be at most 64 visible characters", g.Site)
	}
	return nil
}

// Cleanup releases a shared remote verifier.
func (g *Guard) Cleanup() error {
	if g.poolKey != "" {
		_, _ = remoteVerifiers.Delete(g.poolKey)
		g.poolKey = ""
	}
	return nil
}

// removeAgentHeaders drops every caller-sent header the upstream could
// read as one of the X-Agent-* headers: any case, and with '_' for '-'
// (CGI, FastCGI, WSGI and Rack map both to HTTP_X_AGENT_ID).
func removeAgentHeaders(h http.Header) {
	for name := range h {
		if isAgentHeader(name) {
			delete(h, name)
		}
	}
}

// isAgentHeader reports whether name is "x-agent-" followed by anything,
// in any case and with '_' for any '-'; it allocates nothing.
func isAgentHeader(name string) bool {
	const prefix = "x-agent-"
	if len(name) <= len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := name[i]
		if c == '_' {
			c = '-'
		} else if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. CORS comes first: a
// preflight is answered there and never challenged (browsers send no
// credentials with it), and every answer, refusals included, carries the
// headers a browser client needs to read it.
func (g *Guard) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.Method != http.MethodOptions && firstValue(r.Header, "Origin") == "" {
		// Not a browser's cross-origin request (servers and CLI clients
		// send no Origin): all rs/cors would do is add Vary: Origin, as it
		// does for every answer, since the answer depends on the Origin.
		h := w.Header()
		h["Vary"] = append(h["Vary"], "Origin")
		return g.serve(w, r, next)
	}
	var err error
	g.cors.ServeHTTP(w, r, func(w http.ResponseWriter, r *http.Request) { err = g.serve(w, r, next) })
	return err
}

// firstValue is h.Get(key) for a key already in canonical form.
func firstValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (g *Guard) serve(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	var verifier guard.Verifier = g.remote
	var limits *ratelimit.Limits
	var dpop *oauth.DPoPVerifier
	if g.app != nil {
		st, err := g.app.started(r.Context())
		if err != nil {
			g.decisions[resultAppUnavailable].Inc()
			oauth.WriteError(w, err)
			return nil
		}
		limits, dpop = st.limits, st.dpop
		if g.remote == nil {
			verifier = st.verifier
		}
	} else {
		dpop = standaloneDPoP()
	}
	// The metadata lives at the well-known path plus the resource's path
	// (RFC 9728 §3.1) and names exactly that resource; any other
	// well-known path here is not found, not a reason to authenticate.
	if strings.HasPrefix(r.URL.Path, "/.well-known/") {
		switch {
		case r.URL.Path != g.metadataPath:
			oauth.WriteError(w, oauth.ErrNotFoundPath("no document at "+r.URL.Path))
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			oauth.WriteError(w, oauth.ErrMethodNotAllowed(http.MethodGet, http.MethodHead))
		default:
			guard.WriteMetadata(w, r, verifier.Issuer(), g.Resource, g.Scopes, g.DPoP == "required")
		}
		return nil
	}
	removeAgentHeaders(r.Header)
	check := guard.Guard{Verifier: verifier, Scopes: g.Scopes, Resource: g.Resource, DPoP: dpop, RequireDPoP: g.DPoP == "required", URL: requestURL}
	claims, e, result := check.Decide(r)
	if e == nil {
		if err := limits.TakeAPI(r.Context(), w, claims.Subject); err != nil {
			e, result = oauth.AsError(err), resultRateLimited
		}
	}
	g.decisions[result].Inc()
	if e != nil {
		if ce := g.log.Check(zap.DebugLevel, "request refused"); ce != nil {
			ce.Write(zap.String("error", e.Code), zap.String("reason", e.Description))
		}
		guard.WriteError(w, r, e, guard.Challenges{Scopes: g.Scopes, MetadataPath: g.metadataPath, DPoP: true, RequireDPoP: check.RequireDPoP})
		return nil
	}
	if claims.Cnf != nil {
		// The nonce to use next (RFC 9449 §9), when nonces are on.
		if n := dpop.Nonce(); n != "" {
			w.Header().Set(oauth.DPoPNonceHeader, n)
		}
	}
	setAgentHeaders(r.Header, claims)
	// A DPoP proof is spent here (its jti is recorded): the upstream
	// could not use it, and need not parse it.
	delete(r.Header, oauth.DPoPHeader)
	if g.StripToken {
		delete(r.Header, "Authorization")
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		// One provider answering the five placeholders when they are read
		// (most requests never read them), instead of five values stored
		// in the replacer's map on every request. Values set before with
		// Set would come first; http.auth.user.id is the one another
		// authentication handler in the route may have set.
		repl.Delete("http.auth.user.id")
		repl.Map(func(key string) (any, bool) { return agentPlaceholder(claims, key) })
	}
	return next.ServeHTTP(w, r)
}

// standaloneDPoP checks the proofs at guards of a Caddy without the
// auth_agent app: replay records in this process (a proof made before it
// started is refused), no nonces.
var standaloneDPoP = sync.OnceValue(func() *oauth.DPoPVerifier {
	return oauth.NewDPoPVerifier(oauth.DPoPConfig{Replays: oauth.NewLocalReplays(nil), NotBefore: time.Now()})
})

// requestURL is the URL the client sent the request to, without query:
// the origin as the client saw it (behind trusted proxies, the one they
// forwarded) and the path before any rewrite — what a DPoP proof's htu
// names.
func requestURL(r *http.Request) string {
	path := r.URL.EscapedPath()
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		path = orig.URL.EscapedPath()
	}
	return requestOrigin(r) + path
}

// requestOrigin is the scheme and host the client used: the connection's,
// or, when the request came through a trusted proxy (Caddy's
// trusted_proxies), the X-Forwarded-Proto and X-Forwarded-Host it set.
func requestOrigin(r *http.Request) string {
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); trusted {
		if p := firstForwarded(r.Header, "X-Forwarded-Proto"); p == "http" || p == "https" {
			scheme = p
		}
		if h := firstForwarded(r.Header, "X-Forwarded-Host"); h != "" {
			host = h
		}
	}
	return scheme + "://" + host
}

// firstForwarded is the first value of a forwarding header: the one the
// proxy nearest the client set.
func firstForwarded(h http.Header, key string) string {
	v, _, _ := strings.Cut(firstValue(h, key), ",")
	return strings.ToLower(strings.TrimSpace(v))
}

// setAgentHeaders tells the upstream who called. The caller's look-alikes
// are gone already (removeAgentHeaders), so the canonical keys are
// written directly, the values sharing one backing array.
func setAgentHeaders(h http.Header, claims *oauth.AccessClaims) {
	v := make([]string, 4)
	v[0], v[1], v[2], v[3] = claims.Subject, claims.ClientID, claims.Scope, claims.ModelName
	// Each header its own full slice: an append or an edit in place by a
	// later handler touches no other.
	h["X-Agent-Id"] = v[0:1:1]
	h["X-Agent-Client-Id"] = v[1:2:2]
	h["X-Agent-Scopes"] = v[2:3:3]
	if claims.ModelName != "" {
		h["X-Agent-Model"] = v[3:4:4]
	}
	if claims.IDP != "" {
		// The subject is this identity provider's, not an agent here.
		h["X-Agent-Idp"] = []string{claims.IDP}
	}
}

// agentPlaceholder is the value of the placeholder key for the request the
// token in claims authenticated.
func agentPlaceholder(claims *oauth.AccessClaims, key string) (any, bool) {
	switch key {
	case "http.auth.agent.id", "http.auth.user.id":
		return claims.Subject, true
	case "http.auth.agent.client_id":
		return claims.ClientID, true
	case "http.auth.agent.scopes":
		return claims.Scope, true
	case "http.auth.agent.model":
		return claims.ModelName, true
	case "http.auth.agent.idp":
		return claims.IDP, true
	}
	return nil, false
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Guard)(nil)
	_ caddy.Validator             = (*Guard)(nil)
	_ caddy.CleanerUpper          = (*Guard)(nil)
	_ caddyhttp.MiddlewareHandler = (*Guard)(nil)
)
