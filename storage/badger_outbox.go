package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/authagent/caddy-authagent/events"
)

// The webhook outbox of Badger. See the key layout in badger.go: a record
// per delivery, its payload apart, a due index holding every pending
// delivery ordered by next attempt (its value: the lease end and the
// webhook id, so claims and DeleteWebhook scan the index alone), and a
// newest-first listing index. Finished deliveries, their payload and
// listing entry carry a Badger TTL at the end of their retention; reads
// decide retention by the injected clock, as for every other expiry.

var _ events.Outbox = (*Badger)(nil)

// outboxBatch bounds the deliveries one transaction claims or fails, well
// inside Badger's transaction size limit (a claim rewrites about 400 bytes
// per delivery, DeleteWebhook a payload too).
const outboxBatch = 200

// claimRounds bounds how often ClaimDeliveries looks again for due
// deliveries after concurrent claimers in this process took some of those
// it found.
const claimRounds = 3

// deliveryRecord is stored under "dlv/<id>": a delivery without its
// payload, and when it is forgotten (zero while pending).
type deliveryRecord struct {
	ID          string    `json:"id"`
	WebhookID   string    `json:"webhook_id"`
	URL         string    `json:"url"`
	EventID     string    `json:"event_id"`
	EventType   string    `json:"event_type"`
	State       string    `json:"state"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastStatus  int       `json:"last_status,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	LeaseUntil  time.Time `json:"lease_until,omitzero"`
	Expires     time.Time `json:"expires,omitzero"`
}

func toDeliveryRecord(d events.Delivery, expires time.Time) deliveryRecord {
	return deliveryRecord{
		ID: d.ID, WebhookID: d.WebhookID, URL: d.URL, EventID: d.EventID, EventType: d.EventType,
		State: d.State, Attempts: d.Attempts, NextAttempt: d.NextAttempt,
		LastAttempt: d.LastAttempt, LastStatus: d.LastStatus, LastError: d.LastError,
		CreatedAt: d.CreatedAt, LeaseUntil: d.LeaseUntil, Expires: expires,
	}
}

// delivery is the record as a delivery, without its payload.
func (r deliveryRecord) delivery() events.Delivery {
	return events.Delivery{
		ID: r.ID, WebhookID: r.WebhookID, URL: r.URL, EventID: r.EventID, EventType: r.EventType,
		State: r.State, Attempts: r.Attempts, NextAttempt: r.NextAttempt,
		LastAttempt: r.LastAttempt, LastStatus: r.LastStatus, LastError: r.LastError,
		CreatedAt: r.CreatedAt, LeaseUntil: r.LeaseUntil,
	}
}

// gone reports whether the record's retention has ended by now.
func (r *deliveryRecord) gone(now time.Time) bool {
	return !r.Expires.IsZero() && expired(r.Expires, now)
}

// webhookRecord is stored under "webhook/<id>".
type webhookRecord struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
	Secret    string    `json:"secret"`
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
}

func toWebhookRecord(w events.Webhook) webhookRecord {
	return webhookRecord{ID: w.ID, URL: w.URL, Events: slices.Clone(w.Events), Secret: w.Secret, Source: w.Source, CreatedAt: w.CreatedAt}
}

func (r webhookRecord) webhook() events.Webhook {
	return events.Webhook{ID: r.ID, URL: r.URL, Events: r.Events, Secret: r.Secret, Source: r.Source, CreatedAt: r.CreatedAt}
}

func webhookKey(id string) []byte  { return []byte(webhookPrefix + id) }
func deliveryKey(id string) []byte { return []byte(deliveryPrefix + id) }
func payloadKey(id string) []byte  { return []byte(payloadPrefix + id) }

// orderedNS maps t to 8 bytes whose byte order is time order (the zero
// time first, times beyond int64 nanoseconds clamped, as ns does).
func orderedNS(t time.Time) uint64 {
	v := ns(t)
	if v == nil {
		return 0
	}
	return uint64(*v) ^ (1 << 63)
}

func dueKey(next time.Time, id string) []byte {
	k := binary.BigEndian.AppendUint64([]byte(deliveryDuePrefix), orderedNS(next))
	return append(k, id...)
}

func listKey(created time.Time, id string) []byte {
	k := binary.BigEndian.AppendUint64([]byte(deliveryListPrefix), math.MaxUint64-orderedNS(created))
	return append(k, id...)
}

// dueValue is the value of a due index entry: the lease end, then the
// webhook id.
func dueValue(lease time.Time, webhookID string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, orderedNS(lease)), webhookID...)
}

