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

// Config is the server's protocol configuration.
type Config struct {
	Issuer string
	// RegistrationMode is open, token or closed; RegistrationToken is the
	// bearer token required in token mode.
	RegistrationMode  string
	RegistrationToken string
	// MaxBody caps request bodies; 0 means DefaultMaxBody.
	MaxBody int64
}

// Server serves the identity provider's endpoints.
type Server struct {
	cfg    Config
	agents *agents.Service
	keys   *KeyManager
	tokens *Tokens
	log    *zap.Logger
	routes map[string]route
}

type route struct {
	methods []string
	handle  func(http.ResponseWriter, *http.Request) error
}

// NewServer wires the endpoints.
func NewServer(cfg Config, registry *agents.Service, keys *KeyManager, tokens *Tokens, log *zap.Logger) *Server {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{cfg: cfg, agents: registry, keys: keys, tokens: tokens, log: log}
	s.routes = map[string]route{
		"/api/register-agent":    {[]string{http.MethodPost}, s.handleRegister},
		"/api/agent-auth":        {[]string{http.MethodPost}, s.handleAgentAuth},
		"/api/agents/profile":    {[]string{http.MethodGet, http.MethodPut}, s.handleProfile},
		"/.well-known/jwks.json": {[]string{http.MethodGet, http.MethodHead}, s.handleJWKS},
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
		tok, err := ParseBearer(r.Header.Get("Authorization"))
		if err != nil {
			return ErrMissingToken("auth_agent")
		}
		// Compare digests so the comparison is constant-time whatever the lengths.
		got, want := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(s.cfg.RegistrationToken))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			return ErrInvalidToken("auth_agent", "the registration token is not valid")
		}
	}
	var req registerRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return err
	}
	a, secret, err := s.agents.Register(r.Context(), agents.Registration{
		AgentID: req.AgentID, AgentSecret: req.AgentSecret, ModelName: req.ModelName,
		OwnerName: req.OwnerName, OwnerEmail: req.OwnerEmail,
	})
	if err != nil {
		return registryError(err)
	}
	s.log.Info("agent registered", zap.String("agent_id", a.ID))
	v := viewOf(a)
	v.AgentSecret = secret
	writeData(w, http.StatusCreated, v)
	return nil
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
	a, err := s.agents.Authenticate(r.Context(), req.AgentID, req.AgentSecret)
	if err != nil {
		return registryError(err)
	}
	if req.RequestID != "" {
		// Pending authorization requests are created by /oauth2/authorize;
		// none is known under this id.
		return ErrInvalidRequest("request_id is unknown or expired")
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
		Subject: a.ID, ClientID: a.ID, Scopes: scopes, Audience: aud, ModelName: model, AuthTime: s.tokens.now(),
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

// authenticateBearer verifies the request's access token for use at this
// server (aud = the issuer) and loads its agent.
func (s *Server) authenticateBearer(r *http.Request) (*AccessClaims, *agents.Agent, error) {
	raw, err := ParseBearer(r.Header.Get("Authorization"))
	if errors.Is(err, errNoBearer) {
		return nil, nil, ErrMissingToken("auth_agent")
	}
	if err != nil {
		return nil, nil, ErrInvalidToken("auth_agent", err.Error())
	}
	claims, err := s.tokens.VerifyAccessToken(raw, s.tokens.Issuer())
	if err != nil {
		return nil, nil, ErrInvalidToken("auth_agent", "the access token is invalid or expired")
	}
	a, err := s.agents.Get(r.Context(), claims.Subject)
	if errors.Is(err, agents.ErrNotFound) || (err == nil && a.Disabled) {
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
	claims, a, err := s.authenticateBearer(r)
	if err != nil {
		return err
	}
	if !claims.HasScope(ScopeProfile) {
		return insufficientScope(ScopeProfile)
	}
	if r.Method == http.MethodGet {
		writeData(w, http.StatusOK, viewOf(a))
		return nil
	}
	if claims.ClientID != claims.Subject {
		return ErrAccessDenied("only a token the agent obtained for itself may change its profile")
	}
	var req profileUpdateRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return err
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
	writeData(w, http.StatusOK, viewOf(updated))
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
