package oauth_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

// application_type (MCP 2026-07-28): a native app's redirect URIs are
// loopback http or private-use schemes, a web client's https or loopback
// http; a client that declares none keeps the rules from before.
func TestApplicationTypeRedirects(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	cases := []struct {
		name    string
		typ     string
		public  bool
		uri     string
		ok      bool
		appType string // AppType() of the client made
	}{
		{"native loopback v4", oauth.AppNative, true, "http://127.0.0.1/cb", true, oauth.AppNative},
		{"native loopback v6", oauth.AppNative, true, "http://[::1]:8080/cb", true, oauth.AppNative},
		{"native localhost", oauth.AppNative, true, "http://localhost:3000/cb", true, oauth.AppNative},
		{"native private-use", oauth.AppNative, true, "com.example.app:/cb", true, oauth.AppNative},
		{"native https", oauth.AppNative, true, "https://app.example.com/cb", false, ""},
		{"native http remote", oauth.AppNative, true, "http://app.example.com/cb", false, ""},
		{"native one-label scheme", oauth.AppNative, true, "myapp:/cb", false, ""},
		{"native confidential loopback", oauth.AppNative, false, "http://127.0.0.1/cb", true, oauth.AppNative},
		{"native confidential private-use", oauth.AppNative, false, "com.example.app:/cb", false, ""},
		{"web https", oauth.AppWeb, true, "https://app.example.com/cb", true, oauth.AppWeb},
		{"web loopback (development)", oauth.AppWeb, true, "http://127.0.0.1:8080/cb", true, oauth.AppWeb},
		{"web private-use", oauth.AppWeb, true, "com.example.app:/cb", false, ""},
		{"web http remote", oauth.AppWeb, false, "http://app.example.com/cb", false, ""},
		{"undeclared https", "", true, "https://app.example.com/cb", true, oauth.AppWeb},
		{"undeclared loopback", "", true, "http://127.0.0.1/cb", true, oauth.AppWeb},
		{"undeclared private-use", "", true, "com.example.app:/cb", true, oauth.AppNative},
		{"undeclared confidential private-use", "", false, "com.example.app:/cb", false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := oauth.ClientSpec{ID: "app", Public: tc.public, RedirectURIs: []string{tc.uri}, ApplicationType: tc.typ}
			if !tc.public {
				spec.Secret = secret
			}
			c, _, err := oauth.NewClient(spec, oauth.ClientFromDynamic, testTime())
			if !tc.ok {
				if e := oauth.AsError(err); err == nil || e.Code != "invalid_redirect_uri" || e.Status != 400 {
					t.Fatalf("NewClient = %+v, %v; want invalid_redirect_uri", c, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.ApplicationType != tc.typ || c.AppType() != tc.appType {
				t.Fatalf("ApplicationType %q, AppType() %q; want %q, %q", c.ApplicationType, c.AppType(), tc.typ, tc.appType)
			}
		})
	}

	// The mixed registrations of before stay possible without a type.
	mixed, _, err := oauth.NewClient(oauth.ClientSpec{ID: "app", Public: true, RedirectURIs: []string{"https://app.example.com/cb", "com.example.app:/cb"}},
		oauth.ClientFromDynamic, testTime())
	if err != nil || mixed.AppType() != oauth.AppNative {
		t.Fatalf("undeclared, https and private-use: %+v, %v", mixed, err)
	}
	if _, _, err := oauth.NewClient(oauth.ClientSpec{ID: "app", Public: true, RedirectURIs: []string{testRedirect}, ApplicationType: "desktop"},
		oauth.ClientFromDynamic, testTime()); oauth.AsError(err).Code != "invalid_client_metadata" {
		t.Fatalf("application_type desktop: %v", err)
	}

	// A native app listens on whatever loopback port is free, confidential
	// or not; a confidential web client's loopback redirect is exact.
	native, _, err := oauth.NewClient(oauth.ClientSpec{ID: "cli", Secret: secret, RedirectURIs: []string{"http://127.0.0.1/cb"}, ApplicationType: oauth.AppNative},
		oauth.ClientFromAdmin, testTime())
	if err != nil || !native.MatchRedirectURI("http://127.0.0.1:51000/cb") {
		t.Fatalf("a confidential native app's loopback redirect on another port: %v", err)
	}
	web, _, err := oauth.NewClient(oauth.ClientSpec{ID: "site", Secret: secret, RedirectURIs: []string{"http://127.0.0.1/cb"}, ApplicationType: oauth.AppWeb},
		oauth.ClientFromAdmin, testTime())
	if err != nil || web.MatchRedirectURI("http://127.0.0.1:51000/cb") || !web.MatchRedirectURI("http://127.0.0.1/cb") {
		t.Fatalf("a confidential web client's loopback redirect: %v", err)
	}
}

// RFC 7591 registration reads application_type, refuses the redirects the
// type excludes with invalid_redirect_uri (§3.2.2), and echoes the type.
func TestRegistrationApplicationType(t *testing.T) {
	store := storage.NewMemory(nil)
	t.Cleanup(func() { store.Close() })
	s := newServerWith(t, store, cheapParams, nil, oauth.AlgRS256, func(c *oauth.Config, _ *oauth.Deps) {
		c.DynamicRegistration = oauth.RegistrationOpen
	})
	register := func(body string) (int, map[string]any) {
		t.Helper()
		rec := s.call("POST", "/oauth2/register", "", body)
		checkShape(t, rec)
		var resp map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		return rec.Code, resp
	}
	for name, tc := range map[string]struct {
		body string
		code string
	}{
		"native with https":    {`{"application_type":"native","token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1/cb","https://app.example.com/cb"]}`, "invalid_redirect_uri"},
		"web with private-use": {`{"application_type":"web","token_endpoint_auth_method":"none","redirect_uris":["com.example.app:/cb"]}`, "invalid_redirect_uri"},
		"unknown type":         {`{"application_type":"desktop","token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1/cb"]}`, "invalid_client_metadata"},
	} {
		status, resp := register(tc.body)
		if status != 400 || resp["error"] != tc.code {
			t.Errorf("%s: %d %v, want 400 %s", name, status, resp, tc.code)
		}
	}
	if list, err := store.ListClients(context.Background(), "", 100); err != nil || len(list) != 0 {
		t.Fatalf("refused registrations stored %d clients (%v)", len(list), err)
	}

	for name, tc := range map[string]struct {
		body                string
		stored, application string
	}{
		"native":               {`{"application_type":"native","token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1:33418/cb","com.example.app:/cb"]}`, oauth.AppNative, oauth.AppNative},
		"web":                  {`{"application_type":"web","redirect_uris":["https://app.example.com/cb","http://localhost:3000/cb"]}`, oauth.AppWeb, oauth.AppWeb},
		"undeclared loopback":  {`{"token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1:33418/cb"]}`, "", oauth.AppWeb},
		"undeclared private":   {`{"token_endpoint_auth_method":"none","redirect_uris":["com.example.app:/cb"]}`, "", oauth.AppNative},
		"undeclared mixed, ok": {`{"token_endpoint_auth_method":"none","redirect_uris":["https://app.example.com/cb","com.example.app:/cb"]}`, "", oauth.AppNative},
	} {
		status, resp := register(tc.body)
		if status != 201 || resp["application_type"] != tc.application {
			t.Errorf("%s: %d %v, want 201 with application_type %s", name, status, resp, tc.application)
			continue
		}
		c, err := store.GetClient(context.Background(), resp["client_id"].(string))
		if err != nil || c.ApplicationType != tc.stored {
			t.Errorf("%s: stored %+v, %v; want ApplicationType %q", name, c, err, tc.stored)
		}
	}
}

// The operator changes a client's type through the admin API, validated
// as a new client: a web client with an https redirect cannot become
// native without changing its redirects too.
func TestAdminApplicationType(t *testing.T) {
	s := newServer(t, cheapParams)
	ctx := context.Background()
	if _, _, err := s.Admin().CreateClient(ctx, oauth.ClientSpec{ID: "app", Public: true, RedirectURIs: []string{testRedirect}, ApplicationType: oauth.AppNative}); oauth.AsError(err).Code != "invalid_redirect_uri" {
		t.Fatalf("creating a native client with an https redirect: %v", err)
	}
	c, _, err := s.Admin().CreateClient(ctx, oauth.ClientSpec{ID: "app", Public: true, RedirectURIs: []string{testRedirect}, ApplicationType: oauth.AppWeb})
	if err != nil || c.ApplicationType != oauth.AppWeb {
		t.Fatalf("creating a web client: %+v, %v", c, err)
	}
	if _, err := s.Admin().UpdateClient(ctx, "app", oauth.ClientPatch{ApplicationType: ptr(oauth.AppNative)}); oauth.AsError(err).Code != "invalid_redirect_uri" {
		t.Fatalf("making a web client with an https redirect native: %v", err)
	}
	c, err = s.Admin().UpdateClient(ctx, "app", oauth.ClientPatch{ApplicationType: ptr(oauth.AppNative), RedirectURIs: &[]string{"http://127.0.0.1/cb"}})
	if err != nil || c.ApplicationType != oauth.AppNative || strings.Join(c.RedirectURIs, " ") != "http://127.0.0.1/cb" {
		t.Fatalf("making it native with a loopback redirect: %+v, %v", c, err)
	}
	name := "Renamed"
	if c, err = s.Admin().UpdateClient(ctx, "app", oauth.ClientPatch{Name: &name}); err != nil || c.ApplicationType != oauth.AppNative {
		t.Fatalf("a rename keeps the type: %+v, %v", c, err)
	}
}

// Discovery prefers client ID metadata documents (MCP 2026-07-28): their
// support is advertised, ahead of the registration endpoint, which stays
// for the clients of earlier revisions.
func TestDiscoveryPrefersClientMetadataDocuments(t *testing.T) {
	for _, docs := range []bool{true, false} {
		store := storage.NewMemory(nil)
		t.Cleanup(func() { store.Close() })
		s := newServerWith(t, store, cheapParams, nil, oauth.AlgRS256, func(c *oauth.Config, _ *oauth.Deps) {
			c.DynamicRegistration = oauth.RegistrationOpen
			c.ClientIDMetadataDocuments = docs
		})
		for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
			rec := s.call("GET", path, "", "")
			var md map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &md); err != nil || rec.Code != 200 {
				t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
			}
			if md["client_id_metadata_document_supported"] != docs || md["registration_endpoint"] != issuer+"/oauth2/register" {
				t.Fatalf("%s with documents %v: %s", path, docs, rec.Body)
			}
			body := rec.Body.String()
			if strings.Index(body, `"client_id_metadata_document_supported"`) > strings.Index(body, `"registration_endpoint"`) {
				t.Fatalf("%s: the registration endpoint comes before the documents: %s", path, body)
			}
		}
	}
}
