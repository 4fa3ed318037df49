package dispatcher

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/outflow-dev/outflow/enrich"
	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

// outcome is what one attempt came to.
type outcome int

const (
	// delivered: the receiver answered 2xx.
	delivered outcome = iota
	// failed: worth another attempt (5xx, timeout, 3xx, inconsistent vector,
	// feature store unavailable, blocked address).
	failed
	// fatal: no attempt can succeed (the feature store refused the request:
	// unknown feature service, bad credentials); dead-lettered at once.
	fatal
	// gone: the receiver answered 410 and asked to stop.
	gone
	// interrupted: the gateway is stopping; the attempt does not count.
	interrupted
	// misconfigured: the gateway's own configuration failed the attempt (the
	// feature store refused its credentials, or the subscription's backend
	// is not configured). It does not count against the retry policy: the
	// event waits, with backoff, for the operator (SPEC §4).
	misconfigured
)

type attemptResult struct {
	outcome    outcome
	statusCode int
	err        string
	retryAfter time.Duration
}

// attempt enriches (when the subscription asks) and sends one event.
func (d *Dispatcher) attempt(ctx context.Context, sub *match.Subscription, rec *record.Record, env *envelope, n int, pre *prefetch) (res attemptResult) {
	ctx, span := d.tracing.startAttempt(ctx, sub, env.ID, n)
	defer endAttempt(span, &res)
	var body []byte
	if e := sub.Proto.GetEnrichment(); e != nil {
		if d.enricher == nil {
			// Delivering without the vector would break the subscription's
			// contract; keep the event until a feature store is configured.
			return d.misconfiguration(ctx, "no_backend", errors.New("enrichment requested but this gateway has no feature store configured"))
		}
		var res *enrich.Result
		var err error
		if pre != nil {
			res, err = pre.wait(ctx)
		} else {
			ectx, espan := d.tracing.start(ctx, "outflow.enrich")
			res, err = d.enricher.Enrich(ectx, rec, e)
			endSpan(espan, err)
		}
		if err != nil {
			if storeErr, ok := errors.AsType[*enrich.StoreError](err); ok && storeErr.OperatorFault && ctx.Err() == nil {
				reason := "credentials"
				if errors.Is(err, enrich.ErrNoBackend) {
					reason = "no_backend"
				}
				return d.misconfiguration(ctx, reason, err)
			}
			return enrichFailure(ctx, err)
		}
		d.misconfigStreak.Store(0)
		body = env.bodyWith(res.JSONLen(e.GetWorkspaceName(), e.GetFeatureServiceName()), func(b []byte) []byte {
			return res.AppendJSON(b, e.GetWorkspaceName(), e.GetFeatureServiceName())
		})
	} else {
		body = env.body(nil)
	}
	var buf [2]webhook.Secret // the current secret, and one overlapping after a rotation
	secrets, err := sub.SigningSecrets(buf[:0], d.now())
	if err != nil {
		return attemptResult{outcome: fatal, err: err.Error()}
	}
	wh := sub.Proto.GetWebhook()
	r := d.sender.Send(ctx, webhook.Request{
		URL: wh.GetUrl(), Headers: wh.GetHeaders(), EventID: env.ID, Body: body,
		Secrets: secrets, Attempt: n, Timeout: wh.GetTimeout().AsDuration(), Trace: d.tracing.headers(ctx),
	})
	res = attemptResult{statusCode: r.StatusCode, retryAfter: r.RetryAfter}
	if r.Err != nil {
		res.err = r.Err.Error()
	}
	switch r.Outcome {
	case webhook.OutcomeDelivered:
		res.outcome = delivered
	case webhook.OutcomeGone:
		res.outcome = gone
	default:
		res.outcome = failed
		if ctx.Err() != nil {
			res.outcome = interrupted
		}
	}
	return res
}