// parseDue splits a due index entry into the delivery id, its lease end
// (as orderedNS) and webhook id; ok is false for a malformed entry.
func parseDue(key, val []byte) (id string, lease uint64, webhookID string, ok bool) {
	if len(key) < len(deliveryDuePrefix)+8 || len(val) < 8 {
		return "", 0, "", false
	}
	return string(key[len(deliveryDuePrefix)+8:]), binary.BigEndian.Uint64(val), string(val[8:]), true
}

// putDelivery writes d's record and, when stored says what was there
// before (nil for a new delivery), moves its due entry and, when its
// retention changes, gives its payload and listing entry the new Badger
// expiry. payload is written when not nil (a new delivery).
func (b *Badger) putDelivery(txn *badger.Txn, d events.Delivery, stored *deliveryRecord, payload []byte) error {
	expires := deliveryExpiry(d, b.now())
	var exp uint64
	if !expires.IsZero() {
		exp = b.expiryOf(expires)
	}
	if err := writeJSON(txn, deliveryKey(d.ID), toDeliveryRecord(d, expires), exp, "delivery"); err != nil {
		return err
	}
	if stored != nil && stored.State == events.DeliveryPending {
		if err := deleteKey(txn, dueKey(stored.NextAttempt, stored.ID), "delivery due index"); err != nil {
			return err
		}
	}
	if d.State == events.DeliveryPending {
		if err := txn.Set(dueKey(d.NextAttempt, d.ID), dueValue(d.LeaseUntil, d.WebhookID)); err != nil {
			return fmt.Errorf("auth_agent storage: write delivery due index: %w", err)
		}
	}
	if stored != nil && stored.Expires.Equal(expires) {
		return nil
	}
	if payload == nil {
		item, err := txn.Get(payloadKey(d.ID))
		if err != nil {
			return fmt.Errorf("auth_agent storage: read payload of delivery %q: %w", d.ID, err)
		}
		if payload, err = item.ValueCopy(nil); err != nil {
			return fmt.Errorf("auth_agent storage: read payload of delivery %q: %w", d.ID, err)
		}
	}
	pe := badger.NewEntry(payloadKey(d.ID), payload)
	pe.ExpiresAt = exp
	if err := txn.SetEntry(pe); err != nil {
		return fmt.Errorf("auth_agent storage: write delivery payload: %w", err)
	}
	le := badger.NewEntry(listKey(d.CreatedAt, d.ID), nil)
	le.ExpiresAt = exp
	if err := txn.SetEntry(le); err != nil {
		return fmt.Errorf("auth_agent storage: write delivery list index: %w", err)
	}
	return nil
}

// readDelivery returns the live record of delivery id, or nil.
func (b *Badger) readDelivery(txn *badger.Txn, id string) (*deliveryRecord, error) {
	rec, _, err := readJSON[deliveryRecord](txn, deliveryKey(id), "delivery")
	if err != nil || rec == nil || rec.gone(b.now()) {
		return nil, err
	}
	return rec, nil
}

// fullDelivery is the record with its payload.
func fullDelivery(txn *badger.Txn, rec *deliveryRecord) (events.Delivery, error) {
	d := rec.delivery()
	item, err := txn.Get(payloadKey(rec.ID))
	if err != nil {
		return d, fmt.Errorf("auth_agent storage: read payload of delivery %q: %w", rec.ID, err)
	}
	d.Payload, err = item.ValueCopy(nil)
	if err != nil {
		return d, fmt.Errorf("auth_agent storage: read payload of delivery %q: %w", rec.ID, err)
	}
	return d, nil
}

// EnqueueDeliveries stores new pending deliveries in one transaction, all
// or none. An id already stored (or twice in ds) is invalid input.
func (b *Badger) EnqueueDeliveries(ctx context.Context, ds []events.Delivery) error {
	batch, err := newDeliveries(ds)
	if err != nil {
		return err
	}
	if len(batch) == 0 {
		return b.view(ctx, func(*badger.Txn) error { return nil })
	}
	names := make([][]byte, len(batch))
	for i, d := range batch {
		names[i] = deliveryKey(d.ID)
	}
	return b.update(ctx, names, func(txn *badger.Txn) error {
		for _, d := range batch {
			old, _, err := readJSON[deliveryRecord](txn, deliveryKey(d.ID), "delivery")
			if err != nil {
				return err
			}
			if old != nil && !old.gone(b.now()) {
				return deliveryExists(d.ID)
			}
			if old != nil {
				// The id of a forgotten delivery, reused: its listing
				// entry goes with it.
				if err := deleteKey(txn, listKey(old.CreatedAt, old.ID), "delivery list index"); err != nil {
					return err
				}
			}
			if err := b.putDelivery(txn, d, nil, d.Payload); err != nil {
				return err
			}
		}
		return nil
	})
}

