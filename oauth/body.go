package oauth

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
)

// DefaultMaxBody caps request bodies (SPEC §3).
const DefaultMaxBody = 64 << 10

// DecodeJSON reads a JSON object body of at most max bytes into v. Unknown
// fields are ignored; anything else that is wrong is invalid_request.
func DecodeJSON(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return ErrInvalidRequest("the body must be application/json")
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooBig):
			return ErrTooLarge("the request body is larger than the limit")
		case errors.Is(err, io.EOF):
			return ErrInvalidRequest("the request body is empty; a JSON object is required")
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return ErrInvalidRequest("field " + typeErr.Field + " has the wrong type")
		default:
			return ErrInvalidRequest("the request body is not a valid JSON object")
		}
	}
	// One object only: trailing data means a confused client.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return ErrTooLarge("the request body is larger than the limit")
		}
		return ErrInvalidRequest("the request body must hold exactly one JSON object")
	}
	return nil
}
