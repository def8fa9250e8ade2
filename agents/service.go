package agents

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/authagent/caddy-authagent/internal/cache"
)

// Errors the Service returns besides ValidationError and the Repository's.
var (
	// ErrInvalidCredentials covers an unknown agent, a wrong secret and a
	// disabled agent alike, so callers cannot tell which.
	ErrInvalidCredentials = errors.New("invalid agent credentials")
	// ErrPermissionsFixed means the agent's permissions come from the
	// configuration and cannot be changed at run time.
	ErrPermissionsFixed = errors.New("permissions are set in the configuration")
	// ErrReserved means the id belongs to an agent the configuration names,
	// which only the operator (or a holder of the registration token) may
	// register.
	ErrReserved = errors.New("agent id reserved by the configuration")
	// ErrSecretChanged means the secret changed while an update was being
	// prepared; the caller may retry.
	ErrSecretChanged = errors.New("agent secret changed concurrently")
)

// Config is the registry's policy.
type Config struct {
	// DefaultPermissions are given to a newly registered agent that the
	// configuration does not name.
	DefaultPermissions []string
	// Permissions fixes the permissions of the agents it names; it wins over
	// what is stored, so an operator's configuration is the truth.
	Permissions map[string][]string
	// Memo remembers verified secrets; share one across the registries of
	// successive configurations so a reload does not make every agent pay
	// argon2id again. nil: the registry has its own.
	Memo *VerifiedMemo
}

// Service is the agent registry.
type Service struct {
	repo   Repository
	hasher *Hasher
	cfg    Config
	now    func() time.Time
	cache  *VerifiedMemo
	// dummyHash is verified against for unknown agents so that they cost
	// the same time as known ones.
	dummyHash string
}

// NewService returns a registry over repo. now may be nil (time.Now).
func NewService(repo Repository, hasher *Hasher, cfg Config, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	memo := cfg.Memo
	if memo == nil {
		memo = NewVerifiedMemo(now)
	}
	s := &Service{repo: repo, hasher: hasher, cfg: cfg, now: now, cache: memo}
	// Made now, not on the first unknown agent, so that no request pays for
	// it and stands out by its timing.
	s.dummyHash, _ = hasher.Hash(context.Background(), "unused-dummy-secret")
	return s
}

// Registration is what a new agent sends.
type Registration struct {
	AgentID     string
	AgentSecret string // empty: the server generates one
	ModelName   string
	OwnerName   string
	OwnerEmail  string
	// Permissions set by an operator (admin API); nil means the defaults.
	// Agents registering themselves never set them.
	Permissions []string
	// JWKS, instead of a secret, makes an agent that holds keys: its
	// public keys as a JWK Set's JSON, checked by the caller (this package
	// keeps it as text). Such an agent has no secret.
	JWKS string
}

// Validate checks every field and returns the first problem.
func (r Registration) Validate() error {
	if err := ValidateID(r.AgentID); err != nil {
		return err
	}
	if r.AgentSecret != "" && r.JWKS != "" {
		return invalid("agent_secret", "and jwks exclude each other: an agent holds a secret or keys")
	}
	if r.AgentSecret != "" {
		if err := ValidateSecret("agent_secret", r.AgentSecret); err != nil {
			return err
		}
	}
	if err := ValidateModelName(r.ModelName); err != nil {
		return err
	}
	if err := ValidateOwnerName(r.OwnerName); err != nil {
		return err
	}
	if err := ValidatePermissions(r.Permissions); err != nil {
		return err
	}
	return ValidateEmail(r.OwnerEmail)
}

// Register creates an agent. When the registration carries no secret one is
// generated and returned; it is never retrievable afterwards. Ids the
// configuration names (with fixed permissions) are refused unless trusted
// is set: an operator, or a caller holding the registration token, registers
// those, so nobody can claim an operator's privileged agent first.
func (s *Service) Register(ctx context.Context, reg Registration, trusted bool) (agent *Agent, generatedSecret string, err error) {
	if err := reg.Validate(); err != nil {
		return nil, "", err
	}
	if _, fixed := s.cfg.Permissions[reg.AgentID]; fixed && !trusted {
		return nil, "", ErrReserved
	}
	// Fail fast on a taken id before paying for a hash; CreateAgent still
	// decides races.
	if _, err := s.repo.GetAgent(ctx, reg.AgentID); err == nil {
		return nil, "", ErrExists
	} else if !errors.Is(err, ErrNotFound) {
		return nil, "", err
	}
	var hash string
	if reg.JWKS == "" {
		secret := reg.AgentSecret
		if secret == "" {
			if secret, err = GenerateSecret(); err != nil {
				return nil, "", err
			}
			generatedSecret = secret
		}
		if hash, err = s.hasher.Hash(ctx, NormalizeSecret(secret)); err != nil {
			return nil, "", err
		}
	}
	now := s.now().UTC()
	// Stored: the defaults. Fixed permissions apply through effective(), so
	// removing an agent block from the configuration takes them away.
	perms := s.cfg.DefaultPermissions
	if reg.Permissions != nil {
		perms = reg.Permissions
	}
	a := &Agent{
		ID:          reg.AgentID,
		SecretHash:  hash,
		ModelName:   reg.ModelName,
		OwnerName:   reg.OwnerName,
		OwnerEmail:  reg.OwnerEmail,
		Permissions: append([]string{}, perms...),
		CreatedAt:   now,
		UpdatedAt:   now,
		JWKS:        reg.JWKS,
	}
	if err := s.repo.CreateAgent(ctx, a); err != nil {
		return nil, "", err
	}
	return s.effective(a), generatedSecret, nil
}

