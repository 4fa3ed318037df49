package enrich

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/tecton"
)

// Enricher fetches consistent feature vectors for records (SPEC §4). It is safe for concurrent
// use; share one per feature store so that identical calls coalesce and distinct ones batch.
//
// It holds no background goroutines of its own: a goroutine runs only while a store call is in
// flight, and every store call ends when its answer arrives or when all its waiters have gone,
// so an Enricher needs no Stop.
type Enricher struct {
	store       FeatureStore
	backoff     *backoff
	batchWindow time.Duration
	maxErrRetry int // negative: no error retries
	confirm     bool
	observer    Observer
	logger      *slog.Logger
	now         func() time.Time

	// Timer hooks, so that tests can drive time with a fake clock along with Now. In
	// production they are sleepContext, time.NewTimer and time.AfterFunc.
	sleep     func(ctx context.Context, d time.Duration) error
	newTimer  func(d time.Duration) (c <-chan time.Time, stop func() bool)
	afterFunc func(d time.Duration, f func()) (stop func() bool)

	mu       sync.Mutex
	inflight map[callKey]*call   // calls not yet answered, by key; guarded by mu
	pending  map[groupKey]*batch // batches gathering calls during their window; guarded by mu
}

// New returns an Enricher for cfg, after applying its defaults. It fails with an error wrapping
// ErrInvalidConfig when cfg is invalid.
func New(cfg Config) (*Enricher, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Enricher{
		store: cfg.Store,
		backoff: &backoff{
			initial:    cfg.InitialBackoff,
			max:        cfg.MaxBackoff,
			multiplier: cfg.Multiplier,
			rng:        rand.New(cfg.Rand),
		},
		batchWindow: cfg.BatchWindow,
		maxErrRetry: cfg.MaxErrorRetries,
		confirm:     cfg.ConfirmCatchUp,
		observer:    cfg.Observer,
		logger:      cfg.Logger,
		now:         cfg.Now,
		sleep:       sleepContext,
		newTimer: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		},
		afterFunc: func(d time.Duration, f func()) func() bool {
			return time.AfterFunc(d, f).Stop
		},
		inflight: make(map[callKey]*call),
		pending:  make(map[groupKey]*batch),
	}, nil
}

// Result is a feature vector ready for delivery.
type Result struct {
	// Vector is the feature vector. It may be shared with other records enriched at the same
	// time (coalescing) and must be treated as read-only.
	Vector *tecton.Vector
	// Consistent reports whether Vector reflects the record (SPEC §4): true when every feature
	// of the record's feature view has an effective time at or after its feature_timestamp, or
	// when the feature service holds no feature of that view; false only with BEST_EFFORT after
	// consistency_timeout (or when feature-store errors outlast the retries), for instance when
	// a key the online store has not materialised yet still answers null without an effective
	// time; nil with NONE, where nothing was checked and the envelope omits "consistent".
	Consistent *bool
	// Attempts is the number of feature-store calls made for this record, failed ones included.
	// A call shared with other records counts once for each of them.
	Attempts int
}

// plan is the part of an Enrich call that does not change between attempts.
type plan struct {
	req         tecton.Request
	mode        outflowv1.Enrichment_Consistency
	timeout     time.Duration
	featureView string
	featureTime time.Time
}

