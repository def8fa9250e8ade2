// Package ratelimit is the one home of the rate limits of SPEC §7 and of the
// client address they count by: the budgets (github.com/ulule/limiter/v3,
// counters in memory or in Redis), charging and refunding them, the
// X-RateLimit-* headers, and Caddy's client IP carried in the request
// context.
package ratelimit

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/internal/metrics"
)

// Status is where a caller stands against one budget.
type Status struct {
	Limit     int64
	Remaining int64
	Reset     int64 // Unix seconds when the window ends
	Reached   bool
}

// Limiter counts requests against one budget per key. Implementations
// bound their own calls (the Redis store times out after a few hundred
// milliseconds), so a limiter never hangs a request.
type Limiter interface {
	// Take consumes one unit of the key's budget and reports the state
	// after it.
	Take(ctx context.Context, key string) (Status, error)
	// Peek reports the state without consuming anything.
	Peek(ctx context.Context, key string) (Status, error)
	// Refund gives back one unit taken by Take.
	Refund(ctx context.Context, key string) error
}

// Exceeded is the error of a spent budget: answer 429 with Retry-After.
type Exceeded struct {
	RetryAfter int64 // seconds, at least 1
	// Budget is the spent budget's name (registration, authentication,
	// authentication_agent, …).
	Budget string
}

func (e *Exceeded) Error() string {
	return "too many requests; retry after " + strconv.FormatInt(e.RetryAfter, 10) + " seconds"
}

// ErrUnavailable means the counter store failed and the budget's policy
// refuses requests while it cannot count (answer 503).
var ErrUnavailable = errors.New("the rate limiter is unavailable; retry later")

// Limits are the budgets of SPEC §7; a nil Limiter is off. The zero value
// (and a nil *Limits) limits nothing.
type Limits struct {
	// Registration counts registrations per client IP.
	Registration Limiter
	// FailedAuth counts failed authentications per client IP and per
	// (agent id, client IP); successes never count. One address cannot
	// lock an agent out of anyone else's.
	FailedAuth Limiter
	// FailedAuthAgent are the ceilings of failures per agent id from every
	// address together, against distributed guessing: far above FailedAuth
	// and in longer and longer windows (100/m, 500/10m, 2000/h by default),
	// so sustained guessing is locked out for longer each time. Addresses
	// the agent authenticated from today or yesterday (KnownAddresses) are
	// exempt, and every other one keeps a try now and then (CeilingTries):
	// a lock-out is never one an outsider can impose on the agent itself.
	FailedAuthAgent []Limiter
	KnownAddresses  Limiter
	// CeilingTries lets an unknown address one attempt per window at an
	// agent whose ceiling is reached: a real agent on a new address still
	// gets in eventually, and guessing stays at one try per address.
	CeilingTries Limiter
	// Refresh counts refresh-token grants per refresh family (one sign-in
	// of one agent at one client). RefreshAgent is a larger ceiling per
	// (client, agent), against one agent refreshing through many sign-ins;
	// RefreshClient a far larger one per client, only a flood guard that
	// one agent cannot fill alone.
	Refresh       Limiter
	RefreshAgent  Limiter
	RefreshClient Limiter
	// Authorization counts new authorization requests (sign-ins started
	// at /oauth2/authorize) per client IP: each is a stored record, and
	// the endpoint needs no credentials.
	Authorization Limiter
	// API counts authenticated API calls per agent (IdP /api/* and guarded
	// routes).
	API Limiter
	// AuthFailOpen lets registration, authentication and refresh through
	// when the counter store fails (default: refuse with 503); APIFailOpen
	// does the same for API calls (default: let through).
	AuthFailOpen bool
	APIFailOpen  bool
	Log          *zap.Logger

	// apiLeases are the API units charged to the store and not yet handed
	// out, per agent.
	apiLeases leases
}

type clientIPKey struct{}

// WithClientIP records the caller's address (Caddy's client IP, which
// honours trusted_proxies) for the budgets counted per IP.
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

