package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/events"
)

// RunOutbox checks events.Outbox: deliveries and webhook subscriptions.
func RunOutbox(t *testing.T, newStore NewStore) {
	runCases(t, newStore, []testCase{
		{"EnqueueGetList", testOutboxEnqueueGetList},
		{"ListLimit", testOutboxListLimit},
		{"StoresCopies", testOutboxStoresCopies},
		{"EnqueueInvalid", testOutboxEnqueueInvalid},
		{"EnqueueAllOrNone", testOutboxEnqueueAllOrNone},
		{"ClaimDue", testOutboxClaimDue},
		{"ClaimOrderAndLimit", testOutboxClaimOrderAndLimit},
		{"ClaimLease", testOutboxClaimLease},
		{"ClaimInvalid", testOutboxClaimInvalid},
		{"Update", testOutboxUpdate},
		{"UpdateInvalid", testOutboxUpdateInvalid},
		{"ConcurrentClaims", testOutboxConcurrentClaims},
		{"Webhooks", testOutboxWebhooks},
		{"WebhookInvalid", testOutboxWebhookInvalid},
		{"DeleteWebhookFailsPending", testOutboxDeleteWebhookFailsPending},
		{"Retention", testOutboxRetention},
		{"RedeliverAfterFinish", testOutboxRedeliver},
	})
}

// RunOutboxInstances checks that two instances sharing one store (two
// processes on one database) never claim the same delivery: open returns
// two independent handles on one new, empty store, whose expiry follows
// now. Only backends that are Shared run it.
func RunOutboxInstances(t *testing.T, open func(t *testing.T, now func() time.Time) (first, second events.Outbox)) {
	clock := NewClock()
	a, b := open(t, clock.Now)
	claimAll(t, clock, a, []events.Outbox{a, b})
}

func sampleDelivery(id, webhook string, clock *Clock, dueIn time.Duration) events.Delivery {
	now := clock.Now()
	return events.Delivery{
		ID:          id,
		WebhookID:   webhook,
		URL:         "https://hooks.example.com/" + webhook,
		EventID:     "evt_" + id,
		EventType:   events.AgentRegistered,
		Payload:     []byte(`{"type":"agent.registered","data":{"agent_id":"` + id + `"}}`),
		State:       events.DeliveryPending,
		CreatedAt:   now,
		NextAttempt: now.Add(dueIn),
	}
}

func sampleWebhook(id string, clock *Clock) events.Webhook {
	return events.Webhook{
		ID:        id,
		URL:       "https://hooks.example.com/" + id,
		Events:    []string{events.AgentRegistered, events.TokenRevoked},
		Secret:    "whsec_c2VjcmV0LW9mLQ==" + id,
		Source:    events.WebhookFromAdmin,
		CreatedAt: clock.Now(),
	}
}

func deliveryDiff(got, want events.Delivery) string {
	var d diff
	d.str("ID", got.ID, want.ID)
	d.str("WebhookID", got.WebhookID, want.WebhookID)
	d.str("URL", got.URL, want.URL)
	d.str("EventID", got.EventID, want.EventID)
	d.str("EventType", got.EventType, want.EventType)
	d.check("Payload", bytes.Equal(got.Payload, want.Payload), string(got.Payload), string(want.Payload))
	d.str("State", got.State, want.State)
	d.check("Attempts", got.Attempts == want.Attempts, got.Attempts, want.Attempts)
	d.time("NextAttempt", got.NextAttempt, want.NextAttempt)
	d.time("LastAttempt", got.LastAttempt, want.LastAttempt)
	d.check("LastStatus", got.LastStatus == want.LastStatus, got.LastStatus, want.LastStatus)
	d.str("LastError", got.LastError, want.LastError)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.time("LeaseUntil", got.LeaseUntil, want.LeaseUntil)
	return d.String()
}

func webhookDiff(got, want events.Webhook) string {
	var d diff
	d.str("ID", got.ID, want.ID)
	d.str("URL", got.URL, want.URL)
	d.strs("Events", got.Events, want.Events)
	d.str("Secret", got.Secret, want.Secret)
	d.str("Source", got.Source, want.Source)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	return d.String()
}

func mustEnqueue(t *testing.T, s Store, ds ...events.Delivery) {
	t.Helper()
	if err := s.EnqueueDeliveries(ctx, ds); err != nil {
		t.Fatalf("EnqueueDeliveries(%v): %v", deliveryIDs(ds), err)
	}
}

