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
	kindDerived = "derived"
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

// family is a refresh-token lineage: every refresh token and the access
// tokens issued along it, so revoking it stops them all.
type family struct {
	Revoked bool             `json:"revoked,omitempty"`
	Access  map[string]int64 `json:"access,omitempty"` // jti → exp (Unix)
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
// and with it every token exchanged from it.
func (s *Server) revokeAccess(ctx context.Context, jti string, exp int64) error {
	ttl := time.Until(time.Unix(exp, 0)) + verifyLeeway
	if ttl <= 0 {
		return nil
	}
	if err := s.store.PutRecord(ctx, kindRevoked, jti, []byte(strconv.FormatInt(exp, 10)), ttl); err != nil {
		return err
	}
	s.revocations.add(jti, exp)
	raw, err := s.store.GetRecord(ctx, kindDerived, jti)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var children map[string]int64
	if err := json.Unmarshal(raw, &children); err != nil {
		return err
	}
	// Exchanged tokens never outlive their subject token, so this chain
	// ends; each level is a separate, earlier-expiring record.
	for child, childExp := range children {
		if err := s.revokeAccess(ctx, child, childExp); err != nil {
			return err
		}
	}
	return nil
}

// addDerived records that child was exchanged from parent, so revoking the
// parent revokes the child. If the parent was revoked meanwhile, the child
// is revoked at once.
func (s *Server) addDerived(ctx context.Context, parent string, parentExp int64, child string, childExp int64) error {
	ttl := time.Until(time.Unix(parentExp, 0)) + verifyLeeway
	err := s.store.UpdateRecord(ctx, kindDerived, parent, func(raw []byte) ([]byte, error) {
		m := map[string]int64{}
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		m[child] = childExp
		return json.Marshal(m)
	})
	if errors.Is(err, ErrNotFound) {
		raw, _ := json.Marshal(map[string]int64{child: childExp})
		err = s.store.CreateRecord(ctx, kindDerived, parent, raw, ttl)
		if errors.Is(err, ErrExists) { // a concurrent exchange created it
			return s.addDerived(ctx, parent, parentExp, child, childExp)
		}
	}
	if err != nil {
		return err
	}
	if s.revocations.revokedID(parent) {
		return s.revokeAccess(ctx, child, childExp)
	}
	return nil
}

// newFamily starts a refresh-token lineage with its first access token.
func (s *Server) newFamily(ctx context.Context, jti string, exp int64) (string, error) {
	id := randomToken(16)
	raw, err := json.Marshal(family{Access: map[string]int64{jti: exp}})
	if err != nil {
		return "", err
	}
	return id, s.store.PutRecord(ctx, kindFamily, id, raw, s.cfg.RefreshTokenLifetime)
}

// addToFamily records an access token issued along a family. If the family
// was revoked meanwhile, the token is revoked at once.
func (s *Server) addToFamily(ctx context.Context, id, jti string, exp int64) error {
	revoked := false
	err := s.store.UpdateRecord(ctx, kindFamily, id, func(raw []byte) ([]byte, error) {
		var f family
		if err := json.Unmarshal(raw, &f); err != nil {
			return nil, err
		}
		revoked = f.Revoked
		now := s.now().Unix()
		for k, e := range f.Access {
			if e < now {
				delete(f.Access, k) // expired: nothing left to revoke
			}
		}
		if f.Access == nil {
			f.Access = map[string]int64{}
		}
		f.Access[jti] = exp
		return json.Marshal(f)
	})
	if errors.Is(err, ErrNotFound) {
		revoked = true
		err = nil
	}
	if err == nil && revoked {
		err = s.revokeAccess(ctx, jti, exp)
	}
	return err
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

// revokeFamily marks the lineage revoked and revokes every live access
// token issued along it.
func (s *Server) revokeFamily(ctx context.Context, id string) error {
	var access map[string]int64
	err := s.store.UpdateRecord(ctx, kindFamily, id, func(raw []byte) ([]byte, error) {
		var f family
		if err := json.Unmarshal(raw, &f); err != nil {
			return nil, err
		}
		f.Revoked = true
		access = f.Access
		return json.Marshal(f)
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for jti, exp := range access {
		if err := s.revokeAccess(ctx, jti, exp); err != nil {
			return err
		}
	}
	return nil
}
