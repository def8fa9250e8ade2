package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/internal/metrics"
)

// Enterprise-managed authorization (draft-ietf-oauth-identity-assertion-
// authz-grant, MCP's Enterprise-Managed Authorization): an enterprise IdP
// decides which authorization servers a user's or agent's client may reach
// by issuing an Identity Assertion JWT Authorization Grant (ID-JAG), which
// the client redeems at that server with the RFC 7523 jwt-bearer grant.
// This server plays both sides: it redeems the ID-JAGs of the IdPs an
// operator trusts (trusted_idp), and it issues ID-JAGs for the agents
// signed in here, to the servers an operator lists (id_jag_audience).

// ID-JAG names.
const (
	GrantJWTBearer   = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	TokenTypeIDJAG   = "urn:ietf:params:oauth:token-type:id-jag"
	TokenTypeIDToken = "urn:ietf:params:oauth:token-type:id_token"
	// IDJAGType is the JWT typ of an ID-JAG.
	IDJAGType = "oauth-id-jag+jwt"
)

// Subjects of a trusted IdP's grants.
const (
	// SubjectAgent: sub names an agent registered here, whose permissions
	// bound the grant.
	SubjectAgent = "agent"
	// SubjectExternal: sub is the IdP's own subject; the token carries
	// idp, and no agent here is consulted.
	SubjectExternal = "external"
)

const (
	// maxGrantLifetime bounds exp - now of a redeemed grant, and is the
	// lifetime of an issued one.
	maxGrantLifetime = 5 * time.Minute
	// idpDiscoveryTTL is how long a trusted IdP's jwks_uri, read from its
	// metadata, is kept; idpDiscoveryFailureTTL how long a failure is.
	idpDiscoveryTTL        = time.Hour
	idpDiscoveryFailureTTL = 10 * time.Second
)

// TrustedIdP is an identity provider whose ID-JAGs this server redeems.
type TrustedIdP struct {
	Issuer string
	// JWKSURI is where its keys are; empty: read from its metadata.
	JWKSURI string
	// Clients are this server's clients that may present its grants.
	Clients []string
	// Scopes are the most its grants may carry.
	Scopes []string
	// Subject is SubjectAgent or SubjectExternal.
	Subject string
	// AllowJWT also takes plain RFC 7523 assertions (typ JWT) whose sub is
	// an agent here: agent platforms signing for their agents.
	AllowJWT bool
	// Source is TrustedIdPFromConfig or TrustedIdPFromAdmin.
	Source    string
	CreatedAt time.Time
}

// Where a trusted IdP was defined.
const (
	TrustedIdPFromConfig = "config"
	TrustedIdPFromAdmin  = "admin"
)

// TrustedIdPSpec is what a trusted IdP is made from (a trusted_idp block
// or the admin API), before validation.
type TrustedIdPSpec struct {
	Issuer  string
	JWKSURI string
	Clients []string
	Scopes  []string
	// Subject is SubjectAgent (also when empty) or SubjectExternal.
	Subject string
	// Grant "jwt" sets AllowJWT; empty sets nothing.
	Grant string
}

// NewTrustedIdP validates spec by the rules of SPEC §14 and builds the
// IdP; errors are invalid_request, their description naming the field.
func NewTrustedIdP(spec TrustedIdPSpec, source string, now time.Time) (*TrustedIdP, error) {
	// The operator listed the IdP: trusted like a webhook URL.
	if err := events.ValidateWebhookURL(spec.Issuer); err != nil {
		return nil, ErrInvalidRequest(fmt.Sprintf("the issuer must be https (http only on loopback): %v", err))
	}
	if spec.JWKSURI != "" {
		if err := CheckJWKSURI(spec.JWKSURI, true); err != nil {
			return nil, ErrInvalidRequest(err.Error())
		}
	}
	if len(spec.Clients) == 0 || slices.Contains(spec.Clients, "") {
		return nil, ErrInvalidRequest("clients must list the clients that may present its grants")
	}
	if len(spec.Scopes) == 0 {
		return nil, ErrInvalidRequest("scopes must list the most its grants may carry")
	}
	if err := agents.ValidatePermissions(spec.Scopes); err != nil {
		return nil, ErrInvalidRequest(fmt.Sprintf("scopes: %v", err))
	}
	if !slices.Contains([]string{"", SubjectAgent, SubjectExternal}, spec.Subject) {
		return nil, ErrInvalidRequest(fmt.Sprintf("subject %q must be agent or external", spec.Subject))
	}
	if spec.Grant != "" && spec.Grant != "jwt" {
		return nil, ErrInvalidRequest(fmt.Sprintf("grant %q: the only grant to add is jwt", spec.Grant))
	}
	subject := spec.Subject
	if subject == "" {
		subject = SubjectAgent
	}
	return &TrustedIdP{
		Issuer: spec.Issuer, JWKSURI: spec.JWKSURI, Clients: slices.Clone(spec.Clients), Scopes: slices.Clone(spec.Scopes),
		Subject: subject, AllowJWT: spec.Grant == "jwt", Source: source, CreatedAt: now,
	}, nil
}

