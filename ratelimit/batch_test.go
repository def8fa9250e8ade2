package ratelimit

import (
	"context"
	"errors"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/internal/redistest"
)

// countingBudget counts the calls that reach the store.
type countingBudget struct {
	*RateLimiter
	calls atomic.Int64
}

func (c *countingBudget) TakeN(ctx context.Context, key string, n int64) (Status, error) {
	c.calls.Add(1)
	return c.RateLimiter.TakeN(ctx, key, n)
}

func (c *countingBudget) Take(ctx context.Context, key string) (Status, error) {
	c.calls.Add(1)
	return c.RateLimiter.Take(ctx, key)
}

func wantHeaders(t *testing.T, w *httptest.ResponseRecorder, limit, remaining int64) {
	t.Helper()
	h := w.Header()
	if h.Get("X-RateLimit-Limit") != strconv.FormatInt(limit, 10) || h.Get("X-RateLimit-Remaining") != strconv.FormatInt(remaining, 10) {
		t.Fatalf("X-RateLimit-Limit %q Remaining %q, want %d %d", h.Get("X-RateLimit-Limit"), h.Get("X-RateLimit-Remaining"), limit, remaining)
	}
	reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
	if now := time.Now().Unix(); err != nil || reset < now || reset > now+7200 {
		t.Fatalf("X-RateLimit-Reset %q", h.Get("X-RateLimit-Reset"))
	}
}

// A small budget is counted call by call, as without batching: every
// header is exact and the call past the limit is refused.
func TestAPIBudgetSmallIsExact(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	defer store.Close()
	budget := &countingBudget{RateLimiter: store.Budget("api", 20, time.Hour)}
	l := &Limits{API: budget}
	for i := range int64(20) {
		w := httptest.NewRecorder()
		if err := l.TakeAPI(ctx, w, "bot"); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		wantHeaders(t, w, 20, 19-i)
	}
	if n := budget.calls.Load(); n != 20 {
		t.Fatalf("%d calls to the store for 20 calls of a budget of 20", n)
	}
	w := httptest.NewRecorder()
	var ex *Exceeded
	if err := l.TakeAPI(ctx, w, "bot"); !errors.As(err, &ex) || ex.RetryAfter < 1 {
		t.Fatalf("call past the limit: %v", err)
	}
	wantHeaders(t, w, 20, 0)
	if err := l.TakeAPI(ctx, httptest.NewRecorder(), "other"); err != nil {
		t.Fatalf("another agent: %v", err)
	}
}

// Far from the limit the store is charged in batches; the headers still
// count every call, and the budget ends exactly at the limit.
func TestAPIBudgetBatches(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	defer store.Close()
	const limit = 5000
	budget := &countingBudget{RateLimiter: store.Budget("api", limit, time.Hour)}
	l := &Limits{API: budget}
	for i := range int64(limit) {
		w := httptest.NewRecorder()
		if err := l.TakeAPI(ctx, w, "bot"); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		wantHeaders(t, w, limit, limit-1-i)
	}
	if n := budget.calls.Load(); n > limit/10 {
		t.Fatalf("%d calls to the store for %d API calls", n, limit)
	}
	if err := l.TakeAPI(ctx, httptest.NewRecorder(), "bot"); err == nil {
		t.Fatal("a call past the limit was let through")
	}
	// What the store counted is what was handed out: another process on
	// the same store (a second Limits) sees the budget spent.
	if err := (&Limits{API: budget}).TakeAPI(ctx, httptest.NewRecorder(), "bot"); err == nil {
		t.Fatal("another process was let through past the limit")
	}
}

// Callers in parallel get exactly the limit, never more.
func TestAPIBudgetParallel(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	defer store.Close()
	const limit = 3000
	l := &Limits{API: store.Budget("api", limit, time.Hour)}
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				var ex *Exceeded
				switch err := l.TakeAPI(ctx, nil, "bot"); {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &ex):
					refused.Add(1)
				default:
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() != limit || refused.Load() != 8*500-limit {
		t.Fatalf("%d let through, %d refused; want %d and %d", ok.Load(), refused.Load(), limit, 8*500-limit)
	}
}

