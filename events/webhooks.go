package events

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/internal/metrics"
	"github.com/authagent/caddy-authagent/internal/safedial"
)

// Signed webhooks (Standard Webhooks, https://www.standardwebhooks.com):
// the Dispatcher is the bus's sink that turns each event into one durable
// delivery per subscribed webhook, and the worker that posts them, signed,
// retrying until a receiver answers 2xx or the retry period ends.

// Audit-only event types of the webhooks' admin API (no webhook may
// subscribe to them).
const (
	WebhookCreated = "webhook.created"
	WebhookDeleted = "webhook.deleted"
)

// Delivery settings.
const (
	// RetryPeriod is how long a delivery is retried, from its creation.
	RetryPeriod = 24 * time.Hour
	// AttemptTimeout bounds one attempt: connecting, sending and the
	// receiver's answer.
	AttemptTimeout = 10 * time.Second
	// DefaultConcurrency is how many attempts a process makes at once.
	DefaultConcurrency = 4
	// maxResponse is how much of a receiver's answer is read (and
	// discarded) before the connection is given up.
	maxResponse = 64 << 10
	// maxWebhookURL bounds a webhook URL.
	maxWebhookURL = 2048
	// maxLastError bounds the LastError stored with a delivery.
	maxLastError = 300
	// enqueueTimeout bounds the store write in the request that caused
	// the event.
	enqueueTimeout = 5 * time.Second
	// SecretPrefix starts every webhook secret.
	SecretPrefix = "whsec_"
)

// retrySchedule is the delay after the first, second and third failed
// attempts; later ones double from the last, with jitter, up to
// maxRetryDelay.
var retrySchedule = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}

const maxRetryDelay = time.Hour

// errWebhookGone is the LastError of a delivery whose webhook is no longer
// configured or stored.
const errWebhookGone = "the webhook no longer exists (removed from the configuration or deleted)"

// processSlots bounds the attempts of every Dispatcher in the process
// (during a reload the old and new config's run side by side).
var processSlots = make(chan struct{}, DefaultConcurrency)

// InvalidWebhookError is a webhook setting that cannot be used; the
// message names the setting and is safe to show (it never repeats a
// secret).
type InvalidWebhookError struct{ Reason string }

func (e *InvalidWebhookError) Error() string { return e.Reason }

func invalidWebhook(format string, args ...any) error {
	return &InvalidWebhookError{Reason: fmt.Sprintf(format, args...)}
}

// Errors of the admin operations.
var (
	// ErrConfigWebhook: the webhook is in the configuration, so only the
	// configuration changes it.
	ErrConfigWebhook = errors.New("this webhook is in the configuration; remove it there")
	// ErrWebhookGone: the delivery's webhook no longer exists, so it
	// cannot be redelivered.
	ErrWebhookGone = errors.New(errWebhookGone)
)

// ValidateWebhookURL checks a webhook URL: https, or http only when the
// host is a loopback address or localhost; a host, no credentials, no
// fragment, at most 2048 bytes.
func ValidateWebhookURL(raw string) error {
	if raw == "" {
		return invalidWebhook("the url is required")
	}
	if len(raw) > maxWebhookURL {
		return invalidWebhook("the url is longer than %d characters", maxWebhookURL)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		return invalidWebhook("the url %q is not a URL", raw)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return invalidWebhook("the url %q must be https (or http on a loopback address)", raw)
	case u.Hostname() == "":
		return invalidWebhook("the url %q has no host", raw)
	case u.User != nil:
		return invalidWebhook("the url must not carry credentials")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return invalidWebhook("the url %q must not have a fragment", raw)
	case u.Scheme == "http" && !IsLoopbackHost(u.Hostname()):
		return invalidWebhook("the url %q must be https: http is allowed only on a loopback address (127.0.0.1, ::1, localhost)", raw)
	}
	if p := u.Port(); p != "" || strings.HasSuffix(u.Host, ":") {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return invalidWebhook("the url %q has an invalid port", raw)
		}
	}
	return nil
}

