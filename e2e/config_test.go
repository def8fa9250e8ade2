package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInvalidConfigs: `caddy validate` fails with a message naming the
// setting and the value.
func TestInvalidConfigs(t *testing.T) {
	cases := map[string]struct{ opts, want string }{
		"no issuer":             {"storage memory", "issuer is required"},
		"http issuer":           {"issuer http://auth.example.com\n storage memory", "must use https"},
		"bad registration":      {"issuer https://a.example.com\n storage memory\n registration sometimes", "registration"},
		"bad alg":               {"issuer https://a.example.com\n storage memory\n access_token_alg HS256", `access_token_alg "HS256"`},
		"client without secret": {"issuer https://a.example.com\n storage memory\n client site {\n redirect_uri https://a.example.com/cb\n }", `client "site" needs a ` + "`secret`"},
		"short client secret":   {"issuer https://a.example.com\n storage memory\n client site {\n secret short\n redirect_uri https://a.example.com/cb\n }", "at least 32"},
		"http redirect":         {"issuer https://a.example.com\n storage memory\n client site {\n public\n redirect_uri http://a.example.com/cb\n }", "must use https"},
		"native, https":         {"issuer https://a.example.com\n storage memory\n client app {\n public\n application_type native\n redirect_uri https://a.example.com/cb\n }", `client "app": redirect URI "https://a.example.com/cb": a native application`},
		"web, private-use":      {"issuer https://a.example.com\n storage memory\n client app {\n public\n application_type web\n redirect_uri com.example.app:/cb\n }", "private-use schemes are for native applications"},
		"unknown setting":       {"issuer https://a.example.com\n colour blue", `unknown setting "colour"`},
		"long reuse grace":      {"issuer https://a.example.com\n storage memory\n refresh_reuse_grace 10m", "refresh_reuse_grace"},
		"bad permission":        {"issuer https://a.example.com\n storage memory\n default_permissions ok bad\"scope", "default_permissions"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "Caddyfile")
			body := "{\n auth_agent {\n " + tc.opts + "\n }\n}\nhttp://127.0.0.1:1 {\n auth_agent\n}\n"
			if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(caddyBin, "validate", "--config", file, "--adapter", "caddyfile")
			cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("validate accepted:\n%s", body)
			}
			if !strings.Contains(strings.ReplaceAll(string(out), `\"`, `"`), tc.want) {
				t.Fatalf("message does not name %q:\n%s", tc.want, out)
			}
		})
	}
}
