// Package storage holds the backends behind agents.Repository and
// oauth.Store: Badger, the embedded database a running Caddy uses;
// PostgreSQL, for several Caddy instances sharing one database; and
// Memory, for tests and throwaway setups. All pass the same conformance
// suite (storage/storagetest).
package storage

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/oauth"
)

// Backend is everything the server needs from a storage backend: the agent
// registry, the authorization server's stores, the webhooks' durable
// outbox, and what the host needs to run it.
type Backend interface {
	agents.Repository
	oauth.Store
	events.Outbox
	// Shared reports whether several processes may use the same database at
	// once (a database server), rather than this process alone (Badger's
	// directory lock, memory). On a shared store a new signing key is
	// published for a while before it signs, so every process has it in
	// its JWKS first, and rate limits counted in memory are warned about.
	Shared() bool
	// Close releases the backend; calls after it fail or, for Memory, keep
	// working without the background sweep.
	Close() error
}

// Compile-time proof that every backend is complete.
var (
	_ Backend = (*Badger)(nil)
	_ Backend = (*Memory)(nil)
	_ Backend = (*Postgres)(nil)
)

// ErrInvalidInput is wrapped by the errors returned for arguments no backend
// can store: a nil record or callback, an empty id, hash, name, family,
// kind or key for something to be written, a missing expiry, or a callback
// that tries to rename what it updates. These are programming errors in
// the caller, so they are kept apart from the not found and exists errors.
//
// Looking up, updating or deleting under an empty id is not invalid input:
// nothing can be stored there, so those calls report not found (a client
// presenting an empty client_id is simply unknown).
var ErrInvalidInput = errors.New("auth_agent storage: invalid input")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidInput}, args...)...)
}

// defaultListLimit is the page size of ListAgents, ListClients and
// ChangesSince when the caller passes limit <= 0, so a forgotten limit
// cannot load everything at once.
const defaultListLimit = 100

// checkAgent rejects agents that would be stored under an empty id, where
// no GetAgent call could ever find them again.
func checkAgent(a *agents.Agent) error {
	if a == nil {
		return invalid("nil agent")
	}
	return checkID("agent id", a.ID)
}

// checkID rejects an empty id, and one that is not UTF-8: ids are stored in
// JSON records, where invalid UTF-8 would silently turn into U+FFFD and the
// record would name another id than the one it is stored under.
func checkID(what, id string) error {
	if id == "" {
		return invalid("empty %s", what)
	}
	if !utf8.ValidString(id) {
		return invalid("%s %q is not UTF-8", what, id)
	}
	return nil
}

// checkAgentRename stops an UpdateAgent callback from renaming the agent:
// the record would move to another key behind the caller's back, possibly
// over an existing agent.
func checkAgentRename(id string, a *agents.Agent) error {
	if a.ID != id {
		return invalid("UpdateAgent may not change the agent id (%q to %q)", id, a.ID)
	}
	return nil
}

func checkClient(c *oauth.Client) error {
	if c == nil {
		return invalid("nil client")
	}
	return checkID("client id", c.ID)
}

// checkClientRename is checkAgentRename for UpdateClient.
func checkClientRename(id string, c *oauth.Client) error {
	if c.ID != id {
		return invalid("UpdateClient may not change the client id (%q to %q)", id, c.ID)
	}
	return nil
}

// checkKeySet rejects a key set that could not be told apart by kid: JWT
// headers and the JWKS match tokens to keys by it.
func checkKeySet(keys []oauth.StoredKey) error {
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if err := checkID("signing key id", k.ID); err != nil {
			return err
		}
		if seen[k.ID] {
			return invalid("signing key id %q appears twice in the set", k.ID)
		}
		seen[k.ID] = true
	}
	return nil
}

func checkSecret(name string, candidate []byte) error {
	if name == "" {
		return invalid("empty secret name")
	}
	if len(candidate) == 0 {
		return invalid("empty candidate for secret %q", name)
	}
	return nil
}

// checkExpiry rejects a short-lived record without an expiry: the zero time
// is not after any clock reading, so it would be gone the moment it was
// stored, which is never what the caller meant.
func checkExpiry(what string, t time.Time) error {
	if t.IsZero() {
		return invalid("%s has no expiry", what)
	}
	return nil
}

func checkAuthRequest(r *oauth.AuthRequest) error {
	if r == nil {
		return invalid("nil authorization request")
	}
	if err := checkID("authorization request id", r.ID); err != nil {
		return err
	}
	return checkExpiry("authorization request "+r.ID, r.ExpiresAt)
}