func enrichFailure(ctx context.Context, err error) attemptResult {
	var storeErr *enrich.StoreError
	switch {
	case ctx.Err() != nil:
		return attemptResult{outcome: interrupted, err: err.Error()}
	case errors.As(err, &storeErr) && !storeErr.Retriable:
		return attemptResult{outcome: fatal, err: "feature store: " + err.Error()}
	default:
		return attemptResult{outcome: failed, err: "enrichment: " + err.Error()}
	}
}

// misconfiguration counts and reports an attempt the gateway's own
// configuration failed, and schedules the event's next try after the
// misconfiguration backoff. The error log is limited to one record per
// misconfigLogEvery, so that every waiting event does not repeat it; the
// metric counts each one.
func (d *Dispatcher) misconfiguration(ctx context.Context, reason string, err error) attemptResult {
	n := d.misconfigStreak.Add(1)
	d.metrics.misconfig.WithLabelValues(reason).Inc()
	now := d.now()
	if last := d.misconfigLogged.Load(); last == 0 || now.Sub(time.Unix(0, last)) >= misconfigLogEvery {
		if d.misconfigLogged.CompareAndSwap(last, now.UnixNano()) {
			d.logger.ErrorContext(ctx, "feature store unusable because of the gateway's configuration; events wait without spending their retry policy",
				slog.String("reason", reason), slog.Int64("consecutive", n), slog.Any("error", err))
		}
	}
	return attemptResult{outcome: misconfigured, err: "gateway misconfigured: " + err.Error(), retryAfter: d.misconfigDelay(n)}
}

// misconfigLogEvery bounds how often a persisting misconfiguration is logged.
const misconfigLogEvery = 30 * time.Second

// misconfigDelay is the wait before an event that hit the gateway's
// misconfiguration is tried again: Config.MisconfigBackoff, doubled for each
// consecutive such failure the gateway has seen (n, from 1), capped at
// MaxMisconfigBackoff, with ±20% jitter inside the cap.
func (d *Dispatcher) misconfigDelay(n int64) time.Duration {
	base := d.cfg.MisconfigBackoff
	for i := int64(1); i < n && base < MaxMisconfigBackoff; i++ {
		base *= 2
	}
	base = min(base, MaxMisconfigBackoff)
	lo, hi := base-base/5, min(base+base/5, MaxMisconfigBackoff)
	d.mu.Lock()
	defer d.mu.Unlock()
	return lo + time.Duration(d.rnd.Int64N(int64(hi-lo)+1))
}

// firstAttempt tries a job on the hot path, under the sender's ctx (which
// ends with lanesCtx); anything but a delivery leaves the hot path for the
// retry queue (or the dead letters) before the job is settled.
func (d *Dispatcher) firstAttempt(ctx context.Context, t *target, j *job) {
	res := d.attempt(withParent(ctx, j.trace), j.sub, j.rec, j.event(), 1, j.pre)
	now := d.now()
	if j.probe && res.outcome != delivered && res.outcome != failed {
		// A probe that says nothing of the receiver (the gateway stopping
		// or misconfigured, 410, a fatal error) frees the slot at once.
		t.breaker.release()
	}
	switch res.outcome {
	case delivered:
		t.breaker.success()
		d.metrics.delivery(j.sub.ID, "delivered", now)
		if !j.replay { // a replayed record's age is not the gateway's latency
			d.metrics.observeLatency(j.sub.ID, j.msg.AppendTime, now)
		}
		j.done()
		return
	case interrupted:
		d.park(context.Background(), j, "gateway shutting down", now)
		return
	case misconfigured:
		// Not an attempt of the subscription's: it waits in the queue with
		// no attempt counted, and the receiver's breaker is not touched.
		d.park(context.Background(), j, res.err, now.Add(res.retryAfter))
		return
	case gone:
		d.disable(j.sub.ID, "the receiver answered 410 Gone")
	case failed:
		d.breakerFailure(t, j.sub.ID, now)
	}
	d.settleFailure(j, res, 1, now, now)
}

