package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/oauth"
)

// WebhookConfig is a webhook of the configuration: the events of the
// listed types are posted to URL, signed with Secret (Standard Webhooks).
type WebhookConfig struct {
	// Where events are posted: https, or http on a loopback address
	// (127.0.0.1, ::1, localhost). Redirects are not followed.
	URL string `json:"url,omitempty"`
	// The event types delivered (at least one): agent.registered,
	// agent.updated, agent.disabled, agent.deleted, signin.completed,
	// token.revoked, refresh.reuse_detected, client.registered,
	// key.rotated.
	Events []string `json:"events,omitempty"`
	// The signing secret: "whsec_" and the base64 of 24 to 64 random
	// bytes; placeholders such as {env.WEBHOOK_SECRET} are expanded.
	Secret string `json:"secret,omitempty"`
}

// validateWebhooks checks the configured webhooks (the secret's format
// only when it holds no placeholder: those are expanded at Provision).
func validateWebhooks(hooks []*WebhookConfig) error {
	seen := make(map[string]bool, len(hooks))
	for i, wc := range hooks {
		if wc == nil {
			return fmt.Errorf("auth_agent: webhook %d has no settings", i+1)
		}
		if err := events.ValidateWebhookURL(wc.URL); err != nil {
			return fmt.Errorf("auth_agent: webhook %s: %v", wc.URL, err)
		}
		if err := events.ValidateWebhookEvents(wc.Events); err != nil {
			return fmt.Errorf("auth_agent: webhook %s: %v", wc.URL, err)
		}
		if wc.Secret == "" {
			return fmt.Errorf("auth_agent: webhook %s needs a `secret whsec_…` (e.g. `secret {env.WEBHOOK_SECRET}`)", wc.URL)
		}
		if !strings.Contains(wc.Secret, "{") {
			if err := events.ValidateSecret(wc.Secret); err != nil {
				return fmt.Errorf("auth_agent: webhook %s: %v", wc.URL, err)
			}
		}
		id := events.ConfigWebhookID(wc.URL, wc.Events)
		if seen[id] {
			return fmt.Errorf("auth_agent: webhook %s is configured twice with the same events", wc.URL)
		}
		seen[id] = true
	}
	return nil
}

// buildWebhooks expands the secrets and names each webhook.
func buildWebhooks(repl *caddy.Replacer, hooks []*WebhookConfig) ([]events.Webhook, error) {
	out := make([]events.Webhook, 0, len(hooks))
	for _, wc := range hooks {
		secret := repl.ReplaceAll(wc.Secret, "")
		if secret == "" {
			return nil, fmt.Errorf("auth_agent: webhook %s: the secret is empty after expanding placeholders", wc.URL)
		}
		if err := events.ValidateSecret(secret); err != nil {
			return nil, fmt.Errorf("auth_agent: webhook %s: %v", wc.URL, err)
		}
		out = append(out, events.Webhook{
			ID: events.ConfigWebhookID(wc.URL, wc.Events), URL: wc.URL, Events: append([]string{}, wc.Events...),
			Secret: secret, Source: events.WebhookFromConfig,
		})
	}
	return out, nil
}

// newDispatcher makes the webhooks' dispatcher of a starting config and
// reads the webhooks stored through the admin API.
func newDispatcher(ctx context.Context, out events.Outbox, hooks []events.Webhook, a *App) (*events.Dispatcher, error) {
	d := events.NewDispatcher(out, hooks, events.DispatcherOptions{Log: a.log.Named("webhooks")})
	if err := d.Load(ctx); err != nil {
		return nil, fmt.Errorf("auth_agent: reading the webhooks: %w", err)
	}
	return d, nil
}

// webhookAdmin is the admin API's part for webhooks: the dispatcher's
// typed operations, with their errors as the SPEC's.
type webhookAdmin struct{ d *events.Dispatcher }

// runningWebhooks is the running config's webhook admin.
func runningWebhooks() (webhookAdmin, error) {
	if app := running.Load(); app != nil {
		if st := app.state.Load(); st != nil && st.webhooks != nil {
			return webhookAdmin{st.webhooks}, nil
		}
	}
	return webhookAdmin{}, oauth.ErrNotFoundPath("the auth_agent app is not running")
}

