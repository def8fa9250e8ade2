package oauth

import (
	"context"
	"errors"
	"time"
)

// The storage the authorization server needs, one interface per entity,
// each with the operations its consumer here performs. A backend (see
// storage/) implements them all; storage/storagetest checks that it does so
// the same way every other backend does.
//
// Every method that reports success has made its write durable. Values go
// in and come out as copies: a caller may change what it passed or got
// without changing what is stored. Times are compared with the backend's
// clock, so a record whose ExpiresAt has passed is gone (ErrNotFound) even
// if the backend has not yet swept it.

// Errors stores return; callers test them with errors.Is.
var (
	// ErrNotFound is returned for a missing or expired record.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned when creating a record whose key is taken.
	ErrExists = errors.New("already exists")
	// ErrStale is returned by a compare-and-swap whose expected version is
	// no longer the stored one: another writer got there first.
	ErrStale = errors.New("stored value changed since it was read")
	// ErrNotPending is returned when approving an authorization request that
	// was approved already.
	ErrNotPending = errors.New("authorization request is not pending")
	// ErrCodeUsed is returned when redeeming an authorization code a second
	// time.
	ErrCodeUsed = errors.New("authorization code already redeemed")
	// ErrRefreshRotated is returned when rotating a refresh token that was
	// rotated already (it was presented twice: it leaked).
	ErrRefreshRotated = errors.New("refresh token already rotated")
	// ErrUnavailable is wrapped by the errors of a store that cannot be
	// reached or did not answer in time (a database server that is down):
	// the request may succeed later, and is answered 503.
	ErrUnavailable = errors.New("the store is unavailable")
	// ErrUnstorable is wrapped by the errors of a store that cannot keep a
	// value it was given (PostgreSQL text holds no NUL character): the
	// request is refused, 400, and nothing is written.
	ErrUnstorable = errors.New("the store cannot keep this value")
)

// Store is every store the authorization server uses.
type Store interface {
	ClientStore
	KeyStore
	SecretStore
	AuthRequestStore
	CodeStore
	RefreshStore
	ChangeLog
	ReplayStore
	TrustedIdPStore
}

// TrustedIdPStore keeps the trusted IdPs added through the admin API;
// those of the configuration live in memory. The token endpoint reads it
// on every grant whose issuer the configuration does not list, so every
// process sharing the store honours an IdP added or deleted at once.
type TrustedIdPStore interface {
	// CreateTrustedIdP stores a new IdP under its issuer, or returns
	// ErrExists.
	CreateTrustedIdP(ctx context.Context, idp *TrustedIdP) error
	// GetTrustedIdP returns the IdP of issuer, or ErrNotFound.
	GetTrustedIdP(ctx context.Context, issuer string) (*TrustedIdP, error)
	// ListTrustedIdPs returns every stored IdP ordered by issuer (byte
	// order): operators trust a handful, so there are no pages.
	ListTrustedIdPs(ctx context.Context) ([]*TrustedIdP, error)
	// DeleteTrustedIdP removes the IdP of issuer, or returns ErrNotFound.
	DeleteTrustedIdP(ctx context.Context, issuer string) error
}

// ReplayStore records values that may be used once (the jti of a client
// assertion, of a DPoP proof) until they expire, so that every process
// sharing the store refuses a second use.
type ReplayStore interface {
	// UseOnce records key until until, or returns ErrExists when key is
	// recorded and not yet expired. Of concurrent callers with one key,
	// exactly one succeeds. An expired record is as good as none (and is
	// swept).
	UseOnce(ctx context.Context, key string, until time.Time) error
}