// Two processes sharing a store never hand out more than the limit
// together, and lose at most one batch each to the other's holding.
func TestAPIBudgetTwoProcesses(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	defer store.Close()
	const limit = 4000
	budget := store.Budget("api", limit, time.Hour)
	a, b := &Limits{API: budget}, &Limits{API: budget}
	granted := 0
	for i := 0; i < 2*limit; i++ {
		l := a
		if i%3 == 0 {
			l = b
		}
		if l.TakeAPI(ctx, nil, "bot") == nil {
			granted++
		}
	}
	if granted > limit || granted < limit-2*maxLease {
		t.Fatalf("%d granted of a budget of %d", granted, limit)
	}
}

// A budget whose store cannot batch is charged call by call, with the
// failure policy as before.
func TestAPIBudgetStoreDown(t *testing.T) {
	ctx := context.Background()
	if err := (&Limits{API: failing{}}).TakeAPI(ctx, nil, "bot"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("closed: %v", err)
	}
	if err := (&Limits{API: failing{}, APIFailOpen: true}).TakeAPI(ctx, nil, "bot"); err != nil {
		t.Fatalf("open: %v", err)
	}
	// A store that fails for a batch.
	down := &Limits{API: failingBatch{}, APIFailOpen: true}
	for range 3 {
		if err := down.TakeAPI(ctx, nil, "bot"); err != nil {
			t.Fatalf("open: %v", err)
		}
	}
}

type failingBatch struct{ failing }

func (failingBatch) TakeN(context.Context, string, int64) (Status, error) { return Status{}, errDown }
func (failingBatch) Period() time.Duration                                { return time.Hour }

// The budget in Redis: the batches are charged there, and a second
// process sees them.
func TestAPIBudgetRedis(t *testing.T) {
	url, _ := redistest.Start(t)
	ctx := context.Background()
	store, err := NewRedisStore(url)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	const limit = 2000
	budget := &countingBudget{RateLimiter: store.Budget("api", limit, time.Hour)}
	a := &Limits{API: budget}
	for i := range int64(limit / 2) {
		w := httptest.NewRecorder()
		if err := a.TakeAPI(ctx, w, "bot"); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		wantHeaders(t, w, limit, limit-1-i)
	}
	if n := budget.calls.Load(); n > limit/20 {
		t.Fatalf("%d calls to Redis for %d API calls", n, limit/2)
	}
	// Another instance: what a charged is spent for it too (a's unused
	// batch included, at most maxLease).
	w := httptest.NewRecorder()
	if err := (&Limits{API: budget}).TakeAPI(ctx, w, "bot"); err != nil {
		t.Fatal(err)
	}
	rem, _ := strconv.Atoi(w.Header().Get("X-RateLimit-Remaining"))
	if rem > limit/2-1 || rem < limit/2-1-maxLease {
		t.Fatalf("the second instance sees %d remaining after %d calls", rem, limit/2+1)
	}
}

// A batch is charged to one window: once the store's window ends, what
// was held is void and the next call opens a new window.
func TestAPIBudgetWindowEnds(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	defer store.Close()
	const limit = 100000
	l := &Limits{API: store.Budget("api", limit, time.Second)}
	for range 10 {
		if err := l.TakeAPI(ctx, nil, "bot"); err != nil {
			t.Fatal(err)
		}
	}
	le := l.apiLeases.get("bot")
	le.mu.Lock()
	held := le.held
	le.mu.Unlock()
	if held == 0 {
		t.Fatal("no batch is held far from the limit")
	}
	time.Sleep(1100 * time.Millisecond)
	w := httptest.NewRecorder()
	if err := l.TakeAPI(ctx, w, "bot"); err != nil {
		t.Fatal(err)
	}
	wantHeaders(t, w, limit, limit-1)
}
