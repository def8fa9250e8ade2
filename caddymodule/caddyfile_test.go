package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestCaddyfileAdapt checks testdata/*.caddyfiletest: a Caddyfile, a line of
// dashes, and the JSON it must adapt to.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in, want, ok := strings.Cut(string(raw), "----------\n")
			if !ok {
				t.Fatal("no ---------- separator")
			}
			in, want = strings.TrimSpace(in)+"\n", strings.TrimSpace(want)
			if !caddytest.CompareAdapt(t, f, in, "caddyfile", want) {
				t.Fatal("adapted JSON differs")
			}
		})
	}
}

func TestCaddyfileErrors(t *testing.T) {
	cases := map[string]string{
		"unknown setting":       "auth_agent {\n bogus 1\n}",
		"argument on option":    "auth_agent extra {\n}",
		"issuer without value":  "auth_agent {\n issuer\n}",
		"issuer two values":     "auth_agent {\n issuer a b\n}",
		"bad duration":          "auth_agent {\n access_token_lifetime soon\n}",
		"negative duration":     "auth_agent {\n key_rotation -1h\n}",
		"bad registration":      "auth_agent {\n registration maybe\n}",
		"token without value":   "auth_agent {\n registration token\n}",
		"empty permissions":     "auth_agent {\n default_permissions\n}",
		"agent without id":      "auth_agent {\n agent {\n }\n}",
		"agent twice":           "auth_agent {\n agent a1b {\n }\n agent a1b {\n }\n}",
		"unknown agent setting": "auth_agent {\n agent a1b {\n secret x\n }\n}",
		"client without id":     "auth_agent {\n client {\n }\n}",
		"client twice":          "auth_agent {\n client c {\n public\n }\n client c {\n public\n }\n}",
		"client unknown":        "auth_agent {\n client c {\n color blue\n }\n}",
		"public with secret":    "auth_agent {\n client c {\n public\n secret abc\n }\n}",
		"secret two values":     "auth_agent {\n client c {\n secret a b\n }\n}",
		"redirect without uri":  "auth_agent {\n client c {\n redirect_uri\n }\n}",
		"bad dcr":               "auth_agent {\n dynamic_client_registration maybe\n}",
		"bad rate":              "auth_agent {\n rate_limit {\n registration lots\n }\n}",
		"rate unit":             "auth_agent {\n rate_limit {\n api 5/w\n }\n}",
		"zero rate":             "auth_agent {\n rate_limit {\n api 0/m\n }\n}",
		"rate unknown":          "auth_agent {\n rate_limit {\n burst 5\n }\n}",
		"redis without url":     "auth_agent {\n rate_limit {\n store redis\n }\n}",
		"bad store":             "auth_agent {\n rate_limit {\n store etcd\n }\n}",
		"bad policy":            "auth_agent {\n rate_limit {\n on_store_error api maybe\n }\n}",
		"cors unknown":          "auth_agent {\n cors {\n methods GET\n }\n}",
		"cors no origins":       "auth_agent {\n cors {\n origins\n }\n}",
		"storage twice":         "auth_agent {\n storage /a\n storage /b\n}",
		"scope words missing":   "auth_agent {\n scope_description data:read\n}",
		"scope words twice":     "auth_agent {\n scope_description a:b x\n scope_description a:b y\n}",
		"documents maybe":       "auth_agent {\n client_id_metadata_documents maybe\n}",
		"no metadata hosts":     "auth_agent {\n client_id_metadata_hosts\n}",
		"cors no headers":       "auth_agent {\n cors {\n headers\n }\n}",
		"storage no value":      "auth_agent {\n storage\n}",
		"storage path and more": "auth_agent {\n storage /a /b\n}",
		"memory with args":      "auth_agent {\n storage memory /x\n}",
		"badger two paths":      "auth_agent {\n storage badger /a /b\n}",
		"badger unknown":        "auth_agent {\n storage badger /a {\n colour blue\n }\n}",
		"memory encrypted":      "auth_agent {\n storage memory\n encryption_key_file /k\n}",
		"postgres no dsn":       "auth_agent {\n storage postgres\n}",
		"postgres two dsns":     "auth_agent {\n storage postgres a b\n}",
		"postgres bad conns":    "auth_agent {\n storage postgres x {\n max_conns lots\n }\n}",
		"postgres bad timeout":  "auth_agent {\n storage postgres x {\n query_timeout 0s\n }\n}",
		"postgres unknown":      "auth_agent {\n storage postgres x {\n ssl on\n }\n}",
		"dpop maybe":            "auth_agent {\n dpop maybe\n}",
		"dpop nonce maybe":      "auth_agent {\n dpop_nonce maybe\n}",
		"dpop leeway bad":       "auth_agent {\n dpop_leeway soon\n}",
		"dpop leeway negative":  "auth_agent {\n dpop_leeway -1s\n}",
		"client dpop maybe":     "auth_agent {\n client c {\n public\n dpop maybe\n }\n}",
		"idp without issuer":    "auth_agent {\n trusted_idp {\n }\n}",
		"idp unknown setting":   "auth_agent {\n trusted_idp https://i.example.com {\n colour blue\n }\n}",
		"idp empty clients":     "auth_agent {\n trusted_idp https://i.example.com {\n clients\n }\n}",
		"audience two issuers":  "auth_agent {\n id_jag_audience https://a.example.com https://b.example.com {\n }\n}",
		"audience unknown":      "auth_agent {\n id_jag_audience https://a.example.com {\n colour blue\n }\n}",
		"client app type":       "auth_agent {\n client c {\n public\n application_type desktop\n }\n}",
		"client app type twice": "auth_agent {\n client c {\n public\n application_type native web\n }\n}",
		"client app type none":  "auth_agent {\n client c {\n public\n application_type\n }\n}",
		"grace too long":        "auth_agent {\n refresh_reuse_grace 5m\n}",
		"grace negative":        "auth_agent {\n refresh_reuse_grace -1s\n}",
		"grace not a duration":  "auth_agent {\n refresh_reuse_grace soon\n}",
		"grace two values":      "auth_agent {\n refresh_reuse_grace 1s 2s\n}",
		"grace no value":        "auth_agent {\n refresh_reuse_grace\n}",
	}
	for name, input := range cases {
		t.Run(name, func(t *testing.T) {
			err := new(App).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
			if err == nil {
				t.Fatalf("accepted %q", input)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	valid := func() *App { return &App{Issuer: "https://auth.example.com"} }
	cases := map[string]struct {
		mutate func(*App)
		want   string // a word the message must contain
	}{
		"no issuer":          {func(a *App) { a.Issuer = "" }, "issuer"},
		"relative issuer":    {func(a *App) { a.Issuer = "auth.example.com" }, "issuer"},
		"http issuer":        {func(a *App) { a.Issuer = "http://auth.example.com" }, "https"},
		"trailing slash":     {func(a *App) { a.Issuer = "https://auth.example.com/" }, "trailing slash"},
		"issuer with query":  {func(a *App) { a.Issuer = "https://auth.example.com?x=1" }, "issuer"},
		"bad alg":            {func(a *App) { a.AccessTokenAlg = "HS256" }, "access_token_alg"},
		"short rotation":     {func(a *App) { a.KeyRotation = 60e9 }, "key_rotation"},
		"bad registration":   {func(a *App) { a.Registration = &RegistrationConfig{Mode: "maybe"} }, "registration"},
		"token without text": {func(a *App) { a.Registration = &RegistrationConfig{Mode: "token"} }, "registration"},
		"bad permission":     {func(a *App) { a.DefaultPermissions = []string{"has space"} }, "default_permissions"},
		"bad agent id":       {func(a *App) { a.Agents = map[string]*AgentConfig{"x": {}} }, `agent "x"`},
		"bad agent perm":     {func(a *App) { a.Agents = map[string]*AgentConfig{"abc": {Permissions: []string{`q"`}}} }, `agent "abc"`},
		"loopback lookalike": {func(a *App) { a.Issuer = "http://127.0.0.1.nip.io" }, "https"},
		"bad dpop":           {func(a *App) { a.DPoP = "always" }, "dpop"},
		"http idp": {func(a *App) {
			a.TrustedIdPs = []*TrustedIdPConfig{{Issuer: "http://idp.example.com", Clients: []string{"c"}, Scopes: []string{"s:r"}}}
		}, "trusted_idp"},
		"idp without scopes": {func(a *App) {
			a.TrustedIdPs = []*TrustedIdPConfig{{Issuer: "https://idp.example.com", Clients: []string{"c"}}}
		}, "scopes"},
		"idp bad subject": {func(a *App) {
			a.TrustedIdPs = []*TrustedIdPConfig{{Issuer: "https://idp.example.com", Clients: []string{"c"}, Scopes: []string{"s:r"}, Subject: "anyone"}}
		}, "subject"},
		"audience no client_id": {func(a *App) {
			a.IDJAGAudiences = []*IDJAGAudienceConfig{{Issuer: "https://as.example.com", Clients: []string{"c"}, Scopes: []string{"s:r"}}}
		}, "client_id"},
		"bad dpop nonce":   {func(a *App) { a.DPoPNonce = "yes" }, "dpop_nonce"},
		"long dpop leeway": {func(a *App) { a.DPoPLeeway = caddy.Duration(time.Hour) }, "dpop_leeway"},
		"bad client dpop":  {func(a *App) { a.Clients = map[string]*ClientConfig{"c": {Public: true, DPoP: "always"}} }, "dpop"},
		"bad app type":     {func(a *App) { a.Clients = map[string]*ClientConfig{"c": {Public: true, ApplicationType: "desktop"}} }, "application_type"},
		"long reuse grace": {func(a *App) { a.RefreshReuseGrace = caddy.Duration(2 * time.Minute) }, "refresh_reuse_grace"},
		"negative grace":   {func(a *App) { a.RefreshReuseGrace = caddy.Duration(-time.Second) }, "refresh_reuse_grace"},
		"token outlives key": {func(a *App) {
			a.AccessTokenLifetime = caddy.Duration(48 * time.Hour)
			a.KeyRotation = caddy.Duration(24 * time.Hour)
		}, "access_token_lifetime"},
		"long code lifetime": {func(a *App) { a.CodeLifetime = caddy.Duration(time.Hour) }, "code_lifetime"},
		"short request":      {func(a *App) { a.RequestLifetime = caddy.Duration(time.Second) }, "request_lifetime"},
		"bad dcr mode":       {func(a *App) { a.DynamicClientRegistration = &RegistrationConfig{Mode: "maybe"} }, "dynamic_client_registration"},
		"bad rate json":      {func(a *App) { a.RateLimit = &RateLimitConfig{API: "many"} }, "rate_limit api"},
		"redis url":          {func(a *App) { a.RateLimit = &RateLimitConfig{Store: "redis", RedisURL: "localhost:6379"} }, "redis://"},
		"url without redis":  {func(a *App) { a.RateLimit = &RateLimitConfig{RedisURL: "redis://x"} }, "store redis"},
		"bad fail policy":    {func(a *App) { a.RateLimit = &RateLimitConfig{APIOnStoreError: "ajar"} }, "api_on_store_error"},
		"cors creds with *":  {func(a *App) { a.CORS = &CORSConfig{Origins: []string{"*"}, AllowCredentials: true} }, "allow_credentials"},
		"cors bad origin":    {func(a *App) { a.CORS = &CORSConfig{Origins: []string{"app.example.com"}} }, "cors"},
		"cors bad header":    {func(a *App) { a.CORS = &CORSConfig{Headers: []string{"X Bad"}} }, "header name"},
		"bad scope words":    {func(a *App) { a.ScopeDescriptions = map[string]string{"a b": "x"} }, "scope_description"},
		"empty scope words":  {func(a *App) { a.ScopeDescriptions = map[string]string{"data:read": ""} }, "scope_description"},
		"documents json":     {func(a *App) { a.ClientIDMetadataDocuments = "yes" }, "client_id_metadata_documents"},
		"metadata host url":  {func(a *App) { a.ClientIDMetadataHosts = []string{"https://idp"} }, "client_id_metadata_hosts"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := valid()
			tc.mutate(a)
			err := a.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error naming %q", err, tc.want)
			}
		})
	}
	for _, issuer := range []string{"https://auth.example.com", "https://example.com/idp", "http://localhost:8080", "http://127.0.0.1:9000", "http://127.0.0.2:9000", "http://[::1]:8080"} {
		if err := (&App{Issuer: issuer}).Validate(); err != nil {
			t.Errorf("issuer %s: %v", issuer, err)
		}
	}
}

// FuzzCaddyfile adapts Caddyfiles the way `caddy adapt` does (the lexer,
// the global options, the directives), seeded with the golden files: no
// input may panic or produce JSON that does not decode back into the app.
func FuzzCaddyfile(f *testing.F) {
	golden, _ := filepath.Glob("testdata/*.caddyfiletest")
	for _, file := range golden {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		in, _, _ := strings.Cut(string(b), "----------")
		f.Add(in)
	}
	f.Add("{\n auth_agent {\n issuer https://a.example\n agent ab1 {\n permissions x y\n }\n }\n}")
	f.Add("{\n auth_agent {\n registration token t\n storage memory\n }\n}\n:8080 {\n agent_guard {\n scopes a\n }\n}")
	f.Add("{\n auth_agent {\n rate_limit {\n authorization 5/m\n }\n body_timeout 3s\n client c {\n secret " + strings.Repeat("s", 32) + "\n resource_server\n grant_types client_credentials\n }\n }\n}")
	f.Add("{\n auth_agent {\n\"unterminated\n}")
	adapter := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}
	f.Fuzz(func(t *testing.T, input string) {
		if strings.Contains(input, "import") {
			return // reads files: not this parser's input
		}
		out, _, err := adapter.Adapt([]byte(input), nil)
		if err != nil {
			return
		}
		var cfg struct {
			Apps map[string]json.RawMessage `json:"apps"`
		}
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatalf("the adapter wrote JSON that does not decode: %v\n%s", err, out)
		}
		if raw, ok := cfg.Apps["auth_agent"]; ok {
			var a App
			if err := json.Unmarshal(raw, &a); err != nil {
				t.Fatalf("the auth_agent app does not decode: %v\n%s", err, raw)
			}
			_ = a.Validate()
		}
	})
}

func TestGuardCaddyfile(t *testing.T) {
	g := new(Guard)
	err := g.UnmarshalCaddyfile(caddyfile.NewTestDispenser("agent_guard {\n scopes a b\n scopes c\n resource https://api.example.com\n strip_token\n}"))
	if err != nil || strings.Join(g.Scopes, " ") != "a b c" || g.Resource != "https://api.example.com" || !g.StripToken {
		t.Fatalf("%+v %v", g, err)
	}
	for name, input := range map[string]string{
		"argument":          "agent_guard extra",
		"unknown":           "agent_guard {\n colour blue\n}",
		"empty scopes":      "agent_guard {\n scopes\n}",
		"two resources":     "agent_guard {\n resource a b\n}",
		"strip with value":  "agent_guard {\n strip_token yes\n}",
		"introspect 1 arg":  "agent_guard {\n introspect id\n}",
		"bad refresh":       "agent_guard {\n key_refresh_interval soon\n}",
		"negative interval": "agent_guard {\n key_refresh_interval -1s\n}",
		"site without name": "agent_guard {\n site\n}",
		"dpop maybe":        "agent_guard {\n dpop maybe\n}",
		"dpop no value":     "agent_guard {\n dpop\n}",
	} {
		if err := new(Guard).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, g := range map[string]*Guard{
		"bad scope":             {Scopes: []string{"a b"}},
		"bad resource":          {Resource: "not a uri"},
		"http remote issuer":    {Issuer: "http://auth.example.com"},
		"trailing slash":        {Issuer: "https://auth.example.com/"},
		"local introspection":   {Introspection: &IntrospectionConfig{ClientID: "a", ClientSecret: "b"}},
		"introspection no cred": {Issuer: "https://auth.example.com", Introspection: &IntrospectionConfig{ClientID: "a"}},
		"site with a space":     {Site: "orders api"},
		"site too long":         {Site: strings.Repeat("s", 65)},
		"dpop maybe":            {DPoP: "maybe"},
	} {
		if err := g.Validate(); err == nil || !strings.Contains(err.Error(), "agent_guard") {
			t.Errorf("%s: Validate() = %v", name, err)
		}
	}
}

// A configured client's application_type holds its redirect URIs to the
// rules of its type; without one, a public client may still mix https and
// private-use schemes, as before the type was read.
func TestClientApplicationType(t *testing.T) {
	build := func(cc *ClientConfig) error {
		a := &App{Issuer: "https://auth.example.com", Clients: map[string]*ClientConfig{"app": cc}}
		if err := a.Validate(); err != nil {
			return err
		}
		_, err := a.buildClients(caddy.NewReplacer())
		return err
	}
	for name, tc := range map[string]struct {
		cc   ClientConfig
		want string // "" accepted, else a word of the error
	}{
		"native":            {ClientConfig{Public: true, ApplicationType: "native", RedirectURIs: []string{"http://127.0.0.1/cb", "com.example.app:/cb"}}, ""},
		"native, https":     {ClientConfig{Public: true, ApplicationType: "native", RedirectURIs: []string{"https://app.example.com/cb"}}, "native application"},
		"web":               {ClientConfig{Public: true, ApplicationType: "web", RedirectURIs: []string{"https://app.example.com/cb", "http://localhost:3000/cb"}}, ""},
		"web, private-use":  {ClientConfig{Public: true, ApplicationType: "web", RedirectURIs: []string{"com.example.app:/cb"}}, "private-use"},
		"undeclared, mixed": {ClientConfig{Public: true, RedirectURIs: []string{"https://app.example.com/cb", "com.example.app:/cb"}}, ""},
	} {
		err := build(&tc.cc)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// refresh_reuse_grace is off by default, 0s says so explicitly, and up to
// a minute reaches the protocol configuration.
func TestRefreshReuseGrace(t *testing.T) {
	for input, want := range map[string]time.Duration{
		"auth_agent {\n}":                          0,
		"auth_agent {\n refresh_reuse_grace 0s\n}": 0,
		"auth_agent {\n refresh_reuse_grace 2s\n}": 2 * time.Second,
		"auth_agent {\n refresh_reuse_grace 1m\n}": time.Minute,
	} {
		a := new(App)
		if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			t.Fatalf("%q: %v", input, err)
		}
		a.Issuer = "https://auth.example.com"
		if err := a.Validate(); err != nil || time.Duration(a.RefreshReuseGrace) != want {
			t.Errorf("%q: grace %s, %v; want %s", input, time.Duration(a.RefreshReuseGrace), err, want)
		}
	}
}
