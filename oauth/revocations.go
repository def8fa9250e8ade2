package oauth

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"
)

const kindRevokedSubject = "revoked_sub"

// Revocations is the in-process view of what was revoked: token ids until
// they expire, and agents (deleted or disabled) whose earlier tokens are all
// void. The guard checks it on every request without touching the
// database; every revocation also goes to the store, from which a restart
// reloads it.
type Revocations struct {
	mu       sync.RWMutex
	jtis     map[string]int64 // jti → exp (Unix)
	subjects map[string]int64 // agent id → tokens issued before this (Unix) are void
	until    map[string]int64 // agent id → when its entry can be dropped
	families map[string]int64 // refresh-token family → when its entry can be dropped
	now      func() time.Time
}

// NewRevocations returns an empty set.
func NewRevocations(now func() time.Time) *Revocations {
	if now == nil {
		now = time.Now
	}
	return &Revocations{jtis: map[string]int64{}, subjects: map[string]int64{}, until: map[string]int64{}, families: map[string]int64{}, now: now}
}

// Load fills the set from the store (at start).
func (v *Revocations) Load(ctx context.Context, store RecordStore) error {
	for _, kind := range []struct {
		name string
		add  func(key string, n int64)
	}{
		{kindRevoked, v.add},
		{kindRevokedFamily, v.addFamily},
		{kindRevokedSubject, func(id string, since int64) { v.addSubject(id, since, since+int64(maxTokenLifetime/time.Second)) }},
	} {
		// Each record holds one Unix time: an expiry, or since when.
		err := eachRecord(ctx, store, kind.name, func(r Record) {
			n, _ := strconv.ParseInt(string(r.Value), 10, 64)
			kind.add(r.Key, n)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// eachRecord calls fn for every live record of kind, a page at a time.
func eachRecord(ctx context.Context, store RecordStore, kind string, fn func(Record)) error {
	const page = 1000
	for after := ""; ; {
		recs, err := store.ListRecords(ctx, kind, after, page)
		if err != nil {
			return err
		}
		for _, r := range recs {
			fn(r)
		}
		if len(recs) < page {
			return nil
		}
		after = recs[len(recs)-1].Key
	}
}

// maxTokenLifetime bounds how long a subject revocation must be kept: no
// access token lives longer than a rotation period, and rotation is at
// most a year in any sane configuration; entries are tiny.
const maxTokenLifetime = 366 * 24 * time.Hour

func (v *Revocations) add(jti string, exp int64) {
	v.mu.Lock()
	v.jtis[jti] = exp
	v.sweepLocked()
	v.mu.Unlock()
}

func (v *Revocations) addFamily(id string, until int64) {
	v.mu.Lock()
	v.families[id] = until
	v.mu.Unlock()
}

func (v *Revocations) addSubject(id string, since, until int64) {
	v.mu.Lock()
	if cur, ok := v.subjects[id]; !ok || since > cur {
		v.subjects[id] = since
		v.until[id] = until
	}
	v.mu.Unlock()
}

// sweepLocked drops expired token ids once the map has grown, so the set
// holds only tokens that could still be presented.
func (v *Revocations) sweepLocked() {
	if len(v.jtis) < 1024 || len(v.jtis)%1024 != 0 {
		return
	}
	now := v.now().Unix()
	for k, exp := range v.jtis {
		if exp+int64(verifyLeeway/time.Second) < now {
			delete(v.jtis, k)
		}
	}
	for k, u := range v.until {
		if u < now {
			delete(v.until, k)
			delete(v.subjects, k)
		}
	}
	for k, u := range v.families {
		if u < now {
			delete(v.families, k)
		}
	}
}

// Revoked reports whether the token is void: its id was revoked, or its
// agent was disabled or deleted after it was issued.
func (v *Revocations) Revoked(c *AccessClaims) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	// A jti is "<family or parent jti>.<random>"[.<random>…]: the token is
	// void if it, or anything it descends from, was revoked.
	id := c.ID
	for {
		if _, ok := v.jtis[id]; ok {
			return true
		}
		i := strings.LastIndexByte(id, '.')
		if i < 0 {
			break
		}
		id = id[:i]
	}
	if _, revoked := v.families[id]; revoked {
		return true
	}
	if since, ok := v.subjects[c.Subject]; ok && c.IssuedAt != nil && c.IssuedAt.Unix() <= since {
		return true
	}
	return false
}

// FamilyRevoked reports whether the refresh-token family was revoked.
func (v *Revocations) FamilyRevoked(id string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	_, ok := v.families[id]
	return ok
}