// settleFailure queues a failed first attempt for retry, or dead-letters it,
// then marks the job settled.
func (d *Dispatcher) settleFailure(j *job, res attemptResult, attempts int, first, now time.Time) {
	status, next := d.nextStep(j.sub, res, attempts, first, now)
	d.metrics.delivery(j.sub.ID, deliveryLabel(res.outcome, status), now)
	d.store1(context.Background(), j, status, attempts, next, first, res)
}

// nextStep decides what follows a failed attempt: another one (when and
// RETRYING) or the dead letters.
func (d *Dispatcher) nextStep(sub *match.Subscription, res attemptResult, attempts int, first, now time.Time) (string, time.Time) {
	policy := sub.Proto.GetRetryPolicy()
	switch {
	case res.outcome == fatal, res.outcome == gone:
		return store.StatusDead, time.Time{}
	case attempts >= int(policy.GetMaxAttempts()):
		return store.StatusDead, time.Time{}
	}
	d.mu.Lock()
	wait := webhook.RetryAfterOrBackoff(attempts+1, res.retryAfter, d.rnd)
	d.mu.Unlock()
	next := now.Add(wait)
	if maxAge := policy.GetMaxAge().AsDuration(); maxAge > 0 && next.Sub(first) > maxAge {
		return store.StatusDead, time.Time{}
	}
	return store.StatusRetrying, next
}

func deliveryLabel(o outcome, status string) string {
	switch {
	case o == gone:
		return "gone"
	case status == store.StatusDead:
		return "dead"
	default:
		return "retry_queued"
	}
}

// store1 hands a job's delivery row to the writers, which settle the job
// once the row is confirmed. The caller waits while the writers are busy
// (backpressure) until ctx ends; a job whose row is never confirmed (ctx
// ended, or the dispatcher stopped first) stays unsettled: its message is
// not Done, so it is read again after a restart.
func (d *Dispatcher) store1(ctx context.Context, j *job, status string, attempts int, next, first time.Time, res attemptResult) {
	env := j.event()
	base := env.body(nil)
	id, err := store.NewID("dlv_")
	if err != nil {
		d.logger.Error("making a delivery id", slog.Any("error", err))
		return
	}
	dl := &store.Delivery{
		ID: id, SubscriptionID: j.sub.ID, TenantID: j.sub.TenantID, EventID: env.ID,
		Status: status, Event: base, Attempts: attempts, NextAttemptTime: next,
		FirstAttemptTime: first, LastError: truncate(res.err, 1024), LastStatusCode: res.statusCode,
	}
	d.writers.submit(ctx, write{what: "queueing a delivery", delivery: dl, requeue: j.replay,
		done: func(err error) {
			if err == nil {
				j.done()
			}
		}})
}

// park moves a job that was not attempted (paused subscription, open
// breaker, shed, shutdown) to the retry queue, due at next. It waits while
// the writers are busy, until ctx ends.
func (d *Dispatcher) park(ctx context.Context, j *job, why string, next time.Time) {
	now := d.now()
	d.metrics.delivery(j.sub.ID, "parked", now)
	d.store1(ctx, j, store.StatusRetrying, 0, next, now, attemptResult{err: why})
}

// breakerFailure records a failure, and disables the subscription when the
// breaker says it has failed for too long. Its events keep their course
// (retry queue, dead letters): a DISABLED subscription's queue waits.
func (d *Dispatcher) breakerFailure(t *target, subID string, now time.Time) {
	if t.breaker.failure(now) {
		d.disable(subID, "the receiver kept failing; disabled by the circuit breaker")
	}
}

// disable marks a subscription DISABLED on the server's behalf.
func (d *Dispatcher) disable(subID, reason string) {
	if err := d.writers.do(write{what: "disabling a subscription", fn: func(ctx context.Context) error {
		return d.store.SetSubscriptionState(ctx, subID, outflowv1.Subscription_DISABLED.String(), reason)
	}}); err != nil {
		return
	}
	d.logger.Warn("subscription disabled", slog.String("subscription_id", subID), slog.String("reason", reason))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
