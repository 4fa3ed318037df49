package enrich

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/outflow-dev/outflow/feast"
	"github.com/outflow-dev/outflow/tecton"
)

// FeatureStore is the feature-store API the Enricher calls. *tecton.Client and *feast.Client
// satisfy it (see the package documentation).
//
// Implementations make one logical call per method call. Their HTTP transport may retry
// connection failures and 429/5xx a bounded number of times within the call (both clients use
// go-retryablehttp through internal/httpretry), but the Enricher owns every other retry: the
// consistency loop and the retry of errors the transport gave up on. They must be safe for
// concurrent use, return errors whose retriability tecton.IsRetriable or feast.IsRetriable
// reads, and treat the requests and returned vectors as read-only once returned, because the
// Enricher shares them between waiters.
type FeatureStore interface {
	// GetFeatures fetches one feature vector.
	GetFeatures(ctx context.Context, req tecton.Request) (*tecton.Vector, error)
	// GetFeaturesBatch fetches one vector per request, in request order, in one call. The
	// Enricher sends between 2 and tecton.MaxBatchSize requests, all for the same workspace,
	// feature service and BypassCache setting.
	GetFeaturesBatch(ctx context.Context, reqs []tecton.Request) ([]*tecton.Vector, error)
}

var (
	_ FeatureStore = (*tecton.Client)(nil)
	_ FeatureStore = (*feast.Client)(nil)
)

// Observer receives measurements for metrics, so that this package does not depend on a
// metrics library. Its methods are called synchronously on hot paths and must be cheap and safe
// for concurrent use.
type Observer interface {
	// ObserveCall is called once per feature-store call, not per waiter (a coalesced or batched
	// call counts once), with op "get-features" or "get-features-batch", the call's wall-clock
	// duration and its error (nil on success).
	ObserveCall(op string, d time.Duration, err error)
	// ObserveConsistencyRetry is called each time Enrich calls the store again because the
	// vector did not yet reflect the record.
	ObserveConsistencyRetry()
}

// nopObserver is the Observer used when Config.Observer is nil.
type nopObserver struct{}

func (nopObserver) ObserveCall(string, time.Duration, error) {}
func (nopObserver) ObserveConsistencyRetry()                 {}

// Defaults applied by Config.WithDefaults.
const (
	// DefaultInitialBackoff is the base of the first retry delay. SPEC §4 asks for retries
	// "starting near 25 ms": an online store usually catches up within tens of milliseconds of
	// the stream record, so a longer first wait would only add latency.
	DefaultInitialBackoff = 25 * time.Millisecond
	// DefaultMaxBackoff caps every retry delay, so that with the default consistency_timeout
	// (10 s) a record that catches up late is noticed within a second.
	DefaultMaxBackoff = time.Second
	// DefaultMultiplier grows the delay between retries: 25 ms, 50 ms, 100 ms, … up to the cap.
	DefaultMultiplier = 2.0
	// DefaultBatchWindow is how long the first of several distinct GetFeatures calls for one
	// feature service waits for others to share a batch call. 2 ms is well below a GetFeatures
	// round trip yet long enough to gather the keys of one Kafka fetch, which arrive together.
	DefaultBatchWindow = 2 * time.Millisecond
	// DefaultMaxErrorRetries bounds the retries after retriable feature-store errors within one
	// Enrich call. An overloaded feature store should not be hammered for a whole
	// consistency_timeout by every event: after three retries (at most 175 ms of backoff) the
	// event goes to the retry queue, whose schedule is much slower.
	DefaultMaxErrorRetries = 3
	// DefaultConsistencyTimeout is used when a subscription's enrichment sets no
	// consistency_timeout (SPEC §3).
	DefaultConsistencyTimeout = 10 * time.Second
	// MaxConsistencyTimeout is the largest consistency_timeout honoured; larger values are
	// lowered to it. It matches the limit the subscription API documents (5 minutes).
	MaxConsistencyTimeout = 5 * time.Minute
)

// NoBatching as Config.BatchWindow turns batching off: every GetFeatures call is sent on its
// own, at once. Coalescing of identical calls stays on.
const NoBatching time.Duration = -1

