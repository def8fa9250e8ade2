package oauth

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authagent/caddy-authagent/agents"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func wantCode(t *testing.T, name string, err error, code string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != code {
		t.Errorf("%s: got %v, want %s", name, err, code)
	}
}

func TestRequestStatusAndApproval(t *testing.T) {
	req := &AuthRequest{ID: "r", ClientID: "site", RedirectURI: "https://App.example:8443/cb", Scopes: []string{"openid", "data:read"}, ExpiresAt: t0.Add(5 * time.Minute)}
	var none approvalExpectation
	agent := &agents.Agent{ID: "bot", Permissions: []string{"data:read"}}
	if s := requestStatus(req, t0); s != statusPending {
		t.Fatalf("status %s", s)
	}
	if s := requestStatus(nil, t0); s != statusExpired {
		t.Fatalf("missing request: %s", s)
	}
	if s := requestStatus(req, t0.Add(5*time.Minute)); s != statusExpired {
		t.Fatalf("at its expiry: %s", s)
	}
	wantCode(t, "pending", decideApproval(req, agent, t0, none), "")
	wantCode(t, "expired", decideApproval(req, agent, t0.Add(6*time.Minute), none), "invalid_request")
	wantCode(t, "missing permission", decideApproval(req, &agents.Agent{ID: "bot"}, t0, none), "invalid_scope")
	// The agent insists on a client and a redirect host (request-id phishing).
	for _, c := range []struct {
		clientID, redirect, code string
	}{
		{"site", "", ""},
		{"site", "https://app.example:8443/other/path", ""},
		{"", "app.example:8443", ""},
		{"", "APP.example:8443", ""},
		{"other", "", "invalid_request"},
		{"site", "https://app.example/cb", "invalid_request"},
		{"site", "evil.example", "invalid_request"},
	} {
		e, err := parseApprovalExpectation(c.clientID, c.redirect)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		wantCode(t, c.clientID+" "+c.redirect, decideApproval(req, agent, t0, e), c.code)
	}
	// Private-use schemes, default ports, trailing dots and IPv6.
	for _, c := range []struct {
		registered, expect string
		ok                 bool
	}{
		{"bank.example:/cb", "bank.example", false}, // a scheme named like a host is not that host
		{"bank.example:/cb", "https://bank.example/cb", false},
		{"bank.example:/cb", "bank.example:/other", true},
		{"https://bank.example/cb", "bank.example:/cb", false},
		{"https://app.example/cb", "https://APP.example:443/x", true},
		{"https://app.example/cb", "app.example.", true},
		{"https://app.example./cb", "app.example", true},
		{"http://app.example:80/cb", "http://app.example/cb", true},
		{"https://app.example:8443/cb", "https://app.example/cb", false},
		{"http://[::1]:8080/cb", "[::1]:8080", true},
		{"http://[::1]:8080/cb", "http://[::1]:9090/cb", false},
		// A look-alike (Cyrillic е) is its punycode, never the real name.
		{"https://d\u0435mo.example/cb", "demo.example", false},
		{"https://d\u0435mo.example/cb", "https://d\u0435mo.example/x", true},
	} {
		r := *req
		r.RedirectURI = c.registered
		e, err := parseApprovalExpectation("", c.expect)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if got := decideApproval(&r, agent, t0, e) == nil; got != c.ok {
			t.Errorf("registered %q, expected %q: approved %v, want %v", c.registered, c.expect, got, c.ok)
		}
	}
	for _, bad := range []string{"https://", "app.example/cb", "user@app.example", "a b"} {
		if _, err := parseApprovalExpectation("", bad); err == nil {
			t.Errorf("redirect_uri %q accepted", bad)
		}
	}
	approved := *req
	approved.Approval = &Approval{AgentID: "bot"}
	if s := requestStatus(&approved, t0); s != statusAuthenticated {
		t.Fatalf("approved: %s", s)
	}
	wantCode(t, "approved twice", decideApproval(&approved, agent, t0, none), "invalid_request")
}