// Client is an OAuth client: a website, an app or an MCP client.
type Client struct {
	ID           string
	Name         string
	SecretHash   string // hex SHA-256 of the secret; empty for public clients
	Public       bool
	RedirectURIs []string
	Scopes       []string
	GrantTypes   []string
	// IDTokenAlg signs the client's ID tokens (its
	// id_token_signed_response_alg); empty means RS256.
	IDTokenAlg string
	// JWKS is the client's public keys, a JWK Set's JSON, for
	// private_key_jwt; JWKSURI is where they are fetched from instead.
	// A client with either has no secret.
	JWKS    string
	JWKSURI string
	// RequireDPoP refuses the client's token requests without a DPoP
	// proof (its dpop_bound_access_tokens, RFC 9449 §5.2).
	RequireDPoP bool
	// ApplicationType is the client's application_type (OpenID Connect
	// Dynamic Client Registration, an RFC 7591 extension): AppNative or
	// AppWeb, which decides the redirect URIs it may register. Empty in
	// clients stored before it existed: AppType infers it.
	ApplicationType string
	// ResourceServer lets the client introspect every token of this
	// issuer (an API, or another Caddy's agent_guard, checking tokens
	// presented to it); other clients learn only about their own tokens
	// and those naming them in aud. Only the configuration sets it.
	ResourceServer bool
	Source         string // ClientFromConfig, ClientFromAdmin, ClientFromDynamic or ClientFromDocument
	CreatedAt      time.Time
}

// ClientStore keeps the clients made at run time (admin API, dynamic
// registration); clients from the configuration live in memory.
type ClientStore interface {
	// CreateClient stores a new client, or returns ErrExists.
	CreateClient(ctx context.Context, c *Client) error
	// GetClient returns the client or ErrNotFound.
	GetClient(ctx context.Context, id string) (*Client, error)
	// UpdateClient applies fn to the stored client and saves the result in
	// one atomic read-modify-write; an error from fn aborts it and is
	// returned. fn may not change the id. ErrNotFound for an unknown id.
	UpdateClient(ctx context.Context, id string, fn func(*Client) error) (*Client, error)
	// DeleteClient removes the client, or returns ErrNotFound.
	DeleteClient(ctx context.Context, id string) error
	// ListClients returns up to limit clients ordered by id (byte order),
	// starting after the id given in after; limit <= 0 means 100.
	ListClients(ctx context.Context, after string, limit int) ([]*Client, error)
}

// StoredKey is a signing key as persisted: the private key in PKCS #8 DER.
type StoredKey struct {
	ID        string
	Algorithm string
	Private   []byte
	CreatedAt time.Time
	// ActiveAt is when the key may start signing: every process publishes
	// a new key (it reloads keys on a short interval) before any signs with
	// it.
	ActiveAt time.Time
	// RetiredAt is set when a newer key of the same algorithm took over (or
	// the algorithm is no longer used); the key stays published for one
	// rotation period after it.
	RetiredAt time.Time
}

// KeySet is the stored set of signing keys and its version, which every
// change increments.
type KeySet struct {
	Version uint64
	Keys    []StoredKey
}

// KeyStore keeps the signing keys as one versioned set, so that a rotation
// is decided once however many processes share the store.
type KeyStore interface {
	// SigningKeys returns the stored set: version 0 and no keys at first.
	SigningKeys(ctx context.Context) (KeySet, error)
	// SwapSigningKeys replaces the set with keys if the stored version is
	// still version, and returns the new version; ErrStale otherwise.
	SwapSigningKeys(ctx context.Context, version uint64, keys []StoredKey) (uint64, error)
}

// SecretStore keeps the server's own secrets (the key authorization codes
// are derived with), shared by every process on the store.
type SecretStore interface {
	// EnsureSecret returns the secret stored under name, storing candidate
	// first when there is none. Concurrent callers all get the one value
	// that was stored first.
	EnsureSecret(ctx context.Context, name string, candidate []byte) ([]byte, error)
}

// AuthRequest is a pending (or approved) authorization request: what the
// client asked for, the browser it is bound to, and, once an agent
// completes it, the approval.
type AuthRequest struct {
	ID            string
	ClientID      string
	RedirectURI   string
	Scopes        []string
	State         string
	Nonce         string
	CodeChallenge string
	// Resources are the RFC 8707 resource indicators the client asked for
	// (the audiences its tokens may name); empty means the issuer.
	Resources []string
	// BrowserHash is the SHA-256 of the binding cookie the browser holds.
	BrowserHash string
	// DPoPJKT is the dpop_jkt the client sent (RFC 9449 §10): the code
	// is redeemed only with a proof by the key of that thumbprint.
	DPoPJKT   string
	CreatedAt time.Time
	ExpiresAt time.Time
	// Approval is set once, when an agent completes the request.
	Approval *Approval
}

