package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

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
)

// IdentityScopes are the scopes about the agent itself.
var IdentityScopes = []string{ScopeOpenID, ScopeProfile, ScopeEmail, ScopePermissions}

// Client is an OAuth client: a website, an app or an MCP client.
type Client struct {
	ID           string    `json:"client_id"`
	Name         string    `json:"client_name"`
	SecretHash   string    `json:"secret_sha256,omitempty"` // hex SHA-256 of the secret; empty for public clients
	Public       bool      `json:"public,omitempty"`
	RedirectURIs []string  `json:"redirect_uris"`
	Scopes       []string  `json:"scopes"`
	GrantTypes   []string  `json:"grant_types"`
	Source       string    `json:"source"`
	CreatedAt    time.Time `json:"created_at"`
}

// AllowsGrant reports whether the client may use grant type g.
func (c *Client) AllowsGrant(g string) bool { return slices.Contains(c.GrantTypes, g) }

// AuthMethod is the token endpoint authentication the client uses.
func (c *Client) AuthMethod() string {
	if c.Public {
		return AuthNone
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
	GrantTypes   []string
}

// MinConfiguredSecret is the shortest client secret an operator may write.
const MinConfiguredSecret = 32

// NewClient validates spec and builds the client. For a confidential client
// without a secret it generates one (256 random bits) and returns it.
func NewClient(spec ClientSpec, source string, now time.Time) (*Client, string, error) {
	if err := validateClientID(spec.ID); err != nil {
		return nil, "", err
	}
	if len(spec.Name) > 128 {
		return nil, "", ErrInvalidRequest("client_name must be at most 128 characters")
	}
	name := spec.Name
	if name == "" {
		name = spec.ID
	}
	if len(spec.RedirectURIs) > 20 {
		return nil, "", newError("invalid_redirect_uri", 400, "at most 20 redirect URIs")
	}
	for _, u := range spec.RedirectURIs {
		if err := ValidateRedirectURI(u); err != nil {
			return nil, "", newError("invalid_redirect_uri", 400, err.Error())
		}
	}
	scopes := spec.Scopes
	if len(scopes) == 0 {
		scopes = IdentityScopes
	}
	if err := agents.ValidatePermissions(scopes); err != nil {
		return nil, "", newError("invalid_client_metadata", 400, "scopes: "+err.Error())
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
				return nil, "", newError("invalid_client_metadata", 400, "a public client cannot use "+g)
			}
		default:
			return nil, "", newError("invalid_client_metadata", 400, "unsupported grant type "+strconvQuote(g))
		}
	}
	if slices.Contains(grants, GrantAuthorizationCode) && len(spec.RedirectURIs) == 0 {
		return nil, "", newError("invalid_redirect_uri", 400, "the authorization_code grant needs at least one redirect URI")
	}
	c := &Client{
		ID: spec.ID, Name: name, Public: spec.Public, RedirectURIs: slices.Clone(spec.RedirectURIs),
		Scopes: slices.Clone(scopes), GrantTypes: slices.Compact(slices.Clone(grants)), Source: source, CreatedAt: now.UTC(),
	}
	var generated string
	switch {
	case spec.Public && spec.Secret != "":
		return nil, "", newError("invalid_client_metadata", 400, "a public client has no secret")
	case spec.Public:
	case spec.Secret == "":
		generated = randomToken(32)
		c.SecretHash = hashSecret(generated)
	default:
		if len(spec.Secret) < MinConfiguredSecret {
			return nil, "", newError("invalid_client_metadata", 400, fmt.Sprintf("client secret must be at least %d characters", MinConfiguredSecret))
		}
		c.SecretHash = hashSecret(spec.Secret)
	}
	return c, generated, nil
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
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

