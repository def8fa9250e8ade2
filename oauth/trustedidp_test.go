package oauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authagent/caddy-authagent/oauth"
)

// idpForTest is an IdP on 127.0.0.1 publishing one ES256 key.
type idpForTest struct {
	*httptest.Server
	key *ecdsa.PrivateKey
}

func newIdPForTest(t *testing.T) *idpForTest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := key.PublicKey.ECDH()
	b, b64 := raw.Bytes(), base64.RawURLEncoding.EncodeToString
	set, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{"kty": "EC", "crv": "P-256", "kid": "k1", "x": b64(b[1:33]), "y": b64(b[33:])}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(srv.Close)
	return &idpForTest{srv, key}
}

// grant signs an ID-JAG of the IdP for the test issuer and the site client.
func (idp *idpForTest) grant(t *testing.T) string {
	t.Helper()
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": idp.URL, "sub": "ext-user", "aud": issuer, "client_id": "site",
		"jti": rand.Text(), "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(), "scope": "data:read"})
	tok.Header["typ"], tok.Header["kid"] = oauth.IDJAGType, "k1"
	s, err := tok.SignedString(idp.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func redeemGrant(s testServer, assertion string) *httptest.ResponseRecorder {
	return s.form("/oauth2/token", url.Values{"grant_type": {oauth.GrantJWTBearer}, "assertion": {assertion}})
}

// TestTrustedIdPAdmin: an IdP trusted through the admin API of one
// process is honoured by another process on the same store at once, and
// deleting it there refuses its next grant here.
func TestTrustedIdPAdmin(t *testing.T) {
	idp := newIdPForTest(t)
	a := newServer(t, cheapParams)
	site, err := a.Admin().Client(context.Background(), "site")
	if err != nil {
		t.Fatal(err)
	}
	b := newServerOn(t, a.store, cheapParams, nil, site)
	ctx := context.Background()

	if rec := redeemGrant(b, idp.grant(t)); rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_grant") {
		t.Fatalf("a grant of an IdP not trusted yet: %d %s", rec.Code, rec.Body)
	}
	spec := oauth.TrustedIdPSpec{Issuer: idp.URL, JWKSURI: idp.URL + "/jwks", Clients: []string{"site"}, Scopes: []string{"data:read"}, Subject: oauth.SubjectExternal}
	made, err := a.Admin().CreateTrustedIdP(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if made.Source != oauth.TrustedIdPFromAdmin || made.Subject != oauth.SubjectExternal || made.CreatedAt.IsZero() {
		t.Fatalf("created %+v", made)
	}
	if _, err := b.Admin().CreateTrustedIdP(ctx, spec); oauth.AsError(err).Status != 409 {
		t.Fatalf("the same issuer again: %v, want 409", err)
	}
	if got, err := b.Admin().TrustedIdP(ctx, idp.URL); err != nil || got.JWKSURI != spec.JWKSURI {
		t.Fatalf("TrustedIdP at the other process: %+v %v", got, err)
	}

	rec := redeemGrant(b, idp.grant(t))
	var tok struct {
		AccessToken string `json:"access_token"`
		Scope       string `json:"scope"`
	}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &tok) != nil || tok.AccessToken == "" || tok.Scope != "data:read" {
		t.Fatalf("a grant of the IdP trusted at the other process: %d %s", rec.Code, rec.Body)
	}
	claims, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, jwt.MapClaims{})
	if err != nil || claims.Claims.(jwt.MapClaims)["idp"] != idp.URL || claims.Claims.(jwt.MapClaims)["sub"] != "ext-user" {
		t.Fatalf("access token claims: %v %v", claims.Claims, err)
	}

	if err := b.Admin().DeleteTrustedIdP(ctx, idp.URL); err != nil {
		t.Fatal(err)
	}
	if err := b.Admin().DeleteTrustedIdP(ctx, idp.URL); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("deleting it twice: %v, want ErrNotFound", err)
	}
	rec = redeemGrant(a, idp.grant(t))
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "not a trusted IdP") {
		t.Fatalf("a grant after the IdP was deleted at the other process: %d %s", rec.Code, rec.Body)
	}
	if list, err := a.Admin().TrustedIdPs(ctx); err != nil || len(list) != 0 {
		t.Fatalf("listed after delete: %v %v", list, err)
	}
}

// TestNewTrustedIdP: the rules a trusted_idp block and the admin API
// share.
func TestNewTrustedIdP(t *testing.T) {
	ok := oauth.TrustedIdPSpec{Issuer: "https://idp.example.com", Clients: []string{"c"}, Scopes: []string{"mcp:tools"}}
	idp, err := oauth.NewTrustedIdP(ok, oauth.TrustedIdPFromAdmin, time.Unix(1, 0))
	if err != nil || idp.Subject != oauth.SubjectAgent || idp.AllowJWT || idp.Source != oauth.TrustedIdPFromAdmin {
		t.Fatalf("%+v %v", idp, err)
	}
	jwtOK := ok
	jwtOK.Grant, jwtOK.Subject, jwtOK.JWKSURI = "jwt", oauth.SubjectExternal, "http://127.0.0.1:9/jwks"
	if idp, err := oauth.NewTrustedIdP(jwtOK, oauth.TrustedIdPFromAdmin, time.Time{}); err != nil || !idp.AllowJWT || idp.Subject != oauth.SubjectExternal {
		t.Fatalf("%+v %v", idp, err)
	}
	for name, c := range map[string]struct {
		edit func(*oauth.TrustedIdPSpec)
		want string
	}{
		"http issuer":     {func(s *oauth.TrustedIdPSpec) { s.Issuer = "http://idp.example.com" }, "issuer"},
		"no issuer":       {func(s *oauth.TrustedIdPSpec) { s.Issuer = "" }, "issuer"},
		"http jwks_uri":   {func(s *oauth.TrustedIdPSpec) { s.JWKSURI = "http://idp.example.com/jwks" }, "jwks_uri"},
		"no clients":      {func(s *oauth.TrustedIdPSpec) { s.Clients = nil }, "clients"},
		"empty client":    {func(s *oauth.TrustedIdPSpec) { s.Clients = []string{""} }, "clients"},
		"no scopes":       {func(s *oauth.TrustedIdPSpec) { s.Scopes = nil }, "scopes"},
		"bad scope":       {func(s *oauth.TrustedIdPSpec) { s.Scopes = []string{"a b"} }, "scopes"},
		"bad subject":     {func(s *oauth.TrustedIdPSpec) { s.Subject = "anyone" }, "subject"},
		"unknown grant":   {func(s *oauth.TrustedIdPSpec) { s.Grant = "saml" }, "grant"},
		"issuer fragment": {func(s *oauth.TrustedIdPSpec) { s.Issuer = "https://idp.example.com#x" }, "issuer"},
	} {
		spec := ok
		c.edit(&spec)
		_, err := oauth.NewTrustedIdP(spec, oauth.TrustedIdPFromAdmin, time.Time{})
		if e := oauth.AsError(err); err == nil || e.Status != 400 || !strings.Contains(e.Description, c.want) {
			t.Errorf("%s: %v, want a 400 naming %s", name, err, c.want)
		}
	}
}
