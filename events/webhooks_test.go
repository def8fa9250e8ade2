package events_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/storage"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// TestSignStandardVector checks Sign against the example of the Standard
// Webhooks specification's reference libraries.
func TestSignStandardVector(t *testing.T) {
	got, err := events.Sign(testSecret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

func TestValidateWebhookURL(t *testing.T) {
	ok := []string{
		"https://hooks.example.com/in", "https://hooks.example.com:8443/in?token=x", "http://127.0.0.1:9000/hook",
		"http://[::1]:9000/", "http://localhost/hook", "http://LOCALHOST:80/", "https://10.0.0.1/x",
	}
	for _, u := range ok {
		if err := events.ValidateWebhookURL(u); err != nil {
			t.Errorf("ValidateWebhookURL(%q) = %v", u, err)
		}
	}
	bad := map[string]string{
		"":                                       "required",
		"http://hooks.example.com/in":            "https",
		"http://127.0.0.1.nip.io/in":             "https",
		"http://10.0.0.1/in":                     "https",
		"ftp://127.0.0.1/x":                      "https",
		"hooks.example.com/in":                   "https",
		"https:///in":                            "host",
		"https://user:pw@hooks.example/x":        "credentials",
		"https://hooks.example.com/#frag":        "fragment",
		"https://hooks.example.com:0/in":         "port",
		"mailto:a@b":                             "URL",
		"https://h/" + strings.Repeat("a", 2100): "longer",
	}
	for u, word := range bad {
		err := events.ValidateWebhookURL(u)
		var ie *events.InvalidWebhookError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), word) {
			t.Errorf("ValidateWebhookURL(%.40q) = %v, want an error with %q", u, err, word)
		}
	}
}

func TestValidateSecretAndEvents(t *testing.T) {
	if err := events.ValidateSecret(testSecret); err != nil {
		t.Errorf("standard secret refused: %v", err)
	}
	s := events.NewSecret()
	if err := events.ValidateSecret(s); err != nil || !strings.HasPrefix(s, "whsec_") || s == events.NewSecret() {
		t.Errorf("NewSecret() = %q: %v", s, err)
	}
	for _, bad := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_!!!notbase64", "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 16)),
		"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65))} {
		err := events.ValidateSecret(bad)
		if err == nil {
			t.Errorf("ValidateSecret(%q) accepted", bad)
		} else if len(bad) > 10 && strings.Contains(err.Error(), bad[6:]) {
			t.Errorf("the message repeats the secret: %v", err)
		}
	}
	if err := events.ValidateWebhookEvents([]string{events.AgentRegistered, events.KeyRotated}); err != nil {
		t.Error(err)
	}
	for _, bad := range [][]string{nil, {"token.issued"}, {"agent.registered", "agent.registered"}, {""}} {
		if err := events.ValidateWebhookEvents(bad); err == nil {
			t.Errorf("ValidateWebhookEvents(%q) accepted", bad)
		}
	}
	a := events.ConfigWebhookID("https://h/x", []string{events.AgentRegistered, events.KeyRotated})
	b := events.ConfigWebhookID("https://h/x", []string{events.KeyRotated, events.AgentRegistered})
	c := events.ConfigWebhookID("https://h/y", []string{events.AgentRegistered, events.KeyRotated})
	if a != b || a == c || !strings.HasPrefix(a, "cfg_") {
		t.Errorf("ConfigWebhookID: %s %s %s", a, b, c)
	}
}

// receiver is a webhook endpoint that verifies every request as a
// Standard Webhooks library does (its own HMAC, not events.Sign) and
// answers with the next status of its script (200 once it runs out).
type receiver struct {
	*httptest.Server
	secret string
	mu     sync.Mutex
	script []int
	got    []received
	bad    []string
	hold   chan struct{} // when set, requests wait on it
}

type received struct {
	id, typ string
	body    map[string]any
}

