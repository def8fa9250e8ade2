package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// mcpServer is the MCP server behind the guard: one tool, add, served with
// the Go SDK's streamable HTTP handler at /mcp. It records what the guard
// told it about the caller of every tool call.
type mcpServer struct {
	*httptest.Server
	mu    sync.Mutex
	calls []http.Header
	// anonymous counts requests that reached it without the guard's
	// X-Agent-Id: none may.
	anonymous atomic.Int64
}

type addInput struct {
	A int `json:"a" jsonschema:"the first addend"`
	B int `json:"b" jsonschema:"the second addend"`
}

type addOutput struct {
	Sum int `json:"sum"`
}

func newMCPServer(t *testing.T) *mcpServer {
	t.Helper()
	m := &mcpServer{}
	srv := mcp.NewServer(&mcp.Implementation{Name: "authagent-e2e", Version: "1.0.0"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "add", Description: "Adds two integers."},
		func(_ context.Context, req *mcp.CallToolRequest, in addInput) (*mcp.CallToolResult, addOutput, error) {
			m.mu.Lock()
			m.calls = append(m.calls, req.Extra.Header.Clone())
			m.mu.Unlock()
			sum := in.A + in.B
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strconv.Itoa(sum)}}}, addOutput{Sum: sum}, nil
		})
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)
	mux := http.NewServeMux()
	mux.Handle("/mcp", handler)
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Agent-Id") == "" {
			m.anonymous.Add(1)
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(m.Close)
	return m
}

// guardMCP puts upstream behind agent_guard (scope mcp:tools, its URL the
// required resource) on a site of c, and returns that resource.
func (c *caddy) guardMCP(t *testing.T, upstream *mcpServer) string {
	t.Helper()
	port := freePort(t)
	resource := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
	c.sites = fmt.Sprintf(`
http://127.0.0.1:%d {
	agent_guard {
		scopes mcp:tools
		resource %s
	}
	reverse_proxy %s
}
`, port, resource, strings.TrimPrefix(upstream.URL, "http://"))
	return resource
}

// callsBy returns the recorded tool calls the guard attributed to clientID.
func (m *mcpServer) callsBy(clientID string) []http.Header {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []http.Header
	for _, h := range m.calls {
		if h.Get("X-Agent-Client-Id") == clientID {
			out = append(out, h)
		}
	}
	return out
}

// mcpScriptResult is the line the Node script prints (e2e/mcp/client.mjs).
type mcpScriptResult struct {
	Mode             string            `json:"mode"`
	OK               bool              `json:"ok"`
	Step             string            `json:"step"`
	Error            string            `json:"error"`
	Trace            []json.RawMessage `json:"trace"`
	Challenge        string            `json:"challenge"`
	AuthServer       string            `json:"authorization_server"`
	ResourceMetadata struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		ScopesSupported      []string `json:"scopes_supported"`
	} `json:"resource_metadata"`
	ASMetadata struct {
		Issuer                  string `json:"issuer"`
		ClientIDMetadataDocSupp *bool  `json:"client_id_metadata_document_supported"`
	} `json:"as_metadata"`
	Client struct {
		ClientID      string   `json:"client_id"`
		HasSecret     bool     `json:"has_secret"`
		Scope         *string  `json:"scope"`
		TokenEndpoint string   `json:"token_endpoint_auth_method"`
		RedirectURIs  []string `json:"redirect_uris"`
	} `json:"client"`
	// RegistrationRequestScope is the scope the registration request asked
	// for (null: none).
	RegistrationRequestScope *string           `json:"registration_request_scope"`
	AuthorizationRequest     map[string]string `json:"authorization_request"`
	Token                    struct {
		Scope  string         `json:"scope"`
		Claims map[string]any `json:"claims"`
	} `json:"token"`
	Tools       []string      `json:"tools"`
	Call        mcpToolResult `json:"call"`
	RefreshCall mcpToolResult `json:"refresh_call"`
	Refreshed   struct {
		Scope   string         `json:"scope"`
		Claims  map[string]any `json:"claims"`
		Rotated bool           `json:"rotated"`
	} `json:"refreshed"`
}

type mcpToolResult struct {
	IsError           bool            `json:"isError"`
	StructuredContent map[string]any  `json:"structuredContent"`
	Content           json.RawMessage `json:"content"`
}

// mcpNodeModules is where `npm ci --prefix e2e/mcp` puts the TypeScript SDK.
const mcpNodeModules = "mcp/node_modules/@modelcontextprotocol/sdk"

// mcpSDKVersion is the version e2e/mcp/package.json pins.
const mcpSDKVersion = "1.32.2"

