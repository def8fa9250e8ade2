package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/authagent/caddy-authagent/client"
)

// TestGoClient runs the agent side end to end through the Go client
// against a real Caddy: register, authenticate, profile, sign in to a
// website, the website's code exchange and ID-token check, refresh,
// revoke, and the guard refusing the revoked token; then the errors a Go
// agent meets.
func TestGoClient(t *testing.T) {
	site := newWebsite(t)
	c := newCaddy(t, "")
	api := c.guardAPI(t, "\tagent_guard {\n\t\tscopes data:read\n\t}\n")
	c.start(oauthOpts(site.callback, "\t\trequest_lifetime 10s"))
	ctx := context.Background()
	ac := client.New(c.base())
	creds := client.Credentials{AgentID: "go-agent", AgentSecret: secret}

	a, err := ac.RegisterAgent(ctx, client.Registration{AgentID: "go-agent", AgentSecret: secret, ModelName: "gpt-test", OwnerName: "Owner", OwnerEmail: "owner@example.com"})
	if err != nil || a.AgentID != "go-agent" || a.AgentSecret != "" {
		t.Fatalf("RegisterAgent: %+v %v", a, err)
	}
	gen, err := ac.RegisterAgent(ctx, client.Registration{AgentID: "go-generated", ModelName: "m", OwnerName: "O", OwnerEmail: "o@example.com"})
	if err != nil || len(gen.AgentSecret) < 32 {
		t.Fatalf("RegisterAgent with a generated secret: %+v %v", gen, err)
	}
	tok, err := ac.Authenticate(ctx, creds)
	if err != nil || !tok.Valid(time.Minute) || tok.TokenType != "Bearer" {
		t.Fatalf("Authenticate: %v %v", tok, err)
	}
	if strings.Contains(tok.String(), tok.AccessToken) {
		t.Fatal("Token.String shows the token")
	}
	prof, err := ac.Profile(ctx, tok.AccessToken)
	if err != nil || prof.ModelName != "gpt-test" || prof.OwnerEmail != "owner@example.com" {
		t.Fatalf("Profile: %+v %v", prof, err)
	}
	model := "gpt-test-2"
	if p, err := ac.UpdateProfile(ctx, tok.AccessToken, client.ProfileUpdate{ModelName: &model}); err != nil || p.ModelName != model {
		t.Fatalf("UpdateProfile: %+v %v", p, err)
	}

	// The website's side with golang.org/x/oauth2 and go-oidc; the
	// agent's with the client.
	provider, err := oidc.NewProvider(ctx, c.base())
	if err != nil {
		t.Fatal(err)
	}
	cfg := oauth2.Config{ClientID: "demo-site", ClientSecret: clientSecret, Endpoint: provider.Endpoint(),
		RedirectURL: site.callback, Scopes: []string{oidc.ScopeOpenID, "profile", "data:read"}}
	pkce := oauth2.GenerateVerifier()
	// A sign-in request left pending until it expires (checked at the end).
	expiringSince := time.Now()
	expiringID := c.startAuthorization(t, cfg.AuthCodeURL("late", oauth2.S256ChallengeOption(pkce)))
	authURL := cfg.AuthCodeURL("state-go", oauth2.S256ChallengeOption(pkce), oidc.Nonce("nonce-go"))
	redirect, err := ac.SignIn(ctx, authURL, creds)
	if err != nil {
		t.Fatalf("SignIn: %v", err)
	}
	ru, err := url.Parse(redirect)
	if err != nil || !strings.HasPrefix(redirect, site.callback) || ru.Query().Get("state") != "state-go" || ru.Query().Get("code") == "" {
		t.Fatalf("SignIn redirect %q", redirect)
	}
	grant, err := cfg.Exchange(ctx, ru.Query().Get("code"), oauth2.VerifierOption(pkce))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	rawID, _ := grant.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: "demo-site"}).Verify(ctx, rawID)
	if err != nil || idt.Subject != "go-agent" || idt.Nonce != "nonce-go" {
		t.Fatalf("ID token: %+v %v", idt, err)
	}
	website := client.ClientAuth{ClientID: "demo-site", ClientSecret: clientSecret}
	next, err := ac.Refresh(ctx, grant.RefreshToken, website)
	if err != nil || next.RefreshToken == "" || next.RefreshToken == grant.RefreshToken || next.IDToken == "" {
		t.Fatalf("Refresh: %v %v", next, err)
	}
	if in, err := ac.Introspect(ctx, next.AccessToken, website); err != nil || !in.Active || in.Subject != "go-agent" {
		t.Fatalf("Introspect: %+v %v", in, err)
	}
	if r := do(t, "GET", api+"/x", bearer(next.AccessToken), ""); r.status != 200 {
		t.Fatalf("guard before revocation: %d %s", r.status, r.body)
	}
	if err := ac.Revoke(ctx, next.AccessToken, website); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if r := do(t, "GET", api+"/x", bearer(next.AccessToken), ""); r.status != 401 {
		t.Fatalf("guard after revocation: %d %s", r.status, r.body)
	}
	// The agent revokes a token it got for itself, as its own client.
	if err := ac.Revoke(ctx, tok.AccessToken, client.AgentAuth(creds)); err != nil {
		t.Fatalf("Revoke as the agent: %v", err)
	}
	if in, err := ac.Introspect(ctx, tok.AccessToken, client.AgentAuth(creds)); err != nil || in.Active {
		t.Fatalf("Introspect after revoke: %+v %v", in, err)
	}

	// Errors: a wrong secret, a refused sign-in request, an expired one,
	// a URL of another issuer, a network error.
	_, err = ac.Authenticate(ctx, client.Credentials{AgentID: "go-agent", AgentSecret: "Wrong-Secret-1!"})
	if e := asClientError(t, err); e.Code != "invalid_client" || e.Status != 401 {
		t.Fatalf("wrong secret: %+v", e)
	}
	_, err = ac.SignIn(ctx, cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(pkce), oauth2.SetAuthURLParam("scope", "openid nonsense:x")), creds)
	if e := asClientError(t, err); e.Code != "invalid_scope" {
		t.Fatalf("refused sign-in: %+v", e)
	}
	if _, err := ac.SignIn(ctx, "https://elsewhere.example/oauth2/authorize?"+strings.SplitN(authURL, "?", 2)[1], creds); !client.IsCode(err, "invalid_request") {
		t.Fatalf("another issuer's URL: %v", err)
	}
	time.Sleep(time.Until(expiringSince.Add(10500 * time.Millisecond))) // request_lifetime 10s
	if _, err := ac.Approve(ctx, expiringID, creds); !client.IsCode(err, "invalid_request") {
		t.Fatalf("an expired sign-in request: %v", err)
	}
	down := client.New("http://127.0.0.1:" + strconv.Itoa(freePort(t)))
	if _, err := down.Authenticate(ctx, creds); !client.IsCode(err, client.ErrorNetwork) {
		t.Fatalf("network error: %v", err)
	}
}

