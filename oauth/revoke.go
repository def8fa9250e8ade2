package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"
)

const (
	kindRevoked = "revoked"
	kindRefresh = "refresh"
	kindFamily  = "family"

	kindRevokedFamily = "revoked_family"
)

// refreshGrant is what a refresh token stands for, stored under its hash.
// Rotated marks a token already exchanged: presenting it again means it
// leaked, and the whole family is revoked.
type refreshGrant struct {
	Family    string    `json:"family"`
	ClientID  string    `json:"client_id"`
	AgentID   string    `json:"agent_id"`
	Scopes    []string  `json:"scopes"`
	Resource  string    `json:"resource,omitempty"`
	ModelName string    `json:"model_name,omitempty"`
	AuthTime  int64     `json:"auth_time"`
	Rotated   bool      `json:"rotated,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

// family is a refresh-token lineage. Its access tokens carry its id in
// their jti ("<family>.<random>"), so revoking the family voids them all
// without listing them.
type family struct {
	Revoked bool `json:"revoked,omitempty"`
}

// revokeSubject voids every token the agent holds now (it was disabled or
// deleted): recorded in the store for restarts, and in process for the
// guard.
func (s *Server) revokeSubject(ctx context.Context, id string) error {
	since := s.now().Unix()
	ttl := s.tokens.Lifetime() + verifyLeeway
	if err := s.store.PutRecord(ctx, kindRevokedSubject, id, []byte(strconv.FormatInt(since, 10)), ttl); err != nil {
		return err
	}
	s.revocations.addSubject(id, since, since+int64(ttl/time.Second))
	return nil
}

// revokeAccess refuses the access token jti until it would have expired,
// and with it every token exchanged from it (their jtis extend this one).
func (s *Server) revokeAccess(ctx context.Context, jti string, exp int64) error {
	ttl := time.Until(time.Unix(exp, 0)) + verifyLeeway
	if ttl <= 0 {
		return nil
	}
	if err := s.store.PutRecord(ctx, kindRevoked, jti, []byte(strconv.FormatInt(exp, 10)), ttl); err != nil {
		return err
	}
	s.revocations.add(jti, exp)
	return nil
}

// newFamily starts a refresh-token lineage.
func (s *Server) newFamily(ctx context.Context) (string, error) {
	id := randomToken(16)
	raw, err := json.Marshal(family{})
	if err != nil {
		return "", err
	}
	return id, s.store.PutRecord(ctx, kindFamily, id, raw, s.cfg.RefreshTokenLifetime)
}

// familyRevoked reports whether a lineage was revoked (or is gone).
func (s *Server) familyRevoked(ctx context.Context, id string) (bool, error) {
	raw, err := s.store.GetRecord(ctx, kindFamily, id)
	if errors.Is(err, ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	var f family
	if err := json.Unmarshal(raw, &f); err != nil {
		return false, err
	}
	return f.Revoked, nil
}

// revokeFamily marks the lineage revoked, which voids its refresh tokens
// and every access token issued along it.
func (s *Server) revokeFamily(ctx context.Context, id string) error {
	err := s.store.UpdateRecord(ctx, kindFamily, id, func(raw []byte) ([]byte, error) {
		return json.Marshal(family{Revoked: true})
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	// Its access tokens live at most one access-token lifetime past the
	// family's last refresh.
	ttl := s.cfg.RefreshTokenLifetime + s.tokens.Lifetime() + verifyLeeway
	until := s.now().Add(ttl).Unix()
	if err := s.store.PutRecord(ctx, kindRevokedFamily, id, []byte(strconv.FormatInt(until, 10)), ttl); err != nil {
		return err
	}
	s.revocations.addFamily(id, until)
	return nil
}
