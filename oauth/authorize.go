package oauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/authagent/caddy-authagent/agents"
)

const (
	kindAuthRequest = "authreq"
	kindCode        = "code"

	statusPending       = "pending"
	statusAuthenticated = "authenticated"
	statusExpired       = "expired"

	bindCookiePrefix = "aa_bind_"
)

// authRequest is a pending authorization request, stored under its id.
type authRequest struct {
	ClientID      string    `json:"client_id"`
	RedirectURI   string    `json:"redirect_uri"`
	Scopes        []string  `json:"scopes"`
	State         string    `json:"state,omitempty"`
	Nonce         string    `json:"nonce,omitempty"`
	CodeChallenge string    `json:"code_challenge"`
	Resource      string    `json:"resource,omitempty"`
	BrowserHash   string    `json:"browser_hash"`
	Status        string    `json:"status"`
	AgentID       string    `json:"agent_id,omitempty"`
	ModelName     string    `json:"model_name,omitempty"`
	AuthTime      int64     `json:"auth_time,omitempty"`
	CodeSeed      string    `json:"code_seed,omitempty"`
	ExpiresAt     time.Time `json:"expires_at"`
}

// codeGrant is what an authorization code stands for, stored under the
// code's hash. Used marks the one redemption; the tokens it issued are
// recorded so a replay can revoke them.
type codeGrant struct {
	ClientID      string   `json:"client_id"`
	RedirectURI   string   `json:"redirect_uri"`
	Scopes        []string `json:"scopes"`
	Nonce         string   `json:"nonce,omitempty"`
	CodeChallenge string   `json:"code_challenge"`
	Resource      string   `json:"resource,omitempty"`
	AgentID       string   `json:"agent_id"`
	ModelName     string   `json:"model_name,omitempty"`
	AuthTime      int64    `json:"auth_time"`
	Used          bool     `json:"used,omitempty"`
	Replayed      bool     `json:"replayed,omitempty"`
	IssuedJTI     string   `json:"issued_jti,omitempty"`
	IssuedExp     int64    `json:"issued_exp,omitempty"`
	Family        string   `json:"family,omitempty"`
}

// authorizeParams is a parsed authorization request.
type authorizeParams struct {
	client        *Client
	redirectURI   string
	responseType  string
	scopes        []string
	state, nonce  string
	codeChallenge string
	method        string
	resource      string
	prompt        string
}

// handleAuthorize is GET|POST /oauth2/authorize.
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, http.StatusBadRequest, "The authorization request is malformed.")
		return nil
	}
	q := r.Form
	clientID, err1 := single(q, "client_id")
	redirectURI, err2 := single(q, "redirect_uri")
	if err1 != nil || err2 != nil || clientID == "" {
		s.errorPage(w, http.StatusBadRequest, "The request names no client, or names it twice.")
		return nil
	}
	client, err := s.clients.Get(r.Context(), clientID)
	if errors.Is(err, ErrNotFound) {
		s.errorPage(w, http.StatusBadRequest, "Unknown client.")
		return nil
	}
	if err != nil {
		return err
	}
	if !client.MatchRedirectURI(redirectURI) {
		// Never redirect to an address the client did not register.
		s.errorPage(w, http.StatusBadRequest, "The redirect_uri is not registered for this client.")
		return nil
	}
	state, _ := single(q, "state")
	p, perr := s.parseAuthorize(client, redirectURI, q)
	if perr != nil {
		s.redirectError(w, r, redirectURI, state, perr)
		return nil
	}

	requestID := randomToken(16)
	binding := randomToken(32)
	lifetime := s.cfg.RequestLifetime
	req := authRequest{
		ClientID: client.ID, RedirectURI: p.redirectURI, Scopes: p.scopes, State: p.state, Nonce: p.nonce,
		CodeChallenge: p.codeChallenge, Resource: p.resource, BrowserHash: tokenHash(binding),
		Status: statusPending, ExpiresAt: s.now().Add(lifetime),
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := s.store.PutRecord(r.Context(), kindAuthRequest, requestID, raw, lifetime); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name: bindCookiePrefix + requestID, Value: binding, Path: s.statusPath(),
		MaxAge: int(lifetime / time.Second), HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
	w.Header().Set("Cache-Control", "no-store")
	if acceptsJSON(r) {
		writeJSON(w, http.StatusOK, map[string]any{
			"request_id":          requestID,
			"expires_in":          int64(lifetime / time.Second),
			"agent_auth_endpoint": s.cfg.Issuer + "/api/agent-auth",
			"status_endpoint":     s.cfg.Issuer + "/api/check-status?request_id=" + requestID,
		})
		return nil
	}
	s.signInPage(w, client, p.scopes, requestID)
	return nil
}

