// Package dispatcher is Outflow's pipeline: source → decode → match → enrich
// → deliver (SPEC §2, §4, §5).
//
// # At least once
//
// A source message is Done — and its position may be committed — once every
// matching webhook delivery of it is delivered, dead-lettered, or durably in
// the retry queue. A crash before that re-reads it; re-delivered events carry
// the same id, and re-queued ones are stored once per (subscription, event).
//
// # No receiver slows the others
//
// Each webhook subscription has its own lanes (goroutines) fed by bounded
// queues. An event whose lane queue is full, or whose subscription's circuit
// breaker is open, is not waited for: it goes straight to the retry queue in
// PostgreSQL, and the source moves on. A failed first attempt goes there too.
//
// # Ordering
//
// An event's lane is chosen by the hash of its entity keys, and a lane sends
// one event at a time, so on the happy path a subscription receives one
// entity's events in source order. Once an event fails it leaves the hot
// path: later events of the same entity may be delivered before its retry
// succeeds. Receivers that need order use the record's feature_timestamp.
package dispatcher

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/outflow-dev/outflow/enrich"
	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

// Config tunes the dispatcher. The zero value, with defaults, is what
// production uses.
type Config struct {
	// LaneQueue is how many events one lane of a subscription may hold
	// before further events spill to the retry queue. Defaults to 256.
	LaneQueue int
	// MaxRawPoison is how many bytes of a poison record are kept. Defaults
	// to 4 KiB.
	MaxRawPoison int
	// Decode bounds records (1 MiB by default).
	Decode record.DecodeOptions
	// Breaker opens a subscription's circuit after Threshold consecutive
	// failures (default 5) for Cooldown (default 30s), and disables the
	// subscription when it has failed without a success for DisableAfter
	// (default 72h; negative never disables).
	Breaker BreakerConfig
	// Retry tunes the retry worker.
	Retry RetryConfig
	// DrainTimeout bounds how long Stop waits for in-flight attempts before
	// parking them in the retry queue. Defaults to 10s.
	DrainTimeout time.Duration
	// UserAgent is sent with every webhook ("outflow/<version>").
	UserAgent string
	// MisconfigBackoff is the first wait before an event is tried again
	// after the gateway's own configuration failed it (feature-store
	// credentials refused, backend not configured); it doubles with each
	// consecutive such failure, up to MaxMisconfigBackoff, and resets when an
	// enrichment succeeds. Such attempts never count against a
	// subscription's retry policy. Defaults to 5s.
	MisconfigBackoff time.Duration
}

// MaxMisconfigBackoff caps Config.MisconfigBackoff's doubling: an operator
// who fixes the configuration sees events flow again within five minutes.
const MaxMisconfigBackoff = 5 * time.Minute

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.LaneQueue <= 0 {
		c.LaneQueue = 256
	}
	if c.MaxRawPoison <= 0 {
		c.MaxRawPoison = 4 << 10
	}
	c.Decode = c.Decode.WithDefaults()
	c.Breaker = c.Breaker.WithDefaults()
	c.Retry = c.Retry.WithDefaults()
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.MisconfigBackoff <= 0 {
		c.MisconfigBackoff = 5 * time.Second
	}
	c.MisconfigBackoff = min(c.MisconfigBackoff, MaxMisconfigBackoff)
	return c
}

// Enricher fetches a record's feature vector; *enrich.Enricher is one.
type Enricher interface {
	Enrich(ctx context.Context, rec *record.Record, cfg *outflowv1.Enrichment) (*enrich.Result, error)
}

// Params are what New needs.
type Params struct {
	Config   Config
	Store    *store.Store
	Matcher  *match.Matcher
	Enricher Enricher
	Sender   *webhook.Sender
	Metrics  *Metrics
	Logger   *slog.Logger
	// Now is the clock; time.Now by default.
	Now func() time.Time
}