// IDJAGAudience is an authorization server this server issues ID-JAGs
// for.
type IDJAGAudience struct {
	Issuer string
	// Clients are this server's clients that may ask for them.
	Clients []string
	// ClientID is the client at that server the grants name.
	ClientID string
	// Scopes are the most a grant may carry.
	Scopes []string
}

// idJAGClaims are the claims of an ID-JAG (or a plain RFC 7523
// assertion).
type idJAGClaims struct {
	jwt.RegisteredClaims
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
	Resource string `json:"resource"`
	AuthTime int64  `json:"auth_time,omitempty"`
}

// refusedGrant is an assertion refused: the error answered, and the
// issuer and jti for the audit log.
func (p *provider) refusedGrant(ctx context.Context, clientID string, claims *idJAGClaims, err error) error {
	metrics.IDJAG(metrics.IDJAGRefused)
	data := map[string]any{"client_id": clientID, "reason": AsError(err).Description}
	if claims != nil {
		data["issuer"], data["subject"], data["jti"] = claims.Issuer, claims.Subject, claims.ID
	}
	p.events.Publish(ctx, events.IDJAGRefused, data)
	return err
}

// grantJWTBearer redeems an ID-JAG of a trusted IdP (or, where it allows
// them, a plain RFC 7523 assertion) for an access token: every check of
// SPEC §14, no refresh token.
func (s *tokenEndpoint) grantJWTBearer(ctx context.Context, client *Client, params url.Values, proof *DPoPProof) (*tokenResponse, error) {
	raw := params.Get("assertion")
	if raw == "" || len(raw) > maxAssertionBytes {
		return nil, ErrInvalidRequest("assertion is required: the ID-JAG")
	}
	claims, idp, plain, err := s.verifyGrant(ctx, client, raw)
	if e := (*Error)(nil); err != nil && !errors.As(err, &e) {
		return nil, err // the store failed to say whether the issuer is trusted: no refusal
	}
	if err != nil {
		return nil, s.refusedGrant(ctx, client.ID, claims, err)
	}
	g, err := s.decideGrant(ctx, client, idp, claims, plain, params)
	if err != nil {
		return nil, s.refusedGrant(ctx, client.ID, claims, err)
	}
	// The jti last: a grant refused for its scope can be fixed and sent
	// again by nobody but its holder, and counts once when redeemed.
	err = s.store.UseOnce(ctx, grantReplayKey(idp.Issuer, claims.ID), claims.ExpiresAt.Add(assertionSkew))
	if errors.Is(err, ErrExists) {
		return nil, s.refusedGrant(ctx, client.ID, claims, ErrInvalidGrant("the assertion was used before"))
	}
	if err != nil {
		return nil, err
	}
	g.JKT = proof.jkt()
	at, err := s.tokens.IssueAccessToken(g)
	if err != nil {
		return nil, err
	}
	metrics.IDJAG(metrics.IDJAGAccepted)
	s.events.Publish(ctx, events.IDJAGAccepted, map[string]any{
		"issuer": idp.Issuer, "client_id": client.ID, "subject": claims.Subject, "jti": claims.ID, "scope": at.Scope, "access_token_jti": at.ID,
	})
	s.issued(ctx, events.TokenIssued, GrantJWTBearer, caller{client: client}, at, g.Subject)
	return &tokenResponse{AccessToken: at.Token, TokenType: at.Type, ExpiresIn: at.ExpiresIn, Scope: at.Scope}, nil
}

