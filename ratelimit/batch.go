package ratelimit

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// batchLimiter is a Limiter that charges several units in one call to its
// store: the API budget is charged in batches through it.
type batchLimiter interface {
	Limiter
	// TakeN consumes n units (gives them back for a negative n).
	TakeN(ctx context.Context, key string, n int64) (Status, error)
	// Period is the length of a window.
	Period() time.Duration
}

var _ batchLimiter = (*RateLimiter)(nil)

// Batching the API budget. Every authenticated API call is charged to the
// agent's budget, and a call to the store (a mutex and a map in memory, a
// round trip to Redis) on every request is most of what the limit costs.
// So while an agent is far from its limit, this process charges the store
// for a batch of calls at once (a lease) and hands the units out locally
// until they are spent or the store's window ends; X-RateLimit-* are then
// computed locally: Remaining is what the store had left after the lease,
// plus the units of it not handed out yet.
//
// Accuracy, stated:
//   - Never more than the limit per window, as the store counts it: units
//     are charged to the store before they are handed out, and a batch is
//     only used inside the window it was charged to (until the store's
//     Reset, or, for the charge that opened the window, until one period
//     after that call began, which is no later than the store's expiry).
//   - A batch is at most 1/leaseFraction of what the store had left after
//     the last charge, and at most maxLease units; the first call of each
//     window, and every call once fewer than 2 × leaseFraction units are
//     left, goes to the store one unit at a time, exactly as without
//     batching. An agent near its limit is counted exactly.
//   - What batching can cost is the other way round: units a process
//     charged but did not hand out before the window ended (or before a
//     config reload, which starts a new Limits) are lost, at most one
//     batch (min(maxLease, 1/leaseFraction of what was left)) per agent
//     per process. With several instances on one Redis, one of them may
//     refuse while another still holds such a batch, and an instance's
//     X-RateLimit-Remaining does not count what the others charged since
//     its own last charge to the store.
const (
	maxLease      = 64
	leaseFraction = 16
)

// leases are the per-agent leases of one Limits. The zero value is ready.
type leases struct {
	m       sync.Map // agent id → *lease
	inserts atomic.Int64
}

// lease is one agent's batch: units charged to the store in the window
// ending at reset and not handed out yet.
type lease struct {
	mu sync.Mutex
	// The store's answer to the last charge.
	limit, reset   int64
	storeRemaining int64
	// held units may be handed out until deadline.
	held     int64
	deadline time.Time
	// refilling is set while one caller charges the next batch; the others
	// go to the store one unit at a time meanwhile.
	refilling bool
}

// sweepEvery is how many new agents' leases may be added before the ones
// whose window has ended are dropped.
const sweepEvery = 1024

func (ls *leases) get(agentID string) *lease {
	if v, ok := ls.m.Load(agentID); ok {
		return v.(*lease)
	}
	v, loaded := ls.m.LoadOrStore(agentID, new(lease))
	if !loaded && ls.inserts.Add(1)%sweepEvery == 0 {
		ls.sweep(time.Now())
	}
	return v.(*lease)
}

// sweep drops the leases whose window has ended: they hold nothing usable.
func (ls *leases) sweep(now time.Time) {
	ls.m.Range(func(k, v any) bool {
		le := v.(*lease)
		le.mu.Lock()
		done := !le.refilling && !now.Before(le.deadline)
		le.mu.Unlock()
		if done {
			ls.m.CompareAndDelete(k, v)
		}
		return true
	})
}

// takeLeased charges one API call to the agent's lease, charging the store
// for a new batch when the lease is spent or its window ended.
func (l *Limits) takeLeased(ctx context.Context, w http.ResponseWriter, b batchLimiter, agentID string) error {
	le := l.apiLeases.get(agentID)
	now := time.Now()
	le.mu.Lock()
	if le.held > 0 {
		if now.Before(le.deadline) {
			le.held--
			st := Status{Limit: le.limit, Remaining: le.storeRemaining + le.held, Reset: le.reset}
			le.mu.Unlock()
			setHeaders(w, st)
			return nil
		}
		le.held = 0 // charged to a window that has ended
	}
	n := int64(1)
	if !le.refilling && now.Before(le.deadline) {
		n = min(max(le.storeRemaining/leaseFraction, 1), maxLease)
	}
	batch := n > 1
	if batch {
		le.refilling = true
	}
	le.mu.Unlock()

	st, err := b.TakeN(ctx, "agent:"+agentID, n)
	if err == nil && st.Reached && n > 1 {
		// Another instance got there first: how much of the batch fitted is
		// unknown, so give it back and charge this one call alone.
		if _, err = b.TakeN(ctx, "agent:"+agentID, -n); err == nil {
			n = 1
			st, err = b.TakeN(ctx, "agent:"+agentID, 1)
		}
	}
	le.mu.Lock()
	if batch {
		le.refilling = false
	}
	if err != nil {
		le.mu.Unlock()
		return l.storeFailure("api", err, l.APIFailOpen)
	}
	// The store reports the end of its window in whole seconds, rounded
	// down. A charge that opened the window (nothing was counted before
	// it) also tells that the window ends no earlier than one period
	// after the call began.
	end := time.Unix(st.Reset, 0)
	if st.Remaining == st.Limit-n {
		end = maxTime(end, minTime(now.Add(b.Period()), time.Unix(st.Reset+1, 0)))
	}
	out := st
	switch {
	case st.Reset < le.reset:
		// An answer from a window that has ended since (a slow call): this
		// call was counted there; the rest of its batch is void.
	case st.Reset > le.reset:
		// The first charge of a new window: what was held is void.
		le.limit, le.reset, le.storeRemaining, le.held, le.deadline = st.Limit, st.Reset, st.Remaining, 0, end
		fallthrough
	default:
		le.storeRemaining = min(le.storeRemaining, st.Remaining)
		le.deadline = maxTime(le.deadline, end)
		if !st.Reached {
			le.held += n - 1
		}
		out.Remaining = le.storeRemaining + le.held
	}
	le.mu.Unlock()
	setHeaders(w, out)
	if out.Reached {
		return l.exceeded("api", out)
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
