package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/internal/cache"
	"github.com/authagent/caddy-authagent/ratelimit"
)

// Registration policies.
const (
	RegistrationOpen   = "open"
	RegistrationToken  = "token"
	RegistrationClosed = "closed"
)

// Dynamic client registration policies share the registration words.
const (
	DynamicRegistrationOff = "off"
)

// Config is the server's protocol configuration.
type Config struct {
	Issuer string
	// RegistrationMode is open, token or closed; RegistrationToken is the
	// bearer token required in token mode.
	RegistrationMode  string
	RegistrationToken string
	// DynamicRegistration is off (default), open or token for RFC 7591
	// registration at /oauth2/register; DynamicRegistrationToken is the
	// initial access token in token mode.
	DynamicRegistration      string
	DynamicRegistrationToken string
	// Lifetimes; zero means the default.
	RefreshTokenLifetime time.Duration // 720h
	CodeLifetime         time.Duration // 60s
	RequestLifetime      time.Duration // 5m
	// RefreshReuseGrace is how long after a refresh token was rotated it
	// is still answered as a retry (a client that lost the answer tries
	// again): a fresh successor replaces the first, and the family lives
	// on. Zero (the default) makes every second use a reuse that revokes
	// the family.
	RefreshReuseGrace time.Duration
	// MaxBody caps request bodies; 0 means DefaultMaxBody.
	MaxBody int64
	// BodyTimeout bounds the time a request may take to send its body
	// (408 past it); 0 means DefaultBodyTimeout.
	BodyTimeout time.Duration
	// ScopeDescriptions are the operator's words for API scopes, shown on
	// the sign-in page.
	ScopeDescriptions map[string]string
	// ClientIDMetadataDocuments lets a client_id that is an https URL name
	// a metadata document fetched from there (MCP 2025-11-25);
	// ClientIDMetadataHosts may be fetched from private addresses.
	ClientIDMetadataDocuments bool
	ClientIDMetadataHosts     []string
	// DPoPRequired refuses every token request without a DPoP proof
	// (`dpop required`).
	DPoPRequired bool
	// TrustedIdPs are the IdPs whose ID-JAGs are redeemed here;
	// IDJAGAudiences the servers this one issues ID-JAGs for.
	TrustedIdPs    []TrustedIdP
	IDJAGAudiences []IDJAGAudience
	// Resources reports whether a guard of this server protects a
	// resource (an ID-JAG's resource must be one); nil: none.
	Resources func(resource string) bool
}

// CodeKeyName is the SecretStore name of the key authorization codes are
// derived with.
const CodeKeyName = "code-key"

// Deps are the parts the server works with.
type Deps struct {
	Agents *agents.Service
	Keys   *KeyManager
	Tokens *Tokens
	// Clients are the configured clients (the rest are in Store).
	Clients []*Client
	Store   Store
	// CodeKey derives authorization codes from request seeds; every process
	// sharing Store must use the same one (EnsureSecret(CodeKeyName)).
	CodeKey []byte
	// Revocations is the view of Store's change log, shared with the guard.
	Revocations *Revocations
	// Limits are the rate limits; nil means none.
	Limits *ratelimit.Limits
	// DPoP checks proofs (shared with the guards); nil means one with
	// the default leeway, no nonces and replay records in this process.
	DPoP *DPoPVerifier
	// Events get what happens (the audit log, webhooks); nil means
	// nobody listens.
	Events *events.Bus
	Log    *zap.Logger
	Now    func() time.Time
}

// provider is what every endpoint shares: the configuration, the stores,
// the registries and the token service.
type provider struct {
	cfg         Config
	agents      *agents.Service
	keys        *KeyManager
	tokens      *Tokens
	clients     *Clients
	remoteKeys  *RemoteKeySets // clients' keys published at their jwks_uri
	keySets     *keySetCache   // parsed key sets of clients and agents
	store       Store
	codeKey     []byte
	revocations *Revocations
	limits      *ratelimit.Limits
	dpop        *DPoPVerifier
	idpMetadata *idpMetadata // trusted IdPs' jwks_uri
	events      *events.Bus
	log         *zap.Logger
	now         func() time.Time
}

