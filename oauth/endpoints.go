package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/ratelimit"
)

// tokenInfo serves what clients ask about tokens: userinfo, introspection
// and revocation.
type tokenInfo struct{ *provider }

// metadata serves what describes the server and registers clients:
// discovery, the key set, the API's description and RFC 7591
// registration.
type metadata struct {
	*provider
	docs *apiDocs
}

// handleUserinfo is GET|POST /oauth2/userinfo: the claims the token's
// scopes release. The token must carry openid.
func (s *tokenInfo) handleUserinfo(w http.ResponseWriter, r *http.Request) error {
	// Only tokens meant for the issuer: one issued for an API
	// (resource=…) is that API's, not a key to the agent's identity.
	claims, a, err := s.authenticateBearer(r, s.cfg.Issuer)
	if err != nil {
		return err
	}
	if !claims.HasScope(ScopeOpenID) {
		return ErrInsufficientScope("auth_agent", ScopeOpenID)
	}
	WriteJSON(w, http.StatusOK, identityClaims(a, claims.Scopes()))
	return nil
}

// handleIntrospect is POST /oauth2/introspect (RFC 7662).
func (s *tokenInfo) handleIntrospect(w http.ResponseWriter, r *http.Request) error {
	params, err := readParams(w, r, s.cfg.MaxBody)
	if err != nil {
		return err
	}
	c, err := s.authenticateIntrospector(w, r, params)
	if err != nil {
		return err
	}
	tok := params.Get("token")
	if tok == "" {
		return ErrInvalidRequest("token is required")
	}
	// A caller learns about a token issued to it, or an access token
	// whose aud names it (RFC 7662 §4); any other looks inactive to it —
	// unless the operator made the caller a resource server, which checks
	// the access tokens presented to it, whoever they were issued to
	// (never refresh tokens: those are only their client's business).
	mayKnow := func(clientID string, aud []string, access bool) bool {
		return clientID == c.id() || slices.Contains(aud, c.id()) || (access && c.client != nil && c.client.ResourceServer)
	}
	inactive := map[string]any{"active": false}
	if claims, err := s.tokens.VerifyAccessToken(r.Context(), tok, ""); err == nil {
		if !mayKnow(claims.ClientID, claims.Audience, true) || s.revocations.Revoked(claims) || !s.subjectActive(r.Context(), claims) {
			WriteJSON(w, http.StatusOK, inactive)
			return nil
		}
		resp := map[string]any{
			"active": true, "token_type": claims.TokenType(), "scope": claims.Scope, "client_id": claims.ClientID,
			"sub": claims.Subject, "iss": claims.Issuer, "aud": claims.Audience, "jti": claims.ID,
			"exp": claims.ExpiresAt.Unix(), "iat": claims.IssuedAt.Unix(), "username": claims.Subject,
		}
		if claims.Act != nil {
			resp["act"] = claims.Act
		}
		if claims.Cnf != nil {
			resp["cnf"] = claims.Cnf
		}
		if claims.IDP != "" {
			resp["idp"] = claims.IDP
		}
		WriteJSON(w, http.StatusOK, resp)
		return nil
	}
	if len(tok) <= 256 {
		g, err := s.store.GetRefresh(r.Context(), tokenHash(tok))
		switch {
		case err == nil && mayKnow(g.ClientID, nil, false) && !g.Rotated && !s.revocations.FamilyRevoked(g.Family) && s.now().Before(g.ExpiresAt):
			WriteJSON(w, http.StatusOK, map[string]any{
				"active": true, "token_type": "refresh_token", "scope": strings.Join(g.Scopes, " "),
				"client_id": g.ClientID, "sub": g.AgentID, "iss": s.cfg.Issuer, "exp": g.ExpiresAt.Unix(),
			})
			return nil
		case err != nil && !errors.Is(err, ErrNotFound):
			return err
		}
	}
	WriteJSON(w, http.StatusOK, inactive)
	return nil
}

// subjectActive reports whether a token's subject may still act: a token
// speaking for a client needs the client, any other its current agent.
func (s *tokenInfo) subjectActive(ctx context.Context, claims *AccessClaims) bool {
	if claims.IDP != "" {
		return true // another IdP's subject: nothing here to be gone
	}
	if c, err := s.subjectClient(ctx, claims); c != nil || err != nil {
		return err == nil
	}
	_, err := s.currentAgent(ctx, claims.Subject, claims.IssuedAt.Time)
	return err == nil
}

