package oauth_test

import (
	"strings"
	"testing"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

func TestParseBearer(t *testing.T) {
	for h, want := range map[string]string{
		"Bearer abc.def.ghi": "abc.def.ghi",
		"bearer abc":         "abc",
		"BEARER  a-b_c~+/=":  "a-b_c~+/=",
	} {
		if got, err := oauth.ParseBearer(h); err != nil || got != want {
			t.Errorf("ParseBearer(%q) = %q, %v; want %q", h, got, err, want)
		}
	}
	for _, h := range []string{"", "Bearer", "Bearer ", "Basic abc", "Bearerabc", "Bearer a b", "Bearer a\x00b", "Bearer " + strings.Repeat("a", 8193), "Token abc"} {
		if got, err := oauth.ParseBearer(h); err == nil {
			t.Errorf("ParseBearer(%q) = %q, want an error", h, got)
		}
	}
}

func TestAgentSelfScopes(t *testing.T) {
	a := &agents.Agent{ID: "bot", Permissions: []string{"data:read", "data:write"}}
	cases := []struct {
		req  string
		want string // "" = error
	}{
		{"", "profile data:read data:write"},
		{"data:read", "data:read"},
		{"  profile   data:read profile ", "profile data:read"},
		{"data:admin", ""},
		{"openid", ""},
		{`bad"scope`, ""},
		{strings.Repeat("a ", 2100), ""},
	}
	for _, tc := range cases {
		got, err := oauth.AgentSelfScopes(tc.req, a)
		if tc.want == "" {
			if err == nil {
				t.Errorf("AgentSelfScopes(%q) = %v, want invalid_scope", tc.req, got)
			} else if oauth.AsError(err).Code != "invalid_scope" {
				t.Errorf("AgentSelfScopes(%q) error %v", tc.req, err)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("AgentSelfScopes(%q) = %v, %v; want %q", tc.req, got, err, tc.want)
		}
	}
}

func TestParseResource(t *testing.T) {
	for _, ok := range []string{"", "https://api.example.com", "https://api.example.com/v1", "urn:x:y"[:0]} {
		if _, err := oauth.ParseResource(ok); err != nil {
			t.Errorf("ParseResource(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"api.example.com", "/relative", "https://api.example.com/#frag", "https://", "::"} {
		if _, err := oauth.ParseResource(bad); err == nil {
			t.Errorf("ParseResource(%q) accepted", bad)
		}
	}
}

func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer a.b.c", "", "Basic x", "Bearer \xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := oauth.ParseBearer(h)
		if err == nil && (tok == "" || strings.ContainsAny(tok, " \t\r\n\x00") || len(tok) > 8192) {
			t.Fatalf("ParseBearer(%q) = %q", h, tok)
		}
	})
}
