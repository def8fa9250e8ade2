// Package client is the agent side of Auth Agent for Go agents: register,
// authenticate, read and change the profile, answer a website's "Sign in
// with Auth Agent" without a browser, and refresh, revoke or introspect
// tokens. It speaks the HTTP API of an auth_agent issuer and depends on
// nothing but the standard library.
//
//	c := client.New("https://auth.example.com")
//	creds := client.Credentials{AgentID: "my-agent", AgentSecret: os.Getenv("AGENT_SECRET")}
//	tok, err := c.Authenticate(ctx, creds, "data:read")
//	redirect, err := c.SignIn(ctx, authorizationURL, creds) // the website's callback URL, with the code
//
// An agent may hold a key instead of a secret (Credentials.Key, signing
// an assertion per call), and may bind its tokens to a key with DPoP
// (RFC 9449): with Credentials.DPoP each token request carries a proof,
// the token comes back with TokenType "DPoP", and the http.Client of
// HTTPClient sends it to APIs behind agent_guard with a new proof per
// request. A server that asks for a DPoP nonce gets one more try with it.
//
//	dp, err := client.NewDPoP(key) // ECDSA P-256, Ed25519 or RSA
//	creds := client.Credentials{AgentID: "my-agent", Key: key, KeyID: "my-agent-1", DPoP: dp}
//	tok, err := c.Authenticate(ctx, creds, "data:read") // tok.TokenType == "DPoP"
//	resp, err := c.HTTPClient(tok).Get("https://api.example.com/data")
package client

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client talks to one issuer. It is safe for concurrent use.
type Client struct {
	issuer string
	origin string // scheme://host[:port] of the issuer
	http   *http.Client
	now    func() time.Time

	mu     sync.Mutex
	nonces map[string]string     // origin → the latest DPoP-Nonce its server gave
	bound  map[string]boundToken // hash of a DPoP-bound token this client got → its key
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sends the requests through hc (timeouts, proxies, TLS
// settings); its redirect policy is not used: the client never follows
// redirects, so credentials only ever go to the issuer.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.http = hc }
}

// New returns a client of the issuer (its URL, as discovery names it).
func New(issuer string, opts ...Option) *Client {
	c := &Client{issuer: strings.TrimSuffix(issuer, "/"), http: &http.Client{Timeout: 30 * time.Second}, now: time.Now}
	if u, err := url.Parse(c.issuer); err == nil {
		c.origin = u.Scheme + "://" + u.Host
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Credentials are an agent's id and its secret, or, for an agent that
// holds a key instead, the key (and its id): the client then signs an
// assertion for each authentication and never sends a secret.
type Credentials struct {
	AgentID     string
	AgentSecret string
	// Key is the agent's private key (ECDSA P-256, Ed25519 or RSA), whose
	// public half it registered (PublicJWKS); KeyID is its kid.
	Key   crypto.Signer
	KeyID string
	// DPoP, when set, binds the tokens the agent gets to its key: each
	// authentication carries a proof, and the token comes back with
	// TokenType "DPoP" (and this DPoP, for HTTPClient). It may be the key
	// above or another.
	DPoP *DPoP
}

// authFields are the credentials as /api/agent-auth takes them, for a
// request to the endpoint at path.
func (c *Client) authFields(creds Credentials, path string) (map[string]string, error) {
	if creds.Key == nil {
		return map[string]string{"agent_id": creds.AgentID, "agent_secret": creds.AgentSecret}, nil
	}
	a, err := assertion(creds.Key, creds.KeyID, creds.AgentID, c.issuer+path, c.now())
	if err != nil {
		return nil, &Error{Code: "invalid_request", Description: err.Error()}
	}
	return map[string]string{"agent_id": creds.AgentID, "client_assertion_type": ClientAssertionType, "client_assertion": a}, nil
}

// Registration is a new agent. Without AgentSecret the issuer generates
// one, returned once in Agent.AgentSecret.
type Registration struct {
	AgentID     string `json:"agent_id"`
	AgentSecret string `json:"agent_secret,omitempty"`
	ModelName   string `json:"model_name"`
	OwnerName   string `json:"owner_name"`
	OwnerEmail  string `json:"owner_email"`
	// JWKS, instead of a secret, registers an agent that holds keys: its
	// public keys (PublicJWKS). Such an agent has no secret.
	JWKS json.RawMessage `json:"jwks,omitempty"`
}

// Agent is an agent's profile.
type Agent struct {
	AgentID     string    `json:"agent_id"`
	ModelName   string    `json:"model_name"`
	OwnerName   string    `json:"owner_name"`
	OwnerEmail  string    `json:"owner_email"`
	Permissions []string  `json:"permissions"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// AgentSecret is set only by RegisterAgent, when the issuer generated
	// the secret: keep it, it is never shown again.
	AgentSecret string `json:"agent_secret,omitempty"`
	// TokenEndpointAuthMethod is how the agent authenticates:
	// client_secret_post (a secret) or private_key_jwt (keys, whose ids
	// Kids lists).
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method,omitempty"`
	Kids                    []string `json:"kids,omitempty"`
}

// Token is an access token (and, from a refresh, its successor refresh
// token and ID token).
type Token struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token,omitempty"`
	IDToken      string `json:"id_token,omitempty"`
	// Expiry is when the access token expires, by this machine's clock.
	Expiry time.Time `json:"-"`
	// DPoP is the key a DPoP-bound token (TokenType "DPoP") is bound to:
	// the token is good only with proofs by it (HTTPClient signs them).
	// Set by the calls that got the token; a token kept elsewhere and read
	// back needs it set again.
	DPoP *DPoP `json:"-"`
}

// issued completes a token the issuer just gave: its expiry, and the key
// it is bound to when the issuer bound it.
func (c *Client) issued(t *Token, dp *DPoP) *Token {
	t.Expiry = c.now().Add(time.Duration(t.ExpiresIn) * time.Second)
	if strings.EqualFold(t.TokenType, "DPoP") && dp != nil {
		t.DPoP = dp
		c.rememberBinding(t)
	}
	return t
}

// Valid reports whether the token is there and not within leeway of its
// expiry.
func (t *Token) Valid(leeway time.Duration) bool {
	return t != nil && t.AccessToken != "" && time.Now().Add(leeway).Before(t.Expiry)
}

// String never shows the token itself, so it cannot end up in a log.
func (t *Token) String() string {
	if t == nil {
		return "<nil>"
	}
	return fmt.Sprintf("client.Token{%s, scope %q, expires %s}", t.TokenType, t.Scope, t.Expiry.Format(time.RFC3339))
}

// GoString is String, for %#v.
func (t *Token) GoString() string { return t.String() }

// Error is an error the issuer answered (or ErrorNetwork/ErrorResponse
// when it did not answer properly).
type Error struct {
	// Code is the OAuth error code ("invalid_client", "rate_limit_exceeded",
	// …), or ErrorNetwork / ErrorResponse.
	Code        string
	Description string
	Status      int // the HTTP status; 0 when none came
	// RateLimit is what the X-RateLimit-* headers said, when present, and
	// RetryAfter the Retry-After of a 429.
	RateLimit  *RateLimit
	RetryAfter time.Duration
	// Err is the cause of a network or decoding error.
	Err error
}

// Codes of errors that are not the issuer's answer.
const (
	ErrorNetwork  = "network_error"    // no answer: connection refused, timeout, …
	ErrorResponse = "invalid_response" // an answer that is not the API's
)

// RateLimit is where the caller stands in a budget.
type RateLimit struct {
	Limit, Remaining int64
	Reset            time.Time
}

func (e *Error) Error() string {
	msg := "auth agent: " + e.Code
	if e.Description != "" {
		msg += ": " + e.Description
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// IsCode reports whether err is an *Error with code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// RegisterAgent registers a new agent.
func (c *Client) RegisterAgent(ctx context.Context, reg Registration) (*Agent, error) {
	var a Agent
	if err := c.callAPI(ctx, http.MethodPost, "/api/register-agent", "", reg, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// Authenticate gets an access token for the agent itself, with the scopes
// given (all its permissions and openid profile when none are). With
// creds.DPoP the token is bound to that key (TokenType "DPoP").
func (c *Client) Authenticate(ctx context.Context, creds Credentials, scopes ...string) (*Token, error) {
	extra := map[string]string{}
	if len(scopes) > 0 {
		extra["scope"] = strings.Join(scopes, " ")
	}
	var t Token
	if err := c.agentAuth(ctx, creds, creds.DPoP, extra, &t); err != nil {
		return nil, err
	}
	return c.issued(&t, creds.DPoP), nil
}

// agentAuth calls /api/agent-auth as the agent with more fields: each try
// (a second one when the issuer asks for a DPoP nonce) signs a new
// assertion and, with dp, a new proof.
func (c *Client) agentAuth(ctx context.Context, creds Credentials, dp *DPoP, extra map[string]string, out any) error {
	return c.callAPIWith(ctx, http.MethodPost, "/api/agent-auth", "", dp, func() (any, error) {
		body, err := c.authFields(creds, "/api/agent-auth")
		if err != nil {
			return nil, err
		}
		maps.Copy(body, extra)
		return body, nil
	}, out)
}

// Profile reads the agent's profile with one of its access tokens (a
// DPoP-bound one this client got goes with proofs by its key).
func (c *Client) Profile(ctx context.Context, accessToken string) (*Agent, error) {
	var a Agent
	if err := c.callAPI(ctx, http.MethodGet, "/api/agents/profile", accessToken, nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// ProfileUpdate changes the fields that are not nil. A new secret needs
// the current one.
type ProfileUpdate struct {
	ModelName          *string `json:"model_name,omitempty"`
	OwnerName          *string `json:"owner_name,omitempty"`
	OwnerEmail         *string `json:"owner_email,omitempty"`
	AgentSecret        *string `json:"agent_secret,omitempty"`
	CurrentAgentSecret string  `json:"current_agent_secret,omitempty"`
}

// UpdateProfile changes the agent's profile (with a token the agent got
// for itself; a DPoP-bound one this client got goes with proofs by its
// key) and returns it.
func (c *Client) UpdateProfile(ctx context.Context, accessToken string, u ProfileUpdate) (*Agent, error) {
	var a Agent
	if err := c.callAPI(ctx, http.MethodPut, "/api/agents/profile", accessToken, u, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// SignIn answers a website's sign-in request as the agent: it opens
// authorizationURL (which must be on this issuer) the way a browser would,
// approves the request with the agent's credentials and returns the URL
// the browser would be sent to — the website's redirect URI with the code
// and state. A request the issuer refuses (unknown client, bad scope)
// comes back as an *Error with its code.
func (c *Client) SignIn(ctx context.Context, authorizationURL string, creds Credentials) (string, error) {
	u, err := url.Parse(authorizationURL)
	if err != nil || u.Scheme+"://"+u.Host != c.origin {
		return "", &Error{Code: "invalid_request", Description: "the authorization URL is not on this issuer (" + c.issuer + ")"}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authorizationURL, nil)
	if err != nil {
		return "", &Error{Code: "invalid_request", Description: err.Error()}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// A refused request goes back to the website with error=…
		loc, err := resp.Location()
		if err != nil {
			return "", &Error{Code: ErrorResponse, Status: resp.StatusCode, Description: "a redirect without a location"}
		}
		q := loc.Query()
		if code := q.Get("error"); code != "" {
			return "", &Error{Code: code, Description: q.Get("error_description"), Status: resp.StatusCode}
		}
		return "", &Error{Code: ErrorResponse, Status: resp.StatusCode, Description: "an unexpected redirect"}
	}
	var started struct {
		RequestID string `json:"request_id"`
	}
	if err := decode(resp, &started); err != nil {
		return "", err
	}
	if started.RequestID == "" {
		return "", &Error{Code: ErrorResponse, Status: resp.StatusCode, Description: "no request_id in the answer"}
	}
	return c.Approve(ctx, started.RequestID, creds)
}

// Approve approves the pending sign-in request requestID (the id a
// sign-in page shows) as the agent and returns the URL the browser is sent
// to. SignIn does this after opening the authorization URL; a request that
// expired or was answered already is an *Error invalid_request.
func (c *Client) Approve(ctx context.Context, requestID string, creds Credentials) (string, error) {
	return c.ApproveFor(ctx, requestID, creds, Expect{})
}

// Expect is what an agent insists a sign-in request is for before it
// approves it: the website's client id, and the URI (or host) its browser
// returns to; empty fields are not checked. A request id handed to an
// agent may come from someone else's browser (request-id phishing): with
// Expect, the issuer approves it only for the site the agent means.
type Expect struct {
	ClientID    string
	RedirectURI string
}

// ApproveFor is Approve for a request of the expected client and redirect
// host only; any other is an *Error invalid_request and stays unapproved.
func (c *Client) ApproveFor(ctx context.Context, requestID string, creds Credentials, expect Expect) (string, error) {
	var done struct {
		RedirectTo string `json:"redirect_to"`
	}
	body := map[string]string{"request_id": requestID}
	if expect.ClientID != "" {
		body["client_id"] = expect.ClientID
	}
	if expect.RedirectURI != "" {
		body["redirect_uri"] = expect.RedirectURI
	}
	// No proof: an approval issues no token to the agent. The website
	// binds its code to a key of its own (dpop_jkt) if it wants.
	if err := c.agentAuth(ctx, creds, nil, body, &done); err != nil {
		return "", err
	}
	if done.RedirectTo == "" {
		return "", &Error{Code: ErrorResponse, Description: "no redirect_to in the answer"}
	}
	return done.RedirectTo, nil
}

// ClientAuth is who calls the token, revocation and introspection
// endpoints: an OAuth client (ClientSecret empty for a public one; Key for
// one that holds a key, private_key_jwt), or an agent as itself.
type ClientAuth struct {
	ClientID     string
	ClientSecret string
	Key          crypto.Signer
	KeyID        string
	// DPoP, when set, adds a proof to each token request (not to
	// revocation or introspection): the tokens come back bound to its key.
	// A public client's refresh token is bound too: refresh it with the
	// same DPoP.
	DPoP *DPoP
}

// AgentAuth is the agent calling as its own client.
func AgentAuth(creds Credentials) ClientAuth {
	return ClientAuth{ClientID: creds.AgentID, ClientSecret: creds.AgentSecret, Key: creds.Key, KeyID: creds.KeyID, DPoP: creds.DPoP}
}

// Refresh trades a refresh token for new tokens (the old refresh token is
// spent: keep the new one).
func (c *Client) Refresh(ctx context.Context, refreshToken string, auth ClientAuth) (*Token, error) {
	return c.grant(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}, auth)
}

// ClientCredentials gets an access token for the caller itself with the
// client_credentials grant, with the scopes given (the client's or agent's
// own when none are): a service's token, or an agent's through the RFC
// endpoint (AgentAuth(creds)).
func (c *Client) ClientCredentials(ctx context.Context, auth ClientAuth, scopes ...string) (*Token, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	return c.grant(ctx, form, auth)
}

// grant posts a token request, with a DPoP proof when auth has a key for it.
func (c *Client) grant(ctx context.Context, form url.Values, auth ClientAuth) (*Token, error) {
	var t Token
	if err := c.callForm(ctx, "/oauth2/token", form, auth, auth.DPoP, &t); err != nil {
		return nil, err
	}
	return c.issued(&t, auth.DPoP), nil
}

// Revoke revokes an access or refresh token the caller holds (RFC 7009);
// an unknown token is no error.
func (c *Client) Revoke(ctx context.Context, token string, auth ClientAuth) error {
	return c.callForm(ctx, "/oauth2/revoke", url.Values{"token": {token}}, auth, nil, nil)
}

// Introspection is RFC 7662's answer.
type Introspection struct {
	Active    bool     `json:"active"`
	Scope     string   `json:"scope,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	ExpiresAt int64    `json:"exp,omitempty"`
	IssuedAt  int64    `json:"iat,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	Audience  audience `json:"aud,omitempty"`
	TokenID   string   `json:"jti,omitempty"`
	// TokenType is "DPoP" for a DPoP-bound access token, whose
	// Confirmation names the key it is bound to.
	TokenType    string        `json:"token_type,omitempty"`
	Confirmation *Confirmation `json:"cnf,omitempty"`
}

// Confirmation is a token's cnf: JKT is the RFC 7638 thumbprint of the key
// a DPoP-bound token is bound to (DPoP.Thumbprint, JWKThumbprint).
type Confirmation struct {
	JKT string `json:"jkt,omitempty"`
}

// audience is aud as a list, whether the issuer sent a string or a list.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	err := json.Unmarshal(b, &many)
	*a = many
	return err
}

// Introspect asks whether a token the caller holds is active (RFC 7662).
func (c *Client) Introspect(ctx context.Context, token string, auth ClientAuth) (*Introspection, error) {
	var in Introspection
	if err := c.callForm(ctx, "/oauth2/introspect", url.Values{"token": {token}}, auth, nil, &in); err != nil {
		return nil, err
	}
	return &in, nil
}

// callAPI calls an /api/* endpoint with a JSON body (nil for none) and
// decodes the data of its envelope into out.
func (c *Client) callAPI(ctx context.Context, method, path, accessToken string, body, out any) error {
	var dp *DPoP
	if accessToken != "" {
		dp = c.boundKey(accessToken)
	}
	return c.callAPIWith(ctx, method, path, accessToken, dp, func() (any, error) { return body, nil }, out)
}

// callAPIWith is callAPI with a body made for each try, and a DPoP proof
// when dp is set.
func (c *Client) callAPIWith(ctx context.Context, method, path, accessToken string, dp *DPoP, makeBody func() (any, error), out any) error {
	resp, err := c.send(dp, accessToken, func() (*http.Request, error) {
		body, err := makeBody()
		if err != nil {
			return nil, err
		}
		var rd io.Reader
		if body != nil {
			b, err := json.Marshal(body)
			if err != nil {
				return nil, err
			}
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.issuer+path, rd)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, nil
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Success bool            `json:"success"`
		Data    json.RawMessage `json:"data"`
	}
	if err := decode(resp, &env); err != nil {
		return err
	}
	if !env.Success || len(env.Data) == 0 {
		return &Error{Code: ErrorResponse, Status: resp.StatusCode, Description: "no data in the answer"}
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return &Error{Code: ErrorResponse, Status: resp.StatusCode, Err: err}
	}
	return nil
}

// callForm posts an RFC form to an /oauth2/* endpoint with client
// authentication (HTTP Basic, or client_id alone for a public client; an
// assertion signed for each try with a key) and a DPoP proof when dp is
// set, and decodes the answer into out (nil: a body is not read).
func (c *Client) callForm(ctx context.Context, path string, form url.Values, auth ClientAuth, dp *DPoP, out any) error {
	if auth.ClientSecret == "" {
		form.Set("client_id", auth.ClientID)
	}
	resp, err := c.send(dp, "", func() (*http.Request, error) {
		if auth.Key != nil {
			a, err := assertion(auth.Key, auth.KeyID, auth.ClientID, c.issuer+path, c.now())
			if err != nil {
				return nil, err
			}
			form.Set("client_assertion_type", ClientAssertionType)
			form.Set("client_assertion", a)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.issuer+path, strings.NewReader(form.Encode()))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		if auth.ClientSecret != "" {
			req.SetBasicAuth(url.QueryEscape(auth.ClientID), url.QueryEscape(auth.ClientSecret))
		}
		return req, nil
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		if resp.StatusCode/100 == 2 {
			return nil
		}
		return decode(resp, nil)
	}
	return decode(resp, out)
}

// do sends req without following redirects.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	hc := *c.http
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.Do(req)
	if err != nil {
		return nil, &Error{Code: ErrorNetwork, Err: err}
	}
	return resp, nil
}

// maxBody bounds what is read of an answer.
const maxBody = 1 << 20

// decode reads a JSON answer into out, or the error it carries.
func decode(resp *http.Response, out any) error {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return &Error{Code: ErrorNetwork, Status: resp.StatusCode, Err: err}
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode, RateLimit: rateLimit(resp.Header)}
		var shape struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &shape) == nil && shape.Error != "" {
			e.Code, e.Description = shape.Error, shape.Description
		} else {
			e.Code, e.Description = ErrorResponse, http.StatusText(resp.StatusCode)
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return &Error{Code: ErrorResponse, Status: resp.StatusCode, Err: err}
	}
	return nil
}

func rateLimit(h http.Header) *RateLimit {
	limit, err1 := strconv.ParseInt(h.Get("X-RateLimit-Limit"), 10, 64)
	remaining, err2 := strconv.ParseInt(h.Get("X-RateLimit-Remaining"), 10, 64)
	reset, err3 := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil
	}
	return &RateLimit{Limit: limit, Remaining: remaining, Reset: time.Unix(reset, 0)}
}