// parseAuthorize checks everything after the client and redirect URI are
// known; its errors are sent back to the client by redirect.
func (s *Server) parseAuthorize(client *Client, redirectURI string, q url.Values) (*authorizeParams, *Error) {
	p := &authorizeParams{client: client, redirectURI: redirectURI}
	for _, k := range []string{"response_type", "scope", "state", "nonce", "code_challenge", "code_challenge_method", "resource", "prompt"} {
		if len(q[k]) > 1 {
			return nil, ErrInvalidRequest("parameter " + k + " is given more than once")
		}
	}
	p.responseType, p.state, p.nonce = q.Get("response_type"), q.Get("state"), q.Get("nonce")
	p.codeChallenge, p.method, p.prompt = q.Get("code_challenge"), q.Get("code_challenge_method"), q.Get("prompt")
	switch {
	case p.responseType == "":
		return nil, ErrInvalidRequest("response_type is required")
	case p.responseType != "code":
		return nil, newError("unsupported_response_type", 400, "only response_type=code is supported")
	case !client.AllowsGrant(GrantAuthorizationCode):
		return nil, newError("unauthorized_client", 400, "this client may not use the authorization code grant")
	case len(p.state) > 1024 || len(p.nonce) > 1024:
		return nil, ErrInvalidRequest("state and nonce must be at most 1024 characters")
	case p.codeChallenge == "":
		return nil, ErrInvalidRequest("PKCE is required: send code_challenge and code_challenge_method=S256")
	case p.method != "S256":
		return nil, ErrInvalidRequest("code_challenge_method must be S256")
	case !validPKCEValue(p.codeChallenge) || len(p.codeChallenge) != 43:
		return nil, ErrInvalidRequest("code_challenge must be the base64url SHA-256 of the verifier (43 characters)")
	}
	for _, pr := range strings.Fields(p.prompt) {
		switch pr {
		case "none":
			return nil, newError("login_required", 400, "the agent must authenticate; prompt=none cannot be satisfied")
		case "login", "consent", "select_account":
		default:
			return nil, ErrInvalidRequest("unsupported prompt value " + strconvQuote(pr))
		}
	}
	scopes, err := ParseScope(q.Get("scope"))
	if err != nil {
		return nil, AsError(err)
	}
	if len(scopes) == 0 {
		return nil, ErrInvalidScope("scope is required")
	}
	for _, sc := range scopes {
		if !slices.Contains(client.Scopes, sc) {
			return nil, ErrInvalidScope("this client may not request scope " + sc)
		}
	}
	p.scopes = scopes
	res, err := ParseResource(q.Get("resource"))
	if err != nil {
		return nil, AsError(err)
	}
	p.resource = res
	return p, nil
}

// validPKCEValue checks the RFC 7636 alphabet.
func validPKCEValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// verifyPKCE checks code_verifier against the S256 challenge.
func verifyPKCE(verifier, challenge string) bool {
	if len(verifier) < 43 || len(verifier) > 128 || !validPKCEValue(verifier) {
		return false
	}
	sum := sha256.Sum256([]byte(verifier))
	got := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}

func acceptsJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		if mt == "application/json" {
			return true
		}
	}
	return false
}

