package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"
)

func TestIPKey(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.7":            "ip:192.0.2.7",
		"2001:db8:1:2:3:4:5:6": "ip:2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "ip:2001:db8:1:2::/64",
		"::ffff:192.0.2.7":     "ip:::ffff:192.0.2.7",
		"not an address":       "ip:not an address",
	} {
		if got := IPKey(ip); got != want {
			t.Errorf("IPKey(%q) = %q, want %q", ip, got, want)
		}
	}
}

// Failed attempts count, successes are refunded, and a spent budget is
// refused before the credentials are looked at.
func TestChargeAttempt(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	defer store.Close()
	l := &Limits{FailedAuth: store.Budget("authentication", 3, time.Minute)}
	for range 5 {
		a, err := l.ChargeAttempt(ctx, httptest.NewRecorder(), "192.0.2.1", "bot")
		if err != nil {
			t.Fatalf("a success was counted: %v", err)
		}
		a.Succeeded(ctx)
	}
	for range 3 {
		if _, err := l.ChargeAttempt(ctx, httptest.NewRecorder(), "192.0.2.1", "bot"); err != nil {
			t.Fatal(err)
		}
	}
	w := httptest.NewRecorder()
	_, err := l.ChargeAttempt(ctx, w, "192.0.2.1", "other")
	var ex *Exceeded
	if !errors.As(err, &ex) || ex.RetryAfter < 1 || w.Header().Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("fourth failure from the IP: %v %v", err, w.Header())
	}
	// Failures from one address never lock the agent out of another.
	if _, err := l.ChargeAttempt(ctx, httptest.NewRecorder(), "192.0.2.2", "bot"); err != nil {
		t.Fatalf("the agent from another address: %v", err)
	}
	if _, err := l.ChargeAttempt(ctx, httptest.NewRecorder(), "192.0.2.2", "fresh"); err != nil {
		t.Fatalf("another IP and agent: %v", err)
	}
	var none *Limits
	if a, err := none.ChargeAttempt(ctx, nil, "192.0.2.1", "bot"); a != nil || err != nil {
		t.Fatal("nil limits limit something")
	}
}

// Only registrations that create something spend the registration budget;
// failed ones count against the IP's failed-authentication budget.
func TestChargeRegistration(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	defer store.Close()
	l := &Limits{Registration: store.Budget("registration", 2, time.Hour), FailedAuth: store.Budget("authentication", 3, time.Minute)}
	r := httptest.NewRequest("POST", "/", nil)
	r.RemoteAddr = "192.0.2.1:1234"
	for range 2 {
		reg, err := l.ChargeRegistration(ctx, httptest.NewRecorder(), r, "")
		if err != nil {
			t.Fatalf("a typo was counted: %v", err)
		}
		reg.Failed(ctx, true)
	}
	for range 2 {
		if _, err := l.ChargeRegistration(ctx, httptest.NewRecorder(), r, ""); err != nil {
			t.Fatal(err)
		}
	}
	var ex *Exceeded
	if _, err := l.ChargeRegistration(ctx, httptest.NewRecorder(), r, ""); !errors.As(err, &ex) {
		t.Fatalf("third registration: %v", err)
	}
	if _, err := l.ChargeRegistration(ctx, httptest.NewRecorder(), r, "client-"); err != nil {
		t.Fatalf("client registrations count apart: %v", err)
	}
	// A server failure is nobody's failed attempt; a third invalid request
	// spends the failure budget, which then refuses registrations.
	other := httptest.NewRequest("POST", "/", nil)
	other.RemoteAddr = "192.0.2.2:1234"
	reg, _ := l.ChargeRegistration(ctx, nil, other, "")
	reg.Failed(ctx, false)
	for range 3 {
		reg, err := l.ChargeRegistration(ctx, nil, other, "")
		if err != nil {
			t.Fatalf("before the failure budget is spent: %v", err)
		}
		reg.Failed(ctx, true)
	}
	if _, err := l.ChargeRegistration(ctx, nil, other, ""); !errors.As(err, &ex) {
		t.Fatalf("after three invalid registrations: %v", err)
	}
}

// A store that fails refuses or lets through by policy.
func TestStoreFailurePolicy(t *testing.T) {
	ctx := context.Background()
	down := failing{}
	r := httptest.NewRequest("POST", "/", nil)
	closed := &Limits{API: down, Registration: down}
	if err := closed.TakeAPI(ctx, nil, "bot"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("closed API budget: %v", err)
	}
	if _, err := closed.ChargeRegistration(ctx, nil, r, ""); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("closed registration budget: %v", err)
	}
	open := &Limits{API: down, Registration: down, AuthFailOpen: true, APIFailOpen: true}
	if err := open.TakeAPI(ctx, nil, "bot"); err != nil {
		t.Fatalf("open API budget: %v", err)
	}
	if _, err := open.ChargeRegistration(ctx, nil, r, ""); err != nil {
		t.Fatalf("open registration budget: %v", err)
	}
}

type failing struct{}

var errDown = errors.New("down")

func (failing) Take(context.Context, string) (Status, error) { return Status{}, errDown }
func (failing) Peek(context.Context, string) (Status, error) { return Status{}, errDown }
func (failing) Refund(context.Context, string) error         { return errDown }

