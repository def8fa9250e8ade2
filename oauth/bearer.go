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
	scheme, token, err := ParseAuthorization(header)
	if err == nil && scheme != TokenTypeBearer {
		return "", errors.New(`the Authorization header must use the Bearer scheme`)
	}
	return token, err
}

// ParseAuthorization extracts the scheme (TokenTypeBearer or
// TokenTypeDPoP, RFC 9449 §7.1) and the token from an Authorization
// header value; the token's rules are ParseBearer's.
func ParseAuthorization(header string) (scheme, token string, err error) {
	if header == "" {
		return "", "", ErrNoBearer
	}
	scheme, token, ok := strings.Cut(header, " ")
	switch {
	case !ok:
		return "", "", errors.New(`the Authorization header must use the Bearer or DPoP scheme`)
	case strings.EqualFold(scheme, TokenTypeBearer):
		scheme = TokenTypeBearer
	case strings.EqualFold(scheme, TokenTypeDPoP):
		scheme = TokenTypeDPoP
	default:
		return "", "", errors.New(`the Authorization header must use the Bearer or DPoP scheme`)
	}
	token = strings.TrimLeft(token, " ")
	if err := checkToken68(token); err != nil {
		return "", "", err
	}
	return scheme, token, nil
}

// checkToken68 checks a token of an Authorization header: a b64token
// (RFC 6750 §2.1) of at most 8 KiB.
func checkToken68(token string) error {
	if token == "" || len(token) > 8192 {
		return errors.New("the bearer token is empty or too long")
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=') {
			return errors.New("the bearer token contains characters RFC 6750 does not allow")
		}
	}
	return nil
}
