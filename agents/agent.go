// Package agents is the agent registry: agent records, their validation,
// secret hashing, and the repository interface a storage backend implements.
package agents

import (
	"context"
	"errors"
	"time"
)

// Agent is a registered AI agent.
type Agent struct {
	ID          string    `json:"agent_id"`
	SecretHash  string    `json:"secret_hash"`
	ModelName   string    `json:"model_name"`
	OwnerName   string    `json:"owner_name"`
	OwnerEmail  string    `json:"owner_email"`
	Permissions []string  `json:"permissions"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Disabled    bool      `json:"disabled"`
	// JWKS, for an agent that holds keys instead of a secret, is its
	// public keys (a JWK Set's JSON): it authenticates only with
	// assertions they verify, and SecretHash is empty.
	JWKS string `json:"jwks,omitempty"`
	// RequireDPoP refuses the agent's own token requests (agent-auth,
	// client_credentials, token exchange as its own client) without a
	// DPoP proof: its tokens are always bound to a key.
	RequireDPoP bool `json:"require_dpop,omitempty"`
}

// Clone returns a deep copy, so callers may change the copy freely.
func (a *Agent) Clone() *Agent {
	c := *a
	c.Permissions = append([]string(nil), a.Permissions...)
	return &c
}

// Errors a Repository returns; callers test them with errors.Is.
var (
	ErrNotFound = errors.New("agent not found")
	ErrExists   = errors.New("agent already exists")
)

// Repository stores agents. Implementations must be safe for concurrent use,
// and every method that reports success must have made its write durable.
type Repository interface {
	// CreateAgent stores a new agent, or returns ErrExists if the id is taken.
	CreateAgent(ctx context.Context, a *Agent) error
	// GetAgent returns the agent or ErrNotFound.
	GetAgent(ctx context.Context, id string) (*Agent, error)
	// UpdateAgent applies fn to the stored agent and saves the result in one
	// atomic read-modify-write. If fn returns an error nothing is written and
	// that error is returned. Returns ErrNotFound for an unknown id.
	UpdateAgent(ctx context.Context, id string, fn func(*Agent) error) (*Agent, error)
	// DeleteAgent removes the agent, or returns ErrNotFound.
	DeleteAgent(ctx context.Context, id string) error
	// ListAgents returns up to limit agents ordered by id, starting after the
	// id given in after ("" for the first page).
	ListAgents(ctx context.Context, after string, limit int) ([]*Agent, error)
}