// redirectURL adds parameters to a registered redirect URI, keeping its own
// query.
func redirectURL(base string, params map[string]string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	q := u.Query()
	for k, v := range params {
		if v != "" {
			q.Set(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// redirectError sends an authorization error back to the client with state
// and iss (RFC 9207).
func (s *Server) redirectError(w http.ResponseWriter, r *http.Request, redirectURI, state string, e *Error) {
	to := redirectURL(redirectURI, map[string]string{
		"error": e.Code, "error_description": e.Description, "state": state, "iss": s.cfg.Issuer,
	})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, to, http.StatusFound)
}

// codeFor derives the authorization code from a request's seed with a key
// that lives only in this process: the code itself is never stored (only
// its hash), yet the browser that started the request can still be told
// it.
func (s *Server) codeFor(seed string) string {
	m := hmac.New(sha256.New, s.codeKey)
	m.Write([]byte(seed))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// redirectFor is where a completed request sends the browser.
func (s *Server) redirectFor(req *authRequest) string {
	return redirectURL(req.RedirectURI, map[string]string{"code": s.codeFor(req.CodeSeed), "state": req.State, "iss": s.cfg.Issuer})
}

var errNotPending = ErrInvalidRequest("this authorization request is already completed")

// completeRequest is POST /api/agent-auth with a request_id: the
// authenticated agent answers a pending authorization request.
func (s *Server) completeRequest(ctx context.Context, requestID string, a *agents.Agent, model string) (string, error) {
	raw, err := s.store.GetRecord(ctx, kindAuthRequest, requestID)
	if errors.Is(err, ErrNotFound) || (err == nil && len(requestID) > 64) {
		return "", ErrInvalidRequest("request_id is unknown or expired")
	}
	if err != nil {
		return "", err
	}
	var req authRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return "", err
	}
	if req.Status != statusPending {
		return "", errNotPending
	}
	for _, sc := range req.Scopes {
		if !slices.Contains(IdentityScopes, sc) && !slices.Contains(a.Permissions, sc) {
			return "", ErrInvalidScope("the agent does not have permission " + sc)
		}
	}
	if model == "" {
		model = a.ModelName
	}
	now := s.now()
	seed := randomToken(16)
	err = s.store.UpdateRecord(ctx, kindAuthRequest, requestID, func(raw []byte) ([]byte, error) {
		var cur authRequest
		if err := json.Unmarshal(raw, &cur); err != nil {
			return nil, err
		}
		if cur.Status != statusPending {
			return nil, errNotPending
		}
		cur.Status, cur.AgentID, cur.ModelName, cur.AuthTime, cur.CodeSeed = statusAuthenticated, a.ID, model, now.Unix(), seed
		req = cur
		return json.Marshal(cur)
	})
	if errors.Is(err, ErrNotFound) {
		return "", ErrInvalidRequest("request_id is unknown or expired")
	}
	if err != nil {
		return "", err
	}
	grant, err := json.Marshal(codeGrant{
		ClientID: req.ClientID, RedirectURI: req.RedirectURI, Scopes: req.Scopes, Nonce: req.Nonce,
		CodeChallenge: req.CodeChallenge, Resource: req.Resource, AgentID: a.ID, ModelName: model, AuthTime: now.Unix(),
	})
	if err != nil {
		return "", err
	}
	if err := s.store.PutRecord(ctx, kindCode, tokenHash(s.codeFor(seed)), grant, s.cfg.CodeLifetime); err != nil {
		return "", err
	}
	return s.redirectFor(&req), nil
}

// handleCheckStatus is GET /api/check-status?request_id=…: the status for
// anyone; the redirect (with the code) only for the browser holding the
// request's binding cookie.
func (s *Server) handleCheckStatus(w http.ResponseWriter, r *http.Request) error {
	id := r.URL.Query().Get("request_id")
	if id == "" || len(id) > 64 {
		return ErrInvalidRequest("request_id is required")
	}
	raw, err := s.store.GetRecord(r.Context(), kindAuthRequest, id)
	if errors.Is(err, ErrNotFound) {
		writeData(w, http.StatusOK, map[string]string{"status": statusExpired})
		return nil
	}
	if err != nil {
		return err
	}
	var req authRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		writeData(w, http.StatusOK, map[string]string{"status": "error"})
		return nil
	}
	data := map[string]string{"status": req.Status}
	if req.Status == statusAuthenticated {
		if c, err := r.Cookie(bindCookiePrefix + id); err == nil &&
			subtle.ConstantTimeCompare([]byte(tokenHash(c.Value)), []byte(req.BrowserHash)) == 1 {
			data["redirect_to"] = s.redirectFor(&req)
		}
	}
	writeData(w, http.StatusOK, data)
	return nil
}
