package storage

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

// memorySweepInterval is how often expired records are dropped. Reads
// already ignore them; the sweep only bounds memory held by records nobody
// asks for again (pending requests that were never completed, for example).
const memorySweepInterval = time.Minute

// Memory is a backend that keeps everything in process memory, for tests and
// for setups that accept losing all state on restart. It is safe for
// concurrent use. Values are copied on the way in and out, so callers can
// never change stored data through a pointer or slice they hold.
//
// One mutex guards everything, and the callbacks of UpdateAgent,
// UpdateClient and RedeemCode run under it: they must not call back into
// the store.
type Memory struct {
	now func() time.Time

	mu       sync.Mutex
	agents   map[string]*agents.Agent
	clients  map[string]*oauth.Client
	idps     map[string]*oauth.TrustedIdP
	keys     oauth.KeySet
	secrets  map[string][]byte
	requests map[string]*oauth.AuthRequest
	codes    map[string]*oauth.CodeGrant
	refresh  map[string]*oauth.RefreshGrant
	// families indexes refresh by family, so RevokeFamily need not scan.
	families map[string]map[string]struct{}
	// usedOnce holds UseOnce's keys with the time each is recorded until.
	usedOnce map[string]time.Time
	// changes is ordered by Seq; lastSeq is the number last handed out.
	changes []oauth.Change
	lastSeq uint64
	outbox  memoryOutbox

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewMemory returns an empty store and starts its once-a-minute sweep of
// expired records; stop it with Close. now is the clock expiry is decided
// by (nil means time.Now), so tests can move time by hand.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	m := &Memory{
		now:      now,
		agents:   make(map[string]*agents.Agent),
		clients:  make(map[string]*oauth.Client),
		idps:     make(map[string]*oauth.TrustedIdP),
		secrets:  make(map[string][]byte),
		requests: make(map[string]*oauth.AuthRequest),
		codes:    make(map[string]*oauth.CodeGrant),
		refresh:  make(map[string]*oauth.RefreshGrant),
		families: make(map[string]map[string]struct{}),
		usedOnce: make(map[string]time.Time),
		outbox:   newMemoryOutbox(),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go m.sweep()
	return m
}

// Shared reports false: the data lives in this process only.
func (m *Memory) Shared() bool { return false }

func (m *Memory) sweep() {
	defer close(m.done)
	ticker := time.NewTicker(memorySweepInterval)
	defer ticker.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-ticker.C:
			m.dropExpired()
		}
	}
}

// dropExpired forgets every record the clock says is gone.
func (m *Memory) dropExpired() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for id, r := range m.requests {
		if expired(r.ExpiresAt, now) {
			delete(m.requests, id)
		}
	}
	for h, g := range m.codes {
		if expired(g.ExpiresAt, now) {
			delete(m.codes, h)
		}
	}
	for h, g := range m.refresh {
		if expired(g.ExpiresAt, now) {
			m.deleteRefreshLocked(h, g)
		}
	}
	for k, until := range m.usedOnce {
		if expired(until, now) {
			delete(m.usedOnce, k)
		}
	}
	m.changes = slices.DeleteFunc(m.changes, func(c oauth.Change) bool { return expired(c.Expires, now) })
	m.dropExpiredDeliveriesLocked(now)
}

// Close stops the background sweep. The store stays usable; calling Close
// again does nothing. It always returns nil.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.done
	})
	return nil
}

// sortedPage returns up to limit keys of the map above after, in byte
// order. Sorting every call is fine at the sizes this backend is meant for.
func sortedPage[V any](items map[string]V, after string, limit int) []string {
	if limit <= 0 {
		limit = defaultListLimit
	}
	ids := make([]string, 0, len(items))
	for id := range items {
		if id > after {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) > limit {
		ids = ids[:limit]
	}
	return ids
}

// --- agents ---

// CreateAgent stores a copy of a, or returns agents.ErrExists.
func (m *Memory) CreateAgent(ctx context.Context, a *agents.Agent) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkAgent(a); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.agents[a.ID]; ok {
		return agents.ErrExists
	}
	m.agents[a.ID] = a.Clone()
	return nil
}

// GetAgent returns a copy of the agent, or agents.ErrNotFound.
func (m *Memory) GetAgent(ctx context.Context, id string) (*agents.Agent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.agents[id]
	if !ok {
		return nil, agents.ErrNotFound
	}
	return a.Clone(), nil
}

// UpdateAgent applies fn to a copy of the stored agent and stores the result
// unless fn fails; see agents.Repository. fn may not change the agent's ID.
func (m *Memory) UpdateAgent(ctx context.Context, id string, fn func(*agents.Agent) error) (*agents.Agent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	stored, ok := m.agents[id]
	if !ok {
		return nil, agents.ErrNotFound
	}
	a := stored.Clone()
	if err := fn(a); err != nil {
		return nil, err
	}
	if err := checkAgentRename(id, a); err != nil {
		return nil, err
	}
	m.agents[id] = a.Clone()
	return a.Clone(), nil
}

