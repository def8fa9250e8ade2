// Package storage holds the backends behind agents.Repository, oauth.KeyStore
// and oauth.RecordStore: Badger, the embedded database a running Caddy uses,
// and Memory, for tests and throwaway setups. Both pass the same conformance
// suite (storage/storagetest).
package storage

import (
	"errors"
	"fmt"
	"strings"

	"github.com/authagent/caddy-authagent/agents"
)

// ErrInvalidInput is wrapped by the errors returned for arguments no backend
// can store: a nil agent, an empty agent or key id, an empty record kind, or
// a record kind containing "/". These are programming errors in the caller,
// so they are kept apart from ErrNotFound and ErrExists.
var ErrInvalidInput = errors.New("auth_agent storage: invalid input")

// checkKind rejects kinds that could make two (kind, key) pairs share one
// stored key: Badger stores records under "rec/<kind>/<key>", so a "/" in
// kind would let ("a/b", "c") and ("a", "b/c") collide. Keys may contain
// anything because the first "/" after the prefix always ends the kind.
func checkKind(kind string) error {
	if kind == "" {
		return fmt.Errorf("%w: empty record kind", ErrInvalidInput)
	}
	if strings.Contains(kind, "/") {
		return fmt.Errorf("%w: record kind %q contains \"/\"", ErrInvalidInput, kind)
	}
	return nil
}

// checkAgent rejects agents that would be stored under an empty id, where
// no GetAgent call could ever find them again.
func checkAgent(a *agents.Agent) error {
	if a == nil {
		return fmt.Errorf("%w: nil agent", ErrInvalidInput)
	}
	if a.ID == "" {
		return fmt.Errorf("%w: empty agent id", ErrInvalidInput)
	}
	return nil
}

// checkUpdatedID stops an UpdateAgent callback from renaming the agent: the
// record would move to another key behind the caller's back, possibly over
// an existing agent.
func checkUpdatedID(id string, a *agents.Agent) error {
	if a.ID != id {
		return fmt.Errorf("%w: UpdateAgent may not change the agent id (%q to %q)", ErrInvalidInput, id, a.ID)
	}
	return nil
}

// checkKeyID rejects signing keys without a kid, which JWT headers and the
// JWKS need to match tokens to keys.
func checkKeyID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty signing key id", ErrInvalidInput)
	}
	return nil
}

// defaultListLimit is the page size of ListAgents and ListRecords when the
// caller passes limit <= 0, so a forgotten limit cannot load everything at
// once.
const defaultListLimit = 100
