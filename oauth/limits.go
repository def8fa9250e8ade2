package oauth

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// RateStatus is where a caller stands against one budget.
type RateStatus struct {
	Limit     int64
	Remaining int64
	Reset     int64 // Unix seconds when the window ends
	Reached   bool
}

// RateLimiter counts requests against one budget per key. Implementations
// bound their own calls (the Redis store times out after a few hundred
// milliseconds), so a limiter never hangs a request.
type RateLimiter interface {
	// Take consumes one unit of the key's budget and reports the state
	// after it.
	Take(ctx context.Context, key string) (RateStatus, error)
	// Peek reports the state without consuming anything.
	Peek(ctx context.Context, key string) (RateStatus, error)
	// Refund gives back one unit taken by Take.
	Refund(ctx context.Context, key string) error
}

// Limits are the budgets of SPEC §7; a nil limiter is off.
type Limits struct {
	// Registration counts registrations per client IP.
	Registration RateLimiter
	// FailedAuth counts failed agent authentications, per client IP and per
	// agent id; successes never count.
	FailedAuth RateLimiter
	// Refresh counts refresh-token grants per client.
	Refresh RateLimiter
	// API counts authenticated API calls per agent (IdP /api/* and guarded
	// routes).
	API RateLimiter
	// AuthFailOpen lets registration, authentication and refresh through
	// when the limiter's store fails (default: refuse with 503); APIFailOpen
	// does the same for API calls (default: let through).
	AuthFailOpen bool
	APIFailOpen  bool
	Log          *zap.Logger
}

type clientIPKey struct{}

// WithClientIP records the caller's address (Caddy's client IP, which
// honours trusted_proxies) for the rate limits.
func WithClientIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, clientIPKey{}, ip)
}

// ClientIP returns the address WithClientIP recorded, or the connection's
// peer address.
func ClientIP(r *http.Request) string {
	if ip, ok := r.Context().Value(clientIPKey{}).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func errRateLimited(st RateStatus, now time.Time) *Error {
	retry := st.Reset - now.Unix()
	if retry < 1 {
		retry = 1
	}
	return newError("rate_limit_exceeded", 429, "too many requests; retry after "+strconv.FormatInt(retry, 10)+" seconds").
		WithHeader("Retry-After", strconv.FormatInt(retry, 10))
}

var errLimiterDown = newError("temporarily_unavailable", 503, "the rate limiter is unavailable; retry later").WithHeader("Retry-After", "5")

// setRateHeaders tells the caller where it stands.
func setRateHeaders(w http.ResponseWriter, st RateStatus) {
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.FormatInt(st.Limit, 10))
	h.Set("X-RateLimit-Remaining", strconv.FormatInt(max(st.Remaining, 0), 10))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(st.Reset, 10))
}

// take consumes one unit of lim's budget for key, sets the headers, and
// returns a 429 when the budget is spent. A store failure lets the request
// through when failOpen, and refuses it with 503 otherwise; it is logged
// either way.
func (l *Limits) take(ctx context.Context, w http.ResponseWriter, lim RateLimiter, name, key string, failOpen bool, now time.Time) error {
	if l == nil || lim == nil {
		return nil
	}
	st, err := lim.Take(ctx, key)
	if err != nil {
		return l.storeFailure(name, err, failOpen)
	}
	setRateHeaders(w, st)
	if st.Reached {
		return errRateLimited(st, now)
	}
	return nil
}

func (l *Limits) storeFailure(name string, err error, failOpen bool) error {
	if l.Log != nil {
		l.Log.Error("rate limiter store failed", zap.String("limit", name), zap.Bool("fail_open", failOpen), zap.Error(err))
	}
	if failOpen {
		return nil
	}
	return errLimiterDown
}

// attempt is one authentication attempt charged in advance to the
// failed-authentication budgets of the caller's IP and of the agent id:
// charging before the secret is checked means a burst of parallel guesses
// cannot all slip in under the limit. A success gives the charge back, so
// successes never count.
type attempt struct {
	l    *Limits
	keys []string
}

// chargeAttempt charges the attempt, or refuses it (429) when a budget is
// already spent, before any hashing happens.
func (l *Limits) chargeAttempt(ctx context.Context, w http.ResponseWriter, ip, agentID string, now time.Time) (*attempt, error) {
	if l == nil || l.FailedAuth == nil {
		return nil, nil
	}
	a := &attempt{l: l}
	var worst RateStatus
	for i, key := range failureKeys(ip, agentID) {
		st, err := l.FailedAuth.Take(ctx, key)
		if err != nil {
			a.succeeded(ctx)
			return nil, l.storeFailure("authentication", err, l.AuthFailOpen)
		}
		a.keys = append(a.keys, key)
		if i == 0 || st.Remaining < worst.Remaining || st.Reached {
			worst = st
		}
	}
	setRateHeaders(w, worst)
	if worst.Reached {
		// A lock-out lasts until the window of the exhausted budget ends.
		return nil, errRateLimited(worst, now)
	}
	return a, nil
}

// succeeded gives the charge back: the credentials were right.
func (a *attempt) succeeded(ctx context.Context) {
	if a == nil {
		return
	}
	for _, key := range a.keys {
		if err := a.l.FailedAuth.Refund(ctx, key); err != nil {
			_ = a.l.storeFailure("authentication", err, true)
		}
	}
	a.keys = nil
}

// peek refuses (429) when lim's budget for key is already spent, without
// charging it; the charge comes once the request succeeded.
func (l *Limits) peek(ctx context.Context, w http.ResponseWriter, lim RateLimiter, name, key string, failOpen bool, now time.Time) error {
	if l == nil || lim == nil {
		return nil
	}
	st, err := lim.Peek(ctx, key)
	if err != nil {
		return l.storeFailure(name, err, failOpen)
	}
	setRateHeaders(w, st)
	if st.Reached || st.Remaining <= 0 {
		return errRateLimited(st, now)
	}
	return nil
}

// ipKey is the rate-limit key of a client address: IPv6 addresses count
// by their /64, which one host or user usually holds whole.
func ipKey(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil || addr.Is4() || addr.Is4In6() {
		return "ip:" + ip
	}
	p, err := addr.Prefix(64)
	if err != nil {
		return "ip:" + ip
	}
	return "ip:" + p.String()
}

func failureKeys(ip, agentID string) []string {
	keys := []string{ipKey(ip)}
	if agentID != "" && len(agentID) <= 128 {
		keys = append(keys, "agent:"+agentID)
	}
	return keys
}

// TakeAPI charges one authenticated API call to the agent (used by the
// guard too). With no API limit it does nothing.
func (l *Limits) TakeAPI(ctx context.Context, w http.ResponseWriter, agentID string, now time.Time) *Error {
	if l == nil {
		return nil
	}
	if err := l.take(ctx, w, l.API, "api", "agent:"+agentID, l.APIFailOpen, now); err != nil {
		return AsError(err)
	}
	return nil
}
