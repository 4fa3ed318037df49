package dispatcher

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/store"
)

// RetryConfig tunes the retry worker, which every replica runs.
type RetryConfig struct {
	// Batch is how many due deliveries one claim takes. Defaults to 64.
	Batch int
	// Workers bounds concurrent retry attempts per replica. Defaults to 32.
	Workers int
	// PerSubscription bounds one subscription's retry attempts in flight
	// per replica, so a slow receiver's rows (each holding a worker for up
	// to its timeout) leave the other workers to the other subscriptions.
	// Defaults to 4.
	PerSubscription int
	// Poll is how often the queue is checked when it had nothing due.
	// Defaults to 1s.
	Poll time.Duration
	// Lease is how long a claimed delivery is reserved for this replica;
	// longer than any attempt (webhook timeouts are at most 60s) plus its
	// enrichment. Defaults to 3m.
	Lease time.Duration
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c RetryConfig) WithDefaults() RetryConfig {
	if c.Batch <= 0 {
		c.Batch = 64
	}
	if c.Workers <= 0 {
		c.Workers = 32
	}
	if c.PerSubscription <= 0 {
		c.PerSubscription = 4
	}
	if c.Poll <= 0 {
		c.Poll = time.Second
	}
	if c.Lease <= 0 {
		c.Lease = 3 * time.Minute
	}
	return c
}

// sweepInterval is how often the retry loop also drops the delivery state
// of deleted subscriptions.
const sweepInterval = time.Minute

// RunRetries claims due deliveries from the retry queue and attempts them
// until ctx is done; it also sweeps the lanes of deleted subscriptions.
// Replicas share the queue without sending a delivery twice at once (FOR
// UPDATE SKIP LOCKED with a lease). Claims are fair across subscriptions
// (store.Store.ClaimFair) and only take as many rows as there are free
// workers, at most PerSubscription in flight per subscription. An attempt
// cut short by shutdown is not recorded; its lease runs out and it is
// claimed again.
func (d *Dispatcher) RunRetries(ctx context.Context) error {
	cfg := d.cfg.Retry
	var (
		mu    sync.Mutex
		total int
		busy  = map[string]int{}
		freed = make(chan struct{}, 1)
		wg    sync.WaitGroup
	)
	defer wg.Wait() // the attempts under way
	lastSweep := time.Now()
	for {
		if time.Since(lastSweep) >= sweepInterval {
			d.sweepTargets()
			lastSweep = time.Now()
		}
		mu.Lock()
		free := cfg.Workers - total
		snapshot := make(map[string]int, len(busy))
		for id, n := range busy {
			snapshot[id] = n
		}
		mu.Unlock()
		var claimed []*store.Delivery
		if free > 0 {
			var err error
			claimed, err = d.store.ClaimFair(ctx, store.ClaimParams{Limit: min(cfg.Batch, free), Lease: cfg.Lease,
				PerSubscription: cfg.PerSubscription, Busy: snapshot})
			if err != nil && ctx.Err() == nil {
				d.warn.warn(ctx, "claiming due deliveries", slog.Any("error", err))
			}
		}
		for _, dl := range claimed {
			mu.Lock()
			total++
			busy[dl.SubscriptionID]++
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					total--
					if busy[dl.SubscriptionID]--; busy[dl.SubscriptionID] <= 0 {
						delete(busy, dl.SubscriptionID)
					}
					mu.Unlock()
					select {
					case freed <- struct{}{}:
					default:
					}
				}()
				d.retry(ctx, dl)
			})
		}
		if len(claimed) > 0 && len(claimed) == min(cfg.Batch, free) {
			continue // there may be more due at once
		}
		// Nothing (more) due, or every worker or subscription is at its
		// bound: wait for the poll interval or a freed worker.
		select {
		case <-ctx.Done():
			return nil
		case <-freed:
		case <-time.After(cfg.Poll):
		}
	}
}

// retry makes one more attempt of a queued delivery and records it.
func (d *Dispatcher) retry(ctx context.Context, dl *store.Delivery) {
	sub := d.matcher.Get(dl.SubscriptionID)
	switch {
	case sub == nil:
		return // deleted, and the matcher has not caught up: its rows go with it; the lease lapses
	case sub.Proto.GetWebhook() == nil:
		// Switched to stream delivery: no attempt can ever succeed, so keep it
		// in the dead letters rather than claiming it again every lease.
		d.metrics.delivery(sub.ID, "dead", d.now())
		d.finish(ctx, dl, store.AttemptResult{Status: store.StatusDead, LastError: "the subscription no longer delivers by webhook"})
		return
	}
	var env envelope
	if err := json.Unmarshal(dl.Event, &env); err != nil {
		d.finish(ctx, dl, store.AttemptResult{Status: store.StatusDead, LastError: "stored event is unreadable: " + err.Error()})
		return
	}
	rec, err := record.Decode(env.Record, d.cfg.Decode)
	if err != nil {
		d.finish(ctx, dl, store.AttemptResult{Status: store.StatusDead, LastError: "stored record is unreadable: " + err.Error()})
		return
	}
	attempts := dl.Attempts + 1
	res := d.attempt(ctx, sub, rec, &env, attempts, nil)
	if res.outcome == interrupted {
		return // not recorded: the lease lapses and another attempt follows
	}
	now := d.now()
	if res.outcome == misconfigured {
		// The operator's fault: the delivery waits with its attempts, max_age
		// and breaker untouched.
		d.metrics.delivery(sub.ID, "parked", now)
		d.finish(ctx, dl, store.AttemptResult{Status: store.StatusRetrying, NextAttemptTime: now.Add(res.retryAfter),
			LastError: truncate(res.err, 1024), Uncounted: true})
		return
	}
	t := d.target(sub)
	switch res.outcome {
	case delivered:
		t.breaker.success()
		d.metrics.delivery(sub.ID, "delivered", now)
		d.finish(ctx, dl, store.AttemptResult{Status: store.StatusDelivered, LastStatusCode: res.statusCode})
		return
	case gone:
		d.disable(sub.ID, "the receiver answered 410 Gone")
	case failed:
		d.breakerFailure(t, sub.ID, now)
	}
	status, next := d.nextStep(sub, res, attempts, dl.FirstAttemptTime, now)
	d.metrics.delivery(sub.ID, deliveryLabel(res.outcome, status), now)
	d.finish(ctx, dl, store.AttemptResult{Status: status, NextAttemptTime: next,
		LastError: truncate(res.err, 1024), LastStatusCode: res.statusCode})
}

func (d *Dispatcher) finish(ctx context.Context, dl *store.Delivery, r store.AttemptResult) {
	if err := d.store.FinishAttempt(context.WithoutCancel(ctx), dl.ID, r); err != nil {
		// The lease lapses and the delivery is attempted again: at least once.
		d.warn.warn(ctx, "recording a retry", slog.String("delivery_id", dl.ID), slog.Any("error", err))
	}
}
