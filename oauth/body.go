package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"time"
)

// DefaultMaxBody caps request bodies (SPEC §3).
const DefaultMaxBody = 64 << 10

// DefaultBodyTimeout is how long a request may take to send its body
// (SPEC §3).
const DefaultBodyTimeout = 10 * time.Second

// readError is the answer to a body that could not be read: too large,
// too slow, or cut off.
func readError(err error) *Error {
	var tooBig *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooBig):
		return ErrTooLarge("the request body is larger than the limit")
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		return ErrRequestTimeout("the request body did not arrive in time")
	default:
		return ErrInvalidRequest("could not read the request body")
	}
}

// DecodeJSON reads a JSON object body of at most max bytes into v. Unknown
// fields are ignored; anything else that is wrong is invalid_request: not
// one JSON object, a field of the wrong type, a key given twice, or a key
// that differs from one of v's fields only in case.
func DecodeJSON(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return ErrInvalidRequest("the body must be application/json")
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		return readError(err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return ErrInvalidRequest("the request body is empty; a JSON object is required")
	}
	keys, err := objectKeys(body)
	if err != nil {
		return ErrInvalidRequest("the request body must be exactly one valid JSON object")
	}
	if err := checkKeys(keys, jsonFields(v)); err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return ErrInvalidRequest("field " + typeErr.Field + " has the wrong type")
		}
		// Trailing data after the object lands here: a confused client.
		return ErrInvalidRequest("the request body must be exactly one valid JSON object")
	}
	return nil
}