// TestGoClientRateLimit surfaces a 429 with its headers.
func TestGoClientRateLimit(t *testing.T) {
	c := newCaddy(t, "")
	c.start("\t\trate_limit {\n\t\t\tauthentication 2/m\n\t\t}")
	ctx := context.Background()
	ac := client.New(c.base(), client.WithHTTPClient(&http.Client{Timeout: 10 * time.Second}))
	if _, err := ac.RegisterAgent(ctx, client.Registration{AgentID: "limited", AgentSecret: secret, ModelName: "m", OwnerName: "O", OwnerEmail: "o@example.com"}); err != nil {
		t.Fatal(err)
	}
	wrong := client.Credentials{AgentID: "limited", AgentSecret: "Wrong-Secret-1!"}
	var last *client.Error
	for range 3 {
		_, err := ac.Authenticate(ctx, wrong)
		last = asClientError(t, err)
	}
	if last.Code != "rate_limit_exceeded" || last.Status != 429 || last.RetryAfter <= 0 || last.RateLimit == nil || last.RateLimit.Limit != 2 || last.RateLimit.Remaining != 0 {
		t.Fatalf("rate-limited: %+v (rate limit %+v)", last, last.RateLimit)
	}
}

func asClientError(t *testing.T, err error) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("not a *client.Error: %v", err)
	}
	return e
}

