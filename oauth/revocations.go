package oauth

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/internal/metrics"
)

// ChangePollInterval is how often a process reads the change log: a
// revocation made by another process sharing the store is honoured here
// within it. Revocations made by this process apply at once.
const ChangePollInterval = time.Second

// Revocations is the in-process view of the change log: the revoked token
// ids, refresh-token families and agents, so that the guard and the token
// endpoint check revocation on every request without touching the store.
// It is a cache of the log, never the truth: it is filled from the log at
// start, follows it every ChangePollInterval, and is shared by every
// config of one process that uses the same store.
type Revocations struct {
	log ChangeLog
	now func() time.Time
	zap *zap.Logger

	syncMu sync.Mutex // one reader of the log at a time
	mu     sync.RWMutex
	seq    uint64               // the last change read from the log
	jtis   map[string]time.Time // jti → when its entry can be dropped
	agents map[string]agentRevocation
	perms  map[string][]agentPermissions // each change, until its tokens expired
	fams   map[string]time.Time          // family → when its entry can be dropped
	subs   map[int]func(Change)
	nextID int
	// own are the changes this process recorded and has applied already,
	// until Sync reads them back; synced is set after the first Sync (the
	// history it reads is not propagating, so it is not timed).
	own    map[uint64]struct{}
	synced bool
}

type agentRevocation struct {
	before, until time.Time
}

// agentPermissions are an agent's permissions as an operator set them at
// before: its older tokens may carry no other API scope.
type agentPermissions struct {
	seq           uint64 // the change's: applying it again changes nothing
	before, until time.Time
	allowed       []string
}

// NewRevocations returns an empty view of log; call Sync to fill it.
func NewRevocations(log ChangeLog, now func() time.Time, zlog *zap.Logger) *Revocations {
	if now == nil {
		now = time.Now
	}
	if zlog == nil {
		zlog = zap.NewNop()
	}
	return &Revocations{log: log, now: now, zap: zlog, jtis: map[string]time.Time{}, agents: map[string]agentRevocation{}, perms: map[string][]agentPermissions{},
		fams: map[string]time.Time{}, subs: map[int]func(Change){}, own: map[uint64]struct{}{}}
}

// Sync reads every change since the last one seen and applies it.
func (v *Revocations) Sync(ctx context.Context) error {
	v.syncMu.Lock()
	defer v.syncMu.Unlock()
	const page = 1000
	for {
		v.mu.RLock()
		after := v.seq
		v.mu.RUnlock()
		changes, err := v.log.ChangesSince(ctx, after, page)
		if err != nil {
			return err
		}
		now := v.now()
		for _, c := range changes {
			v.mu.Lock()
			_, mine := v.own[c.Seq]
			delete(v.own, c.Seq)
			timed := v.synced && !mine && !c.At.IsZero()
			v.mu.Unlock()
			v.apply(c)
			if timed {
				metrics.ChangeApplied(now.Sub(c.At))
			}
		}
		if len(changes) > 0 {
			v.mu.Lock()
			v.seq = max(v.seq, changes[len(changes)-1].Seq)
			v.mu.Unlock()
		}
		if len(changes) < page {
			v.mu.Lock()
			v.synced = true
			// A change of ours that expired before Sync read it back is
			// never read: forget those older than what was read.
			for seq := range v.own {
				if seq <= v.seq {
					delete(v.own, seq)
				}
			}
			v.mu.Unlock()
			v.sweep()
			return nil
		}
	}
}

// Run follows the log until ctx ends: every ChangePollInterval, and at
// once whenever a ChangeWatcher log says a change was appended.
func (v *Revocations) Run(ctx context.Context) {
	var news chan struct{}
	if w, ok := v.log.(ChangeWatcher); ok {
		news = make(chan struct{}, 1)
		go w.WatchChanges(ctx, func() {
			select {
			case news <- struct{}{}:
			default: // a read is due already; it will see this change too
			}
		})
	}
	every(ctx, ChangePollInterval, news, v.Sync, v.zap, "reading the change log")
}

// every calls fn every interval, and whenever wake (which may be nil)
// receives, until ctx ends. A failure is logged when it starts and again
// when fn works again, not on every retry: a database that is down for a
// minute is two log lines, not sixty.
func every(ctx context.Context, interval time.Duration, wake <-chan struct{}, fn func(context.Context) error, log *zap.Logger, what string) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		err := fn(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			failing = true
			log.Warn(what+" failed; retrying every "+interval.String()+" until it works again", zap.Error(err))
		case err == nil && failing:
			failing = false
			log.Info(what + " works again")
		}
	}
}

