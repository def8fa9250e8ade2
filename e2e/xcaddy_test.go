package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestXcaddyBuild builds Caddy the way users do, with xcaddy from
// xcaddy.json, and checks the plugin's modules are in it.
func TestXcaddyBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Caddy with xcaddy (about two minutes cold)")
	}
	out := filepath.Join(t.TempDir(), "caddy")
	build := exec.Command("go", "run", "./scripts/xcaddybuild", "-manifest", "xcaddy.json", "-o", out)
	build.Dir = ".."
	if log, err := build.CombinedOutput(); err != nil {
		t.Fatalf("xcaddy build: %v\n%s", err, log)
	}
	list, err := exec.Command(out, "list-modules").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"auth_agent", "http.handlers.auth_agent", "admin.api.auth_agent", "http.handlers.agent_guard"} {
		if !strings.Contains("\n"+string(list), "\n"+m+"\n") {
			t.Errorf("xcaddy-built binary lacks %s", m)
		}
	}
}