// Approval is an agent's answer to an authorization request.
type Approval struct {
	AgentID   string
	ModelName string
	AuthTime  time.Time
	// CodeSeed derives the authorization code (with the code key of the
	// SecretStore); the code itself is stored only as a hash.
	CodeSeed string
}

// AuthRequestStore keeps authorization requests until they expire.
type AuthRequestStore interface {
	// CreateAuthRequest stores a new request until r.ExpiresAt, or returns
	// ErrExists.
	CreateAuthRequest(ctx context.Context, r *AuthRequest) error
	// GetAuthRequest returns the request, or ErrNotFound when it is missing
	// or expired.
	GetAuthRequest(ctx context.Context, id string) (*AuthRequest, error)
	// ApproveAuthRequest records a on a pending request, atomically: of
	// concurrent approvals exactly one succeeds and the others get
	// ErrNotPending. ErrNotFound when the request is missing or expired. It
	// returns the approved request.
	ApproveAuthRequest(ctx context.Context, id string, a Approval) (*AuthRequest, error)
}

// CodeGrant is what an authorization code stands for, stored under the
// SHA-256 of the code.
type CodeGrant struct {
	ClientID      string
	RedirectURI   string
	Scopes        []string
	Nonce         string
	CodeChallenge string
	Resources     []string
	AgentID       string
	ModelName     string
	AuthTime      time.Time
	ExpiresAt     time.Time
	// DPoPJKT is the key thumbprint the code is bound to (the request's
	// dpop_jkt), or empty.
	DPoPJKT string
	// Redemption is set by the one successful redemption.
	Redemption *Redemption
}

// Redemption records what redeeming a code issued, so that a replay of the
// code can revoke it.
type Redemption struct {
	AccessTokenID      string
	AccessTokenExpires time.Time
	Family             string // the refresh-token family started, if any
}

// CodeStore keeps authorization codes until they expire.
type CodeStore interface {
	// CreateCode stores the grant of the code whose hash is given until
	// g.ExpiresAt, or returns ErrExists.
	CreateCode(ctx context.Context, hash string, g *CodeGrant) error
	// RedeemCode redeems a code once, atomically. For a code not redeemed
	// yet, redeem decides: its error is returned and nothing changes, or
	// the Redemption it returns is recorded and the grant returned. A code
	// redeemed before is returned with its first Redemption and
	// ErrCodeUsed. ErrNotFound when the code is missing or expired.
	RedeemCode(ctx context.Context, hash string, redeem func(*CodeGrant) (Redemption, error)) (*CodeGrant, error)
}

// RefreshGrant is what a refresh token stands for, stored under the SHA-256
// of the token. Every refresh token of one lineage shares its Family.
type RefreshGrant struct {
	Family   string
	ClientID string
	AgentID  string
	Scopes   []string
	// Resources are those authorized: each refresh may narrow the access
	// token's audience to one of them.
	Resources []string
	ModelName string
	AuthTime  time.Time
	// ExpiresAt is when the family ends: refresh tokens rotate within a
	// family that lives refresh_token_lifetime from its first grant.
	ExpiresAt time.Time
	// Rotated marks a token that was exchanged for its successor (or, for
	// a successor a retry replaced, that is void): presenting it again is
	// a reuse, unless it is a retry (see RetryRefresh).
	Rotated bool
	// RotatedAt is when the token was rotated (or made void by a retry),
	// on the store's clock; zero for a token not rotated, and for one
	// rotated by a version before it was recorded (never retried).
	RotatedAt time.Time
	// Successor is the hash of the token this one was rotated into (the
	// latest, after retries); empty for a token not rotated, and for a
	// successor a retry replaced (no retry of it is possible).
	Successor string
	// DPoPJKT binds the tokens of a public client's family to a DPoP key
	// (RFC 9449 §5): refreshing takes a proof by the key of that
	// thumbprint. Empty: not bound.
	DPoPJKT string
}