// Dispatcher routes source messages to subscriptions and delivers them.
type Dispatcher struct {
	cfg      Config
	store    *store.Store
	matcher  *match.Matcher
	enricher Enricher
	sender   *webhook.Sender
	metrics  *Metrics
	logger   *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	targets map[string]*target // by subscription id
	rnd     *rand.Rand         // guarded by mu

	// lanesCtx ends the lanes when the dispatcher stops; work cut short is
	// parked with parkCtx-bounded writes.
	lanesCtx    context.Context
	stopLanes   context.CancelFunc
	lanes       sync.WaitGroup
	accepting   atomic.Bool
	inFlight    sync.WaitGroup
	stopOnce    sync.Once
	stopTimeout time.Duration

	// misconfigStreak counts consecutive attempts failed by the gateway's
	// own configuration (reset by a successful enrichment); misconfigLogged
	// is when one was last logged, in Unix nanoseconds.
	misconfigStreak atomic.Int64
	misconfigLogged atomic.Int64
}

// New builds a dispatcher.
func New(p Params) (*Dispatcher, error) {
	if p.Store == nil || p.Matcher == nil || p.Sender == nil {
		return nil, errors.New("dispatcher: a store, a matcher and a sender are required")
	}
	cfg := p.Config.WithDefaults()
	logger := p.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := p.Now
	if now == nil {
		now = time.Now
	}
	metrics := p.Metrics
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		cfg: cfg, store: p.Store, matcher: p.Matcher, enricher: p.Enricher, sender: p.Sender,
		metrics: metrics, logger: logger, now: now,
		targets:  map[string]*target{},
		rnd:      rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x6f7574666c6f77)),
		lanesCtx: ctx, stopLanes: cancel, stopTimeout: cfg.DrainTimeout,
	}
	d.accepting.Store(true)
	return d, nil
}

// job is one (message, subscription) pair on its way to a receiver.
type job struct {
	msg  *source.Message
	rec  *record.Record
	sub  *match.Subscription
	env  *envelope
	done func() // one of the message's pending deliveries is settled
	// replay marks a job of a replay (see Replay).
	replay bool
}

// Handle is the source.Handler: it decodes the message, matches it and
// hands each webhook delivery to its subscription's lane. It returns at
// once; the message is Done when every delivery is settled.
func (d *Dispatcher) Handle(ctx context.Context, m *source.Message) {
	d.metrics.consumed.Inc()
	rec, err := record.Decode(m.Value, d.cfg.Decode)
	if err != nil {
		d.keepPoison(ctx, m, err)
		return
	}
	subs := d.matcher.Index().Match(rec)
	var webhooks []*match.Subscription
	for _, s := range subs {
		if s.Proto.GetWebhook() != nil && s.Proto.GetState() != outflowv1.Subscription_DISABLED {
			webhooks = append(webhooks, s)
		}
	}
	if len(webhooks) == 0 {
		m.Done() // nothing delivered: no end-to-end latency to observe
		return
	}
	var pending atomic.Int32
	pending.Store(int32(len(webhooks)))
	done := func() {
		if pending.Add(-1) == 0 {
			m.Done()
		}
	}
	now := d.now()
	for _, s := range webhooks {
		j := &job{msg: m, rec: rec, sub: s, env: newEnvelope(s.ID, m.Position, rec.Raw, now), done: done}
		d.dispatch(j)
	}
}

// Replay hands a replayed record to one webhook subscription's delivery,
// the way Handle does for a live record, and calls m.Done once it is
// settled: delivered, dead-lettered, or queued for retry. The event is the
// live one (its id derives from subscription and position), so receivers
// de-duplicate it. It shares the subscription's lanes, rate limit and
// breaker with live events and never blocks: the caller bounds how many
// replayed events it has in flight, so a replay holds at most that many
// lane slots ahead of live events. A replayed event that fails re-arms a
// dead or delivered row of the same event (store.RequeueDelivery).
func (d *Dispatcher) Replay(m *source.Message, rec *record.Record, sub *match.Subscription) {
	j := &job{msg: m, rec: rec, sub: sub, env: newEnvelope(sub.ID, m.Position, rec.Raw, d.now()), done: m.Done, replay: true}
	d.dispatch(j)
}

