// Package metrics holds the Prometheus metrics of the identity provider
// and the guard. They live as long as the process, so counts survive a
// config reload, and are registered on each config's registry (Caddy's
// admin /metrics serves the current one). Labels take only values from
// fixed lists or from the configuration: never an agent id, a token id,
// an address or other request input.
package metrics

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "auth_agent"

var (
	tokensIssued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "tokens_issued_total",
		Help:      "Access tokens issued, by grant type and client (the client_id of a configured or admin-created client, dynamic for registered and metadata-document clients, agent for an agent as itself).",
	}, []string{"grant", "client"})
	authentications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "authentications_total",
		Help:      "Agent and client authentications, by result (success, failure) and reason (the method on success, why on failure).",
	}, []string{"result", "reason"})
	signins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "signins_total",
		Help:      "Sign-in (authorization) requests, by outcome.",
	}, []string{"outcome"})
	guardDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "guard_decisions_total",
		Help:      "Requests agent_guard decided, by site and result (allowed, or why it refused).",
	}, []string{"site", "result"})
	idJAGs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "id_jag_total",
		Help:      "Identity Assertion JWT Authorization Grants, by outcome: accepted or refused (redeemed here), issued or issue_refused (issued here for another server).",
	}, []string{"outcome"})
	rateLimitRejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "ratelimit_rejections_total",
		Help:      "Requests refused with 429 because a budget was spent, by budget.",
	}, []string{"budget"})
	storageOperations = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "storage_operation_seconds",
		Help:      "Latency of storage operations, by backend and operation.",
		Buckets:   []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"backend", "operation"})
	changeLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "change_propagation_seconds",
		Help:      "Time from a change (revocation, agent update) being written by any instance to this instance applying it, as far as the instances' clocks agree.",
		Buckets:   []float64{.01, .05, .1, .25, .5, 1, 1.5, 2, 3, 5, 10, 30},
	})
	webhookDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "webhook_deliveries_total",
		Help:      "Webhook delivery attempts, by result (delivered, failed, gave_up).",
	}, []string{"result"})
	keys = &keyCollector{
		age: prometheus.NewDesc(namespace+"_signing_key_age_seconds",
			"Age of the signing key in use, by algorithm.", []string{"alg"}, nil),
		next: prometheus.NewDesc(namespace+"_signing_key_next_rotation_seconds",
			"Seconds until the signing keys are next rotated (negative when overdue).", nil, nil),
	}
)

// secretVerifications reads the process's count of argon2id verifications
// (set once by the Caddy module: the hasher is process-wide).
var secretVerifications = prometheus.NewCounterFunc(prometheus.CounterOpts{
	Namespace: namespace, Name: "secret_hash_verifications_total",
	Help: "Agent secrets verified with argon2id (authentications the memo of verified secrets did not answer).",
}, func() float64 {
	if f := verificationSource.Load(); f != nil {
		return float64((*f)())
	}
	return 0
})

var verificationSource atomic.Pointer[func() uint64]

// SetVerificationSource names where secret_hash_verifications_total is read.
func SetVerificationSource(f func() uint64) { verificationSource.Store(&f) }

var collectors = []prometheus.Collector{
	tokensIssued, authentications, signins, guardDecisions, idJAGs, rateLimitRejections,
	storageOperations, changeLag, webhookDeliveries, keys, secretVerifications,
}

// Register adds every metric to reg; registering on a registry that has
// them already is not an error.
func Register(reg prometheus.Registerer) error {
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// TokenIssued counts an access token issued with grant to client.
func TokenIssued(grant, client string) { tokensIssued.WithLabelValues(grant, client).Inc() }

// Authentication counts an authentication: result is success or failure,
// reason the method (success) or the cause (failure).
func Authentication(result, reason string) {
	authentications.WithLabelValues(result, reason).Inc()
}

// SignIn counts a sign-in request's outcome.
func SignIn(outcome string) { signins.WithLabelValues(outcome).Inc() }

// GuardDecision counts a request the guard of site let through or refused.
func GuardDecision(site, result string) { guardDecisions.WithLabelValues(site, result).Inc() }

// GuardCounter is GuardDecision for one site and result, resolved once (a
// guarded request then counts without a label lookup).
func GuardCounter(site, result string) prometheus.Counter {
	return guardDecisions.WithLabelValues(site, result)
}

// Outcomes of ID-JAGs (the outcome label of auth_agent_id_jag_total).
const (
	IDJAGAccepted     = "accepted"
	IDJAGRefused      = "refused"
	IDJAGIssued       = "issued"
	IDJAGIssueRefused = "issue_refused"
)

// IDJAG counts an ID-JAG redeemed, refused or issued.
func IDJAG(outcome string) { idJAGs.WithLabelValues(outcome).Inc() }

// RateLimitRejected counts a request refused because budget was spent.
func RateLimitRejected(budget string) { rateLimitRejections.WithLabelValues(budget).Inc() }

// StorageOperation records how long one storage operation took.
func StorageOperation(backend, operation string, d time.Duration) {
	storageOperations.WithLabelValues(backend, operation).Observe(d.Seconds())
}

// ChangeApplied records how long after it was written a change was
// applied here.
func ChangeApplied(lag time.Duration) { changeLag.Observe(max(lag, 0).Seconds()) }

// WebhookDelivery counts a delivery attempt's result.
func WebhookDelivery(result string) { webhookDeliveries.WithLabelValues(result).Inc() }

// KeyState is what the key metrics report at a scrape.
type KeyState struct {
	// Created is when the key signing with each algorithm was made.
	Created map[string]time.Time
	// NextRotation is when the keys are next rotated; zero if unknown.
	NextRotation time.Time
}

// KeySource reports the signing keys' state.
type KeySource func() KeyState

// SetKeySource makes src the one the key metrics read (the running
// config's) and returns a func that clears it again if it is still src.
func SetKeySource(src KeySource) (clear func()) {
	keys.mu.Lock()
	keys.gen++
	gen := keys.gen
	keys.src = src
	keys.mu.Unlock()
	return func() {
		keys.mu.Lock()
		if keys.gen == gen {
			keys.src = nil
		}
		keys.mu.Unlock()
	}
}

// keyCollector reads the key state at each scrape, so the age is current.
type keyCollector struct {
	age, next *prometheus.Desc
	mu        sync.Mutex
	src       KeySource
	gen       uint64
	now       func() time.Time // nil: time.Now
}

func (k *keyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- k.age
	ch <- k.next
}

func (k *keyCollector) Collect(ch chan<- prometheus.Metric) {
	k.mu.Lock()
	src := k.src
	k.mu.Unlock()
	if src == nil {
		return
	}
	now := time.Now()
	if k.now != nil {
		now = k.now()
	}
	st := src()
	for alg, created := range st.Created {
		ch <- prometheus.MustNewConstMetric(k.age, prometheus.GaugeValue, now.Sub(created).Seconds(), alg)
	}
	if !st.NextRotation.IsZero() {
		ch <- prometheus.MustNewConstMetric(k.next, prometheus.GaugeValue, st.NextRotation.Sub(now).Seconds())
	}
}
