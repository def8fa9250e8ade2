package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/authagent/caddy-authagent/agents"
)

// Grant types.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
)

// Client authentication methods.
const (
	AuthSecretBasic = "client_secret_basic"
	AuthSecretPost  = "client_secret_post"
	AuthNone        = "none"
)

// Where a client was defined.
const (
	ClientFromConfig  = "config"
	ClientFromAdmin   = "admin"
	ClientFromDynamic = "dynamic"

	// ClientFromDocument is the Source of a client described by its metadata document.
	ClientFromDocument = "metadata_document"
)

// Application types (OpenID Connect Dynamic Client Registration §2, the
// application_type MCP clients send since the 2026-07-28 revision).
const (
	// AppNative is an app on the user's device (desktop, mobile, command
	// line): its redirect URIs are loopback http or private-use schemes.
	AppNative = "native"
	// AppWeb is a website, the default: its redirect URIs are https, or
	// http on a loopback host (a site in development, and the MCP clients
	// that register loopback redirects without saying they are native).
	AppWeb = "web"
)

// Verified reports whether an operator defined the client (configuration
// or admin API); a dynamically registered or metadata-document client
// names itself, so its name proves nothing.
func (c *Client) Verified() bool { return c.Source == ClientFromConfig || c.Source == ClientFromAdmin }

// IdentityScopes are the scopes about the agent itself.
var IdentityScopes = []string{ScopeOpenID, ScopeProfile, ScopeEmail, ScopePermissions}

// AnyScope reports whether the client may ask for any scope (it registered
// without naming scopes); what is granted is still bounded by the agent's
// permissions.
func (c *Client) AnyScope() bool { return len(c.Scopes) == 0 }

// MayRequest reports whether the client may ask for scope sc.
func (c *Client) MayRequest(sc string) bool { return c.AnyScope() || slices.Contains(c.Scopes, sc) }

// AllowsGrant reports whether the client may use grant type g.
func (c *Client) AllowsGrant(g string) bool { return slices.Contains(c.GrantTypes, g) }

// IDTokenSigningAlg is the algorithm of the client's ID tokens.
func (c *Client) IDTokenSigningAlg() string {
	if c.IDTokenAlg == "" {
		return AlgRS256
	}
	return c.IDTokenAlg
}

// AppType is the client's application type: the one it declared, or for
// a client that declared none, web (OpenID Connect's default) unless it
// registered a private-use scheme, which only a native app can receive.
func (c *Client) AppType() string {
	if c.ApplicationType != "" {
		return c.ApplicationType
	}
	for _, raw := range c.RedirectURIs {
		if scheme, _, ok := strings.Cut(raw, ":"); ok && isPrivateUseScheme(scheme) {
			return AppNative
		}
	}
	return AppWeb
}

// AuthMethod is the token endpoint authentication the client uses.
func (c *Client) AuthMethod() string {
	switch {
	case c.Public:
		return AuthNone
	case c.JWKS != "" || c.JWKSURI != "":
		return AuthPrivateKeyJWT
	}
	return AuthSecretBasic
}

// ClientSpec is what a client is made from (configuration, the admin API
// or dynamic registration), before validation.
type ClientSpec struct {
	ID           string
	Name         string
	Secret       string // confidential clients; "" with Public, or generated
	Public       bool
	RedirectURIs []string
	Scopes       []string
	// AnyScope, with no Scopes, lets the client ask for any scope: an RFC
	// 7591 registration without scope (MCP clients register so). What is
	// granted stays bounded by the agent's permissions.
	AnyScope   bool
	GrantTypes []string
	// IDTokenAlg is the id_token_signed_response_alg: RS256 (the default,
	// which OpenID Connect requires every client to accept), ES256 or
	// EdDSA.
	IDTokenAlg string
	// ResourceServer: see Client.ResourceServer; only for configured,
	// confidential clients.
	ResourceServer bool
	// JWKS, a JWK Set's JSON, makes a confidential client that
	// authenticates with private_key_jwt: it has no secret. JWKSURI is
	// where the client publishes that set instead.
	JWKS    string
	JWKSURI string
	// RequireDPoP: the client's tokens are always DPoP-bound (its
	// dpop_bound_access_tokens).
	RequireDPoP bool
	// ApplicationType is AppNative, AppWeb or empty: not declared (clients
	// of MCP revisions before 2026-07-28 send none), when the redirect URIs
	// are held to the rules from before the type was read — those of web,
	// and for a public client private-use schemes too — so that no client
	// that registered then is refused now.
	ApplicationType string
}

