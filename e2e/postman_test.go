package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/api"
)

// The API's description, tested with the npm tools of SPEC §12: newman
// runs the Postman collection the server serves against Caddyfile.example,
// and Redocly CLI lints the OpenAPI documents. Both are pinned in
// api/package-lock.json (`npm ci --prefix api`, which .ci/run runs).

// apiTool returns the path of an npm tool installed in api/node_modules:
// it skips without node or the tool, and fails with CI=true.
func apiTool(t *testing.T, name string) string {
	t.Helper()
	bin, err := filepath.Abs(filepath.Join("..", "api", "node_modules", ".bin", name))
	if err == nil {
		if _, err = exec.LookPath("node"); err == nil {
			_, err = os.Stat(bin)
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but node or api/node_modules/.bin/%s is missing (.ci/run runs npm ci --prefix api): %v", name, err)
		}
		t.Skipf("node or api/node_modules/.bin/%s missing: install Node.js and run `npm ci --prefix api`: %v", name, err)
	}
	return bin
}

// toolEnv is the environment of the npm tools: no telemetry, no update
// checks (nothing but the server under test is reached).
func toolEnv() []string {
	return append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_UPDATE_NOTIFIER=1")
}

// newmanReport is what the tests read of newman's JSON report.
type newmanReport struct {
	Run struct {
		Stats map[string]struct {
			Total   int `json:"total"`
			Pending int `json:"pending"`
			Failed  int `json:"failed"`
		} `json:"stats"`
		Executions []struct {
			Item struct {
				Name string `json:"name"`
			} `json:"item"`
			Response *struct {
				Code int `json:"code"`
			} `json:"response"`
			RequestError json.RawMessage `json:"requestError"`
			Assertions   []struct {
				Assertion string `json:"assertion"`
				Error     *struct {
					Message string `json:"message"`
				} `json:"error"`
			} `json:"assertions"`
		} `json:"executions"`
		Failures []struct {
			Error struct {
				Name    string `json:"name"`
				Message string `json:"message"`
			} `json:"error"`
			Source struct {
				Name string `json:"name"`
			} `json:"source"`
		} `json:"failures"`
	} `json:"run"`
}

// collectionRequests are the names of a collection's requests, folders
// flattened, in order.
func collectionRequests(t *testing.T, coll []byte) []string {
	t.Helper()
	type node struct {
		Name    string          `json:"name"`
		Item    []node          `json:"item"`
		Request json.RawMessage `json:"request"`
	}
	var c struct {
		Item []node `json:"item"`
	}
	if err := json.Unmarshal(coll, &c); err != nil {
		t.Fatal(err)
	}
	var names []string
	var walk func([]node)
	walk = func(items []node) {
		for _, it := range items {
			if it.Request != nil {
				names = append(names, it.Name)
			}
			walk(it.Item)
		}
	}
	walk(c.Item)
	return names
}

