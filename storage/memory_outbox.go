package storage

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/authagent/caddy-authagent/events"
)

// The webhook outbox of Memory, and the checks and rules every backend's
// outbox shares.

var _ events.Outbox = (*Memory)(nil)

// memoryOutbox is Memory's part of events.Outbox, guarded by Memory.mu.
type memoryOutbox struct {
	deliveries map[string]*memoryDelivery
	webhooks   map[string]events.Webhook
}

// memoryDelivery is a stored delivery and, once it is finished, when it is
// forgotten (zero while pending).
type memoryDelivery struct {
	d       events.Delivery
	expires time.Time
}

func newMemoryOutbox() memoryOutbox {
	return memoryOutbox{
		deliveries: make(map[string]*memoryDelivery),
		webhooks:   make(map[string]events.Webhook),
	}
}

// liveDelivery returns the stored delivery unless its retention has ended. The
// caller holds m.mu.
func (m *Memory) liveDelivery(id string, now time.Time) (*memoryDelivery, bool) {
	r, ok := m.outbox.deliveries[id]
	if !ok {
		return nil, false
	}
	if !r.expires.IsZero() && expired(r.expires, now) {
		delete(m.outbox.deliveries, id)
		return nil, false
	}
	return r, true
}

// dropExpiredDeliveriesLocked forgets finished deliveries past their
// retention. The caller holds m.mu.
func (m *Memory) dropExpiredDeliveriesLocked(now time.Time) {
	for id, r := range m.outbox.deliveries {
		if !r.expires.IsZero() && expired(r.expires, now) {
			delete(m.outbox.deliveries, id)
		}
	}
}

// EnqueueDeliveries stores copies of ds as pending deliveries, all or none;
// see checkNewDelivery for what each must hold. An id already stored (or
// twice in ds) is invalid input.
func (m *Memory) EnqueueDeliveries(ctx context.Context, ds []events.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	batch, err := newDeliveries(ds)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, d := range batch {
		if _, ok := m.liveDelivery(d.ID, now); ok {
			return deliveryExists(d.ID)
		}
	}
	for _, d := range batch {
		m.outbox.deliveries[d.ID] = &memoryDelivery{d: cloneDelivery(d)}
	}
	return nil
}

// ClaimDeliveries leases due pending deliveries to the caller under the
// store's lock; see events.Outbox.
func (m *Memory) ClaimDeliveries(ctx context.Context, now, leaseUntil time.Time, limit int) ([]events.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit, err := checkClaim(now, leaseUntil, limit)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var due []*memoryDelivery
	for _, r := range m.outbox.deliveries {
		if claimable(r.d, now) {
			due = append(due, r)
		}
	}
	slices.SortFunc(due, func(a, b *memoryDelivery) int { return compareDue(a.d, b.d) })
	if len(due) > limit {
		due = due[:limit]
	}
	out := make([]events.Delivery, 0, len(due))
	for _, r := range due {
		r.d.LeaseUntil = leaseUntil
		out = append(out, cloneDelivery(r.d))
	}
	return out, nil
}

// UpdateDelivery stores d's mutable fields over the stored delivery d.ID.
func (m *Memory) UpdateDelivery(ctx context.Context, d events.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkDeliveryUpdate(d); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	r, ok := m.liveDelivery(d.ID, now)
	if !ok {
		return events.ErrDeliveryNotFound
	}
	r.d = applyDeliveryUpdate(r.d, d)
	r.expires = deliveryExpiry(r.d, now)
	return nil
}

