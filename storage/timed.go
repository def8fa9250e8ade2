package storage

import (
	"context"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/oauth"
)

// Observer is told how long each storage operation took: op is the
// method's name (CreateAgent, RedeemCode, …).
type Observer func(op string, d time.Duration)

// Timed is a Backend whose every operation is timed and reported to
// observe (the storage latency metrics), the backend's own behaviour
// unchanged. A backend that is an oauth.ChangeWatcher stays one; its
// WatchChanges, which runs until its context ends, is not timed.
func Timed(b Backend, observe Observer) Backend {
	t := &timed{b: b, observe: observe}
	if w, ok := b.(oauth.ChangeWatcher); ok {
		return &timedWatcher{timed: t, w: w}
	}
	return t
}

type timedWatcher struct {
	*timed
	w oauth.ChangeWatcher
}

func (t *timedWatcher) WatchChanges(ctx context.Context, notify func()) {
	t.w.WatchChanges(ctx, notify)
}

type timed struct {
	b       Backend
	observe Observer
}

// since reports the time since start under op; used as
// defer t.since("Op", time.Now()).
func (t *timed) since(op string, start time.Time) { t.observe(op, time.Since(start)) }

func (t *timed) Shared() bool { return t.b.Shared() }
func (t *timed) Close() error { return t.b.Close() }

func (t *timed) CreateAgent(ctx context.Context, a *agents.Agent) error {
	defer t.since("CreateAgent", time.Now())
	return t.b.CreateAgent(ctx, a)
}

func (t *timed) GetAgent(ctx context.Context, id string) (*agents.Agent, error) {
	defer t.since("GetAgent", time.Now())
	return t.b.GetAgent(ctx, id)
}

func (t *timed) UpdateAgent(ctx context.Context, id string, fn func(*agents.Agent) error) (*agents.Agent, error) {
	defer t.since("UpdateAgent", time.Now())
	return t.b.UpdateAgent(ctx, id, fn)
}

func (t *timed) DeleteAgent(ctx context.Context, id string) error {
	defer t.since("DeleteAgent", time.Now())
	return t.b.DeleteAgent(ctx, id)
}

func (t *timed) ListAgents(ctx context.Context, after string, limit int) ([]*agents.Agent, error) {
	defer t.since("ListAgents", time.Now())
	return t.b.ListAgents(ctx, after, limit)
}

func (t *timed) CreateClient(ctx context.Context, c *oauth.Client) error {
	defer t.since("CreateClient", time.Now())
	return t.b.CreateClient(ctx, c)
}

func (t *timed) GetClient(ctx context.Context, id string) (*oauth.Client, error) {
	defer t.since("GetClient", time.Now())
	return t.b.GetClient(ctx, id)
}

func (t *timed) UpdateClient(ctx context.Context, id string, fn func(*oauth.Client) error) (*oauth.Client, error) {
	defer t.since("UpdateClient", time.Now())
	return t.b.UpdateClient(ctx, id, fn)
}

func (t *timed) DeleteClient(ctx context.Context, id string) error {
	defer t.since("DeleteClient", time.Now())
	return t.b.DeleteClient(ctx, id)
}

func (t *timed) ListClients(ctx context.Context, after string, limit int) ([]*oauth.Client, error) {
	defer t.since("ListClients", time.Now())
	return t.b.ListClients(ctx, after, limit)
}

func (t *timed) SigningKeys(ctx context.Context) (oauth.KeySet, error) {
	defer t.since("SigningKeys", time.Now())
	return t.b.SigningKeys(ctx)
}

func (t *timed) SwapSigningKeys(ctx context.Context, version uint64, keys []oauth.StoredKey) (uint64, error) {
	defer t.since("SwapSigningKeys", time.Now())
	return t.b.SwapSigningKeys(ctx, version, keys)
}

func (t *timed) EnsureSecret(ctx context.Context, name string, candidate []byte) ([]byte, error) {
	defer t.since("EnsureSecret", time.Now())
	return t.b.EnsureSecret(ctx, name, candidate)
}

func (t *timed) CreateAuthRequest(ctx context.Context, r *oauth.AuthRequest) error {
	defer t.since("CreateAuthRequest", time.Now())
	return t.b.CreateAuthRequest(ctx, r)
}

func (t *timed) GetAuthRequest(ctx context.Context, id string) (*oauth.AuthRequest, error) {
	defer t.since("GetAuthRequest", time.Now())
	return t.b.GetAuthRequest(ctx, id)
}