// dispatch queues j on its lane, or parks it in the retry queue when the
// subscription is paused, its breaker is open, or its lane is full.
func (d *Dispatcher) dispatch(j *job) {
	if j.sub.Proto.GetState() == outflowv1.Subscription_PAUSED {
		d.park(j, "subscription paused", d.now())
		return
	}
	t := d.target(j.sub)
	if until, open := t.breaker.open(d.now()); open {
		d.park(j, "circuit open: the receiver has been failing", until)
		return
	}
	if !d.accepting.Load() || !t.enqueue(d, j) {
		d.park(j, "delivery queue full", d.now())
	}
}

// keepPoison stores a record that does not decode and marks the message
// done; the record is skipped, never retried. A database failure is retried
// until the record is kept or the dispatcher stops (then the message stays
// not Done and is read again after a restart: nothing is lost).
func (d *Dispatcher) keepPoison(ctx context.Context, m *source.Message, err error) {
	reason := "invalid"
	var perr *record.PoisonError
	if errors.As(err, &perr) {
		reason = string(perr.Reason)
	}
	d.metrics.poison.WithLabelValues(reason).Inc()
	// Never nil: an empty message is poison too, and must be kept as such.
	raw := append([]byte{}, m.Value[:min(len(m.Value), d.cfg.MaxRawPoison)]...)
	p := store.Poison{
		PositionKey: m.Position.Key(), SourceKind: m.Position.Kind, Topic: m.Position.Topic,
		Partition: m.Position.Partition, Offset: m.Position.Offset, Stream: m.Position.Stream,
		Shard: m.Position.Shard, SequenceNumber: m.Position.Sequence,
		Reason: reason, Error: err.Error(), Raw: raw, RawSize: len(m.Value),
	}
	d.inFlight.Add(1)
	go func() {
		defer d.inFlight.Done()
		// Bounded: a record that cannot be kept (a permanent database error)
		// must not stall its partition; the poison itself carries no event
		// anyone is owed, so giving up loses only the inspection copy.
		err := d.retryWrite(ctx, "keeping a poison record", poisonWriteAttempts, func(ctx context.Context) error {
			return d.store.InsertPoison(ctx, p)
		})
		switch {
		case err == nil:
			m.Done()
		case d.lanesCtx.Err() == nil:
			d.metrics.poison.WithLabelValues("not_kept").Inc()
			d.logger.ErrorContext(ctx, "a poison record could not be kept; skipping it",
				slog.String("position", m.Position.Key()), slog.Any("error", err))
			m.Done()
		}
	}()
}

// poisonWriteAttempts bounds the tries to keep one poison record (about a
// minute of backoff).
const poisonWriteAttempts = 15

// durably runs write until it succeeds, backing off between failures, and
// reports whether it did before the dispatcher stopped. Deliveries are
// written this way: while PostgreSQL is down their messages stay not Done,
// so the consumer pauses rather than loses them.
func (d *Dispatcher) durably(ctx context.Context, what string, write func(context.Context) error) bool {
	return d.retryWrite(ctx, what, 0, write) == nil
}

