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
	// MaxBody caps request bodies; 0 means DefaultMaxBody.
	MaxBody int64
}

// Deps are the parts the server works with.
type Deps struct {
	Agents  *agents.Service
	Keys    *KeyManager
	Tokens  *Tokens
	Clients *Clients
	Store   RecordStore
	// CodeKey derives authorization codes from request seeds; it lives only
	// in memory and is shared by every config of one process.
	CodeKey []byte
	// Revocations is the in-process revocation set, shared with the guard
	// and loaded from Store at start.
	Revocations *Revocations
	// Limits are the rate limits; nil means none.
	Limits *Limits
	Log    *zap.Logger
	Now    func() time.Time
}

// Server serves the identity provider's endpoints.
type Server struct {
	cfg         Config
	agents      *agents.Service
	keys        *KeyManager
	tokens      *Tokens
	clients     *Clients
	store       RecordStore
	codeKey     []byte
	revocations *Revocations
	limits      *Limits
	log         *zap.Logger
	now         func() time.Time
	routes      map[string]route
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
	if len(d.CodeKey) == 0 {
		d.CodeKey = []byte(randomToken(32))
	}
	if d.Revocations == nil {
		d.Revocations = NewRevocations(d.Now)
	}
	if d.Limits == nil {
		d.Limits = &Limits{}
	}
	s := &Server{cfg: cfg, agents: d.Agents, keys: d.Keys, tokens: d.Tokens, clients: d.Clients, store: d.Store,
		codeKey: d.CodeKey, revocations: d.Revocations, limits: d.Limits, log: d.Log, now: d.Now}
	get, post := http.MethodGet, http.MethodPost
	discovery := route{[]string{get, http.MethodHead}, s.handleDiscovery}
	s.routes = map[string]route{
		"/api/register-agent":                     {[]string{post}, s.handleRegister},
		"/api/agent-auth":                         {[]string{post}, s.handleAgentAuth},
		"/api/agents/profile":                     {[]string{get, http.MethodPut}, s.handleProfile},
		"/api/check-status":                       {[]string{get}, s.handleCheckStatus},
		"/oauth2/authorize":                       {[]string{get, post}, s.handleAuthorize},
		"/oauth2/token":                           {[]string{post}, s.handleToken},
		"/oauth2/userinfo":                        {[]string{get, post}, s.handleUserinfo},
		"/oauth2/introspect":                      {[]string{post}, s.handleIntrospect},
		"/oauth2/revoke":                          {[]string{post}, s.handleRevoke},
		"/oauth2/register":                        {[]string{post}, s.handleClientRegistration},
		"/.well-known/jwks.json":                  {[]string{get, http.MethodHead}, s.handleJWKS},
		"/.well-known/openid-configuration":       discovery,
		"/.well-known/oauth-authorization-server": discovery,
	}
	return s
}

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
		s.fail(w, r, err)
	}
}

// fail writes err, logging what is not the caller's fault.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := AsError(err)
	if e.Status >= 500 {
		s.log.Error("request failed", zap.String("path", r.URL.Path), zap.Error(err))
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
		return newError("invalid_request", 409, "the agent secret changed meanwhile; retry")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return newError("temporarily_unavailable", 503, "the server is busy; retry")
	}
	return err
}

type registerRequest struct {
	AgentID     string `json:"agent_id"`
	AgentSecret string `json:"agent_secret"`
	ModelName   string `json:"model_name"`
	OwnerName   string `json:"owner_name"`
	OwnerEmail  string `json:"owner_email"`
}

