package events

import (
	"testing"
	"time"
)

func TestRetryDelay(t *testing.T) {
	within := func(n int, lo, hi time.Duration) {
		t.Helper()
		for range 200 {
			if d := retryDelay(n); d < lo || d > hi {
				t.Fatalf("retryDelay(%d) = %v, want %v to %v", n, d, lo, hi)
			}
		}
	}
	within(1, 900*time.Millisecond, 1100*time.Millisecond)
	within(2, 4500*time.Millisecond, 5500*time.Millisecond)
	within(3, 27*time.Second, 33*time.Second)
	within(4, 30*time.Second, time.Minute)
	within(5, time.Minute, 2*time.Minute)
	within(12, 30*time.Minute, time.Hour)
	within(1000, 30*time.Minute, time.Hour)
}

// TestPayload is the Standard Webhooks envelope.
func TestPayload(t *testing.T) {
	b, err := Payload(Event{ID: "evt_x", Type: AgentRegistered, Time: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), Data: map[string]any{"agent_id": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"type":"agent.registered","timestamp":"2026-01-02T03:04:05.000006Z","data":{"agent_id":"a"}}`; string(b) != want {
		t.Fatalf("Payload = %s, want %s", b, want)
	}
	if b, _ := Payload(Event{Type: KeyRotated}); string(b) != `{"type":"key.rotated","timestamp":"0001-01-01T00:00:00Z","data":{}}` {
		t.Fatalf("Payload without data = %s", b)
	}
}
