package oauth

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"net/url"
	"strings"
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

// signInPage is what a browser sent to /oauth2/authorize sees.
func (s *authorizer) signInPage(w http.ResponseWriter, c *Client, scopes []string, requestID string) {
	nonce := randomToken(16)
	writePage(w, http.StatusOK, signInTemplate, nonce, map[string]any{
		"ClientName": c.Name, "Scopes": scopes, "RequestID": requestID, "Nonce": nonce, "StatusPath": s.statusPath(),
	})
}

// errorPage answers authorization requests that cannot be redirected.
func (s *authorizer) errorPage(w http.ResponseWriter, status int, message string) {
	nonce := randomToken(16)
	writePage(w, status, errorTemplate, nonce, map[string]any{"Message": message, "Nonce": nonce})
}