func (t *timed) ApproveAuthRequest(ctx context.Context, id string, a oauth.Approval) (*oauth.AuthRequest, error) {
	defer t.since("ApproveAuthRequest", time.Now())
	return t.b.ApproveAuthRequest(ctx, id, a)
}

func (t *timed) CreateCode(ctx context.Context, hash string, g *oauth.CodeGrant) error {
	defer t.since("CreateCode", time.Now())
	return t.b.CreateCode(ctx, hash, g)
}

func (t *timed) RedeemCode(ctx context.Context, hash string, redeem func(*oauth.CodeGrant) (oauth.Redemption, error)) (*oauth.CodeGrant, error) {
	defer t.since("RedeemCode", time.Now())
	return t.b.RedeemCode(ctx, hash, redeem)
}

func (t *timed) CreateRefresh(ctx context.Context, hash string, g *oauth.RefreshGrant) error {
	defer t.since("CreateRefresh", time.Now())
	return t.b.CreateRefresh(ctx, hash, g)
}

func (t *timed) GetRefresh(ctx context.Context, hash string) (*oauth.RefreshGrant, error) {
	defer t.since("GetRefresh", time.Now())
	return t.b.GetRefresh(ctx, hash)
}

func (t *timed) RotateRefresh(ctx context.Context, oldHash, newHash string, next *oauth.RefreshGrant) error {
	defer t.since("RotateRefresh", time.Now())
	return t.b.RotateRefresh(ctx, oldHash, newHash, next)
}

func (t *timed) RetryRefresh(ctx context.Context, oldHash, successor, newHash string, next *oauth.RefreshGrant, grace time.Duration) error {
	defer t.since("RetryRefresh", time.Now())
	return t.b.RetryRefresh(ctx, oldHash, successor, newHash, next, grace)
}

func (t *timed) RevokeFamily(ctx context.Context, family string) error {
	defer t.since("RevokeFamily", time.Now())
	return t.b.RevokeFamily(ctx, family)
}

func (t *timed) UseOnce(ctx context.Context, key string, until time.Time) error {
	defer t.since("UseOnce", time.Now())
	return t.b.UseOnce(ctx, key, until)
}

func (t *timed) AppendChange(ctx context.Context, c oauth.Change) (uint64, error) {
	defer t.since("AppendChange", time.Now())
	return t.b.AppendChange(ctx, c)
}

func (t *timed) ChangesSince(ctx context.Context, after uint64, limit int) ([]oauth.Change, error) {
	defer t.since("ChangesSince", time.Now())
	return t.b.ChangesSince(ctx, after, limit)
}

func (t *timed) EnqueueDeliveries(ctx context.Context, ds []events.Delivery) error {
	defer t.since("EnqueueDeliveries", time.Now())
	return t.b.EnqueueDeliveries(ctx, ds)
}

func (t *timed) ClaimDeliveries(ctx context.Context, now, leaseUntil time.Time, limit int) ([]events.Delivery, error) {
	defer t.since("ClaimDeliveries", time.Now())
	return t.b.ClaimDeliveries(ctx, now, leaseUntil, limit)
}

func (t *timed) UpdateDelivery(ctx context.Context, d events.Delivery) error {
	defer t.since("UpdateDelivery", time.Now())
	return t.b.UpdateDelivery(ctx, d)
}

func (t *timed) GetDelivery(ctx context.Context, id string) (events.Delivery, error) {
	defer t.since("GetDelivery", time.Now())
	return t.b.GetDelivery(ctx, id)
}

func (t *timed) ListDeliveries(ctx context.Context, limit int) ([]events.Delivery, error) {
	defer t.since("ListDeliveries", time.Now())
	return t.b.ListDeliveries(ctx, limit)
}

func (t *timed) CreateWebhook(ctx context.Context, w events.Webhook) error {
	defer t.since("CreateWebhook", time.Now())
	return t.b.CreateWebhook(ctx, w)
}

func (t *timed) ListWebhooks(ctx context.Context) ([]events.Webhook, error) {
	defer t.since("ListWebhooks", time.Now())
	return t.b.ListWebhooks(ctx)
}

func (t *timed) DeleteWebhook(ctx context.Context, id string) error {
	defer t.since("DeleteWebhook", time.Now())
	return t.b.DeleteWebhook(ctx, id)
}