func TestDecideRedemption(t *testing.T) {
	verifier := strings.Repeat("v", 43)
	sum := sha256.Sum256([]byte(verifier))
	g := &CodeGrant{ClientID: "site", RedirectURI: "https://site/cb", CodeChallenge: base64.RawURLEncoding.EncodeToString(sum[:]), ExpiresAt: t0.Add(time.Minute)}
	ok := codeRedemption{clientID: "site", redirectURI: "https://site/cb", verifier: verifier}
	wantCode(t, "good", decideRedemption(g, ok, t0), "")
	for name, tc := range map[string]struct {
		q   codeRedemption
		now time.Time
	}{
		"expired":        {ok, t0.Add(time.Minute)},
		"other client":   {codeRedemption{clientID: "evil", redirectURI: ok.redirectURI, verifier: verifier}, t0},
		"other redirect": {codeRedemption{clientID: "site", redirectURI: "https://site/other", verifier: verifier}, t0},
		"wrong verifier": {codeRedemption{clientID: "site", redirectURI: ok.redirectURI, verifier: strings.Repeat("w", 43)}, t0},
		"short verifier": {codeRedemption{clientID: "site", redirectURI: ok.redirectURI, verifier: "v"}, t0},
	} {
		wantCode(t, name, decideRedemption(g, tc.q, tc.now), "invalid_grant")
	}
}

func TestDecideRefresh(t *testing.T) {
	g := &RefreshGrant{Family: "f", ClientID: "site", AgentID: "bot", Scopes: []string{"openid", "data:read", "data:write"}, ExpiresAt: t0.Add(time.Hour)}
	agent := &agents.Agent{ID: "bot", Permissions: []string{"data:read"}}
	scopes, err := decideRefresh(g, "site", "", agent, t0)
	if err != nil || strings.Join(scopes, " ") != "openid data:read" {
		t.Fatalf("permissions lost since the grant must not be renewed: %v %v", scopes, err)
	}
	scopes, err = decideRefresh(g, "site", "data:read", agent, t0)
	if err != nil || strings.Join(scopes, " ") != "data:read" {
		t.Fatalf("narrowed: %v %v", scopes, err)
	}
	_, err = decideRefresh(g, "site", "data:admin", agent, t0)
	wantCode(t, "widened", err, "invalid_scope")
	_, err = decideRefresh(g, "other", "", agent, t0)
	wantCode(t, "other client", err, "invalid_grant")
	_, err = decideRefresh(g, "site", "", agent, t0.Add(time.Hour))
	wantCode(t, "family ended", err, "invalid_grant")
	if strings.Join(g.Scopes, " ") != "openid data:read data:write" {
		t.Fatalf("the decision changed the grant: %v", g.Scopes)
	}
}

func TestNarrowScope(t *testing.T) {
	granted := []string{"a", "b"}
	for req, want := range map[string]string{"": "a b", "b": "b", "b a b": "b a"} {
		got, err := narrowScope(req, granted)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("narrowScope(%q) = %v, %v; want %q", req, got, err, want)
		}
	}
	for _, req := range []string{"c", "a c", "a\x00"} {
		_, err := narrowScope(req, granted)
		wantCode(t, "narrow "+req, err, "invalid_scope")
	}
}

