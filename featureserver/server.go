package featureserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outflow-dev/outflow/record"
)

// Defaults applied by Config.WithDefaults.
const (
	// DefaultMaxBodyBytes bounds a request body: 1 MiB is far above a GetFeatures request
	// (a few hundred bytes, a few KiB for a batch) and keeps a runaway client from making the
	// server buffer without limit.
	DefaultMaxBodyBytes int64 = 1 << 20
	// DefaultShutdownTimeout is how long Serve lets open requests finish once its context
	// is done before it closes their connections.
	DefaultShutdownTimeout = 5 * time.Second
	// DefaultBatchSchedule is the period of a Synthetic feature view's simulated batch job.
	DefaultBatchSchedule = 24 * time.Hour
)

// MaxBatchSize is the most rows get-features-batch accepts; more is a 400, as Tecton's clients
// enforce (they send micro-batches of 1 to 5 rows).
const MaxBatchSize = 5

// redacted replaces the API key wherever a Config is printed or logged.
const redacted = "[REDACTED]"

// ErrInvalidConfig is wrapped by every error New and SetFaults return for an invalid Config
// or Faults.
var ErrInvalidConfig = errors.New("featureserver: invalid config")

// Config configures a Server. The zero value is ready to use: it serves DemoCatalog without
// authentication, lag or cache. Call WithDefaults (New does) to fill in the optional fields.
type Config struct {
	// Catalog is what the server serves. Default DemoCatalog(). New compiles a copy, so
	// later changes to it have no effect.
	Catalog *Catalog
	// APIKey, when set, is the key every request must present as
	// "Authorization: Tecton-key <key>": a missing or malformed header is a 401, another key
	// a 403. Default "": no authentication, any or no Authorization header is accepted.
	APIKey string
	// Lag is how long after Apply a record's values become visible, the materialisation
	// delay of the online store. Default 0: visible at once. `outflow featureserver`
	// defaults to 2s.
	Lag time.Duration
	// LagJitter adds a uniformly random delay in [0, LagJitter] to each record's Lag, so
	// that records become visible out of order as they would in a distributed store.
	// Default 0.
	LagJitter time.Duration
	// CacheTTL enables the simulated feature serving cache: a read with read_from_cache (the
	// default) is answered from a per-row copy at most CacheTTL old, with statuses
	// CACHED_PRESENT and CACHED_MISSING_DATA; reads with write_to_cache (the default) refresh
	// it. Default 0: no cache, every read sees the store.
	CacheTTL time.Duration
	// MaxBodyBytes bounds a request body, in bytes; a larger one is a 400. Default
	// DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int64
	// ShutdownTimeout is how long Serve waits for open requests once its context is done.
	// Default DefaultShutdownTimeout (5s).
	ShutdownTimeout time.Duration
	// Seed seeds the server's random source (lag jitter, latency jitter, ErrorRate), so a
	// run can be reproduced. Every value, 0 included, is a valid seed. Default 0.
	Seed uint64
	// Now is the clock that decides when written values become visible, what a cache entry's
	// age is and what effective time Synthetic views report. Tests inject a fake one to make
	// lag deterministic. Default time.Now.
	Now func() time.Time
	// Logger receives one debug line per request and per rejected record. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with every unset optional field set to its default. It
// does not validate: New does that after applying defaults.
func (c Config) WithDefaults() Config {
	if c.Catalog == nil {
		c.Catalog = DemoCatalog()
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate reports the first problem with a defaulted Config; errors wrap ErrInvalidConfig and
// never quote the API key.
func (c Config) validate() error {
	switch {
	case c.Lag < 0, c.LagJitter < 0, c.CacheTTL < 0, c.ShutdownTimeout < 0:
		return fmt.Errorf("%w: Lag, LagJitter, CacheTTL and ShutdownTimeout must not be negative", ErrInvalidConfig)
	case c.MaxBodyBytes < 0:
		return fmt.Errorf("%w: MaxBodyBytes must not be negative", ErrInvalidConfig)
	case c.Now == nil || c.Logger == nil:
		return fmt.Errorf("%w: Now and Logger must be set", ErrInvalidConfig)
	}
	for _, r := range c.APIKey {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("%w: APIKey contains whitespace or control characters", ErrInvalidConfig)
		}
	}
	return nil
}

// LogValue renders the Config for log/slog with its APIKey redacted.
func (c Config) LogValue() slog.Value {
	key := ""
	if c.APIKey != "" {
		key = redacted
	}
	return slog.GroupValue(
		slog.String("api_key", key),
		slog.Duration("lag", c.Lag),
		slog.Duration("lag_jitter", c.LagJitter),
		slog.Duration("cache_ttl", c.CacheTTL),
		slog.Int64("max_body_bytes", c.MaxBodyBytes),
		slog.Uint64("seed", c.Seed),
	)
}

// Faults makes the server misbehave on purpose, so tests and demos can watch a client's
// retries, timeouts and backoff. The zero value injects nothing. Faults apply to every API
// request after authentication, latency first.
type Faults struct {
	// ErrorRate is the probability, in [0, 1], that a request fails with ErrorStatus.
	ErrorRate float64
	// ErrorStatus is the HTTP status of injected failures, 400 to 599. Default 503.
	ErrorStatus int
	// FailNext makes the next FailNext requests fail with ErrorStatus, whatever ErrorRate
	// says: a burst. Faults() reports how many remain.
	FailNext int
	// Latency delays every request before it is handled; a client whose timeout is shorter
	// sees a timeout. Default 0.
	Latency time.Duration
	// LatencyJitter adds a uniformly random delay in [0, LatencyJitter] to Latency.
	LatencyJitter time.Duration
	// RetryAfter, when positive, is sent as a Retry-After header (whole seconds, at least 1)
	// with injected 429 and 503 answers.
	RetryAfter time.Duration
}

func (f Faults) validate() error {
	switch {
	case !(f.ErrorRate >= 0 && f.ErrorRate <= 1):
		return fmt.Errorf("%w: Faults.ErrorRate must be in [0, 1]", ErrInvalidConfig)
	case f.ErrorStatus != 0 && (f.ErrorStatus < 400 || f.ErrorStatus > 599):
		return fmt.Errorf("%w: Faults.ErrorStatus must be 400 to 599, got %d", ErrInvalidConfig, f.ErrorStatus)
	case f.FailNext < 0, f.Latency < 0, f.LatencyJitter < 0, f.RetryAfter < 0:
		return fmt.Errorf("%w: Faults.FailNext and durations must not be negative", ErrInvalidConfig)
	}
	return nil
}

// Stats counts what the server did with the records it was given.
type Stats struct {
	// RecordsApplied counts records scheduled for materialisation.
	RecordsApplied int64
	// RecordsIgnored counts records of feature views not in the catalog (or on-demand ones),
	// and records missing one of their view's join keys or with an int64 join key that is not
	// an integer.
	RecordsIgnored int64
	// RecordsPoison counts messages Consume read that record.Decode rejected.
	RecordsPoison int64
	// ValueErrors counts feature values that did not convert to their feature's type; the
	// feature keeps its previous value.
	ValueErrors int64
}

// Server is the reference feature server: an online store fed by Apply and Consume, served
// by Handler. It is safe for concurrent use.
type Server struct {
	cfg     Config
	catalog *compiled
	logger  *slog.Logger
	store   *store

	mu     sync.Mutex // guards rng and faults
	rng    *rand.Rand
	faults Faults

	applied, ignored, poison, valueErrors atomic.Int64
}

// New returns a Server for cfg, after applying its defaults. It fails with an error wrapping
// ErrInvalidConfig or ErrInvalidCatalog.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cat, err := cfg.Catalog.compile()
	if err != nil {
		return nil, err
	}
	cfg.Catalog = nil // the compiled copy is what counts; do not keep the caller's
	return &Server{
		cfg:     cfg,
		catalog: cat,
		logger:  cfg.Logger,
		store:   newStore(),
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
	}, nil
}

// SetFaults replaces the injected faults; it takes effect for the next request. It fails with
// an error wrapping ErrInvalidConfig, and changes nothing, when f is invalid.
func (s *Server) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
	return nil
}

