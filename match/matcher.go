// Package match decides which subscriptions a stream record goes to (SPEC §3)
// and keeps that decision current as subscriptions change (SPEC §8).
//
// An Index is an immutable snapshot of the subscriptions arranged by feature
// view; Index.Match is the dispatcher's per-record call. A Matcher keeps the
// current Index up to date from PostgreSQL: it loads every subscription,
// follows the change notifications the subscriptions table's trigger sends,
// and reloads everything periodically and after every reconnection, because
// notifications sent while no listener is connected are lost. Readers get the
// current Index with one atomic load and never wait for a writer.
package match

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outflow-dev/outflow/filter"
	"github.com/outflow-dev/outflow/store"
)

// Defaults applied by Config.WithDefaults.
const (
	// DefaultResyncInterval is how often a Matcher reloads every
	// subscription to heal changes whose notification it missed.
	DefaultResyncInterval = 30 * time.Second
	// DefaultMinBackoff is the first delay before a Matcher reconnects its
	// listener or retries a failed load.
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff is the longest such delay, jitter included.
	DefaultMaxBackoff = 10 * time.Second
)

// maxPendingChanges bounds the ids of changed subscriptions waiting to be
// re-read. Past it the Matcher forgets them and reloads everything instead:
// one query is cheaper than thousands, and memory stays bounded when a bulk
// update floods the channel.
const maxPendingChanges = 1024

// Config configures a Matcher. Zero fields take the defaults stated on them.
type Config struct {
	// Store is where subscriptions are read and changes are heard. Required.
	Store *store.Store
	// ResyncInterval is how often every subscription is reloaded, so that a
	// change whose notification was lost shows up within this interval.
	// Default DefaultResyncInterval (30 s).
	ResyncInterval time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential delay before
	// reconnecting a failed listener or retrying a failed load: attempt n
	// waits a uniformly drawn time between half and all of
	// min(MinBackoff·2ⁿ⁻¹, MaxBackoff), so the delay never exceeds
	// MaxBackoff. Defaults DefaultMinBackoff (100 ms) and DefaultMaxBackoff
	// (10 s).
	MinBackoff, MaxBackoff time.Duration
	// Logger receives listener failures, load failures and subscriptions
	// whose filter does not compile (once per stored revision). Default:
	// discard.
	Logger *slog.Logger
	// Env compiles the subscriptions' CEL filters; pass the server's to
	// share it. Default: a new filter.NewEnv().
	Env *filter.Env
	// OnFilterError is IndexOptions.OnFilterError for every Index the
	// Matcher publishes: called on the hot path for each CEL evaluation
	// error, so it must be fast and safe for concurrent use. Default: none.
	OnFilterError func(subID string, err error)
	// WebhooksOnly is IndexOptions.WebhooksOnly for every Index the Matcher
	// publishes. Default: false.
	WebhooksOnly bool
}

