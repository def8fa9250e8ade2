package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// proof signs a DPoP proof (RFC 9449 §4.2) with p for method and u;
// edit changes the claims first.
func (p jwkPair) proof(t *testing.T, method, u string, edit func(jwt.MapClaims)) string {
	t.Helper()
	claims := jwt.MapClaims{"jti": rand.Text(), "htm": method, "htu": u, "iat": time.Now().Unix()}
	if edit != nil {
		edit(claims)
	}
	tok := jwt.NewWithClaims(p.method, claims)
	tok.Header["typ"] = "dpop+jwt"
	tok.Header["jwk"] = p.public
	s, err := tok.SignedString(p.signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ath is the proof claim binding it to the access token tok.
func ath(tok string) func(jwt.MapClaims) {
	sum := sha256.Sum256([]byte(tok))
	return func(c jwt.MapClaims) { c["ath"] = base64.RawURLEncoding.EncodeToString(sum[:]) }
}

// with combines claim edits.
func with(edits ...func(jwt.MapClaims)) func(jwt.MapClaims) {
	return func(c jwt.MapClaims) {
		for _, e := range edits {
			e(c)
		}
	}
}

// TestDPoP: tokens bound to a key (RFC 9449), driven by oauth4webapi
// unmodified (client_credentials with private_key_jwt, the authorization
// code flow with dpop_jkt and the agent approving on the back channel,
// userinfo, a bound refresh token, guarded APIs), with server nonces on;
// then every refusal a real server must make, at the token endpoint and
// at the guard.
func TestDPoP(t *testing.T) {
	node := oauth4webapiNode(t)
	up := newUpstream(t)
	c := newCaddy(t, "")
	apiPort, strictPort := freePort(t), freePort(t)
	api, strict := fmt.Sprintf("http://127.0.0.1:%d/data", apiPort), fmt.Sprintf("http://127.0.0.1:%d/data", strictPort)
	c.sites = guardedSite(apiPort, "\tagent_guard {\n\t\tscopes data:read\n\t}", up.URL) +
		guardedSite(strictPort, "\tagent_guard {\n\t\tscopes data:read\n\t\tdpop required\n\t}", up.URL)
	redirect := fmt.Sprintf("http://127.0.0.1:%d/callback", freePort(t))
	c.start(fmt.Sprintf(`		dpop_nonce on
		agent dpop-agent {
			permissions data:read
		}
		client dpop-app {
			name "DPoP app"
			public
			redirect_uri %s
			scopes openid profile data:read
		}`, redirect))
	agentKey := newECPair(t, "dpop-agent-1")
	const agentID = "dpop-agent"
	if r := c.admin(t, "POST", "/auth_agent/agents", fmt.Sprintf(`{"agent_id":%q,"model_name":"claude","owner_email":"ops@example.com","jwks":%s}`, agentID, agentKey.set())); r.status != 201 {
		t.Fatalf("create %s: %d %s", agentID, r.status, r.body)
	}

	res := runScript(t, node, "dpop.mjs", c, "ISSUER="+c.base(), "API_URL="+api, "STRICT_API_URL="+strict, "AGENT_ID="+agentID,
		"AGENT_JWK="+agentKey.privateJSON(), "CLIENT_ID=dpop-app", "REDIRECT_URI="+redirect)
	if res.NonceRetries == 0 {
		t.Fatal("nonces are on, yet no request was asked for one")
	}

	// The refusals, with proofs this test signs.
	tokenURL := c.base() + "/oauth2/token"
	nonce := func() string {
		r := do(t, "POST", tokenURL, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "DPoP": agentKey.proof(t, "POST", tokenURL, nil)}, "grant_type=client_credentials")
		wantError(t, r, 400, "use_dpop_nonce")
		n := r.header.Get("DPoP-Nonce")
		if n == "" {
			t.Fatal("use_dpop_nonce without a DPoP-Nonce header")
		}
		return n
	}
	n := nonce()
	withNonce := func(c jwt.MapClaims) { c["nonce"] = n }
	grant := func(proof string, assertion string) response {
		form := url.Values{"grant_type": {"client_credentials"}, "scope": {"data:read"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion}}
		h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
		if proof != "" {
			h["DPoP"] = proof
		}
		return do(t, "POST", tokenURL, h, form.Encode())
	}
	dpopKey, otherKey := newECPair(t, ""), newRSAPair(t, "", "PS256")
	r := grant(dpopKey.proof(t, "POST", tokenURL, withNonce), agentKey.assertion(t, agentID, tokenURL, nil))
	if r.status != 200 || r.json["token_type"] != "DPoP" || r.header.Get("DPoP-Nonce") == "" {
		t.Fatalf("client_credentials with a proof: %d %s", r.status, r.body)
	}
	at := r.json["access_token"].(string)

	// At the token endpoint: each bad proof is 400 invalid_dpop_proof, and
	// the assertion it came with is not spent.
	replayed := dpopKey.proof(t, "POST", tokenURL, withNonce)
	if r := grant(replayed, agentKey.assertion(t, agentID, tokenURL, nil)); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	for name, proof := range map[string]string{
		"replayed":      replayed,
		"wrong htm":     dpopKey.proof(t, "GET", tokenURL, withNonce),
		"wrong htu":     dpopKey.proof(t, "POST", c.base()+"/oauth2/introspect", withNonce),
		"iat too old":   dpopKey.proof(t, "POST", tokenURL, with(withNonce, func(c jwt.MapClaims) { c["iat"] = time.Now().Add(-5 * time.Minute).Unix() })),
		"iat in future": dpopKey.proof(t, "POST", tokenURL, with(withNonce, func(c jwt.MapClaims) { c["iat"] = time.Now().Add(5 * time.Minute).Unix() })),
		"not a JWT":     "not-a-proof",
	} {
		t.Run("token endpoint refuses "+name, func(t *testing.T) {
			wantError(t, grant(proof, agentKey.assertion(t, agentID, tokenURL, nil)), 400, "invalid_dpop_proof")
		})
	}
	t.Run("token endpoint asks for the nonce", func(t *testing.T) {
		wantError(t, grant(dpopKey.proof(t, "POST", tokenURL, nil), agentKey.assertion(t, agentID, tokenURL, nil)), 400, "use_dpop_nonce")
	})

	// At the guard: each refusal is 401 with the DPoP challenge.
	call := func(u, auth, proof string) response {
		h := map[string]string{"Authorization": auth}
		if proof != "" {
			h["DPoP"] = proof
		}
		return do(t, "GET", u, h, "")
	}
	guarded := func(edits ...func(jwt.MapClaims)) string {
		return dpopKey.proof(t, "GET", api, with(append([]func(jwt.MapClaims){withNonce, ath(at)}, edits...)...))
	}
	ok := guarded()
	if r := call(api, "DPoP "+at, ok); r.status != 200 {
		t.Fatalf("guarded API with a proof: %d %s", r.status, r.body)
	}
	hits := up.hits.Load()
	for name, c := range map[string]struct {
		u, auth, proof, code string
	}{
		"a replayed proof":      {api, "DPoP " + at, ok, "invalid_dpop_proof"},
		"a proof for POST":      {api, "DPoP " + at, dpopKey.proof(t, "POST", api, with(withNonce, ath(at))), "invalid_dpop_proof"},
		"a proof for elsewhere": {api, "DPoP " + at, dpopKey.proof(t, "GET", strict, with(withNonce, ath(at))), "invalid_dpop_proof"},
		"an old proof":          {api, "DPoP " + at, guarded(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(-2 * time.Minute).Unix() }), "invalid_dpop_proof"},
		"a wrong ath":           {api, "DPoP " + at, dpopKey.proof(t, "GET", api, with(withNonce, ath("another token"))), "invalid_dpop_proof"},
		"no proof":              {api, "DPoP " + at, "", "invalid_dpop_proof"},
		"the token as Bearer":   {api, "Bearer " + at, "", "invalid_token"},
		"another key's proof":   {api, "DPoP " + at, otherKey.proof(t, "GET", api, with(withNonce, ath(at))), "invalid_token"},
		"no nonce":              {api, "DPoP " + at, dpopKey.proof(t, "GET", api, ath(at)), "use_dpop_nonce"},
	} {
		t.Run("guard refuses "+name, func(t *testing.T) {
			r := call(c.u, c.auth, c.proof)
			wantError(t, r, 401, c.code)
			challenges := strings.Join(r.header.Values("WWW-Authenticate"), "\n")
			if !strings.Contains(challenges, `DPoP realm=`) || !strings.Contains(challenges, `error="`+c.code+`"`) || !strings.Contains(challenges, `algs="ES256 EdDSA PS256 RS256"`) {
				t.Fatalf("challenges: %s", challenges)
			}
			if c.code == "use_dpop_nonce" && r.header.Get("DPoP-Nonce") == "" {
				t.Fatal("use_dpop_nonce without a DPoP-Nonce header")
			}
		})
	}
	if up.hits.Load() != hits {
		t.Fatal("a refused request reached the upstream")
	}

	// dpop required: a bearer token is refused, and only DPoP is offered.
	plain := grant("", agentKey.assertion(t, agentID, tokenURL, nil))
	if plain.status != 200 || plain.json["token_type"] != "Bearer" {
		t.Fatalf("client_credentials without a proof: %d %s", plain.status, plain.body)
	}
	r = call(strict, "Bearer "+plain.json["access_token"].(string), "")
	wantError(t, r, 401, "invalid_token")
	if ch := r.header.Values("WWW-Authenticate"); len(ch) != 1 || !strings.HasPrefix(ch[0], "DPoP ") {
		t.Fatalf("dpop required offers only DPoP: %q", ch)
	}
	if r := call(api, "Bearer "+plain.json["access_token"].(string), ""); r.status != 200 {
		t.Fatalf("a bearer token where DPoP is optional: %d %s", r.status, r.body)
	}
	md := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/.well-known/oauth-protected-resource", strictPort), nil, "")
	if md.json["dpop_bound_access_tokens_required"] != true || !strings.Contains(string(md.body), `"dpop_signing_alg_values_supported":["ES256","EdDSA","PS256","RS256"]`) {
		t.Fatalf("metadata of a guard requiring DPoP: %s", md.body)
	}

	// Per-agent and per-client policies.
	if r := c.admin(t, "PATCH", "/auth_agent/agents/"+agentID, `{"require_dpop":true}`); r.status != 200 || r.json["require_dpop"] != true {
		t.Fatalf("require_dpop: %d %s", r.status, r.body)
	}
	wantError(t, grant("", agentKey.assertion(t, agentID, tokenURL, nil)), 400, "invalid_dpop_proof")
	if r := grant(dpopKey.proof(t, "POST", tokenURL, withNonce), agentKey.assertion(t, agentID, tokenURL, nil)); r.status != 200 {
		t.Fatalf("an agent requiring DPoP, with a proof: %d %s", r.status, r.body)
	}
}
