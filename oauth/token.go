package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/internal/metrics"
)

// maxExchangeDepth bounds chains of exchanges (each adds a jti segment).
const maxExchangeDepth = 8

// Token types of RFC 8693.
const (
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
)

// tokenEndpoint serves POST /oauth2/token and its grants.
type tokenEndpoint struct{ *provider }

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
func (p *provider) authenticateCaller(ctx context.Context, w http.ResponseWriter, r *http.Request, params url.Values, allowAgents bool) (caller, error) {
	creds, err := readClientCredentials(r, params)
	if err != nil {
		return caller{}, err
	}
	if creds.assertion != "" {
		return p.authenticateAssertion(ctx, w, r, creds, allowAgents)
	}
	fail := func() error {
		if creds.basic {
			return basicFailure("client authentication failed")
		}
		return ErrInvalidClient("client authentication failed")
	}
	method := authClientSecretPost
	if creds.basic {
		method = authClientSecretBasic
	}
	c, err := p.clients.Get(ctx, creds.id)
	switch {
	case err == nil && c.Public:
		if creds.secret != "" || creds.basic {
			p.clientAuthFailed(r, creds.id, failSecretNotAllowed)
			return caller{}, fail()
		}
		p.authSucceeded(r, authNone, nil)
		return caller{client: c}, nil
	case err == nil:
		if !c.VerifySecret(creds.secret) {
			p.clientAuthFailed(r, creds.id, failWrongSecret)
			return caller{}, fail()
		}
		p.authSucceeded(r, method, nil)
		return caller{client: c}, nil
	case !errors.Is(err, ErrNotFound):
		return caller{}, err
	}
	if allowAgents && creds.secret != "" {
		try, err := p.chargeAttempt(w, r, creds.id)
		if err != nil {
			return caller{}, err
		}
		a, err := p.agents.Authenticate(ctx, creds.id, creds.secret)
		if errors.Is(err, agents.ErrInvalidCredentials) {
			p.agentAuthFailed(r, creds.id)
			return caller{}, fail()
		}
		if err != nil {
			return caller{}, registryError(err)
		}
		try.Succeeded(ctx)
		p.authSucceeded(r, method, a)
		return caller{agent: a}, nil
	}
	p.clientAuthFailed(r, creds.id, failUnknownClient)
	return caller{}, fail()
}

// authenticateAssertion checks a private_key_jwt assertion: of a client
// with keys, or, with allowAgents, of an agent with keys where no client
// has that id. Every failure is the same invalid_client.
func (p *provider) authenticateAssertion(ctx context.Context, w http.ResponseWriter, r *http.Request, creds clientCredentials, allowAgents bool) (caller, error) {
	failed := ErrInvalidClient("client authentication failed")
	c, err := p.clients.Get(ctx, creds.id)
	switch {
	case err == nil:
		keys, kerr := p.clientKeys(ctx, c, creds.assertion)
		if kerr != nil || keys == nil {
			p.clientAuthFailed(r, creds.id, failBadAssertion)
			return caller{}, failed
		}
		if err := p.checkAssertion(ctx, creds, keys, r.URL.Path); err != nil {
			if AsError(err).Status >= 500 {
				return caller{}, err
			}
			p.clientAuthFailed(r, creds.id, failBadAssertion)
			return caller{}, failed
		}
		p.authSucceeded(r, authPrivateKeyJWT, nil)
		return caller{client: c}, nil
	case !errors.Is(err, ErrNotFound):
		return caller{}, err
	case !allowAgents:
		p.clientAuthFailed(r, creds.id, failUnknownClient)
		return caller{}, failed
	}
	a, err := p.authenticateAgentAssertion(ctx, w, r, creds, nil)
	if err != nil {
		return caller{}, err
	}
	return caller{agent: a}, nil
}

// clientKeys are the keys that verify c's assertion: registered, or
// fetched from its jwks_uri (again when the assertion's kid is new).
func (p *provider) clientKeys(ctx context.Context, c *Client, assertion string) (ClientKeys, error) {
	if c.JWKSURI == "" {
		if c.JWKS == "" {
			return nil, nil
		}
		return p.keySet(c.JWKS)
	}
	return p.remoteKeys.Keys(ctx, c.JWKSURI, c.Verified(), assertionKid(assertion))
}

