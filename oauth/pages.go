package oauth

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// pageCSP allows nothing but the page's own nonce-tagged script and style
// and requests back to this origin.
const pageCSP = "default-src 'none'; script-src 'nonce-%s'; style-src 'nonce-%s'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed templates/*.html
var templateFiles embed.FS

var (
	signInTemplate = template.Must(template.ParseFS(templateFiles, "templates/signin.html"))
	errorTemplate  = template.Must(template.ParseFS(templateFiles, "templates/error.html"))
)

func writePage(w http.ResponseWriter, status int, tmpl *template.Template, nonce string, data any) {
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, data); err != nil {
		WriteError(w, errServer)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", sprintfCSP(nonce))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func sprintfCSP(nonce string) string {
	return strings.ReplaceAll(pageCSP, "%s", nonce)
}

// statusPath is where the page polls: under the issuer's path, so an IdP
// mounted below a prefix (handle_path /idp/*) still works.
func (s *authorizer) statusPath() string {
	base := ""
	if u, err := url.Parse(s.cfg.Issuer); err == nil {
		base = strings.TrimSuffix(u.Path, "/")
	}
	return base + "/api/check-status"
}

// identityScopeWords say in plain words what a site learns through each
// identity scope.
var identityScopeWords = map[string]string{
	ScopeOpenID:      "Confirm the agent's identity",
	ScopeProfile:     "See the agent's name, model and owner's name",
	ScopeEmail:       "See the owner's email address",
	ScopePermissions: "See which API permissions the agent holds",
}

// scopeLine is one requested scope as the sign-in page shows it.
type scopeLine struct {
	Code  string // the scope as requested
	Words string // what it lets the site do, in plain words
}

// scopeLines puts the requested scopes into words: the operator's
// description first (it may also reword an identity scope, say to
// translate it), then the built-in words, then a neutral sentence naming
// the scope.
func (s *authorizer) scopeLines(scopes []string) []scopeLine {
	out := make([]scopeLine, 0, len(scopes))
	for _, sc := range scopes {
		words := s.cfg.ScopeDescriptions[sc]
		if words == "" {
			words = identityScopeWords[sc]
		}
		if words == "" {
			words = "Use the API scope " + sc
		}
		out = append(out, scopeLine{Code: sc, Words: words})
	}
	return out
}

// clientHost is what identifies a client beyond the name it gives itself:
// for a client described by a Client ID Metadata Document, the host of its
// client_id URL (the document was fetched from there, so whoever runs that
// host vouches for the name). Other clients were registered by the
// operator and have no such host.
func clientHost(c *Client) string {
	if c.Source != ClientFromDocument {
		return ""
	}
	u, err := url.Parse(c.ID)
	if err != nil || u.Scheme != "https" {
		return ""
	}
	return u.Host
}

// linkURL marks a registered redirect URI as safe for an href. It was
// checked at registration (https, http on loopback, or a reverse-domain
// private-use scheme, which no javascript: or data: URL can be); anything
// else gives no link rather than one html/template would defuse into
// "#ZgotmplZ".
func linkURL(raw string) template.URL {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	if u.Scheme != "https" && u.Scheme != "http" && !isPrivateUseScheme(u.Scheme) {
		return ""
	}
	return template.URL(raw)
}

// initial is the letter the page shows in place of a logo.
func initial(name string) string {
	for _, r := range name {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			return strings.ToUpper(string(r))
		}
	}
	return "?"
}

// tone picks one of the page's avatar colours from the name, so one site
// keeps its colour from one sign-in to the next.
func tone(name string) int {
	h := 0
	for i := 0; i < len(name); {
		r, n := utf8.DecodeRuneInString(name[i:])
		h = (h*31 + int(r)) % 1000003
		i += n
	}
	return h % 6
}

// signInData is what templates/signin.html renders.
type signInData struct {
	Nonce      string
	ClientName string
	// ClientHost is the host of a metadata-document client's URL; empty
	// for other clients.
	ClientHost string
	// RedirectHost is where the browser returns after the sign-in.
	RedirectHost string
	// Verified is false for a client that named itself (dynamically
	// registered, or described by its metadata document): another site
	// could have registered the same name.
	Verified   bool
	Initial    string
	Tone       int
	Scopes     []scopeLine
	RequestID  string
	StatusPath string
	// ExpiresIn is the request's lifetime in seconds, for the countdown.
	ExpiresIn int64
	// CancelURL sends the browser back to the site with access_denied;
	// ExpiredURL and FailedURL do the same when the request expired or the
	// page lost track of it, with a description saying so.
	CancelURL  template.URL
	ExpiredURL string
	FailedURL  string
	IssuerHost string
}

// signInPage is what a browser sent to /oauth2/authorize sees.
func (s *authorizer) signInPage(w http.ResponseWriter, c *Client, p *authorizeParams, requestID string) {
	nonce := randomToken(16)
	writePage(w, http.StatusOK, signInTemplate, nonce, s.signInData(c, p, requestID, nonce))
}

func (s *authorizer) signInData(c *Client, p *authorizeParams, requestID, nonce string) signInData {
	host := clientHost(c)
	name := c.Name
	if name == "" {
		name = host
	}
	if name == "" {
		name = c.ID
	}
	back := func(description string) string {
		return redirectURL(p.redirectURI, map[string]string{
			"error": "access_denied", "error_description": description, "state": p.state, "iss": s.cfg.Issuer,
		})
	}
	cancel := linkURL(back("The sign-in was cancelled in the browser."))
	returns := ""
	if cancel != "" { // a redirect a browser may follow: say where it goes
		returns = redirectHost(p.redirectURI)
	}
	return signInData{
		Nonce:        nonce,
		ClientName:   name,
		ClientHost:   host,
		RedirectHost: returns,
		Verified:     c.Verified(),
		Initial:      initial(name),
		Tone:         tone(name),
		Scopes:       s.scopeLines(p.scopes),
		RequestID:    requestID,
		StatusPath:   s.statusPath(),
		ExpiresIn:    int64(s.cfg.RequestLifetime / time.Second),
		CancelURL:    linkURL(back("The sign-in was cancelled in the browser.")),
		ExpiredURL:   string(linkURL(back("The sign-in request expired before an agent completed it."))),
		FailedURL:    string(linkURL(back("The sign-in page lost contact with the identity provider."))),
		IssuerHost:   s.issuerHost(),
	}
}

// issuerHost names this identity provider at the foot of its pages.
func (s *authorizer) issuerHost() string {
	if u, err := url.Parse(s.cfg.Issuer); err == nil && u.Host != "" {
		return u.Host
	}
	return s.cfg.Issuer
}

// errorPage answers authorization requests that cannot be redirected.
func (s *authorizer) errorPage(w http.ResponseWriter, status int, message string) {
	nonce := randomToken(16)
	writePage(w, status, errorTemplate, nonce, map[string]any{"Message": message, "Nonce": nonce, "IssuerHost": s.issuerHost()})
}
