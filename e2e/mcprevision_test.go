package e2e

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestMCPRevision checks what MCP 2026-07-28 changed for clients, through
// a real Caddy: registration reads application_type and refuses the
// redirect URIs a type excludes; discovery offers client metadata
// documents and keeps dynamic registration; and with refresh_reuse_grace a
// refresh retried after a lost answer keeps the family alive, while one
// after the grace revokes it.
func TestMCPRevision(t *testing.T) {
	const grace = 2 * time.Second
	c := newCaddy(t, "")
	c.start(fmt.Sprintf(`		default_permissions mcp:tools
		dynamic_client_registration open
		refresh_reuse_grace %s`, grace))
	c.registerOK(t, "rev-agent")
	register := func(body string) response { return do(t, "POST", c.base()+"/oauth2/register", nil, body) }

	t.Run("discovery prefers client metadata documents", func(t *testing.T) {
		r := do(t, "GET", c.base()+"/.well-known/oauth-authorization-server", nil, "")
		body := string(r.body)
		if r.status != 200 || r.json["client_id_metadata_document_supported"] != true || r.json["registration_endpoint"] != c.base()+"/oauth2/register" ||
			strings.Index(body, `"client_id_metadata_document_supported"`) > strings.Index(body, `"registration_endpoint"`) {
			t.Fatalf("discovery: %d %s", r.status, r.body)
		}
	})

	t.Run("application_type at registration", func(t *testing.T) {
		wantError(t, register(`{"application_type":"native","token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1/cb","https://app.example.com/cb"]}`),
			400, "invalid_redirect_uri")
		wantError(t, register(`{"application_type":"web","token_endpoint_auth_method":"none","redirect_uris":["com.example.app:/cb"]}`),
			400, "invalid_redirect_uri")
		wantError(t, register(`{"application_type":"desktop","token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1/cb"]}`),
			400, "invalid_client_metadata")
		for _, tc := range []struct{ body, want string }{
			{`{"application_type":"native","token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1/cb","com.example.app:/cb"]}`, "native"},
			{`{"application_type":"web","redirect_uris":["https://app.example.com/cb","http://localhost:3000/cb"]}`, "web"},
			// A client of an earlier revision sends no type: web, its
			// loopback redirect still accepted.
			{`{"token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1:33418/callback"]}`, "web"},
		} {
			r := register(tc.body)
			if r.status != 201 || r.str("application_type") != tc.want {
				t.Fatalf("register %s: %d %s", tc.body, r.status, r.body)
			}
			if v := c.admin(t, "GET", "/auth_agent/clients/"+r.str("client_id"), ""); v.status != 200 || v.str("application_type") != tc.want {
				t.Fatalf("admin view: %d %s", v.status, v.body)
			}
		}
	})

	// A native client signs in on a loopback port of its own choosing and
	// holds a refresh token.
	r := register(`{"client_name":"Revision CLI","application_type":"native","token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1/callback"]}`)
	if r.status != 201 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	clientID := r.str("client_id")
	signIn := func(t *testing.T) string {
		t.Helper()
		cb := fmt.Sprintf("http://127.0.0.1:%d/callback", freePort(t))
		code := c.approve(t, c.authorizeJSON(t, pkceQuery(clientID, cb, "mcp:tools", nil)), "rev-agent")
		tok := c.tokenCall(t, "", "", url.Values{"grant_type": {"authorization_code"}, "client_id": {clientID}, "code": {code},
			"redirect_uri": {cb}, "code_verifier": {verifier}})
		if tok.status != 200 || tok.str("refresh_token") == "" {
			t.Fatalf("token: %d %s", tok.status, tok.body)
		}
		return tok.str("refresh_token")
	}
	refresh := func(rt string) response {
		return c.tokenCall(t, "", "", url.Values{"grant_type": {"refresh_token"}, "client_id": {clientID}, "refresh_token": {rt}})
	}
	mustRefresh := func(t *testing.T, rt string) string {
		t.Helper()
		r := refresh(rt)
		if r.status != 200 || r.str("refresh_token") == "" || r.str("access_token") == "" {
			t.Fatalf("refresh: %d %s", r.status, r.body)
		}
		return r.str("refresh_token")
	}
	reuses := func() int {
		n := 0
		for _, e := range auditEvents(c.log.String()) {
			if e["event"] == "refresh.reuse_detected" {
				n++
			}
		}
		return n
	}

	t.Run("a refresh retried within the grace keeps the family alive", func(t *testing.T) {
		rt0 := signIn(t)
		lost := mustRefresh(t, rt0) // the answer the client never read
		retried := mustRefresh(t, rt0)
		if retried == lost {
			t.Fatal("the retry got the lost successor back")
		}
		next := mustRefresh(t, retried)
		mustRefresh(t, next)
		if n := reuses(); n != 0 {
			t.Fatalf("%d refresh.reuse_detected events for a retry", n)
		}
		if !strings.Contains(c.log.String(), "answered as a retry") {
			t.Fatalf("no log line for the retry:\n%s", c.log)
		}
	})

	t.Run("the successor a retry replaced revokes the family", func(t *testing.T) {
		rt0 := signIn(t)
		lost := mustRefresh(t, rt0)
		retried := mustRefresh(t, rt0)
		wantError(t, refresh(lost), 400, "invalid_grant")
		wantError(t, refresh(retried), 400, "invalid_grant")
	})

	t.Run("a refresh reused outside the grace revokes the family", func(t *testing.T) {
		before := reuses()
		rt0 := signIn(t)
		rt1 := mustRefresh(t, rt0)
		time.Sleep(grace + 500*time.Millisecond)
		r := refresh(rt0)
		wantError(t, r, 400, "invalid_grant")
		if !strings.Contains(r.str("error_description"), "already used") {
			t.Fatalf("reuse: %s", r.body)
		}
		wantError(t, refresh(rt1), 400, "invalid_grant")
		if n := reuses() - before; n != 1 {
			t.Fatalf("%d refresh.reuse_detected events, want 1", n)
		}
	})
}