// TestPostmanCollection runs the collection the server serves, with
// newman, against Caddy on Caddyfile.example, twice (each run registers an
// agent of its own, so a second run against the same server passes too).
func TestPostmanCollection(t *testing.T) {
	newman := apiTool(t, "newman")
	runExample(t)
	const issuer = "http://localhost:8080"

	req, err := http.NewRequest("GET", issuer+"/api/postman-collection.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", "http://localhost:3000")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	coll, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/postman-collection.json: %d %s", resp.StatusCode, coll)
	}
	if resp.Header.Get("ETag") == "" {
		t.Error("the collection has no ETag")
	}
	if o := resp.Header.Get("Access-Control-Allow-Origin"); o != "*" && o != "http://localhost:3000" {
		t.Errorf("Access-Control-Allow-Origin %q", o)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	var served map[string]any
	if err := json.Unmarshal(coll, &served); err != nil {
		t.Fatalf("the collection is not JSON: %v", err)
	}
	baseURL := ""
	for _, v := range served["variable"].([]any) {
		if v := v.(map[string]any); v["key"] == "baseUrl" {
			baseURL, _ = v["value"].(string)
		}
	}
	if baseURL != issuer {
		t.Fatalf("baseUrl %q, want the issuer %s", baseURL, issuer)
	}
	// It is the committed collection (api/postman_collection.json, which
	// api/internal/postmangen checks against the document) for this issuer.
	committed, err := api.Collection(issuer)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(committed, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(served, want) {
		t.Fatal("the served collection is not api/postman_collection.json with baseUrl the issuer")
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "collection.json")
	if err := os.WriteFile(file, coll, 0o600); err != nil {
		t.Fatal(err)
	}
	// newman's requests go through a proxy that checks them and their
	// answers against api/openapi.yaml, as the Go clients' are.
	proxy := contractProxy(t)
	requests := collectionRequests(t, coll)
	if len(requests) == 0 {
		t.Fatal("the collection has no request")
	}
	for run := 1; run <= 2; run++ {
		report := filepath.Join(dir, fmt.Sprintf("report-%d.json", run))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, newman, "run", file,
			"--reporters", "cli,json", "--reporter-json-export", report,
			"--color", "off", "--timeout-request", "10000")
		cmd.Env = append(toolEnv(), "HTTP_PROXY="+proxy, "http_proxy="+proxy, "NO_PROXY=", "no_proxy=")
		cmd.WaitDelay = 5 * time.Second
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		// newman's summary: the table at the end of its output, and any
		// failure it lists under it.
		summary := out.String()
		if i := strings.Index(summary, "┌─"); i >= 0 {
			summary = summary[i:]
		}
		t.Logf("newman run %d:\n%s", run, summary)
		if err != nil {
			t.Fatalf("newman run %d: %v\n%s", run, err, out.String())
		}
		b, err := os.ReadFile(report)
		if err != nil {
			t.Fatal(err)
		}
		var r newmanReport
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("newman's report: %v", err)
		}
		for _, f := range r.Run.Failures {
			t.Errorf("run %d: %s: %s: %s", run, f.Source.Name, f.Error.Name, f.Error.Message)
		}
		for _, k := range []string{"requests", "assertions", "testScripts", "prerequestScripts", "items"} {
			s, ok := r.Run.Stats[k]
			if !ok || s.Failed != 0 || s.Pending != 0 {
				t.Errorf("run %d: %s %+v", run, k, s)
			}
		}
		if s := r.Run.Stats["requests"]; s.Total != len(requests) {
			t.Errorf("run %d: newman sent %d requests, the collection has %d", run, s.Total, len(requests))
		}
		if s := r.Run.Stats["assertions"]; s.Total == 0 {
			t.Errorf("run %d: no assertion ran", run)
		}
		// Every request ran once, in order, got an answer, and every
		// assertion of every request passed.
		if len(r.Run.Executions) != len(requests) {
			t.Fatalf("run %d: %d executions, want %d", run, len(r.Run.Executions), len(requests))
		}
		for i, e := range r.Run.Executions {
			if e.Item.Name != requests[i] {
				t.Errorf("run %d: execution %d is %q, want %q", run, i, e.Item.Name, requests[i])
			}
			if e.RequestError != nil || e.Response == nil {
				t.Errorf("run %d: %q got no answer: %s", run, e.Item.Name, e.RequestError)
			}
			if len(e.Assertions) == 0 {
				t.Errorf("run %d: %q asserted nothing", run, e.Item.Name)
			}
			for _, a := range e.Assertions {
				if a.Error != nil {
					t.Errorf("run %d: %q: %s: %s", run, e.Item.Name, a.Assertion, a.Error.Message)
				}
			}
		}
		if t.Failed() {
			t.Fatalf("newman run %d:\n%s", run, out.String())
		}
	}
}

// TestOpenAPILint lints both OpenAPI documents with Redocly CLI's
// recommended rules (api/redocly.yaml): no error.
func TestOpenAPILint(t *testing.T) {
	redocly := apiTool(t, "redocly")
	docs := []string{"api/openapi.yaml", "api/admin-openapi.yaml"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, redocly, append([]string{"lint", "--config", "api/redocly.yaml"}, docs...)...)
	cmd.Dir = ".."
	cmd.Env = toolEnv()
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("redocly lint:\n%s", out)
	if err != nil {
		t.Fatalf("redocly lint: %v", err)
	}
	for _, doc := range docs {
		if !bytes.Contains(out, []byte("validating "+doc)) {
			t.Errorf("redocly did not validate %s", doc)
		}
	}
	if bytes.Contains(out, []byte("Error was generated")) || !bytes.Contains(out, []byte("Your API descriptions are valid")) {
		t.Fatal("redocly lint reports errors")
	}
}