// Server serves the identity provider's endpoints; the endpoints of one
// concern each live in their own type (agentAPI, authorizer, tokenEndpoint,
// tokenInfo, metadata), and Admin holds the operator's operations.
type Server struct {
	*provider
	routes map[string]route
	admin  *Admin
}

type route struct {
	methods []string
	handle  func(http.ResponseWriter, *http.Request) error
}

// NewServer wires the endpoints.
func NewServer(cfg Config, d Deps) *Server {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.RefreshTokenLifetime <= 0 {
		cfg.RefreshTokenLifetime = 720 * time.Hour
	}
	if cfg.CodeLifetime <= 0 {
		cfg.CodeLifetime = time.Minute
	}
	if cfg.RequestLifetime <= 0 {
		cfg.RequestLifetime = 5 * time.Minute
	}
	if cfg.DynamicRegistration == "" {
		cfg.DynamicRegistration = DynamicRegistrationOff
	}
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Revocations == nil {
		d.Revocations = NewRevocations(d.Store, d.Now, d.Log)
	}
	if d.DPoP == nil {
		d.DPoP = NewDPoPVerifier(DPoPConfig{Replays: NewLocalReplays(d.Now), Now: d.Now})
	}
	var docs *ClientDocuments
	if cfg.ClientIDMetadataDocuments {
		docs = NewClientDocuments(cfg.ClientIDMetadataHosts, d.Log.Named("client_documents"), d.Now)
	}
	remoteKeys := NewRemoteKeySets(cfg.ClientIDMetadataHosts, d.Log.Named("client_keys"), d.Now)
	p := &provider{cfg: cfg, remoteKeys: remoteKeys, keySets: cache.New[[sha256.Size]byte, ClientKeys](keySetCacheEntries, d.Now), agents: d.Agents, keys: d.Keys, tokens: d.Tokens, clients: NewClients(d.Clients, d.Store, docs),
		store: d.Store, codeKey: d.CodeKey, revocations: d.Revocations, limits: d.Limits, dpop: d.DPoP, idpMetadata: newIDPMetadata(d.Now), events: d.Events, log: d.Log, now: d.Now}
	agentAPI, authz, token, info, meta := &agentAPI{p}, &authorizer{p}, &tokenEndpoint{p}, &tokenInfo{p}, &metadata{p, newAPIDocs(cfg.Issuer)}
	get, post := http.MethodGet, http.MethodPost
	discovery := route{[]string{get, http.MethodHead}, meta.handleDiscovery}
	s := &Server{provider: p, admin: &Admin{p}}
	s.routes = map[string]route{
		"/api/register-agent":                     {[]string{post}, agentAPI.handleRegister},
		"/api/agent-auth":                         {[]string{post}, agentAPI.handleAgentAuth},
		"/api/agents/profile":                     {[]string{get, http.MethodPut}, agentAPI.handleProfile},
		"/api/agents/keys":                        {[]string{http.MethodPut}, agentAPI.handleKeys},
		"/api/check-status":                       {[]string{get}, authz.handleCheckStatus},
		"/api/openapi.json":                       {[]string{get, http.MethodHead}, meta.handleOpenAPI},
		"/api/postman-collection.json":            {[]string{get, http.MethodHead}, meta.handlePostmanCollection},
		"/oauth2/authorize":                       {[]string{get, post}, authz.handleAuthorize},
		"/oauth2/token":                           {[]string{post}, token.handleToken},
		"/oauth2/userinfo":                        {[]string{get, post}, info.handleUserinfo},
		"/oauth2/introspect":                      {[]string{post}, info.handleIntrospect},
		"/oauth2/revoke":                          {[]string{post}, info.handleRevoke},
		"/oauth2/register":                        {[]string{post}, meta.handleClientRegistration},
		"/.well-known/jwks.json":                  {[]string{get, http.MethodHead}, meta.handleJWKS},
		"/.well-known/openid-configuration":       discovery,
		"/.well-known/oauth-authorization-server": discovery,
	}
	return s
}

