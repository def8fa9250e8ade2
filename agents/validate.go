package agents

import (
	"fmt"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/trustelem/zxcvbn"
	"golang.org/x/text/unicode/norm"
)

// ValidationError names the field that failed and why; its message is safe
// to show to the caller.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ValidateID checks an agent id: 3–64 characters of [A-Za-z0-9_-].
func ValidateID(id string) error {
	if len(id) < 3 || len(id) > 64 {
		return invalid("agent_id", "must be 3 to 64 characters")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return invalid("agent_id", "may contain only letters, digits, '_' and '-'")
		}
	}
	return nil
}

// NormalizeSecret is the form a secret is checked, hashed and compared in:
// Unicode NFKC, so the same secret typed on another keyboard or pasted
// from another system (full-width letters, a no-break space) is the same.
func NormalizeSecret(secret string) string { return norm.NFKC.String(secret) }

// minGuessScore is the zxcvbn score (0–4) a secret needs: 2 refuses the
// secrets on the common-password lists and their patterns ("Password1!",
// "Qwerty123!", "Welcome1!" score 1) and keeps the seed's "Test123456!"
// (2).
const minGuessScore = 2

// guessInput bounds what the estimator reads: its cost grows with the
// length, and a secret whose first 64 characters are hard to guess is.
const guessInput = 64

// ValidateSecret checks a secret chosen by a person, in its normalised form
// (NormalizeSecret): 10–128 characters, at least 10 of them visible (not
// whitespace, not combining marks), no control or format characters
// (zero-width spaces, bidi controls), a lowercase letter, an uppercase
// letter, a digit and a visible symbol (punctuation or symbol class), and
// not guessable (zxcvbn score ≥ 2). Each refusal names its rule.
func ValidateSecret(field, secret string) error {
	if !utf8.ValidString(secret) {
		return invalid(field, "must be valid UTF-8")
	}
	secret = NormalizeSecret(secret)
	n := utf8.RuneCountInString(secret)
	if n < 10 || n > 128 {
		return invalid(field, "must be 10 to 128 characters")
	}
	var lower, upper, digit, symbol bool
	visible := 0
	for _, r := range secret {
		switch {
		case invisible(r):
			return invalid(field, "must not contain control, format, separator, unassigned or private-use characters (such as line breaks or zero-width spaces)")
		case unicode.IsSpace(r) || unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r) || r == brailleBlank:
			continue // neither visible nor a symbol
		case unicode.IsLower(r):
			lower = true
		case unicode.IsUpper(r):
			upper = true
		case unicode.IsDigit(r):
			digit = true
		case unicode.IsPunct(r) || unicode.IsSymbol(r):
			symbol = true
		}
		visible++
	}
	if visible < 10 {
		return invalid(field, "must have at least 10 visible characters (spaces and combining marks do not count)")
	}
	if !lower || !upper || !digit || !symbol {
		return invalid(field, "must contain a lowercase letter, an uppercase letter, a digit and a visible symbol (punctuation or a symbol; a space is not one)")
	}
	if guessable(secret) {
		return invalid(field, "is too easy to guess (a common password or pattern): choose a longer, less predictable secret")
	}
	return nil
}

// brailleBlank is a symbol (So) that shows nothing.
const brailleBlank = '\u2800'

// invisible reports characters a secret may not hold: controls, format
// characters, line and paragraph separators, surrogates, private-use and
// unassigned code points, variation selectors and the other default
// ignorables (the Hangul fillers among them), which show nothing or differ
// between systems.
func invisible(r rune) bool {
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Cs, unicode.Co, unicode.Zl, unicode.Zp,
		unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector) ||
		!unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z)
}

// guessable reports whether the estimator scores secret below minGuessScore.
func guessable(secret string) bool {
	if utf8.RuneCountInString(secret) > guessInput {
		secret = string([]rune(secret)[:guessInput])
	}
	return zxcvbn.PasswordStrength(secret, nil).Score < minGuessScore
}

// ValidateModelName checks a model name: 1–128 printable characters.
func ValidateModelName(s string) error {
	return validateText("model_name", s, 1, 128)
}

// ValidateOwnerName checks an owner name: at most 128 printable characters.
func ValidateOwnerName(s string) error {
	return validateText("owner_name", s, 0, 128)
}

// ValidateEmail checks a plain e-mail address (no display name), at most 254
// characters.
func ValidateEmail(s string) error {
	if s == "" {
		return invalid("owner_email", "is required")
	}
	if len(s) > 254 {
		return invalid("owner_email", "must be at most 254 characters")
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Address != s || addr.Name != "" {
		return invalid("owner_email", "must be a valid e-mail address")
	}
	at := strings.LastIndexByte(s, '@')
	if at < 1 || !strings.Contains(s[at+1:], ".") && s[at+1:] != "localhost" {
		return invalid("owner_email", "must be a valid e-mail address")
	}
	return nil
}

// ValidateScopeToken checks one scope value against RFC 6749 §3.3
// (printable ASCII without space, '"' and '\'), at most 128 characters.
func ValidateScopeToken(s string) error {
	if s == "" || len(s) > 128 {
		return invalid("scope", "each scope must be 1 to 128 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return invalid("scope", "scope %q contains a character RFC 6749 does not allow", s)
		}
	}
	return nil
}

// ValidatePermissions checks a permission list: at most 64 valid scope
// tokens, none repeated.
func ValidatePermissions(perms []string) error {
	if len(perms) > 64 {
		return invalid("permissions", "at most 64 permissions")
	}
	seen := make(map[string]bool, len(perms))
	for _, p := range perms {
		if err := ValidateScopeToken(p); err != nil {
			return invalid("permissions", "%q is not a valid scope", p)
		}
		if seen[p] {
			return invalid("permissions", "%q is listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

func validateText(field, s string, min, max int) error {
	if !utf8.ValidString(s) {
		return invalid(field, "must be valid UTF-8")
	}
	n := utf8.RuneCountInString(s)
	if n < min {
		return invalid(field, "is required")
	}
	if n > max {
		return invalid(field, "must be at most %d characters", max)
	}
	if strings.TrimSpace(s) == "" && n > 0 {
		return invalid(field, "must not be blank")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return invalid(field, "must not contain control characters")
		}
	}
	return nil
}