// GenerateSecret returns a random secret of 256 bits that also satisfies the
// rule for secrets people choose.
func GenerateSecret() (string, error) {
	for {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		s := base64.RawURLEncoding.EncodeToString(b)
		if ValidateSecret("agent_secret", s) == nil {
			return s, nil
		}
	}
}

// Authenticate checks an agent's credentials. Unknown agents, wrong secrets
// and disabled agents all give ErrInvalidCredentials after the same work.
func (s *Service) Authenticate(ctx context.Context, id, secret string) (*Agent, error) {
	normalized := NormalizeSecret(secret)
	a, err := s.repo.GetAgent(ctx, id)
	// An agent that holds keys has no secret: any secret is as wrong as
	// for an agent that does not exist, and costs as much.
	if errors.Is(err, ErrNotFound) || (err == nil && (id == "" || a.SecretHash == "")) {
		// The same work as for a known agent with a wrong secret: one
		// verification, two when the secret changes under normalisation.
		verifications := 1
		if normalized != secret {
			verifications = 2
		}
		for range verifications {
			if _, err := s.hasher.Verify(ctx, secret, s.dummyHash); err != nil && ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
		return nil, ErrInvalidCredentials
	}
	if err != nil {
		return nil, err
	}
	if !s.cache.match(a.ID, a.SecretHash, normalized) {
		ok, err := s.hasher.Verify(ctx, normalized, a.SecretHash)
		if err == nil && !ok && normalized != secret {
			// A secret set before secrets were normalised was hashed as
			// typed.
			ok, err = s.hasher.Verify(ctx, secret, a.SecretHash)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("agent %s: %w", a.ID, err)
		}
		if !ok {
			return nil, ErrInvalidCredentials
		}
		s.cache.remember(a.ID, a.SecretHash, normalized)
	}
	if a.Disabled {
		return nil, ErrInvalidCredentials
	}
	return s.effective(a), nil
}

// Get returns the agent with its effective permissions.
func (s *Service) Get(ctx context.Context, id string) (*Agent, error) {
	a, err := s.repo.GetAgent(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.effective(a), nil
}

// List returns a page of agents ordered by id.
func (s *Service) List(ctx context.Context, after string, limit int) ([]*Agent, error) {
	list, err := s.repo.ListAgents(ctx, after, limit)
	for i, a := range list {
		list[i] = s.effective(a)
	}
	return list, err
}

// ProfileUpdate is what an agent may change about itself. Nil fields are
// left alone.
type ProfileUpdate struct {
	ModelName     *string
	OwnerName     *string
	OwnerEmail    *string
	NewSecret     *string
	CurrentSecret string
}

// UpdateProfile applies an agent's own changes. A new secret needs the
// current one; a wrong current secret is ErrInvalidCredentials.
func (s *Service) UpdateProfile(ctx context.Context, id string, u ProfileUpdate) (*Agent, error) {
	if u.ModelName != nil {
		if err := ValidateModelName(*u.ModelName); err != nil {
			return nil, err
		}
	}
	if u.OwnerName != nil {
		if err := ValidateOwnerName(*u.OwnerName); err != nil {
			return nil, err
		}
	}
	if u.OwnerEmail != nil {
		if err := ValidateEmail(*u.OwnerEmail); err != nil {
			return nil, err
		}
	}
	var oldHash, newHash string
	if u.NewSecret != nil {
		if err := ValidateSecret("agent_secret", *u.NewSecret); err != nil {
			return nil, err
		}
		if u.CurrentSecret == "" {
			return nil, invalid("current_agent_secret", "is required to change agent_secret")
		}
		a, err := s.Authenticate(ctx, id, u.CurrentSecret)
		if err != nil {
			return nil, err
		}
		oldHash = a.SecretHash
		if newHash, err = s.hasher.Hash(ctx, NormalizeSecret(*u.NewSecret)); err != nil {
			return nil, err
		}
	}
	a, err := s.repo.UpdateAgent(ctx, id, func(a *Agent) error {
		if u.ModelName != nil {
			a.ModelName = *u.ModelName
		}
		if u.OwnerName != nil {
			a.OwnerName = *u.OwnerName
		}
		if u.OwnerEmail != nil {
			a.OwnerEmail = *u.OwnerEmail
		}
		if newHash != "" {
			if a.SecretHash != oldHash {
				return ErrSecretChanged
			}
			a.SecretHash = newHash
		}
		a.UpdatedAt = s.now().UTC()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if newHash != "" {
		s.cache.forget(id)
	}
	return s.effective(a), nil
}

// AdminUpdate is what an operator may change. Nil fields are left alone.
type AdminUpdate struct {
	Permissions *[]string
	Disabled    *bool
	// JWKS replaces the agent's keys (checked by the caller); an agent that
	// held a secret holds keys from then on, and the secret is gone.
	JWKS *string
	// RequireDPoP sets whether the agent's own tokens must be DPoP-bound.
	RequireDPoP *bool
}

// AdminUpdate applies an operator's change.
func (s *Service) AdminUpdate(ctx context.Context, id string, u AdminUpdate) (*Agent, error) {
	if u.Permissions != nil {
		if _, fixed := s.cfg.Permissions[id]; fixed {
			return nil, ErrPermissionsFixed
		}
		if err := ValidatePermissions(*u.Permissions); err != nil {
			return nil, err
		}
	}
	a, err := s.repo.UpdateAgent(ctx, id, func(a *Agent) error {
		if u.Permissions != nil {
			a.Permissions = append([]string{}, (*u.Permissions)...)
		}
		if u.Disabled != nil {
			a.Disabled = *u.Disabled
		}
		if u.JWKS != nil {
			a.JWKS, a.SecretHash = *u.JWKS, ""
		}
		if u.RequireDPoP != nil {
			a.RequireDPoP = *u.RequireDPoP
		}
		a.UpdatedAt = s.now().UTC()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if u.JWKS != nil {
		s.cache.forget(id)
	}
	return s.effective(a), nil
}

// ReplaceKeys replaces the keys of an agent that holds keys, if they are
// still current (the caller proved possession of one of current, read
// before): a concurrent replacement makes it ErrSecretChanged.
func (s *Service) ReplaceKeys(ctx context.Context, id, current, jwks string) (*Agent, error) {
	a, err := s.repo.UpdateAgent(ctx, id, func(a *Agent) error {
		if a.JWKS == "" || a.JWKS != current {
			return ErrSecretChanged
		}
		a.JWKS = jwks
		a.UpdatedAt = s.now().UTC()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.effective(a), nil
}

// Delete removes an agent.
func (s *Service) Delete(ctx context.Context, id string) error {
	if err := s.repo.DeleteAgent(ctx, id); err != nil {
		return err
	}
	s.cache.forget(id)
	return nil
}

// effective applies the configuration's fixed permissions.
func (s *Service) effective(a *Agent) *Agent {
	if perms, fixed := s.cfg.Permissions[a.ID]; fixed && !slices.Equal(perms, a.Permissions) {
		a = a.Clone()
		a.Permissions = append([]string{}, perms...)
	}
	return a
}

// Forget drops what is remembered of the agent's secret (it changed, or
// the agent did, perhaps in another process).
func (s *Service) Forget(id string) { s.cache.forget(id) }

// VerifiedMemo remembers recent successful verifications as a keyed hash of
// (stored hash, secret), so an agent authenticating in a loop does not pay
// argon2id each time. One memo may serve several Services (the registries
// of successive configurations across reloads): entries are by agent id and
// match only the stored hash they were made for. The key is random per
// process, the entries expire after verifiedTTL, the size is bounded, and
// an entry stops matching as soon as the stored hash changes (it is read
// from the store on every authentication), so it is never stale in a way
// that matters.
type VerifiedMemo struct {
	key     [32]byte
	entries *cache.Cache[string, [32]byte]
	now     func() time.Time
}

const (
	verifiedTTL = 5 * time.Minute
	verifiedMax = 10000
)

// NewVerifiedMemo returns an empty memo; now may be nil (time.Now).
func NewVerifiedMemo(now func() time.Time) *VerifiedMemo {
	if now == nil {
		now = time.Now
	}
	c := &VerifiedMemo{entries: cache.New[string, [32]byte](verifiedMax, now), now: now}
	_, _ = rand.Read(c.key[:])
	return c
}

func (c *VerifiedMemo) mac(storedHash, secret string) [32]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(storedHash))
	m.Write([]byte{0})
	m.Write([]byte(secret))
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

func (c *VerifiedMemo) match(id, storedHash, secret string) bool {
	want := c.mac(storedHash, secret)
	got, ok := c.entries.Get(id)
	return ok && hmac.Equal(got[:], want[:])
}

func (c *VerifiedMemo) remember(id, storedHash, secret string) {
	c.entries.Put(id, c.mac(storedHash, secret), c.now().Add(verifiedTTL))
}

func (c *VerifiedMemo) forget(id string) { c.entries.Delete(id) }