// Subscribe calls fn for every change applied from now on (agent updates
// drop cached verifications, for instance); the returned func stops it.
func (v *Revocations) Subscribe(fn func(Change)) (cancel func()) {
	v.mu.Lock()
	id := v.nextID
	v.nextID++
	v.subs[id] = fn
	v.mu.Unlock()
	return func() {
		v.mu.Lock()
		delete(v.subs, id)
		v.mu.Unlock()
	}
}

// apply adds one change to the view; applying a change twice is harmless.
func (v *Revocations) apply(c Change) {
	v.mu.Lock()
	switch c.Kind {
	case ChangeTokenRevoked:
		v.jtis[c.Key] = c.Expires
	case ChangeFamilyRevoked:
		v.fams[c.Key] = c.Expires
	case ChangeAgentRevoked:
		if cur, ok := v.agents[c.Key]; !ok || c.Before.After(cur.before) {
			v.agents[c.Key] = agentRevocation{before: c.Before, until: c.Expires}
		}
	case ChangeAgentPermissions:
		// Every change is kept (until its tokens expired): a permission
		// given back later does not bring an earlier token back. A later
		// change ends what an earlier one covers (Before includes a slack
		// past the change), so tokens issued after it answer to it alone.
		id, allowed, _ := strings.Cut(c.Key, " ")
		p := agentPermissions{seq: c.Seq, before: c.Before, until: c.Expires, allowed: strings.Fields(allowed)}
		if !slices.ContainsFunc(v.perms[id], func(q agentPermissions) bool { return q.seq == p.seq }) {
			at := c.At
			if at.IsZero() || at.After(c.Before) {
				at = c.Before
			}
			for i := range v.perms[id] {
				if q := &v.perms[id][i]; q.before.After(at) && q.before.Before(p.before) {
					q.before = at
				}
			}
			v.perms[id] = append(v.perms[id], p)
		}
	}
	subs := make([]func(Change), 0, len(v.subs))
	for _, fn := range v.subs {
		subs = append(subs, fn)
	}
	v.mu.Unlock()
	for _, fn := range subs {
		fn(c)
	}
}

// sweep drops entries whose tokens have all expired.
func (v *Revocations) sweep() {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, until := range v.jtis {
		if now.After(until) {
			delete(v.jtis, k)
		}
	}
	for k, until := range v.fams {
		if now.After(until) {
			delete(v.fams, k)
		}
	}
	for k, r := range v.agents {
		if now.After(r.until) {
			delete(v.agents, k)
		}
	}
	for k, ps := range v.perms {
		ps = slices.DeleteFunc(ps, func(p agentPermissions) bool { return now.After(p.until) })
		if len(ps) == 0 {
			delete(v.perms, k)
		} else {
			v.perms[k] = ps
		}
	}
}

// Revoked reports whether the token is void: its id, or anything it
// descends from, was revoked, or its agent was disabled or deleted after it
// was issued.
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
	if _, revoked := v.fams[id]; revoked {
		return true
	}
	if c.IDP != "" {
		// The subject is another IdP's: no agent here speaks for it.
		return false
	}
	if r, ok := v.agents[c.Subject]; ok && c.IssuedAt != nil && !c.IssuedAt.After(r.before) {
		return true
	}
	if ps := v.perms[c.Subject]; len(ps) > 0 && c.IssuedAt != nil {
		scopes := c.Scopes()
		for _, p := range ps {
			if c.IssuedAt.After(p.before) {
				continue
			}
			for _, sc := range scopes {
				if !permits(p.allowed, sc) {
					return true // a permission the operator has taken away since
				}
			}
		}
	}
	return false
}

// AgentRevoked reports whether the agent was disabled or deleted at or
// after t: what it was granted at t is void.
func (v *Revocations) AgentRevoked(id string, t time.Time) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	r, ok := v.agents[id]
	return ok && !t.After(r.before)
}

// FamilyRevoked reports whether the refresh-token family was revoked.
func (v *Revocations) FamilyRevoked(id string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	_, ok := v.fams[id]
	return ok
}

// Record appends c to the log and applies it here at once; other
// processes apply it when they next read the log. It finishes even if the
// caller's request goes away meanwhile.
func (v *Revocations) Record(ctx context.Context, c Change) error {
	if c.At.IsZero() {
		c.At = v.now().UTC()
	}
	seq, err := v.log.AppendChange(context.WithoutCancel(ctx), c)
	if err != nil {
		return err
	}
	c.Seq = seq
	v.mu.Lock()
	if seq > v.seq {
		v.own[seq] = struct{}{}
	}
	v.mu.Unlock()
	v.apply(c)
	return nil
}