// ValidateRedirectURI checks a redirect URI a client registers: absolute,
// no fragment, https, or http only on a loopback host (RFC 8252 §7.3).
func ValidateRedirectURI(raw string) error {
	if len(raw) > 2048 {
		return errors.New("redirect URI longer than 2048 characters")
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("redirect URI %q is not an absolute URL", raw)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return fmt.Errorf("redirect URI %q must not have a fragment", raw)
	}
	if u.User != nil {
		return fmt.Errorf("redirect URI %q must not carry credentials", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return fmt.Errorf("redirect URI %q must use https (http only on localhost or a loopback address)", raw)
		}
	default:
		return fmt.Errorf("redirect URI %q must use https", raw)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// MatchRedirectURI reports whether requested is one of the registered URIs,
// compared as exact strings (OAuth 2.1 §4.1.1).
func (c *Client) MatchRedirectURI(requested string) bool {
	return requested != "" && slices.Contains(c.RedirectURIs, requested)
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

const kindClient = "client"

// Clients finds clients: those in the configuration first, then those
// stored (admin API and dynamic registration).
type Clients struct {
	config map[string]*Client
	store  RecordStore
	now    func() time.Time
}

// NewClients returns the client registry.
func NewClients(config []*Client, store RecordStore, now func() time.Time) *Clients {
	m := make(map[string]*Client, len(config))
	for _, c := range config {
		m[c.ID] = c
	}
	return &Clients{config: m, store: store, now: now}
}

// Get returns the client or ErrNotFound.
func (cs *Clients) Get(ctx context.Context, id string) (*Client, error) {
	if c, ok := cs.config[id]; ok {
		return c, nil
	}
	if validateClientID(id) != nil {
		return nil, ErrNotFound
	}
	raw, err := cs.store.GetRecord(ctx, kindClient, id)
	if err != nil {
		return nil, err
	}
	c := new(Client)
	if err := json.Unmarshal(raw, c); err != nil {
		return nil, fmt.Errorf("client %s: %w", id, err)
	}
	return c, nil
}

// Create stores a new client; a taken id (in the configuration or the
// store) is a conflict.
func (cs *Clients) Create(ctx context.Context, c *Client) error {
	if _, ok := cs.config[c.ID]; ok {
		return ErrConflict("a client with this client_id exists")
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	err = cs.store.CreateRecord(ctx, kindClient, c.ID, raw, 0)
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
	if _, err := cs.Get(ctx, id); err != nil {
		return err
	}
	return cs.store.DeleteRecord(ctx, kindClient, id)
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
	recs, err := cs.store.ListRecords(ctx, kindClient, after, limit)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		c := new(Client)
		if err := json.Unmarshal(r.Value, c); err != nil {
			return nil, fmt.Errorf("client %s: %w", r.Key, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Update changes a stored client through fn, which gets a copy; the result
// is validated as a new client would be. Configured clients cannot be
// changed at run time.
func (cs *Clients) Update(ctx context.Context, id string, fn func(*Client) error) (*Client, error) {
	if _, ok := cs.config[id]; ok {
		return nil, ErrConflict("this client is defined in the configuration")
	}
	var out *Client
	err := cs.store.UpdateRecord(ctx, kindClient, id, func(raw []byte) ([]byte, error) {
		c := new(Client)
		if err := json.Unmarshal(raw, c); err != nil {
			return nil, err
		}
		if err := fn(c); err != nil {
			return nil, err
		}
		// Re-validate with the rules for new clients; the secret is kept
		// (a stand-in satisfies the check, its hash is replaced below).
		spec := ClientSpec{ID: c.ID, Name: c.Name, Public: c.Public, RedirectURIs: c.RedirectURIs, Scopes: c.Scopes, GrantTypes: c.GrantTypes}
		if !c.Public {
			spec.Secret = strings.Repeat("x", MinConfiguredSecret)
		}
		checked, _, err := NewClient(spec, c.Source, c.CreatedAt)
		if err != nil {
			return nil, err
		}
		checked.SecretHash = c.SecretHash
		out = checked
		return json.Marshal(checked)
	})
	return out, err
}