// IPKey is the budget key of a client address: IPv6 addresses count by
// their /64, which one host or user usually holds whole.
func IPKey(ip string) string {
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

// exceeded is the refusal of a request because budget is spent.
func (l *Limits) exceeded(budget string, st Status) error {
	metrics.RateLimitRejected(budget)
	return &Exceeded{RetryAfter: max(st.Reset-time.Now().Unix(), 1), Budget: budget}
}

// setHeaders tells the caller where it stands. It runs on every limited
// request, so it writes the canonical keys directly, and the three values
// share one string and one backing array (two allocations, not six).
func setHeaders(w http.ResponseWriter, st Status) {
	if w == nil {
		return
	}
	var buf [3 * 20]byte
	b := strconv.AppendInt(buf[:0], st.Limit, 10)
	i := len(b)
	b = strconv.AppendInt(b, max(st.Remaining, 0), 10)
	j := len(b)
	b = strconv.AppendInt(b, st.Reset, 10)
	s := string(b)
	v := make([]string, 3)
	v[0], v[1], v[2] = s[:i], s[i:j], s[j:]
	h := w.Header()
	// Each header its own full slice: Header.Add appends to a copy, and an
	// edit of one value in place touches no other.
	h["X-Ratelimit-Limit"] = v[0:1:1]
	h["X-Ratelimit-Remaining"] = v[1:2:2]
	h["X-Ratelimit-Reset"] = v[2:3:3]
}

// Take consumes one unit of lim's budget for key, sets the headers, and
// returns *Exceeded when the budget is spent. A store failure lets the
// request through when failOpen and returns ErrUnavailable otherwise; it
// is logged either way.
func (l *Limits) Take(ctx context.Context, w http.ResponseWriter, lim Limiter, name, key string, failOpen bool) error {
	if l == nil || lim == nil {
		return nil
	}
	st, err := lim.Take(ctx, key)
	if err != nil {
		return l.storeFailure(name, err, failOpen)
	}
	setHeaders(w, st)
	if st.Reached {
		return l.exceeded(name, st)
	}
	return nil
}

// Peek refuses (*Exceeded) when lim's budget for key is already spent,
// without charging it; the charge comes once the request succeeded.
func (l *Limits) Peek(ctx context.Context, w http.ResponseWriter, lim Limiter, name, key string, failOpen bool) error {
	if l == nil || lim == nil {
		return nil
	}
	st, err := lim.Peek(ctx, key)
	if err != nil {
		return l.storeFailure(name, err, failOpen)
	}
	setHeaders(w, st)
	if st.Reached || st.Remaining <= 0 {
		return l.exceeded(name, st)
	}
	return nil
}

func (l *Limits) storeFailure(name string, err error, failOpen bool) error {
	// A caller that went away (its request context ended) is no failure
	// of the store: nothing to log.
	if l.Log != nil && !errors.Is(err, context.Canceled) {
		l.Log.Error("rate limiter store failed", zap.String("limit", name), zap.Bool("fail_open", failOpen), zap.Error(err))
	}
	if failOpen {
		return nil
	}
	return ErrUnavailable
}

// Attempt is one authentication attempt charged in advance to the
// failed-authentication budgets (the caller's IP, the agent id from that
// IP, and the agent's ceilings): charging before the secret is checked
// means a burst of parallel guesses cannot all slip in under the limit.
// Succeeded gives the charge back, so successes never count.
type Attempt struct {
	l       *Limits
	charged []charge
	known   string // the KnownAddresses key to mark on success
}

type charge struct {
	lim Limiter
	key string
}

// BudgetAgentCeiling names the refusal of an attempt because the agent
// itself is being guessed at from many addresses.
const BudgetAgentCeiling = "authentication_agent"

// ChargeAttempt charges an attempt, or refuses it (*Exceeded) when a budget
// is already spent, before any hashing happens. agentID may be empty.
func (l *Limits) ChargeAttempt(ctx context.Context, w http.ResponseWriter, ip, agentID string) (*Attempt, error) {
	if l == nil || l.FailedAuth == nil {
		return nil, nil
	}
	a := &Attempt{l: l}
	take := func(lim Limiter, key string) (Status, error) {
		st, err := lim.Take(ctx, key)
		if err != nil {
			a.refund(ctx)
			return st, l.storeFailure("authentication", err, l.AuthFailOpen)
		}
		a.charged = append(a.charged, charge{lim, key})
		return st, nil
	}
	var worst Status
	ipKey := IPKey(ip)
	keys := []string{ipKey}
	if agentID != "" && len(agentID) <= 128 {
		keys = append(keys, "agent:"+agentID+"|"+ipKey)
	}
	for i, key := range keys {
		st, err := take(l.FailedAuth, key)
		if err != nil {
			return nil, err
		}
		if i == 0 || st.Remaining < worst.Remaining || st.Reached {
			worst = st
		}
	}
	setHeaders(w, worst)
	if worst.Reached {
		// A lock-out lasts until the window of the exhausted budget ends;
		// refused attempts do not extend it.
		a.refund(ctx)
		return nil, l.exceeded("authentication", worst)
	}
	if len(keys) == 2 && len(l.FailedAuthAgent) > 0 {
		known := knownKeys(agentID, ipKey, time.Now())
		a.known = known[0]
		if !l.isKnown(ctx, known) {
			for _, lim := range l.FailedAuthAgent {
				st, err := take(lim, "agent:"+agentID)
				if err != nil {
					return nil, err
				}
				if st.Reached {
					if l.ceilingTry(ctx, "try:"+agentID+"|"+ipKey) {
						break
					}
					a.refund(ctx)
					return nil, l.exceeded(BudgetAgentCeiling, st)
				}
			}
		}
	}
	return a, nil
}

// refund gives back what the attempt charged.
func (a *Attempt) refund(ctx context.Context) {
	for _, c := range a.charged {
		if err := c.lim.Refund(ctx, c.key); err != nil {
			_ = a.l.storeFailure("authentication", err, true)
		}
	}
	a.charged = nil
}

// knownKeys are the KnownAddresses keys of today and yesterday (UTC): a
// success marks today's, and either makes the address known, so it stays
// known for a day or two after the agent's last success there.
func knownKeys(agentID, ipKey string, now time.Time) [2]string {
	base := "known:" + agentID + "|" + ipKey + "|"
	return [2]string{base + now.UTC().Format("20060102"), base + now.UTC().AddDate(0, 0, -1).Format("20060102")}
}

// isKnown reports whether the agent authenticated from this address today
// or yesterday.
func (l *Limits) isKnown(ctx context.Context, keys [2]string) bool {
	if l.KnownAddresses == nil {
		return false
	}
	for _, key := range keys {
		if st, err := l.KnownAddresses.Peek(ctx, key); err == nil && st.Remaining < st.Limit {
			return true
		}
	}
	return false
}

// ceilingTry reports whether this address may still try once at an agent
// whose ceiling is reached (and spends that try).
func (l *Limits) ceilingTry(ctx context.Context, key string) bool {
	if l.CeilingTries == nil {
		return false
	}
	st, err := l.CeilingTries.Take(ctx, key)
	return err == nil && !st.Reached
}

// Succeeded gives the charge back: the credentials were right; the
// address becomes one the agent is known to use. It does nothing on a nil
// Attempt.
func (a *Attempt) Succeeded(ctx context.Context) {
	if a == nil {
		return
	}
	a.refund(ctx)
	if a.known != "" && a.l.KnownAddresses != nil {
		if _, err := a.l.KnownAddresses.Take(ctx, a.known); err != nil {
			_ = a.l.storeFailure("authentication", err, true)
		}
		a.known = ""
	}
}

// TakeAPI charges one authenticated API call to the agent (the IdP's
// /api/* and guarded routes). With a budget of this package's stores the
// calls are charged to the store in batches while the agent is far from
// its limit (see apiLeases).
func (l *Limits) TakeAPI(ctx context.Context, w http.ResponseWriter, agentID string) error {
	if l == nil || l.API == nil {
		return nil
	}
	if b, ok := l.API.(batchLimiter); ok {
		return l.takeLeased(ctx, w, b, agentID)
	}
	return l.Take(ctx, w, l.API, "api", "agent:"+agentID, l.APIFailOpen)
}

// Registration is one registration (of an agent, or of a client) charged
// in advance to the caller's IP, so parallel requests cannot slip past the
// budget. Only registrations that create something count: Failed gives
// the charge back and counts the failure against the IP's
// failed-authentication budget instead, so three typos do not lock a
// person out for an hour while a flood of junk is still bounded.
type Registration struct {
	l       *Limits
	regKey  string
	failKey string
	charged bool
}

// ChargeRegistration charges a registration under prefix ("" for agents,
// "client-" for clients) to the caller's IP, or refuses it (*Exceeded)
// when the registration budget, or the failed-authentication budget its
// failures count against, is spent.
func (l *Limits) ChargeRegistration(ctx context.Context, w http.ResponseWriter, r *http.Request, prefix string) (*Registration, error) {
	if l == nil {
		return nil, nil
	}
	ip := IPKey(ClientIP(r))
	reg := &Registration{l: l, regKey: prefix + ip, failKey: ip}
	if err := l.Peek(ctx, w, l.FailedAuth, "authentication", reg.failKey, l.AuthFailOpen); err != nil {
		return nil, err
	}
	if l.Registration == nil {
		return reg, nil
	}
	st, err := l.Registration.Take(ctx, reg.regKey)
	if err != nil {
		return nil, l.storeFailure("registration", err, l.AuthFailOpen)
	}
	reg.charged = true
	setHeaders(w, st)
	if st.Reached {
		return nil, l.exceeded("registration", st)
	}
	return reg, nil
}

// Failed gives the registration back; callerFault (the request was
// invalid, not the server unable) counts it as a failed attempt of the
// IP. It does nothing on a nil Registration.
func (g *Registration) Failed(ctx context.Context, callerFault bool) {
	if g == nil {
		return
	}
	if g.charged {
		if err := g.l.Registration.Refund(ctx, g.regKey); err != nil {
			_ = g.l.storeFailure("registration", err, true)
		}
		g.charged = false
	}
	if callerFault && g.l.FailedAuth != nil {
		if _, err := g.l.FailedAuth.Take(ctx, g.failKey); err != nil {
			_ = g.l.storeFailure("authentication", err, true)
		}
	}
}

// TakeAuthorization charges one new authorization request to the
// caller's address.
func (l *Limits) TakeAuthorization(ctx context.Context, w http.ResponseWriter, ip string) error {
	if l == nil {
		return nil
	}
	return l.Take(ctx, w, l.Authorization, "authorization", IPKey(ip), l.AuthFailOpen)
}

// PeekRefresh refuses a refresh of family (of agentID at clientID) whose
// budget, or whose agent's or client's ceiling, is spent; TakeRefresh
// charges a refresh that succeeded. The headers tell where the family
// stands.
func (l *Limits) PeekRefresh(ctx context.Context, w http.ResponseWriter, clientID, agentID, family string) error {
	if l == nil {
		return nil
	}
	if err := l.Peek(ctx, nil, l.RefreshClient, "refresh_client", "client:"+clientID, l.AuthFailOpen); err != nil {
		return err
	}
	if err := l.Peek(ctx, nil, l.RefreshAgent, "refresh_agent", "client:"+clientID+"|agent:"+agentID, l.AuthFailOpen); err != nil {
		return err
	}
	return l.Peek(ctx, w, l.Refresh, "refresh", "family:"+family, l.AuthFailOpen)
}

// TakeRefresh charges one successful refresh to its family and its
// client; a store failure never undoes the refresh that already happened.
func (l *Limits) TakeRefresh(ctx context.Context, w http.ResponseWriter, clientID, agentID, family string) error {
	if l == nil {
		return nil
	}
	_ = l.Take(ctx, nil, l.RefreshClient, "refresh_client", "client:"+clientID, true)
	_ = l.Take(ctx, nil, l.RefreshAgent, "refresh_agent", "client:"+clientID+"|agent:"+agentID, true)
	return l.Take(ctx, w, l.Refresh, "refresh", "family:"+family, true)
}
