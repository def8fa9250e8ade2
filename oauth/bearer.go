package oauth

import (
	"errors"
	"strings"
)

// ErrNoBearer is ParseBearer's error for a request without credentials.
var ErrNoBearer = errors.New("no bearer token")

// ParseBearer extracts the token from an Authorization header value
// ("Bearer <token>", scheme case-insensitive, RFC 6750 §2.1). The token must
// be a b64token of at most 8 KiB.
func ParseBearer(header string) (string, error) {
	if header == "" {
		return "", ErrNoBearer
	}
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New(`the Authorization header must use the Bearer scheme`)
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || len(token) > 8192 {
		return "", errors.New("the bearer token is empty or too long")
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=') {
			return "", errors.New("the bearer token contains characters RFC 6750 does not allow")
		}
	}
	return token, nil
}