// DeleteAgent removes the agent, or returns agents.ErrNotFound.
func (m *Memory) DeleteAgent(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.agents[id]; !ok {
		return agents.ErrNotFound
	}
	delete(m.agents, id)
	return nil
}

// ListAgents returns copies of up to limit agents (100 when limit <= 0)
// ordered by id, starting strictly after the id after.
func (m *Memory) ListAgents(ctx context.Context, after string, limit int) ([]*agents.Agent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*agents.Agent
	for _, id := range sortedPage(m.agents, after, limit) {
		out = append(out, m.agents[id].Clone())
	}
	return out, nil
}

// --- clients ---

// CreateClient stores a copy of c, or returns oauth.ErrExists.
func (m *Memory) CreateClient(ctx context.Context, c *oauth.Client) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkClient(c); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.clients[c.ID]; ok {
		return oauth.ErrExists
	}
	m.clients[c.ID] = cloneClient(c)
	return nil
}

// GetClient returns a copy of the client, or oauth.ErrNotFound.
func (m *Memory) GetClient(ctx context.Context, id string) (*oauth.Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.clients[id]
	if !ok {
		return nil, oauth.ErrNotFound
	}
	return cloneClient(c), nil
}

// UpdateClient applies fn to a copy of the stored client and stores the
// result unless fn fails. fn may not change the client's ID.
func (m *Memory) UpdateClient(ctx context.Context, id string, fn func(*oauth.Client) error) (*oauth.Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	stored, ok := m.clients[id]
	if !ok {
		return nil, oauth.ErrNotFound
	}
	c := cloneClient(stored)
	if err := fn(c); err != nil {
		return nil, err
	}
	if err := checkClientRename(id, c); err != nil {
		return nil, err
	}
	m.clients[id] = cloneClient(c)
	return cloneClient(c), nil
}

// DeleteClient removes the client, or returns oauth.ErrNotFound.
func (m *Memory) DeleteClient(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.clients[id]; !ok {
		return oauth.ErrNotFound
	}
	delete(m.clients, id)
	return nil
}

// ListClients returns copies of up to limit clients (100 when limit <= 0)
// ordered by id, starting strictly after the id after.
func (m *Memory) ListClients(ctx context.Context, after string, limit int) ([]*oauth.Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*oauth.Client
	for _, id := range sortedPage(m.clients, after, limit) {
		out = append(out, cloneClient(m.clients[id]))
	}
	return out, nil
}

// --- signing keys ---

// SigningKeys returns a copy of the stored set, its keys ordered by id.
func (m *Memory) SigningKeys(ctx context.Context) (oauth.KeySet, error) {
	if err := ctx.Err(); err != nil {
		return oauth.KeySet{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return oauth.KeySet{Version: m.keys.Version, Keys: cloneKeys(m.keys.Keys)}, nil
}

// SwapSigningKeys replaces the set with a copy of keys if the stored version
// is still version, and returns the new version; oauth.ErrStale otherwise.
func (m *Memory) SwapSigningKeys(ctx context.Context, version uint64, keys []oauth.StoredKey) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkKeySet(keys); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys.Version != version {
		return 0, oauth.ErrStale
	}
	stored := cloneKeys(keys)
	// Same order as Badger, so nothing comes to depend on the caller's.
	slices.SortFunc(stored, compareKeyID)
	m.keys = oauth.KeySet{Version: version + 1, Keys: stored}
	return m.keys.Version, nil
}

// --- secrets ---

// EnsureSecret returns a copy of the secret stored under name, storing a
// copy of candidate first when there is none.
func (m *Memory) EnsureSecret(ctx context.Context, name string, candidate []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkSecret(name, candidate); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.secrets[name]
	if !ok {
		v = bytes.Clone(candidate)
		m.secrets[name] = v
	}
	return bytes.Clone(v), nil
}

// --- authorization requests ---

// CreateAuthRequest stores a copy of r until r.ExpiresAt, or returns
// oauth.ErrExists while a live request has the id.
func (m *Memory) CreateAuthRequest(ctx context.Context, r *oauth.AuthRequest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkAuthRequest(r); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.requests[r.ID]; ok && !expired(old.ExpiresAt, m.now()) {
		return oauth.ErrExists
	}
	m.requests[r.ID] = cloneAuthRequest(r)
	return nil
}

// liveRequest returns the unexpired request. The caller holds m.mu.
func (m *Memory) liveRequest(id string) (*oauth.AuthRequest, bool) {
	r, ok := m.requests[id]
	if !ok {
		return nil, false
	}
	if expired(r.ExpiresAt, m.now()) {
		delete(m.requests, id)
		return nil, false
	}
	return r, true
}

// GetAuthRequest returns a copy of the request, or oauth.ErrNotFound when it
// is missing or expired.
func (m *Memory) GetAuthRequest(ctx context.Context, id string) (*oauth.AuthRequest, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.liveRequest(id)
	if !ok {
		return nil, oauth.ErrNotFound
	}
	return cloneAuthRequest(r), nil
}

// ApproveAuthRequest records a on the pending request under the store's
// lock, so exactly one of concurrent approvals succeeds.
func (m *Memory) ApproveAuthRequest(ctx context.Context, id string, a oauth.Approval) (*oauth.AuthRequest, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkApproval(id, a); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.liveRequest(id)
	if !ok {
		return nil, oauth.ErrNotFound
	}
	if r.Approval != nil {
		return nil, oauth.ErrNotPending
	}
	r.Approval = &a
	return cloneAuthRequest(r), nil
}

// --- authorization codes ---

// CreateCode stores a copy of g under hash until g.ExpiresAt, or returns
// oauth.ErrExists while a live code has the hash.
func (m *Memory) CreateCode(ctx context.Context, hash string, g *oauth.CodeGrant) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkCode(hash, g); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.codes[hash]; ok && !expired(old.ExpiresAt, m.now()) {
		return oauth.ErrExists
	}
	m.codes[hash] = cloneCodeGrant(g)
	return nil
}

