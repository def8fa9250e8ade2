// Package events tells those who watch the identity provider what happened
// in it: the audit log gets every event, webhooks the types they
// subscribe to (WebhookTypes lists those). An event carries ids, names and
// hashes, never a secret, a code or a token.
package events

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Event types. The audit log's `event` field is one of these.
const (
	AgentRegistered    = "agent.registered"
	AgentUpdated       = "agent.updated"  // profile, secret, permissions or enabled again
	AgentDisabled      = "agent.disabled" // by an operator
	AgentDeleted       = "agent.deleted"
	AgentAuthenticated = "agent.authenticated"
	AgentAuthFailed    = "agent.authentication_failed"
	// AgentAuthThrottled: an agent's failures from many addresses reached
	// its ceiling; other addresses than its known ones wait.
	AgentAuthThrottled   = "agent.authentication_throttled"
	ClientAuthFailed     = "client.authentication_failed"
	SigninCompleted      = "signin.completed" // an agent approved a sign-in request
	TokenIssued          = "token.issued"
	TokenRefreshed       = "token.refreshed"
	TokenExchanged       = "token.exchanged"
	TokenRevoked         = "token.revoked"
	RefreshReuseDetected = "refresh.reuse_detected"
	ClientRegistered     = "client.registered" // admin API or dynamic registration
	ClientUpdated        = "client.updated"
	ClientDeleted        = "client.deleted"
	KeyRotated           = "key.rotated"
	// IDJAGAccepted, IDJAGRefused: an Identity Assertion JWT Authorization
	// Grant of a trusted IdP redeemed, or refused (also a request for one
	// this server refused to issue); IDJAGIssued: one issued here.
	IDJAGAccepted = "id_jag.accepted"
	IDJAGRefused  = "id_jag.refused"
	IDJAGIssued   = "id_jag.issued"
	// TrustedIdPCreated, TrustedIdPDeleted: an operator trusted an IdP,
	// or stopped trusting one, through the admin API (audit only).
	TrustedIdPCreated = "trusted_idp.created"
	TrustedIdPDeleted = "trusted_idp.deleted"
)

// WebhookTypes are the event types webhooks may subscribe to, in the order
// the documentation lists them.
var WebhookTypes = []string{
	AgentRegistered, AgentUpdated, AgentDisabled, AgentDeleted, SigninCompleted,
	TokenRevoked, RefreshReuseDetected, ClientRegistered, KeyRotated,
}

// IsWebhook reports whether typ is an event type webhooks may subscribe to.
func IsWebhook(typ string) bool { return slices.Contains(WebhookTypes, typ) }

// Event is one thing that happened.
type Event struct {
	// ID is unique per event ("evt_" and 26 base32 characters); webhooks
	// deliver it as webhook-id, so receivers can drop a redelivery.
	ID   string
	Type string
	Time time.Time
	// Data describes the event: ids, names, hashes; JSON-encodable.
	Data map[string]any
}

// Sink takes events to be delivered elsewhere (the webhooks' outbox). It
// runs in the request that caused the event, so it must not wait for a
// receiver; an error is logged and does not fail the request.
type Sink interface {
	Accept(ctx context.Context, e Event) error
}

// Bus publishes events to the audit log and to its sinks. A nil *Bus
// publishes nothing, so components built without one (tests) need no
// checks.
type Bus struct {
	audit *zap.Logger
	log   *zap.Logger
	sinks []Sink
	now   func() time.Time
}

// NewBus writes every event to audit (one line each, at info level, the
// message and the `event` field naming the type) and hands it to each sink;
// log gets the sinks' failures. now nil means time.Now.
func NewBus(audit, log *zap.Logger, now func() time.Time, sinks ...Sink) *Bus {
	if now == nil {
		now = time.Now
	}
	return &Bus{audit: audit, log: log, sinks: sinks, now: now}
}

// Publish records an event of type typ now.
func (b *Bus) Publish(ctx context.Context, typ string, data map[string]any) {
	if b == nil {
		return
	}
	e := Event{ID: NewID(), Type: typ, Time: b.now().UTC(), Data: data}
	if ce := b.audit.Check(zap.InfoLevel, typ); ce != nil {
		fields := make([]zap.Field, 0, 2+len(data))
		fields = append(fields, zap.String("event", typ), zap.String("event_id", e.ID))
		for _, k := range slices.Sorted(maps.Keys(data)) {
			fields = append(fields, zap.Any(k, data[k]))
		}
		ce.Write(fields...)
	}
	for _, s := range b.sinks {
		if err := s.Accept(ctx, e); err != nil {
			b.log.Error("an event could not be queued for its webhooks",
				zap.String("event", typ), zap.String("event_id", e.ID), zap.Error(err))
		}
	}
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewID returns a new event id: 128 random bits.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return "evt_" + strings.ToLower(idEncoding.EncodeToString(b[:]))
}