// newPlan validates the inputs and builds the request: the record's entity keys renamed by
// cfg.JoinKeys (entity key → join key; identity for keys not listed).
func newPlan(rec *record.Record, cfg *outflowv1.Enrichment) (plan, error) {
	switch {
	case rec == nil:
		return plan{}, fmt.Errorf("%w: no record", ErrInvalidRequest)
	case cfg == nil:
		return plan{}, fmt.Errorf("%w: no enrichment settings", ErrInvalidRequest)
	case cfg.GetWorkspaceName() == "" && cfg.GetBackend() != outflowv1.Enrichment_FEAST:
		// One Feast feature server serves one project: there is no workspace to name.
		return plan{}, fmt.Errorf("%w: workspace_name is required", ErrInvalidRequest)
	case cfg.GetFeatureServiceName() == "":
		return plan{}, fmt.Errorf("%w: feature_service_name is required", ErrInvalidRequest)
	case len(rec.EntityKeys) == 0:
		return plan{}, fmt.Errorf("%w: record has no entity keys", ErrInvalidRequest)
	}
	renames := cfg.GetJoinKeys()
	// Without renames the join keys are the entity keys: the record's map is shared (both are
	// read-only) rather than copied for every record.
	joinKeys := rec.EntityKeys
	if len(renames) > 0 {
		joinKeys = make(map[string]string, len(rec.EntityKeys))
		for name, value := range rec.EntityKeys {
			joinKey := name
			if to, ok := renames[name]; ok {
				if to == "" {
					return plan{}, fmt.Errorf("%w: join_keys renames entity key %q to an empty name", ErrInvalidRequest, name)
				}
				joinKey = to
			}
			if _, dup := joinKeys[joinKey]; dup {
				return plan{}, fmt.Errorf("%w: two entity keys map to join key %q", ErrInvalidRequest, joinKey)
			}
			joinKeys[joinKey] = value
		}
	}
	mode := cfg.GetConsistency()
	switch mode {
	case outflowv1.Enrichment_STRICT, outflowv1.Enrichment_BEST_EFFORT, outflowv1.Enrichment_NONE:
	default: // CONSISTENCY_UNSPECIFIED, or a value from a newer API version
		mode = outflowv1.Enrichment_STRICT
	}
	timeout := DefaultConsistencyTimeout
	if d := cfg.GetConsistencyTimeout(); d != nil && d.AsDuration() > 0 {
		timeout = min(d.AsDuration(), MaxConsistencyTimeout)
	}
	return plan{
		req: tecton.Request{
			Workspace:      cfg.GetWorkspaceName(),
			FeatureService: cfg.GetFeatureServiceName(),
			JoinKeys:       joinKeys,
		},
		mode:        mode,
		timeout:     timeout,
		featureView: rec.FeatureViewName,
		featureTime: rec.FeatureTimestamp,
	}, nil
}

// Enrich fetches the feature vector cfg asks for, for the entity of rec, and applies the
// consistency rule of SPEC §4.
//
// The join keys are rec.EntityKeys renamed by cfg.JoinKeys. Every mode retries retriable
// feature-store errors (5xx, 429, timeouts) with jittered exponential backoff, honouring a
// Retry-After, within cfg.ConsistencyTimeout (default 10 s, at most 5 min) and
// Config.MaxErrorRetries. The timeout is measured from the first call and bounds the whole
// Enrich call: a retry whose delay would end past it is not made, and a call still in flight
// when it ends is no longer waited for.
//
//   - NONE: the first vector is returned unchecked, with Consistent nil.
//   - STRICT (also for CONSISTENCY_UNSPECIFIED) and BEST_EFFORT: a vector whose features of
//     rec.FeatureViewName all have an effective time at or after rec.FeatureTimestamp
//     (tecton.Check) is returned with Consistent true; so is one holding no feature of that
//     view. A feature of that view without an effective time (a key not materialised yet:
//     MISSING_DATA and no effective time, the first record of a new entity) has not caught
//     up; features of other views, on-demand ones included, are not compared. Otherwise
//     Enrich calls again, bypassing the feature server's cache on every call after the
//     first, until the timeout. Then STRICT fails with an *InconsistentError and BEST_EFFORT
//     returns the freshest vector seen with Consistent false: the one with the fewest
//     features lacking an effective time, then the latest oldest effective time
//     (tecton.Verdict.Fresher), the later vector among equals.
//
// Errors: ErrInvalidRequest (wrapped) before any call; *StoreError with Retriable false at once
// for an error a retry cannot fix; *StoreError with Retriable true when retriable errors (or
// silence) lasted until the timeout or MaxErrorRetries ran out (with BEST_EFFORT, a vector seen
// before is returned instead); *InconsistentError as above; ctx.Err() wrapped when ctx ends.
// IsRetriable tells which failures a later delivery attempt may fix.
//
// The first call is always waited for, up to the longer of the consistency
// timeout and firstCallWait, so a tiny timeout still yields a vector.
// firstCallWait bounds the wait for the first GetFeatures answer when the
// consistency timeout is shorter; the client's own timeout (5s by default)
// normally ends a slow call first.
const firstCallWait = 30 * time.Second

