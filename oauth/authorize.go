package oauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/internal/metrics"
	"github.com/authagent/caddy-authagent/ratelimit"
)

const (
	statusPending       = "pending"
	statusAuthenticated = "authenticated"
	statusExpired       = "expired"

	bindCookiePrefix = "aa_bind_"
)

// authorizer serves /oauth2/authorize, the sign-in page and
// /api/check-status, and completes requests for /api/agent-auth.
type authorizer struct{ *provider }

// authorizeParams is a parsed authorization request.
type authorizeParams struct {
	client        *Client
	redirectURI   string
	responseType  string
	scopes        []string
	state, nonce  string
	codeChallenge string
	method        string
	resources     []string
	prompt        string
	dpopJKT       string
}

// handleAuthorize is GET|POST /oauth2/authorize.
func (s *authorizer) handleAuthorize(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	if err := r.ParseForm(); err != nil {
		metrics.SignIn(signinRefused)
		status := http.StatusBadRequest
		if e := readError(err); e.Status != http.StatusBadRequest {
			status = e.Status // too large, or too slow
		}
		s.errorPage(w, status, "The authorization request is malformed.")
		return nil
	}
	q := r.Form
	clientID, err1 := single(q, "client_id")
	redirectURI, err2 := single(q, "redirect_uri")
	if err1 != nil || err2 != nil || clientID == "" {
		metrics.SignIn(signinRefused)
		s.errorPage(w, http.StatusBadRequest, "The request names no client, or names it twice.")
		return nil
	}
	client, err := s.clients.Get(r.Context(), clientID)
	if errors.Is(err, ErrNotFound) {
		msg := "Unknown client."
		if IsClientIDURL(clientID) {
			// Why the client's metadata document cannot be used.
			msg = strings.TrimPrefix(err.Error(), ErrNotFound.Error()+": ")
		}
		metrics.SignIn(signinRefused)
		s.errorPage(w, http.StatusBadRequest, msg)
		return nil
	}
	if err != nil {
		return err
	}
	if !client.MatchRedirectURI(redirectURI) {
		// Never redirect to an address the client did not register.
		metrics.SignIn(signinRefused)
		s.errorPage(w, http.StatusBadRequest, "The redirect_uri is not registered for this client.")
		return nil
	}
	state, _ := single(q, "state")
	p, perr := s.parseAuthorize(client, redirectURI, q)
	if perr != nil {
		metrics.SignIn(signinRefused)
		s.redirectError(w, r, redirectURI, state, perr)
		return nil
	}

	// Each request is a stored record and needs no credentials: a budget
	// per address keeps a flood from filling the store.
	if err := s.limits.TakeAuthorization(r.Context(), w, ratelimit.ClientIP(r)); err != nil {
		metrics.SignIn(signinRefused)
		if acceptsJSON(r) {
			return err
		}
		e := AsError(err)
		for k, v := range e.Header {
			w.Header()[k] = v
		}
		s.errorPage(w, e.Status, "Too many sign-in requests from your address. Try again later.")
		return nil
	}
	requestID := randomToken(16)
	binding := randomToken(32)
	lifetime := s.cfg.RequestLifetime
	now := s.now()
	if err := s.store.CreateAuthRequest(r.Context(), &AuthRequest{
		ID: requestID, ClientID: client.ID, RedirectURI: p.redirectURI, Scopes: p.scopes, State: p.state, Nonce: p.nonce,
		CodeChallenge: p.codeChallenge, Resources: p.resources, BrowserHash: tokenHash(binding), DPoPJKT: p.dpopJKT,
		CreatedAt: now, ExpiresAt: now.Add(lifetime),
	}); err != nil {
		return err
	}
	metrics.SignIn(signinRequested)
	http.SetCookie(w, &http.Cookie{
		Name: bindCookiePrefix + requestID, Value: binding, Path: s.statusPath(),
		MaxAge: int(lifetime / time.Second), HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
	w.Header().Set("Cache-Control", "no-store")
	if acceptsJSON(r) {
		// Who is asking, so the agent can check it before approving
		// (request-id phishing: it approves for this client and host only).
		answer := map[string]any{
			"request_id":          requestID,
			"expires_in":          int64(lifetime / time.Second),
			"agent_auth_endpoint": s.cfg.Issuer + "/api/agent-auth",
			"status_endpoint":     s.cfg.Issuer + "/api/check-status?request_id=" + requestID,
		}
		maps.Copy(answer, requester(client, p.redirectURI))
		WriteJSON(w, http.StatusOK, answer)
		return nil
	}
	s.signInPage(w, client, p, requestID)
	return nil
}

// maxStateLength bounds state and nonce: a client needs far less (a random
// value or a signed handle), and each pending request stores both.
const maxStateLength = 512

// parseAuthorize checks everything after the client and redirect URI are
// known; its errors are sent back to the client by redirect.
func (s *authorizer) parseAuthorize(client *Client, redirectURI string, q url.Values) (*authorizeParams, *Error) {
	p := &authorizeParams{client: client, redirectURI: redirectURI}
	// resource may repeat (RFC 8707 §2): the token may then be meant for
	// any of them.
	for _, k := range []string{"response_type", "scope", "state", "nonce", "code_challenge", "code_challenge_method", "prompt", "response_mode", "request", "request_uri", "dpop_jkt"} {
		if len(q[k]) > 1 {
			return nil, ErrInvalidRequest("parameter " + k + " is given more than once")
		}
	}
	p.responseType, p.state, p.nonce = q.Get("response_type"), q.Get("state"), q.Get("nonce")
	p.codeChallenge, p.method, p.prompt = q.Get("code_challenge"), q.Get("code_challenge_method"), q.Get("prompt")
	p.dpopJKT = q.Get("dpop_jkt")
	switch {
	case p.responseType == "":
		return nil, ErrInvalidRequest("response_type is required")
	case p.responseType != "code":
		return nil, ErrUnsupportedResponseType("only response_type=code is supported")
	case q.Has("request"):
		return nil, ErrRequestNotSupported()
	case q.Has("request_uri"):
		return nil, ErrRequestURINotSupported()
	case q.Has("response_mode") && q.Get("response_mode") != "query":
		// The answer goes in the query whatever was asked; a client that
		// reads the fragment would never see it.
		return nil, ErrInvalidRequest("response_mode " + strconvQuote(q.Get("response_mode")) + " is not supported; only query")
	case !client.AllowsGrant(GrantAuthorizationCode):
		return nil, ErrUnauthorizedClient("this client may not use the authorization code grant")
	case len(p.state) > maxStateLength || len(p.nonce) > maxStateLength:
		return nil, ErrInvalidRequest(fmt.Sprintf("state and nonce must be at most %d bytes", maxStateLength))
	case !storableText(p.state) || !storableText(p.nonce):
		// Refused here, as the client's error, whatever the store could
		// hold (PostgreSQL holds neither NUL nor invalid UTF-8).
		return nil, ErrInvalidRequest("state and nonce must be UTF-8 text without NUL")
	case p.codeChallenge == "":
		return nil, ErrInvalidRequest("PKCE is required: send code_challenge and code_challenge_method=S256")
	case p.method != "S256":
		return nil, ErrInvalidRequest("code_challenge_method must be S256")
	case !validPKCEValue(p.codeChallenge) || len(p.codeChallenge) != 43:
		return nil, ErrInvalidRequest("code_challenge must be the base64url SHA-256 of the verifier (43 characters)")
	case q.Has("dpop_jkt") && !ValidThumbprint(p.dpopJKT):
		return nil, ErrInvalidRequest("dpop_jkt must be the base64url SHA-256 JWK thumbprint of the DPoP key (43 characters)")
	}
	for _, pr := range strings.Fields(p.prompt) {
		switch pr {
		case "none":
			return nil, ErrLoginRequired("the agent must authenticate; prompt=none cannot be satisfied")
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
		if !client.MayRequest(sc) {
			return nil, ErrInvalidScope("this client may not request scope " + sc)
		}
	}
	p.scopes = scopes
	if p.resources, err = parseResources(q["resource"]); err != nil {
		return nil, AsError(err)
	}
	return p, nil
}

// storableText reports whether s is UTF-8 without NUL: text every store
// keeps as it is.
func storableText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
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
func (s *authorizer) redirectError(w http.ResponseWriter, r *http.Request, redirectURI, state string, e *Error) {
	to := redirectURL(redirectURI, map[string]string{
		"error": e.Code, "error_description": e.Description, "state": state, "iss": s.cfg.Issuer,
	})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, to, http.StatusFound)
}

// codeFor derives the authorization code from a request's seed with the
// code key, which every process sharing the store holds (SecretStore): the
// code itself is never stored, only its hash, yet any process can show it
// to the browser that started the request, after a restart too.
func (s *authorizer) codeFor(seed string) string {
	m := hmac.New(sha256.New, s.codeKey)
	m.Write([]byte(seed))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// redirectFor is where an approved request sends the browser.
func (s *authorizer) redirectFor(req *AuthRequest) string {
	return redirectURL(req.RedirectURI, map[string]string{"code": s.codeFor(req.Approval.CodeSeed), "state": req.State, "iss": s.cfg.Issuer})
}

var errNotPending = ErrInvalidRequest("this authorization request is already completed")

// approve is POST /api/agent-auth with a request_id: the authenticated
// agent answers a pending authorization request. The code's grant is
// stored first and the approval second, so a crash between them leaves
// only an unreachable grant behind; once this returns, both are durable.
func (s *authorizer) approve(ctx context.Context, requestID string, a *agents.Agent, model string, expect approvalExpectation) (string, *AuthRequest, error) {
	to, req, err := s.decide(ctx, requestID, a, model, expect)
	if err != nil {
		metrics.SignIn(signinFailed)
		return "", nil, err
	}
	metrics.SignIn(signinApproved)
	s.events.Publish(ctx, events.SigninCompleted, map[string]any{
		"agent_id": a.ID, "client_id": req.ClientID, "scopes": req.Scopes, "resources": req.Resources,
	})
	return to, req, nil
}

// requester describes who a sign-in request is for, in the answers an
// agent reads: the client, its name, the host the browser returns to, and
// whether an operator defined the client (a dynamically registered or
// metadata-document client names itself, so its name proves nothing).
func requester(c *Client, redirectURI string) map[string]any {
	name := c.Name
	if name == "" {
		name = c.ID
	}
	return map[string]any{
		"client_id":     c.ID,
		"client_name":   name,
		"redirect_host": redirectHost(redirectURI),
		"verified":      c.Verified(),
	}
}

// redirectHost is where the browser returns: the host in lower case,
// without a trailing dot or the scheme's default port (and with any other
// port); for a private-use scheme (com.example.app:/cb), the scheme and a
// colon, which no host can equal.
func redirectHost(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return ""
	}
	if u.Host == "" {
		return strings.ToLower(u.Scheme) + ":"
	}
	return canonicalHost(u.Scheme, u.Host)
}

// canonicalHost lower-cases host[:port], drops a trailing dot from the
// name and the port when it is scheme's default.
func canonicalHost(scheme, hostport string) string {
	host, port := hostport, ""
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if a, err := idna.Lookup.ToASCII(host); err == nil {
		// Punycode: a look-alike name (a Cyrillic е for an e) shows as
		// what it is, and compares by what it resolves as.
		host = a
	}
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		return host + ":" + port
	}
	return host
}

// decide records the agent's approval of the request, or why it cannot.
func (s *authorizer) decide(ctx context.Context, requestID string, a *agents.Agent, model string, expect approvalExpectation) (string, *AuthRequest, error) {
	if len(requestID) > 64 {
		return "", nil, ErrInvalidRequest("request_id is unknown or expired")
	}
	req, err := s.store.GetAuthRequest(ctx, requestID)
	if errors.Is(err, ErrNotFound) {
		return "", nil, ErrInvalidRequest("request_id is unknown or expired")
	}
	if err != nil {
		return "", nil, err
	}
	now := s.now()
	if err := decideApproval(req, a, now, expect); err != nil {
		return "", nil, err
	}
	if model == "" {
		model = a.ModelName
	}
	approval := Approval{AgentID: a.ID, ModelName: model, AuthTime: now, CodeSeed: randomToken(16)}
	if err := s.store.CreateCode(ctx, tokenHash(s.codeFor(approval.CodeSeed)), &CodeGrant{
		ClientID: req.ClientID, RedirectURI: req.RedirectURI, Scopes: req.Scopes, Nonce: req.Nonce,
		CodeChallenge: req.CodeChallenge, Resources: req.Resources, AgentID: a.ID, ModelName: model, AuthTime: now,
		ExpiresAt: now.Add(s.cfg.CodeLifetime), DPoPJKT: req.DPoPJKT,
	}); err != nil {
		return "", nil, err
	}
	req, err = s.store.ApproveAuthRequest(ctx, requestID, approval)
	switch {
	case errors.Is(err, ErrNotPending):
		return "", nil, errNotPending
	case errors.Is(err, ErrNotFound):
		return "", nil, ErrInvalidRequest("request_id is unknown or expired")
	case err != nil:
		return "", nil, err
	}
	return s.redirectFor(req), req, nil
}

// handleCheckStatus is GET /api/check-status?request_id=…: the status for
// anyone; the redirect (with the code) only for the browser holding the
// request's binding cookie.
func (s *authorizer) handleCheckStatus(w http.ResponseWriter, r *http.Request) error {
	id := r.URL.Query().Get("request_id")
	if id == "" || len(id) > 64 {
		return ErrInvalidRequest("request_id is required")
	}
	req, err := s.store.GetAuthRequest(r.Context(), id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	status := requestStatus(req, s.now())
	data := map[string]any{"status": status}
	if status == statusPending {
		// What an agent handed this request id reads before approving:
		// which site asks, and where the browser returns.
		if c, err := s.clients.Get(r.Context(), req.ClientID); err == nil {
			maps.Copy(data, requester(c, req.RedirectURI))
		}
	}
	if status == statusAuthenticated {
		if c, err := r.Cookie(bindCookiePrefix + id); err == nil &&
			subtle.ConstantTimeCompare([]byte(tokenHash(c.Value)), []byte(req.BrowserHash)) == 1 {
			data["redirect_to"] = s.redirectFor(req)
		}
	}
	writeData(w, http.StatusOK, data)
	return nil
}