// TestMCPTypeScriptSDK drives the MCP TypeScript SDK's client (its
// StreamableHTTPClientTransport and OAuth support) against a Go SDK MCP
// server behind agent_guard: 401, protected resource metadata, authorization
// server metadata, client registration, PKCE authorization with resource,
// the agent's approval on the back channel, the code exchange, tools/list, a
// tool call, and a refresh on 401; once for each way a client gets its
// client_id.
func TestMCPTypeScriptSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(mcpNodeModules)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but node or the MCP SDK is missing (.ci/run runs npm ci --prefix e2e/mcp): %v", err)
		}
		t.Skipf("node or %s missing: install Node.js and run `npm ci --prefix e2e/mcp`: %v", mcpNodeModules, err)
	}
	var sdk struct{ Version string }
	if b, err := os.ReadFile(mcpNodeModules + "/package.json"); err != nil || json.Unmarshal(b, &sdk) != nil || sdk.Version != mcpSDKVersion {
		t.Fatalf("%s is not version %s (%q, %v): run `npm ci --prefix e2e/mcp`", mcpNodeModules, mcpSDKVersion, sdk.Version, err)
	}

	upstream := newMCPServer(t)
	redirectURI := fmt.Sprintf("http://127.0.0.1:%d/callback", freePort(t))

	// The client ID metadata document, on https at 127.0.0.1: Caddy trusts
	// the test server's certificate through SSL_CERT_FILE, and the operator
	// allows the loopback host with client_id_metadata_hosts.
	var docHits atomic.Int64
	var docURL string
	docSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/client.json" {
			http.NotFound(w, r)
			return
		}
		docHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=300")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"client_id":                  docURL,
			"client_name":                "authagent e2e MCP client (metadata document)",
			"redirect_uris":              []string{redirectURI},
			"grant_types":                []string{"authorization_code", "refresh_token"},
			"response_types":             []string{"code"},
			"token_endpoint_auth_method": "none",
		})
	}))
	t.Cleanup(docSrv.Close)
	docURL = docSrv.URL + "/client.json"
	certFile := filepath.Join(t.TempDir(), "cimd-ca.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: docSrv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	c := newCaddy(t, "")
	resource := c.guardMCP(t, upstream)
	c.extraEnv = []string{"SSL_CERT_FILE=" + certFile}
	const agentID = "mcp-agent"
	c.start(fmt.Sprintf(`		dynamic_client_registration open
		client_id_metadata_hosts 127.0.0.1
		agent %s {
			permissions mcp:tools
		}`, agentID))
	// An agent the Caddyfile names is reserved: /api/register-agent refuses
	// its id, the operator creates it (as TestGuardLocal does).
	if r := c.admin(t, "POST", "/auth_agent/agents", fmt.Sprintf(`{"agent_id":%q,"agent_secret":%q,"model_name":"claude","owner_name":"Test User","owner_email":"test@example.com"}`, agentID, secret)); r.status != 201 {
		t.Fatalf("create %s: %d %s", agentID, r.status, r.body)
	}
	prmURL := strings.Replace(resource, "/mcp", "/.well-known/oauth-protected-resource/mcp", 1)

	for _, mode := range []string{"dcr-scope", "dcr-no-scope", "cimd"} {
		t.Run(mode, func(t *testing.T) {
			logStart := c.log.Len()
			res, output := runMCPClient(t, node, map[string]string{
				"MODE": mode, "MCP_URL": resource, "ISSUER": c.base(), "AGENT_ID": agentID, "AGENT_SECRET": secret,
				"REDIRECT_URI": redirectURI, "TOOL": "add", "CLIENT_METADATA_URL": docURL,
			})
			if !res.OK {
				t.Fatalf("the SDK client failed at %q: %s\nHTTP exchanges:\n%s\nscript output:\n%s\ncaddy log of this run:\n%s",
					res.Step, res.Error, traceLines(res.Trace), output, tail(c.log.Bytes()[logStart:], 6000))
			}

			t.Logf("client_id %s (registered scope %v), authorization scope %q, token scope %q, aud %v; refreshed scope %q, aud %v",
				res.Client.ClientID, strPtr(res.Client.Scope), res.AuthorizationRequest["scope"], res.Token.Scope, res.Token.Claims["aud"], res.Refreshed.Scope, res.Refreshed.Claims["aud"])

			// Discovery: the challenge points at the metadata under the
			// resource's path, which names this issuer and the resource.
			if !strings.Contains(res.Challenge, `resource_metadata="`+prmURL+`"`) || !strings.Contains(res.Challenge, `scope="mcp:tools"`) {
				t.Errorf("challenge %q: want resource_metadata=%q and scope=\"mcp:tools\"", res.Challenge, prmURL)
			}
			if res.ResourceMetadata.Resource != resource || !slices.Equal(res.ResourceMetadata.AuthorizationServers, []string{c.base()}) {
				t.Errorf("protected resource metadata: resource %q, authorization_servers %q", res.ResourceMetadata.Resource, res.ResourceMetadata.AuthorizationServers)
			}
			if res.AuthServer != c.base() || res.ASMetadata.Issuer != c.base() {
				t.Errorf("authorization server %q, metadata issuer %q, want %q", res.AuthServer, res.ASMetadata.Issuer, c.base())
			}

			// The client, as registered or named by its document.
			clientID := res.Client.ClientID
			switch mode {
			case "dcr-scope":
				if res.RegistrationRequestScope == nil || *res.RegistrationRequestScope != "mcp:tools" {
					t.Errorf("the registration request asked for scope %v, want mcp:tools", strPtr(res.RegistrationRequestScope))
				}
				if res.Client.Scope == nil || !slices.Contains(strings.Fields(*res.Client.Scope), "mcp:tools") || !res.Client.HasSecret {
					t.Errorf("registration answer: scope %v, secret %v; want scope with mcp:tools and a secret", res.Client.Scope, res.Client.HasSecret)
				}
				stored := c.admin(t, "GET", "/auth_agent/clients/"+url.PathEscape(clientID), "")
				if stored.status != 200 || stored.json["public"] != false || !slices.Contains(anyStrings(stored.json["scopes"]), "mcp:tools") {
					t.Errorf("stored client: %d %s", stored.status, stored.body)
				}
			case "dcr-no-scope":
				if res.RegistrationRequestScope != nil {
					t.Errorf("the registration request asked for scope %q, want none", *res.RegistrationRequestScope)
				}
				if res.Client.HasSecret {
					t.Errorf("a public client got a secret")
				}
				stored := c.admin(t, "GET", "/auth_agent/clients/"+url.PathEscape(clientID), "")
				if stored.status != 200 || stored.json["public"] != true {
					t.Errorf("stored client: %d %s", stored.status, stored.body)
				}
				t.Logf("registered without scope: the answer's scope is %v, stored %s", res.Client.Scope, stored.body)
			case "cimd":
				if clientID != docURL {
					t.Errorf("client_id %q, want the document's URL %q", clientID, docURL)
				}
				if docHits.Load() == 0 {
					t.Errorf("Caddy never fetched the client ID metadata document")
				}
			}
			if got := res.AuthorizationRequest["resource"]; got != resource {
				t.Errorf("authorization request resource %q, want %q", got, resource)
			}

			// The tokens: for this agent, this client and this resource.
			for name, claims := range map[string]map[string]any{"first": res.Token.Claims, "refreshed": res.Refreshed.Claims} {
				if !audIs(claims["aud"], resource) || claims["sub"] != agentID || claims["client_id"] != clientID || claims["iss"] != c.base() {
					t.Errorf("%s access token: aud %v sub %v client_id %v iss %v; want aud %s, sub %s, client_id %s", name, claims["aud"], claims["sub"], claims["client_id"], claims["iss"], resource, agentID, clientID)
				}
				if sc, _ := claims["scope"].(string); !slices.Contains(strings.Fields(sc), "mcp:tools") {
					t.Errorf("%s access token scope %q lacks mcp:tools", name, sc)
				}
			}
			if !res.Refreshed.Rotated {
				t.Errorf("the refresh returned the same refresh token (no rotation)")
			}

			// The calls, as the MCP server saw them.
			if !slices.Contains(res.Tools, "add") {
				t.Errorf("tools/list: %v", res.Tools)
			}
			if res.Call.StructuredContent["sum"] != float64(5) || res.RefreshCall.StructuredContent["sum"] != float64(42) {
				t.Errorf("tool results: %s / %s", res.Call.Content, res.RefreshCall.Content)
			}
			calls := upstream.callsBy(clientID)
			if len(calls) != 2 {
				t.Fatalf("the MCP server saw %d tool calls from client %s, want 2", len(calls), clientID)
			}
			for _, h := range calls {
				if h.Get("X-Agent-Id") != agentID || !slices.Contains(strings.Fields(h.Get("X-Agent-Scopes")), "mcp:tools") {
					t.Errorf("the guard passed X-Agent-Id %q, X-Agent-Scopes %q", h.Get("X-Agent-Id"), h.Get("X-Agent-Scopes"))
				}
			}
			if n := upstream.anonymous.Load(); n != 0 {
				t.Errorf("%d requests reached the MCP server without the guard's identity", n)
			}
		})
	}
}

