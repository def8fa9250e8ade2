// Package oauth is the protocol: the agent endpoints, tokens, signing keys
// and the errors every endpoint answers with.
package oauth

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
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

func newError(code string, status int, description string) *Error {
	return &Error{Code: code, Status: status, Description: description}
}

// Constructors for the error codes of SPEC §3.
func ErrInvalidRequest(desc string) *Error { return newError("invalid_request", 400, desc) }
func ErrInvalidClient(desc string) *Error  { return newError("invalid_client", 401, desc) }
func ErrInvalidGrant(desc string) *Error   { return newError("invalid_grant", 400, desc) }
func ErrInvalidScope(desc string) *Error   { return newError("invalid_scope", 400, desc) }
func ErrAccessDenied(desc string) *Error   { return newError("access_denied", 403, desc) }
func ErrNotFoundPath(desc string) *Error   { return newError("invalid_request", 404, desc) }
func ErrConflict(desc string) *Error       { return newError("invalid_request", 409, desc) }
func ErrTooLarge(desc string) *Error       { return newError("invalid_request", 413, desc) }

// ErrInvalidToken is a 401 with the RFC 6750 challenge.
func ErrInvalidToken(realm, desc string) *Error {
	e := newError("invalid_token", 401, desc)
	return e.WithHeader("WWW-Authenticate", bearerChallenge(realm, "invalid_token", desc))
}

// ErrMissingToken is the 401 for a request without credentials; RFC 6750
// §3.1 says such a challenge carries no error code.
func ErrMissingToken(realm string) *Error {
	e := newError("invalid_token", 401, "a bearer token is required in the Authorization header")
	return e.WithHeader("WWW-Authenticate", `Bearer realm="`+realm+`"`)
}

// ErrMethodNotAllowed answers a known path called with the wrong method.
func ErrMethodNotAllowed(allow ...string) *Error {
	e := newError("invalid_request", 405, "method not allowed; use "+strings.Join(allow, ", "))
	return e.WithHeader("Allow", strings.Join(allow, ", "))
}

// errServer is what every unexpected error becomes: nothing internal leaks.
var errServer = newError("server_error", 500, "the server could not complete the request")

func bearerChallenge(realm, code, desc string) string {
	return `Bearer realm="` + realm + `", error="` + code + `", error_description="` + sanitizeQuoted(desc) + `"`
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

// AsError returns err as a protocol error; anything that is not one already
// is a server_error.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return errServer
}

// WriteError writes err in the SPEC's error shape.
func WriteError(w http.ResponseWriter, err error) {
	e := AsError(err)
	for k, v := range e.Header {
		w.Header()[k] = v
	}
	writeJSON(w, e.Status, map[string]string{"error": e.Code, "error_description": e.Description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
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

// writeData writes the /api/* success envelope.
func writeData(w http.ResponseWriter, status int, data any) {
	writeJSON(w, status, struct {
		Success bool `json:"success"`
		Data    any  `json:"data"`
	}{true, data})
}
