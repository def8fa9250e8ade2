package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/ratelimit"
)

// agentAPI serves the agent endpoints of the seed: registration,
// authentication, and the agent's own profile.
type agentAPI struct{ *provider }

type registerRequest struct {
	AgentID     string          `json:"agent_id"`
	AgentSecret string          `json:"agent_secret"`
	ModelName   string          `json:"model_name"`
	OwnerName   string          `json:"owner_name"`
	OwnerEmail  string          `json:"owner_email"`
	JWKS        json.RawMessage `json:"jwks"`
}

func (r registerRequest) registration() (agents.Registration, error) {
	jwks, err := keySetParam(r.JWKS)
	if err != nil {
		return agents.Registration{}, err
	}
	return agents.Registration{AgentID: r.AgentID, AgentSecret: r.AgentSecret, ModelName: r.ModelName, OwnerName: r.OwnerName, OwnerEmail: r.OwnerEmail, JWKS: jwks}, nil
}

// keySetParam reads a jwks request field: absent or null is "", anything
// else must be a JWK Set of public keys (stored compact).
func keySetParam(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	jwks, err := CompactKeySet(string(raw))
	if err != nil {
		return "", ErrInvalidRequest("jwks: " + err.Error())
	}
	return jwks, nil
}

// AgentView is an agent as the APIs show it: never the secret hash.
type AgentView struct {
	AgentID     string    `json:"agent_id"`
	ModelName   string    `json:"model_name"`
	OwnerName   string    `json:"owner_name"`
	OwnerEmail  string    `json:"owner_email"`
	Permissions []string  `json:"permissions"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Disabled    bool      `json:"disabled,omitempty"`
	AgentSecret string    `json:"agent_secret,omitempty"`
	// TokenEndpointAuthMethod is how the agent authenticates:
	// client_secret_post (its secret) or private_key_jwt (its keys, whose
	// ids Kids lists).
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	Kids                    []string `json:"kids,omitempty"`
	// RequireDPoP: the agent's own tokens are always DPoP-bound.
	RequireDPoP bool `json:"require_dpop,omitempty"`
}

// ViewAgent returns the API view of a; secret, when not empty, is the
// generated secret shown once.
func ViewAgent(a *agents.Agent, secret string) AgentView {
	perms := a.Permissions
	if perms == nil {
		perms = []string{}
	}
	v := AgentView{
		AgentID: a.ID, ModelName: a.ModelName, OwnerName: a.OwnerName, OwnerEmail: a.OwnerEmail,
		Permissions: perms, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt, Disabled: a.Disabled, AgentSecret: secret,
		TokenEndpointAuthMethod: AuthSecretPost, RequireDPoP: a.RequireDPoP,
	}
	if a.JWKS != "" {
		v.TokenEndpointAuthMethod, v.Kids = AuthPrivateKeyJWT, []string{}
		if keys, err := ParseClientKeys([]byte(a.JWKS)); err == nil {
			v.Kids = keys.Kids()
		}
	}
	return v
}

func (s *agentAPI) handleRegister(w http.ResponseWriter, r *http.Request) error {
	switch s.cfg.RegistrationMode {
	case RegistrationClosed:
		return ErrAccessDenied("agent registration is closed on this server")
	case RegistrationToken:
		// A registration token is a secret: guessing it counts as failed
		// authentication.
		try, err := s.limits.ChargeAttempt(r.Context(), w, ratelimit.ClientIP(r), "")
		if err != nil {
			return err
		}
		if err := checkStaticBearer(r, s.cfg.RegistrationToken); err != nil {
			return err
		}
		try.Succeeded(r.Context())
	}
	charge, err := s.limits.ChargeRegistration(r.Context(), w, r, "")
	if err != nil {
		return err
	}
	a, secret, err := s.decodeAndRegister(w, r)
	if err != nil {
		charge.Failed(context.WithoutCancel(r.Context()), AsError(err).Status < 500)
		return err
	}
	s.log.Info("agent registered", zap.String("agent_id", a.ID))
	s.events.Publish(r.Context(), events.AgentRegistered, withBy(agentView(a), "self"))
	writeData(w, http.StatusCreated, ViewAgent(a, secret))
	return nil
}

func (s *agentAPI) decodeAndRegister(w http.ResponseWriter, r *http.Request) (*agents.Agent, string, error) {
	var req registerRequest
	if err := DecodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return nil, "", err
	}
	reg, err := req.registration()
	if err != nil {
		return nil, "", err
	}
	return s.registerAgent(r.Context(), reg, s.cfg.RegistrationMode == RegistrationToken)
}

// registerAgent creates an agent (for /api/register-agent and the admin
// API); trusted callers may take ids the configuration reserves.
func (p *provider) registerAgent(ctx context.Context, reg agents.Registration, trusted bool) (*agents.Agent, string, error) {
	if err := p.idFree(ctx, reg.AgentID); err != nil {
		return nil, "", err
	}
	a, secret, err := p.agents.Register(ctx, reg, trusted)
	if err != nil {
		return nil, "", registryError(err)
	}
	return a, secret, nil
}

type agentAuthRequest struct {
	AgentID     string `json:"agent_id"`
	AgentSecret string `json:"agent_secret"`
	ModelName   string `json:"model_name"`
	RequestID   string `json:"request_id"`
	Scope       string `json:"scope"`
	Resource    string `json:"resource"`
	// ClientID and RedirectURI, with RequestID: approve only a request of
	// this client returning to this host.
	ClientID    string `json:"client_id"`
	RedirectURI string `json:"redirect_uri"`
	// An agent with keys authenticates with an assertion instead of
	// agent_secret (private_key_jwt; agent_id may then be left out).
	ClientAssertionType string `json:"client_assertion_type"`
	ClientAssertion     string `json:"client_assertion"`
}

// credentials are the agent's proof of identity in the request: its secret
// or an assertion.
func (req agentAuthRequest) credentials() (clientCredentials, error) {
	if req.ClientAssertion == "" && req.ClientAssertionType == "" {
		if req.AgentID == "" || req.AgentSecret == "" {
			return clientCredentials{}, ErrInvalidRequest("agent_id and agent_secret (or client_assertion) are required")
		}
		return clientCredentials{id: req.AgentID, secret: req.AgentSecret}, nil
	}
	if req.AgentSecret != "" {
		return clientCredentials{}, ErrInvalidRequest("use one client authentication method, not two")
	}
	params := url.Values{"client_assertion_type": {req.ClientAssertionType}, "client_assertion": {req.ClientAssertion}}
	if req.AgentID != "" {
		params.Set("client_id", req.AgentID)
	}
	return readClientAssertion(&http.Request{Header: http.Header{}}, params)
}

func (s *agentAPI) handleAgentAuth(w http.ResponseWriter, r *http.Request) error {
	var req agentAuthRequest
	if err := DecodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return err
	}
	creds, err := req.credentials()
	if err != nil {
		return err
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
	if req.RequestID == "" && (req.ClientID != "" || req.RedirectURI != "") {
		return ErrInvalidRequest("client_id and redirect_uri only go with request_id")
	}
	expect, err := parseApprovalExpectation(req.ClientID, req.RedirectURI)
	if err != nil {
		return err
	}
	// A token request may carry a DPoP proof (checked before the
	// credentials, as at the token endpoint); completing a sign-in
	// issues no token to bind.
	var proof *DPoPProof
	if req.RequestID == "" {
		if proof, err = s.checkProof(w, r, AgentAuthPath); err != nil {
			return err
		}
	}
	a, err := s.authenticateAgent(w, r, creds)
	if err != nil {
		return err
	}
	if req.RequestID != "" {
		to, ar, err := (&authorizer{s.provider}).approve(r.Context(), req.RequestID, a, req.ModelName, expect)
		if err != nil {
			return err
		}
		s.log.Info("agent completed an authorization request", zap.String("agent_id", a.ID), zap.String("client_id", ar.ClientID))
		data := map[string]any{"status": statusAuthenticated, "request_id": req.RequestID, "redirect_to": to}
		if c, err := s.clients.Get(r.Context(), ar.ClientID); err == nil {
			maps.Copy(data, requester(c, ar.RedirectURI))
		} else {
			data["client_id"], data["redirect_host"], data["verified"] = ar.ClientID, redirectHost(ar.RedirectURI), false
		}
		writeData(w, http.StatusOK, data)
		return nil
	}
	if err := s.requireDPoP(proof, caller{agent: a}); err != nil {
		return err
	}
	if err := s.spendProof(r.Context(), proof); err != nil {
		return err
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
		Subject: a.ID, ClientID: a.ID, Scopes: scopes, Audience: aud, ModelName: model, AuthTime: s.now(), JKT: proof.jkt(),
	})
	if err != nil {
		return err
	}
	s.issued(r.Context(), events.TokenIssued, grantAgentAuth, caller{agent: a}, tok, a.ID)
	writeData(w, http.StatusOK, map[string]any{
		"access_token": tok.Token,
		"token_type":   tok.Type,
		"expires_in":   tok.ExpiresIn,
		"scope":        tok.Scope,
	})
	return nil
}

// authenticateAgent checks an agent's secret or assertion, charged to the
// failed-authentication budgets.
func (s *agentAPI) authenticateAgent(w http.ResponseWriter, r *http.Request, creds clientCredentials) (*agents.Agent, error) {
	if creds.assertion != "" {
		return s.authenticateAgentAssertion(r.Context(), w, r, creds, nil)
	}
	try, err := s.chargeAttempt(w, r, creds.id)
	if err != nil {
		return nil, err
	}
	a, err := s.agents.Authenticate(r.Context(), creds.id, creds.secret)
	if errors.Is(err, agents.ErrInvalidCredentials) {
		s.agentAuthFailed(r, creds.id)
	}
	if err != nil {
		return nil, registryError(err)
	}
	try.Succeeded(r.Context())
	s.authSucceeded(r, authAgentSecret, a)
	return a, nil
}

type keysRequest struct {
	JWKS                json.RawMessage `json:"jwks"`
	AgentID             string          `json:"agent_id"`
	ClientAssertionType string          `json:"client_assertion_type"`
	ClientAssertion     string          `json:"client_assertion"`
}

// handleKeys is PUT /api/agents/keys: an agent that holds keys replaces
// them, proving possession of one it holds now with an assertion (a bearer
// token alone never changes keys: it may have leaked).
func (s *agentAPI) handleKeys(w http.ResponseWriter, r *http.Request) error {
	var req keysRequest
	if err := DecodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return err
	}
	jwks, err := keySetParam(req.JWKS)
	if err != nil {
		return err
	}
	if jwks == "" {
		return ErrInvalidRequest("jwks is required: the agent's new public keys")
	}
	if req.ClientAssertion == "" {
		return ErrInvalidClient("a client_assertion signed by one of the agent's current keys is required")
	}
	creds, err := agentAuthRequest{AgentID: req.AgentID, ClientAssertionType: req.ClientAssertionType, ClientAssertion: req.ClientAssertion}.credentials()
	if err != nil {
		return err
	}
	// Only an assertion made for this endpoint: one captured on its way
	// to get a token (aud the issuer) must not replace the keys for good.
	a, err := s.authenticateAgentAssertion(r.Context(), w, r, creds, []string{s.cfg.Issuer + r.URL.Path})
	if err != nil {
		return err
	}
	updated, err := s.agents.ReplaceKeys(r.Context(), a.ID, a.JWKS, jwks)
	if err != nil {
		return registryError(err)
	}
	s.log.Info("agent replaced its keys", zap.String("agent_id", a.ID))
	view := agentView(updated)
	view["changed"] = []string{"jwks"}
	s.events.Publish(r.Context(), events.AgentUpdated, withBy(view, "self"))
	writeData(w, http.StatusOK, ViewAgent(updated, ""))
	return nil
}

type profileUpdateRequest struct {
	ModelName          *string `json:"model_name"`
	OwnerName          *string `json:"owner_name"`
	OwnerEmail         *string `json:"owner_email"`
	AgentSecret        *string `json:"agent_secret"`
	CurrentAgentSecret string  `json:"current_agent_secret"`
}

func (s *agentAPI) handleProfile(w http.ResponseWriter, r *http.Request) error {
	claims, a, err := s.authenticateBearer(r, s.tokens.Issuer())
	if err != nil {
		return err
	}
	if err := s.limits.TakeAPI(r.Context(), w, a.ID); err != nil {
		return err
	}
	if !claims.HasScope(ScopeProfile) {
		return ErrInsufficientScope("auth_agent", ScopeProfile)
	}
	if r.Method == http.MethodGet {
		writeData(w, http.StatusOK, ViewAgent(a, ""))
		return nil
	}
	if !s.selfIssued(r, claims) {
		return ErrAccessDenied("only a token the agent obtained for itself may change its profile")
	}
	var req profileUpdateRequest
	if err := DecodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return err
	}
	var try *ratelimit.Attempt
	if req.AgentSecret != nil {
		// Changing the secret checks the current one: the same lock-out as
		// authentication, so a stolen token cannot guess it.
		if try, err = s.chargeAttempt(w, r, a.ID); err != nil {
			return err
		}
	}
	updated, err := s.agents.UpdateProfile(r.Context(), a.ID, agents.ProfileUpdate{
		ModelName: req.ModelName, OwnerName: req.OwnerName, OwnerEmail: req.OwnerEmail,
		NewSecret: req.AgentSecret, CurrentSecret: req.CurrentAgentSecret,
	})
	if errors.Is(err, agents.ErrInvalidCredentials) {
		s.agentAuthFailed(r, a.ID)
		return ErrAccessDenied("current_agent_secret is not the agent's secret")
	}
	if err != nil {
		return registryError(err)
	}
	try.Succeeded(r.Context())
	s.events.Publish(r.Context(), events.AgentUpdated, withBy(withChanges(agentView(updated), req), "self"))
	if req.AgentSecret != nil {
		if err := s.agentUpdated(r.Context(), a.ID); err != nil {
			// The secret changed (that is durable); other processes' memos
			// are bound to the old hash and stop matching anyway.
			s.log.Warn("recording an agent change", zap.String("agent_id", a.ID), zap.Error(err))
		}
	}
	writeData(w, http.StatusOK, ViewAgent(updated, ""))
	return nil
}

// withChanges names the fields a profile update changed (never their
// values for the secret).
func withChanges(m map[string]any, req profileUpdateRequest) map[string]any {
	var changed []string
	for name, set := range map[string]bool{
		"model_name": req.ModelName != nil, "owner_name": req.OwnerName != nil,
		"owner_email": req.OwnerEmail != nil, "agent_secret": req.AgentSecret != nil,
	} {
		if set {
			changed = append(changed, name)
		}
	}
	slices.Sort(changed)
	m["changed"] = changed
	return m
}

// selfIssued reports whether the agent obtained the token for itself
// (/api/agent-auth or client_credentials with its own credentials), not a
// website on its behalf: the token names the agent as its client, nobody
// acts for it, and no OAuth client has the agent's id.
func (p *provider) selfIssued(r *http.Request, claims *AccessClaims) bool {
	if claims.ClientID != claims.Subject || claims.Act != nil {
		return false
	}
	_, err := p.clients.Get(r.Context(), claims.ClientID)
	return errors.Is(err, ErrNotFound)
}