// retryWrite runs write until it succeeds, the dispatcher stops, or
// attempts (0: no bound) have failed, and returns the last error.
func (d *Dispatcher) retryWrite(ctx context.Context, what string, attempts int, write func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for n := 1; ; n++ {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := write(wctx)
		cancel()
		if err == nil || (attempts > 0 && n >= attempts) {
			return err
		}
		d.logger.WarnContext(ctx, what+" failed; retrying", slog.Any("error", err))
		select {
		case <-d.lanesCtx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// target is a webhook subscription's delivery state: its lanes, limiter and
// breaker. It lives while the dispatcher does; its configuration is read
// from each job's subscription, so updates apply to the next event.
type target struct {
	id      string
	mu      sync.Mutex
	lanes   []chan *job
	limiter *rate.Limiter
	limit   float64
	breaker breaker
	// closed is set when the subscription went away; enqueue then refuses.
	closed bool
}

func (d *Dispatcher) target(s *match.Subscription) *target {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.targets[s.ID]
	if t == nil {
		t = &target{id: s.ID, breaker: newBreaker(d.cfg.Breaker)}
		d.targets[s.ID] = t
	}
	return t
}

// enqueue puts j on the lane of its entity, starting the lane if needed; it
// reports false when the lane's queue is full.
func (t *target) enqueue(d *Dispatcher, j *job) bool {
	wh := j.sub.Proto.GetWebhook()
	n := int(wh.GetMaxInFlight())
	if n <= 0 {
		n = 1
	}
	// The send happens under the lock, so a concurrent resize or Stop cannot
	// close the lane under it; it never blocks.
	t.mu.Lock()
	defer t.mu.Unlock()
	if !d.accepting.Load() || t.closed {
		return false // stopping, or swept: the lanes are closed or will be
	}
	if len(t.lanes) != n {
		// The subscription's max_in_flight changed (or this is its first
		// event): new lanes; the old ones drain what they hold and exit.
		for _, l := range t.lanes {
			close(l)
		}
		t.lanes = make([]chan *job, n)
		for i := range t.lanes {
			t.lanes[i] = make(chan *job, d.cfg.LaneQueue)
			d.lanes.Add(1)
			go d.runLane(t, t.lanes[i])
		}
	}
	if r := wh.GetRateLimit(); r != t.limit {
		t.limit = r
		if r > 0 {
			t.limiter = rate.NewLimiter(rate.Limit(r), max(1, int(r)))
		} else {
			t.limiter = nil
		}
	}
	select {
	case t.lanes[j.rec.EntityHash()%uint64(n)] <- j:
		return true
	default:
		return false
	}
}

func (t *target) rateLimiter() *rate.Limiter {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.limiter
}

// runLane sends a lane's events one at a time until the lane is closed or
// the dispatcher stops; what is left then is parked.
func (d *Dispatcher) runLane(t *target, lane chan *job) {
	defer d.lanes.Done()
	for j := range lane {
		if d.lanesCtx.Err() != nil {
			d.park(j, "gateway shutting down", d.now())
			continue
		}
		if lim := t.rateLimiter(); lim != nil {
			if err := lim.Wait(d.lanesCtx); err != nil {
				d.park(j, "gateway shutting down", d.now())
				continue
			}
		}
		d.firstAttempt(t, j)
	}
}

// sweepTargets ends the lanes of subscriptions that were deleted or are no
// longer webhooks, so their goroutines do not outlive them. A job racing the
// sweep finds its target closed and is parked.
func (d *Dispatcher) sweepTargets() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, t := range d.targets {
		if s := d.matcher.Get(id); s != nil && s.Proto.GetWebhook() != nil {
			continue
		}
		t.mu.Lock()
		for _, l := range t.lanes {
			close(l)
		}
		t.lanes, t.closed = nil, true
		t.mu.Unlock()
		delete(d.targets, id)
	}
}

// Stop stops accepting messages, gives in-flight deliveries the drain
// timeout to finish, then parks the rest in the retry queue. It is
// idempotent. Messages whose deliveries could not be parked stay not Done,
// so their positions are not committed.
func (d *Dispatcher) Stop() {
	d.stopOnce.Do(func() {
		d.accepting.Store(false)
		d.mu.Lock()
		for _, t := range d.targets {
			t.mu.Lock()
			for _, l := range t.lanes {
				close(l)
			}
			t.lanes = nil
			t.mu.Unlock()
		}
		d.mu.Unlock()
		drained := make(chan struct{})
		go func() {
			d.lanes.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(d.stopTimeout):
			d.stopLanes() // lanes park what they still hold
			<-drained
		}
		d.stopLanes()
		d.inFlight.Wait()
	})
}