// RedeemCode redeems the code once, under the store's lock; see
// oauth.CodeStore. redeem gets a copy of the grant: only the Redemption it
// returns is recorded, not changes it makes to its argument.
func (m *Memory) RedeemCode(ctx context.Context, hash string, redeem func(*oauth.CodeGrant) (oauth.Redemption, error)) (*oauth.CodeGrant, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkRedeem(redeem); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.codes[hash]
	if ok && expired(g.ExpiresAt, m.now()) {
		delete(m.codes, hash)
		ok = false
	}
	if !ok {
		return nil, oauth.ErrNotFound
	}
	if g.Redemption != nil {
		return cloneCodeGrant(g), oauth.ErrCodeUsed
	}
	red, err := redeem(cloneCodeGrant(g))
	if err != nil {
		return nil, err
	}
	g.Redemption = &red
	return cloneCodeGrant(g), nil
}

// --- refresh tokens ---

// liveRefresh returns the unexpired grant. The caller holds m.mu.
func (m *Memory) liveRefresh(hash string) (*oauth.RefreshGrant, bool) {
	g, ok := m.refresh[hash]
	if !ok {
		return nil, false
	}
	if expired(g.ExpiresAt, m.now()) {
		m.deleteRefreshLocked(hash, g)
		return nil, false
	}
	return g, true
}

// putRefreshLocked stores a copy of g under hash and indexes it by family,
// first unindexing an expired token it replaces. The caller holds m.mu.
func (m *Memory) putRefreshLocked(hash string, g *oauth.RefreshGrant) {
	if old, ok := m.refresh[hash]; ok {
		m.deleteRefreshLocked(hash, old)
	}
	m.refresh[hash] = cloneRefreshGrant(g)
	fam := m.families[g.Family]
	if fam == nil {
		fam = make(map[string]struct{})
		m.families[g.Family] = fam
	}
	fam[hash] = struct{}{}
}

// deleteRefreshLocked removes the token g stored under hash and its index
// entry. The caller holds m.mu.
func (m *Memory) deleteRefreshLocked(hash string, g *oauth.RefreshGrant) {
	delete(m.refresh, hash)
	if fam := m.families[g.Family]; fam != nil {
		delete(fam, hash)
		if len(fam) == 0 {
			delete(m.families, g.Family)
		}
	}
}

// CreateRefresh stores a copy of g under hash until g.ExpiresAt, or returns
// oauth.ErrExists while a live token has the hash.
func (m *Memory) CreateRefresh(ctx context.Context, hash string, g *oauth.RefreshGrant) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkRefresh(hash, g); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.liveRefresh(hash); ok {
		return oauth.ErrExists
	}
	m.putRefreshLocked(hash, g)
	return nil
}

// GetRefresh returns a copy of the grant, or oauth.ErrNotFound when it is
// missing, expired or its family was revoked.
func (m *Memory) GetRefresh(ctx context.Context, hash string) (*oauth.RefreshGrant, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.liveRefresh(hash)
	if !ok {
		return nil, oauth.ErrNotFound
	}
	return cloneRefreshGrant(g), nil
}