// GetDelivery returns a copy of the delivery, or events.ErrDeliveryNotFound.
func (m *Memory) GetDelivery(ctx context.Context, id string) (events.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return events.Delivery{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.liveDelivery(id, m.now())
	if !ok {
		return events.Delivery{}, events.ErrDeliveryNotFound
	}
	return cloneDelivery(r.d), nil
}

// ListDeliveries returns copies of up to limit deliveries (100 when limit
// <= 0), newest first.
func (m *Memory) ListDeliveries(ctx context.Context, limit int) ([]events.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultListLimit
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropExpiredDeliveriesLocked(m.now())
	all := make([]events.Delivery, 0, len(m.outbox.deliveries))
	for _, r := range m.outbox.deliveries {
		all = append(all, r.d)
	}
	slices.SortFunc(all, compareNewest)
	if len(all) > limit {
		all = all[:limit]
	}
	out := make([]events.Delivery, len(all))
	for i, d := range all {
		out[i] = cloneDelivery(d)
	}
	return out, nil
}

// CreateWebhook stores a copy of w; an id already stored is invalid input.
func (m *Memory) CreateWebhook(ctx context.Context, w events.Webhook) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkWebhook(w); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.outbox.webhooks[w.ID]; ok {
		return webhookExists(w.ID)
	}
	m.outbox.webhooks[w.ID] = cloneWebhook(w)
	return nil
}

// ListWebhooks returns copies of every stored webhook, oldest first.
func (m *Memory) ListWebhooks(ctx context.Context) ([]events.Webhook, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]events.Webhook, 0, len(m.outbox.webhooks))
	for _, w := range m.outbox.webhooks {
		out = append(out, cloneWebhook(w))
	}
	slices.SortFunc(out, compareWebhooks)
	return out, nil
}

// DeleteWebhook removes the webhook and fails its pending deliveries, under
// the store's lock.
func (m *Memory) DeleteWebhook(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.outbox.webhooks[id]; !ok {
		return events.ErrDeliveryNotFound
	}
	delete(m.outbox.webhooks, id)
	now := m.now()
	for _, r := range m.outbox.deliveries {
		if r.d.WebhookID == id && r.d.State == events.DeliveryPending {
			r.d = failForDeletedWebhook(r.d)
			r.expires = deliveryExpiry(r.d, now)
		}
	}
	return nil
}

// --- rules shared by every backend's outbox ---

// webhookDeleted is the LastError of the deliveries DeleteWebhook fails.
const webhookDeleted = "webhook deleted"

// newDeliveries checks a batch for EnqueueDeliveries and returns it with
// every empty State made DeliveryPending.
func newDeliveries(ds []events.Delivery) ([]events.Delivery, error) {
	out := make([]events.Delivery, len(ds))
	seen := make(map[string]bool, len(ds))
	for i, d := range ds {
		if err := checkNewDelivery(d); err != nil {
			return nil, err
		}
		if seen[d.ID] {
			return nil, invalid("delivery id %q appears twice in the batch", d.ID)
		}
		seen[d.ID] = true
		d.State = events.DeliveryPending
		out[i] = d
	}
	return out, nil
}

// checkNewDelivery rejects a delivery EnqueueDeliveries cannot store: one
// without an id, webhook, URL, event id or type, payload, creation time or
// next attempt, or in a state other than pending (empty means pending).
func checkNewDelivery(d events.Delivery) error {
	for _, f := range []struct{ what, v string }{
		{"delivery id", d.ID},
		{"delivery webhook id", d.WebhookID},
		{"delivery URL", d.URL},
		{"delivery event id", d.EventID},
		{"delivery event type", d.EventType},
	} {
		if err := checkID(f.what, f.v); err != nil {
			return err
		}
	}
	if len(d.Payload) == 0 {
		return invalid("delivery %q has no payload", d.ID)
	}
	if d.State != "" && d.State != events.DeliveryPending {
		return invalid("delivery %q is enqueued in state %q, not pending", d.ID, d.State)
	}
	if d.Attempts < 0 {
		return invalid("delivery %q has %d attempts", d.ID, d.Attempts)
	}
	if d.CreatedAt.IsZero() {
		return invalid("delivery %q has no creation time", d.ID)
	}
	if d.NextAttempt.IsZero() {
		return invalid("pending delivery %q has no next attempt", d.ID)
	}
	return nil
}

// checkDeliveryUpdate rejects an update no backend can store: an unknown
// state, negative attempts, or a pending delivery without a next attempt.
// An empty id is not checked: nothing is stored there, so it is not found.
func checkDeliveryUpdate(d events.Delivery) error {
	switch d.State {
	case events.DeliveryPending:
		if d.NextAttempt.IsZero() {
			return invalid("pending delivery %q has no next attempt", d.ID)
		}
	case events.DeliveryDelivered, events.DeliveryFailed:
	default:
		return invalid("delivery %q in unknown state %q", d.ID, d.State)
	}
	if d.Attempts < 0 {
		return invalid("delivery %q has %d attempts", d.ID, d.Attempts)
	}
	return nil
}

