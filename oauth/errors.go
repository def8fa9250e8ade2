// Package oauth is the authorization server: the agent endpoints, the
// authorization and token endpoints with their grants, the signing keys,
// clients, discovery, the sign-in page, and the errors every endpoint (and
// the guard) answers with.
package oauth

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/authagent/caddy-authagent/ratelimit"
)

// Error is a protocol error: an RFC error code, the HTTP status it is sent
// with, and a description that is safe to show to the caller.
type Error struct {
	Code        string
	Status      int
	Description string
	// Header holds extra response headers (WWW-Authenticate, Allow,
	// Retry-After).
	Header http.Header
	// dpop marks a resource's refusal about DPoP (CheckBinding's), which
	// is challenged with the DPoP scheme.
	dpop bool
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

// WithHeader returns a copy of e that also sends the header.
func (e *Error) WithHeader(key, value string) *Error {
	c := *e
	c.Header = e.Header.Clone()
	if c.Header == nil {
		c.Header = make(http.Header)
	}
	c.Header.Set(key, value)
	return &c
}

// WithHeaderValues returns a copy of e that also sends the header with
// these values (several challenges of WWW-Authenticate).
func (e *Error) WithHeaderValues(key string, values ...string) *Error {
	c := e.WithHeader(key, "")
	c.Header[http.CanonicalHeaderKey(key)] = values
	return c
}

func newError(code string, status int, description string) *Error {
	return &Error{Code: code, Status: status, Description: description}
}

// The constructors, one per error code of SPEC §3 and the RFCs it follows.
// Nothing else makes an *Error.

func ErrInvalidRequest(desc string) *Error { return newError("invalid_request", 400, desc) }
func ErrNotFoundPath(desc string) *Error   { return newError("invalid_request", 404, desc) }
func ErrConflict(desc string) *Error       { return newError("invalid_request", 409, desc) }
func ErrTooLarge(desc string) *Error       { return newError("invalid_request", 413, desc) }

// ErrRequestTimeout answers a body that did not arrive in time (the
// server closes an HTTP/1 connection after it: its read failed).
func ErrRequestTimeout(desc string) *Error {
	return newError("invalid_request", 408, desc)
}
func ErrInvalidClient(desc string) *Error { return newError("invalid_client", 401, desc) }
func ErrInvalidGrant(desc string) *Error  { return newError("invalid_grant", 400, desc) }
func ErrInvalidScope(desc string) *Error  { return newError("invalid_scope", 400, desc) }
func ErrInvalidTarget(desc string) *Error { return newError("invalid_target", 400, desc) }
func ErrAccessDenied(desc string) *Error  { return newError("access_denied", 403, desc) }
func ErrLoginRequired(desc string) *Error { return newError("login_required", 400, desc) }

// ErrUnauthorizedClient: the client may not use this grant or response type.
func ErrUnauthorizedClient(desc string) *Error { return newError("unauthorized_client", 400, desc) }

// ErrUnsupportedGrantType answers an unknown grant_type.
func ErrUnsupportedGrantType(desc string) *Error {
	return newError("unsupported_grant_type", 400, desc)
}

// ErrUnsupportedResponseType answers a response_type other than code.
func ErrUnsupportedResponseType(desc string) *Error {
	return newError("unsupported_response_type", 400, desc)
}

// ErrRequestNotSupported and ErrRequestURINotSupported refuse request
// objects (OpenID Connect Core §6), which the server does not read: a
// request it would otherwise serve without the object's parameters.
func ErrRequestNotSupported() *Error {
	return newError("request_not_supported", 400, "request objects (the request parameter) are not supported")
}

func ErrRequestURINotSupported() *Error {
	return newError("request_uri_not_supported", 400, "request_uri is not supported")
}

// ErrInvalidClientMetadata refuses a client registration (RFC 7591 §3.2.2).
func ErrInvalidClientMetadata(desc string) *Error {
	return newError("invalid_client_metadata", 400, desc)
}

// ErrInvalidRedirectURI refuses a client's redirect URI (RFC 7591 §3.2.2).
func ErrInvalidRedirectURI(desc string) *Error {
	return newError("invalid_redirect_uri", 400, desc)
}

// ErrTemporarilyUnavailable is a 503 the caller may retry after a few
// seconds: a store, limiter or remote issuer that cannot answer now.
func ErrTemporarilyUnavailable(desc string) *Error {
	return newError("temporarily_unavailable", 503, desc).WithHeader("Retry-After", "5")
}

// ErrRateLimited is the 429 of a spent budget.
func ErrRateLimited(retryAfter int64) *Error {
	s := strconv.FormatInt(retryAfter, 10)
	return newError("rate_limit_exceeded", 429, "too many requests; retry after "+s+" seconds").WithHeader("Retry-After", s)
}

// ErrInvalidToken is a 401 with the RFC 6750 challenge of realm.
func ErrInvalidToken(realm, desc string) *Error {
	e := newError("invalid_token", 401, desc)
	return e.WithHeader("WWW-Authenticate", Challenge{Realm: realm, Error: e.Code, Description: desc}.String())
}

// ErrMissingToken is the 401 for a request without credentials; RFC 6750
// §3.1 says such a challenge carries no error code.
func ErrMissingToken(realm string) *Error {
	e := newError("invalid_token", 401, "a bearer token is required in the Authorization header")
	return e.WithHeader("WWW-Authenticate", Challenge{Realm: realm}.String())
}

// ErrInsufficientScope is the 403 of a valid token without the scopes,
// naming them in the challenge of realm.
func ErrInsufficientScope(realm string, scopes ...string) *Error {
	e := newError("insufficient_scope", 403, "this request requires scope: "+strings.Join(scopes, " "))
	return e.WithHeader("WWW-Authenticate", Challenge{Realm: realm, Error: e.Code, Description: e.Description, Scope: scopes}.String())
}

// ErrMethodNotAllowed answers a known path called with the wrong method.
func ErrMethodNotAllowed(allow ...string) *Error {
	e := newError("invalid_request", 405, "method not allowed; use "+strings.Join(allow, ", "))
	return e.WithHeader("Allow", strings.Join(allow, ", "))
}

// basicFailure is invalid_client with the challenge RFC 6749 §5.2 requires
// when the client used HTTP Basic.
func basicFailure(desc string) *Error {
	return ErrInvalidClient(desc).WithHeader("WWW-Authenticate", Challenge{Scheme: "Basic", Realm: "auth_agent"}.String())
}

// errServer is what every unexpected error becomes: nothing internal leaks.
var errServer = newError("server_error", 500, "the server could not complete the request")

// Challenge is a WWW-Authenticate challenge (RFC 6750 §3, RFC 9728 §5.1);
// every challenge the server and the guard send is built here.
type Challenge struct {
	Scheme           string // default "Bearer"
	Realm            string
	Error            string // omitted when empty (no credentials were sent)
	Description      string
	Scope            []string
	ResourceMetadata string
	// Algs are the DPoP challenge's algorithms (RFC 9449 §7.1).
	Algs []string
}

func (c Challenge) String() string {
	var b strings.Builder
	scheme := c.Scheme
	if scheme == "" {
		scheme = "Bearer"
	}
	b.WriteString(scheme)
	sep := " "
	param := func(name, value string) {
		b.WriteString(sep + name + `="` + sanitizeQuoted(value) + `"`)
		sep = ", "
	}
	if c.Realm != "" || c.Scheme != TokenTypeDPoP {
		param("realm", c.Realm)
	}
	if c.Error != "" {
		param("error", c.Error)
		if c.Description != "" {
			param("error_description", c.Description)
		}
	}
	if len(c.Scope) > 0 {
		param("scope", strings.Join(c.Scope, " "))
	}
	if c.ResourceMetadata != "" {
		param("resource_metadata", c.ResourceMetadata)
	}
	if len(c.Algs) > 0 {
		param("algs", strings.Join(c.Algs, " "))
	}
	return b.String()
}

// sanitizeQuoted makes text safe inside a quoted header parameter.
func sanitizeQuoted(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return '\''
		}
		return r
	}, s)
}

