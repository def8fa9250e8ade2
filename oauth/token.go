package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
)

// maxExchangeDepth bounds chains of exchanges (each adds a jti segment).
const maxExchangeDepth = 8

// Token types of RFC 8693.
const (
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
)

// caller is who authenticated at the token endpoint: a client, or an agent
// acting as its own client (client_credentials with its agent_id).
type caller struct {
	client *Client
	agent  *agents.Agent
}

func (c caller) id() string {
	if c.client != nil {
		return c.client.ID
	}
	return c.agent.ID
}

// authenticateCaller checks client authentication; with allowAgents, an
// agent's own credentials are accepted where no client has that id.
func (s *Server) authenticateCaller(ctx context.Context, w http.ResponseWriter, r *http.Request, params url.Values, allowAgents bool) (caller, error) {
	creds, err := readClientCredentials(r, params)
	if err != nil {
		return caller{}, err
	}
	fail := func() error {
		if creds.basic {
			return basicFailure("client authentication failed")
		}
		return ErrInvalidClient("client authentication failed")
	}
	c, err := s.clients.Get(ctx, creds.id)
	switch {
	case err == nil && c.Public:
		if creds.secret != "" || creds.basic {
			return caller{}, fail()
		}
		return caller{client: c}, nil
	case err == nil:
		if !c.VerifySecret(creds.secret) {
			return caller{}, fail()
		}
		return caller{client: c}, nil
	case !errors.Is(err, ErrNotFound):
		return caller{}, err
	}
	if allowAgents && creds.secret != "" {
		try, err := s.limits.chargeAttempt(ctx, w, ClientIP(r), creds.id, s.now())
		if err != nil {
			return caller{}, err
		}
		a, err := s.agents.Authenticate(ctx, creds.id, creds.secret)
		if errors.Is(err, agents.ErrInvalidCredentials) {
			return caller{}, fail()
		}
		if err != nil {
			return caller{}, registryError(err)
		}
		try.succeeded(ctx)
		return caller{agent: a}, nil
	}
	return caller{}, fail()
}