// IsLoopbackHost reports whether host (no port, no brackets) is a loopback
// IP address or localhost.
func IsLoopbackHost(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.Unmap().IsLoopback()
}

// ValidateWebhookEvents checks a subscription: at least one type, each one
// of WebhookTypes, none twice.
func ValidateWebhookEvents(types []string) error {
	if len(types) == 0 {
		return invalidWebhook("events must name at least one of %s", strings.Join(WebhookTypes, " "))
	}
	for i, t := range types {
		if !IsWebhook(t) {
			return invalidWebhook("event type %q is not one of %s", t, strings.Join(WebhookTypes, " "))
		}
		if slices.Contains(types[:i], t) {
			return invalidWebhook("event type %q is listed twice", t)
		}
	}
	return nil
}

// ValidateSecret checks a webhook secret: "whsec_" and the base64 of 24
// to 64 bytes. The message never repeats the secret.
func ValidateSecret(secret string) error {
	_, err := secretKey(secret)
	return err
}

func secretKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, invalidWebhook("the secret must start with %s (then the base64 of 24 to 64 random bytes)", SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		if key, err = base64.RawStdEncoding.DecodeString(b64); err != nil {
			return nil, invalidWebhook("the secret after %s is not base64", SecretPrefix)
		}
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, invalidWebhook("the secret must hold 24 to 64 bytes (it holds %d)", len(key))
	}
	return key, nil
}

// NewSecret returns a new secret: 32 random bytes.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return SecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// Sign returns the webhook-signature header of one message: "v1," and
// the base64 HMAC-SHA256, keyed with the secret's bytes, of
// "<id>.<timestamp>.<body>".
func Sign(secret, id string, timestamp int64, body []byte) (string, error) {
	key, err := secretKey(secret)
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// ConfigWebhookID names a webhook of the configuration: "cfg_" and a
// digest of its URL and (sorted) event types, so every instance and every
// reload give it the same id.
func ConfigWebhookID(rawURL string, types []string) string {
	sorted := slices.Sorted(slices.Values(types))
	sum := sha256.Sum256([]byte(rawURL + "\n" + strings.Join(sorted, " ")))
	return "cfg_" + hex.EncodeToString(sum[:12])
}

// NewWebhookID returns an id for a webhook made through the admin API.
func NewWebhookID() string { return "wh_" + strings.TrimPrefix(NewID(), "evt_") }

func newDeliveryID() string { return "dlv_" + strings.TrimPrefix(NewID(), "evt_") }

// Payload is the body every delivery of e sends: the Standard Webhooks
// envelope {"type", "timestamp", "data"}.
func Payload(e Event) ([]byte, error) {
	data := e.Data
	if data == nil {
		data = map[string]any{}
	}
	return json.Marshal(struct {
		Type      string         `json:"type"`
		Timestamp string         `json:"timestamp"`
		Data      map[string]any `json:"data"`
	}{e.Type, e.Time.UTC().Format(time.RFC3339Nano), data})
}

// DispatcherOptions tune a Dispatcher; the zero value is production.
type DispatcherOptions struct {
	Log *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Slots bounds the attempts at once; nil shares DefaultConcurrency
	// across every Dispatcher of the process.
	Slots chan struct{}
	// Timeout bounds an attempt. Default: AttemptTimeout.
	Timeout time.Duration
	// Poll is how often the store is asked for due deliveries (other
	// instances' and retries) and webhooks made elsewhere. Default: 1s.
	Poll time.Duration
	// RootCAs verify receivers' certificates; nil means the system's.
	RootCAs *x509.CertPool
	// Retry is the delay before the next attempt after attempts failed
	// ones; nil means 1s, 5s, 30s, then doubling with jitter up to 1h.
	Retry func(attempts int) time.Duration
}

// Dispatcher delivers events to webhooks: Accept (the bus's sink) stores
// the deliveries, Run (one per started config, on every instance) makes
// the attempts. It also holds the typed operations of the webhooks' admin
// API.
type Dispatcher struct {
	out     Outbox
	config  []Webhook
	log     *zap.Logger
	now     func() time.Time
	slots   chan struct{}
	timeout time.Duration
	lease   time.Duration
	poll    time.Duration
	retry   func(int) time.Duration
	bus     *Bus

	// guarded dials only public addresses; open serves loopback hosts.
	// Two clients, so a pooled connection never carries a request it was
	// not checked for.
	guarded, open *http.Client

	wake chan struct{}

	mu     sync.RWMutex
	stored []Webhook // the admin API's, as last read from the store

	claimFailing bool // only Run touches it
}

// NewDispatcher returns a dispatcher of the configured webhooks (already
// validated, with their ids) and those stored in out.
func NewDispatcher(out Outbox, config []Webhook, opts DispatcherOptions) *Dispatcher {
	d := &Dispatcher{
		out:     out,
		config:  slices.Clone(config),
		log:     opts.Log,
		now:     opts.Now,
		slots:   opts.Slots,
		timeout: opts.Timeout,
		poll:    opts.Poll,
		retry:   opts.Retry,
		wake:    make(chan struct{}, 1),
	}
	if d.log == nil {
		d.log = zap.NewNop()
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.slots == nil {
		d.slots = processSlots
	}
	if d.timeout <= 0 {
		d.timeout = AttemptTimeout
	}
	if d.poll <= 0 {
		d.poll = time.Second
	}
	if d.retry == nil {
		d.retry = retryDelay
	}
	// The lease outlasts an attempt and the store write after it, so no
	// other instance takes a delivery that is still being attempted.
	d.lease = 3 * d.timeout
	d.guarded = newWebhookClient(opts.RootCAs, d.timeout, safedial.Control)
	d.open = newWebhookClient(opts.RootCAs, d.timeout, nil)
	return d
}

// SetEvents names the bus that audits the admin operations.
func (d *Dispatcher) SetEvents(bus *Bus) { d.bus = bus }

func newWebhookClient(roots *x509.CertPool, timeout time.Duration, control func(network, address string, c syscall.RawConn) error) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: control}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil, // the environment's proxy would undo the address check
			DialContext:            dialer.DialContext,
			TLSClientConfig:        &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:    timeout,
			ResponseHeaderTimeout:  timeout,
			MaxIdleConns:           16,
			MaxIdleConnsPerHost:    DefaultConcurrency,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: 16 << 10,
			ForceAttemptHTTP2:      true,
		},
		// A redirect is a failed attempt: following it would post the
		// signed event somewhere the operator did not name.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       timeout,
	}
}

