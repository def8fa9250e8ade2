package oauth

import (
	"context"
	"strconv"
	"time"
)

const (
	kindRevoked = "revoked"
	kindRefresh = "refresh"

	kindRevokedFamily = "revoked_family"
)

// refreshGrant is what a refresh token stands for, stored under its hash.
// Rotated marks a token already exchanged: presenting it again means it
// leaked, and the whole family is revoked.
type refreshGrant struct {
	Family    string   `json:"family"`
	ClientID  string   `json:"client_id"`
	AgentID   string   `json:"agent_id"`
	Scopes    []string `json:"scopes"`
	Resource  string   `json:"resource,omitempty"`
	ModelName string   `json:"model_name,omitempty"`
	AuthTime  int64    `json:"auth_time"`
	Rotated   bool     `json:"rotated,omitempty"`
	// ExpiresAt is when the family ends: refresh tokens rotate within a
	// family that lives refresh_token_lifetime from its first grant.
	ExpiresAt time.Time `json:"expires_at"`
}

// A refresh-token family is a lineage: a random id that every refresh token
// and every access token along it carries (access tokens in their jti,
// "<family>.<random>"). It has no record of its own: revoking it puts it in
// the revocation set (persisted as a revoked_family record), which voids
// them all, and its absolute lifetime rides in each refresh grant.

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

// revokeFamily revokes the lineage, which voids its refresh tokens and
// every access token issued along it.
func (s *Server) revokeFamily(ctx context.Context, id string) error {
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