// AsError returns err as a protocol error: rate-limit refusals become 429
// or 503, and anything else that is not one already a server_error.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var ex *ratelimit.Exceeded
	if errors.As(err, &ex) {
		return ErrRateLimited(ex.RetryAfter)
	}
	if errors.Is(err, ratelimit.ErrUnavailable) {
		return ErrTemporarilyUnavailable("the rate limiter is unavailable; retry later")
	}
	if errors.Is(err, ErrUnavailable) {
		return ErrTemporarilyUnavailable("the database is unavailable; retry later")
	}
	if errors.Is(err, ErrUnstorable) {
		return ErrInvalidRequest("a value holds a character that cannot be stored (NUL, or not UTF-8)")
	}
	return errServer
}

// WriteError writes err in the SPEC's error shape.
func WriteError(w http.ResponseWriter, err error) {
	e := AsError(err)
	for k, v := range e.Header {
		w.Header()[k] = v
	}
	WriteJSON(w, e.Status, map[string]string{"error": e.Code, "error_description": e.Description})
}

// WriteJSON writes v as the JSON body of an answer that no cache may keep.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = 500
		body = []byte(`{"error":"server_error","error_description":"the server could not encode its response"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// WritePublicJSON writes a document caches may keep for five minutes
// (discovery, key sets, protected-resource metadata).
func WritePublicJSON(w http.ResponseWriter, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "public, max-age=300")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// writeData writes the /api/* success envelope.
func writeData(w http.ResponseWriter, status int, data any) {
	WriteJSON(w, status, struct {
		Success bool `json:"success"`
		Data    any  `json:"data"`
	}{true, data})
}