// checkDisplayText refuses text shown to people (a client's name on the
// sign-in page, in the agent's answers) that could disguise itself:
// invalid UTF-8, control and format characters (BEL, line breaks, the
// bidi overrides that reverse what follows), separators, private-use and
// unassigned code points.
func checkDisplayText(field, s string) error {
	if !utf8.ValidString(s) {
		return ErrInvalidRequest(field + " must be valid UTF-8")
	}
	for _, r := range s {
		if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Cs, unicode.Co, unicode.Zl, unicode.Zp) ||
			!unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Zs) {
			return ErrInvalidRequest(fmt.Sprintf("%s must not contain control, format or invisible characters (found U+%04X)", field, r))
		}
	}
	return nil
}

// MinConfiguredSecret is the shortest client secret an operator may write.
const MinConfiguredSecret = 32

// NewClient validates spec and builds the client. For a confidential client
// without a secret it generates one (256 random bits) and returns it.
func NewClient(spec ClientSpec, source string, now time.Time) (*Client, string, error) {
	checkID := validateClientID
	if source == ClientFromDocument {
		checkID = validateDocumentClientID // the id is the document's URL
	}
	if err := checkID(spec.ID); err != nil {
		return nil, "", err
	}
	if len(spec.Name) > 128 {
		return nil, "", ErrInvalidRequest("client_name must be at most 128 characters")
	}
	if err := checkDisplayText("client_name", spec.Name); err != nil {
		return nil, "", err
	}
	name := spec.Name
	if name == "" {
		name = spec.ID
	}
	if len(spec.RedirectURIs) > 20 {
		return nil, "", ErrInvalidRedirectURI("at most 20 redirect URIs")
	}
	switch spec.ApplicationType {
	case "", AppNative, AppWeb:
	default:
		return nil, "", ErrInvalidClientMetadata("application_type must be native or web")
	}
	for _, u := range spec.RedirectURIs {
		if err := validateClientRedirectURI(u, spec.Public, spec.ApplicationType); err != nil {
			return nil, "", ErrInvalidRedirectURI(err.Error())
		}
	}
	scopes := spec.Scopes
	switch {
	case len(scopes) == 0 && spec.AnyScope:
		scopes = nil
	case len(scopes) == 0:
		scopes = IdentityScopes
	}
	if err := agents.ValidatePermissions(scopes); err != nil {
		return nil, "", ErrInvalidClientMetadata("scopes: " + err.Error())
	}
	grants := spec.GrantTypes
	if len(grants) == 0 {
		grants = []string{GrantAuthorizationCode, GrantRefreshToken}
		if !spec.Public {
			grants = append(grants, GrantClientCredentials, GrantTokenExchange)
		}
	}
	for _, g := range grants {
		switch g {
		case GrantAuthorizationCode, GrantRefreshToken:
		case GrantClientCredentials, GrantTokenExchange:
			if spec.Public {
				return nil, "", ErrInvalidClientMetadata("a public client cannot use " + g)
			}
		default:
			return nil, "", ErrInvalidClientMetadata("unsupported grant type " + strconvQuote(g))
		}
	}
	switch spec.IDTokenAlg {
	case "", AlgRS256:
		spec.IDTokenAlg = ""
	case AlgES256, AlgEdDSA:
	default:
		return nil, "", ErrInvalidClientMetadata("id_token_signed_response_alg must be RS256, ES256 or EdDSA")
	}
	if slices.Contains(grants, GrantAuthorizationCode) && len(spec.RedirectURIs) == 0 {
		return nil, "", ErrInvalidRedirectURI("the authorization_code grant needs at least one redirect URI")
	}
	if spec.ResourceServer && (source != ClientFromConfig || spec.Public) {
		return nil, "", ErrInvalidClientMetadata("only a confidential client of the configuration may be a resource server")
	}
	c := &Client{
		ID: spec.ID, Name: name, Public: spec.Public, RedirectURIs: slices.Clone(spec.RedirectURIs),
		Scopes: slices.Clone(scopes), GrantTypes: slices.Compact(slices.Clone(grants)), IDTokenAlg: spec.IDTokenAlg,
		ResourceServer: spec.ResourceServer, Source: source, CreatedAt: now.UTC(), RequireDPoP: spec.RequireDPoP,
		ApplicationType: spec.ApplicationType,
	}
	var generated string
	switch {
	case spec.Public && spec.Secret != "":
		return nil, "", ErrInvalidClientMetadata("a public client has no secret")
	case (spec.JWKS != "" || spec.JWKSURI != "") && (spec.Public || spec.Secret != ""):
		return nil, "", ErrInvalidClientMetadata("a client with keys (jwks, jwks_uri) has neither a secret nor is it public")
	case spec.JWKS != "" && spec.JWKSURI != "":
		return nil, "", ErrInvalidClientMetadata("jwks and jwks_uri exclude each other")
	case spec.JWKSURI != "":
		if err := CheckJWKSURI(spec.JWKSURI, source == ClientFromConfig || source == ClientFromAdmin); err != nil {
			return nil, "", ErrInvalidClientMetadata(err.Error())
		}
		c.JWKSURI = spec.JWKSURI
	case spec.JWKS != "":
		jwks, err := CompactKeySet(spec.JWKS)
		if err != nil {
			return nil, "", ErrInvalidClientMetadata("jwks: " + err.Error())
		}
		c.JWKS = jwks
	case spec.Public:
	case spec.Secret == "":
		generated = randomToken(32)
		c.SecretHash = hashSecret(generated)
	default:
		if len(spec.Secret) < MinConfiguredSecret {
			return nil, "", ErrInvalidClientMetadata(fmt.Sprintf("client secret must be at least %d characters", MinConfiguredSecret))
		}
		c.SecretHash = hashSecret(spec.Secret)
	}
	return c, generated, nil
}