// runMCPClient runs e2e/mcp/client.mjs with env and returns its result line
// and everything it printed. The process is killed after 60 s.
func runMCPClient(t *testing.T, node string, env map[string]string) (mcpScriptResult, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs")
	cmd.Dir = "mcp"
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	var res mcpScriptResult
	var rest strings.Builder // everything but the result line
	found := false
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "RESULT ")
		if !ok {
			rest.WriteString(sc.Text() + "\n")
			continue
		}
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			t.Fatalf("the script's result line: %v\n%s", err, out.String())
		}
		found = true
	}
	if !found {
		t.Fatalf("the script printed no result (%v, context %v):\n%s", runErr, ctx.Err(), out.String())
	}
	if res.OK && runErr != nil {
		t.Fatalf("the script reported success but exited with %v:\n%s", runErr, out.String())
	}
	return res, rest.String()
}

// audIs reports whether a JWT aud claim (a string or an array) is exactly
// the one audience want.
func audIs(aud any, want string) bool {
	switch a := aud.(type) {
	case string:
		return a == want
	case []any:
		return len(a) == 1 && a[0] == want
	}
	return false
}

func strPtr(p *string) any {
	if p == nil {
		return "(none)"
	}
	return *p
}

func anyStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func traceLines(trace []json.RawMessage) string {
	var b strings.Builder
	for _, e := range trace {
		b.Write(e)
		b.WriteByte('\n')
	}
	return b.String()
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