func newReceiver(t *testing.T, secret string, script ...int) *receiver {
	rc := &receiver{secret: secret, script: script}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if rc.hold != nil {
		select {
		case <-rc.hold:
		case <-r.Context().Done():
			return
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if msg := rc.verify(r, body); msg != "" {
		rc.bad = append(rc.bad, msg)
		w.WriteHeader(400)
		return
	}
	var env map[string]any
	_ = json.Unmarshal(body, &env)
	typ, _ := env["type"].(string)
	rc.got = append(rc.got, received{id: r.Header.Get("webhook-id"), typ: typ, body: env})
	status := 200
	if len(rc.script) > 0 {
		status, rc.script = rc.script[0], rc.script[1:]
	}
	w.WriteHeader(status)
}

func (rc *receiver) verify(r *http.Request, body []byte) string {
	id, ts, sig := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature")
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		return "method or content type: " + r.Method + " " + r.Header.Get("Content-Type")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return "bad timestamp " + ts
	}
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(rc.secret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.%s", id, ts, body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for s := range strings.FieldsSeq(sig) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return ""
		}
	}
	return "bad signature " + sig
}

func (rc *receiver) received() ([]received, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received{}, rc.got...), append([]string{}, rc.bad...)
}

// fast is a retry schedule that does not make a test wait.
func fast(int) time.Duration { return time.Millisecond }

func newTestDispatcher(t *testing.T, out events.Outbox, hooks []events.Webhook, opts events.DispatcherOptions) *events.Dispatcher {
	t.Helper()
	if opts.Retry == nil {
		opts.Retry = fast
	}
	if opts.Slots == nil {
		opts.Slots = make(chan struct{}, events.DefaultConcurrency)
	}
	d := events.NewDispatcher(out, hooks, opts)
	if err := d.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go d.Run(ctx)
	return d
}

func configHook(url string, types ...string) events.Webhook {
	return events.Webhook{ID: events.ConfigWebhookID(url, types), URL: url, Events: types, Secret: testSecret, Source: events.WebhookFromConfig}
}