// DPoP is the proof verifier the guards share with the server.
func (s *Server) DPoP() *DPoPVerifier { return s.dpop }

// Admin returns the operator's operations (the admin API's backend).
func (s *Server) Admin() *Admin { return s.admin }

// Handles reports whether path belongs to the identity provider: one of its
// endpoints, or anything under the prefixes it owns.
func (s *Server) Handles(path string) bool {
	if _, ok := s.routes[path]; ok {
		return true
	}
	return strings.HasPrefix(path, "/api/") || strings.HasPrefix(path, "/oauth2/")
}

// ServeHTTP dispatches to the endpoint for the request's path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil && r.Body != http.NoBody {
		// A body that trickles in holds a connection and a goroutine for
		// as long as the client likes (Caddy sets no read timeout by
		// default): past the deadline a read fails, and the answer is 408.
		// It is set before any answer, 404 and 405 too, and stays after
		// the handler: net/http drains an unread body before it answers
		// (so a trickling one must still time out) and clears the
		// deadline itself before reading the next request.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
	}
	rt, ok := s.routes[r.URL.Path]
	if !ok {
		WriteError(w, ErrNotFoundPath("no endpoint at "+r.URL.Path))
		return
	}
	allowed := false
	for _, m := range rt.methods {
		allowed = allowed || r.Method == m
	}
	if !allowed {
		WriteError(w, ErrMethodNotAllowed(rt.methods...))
		return
	}
	if err := rt.handle(w, r); err != nil {
		s.Fail(w, r, err)
	}
}

// Fail writes err, logging what is not the caller's fault.
func (p *provider) Fail(w http.ResponseWriter, r *http.Request, err error) {
	e := AsError(err)
	switch {
	case e.Status < 500:
	case r.Context().Err() != nil:
		// The caller went away (or gave up) mid-request: nothing failed
		// here, and nobody reads the answer.
		if ce := p.log.Check(zap.DebugLevel, "request abandoned by the client"); ce != nil {
			ce.Write(zap.String("path", r.URL.Path), zap.Error(err))
		}
	default:
		p.log.Error("request failed", zap.String("path", r.URL.Path), zap.Error(err))
	}
	WriteError(w, e)
}

// registryError maps the registry's errors to protocol errors.
func registryError(err error) error {
	var ve *agents.ValidationError
	switch {
	case errors.As(err, &ve):
		return ErrInvalidRequest(ve.Error())
	case errors.Is(err, agents.ErrExists):
		return ErrConflict("an agent with this agent_id already exists")
	case errors.Is(err, agents.ErrInvalidCredentials):
		return ErrInvalidClient("invalid agent credentials")
	case errors.Is(err, agents.ErrReserved):
		return ErrAccessDenied("this agent_id is reserved by the operator's configuration")
	case errors.Is(err, agents.ErrPermissionsFixed):
		return ErrConflict("this agent's permissions are set in the configuration")
	case errors.Is(err, agents.ErrSecretChanged):
		return ErrConflict("the agent secret changed meanwhile; retry")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ErrTemporarilyUnavailable("the server is busy; retry")
	}
	return err
}

