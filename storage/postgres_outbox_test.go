package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/internal/pgtest"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage/storagetest"
)

// TestPostgresOutbox checks what the conformance suite (one store at a
// time) cannot: two instances on one database, the errors only this
// backend marks, the sweep and the plans. (The suite itself runs on
// PostgreSQL in TestPostgres/Conformance/Outbox.)
func TestPostgresOutbox(t *testing.T) {
	srv := pgtest.Start(t)
	newSchema, open := pgSchemas(srv, "o"), openPG
	ctx := context.Background()

	t.Run("InstancesNeverClaimOneDelivery", func(t *testing.T) {
		storagetest.RunOutboxInstances(t, func(t *testing.T, now func() time.Time) (events.Outbox, events.Outbox) {
			dsn := newSchema(t)
			// Two pools, as two processes would have.
			return open(t, dsn, now), open(t, dsn, now)
		})
	})

	t.Run("InvalidInputIsMarked", func(t *testing.T) {
		p := open(t, newSchema(t), nil)
		for what, err := range outboxInvalidCalls(p) {
			if !errors.Is(err, ErrInvalidInput) {
				t.Errorf("%s: got %v, want ErrInvalidInput", what, err)
			}
		}
	})

	t.Run("Unstorable", func(t *testing.T) {
		p := open(t, newSchema(t), nil)
		now := time.Now()
		d := outboxDelivery("dlv_nul", "wh", now, now)
		d.EventType = "agent.\x00registered"
		err := p.EnqueueDeliveries(ctx, []events.Delivery{d})
		if !errors.Is(err, ErrInvalidInput) || !errors.Is(err, oauth.ErrUnstorable) {
			t.Fatalf("EnqueueDeliveries with NUL: %v, want ErrInvalidInput and ErrUnstorable", err)
		}
		d = outboxDelivery("dlv_ok", "wh", now, now)
		if err := p.EnqueueDeliveries(ctx, []events.Delivery{d}); err != nil {
			t.Fatal(err)
		}
		d.LastError = "bad \x00 body"
		if err := p.UpdateDelivery(ctx, d); !errors.Is(err, ErrInvalidInput) || !errors.Is(err, oauth.ErrUnstorable) {
			t.Fatalf("UpdateDelivery with NUL: %v, want ErrInvalidInput and ErrUnstorable", err)
		}
		for _, id := range []string{"dlv_\x00", "dlv_\xff"} {
			if _, err := p.GetDelivery(ctx, id); !errors.Is(err, events.ErrDeliveryNotFound) {
				t.Fatalf("GetDelivery(%q): %v, want ErrDeliveryNotFound", id, err)
			}
			if err := p.DeleteWebhook(ctx, id); !errors.Is(err, events.ErrDeliveryNotFound) {
				t.Fatalf("DeleteWebhook(%q): %v, want ErrDeliveryNotFound", id, err)
			}
		}
	})

	t.Run("SweepDeletesFinished", func(t *testing.T) {
		clock := storagetest.NewClock()
		p := open(t, newSchema(t), clock.Now)
		now := clock.Now()
		done, pending := outboxDelivery("dlv_done", "wh", now, now), outboxDelivery("dlv_pending", "wh", now, now)
		if err := p.EnqueueDeliveries(ctx, []events.Delivery{done, pending}); err != nil {
			t.Fatal(err)
		}
		done.State, done.NextAttempt, done.LastAttempt = events.DeliveryFailed, time.Time{}, now
		if err := p.UpdateDelivery(ctx, done); err != nil {
			t.Fatal(err)
		}
		rows := func() []string {
			r, err := p.pool.Query(ctx, "SELECT id FROM webhook_deliveries ORDER BY id")
			if err != nil {
				t.Fatal(err)
			}
			ids, err := pgx.CollectRows(r, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			return ids
		}
		clock.Advance(events.DeliveryRetention - time.Nanosecond)
		if err := p.DeleteExpired(ctx); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(rows(), " "); got != "dlv_done dlv_pending" {
			t.Fatalf("rows before the retention ends: %s", got)
		}
		clock.Advance(time.Nanosecond)
		if err := p.DeleteExpired(ctx); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(rows(), " "); got != "dlv_pending" {
			t.Fatalf("rows after the sweep: %s", got)
		}
	})

	t.Run("ClaimAndListUseIndexes", func(t *testing.T) {
		p := open(t, newSchema(t), nil)
		now := time.Now()
		var ds []events.Delivery
		for i := range 2000 {
			ds = append(ds, outboxDelivery(fmt.Sprintf("dlv_%04d", i), "wh", now, now.Add(time.Duration(i)*time.Second)))
		}
		if err := p.EnqueueDeliveries(ctx, ds); err != nil {
			t.Fatal(err)
		}
		if _, err := p.pool.Exec(ctx, "ANALYZE webhook_deliveries"); err != nil {
			t.Fatal(err)
		}
		for name, query := range map[string]string{
			"webhook_deliveries_due": `SELECT id FROM webhook_deliveries
				WHERE state = 'pending' AND next_attempt_ns <= $1 AND (lease_until_ns IS NULL OR lease_until_ns <= $1)
				ORDER BY next_attempt_ns, id LIMIT 10 FOR UPDATE SKIP LOCKED`,
			"webhook_deliveries_created": "SELECT " + deliveryColumns + " FROM webhook_deliveries WHERE " + liveDelivery + " ORDER BY created_ns DESC, id LIMIT 10",
		} {
			r, err := p.pool.Query(ctx, "EXPLAIN "+query, now.Add(10*time.Second).UnixNano())
			if err != nil {
				t.Fatal(err)
			}
			plan, err := pgx.CollectRows(r, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(plan, "\n"), name) {
				t.Errorf("plan does not use %s:\n%s", name, strings.Join(plan, "\n"))
			}
		}
	})
}