func TestDecideExchange(t *testing.T) {
	sub := &AccessClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: "bot", ID: "fam.jti", Audience: []string{"https://auth"},
		ExpiresAt: jwt.NewNumericDate(t0.Add(time.Hour))}, ClientID: "site", Scope: "openid data:read data:write", AuthTime: t0.Unix()}
	site := &Client{ID: "site", Scopes: []string{"openid", "data:read", "data:write"}}
	agent := &agents.Agent{ID: "bot", ModelName: "m", Permissions: []string{"data:read", "data:write"}}
	g, err := decideExchange(exchangeRequest{subject: sub, scope: "data:read", audience: []string{"https://api"}}, clientActor(site), agentSubject(agent))
	if err != nil {
		t.Fatal(err)
	}
	if g.Subject != "bot" || g.ClientID != "site" || strings.Join(g.Scopes, " ") != "data:read" || g.Audience[0] != "https://api" ||
		g.Actor.Subject != "site" || !g.NotAfter.Equal(t0.Add(time.Hour)) || g.JTIPrefix != "fam.jti" || !g.AuthTime.Equal(t0) {
		t.Fatalf("grant %+v", g)
	}
	if g, _ := decideExchange(exchangeRequest{subject: sub}, clientActor(site), agentSubject(agent)); g.Audience[0] != "https://auth" {
		t.Fatalf("without a target the audience stays: %v", g.Audience)
	}
	other := &Client{ID: "other", Scopes: site.Scopes}
	_, err = decideExchange(exchangeRequest{subject: sub}, clientActor(other), agentSubject(agent))
	wantCode(t, "not the client's token", err, "invalid_grant")
	meant := *sub
	meant.Audience = []string{"other"}
	if _, err := decideExchange(exchangeRequest{subject: &meant}, clientActor(other), agentSubject(agent)); err != nil {
		t.Fatalf("a token meant for the client: %v", err)
	}
	_, err = decideExchange(exchangeRequest{subject: sub, scope: "data:admin"}, clientActor(site), agentSubject(agent))
	wantCode(t, "widened", err, "invalid_scope")
	_, err = decideExchange(exchangeRequest{subject: sub, scope: "data:write"}, clientActor(site), agentSubject(&agents.Agent{ID: "bot", Permissions: []string{"data:read"}}))
	wantCode(t, "permission lost", err, "invalid_scope")
	narrow := &Client{ID: "site", Scopes: []string{"data:read"}}
	_, err = decideExchange(exchangeRequest{subject: sub}, clientActor(narrow), agentSubject(agent))
	wantCode(t, "client may not hold", err, "invalid_scope")
	deep := *sub
	deep.ID = strings.Repeat("x.", maxExchangeDepth) + "x"
	_, err = decideExchange(exchangeRequest{subject: &deep}, clientActor(site), agentSubject(agent))
	wantCode(t, "too deep", err, "invalid_grant")

	// An agent exchanging its own token (from /api/agent-auth).
	own := &AccessClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: "bot", ID: "jti", Audience: []string{"https://auth"},
		ExpiresAt: jwt.NewNumericDate(t0.Add(time.Hour))}, ClientID: "bot", Scope: "profile data:read data:write"}
	g, err = decideExchange(exchangeRequest{subject: own, scope: "data:read", audience: []string{"https://api"}}, agentActor(agent), agentSubject(agent))
	if err != nil || g.ClientID != "bot" || g.Actor.Subject != "bot" || g.Audience[0] != "https://api" {
		t.Fatalf("an agent's own token: %+v %v", g, err)
	}
	_, err = decideExchange(exchangeRequest{subject: own}, agentActor(&agents.Agent{ID: "other"}), agentSubject(agent))
	wantCode(t, "another agent's token", err, "invalid_grant")

	// A client exchanging its client_credentials token: the subject is the
	// client, whose scopes bound it.
	svc := &Client{ID: "svc", Scopes: []string{"data:read", "data:write"}}
	cc := &AccessClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: "svc", ID: "jti2", Audience: []string{"https://auth"},
		ExpiresAt: jwt.NewNumericDate(t0.Add(time.Hour))}, ClientID: "svc", Scope: "data:read data:write"}
	g, err = decideExchange(exchangeRequest{subject: cc, scope: "data:read"}, clientActor(svc), clientSubject(svc))
	if err != nil || g.Subject != "svc" || strings.Join(g.Scopes, " ") != "data:read" {
		t.Fatalf("a client's own token: %+v %v", g, err)
	}
	_, err = decideExchange(exchangeRequest{subject: cc, scope: "data:write"}, clientActor(svc), clientSubject(&Client{ID: "svc", Scopes: []string{"data:read"}}))
	wantCode(t, "client lost the scope", err, "invalid_scope")
}