// authenticateBearer verifies the request's access token (for use at this
// server when audience is the issuer; any audience when it is ""), checks it
// is not revoked, and loads its agent.
func (p *provider) authenticateBearer(r *http.Request, audience string) (*AccessClaims, *agents.Agent, error) {
	scheme, raw, err := ParseAuthorization(r.Header.Get("Authorization"))
	if errors.Is(err, ErrNoBearer) {
		return nil, nil, ErrMissingToken("auth_agent")
	}
	if err != nil {
		return nil, nil, ErrInvalidToken("auth_agent", err.Error())
	}
	claims, err := p.tokens.VerifyAccessToken(r.Context(), raw, audience)
	if err != nil {
		return nil, nil, ErrInvalidToken("auth_agent", "the access token is invalid or expired")
	}
	if claims.IDP != "" {
		// Its subject is another IdP's, never an agent of this server.
		return nil, nil, ErrInvalidToken("auth_agent", "the access token's subject is an identity of "+claims.IDP+", not an agent of this server")
	}
	if p.revocations.Revoked(claims) {
		return nil, nil, ErrInvalidToken("auth_agent", "the access token was revoked")
	}
	err = p.dpop.CheckBinding(r.Context(), scheme, raw, claims, r.Header.Values(DPoPHeader), r.Method, p.dpopURLs(r, r.URL.Path))
	if err != nil {
		return nil, nil, p.dpopChallenge(err)
	}
	a, err := p.currentAgent(r.Context(), claims.Subject, claims.IssuedAt.Time)
	if errors.Is(err, errAgentGone) {
		return nil, nil, ErrInvalidToken("auth_agent", "the token's agent no longer exists or is disabled")
	}
	if err != nil {
		return nil, nil, err
	}
	return claims, a, nil
}

// dpopChallenge adds the DPoP challenge (and the current nonce) to a
// DPoP refusal at this server's own resources (userinfo, the profile).
func (p *provider) dpopChallenge(err error) error {
	e := AsError(err)
	if !IsDPoPError(e) {
		return err
	}
	e = e.WithHeader("WWW-Authenticate", Challenge{Scheme: TokenTypeDPoP, Realm: "auth_agent", Error: e.Code, Description: e.Description, Algs: DPoPAlgs}.String())
	if n := p.dpop.Nonce(); n != "" {
		e = e.WithHeader(DPoPNonceHeader, n)
	}
	return e
}

var errAgentGone = errors.New("agent deleted, disabled or registered again")

// subjectClient returns the client a token speaks for when its subject is
// a client — its own client_credentials token, or one exchanged from that —
// and nil when the subject is an agent (agents and clients never share an
// id). A token a client got for an agent (sub ≠ client_id, nobody acting)
// needs no lookup.
func (p *provider) subjectClient(ctx context.Context, claims *AccessClaims) (*Client, error) {
	if claims.Subject != claims.ClientID && claims.Act == nil || IsClientIDURL(claims.Subject) {
		return nil, nil
	}
	c, err := p.clients.Get(ctx, claims.Subject)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return c, err
}

// currentAgent loads the agent a token or grant from time since speaks
// for: it must exist, be enabled, be the same agent — one deleted and
// registered again under its id is another agent — and not have been
// disabled since (enabling it again does not revive what it held).
func (p *provider) currentAgent(ctx context.Context, id string, since time.Time) (*agents.Agent, error) {
	a, err := p.agents.Get(ctx, id)
	if errors.Is(err, agents.ErrNotFound) {
		return nil, errAgentGone
	}
	if err != nil {
		return nil, err
	}
	if a.Disabled || since.Unix() < a.CreatedAt.Unix() || p.revocations.AgentRevoked(id, since) {
		return nil, errAgentGone
	}
	return a, nil
}

// activeAgent loads an agent that may still get tokens from a grant made
// at time since.
func (p *provider) activeAgent(ctx context.Context, id string, since time.Time) (*agents.Agent, error) {
	a, err := p.currentAgent(ctx, id, since)
	if errors.Is(err, errAgentGone) {
		return nil, ErrInvalidGrant("the agent no longer exists or is disabled")
	}
	return a, err
}

