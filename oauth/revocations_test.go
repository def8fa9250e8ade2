package oauth

import (
	"context"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// memLog is a ChangeLog in memory, enough for the view's own tests.
type memLog struct{ changes []Change }

func (m *memLog) AppendChange(_ context.Context, c Change) (uint64, error) {
	c.Seq = uint64(len(m.changes) + 1)
	m.changes = append(m.changes, c)
	return c.Seq, nil
}

func (m *memLog) ChangesSince(_ context.Context, after uint64, _ int) ([]Change, error) {
	if after >= uint64(len(m.changes)) {
		return nil, nil
	}
	return m.changes[after:], nil
}

func TestRevokedByPermissionChanges(t *testing.T) {
	now := t0
	log := &memLog{}
	v := NewRevocations(log, func() time.Time { return now }, nil)
	token := func(iat time.Time, scope string) *AccessClaims {
		return &AccessClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: "bot", IssuedAt: jwt.NewNumericDate(iat)}, Scope: scope}
	}
	record := func(at time.Time, key string) {
		if err := v.Record(context.Background(), Change{Kind: ChangeAgentPermissions, Key: key, Before: at, Expires: at.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	old := token(t0.Add(-time.Minute), "openid profile data:read data:write")
	oldWrite := token(t0.Add(-time.Minute), "profile data:write")
	record(t0, "bot data:write") // data:read taken away
	for name, c := range map[string]struct {
		claims *AccessClaims
		want   bool
	}{
		"a removed permission":            {old, true},
		"only kept permissions":           {oldWrite, false},
		"issued after the change":         {token(t0.Add(time.Second), "data:read"), false},
		"another agent":                   {&AccessClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: "other", IssuedAt: jwt.NewNumericDate(t0.Add(-time.Minute))}, Scope: "data:read"}, false},
		"identity scopes are not removed": {token(t0.Add(-time.Minute), "openid profile email permissions"), false},
	} {
		if got := v.Revoked(c.claims); got != c.want {
			t.Errorf("%s: revoked %v, want %v", name, got, c.want)
		}
	}
	// Given back later: the earlier token stays void.
	record(t0.Add(time.Minute), "bot data:read data:write")
	if !v.Revoked(old) {
		t.Error("a permission given back revived an earlier token")
	}
	if v.Revoked(token(t0.Add(2*time.Minute), "data:read")) {
		t.Error("a token issued after the permission came back")
	}
	// Read back from the log (as every Sync does), the changes apply once.
	for _, c := range log.changes {
		v.apply(c)
	}
	if len(v.perms["bot"]) != 2 || v.Revoked(token(t0.Add(2*time.Minute), "data:read")) {
		t.Errorf("applying the changes again altered the view: %+v", v.perms["bot"])
	}
	// Entries go once their tokens have expired.
	now = t0.Add(2 * time.Hour)
	v.sweep()
	if v.Revoked(old) {
		t.Error("an entry outlived its tokens")
	}
}
