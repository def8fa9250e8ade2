package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestDocumentedOperationsAnswer: every operation either document lists
// is served — called with placeholder values, none answers the 404 of an
// unknown path or a 405 — and the traffic passes the contract checker
// like every other test's.
func TestDocumentedOperationsAnswer(t *testing.T) {
	c := newCaddy(t, "")
	c.start("\t\tdynamic_client_registration open\n")
	bases := map[string]string{"api": c.base(), "admin": fmt.Sprintf("http://127.0.0.1:%d", c.adminPort)}
	for _, kind := range []string{"api", "admin"} {
		d := contract.docs[kind]
		paths := d.doc.Paths.InMatchingOrder()
		sort.Strings(paths)
		for _, path := range paths {
			for method, op := range d.doc.Paths.Value(path).Operations() {
				target := bases[kind] + strings.NewReplacer("{agent_id}", "nobody", "{client_id}", "nobody",
					"{webhook_id}", "nobody", "{delivery_id}", "nobody", "{issuer}", "nobody").Replace(path)
				header := map[string]string{}
				body := ""
				if op.RequestBody != nil && op.RequestBody.Value != nil {
					if op.RequestBody.Value.Content.Get("application/json") != nil {
						body = "{}"
					} else {
						header["Content-Type"] = "application/x-www-form-urlencoded"
					}
				}
				r := do(t, method, target, header, body)
				what := fmt.Sprintf("%s %s (%s): %d %s", method, path, op.OperationID, r.status, r.body)
				if r.status == http.StatusMethodNotAllowed {
					t.Errorf("%s: the document lists a method the server does not serve", what)
				}
				if r.status == http.StatusNotFound && strings.Contains(r.str("error_description"), " endpoint at ") {
					t.Errorf("%s: the document lists a path the server does not serve", what)
				}
			}
		}
	}
}

// TestAPIDocumentsOverHTTP: the served documents through Caddy carry the
// CORS headers of the IdP's endpoints, and bad input to them gets the
// error shape.
func TestAPIDocumentsOverHTTP(t *testing.T) {
	c := newCaddy(t, "")
	c.start("")
	for _, path := range []string{"/api/openapi.json", "/api/postman-collection.json"} {
		r := do(t, "GET", c.base()+path, map[string]string{"Origin": "https://app.example.com"}, "")
		if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") == "" || r.header.Get("ETag") == "" {
			t.Fatalf("GET %s: %d %v", path, r.status, r.header)
		}
		var doc map[string]any
		if err := json.Unmarshal(r.body, &doc); err != nil {
			t.Fatal(err)
		}
		if path == "/api/openapi.json" {
			loaded, err := openapi3.NewLoader().LoadFromData(r.body)
			if err != nil {
				t.Fatalf("the served document does not load: %v", err)
			}
			if len(loaded.Servers) != 1 || loaded.Servers[0].URL != c.base() {
				t.Fatalf("servers %v, want this issuer %s", loaded.Servers, c.base())
			}
		}
		if r := do(t, "GET", c.base()+path, map[string]string{"If-None-Match": r.header.Get("ETag")}, ""); r.status != 304 {
			t.Fatalf("If-None-Match: %d", r.status)
		}
		wantError(t, do(t, "GET", c.base()+path+"?format=yaml", nil, ""), 400, "invalid_request")
		r = do(t, "POST", c.base()+path, nil, "{}")
		wantError(t, r, 405, "invalid_request")
		if r.header.Get("Allow") != "GET, HEAD" {
			t.Fatalf("Allow %q", r.header.Get("Allow"))
		}
	}
}