// waitFor polls check until it returns "" (a generous bound: it only
// fails a broken build, never measures speed).
func waitFor(t *testing.T, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func deliveryState(t *testing.T, out events.Outbox, want string) func() string {
	return func() string {
		ds, err := out.ListDeliveries(context.Background(), 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if d.State != want {
				return fmt.Sprintf("delivery %s is %s (attempts %d, %q)", d.ID, d.State, d.Attempts, d.LastError)
			}
		}
		if len(ds) == 0 {
			return "no deliveries"
		}
		return ""
	}
}

// TestDispatcherDelivers: an event reaches the subscribed webhooks, signed,
// once each, after the receiver's failures, with one webhook-id.
func TestDispatcherDelivers(t *testing.T) {
	out := storage.NewMemory(nil)
	rc := newReceiver(t, testSecret, 500, 503, 200)
	other := newReceiver(t, testSecret)
	hooks := []events.Webhook{
		configHook(rc.URL+"/in", events.AgentRegistered, events.AgentDeleted),
		configHook(other.URL+"/in", events.KeyRotated),
	}
	d := newTestDispatcher(t, out, hooks, events.DispatcherOptions{})
	bus := events.NewBus(nopLogger(), nopLogger(), nil, d)
	bus.Publish(context.Background(), events.AgentRegistered, map[string]any{"agent_id": "bot-1"})
	bus.Publish(context.Background(), events.TokenIssued, map[string]any{"jti": "x"}) // not a webhook type

	waitFor(t, "delivered", deliveryState(t, out, events.DeliveryDelivered))
	got, bad := rc.received()
	if len(bad) != 0 {
		t.Fatalf("the receiver refused: %v", bad)
	}
	if len(got) != 3 {
		t.Fatalf("the receiver got %d requests, want 3 (two failures, one success)", len(got))
	}
	for _, g := range got {
		if g.id != got[0].id || !strings.HasPrefix(g.id, "evt_") {
			t.Errorf("webhook-id %q differs from %q", g.id, got[0].id)
		}
		data, _ := g.body["data"].(map[string]any)
		if g.typ != events.AgentRegistered || data["agent_id"] != "bot-1" {
			t.Errorf("payload %v", g.body)
		}
		if ts, _ := g.body["timestamp"].(string); ts == "" {
			t.Errorf("no timestamp: %v", g.body)
		} else if _, err := time.Parse(time.RFC3339, ts); err != nil {
			t.Errorf("timestamp %q: %v", ts, err)
		}
	}
	if g, _ := other.received(); len(g) != 0 {
		t.Errorf("a webhook not subscribed to agent.registered got %d", len(g))
	}
	ds, _ := out.ListDeliveries(context.Background(), 10)
	if len(ds) != 1 || ds[0].Attempts != 3 || ds[0].LastStatus != 200 || ds[0].LastError != "" || ds[0].WebhookID != hooks[0].ID {
		t.Fatalf("deliveries %+v", ds)
	}
}

// TestDispatcherFailures: redirects are not followed, an unanswered
// attempt times out, a webhook that is gone fails its delivery, and a
// delivery is given up once the retry period has passed.
func TestDispatcherFailures(t *testing.T) {
	t.Run("redirect", func(t *testing.T) {
		target := newReceiver(t, testSecret)
		redirect := httptest.NewServer(http.RedirectHandler(target.URL+"/in", http.StatusTemporaryRedirect))
		t.Cleanup(redirect.Close)
		out := storage.NewMemory(nil)
		d := newTestDispatcher(t, out, []events.Webhook{configHook(redirect.URL, events.AgentDeleted)},
			events.DispatcherOptions{Retry: func(int) time.Duration { return time.Hour }})
		_ = d.Accept(context.Background(), events.Event{ID: events.NewID(), Type: events.AgentDeleted})
		waitFor(t, "attempted", func() string {
			ds, _ := out.ListDeliveries(context.Background(), 1)
			if len(ds) != 1 || ds[0].Attempts != 1 {
				return fmt.Sprintf("%+v", ds)
			}
			if ds[0].State != events.DeliveryPending || ds[0].LastStatus != 307 || !strings.Contains(ds[0].LastError, "redirect") {
				t.Fatalf("after a redirect: %+v", ds[0])
			}
			return ""
		})
		if g, _ := target.received(); len(g) != 0 {
			t.Fatal("the redirect was followed")
		}
	})
	t.Run("timeout", func(t *testing.T) {
		rc := newReceiver(t, testSecret)
		rc.hold = make(chan struct{})
		t.Cleanup(func() { close(rc.hold) })
		out := storage.NewMemory(nil)
		d := newTestDispatcher(t, out, []events.Webhook{configHook(rc.URL, events.AgentDeleted)},
			events.DispatcherOptions{Timeout: 50 * time.Millisecond, Retry: func(int) time.Duration { return time.Hour }})
		// Accept returns while the receiver holds every request.
		if err := d.Accept(context.Background(), events.Event{ID: events.NewID(), Type: events.AgentDeleted}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "timed out", func() string {
			ds, _ := out.ListDeliveries(context.Background(), 1)
			if len(ds) != 1 || ds[0].Attempts != 1 {
				return fmt.Sprintf("%+v", ds)
			}
			if ds[0].State != events.DeliveryPending || ds[0].LastStatus != 0 || !strings.Contains(ds[0].LastError, "no answer") {
				t.Fatalf("after a timeout: %+v", ds[0])
			}
			return ""
		})
	})
	t.Run("webhook gone", func(t *testing.T) {
		out := storage.NewMemory(nil)
		now := time.Now()
		err := out.EnqueueDeliveries(context.Background(), []events.Delivery{{
			ID: "dlv_gone", WebhookID: "cfg_removed", URL: "https://hooks.example/x", EventID: events.NewID(),
			EventType: events.AgentDeleted, Payload: []byte(`{}`), NextAttempt: now, CreatedAt: now,
		}})
		if err != nil {
			t.Fatal(err)
		}
		newTestDispatcher(t, out, nil, events.DispatcherOptions{})
		waitFor(t, "failed", deliveryState(t, out, events.DeliveryFailed))
		dl, _ := out.GetDelivery(context.Background(), "dlv_gone")
		if !strings.Contains(dl.LastError, "no longer exists") || dl.Attempts != 0 {
			t.Fatalf("%+v", dl)
		}
	})
	t.Run("given up", func(t *testing.T) {
		rc := newReceiver(t, testSecret, 500)
		out := storage.NewMemory(nil)
		created := time.Now().Add(-events.RetryPeriod - time.Minute)
		hook := configHook(rc.URL, events.AgentDeleted)
		err := out.EnqueueDeliveries(context.Background(), []events.Delivery{{
			ID: "dlv_old", WebhookID: hook.ID, URL: hook.URL, EventID: events.NewID(),
			EventType: events.AgentDeleted, Payload: []byte(`{}`), NextAttempt: created, CreatedAt: created,
		}})
		if err != nil {
			t.Fatal(err)
		}
		newTestDispatcher(t, out, []events.Webhook{hook}, events.DispatcherOptions{})
		waitFor(t, "given up", deliveryState(t, out, events.DeliveryFailed))
		dl, _ := out.GetDelivery(context.Background(), "dlv_old")
		if dl.Attempts != 1 || dl.LastStatus != 500 || !strings.Contains(dl.LastError, "500") {
			t.Fatalf("%+v", dl)
		}
	})
	t.Run("private address", func(t *testing.T) {
		// A name (not a loopback literal) goes through the guarded dialer;
		// localhost.example.invalid never resolves, so use a public-looking
		// literal whose dial the check refuses: 10.0.0.1 is private.
		out := storage.NewMemory(nil)
		d := newTestDispatcher(t, out, []events.Webhook{configHook("https://10.255.255.1/hook", events.AgentDeleted)},
			events.DispatcherOptions{Retry: func(int) time.Duration { return time.Hour }})
		_ = d.Accept(context.Background(), events.Event{ID: events.NewID(), Type: events.AgentDeleted})
		waitFor(t, "refused", func() string {
			ds, _ := out.ListDeliveries(context.Background(), 1)
			if len(ds) != 1 || ds[0].Attempts != 1 {
				return fmt.Sprintf("%+v", ds)
			}
			if !strings.Contains(ds[0].LastError, "not public") {
				t.Fatalf("a private address was dialled: %+v", ds[0])
			}
			return ""
		})
	})
}

// TestDispatcherConcurrency: no more attempts run at once than slots.
func TestDispatcherConcurrency(t *testing.T) {
	var now, most atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := now.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		<-release
		now.Add(-1)
	}))
	t.Cleanup(srv.Close)
	out := storage.NewMemory(nil)
	hooks := make([]events.Webhook, 6)
	for i := range hooks {
		hooks[i] = configHook(fmt.Sprintf("%s/%d", srv.URL, i), events.KeyRotated)
	}
	d := newTestDispatcher(t, out, hooks, events.DispatcherOptions{Slots: make(chan struct{}, 2)})
	if err := d.Accept(context.Background(), events.Event{ID: events.NewID(), Type: events.KeyRotated}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two attempts running", func() string {
		if now.Load() != 2 {
			return fmt.Sprintf("%d running", now.Load())
		}
		return ""
	})
	close(release)
	waitFor(t, "delivered", deliveryState(t, out, events.DeliveryDelivered))
	if most.Load() != 2 {
		t.Fatalf("%d attempts ran at once, want 2", most.Load())
	}
}