// WithDefaults returns a copy of c with its zero fields set to their
// defaults, except Env, which New builds because building it can fail.
func (c Config) WithDefaults() Config {
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = DefaultResyncInterval
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if c.Store == nil {
		return errors.New("configuring the subscription matcher: Store is required")
	}
	if c.MinBackoff > c.MaxBackoff {
		return fmt.Errorf("configuring the subscription matcher: MinBackoff %s exceeds MaxBackoff %s", c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// listenFunc is the signature of store.Store.ListenSubscriptions; tests
// replace it to hold the listener down.
type listenFunc func(ctx context.Context, ready func(), fn func(store.SubscriptionChange)) error

// Matcher keeps an up-to-date Index of every subscription. Run keeps it
// current; Index, Get and Ready may be called from any goroutine at any time.
type Matcher struct {
	cfg    Config
	log    *slog.Logger
	listen listenFunc
	// load reads every subscription; tests wrap it.
	load    func(ctx context.Context) ([]*store.Subscription, error)
	index   atomic.Pointer[Index]
	ready   chan struct{}
	running atomic.Bool
}

// New returns a Matcher for cfg holding an empty Index; call Run to load and
// follow the subscriptions.
func New(cfg Config) (*Matcher, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Env == nil {
		env, err := filter.NewEnv()
		if err != nil {
			return nil, fmt.Errorf("creating the subscription matcher: %w", err)
		}
		cfg.Env = env
	}
	m := &Matcher{
		cfg:    cfg,
		log:    cfg.Logger,
		listen: cfg.Store.ListenSubscriptions,
		load:   cfg.Store.AllSubscriptions,
		ready:  make(chan struct{}),
	}
	m.index.Store(NewIndex(nil, IndexOptions{OnFilterError: cfg.OnFilterError, WebhooksOnly: cfg.WebhooksOnly}))
	return m, nil
}

// Index returns the current snapshot, with one atomic load: take it once per
// record (or per batch) and match against it. Before the first load
// completes (see Ready) it is empty.
func (m *Matcher) Index() *Index { return m.index.Load() }

// Get returns the subscription with the given id from the current snapshot
// whatever its state, or nil when there is none. The retry worker and the
// API use it; it never reads the database.
func (m *Matcher) Get(id string) *Subscription { return m.index.Load().Get(id) }

// Ready returns a channel closed once the first full load has been
// published, so the dispatcher can wait for it before consuming records
// (records matched against the empty Index would match nothing).
func (m *Matcher) Ready() <-chan struct{} { return m.ready }

// run is the state shared by Run's loop and its listener goroutine.
type run struct {
	// connected gets a token each time the listener's LISTEN is in place.
	connected chan struct{}
	// changed gets a token when pending gains an id.
	changed chan struct{}

	mu       sync.Mutex
	pending  map[string]struct{}
	overflow bool // more than maxPendingChanges ids arrived since the last take
}

// add records a change notification; it never blocks the listener.
func (r *run) add(c store.SubscriptionChange) {
	r.mu.Lock()
	if len(r.pending) >= maxPendingChanges {
		r.overflow = true
		clear(r.pending)
	} else if !r.overflow {
		r.pending[c.ID] = struct{}{}
	}
	r.mu.Unlock()
	signal(r.changed)
}

// take returns the pending ids and whether some were forgotten, and resets
// both.
func (r *run) take() (ids []string, overflow bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.pending {
		ids = append(ids, id)
	}
	clear(r.pending)
	overflow, r.overflow = r.overflow, false
	return ids, overflow
}

// signal puts a token in a one-slot channel unless one is there already.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Run loads and follows the subscriptions until ctx is done, then returns
// nil after its listener goroutine has exited. It may be called once.
//
// Run first puts a LISTEN in place, then loads every subscription (so no
// change can fall between the load and the LISTEN), publishes the Index and
// closes Ready. After that, each notified change is re-read by id
// (store.Store.SubscriptionByID; ErrNotFound removes it) and published as a
// new Index that rebuilds only the feature views involved; every
// ResyncInterval, and after every reconnection of the listener, everything is
// reloaded. Notifications that arrive while a read is under way are
// coalesced by id and handled after it.
//
// Ordering: the listener goroutine only records which ids changed; every read
// and every publication happens on Run's goroutine, one after another, so a
// read that started later (and so saw a newer database state) is always
// published later. A resync therefore cannot race a notification. On top of
// that, a re-read by id never replaces a Subscription of higher Revision (see
// Index.with), as a guard should reads ever overlap. A full reload is taken
// as the truth without that guard, so that a revision that went backwards
// (a database restored from a backup) heals at the next resync instead of
// being ignored until a restart.
//
// Failures do not end Run: a failed listener is logged and reconnected after
// a jittered backoff, a failed load is logged and retried after one, while
// the last published Index stays in use. If the LISTEN cannot be set up at
// all, the periodic resync still loads and closes Ready.
func (m *Matcher) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("running the subscription matcher: Run was already called")
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &run{
		connected: make(chan struct{}, 1),
		changed:   make(chan struct{}, 1),
		pending:   make(map[string]struct{}),
	}
	var wg sync.WaitGroup
	wg.Go(func() { m.follow(ctx, r) })
	defer wg.Wait()
	defer cancel()

	resync := time.NewTicker(m.cfg.ResyncInterval)
	defer resync.Stop()
	rnd := newRand()
	var (
		retry    *time.Timer // pending retry of a failed load, or nil
		retryC   <-chan time.Time
		failures int // consecutive failed loads
	)
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		reload := false
		select {
		case <-ctx.Done():
			return nil
		case <-r.connected:
			reload = true
		case <-resync.C:
			reload = true
		case <-retryC:
			retry, retryC = nil, nil
			reload = true
		case <-r.changed:
			ids, overflow := r.take()
			if overflow {
				reload = true
			} else if err := m.applyChanges(ctx, ids); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				m.log.WarnContext(ctx, "re-reading changed subscriptions failed; reloading all of them",
					slog.Any("error", err))
				reload = true
			}
		}
		if !reload {
			continue
		}
		if err := m.reload(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			d := backoff(failures, m.cfg.MinBackoff, m.cfg.MaxBackoff, rnd)
			m.log.WarnContext(ctx, "loading subscriptions failed; keeping the previous set",
				slog.Any("error", err), slog.Duration("retry_in", d))
			if retry == nil {
				retry = time.NewTimer(d)
				retryC = retry.C
			}
			continue
		}
		failures = 0
		if retry != nil {
			retry.Stop()
			retry, retryC = nil, nil
		}
	}
}

