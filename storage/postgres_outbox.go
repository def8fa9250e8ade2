package storage

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/authagent/caddy-authagent/events"
)

// The webhook outbox of Postgres (tables in postgres_schema/0005). Several
// instances claim from one table: a claim is one statement that locks the
// rows it takes with FOR UPDATE SKIP LOCKED, so two instances never lease
// one delivery. Finished deliveries carry expires_ns, the end of their
// retention, and the sweep deletes them with the other expired rows.

var _ events.Outbox = (*Postgres)(nil)

const deliveryColumns = "id, webhook_id, url, event_id, event_type, payload, state, attempts, next_attempt_ns, last_attempt_ns, last_status, last_error, created_ns, lease_until_ns"

// liveDelivery is the condition of a delivery whose retention has not
// ended by $1.
const liveDelivery = "(expires_ns IS NULL OR expires_ns > $1)"

func scanDelivery(row pgx.Row) (events.Delivery, error) {
	var (
		d                 events.Delivery
		next, last, lease *int64
		created           int64
	)
	err := row.Scan(&d.ID, &d.WebhookID, &d.URL, &d.EventID, &d.EventType, &d.Payload, &d.State, &d.Attempts,
		&next, &last, &d.LastStatus, &d.LastError, &created, &lease)
	d.NextAttempt, d.LastAttempt, d.LeaseUntil = fromNS(next), fromNS(last), fromNS(lease)
	d.CreatedAt = fromNS(&created)
	return d, err
}

// checkDeliveryStorable refuses the text of a delivery PostgreSQL cannot
// hold (NUL, or not UTF-8).
func checkDeliveryStorable(d events.Delivery) error {
	for _, f := range []struct{ what, v string }{
		{"delivery id", d.ID}, {"delivery webhook id", d.WebhookID}, {"delivery URL", d.URL},
		{"delivery event id", d.EventID}, {"delivery event type", d.EventType}, {"delivery last error", d.LastError},
	} {
		if err := checkStorable(f.what, f.v); err != nil {
			return err
		}
	}
	return nil
}

// EnqueueDeliveries inserts the deliveries in one transaction, all or none.
// The id of a delivery whose retention has ended (and the sweep has not
// yet deleted) may be used again; any other id already stored is invalid
// input.
func (p *Postgres) EnqueueDeliveries(ctx context.Context, ds []events.Delivery) error {
	batch, err := newDeliveries(ds)
	if err != nil {
		return err
	}
	for _, d := range batch {
		if err := checkDeliveryStorable(d); err != nil {
			return err
		}
	}
	if len(batch) == 0 {
		return ctx.Err()
	}
	now := p.now().UnixNano()
	err = p.tx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		for _, d := range batch {
			tag, err := tx.Exec(ctx, `INSERT INTO webhook_deliveries (`+deliveryColumns+`, expires_ns)
				VALUES ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, NULL)
				ON CONFLICT (id) DO UPDATE SET webhook_id = EXCLUDED.webhook_id, url = EXCLUDED.url,
					event_id = EXCLUDED.event_id, event_type = EXCLUDED.event_type, payload = EXCLUDED.payload,
					state = EXCLUDED.state, attempts = EXCLUDED.attempts, next_attempt_ns = EXCLUDED.next_attempt_ns,
					last_attempt_ns = EXCLUDED.last_attempt_ns, last_status = EXCLUDED.last_status,
					last_error = EXCLUDED.last_error, created_ns = EXCLUDED.created_ns,
					lease_until_ns = EXCLUDED.lease_until_ns, expires_ns = NULL
				WHERE webhook_deliveries.expires_ns <= $1`,
				now, d.ID, d.WebhookID, d.URL, d.EventID, d.EventType, d.Payload, d.State, d.Attempts,
				ns(d.NextAttempt), ns(d.LastAttempt), d.LastStatus, d.LastError, ns(d.CreatedAt), ns(d.LeaseUntil))
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return deliveryExists(d.ID)
			}
		}
		return nil
	})
	if errors.Is(err, ErrInvalidInput) {
		return err
	}
	return p.fail(err)
}