func TestPlanKeys(t *testing.T) {
	p := KeyPolicy{Algs: []string{AlgES256}, Rotation: 24 * time.Hour, PublishDelay: 15 * time.Second}
	first, changed, err := PlanKeys(nil, p, t0, false)
	if err != nil || !changed || len(first) != 1 || !first[0].ActiveAt.Equal(t0) {
		t.Fatalf("an empty set gets a key active at once: %+v %v %v", first, changed, err)
	}
	if _, changed, _ := PlanKeys(first, p, t0.Add(time.Hour), false); changed {
		t.Fatal("a fresh set changed")
	}
	// Due: a new key, published now, signing only after the delay.
	due := t0.Add(25 * time.Hour)
	second, changed, _ := PlanKeys(first, p, due, false)
	if !changed || len(second) != 2 || !second[0].ActiveAt.Equal(due.Add(15*time.Second)) || !second[1].RetiredAt.IsZero() {
		t.Fatalf("rotation: %+v", second)
	}
	// The new key is active: the old one retires then.
	third, changed, _ := PlanKeys(second, p, due.Add(20*time.Second), false)
	if !changed || !third[1].RetiredAt.Equal(due.Add(15*time.Second)) {
		t.Fatalf("retirement: %+v", third)
	}
	// One rotation period after its retirement the old key is gone.
	fourth, _, _ := PlanKeys(third, p, due.Add(15*time.Second+24*time.Hour+time.Second), false)
	for _, k := range fourth {
		if k.ID == first[0].ID {
			t.Fatal("retired key outlived its period")
		}
	}
	// Two processes configured for different algorithms (the old and the
	// new config of a reload, two versions in a rolling deploy) keep each
	// other's keys instead of retiring them and making new ones.
	es := KeyPolicy{Algs: []string{AlgES256}, Rotation: time.Hour}
	ed := KeyPolicy{Algs: []string{AlgEdDSA}, Rotation: time.Hour}
	set, _, _ := PlanKeys(nil, es, t0, false)
	for i := range 10 {
		pol := es
		if i%2 == 0 {
			pol = ed
		}
		set, _, _ = PlanKeys(set, pol, t0.Add(time.Duration(i)*time.Minute), false)
	}
	if len(set) != 2 || !set[0].RetiredAt.IsZero() || !set[1].RetiredAt.IsZero() {
		t.Fatalf("alternating policies churned the keys: %+v", set)
	}
	// Forced: a new key whatever the age; an unconfigured algorithm retires.
	forced, changed, _ := PlanKeys(first, KeyPolicy{Algs: []string{AlgEdDSA}, Rotation: p.Rotation}, t0.Add(time.Minute), true)
	if !changed || len(forced) != 2 || forced[0].Algorithm != AlgEdDSA || forced[1].RetiredAt.IsZero() {
		t.Fatalf("forced: %+v", forced)
	}
}

func TestNarrowResources(t *testing.T) {
	a, b := "https://a.example.com/", "https://b.example.com/mcp"
	for name, tc := range map[string]struct {
		requested, authorized, want []string
		code                        string
	}{
		"none requested: all":   {nil, []string{a, b}, []string{a, b}, ""},
		"none authorized":       {nil, nil, nil, ""},
		"one of them":           {[]string{b}, []string{a, b}, []string{b}, ""},
		"both, deduplicated":    {[]string{b, a, b}, []string{a, b}, []string{b, a}, ""},
		"never authorized":      {[]string{"https://c.example.com/"}, []string{a, b}, nil, "invalid_target"},
		"none was authorized":   {[]string{a}, nil, nil, "invalid_target"},
		"not a URI":             {[]string{"not a uri"}, []string{a}, nil, "invalid_target"},
		"empty value":           {[]string{""}, []string{a}, nil, "invalid_target"},
		"with a fragment":       {[]string{a + "#x"}, []string{a}, nil, "invalid_target"},
		"more than the maximum": {slices.Repeat([]string{a}, maxResources+1), []string{a}, nil, "invalid_target"},
	} {
		got, err := narrowResources(tc.requested, tc.authorized)
		if tc.code != "" {
			wantCode(t, name, err, tc.code)
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q %v, want %q", name, got, err, tc.want)
		}
	}
}

func FuzzApprovalExpectation(f *testing.F) {
	for _, s := range []string{"https://app.example/cb", "app.example:8443", "com.example.app:/cb", "[::1]:80", "http://[::1]:8080/x", "a b", ""} {
		f.Add("site", s)
	}
	req := &AuthRequest{ClientID: "site", RedirectURI: "https://app.example/cb", ExpiresAt: t0.Add(time.Minute)}
	agent := &agents.Agent{ID: "bot"}
	f.Fuzz(func(t *testing.T, clientID, redirect string) {
		e, err := parseApprovalExpectation(clientID, redirect)
		if err != nil {
			return
		}
		if decideApproval(req, agent, t0, e) == nil && (clientID != "" && clientID != "site" || e.redirectHost != "" && e.redirectHost != "app.example") {
			t.Fatalf("approved for %q %q (host %q)", clientID, redirect, e.redirectHost)
		}
	})
}