func webhookError(err error, id string) error {
	var ie *events.InvalidWebhookError
	switch {
	case errors.As(err, &ie):
		return oauth.ErrInvalidRequest(ie.Reason)
	case errors.Is(err, events.ErrConfigWebhook):
		return oauth.ErrConflict("webhook " + strconv.Quote(id) + " is in the configuration; change it there")
	case errors.Is(err, events.ErrWebhookGone):
		return oauth.ErrConflict("the webhook of delivery " + strconv.Quote(id) + " no longer exists")
	case errors.Is(err, events.ErrDeliveryNotFound):
		return oauth.ErrNotFoundPath("no webhook or delivery " + strconv.Quote(id))
	}
	return err
}

// webhookView is a webhook as the admin API shows it: the secret only
// when it was just made.
func webhookView(w events.Webhook, withSecret bool) map[string]any {
	v := map[string]any{"id": w.ID, "url": w.URL, "events": w.Events, "source": w.Source}
	if !w.CreatedAt.IsZero() {
		v["created_at"] = w.CreatedAt.UTC().Format(time.RFC3339)
	}
	if withSecret {
		v["secret"] = w.Secret
	}
	return v
}

// deliveryView is a delivery as the admin API lists it (without the
// payload); times are RFC 3339, null when there is none.
func deliveryView(d events.Delivery) map[string]any {
	at := func(t time.Time) any {
		if t.IsZero() {
			return nil
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{
		"id": d.ID, "webhook_id": d.WebhookID, "url": d.URL, "event_id": d.EventID, "event_type": d.EventType,
		"state": d.State, "attempts": d.Attempts, "next_attempt": at(d.NextAttempt), "last_attempt": at(d.LastAttempt),
		"last_status": d.LastStatus, "last_error": d.LastError, "created_at": at(d.CreatedAt),
	}
}

func (wa webhookAdmin) list(w http.ResponseWriter, r *http.Request) error {
	list, err := wa.d.Webhooks(r.Context())
	if err != nil {
		return err
	}
	views := make([]map[string]any, 0, len(list))
	for _, h := range list {
		views = append(views, webhookView(h, false))
	}
	oauth.WriteJSON(w, http.StatusOK, map[string]any{"webhooks": views})
	return nil
}

func (wa webhookAdmin) create(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		URL    string   `json:"url"`
		Events []string `json:"events"`
		Secret string   `json:"secret"`
	}
	if err := oauth.DecodeJSON(w, r, adminMaxBody, &req); err != nil {
		return err
	}
	h, err := wa.d.AddWebhook(r.Context(), req.URL, req.Events, req.Secret)
	if err != nil {
		return webhookError(err, "")
	}
	oauth.WriteJSON(w, http.StatusCreated, webhookView(h, true))
	return nil
}

func (wa webhookAdmin) remove(w http.ResponseWriter, r *http.Request, id string) error {
	if err := wa.d.RemoveWebhook(r.Context(), id); err != nil {
		return webhookError(err, id)
	}
	oauth.WriteJSON(w, http.StatusOK, map[string]string{"deleted": id})
	return nil
}

func (wa webhookAdmin) deliveries(w http.ResponseWriter, r *http.Request) error {
	_, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	list, err := wa.d.Deliveries(r.Context(), limit)
	if err != nil {
		return err
	}
	views := make([]map[string]any, 0, len(list))
	for _, d := range list {
		views = append(views, deliveryView(d))
	}
	oauth.WriteJSON(w, http.StatusOK, map[string]any{"deliveries": views})
	return nil
}

func (wa webhookAdmin) redeliver(w http.ResponseWriter, r *http.Request, id string) error {
	d, err := wa.d.Redeliver(r.Context(), id)
	if err != nil {
		return webhookError(err, id)
	}
	oauth.WriteJSON(w, http.StatusCreated, deliveryView(d))
	return nil
}