// follow keeps a listener connected until ctx is done, reconnecting after a
// jittered backoff whenever it fails.
func (m *Matcher) follow(ctx context.Context, r *run) {
	rnd := newRand()
	failures := 0
	for {
		up := false
		err := m.listen(ctx, func() {
			up = true
			if failures > 0 {
				m.log.InfoContext(ctx, "subscription change listener reconnected; reloading subscriptions")
			}
			signal(r.connected)
		}, r.add)
		if ctx.Err() != nil {
			return
		}
		if up {
			failures = 0
		}
		failures++
		d := backoff(failures, m.cfg.MinBackoff, m.cfg.MaxBackoff, rnd)
		m.log.WarnContext(ctx, "subscription change listener failed; reconnecting",
			slog.Any("error", err), slog.Duration("retry_in", d))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// reload reads every subscription and publishes them as a new Index,
// keeping the compiled Subscription of every row that did not change.
func (m *Matcher) reload(ctx context.Context) error {
	all, err := m.load(ctx)
	if err != nil {
		return err
	}
	cur := m.index.Load()
	subs := make([]*Subscription, 0, len(all))
	for _, s := range all {
		subs = append(subs, m.compile(ctx, cur, s))
	}
	next := NewIndex(subs, IndexOptions{OnFilterError: m.cfg.OnFilterError, WebhooksOnly: m.cfg.WebhooksOnly})
	next.toProto = cur.toProto
	m.index.Store(next)
	m.log.DebugContext(ctx, "loaded subscriptions", slog.Int("count", next.Len()))
	select {
	case <-m.ready:
	default:
		close(m.ready)
	}
	return nil
}

// applyChanges re-reads the subscriptions ids and publishes one new Index
// with all of them. Changes read before a failure are still published.
func (m *Matcher) applyChanges(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	cur := m.index.Load()
	changes := make(map[string]*Subscription, len(ids))
	var errs []error
	for _, id := range ids {
		s, err := m.cfg.Store.SubscriptionByID(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			changes[id] = nil
		case err != nil:
			errs = append(errs, err)
			if ctx.Err() != nil {
				return errors.Join(errs...)
			}
		default:
			changes[id] = m.compile(ctx, cur, s)
		}
	}
	if len(changes) > 0 {
		m.index.Store(cur.with(changes))
		m.log.DebugContext(ctx, "applied subscription changes", slog.Int("count", len(changes)))
	}
	return errors.Join(errs...)
}

// compile returns the Subscription for s: the one cur already holds when it
// was built from the same stored row, or a newly compiled one. A filter that
// does not compile is logged here, so once per stored version.
func (m *Matcher) compile(ctx context.Context, cur *Index, s *store.Subscription) *Subscription {
	if old := cur.Get(s.Proto.GetId()); old != nil && old.sameAs(s) {
		return old
	}
	sub := Compile(m.cfg.Env, s)
	if sub.Err != nil {
		m.log.ErrorContext(ctx, "a stored subscription filter does not compile; the subscription will match nothing",
			slog.String("subscription_id", sub.ID), slog.String("tenant_id", sub.TenantID),
			slog.Int64("revision", sub.Revision), slog.Any("error", sub.Err))
	}
	return sub
}

// backoff returns the delay before retry number attempt (1-based): a uniform
// draw between half and all of min(lo·2^(attempt-1), hi). The jitter is
// drawn inside the cap, so the delay never exceeds hi.
func backoff(attempt int, lo, hi time.Duration, rnd *rand.Rand) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		if d > hi/2 {
			d = hi
		} else {
			d *= 2
		}
	}
	d = min(d, hi)
	half := d / 2
	return half + time.Duration(rnd.Int64N(int64(d-half)+1))
}

// newRand returns a random source for one goroutine's backoff jitter, seeded
// from the runtime's random generator so that replicas restarted together
// do not retry together.
func newRand() *rand.Rand {
	return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
}