// TestDispatcherAdmin: webhooks made, listed and deleted; a redelivery
// sends the same payload and webhook-id again.
func TestDispatcherAdmin(t *testing.T) {
	ctx := context.Background()
	out := storage.NewMemory(nil)
	cfg := configHook("https://hooks.example/cfg", events.AgentRegistered)
	d := newTestDispatcher(t, out, []events.Webhook{cfg}, events.DispatcherOptions{})

	if _, err := d.AddWebhook(ctx, "http://hooks.example/x", []string{events.AgentRegistered}, ""); err == nil {
		t.Fatal("http non-loopback accepted")
	}
	if _, err := d.AddWebhook(ctx, "https://hooks.example/x", []string{"token.issued"}, ""); err == nil {
		t.Fatal("a non-webhook event type accepted")
	}
	if _, err := d.AddWebhook(ctx, "https://hooks.example/x", []string{events.AgentRegistered}, "whsec_short"); err == nil {
		t.Fatal("a bad secret accepted")
	}
	rc := newReceiver(t, testSecret)
	w, err := d.AddWebhook(ctx, rc.URL+"/admin", []string{events.SigninCompleted}, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(w.ID, "wh_") || w.Source != events.WebhookFromAdmin || w.Secret != testSecret {
		t.Fatalf("%+v", w)
	}
	gen, err := d.AddWebhook(ctx, "https://hooks.example/gen", []string{events.KeyRotated}, "")
	if err != nil || events.ValidateSecret(gen.Secret) != nil {
		t.Fatalf("generated secret %q: %v", gen.Secret, err)
	}
	list, err := d.Webhooks(ctx)
	if err != nil || len(list) != 3 || list[0].ID != cfg.ID || list[1].ID != w.ID || list[2].ID != gen.ID {
		t.Fatalf("Webhooks = %+v, %v", list, err)
	}
	if err := d.RemoveWebhook(ctx, cfg.ID); !errors.Is(err, events.ErrConfigWebhook) {
		t.Fatalf("removing a config webhook: %v", err)
	}
	if err := d.RemoveWebhook(ctx, "wh_unknown"); !errors.Is(err, events.ErrDeliveryNotFound) {
		t.Fatalf("removing an unknown webhook: %v", err)
	}

	if err := d.Accept(ctx, events.Event{ID: "evt_one", Type: events.SigninCompleted, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivered", deliveryState(t, out, events.DeliveryDelivered))
	ds, _ := d.Deliveries(ctx, 10)
	if len(ds) != 1 {
		t.Fatalf("%+v", ds)
	}
	again, err := d.Redeliver(ctx, ds[0].ID)
	if err != nil || again.ID == ds[0].ID || again.EventID != "evt_one" {
		t.Fatalf("Redeliver = %+v, %v", again, err)
	}
	waitFor(t, "redelivered", deliveryState(t, out, events.DeliveryDelivered))
	got, bad := rc.received()
	if len(got) != 2 || len(bad) != 0 || got[0].id != "evt_one" || got[1].id != "evt_one" {
		t.Fatalf("received %+v, refused %v", got, bad)
	}
	if _, err := d.Redeliver(ctx, "dlv_unknown"); !errors.Is(err, events.ErrDeliveryNotFound) {
		t.Fatalf("redelivering an unknown delivery: %v", err)
	}

	if err := d.RemoveWebhook(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Redeliver(ctx, ds[0].ID); !errors.Is(err, events.ErrWebhookGone) {
		t.Fatalf("redelivering to a deleted webhook: %v", err)
	}
	if err := d.Accept(ctx, events.Event{ID: "evt_two", Type: events.SigninCompleted}); err != nil {
		t.Fatal(err)
	}
	if ds, _ := d.Deliveries(ctx, 10); len(ds) != 2 {
		t.Fatalf("an event for a deleted webhook was queued: %+v", ds)
	}
}

func nopLogger() *zap.Logger { return zap.NewNop() }