// strconvQuote quotes caller input for an error description.
func strconvQuote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strconv.Quote(s)
}

func validateClientID(id string) error {
	if id == "" || len(id) > 128 {
		return ErrInvalidRequest("client_id must be 1 to 128 characters")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.:~", c) >= 0) {
			return ErrInvalidRequest("client_id may contain only letters, digits and - _ . : ~")
		}
	}
	return nil
}

// ValidateRedirectURI checks a redirect URI a confidential web client
// registers: absolute, no fragment, https, or http only on a loopback host
// (RFC 8252 §7.3).
func ValidateRedirectURI(raw string) error { return validateClientRedirectURI(raw, false, "") }

// validateClientRedirectURI checks a redirect URI a client of application
// type appType registers. A web client's are https, or http on a loopback
// host; a native app's are http on a loopback host (RFC 8252 §7.3) or, for
// a public one, a private-use scheme in reverse-domain form such as
// com.example.app:/callback (§7.1) — never https, which OpenID Connect
// Registration §2 keeps for web clients. A client that declared no type
// ("") may register those of either, as before the type was read.
func validateClientRedirectURI(raw string, public bool, appType string) error {
	if len(raw) > 2048 {
		return errors.New("redirect URI longer than 2048 characters")
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() {
		return fmt.Errorf("redirect URI %q is not an absolute URL", raw)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return fmt.Errorf("redirect URI %q must not have a fragment", raw)
	}
	if u.User != nil {
		return fmt.Errorf("redirect URI %q must not carry credentials", raw)
	}
	if isPrivateUseScheme(u.Scheme) {
		if appType == AppWeb {
			return fmt.Errorf("redirect URI %q: private-use schemes are for native applications (application_type native), not web", raw)
		}
		if !public {
			return fmt.Errorf("redirect URI %q: private-use schemes are for public (native) clients only", raw)
		}
		if u.Opaque != "" || (u.Host == "" && u.Path == "") {
			return fmt.Errorf("redirect URI %q must have a path, as in %s:/callback", raw, u.Scheme)
		}
		return nil
	}
	if u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("redirect URI %q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		if appType == AppNative {
			return fmt.Errorf("redirect URI %q: a native application (application_type native) redirects to http on a loopback address or a private-use scheme, not https", raw)
		}
	case "http":
		if !IsLoopbackHost(u.Hostname()) {
			return fmt.Errorf("redirect URI %q must use https (http only on localhost or a loopback address)", raw)
		}
	default:
		switch {
		case appType == AppNative && public:
			return fmt.Errorf("redirect URI %q must use http on loopback or a private-use scheme in reverse-domain form (com.example.app:/callback)", raw)
		case appType == AppNative:
			return fmt.Errorf("redirect URI %q must use http on loopback", raw)
		case appType == "" && public:
			return fmt.Errorf("redirect URI %q must use https, http on loopback, or a private-use scheme in reverse-domain form (com.example.app:/callback)", raw)
		}
		return fmt.Errorf("redirect URI %q must use https", raw)
	}
	return nil
}

