package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// pytest finds a Python with pytest: Debian's (python3-pytest, which
// .ci/run installs), else the first python3 on PATH that has it. The test
// skips without one, and fails with CI=true.
func pytest(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(py); err == nil && exec.Command(path, "-m", "pytest", "--version").Run() == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no python3 with pytest: install Debian's python3-pytest")
	}
	t.Skip("no python3 with pytest: install Debian's python3-pytest")
	return ""
}

// TestPythonSDK runs the Python SDK's tests (sdk/python/tests) against a
// real Caddy: this one, with a website client, a guarded API, a small
// authentication budget and a short sign-in request lifetime for the
// error cases.
func TestPythonSDK(t *testing.T) {
	py := pytest(t)
	site := newWebsite(t)
	up := newUpstream(t)
	c := newCaddy(t, "")
	apiPort := freePort(t)
	c.sites = guardedSite(apiPort, "\tagent_guard {\n\t\tscopes data:read\n\t}\n", up.URL)
	c.start(oauthOpts(site.callback, "\t\trequest_lifetime 10s\n\t\trate_limit {\n\t\t\tauthentication 3/m\n\t\t}"))
	cmd := exec.Command(py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests")
	cmd.Dir = filepath.Join("..", "sdk", "python")
	cmd.Env = append(os.Environ(),
		"AUTHAGENT_ISSUER="+c.base(),
		fmt.Sprintf("AUTHAGENT_GUARDED_URL=http://127.0.0.1:%d", apiPort),
		"AUTHAGENT_CLIENT_ID=demo-site",
		"AUTHAGENT_CLIENT_SECRET="+clientSecret,
		"AUTHAGENT_REDIRECT_URI="+site.callback,
		"AUTHAGENT_CLOSED_PORT="+strconv.Itoa(freePort(t)),
		"PYTHONDONTWRITEBYTECODE=1",
	)
	out, err := cmd.CombinedOutput()
	t.Logf("pytest:\n%s", out)
	if err != nil {
		t.Fatalf("the Python SDK's tests failed: %v", err)
	}
}