// idFree refuses an agent id that an OAuth client already has: a token's
// sub and client_id must say unambiguously who acts.
func (p *provider) idFree(ctx context.Context, agentID string) error {
	if _, err := p.clients.Get(ctx, agentID); err == nil {
		return ErrConflict("this id belongs to an OAuth client")
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// checkStaticBearer checks a configured bearer token (registration and
// initial access tokens), comparing digests so the comparison takes the
// same time whatever the lengths.
func checkStaticBearer(r *http.Request, want string) error {
	tok, err := ParseBearer(r.Header.Get("Authorization"))
	if err != nil {
		return ErrMissingToken("auth_agent")
	}
	got, exp := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(want))
	if subtle.ConstantTimeCompare(got[:], exp[:]) != 1 {
		return ErrInvalidToken("auth_agent", "the registration token is not valid")
	}
	return nil
}

// The writes of revocations: to the store (so every process and every
// restart honours them) and at once to this process's view.

// revokeToken voids the access token jti until it would have expired, and
// with it every token exchanged from it (their jtis extend this one).
func (p *provider) revokeToken(ctx context.Context, jti string, exp time.Time) error {
	until := exp.Add(verifyLeeway)
	if !until.After(p.now()) {
		return nil
	}
	return p.revocations.Record(ctx, Change{Kind: ChangeTokenRevoked, Key: jti, Expires: until})
}

// revokeFamily revokes a refresh-token lineage: its refresh tokens are
// deleted and every access token issued along it is void.
// The change is recorded first: should the process die before the tokens
// are deleted, the family is void all the same.
func (p *provider) revokeFamily(ctx context.Context, family string) error {
	// Its access tokens live at most one access-token lifetime past the
	// family's last refresh.
	until := p.now().Add(p.cfg.RefreshTokenLifetime + p.tokens.Lifetime() + verifyLeeway)
	if err := p.revocations.Record(ctx, Change{Kind: ChangeFamilyRevoked, Key: family, Expires: until}); err != nil {
		return err
	}
	return p.store.RevokeFamily(context.WithoutCancel(ctx), family)
}

// revokeAgent voids every token and grant the agent holds now (it is being
// disabled or deleted): access tokens, and the codes and refresh tokens
// they would be renewed from, which is why the entry lives as long as a
// refresh-token family can.
func (p *provider) revokeAgent(ctx context.Context, id string) error {
	now := p.now()
	return p.revocations.Record(ctx, Change{Kind: ChangeAgentRevoked, Key: id, Before: now,
		Expires: now.Add(p.cfg.RefreshTokenLifetime + p.tokens.Lifetime() + verifyLeeway)})
}

// agentChangeRetention is how long news of an agent's change stays in the
// log: longer than any process takes to read it, and than the verification
// memo it invalidates lives.
const agentChangeRetention = 10 * time.Minute

// agentUpdated tells every process that the agent changed (caches of it,
// such as remembered secret verifications, are stale).
func (p *provider) agentUpdated(ctx context.Context, id string) error {
	return p.revocations.Record(ctx, Change{Kind: ChangeAgentUpdated, Key: id, Expires: p.now().Add(agentChangeRetention)})
}

// agentPermissionsSet tells every process the agent's permissions as the
// operator just set them: its earlier tokens that carry another API scope
// stop working (within a poll interval elsewhere, at once here).
func (p *provider) agentPermissionsSet(ctx context.Context, a *agents.Agent) error {
	// Tokens issued a little after the change count as earlier too: one
	// whose request read the agent before the change (and then waited for
	// argon2id) carries the old permissions.
	before := p.now().Add(permissionChangeSlack)
	return p.revocations.Record(ctx, Change{Kind: ChangeAgentPermissions, Key: strings.Join(append([]string{a.ID}, a.Permissions...), " "),
		Before: before, Expires: before.Add(p.tokens.Lifetime() + verifyLeeway)})
}

// permissionChangeSlack is how long after a permission change tokens are
// still checked against it: longer than a request takes from reading the
// agent to signing its token.
const permissionChangeSlack = 10 * time.Second

// Revocations is the server's view of the change log.
func (s *Server) Revocations() *Revocations { return s.revocations }