// authenticateAgentAssertion checks an agent's assertion: charged to the
// failed-authentication budgets like a secret, and an unknown, disabled or
// secret-holding agent fails like a bad signature. audiences are the aud
// values accepted (nil: those of checkAssertion).
func (p *provider) authenticateAgentAssertion(ctx context.Context, w http.ResponseWriter, r *http.Request, creds clientCredentials, audiences []string) (*agents.Agent, error) {
	try, err := p.chargeAttempt(w, r, creds.id)
	if err != nil {
		return nil, err
	}
	a, err := p.agents.Get(ctx, creds.id)
	if err != nil && !errors.Is(err, agents.ErrNotFound) {
		return nil, registryError(err)
	}
	var keys ClientKeys
	if err == nil && !a.Disabled && a.JWKS != "" {
		keys, _ = p.keySet(a.JWKS)
	}
	if keys == nil {
		p.agentAuthFailed(r, creds.id)
		return nil, ErrInvalidClient("client authentication failed")
	}
	check := func() error { return p.checkAssertion(ctx, creds, keys, r.URL.Path) }
	if audiences != nil {
		check = func() error { return p.checkAssertionFor(ctx, creds, keys, audiences) }
	}
	if err := check(); err != nil {
		if AsError(err).Status >= 500 {
			return nil, err
		}
		p.agentAuthFailed(r, creds.id)
		return nil, ErrInvalidClient("client authentication failed")
	}
	try.Succeeded(ctx)
	p.authSucceeded(r, authPrivateKeyJWT, a)
	return a, nil
}

// checkAssertion verifies creds' assertion against keys and records its
// jti in the store until it expires, so no process accepts it twice. Its
// aud must name the issuer, the token endpoint (RFC 7523 clients send
// that everywhere) or the endpoint it is sent to.
func (p *provider) checkAssertion(ctx context.Context, creds clientCredentials, keys ClientKeys, path string) error {
	return p.checkAssertionFor(ctx, creds, keys, []string{p.cfg.Issuer, p.cfg.Issuer + "/oauth2/token", p.cfg.Issuer + path})
}