// TestGoClientWithAKey: an agent that holds a key and no secret, through
// the Go client — registers its public key, authenticates and signs in to
// a website with assertions, introspects and revokes its token as its own
// client, and replaces a leaked secret never: it has none.
func TestGoClientWithAKey(t *testing.T) {
	site := newWebsite(t)
	c := newCaddy(t, "")
	c.start(oauthOpts(site.callback, ""))
	ctx := context.Background()
	ac := client.New(c.base())
	for _, key := range []crypto.Signer{ecKey(t), edKey(t), rsaKey(t)} {
		id := fmt.Sprintf("keyed-%T", key.Public())
		id = strings.NewReplacer("*", "", ".", "-").Replace(id)
		jwks, err := client.PublicJWKS(key, id+"-1")
		if err != nil {
			t.Fatal(err)
		}
		a, err := ac.RegisterAgent(ctx, client.Registration{AgentID: id, ModelName: "m", OwnerEmail: "o@example.com", JWKS: jwks})
		if err != nil || a.AgentSecret != "" || a.TokenEndpointAuthMethod != "private_key_jwt" || len(a.Kids) != 1 {
			t.Fatalf("%s: RegisterAgent with a key: %+v %v", id, a, err)
		}
		creds := client.Credentials{AgentID: id, Key: key, KeyID: id + "-1"}
		tok, err := ac.Authenticate(ctx, creds)
		if err != nil || !tok.Valid(time.Minute) {
			t.Fatalf("%s: Authenticate with a key: %v", id, err)
		}
		if in, err := ac.Introspect(ctx, tok.AccessToken, client.AgentAuth(creds)); err != nil || !in.Active || in.Subject != id {
			t.Fatalf("%s: Introspect with a key: %+v %v", id, in, err)
		}
		authURL := c.authorizeURL(map[string]string{"redirect_uri": site.callback, "scope": "openid profile"})
		if redirect, err := ac.SignIn(ctx, authURL, creds); err != nil || !strings.Contains(redirect, "code=") {
			t.Fatalf("%s: SignIn with a key: %q %v", id, redirect, err)
		}
		if err := ac.Revoke(ctx, tok.AccessToken, client.AgentAuth(creds)); err != nil {
			t.Fatalf("%s: Revoke with a key: %v", id, err)
		}
		if _, err := ac.Authenticate(ctx, client.Credentials{AgentID: id, AgentSecret: secret}); !client.IsCode(err, "invalid_client") {
			t.Fatalf("%s: a secret for an agent with a key: %v", id, err)
		}
	}
}