// verifyGrant checks an assertion's issuer, type, signature and times,
// and that it is meant for this server and this client.
func (s *tokenEndpoint) verifyGrant(ctx context.Context, client *Client, raw string) (claims *idJAGClaims, idp *TrustedIdP, plain bool, err error) {
	unverified := new(idJAGClaims)
	tok, _, err := jwt.NewParser().ParseUnverified(raw, unverified)
	if err != nil {
		return nil, nil, false, ErrInvalidGrant("the assertion is not a JWT")
	}
	idp, err = s.trustedIdP(ctx, unverified.Issuer)
	if err != nil {
		return unverified, nil, false, err
	}
	if idp == nil {
		return unverified, nil, false, ErrInvalidGrant("the assertion's issuer is not a trusted IdP of this server")
	}
	typ, _ := tok.Header["typ"].(string)
	plain = !strings.EqualFold(typ, IDJAGType)
	if plain && !(idp.AllowJWT && (typ == "" || strings.EqualFold(typ, "JWT"))) {
		return unverified, nil, false, ErrInvalidGrant("the assertion's typ must be " + IDJAGType)
	}
	keys, err := s.idpKeys(ctx, idp, kidOf(tok))
	if err != nil {
		s.log.Warn("the keys of a trusted IdP cannot be fetched; its grants fail", zap.String("issuer", idp.Issuer), zap.Error(err))
		return unverified, nil, false, ErrInvalidGrant("the trusted IdP's keys cannot be fetched now")
	}
	claims = new(idJAGClaims)
	parser := jwt.NewParser(jwt.WithValidMethods(AssertionAlgs), jwt.WithIssuer(idp.Issuer), jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), jwt.WithLeeway(assertionSkew), jwt.WithTimeFunc(s.now))
	verified := false
	for _, k := range keys.forAssertion(tok.Method.Alg(), kidOf(tok)) {
		if _, err := parser.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return k, nil }); err == nil {
			verified = true
			break
		} else if !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			return unverified, nil, false, ErrInvalidGrant("the assertion is expired or malformed: " + grantFailure(err))
		}
	}
	switch {
	case !verified:
		return unverified, nil, false, ErrInvalidGrant("the assertion is not signed by a key of its issuer")
	case claims.IssuedAt == nil:
		return claims, nil, false, ErrInvalidGrant("the assertion needs an iat")
	case claims.ExpiresAt.Sub(s.now()) > maxGrantLifetime+assertionSkew:
		return claims, nil, false, ErrInvalidGrant("the assertion's exp is more than 5 minutes ahead")
	case claims.Subject == "" || claims.ID == "":
		return claims, nil, false, ErrInvalidGrant("the assertion needs sub and jti")
	case !s.grantAudience(claims.Audience, plain):
		return claims, nil, false, ErrInvalidGrant("the assertion's aud is not this server")
	case !slices.Contains(idp.Clients, client.ID):
		return claims, nil, false, ErrInvalidGrant("this client may not present the grants of " + idp.Issuer)
	case !plain && claims.ClientID != client.ID:
		return claims, nil, false, ErrInvalidGrant("the ID-JAG was issued for another client")
	case plain && claims.ClientID != "" && claims.ClientID != client.ID:
		return claims, nil, false, ErrInvalidGrant("the assertion was issued for another client")
	}
	return claims, idp, plain, nil
}

// grantAudience reports whether an assertion's aud names this server: its
// issuer (an ID-JAG), or for a plain assertion also its token endpoint.
func (s *tokenEndpoint) grantAudience(aud jwt.ClaimStrings, plain bool) bool {
	if slices.Contains(aud, s.cfg.Issuer) {
		return true
	}
	return plain && slices.Contains(aud, s.cfg.Issuer+TokenPath)
}

func grantFailure(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued), errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "exp missing"
	}
	return "invalid"
}

// grantReplayKey is the replay record of an IdP's grant: its jti within
// its issuer, hashed (any text, and a bounded key, for every store).
func grantReplayKey(issuer, jti string) string {
	sum := sha256.Sum256([]byte(issuer + "\x00" + jti))
	return "id-jag:" + base64.RawURLEncoding.EncodeToString(sum[:18])
}

func kidOf(tok *jwt.Token) string {
	kid, _ := tok.Header["kid"].(string)
	return kid
}