// RefreshStore keeps refresh tokens, indexed by family.
type RefreshStore interface {
	// CreateRefresh stores a new refresh token until g.ExpiresAt, or returns
	// ErrExists.
	CreateRefresh(ctx context.Context, hash string, g *RefreshGrant) error
	// GetRefresh returns the grant (rotated or not), or ErrNotFound when it
	// is missing, expired or its family was revoked.
	GetRefresh(ctx context.Context, hash string) (*RefreshGrant, error)
	// RotateRefresh marks the token under oldHash rotated (recording when,
	// and newHash as its Successor) and stores next under newHash, as one
	// compare-and-swap: ErrRefreshRotated when the old token was rotated
	// already, ErrNotFound when it is missing, expired or its family was
	// revoked.
	RotateRefresh(ctx context.Context, oldHash, newHash string, next *RefreshGrant) error
	// RetryRefresh answers a rotated token presented again by a client
	// that lost the answer to its refresh: if the token under oldHash was
	// rotated less than grace ago (RotatedAt, on the store's clock), its
	// Successor is still successor and that successor was never used, it
	// marks the successor rotated with no successor of its own (void:
	// presenting it later is a reuse), stores next under newHash and
	// makes newHash the old token's Successor, all as one compare-and-swap.
	// The old token's RotatedAt stays, so retries never extend the grace.
	// ErrRefreshRotated when the grace has passed, the token has no
	// recorded rotation, or its successor was used or is gone (a reuse);
	// ErrStale when the token is not rotated or its Successor is no longer
	// successor (another retry got there first: of concurrent retries
	// exactly one succeeds); ErrNotFound when it is missing, expired or its
	// family was revoked; ErrExists when newHash is taken.
	RetryRefresh(ctx context.Context, oldHash, successor, newHash string, next *RefreshGrant, grace time.Duration) error
	// RevokeFamily deletes every refresh token of the family; a rotation
	// racing it either fails or has its successor deleted too.
	RevokeFamily(ctx context.Context, family string) error
}

// Kinds of Change.
const (
	// ChangeTokenRevoked voids the access token Key and every token that
	// descends from it (exchanged from it).
	ChangeTokenRevoked = "token_revoked"
	// ChangeFamilyRevoked voids the refresh-token family Key and every
	// access token issued along it.
	ChangeFamilyRevoked = "family_revoked"
	// ChangeAgentRevoked voids every token of agent Key issued at or before
	// Before (the agent was disabled or deleted).
	ChangeAgentRevoked = "agent_revoked"
	// ChangeAgentUpdated says agent Key changed: caches of it are stale.
	ChangeAgentUpdated = "agent_updated"
	// ChangeAgentPermissions says an operator set the permissions of an
	// agent: Key is the agent id and its permissions after the change,
	// space-separated (neither may contain a space). A token of the agent
	// issued at or before Before that carries an API scope outside them is
	// void. Processes that do not know the kind ignore it.
	ChangeAgentPermissions = "agent_permissions"
)

// Change is one entry of the change log: a revocation, or news that an
// entity changed. Processes sharing a store read the log from where they
// left off, so each one learns of every change within its poll interval.
type Change struct {
	Seq    uint64 // assigned by the store
	Kind   string
	Key    string
	Before time.Time // ChangeAgentRevoked
	// Expires is when the change stops mattering (the tokens it voids have
	// expired); the store drops it then.
	Expires time.Time
	// At is when it was written (zero in changes an earlier version
	// wrote): other processes time how long it took to reach them.
	At time.Time
}

// ChangeLog is an append-only log of changes ordered by sequence number.
type ChangeLog interface {
	// AppendChange stores c with the next sequence number and returns it.
	AppendChange(ctx context.Context, c Change) (uint64, error)
	// ChangesSince returns up to limit unexpired changes with a sequence
	// number above after, in order (limit <= 0 means 100). Sequence numbers
	// grow with commit order: a change appended after a call returned has a
	// number above every one it returned, so reading on from the last
	// number seen misses nothing.
	ChangesSince(ctx context.Context, after uint64, limit int) ([]Change, error)
}

// ChangeWatcher is a ChangeLog that pushes news of appended changes (a
// database server's notifications), so a process need not wait for its
// next poll. The log stays the truth: a notification says only "read the
// log now", and the poll goes on in case one is lost.
type ChangeWatcher interface {
	// WatchChanges calls notify whenever a change may have been appended,
	// and after it (re)connects, until ctx ends. notify must not block.
	WatchChanges(ctx context.Context, notify func())
}
