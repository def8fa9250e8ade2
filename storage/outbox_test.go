package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/storage/storagetest"
)

func outboxDelivery(id, webhook string, created, next time.Time) events.Delivery {
	return events.Delivery{
		ID: id, WebhookID: webhook, URL: "https://hooks.example.com/" + webhook, EventID: "evt_" + id,
		EventType: events.AgentRegistered, Payload: []byte(`{"id":"` + id + `"}`),
		State: events.DeliveryPending, CreatedAt: created, NextAttempt: next,
	}
}

// outboxInvalidCalls makes calls every backend must refuse with
// ErrInvalidInput, which the suite (knowing no backend) cannot check.
func outboxInvalidCalls(s Backend) map[string]error {
	ctx := context.Background()
	now := time.Now()
	d := outboxDelivery("dlv_x", "wh_x", now, now)
	with := func(change func(*events.Delivery)) []events.Delivery {
		c := d
		change(&c)
		return []events.Delivery{c}
	}
	w := events.Webhook{ID: "wh_x", URL: "https://hooks.example.com/", Events: []string{events.KeyRotated}, Secret: "whsec_x", CreatedAt: now}
	if err := s.EnqueueDeliveries(ctx, []events.Delivery{outboxDelivery("dlv_taken", "wh_x", now, now)}); err != nil {
		return map[string]error{"setup": err}
	}
	if err := s.CreateWebhook(ctx, w); err != nil {
		return map[string]error{"setup": err}
	}
	return map[string]error{
		"empty delivery id": s.EnqueueDeliveries(ctx, with(func(d *events.Delivery) { d.ID = "" })),
		"nil payload":       s.EnqueueDeliveries(ctx, with(func(d *events.Delivery) { d.Payload = nil })),
		"enqueued failed":   s.EnqueueDeliveries(ctx, with(func(d *events.Delivery) { d.State = events.DeliveryFailed })),
		"no next attempt":   s.EnqueueDeliveries(ctx, with(func(d *events.Delivery) { d.NextAttempt = time.Time{} })),
		"no creation time":  s.EnqueueDeliveries(ctx, with(func(d *events.Delivery) { d.CreatedAt = time.Time{} })),
		"twice in a batch":  s.EnqueueDeliveries(ctx, []events.Delivery{d, d}),
		"id already stored": s.EnqueueDeliveries(ctx, with(func(d *events.Delivery) { d.ID = "dlv_taken" })),
		"lease not after now": func() error {
			_, err := s.ClaimDeliveries(ctx, now, now, 1)
			return err
		}(),
		"unknown state":            s.UpdateDelivery(ctx, events.Delivery{ID: "dlv_taken", State: "sent"}),
		"pending, no next attempt": s.UpdateDelivery(ctx, events.Delivery{ID: "dlv_taken", State: events.DeliveryPending}),
		"empty webhook id":         s.CreateWebhook(ctx, events.Webhook{URL: w.URL, Events: w.Events, Secret: w.Secret, CreatedAt: now}),
		"webhook without secret":   s.CreateWebhook(ctx, events.Webhook{ID: "wh_y", URL: w.URL, Events: w.Events, CreatedAt: now}),
		"webhook id taken":         s.CreateWebhook(ctx, w),
	}
}

func TestOutboxInvalidInputIsMarked(t *testing.T) {
	t.Parallel()
	m := NewMemory(nil)
	defer m.Close()
	for name, s := range map[string]Backend{
		"Memory": m,
		"Badger": openTestBadger(t, BadgerOptions{Dir: t.TempDir()}),
	} {
		for what, err := range outboxInvalidCalls(s) {
			if !errors.Is(err, ErrInvalidInput) {
				t.Errorf("%s, %s: got %v, want ErrInvalidInput", name, what, err)
			}
		}
	}
}

// TestMemoryOutboxSweep checks that the sweep forgets finished deliveries
// past their retention, not only that reads skip them.
func TestMemoryOutboxSweep(t *testing.T) {
	clock := storagetest.NewClock()
	m := NewMemory(clock.Now)
	defer m.Close()
	ctx := context.Background()
	now := clock.Now()
	done, pending := outboxDelivery("dlv_done", "wh", now, now), outboxDelivery("dlv_pending", "wh", now, now)
	if err := m.EnqueueDeliveries(ctx, []events.Delivery{done, pending}); err != nil {
		t.Fatal(err)
	}
	done.State, done.NextAttempt, done.LastAttempt = events.DeliveryDelivered, time.Time{}, now
	if err := m.UpdateDelivery(ctx, done); err != nil {
		t.Fatal(err)
	}
	clock.Advance(events.DeliveryRetention)
	m.dropExpired()
	m.mu.Lock()
	_, doneKept := m.outbox.deliveries[done.ID]
	_, pendingKept := m.outbox.deliveries[pending.ID]
	m.mu.Unlock()
	if doneKept || !pendingKept {
		t.Fatalf("after the sweep: delivered kept %v (want false), pending kept %v (want true)", doneKept, pendingKept)
	}
}

func TestBadgerOutboxSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := storagetest.NewClock()
	b, err := OpenBadger(BadgerOptions{Dir: dir, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	due := outboxDelivery("dlv_due", "wh_a", now, now.Add(-time.Minute))
	held := outboxDelivery("dlv_held", "wh_a", now.Add(time.Second), now.Add(-2*time.Minute))
	later := outboxDelivery("dlv_later", "wh_a", now.Add(2*time.Second), now.Add(time.Hour))
	done := outboxDelivery("dlv_done", "wh_a", now.Add(3*time.Second), now)
	if err := b.EnqueueDeliveries(ctx, []events.Delivery{due, held, later, done}); err != nil {
		t.Fatal(err)
	}
	lease := now.Add(10 * time.Minute)
	if got, err := b.ClaimDeliveries(ctx, now, lease, 1); err != nil || len(got) != 1 || got[0].ID != held.ID {
		t.Fatalf("claim: %v, %v", got, err)
	}
	done.State, done.Attempts, done.NextAttempt, done.LastAttempt, done.LastStatus = events.DeliveryDelivered, 1, time.Time{}, now, 200
	if err := b.UpdateDelivery(ctx, done); err != nil {
		t.Fatal(err)
	}
	w := events.Webhook{ID: "wh_a", URL: "https://hooks.example.com/a", Events: []string{events.AgentDeleted}, Secret: "whsec_a", Source: events.WebhookFromAdmin, CreatedAt: now}
	if err := b.CreateWebhook(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openTestBadger(t, BadgerOptions{Dir: dir, Now: clock.Now})
	list, err := b.ListDeliveries(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range list {
		ids = append(ids, d.ID)
	}
	if strings.Join(ids, " ") != "dlv_done dlv_later dlv_held dlv_due" {
		t.Fatalf("deliveries after reopen: %v", ids)
	}
	if d, err := b.GetDelivery(ctx, held.ID); err != nil || !d.LeaseUntil.Equal(lease) || !bytes.Equal(d.Payload, held.Payload) {
		t.Fatalf("leased delivery after reopen: %+v, %v", d, err)
	}
	if d, err := b.GetDelivery(ctx, done.ID); err != nil || d.State != events.DeliveryDelivered {
		t.Fatalf("delivered delivery after reopen: %+v, %v", d, err)
	}
	// The due index came back with the records: the lease still holds,
	// the due one is claimable, the later one is not yet.
	got, err := b.ClaimDeliveries(ctx, now, now.Add(time.Minute), 0)
	if err != nil || len(got) != 1 || got[0].ID != due.ID {
		t.Fatalf("claim after reopen: %v, %v; want %s", got, err, due.ID)
	}
	got, err = b.ClaimDeliveries(ctx, lease, lease.Add(time.Minute), 0)
	if err != nil || len(got) != 2 || got[0].ID != held.ID || got[1].ID != due.ID {
		t.Fatalf("claim after the lease: %v, %v; want %s and %s", got, err, held.ID, due.ID)
	}
	if ws, err := b.ListWebhooks(ctx); err != nil || len(ws) != 1 || ws[0].Secret != w.Secret {
		t.Fatalf("webhooks after reopen: %+v, %v", ws, err)
	}
}

// TestBadgerOutboxTTL checks the Badger expiry a delivery carries: none
// while pending, the end of its retention once finished (record, payload
// and listing entry alike), none again when redelivered.
func TestBadgerOutboxTTL(t *testing.T) {
	ctx := context.Background()
	b := openTestBadger(t, BadgerOptions{Dir: t.TempDir()})
	now := time.Now()
	d := outboxDelivery("dlv_ttl", "wh", now, now)
	if err := b.EnqueueDeliveries(ctx, []events.Delivery{d}); err != nil {
		t.Fatal(err)
	}
	keys := [][]byte{deliveryKey(d.ID), payloadKey(d.ID), listKey(d.CreatedAt, d.ID)}
	expiries := func() []uint64 {
		var out []uint64
		for _, k := range keys {
			if err := b.db.View(func(txn *badger.Txn) error {
				item, err := txn.Get(k)
				if err != nil {
					return fmt.Errorf("%q: %w", k, err)
				}
				out = append(out, item.ExpiresAt())
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	for i, exp := range expiries() {
		if exp != 0 {
			t.Fatalf("pending delivery: %q expires at %d, want never", keys[i], exp)
		}
	}
	d.State, d.Attempts, d.NextAttempt, d.LastAttempt = events.DeliveryDelivered, 1, time.Time{}, now
	if err := b.UpdateDelivery(ctx, d); err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		left := time.Until(nativeExpiryOf(t, b, keys[i]))
		if left < events.DeliveryRetention-time.Minute || left > events.DeliveryRetention+2*time.Second {
			t.Fatalf("delivered delivery: %q expires in %v, want about %v", keys[i], left, events.DeliveryRetention)
		}
	}
	d.State, d.NextAttempt = events.DeliveryPending, now
	if err := b.UpdateDelivery(ctx, d); err != nil {
		t.Fatal(err)
	}
	for i, exp := range expiries() {
		if exp != 0 {
			t.Fatalf("redelivered delivery: %q expires at %d, want never", keys[i], exp)
		}
	}
}

// TestBadgerOutboxBatches goes past outboxBatch: a claim larger than one
// transaction takes, and a DeleteWebhook failing more pending deliveries
// than one transaction holds, among those of another webhook.
func TestBadgerOutboxBatches(t *testing.T) {
	ctx := context.Background()
	b := openTestBadger(t, BadgerOptions{Dir: t.TempDir()})
	now := time.Now()
	n := 2*outboxBatch + 37
	var ds []events.Delivery
	for i := range n {
		webhook := "wh_gone"
		if i%7 == 0 {
			webhook = "wh_kept"
		}
		ds = append(ds, outboxDelivery(fmt.Sprintf("dlv_%04d", i), webhook, now, now.Add(time.Duration(i-n))))
	}
	for i := 0; i < n; i += 50 {
		if err := b.EnqueueDeliveries(ctx, ds[i:min(i+50, n)]); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.ClaimDeliveries(ctx, now, now.Add(time.Minute), n+10)
	if err != nil || len(got) != n {
		t.Fatalf("claim of %d: got %d, %v", n, len(got), err)
	}
	for i := range got {
		if got[i].ID != ds[i].ID {
			t.Fatalf("claim[%d] = %s, want %s", i, got[i].ID, ds[i].ID)
		}
	}

	if err := b.CreateWebhook(ctx, events.Webhook{ID: "wh_gone", URL: "https://x.example/", Events: []string{events.KeyRotated}, Secret: "whsec_x", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteWebhook(ctx, "wh_gone"); err != nil {
		t.Fatal(err)
	}
	if ws, err := b.ListWebhooks(ctx); err != nil || len(ws) != 0 {
		t.Fatalf("webhooks after DeleteWebhook: %v, %v", ws, err)
	}
	for _, d := range ds {
		got, err := b.GetDelivery(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := events.DeliveryFailed
		if d.WebhookID == "wh_kept" {
			want = events.DeliveryPending
		}
		if got.State != want {
			t.Fatalf("%s of %s: state %s, want %s", d.ID, d.WebhookID, got.State, want)
		}
	}
	later := now.Add(time.Hour)
	got, err = b.ClaimDeliveries(ctx, later, later.Add(time.Minute), 0)
	if err != nil || len(got) != (n+6)/7 {
		t.Fatalf("claim after DeleteWebhook: %d, %v; want the %d of wh_kept", len(got), err, (n+6)/7)
	}
}

const outboxHelperDirEnv = "AUTH_AGENT_OUTBOX_HELPER_DIR"

// TestHelperProcessOutbox is not a test on its own: TestBadgerOutboxSurvivesKill
// runs the test binary again with only this test selected. Its goroutines
// enqueue deliveries, claim them and record attempts, printing each write
// once it has returned, until the process is killed.
func TestHelperProcessOutbox(t *testing.T) {
	dir := os.Getenv(outboxHelperDirEnv)
	if dir == "" {
		t.Skip("helper process for TestBadgerOutboxSurvivesKill")
	}
	b, err := OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := 0; i < 1_000_000; i++ {
				now := time.Now()
				a, c := fmt.Sprintf("dlv_%d_%06d_a", w, i), fmt.Sprintf("dlv_%d_%06d_b", w, i)
				if err := b.EnqueueDeliveries(ctx, []events.Delivery{outboxDelivery(a, "wh", now, now), outboxDelivery(c, "wh", now, now)}); err != nil {
					fail(err)
				}
				// One Write call per line, so lines never interleave.
				os.Stdout.WriteString("enqueued " + a + " " + c + "\n")
				claimed, err := b.ClaimDeliveries(ctx, now, now.Add(time.Hour), 2)
				if err != nil {
					fail(err)
				}
				for _, d := range claimed {
					d.Attempts++
					d.LastAttempt, d.LeaseUntil = time.Now(), time.Time{}
					if outboxHash(d.ID)%2 == 0 {
						d.State, d.NextAttempt, d.LastStatus = events.DeliveryDelivered, time.Time{}, 200
					} else {
						d.NextAttempt, d.LastStatus = time.Now().Add(time.Minute), 500
					}
					if err := b.UpdateDelivery(ctx, d); err != nil {
						fail(err)
					}
					os.Stdout.WriteString(d.State + " " + d.ID + "\n")
				}
			}
		}()
	}
	wg.Wait()
	fmt.Fprintln(os.Stderr, "helper ran out of work before it was killed")
	os.Exit(4)
}

func outboxHash(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// TestBadgerOutboxSurvivesKill kills a process writing to the outbox with
// SIGKILL and checks that every acknowledged enqueue and attempt is there
// after reopening, and that the due index agrees with the records: the
// pending deliveries are exactly those a claim returns.
func TestBadgerOutboxSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	c := startChild(t, "TestHelperProcessOutbox", outboxHelperDirEnv+"="+dir)
	enqueued := map[string]bool{}
	delivered := map[string]bool{}
	collect := func(line string) {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "enqueued":
			enqueued[f[1]], enqueued[f[2]] = true, true
		case len(f) == 2 && f[0] == events.DeliveryDelivered:
			delivered[f[1]] = true
		case len(f) == 2 && f[0] == events.DeliveryPending:
		default:
			t.Errorf("helper printed %q", line)
		}
	}
	const before = 400
	c.readUntil(t, 60*time.Second, collect, func() bool { return len(enqueued) >= before && len(delivered) > 0 },
		func() string { return fmt.Sprintf("%d enqueues, %d deliveries", len(enqueued), len(delivered)) })
	c.kill9(t, collect)

	b := openTestBadger(t, BadgerOptions{Dir: dir})
	ctx := context.Background()
	all, err := b.ListDeliveries(ctx, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]events.Delivery{}
	pending := map[string]bool{}
	for _, d := range all {
		stored[d.ID] = d
		if d.State == events.DeliveryPending {
			pending[d.ID] = true
		}
	}
	var lost []string
	for id := range enqueued {
		d, err := b.GetDelivery(ctx, id)
		if err != nil || !bytes.Contains(d.Payload, []byte(id)) {
			lost = append(lost, fmt.Sprintf("delivery %s: %+v, %v", id, d, err))
		} else if _, ok := stored[id]; !ok {
			lost = append(lost, "delivery "+id+" is not listed")
		}
	}
	for id := range delivered {
		if d := stored[id]; d.State != events.DeliveryDelivered {
			lost = append(lost, fmt.Sprintf("attempt of %s: state %q, want delivered", id, d.State))
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged outbox writes lost after kill -9, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	// Past every lease and retry the helper set, a claim returns exactly
	// the pending deliveries.
	later := time.Now().Add(2 * time.Hour)
	claimed := map[string]bool{}
	for {
		got, err := b.ClaimDeliveries(ctx, later, later.Add(time.Hour), 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			break
		}
		for _, d := range got {
			if claimed[d.ID] || !pending[d.ID] {
				t.Fatalf("claim after kill -9 returned %s (claimed before: %v, pending: %v)", d.ID, claimed[d.ID], pending[d.ID])
			}
			claimed[d.ID] = true
		}
	}
	if len(claimed) != len(pending) {
		t.Fatalf("claim after kill -9 returned %d deliveries, %d are pending", len(claimed), len(pending))
	}
	t.Logf("%d acknowledged enqueues and %d acknowledged deliveries survived kill -9; %d pending all claimable", len(enqueued), len(delivered), len(pending))
}

// TestBadgerOutboxStaleDueEntry checks that due index entries no pending
// record stands behind never block claims: more of them than a claim
// takes, ahead of a real delivery, are dropped and the delivery claimed.
func TestBadgerOutboxStaleDueEntry(t *testing.T) {
	ctx := context.Background()
	b := openTestBadger(t, BadgerOptions{Dir: t.TempDir()})
	now := time.Now()
	err := b.update(ctx, nil, func(txn *badger.Txn) error {
		for i := range 5 {
			if err := txn.Set(dueKey(now.Add(-time.Hour), fmt.Sprintf("dlv_ghost_%d", i)), dueValue(time.Time{}, "wh")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	d := outboxDelivery("dlv_real", "wh", now, now)
	if err := b.EnqueueDeliveries(ctx, []events.Delivery{d}); err != nil {
		t.Fatal(err)
	}
	got, err := b.ClaimDeliveries(ctx, now, now.Add(time.Minute), 2)
	if err != nil || len(got) != 1 || got[0].ID != d.ID {
		t.Fatalf("claim behind stale entries: %v, %v; want %s", got, err, d.ID)
	}
	if ids, err := b.dueDeliveries(ctx, now, 100); err != nil || len(ids) != 0 {
		t.Fatalf("due entries left: %v, %v; want none (the real one is leased)", ids, err)
	}
}