// ClaimDeliveries finds due deliveries through the due index, then leases
// them in a transaction holding their locks that checks each again, so two
// callers in this process never both lease one (the directory lock keeps
// other processes out).
func (b *Badger) ClaimDeliveries(ctx context.Context, now, leaseUntil time.Time, limit int) ([]events.Delivery, error) {
	limit, err := checkClaim(now, leaseUntil, limit)
	if err != nil {
		return nil, err
	}
	var out []events.Delivery
	for lost := 0; len(out) < limit && lost < claimRounds; {
		want := min(limit-len(out), outboxBatch)
		due, err := b.dueDeliveries(ctx, now, want)
		if err != nil {
			return nil, err
		}
		if len(due) == 0 {
			break
		}
		got, err := b.lease(ctx, due, now, leaseUntil)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
		if len(got) < len(due) {
			lost++ // another caller leased some first: look again
			continue
		}
		if len(due) < want {
			break // nothing more is due
		}
	}
	return out, nil
}

// dueEntry is a due index entry: its key and the delivery it names.
type dueEntry struct {
	key []byte
	id  string
}

// dueDeliveries returns the entries of up to n deliveries the due index
// says are claimable at now, oldest next attempt first.
func (b *Badger) dueDeliveries(ctx context.Context, now time.Time, n int) ([]dueEntry, error) {
	var ids []dueEntry
	bound := orderedNS(now)
	err := b.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(deliveryDuePrefix)
		opts.PrefetchSize = min(n, opts.PrefetchSize)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid() && len(ids) < n; it.Next() {
			item := it.Item()
			key := item.Key()
			if len(key) < len(deliveryDuePrefix)+8 || binary.BigEndian.Uint64(key[len(deliveryDuePrefix):]) > bound {
				break // the rest is due later
			}
			err := item.Value(func(val []byte) error {
				id, lease, _, ok := parseDue(key, val)
				if ok && lease <= bound {
					ids = append(ids, dueEntry{key: item.KeyCopy(nil), id: id})
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("auth_agent storage: read delivery due index: %w", err)
			}
		}
		return ctx.Err()
	})
	return ids, err
}