// agentView is an agent as the API shows it: never the secret hash.
type agentView struct {
	AgentID     string    `json:"agent_id"`
	ModelName   string    `json:"model_name"`
	OwnerName   string    `json:"owner_name"`
	OwnerEmail  string    `json:"owner_email"`
	Permissions []string  `json:"permissions"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Disabled    bool      `json:"disabled,omitempty"`
	AgentSecret string    `json:"agent_secret,omitempty"`
}

func viewOf(a *agents.Agent) agentView {
	perms := a.Permissions
	if perms == nil {
		perms = []string{}
	}
	return agentView{
		AgentID: a.ID, ModelName: a.ModelName, OwnerName: a.OwnerName, OwnerEmail: a.OwnerEmail,
		Permissions: perms, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt, Disabled: a.Disabled,
	}
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) error {
	switch s.cfg.RegistrationMode {
	case RegistrationClosed:
		return ErrAccessDenied("agent registration is closed on this server")
	case RegistrationToken:
		// A registration token is a secret: guessing it counts as failed
		// authentication.
		try, err := s.limits.chargeAttempt(r.Context(), w, ClientIP(r), "", s.now())
		if err != nil {
			return err
		}
		if err := checkStaticBearer(r, s.cfg.RegistrationToken); err != nil {
			return err
		}
		try.succeeded(r.Context())
	}
	if err := s.limits.take(r.Context(), w, s.limits.Registration, "registration", ipKey(ClientIP(r)), s.limits.AuthFailOpen, s.now()); err != nil {
		return err
	}
	var req registerRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return err
	}
	v, err := s.registerAgent(r.Context(), req, nil, s.cfg.RegistrationMode == RegistrationToken)
	if err != nil {
		return err
	}
	s.log.Info("agent registered", zap.String("agent_id", v.AgentID))
	writeData(w, http.StatusCreated, v)
	return nil
}

// registerAgent creates an agent (for /api/register-agent and the admin
// API) and returns its view, with the secret when the server generated it.
// trusted callers may take ids the configuration reserves.
func (s *Server) registerAgent(ctx context.Context, req registerRequest, perms []string, trusted bool) (agentView, error) {
	if err := s.idFree(ctx, req.AgentID); err != nil {
		return agentView{}, err
	}
	a, secret, err := s.agents.Register(ctx, agents.Registration{
		AgentID: req.AgentID, AgentSecret: req.AgentSecret, ModelName: req.ModelName,
		OwnerName: req.OwnerName, OwnerEmail: req.OwnerEmail, Permissions: perms,
	}, trusted)
	if err != nil {
		return agentView{}, registryError(err)
	}
	v := viewOf(a)
	v.AgentSecret = secret
	return v, nil
}

type agentAuthRequest struct {
	AgentID     string `json:"agent_id"`
	AgentSecret string `json:"agent_secret"`
	ModelName   string `json:"model_name"`
	RequestID   string `json:"request_id"`
	Scope       string `json:"scope"`
	Resource    string `json:"resource"`
}

func (s *Server) handleAgentAuth(w http.ResponseWriter, r *http.Request) error {
	var req agentAuthRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return err
	}
	if req.AgentID == "" || req.AgentSecret == "" {
		return ErrInvalidRequest("agent_id and agent_secret are required")
	}
	if req.ModelName != "" {
		if err := agents.ValidateModelName(req.ModelName); err != nil {
			return ErrInvalidRequest(err.Error())
		}
	}
	resource, err := ParseResource(req.Resource)
	if err != nil {
		return err
	}
	try, err := s.limits.chargeAttempt(r.Context(), w, ClientIP(r), req.AgentID, s.now())
	if err != nil {
		return err
	}
	a, err := s.agents.Authenticate(r.Context(), req.AgentID, req.AgentSecret)
	if err != nil {
		return registryError(err)
	}
	try.succeeded(r.Context())
	if req.RequestID != "" {
		to, err := s.completeRequest(r.Context(), req.RequestID, a, req.ModelName)
		if err != nil {
			return err
		}
		s.log.Info("agent completed an authorization request", zap.String("agent_id", a.ID))
		writeData(w, http.StatusOK, map[string]string{"status": statusAuthenticated, "request_id": req.RequestID, "redirect_to": to})
		return nil
	}
	scopes, err := AgentSelfScopes(req.Scope, a)
	if err != nil {
		return err
	}
	model := a.ModelName
	if req.ModelName != "" {
		model = req.ModelName
	}
	var aud []string
	if resource != "" {
		aud = []string{resource}
	}
	tok, err := s.tokens.IssueAccessToken(AccessGrant{
		Subject: a.ID, ClientID: a.ID, Scopes: scopes, Audience: aud, ModelName: model, AuthTime: s.now(),
	})
	if err != nil {
		return err
	}
	writeData(w, http.StatusOK, map[string]any{
		"access_token": tok.Token,
		"token_type":   "Bearer",
		"expires_in":   tok.ExpiresIn,
		"scope":        tok.Scope,
	})
	return nil
}

// authenticateBearer verifies the request's access token (for use at this
// server when audience is the issuer; any audience when it is ""), checks it
// is not revoked, and loads its agent.
func (s *Server) authenticateBearer(r *http.Request, audience string) (*AccessClaims, *agents.Agent, error) {
	raw, err := ParseBearer(r.Header.Get("Authorization"))
	if errors.Is(err, errNoBearer) {
		return nil, nil, ErrMissingToken("auth_agent")
	}
	if err != nil {
		return nil, nil, ErrInvalidToken("auth_agent", err.Error())
	}
	claims, err := s.tokens.VerifyAccessToken(raw, audience)
	if err != nil {
		return nil, nil, ErrInvalidToken("auth_agent", "the access token is invalid or expired")
	}
	if s.revocations.Revoked(claims) {
		return nil, nil, ErrInvalidToken("auth_agent", "the access token was revoked")
	}
	a, err := s.currentAgent(r.Context(), claims.Subject, claims.IssuedAt.Unix())
	if errors.Is(err, errAgentGone) {
		return nil, nil, ErrInvalidToken("auth_agent", "the token's agent no longer exists or is disabled")
	}
	if err != nil {
		return nil, nil, err
	}
	return claims, a, nil
}

type profileUpdateRequest struct {
	ModelName          *string `json:"model_name"`
	OwnerName          *string `json:"owner_name"`
	OwnerEmail         *string `json:"owner_email"`
	AgentSecret        *string `json:"agent_secret"`
	CurrentAgentSecret string  `json:"current_agent_secret"`
}

func (s *Server) handleProfile(w http.ResponseWriter, r *http.Request) error {
	claims, a, err := s.authenticateBearer(r, s.tokens.Issuer())
	if err != nil {
		return err
	}
	if e := s.limits.TakeAPI(r.Context(), w, a.ID, s.now()); e != nil {
		return e
	}
	if !claims.HasScope(ScopeProfile) {
		return insufficientScope(ScopeProfile)
	}
	if r.Method == http.MethodGet {
		writeData(w, http.StatusOK, viewOf(a))
		return nil
	}
	if !s.selfIssued(r.Context(), claims) {
		return ErrAccessDenied("only a token the agent obtained for itself may change its profile")
	}
	var req profileUpdateRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return err
	}
	var try *attempt
	if req.AgentSecret != nil {
		// Changing the secret checks the current one: the same lock-out as
		// authentication, so a stolen token cannot guess it.
		var err error
		if try, err = s.limits.chargeAttempt(r.Context(), w, ClientIP(r), a.ID, s.now()); err != nil {
			return err
		}
	}
	updated, err := s.agents.UpdateProfile(r.Context(), a.ID, agents.ProfileUpdate{
		ModelName: req.ModelName, OwnerName: req.OwnerName, OwnerEmail: req.OwnerEmail,
		NewSecret: req.AgentSecret, CurrentSecret: req.CurrentAgentSecret,
	})
	if errors.Is(err, agents.ErrInvalidCredentials) {
		return ErrAccessDenied("current_agent_secret is not the agent's secret")
	}
	if err != nil {
		return registryError(err)
	}
	try.succeeded(r.Context())
	writeData(w, http.StatusOK, viewOf(updated))
	return nil
}

// idFree refuses an agent id that an OAuth client already has: a token's
// sub and client_id must say unambiguously who acts.
func (s *Server) idFree(ctx context.Context, agentID string) error {
	if _, err := s.clients.Get(ctx, agentID); err == nil {
		return ErrConflict("this id belongs to an OAuth client")
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// selfIssued reports whether the agent obtained the token for itself
// (/api/agent-auth or client_credentials with its own credentials), not a
// website on its behalf: the token names the agent as its client, nobody
// acts for it, and no OAuth client has the agent's id.
func (s *Server) selfIssued(ctx context.Context, claims *AccessClaims) bool {
	if claims.ClientID != claims.Subject || claims.Act != nil {
		return false
	}
	_, err := s.clients.Get(ctx, claims.ClientID)
	return errors.Is(err, ErrNotFound)
}

var errAgentGone = errors.New("agent deleted, disabled or registered again")

// currentAgent loads the agent a token or grant from time since speaks
// for: it must exist, be enabled, and be the same agent — one deleted and
// registered again under its id is another agent.
func (s *Server) currentAgent(ctx context.Context, id string, since int64) (*agents.Agent, error) {
	a, err := s.agents.Get(ctx, id)
	if errors.Is(err, agents.ErrNotFound) {
		return nil, errAgentGone
	}
	if err != nil {
		return nil, err
	}
	if a.Disabled || since < a.CreatedAt.Unix() {
		return nil, errAgentGone
	}
	return a, nil
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

func insufficientScope(scopes ...string) *Error {
	e := newError("insufficient_scope", 403, "this request requires scope: "+strings.Join(scopes, " "))
	return e.WithHeader("WWW-Authenticate", `Bearer realm="auth_agent", error="insufficient_scope", scope="`+strings.Join(scopes, " ")+`"`)
}

func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", "application/jwk-set+json")
	h.Set("Cache-Control", "public, max-age=300")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(s.keys.JWKS())
	}
	return nil
}