// RotateRefresh marks the token under oldHash rotated and stores a copy of
// next under newHash, under the store's lock; see oauth.RefreshStore. next
// must be of the old token's family, and newHash must be free
// (oauth.ErrExists otherwise).
func (m *Memory) RotateRefresh(ctx context.Context, oldHash, newHash string, next *oauth.RefreshGrant) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkRotate(oldHash, newHash, next); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.liveRefresh(oldHash)
	if !ok {
		return oauth.ErrNotFound
	}
	if old.Rotated {
		return oauth.ErrRefreshRotated
	}
	if err := checkSameFamily(old, next); err != nil {
		return err
	}
	if _, ok := m.liveRefresh(newHash); ok {
		return oauth.ErrExists
	}
	old.Rotated, old.RotatedAt, old.Successor = true, m.now(), newHash
	m.putRefreshLocked(newHash, next)
	return nil
}

// RetryRefresh replaces the successor of the rotated token under oldHash
// with a copy of next under newHash, under the store's lock; see
// oauth.RefreshStore.
func (m *Memory) RetryRefresh(ctx context.Context, oldHash, successor, newHash string, next *oauth.RefreshGrant, grace time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkRetry(oldHash, successor, newHash, next, grace); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	old, ok := m.liveRefresh(oldHash)
	if !ok {
		return oauth.ErrNotFound
	}
	if err := decideRetry(old, successor, grace, now); err != nil {
		return err
	}
	if err := checkSameFamily(old, next); err != nil {
		return err
	}
	succ, _ := m.liveRefresh(successor)
	if err := decideSuperseded(old, succ); err != nil {
		return err
	}
	if _, ok := m.liveRefresh(newHash); ok {
		return oauth.ErrExists
	}
	succ.Rotated, succ.RotatedAt, succ.Successor = true, now, ""
	old.Successor = newHash
	m.putRefreshLocked(newHash, next)
	return nil
}

// RevokeFamily deletes every refresh token of the family; a family with no
// tokens is not an error.
func (m *Memory) RevokeFamily(ctx context.Context, family string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for hash := range m.families[family] {
		delete(m.refresh, hash)
	}
	delete(m.families, family)
	return nil
}

// --- single-use keys ---

// UseOnce records key until until under the store's lock, or returns
// oauth.ErrExists while key is recorded and not expired; see
// oauth.ReplayStore.
func (m *Memory) UseOnce(ctx context.Context, key string, until time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkUseOnce(key, until); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.usedOnce[key]; ok && !expired(old, m.now()) {
		return oauth.ErrExists
	}
	m.usedOnce[key] = until
	return nil
}

// --- change log ---

// AppendChange stores c with the next sequence number and returns it.
func (m *Memory) AppendChange(ctx context.Context, c oauth.Change) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkChange(c); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastSeq++
	c.Seq = m.lastSeq
	m.changes = append(m.changes, c)
	return c.Seq, nil
}

// ChangesSince returns up to limit unexpired changes (100 when limit <= 0)
// with a sequence number above after, in order.
func (m *Memory) ChangesSince(ctx context.Context, after uint64, limit int) ([]oauth.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultListLimit
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	i := sort.Search(len(m.changes), func(i int) bool { return m.changes[i].Seq > after })
	var out []oauth.Change
	for ; i < len(m.changes) && len(out) < limit; i++ {
		if c := m.changes[i]; !expired(c.Expires, now) {
			out = append(out, c)
		}
	}
	return out, nil
}

// --- copies ---

func cloneClient(c *oauth.Client) *oauth.Client {
	out := *c
	out.RedirectURIs = slices.Clone(c.RedirectURIs)
	out.Scopes = slices.Clone(c.Scopes)
	out.GrantTypes = slices.Clone(c.GrantTypes)
	return &out
}

func cloneKeys(keys []oauth.StoredKey) []oauth.StoredKey {
	if keys == nil {
		return nil
	}
	out := make([]oauth.StoredKey, len(keys))
	for i, k := range keys {
		k.Private = bytes.Clone(k.Private)
		out[i] = k
	}
	return out
}

func cloneAuthRequest(r *oauth.AuthRequest) *oauth.AuthRequest {
	out := *r
	out.Scopes = slices.Clone(r.Scopes)
	out.Resources = slices.Clone(r.Resources)
	if r.Approval != nil {
		a := *r.Approval
		out.Approval = &a
	}
	return &out
}

func cloneCodeGrant(g *oauth.CodeGrant) *oauth.CodeGrant {
	out := *g
	out.Scopes = slices.Clone(g.Scopes)
	out.Resources = slices.Clone(g.Resources)
	if g.Redemption != nil {
		r := *g.Redemption
		out.Redemption = &r
	}
	return &out
}

func cloneRefreshGrant(g *oauth.RefreshGrant) *oauth.RefreshGrant {
	out := *g
	out.Scopes = slices.Clone(g.Scopes)
	out.Resources = slices.Clone(g.Resources)
	return &out
}

// compareKeyID orders keys as both backends return them: by id.
func compareKeyID(a, b oauth.StoredKey) int { return strings.Compare(a.ID, b.ID) }