// Config configures an Enricher. Only Store is required; call WithDefaults (New does) to fill in
// the rest. A zero duration or count means "the default"; see each field for how to turn a
// feature off.
type Config struct {
	// Store is the feature store to call, usually a *tecton.Client. Required.
	Store FeatureStore
	// InitialBackoff is the base delay before the first retry. Default DefaultInitialBackoff
	// (25 ms); negative is invalid.
	InitialBackoff time.Duration
	// MaxBackoff caps every backoff delay, jitter included: no delay is longer, except when the
	// feature server asks for a longer Retry-After, which is honoured. Default
	// DefaultMaxBackoff (1 s); it must not be below InitialBackoff.
	MaxBackoff time.Duration
	// Multiplier grows the base delay after each retry. Default DefaultMultiplier (2); values
	// below 1 are invalid.
	//
	// Retry n (from 0) waits a delay drawn uniformly from [b/2, b] where
	// b = min(InitialBackoff × Multiplier^n, MaxBackoff) ("equal jitter"): the first retry comes
	// 12.5–25 ms after the first call with the defaults, concurrent retries spread out even once
	// capped, and the cap is never exceeded because jitter only shortens.
	Multiplier float64
	// BatchWindow is how long the first GetFeatures call for a (workspace, feature service,
	// cache bypass) waits to gather calls for other join keys into one get-features-batch call of
	// at most tecton.MaxBatchSize rows. A batch that fills up is sent at once; a window that ends
	// with one pending call sends it with get-features. Default DefaultBatchWindow (2 ms);
	// NoBatching (or any negative value) sends every call at once on its own.
	BatchWindow time.Duration
	// MaxErrorRetries bounds the retries after retriable feature-store errors (5xx, 429,
	// timeouts) within one Enrich call; the consistency_timeout bounds them too. When they run
	// out, Enrich returns a retriable *StoreError. Default DefaultMaxErrorRetries (3); a
	// negative value disables error retries.
	MaxErrorRetries int
	// Rand is the source of backoff jitter. It is used only by this Enricher, under its own
	// lock, and must not be shared. Default: a ChaCha8 source seeded from crypto/rand, so that
	// replicas do not retry in step.
	Rand rand.Source
	// Observer receives call latencies and consistency retries for metrics. Default: none.
	Observer Observer
	// Logger receives debug records about consistency timeouts (feature view, feature service,
	// attempts), never join key values, which identify users. Errors are returned, not logged,
	// so that the dispatcher logs each failure once. Default: discard.
	Logger *slog.Logger
	// Now tells the time; consistency_timeout is measured with it. Default time.Now. Tests set
	// it to a fake clock.
	Now func() time.Time
	// ConfirmCatchUp makes a checked enrichment read once more, at once, when a vector becomes
	// consistent after an inconsistent one, and deliver it only if the second read has the
	// same values. Set it for a store that may answer with a write half done under the newest
	// timestamp: Feast's SQLite online store serves reads on the connection its pushes write
	// on, inside their open transaction, and reports one event timestamp for all of an
	// entity's features of a view (the last row it reads), so mid-push a stale value can come
	// back marked as new, and the consistency rule cannot see it. The moment a record catches
	// up is the moment its write is under way, so that is when it is read twice. Default
	// false (Tecton).
	ConfirmCatchUp bool
}

// WithDefaults returns a copy of c with every unset optional field set to its default. It does
// not validate: New does that after applying defaults.
func (c Config) WithDefaults() Config {
	if c.InitialBackoff == 0 {
		c.InitialBackoff = DefaultInitialBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.InitialBackoff)
	}
	if c.Multiplier == 0 {
		c.Multiplier = DefaultMultiplier
	}
	if c.BatchWindow == 0 {
		c.BatchWindow = DefaultBatchWindow
	}
	if c.MaxErrorRetries == 0 {
		c.MaxErrorRetries = DefaultMaxErrorRetries
	}
	if c.Rand == nil {
		c.Rand = newSeededSource()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// validate reports the first problem with a defaulted Config.
func (c Config) validate() error {
	switch {
	case c.Store == nil:
		return fmt.Errorf("%w: Store is required", ErrInvalidConfig)
	case c.InitialBackoff < 0:
		return fmt.Errorf("%w: InitialBackoff must not be negative, got %s", ErrInvalidConfig, c.InitialBackoff)
	case c.MaxBackoff < c.InitialBackoff:
		return fmt.Errorf("%w: MaxBackoff (%s) must not be below InitialBackoff (%s)", ErrInvalidConfig, c.MaxBackoff, c.InitialBackoff)
	case !(c.Multiplier >= 1): // also rejects NaN
		return fmt.Errorf("%w: Multiplier must be at least 1, got %v", ErrInvalidConfig, c.Multiplier)
	case c.Rand == nil, c.Observer == nil, c.Logger == nil, c.Now == nil:
		return fmt.Errorf("%w: Rand, Observer, Logger and Now must not be nil", ErrInvalidConfig)
	}
	return nil
}
