package dispatcher

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outflow-dev/outflow/deliverystats"
	"github.com/outflow-dev/outflow/record"
)

// Metrics are the dispatcher's Prometheus series (SPEC §8).
type Metrics struct {
	consumed    prometheus.Counter
	poison      *prometheus.CounterVec
	deliveries  *prometheus.CounterVec
	latency     prometheus.Histogram
	calls       *prometheus.HistogramVec
	retries     prometheus.Counter
	misconfig   *prometheus.CounterVec
	laneWait    prometheus.Counter
	shed        prometheus.Counter
	detached    prometheus.Counter
	cursorSaves prometheus.Counter
	// stats has the same deliveries and latencies per subscription, for
	// GetSubscriptionStats.
	stats *deliverystats.Recorder
}

// NewMetrics creates the series and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		stats: deliverystats.NewRecorder(),
		consumed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outflow_records_consumed_total", Help: "Records read from the sources.",
		}),
		poison: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outflow_records_poison_total", Help: "Records that did not decode, by reason; kept in poison_records.",
		}, []string{"reason"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outflow_deliveries_total",
			Help: "Webhook deliveries by outcome: delivered, retry_queued, parked (not attempted: paused, circuit open, shed, shutdown), dead, gone.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outflow_end_to_end_latency_seconds",
			Help:    "From the source's append time to the receiver's 2xx (hot path).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14), // 5ms … 41s
		}),
	}
	m.calls = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "outflow_getfeatures_duration_seconds",
		Help:    "Feature store calls by operation (get-features, get-features-batch) and result (ok, error).",
		Buckets: prometheus.ExponentialBuckets(0.002, 2, 12), // 2ms … 4s
	}, []string{"op", "result"})
	m.retries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outflow_consistency_retries_total",
		Help: "GetFeatures calls repeated because the vector did not yet reflect the record.",
	})
	m.misconfig = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outflow_enrichment_misconfigured_total",
		Help: "Delivery attempts the gateway's own configuration failed, by reason: credentials (the feature store refused the gateway's key or token, HTTP 401/403), no_backend (the subscription's feature-store backend is not configured). Not counted against retry policies; alert on any increase.",
	}, []string{"reason"})
	for _, r := range []string{"credentials", "no_backend"} {
		m.misconfig.WithLabelValues(r)
	}
	m.laneWait = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outflow_lane_wait_seconds_total",
		Help: "Time the consumer spent waiting for room in full delivery lanes (backpressure).",
	})
	m.shed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outflow_subscriptions_shed_total",
		Help: "Times a subscription whose lane stayed full past --lane-wait was shed to the retry queue.",
	})
	m.detached = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outflow_subscriptions_detached_total",
		Help: "Times a subscription that could not keep up (lane full past --lane-wait, or circuit open) was detached onto its own cursor.",
	})
	m.cursorSaves = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outflow_subscription_cursor_saves_total",
		Help: "Batched saves of detached subscriptions' cursors to PostgreSQL.",
	})
	// Every label value starts at zero, so dashboards and alerts see a
	// series before its first event.
	for _, r := range record.Reasons() {
		m.poison.WithLabelValues(string(r))
	}
	m.poison.WithLabelValues("not_kept")
	for _, o := range []string{"delivered", "retry_queued", "parked", "dead", "gone"} {
		m.deliveries.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.consumed, m.poison, m.deliveries, m.latency, m.calls, m.retries, m.misconfig, m.laneWait, m.shed, m.detached, m.cursorSaves)
	}
	return m
}

// Stats returns the per-subscription statistics these metrics feed, which
// the API serves as GetSubscriptionStats.
func (m *Metrics) Stats() *deliverystats.Recorder { return m.stats }

// delivery counts one delivery outcome (a label of outflow_deliveries_total)
// of a subscription.
func (m *Metrics) delivery(subID, outcome string, now time.Time) {
	m.deliveries.WithLabelValues(outcome).Inc()
	m.stats.Add(subID, deliverystats.Outcome(outcome), now)
}

func (m *Metrics) observeLatency(subID string, appended, now time.Time) {
	if !appended.IsZero() {
		m.latency.Observe(now.Sub(appended).Seconds())
		m.stats.ObserveLatency(subID, now.Sub(appended), now)
	}
}

// ObserveCall records a feature store call; Metrics is the enricher's
// enrich.Observer.
func (m *Metrics) ObserveCall(op string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.calls.WithLabelValues(op, result).Observe(d.Seconds())
}

// ObserveConsistencyRetry counts a consistency retry.
func (m *Metrics) ObserveConsistencyRetry() { m.retries.Inc() }
