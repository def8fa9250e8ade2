package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwkPair is a key pair as JWKs: the private one for the client, the
// public one for the server.
type jwkPair struct {
	private, public map[string]any
	signer          any
	method          jwt.SigningMethod
}

func newECPair(t *testing.T, kid string) jwkPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	raw, _ := key.PublicKey.ECDH()
	b := raw.Bytes()
	pub := map[string]any{"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(b[1:33]), "y": b64(b[33:])}
	priv := map[string]any{"d": b64(key.D.FillBytes(make([]byte, 32)))}
	for k, v := range pub {
		priv[k] = v
	}
	return jwkPair{priv, pub, key, jwt.SigningMethodES256}
}

func newRSAPair(t *testing.T, kid, alg string) jwkPair {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	key.Precompute()
	b64 := func(i *big.Int) string { return base64.RawURLEncoding.EncodeToString(i.Bytes()) }
	pub := map[string]any{"kty": "RSA", "kid": kid, "alg": alg, "n": b64(key.N), "e": b64(big.NewInt(int64(key.E)))}
	priv := map[string]any{"d": b64(key.D), "p": b64(key.Primes[0]), "q": b64(key.Primes[1]),
		"dp": b64(key.Precomputed.Dp), "dq": b64(key.Precomputed.Dq), "qi": b64(key.Precomputed.Qinv)}
	for k, v := range pub {
		priv[k] = v
	}
	return jwkPair{priv, pub, key, jwt.SigningMethodPS256}
}

func (p jwkPair) set() string {
	b, _ := json.Marshal(map[string]any{"keys": []any{p.public}})
	return string(b)
}

func (p jwkPair) privateJSON() string {
	b, _ := json.Marshal(p.private)
	return string(b)
}

// assertion signs a client assertion of id for aud.
func (p jwkPair) assertion(t *testing.T, id, aud string, edit func(jwt.MapClaims)) string {
	t.Helper()
	claims := jwt.MapClaims{"iss": id, "sub": id, "aud": aud, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix(), "jti": rand.Text()}
	if edit != nil {
		edit(claims)
	}
	tok := jwt.NewWithClaims(p.method, claims)
	tok.Header["kid"] = p.public["kid"]
	s, err := tok.SignedString(p.signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// oauth4webapiNode is the node binary for the scripts in e2e/mcp that
// drive oauth4webapi; the test skips without it (fails with CI=true).
func oauth4webapiNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat("mcp/node_modules/oauth4webapi")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but node or oauth4webapi is missing (.ci/run runs npm ci --prefix e2e/mcp): %v", err)
		}
		t.Skipf("node or e2e/mcp/node_modules missing: run `npm ci --prefix e2e/mcp`: %v", err)
	}
	return node
}

// scriptResult is the last `RESULT {json}` line of a script in e2e/mcp.
type scriptResult struct {
	OK           bool   `json:"ok"`
	Step         string `json:"step"`
	Error        string `json:"error"`
	NonceRetries int    `json:"nonce_retries"`
}

// runScript runs script in e2e/mcp with env added (60 s at most) and
// fails the test, with the script's output and c's log, unless it
// reported success.
func runScript(t *testing.T, node, script string, c *caddy, env ...string) scriptResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Dir = "mcp"
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	line := ""
	for _, l := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(l, "RESULT "); ok {
			line = rest
		}
	}
	var res scriptResult
	if json.Unmarshal([]byte(line), &res) != nil || !res.OK || err != nil {
		t.Fatalf("%s failed at %q: %v %s\n%s\ncaddy log:\n%s", script, res.Step, err, res.Error, out, c.log)
	}
	return res
}