func TestRefreshPerFamily(t *testing.T) {
	store := NewMemoryStore()
	defer store.Close()
	ctx := context.Background()
	l := &Limits{Refresh: store.Budget("refresh", 2, time.Hour), RefreshClient: store.Budget("refresh_client", 3, time.Hour)}
	refresh := func(family string) error {
		if err := l.PeekRefresh(ctx, httptest.NewRecorder(), "mcp-client", "agent-"+family, family); err != nil {
			return err
		}
		return l.TakeRefresh(ctx, httptest.NewRecorder(), "mcp-client", "agent-"+family, family)
	}
	for i := range 2 {
		if err := refresh("a"); err != nil {
			t.Fatalf("family a, refresh %d: %v", i, err)
		}
	}
	var ex *Exceeded
	if err := refresh("a"); !errors.As(err, &ex) {
		t.Fatalf("family a past its budget: %v", err)
	}
	// Another agent's sign-in at the same client has its own budget…
	if err := refresh("b"); err != nil {
		t.Fatalf("family b: %v", err)
	}
	// …until the client's ceiling, a flood guard, is reached.
	if err := refresh("c"); !errors.As(err, &ex) {
		t.Fatalf("past the client's ceiling: %v", err)
	}
}

// Guesses at one agent from many addresses meet its ceilings, longer each
// tier; an address the agent signed in from lately is exempt.
func TestAgentCeilings(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	defer store.Close()
	l := &Limits{
		FailedAuth:      store.Budget("authentication", 2, time.Minute),
		FailedAuthAgent: []Limiter{store.Budget("authentication_agent_1", 4, time.Minute), store.Budget("authentication_agent_2", 6, time.Hour)},
		KnownAddresses:  store.Budget("known_addresses", 1<<30, 48*time.Hour),
		CeilingTries:    store.Budget("ceiling_tries", 1, 10*time.Minute),
	}
	// The agent signs in from its own address.
	a, err := l.ChargeAttempt(ctx, nil, "198.51.100.7", "target")
	if err != nil {
		t.Fatal(err)
	}
	a.Succeeded(ctx)
	// Four addresses guess once each: the first ceiling is spent. A fifth
	// has its one try past it, and no second.
	var ex *Exceeded
	for i := range 5 {
		if _, err := l.ChargeAttempt(ctx, nil, fmt.Sprintf("203.0.113.%d", i), "target"); err != nil {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if _, err := l.ChargeAttempt(ctx, nil, "203.0.113.4", "target"); !errors.As(err, &ex) || ex.Budget != BudgetAgentCeiling {
		t.Fatalf("past the agent's ceiling: %v", err)
	}
	// The agent's own address still gets in.
	if a, err := l.ChargeAttempt(ctx, nil, "198.51.100.7", "target"); err != nil {
		t.Fatalf("the agent's own address: %v", err)
	} else {
		a.Succeeded(ctx)
	}
	// A new address still gets one try (here right: it gets in, and is
	// known from now on); another new one that guesses wrong gets no second.
	if a, err := l.ChargeAttempt(ctx, nil, "198.51.100.8", "target"); err != nil {
		t.Fatalf("a new address of the agent's: %v", err)
	} else {
		a.Succeeded(ctx)
	}
	if _, err := l.ChargeAttempt(ctx, nil, "198.51.100.8", "target"); err != nil {
		t.Fatalf("the address it just signed in from: %v", err)
	}
	if _, err := l.ChargeAttempt(ctx, nil, "203.0.113.50", "target"); err != nil {
		t.Fatalf("a guesser's one try: %v", err)
	}
	if _, err := l.ChargeAttempt(ctx, nil, "203.0.113.50", "target"); !errors.As(err, &ex) || ex.Budget != BudgetAgentCeiling {
		t.Fatalf("a guesser's second try: %v", err)
	}
	// Another agent is untouched.
	if _, err := l.ChargeAttempt(ctx, nil, "203.0.113.9", "bystander"); err != nil {
		t.Fatalf("another agent: %v", err)
	}
}

// One agent refreshing through many sign-ins meets its own ceiling at the
// client long before the client's, which it cannot fill alone.
func TestRefreshAgentCeiling(t *testing.T) {
	store := NewMemoryStore()
	defer store.Close()
	ctx := context.Background()
	l := &Limits{Refresh: store.Budget("refresh", 2, time.Hour), RefreshAgent: store.Budget("refresh_agent", 4, time.Hour), RefreshClient: store.Budget("refresh_client", 100, time.Hour)}
	refresh := func(agent, family string) error {
		if err := l.PeekRefresh(ctx, nil, "mcp-client", agent, family); err != nil {
			return err
		}
		return l.TakeRefresh(ctx, nil, "mcp-client", agent, family)
	}
	for i := range 4 {
		if err := refresh("greedy", fmt.Sprintf("f%d", i/2)); err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
	}
	var ex *Exceeded
	if err := refresh("greedy", "f9"); !errors.As(err, &ex) || ex.Budget != "refresh_agent" {
		t.Fatalf("a fresh sign-in of the same agent past its ceiling: %v", err)
	}
	if err := refresh("other", "g1"); err != nil {
		t.Fatalf("another agent of the client: %v", err)
	}
}
