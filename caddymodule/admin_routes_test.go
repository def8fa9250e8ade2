package caddymodule

import (
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

// TestTrustedIdPAdminRoutes drives /auth_agent/trusted_idps on the memory
// store with one IdP from the configuration: statuses, bodies, the
// SPEC's error shape and what is stored.
func TestTrustedIdPAdminRoutes(t *testing.T) {
	store := storage.NewMemory(nil)
	t.Cleanup(func() { store.Close() })
	cfgIdP, err := oauth.NewTrustedIdP(oauth.TrustedIdPSpec{Issuer: "https://cfg.example.com", Clients: []string{"c"}, Scopes: []string{"mcp:tools"}},
		oauth.TrustedIdPFromConfig, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	ad := oauth.NewServer(oauth.Config{Issuer: "https://auth.example.com", TrustedIdPs: []oauth.TrustedIdP{*cfgIdP}}, oauth.Deps{Store: store}).Admin()
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		if body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
		w := httptest.NewRecorder()
		if err := serveAdmin(ad, w, r); err != nil {
			oauth.WriteError(w, err)
		}
		var v map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s %s: not JSON: %s", method, path, w.Body)
		}
		if w.Code >= 400 && (v["error"] == nil || v["error_description"] == nil || len(v) != 2) {
			t.Fatalf("%s %s: error shape %s", method, path, w.Body)
		}
		return w.Code, v
	}
	const base = "/auth_agent/trusted_idps"
	one := func(issuer string) string { return base + "/" + url.PathEscape(issuer) }

	for _, b := range []string{
		`{"issuer":"http://idp.example.com","clients":["c"],"scopes":["s"]}`,
		`{"issuer":"https://idp.example.com","clients":[],"scopes":["s"]}`,
		`{"issuer":"https://idp.example.com","clients":["c"]}`,
		`{"issuer":"https://idp.example.com","clients":["c"],"scopes":["s"],"subject":"anyone"}`,
		`{"issuer":"https://idp.example.com","clients":["c"],"scopes":["s"],"grant":"saml"}`,
		`{"issuer":"https://idp.example.com","clients":["c"],"scopes":["s"],"jwks_uri":"ftp://idp.example.com/k"}`,
		`{"issuer":`,
		`{"issuer":"https://idp.example.com","clients":"c","scopes":["s"]}`,
	} {
		if code, v := call("POST", base, b); code != 400 {
			t.Errorf("POST %s: %d %v, want 400", b, code, v)
		}
	}
	if list, _ := store.ListTrustedIdPs(t.Context()); len(list) != 0 {
		t.Fatalf("refused requests stored %v", list)
	}
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", base, `{"issuer":"https://cfg.example.com","clients":["c"],"scopes":["s"]}`, 409},
		{"DELETE", one("https://cfg.example.com"), "", 409},
		{"DELETE", one("https://unknown.example.com"), "", 404},
		{"DELETE", one("not a url"), "", 404},
		{"GET", one("https://unknown.example.com"), "", 404},
		{"GET", base + "/https:%2F%2Fa/b", "", 404},
		{"PATCH", one("https://cfg.example.com"), "", 405},
		{"PUT", base, "", 405},
	} {
		if code, v := call(c.method, c.path, c.body); code != c.want {
			t.Errorf("%s %s: %d %v, want %d", c.method, c.path, code, v, c.want)
		}
	}

	const issuer = "https://idp.example.com:8443/tenant/a"
	code, made := call("POST", base, `{"issuer":"`+issuer+`","jwks_uri":"https://idp.example.com:8443/jwks","clients":["c","d"],"scopes":["mcp:tools"],"subject":"external","grant":"jwt"}`)
	if code != 201 || made["issuer"] != issuer || made["source"] != "admin" || made["subject"] != "external" || made["grant"] != "jwt" ||
		made["jwks_uri"] != "https://idp.example.com:8443/jwks" || made["created_at"] == nil {
		t.Fatalf("create: %d %v", code, made)
	}
	if stored, err := store.GetTrustedIdP(t.Context(), issuer); err != nil || !stored.AllowJWT || len(stored.Clients) != 2 {
		t.Fatalf("stored: %+v %v", stored, err)
	}
	if code, v := call("POST", base, `{"issuer":"`+issuer+`","clients":["c"],"scopes":["s"]}`); code != 409 {
		t.Fatalf("the same issuer again: %d %v", code, v)
	}
	code, got := call("GET", one(issuer), "")
	if code != 200 || got["issuer"] != issuer || got["source"] != "admin" {
		t.Fatalf("get: %d %v", code, got)
	}
	if code, got := call("GET", one("https://cfg.example.com"), ""); code != 200 || got["source"] != "config" || got["subject"] != "agent" {
		t.Fatalf("get configured: %d %v", code, got)
	}
	code, list := call("GET", base, "")
	idps, _ := list["trusted_idps"].([]any)
	if code != 200 || len(idps) != 2 || idps[0].(map[string]any)["source"] != "config" || idps[1].(map[string]any)["issuer"] != issuer {
		t.Fatalf("list: %d %v", code, list)
	}
	if code, v := call("DELETE", one(issuer), ""); code != 200 || v["deleted"] != issuer {
		t.Fatalf("delete: %d %v", code, v)
	}
	if code, _ := call("GET", one(issuer), ""); code != 404 {
		t.Fatalf("get after delete: %d", code)
	}
}