// decideGrant decides the access token a verified grant gets: its
// resource, which a guard of this server must protect, becomes aud; its
// scope within the IdP's and, for an agent, the agent's permissions.
// A plain RFC 7523 assertion's sub always names an agent here.
func (s *tokenEndpoint) decideGrant(ctx context.Context, client *Client, idp *TrustedIdP, claims *idJAGClaims, plain bool, params url.Values) (AccessGrant, error) {
	resource := claims.Resource
	if r := params.Get("resource"); r != "" && r != resource {
		return AccessGrant{}, ErrInvalidTarget("resource must be the one the grant names")
	}
	g := AccessGrant{Subject: claims.Subject, ClientID: client.ID, AuthTime: s.now()}
	if claims.AuthTime > 0 {
		g.AuthTime = time.Unix(claims.AuthTime, 0)
	}
	if resource != "" {
		if _, err := ParseResource(resource); err != nil || !s.protects(resource) {
			return AccessGrant{}, ErrInvalidTarget("the grant's resource is not one this server's guards protect")
		}
		g.Audience = []string{resource}
	}
	// The scope the client asks for narrows the grant's; the grant's must
	// be within the IdP's policy.
	granted, err := ParseScope(claims.Scope)
	if err != nil {
		return AccessGrant{}, ErrInvalidGrant("the grant's scope is malformed")
	}
	if len(granted) == 0 {
		granted = idp.Scopes
	}
	for _, sc := range granted {
		if !slices.Contains(idp.Scopes, sc) {
			return AccessGrant{}, ErrInvalidScope("scope " + sc + " is beyond what this server takes from " + idp.Issuer)
		}
	}
	if g.Scopes, err = narrowScope(params.Get("scope"), granted); err != nil {
		return AccessGrant{}, err
	}
	if idp.Subject == SubjectExternal && !plain {
		g.IDP = idp.Issuer
		return g, nil
	}
	a, err := s.currentAgent(ctx, claims.Subject, s.now())
	if errors.Is(err, errAgentGone) {
		return AccessGrant{}, ErrInvalidGrant("the grant's subject is not an enabled agent of this server")
	}
	if err != nil {
		return AccessGrant{}, err
	}
	for _, sc := range g.Scopes {
		if !slices.Contains(IdentityScopes, sc) && !slices.Contains(a.Permissions, sc) {
			return AccessGrant{}, ErrInvalidScope("the agent does not hold scope " + sc)
		}
	}
	g.ModelName = a.ModelName
	return g, nil
}

// trustedIdP returns the IdP of issuer, from the configuration or the
// store, or nil when it is not trusted. The store is read on every grant,
// not cached: an IdP an operator adds or deletes at one instance is
// honoured by every instance sharing the store at once.
func (p *provider) trustedIdP(ctx context.Context, issuer string) (*TrustedIdP, error) {
	if idp := p.configuredIdP(issuer); idp != nil {
		return idp, nil
	}
	// Only an issuer the admin API would take can be stored: anything
	// else costs no read.
	if events.ValidateWebhookURL(issuer) != nil {
		return nil, nil
	}
	idp, err := p.store.GetTrustedIdP(ctx, issuer)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return idp, err
}

func (p *provider) configuredIdP(issuer string) *TrustedIdP {
	for i := range p.cfg.TrustedIdPs {
		if p.cfg.TrustedIdPs[i].Issuer == issuer && issuer != "" {
			return &p.cfg.TrustedIdPs[i]
		}
	}
	return nil
}

// protects reports whether a guard of this server protects resource.
func (p *provider) protects(resource string) bool {
	return p.cfg.Resources != nil && p.cfg.Resources(resource)
}

// idpKeys returns a trusted IdP's keys: from its jwks_uri, or the one its
// metadata names; fetched again on an unknown kid at most once a minute.
func (p *provider) idpKeys(ctx context.Context, idp *TrustedIdP, kid string) (ClientKeys, error) {
	uri := idp.JWKSURI
	if uri == "" {
		var err error
		if uri, err = p.idpMetadata.jwksURI(ctx, idp.Issuer); err != nil {
			return nil, err
		}
	}
	return p.remoteKeys.Keys(ctx, uri, true, kid)
}

// idpMetadata reads the jwks_uri of trusted IdPs from their metadata (RFC
// 8414, or OpenID Connect discovery), cached.
type idpMetadata struct {
	hc  *http.Client
	now func() time.Time
	mu  sync.Mutex
	got map[string]idpDiscovered
}

type idpDiscovered struct {
	jwksURI string
	err     error
	until   time.Time
}

func newIDPMetadata(now func() time.Time) *idpMetadata {
	return &idpMetadata{hc: newClientDocHTTPClient(nil, clientDocTimeout, nil), now: now, got: map[string]idpDiscovered{}}
}

func (m *idpMetadata) jwksURI(ctx context.Context, issuer string) (string, error) {
	m.mu.Lock()
	d, ok := m.got[issuer]
	m.mu.Unlock()
	if ok && m.now().Before(d.until) {
		return d.jwksURI, d.err
	}
	d = idpDiscovered{until: m.now().Add(idpDiscoveryTTL)}
	d.jwksURI, d.err = m.fetch(ctx, issuer)
	if d.err != nil {
		d.until = m.now().Add(idpDiscoveryFailureTTL)
	}
	m.mu.Lock()
	m.got[issuer] = d
	m.mu.Unlock()
	return d.jwksURI, d.err
}

func (m *idpMetadata) fetch(ctx context.Context, issuer string) (string, error) {
	var last error
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		uri, err := m.fetchOne(ctx, issuer, issuer+path)
		if err == nil {
			return uri, nil
		}
		last = err
	}
	return "", last
}