func ecKey(t *testing.T) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func edKey(t *testing.T) crypto.Signer {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rsaKey(t *testing.T) crypto.Signer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestGoClientWithDPoP: an agent with a key gets DPoP-bound tokens through
// the Go client — at /api/agent-auth and with client_credentials — and
// calls a guarded API with a proof per request through the client's
// http.Client; the token sent as Bearer, or with another key's proof, is
// refused. With dpop_nonce on, the token endpoints and the guard ask for a
// nonce and the client tries once more with it, then keeps it.
func TestGoClientWithDPoP(t *testing.T) {
	for _, nonces := range []string{"off", "on"} {
		t.Run("dpop_nonce "+nonces, func(t *testing.T) {
			up := newEchoUpstream(t)
			c := newCaddy(t, "")
			port := freePort(t)
			c.sites = guardedSite(port, "\tagent_guard {\n\t\tscopes data:read\n\t}\n", up.URL)
			api := fmt.Sprintf("http://127.0.0.1:%d", port)
			c.start("\t\tdefault_permissions data:read\n\t\tdpop_nonce " + nonces)
			ctx := context.Background()
			sent := &exchanges{}
			ac := client.New(c.base(), client.WithHTTPClient(&http.Client{Transport: sent, Timeout: 10 * time.Second}))
			// A retry is expected where a nonce is new to the client: after
			// a token endpoint's 400 or a guard's 401 use_dpop_nonce.
			retried := func(request string, refusal int) []string {
				if nonces == "on" {
					return []string{fmt.Sprintf("%s %d", request, refusal), request + " 200"}
				}
				return []string{request + " 200"}
			}

			for i, dpopKey := range []crypto.Signer{ecKey(t), edKey(t), rsaKey(t)} {
				id := fmt.Sprintf("dpop-agent-%d", i)
				key := ecKey(t)
				jwks, err := client.PublicJWKS(key, id+"-1")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ac.RegisterAgent(ctx, client.Registration{AgentID: id, ModelName: "m", OwnerEmail: "o@example.com", JWKS: jwks}); err != nil {
					t.Fatalf("%s: RegisterAgent: %v", id, err)
				}
				dp, err := client.NewDPoP(dpopKey)
				if err != nil {
					t.Fatal(err)
				}
				creds := client.Credentials{AgentID: id, Key: key, KeyID: id + "-1", DPoP: dp}
				sent.reset()
				tok, err := ac.Authenticate(ctx, creds, "profile", "data:read")
				if err != nil || tok.TokenType != "DPoP" || tok.DPoP != dp || !tok.Valid(time.Minute) {
					t.Fatalf("%s: Authenticate with DPoP: %v %v\n%s", id, tok, err, c.log)
				}
				// The issuer's nonce is new to the client only the first time.
				want := []string{"POST /api/agent-auth 200"}
				if i == 0 {
					want = retried("POST /api/agent-auth", 400)
				}
				sent.want(t, want...)
				if in, err := ac.Introspect(ctx, tok.AccessToken, client.AgentAuth(creds)); err != nil || !in.Active || in.TokenType != "DPoP" || in.Confirmation == nil || in.Confirmation.JKT != dp.Thumbprint() {
					t.Fatalf("%s: Introspect a bound token: %+v %v", id, in, err)
				}
				// The issuer's own resource takes the bound token with proofs too.
				if me, err := ac.Profile(ctx, tok.AccessToken); err != nil || me.AgentID != id {
					t.Fatalf("%s: Profile with a bound token: %+v %v", id, me, err)
				}

				// The guarded API, through the client's http.Client: a GET, then a
				// POST whose body arrives whole after any nonce retry.
				hc := ac.HTTPClient(tok)
				sent.reset()
				if got := up.call(t, hc, http.MethodGet, api+"/things?page=2", ""); got.Agent != id || got.Body != "" {
					t.Fatalf("%s: GET through the guard: %+v", id, got)
				}
				if i == 0 {
					sent.want(t, retried("GET /things", 401)...)
				} else {
					sent.want(t, "GET /things 200")
				}
				if got := up.call(t, hc, http.MethodPost, api+"/things", `{"n":1}`); got.Agent != id || got.Body != `{"n":1}` {
					t.Fatalf("%s: POST through the guard: %+v", id, got)
				}
				// The same token as Bearer, or with a proof by another key: refused.
				hits := up.hits.Load()
				if r := do(t, "GET", api+"/things", bearer(tok.AccessToken), ""); r.status != 401 || r.json["error"] != "invalid_token" || !strings.Contains(strings.Join(r.header.Values("WWW-Authenticate"), ", "), `error="invalid_token"`) {
					t.Fatalf("%s: a DPoP token as Bearer: %d %s %q", id, r.status, r.body, r.header.Values("WWW-Authenticate"))
				}
				other, err := client.NewDPoP(ecKey(t))
				if err != nil {
					t.Fatal(err)
				}
				stolen := *tok
				stolen.DPoP = other
				resp, err := ac.HTTPClient(&stolen).Get(api + "/things")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 401 || up.hits.Load() != hits {
					t.Fatalf("%s: a proof by another key: %d, the API reached %d times", id, resp.StatusCode, up.hits.Load()-hits)
				}

				// client_credentials at the token endpoint, as the agent.
				sent.reset()
				cc, err := ac.ClientCredentials(ctx, client.AgentAuth(creds), "data:read")
				if err != nil || cc.TokenType != "DPoP" || cc.DPoP != dp {
					t.Fatalf("%s: client_credentials with DPoP: %v %v", id, cc, err)
				}
				sent.want(t, "POST /oauth2/token 200") // the same origin as /api/agent-auth: its nonce is known
				if got := up.call(t, ac.HTTPClient(cc), http.MethodGet, api+"/things", ""); got.Agent != id {
					t.Fatalf("%s: a client_credentials token through the guard: %+v", id, got)
				}
				if r := do(t, "GET", api+"/things", bearer(cc.AccessToken), ""); r.status != 401 {
					t.Fatalf("%s: a client_credentials DPoP token as Bearer: %d %s", id, r.status, r.body)
				}
			}
		})
	}
}

// echoUpstream is an API behind the guard that answers with the agent the
// guard let through and the body it got.
type echoUpstream struct {
	*httptest.Server
	hits atomic.Int64
}

type echoed struct{ Agent, Body string }

func newEchoUpstream(t *testing.T) *echoUpstream {
	t.Helper()
	u := &echoUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		_ = json.NewEncoder(w).Encode(echoed{Agent: r.Header.Get("X-Agent-Id"), Body: string(b)})
	}))
	t.Cleanup(u.Close)
	return u
}

// call sends a request through hc and decodes the upstream's echo; any
// status but 200 fails the test.
func (u *echoUpstream) call(t *testing.T, hc *http.Client, method, url, body string) echoed {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e echoed
	if resp.StatusCode != 200 || json.Unmarshal(b, &e) != nil {
		t.Fatalf("%s %s: %d %s %q", method, url, resp.StatusCode, b, resp.Header.Values("WWW-Authenticate"))
	}
	return e
}

// exchanges is a transport that notes each request it carries as
// "METHOD /path status".
type exchanges struct {
	mu  sync.Mutex
	log []string
}

func (x *exchanges) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil {
		x.mu.Lock()
		x.log = append(x.log, fmt.Sprintf("%s %s %d", req.Method, req.URL.Path, resp.StatusCode))
		x.mu.Unlock()
	}
	return resp, err
}

func (x *exchanges) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.log = nil
}

func (x *exchanges) want(t *testing.T, want ...string) {
	t.Helper()
	x.mu.Lock()
	defer x.mu.Unlock()
	if !slices.Equal(x.log, want) {
		t.Fatalf("requests %q, want %q", x.log, want)
	}
}