// applyDeliveryUpdate returns stored with the fields UpdateDelivery may
// change taken from d.
func applyDeliveryUpdate(stored, d events.Delivery) events.Delivery {
	stored.State = d.State
	stored.Attempts = d.Attempts
	stored.NextAttempt = d.NextAttempt
	stored.LastAttempt = d.LastAttempt
	stored.LastStatus = d.LastStatus
	stored.LastError = d.LastError
	stored.LeaseUntil = d.LeaseUntil
	return stored
}

// failForDeletedWebhook is what DeleteWebhook makes of a pending delivery:
// failed, nothing due, nobody holding it.
func failForDeletedWebhook(d events.Delivery) events.Delivery {
	d.State = events.DeliveryFailed
	d.LastError = webhookDeleted
	d.NextAttempt = time.Time{}
	d.LeaseUntil = time.Time{}
	return d
}

// deliveryExpiry is when a delivery is forgotten: never while pending;
// DeliveryRetention after its last attempt once finished, or after now,
// when it finished, if it was never attempted (failed by DeleteWebhook).
func deliveryExpiry(d events.Delivery, now time.Time) time.Time {
	if d.State == events.DeliveryPending {
		return time.Time{}
	}
	from := d.LastAttempt
	if from.IsZero() {
		from = now
	}
	return from.Add(events.DeliveryRetention)
}

// checkClaim checks ClaimDeliveries' arguments and returns the limit to
// use (100 when limit <= 0).
func checkClaim(now, leaseUntil time.Time, limit int) (int, error) {
	if now.IsZero() {
		return 0, invalid("claim at the zero time")
	}
	if !leaseUntil.After(now) {
		return 0, invalid("claim with a lease that ends at or before now")
	}
	if limit <= 0 {
		limit = defaultListLimit
	}
	return limit, nil
}

// claimable is the rule of ClaimDeliveries: pending, due, and nobody's
// lease still running (a lease ends at LeaseUntil, as expiries do).
func claimable(d events.Delivery, now time.Time) bool {
	return d.State == events.DeliveryPending && !d.NextAttempt.After(now) && !d.LeaseUntil.After(now)
}

// compareDue orders claimable deliveries: oldest next attempt first, then
// by id.
func compareDue(a, b events.Delivery) int {
	if c := a.NextAttempt.Compare(b.NextAttempt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// compareNewest orders ListDeliveries: newest first, equal creation times
// by id.
func compareNewest(a, b events.Delivery) int {
	if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// checkWebhook rejects a webhook without an id, URL, secret, creation time
// or events, or with an empty event type.
func checkWebhook(w events.Webhook) error {
	if err := checkID("webhook id", w.ID); err != nil {
		return err
	}
	if err := checkID("webhook URL", w.URL); err != nil {
		return err
	}
	if w.Secret == "" {
		return invalid("webhook %q has no secret", w.ID)
	}
	if len(w.Events) == 0 {
		return invalid("webhook %q subscribes to no events", w.ID)
	}
	for _, e := range w.Events {
		if err := checkID("webhook event type", e); err != nil {
			return err
		}
	}
	if w.CreatedAt.IsZero() {
		return invalid("webhook %q has no creation time", w.ID)
	}
	return nil
}

// compareWebhooks orders ListWebhooks: oldest first, then by id.
func compareWebhooks(a, b events.Webhook) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

func deliveryExists(id string) error { return invalid("delivery id %q is already stored", id) }
func webhookExists(id string) error  { return invalid("webhook id %q is already stored", id) }

func cloneDelivery(d events.Delivery) events.Delivery {
	d.Payload = bytes.Clone(d.Payload)
	return d
}

func cloneWebhook(w events.Webhook) events.Webhook {
	w.Events = slices.Clone(w.Events)
	return w
}