// ClaimDeliveries leases due deliveries in one statement. The CTE locks
// the rows it picks with FOR UPDATE SKIP LOCKED, so a row another
// instance's claim (or an update) holds is passed over rather than waited
// for, and a row that changed before its lock was taken is checked again
// against the condition (READ COMMITTED re-evaluates it on the newest
// version). MATERIALIZED keeps the planner from running the pick more than
// once, which could lock more rows than the limit.
func (p *Postgres) ClaimDeliveries(ctx context.Context, now, leaseUntil time.Time, limit int) ([]events.Delivery, error) {
	limit, err := checkClaim(now, leaseUntil, limit)
	if err != nil {
		return nil, err
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	rows, err := p.pool.Query(ctx, `WITH due AS MATERIALIZED (
			SELECT id FROM webhook_deliveries
			WHERE state = 'pending' AND next_attempt_ns <= $1 AND (lease_until_ns IS NULL OR lease_until_ns <= $1)
			ORDER BY next_attempt_ns, id
			LIMIT $3
			FOR UPDATE SKIP LOCKED)
		UPDATE webhook_deliveries d SET lease_until_ns = $2 FROM due WHERE d.id = due.id
		RETURNING `+prefixed("d.", deliveryColumns),
		*ns(now), *ns(leaseUntil), limit)
	if err != nil {
		return nil, p.fail(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (events.Delivery, error) { return scanDelivery(row) })
	if err != nil {
		return nil, p.fail(err)
	}
	// RETURNING follows no order.
	slices.SortFunc(out, compareDue)
	return out, nil
}

// prefixed qualifies each of the comma-separated columns with prefix.
func prefixed(prefix, columns string) string {
	cols := strings.Split(columns, ", ")
	for i, c := range cols {
		cols[i] = prefix + c
	}
	return strings.Join(cols, ", ")
}

// UpdateDelivery stores d's mutable fields and the retention they imply.
func (p *Postgres) UpdateDelivery(ctx context.Context, d events.Delivery) error {
	if err := checkDeliveryUpdate(d); err != nil {
		return err
	}
	if !storable(d.ID) {
		return events.ErrDeliveryNotFound
	}
	if err := checkStorable("delivery last error", d.LastError); err != nil {
		return err
	}
	now := p.now()
	ctx, cancel := p.op(ctx)
	defer cancel()
	tag, err := p.pool.Exec(ctx, `UPDATE webhook_deliveries SET state = $3, attempts = $4, next_attempt_ns = $5,
			last_attempt_ns = $6, last_status = $7, last_error = $8, lease_until_ns = $9, expires_ns = $10
		WHERE id = $2 AND `+liveDelivery,
		now.UnixNano(), d.ID, d.State, d.Attempts, ns(d.NextAttempt), ns(d.LastAttempt), d.LastStatus, d.LastError,
		ns(d.LeaseUntil), ns(deliveryExpiry(d, now)))
	if err != nil {
		return p.fail(err)
	}
	if tag.RowsAffected() == 0 {
		return events.ErrDeliveryNotFound
	}
	return nil
}

// GetDelivery returns the delivery, or events.ErrDeliveryNotFound.
func (p *Postgres) GetDelivery(ctx context.Context, id string) (events.Delivery, error) {
	if !storable(id) {
		return events.Delivery{}, events.ErrDeliveryNotFound
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	d, err := scanDelivery(p.pool.QueryRow(ctx, "SELECT "+deliveryColumns+" FROM webhook_deliveries WHERE id = $2 AND "+liveDelivery,
		p.now().UnixNano(), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return events.Delivery{}, events.ErrDeliveryNotFound
	}
	if err != nil {
		return events.Delivery{}, p.fail(err)
	}
	return d, nil
}

// ListDeliveries returns up to limit deliveries (100 when limit <= 0),
// newest first.
func (p *Postgres) ListDeliveries(ctx context.Context, limit int) ([]events.Delivery, error) {
	ctx, cancel := p.op(ctx)
	defer cancel()
	rows, err := p.pool.Query(ctx, "SELECT "+deliveryColumns+" FROM webhook_deliveries WHERE "+liveDelivery+
		" ORDER BY created_ns DESC, id LIMIT $2", p.now().UnixNano(), listLimit(limit))
	if err != nil {
		return nil, p.fail(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (events.Delivery, error) { return scanDelivery(row) })
	return out, p.fail(err)
}

const webhookColumns = "id, url, events, secret, source, created_ns"

// CreateWebhook stores w; an id already stored is invalid input.
func (p *Postgres) CreateWebhook(ctx context.Context, w events.Webhook) error {
	if err := checkWebhook(w); err != nil {
		return err
	}
	for _, s := range append([]string{w.ID, w.URL, w.Secret, w.Source}, w.Events...) {
		if err := checkStorable("webhook field", s); err != nil {
			return err
		}
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	_, err := p.pool.Exec(ctx, "INSERT INTO webhooks ("+webhookColumns+") VALUES ($1, $2, $3, $4, $5, $6)",
		w.ID, w.URL, w.Events, w.Secret, w.Source, *ns(w.CreatedAt))
	if isUnique(err) {
		return webhookExists(w.ID)
	}
	return p.fail(err)
}

// ListWebhooks returns every stored webhook, oldest first.
func (p *Postgres) ListWebhooks(ctx context.Context) ([]events.Webhook, error) {
	ctx, cancel := p.op(ctx)
	defer cancel()
	rows, err := p.pool.Query(ctx, "SELECT "+webhookColumns+" FROM webhooks ORDER BY created_ns, id")
	if err != nil {
		return nil, p.fail(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (events.Webhook, error) {
		var (
			w       events.Webhook
			created int64
		)
		err := row.Scan(&w.ID, &w.URL, &w.Events, &w.Secret, &w.Source, &created)
		w.CreatedAt = fromNS(&created)
		return w, err
	})
	return out, p.fail(err)
}

// DeleteWebhook removes the webhook and fails its pending deliveries in one
// transaction.
func (p *Postgres) DeleteWebhook(ctx context.Context, id string) error {
	if !storable(id) {
		return events.ErrDeliveryNotFound
	}
	now := p.now().UnixNano()
	err := p.tx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM webhooks WHERE id = $1", id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return events.ErrDeliveryNotFound
		}
		// As deliveryExpiry: retention from the last attempt, or from now
		// when there was none; clamped so the sum stays a bigint.
		_, err = tx.Exec(ctx, `UPDATE webhook_deliveries SET state = 'failed', last_error = $2,
				next_attempt_ns = NULL, lease_until_ns = NULL,
				expires_ns = least(coalesce(last_attempt_ns, $3::bigint), $5::bigint) + $4::bigint
			WHERE webhook_id = $1 AND state = 'pending'`,
			id, webhookDeleted, now, int64(events.DeliveryRetention), int64(math.MaxInt64-events.DeliveryRetention))
		return err
	})
	if errors.Is(err, events.ErrDeliveryNotFound) {
		return err
	}
	return p.fail(err)
}