// TestPrivateKeyJWT: clients and agents that hold keys instead of secrets,
// driven by independent clients from npm (oauth4webapi, the MCP SDK's
// PrivateKeyJwtProvider), and the refusals a real server must make.
func TestPrivateKeyJWT(t *testing.T) {
	node := oauth4webapiNode(t)
	upstream := newMCPServer(t)
	agentKey, clientKey := newECPair(t, "agent-1"), newRSAPair(t, "svc-1", "PS256")
	jwksFile := filepath.Join(t.TempDir(), "svc.jwks")
	if err := os.WriteFile(jwksFile, []byte(clientKey.set()), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCaddy(t, "")
	resource := c.guardMCP(t, upstream)
	const agentID = "keyed-agent"
	c.start(fmt.Sprintf(`		agent %s {
			permissions mcp:tools
		}
		client svc {
			name "Service with a key"
			jwks_file %s
			grant_types client_credentials
			scopes mcp:tools
		}`, agentID, jwksFile))
	// A private key in a registration is refused, and nothing is stored.
	leaked := fmt.Sprintf(`{"keys":[%s]}`, agentKey.privateJSON())
	wantError(t, c.admin(t, "POST", "/auth_agent/agents", fmt.Sprintf(`{"agent_id":%q,"model_name":"claude","owner_email":"ops@example.com","jwks":%s}`, agentID, leaked)), 400, "invalid_request")
	wantError(t, do(t, "POST", c.base()+"/api/register-agent", nil, fmt.Sprintf(`{"agent_id":"leaky","model_name":"m","owner_email":"a@example.com","jwks":%s}`, leaked)), 400, "invalid_request")
	if r := c.admin(t, "POST", "/auth_agent/agents", fmt.Sprintf(`{"agent_id":%q,"model_name":"claude","owner_email":"ops@example.com","jwks":%s}`, agentID, agentKey.set())); r.status != 201 || r.json["token_endpoint_auth_method"] != "private_key_jwt" || r.json["agent_secret"] != nil {
		t.Fatalf("create %s with keys: %d %s", agentID, r.status, r.body)
	}

	runScript(t, node, "keys.mjs", c, "ISSUER="+c.base(), "MCP_URL="+resource, "AGENT_ID="+agentID, "AGENT_JWK="+agentKey.privateJSON(),
		"CLIENT_ID=svc", "CLIENT_JWK="+clientKey.privateJSON(), "TOOL=add")
	if calls := upstream.callsBy(agentID); len(calls) == 0 || calls[0].Get("X-Agent-Id") != agentID {
		t.Fatalf("the tool call did not reach the MCP server as %s: %v", agentID, calls)
	}

	// What the server must refuse, each invalid_client (401).
	token := c.base() + "/oauth2/token"
	grant := func(assertion string, extra url.Values) response {
		form := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion}}
		for k, v := range extra {
			form[k] = v
		}
		return do(t, "POST", token, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, form.Encode())
	}
	once := agentKey.assertion(t, agentID, token, nil)
	if r := grant(once, nil); r.status != 200 {
		t.Fatalf("an agent's assertion: %d %s", r.status, r.body)
	}
	hs256, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": agentID, "sub": agentID, "aud": token, "exp": time.Now().Add(time.Minute).Unix(), "jti": "hs"}).SignedString([]byte(agentKey.set()))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"iss": agentID, "sub": agentID, "aud": token, "exp": time.Now().Add(time.Minute).Unix(), "jti": "none"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	for name, assertion := range map[string]string{
		"replayed":               once,
		"a foreign aud":          agentKey.assertion(t, agentID, "https://elsewhere.example.com/token", nil),
		"alg HS256":              hs256,
		"alg none":               none,
		"an unregistered key":    newECPair(t, "agent-1").assertion(t, agentID, token, nil),
		"another agent's id":     agentKey.assertion(t, "svc", token, nil),
		"exp an hour ahead":      agentKey.assertion(t, agentID, token, func(c jwt.MapClaims) { c["exp"] = time.Now().Add(time.Hour).Unix() }),
		"the client's, replayed": clientKey.assertion(t, "svc", token, func(c jwt.MapClaims) { c["jti"] = "fixed" }),
	} {
		if name == "the client's, replayed" {
			if r := grant(assertion, nil); r.status != 200 {
				t.Fatalf("the client's assertion: %d %s", r.status, r.body)
			}
		}
		wantError(t, grant(assertion, nil), 401, "invalid_client")
	}
	// An agent with keys never has a secret.
	wantError(t, do(t, "POST", c.base()+"/api/agent-auth", nil, fmt.Sprintf(`{"agent_id":%q,"agent_secret":%q}`, agentID, secret)), 401, "invalid_client")
}
