package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// handleUserinfo is GET|POST /oauth2/userinfo: the claims the token's
// scopes release. The token must carry openid.
func (s *Server) handleUserinfo(w http.ResponseWriter, r *http.Request) error {
	claims, a, err := s.authenticateBearer(r, "")
	if err != nil {
		return err
	}
	if !claims.HasScope(ScopeOpenID) {
		return insufficientScope(ScopeOpenID)
	}
	writeJSON(w, http.StatusOK, identityClaims(a, claims.Scopes()))
	return nil
}

// handleIntrospect is POST /oauth2/introspect (RFC 7662).
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) error {
	params, err := readParams(w, r, s.cfg.MaxBody)
	if err != nil {
		return err
	}
	if _, err := s.authenticateConfidential(r, params); err != nil {
		return err
	}
	tok := params.Get("token")
	if tok == "" {
		return ErrInvalidRequest("token is required")
	}
	inactive := map[string]any{"active": false}
	if claims, err := s.tokens.VerifyAccessToken(tok, ""); err == nil {
		if s.revocations.Revoked(claims) || !s.subjectActive(r.Context(), claims) {
			writeJSON(w, http.StatusOK, inactive)
			return nil
		}
		resp := map[string]any{
			"active": true, "token_type": "Bearer", "scope": claims.Scope, "client_id": claims.ClientID,
			"sub": claims.Subject, "iss": claims.Issuer, "aud": claims.Audience, "jti": claims.ID,
			"exp": claims.ExpiresAt.Unix(), "iat": claims.IssuedAt.Unix(), "username": claims.Subject,
		}
		if claims.Act != nil {
			resp["act"] = claims.Act
		}
		writeJSON(w, http.StatusOK, resp)
		return nil
	}
	if len(tok) <= 256 {
		raw, err := s.store.GetRecord(r.Context(), kindRefresh, tokenHash(tok))
		if err == nil {
			var g refreshGrant
			if json.Unmarshal(raw, &g) == nil && !g.Rotated {
				if !s.revocations.FamilyRevoked(g.Family) {
					writeJSON(w, http.StatusOK, map[string]any{
						"active": true, "token_type": "refresh_token", "scope": strings.Join(g.Scopes, " "),
						"client_id": g.ClientID, "sub": g.AgentID, "iss": s.cfg.Issuer, "exp": g.ExpiresAt.Unix(),
					})
					return nil
				}
			}
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	writeJSON(w, http.StatusOK, inactive)
	return nil
}

// subjectActive reports whether a token's subject may still act: a client's
// own client_credentials token needs the client, any other token its
// current agent.
func (s *Server) subjectActive(ctx context.Context, claims *AccessClaims) bool {
	if claims.ClientID == claims.Subject && claims.Act == nil {
		if _, err := s.clients.Get(ctx, claims.Subject); err == nil {
			return true
		}
	}
	_, err := s.currentAgent(ctx, claims.Subject, claims.IssuedAt.Unix())
	return err == nil
}

// authenticateConfidential authenticates a client that has a secret:
// introspection answers only those (a public client's id is no secret).
func (s *Server) authenticateConfidential(r *http.Request, params map[string][]string) (*Client, error) {
	c, err := s.authenticateCaller(r.Context(), nil, r, params, false)
	if err != nil {
		return nil, err
	}
	if c.client.Public {
		return nil, ErrInvalidClient("introspection requires a confidential client")
	}
	return c.client, nil
}

// handleRevoke is POST /oauth2/revoke (RFC 7009): a refresh token revokes
// its family; an access token is refused from now on. Tokens the caller
// does not own, and unknown tokens, answer 200 and change nothing.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) error {
	params, err := readParams(w, r, s.cfg.MaxBody)
	if err != nil {
		return err
	}
	// Public clients may revoke their own tokens (RFC 7009 §2.1); they can
	// touch nothing else.
	c, err := s.authenticateCaller(r.Context(), w, r, params, false)
	if err != nil {
		return err
	}
	client := c.client
	tok := params.Get("token")
	if tok == "" {
		return ErrInvalidRequest("token is required")
	}
	// token_type_hint is only a hint (RFC 7009 §2.1): both kinds are tried.
	if claims, err := s.tokens.VerifyAccessToken(tok, ""); err == nil {
		if claims.ClientID == client.ID {
			if err := s.revokeAccess(r.Context(), claims.ID, claims.ExpiresAt.Unix()); err != nil {
				return err
			}
			s.log.Info("access token revoked", zap.String("client_id", client.ID), zap.String("jti", claims.ID))
		}
	} else if len(tok) <= 256 {
		raw, err := s.store.GetRecord(r.Context(), kindRefresh, tokenHash(tok))
		switch {
		case err == nil:
			var g refreshGrant
			if json.Unmarshal(raw, &g) == nil && g.ClientID == client.ID {
				if err := s.revokeFamily(r.Context(), g.Family); err != nil {
					return err
				}
				s.log.Info("refresh token family revoked", zap.String("client_id", client.ID))
			}
		case !errors.Is(err, ErrNotFound):
			return err
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleDiscovery serves OpenID Connect discovery and RFC 8414 metadata:
// one document at both addresses.
func (s *Server) handleDiscovery(w http.ResponseWriter, r *http.Request) error {
	iss := s.cfg.Issuer
	doc := map[string]any{
		"issuer":                                        iss,
		"authorization_endpoint":                        iss + "/oauth2/authorize",
		"token_endpoint":                                iss + "/oauth2/token",
		"userinfo_endpoint":                             iss + "/oauth2/userinfo",
		"introspection_endpoint":                        iss + "/oauth2/introspect",
		"revocation_endpoint":                           iss + "/oauth2/revoke",
		"jwks_uri":                                      iss + "/.well-known/jwks.json",
		"agent_registration_endpoint":                   iss + "/api/register-agent",
		"agent_auth_endpoint":                           iss + "/api/agent-auth",
		"response_types_supported":                      []string{"code"},
		"response_modes_supported":                      []string{"query"},
		"grant_types_supported":                         []string{GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials, GrantTokenExchange},
		"subject_types_supported":                       []string{"public"},
		"id_token_signing_alg_values_supported":         []string{AlgRS256},
		"code_challenge_methods_supported":              []string{"S256"},
		"token_endpoint_auth_methods_supported":         []string{AuthSecretBasic, AuthSecretPost, AuthNone},
		"introspection_endpoint_auth_methods_supported": []string{AuthSecretBasic, AuthSecretPost},
		"revocation_endpoint_auth_methods_supported":    []string{AuthSecretBasic, AuthSecretPost},
		"scopes_supported":                              IdentityScopes,
		"claims_supported": []string{"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash",
			"name", "agent_id", "model_name", "email", "email_verified", "permissions"},
		"prompt_values_supported":                          []string{"none", "login", "consent"},
		"authorization_response_iss_parameter_supported":   true,
		"access_token_signing_alg_values_supported":        []string{s.tokens.alg},
		"request_parameter_supported":                      false,
		"claims_parameter_supported":                       false,
		"token_endpoint_auth_signing_alg_values_supported": []string{AlgRS256},
	}
	if s.cfg.DynamicRegistration != DynamicRegistrationOff {
		doc["registration_endpoint"] = iss + "/oauth2/register"
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSONCacheable(w, doc)
	return nil
}

func writeJSONCacheable(w http.ResponseWriter, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// clientMetadata is an RFC 7591 registration request.
type clientMetadata struct {
	RedirectURIs            []string `json:"redirect_uris"`
	ClientName              string   `json:"client_name"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	Scope                   string   `json:"scope"`
}

// handleClientRegistration is POST /oauth2/register (RFC 7591).
func (s *Server) handleClientRegistration(w http.ResponseWriter, r *http.Request) error {
	switch s.cfg.DynamicRegistration {
	case DynamicRegistrationOff:
		return ErrAccessDenied("dynamic client registration is disabled on this server")
	case RegistrationToken:
		try, err := s.limits.chargeAttempt(r.Context(), w, ClientIP(r), "", s.now())
		if err != nil {
			return err
		}
		if err := checkStaticBearer(r, s.cfg.DynamicRegistrationToken); err != nil {
			return err
		}
		try.succeeded(r.Context())
	}
	// Registering clients costs storage like registering agents: the same
	// per-IP budget (counted apart).
	if err := s.limits.take(r.Context(), w, s.limits.Registration, "registration", "client-"+ipKey(ClientIP(r)), s.limits.AuthFailOpen, s.now()); err != nil {
		return err
	}
	var md clientMetadata
	if err := decodeJSON(w, r, s.cfg.MaxBody, &md); err != nil {
		return err
	}
	for _, rt := range md.ResponseTypes {
		if rt != "code" {
			return newError("invalid_client_metadata", 400, "only the code response type is supported")
		}
	}
	public := false
	switch md.TokenEndpointAuthMethod {
	case "", AuthSecretBasic, AuthSecretPost:
	case AuthNone:
		public = true
	default:
		return newError("invalid_client_metadata", 400, "unsupported token_endpoint_auth_method")
	}
	scopes, err := ParseScope(md.Scope)
	if err != nil {
		return newError("invalid_client_metadata", 400, AsError(err).Description)
	}
	// Whoever registers chooses these scopes, so a dynamic client gets only
	// grants where an agent's permissions decide: no client_credentials, no
	// token exchange.
	grants := md.GrantTypes
	if len(grants) == 0 {
		grants = []string{GrantAuthorizationCode, GrantRefreshToken}
	}
	for _, g := range grants {
		if g != GrantAuthorizationCode && g != GrantRefreshToken {
			return newError("invalid_client_metadata", 400, "dynamically registered clients may use only authorization_code and refresh_token")
		}
	}
	c, secret, err := NewClient(ClientSpec{
		ID: "dyn_" + randomToken(16), Name: md.ClientName, Public: public, RedirectURIs: md.RedirectURIs,
		Scopes: scopes, GrantTypes: grants,
	}, ClientFromDynamic, s.now())
	if err != nil {
		return err
	}
	if err := s.clients.Create(r.Context(), c); err != nil {
		return err
	}
	s.log.Info("client registered dynamically", zap.String("client_id", c.ID))
	writeJSON(w, http.StatusCreated, clientRegistrationView(c, secret))
	return nil
}

// clientRegistrationView is the RFC 7591 §3.2.1 response.
func clientRegistrationView(c *Client, secret string) map[string]any {
	method := c.AuthMethod()
	v := map[string]any{
		"client_id": c.ID, "client_name": c.Name, "redirect_uris": c.RedirectURIs, "grant_types": c.GrantTypes,
		"response_types": []string{"code"}, "scope": strings.Join(c.Scopes, " "), "token_endpoint_auth_method": method,
		"client_id_issued_at": c.CreatedAt.Unix(),
	}
	if !c.Public {
		v["client_secret_expires_at"] = 0
	}
	if secret != "" {
		v["client_secret"] = secret
	}
	if !slices.Contains(c.GrantTypes, GrantAuthorizationCode) {
		v["response_types"] = []string{}
	}
	return v
}