func (e *Enricher) Enrich(ctx context.Context, rec *record.Record, cfg *outflowv1.Enrichment) (*Result, error) {
	p, err := newPlan(rec, cfg)
	if err != nil {
		return nil, err
	}
	deadline := e.now().Add(p.timeout)
	checked := p.mode != outflowv1.Enrichment_NONE

	var (
		attempts   int
		errRetries int
		best       *tecton.Vector // freshest inconsistent vector so far
		bestCheck  tecton.Verdict // the rule's verdict on best
		lastErr    error
		retryAfter time.Duration
		// caughtUp is the first consistent vector after an inconsistent one, waiting for
		// the confirming read (Config.ConfirmCatchUp).
		caughtUp *tecton.Vector
	)
	req := p.req
	for {
		if attempts > 0 && !e.now().Before(deadline) {
			// The wait overshot the deadline (timers are not exact): no call is made, so none
			// is counted.
			return e.timedOut(ctx, p, attempts, best, bestCheck, lastErr, retryAfter)
		}
		// Every retry in a checked mode bypasses the feature server's cache: a cached stale
		// value could otherwise keep the record from ever becoming consistent.
		req.BypassCache = checked && attempts > 0
		// The first call is always waited for (the feature-store client's own
		// timeout bounds it): consistency_timeout bounds the retries, and
		// without one answer BEST_EFFORT would have nothing to deliver.
		callDeadline := deadline
		if attempts == 0 {
			callDeadline = e.now().Add(max(p.timeout, firstCallWait))
		}
		attempts++
		vec, err := e.fetch(ctx, req, callDeadline)
		span := trace.SpanFromContext(ctx) // the caller's enrichment span, if it traces

		var wait time.Duration
		switch {
		case errors.Is(err, errDeadline):
			return e.timedOut(ctx, p, attempts, best, bestCheck, lastErr, retryAfter)
		case err != nil && ctx.Err() != nil:
			return nil, fmt.Errorf("enrich %s/%s: %w", p.req.Workspace, p.req.FeatureService, ctx.Err())
		case err != nil:
			if isAuthError(err) {
				// The store refused the gateway's own credentials: an operator's fault that
				// no retry within this call can fix and no subscriber should pay for (SPEC §4).
				return nil, &StoreError{Err: err, Retriable: true, OperatorFault: true, Attempts: attempts}
			}
			if !isRetriable(err) {
				return nil, &StoreError{Err: err, Attempts: attempts}
			}
			traceAttempt(span, attempts, req.BypassCache, "error", err)
			lastErr = err
			retryAfter = retryAfterOf(err)
			errRetries++
			if e.maxErrRetry < 0 || errRetries > e.maxErrRetry {
				if p.mode == outflowv1.Enrichment_BEST_EFFORT && best != nil {
					return &Result{Vector: best, Consistent: new(false), Attempts: attempts}, nil
				}
				return nil, &StoreError{Err: err, Retriable: true, RetryAfter: retryAfter, Attempts: attempts}
			}
			wait = max(e.backoff.delay(attempts-1), retryAfter)
		case !checked:
			traceAttempt(span, attempts, req.BypassCache, "unchecked", nil)
			return &Result{Vector: vec, Attempts: attempts}, nil
		default:
			verdict := vec.Check(p.featureView, p.featureTime)
			outcome := "inconsistent"
			if verdict.Consistent {
				outcome = "consistent"
			}
			traceAttempt(span, attempts, req.BypassCache, outcome, nil)
			switch {
			case verdict.Consistent && (!e.confirm || best == nil || caughtUp != nil && sameValues(caughtUp, vec)):
				return &Result{Vector: vec, Consistent: new(true), Attempts: attempts}, nil
			case verdict.Consistent:
				// Caught up after an inconsistent answer: read again, at once the first time,
				// in case the answer was a write half done (values still moving: back off).
				if caughtUp != nil {
					wait = e.backoff.delay(attempts - 1)
				}
				caughtUp = vec
				lastErr, retryAfter = nil, 0
			default:
				caughtUp = nil
				if best == nil || verdict.Fresher(bestCheck) {
					best, bestCheck = vec, verdict
				}
				lastErr, retryAfter = nil, 0
				wait = e.backoff.delay(attempts - 1)
			}
		}

		if !e.now().Add(wait).Before(deadline) {
			return e.timedOut(ctx, p, attempts, best, bestCheck, lastErr, retryAfter)
		}
		if err == nil {
			e.observer.ObserveConsistencyRetry()
		}
		if err := e.sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("enrich %s/%s: waiting to retry: %w", p.req.Workspace, p.req.FeatureService, err)
		}
	}
}