func (m *idpMetadata) fetchOne(ctx context.Context, issuer, u string) (string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), clientDocTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := m.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s answered %d", u, resp.StatusCode)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return "", fmt.Errorf("%s is %q, not JSON", u, mt)
	}
	var md struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&md); err != nil {
		return "", fmt.Errorf("reading %s: %w", u, err)
	}
	if md.Issuer != issuer {
		return "", fmt.Errorf("%s names the issuer %q", u, md.Issuer)
	}
	if err := CheckJWKSURI(md.JWKSURI, true); err != nil {
		return "", err
	}
	return md.JWKSURI, nil
}

// grantIDJAG is the IdP's side: token exchange of an ID token this server
// issued to the calling client for an ID-JAG meant for another
// authorization server an operator listed.
func (s *tokenEndpoint) grantIDJAG(ctx context.Context, c caller, params url.Values) (*tokenResponse, error) {
	if c.client == nil {
		return nil, ErrUnauthorizedClient("an ID-JAG is issued to a client, for the ID token it holds")
	}
	if params.Get("subject_token_type") != TokenTypeIDToken {
		return nil, ErrInvalidRequest("subject_token_type must be " + TokenTypeIDToken)
	}
	if params.Get("actor_token") != "" {
		return nil, ErrInvalidRequest("actor_token is not supported")
	}
	aud := params.Get("audience")
	target := s.idJAGAudience(aud)
	switch {
	case aud == "":
		return nil, ErrInvalidRequest("audience is required: the issuer of the authorization server the ID-JAG is for")
	case target == nil:
		return nil, s.refusedIssue(ctx, c.client.ID, aud, ErrInvalidTarget("this server issues no ID-JAGs for "+strconvQuote(aud)))
	case !slices.Contains(target.Clients, c.client.ID):
		return nil, s.refusedIssue(ctx, c.client.ID, aud, ErrInvalidTarget("this client may not get ID-JAGs for "+aud))
	}
	resource, err := ParseResource(params.Get("resource"))
	if err != nil {
		return nil, err
	}
	if len(params["resource"]) > 1 {
		return nil, ErrInvalidTarget("an ID-JAG names one resource")
	}
	id, err := s.tokens.VerifyIDToken(ctx, params.Get("subject_token"), c.client.ID)
	if err != nil {
		return nil, s.refusedIssue(ctx, c.client.ID, aud, ErrInvalidGrant("subject_token is not a valid ID token this server issued to this client"))
	}
	if _, err := s.currentAgent(ctx, id.Subject, id.IssuedAt.Time); err != nil {
		if errors.Is(err, errAgentGone) {
			return nil, s.refusedIssue(ctx, c.client.ID, aud, ErrInvalidGrant("the ID token's agent no longer exists or is disabled"))
		}
		return nil, err
	}
	scopes, err := narrowScope(params.Get("scope"), target.Scopes)
	if err != nil {
		return nil, s.refusedIssue(ctx, c.client.ID, aud, err)
	}
	jag, err := s.tokens.IssueIDJAG(IDJAGGrant{
		Subject: id.Subject, Audience: target.Issuer, ClientID: target.ClientID, Scopes: scopes, Resource: resource, AuthTime: id.AuthTime,
	})
	if err != nil {
		return nil, err
	}
	metrics.IDJAG(metrics.IDJAGIssued)
	s.events.Publish(ctx, events.IDJAGIssued, map[string]any{
		"audience": target.Issuer, "client_id": c.client.ID, "subject": id.Subject, "jti": jag.ID, "scope": jag.Scope,
	})
	return &tokenResponse{AccessToken: jag.Token, TokenType: "N_A", ExpiresIn: jag.ExpiresIn, Scope: jag.Scope, IssuedTokenType: TokenTypeIDJAG}, nil
}

// refusedIssue is a refused ID-JAG request, for the audit log and the
// metrics.
func (p *provider) refusedIssue(ctx context.Context, clientID, audience string, err error) error {
	metrics.IDJAG(metrics.IDJAGIssueRefused)
	p.events.Publish(ctx, events.IDJAGRefused, map[string]any{"client_id": clientID, "audience": audience, "reason": AsError(err).Description})
	return err
}

func (p *provider) idJAGAudience(issuer string) *IDJAGAudience {
	for i := range p.cfg.IDJAGAudiences {
		if p.cfg.IDJAGAudiences[i].Issuer == issuer && issuer != "" {
			return &p.cfg.IDJAGAudiences[i]
		}
	}
	return nil
}