// tokenResponse is RFC 6749 §5.1 (plus RFC 8693's issued_token_type).
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
	RefreshToken    string `json:"refresh_token,omitempty"`
	IDToken         string `json:"id_token,omitempty"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
}

// handleToken is POST /oauth2/token.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) error {
	params, err := readParams(w, r, s.cfg.MaxBody)
	if err != nil {
		return err
	}
	grant := params.Get("grant_type")
	if grant == "" {
		return ErrInvalidRequest("grant_type is required")
	}
	switch grant {
	case GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials, GrantTokenExchange:
	default:
		return newError("unsupported_grant_type", 400, "unsupported grant_type "+strconvQuote(grant))
	}
	c, err := s.authenticateCaller(r.Context(), w, r, params, grant == GrantClientCredentials)
	if err != nil {
		return err
	}
	if grant == GrantRefreshToken {
		// Checked now, charged only for a refresh that succeeds: junk
		// refresh tokens cannot spend a public client's budget.
		if err := s.limits.peek(r.Context(), w, s.limits.Refresh, "refresh", "client:"+c.id(), s.limits.AuthFailOpen, s.now()); err != nil {
			return err
		}
	}
	if c.client != nil && !c.client.AllowsGrant(grant) {
		return newError("unauthorized_client", 400, "this client may not use the "+grant+" grant")
	}
	var resp *tokenResponse
	switch grant {
	case GrantAuthorizationCode:
		resp, err = s.grantAuthorizationCode(r.Context(), c.client, params)
	case GrantRefreshToken:
		resp, err = s.grantRefreshToken(r.Context(), c.client, params)
		if err == nil {
			err = s.limits.take(r.Context(), w, s.limits.Refresh, "refresh", "client:"+c.id(), true, s.now())
		}
	case GrantClientCredentials:
		resp, err = s.grantClientCredentials(c, params)
	case GrantTokenExchange:
		resp, err = s.grantTokenExchange(r.Context(), c.client, params)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
	return nil
}

var errCodeReplay = ErrInvalidGrant("the authorization code was already used; the tokens it issued are revoked")

// grantAuthorizationCode redeems a code once; a second redemption revokes
// what the first one issued.
func (s *Server) grantAuthorizationCode(ctx context.Context, client *Client, params url.Values) (*tokenResponse, error) {
	code, redirectURI, verifier := params.Get("code"), params.Get("redirect_uri"), params.Get("code_verifier")
	if code == "" || len(code) > 256 {
		return nil, ErrInvalidRequest("code is required")
	}
	if verifier == "" {
		return nil, ErrInvalidRequest("code_verifier is required (PKCE)")
	}
	key := tokenHash(code)
	var g codeGrant
	replay := false
	err := s.store.UpdateRecord(ctx, kindCode, key, func(raw []byte) ([]byte, error) {
		if err := json.Unmarshal(raw, &g); err != nil {
			return nil, err
		}
		switch {
		case g.ClientID != client.ID:
			return nil, ErrInvalidGrant("the code was issued to another client")
		case g.Used:
			replay = true
			g.Replayed = true
			return json.Marshal(g)
		case g.RedirectURI != redirectURI:
			return nil, ErrInvalidGrant("redirect_uri does not match the authorization request")
		case !verifyPKCE(verifier, g.CodeChallenge):
			return nil, ErrInvalidGrant("code_verifier does not match the code_challenge")
		}
		g.Used = true
		return json.Marshal(g)
	})
	if errors.Is(err, ErrNotFound) {
		return nil, ErrInvalidGrant("the code is invalid or expired")
	}
	if err != nil {
		return nil, err
	}
	if replay {
		s.log.Warn("authorization code replayed; revoking what it issued", zap.String("client_id", client.ID))
		if g.IssuedJTI != "" {
			if err := s.revokeAccess(ctx, g.IssuedJTI, g.IssuedExp); err != nil {
				return nil, err
			}
		}
		if g.Family != "" {
			if err := s.revokeFamily(ctx, g.Family); err != nil {
				return nil, err
			}
		}
		return nil, errCodeReplay
	}

	a, err := s.activeAgent(ctx, g.AgentID, g.AuthTime)
	if err != nil {
		return nil, err
	}
	resp, issued, err := s.issue(ctx, issueRequest{
		client: client, agent: a, scopes: g.Scopes, resource: g.Resource, model: g.ModelName,
		authTime: time.Unix(g.AuthTime, 0), nonce: g.Nonce, refresh: client.AllowsGrant(GrantRefreshToken),
	})
	if err != nil {
		return nil, err
	}
	// Record what was issued, so a replay can revoke it; a replay that came
	// in meanwhile revokes it now.
	replayed := false
	err = s.store.UpdateRecord(ctx, kindCode, key, func(raw []byte) ([]byte, error) {
		var cur codeGrant
		if err := json.Unmarshal(raw, &cur); err != nil {
			return nil, err
		}
		replayed = cur.Replayed
		cur.IssuedJTI, cur.IssuedExp, cur.Family = issued.jti, issued.exp, issued.family
		return json.Marshal(cur)
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if replayed {
		_ = s.revokeAccess(ctx, issued.jti, issued.exp)
		if issued.family != "" {
			_ = s.revokeFamily(ctx, issued.family)
		}
		return nil, errCodeReplay
	}
	return resp, nil
}

// activeAgent loads an agent that may still get tokens from a grant made
// at time since.
func (s *Server) activeAgent(ctx context.Context, id string, since int64) (*agents.Agent, error) {
	a, err := s.currentAgent(ctx, id, since)
	if errors.Is(err, errAgentGone) {
		return nil, ErrInvalidGrant("the agent no longer exists or is disabled")
	}
	return a, err
}

// issueRequest is everything a set of tokens is issued from.
type issueRequest struct {
	client   *Client
	agent    *agents.Agent
	scopes   []string
	resource string
	model    string
	authTime time.Time
	nonce    string
	refresh  bool   // issue a refresh token
	family   string // continue this lineage instead of starting one
	// familyEnds is when the continued lineage ends.
	familyEnds time.Time
}

type issuedIDs struct {
	jti    string
	exp    int64
	family string
}

// issue signs the access token, and the refresh and ID tokens the request
// calls for.
func (s *Server) issue(ctx context.Context, q issueRequest) (*tokenResponse, issuedIDs, error) {
	var aud []string
	if q.resource != "" {
		aud = []string{q.resource}
	}
	model := q.model
	if model == "" {
		model = q.agent.ModelName
	}
	if q.refresh && q.family == "" {
		q.family, q.familyEnds = randomToken(16), s.now().Add(s.cfg.RefreshTokenLifetime)
	}
	at, err := s.tokens.IssueAccessToken(AccessGrant{
		Subject: q.agent.ID, ClientID: q.client.ID, Scopes: q.scopes, Audience: aud, ModelName: model, AuthTime: q.authTime,
		JTIPrefix: q.family,
	})
	if err != nil {
		return nil, issuedIDs{}, err
	}
	ids := issuedIDs{jti: at.ID, exp: at.ExpiresAt.Unix(), family: q.family}
	resp := &tokenResponse{AccessToken: at.Token, TokenType: "Bearer", ExpiresIn: at.ExpiresIn, Scope: at.Scope}
	if ttl := q.familyEnds.Sub(s.now()); q.refresh && ttl > 0 {
		rt := randomToken(32)
		raw, err := json.Marshal(refreshGrant{
			Family: q.family, ClientID: q.client.ID, AgentID: q.agent.ID, Scopes: q.scopes, Resource: q.resource,
			ModelName: q.model, AuthTime: q.authTime.Unix(), ExpiresAt: q.familyEnds,
		})
		if err != nil {
			return nil, issuedIDs{}, err
		}
		if err := s.store.PutRecord(ctx, kindRefresh, tokenHash(rt), raw, ttl); err != nil {
			return nil, issuedIDs{}, err
		}
		resp.RefreshToken = rt
	}
	if slices.Contains(q.scopes, ScopeOpenID) {
		idt, err := s.tokens.IssueIDToken(IDGrant{
			Subject: q.agent.ID, ClientID: q.client.ID, Nonce: q.nonce, AuthTime: q.authTime,
			AccessToken: at.Token, Claims: identityClaims(q.agent, q.scopes),
		})
		if err != nil {
			return nil, issuedIDs{}, err
		}
		resp.IDToken = idt
	}
	return resp, ids, nil
}

// identityClaims are the claims the granted scopes release (SPEC §5).
func identityClaims(a *agents.Agent, scopes []string) map[string]any {
	c := map[string]any{"sub": a.ID}
	if slices.Contains(scopes, ScopeProfile) {
		c["name"] = a.OwnerName
		c["agent_id"] = a.ID
		c["model_name"] = a.ModelName
	}
	if slices.Contains(scopes, ScopeEmail) {
		c["email"] = a.OwnerEmail
		// Nobody proved the owner reads this mailbox.
		c["email_verified"] = false
	}
	if slices.Contains(scopes, ScopePermissions) {
		perms := a.Permissions
		if perms == nil {
			perms = []string{}
		}
		c["permissions"] = perms
	}
	return c
}

// narrowScope applies a requested scope to what was granted: a subset, or
// everything when nothing is requested.
func narrowScope(requested string, granted []string) ([]string, error) {
	req, err := ParseScope(requested)
	if err != nil {
		return nil, err
	}
	if len(req) == 0 {
		return granted, nil
	}
	for _, sc := range req {
		if !slices.Contains(granted, sc) {
			return nil, ErrInvalidScope("scope " + sc + " was not granted; a scope can be narrowed, never widened")
		}
	}
	return req, nil
}

var errRefreshReuse = ErrInvalidGrant("the refresh token was already used; its whole family is revoked")

// grantRefreshToken rotates a refresh token; presenting a rotated one
// revokes the family.
func (s *Server) grantRefreshToken(ctx context.Context, client *Client, params url.Values) (*tokenResponse, error) {
	rt := params.Get("refresh_token")
	if rt == "" || len(rt) > 256 {
		return nil, ErrInvalidRequest("refresh_token is required")
	}
	key := tokenHash(rt)
	raw, err := s.store.GetRecord(ctx, kindRefresh, key)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrInvalidGrant("the refresh token is invalid or expired")
	}
	if err != nil {
		return nil, err
	}
	var g refreshGrant
	if err := json.Unmarshal(raw, &g); err != nil {
		return nil, err
	}
	if g.ClientID != client.ID {
		return nil, ErrInvalidGrant("the refresh token was issued to another client")
	}
	scopes, err := narrowScope(params.Get("scope"), g.Scopes)
	if err != nil {
		return nil, err
	}
	reuse := false
	err = s.store.UpdateRecord(ctx, kindRefresh, key, func(raw []byte) ([]byte, error) {
		var cur refreshGrant
		if err := json.Unmarshal(raw, &cur); err != nil {
			return nil, err
		}
		if cur.Rotated {
			reuse = true
			return raw, nil
		}
		cur.Rotated = true
		return json.Marshal(cur)
	})
	if errors.Is(err, ErrNotFound) {
		return nil, ErrInvalidGrant("the refresh token is invalid or expired")
	}
	if err != nil {
		return nil, err
	}
	if reuse {
		s.log.Warn("rotated refresh token presented again; revoking its family", zap.String("client_id", client.ID))
		if err := s.revokeFamily(ctx, g.Family); err != nil {
			return nil, err
		}
		return nil, errRefreshReuse
	}
	if s.revocations.FamilyRevoked(g.Family) {
		return nil, ErrInvalidGrant("the refresh token was revoked")
	}
	a, err := s.activeAgent(ctx, g.AgentID, g.AuthTime)
	if err != nil {
		return nil, err
	}
	// Permissions taken away since the grant are not renewed.
	scopes = slices.DeleteFunc(slices.Clone(scopes), func(sc string) bool {
		return !slices.Contains(IdentityScopes, sc) && !slices.Contains(a.Permissions, sc)
	})
	resp, _, err := s.issue(ctx, issueRequest{
		client: client, agent: a, scopes: scopes, resource: g.Resource, model: g.ModelName,
		authTime: time.Unix(g.AuthTime, 0), refresh: true, family: g.Family, familyEnds: g.ExpiresAt,
	})
	return resp, err
}

// grantClientCredentials issues a token to the caller itself: a confidential
// client (for its API scopes) or an agent (as /api/agent-auth does).
func (s *Server) grantClientCredentials(c caller, params url.Values) (*tokenResponse, error) {
	resource, err := ParseResource(params.Get("resource"))
	if err != nil {
		return nil, err
	}
	var aud []string
	if resource != "" {
		aud = []string{resource}
	}
	g := AccessGrant{Subject: c.id(), ClientID: c.id(), Audience: aud, AuthTime: s.now()}
	if c.agent != nil {
		if g.Scopes, err = AgentSelfScopes(params.Get("scope"), c.agent); err != nil {
			return nil, err
		}
		g.ModelName = c.agent.ModelName
	} else {
		if c.client.Public {
			return nil, newError("unauthorized_client", 400, "public clients cannot use client_credentials")
		}
		api := slices.DeleteFunc(slices.Clone(c.client.Scopes), func(sc string) bool { return slices.Contains(IdentityScopes, sc) })
		if g.Scopes, err = narrowScope(params.Get("scope"), api); err != nil {
			return nil, err
		}
	}
	at, err := s.tokens.IssueAccessToken(g)
	if err != nil {
		return nil, err
	}
	return &tokenResponse{AccessToken: at.Token, TokenType: "Bearer", ExpiresIn: at.ExpiresIn, Scope: at.Scope}, nil
}

// grantTokenExchange (RFC 8693) trades an access token issued here for one
// with a narrower scope and/or another audience, naming the requesting
// client in act.
func (s *Server) grantTokenExchange(ctx context.Context, client *Client, params url.Values) (*tokenResponse, error) {
	subject, typ := params.Get("subject_token"), params.Get("subject_token_type")
	if subject == "" || typ == "" {
		return nil, ErrInvalidRequest("subject_token and subject_token_type are required")
	}
	if typ != TokenTypeAccessToken {
		return nil, ErrInvalidRequest("subject_token_type must be " + TokenTypeAccessToken)
	}
	if params.Get("actor_token") != "" {
		return nil, ErrInvalidRequest("actor_token is not supported; the authenticated client is the actor")
	}
	if rt := params.Get("requested_token_type"); rt != "" && rt != TokenTypeAccessToken {
		return nil, ErrInvalidRequest("only access tokens can be requested")
	}
	claims, err := s.tokens.VerifyAccessToken(subject, "")
	if err != nil {
		return nil, ErrInvalidGrant("subject_token is invalid or expired")
	}
	if strings.Count(claims.ID, ".") >= maxExchangeDepth {
		return nil, ErrInvalidGrant("subject_token was exchanged too many times already")
	}
	// Only a token issued to this client, or meant for it (its audience),
	// may be exchanged by it: possession alone is not enough.
	if claims.ClientID != client.ID && !slices.Contains(claims.Audience, client.ID) {
		return nil, ErrInvalidGrant("subject_token was neither issued to nor meant for this client")
	}
	if s.revocations.Revoked(claims) {
		return nil, ErrInvalidGrant("subject_token was revoked")
	}
	a, err := s.activeAgent(ctx, claims.Subject, claims.IssuedAt.Unix())
	if err != nil {
		return nil, err
	}
	scopes, err := narrowScope(params.Get("scope"), claims.Scopes())
	if err != nil {
		return nil, err
	}
	for _, sc := range scopes {
		if !slices.Contains(client.Scopes, sc) {
			return nil, ErrInvalidScope("this client may not hold scope " + sc)
		}
		if !slices.Contains(IdentityScopes, sc) && !slices.Contains(a.Permissions, sc) {
			return nil, ErrInvalidScope("the agent no longer has permission " + sc)
		}
	}
	var aud []string
	if r := params.Get("resource"); r != "" {
		res, err := ParseResource(r)
		if err != nil {
			return nil, err
		}
		aud = append(aud, res)
	}
	if au := params.Get("audience"); au != "" {
		if len(au) > 2048 {
			return nil, newError("invalid_target", 400, "audience is too long")
		}
		aud = append(aud, au)
	}
	if len(aud) == 0 {
		aud = claims.Audience
	}
	var authTime time.Time
	if claims.AuthTime != 0 {
		authTime = time.Unix(claims.AuthTime, 0)
	}
	at, err := s.tokens.IssueAccessToken(AccessGrant{
		Subject: claims.Subject, ClientID: client.ID, Scopes: scopes, Audience: aud, ModelName: a.ModelName,
		AuthTime: authTime, Actor: &Actor{Subject: client.ID, Act: claims.Act}, NotAfter: claims.ExpiresAt.Time,
		JTIPrefix: claims.ID,
	})
	if err != nil {
		return nil, err
	}
	return &tokenResponse{AccessToken: at.Token, TokenType: "Bearer", ExpiresIn: at.ExpiresIn, Scope: at.Scope, IssuedTokenType: TokenTypeAccessToken}, nil
}
