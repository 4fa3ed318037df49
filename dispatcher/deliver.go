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
)

type attemptResult struct {
	outcome    outcome
	statusCode int
	err        string
	retryAfter time.Duration
}

// attempt enriches (when the subscription asks) and sends one event.
func (d *Dispatcher) attempt(ctx context.Context, sub *match.Subscription, rec *record.Record, env *envelope, n int) attemptResult {
	var fv *outflowv1.FeatureVector
	if e := sub.Proto.GetEnrichment(); e != nil {
		if d.enricher == nil {
			// Delivering without the vector would break the subscription's
			// contract; keep the event until a feature store is configured.
			return attemptResult{outcome: failed, err: "enrichment requested but this gateway has no feature store configured"}
		}
		res, err := d.enricher.Enrich(ctx, rec, e)
		if err != nil {
			return enrichFailure(ctx, err)
		}
		fv = res.Proto(e.GetWorkspaceName(), e.GetFeatureServiceName())
	}
	body, err := env.withVector(fv)
	if err != nil {
		return attemptResult{outcome: fatal, err: err.Error()}
	}
	secrets, err := activeSecrets(sub, d.now())
	if err != nil {
		return attemptResult{outcome: fatal, err: err.Error()}
	}
	wh := sub.Proto.GetWebhook()
	r := d.sender.Send(ctx, webhook.Request{
		URL: wh.GetUrl(), Headers: wh.GetHeaders(), EventID: env.ID, Body: body,
		Secrets: secrets, Attempt: n, Timeout: wh.GetTimeout().AsDuration(),
	})
	res := attemptResult{statusCode: r.StatusCode, retryAfter: r.RetryAfter}
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

func activeSecrets(sub *match.Subscription, now time.Time) ([]webhook.Secret, error) {
	var out []webhook.Secret
	for _, s := range sub.Secrets.Active(now) {
		sec, err := webhook.ParseSecret(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sec)
	}
	return out, nil
}

// firstAttempt tries a job on the hot path; anything but a delivery leaves
// the hot path for the retry queue (or the dead letters) before the job is
// settled.
func (d *Dispatcher) firstAttempt(t *target, j *job) {
	res := d.attempt(d.lanesCtx, j.sub, j.rec, j.env, 1)
	now := d.now()
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
		d.park(j, "gateway shutting down", now)
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
	d.store1(j, status, attempts, next, first, res)
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

// store1 writes a job's delivery row durably, then settles the job. If the
// dispatcher stops before the write succeeds, the job stays unsettled: its
// message is not Done, so it is read again after a restart.
func (d *Dispatcher) store1(j *job, status string, attempts int, next, first time.Time, res attemptResult) {
	base, err := j.env.withVector(nil)
	if err != nil {
		d.logger.Error("encoding an event to queue it", slog.Any("error", err))
		return
	}
	id, err := store.NewID("dlv_")
	if err != nil {
		d.logger.Error("making a delivery id", slog.Any("error", err))
		return
	}
	dl := &store.Delivery{
		ID: id, SubscriptionID: j.sub.ID, TenantID: j.sub.TenantID, EventID: j.env.ID,
		Status: status, Event: base, Attempts: attempts, NextAttemptTime: next,
		FirstAttemptTime: first, LastError: truncate(res.err, 1024), LastStatusCode: res.statusCode,
	}
	if d.durably(context.Background(), "queueing a delivery", func(ctx context.Context) error {
		var err error
		if j.replay {
			_, err = d.store.RequeueDelivery(ctx, dl)
		} else {
			_, err = d.store.EnqueueDelivery(ctx, dl)
		}
		return err
	}) {
		j.done()
	}
}

// park moves a job that was not attempted (paused subscription, open
// breaker, full queue, shutdown) to the retry queue, due at next.
func (d *Dispatcher) park(j *job, why string, next time.Time) {
	now := d.now()
	d.metrics.delivery(j.sub.ID, "parked", now)
	d.inFlight.Add(1)
	go func() {
		defer d.inFlight.Done()
		d.store1(j, store.StatusRetrying, 0, next, now, attemptResult{err: why})
	}()
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
	if !d.durably(context.Background(), "disabling a subscription", func(ctx context.Context) error {
		return d.store.SetSubscriptionState(ctx, subID, outflowv1.Subscription_DISABLED.String(), reason)
	}) {
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