func mustClaim(t *testing.T, s events.Outbox, now, leaseUntil time.Time, limit int) []events.Delivery {
	t.Helper()
	got, err := s.ClaimDeliveries(ctx, now, leaseUntil, limit)
	if err != nil {
		t.Fatalf("ClaimDeliveries(%v, %v, %d): %v", now, leaseUntil, limit, err)
	}
	return got
}

func mustUpdateDelivery(t *testing.T, s Store, d events.Delivery) {
	t.Helper()
	if err := s.UpdateDelivery(ctx, d); err != nil {
		t.Fatalf("UpdateDelivery(%s): %v", d.ID, err)
	}
}

// wantDelivery checks what GetDelivery returns.
func wantDelivery(t *testing.T, s Store, want events.Delivery) {
	t.Helper()
	got, err := s.GetDelivery(ctx, want.ID)
	if err != nil {
		t.Fatalf("GetDelivery(%s): %v", want.ID, err)
	}
	if d := deliveryDiff(got, want); d != "" {
		t.Fatalf("GetDelivery(%s): %s", want.ID, d)
	}
}

func wantNoDelivery(t *testing.T, s Store, id string) {
	t.Helper()
	if d, err := s.GetDelivery(ctx, id); !errors.Is(err, events.ErrDeliveryNotFound) {
		t.Fatalf("GetDelivery(%q): got %+v, %v; want ErrDeliveryNotFound", id, d, err)
	}
}

// wantDeliveries checks the deliveries returned by a call, in order.
func wantDeliveries(t *testing.T, what string, got []events.Delivery, want ...events.Delivery) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s returned %v, want %v", what, deliveryIDs(got), deliveryIDs(want))
	}
	for i := range got {
		if d := deliveryDiff(got[i], want[i]); d != "" {
			t.Fatalf("%s[%d] (%s): %s", what, i, want[i].ID, d)
		}
	}
}

func wantList(t *testing.T, s Store, limit int, want ...events.Delivery) {
	t.Helper()
	got, err := s.ListDeliveries(ctx, limit)
	if err != nil {
		t.Fatalf("ListDeliveries(%d): %v", limit, err)
	}
	wantDeliveries(t, fmt.Sprintf("ListDeliveries(%d)", limit), got, want...)
}