// isPrivateUseScheme reports whether scheme is in the reverse-domain form
// RFC 8252 §7.1 asks of native apps' private-use schemes: at least two
// labels, so that no well-known scheme (javascript, data, file) qualifies.
func isPrivateUseScheme(scheme string) bool {
	labels := strings.Split(scheme, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" {
			return false
		}
	}
	return true
}

// IsLoopbackHost reports whether host names this machine: "localhost" or
// a loopback address (127.0.0.0/8, ::1). Redirect URIs, issuers and
// guards' remote issuers may use plain http only there.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return err == nil && ip.IsLoopback()
}

// ValidateIssuer checks an issuer identifier (RFC 8414 §2): https, or http
// on a loopback host; a host; no query, fragment or trailing slash.
func ValidateIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || strings.Contains(issuer, "#") || strings.HasSuffix(u.Path, "/") {
		return fmt.Errorf("issuer %q must be an http(s) URL with a host, no query, fragment or trailing slash", issuer)
	}
	if u.Scheme == "http" && !IsLoopbackHost(u.Hostname()) {
		return fmt.Errorf("issuer %q must use https (http is allowed only for localhost and loopback addresses)", issuer)
	}
	return nil
}

// MatchRedirectURI reports whether requested is one of the registered URIs:
// an exact string match (OAuth 2.1 §4.1.1), except that for a native app
// or a public client a loopback http redirect matches on any port (RFC
// 8252 §7.3: it listens on whatever port is free when it runs).
func (c *Client) MatchRedirectURI(requested string) bool {
	if requested == "" {
		return false
	}
	if slices.Contains(c.RedirectURIs, requested) {
		return true
	}
	if !c.Public && c.AppType() != AppNative {
		return false
	}
	want, ok := withoutLoopbackPort(requested)
	if !ok {
		return false
	}
	for _, reg := range c.RedirectURIs {
		if got, ok := withoutLoopbackPort(reg); ok && got == want {
			return true
		}
	}
	return false
}

// withoutLoopbackPort returns an http loopback URI without its port, and
// false for any other URI (those match exactly or not at all).
func withoutLoopbackPort(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Fragment != "" || !IsLoopbackHost(u.Hostname()) {
		return "", false
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", false
		}
	}
	host := u.Hostname()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	u.Host = host
	return u.String(), true
}

// hashSecret is the stored form of a client secret: secrets are long and
// random (or ≥ 32 characters), so a fast hash leaves nothing to brute-force.
func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// VerifySecret compares in constant time.
func (c *Client) VerifySecret(secret string) bool {
	if c.SecretHash == "" || secret == "" {
		return false
	}
	got := hashSecret(secret)
	return subtle.ConstantTimeCompare([]byte(got), []byte(c.SecretHash)) == 1
}

// randomToken returns n random bytes, base64url-encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // the platform is broken; nothing safe to do
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// tokenHash is the storage key of an opaque token (code, refresh token).
func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Clients finds clients: those in the configuration first, then those
// stored (admin API and dynamic registration).
type Clients struct {
	config map[string]*Client
	store  ClientStore
	// docs fetches the clients whose id is the URL of their metadata
	// document; nil when such ids are refused.
	docs *ClientDocuments
}