// Load reads the stored webhooks; call it before the first Accept.
func (d *Dispatcher) Load(ctx context.Context) error {
	ws, err := d.out.ListWebhooks(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.stored = ws
	d.mu.Unlock()
	return nil
}

// subscribed returns the webhooks subscribed to typ.
func (d *Dispatcher) subscribed(typ string) []Webhook {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var out []Webhook
	for _, list := range [][]Webhook{d.config, d.stored} {
		for _, w := range list {
			if slices.Contains(w.Events, typ) {
				out = append(out, w)
			}
		}
	}
	return out
}

func (d *Dispatcher) find(id string) (Webhook, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, list := range [][]Webhook{d.config, d.stored} {
		for _, w := range list {
			if w.ID == id {
				return w, true
			}
		}
	}
	return Webhook{}, false
}

// lookup finds a webhook, reading the store again for one made through
// another instance's admin API since the last poll.
func (d *Dispatcher) lookup(ctx context.Context, id string) (Webhook, bool, error) {
	if w, ok := d.find(id); ok {
		return w, true, nil
	}
	if !strings.HasPrefix(id, "wh_") {
		return Webhook{}, false, nil
	}
	if err := d.Load(ctx); err != nil {
		return Webhook{}, false, err
	}
	w, ok := d.find(id)
	return w, ok, nil
}

// Accept stores one delivery per webhook subscribed to e's type, in one
// write, and wakes the worker; it never waits for a receiver. Events no
// webhook subscribes to cost nothing.
func (d *Dispatcher) Accept(ctx context.Context, e Event) error {
	if !IsWebhook(e.Type) {
		return nil
	}
	hooks := d.subscribed(e.Type)
	if len(hooks) == 0 {
		return nil
	}
	now := d.now()
	if e.Time.IsZero() {
		e.Time = now
	}
	payload, err := Payload(e)
	if err != nil {
		return fmt.Errorf("encoding the event: %w", err)
	}
	ds := make([]Delivery, 0, len(hooks))
	for _, w := range hooks {
		ds = append(ds, Delivery{
			ID: newDeliveryID(), WebhookID: w.ID, URL: w.URL, EventID: e.ID, EventType: e.Type,
			Payload: payload, State: DeliveryPending, NextAttempt: now, CreatedAt: now,
		})
	}
	// The request may end (its client gone) before the write; the event
	// happened all the same.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), enqueueTimeout)
	defer cancel()
	if err := d.out.EnqueueDeliveries(ctx, ds); err != nil {
		return fmt.Errorf("storing %d webhook deliveries: %w", len(ds), err)
	}
	d.poke()
	return nil
}

func (d *Dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run makes the attempts until ctx ends: it claims due deliveries (as
// many as there are free attempt slots) whenever woken, an attempt ends,
// or the poll interval passes. Attempts under way when ctx ends finish
// and record their outcome.
func (d *Dispatcher) Run(ctx context.Context) {
	tick := time.NewTicker(d.poll)
	defer tick.Stop()
	for {
		for d.claim(ctx) {
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := d.Load(ctx); err != nil && ctx.Err() == nil {
				if ce := d.log.Check(zap.DebugLevel, "reading the webhooks failed"); ce != nil {
					ce.Write(zap.Error(err))
				}
			}
		case <-d.wake:
		}
	}
}

// claim leases due deliveries and starts their attempts; true when it
// filled every free slot (more may be due).
func (d *Dispatcher) claim(ctx context.Context) bool {
	free := cap(d.slots) - len(d.slots)
	if free <= 0 || ctx.Err() != nil {
		return false
	}
	now := d.now()
	ds, err := d.out.ClaimDeliveries(ctx, now, now.Add(d.lease), free)
	if err != nil {
		if ctx.Err() == nil && !d.claimFailing {
			d.log.Warn("reading due webhook deliveries failed; retrying every poll", zap.Error(err))
		}
		d.claimFailing = ctx.Err() == nil
		return false
	}
	if d.claimFailing {
		d.log.Info("reading due webhook deliveries works again")
		d.claimFailing = false
	}
	for i, dl := range ds {
		select {
		case d.slots <- struct{}{}:
		case <-ctx.Done():
			d.release(ds[i:])
			return false
		}
		go func() {
			defer func() {
				<-d.slots
				d.poke()
			}()
			d.attempt(dl)
		}()
	}
	return len(ds) == free
}

// release hands back leased deliveries that were not attempted.
func (d *Dispatcher) release(ds []Delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	for _, dl := range ds {
		dl.LeaseUntil = time.Time{}
		_ = d.out.UpdateDelivery(ctx, dl) // else its lease ends by itself
	}
}

// attempt posts one delivery and records the outcome.
func (d *Dispatcher) attempt(dl Delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	now := d.now()
	log := d.log.With(zap.String("delivery_id", dl.ID), zap.String("webhook_id", dl.WebhookID),
		zap.String("event_id", dl.EventID), zap.String("event", dl.EventType), zap.String("host", hostOf(dl.URL)))
	dl.LeaseUntil = time.Time{}
	w, ok, err := d.lookup(ctx, dl.WebhookID)
	switch {
	case err != nil:
		dl.LastAttempt, dl.LastStatus = now, 0
		d.failed(&dl, now, "the webhook could not be read from the store", log)
	case !ok:
		dl.State, dl.NextAttempt, dl.LastAttempt, dl.LastStatus, dl.LastError = DeliveryFailed, time.Time{}, now, 0, errWebhookGone
		metrics.WebhookDelivery("gave_up")
		log.Warn("webhook delivery given up: " + errWebhookGone)
	default:
		status, err := d.post(ctx, w.Secret, dl, now)
		dl.Attempts++
		dl.LastAttempt, dl.LastStatus = now, status
		if err == nil {
			dl.State, dl.NextAttempt, dl.LastError = DeliveryDelivered, time.Time{}, ""
			metrics.WebhookDelivery("delivered")
			if ce := log.Check(zap.DebugLevel, "webhook delivered"); ce != nil {
				ce.Write(zap.Int("status", status), zap.Int("attempts", dl.Attempts))
			}
		} else {
			d.failed(&dl, now, err.Error(), log)
		}
	}
	uctx, ucancel := context.WithTimeout(context.Background(), d.timeout)
	defer ucancel()
	if err := d.out.UpdateDelivery(uctx, dl); err != nil {
		// The lease ends by itself and the delivery is attempted again:
		// at least once, perhaps twice.
		log.Warn("recording a webhook delivery attempt failed; it will be attempted again", zap.Error(err))
	}
}

// failed schedules the next attempt, or gives up once the retry period
// has passed.
func (d *Dispatcher) failed(dl *Delivery, now time.Time, reason string, log *zap.Logger) {
	if len(reason) > maxLastError {
		reason = reason[:maxLastError]
	}
	dl.LastError = reason
	deadline := dl.CreatedAt.Add(RetryPeriod)
	if !now.Before(deadline) {
		dl.State, dl.NextAttempt = DeliveryFailed, time.Time{}
		metrics.WebhookDelivery("gave_up")
		log.Warn("webhook delivery given up after the retry period", zap.Int("attempts", dl.Attempts),
			zap.Int("status", dl.LastStatus), zap.String("error", reason))
		return
	}
	next := now.Add(d.retry(dl.Attempts))
	if next.After(deadline) {
		next = deadline // one last attempt when the period ends
	}
	dl.State, dl.NextAttempt = DeliveryPending, next
	metrics.WebhookDelivery("failed")
	log.Info("webhook delivery attempt failed", zap.Int("attempts", dl.Attempts), zap.Int("status", dl.LastStatus),
		zap.String("error", reason), zap.Time("next_attempt", next))
}

// retryDelay is the default schedule: 1s, 5s, 30s (±10%), then doubling
// from 1m with jitter (half to the whole of it), at most 1h.
func retryDelay(attempts int) time.Duration {
	if attempts < 1 {
		attempts = 1
	}
	if attempts <= len(retrySchedule) {
		base := retrySchedule[attempts-1]
		return base + time.Duration((mrand.Float64()*0.2-0.1)*float64(base))
	}
	base := maxRetryDelay
	if shift := attempts - len(retrySchedule); shift < 8 {
		base = min(retrySchedule[len(retrySchedule)-1]<<shift, maxRetryDelay)
	}
	return base/2 + time.Duration(mrand.Int64N(int64(base/2)+1))
}

// post makes one attempt: the status the receiver answered (0 when none
// did) and why it is not a success.
func (d *Dispatcher) post(ctx context.Context, secret string, dl Delivery, now time.Time) (int, error) {
	ts := now.Unix()
	sig, err := Sign(secret, dl.EventID, ts, dl.Payload)
	if err != nil {
		return 0, errors.New("the webhook's secret is not usable")
	}
	u, err := url.Parse(dl.URL)
	if err != nil {
		return 0, errors.New("the webhook's url is not a URL")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dl.URL, bytes.NewReader(dl.Payload))
	if err != nil {
		return 0, errors.New("the webhook's url is not usable")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "caddy-authagent-webhooks")
	req.Header.Set("webhook-id", dl.EventID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", sig)
	hc := d.guarded
	if IsLoopbackHost(u.Hostname()) {
		hc = d.open
	}
	resp, err := hc.Do(req)
	if err != nil {
		// url.Error repeats the URL, whose query may hold a token.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		var ne net.Error
		switch {
		case errors.Is(err, safedial.ErrNotPublic):
			return 0, errors.New("refused: the host's address is not public")
		case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
			return 0, fmt.Errorf("no answer within %s", d.timeout)
		}
		return 0, fmt.Errorf("could not be sent: %v", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return resp.StatusCode, nil
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return resp.StatusCode, fmt.Errorf("the receiver redirected (%d); redirects are not followed", resp.StatusCode)
	}
	return resp.StatusCode, fmt.Errorf("the receiver answered %d", resp.StatusCode)
}

// hostOf is the host a log line names: never the path or query, which may
// hold a token.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// Webhooks returns the configured webhooks, then the stored ones (oldest
// first), as read from the store now.
func (d *Dispatcher) Webhooks(ctx context.Context) ([]Webhook, error) {
	if err := d.Load(ctx); err != nil {
		return nil, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return append(slices.Clone(d.config), d.stored...), nil
}

// AddWebhook stores a webhook made through the admin API; an empty secret
// gets a new one. The returned webhook holds the secret: show it once.
func (d *Dispatcher) AddWebhook(ctx context.Context, rawURL string, types []string, secret string) (Webhook, error) {
	if err := ValidateWebhookURL(rawURL); err != nil {
		return Webhook{}, err
	}
	if err := ValidateWebhookEvents(types); err != nil {
		return Webhook{}, err
	}
	if secret == "" {
		secret = NewSecret()
	} else if err := ValidateSecret(secret); err != nil {
		return Webhook{}, err
	}
	w := Webhook{
		ID: NewWebhookID(), URL: rawURL, Events: slices.Clone(types), Secret: secret,
		Source: WebhookFromAdmin, CreatedAt: d.now().UTC(),
	}
	if err := d.out.CreateWebhook(ctx, w); err != nil {
		return Webhook{}, err
	}
	d.mu.Lock()
	d.stored = append(slices.Clone(d.stored), w)
	d.mu.Unlock()
	d.bus.Publish(ctx, WebhookCreated, map[string]any{
		"webhook_id": w.ID, "host": hostOf(w.URL), "events": w.Events, "by": "admin",
	})
	return w, nil
}

// RemoveWebhook deletes a webhook made through the admin API; its pending
// deliveries fail. ErrConfigWebhook for one of the configuration,
// ErrDeliveryNotFound for an unknown id.
func (d *Dispatcher) RemoveWebhook(ctx context.Context, id string) error {
	d.mu.RLock()
	inConfig := slices.ContainsFunc(d.config, func(w Webhook) bool { return w.ID == id })
	d.mu.RUnlock()
	if inConfig {
		return ErrConfigWebhook
	}
	if err := d.out.DeleteWebhook(ctx, id); err != nil {
		return err
	}
	d.mu.Lock()
	d.stored = slices.DeleteFunc(slices.Clone(d.stored), func(w Webhook) bool { return w.ID == id })
	d.mu.Unlock()
	d.bus.Publish(ctx, WebhookDeleted, map[string]any{"webhook_id": id, "by": "admin"})
	return nil
}

// Deliveries returns up to limit deliveries, the newest first.
func (d *Dispatcher) Deliveries(ctx context.Context, limit int) ([]Delivery, error) {
	return d.out.ListDeliveries(ctx, limit)
}

// Redeliver queues a new delivery of a delivery's event to its webhook:
// the same payload and webhook-id, attempted now. ErrDeliveryNotFound for
// an unknown delivery, ErrWebhookGone when its webhook no longer exists.
func (d *Dispatcher) Redeliver(ctx context.Context, id string) (Delivery, error) {
	old, err := d.out.GetDelivery(ctx, id)
	if err != nil {
		return Delivery{}, err
	}
	if _, ok, err := d.lookup(ctx, old.WebhookID); err != nil {
		return Delivery{}, err
	} else if !ok {
		return Delivery{}, ErrWebhookGone
	}
	now := d.now()
	dl := Delivery{
		ID: newDeliveryID(), WebhookID: old.WebhookID, URL: old.URL, EventID: old.EventID, EventType: old.EventType,
		Payload: old.Payload, State: DeliveryPending, NextAttempt: now, CreatedAt: now,
	}
	if err := d.out.EnqueueDeliveries(ctx, []Delivery{dl}); err != nil {
		return Delivery{}, err
	}
	d.poke()
	return dl, nil
}