// Faults returns the faults in effect, with FailNext reduced by the requests it already failed.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Stats returns the record counters.
func (s *Server) Stats() Stats {
	return Stats{
		RecordsApplied: s.applied.Load(),
		RecordsIgnored: s.ignored.Load(),
		RecordsPoison:  s.poison.Load(),
		ValueErrors:    s.valueErrors.Load(),
	}
}

// Apply writes a record to the online store, visible Lag (plus up to LagJitter) from now by
// Config.Now. The written features get the record's feature_timestamp as their effective
// time, which is what Tecton reports: a read before the lag has elapsed sees the previous
// effective time (or, for a key never written before, null with MISSING_DATA and no effective
// time) and is inconsistent with the record, a read after sees it caught up.
//
// The record's feature_values are matched to the view's features by name and converted to
// their types; absent values, and values that do not convert (counted in Stats.ValueErrors),
// keep the row's previous ones. A record older than the row's newest visible write is
// dropped when it becomes visible, so the store never goes back in time. Records of feature
// views not in the catalog, of on-demand views, or without all of the view's join keys are
// ignored (Stats.RecordsIgnored). A nil record is ignored.
func (s *Server) Apply(rec *record.Record) {
	if rec == nil {
		return
	}
	v := s.catalog.views[rec.FeatureViewName]
	if v == nil || v.OnDemand {
		s.ignored.Add(1)
		return
	}
	keys := make([]string, len(v.JoinKeys))
	for i, jk := range v.JoinKeys {
		raw, ok := rec.EntityKeys[jk.Name]
		if !ok {
			s.ignored.Add(1)
			s.logger.Debug("record ignored: join key missing",
				slog.String("feature_view", v.Name), slog.String("join_key", jk.Name))
			return
		}
		k, err := normalizeJoinKey(jk.Type, raw)
		if err != nil {
			s.ignored.Add(1)
			s.logger.Debug("record ignored: int64 join key is not an integer",
				slog.String("feature_view", v.Name), slog.String("join_key", jk.Name))
			return
		}
		keys[i] = k
	}
	values := make([]any, len(v.Features))
	for i, f := range v.Features {
		raw, ok := rec.FeatureValues[f.Name]
		if !ok {
			continue
		}
		val, err := convert(f.Type, raw)
		if err != nil {
			s.valueErrors.Add(1)
			s.logger.Debug("feature value ignored: wrong type",
				slog.String("feature", v.Name+"."+f.Name), slog.String("type", string(f.Type)))
			continue
		}
		values[i] = val
	}
	now := s.cfg.Now()
	s.store.write(rowKey(v.Name, keys), pendingWrite{
		visibleAt:   now.Add(s.lag()),
		featureTime: rec.FeatureTimestamp,
		values:      values,
	}, now)
	s.applied.Add(1)
}