// authenticateIntrospector authenticates a caller that has a secret, a
// confidential client or an agent: introspection answers only those (a
// public client's id is no secret).
func (s *tokenInfo) authenticateIntrospector(w http.ResponseWriter, r *http.Request, params map[string][]string) (caller, error) {
	c, err := s.authenticateCaller(r.Context(), w, r, params, true)
	if err != nil {
		return caller{}, err
	}
	if c.client != nil && c.client.Public {
		return caller{}, ErrInvalidClient("introspection requires a confidential client")
	}
	return c, nil
}

// handleRevoke is POST /oauth2/revoke (RFC 7009): a refresh token revokes
// its family; an access token is refused from now on. Tokens the caller
// does not own, and unknown tokens, answer 200 and change nothing.
func (s *tokenInfo) handleRevoke(w http.ResponseWriter, r *http.Request) error {
	params, err := readParams(w, r, s.cfg.MaxBody)
	if err != nil {
		return err
	}
	// Public clients may revoke their own tokens (RFC 7009 §2.1), and
	// agents those they got for themselves; nobody touches anything else.
	c, err := s.authenticateCaller(r.Context(), w, r, params, true)
	if err != nil {
		return err
	}
	callerID := c.id()
	tok := params.Get("token")
	if tok == "" {
		return ErrInvalidRequest("token is required")
	}
	// token_type_hint is only a hint (RFC 7009 §2.1): both kinds are tried.
	if claims, err := s.tokens.VerifyAccessToken(r.Context(), tok, ""); err == nil {
		if claims.ClientID == callerID {
			if err := s.revokeToken(r.Context(), claims.ID, claims.ExpiresAt.Time); err != nil {
				return err
			}
			s.log.Info("access token revoked", zap.String("client_id", callerID), zap.String("jti", claims.ID))
			s.events.Publish(r.Context(), events.TokenRevoked, map[string]any{
				"client_id": callerID, "subject": claims.Subject, "token_type": "access_token", "jti": claims.ID,
			})
		}
	} else if len(tok) <= 256 {
		g, err := s.store.GetRefresh(r.Context(), tokenHash(tok))
		switch {
		case err == nil:
			if g.ClientID == callerID {
				if err := s.revokeFamily(r.Context(), g.Family); err != nil {
					return err
				}
				s.log.Info("refresh token family revoked", zap.String("client_id", callerID))
				s.events.Publish(r.Context(), events.TokenRevoked, map[string]any{
					"client_id": callerID, "subject": g.AgentID, "token_type": "refresh_token", "family": g.Family,
				})
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
func (s *metadata) handleDiscovery(w http.ResponseWriter, r *http.Request) error {
	iss := s.cfg.Issuer
	doc := map[string]any{
		"issuer":                                                   iss,
		"authorization_endpoint":                                   iss + "/oauth2/authorize",
		"token_endpoint":                                           iss + "/oauth2/token",
		"userinfo_endpoint":                                        iss + "/oauth2/userinfo",
		"introspection_endpoint":                                   iss + "/oauth2/introspect",
		"revocation_endpoint":                                      iss + "/oauth2/revoke",
		"jwks_uri":                                                 iss + "/.well-known/jwks.json",
		"agent_registration_endpoint":                              iss + "/api/register-agent",
		"agent_auth_endpoint":                                      iss + "/api/agent-auth",
		"response_types_supported":                                 []string{"code"},
		"response_modes_supported":                                 []string{"query"},
		"grant_types_supported":                                    []string{GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials, GrantTokenExchange, GrantJWTBearer},
		"subject_types_supported":                                  []string{"public"},
		"id_token_signing_alg_values_supported":                    SupportedAlgs,
		"code_challenge_methods_supported":                         []string{"S256"},
		"token_endpoint_auth_methods_supported":                    []string{AuthSecretBasic, AuthSecretPost, AuthPrivateKeyJWT, AuthNone},
		"introspection_endpoint_auth_methods_supported":            []string{AuthSecretBasic, AuthSecretPost, AuthPrivateKeyJWT},
		"revocation_endpoint_auth_methods_supported":               []string{AuthSecretBasic, AuthSecretPost, AuthPrivateKeyJWT, AuthNone},
		"introspection_endpoint_auth_signing_alg_values_supported": AssertionAlgs,
		"revocation_endpoint_auth_signing_alg_values_supported":    AssertionAlgs,
		"scopes_supported":                                         IdentityScopes,
		"claims_supported": []string{"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash",
			"name", "agent_id", "model_name", "email", "email_verified", "permissions"},
		"prompt_values_supported":                          []string{"none", "login", "consent"},
		"authorization_response_iss_parameter_supported":   true,
		"access_token_signing_alg_values_supported":        []string{s.tokens.Alg()},
		"request_parameter_supported":                      false,
		"request_uri_parameter_supported":                  false,
		"claims_parameter_supported":                       false,
		"token_endpoint_auth_signing_alg_values_supported": AssertionAlgs,
		"client_id_metadata_document_supported":            s.cfg.ClientIDMetadataDocuments,
		"dpop_signing_alg_values_supported":                DPoPAlgs,
	}
	// MCP 2026-07-28 has clients use a client ID metadata document where
	// client_id_metadata_document_supported says so, and fall back to
	// dynamic registration (deprecated, kept for earlier revisions' clients)
	// only without it; encoding/json writes the keys in order, so the
	// documents come first for those that read in order too.
	if s.cfg.DynamicRegistration != DynamicRegistrationOff {
		doc["registration_endpoint"] = iss + "/oauth2/register"
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	WritePublicJSON(w, "application/json", body)
	return nil
}

func (s *metadata) handleJWKS(w http.ResponseWriter, r *http.Request) error {
	body := s.keys.JWKS()
	if r.Method == http.MethodHead {
		body = nil
	}
	WritePublicJSON(w, "application/jwk-set+json", body)
	return nil
}

// clientMetadata is an RFC 7591 registration request.
type clientMetadata struct {
	RedirectURIs            []string `json:"redirect_uris"`
	ClientName              string   `json:"client_name"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	IDTokenAlg              string   `json:"id_token_signed_response_alg"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	Scope                   string   `json:"scope"`
	// JWKS holds the keys of a private_key_jwt client, or JWKSURI says
	// where it publishes them.
	JWKS    json.RawMessage `json:"jwks"`
	JWKSURI string          `json:"jwks_uri"`
	// DPoPBound asks that every access token of the client be DPoP-bound
	// (RFC 9449 §5.2).
	DPoPBound bool `json:"dpop_bound_access_tokens"`
	// ApplicationType is native or web (the default), which decides the
	// redirect URIs the client may register.
	ApplicationType string `json:"application_type"`
}

// handleClientRegistration is POST /oauth2/register (RFC 7591).
func (s *metadata) handleClientRegistration(w http.ResponseWriter, r *http.Request) error {
	switch s.cfg.DynamicRegistration {
	case DynamicRegistrationOff:
		return ErrAccessDenied("dynamic client registration is disabled on this server")
	case RegistrationToken:
		try, err := s.limits.ChargeAttempt(r.Context(), w, ratelimit.ClientIP(r), "")
		if err != nil {
			return err
		}
		if err := checkStaticBearer(r, s.cfg.DynamicRegistrationToken); err != nil {
			return err
		}
		try.Succeeded(r.Context())
	}
	// Registering clients costs storage like registering agents: the same
	// per-IP budget (counted apart), spent only by registrations that
	// create a client.
	charge, err := s.limits.ChargeRegistration(r.Context(), w, r, "client-")
	if err != nil {
		return err
	}
	c, secret, err := s.registerClient(w, r)
	if err != nil {
		charge.Failed(context.WithoutCancel(r.Context()), AsError(err).Status < 500)
		return err
	}
	s.log.Info("client registered dynamically", zap.String("client_id", c.ID))
	s.events.Publish(r.Context(), events.ClientRegistered, withBy(clientView(c), "dynamic"))
	WriteJSON(w, http.StatusCreated, ClientMetadata(c, secret))
	return nil
}

// registerClient reads an RFC 7591 registration request and creates the
// client.
func (s *metadata) registerClient(w http.ResponseWriter, r *http.Request) (*Client, string, error) {
	var md clientMetadata
	if err := DecodeJSON(w, r, s.cfg.MaxBody, &md); err != nil {
		return nil, "", err
	}
	for _, rt := range md.ResponseTypes {
		if rt != "code" {
			return nil, "", ErrInvalidClientMetadata("only the code response type is supported")
		}
	}
	public := false
	var jwks string
	switch md.TokenEndpointAuthMethod {
	case "", AuthSecretBasic, AuthSecretPost:
	case AuthNone:
		public = true
	case AuthPrivateKeyJWT:
		if (len(md.JWKS) == 0 || string(md.JWKS) == "null") && md.JWKSURI == "" {
			return nil, "", ErrInvalidClientMetadata("private_key_jwt needs jwks or jwks_uri: the client's public keys")
		}
		if string(md.JWKS) != "null" {
			jwks = string(md.JWKS)
		}
	default:
		return nil, "", ErrInvalidClientMetadata("unsupported token_endpoint_auth_method")
	}
	if md.TokenEndpointAuthMethod != AuthPrivateKeyJWT && ((len(md.JWKS) > 0 && string(md.JWKS) != "null") || md.JWKSURI != "") {
		return nil, "", ErrInvalidClientMetadata("jwks and jwks_uri go with token_endpoint_auth_method private_key_jwt")
	}
	scopes, err := ParseScope(md.Scope)
	if err != nil {
		return nil, "", ErrInvalidClientMetadata(AsError(err).Description)
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
			return nil, "", ErrInvalidClientMetadata("dynamically registered clients may use only authorization_code and refresh_token")
		}
	}
	// Without scope (RFC 7591 lets a client leave it out, and MCP clients
	// do) the client may ask for any scope; the agent's permissions bound
	// what it gets.
	c, secret, err := NewClient(ClientSpec{
		ID: "dyn_" + randomToken(16), Name: md.ClientName, Public: public, RedirectURIs: md.RedirectURIs,
		Scopes: scopes, AnyScope: len(scopes) == 0, GrantTypes: grants, IDTokenAlg: md.IDTokenAlg, JWKS: jwks, JWKSURI: md.JWKSURI,
		RequireDPoP: md.DPoPBound, ApplicationType: md.ApplicationType,
	}, ClientFromDynamic, s.now())
	if err != nil {
		if e := AsError(err); e.Code == "invalid_request" {
			return nil, "", ErrInvalidClientMetadata(e.Description) // RFC 7591 §3.2.2
		}
		return nil, "", err
	}
	if err := s.clients.Create(r.Context(), c); err != nil {
		return nil, "", err
	}
	return c, secret, nil
}

// ClientMetadata is the RFC 7591 §3.2.1 view of a client (never its secret
// hash); secret, when not empty, is a generated secret shown once.
func ClientMetadata(c *Client, secret string) map[string]any {
	method := c.AuthMethod()
	redirects := c.RedirectURIs
	if redirects == nil {
		redirects = []string{} // a client without redirects (client_credentials only)
	}
	v := map[string]any{
		"client_id": c.ID, "client_name": c.Name, "redirect_uris": redirects, "grant_types": c.GrantTypes,
		"response_types": []string{"code"}, "token_endpoint_auth_method": method,
		"client_id_issued_at": c.CreatedAt.Unix(), "id_token_signed_response_alg": c.IDTokenSigningAlg(),
		"application_type": c.AppType(),
	}
	if !c.AnyScope() {
		v["scope"] = strings.Join(c.Scopes, " ")
	}
	if c.SecretHash != "" {
		v["client_secret_expires_at"] = 0
	}
	if secret != "" {
		v["client_secret"] = secret
	}
	if c.JWKS != "" {
		v["jwks"] = json.RawMessage(c.JWKS)
	}
	if c.JWKSURI != "" {
		v["jwks_uri"] = c.JWKSURI
	}
	if c.RequireDPoP {
		v["dpop_bound_access_tokens"] = true
	}
	if !slices.Contains(c.GrantTypes, GrantAuthorizationCode) {
		v["response_types"] = []string{}
	}
	return v
}
