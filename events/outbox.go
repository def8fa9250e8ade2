package events

import (
	"context"
	"errors"
	"time"
)

// Webhook is a subscription: the events of the listed types are delivered
// to URL, signed with Secret (Standard Webhooks).
type Webhook struct {
	// ID is "wh_" and random for one made through the admin API; for one
	// in the configuration, "cfg_" and a digest of its URL and types, so
	// every instance and every reload names it alike.
	ID     string
	URL    string
	Events []string
	// Secret is "whsec_" and the base64 of the signing key.
	Secret string
	// Source is WebhookFromConfig or WebhookFromAdmin.
	Source    string
	CreatedAt time.Time
}

// Webhook sources.
const (
	WebhookFromConfig = "config"
	WebhookFromAdmin  = "admin"
)

// Delivery states.
const (
	DeliveryPending   = "pending"   // waiting for its next attempt
	DeliveryDelivered = "delivered" // a receiver answered 2xx
	DeliveryFailed    = "failed"    // given up: no 2xx within the retry period
)

// Delivery is one event on its way to one webhook: durable from the
// moment the event is accepted until it is delivered or given up, so a
// process killed in between delivers it after it restarts (or another
// instance does).
type Delivery struct {
	ID        string // "dlv_" and random
	WebhookID string
	URL       string // the webhook's URL when the event happened
	EventID   string // the webhook-id header: one per event, shared by its deliveries
	EventType string
	// Payload is the exact body sent, fixed when the event is accepted,
	// so every attempt and every redelivery sends the same bytes.
	Payload []byte
	State   string // DeliveryPending, DeliveryDelivered or DeliveryFailed
	// Attempts made so far, and when the next is due (pending only).
	Attempts    int
	NextAttempt time.Time
	// The last attempt: when, the receiver's HTTP status (0 when none
	// answered) and what went wrong (empty on success).
	LastAttempt time.Time
	LastStatus  int
	LastError   string
	CreatedAt   time.Time
	// LeaseUntil is how long the instance that claimed the delivery has
	// it to itself (zero when nobody holds it).
	LeaseUntil time.Time
}

// ErrDeliveryNotFound is returned for an unknown delivery or webhook id.
var ErrDeliveryNotFound = errors.New("auth_agent: no such delivery or webhook")

// Outbox is the durable part of webhooks, kept by the storage backend
// (every backend implements it; storage/storagetest checks it).
type Outbox interface {
	// EnqueueDeliveries stores new pending deliveries, all or none. Each
	// needs an ID, WebhookID, URL, EventID, EventType, a non-empty Payload,
	// CreatedAt and NextAttempt, and State pending or empty (stored as
	// pending); the other fields are stored as given (a LeaseUntil keeps
	// the delivery to its enqueuer until then). Anything missing, or an ID
	// already stored or twice in ds, is the backend's invalid-input error.
	EnqueueDeliveries(ctx context.Context, ds []Delivery) error
	// ClaimDeliveries leases to the caller, until leaseUntil, up to limit
	// (100 when limit <= 0) pending deliveries whose NextAttempt is at or
	// before now and whose LeaseUntil (zero when none) is at or before
	// now, oldest NextAttempt first (then by ID), and returns them with
	// LeaseUntil set. A delivery claimed by one caller is not returned to
	// another (in this process or any other sharing the store) until its
	// lease ends. leaseUntil not after now is invalid input.
	ClaimDeliveries(ctx context.Context, now, leaseUntil time.Time, limit int) ([]Delivery, error)
	// UpdateDelivery stores d's State, Attempts, NextAttempt, LastAttempt,
	// LastStatus, LastError and LeaseUntil as given (the rest of a
	// delivery never changes). ErrDeliveryNotFound when there is no
	// delivery d.ID; an unknown state, negative attempts or a pending
	// delivery without NextAttempt is invalid input.
	UpdateDelivery(ctx context.Context, d Delivery) error
	// GetDelivery returns one delivery, or ErrDeliveryNotFound.
	GetDelivery(ctx context.Context, id string) (Delivery, error)
	// ListDeliveries returns up to limit deliveries, the most recently
	// created first, equal CreatedAt by ID (100 when limit <= 0).
	// Delivered and failed ones are kept for DeliveryRetention after
	// their LastAttempt, or after they finished when LastAttempt is zero
	// (failed by DeleteWebhook before any attempt); then they are gone
	// from every method.
	ListDeliveries(ctx context.Context, limit int) ([]Delivery, error)

	// The webhooks made through the admin API (those of the configuration
	// live in it). CreateWebhook needs an ID, URL, Secret, CreatedAt and at
	// least one event type (none empty); an ID already stored is invalid
	// input. ListWebhooks returns them oldest CreatedAt first, then by ID.
	CreateWebhook(ctx context.Context, w Webhook) error
	ListWebhooks(ctx context.Context) ([]Webhook, error)
	// DeleteWebhook removes a webhook (ErrDeliveryNotFound when unknown);
	// its pending deliveries become failed, LastError "webhook deleted",
	// NextAttempt and LeaseUntil zero, in the same transaction.
	DeleteWebhook(ctx context.Context, id string) error
}

// DeliveryRetention is how long a delivered or failed delivery stays
// listed.
const DeliveryRetention = 7 * 24 * time.Hour