// NewClients returns the client registry; docs may be nil (client ids
// that are URLs are then unknown).
func NewClients(config []*Client, store ClientStore, docs *ClientDocuments) *Clients {
	m := make(map[string]*Client, len(config))
	for _, c := range config {
		m[c.ID] = c
	}
	return &Clients{config: m, store: store, docs: docs}
}

// errDocumentsOff is the answer to a metadata-document client id when the
// operator turned such clients off.
var errDocumentsOff = fmt.Errorf("%w: this server does not accept client ids that are metadata document URLs", ErrNotFound)

// Get returns the client or ErrNotFound (wrapped, with a reason a person
// may read, for a metadata document that cannot be used).
func (cs *Clients) Get(ctx context.Context, id string) (*Client, error) {
	if c, ok := cs.config[id]; ok {
		return c, nil
	}
	if IsClientIDURL(id) {
		if cs.docs == nil {
			return nil, errDocumentsOff
		}
		return cs.docs.Client(ctx, id)
	}
	if validateClientID(id) != nil {
		return nil, ErrNotFound
	}
	return cs.store.GetClient(ctx, id)
}

// Create stores a new client; a taken id (in the configuration or the
// store) is a conflict.
func (cs *Clients) Create(ctx context.Context, c *Client) error {
	if _, ok := cs.config[c.ID]; ok {
		return ErrConflict("a client with this client_id exists")
	}
	err := cs.store.CreateClient(ctx, c)
	if errors.Is(err, ErrExists) {
		return ErrConflict("a client with this client_id exists")
	}
	return err
}

// Delete removes a stored client; configured clients cannot be deleted.
func (cs *Clients) Delete(ctx context.Context, id string) error {
	if _, ok := cs.config[id]; ok {
		return ErrConflict("this client is defined in the configuration")
	}
	if validateClientID(id) != nil {
		return ErrNotFound
	}
	return cs.store.DeleteClient(ctx, id)
}

// List returns configured clients (on the first page) and a page of stored
// ones.
func (cs *Clients) List(ctx context.Context, after string, limit int) ([]*Client, error) {
	var out []*Client
	if after == "" {
		for _, c := range cs.config {
			out = append(out, c)
		}
		slices.SortFunc(out, func(a, b *Client) int { return strings.Compare(a.ID, b.ID) })
	}
	stored, err := cs.store.ListClients(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	return append(out, stored...), nil
}

// Update changes a stored client through fn; the result is validated as a
// new client would be. Configured clients cannot be changed at run time.
func (cs *Clients) Update(ctx context.Context, id string, fn func(*Client) error) (*Client, error) {
	if _, ok := cs.config[id]; ok {
		return nil, ErrConflict("this client is defined in the configuration")
	}
	if validateClientID(id) != nil {
		return nil, ErrNotFound
	}
	return cs.store.UpdateClient(ctx, id, func(c *Client) error {
		// An empty list stays "any scope" only for a client that was so:
		// elsewhere it means the default, as for a new client.
		anyScope := c.AnyScope()
		if err := fn(c); err != nil {
			return err
		}
		// Re-validate with the rules for new clients; the keys or the
		// secret are kept (a stand-in secret satisfies the check, its hash
		// is put back below).
		spec := ClientSpec{ID: c.ID, Name: c.Name, Public: c.Public, RedirectURIs: c.RedirectURIs, Scopes: c.Scopes,
			AnyScope: anyScope && len(c.Scopes) == 0, GrantTypes: c.GrantTypes, IDTokenAlg: c.IDTokenAlg,
			JWKS: c.JWKS, JWKSURI: c.JWKSURI, RequireDPoP: c.RequireDPoP, ApplicationType: c.ApplicationType}
		if !c.Public && c.JWKS == "" && c.JWKSURI == "" {
			spec.Secret = strings.Repeat("x", MinConfiguredSecret)
		}
		checked, _, err := NewClient(spec, c.Source, c.CreatedAt)
		if err != nil {
			return err
		}
		checked.SecretHash = c.SecretHash
		*c = *checked
		return nil
	})
}