func wantWebhooks(t *testing.T, s Store, want ...events.Webhook) {
	t.Helper()
	got, err := s.ListWebhooks(ctx)
	if err != nil {
		t.Fatalf("ListWebhooks: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("ListWebhooks returned %d webhooks %+v, want %d", len(got), got, len(want))
	}
	for i := range got {
		if d := webhookDiff(got[i], want[i]); d != "" {
			t.Fatalf("ListWebhooks[%d] (%s): %s", i, want[i].ID, d)
		}
	}
}

func deliveryIDs(ds []events.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

// leased is d as a claim until leaseUntil returns it.
func leased(d events.Delivery, leaseUntil time.Time) events.Delivery {
	d.LeaseUntil = leaseUntil
	return d
}

func testOutboxEnqueueGetList(t *testing.T, s Store, clock *Clock) {
	oldest := sampleDelivery("dlv_oldest", "wh_a", clock, 0)
	clock.Advance(time.Second)
	// Every field a delivery can be enqueued with comes back.
	full := sampleDelivery("dlv_full", "wh_b", clock, time.Minute)
	full.EventType = events.TokenRevoked
	full.Attempts = 2
	full.LastAttempt = clock.Now().Add(-time.Hour)
	full.LastStatus = 503
	full.LastError = "HTTP 503 from the receiver"
	full.LeaseUntil = clock.Now().Add(30 * time.Second)
	clock.Advance(time.Second)
	// One event to two webhooks: the same creation time, listed by id.
	twinB := sampleDelivery("dlv_twin_b", "wh_b", clock, 0)
	twinA := sampleDelivery("dlv_twin_a", "wh_a", clock, 0)
	twinA.EventID, twinB.EventID = "evt_twin", "evt_twin"

	mustEnqueue(t, s, full, oldest)
	mustEnqueue(t, s, twinB, twinA)
	for _, d := range []events.Delivery{oldest, full, twinA, twinB} {
		wantDelivery(t, s, d)
	}
	wantList(t, s, 0, twinA, twinB, full, oldest)
	wantList(t, s, 2, twinA, twinB)
	wantList(t, s, 10, twinA, twinB, full, oldest)

	wantNoDelivery(t, s, "dlv_unknown")
	wantNoDelivery(t, s, "")
	// An empty batch stores nothing and is no error.
	mustEnqueue(t, s)
	wantList(t, s, 0, twinA, twinB, full, oldest)
}

func testOutboxListLimit(t *testing.T, s Store, clock *Clock) {
	var all []events.Delivery
	for i := range 105 {
		d := sampleDelivery(fmt.Sprintf("dlv_%03d", i), "wh_a", clock, 0)
		d.CreatedAt = d.CreatedAt.Add(time.Duration(i) * time.Millisecond)
		all = append(all, d)
	}
	mustEnqueue(t, s, all...)
	newest := slices.Clone(all)
	slices.Reverse(newest)
	wantList(t, s, 0, newest[:100]...)
	wantList(t, s, -1, newest[:100]...)
	wantList(t, s, 105, newest...)
	wantList(t, s, 1000, newest...)
}

func testOutboxStoresCopies(t *testing.T, s Store, clock *Clock) {
	d := sampleDelivery("dlv_copy", "wh_a", clock, 0)
	want := d
	want.Payload = bytes.Clone(d.Payload)
	batch := []events.Delivery{d}
	mustEnqueue(t, s, batch...)
	d.Payload[0] = 'X'
	batch[0].URL = "https://changed.example.com/"
	got, err := s.GetDelivery(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	got.Payload[1] = 'Y'
	wantDelivery(t, s, want)
	claimed := mustClaim(t, s, clock.Now(), clock.Now().Add(time.Minute), 1)
	if len(claimed) != 1 {
		t.Fatalf("claimed %v, want %s", deliveryIDs(claimed), d.ID)
	}
	claimed[0].Payload[2] = 'Z'
	wantDelivery(t, s, leased(want, clock.Now().Add(time.Minute)))

	w := sampleWebhook("wh_copy", clock)
	wantW := w
	wantW.Events = slices.Clone(w.Events)
	if err := s.CreateWebhook(ctx, w); err != nil {
		t.Fatal(err)
	}
	w.Events[0] = "changed"
	list, err := s.ListWebhooks(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListWebhooks: %v, %v", list, err)
	}
	list[0].Events[1] = "changed"
	wantWebhooks(t, s, wantW)
}

func testOutboxEnqueueInvalid(t *testing.T, s Store, clock *Clock) {
	valid := sampleDelivery("dlv_valid", "wh_a", clock, 0)
	for name, change := range map[string]func(*events.Delivery){
		"empty id":           func(d *events.Delivery) { d.ID = "" },
		"non-UTF-8 id":       func(d *events.Delivery) { d.ID = "dlv_\xff" },
		"empty webhook id":   func(d *events.Delivery) { d.WebhookID = "" },
		"empty URL":          func(d *events.Delivery) { d.URL = "" },
		"empty event id":     func(d *events.Delivery) { d.EventID = "" },
		"empty event type":   func(d *events.Delivery) { d.EventType = "" },
		"nil payload":        func(d *events.Delivery) { d.Payload = nil },
		"empty payload":      func(d *events.Delivery) { d.Payload = []byte{} },
		"state delivered":    func(d *events.Delivery) { d.State = events.DeliveryDelivered },
		"state failed":       func(d *events.Delivery) { d.State = events.DeliveryFailed },
		"unknown state":      func(d *events.Delivery) { d.State = "sent" },
		"negative attempts":  func(d *events.Delivery) { d.Attempts = -1 },
		"no creation time":   func(d *events.Delivery) { d.CreatedAt = time.Time{} },
		"no next attempt":    func(d *events.Delivery) { d.NextAttempt = time.Time{} },
		"twice in one batch": nil,
	} {
		d := valid
		batch := []events.Delivery{d, d}
		if change != nil {
			change(&d)
			batch = []events.Delivery{d}
		}
		err := s.EnqueueDeliveries(ctx, batch)
		if err == nil || errors.Is(err, events.ErrDeliveryNotFound) {
			t.Errorf("EnqueueDeliveries with %s: got %v, want an invalid-input error", name, err)
		}
	}
	wantList(t, s, 0)

	// An empty state means pending.
	d := valid
	d.State = ""
	mustEnqueue(t, s, d)
	wantDelivery(t, s, valid)
	// An id already stored.
	again := sampleDelivery("dlv_valid", "wh_other", clock, time.Hour)
	if err := s.EnqueueDeliveries(ctx, []events.Delivery{again}); err == nil || errors.Is(err, events.ErrDeliveryNotFound) {
		t.Fatalf("EnqueueDeliveries of an id already stored: got %v, want an invalid-input error", err)
	}
	wantDelivery(t, s, valid)
}

func testOutboxEnqueueAllOrNone(t *testing.T, s Store, clock *Clock) {
	first := sampleDelivery("dlv_first", "wh_a", clock, 0)
	mustEnqueue(t, s, first)
	// The store, not a check beforehand, finds the clash: the new ones
	// before and after it must not be stored either.
	before := sampleDelivery("dlv_before", "wh_a", clock, 0)
	after := sampleDelivery("dlv_after", "wh_a", clock, 0)
	clash := sampleDelivery("dlv_first", "wh_b", clock, 0)
	if err := s.EnqueueDeliveries(ctx, []events.Delivery{before, clash, after}); err == nil {
		t.Fatal("EnqueueDeliveries with an id already stored succeeded")
	}
	wantNoDelivery(t, s, before.ID)
	wantNoDelivery(t, s, after.ID)
	wantList(t, s, 0, first)
	wantDeliveries(t, "ClaimDeliveries", mustClaim(t, s, clock.Now(), clock.Now().Add(time.Minute), 0),
		leased(first, clock.Now().Add(time.Minute)))

	invalid := sampleDelivery("dlv_invalid", "wh_a", clock, 0)
	invalid.Payload = nil
	if err := s.EnqueueDeliveries(ctx, []events.Delivery{before, invalid}); err == nil {
		t.Fatal("EnqueueDeliveries with a nil payload succeeded")
	}
	wantNoDelivery(t, s, before.ID)
}

func testOutboxClaimDue(t *testing.T, s Store, clock *Clock) {
	now := clock.Now()
	lease := now.Add(30 * time.Second)
	early := sampleDelivery("dlv_early", "wh_a", clock, -2*time.Minute)
	late := sampleDelivery("dlv_late", "wh_a", clock, -time.Minute)
	exact := sampleDelivery("dlv_exact", "wh_a", clock, 0)                 // due at now itself
	future := sampleDelivery("dlv_future", "wh_a", clock, time.Nanosecond) // due just after now
	held := sampleDelivery("dlv_held", "wh_a", clock, -3*time.Minute)
	held.LeaseUntil = now.Add(time.Nanosecond) // someone else's lease, not over yet
	ended := sampleDelivery("dlv_ended", "wh_a", clock, -90*time.Second)
	ended.LeaseUntil = now // a lease ends at its end, as an expiry does
	done := sampleDelivery("dlv_done", "wh_a", clock, -time.Hour)
	failed := sampleDelivery("dlv_failed", "wh_a", clock, -time.Hour)
	mustEnqueue(t, s, future, late, held, done, exact, early, failed, ended)
	for _, f := range []struct {
		d     *events.Delivery
		state string
	}{{&done, events.DeliveryDelivered}, {&failed, events.DeliveryFailed}} {
		f.d.State, f.d.Attempts, f.d.LastAttempt, f.d.LastStatus = f.state, 1, now, 200
		f.d.NextAttempt = time.Time{}
		mustUpdateDelivery(t, s, *f.d)
	}

	got := mustClaim(t, s, now, lease, 100)
	wantDeliveries(t, "ClaimDeliveries", got, leased(early, lease), leased(ended, lease), leased(late, lease), leased(exact, lease))
	for _, d := range got {
		wantDelivery(t, s, d)
	}
	wantDelivery(t, s, future)
	wantDelivery(t, s, held)
	wantDelivery(t, s, done)
}

func testOutboxClaimOrderAndLimit(t *testing.T, s Store, clock *Clock) {
	now := clock.Now()
	lease := now.Add(time.Minute)
	var due []events.Delivery
	// Created in one order, due in another; two share a next attempt and
	// go by id.
	for i, dueIn := range []time.Duration{-time.Second, -5 * time.Second, -3 * time.Second, -3 * time.Second, -4 * time.Second} {
		due = append(due, sampleDelivery(fmt.Sprintf("dlv_%d", i), "wh_a", clock, dueIn))
	}
	mustEnqueue(t, s, due...)
	order := []events.Delivery{due[1], due[4], due[2], due[3], due[0]}
	wantDeliveries(t, "ClaimDeliveries(limit 2)", mustClaim(t, s, now, lease, 2), leased(order[0], lease), leased(order[1], lease))
	wantDeliveries(t, "ClaimDeliveries(limit 1)", mustClaim(t, s, now, lease, 1), leased(order[2], lease))
	// limit <= 0 means 100.
	wantDeliveries(t, "ClaimDeliveries(limit 0)", mustClaim(t, s, now, lease, 0), leased(order[3], lease), leased(order[4], lease))
	wantDeliveries(t, "ClaimDeliveries with everything leased", mustClaim(t, s, now, lease, 0))

	// The default limit of 100.
	var many []events.Delivery
	for i := range 103 {
		many = append(many, sampleDelivery(fmt.Sprintf("dlv_many_%03d", i), "wh_a", clock, -time.Hour+time.Duration(i)))
	}
	mustEnqueue(t, s, many...)
	if got := mustClaim(t, s, now, lease, -1); len(got) != 100 || got[0].ID != many[0].ID || got[99].ID != many[99].ID {
		t.Fatalf("ClaimDeliveries(limit -1) returned %d: %v, want the 100 oldest", len(got), deliveryIDs(got))
	}
}

func testOutboxClaimLease(t *testing.T, s Store, clock *Clock) {
	now := clock.Now()
	d := sampleDelivery("dlv_lease", "wh_a", clock, 0)
	mustEnqueue(t, s, d)
	lease := now.Add(30 * time.Second)
	wantDeliveries(t, "first claim", mustClaim(t, s, now, lease, 10), leased(d, lease))
	wantDeliveries(t, "claim while leased", mustClaim(t, s, now, now.Add(time.Hour), 10))
	wantDeliveries(t, "claim just before the lease ends", mustClaim(t, s, lease.Add(-time.Nanosecond), lease.Add(time.Minute), 10))
	// The caller's clock decides, not the store's.
	clock.Advance(time.Hour)
	wantDeliveries(t, "claim by a caller whose clock is before the lease end", mustClaim(t, s, now.Add(time.Second), lease.Add(time.Minute), 10))
	second := lease.Add(time.Minute)
	wantDeliveries(t, "claim when the lease ended", mustClaim(t, s, lease, second, 10), leased(d, second))
	wantDelivery(t, s, leased(d, second))
	wantDeliveries(t, "claim while leased again", mustClaim(t, s, lease, second.Add(time.Hour), 10))
}

func testOutboxClaimInvalid(t *testing.T, s Store, clock *Clock) {
	d := sampleDelivery("dlv_c", "wh_a", clock, 0)
	mustEnqueue(t, s, d)
	now := clock.Now()
	for name, args := range map[string][2]time.Time{
		"lease ending now":            {now, now},
		"lease ending before now":     {now, now.Add(-time.Second)},
		"zero now":                    {{}, now},
		"zero now and zero lease end": {{}, {}},
	} {
		got, err := s.ClaimDeliveries(ctx, args[0], args[1], 10)
		if err == nil || len(got) != 0 {
			t.Errorf("ClaimDeliveries with %s: got %v, %v; want an invalid-input error", name, deliveryIDs(got), err)
		}
	}
	wantDelivery(t, s, d)
}

func testOutboxUpdate(t *testing.T, s Store, clock *Clock) {
	now := clock.Now()
	d := sampleDelivery("dlv_upd", "wh_a", clock, 0)
	other := sampleDelivery("dlv_other", "wh_a", clock, 0)
	mustEnqueue(t, s, d, other)
	lease := now.Add(time.Minute)
	mustClaim(t, s, now, lease, 0)

	// A failed attempt: retry later, lease given back. The fields that
	// never change are ignored even when the caller sends others.
	retry := d
	retry.Attempts = 1
	retry.NextAttempt = now.Add(10 * time.Second)
	retry.LastAttempt = now.Add(time.Second)
	retry.LastStatus = 500
	retry.LastError = "HTTP 500"
	retry.LeaseUntil = time.Time{}
	sent := retry
	sent.URL, sent.Payload, sent.WebhookID, sent.EventID = "https://elsewhere.example.com/", []byte("other"), "wh_z", "evt_z"
	sent.EventType, sent.CreatedAt = events.KeyRotated, now.Add(time.Hour)
	mustUpdateDelivery(t, s, sent)
	wantDelivery(t, s, retry)
	wantDelivery(t, s, leased(other, lease))
	wantList(t, s, 0, leased(other, lease), retry)
	// Not due before its next attempt, due at it.
	wantDeliveries(t, "claim before the retry", mustClaim(t, s, now.Add(9*time.Second), now.Add(time.Hour), 0))
	lease2 := now.Add(time.Hour)
	wantDeliveries(t, "claim at the retry", mustClaim(t, s, now.Add(10*time.Second), lease2, 0), leased(retry, lease2))

	// Delivered: never claimed again, whatever the clock.
	delivered := retry
	delivered.State = events.DeliveryDelivered
	delivered.Attempts = 2
	delivered.NextAttempt = time.Time{}
	delivered.LastAttempt = now.Add(11 * time.Second)
	delivered.LastStatus = 204
	delivered.LastError = ""
	delivered.LeaseUntil = time.Time{}
	mustUpdateDelivery(t, s, delivered)
	wantDelivery(t, s, delivered)
	wantDeliveries(t, "claim after delivery", mustClaim(t, s, now.Add(48*time.Hour), now.Add(49*time.Hour), 0), leased(other, now.Add(49*time.Hour)))

	// Unknown ids.
	for _, id := range []string{"dlv_unknown", ""} {
		u := delivered
		u.ID = id
		if err := s.UpdateDelivery(ctx, u); !errors.Is(err, events.ErrDeliveryNotFound) {
			t.Fatalf("UpdateDelivery(%q): got %v, want ErrDeliveryNotFound", id, err)
		}
		wantNoDelivery(t, s, id)
	}
}

func testOutboxUpdateInvalid(t *testing.T, s Store, clock *Clock) {
	d := sampleDelivery("dlv_inv", "wh_a", clock, 0)
	mustEnqueue(t, s, d)
	for name, change := range map[string]func(*events.Delivery){
		"empty state":               func(d *events.Delivery) { d.State = "" },
		"unknown state":             func(d *events.Delivery) { d.State = "sent" },
		"negative attempts":         func(d *events.Delivery) { d.Attempts = -1 },
		"pending without next time": func(d *events.Delivery) { d.NextAttempt = time.Time{} },
	} {
		u := d
		u.Attempts = 1
		change(&u)
		if err := s.UpdateDelivery(ctx, u); err == nil || errors.Is(err, events.ErrDeliveryNotFound) {
			t.Errorf("UpdateDelivery with %s: got %v, want an invalid-input error", name, err)
		}
	}
	wantDelivery(t, s, d)
}

func testOutboxConcurrentClaims(t *testing.T, s Store, clock *Clock) {
	claimAll(t, clock, s, []events.Outbox{s})
}

// claimAll enqueues deliveries through enqueue and has racers goroutines,
// spread over claimers, claim them a few at a time until none is left: no
// delivery may be claimed twice, and every one must be claimed.
func claimAll(t *testing.T, clock *Clock, enqueue events.Outbox, claimers []events.Outbox) {
	t.Helper()
	const n = 120
	var want []events.Delivery
	for i := range n {
		want = append(want, sampleDelivery(fmt.Sprintf("dlv_race_%03d", i), "wh_a", clock, -time.Duration(i)*time.Millisecond))
	}
	if err := enqueue.EnqueueDeliveries(ctx, want); err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	lease := now.Add(time.Hour)
	var (
		mu  sync.Mutex
		got = map[string]int{}
	)
	errs := race(racers, func(i int) error {
		s := claimers[i%len(claimers)]
		for {
			ds, err := s.ClaimDeliveries(ctx, now, lease, 3)
			if err != nil {
				return err
			}
			if len(ds) == 0 {
				return nil
			}
			mu.Lock()
			for _, d := range ds {
				got[d.ID]++
				if !d.LeaseUntil.Equal(lease) {
					mu.Unlock()
					return fmt.Errorf("claimed %s with lease %v, want %v", d.ID, d.LeaseUntil, lease)
				}
			}
			mu.Unlock()
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	// A claimer may give up while others still hold rows it would have
	// taken; whatever is left must be claimable now, once.
	for _, d := range mustClaim(t, claimers[0], now, lease, 0) {
		got[d.ID]++
	}
	for _, d := range want {
		if c := got[d.ID]; c != 1 {
			t.Errorf("%s was claimed %d times, want exactly once", d.ID, c)
		}
	}
	if len(got) != n {
		t.Errorf("claimed %d distinct deliveries, want %d", len(got), n)
	}
}

func testOutboxWebhooks(t *testing.T, s Store, clock *Clock) {
	wantWebhooks(t, s)
	older := sampleWebhook("wh_older", clock)
	clock.Advance(time.Second)
	newer := sampleWebhook("wh_newer", clock)
	newer.Events = []string{events.KeyRotated}
	newer.Source = events.WebhookFromConfig
	twin := sampleWebhook("wh_a_twin", clock) // created with newer: listed by id
	for _, w := range []events.Webhook{newer, older, twin} {
		if err := s.CreateWebhook(ctx, w); err != nil {
			t.Fatalf("CreateWebhook(%s): %v", w.ID, err)
		}
	}
	wantWebhooks(t, s, older, twin, newer)

	dup := sampleWebhook("wh_older", clock)
	dup.URL = "https://impostor.example.com/"
	if err := s.CreateWebhook(ctx, dup); err == nil || errors.Is(err, events.ErrDeliveryNotFound) {
		t.Fatalf("CreateWebhook of an id already stored: got %v, want an invalid-input error", err)
	}
	wantWebhooks(t, s, older, twin, newer)

	if err := s.DeleteWebhook(ctx, "wh_older"); err != nil {
		t.Fatalf("DeleteWebhook: %v", err)
	}
	wantWebhooks(t, s, twin, newer)
	for _, id := range []string{"wh_older", "wh_unknown", ""} {
		if err := s.DeleteWebhook(ctx, id); !errors.Is(err, events.ErrDeliveryNotFound) {
			t.Fatalf("DeleteWebhook(%q): got %v, want ErrDeliveryNotFound", id, err)
		}
	}
	// The id is free again.
	if err := s.CreateWebhook(ctx, older); err != nil {
		t.Fatalf("CreateWebhook after DeleteWebhook: %v", err)
	}
	wantWebhooks(t, s, older, twin, newer)
}

func testOutboxWebhookInvalid(t *testing.T, s Store, clock *Clock) {
	for name, change := range map[string]func(*events.Webhook){
		"empty id":         func(w *events.Webhook) { w.ID = "" },
		"empty URL":        func(w *events.Webhook) { w.URL = "" },
		"no secret":        func(w *events.Webhook) { w.Secret = "" },
		"no events":        func(w *events.Webhook) { w.Events = nil },
		"an empty event":   func(w *events.Webhook) { w.Events = []string{events.AgentRegistered, ""} },
		"no creation time": func(w *events.Webhook) { w.CreatedAt = time.Time{} },
	} {
		w := sampleWebhook("wh_invalid", clock)
		change(&w)
		if err := s.CreateWebhook(ctx, w); err == nil || errors.Is(err, events.ErrDeliveryNotFound) {
			t.Errorf("CreateWebhook with %s: got %v, want an invalid-input error", name, err)
		}
	}
	wantWebhooks(t, s)
}

func testOutboxDeleteWebhookFailsPending(t *testing.T, s Store, clock *Clock) {
	now := clock.Now()
	gone, kept := sampleWebhook("wh_gone", clock), sampleWebhook("wh_kept", clock)
	for _, w := range []events.Webhook{gone, kept} {
		if err := s.CreateWebhook(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	waiting := sampleDelivery("dlv_waiting", gone.ID, clock, time.Minute)
	waiting.Attempts, waiting.LastAttempt, waiting.LastStatus, waiting.LastError = 1, now.Add(-time.Minute), 500, "HTTP 500"
	inFlight := sampleDelivery("dlv_in_flight", gone.ID, clock, 0)
	delivered := sampleDelivery("dlv_delivered", gone.ID, clock, 0)
	other := sampleDelivery("dlv_other", kept.ID, clock, 0)
	mustEnqueue(t, s, waiting, inFlight, delivered, other)
	delivered.State, delivered.Attempts, delivered.NextAttempt, delivered.LastAttempt, delivered.LastStatus = events.DeliveryDelivered, 1, time.Time{}, now, 200
	mustUpdateDelivery(t, s, delivered)
	lease := now.Add(time.Minute)
	wantDeliveries(t, "claim", mustClaim(t, s, now, lease, 1), leased(inFlight, lease))

	if err := s.DeleteWebhook(ctx, gone.ID); err != nil {
		t.Fatalf("DeleteWebhook: %v", err)
	}
	wantWebhooks(t, s, kept)
	for _, d := range []events.Delivery{waiting, inFlight} {
		d.State, d.LastError = events.DeliveryFailed, "webhook deleted"
		d.NextAttempt, d.LeaseUntil = time.Time{}, time.Time{}
		wantDelivery(t, s, d)
	}
	wantDelivery(t, s, delivered)
	wantDelivery(t, s, other)
	wantDeliveries(t, "claim after DeleteWebhook", mustClaim(t, s, now.Add(time.Hour), now.Add(2*time.Hour), 0), leased(other, now.Add(2*time.Hour)))
}

func testOutboxRetention(t *testing.T, s Store, clock *Clock) {
	start := clock.Now()
	w := sampleWebhook("wh_r", clock)
	if err := s.CreateWebhook(ctx, w); err != nil {
		t.Fatal(err)
	}
	pending := sampleDelivery("dlv_pending", "wh_other", clock, 30*24*time.Hour)
	delivered := sampleDelivery("dlv_delivered", "wh_other", clock, 0)
	failed := sampleDelivery("dlv_failed", "wh_other", clock, 0)
	unattempted := sampleDelivery("dlv_unattempted", w.ID, clock, time.Hour)
	mustEnqueue(t, s, pending, delivered, failed, unattempted)
	delivered.State, delivered.Attempts, delivered.NextAttempt, delivered.LastAttempt, delivered.LastStatus = events.DeliveryDelivered, 1, time.Time{}, start, 200
	failed.State, failed.Attempts, failed.NextAttempt, failed.LastAttempt, failed.LastError = events.DeliveryFailed, 9, time.Time{}, start.Add(-time.Hour), "timeout"
	mustUpdateDelivery(t, s, delivered)
	mustUpdateDelivery(t, s, failed)
	// Failed by DeleteWebhook an hour later, never attempted: its
	// retention runs from then.
	clock.Advance(time.Hour)
	if err := s.DeleteWebhook(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	unattempted.State, unattempted.LastError, unattempted.NextAttempt = events.DeliveryFailed, "webhook deleted", time.Time{}

	week := events.DeliveryRetention
	clock.Advance(week - 2*time.Hour - time.Nanosecond) // start + week - 1h - 1ns
	wantDelivery(t, s, failed)
	wantList(t, s, 0, delivered, failed, pending, unattempted) // created at once: by id

	clock.Advance(time.Nanosecond) // a week after failed's last attempt
	wantNoDelivery(t, s, failed.ID)
	wantList(t, s, 0, delivered, pending, unattempted)
	if err := s.UpdateDelivery(ctx, failed); !errors.Is(err, events.ErrDeliveryNotFound) {
		t.Fatalf("UpdateDelivery after the retention: got %v, want ErrDeliveryNotFound", err)
	}

	clock.Advance(time.Hour) // a week after delivered's last attempt
	wantNoDelivery(t, s, delivered.ID)
	wantDelivery(t, s, unattempted)
	wantList(t, s, 0, pending, unattempted)

	clock.Advance(time.Hour) // a week after the webhook was deleted
	wantNoDelivery(t, s, unattempted.ID)
	// Pending deliveries are never forgotten.
	clock.Advance(365 * 24 * time.Hour)
	wantDelivery(t, s, pending)
	wantList(t, s, 0, pending)

	// The id of a forgotten delivery may be used again.
	reused := sampleDelivery(delivered.ID, "wh_new", clock, 0)
	mustEnqueue(t, s, reused)
	wantDelivery(t, s, reused)
	wantList(t, s, 0, reused, pending)
}

func testOutboxRedeliver(t *testing.T, s Store, clock *Clock) {
	start := clock.Now()
	d := sampleDelivery("dlv_again", "wh_a", clock, 0)
	mustEnqueue(t, s, d)
	d.State, d.Attempts, d.NextAttempt, d.LastAttempt, d.LastStatus, d.LastError = events.DeliveryFailed, 12, time.Time{}, start, 0, "connection refused"
	mustUpdateDelivery(t, s, d)
	// An operator asks for it again: pending once more, and kept past the
	// retention it had as a failed delivery.
	clock.Advance(time.Hour)
	d.State, d.NextAttempt = events.DeliveryPending, clock.Now()
	mustUpdateDelivery(t, s, d)
	clock.Advance(events.DeliveryRetention)
	wantDelivery(t, s, d)
	lease := clock.Now().Add(time.Minute)
	wantDeliveries(t, "claim of the redelivery", mustClaim(t, s, clock.Now(), lease, 0), leased(d, lease))
}