// checkAssertionFor is checkAssertion with the audiences accepted.
func (p *provider) checkAssertionFor(ctx context.Context, creds clientCredentials, keys ClientKeys, audiences []string) error {
	a, err := verifyAssertion(creds.assertion, creds.id, keys, audiences, p.now())
	if err != nil {
		return ErrInvalidClient(err.Error())
	}
	switch err := p.store.UseOnce(ctx, a.replayKey(), a.exp.Add(assertionSkew)); {
	case errors.Is(err, ErrExists):
		return ErrInvalidClient("client_assertion was used before")
	case err != nil:
		return err
	}
	return nil
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
func (s *tokenEndpoint) handleToken(w http.ResponseWriter, r *http.Request) error {
	params, err := readParams(w, r, s.cfg.MaxBody)
	if err != nil {
		return err
	}
	grant := params.Get("grant_type")
	if grant == "" {
		return ErrInvalidRequest("grant_type is required")
	}
	switch grant {
	case GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials, GrantTokenExchange, GrantJWTBearer:
	default:
		return ErrUnsupportedGrantType("unsupported grant_type " + strconvQuote(grant))
	}
	// The proof first: a client asked for a nonce retries before its
	// credentials (an assertion is good once) are spent.
	proof, err := s.checkProof(w, r, TokenPath)
	if err != nil {
		return err
	}
	// Agents act as their own clients for the grants about themselves.
	c, err := s.authenticateCaller(r.Context(), w, r, params, grant == GrantClientCredentials || grant == GrantTokenExchange)
	if err != nil {
		return err
	}
	// A trusted IdP's grants and the ID-JAGs issued here go to the
	// clients their policies list; the others, to those the grant types
	// allow.
	idJAG := grant == GrantJWTBearer || grant == GrantTokenExchange && params.Get("requested_token_type") == TokenTypeIDJAG
	if c.client != nil && !idJAG && !c.client.AllowsGrant(grant) {
		return ErrUnauthorizedClient("this client may not use the " + grant + " grant")
	}
	if err := s.requireDPoP(proof, c); err != nil {
		return err
	}
	if err := s.spendProof(r.Context(), proof); err != nil {
		return err
	}
	var resp *tokenResponse
	switch grant {
	case GrantAuthorizationCode:
		resp, err = s.grantAuthorizationCode(r.Context(), c.client, params, proof)
	case GrantRefreshToken:
		resp, err = s.grantRefreshToken(r.Context(), w, c.client, params, proof)
	case GrantClientCredentials:
		resp, err = s.grantClientCredentials(r.Context(), c, params, proof)
	case GrantTokenExchange:
		if idJAG {
			resp, err = s.grantIDJAG(r.Context(), c, params)
		} else {
			resp, err = s.grantTokenExchange(r.Context(), c, params, proof)
		}
	case GrantJWTBearer:
		resp, err = s.grantJWTBearer(r.Context(), c.client, params, proof)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Pragma", "no-cache")
	WriteJSON(w, http.StatusOK, resp)
	return nil
}

var errCodeReplay = ErrInvalidGrant("the authorization code was already used; the tokens it issued are revoked")

// grantAuthorizationCode redeems a code once. The ids of what it will issue
// are chosen first and recorded by the redemption itself, so a second
// redemption, whenever it comes, finds them and revokes them.
func (s *tokenEndpoint) grantAuthorizationCode(ctx context.Context, client *Client, params url.Values, proof *DPoPProof) (*tokenResponse, error) {
	q := codeRedemption{clientID: client.ID, redirectURI: params.Get("redirect_uri"), verifier: params.Get("code_verifier")}
	code := params.Get("code")
	if code == "" || len(code) > 256 {
		return nil, ErrInvalidRequest("code is required")
	}
	if q.verifier == "" {
		return nil, ErrInvalidRequest("code_verifier is required (PKCE)")
	}
	refresh := client.AllowsGrant(GrantRefreshToken)
	var family string
	if refresh {
		family = randomToken(16)
	}
	plan := AccessGrant{JTIPrefix: family}
	plan.ID = NewTokenID(family)
	exp := s.tokens.ExpiryOf(plan)
	var audience []string
	g, err := s.store.RedeemCode(ctx, tokenHash(code), func(g *CodeGrant) (Redemption, error) {
		if err := decideRedemption(g, q, s.now()); err != nil {
			return Redemption{}, err
		}
		if err := checkCodeBinding(g, proof); err != nil {
			return Redemption{}, err
		}
		// A resource never authorized fails before the code is spent.
		aud, err := narrowResources(params["resource"], g.Resources)
		if err != nil {
			return Redemption{}, err
		}
		audience = aud
		return Redemption{AccessTokenID: plan.ID, AccessTokenExpires: exp, Family: family}, nil
	})
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, ErrInvalidGrant("the code is invalid or expired")
	case errors.Is(err, ErrCodeUsed):
		if g.ClientID != client.ID {
			return nil, ErrInvalidGrant("the code was issued to another client")
		}
		s.log.Warn("authorization code replayed; revoking what it issued", zap.String("client_id", client.ID))
		if err := s.revokeRedemption(ctx, g.Redemption); err != nil {
			return nil, err
		}
		return nil, errCodeReplay
	case err != nil:
		return nil, err
	}
	a, err := s.activeAgent(ctx, g.AgentID, g.AuthTime)
	if err != nil {
		return nil, err
	}
	// The agent's permissions now, not when it approved: one an operator
	// took away meanwhile is not granted (as a refresh does).
	scopes := heldScopes(g.Scopes, a)
	issuing := issueRequest{
		client: client, agent: a, scopes: scopes, resources: g.Resources, audience: audience, model: g.ModelName,
		authTime: g.AuthTime, nonce: g.Nonce, refresh: refresh, jti: plan.ID, notAfter: exp, family: family,
		familyEnds: s.now().Add(s.cfg.RefreshTokenLifetime), jkt: proof.jkt(),
	}
	if client.Public {
		// A public client has no credentials: its refresh tokens are as
		// good as its key (RFC 9449 §5).
		issuing.refreshJKT = proof.jkt()
	}
	resp, err := s.issue(ctx, issuing)
	if err != nil {
		return nil, err
	}
	metrics.SignIn(signinRedeemed)
	return resp, nil
}

// checkCodeBinding checks the proof of a code's redemption against the
// dpop_jkt it was requested with (RFC 9449 §10).
func checkCodeBinding(g *CodeGrant, proof *DPoPProof) error {
	switch {
	case g.DPoPJKT == "":
		return nil
	case proof == nil:
		return ErrInvalidDPoPProof("the code is bound to a DPoP key (dpop_jkt): send a DPoP proof by that key")
	case proof.JKT != g.DPoPJKT:
		return ErrInvalidGrant("the code is bound to another DPoP key (dpop_jkt)")
	}
	return nil
}

// revokeRedemption revokes what a code's redemption issued.
func (s *tokenEndpoint) revokeRedemption(ctx context.Context, red *Redemption) error {
	if red == nil {
		return nil
	}
	if red.AccessTokenID != "" {
		if err := s.revokeToken(ctx, red.AccessTokenID, red.AccessTokenExpires); err != nil {
			return err
		}
	}
	if red.Family != "" {
		return s.revokeFamily(ctx, red.Family)
	}
	return nil
}

// issueRequest is everything a set of tokens is issued from.
type issueRequest struct {
	client *Client
	agent  *agents.Agent
	scopes []string
	// resources are those authorized, which the refresh token keeps;
	// audience is what this access token is meant for (some of them).
	resources []string
	audience  []string
	model     string
	authTime  time.Time
	nonce     string
	refresh   bool   // issue a refresh token
	jti       string // the access token's id, when chosen in advance
	// notAfter caps the access token's expiry: the one recorded with its
	// jti in advance, which a revocation of that jti must outlive.
	notAfter time.Time
	family   string // the lineage the tokens belong to
	// familyEnds is when the lineage ends.
	familyEnds time.Time
	// rotate is the hash of the refresh token this one replaces.
	rotate string
	// retryOf, in a retry of rotate within the reuse grace, is the hash
	// of rotate's successor, which this one replaces (and voids).
	retryOf string
	// jkt binds the access token to a DPoP key, refreshJKT the refresh
	// token (a public client's).
	jkt, refreshJKT string
}

// issue signs the access token, stores the refresh token and signs the ID
// token the request calls for.
func (s *tokenEndpoint) issue(ctx context.Context, q issueRequest) (*tokenResponse, error) {
	model := q.model
	if model == "" {
		model = q.agent.ModelName
	}
	audience := q.audience
	if len(audience) > 0 && slices.Contains(q.scopes, ScopeOpenID) && !slices.Contains(audience, s.cfg.Issuer) {
		// Userinfo takes only tokens meant for the issuer: one granted
		// openid names it beside its resources.
		audience = append(slices.Clip(audience), s.cfg.Issuer)
	}
	at, err := s.tokens.IssueAccessToken(AccessGrant{
		Subject: q.agent.ID, ClientID: q.client.ID, Scopes: q.scopes, Audience: audience, ModelName: model, AuthTime: q.authTime,
		JTIPrefix: q.family, ID: q.jti, NotAfter: q.notAfter, JKT: q.jkt,
	})
	if err != nil {
		return nil, err
	}
	resp := &tokenResponse{AccessToken: at.Token, TokenType: at.Type, ExpiresIn: at.ExpiresIn, Scope: at.Scope}
	if q.refresh && q.familyEnds.After(s.now()) {
		rt := randomToken(32)
		g := &RefreshGrant{
			Family: q.family, ClientID: q.client.ID, AgentID: q.agent.ID, Scopes: q.scopes, Resources: q.resources,
			ModelName: q.model, AuthTime: q.authTime, ExpiresAt: q.familyEnds, DPoPJKT: q.refreshJKT,
		}
		switch {
		case q.retryOf != "":
			err = s.store.RetryRefresh(ctx, q.rotate, q.retryOf, tokenHash(rt), g, s.cfg.RefreshReuseGrace)
		case q.rotate != "":
			err = s.store.RotateRefresh(ctx, q.rotate, tokenHash(rt), g)
		default:
			err = s.store.CreateRefresh(ctx, tokenHash(rt), g)
		}
		if err != nil {
			return nil, err
		}
		resp.RefreshToken = rt
	}
	if slices.Contains(q.scopes, ScopeOpenID) {
		idt, err := s.tokens.IssueIDToken(IDGrant{
			Alg: q.client.IDTokenSigningAlg(), Subject: q.agent.ID, ClientID: q.client.ID, Nonce: q.nonce, AuthTime: q.authTime,
			AccessToken: at.Token, Claims: identityClaims(q.agent, q.scopes),
		})
		if err != nil {
			return nil, err
		}
		resp.IDToken = idt
	}
	typ, grant := events.TokenIssued, GrantAuthorizationCode
	if q.rotate != "" {
		typ, grant = events.TokenRefreshed, GrantRefreshToken
	}
	s.issued(ctx, typ, grant, caller{client: q.client}, at, q.agent.ID)
	return resp, nil
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

var (
	errRefreshReuse = ErrInvalidGrant("the refresh token was already used; its whole family is revoked")
	errRefreshRaced = ErrInvalidGrant("the refresh token was refreshed again at the same time; use the refresh token of the other answer")
)

// grantRefreshToken rotates a refresh token: the old one is marked rotated
// and its successor stored in one compare-and-swap, so of two concurrent
// uses exactly one succeeds, and presenting a rotated one revokes the
// family — unless it comes within refresh_reuse_grace of the rotation and
// the successor was never used: then it is the client retrying after it
// lost the answer, and a fresh successor replaces the first (mayRetry,
// RefreshStore.RetryRefresh).
func (s *tokenEndpoint) grantRefreshToken(ctx context.Context, w http.ResponseWriter, client *Client, params url.Values, proof *DPoPProof) (*tokenResponse, error) {
	rt := params.Get("refresh_token")
	if rt == "" || len(rt) > 256 {
		return nil, ErrInvalidRequest("refresh_token is required")
	}
	hash := tokenHash(rt)
	g, err := s.store.GetRefresh(ctx, hash)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrInvalidGrant("the refresh token is invalid or expired")
	}
	if err != nil {
		return nil, err
	}
	if g.ClientID != client.ID {
		return nil, ErrInvalidGrant("the refresh token was issued to another client")
	}
	// Before the reuse check: a bound token is no use without its key, so
	// presenting a stolen one revokes nothing.
	switch {
	case g.DPoPJKT != "" && proof == nil:
		return nil, ErrInvalidDPoPProof("the refresh token is DPoP-bound: send a DPoP proof by its key")
	case g.DPoPJKT != "" && proof.JKT != g.DPoPJKT:
		return nil, ErrInvalidGrant("the refresh token is bound to another DPoP key")
	}
	if g.Rotated && !s.mayRetry(g) {
		return nil, s.refreshReused(ctx, client, g)
	}
	resp, err := s.rotateRefresh(ctx, w, client, params, proof, hash, g)
	if errors.Is(err, ErrRefreshRotated) && !g.Rotated && s.cfg.RefreshReuseGrace > 0 {
		// Rotated by another request since it was read: the first try of
		// a client still waiting for it, perhaps, and this its retry.
		switch again, gerr := s.store.GetRefresh(ctx, hash); {
		case errors.Is(gerr, ErrNotFound):
			return nil, ErrInvalidGrant("the refresh token is invalid or expired")
		case gerr != nil:
			return nil, gerr
		case s.mayRetry(again):
			g = again
			resp, err = s.rotateRefresh(ctx, w, client, params, proof, hash, g)
		}
	}
	switch {
	case errors.Is(err, ErrRefreshRotated):
		return nil, s.refreshReused(ctx, client, g)
	case errors.Is(err, ErrStale):
		// Another retry of this token replaced the successor first.
		return nil, errRefreshRaced
	case errors.Is(err, ErrNotFound):
		return nil, ErrInvalidGrant("the refresh token is invalid or expired")
	case err != nil:
		return nil, err
	}
	if g.Rotated {
		s.log.Info("rotated refresh token presented again within refresh_reuse_grace: answered as a retry, its earlier successor is void",
			zap.String("client_id", client.ID))
	}
	return resp, nil
}

// mayRetry reports whether a rotated token presented again may be a retry:
// its successor is recorded and the grace since the rotation has not
// passed. The store decides again, atomically, and also that the
// successor was never used.
func (s *tokenEndpoint) mayRetry(g *RefreshGrant) bool {
	grace := s.cfg.RefreshReuseGrace
	return g.Rotated && grace > 0 && g.Successor != "" && !g.RotatedAt.IsZero() && s.now().Before(g.RotatedAt.Add(grace))
}

// rotateRefresh issues the tokens of a refresh: the successor of the token
// under hash, or for a rotated one (a retry) a successor in place of its
// first.
func (s *tokenEndpoint) rotateRefresh(ctx context.Context, w http.ResponseWriter, client *Client, params url.Values, proof *DPoPProof, hash string, g *RefreshGrant) (*tokenResponse, error) {
	if s.revocations.FamilyRevoked(g.Family) {
		return nil, ErrInvalidGrant("the refresh token was revoked")
	}
	// The budget is the family's (one sign-in), checked now and charged
	// only once the refresh succeeded: junk or spent tokens cost nothing,
	// and one busy agent never spends another's budget.
	if err := s.limits.PeekRefresh(ctx, w, client.ID, g.AgentID, g.Family); err != nil {
		return nil, err
	}
	a, err := s.activeAgent(ctx, g.AgentID, g.AuthTime)
	if err != nil {
		return nil, err
	}
	scopes, err := decideRefresh(g, client.ID, params.Get("scope"), a, s.now())
	if err != nil {
		return nil, err
	}
	audience, err := narrowResources(params["resource"], g.Resources)
	if err != nil {
		return nil, err
	}
	q := issueRequest{
		client: client, agent: a, scopes: scopes, resources: g.Resources, audience: audience, model: g.ModelName,
		authTime: g.AuthTime, refresh: true, family: g.Family, familyEnds: g.ExpiresAt, rotate: hash,
		jkt: proof.jkt(), refreshJKT: g.DPoPJKT,
	}
	if g.Rotated {
		q.retryOf = g.Successor
	}
	resp, err := s.issue(ctx, q)
	if err == nil {
		_ = s.limits.TakeRefresh(ctx, w, client.ID, g.AgentID, g.Family)
	}
	return resp, err
}

// refreshReused revokes the family of a refresh token presented again.
func (s *tokenEndpoint) refreshReused(ctx context.Context, client *Client, g *RefreshGrant) error {
	s.log.Warn("rotated refresh token presented again; revoking its family", zap.String("client_id", client.ID))
	if err := s.revokeFamily(ctx, g.Family); err != nil {
		return err
	}
	s.events.Publish(ctx, events.RefreshReuseDetected, map[string]any{
		"client_id": client.ID, "agent_id": g.AgentID, "family": g.Family,
	})
	return errRefreshReuse
}

// grantClientCredentials issues a token to the caller itself: a confidential
// client (for its API scopes) or an agent (as /api/agent-auth does).
func (s *tokenEndpoint) grantClientCredentials(ctx context.Context, c caller, params url.Values, proof *DPoPProof) (*tokenResponse, error) {
	aud, err := parseResources(params["resource"])
	if err != nil {
		return nil, err
	}
	g := AccessGrant{Subject: c.id(), ClientID: c.id(), Audience: aud, AuthTime: s.now(), JKT: proof.jkt()}
	if c.agent != nil {
		if g.Scopes, err = AgentSelfScopes(params.Get("scope"), c.agent); err != nil {
			return nil, err
		}
		g.ModelName = c.agent.ModelName
	} else {
		if c.client.Public {
			return nil, ErrUnauthorizedClient("public clients cannot use client_credentials")
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
	s.issued(ctx, events.TokenIssued, GrantClientCredentials, c, at, g.Subject)
	return &tokenResponse{AccessToken: at.Token, TokenType: at.Type, ExpiresIn: at.ExpiresIn, Scope: at.Scope}, nil
}

// grantTokenExchange (RFC 8693) trades an access token issued here for one
// with a narrower scope and/or another audience, naming the requesting
// client (or agent) in act.
func (s *tokenEndpoint) grantTokenExchange(ctx context.Context, c caller, params url.Values, proof *DPoPProof) (*tokenResponse, error) {
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
	q := exchangeRequest{scope: params.Get("scope")}
	res, err := parseResources(params["resource"])
	if err != nil {
		return nil, err
	}
	q.audience = append(q.audience, res...)
	if au := params.Get("audience"); au != "" {
		if len(au) > 2048 {
			return nil, ErrInvalidTarget("audience is too long")
		}
		q.audience = append(q.audience, au)
	}
	claims, err := s.tokens.VerifyAccessToken(ctx, subject, "")
	// Verification allows a little clock skew past exp; an exchanged token
	// never outlives its subject, so one that expired (or has less than a
	// second left) would come out already expired.
	if err != nil || claims.ExpiresAt.Sub(s.now()) < time.Second {
		return nil, ErrInvalidGrant("subject_token is invalid or expired")
	}
	if err := checkExchangeSubject(claims, c.id()); err != nil {
		return nil, err
	}
	if s.revocations.Revoked(claims) {
		return nil, ErrInvalidGrant("subject_token was revoked")
	}
	if claims.IDP != "" {
		return nil, ErrInvalidGrant("subject_token's subject is an identity of " + claims.IDP + ", not an agent of this server")
	}
	// A bound token is exchanged only by its key's holder, for a token
	// bound to that key: no way around the binding.
	switch jkt := claims.BoundKey(); {
	case jkt != "" && proof == nil:
		return nil, ErrInvalidDPoPProof("subject_token is DPoP-bound: send a DPoP proof by its key")
	case jkt != "" && proof.JKT != jkt:
		return nil, ErrInvalidGrant("subject_token is bound to another DPoP key")
	}
	q.subject = claims
	holder, err := s.exchangeSubject(ctx, claims)
	if err != nil {
		return nil, err
	}
	var actor exchangeActor
	if c.client != nil {
		actor = clientActor(c.client)
	} else {
		actor = agentActor(c.agent)
	}
	g, err := decideExchange(q, actor, holder)
	if err != nil {
		return nil, err
	}
	g.JKT = proof.jkt()
	at, err := s.tokens.IssueAccessToken(g)
	if err != nil {
		return nil, err
	}
	s.issued(ctx, events.TokenExchanged, GrantTokenExchange, c, at, g.Subject)
	return &tokenResponse{AccessToken: at.Token, TokenType: at.Type, ExpiresIn: at.ExpiresIn, Scope: at.Scope, IssuedTokenType: TokenTypeAccessToken}, nil
}

// exchangeSubject loads whom a subject token speaks for: a client, for a
// token descending from its client_credentials grant, else an agent,
// which must still be active.
func (s *tokenEndpoint) exchangeSubject(ctx context.Context, claims *AccessClaims) (exchangeSubject, error) {
	c, err := s.subjectClient(ctx, claims)
	if err != nil {
		return exchangeSubject{}, err
	}
	if c != nil {
		return clientSubject(c), nil
	}
	a, err := s.activeAgent(ctx, claims.Subject, claims.IssuedAt.Time)
	if err != nil {
		return exchangeSubject{}, err
	}
	return agentSubject(a), nil
}
