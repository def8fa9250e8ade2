package e2e

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// TestTrustedIdPAdmin: an IdP trusted through the admin API of one
// instance is honoured by the other instance on the same PostgreSQL
// database, its grant redeemed there; deleted there, its next grant is
// refused at the first. A trusted_idp of the Caddyfile stays read-only.
func TestTrustedIdPAdmin(t *testing.T) {
	cl := newCluster(t)
	idp := newTestIdP(t)
	form := func(sub string) url.Values {
		grant := idp.grant(t, idp.key, cl.a.issuer, "demo-site", sub, func(_ map[string]any, c jwt.MapClaims) { c["scope"] = "data:read" })
		return url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {grant}}
	}
	wantError(t, cl.b.formCall(t, "/oauth2/token", "demo-site", clientSecret, form("ext-user")), 400, "invalid_grant")

	body := fmt.Sprintf(`{"issuer":%q,"clients":["demo-site"],"scopes":["data:read"],"subject":"external"}`, idp.URL)
	r := cl.a.admin(t, "POST", "/auth_agent/trusted_idps", body)
	if r.status != 201 || r.json["issuer"] != idp.URL || r.json["source"] != "admin" || r.json["subject"] != "external" || r.json["created_at"] == nil {
		t.Fatalf("trusting an IdP at a: %d %s", r.status, r.body)
	}
	wantError(t, cl.b.admin(t, "POST", "/auth_agent/trusted_idps", body), 409, "invalid_request")
	wantError(t, cl.b.admin(t, "POST", "/auth_agent/trusted_idps",
		fmt.Sprintf(`{"issuer":%q,"clients":["demo-site"],"scopes":["data:read"]}`, cl.idp.URL)), 409, "invalid_request")
	wantError(t, cl.b.admin(t, "POST", "/auth_agent/trusted_idps", `{"issuer":"http://idp.example.com","clients":["demo-site"],"scopes":["data:read"]}`), 400, "invalid_request")

	r = cl.b.admin(t, "GET", "/auth_agent/trusted_idps", "")
	list, _ := r.json["trusted_idps"].([]any)
	if r.status != 200 || len(list) != 2 || list[0].(map[string]any)["issuer"] != cl.idp.URL || list[0].(map[string]any)["source"] != "config" ||
		list[1].(map[string]any)["issuer"] != idp.URL || list[1].(map[string]any)["source"] != "admin" {
		t.Fatalf("the list at b: %d %s", r.status, r.body)
	}
	// The issuer as one path segment, escaped by PathEscape (":" kept)
	// or as encodeURIComponent does (":" escaped too).
	one, encoded := "/auth_agent/trusted_idps/"+url.PathEscape(idp.URL), "/auth_agent/trusted_idps/"+url.QueryEscape(idp.URL)
	for _, path := range []string{one, encoded} {
		if r := cl.b.admin(t, "GET", path, ""); r.status != 200 || r.json["issuer"] != idp.URL || r.json["clients"].([]any)[0] != "demo-site" {
			t.Fatalf("GET %s at b: %d %s", path, r.status, r.body)
		}
	}

	r = cl.b.formCall(t, "/oauth2/token", "demo-site", clientSecret, form("ext-user"))
	if r.status != 200 {
		t.Fatalf("the IdP's grant at b: %d %s", r.status, r.body)
	}
	if _, claims := decodeJWT(t, r.json["access_token"].(string)); claims["sub"] != "ext-user" || claims["idp"] != idp.URL || claims["scope"] != "data:read" {
		t.Fatalf("the access token of the IdP's grant: %v", claims)
	}

	wantError(t, cl.b.admin(t, "DELETE", "/auth_agent/trusted_idps/"+url.PathEscape(cl.idp.URL), ""), 409, "invalid_request")
	if r := cl.b.admin(t, "DELETE", encoded, ""); r.status != 200 || r.json["deleted"] != idp.URL {
		t.Fatalf("deleting at b: %d %s", r.status, r.body)
	}
	wantError(t, cl.a.formCall(t, "/oauth2/token", "demo-site", clientSecret, form("ext-user")), 400, "invalid_grant")
	wantError(t, cl.a.admin(t, "GET", one, ""), 404, "invalid_request")
	wantError(t, cl.a.admin(t, "DELETE", one, ""), 404, "invalid_request")
	// The configured one still works.
	cl.a.registerOK(t, "cfg-idp-agent")
	grant := cl.idp.grant(t, cl.idp.key, cl.a.issuer, "demo-site", "cfg-idp-agent", func(_ map[string]any, c jwt.MapClaims) { c["scope"] = "data:read" })
	if r := cl.a.formCall(t, "/oauth2/token", "demo-site", clientSecret, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {grant}}); r.status != 200 {
		t.Fatalf("the configured IdP's grant: %d %s", r.status, r.body)
	}
	if logs := cl.a.log.String() + cl.b.log.String(); !strings.Contains(logs, "trusted_idp.created") || !strings.Contains(logs, "trusted_idp.deleted") {
		t.Fatal("no trusted_idp.created and trusted_idp.deleted audit events")
	}
}