// sameValues reports whether a and b hold the same features with the same values.
func sameValues(a, b *tecton.Vector) bool {
	if len(a.Features) != len(b.Features) {
		return false
	}
	for i, f := range a.Features {
		g := b.Features[i]
		if f.Name != g.Name || !bytes.Equal(f.Value, g.Value) {
			return false
		}
	}
	return true
}

// traceAttempt records one feature-store call as an event "enrich.attempt" on the caller's
// span (OpenTelemetry; nothing when the span does not record): the call's number, whether it
// bypassed the cache, and its outcome — "consistent", "inconsistent", "unchecked" (NONE) or
// "error".
func traceAttempt(span trace.Span, n int, bypassCache bool, outcome string, err error) {
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{
		attribute.Int("outflow.enrich.attempt", n),
		attribute.Bool("outflow.enrich.bypass_cache", bypassCache),
		attribute.String("outflow.enrich.outcome", outcome),
	}
	if err != nil {
		attrs = append(attrs, attribute.String("error.message", err.Error()))
	}
	span.AddEvent("enrich.attempt", trace.WithAttributes(attrs...))
}

// timedOut builds the outcome when the consistency_timeout ends: the freshest vector for
// BEST_EFFORT, an *InconsistentError for STRICT, and a retriable *StoreError when no vector
// arrived at all.
func (e *Enricher) timedOut(ctx context.Context, p plan, attempts int, best *tecton.Vector, bestCheck tecton.Verdict, lastErr error, retryAfter time.Duration) (*Result, error) {
	if best == nil {
		err := lastErr
		if err == nil {
			err = fmt.Errorf("%w: no answer from %s/%s within %s", ErrTimeout, p.req.Workspace, p.req.FeatureService, p.timeout)
		}
		return nil, &StoreError{Err: err, Retriable: true, RetryAfter: retryAfter, Attempts: attempts}
	}
	e.logger.LogAttrs(ctx, slog.LevelDebug, "enrich: consistency timeout",
		slog.String("workspace", p.req.Workspace),
		slog.String("feature_service", p.req.FeatureService),
		slog.String("feature_view", p.featureView),
		slog.String("consistency", p.mode.String()),
		slog.Int("attempts", attempts),
		slog.Int("features_missing", bestCheck.Missing),
		slog.Int("features_behind", bestCheck.Behind),
		slog.Duration("timeout", p.timeout),
	)
	if p.mode == outflowv1.Enrichment_BEST_EFFORT {
		return &Result{Vector: best, Consistent: new(false), Attempts: attempts}, nil
	}
	ie := &InconsistentError{
		Attempts:         attempts,
		Last:             best,
		FeatureView:      p.featureView,
		FeatureTimestamp: p.featureTime,
		Missing:          bestCheck.Missing,
		Timeout:          p.timeout,
	}
	if bestCheck.Missing == 0 {
		ie.Lag = p.featureTime.Sub(bestCheck.Oldest)
	}
	return nil, ie
}
