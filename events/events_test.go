package events

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

type recordingSink struct {
	got []Event
	err error
}

func (s *recordingSink) Accept(_ context.Context, e Event) error {
	s.got = append(s.got, e)
	return s.err
}

func TestBusWritesTheAuditLineAndFeedsSinks(t *testing.T) {
	core, audit := observer.New(zap.InfoLevel)
	logCore, logs := observer.New(zap.InfoLevel)
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	ok, failing := &recordingSink{}, &recordingSink{err: errors.New("store down")}
	bus := NewBus(zap.New(core), zap.New(logCore), func() time.Time { return at }, ok, failing)

	bus.Publish(context.Background(), AgentRegistered, map[string]any{"agent_id": "a-1", "by": "self"})

	entries := audit.All()
	if len(entries) != 1 || entries[0].Message != AgentRegistered {
		t.Fatalf("audit lines: %v", entries)
	}
	fields := entries[0].ContextMap()
	if fields["event"] != AgentRegistered || fields["agent_id"] != "a-1" || fields["by"] != "self" ||
		!strings.HasPrefix(fields["event_id"].(string), "evt_") {
		t.Fatalf("audit fields: %v", fields)
	}
	if len(ok.got) != 1 || ok.got[0].ID != fields["event_id"] || !ok.got[0].Time.Equal(at) || ok.got[0].Type != AgentRegistered {
		t.Fatalf("sink got %+v", ok.got)
	}
	// A sink that fails does not stop the others and is logged.
	if len(failing.got) != 1 || logs.Len() != 1 || logs.All()[0].ContextMap()["event"] != AgentRegistered {
		t.Fatalf("failing sink: %v, logs %v", failing.got, logs.All())
	}
}

func TestNilBusPublishesNothing(t *testing.T) {
	var bus *Bus
	bus.Publish(context.Background(), TokenIssued, nil) // must not panic
}

func TestEventIDsAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if seen[id] || len(id) != len("evt_")+26 {
			t.Fatalf("id %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
}

func TestWebhookTypes(t *testing.T) {
	if !IsWebhook(AgentRegistered) || !IsWebhook(KeyRotated) || IsWebhook(TokenIssued) || IsWebhook("nonsense") {
		t.Fatal("IsWebhook")
	}
}