// lease leases those of due still claimable at now (the record decides)
// until leaseUntil, in one transaction under their locks, and returns them.
// An entry no pending record stands behind (none can be left by a
// committed write, but one must never block the index) is deleted.
func (b *Badger) lease(ctx context.Context, due []dueEntry, now, leaseUntil time.Time) ([]events.Delivery, error) {
	names := make([][]byte, len(due))
	for i, e := range due {
		names[i] = deliveryKey(e.id)
	}
	var out []events.Delivery
	err := b.update(ctx, names, func(txn *badger.Txn) error {
		out = out[:0]
		for _, e := range due {
			rec, err := b.readDelivery(txn, e.id)
			if err != nil {
				return err
			}
			if rec == nil || rec.State != events.DeliveryPending || !bytes.Equal(dueKey(rec.NextAttempt, rec.ID), e.key) {
				if err := deleteKey(txn, e.key, "stale delivery due index"); err != nil {
					return err
				}
				continue
			}
			if !claimable(rec.delivery(), now) {
				continue // another caller leased it first
			}
			d, err := fullDelivery(txn, rec)
			if err != nil {
				return err
			}
			d.LeaseUntil = leaseUntil
			if err := b.putDelivery(txn, d, rec, nil); err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateDelivery stores d's mutable fields over the stored delivery, moving
// its due entry, under the delivery's lock.
func (b *Badger) UpdateDelivery(ctx context.Context, d events.Delivery) error {
	if err := checkDeliveryUpdate(d); err != nil {
		return err
	}
	k := deliveryKey(d.ID)
	return b.updateKey(ctx, k, func(txn *badger.Txn) error {
		rec, err := b.readDelivery(txn, d.ID)
		if err != nil {
			return err
		}
		if rec == nil {
			return events.ErrDeliveryNotFound
		}
		return b.putDelivery(txn, applyDeliveryUpdate(rec.delivery(), d), rec, nil)
	})
}

// GetDelivery returns the delivery, or events.ErrDeliveryNotFound.
func (b *Badger) GetDelivery(ctx context.Context, id string) (events.Delivery, error) {
	var out events.Delivery
	err := b.view(ctx, func(txn *badger.Txn) error {
		rec, err := b.readDelivery(txn, id)
		if err != nil {
			return err
		}
		if rec == nil {
			return events.ErrDeliveryNotFound
		}
		out, err = fullDelivery(txn, rec)
		return err
	})
	if err != nil {
		return events.Delivery{}, err
	}
	return out, nil
}

// ListDeliveries returns up to limit deliveries (100 when limit <= 0),
// newest first, through the listing index.
func (b *Badger) ListDeliveries(ctx context.Context, limit int) ([]events.Delivery, error) {
	if limit <= 0 {
		limit = defaultListLimit
	}
	var out []events.Delivery
	err := b.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(deliveryListPrefix)
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid() && len(out) < limit; it.Next() {
			key := it.Item().Key()
			if len(key) < len(deliveryListPrefix)+8 {
				continue
			}
			rec, err := b.readDelivery(txn, string(key[len(deliveryListPrefix)+8:]))
			if err != nil {
				return err
			}
			// A listing entry outlives its record by at most Badger's
			// rounding of their common expiry; skip it then.
			if rec == nil {
				continue
			}
			d, err := fullDelivery(txn, rec)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CreateWebhook stores w; an id already stored is invalid input.
func (b *Badger) CreateWebhook(ctx context.Context, w events.Webhook) error {
	if err := checkWebhook(w); err != nil {
		return err
	}
	k := webhookKey(w.ID)
	return b.updateKey(ctx, k, func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		switch {
		case err == nil:
			return webhookExists(w.ID)
		case !errors.Is(err, badger.ErrKeyNotFound):
			return fmt.Errorf("auth_agent storage: read webhook %q: %w", w.ID, err)
		}
		return writeJSON(txn, k, toWebhookRecord(w), 0, "webhook")
	})
}

// ListWebhooks returns every stored webhook, oldest first.
func (b *Badger) ListWebhooks(ctx context.Context) ([]events.Webhook, error) {
	var out []events.Webhook
	err := b.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(webhookPrefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var r webhookRecord
			if err := it.Item().Value(func(raw []byte) error { return json.Unmarshal(raw, &r) }); err != nil {
				return fmt.Errorf("auth_agent storage: decode webhook %q: %w", it.Item().Key()[len(webhookPrefix):], err)
			}
			out = append(out, r.webhook())
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, compareWebhooks)
	return out, nil
}

// DeleteWebhook fails the webhook's pending deliveries, found through the
// due index, in transactions of outboxBatch, and removes the webhook in the
// last one, all under the webhook's lock: cut short, it leaves the webhook
// in place, so calling it again finishes the work.
func (b *Badger) DeleteWebhook(ctx context.Context, id string) error {
	if err := b.begin(ctx); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	k := webhookKey(id)
	unlock := b.lock(k)
	defer unlock()
	err := b.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return events.ErrDeliveryNotFound
	}
	if err != nil {
		return fmt.Errorf("auth_agent storage: read webhook %q: %w", id, err)
	}
	var from []byte // where the next batch's scan of the due index starts
	for done := false; !done; {
		if err := ctx.Err(); err != nil {
			return err
		}
		var next []byte
		err := b.commit(ctx, func(txn *badger.Txn) error {
			var ids []string
			next, done = nil, true
			opts := badger.DefaultIteratorOptions
			opts.Prefix = []byte(deliveryDuePrefix)
			it := txn.NewIterator(opts)
			start := from
			if start == nil {
				start = opts.Prefix
			}
			for it.Seek(start); it.Valid(); it.Next() {
				item := it.Item()
				if len(ids) == outboxBatch {
					next, done = item.KeyCopy(nil), false
					break
				}
				err := item.Value(func(val []byte) error {
					if did, _, wid, ok := parseDue(item.Key(), val); ok && wid == id {
						ids = append(ids, did)
					}
					return nil
				})
				if err != nil {
					it.Close()
					return fmt.Errorf("auth_agent storage: read delivery due index: %w", err)
				}
			}
			it.Close()
			for _, did := range ids {
				rec, err := b.readDelivery(txn, did)
				if err != nil {
					return err
				}
				if rec == nil || rec.State != events.DeliveryPending || rec.WebhookID != id {
					continue
				}
				if err := b.putDelivery(txn, failForDeletedWebhook(rec.delivery()), rec, nil); err != nil {
					return err
				}
			}
			if done {
				return deleteKey(txn, k, "webhook")
			}
			return nil
		})
		if err != nil {
			return err
		}
		from = next
	}
	return nil
}