func checkApproval(id string, a oauth.Approval) error {
	if a.AgentID == "" {
		return invalid("approval of authorization request %q names no agent", id)
	}
	return nil
}

func checkCode(hash string, g *oauth.CodeGrant) error {
	if hash == "" {
		return invalid("empty authorization code hash")
	}
	if g == nil {
		return invalid("nil code grant")
	}
	return checkExpiry("authorization code", g.ExpiresAt)
}

func checkRedeem(redeem func(*oauth.CodeGrant) (oauth.Redemption, error)) error {
	if redeem == nil {
		return invalid("nil redeem callback")
	}
	return nil
}

// checkFamily rejects family names the family index cannot hold: Badger
// indexes tokens under "refam/<family>/<hash>", so a "/" in a family would
// let family "a" see the tokens of family "a/b".
func checkFamily(family string) error {
	if err := checkID("refresh token family", family); err != nil {
		return err
	}
	if strings.Contains(family, "/") {
		return invalid("refresh token family %q contains \"/\"", family)
	}
	return nil
}

func checkRefresh(hash string, g *oauth.RefreshGrant) error {
	if hash == "" {
		return invalid("empty refresh token hash")
	}
	if g == nil {
		return invalid("nil refresh grant")
	}
	if err := checkFamily(g.Family); err != nil {
		return err
	}
	return checkExpiry("refresh token", g.ExpiresAt)
}

func checkRotate(oldHash, newHash string, next *oauth.RefreshGrant) error {
	if err := checkRefresh(newHash, next); err != nil {
		return err
	}
	if oldHash == newHash {
		return invalid("refresh token rotated to itself")
	}
	return nil
}

// checkRetry rejects a retry that could not be stored, or that names the
// token it replaces as its new one.
func checkRetry(oldHash, successor, newHash string, next *oauth.RefreshGrant, grace time.Duration) error {
	if err := checkRotate(oldHash, newHash, next); err != nil {
		return err
	}
	if successor == "" || successor == oldHash || successor == newHash {
		return invalid("refresh retry of %q replaces successor %q with %q", oldHash, successor, newHash)
	}
	if grace < 0 {
		return invalid("negative refresh retry grace %s", grace)
	}
	return nil
}

// decideRetry says whether old, as stored at now, may be retried in place
// of its successor successor: see oauth.RefreshStore.RetryRefresh. It does
// not look at the successor itself.
func decideRetry(old *oauth.RefreshGrant, successor string, grace time.Duration, now time.Time) error {
	switch {
	case !old.Rotated:
		return oauth.ErrStale
	case old.Successor == "" || old.RotatedAt.IsZero() || !now.Before(old.RotatedAt.Add(grace)):
		return oauth.ErrRefreshRotated
	case old.Successor != successor:
		return oauth.ErrStale
	}
	return nil
}

// decideSuperseded says whether succ, the stored successor of a token being
// retried, may be made void: one already rotated (or gone, nil) was used,
// so the retry is a reuse.
func decideSuperseded(old, succ *oauth.RefreshGrant) error {
	if succ == nil || succ.Rotated || succ.Family != old.Family {
		return oauth.ErrRefreshRotated
	}
	return nil
}

// checkSameFamily keeps a rotation inside its family, so that revoking the
// family also reaches the successor.
func checkSameFamily(old, next *oauth.RefreshGrant) error {
	if old.Family != next.Family {
		return invalid("refresh token of family %q rotated into family %q", old.Family, next.Family)
	}
	return nil
}

func checkChange(c oauth.Change) error {
	if err := checkID("change kind", c.Kind); err != nil {
		return err
	}
	if err := checkID(c.Kind+" change key", c.Key); err != nil {
		return err
	}
	return checkExpiry(c.Kind+" change", c.Expires)
}

// checkUseOnce rejects a key nothing could be recorded under, and a record
// without an expiry. An until already past is not refused: such a record
// is as good as none from the start, as oauth.ReplayStore says, and a
// caller that records a value until it stops being accepted (a proof's
// exp plus leeway) has nothing left to protect once that time has passed.
func checkUseOnce(key string, until time.Time) error {
	if err := checkID("use-once key", key); err != nil {
		return err
	}
	return checkExpiry("use-once key", until)
}

// expired is the one expiry rule of both backends: a record whose expiry is
// not after now is gone.
func expired(expiresAt, now time.Time) bool { return !expiresAt.After(now) }
