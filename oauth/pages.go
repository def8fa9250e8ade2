package oauth

import (
	"bytes"
	"html/template"
	"net/http"
	"net/url"
	"strings"
)

// pageCSP allows nothing but the page's own nonce-tagged script and style
// and requests back to this origin.
const pageCSP = "default-src 'none'; script-src 'nonce-%s'; style-src 'nonce-%s'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var signInTemplate = template.Must(template.New("signin").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="auth-agent-request-id" content="{{.RequestID}}">
<meta name="referrer" content="no-referrer">
<title>Sign in to {{.ClientName}} with Auth Agent</title>
<style nonce="{{.Nonce}}">
body{font-family:system-ui,-apple-system,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1f2328}
h1{font-size:1.3rem}.scopes{padding-left:1.2rem}.status{margin-top:1.5rem;padding:.75rem 1rem;border-radius:.4rem;background:#f6f8fa}
.status[data-state=authenticated]{background:#dafbe1}.status[data-state=expired],.status[data-state=error]{background:#ffebe9}
code{font-size:.85rem;overflow-wrap:anywhere}
</style>
</head>
<body>
<h1>Sign in to <span id="client-name">{{.ClientName}}</span></h1>
<p><strong>{{.ClientName}}</strong> asks an AI agent to sign in with Auth Agent and to grant:</p>
<ul class="scopes" id="scopes">{{range .Scopes}}<li><code>{{.}}</code></li>{{end}}</ul>
<p>The agent completes this request by calling <code>POST /api/agent-auth</code> with its credentials and the request id
<code id="request-id">{{.RequestID}}</code>.</p>
<div class="status" id="status" data-state="pending" role="status">Waiting for the agent to authenticate…</div>
<script nonce="{{.Nonce}}">
window.authRequest = {request_id: {{.RequestID}}};
(function () {
	var el = document.getElementById("status");
	var url = {{.StatusPath}} + "?request_id=" + encodeURIComponent(window.authRequest.request_id);
	function show(state, text) { el.setAttribute("data-state", state); el.textContent = text; }
	function poll() {
		fetch(url, {credentials: "same-origin", cache: "no-store"}).then(function (r) { return r.json(); }).then(function (body) {
			var d = (body && body.data) || {};
			if (d.status === "authenticated" && d.redirect_to) {
				show("authenticated", "Authenticated. Returning to the site…");
				window.location.replace(d.redirect_to);
				return;
			}
			if (d.status === "authenticated") { show("authenticated", "The agent authenticated in another browser."); return; }
			if (d.status === "expired") { show("expired", "This sign-in request expired. Start again from the site."); return; }
			if (d.status === "error") { show("error", "This sign-in request failed. Start again from the site."); return; }
			setTimeout(poll, 500);
		}).catch(function () { setTimeout(poll, 1500); });
	}
	poll();
})();
</script>
</body>
</html>
`))

var errorTemplate = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign-in error</title>
<style nonce="{{.Nonce}}">body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}</style></head>
<body><h1>This sign-in request cannot be processed</h1><p id="message">{{.Message}}</p>
<p>Go back to the site you came from and try again.</p></body>
</html>
`))

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
func (s *Server) statusPath() string {
	base := ""
	if u, err := url.Parse(s.cfg.Issuer); err == nil {
		base = strings.TrimSuffix(u.Path, "/")
	}
	return base + "/api/check-status"
}

// signInPage is what a browser sent to /oauth2/authorize sees.
func (s *Server) signInPage(w http.ResponseWriter, c *Client, scopes []string, requestID string) {
	nonce := randomToken(16)
	writePage(w, http.StatusOK, signInTemplate, nonce, map[string]any{
		"ClientName": c.Name, "Scopes": scopes, "RequestID": requestID, "Nonce": nonce, "StatusPath": s.statusPath(),
	})
}

// errorPage answers authorization requests that cannot be redirected.
func (s *Server) errorPage(w http.ResponseWriter, status int, message string) {
	nonce := randomToken(16)
	writePage(w, status, errorTemplate, nonce, map[string]any{"Message": message, "Nonce": nonce})
}