// lag returns the materialisation delay of one write.
func (s *Server) lag() time.Duration {
	if s.cfg.LagJitter <= 0 {
		return s.cfg.Lag
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Lag + time.Duration(s.rng.Int64N(int64(s.cfg.LagJitter)+1))
}

// injectedFault is what Faults decided for one request.
type injectedFault struct {
	latency    time.Duration
	fail       bool
	status     int
	retryAfter time.Duration
}

func (s *Server) nextFault() injectedFault {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &s.faults
	out := injectedFault{latency: f.Latency, status: f.ErrorStatus, retryAfter: f.RetryAfter}
	if out.status == 0 {
		out.status = http.StatusServiceUnavailable
	}
	if f.LatencyJitter > 0 {
		out.latency += time.Duration(s.rng.Int64N(int64(f.LatencyJitter) + 1))
	}
	switch {
	case f.FailNext > 0:
		f.FailNext--
		out.fail = true
	case f.ErrorRate > 0:
		out.fail = s.rng.Float64() < f.ErrorRate
	}
	return out
}

// Serve serves Handler on lis until ctx is done, then shuts down gracefully: it stops
// accepting connections, ends injected latency waits, gives open requests up to
// Config.ShutdownTimeout to finish and closes lis. It returns nil after a clean shutdown, or
// the error that stopped serving.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	// Handlers see a context that ends when shutdown begins, so a request parked in an
	// injected latency does not hold the shutdown up for its whole delay.
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	cancelBase()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(shutdownCtx)
	if err != nil {
		_ = hs.Close()
		err = fmt.Errorf("shutting down HTTP server: %w", err)
	}
	<-errc // http.ErrServerClosed
	return err
}
