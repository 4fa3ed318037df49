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
// # Backpressure, not parking
//
// Each webhook subscription has its own lanes, max_in_flight bounded queues
// (sharing Config.LaneQueue), served one job at a time each by a fixed pool of
// senders (Config.Senders) that take the lanes with work in turn, so the
// number of goroutines and connections does not grow with the
// subscriptions. A busy but healthy receiver is the happy path,
// a backlog too: when its lane is full, the consumer waits for room, so the
// source reads no faster than the receivers take events, and nothing is
// written to PostgreSQL. The retry queue holds only events whose attempt
// failed (SPEC §5):
//
//	source ──Handle──▶ lane queues ──senders (fixed pool)──▶ receivers
//	   ▲  waits ≤ LaneWait │full                  │ failed
//	   └────────────────────┘                     ▼
//	                  writers (fixed set) ──▶ retry queue ──▶ retry workers
//
// A subscription must not hold the others back for long, though: when one
// wait for its lane lasts longer than Config.LaneWait (or 40 ms past the
// moment most of the record's other subscriptions had nothing left
// queued: they wait on it), when its waits (for
// records other subscriptions share) add up to more than LaneWait and to
// half the time since they began (a receiver slow on every request, not
// one stuck), or when its circuit breaker holds events back (open, or
// half-open with its one probe under way), the subscription is
// detached (below). A wait counts towards the second only while most of
// the record's other subscriptions have room to spare: when they are
// saturated too, the wait is the backlog's backpressure, whichever lane
// the consumer happened to reach first, and detaching one of equally fast
// subscriptions would help none of them. Without detaching
// (Config.Detach.Disabled, no Params.Log, or a Kinesis source) it is shed
// instead: its further events go to the retry queue without waiting, until
// its lane has drained to half, and while its breaker is open too (SPEC
// §5: the breaker parks new events while open). What was already queued in
// its lanes when the circuit opened is parked as it reaches the front,
// without an attempt.
//
// # Detach and rejoin
//
// A detached subscription stops holding the shared consumer back and
// catches up on its own, from a cursor per (subscription, partition)
// (store.SubscriptionCursor):
//
//	shared consumer ──Handle──▶ lanes ◀──waits for room── catch-up reader
//	  │ skips the detached                                   ▲ reads from
//	  │ subscription's offsets in [start, rejoinAt)           │ the cursor
//	  └──first skip per partition──▶ cursor (PostgreSQL) ◀───┘ checkpoints
//
// Its life, step by step:
//
//   - Detach: the first event of each partition the subscription does not
//     take becomes the partition's start, saved as its cursor by a writer;
//     that event is settled once the cursor is durable, so the shared
//     consumer commits past it only then (SPEC §5's rule, the cursor
//     covering what it skips). Later events from start on are settled at
//     once. Events before start (on its lanes, or read again after a
//     restart) stay the shared consumer's.
//   - Catch up: one goroutine per detached subscription (at most
//     DetachConfig.MaxDetached; beyond, it is shed) reads the partitions
//     from the cursor through source.Log, matches the subscription only,
//     and hands its events to the same lanes, waiting for room as long as
//     the receiver takes: the receiver's own pace. Its cursor (the first
//     offset not settled) is saved every CheckpointEvents settled events or
//     CheckpointInterval, never per event; a failed attempt goes to the
//     retry queue as on the shared path, and that is the only row it
//     writes.
//   - Failing: while the circuit is open the reader waits (until the
//     cooldown ends, the probe reports, or the subscription is updated):
//     its events stay in the log behind its cursor, which does not move
//     past them, so a failing receiver lags on its cursor as a slow one
//     does, costing neither rows nor CPU. The breaker is half-open after
//     the cooldown: one event is the probe, the others wait for its
//     result (BreakerConfig.ProbeTimeout frees a slot never reported). A
//     failed probe is a failed attempt (a row) and opens the circuit
//     again; a success closes it, and the reader goes on at the
//     receiver's pace and rejoins as below. A reader that has held for
//     DetachConfig.HoldFailing without the circuit closing parks the
//     events it reaches while the circuit is open, so its cursor moves on
//     before the topic's retention can take them.
//   - Rejoin: once the reader is within RejoinLag of the last offset the
//     shared consumer began, on every partition, and the circuit is
//     closed, it sets each partition's rejoinAt to the next offset the
//     shared consumer will hand on (or past what it already read) under
//     the same lock the shared consumer
//     takes to decide, so every offset is the reader's or the shared
//     consumer's, never both, never neither. The reader reads up to
//     rejoinAt, waits until what it handed on is settled, and deletes the
//     cursors of its partitions. The shared consumer notes an offset as
//     begun before it looks at the detachment, so it may decide on an
//     offset below rejoinAt only after the reader has rejoined: the
//     target keeps each partition's [start, rejoinAt) (handedBack) until
//     the partition is revoked, and such a late decision leaves the event
//     to the reader that delivered it.
//   - Cursors follow their partitions (the Kafka source's source.Ownership
//     hook): only the replica that owns a partition reads its cursors.
//     Revoked (a rebalance, a shutdown) stops the readers on the partitions
//     given up, waits for what they handed on of them to settle (within
//     what is left of the source's drain: 2 s in a rebalance, 10 s at
//     shutdown, by default), and saves each cursor at the first event not
//     settled, before the replica rejoins the group; Assigned (a new
//     generation, a start after a crash) takes up the cursors of the
//     partitions given, before the shared consumer reads them, starting
//     readers as needed. A reader left with no partition ends. At least
//     once: what was still in flight when the drain ran out, and after a
//     crash what was settled after the last cursor save (at most
//     CheckpointEvents events or CheckpointInterval of them per
//     partition), is delivered again; nothing is skipped.
//
// Limits: positions must be offsets (Kafka); a Kinesis subscription is
// shed.
//
// # Bounded writes
//
// Every write of the delivery path (a failed or shed delivery, a poison
// record) goes through a fixed set of writers with a bounded queue; a full
// queue makes the caller wait. While PostgreSQL is down the consumer is
// therefore held back instead of starting a goroutine per event, and
// failures are logged at a bounded rate.
//
// # Fair retries
//
// The retry workers claim due deliveries fairly across subscriptions (every
// subscription's oldest before any one's second) and run at most
// RetryConfig.PerSubscription of one subscription's retries at once, so one
// slow or failing receiver never holds all the workers.
//
// # Enrichment look-ahead
//
// A lane sends one event at a time. For an enriched subscription, a sender
// that takes an event also takes the lane's next one and starts reading its
// vector, so that the feature-store read of each event overlaps the POST of
// the one before it (see lookAhead).
//
// # Ordering
//
// While an entity has events queued or under way, its next event joins
// their lane; otherwise it goes to the lane with the fewest events. A lane
// sends one event at a time, so on the happy path a subscription receives
// one entity's events in source order, while a burst spreads evenly over
// the lanes and a slow entity holds up no other. Once an event fails (or is
// shed) it leaves the hot path: later events of the same entity may be
// delivered before its retry succeeds. Receivers that need order use the
// record's feature_timestamp.
package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
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
	// LaneQueue is how many events a subscription's lanes may hold in all,
	// shared evenly among its max_in_flight lanes (at least one each): the
	// memory a subscription's queue takes does not grow with its
	// max_in_flight, so a thousand subscriptions of 16 lanes hold 256 events
	// each, not 4,096. When an event's lane is full the consumer waits (see
	// LaneWait). Defaults to 256.
	LaneQueue int
	// ReadAhead is how many of an enriched lane's next events have their
	// vectors read while the lane's sender is busy (see lookAhead): with a
	// feature store a few milliseconds away, a lane that read one vector at
	// a time would deliver one event per round trip. Each lane holds up to
	// ReadAhead events beside LaneQueue's, and a subscription has up to
	// max_in_flight × (ReadAhead + 1) vectors being read. Defaults to 4;
	// negative turns reading ahead off.
	ReadAhead int
	// LaneWait bounds one wait of the consumer for room in a subscription's
	// lane. A wait that runs out detaches the subscription (see the package
	// doc; so do many short waits adding up to more than LaneWait while the
	// record's other subscriptions had room to spare), or,
	// without detaching, sheds it: until all its lanes have drained to
	// half, an event whose lane is full goes to the retry queue without
	// waiting.
	// Half a second is far above what a healthy receiver takes to free a
	// slot (one request), and short enough that a slow receiver costs the
	// others little. Defaults to 500ms.
	LaneWait time.Duration
	// Senders is how many webhook attempts may be under way at once across
	// all subscriptions: the fixed pool of goroutines that serve the lanes.
	// Lanes are queues, not goroutines, so a thousand subscriptions with 16
	// lanes each cost memory for what they hold, not 16,000 goroutines and
	// connections. A subscription never has more than max_in_flight of them
	// (one per lane). Defaults to 512.
	Senders int
	// Writers is how many goroutines write to PostgreSQL for the delivery
	// path (parked and failed deliveries, poison records). Defaults to 4.
	Writers int
	// WriteQueue is how many writes may wait for a writer before their
	// callers wait too. Defaults to 1024.
	WriteQueue int
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
	// parking them in the retry queue, and then again for those writes.
	// Defaults to 10s.
	DrainTimeout time.Duration
	// UserAgent is sent with every webhook ("outflow/<version>").
	UserAgent string
	// Detach tunes detaching a subscription that cannot keep up onto its
	// own cursor (see the package doc).
	Detach DetachConfig
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
	if c.LaneWait <= 0 {
		c.LaneWait = 500 * time.Millisecond
	}
	if c.ReadAhead == 0 {
		c.ReadAhead = 4
	}
	if c.Senders <= 0 {
		c.Senders = 512
	}
	if c.Writers <= 0 {
		c.Writers = 4
	}
	if c.WriteQueue <= 0 {
		c.WriteQueue = 1024
	}
	if c.MaxRawPoison <= 0 {
		c.MaxRawPoison = 4 << 10
	}
	c.Decode = c.Decode.WithDefaults()
	c.Breaker = c.Breaker.WithDefaults()
	c.Retry = c.Retry.WithDefaults()
	c.Detach = c.Detach.WithDefaults()
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

// Store is what the dispatcher writes and reads in PostgreSQL; *store.Store
// is one.
type Store interface {
	EnqueueDelivery(ctx context.Context, d *store.Delivery) (bool, error)
	RequeueDelivery(ctx context.Context, d *store.Delivery) (bool, error)
	InsertDeliveries(ctx context.Context, ds []*store.Delivery, requeue []bool) error
	ClaimFair(ctx context.Context, p store.ClaimParams) ([]*store.Delivery, error)
	FinishAttempt(ctx context.Context, id string, r store.AttemptResult) error
	SetSubscriptionState(ctx context.Context, id, state, reason string) error
	InsertPoison(ctx context.Context, p store.Poison) error
}

// Sender sends one webhook attempt; *webhook.Sender is one.
type Sender interface {
	Send(ctx context.Context, req webhook.Request) webhook.Result
}

// Subscriptions is the current set of subscriptions; *match.Matcher is one.
type Subscriptions interface {
	Index() *match.Index
	Get(id string) *match.Subscription
}

var (
	_ Store         = (*store.Store)(nil)
	_ Sender        = (*webhook.Sender)(nil)
	_ Subscriptions = (*match.Matcher)(nil)
)

// Params are what New needs.
type Params struct {
	Config   Config
	Store    Store
	Matcher  Subscriptions
	Enricher Enricher
	Sender   Sender
	Metrics  *Metrics
	Logger   *slog.Logger
	// Log and Cursors, when both set, let a subscription that cannot keep
	// up detach onto its own cursor instead of being shed to the retry
	// queue (Kafka sources only).
	Log     source.Log
	Cursors CursorStore
	// Now is the clock; time.Now by default.
	Now func() time.Time
	// TracerProvider receives the dispatcher's OpenTelemetry spans (a span
	// per record, its decoding and matching, each first delivery attempt
	// and its enrichment) and a webhook POST then carries the attempt's W3C
	// traceparent. Nil (the default) traces nothing, at no cost.
	TracerProvider trace.TracerProvider
}

// Dispatcher routes source messages to subscriptions and delivers them.
type Dispatcher struct {
	cfg      Config
	store    Store
	matcher  Subscriptions
	enricher Enricher
	sender   Sender
	metrics  *Metrics
	logger   *slog.Logger
	warn     *limitedLog
	now      func() time.Time
	tracing  tracing

	mu      sync.Mutex
	targets map[string]*target // by subscription id
	rnd     *rand.Rand         // guarded by mu

	// lanesCtx ends the lanes when the dispatcher stops; work cut short is
	// parked, each write then tried once.
	lanesCtx  context.Context
	stopLanes context.CancelFunc
	// ready holds the lanes that have work and no sender; the senders
	// take them in turn.
	ready   *readyQueue
	senders sync.WaitGroup
	// prefetches counts enrichments started ahead of their attempts
	// (lookAhead).
	prefetches sync.WaitGroup
	// queued counts jobs on lanes or being attempted, for Stop.
	queued    sync.WaitGroup
	writers   *writers
	accepting atomic.Bool
	stopOnce  sync.Once

	// misconfigStreak counts consecutive attempts failed by the gateway's
	// own configuration (reset by a successful enrichment); misconfigLogged
	// is when one was last logged, in Unix nanoseconds.
	misconfigStreak atomic.Int64
	misconfigLogged atomic.Int64

	// Detaching (detach.go): log and cursors are nil when it is off.
	log     source.Log
	cursors CursorStore
	// seen holds, by source.Partition, the last offset the shared consumer
	// began to handle (*atomic.Int64).
	seen          sync.Map
	detachedCount atomic.Int32
	detachWG      sync.WaitGroup
	// detachCtx ends the detached subscriptions' readers (Stop).
	detachCtx  context.Context
	stopDetach context.CancelFunc
	// stoppedReaders are the readers Stop ended, whose cursors it saves
	// once the lanes have drained (guarded by mu).
	stoppedReaders []*catchUp
}

// New builds a dispatcher. Its senders and writers start at once; Stop ends
// them.
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
	warn := newLimitedLog(logger)
	d := &Dispatcher{
		cfg: cfg, store: p.Store, matcher: p.Matcher, enricher: p.Enricher, sender: p.Sender,
		metrics: metrics, logger: logger, warn: warn, now: now, tracing: newTracing(p.TracerProvider),
		targets:  map[string]*target{},
		rnd:      rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x6f7574666c6f77)),
		lanesCtx: ctx, stopLanes: cancel,
		writers: newWriters(cfg.Writers, cfg.WriteQueue, ctx, warn, p.Store.InsertDeliveries),
		ready:   newReadyQueue(),
		log:     p.Log, cursors: p.Cursors,
	}
	d.detachCtx, d.stopDetach = context.WithCancel(context.Background())
	d.accepting.Store(true)
	d.senders.Add(cfg.Senders)
	for range cfg.Senders {
		go d.runSender()
	}
	return d, nil
}

// job is one (message, subscription) pair on its way to a receiver. It is
// small on purpose: a backlog to many subscriptions holds one per event in
// the lanes, so the event's envelope is only built when it is attempted or
// stored, and the compacted record is shared by the record's jobs.
type job struct {
	msg     *source.Message
	rec     *record.Record
	sub     *match.Subscription
	raw     json.RawMessage // rec.Raw compacted, shared, read-only
	created time.Time
	env     *envelope         // built by event, by the job's one owner at a time
	trace   trace.SpanContext // the record's span; invalid when not tracing
	done    func()            // one of the message's pending deliveries is settled
	// replay marks a job of a replay (see Replay).
	replay bool
	// catchUp marks a job of a detached subscription's reader: it waits
	// for room as long as it takes and never sheds.
	catchUp bool
	// shared is set when the message has other webhook deliveries: a wait
	// for this one's lane holds them back.
	shared bool
	// peers are the targets of the message's webhook deliveries, in the
	// order the consumer hands them on (nil when not shared), and self is
	// this job's index among them: a wait for this one's lane counts
	// against it only when the peers could take more (see laggard).
	peers []*target
	self  int
	// probe marks the one event a half-open circuit lets through: its
	// attempt reports to the breaker, and if it is not attempted it frees
	// the probe slot (see breaker.admit).
	probe bool
	// entity is its record's EntityHash, set when it is put on a lane (and
	// read when it leaves it).
	entity uint64
	// pre is its enrichment, when started ahead of its first attempt (see
	// lookAhead); nil otherwise.
	pre *prefetch
}

// event returns the job's envelope, building it on first use.
func (j *job) event() *envelope {
	if j.env == nil {
		j.env = newCompactEnvelope(j.sub.ID, j.msg.Position, j.raw, j.created)
	}
	return j.env
}

// Handle is the source.Handler: it decodes the message, matches it and
// hands each webhook delivery to its subscription's lane, waiting (at most
// Config.LaneWait per subscription) while a lane is full: that wait is the
// backpressure that keeps a backlog out of PostgreSQL. The message is Done
// when every delivery is settled. When ctx ends during a wait (the
// partition was revoked), the deliveries not yet handed on stay unsettled,
// so the message is read again by the partition's next owner.
func (d *Dispatcher) Handle(ctx context.Context, m *source.Message) {
	d.metrics.consumed.Inc()
	if d.log != nil && m.Position.Kind == "kafka" {
		d.noteSeen(m.Position)
	}
	ctx, span := d.tracing.startRecord(ctx, m)
	defer span.End()
	_, step := d.tracing.start(ctx, "outflow.decode")
	rec, err := record.Decode(m.Value, d.cfg.Decode)
	endSpan(step, err)
	if err != nil {
		d.keepPoison(ctx, m, err)
		return
	}
	_, step = d.tracing.start(ctx, "outflow.match")
	subs := d.matcher.Index().Match(rec)
	if step.IsRecording() {
		step.SetAttributes(attribute.Int("outflow.matched", len(subs)))
	}
	endSpan(step, nil)
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
	raw := compact(rec.Raw) // once per record, shared by its events
	var peers []*target
	if len(webhooks) > 1 {
		peers = make([]*target, len(webhooks)) // shared by the record's jobs
		for i, s := range webhooks {
			peers[i] = d.target(s)
		}
	}
	for i, s := range webhooks {
		if ctx.Err() != nil {
			return
		}
		j := &job{msg: m, rec: rec, sub: s, raw: raw, created: now, done: done, trace: span.SpanContext(),
			shared: peers != nil, peers: peers, self: i}
		d.dispatch(ctx, j, d.cfg.LaneWait)
	}
}

// Replay hands a replayed record to one webhook subscription's delivery,
// the way Handle does for a live record, and calls m.Done once it is
// settled: delivered, dead-lettered, or queued for retry. The event is the
// live one (its id derives from subscription and position), so receivers
// de-duplicate it. It shares the subscription's lanes, rate limit and
// breaker with live events and does not wait for a full lane (the event is
// parked instead): the caller bounds how many replayed events it has in
// flight, so a replay holds at most that many lane slots ahead of live
// events. A replayed event that fails re-arms a dead or delivered row of the
// same event (store.RequeueDelivery).
func (d *Dispatcher) Replay(m *source.Message, rec *record.Record, sub *match.Subscription) {
	j := &job{msg: m, rec: rec, sub: sub, raw: compact(rec.Raw), created: d.now(), done: m.Done, replay: true}
	d.dispatch(context.Background(), j, 0)
}

// dispatch queues j on its lane, waiting up to wait for room, or parks it in
// the retry queue when the subscription is paused, its breaker is open, it
// is shed, or the dispatcher is stopping. When ctx ends first, j stays
// unsettled.
func (d *Dispatcher) dispatch(ctx context.Context, j *job, wait time.Duration) {
	detach := d.detachEnabled(j)
	var t *target
	if j.peers != nil {
		t = j.peers[j.self]
	} else {
		t = d.target(j.sub)
	}
	why := ""
	if t.wantDetach.Load() {
		why = "its lane held the shared consumer back while other subscriptions had room"
	}
	if detach && d.skipDetached(ctx, t, j, why) {
		return // its reader delivers it
	}
	if j.sub.Proto.GetState() == outflowv1.Subscription_PAUSED {
		d.park(ctx, j, "subscription paused", d.now())
		return
	}
	until, admitted, probe := t.breaker.admit(d.now())
	if !admitted {
		// Open, or half-open with its one probe under way: a detached
		// subscription's reader holds the events back on its cursor;
		// without detaching they are parked (SPEC §5).
		if detach && d.skipDetached(ctx, t, j, "circuit open") {
			return
		}
		d.park(ctx, j, "circuit open: the receiver has been failing", until)
		return
	}
	j.probe = probe
	res := t.enqueue(ctx, d, j, wait)
	if res != queued && probe {
		j.probe = false
		t.breaker.release() // never attempted: the next event probes
	}
	switch res {
	case queued:
	case full:
		if detach && d.skipDetached(ctx, t, j, "its lane stayed full past the lane wait, or while the record's other subscriptions had nothing left") {
			return
		}
		d.park(ctx, j, "the receiver is not keeping up: its delivery queue stayed full", d.now())
	case refused:
		d.park(ctx, j, "gateway shutting down", d.now())
	case cancelled:
	}
}

// keepPoison stores a record that does not decode and marks the message
// done; the record is skipped, never retried. A database failure is retried
// (by a writer) until the record is kept or the dispatcher stops (then the
// message stays not Done and is read again after a restart: nothing is
// lost).
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
	// Bounded: a record that cannot be kept (a permanent database error)
	// must not stall its partition; the poison itself carries no event
	// anyone is owed, so giving up loses only the inspection copy.
	d.writers.submit(ctx, write{what: "keeping a poison record", attempts: poisonWriteAttempts,
		fn: func(ctx context.Context) error { return d.store.InsertPoison(ctx, p) },
		done: func(err error) {
			switch {
			case err == nil:
				m.Done()
			case d.lanesCtx.Err() == nil:
				d.metrics.poison.WithLabelValues("not_kept").Inc()
				d.logger.Error("a poison record could not be kept; skipping it",
					slog.String("position", m.Position.Key()), slog.Any("error", err))
				m.Done()
			}
		}})
}

// poisonWriteAttempts bounds the tries to keep one poison record (about a
// minute of backoff).
const poisonWriteAttempts = 15

// target is a webhook subscription's delivery state: its lanes, limiter and
// breaker. It lives while the dispatcher does; its configuration is read
// from each job's subscription, so updates apply to the next event.
type target struct {
	id string

	// lanesMu guards lanes and closed. Senders hold it for reading, also
	// while they wait for room; whoever replaces or ends the lanes first
	// retires them (which wakes the waiting senders, who move to the new
	// lanes) and then takes it for writing.
	lanesMu sync.RWMutex
	lanes   *laneSet
	// closed is set when the subscription went away; enqueue then refuses.
	closed bool
	// dmu guards det, the subscription's detachment (nil: attached), and
	// handedBack.
	dmu sync.Mutex
	det *detachment
	// handedBack holds, per partition, the offsets the last detachment's
	// reader delivered before it rejoined: the shared consumer notes an
	// offset as seen before it looks at the detachment, so a decision begun
	// before the rejoin and made after it must still leave them to the
	// reader (see skipDetached). Dropped when the partition is revoked.
	handedBack map[source.Partition]offsetRange
	// The consumer's current streak of waits for this target's lanes
	// (guarded by mu): since when every event has had to wait, and for how
	// long in all. wantDetach is set when the streak says the receiver
	// holds the others back (see holdsBack).
	streakStart time.Time
	streakWait  time.Duration
	wantDetach  atomic.Bool
	// shed is set when a wait for room ran past LaneWait; until every lane
	// has drained to half, events do not wait for room (an event whose lane
	// is full is parked).
	shed atomic.Bool
	// queued counts the jobs in its lanes' queues (not those taken by a
	// sender), and detached mirrors det != nil: both are read without
	// locks by a consumer waiting on another subscription's lane (see
	// mostPeers).
	queued   atomic.Int32
	detached atomic.Bool
	// holdWaits counts the waits of its detached reader on an open circuit
	// (see catchUp.hold): a reader that holds costs one wake-up a second.
	holdWaits atomic.Int64

	mu      sync.Mutex // guards limiter and limit
	limiter *rate.Limiter
	limit   float64
	breaker breaker
}

// laneSet is one generation of a target's lanes. A retired generation
// takes no more jobs; the senders still deliver what it holds.
type laneSet struct {
	lanes []*lane
	// quit is closed when the set is being replaced or ended.
	quit chan struct{}
	once sync.Once

	// mu guards pins and load: the lane each entity's jobs go to while it
	// has any queued or under way, and how many jobs each lane has.
	mu   sync.Mutex
	pins map[uint64]pin
	load []int
}

// pin is an entity's lane and how many of its jobs are there (8 bytes: a
// thousand subscriptions with a backlog hold a pin per queued entity).
type pin struct{ lane, jobs int32 }

func newLaneSet(t *target, n, queue int) *laneSet {
	ls := &laneSet{lanes: make([]*lane, n), quit: make(chan struct{}), pins: map[uint64]pin{}, load: make([]int, n)}
	for i := range ls.lanes {
		ls.lanes[i] = &lane{t: t, set: ls, idx: i, q: make(chan *job, queue)}
	}
	return ls
}

// pick chooses the lane of a job of entity h and counts the job on it: the
// lane that holds the entity's queued or under-way jobs, so that its events
// stay in order, else the lane with the fewest jobs (ties go to the first
// from h's own lane on). A lane fixed by hash would leave a burst waiting
// behind its busiest lane while others idle, and let one slow entity hold
// up every entity that hashes with it.
func (ls *laneSet) pick(h uint64) int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	p, ok := ls.pins[h]
	if !ok {
		n := len(ls.lanes)
		best := int(h % uint64(n))
		for k := 1; k < n && ls.load[best] > 0; k++ {
			if i := (best + k) % n; ls.load[i] < ls.load[best] {
				best = i
			}
		}
		p.lane = int32(best)
	}
	p.jobs++
	ls.pins[h] = p
	ls.load[p.lane]++
	return int(p.lane)
}

// unpick uncounts a job of entity h from lane i: it was delivered, or left
// the hot path, or never made it onto the lane.
func (ls *laneSet) unpick(h uint64, i int) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.load[i]--
	if p, ok := ls.pins[h]; ok {
		if p.jobs--; p.jobs <= 0 {
			delete(ls.pins, h)
		} else {
			ls.pins[h] = p
		}
	}
}

func (ls *laneSet) retire() { ls.once.Do(func() { close(ls.quit) }) }

// drained reports whether every lane is at most half full.
func (ls *laneSet) drained() bool {
	for _, l := range ls.lanes {
		if len(l.q) > cap(l.q)/2 {
			return false
		}
	}
	return true
}

// lane is a bounded queue of one target's jobs, sent one at a time in
// order: at most one sender serves a lane at once.
type lane struct {
	t *target
	// set and idx say which lane of which generation this is, for the
	// sender to uncount a job it is done with (laneSet.unpick).
	set *laneSet
	idx int
	q   chan *job
	// head holds the lane's next jobs, in order, taken from q ahead of
	// their turn so that their vectors are read while the jobs before them
	// are sent (see lookAhead); only the sender serving the lane touches
	// it.
	head []*job
	// ahead counts the lane's jobs whose vectors are being read ahead
	// (prefetch started) and that its sender has not taken yet.
	ahead atomic.Int32
	// scheduled is true while the lane is in the ready queue or being
	// served; whoever sets it puts the lane in the ready queue.
	scheduled atomic.Bool
}

// schedule puts l in the ready queue unless it is there or being served.
func (d *Dispatcher) schedule(l *lane) {
	if l.scheduled.CompareAndSwap(false, true) {
		d.ready.push(l)
	}
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

// enqueueResult is what enqueue came to.
type enqueueResult int

const (
	queued    enqueueResult = iota // on its lane
	full                           // no room within the wait, or shed
	refused                        // stopping, or the subscription went away
	cancelled                      // the caller's ctx ended while waiting
)

// enqueue puts j on a lane (laneSet.pick: the one with its entity's earlier
// jobs, else the least loaded), making or resizing the lanes if needed, and
// waits up to wait for room (0: not at all). A wait that runs out sheds the
// target.
func (t *target) enqueue(ctx context.Context, d *Dispatcher, j *job, wait time.Duration) enqueueResult {
	n := max(int(j.sub.Proto.GetWebhook().GetMaxInFlight()), 1)
	t.updateLimit(j.sub.Proto.GetWebhook().GetRateLimit())
	for {
		t.lanesMu.RLock()
		if !d.accepting.Load() || t.closed {
			t.lanesMu.RUnlock()
			return refused
		}
		ls := t.lanes
		if ls == nil || len(ls.lanes) != n {
			t.lanesMu.RUnlock()
			t.replaceLanes(d, ls, n)
			continue
		}
		h := j.rec.EntityHash()
		j.entity = h
		i := ls.pick(h)
		l := ls.lanes[i]
		d.queued.Add(1)
		res, again, waited := t.send(ctx, d, ls, l, j, wait)
		t.lanesMu.RUnlock()
		if res == queued && !again {
			d.schedule(l)
			if waited > 0 {
				// Judged with no lane lock held: laggard takes the peers'.
				t.holdsBack(waited, d.cfg.LaneWait, j.laggard())
			}
			return queued
		}
		ls.unpick(h, i)
		d.queued.Done()
		if !again {
			return res
		}
	}
}

// send is enqueue's attempt on one lane generation; again means the
// generation was retired meanwhile. waited is how long the shared consumer
// waited for room before j was queued, when that wait is to be judged by
// holdsBack (0 otherwise). Callers hold lanesMu for reading.
func (t *target) send(ctx context.Context, d *Dispatcher, ls *laneSet, l *lane, j *job, wait time.Duration) (res enqueueResult, again bool, waited time.Duration) {
	if wait > 0 && t.shed.Load() && !j.catchUp {
		// Shed: take the event only if its lane has room now, until every
		// lane has drained to half (checking one lane would let a full
		// sibling lane stall the consumer again at once).
		if ls.drained() {
			t.shed.Store(false)
		} else {
			wait = 0
		}
	}
	// A lane being served with fewer than ReadAhead vectors read ahead:
	// read j's while the sender is busy (see lookAhead).
	early := l.scheduled.Load() && l.ahead.Load() < int32(d.cfg.ReadAhead) && d.readAhead(l, j)
	select {
	case l.q <- j:
		t.queued.Add(1)
		if !j.catchUp {
			t.endStreak()
		}
		return queued, false, 0
	default:
	}
	if early {
		// The lane filled up meanwhile: j is not the lane's to count (it
		// may yet go elsewhere), so its read is left to finish unused.
		l.ahead.Add(-1)
		j.pre = nil
	}
	if wait <= 0 {
		return full, false, 0
	}
	start := time.Now()
	// While the consumer waits here, the record's other subscriptions may
	// run out of work: then this receiver holds them back, and the wait is
	// cut short once they have had nothing queued for starveBound, instead
	// of lasting the whole LaneWait (see peersStarving). One timer serves
	// both: it fires every starveStep for the look, and at the deadline.
	watch := !j.catchUp && j.shared && d.detachEnabled(j)
	deadline := start.Add(wait)
	step := wait
	if watch {
		step = min(wait, starveStep)
	}
	timer := time.NewTimer(step)
	defer timer.Stop()
	defer func() { d.metrics.laneWait.Add(time.Since(start).Seconds()) }()
	var starved time.Time // since when the peers have had nothing queued
	for {
		select {
		case l.q <- j:
			t.queued.Add(1)
			if watch {
				waited = max(time.Since(start), 1)
			}
			return queued, false, waited
		case <-ls.quit:
			return 0, true, 0
		case <-ctx.Done():
			return cancelled, false, 0
		case now := <-timer.C:
			if !watch || !now.Before(deadline) {
				return t.waitedOut(ctx, d, j, wait), false, 0
			}
			switch {
			case !j.peersStarving():
				starved = time.Time{}
			case starved.IsZero():
				starved = now
			case now.Sub(starved) >= starveBound:
				return t.waitedOut(ctx, d, j, time.Since(start)), false, 0
			}
			timer.Reset(min(starveStep, deadline.Sub(now)))
		}
	}
}

// starveStep is how often a consumer waiting for room looks at the other
// subscriptions of the record, and starveBound how long they must have had
// nothing queued for the wait to be cut short: five looks in a row, 40 ms
// of idle receivers, against LaneWait's half second of a blocked consumer.
// Every millisecond of it the others deliver nothing, while detaching a
// receiver that was only briefly slow costs one cursor write and a reader
// that rejoins within RejoinLag (docs/benchmarks.md, eighth round, has
// what 100 ms cost the slow-receiver bench).
const (
	starveStep  = 10 * time.Millisecond
	starveBound = 40 * time.Millisecond
)

// waitedOut ends a wait for room that ran out (after waited): a catch-up
// reader waits again; the shared consumer sheds the target, so that later
// events do not wait again, and a subscription that can detach does so (and
// is rejoined with shed cleared); the others are parked.
func (t *target) waitedOut(ctx context.Context, d *Dispatcher, j *job, waited time.Duration) enqueueResult {
	if j.catchUp {
		return full
	}
	if !t.shed.Swap(true) && !d.detachEnabled(j) {
		d.metrics.shed.Inc()
		d.warn.warn(ctx, "a subscription's receiver is not keeping up; its events go to the retry queue until its lane drains",
			slog.String("subscription_id", t.id), slog.Duration("waited", waited))
	}
	return full
}

// endStreak notes that an event found room in the lane at once.
func (t *target) endStreak() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streakStart, t.streakWait = time.Time{}, 0
}

// holdsBack judges a wait of the shared consumer for room in the target's
// lane that has just ended after waited. A wait while the record's other
// subscriptions could take more (laggard) is added to the streak, and
// wantDetach is set when the streak says the receiver holds the shared
// consumer back: the waits add up to more than limit (LaneWait) and to at
// least half of the streak's time. A slow receiver whose every event waits
// a little (50 ms a request) is caught as surely as one that blocks.
//
// A wait while the others are saturated too is backpressure, not lag: it
// ends the streak. In a backlog every healthy subscription's lanes are full,
// and the consumer, handing each record to each subscription in turn,
// waits on whichever lane it reaches first; by the time that lane frees a
// slot the others have freed theirs, so the waits pile up on one of equally
// fast subscriptions (the first in order, say). Counted, they detached it
// although detaching one of them helps none: it only re-reads the topic on
// its own reader.
func (t *target) holdsBack(waited, limit time.Duration, laggard bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !laggard {
		t.streakStart, t.streakWait = time.Time{}, 0
		return
	}
	if t.streakStart.IsZero() {
		t.streakStart = time.Now().Add(-waited)
	}
	t.streakWait += waited
	if t.streakWait > limit && 2*t.streakWait >= time.Since(t.streakStart) {
		t.wantDetach.Store(true)
	}
}

// peerSample bounds how many of a record's other subscriptions laggard
// looks at: the judgement costs a few lane lengths per peer, and a record
// matching a thousand subscriptions must not cost a thousand per wait.
const peerSample = 8

// laggard reports whether the shared consumer, having just waited for room
// in j's lane, waited on the one that holds the others back: most of the
// record's other subscriptions have room to spare, none of their lanes even
// half full. Saturated peers (a lane at least half full: equally fast
// receivers free a slot or so each while the consumer waits on one of
// them) make the wait backpressure; with no peer on the shared lanes, the
// wait is backpressure too (j holds no one back).
func (j *job) laggard() bool { return j.mostPeers((*target).saturation) }

// peersStarving reports whether most of the record's other subscriptions
// have nothing queued: the consumer, waiting on j's lane, holds them back.
// It takes no lock (the caller holds j's lanes), only the peers' counters.
func (j *job) peersStarving() bool { return j.mostPeers((*target).idleness) }

// mostPeers reports whether, of the record's other subscriptions that take
// the shared lanes (up to peerSample of them, those handed on after j
// first; detached or shed ones say nothing about j and are left out), more
// have room to spare than are saturated, as state reads them.
func (j *job) mostPeers(state func(*target) peerState) bool {
	idle, busy := 0, 0
	for k := 1; k < len(j.peers) && idle+busy < peerSample; k++ {
		p := j.peers[(j.self+k)%len(j.peers)]
		if p == j.peers[j.self] {
			continue
		}
		switch state(p) {
		case roomToSpare:
			idle++
		case saturated:
			busy++
		}
	}
	return idle > busy
}

// peerState is what a subscription's lanes say of it to mostPeers.
type peerState int

const (
	offLanes    peerState = iota // detached or shed: its events do not wait on the shared lanes
	roomToSpare                  // laggard: every lane less than half full; peersStarving: nothing queued
	saturated                    // laggard: a lane at least half full; peersStarving: something queued
)

// saturation reads how full t's lanes are. It takes t's lanesMu, so the
// caller must hold none of another target's (enqueue calls laggard after
// releasing its lanesMu).
func (t *target) saturation() peerState {
	if t.shed.Load() || t.detached.Load() {
		return offLanes
	}
	t.lanesMu.RLock()
	defer t.lanesMu.RUnlock()
	if t.lanes == nil {
		return roomToSpare
	}
	for _, l := range t.lanes.lanes {
		if n := len(l.q); n > 0 && 2*n >= cap(l.q) {
			return saturated
		}
	}
	return roomToSpare
}

// idleness reads whether t has anything queued, without a lock.
func (t *target) idleness() peerState {
	switch {
	case t.shed.Load() || t.detached.Load():
		return offLanes
	case t.queued.Load() == 0:
		return roomToSpare
	default:
		return saturated
	}
}

// replaceLanes replaces the lane generation old (nil: none yet) with n new
// lanes, unless another sender did so first or the target is ending. The
// senders deliver what the old lanes hold.
func (t *target) replaceLanes(d *Dispatcher, old *laneSet, n int) {
	if old != nil {
		old.retire()
	}
	t.lanesMu.Lock()
	defer t.lanesMu.Unlock()
	if t.lanes != old || t.closed || !d.accepting.Load() {
		return
	}
	t.lanes = newLaneSet(t, n, max((d.cfg.LaneQueue+n-1)/n, 1))
}

// endLanes retires the target's lanes (what they hold is still delivered);
// closed keeps it from making new ones (the subscription went away).
func (t *target) endLanes(closed bool) {
	t.lanesMu.RLock()
	ls := t.lanes
	t.lanesMu.RUnlock()
	if ls != nil {
		ls.retire()
	}
	t.lanesMu.Lock()
	defer t.lanesMu.Unlock()
	if t.lanes != nil {
		t.lanes.retire() // replaced meanwhile: retire that one too
	}
	t.lanes = nil
	t.closed = t.closed || closed
}

// updateLimit follows the subscription's rate limit (events per second; 0:
// none).
func (t *target) updateLimit(r float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r == t.limit {
		return
	}
	t.limit = r
	if r > 0 {
		t.limiter = rate.NewLimiter(rate.Limit(r), max(1, int(r)))
	} else {
		t.limiter = nil
	}
}

func (t *target) rateLimiter() *rate.Limiter {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.limiter
}

// runSender serves ready lanes, one job of a lane at a time, until the
// ready queue is closed. Taking one job per turn keeps the lanes fair; a
// lane with more work goes back to the end of the queue. Once the
// dispatcher stops, jobs are parked instead of attempted.
func (d *Dispatcher) runSender() {
	defer d.senders.Done()
	// Each sender's attempts derive their deadline contexts from a context
	// of its own rather than from lanesCtx itself: a context registers its
	// children under its lock, and one registration per attempt from every
	// sender on the one shared parent was a lock they all contended for.
	ctx, cancel := context.WithCancel(d.lanesCtx)
	defer cancel()
	for {
		l, ok := d.ready.pop()
		if !ok {
			return
		}
		d.serve(ctx, l)
	}
}

// serve sends the next job of l; ctx is the sender's (lanesCtx's child).
func (d *Dispatcher) serve(ctx context.Context, l *lane) {
	var j *job
	if len(l.head) > 0 {
		j = l.head[0]
		n := copy(l.head, l.head[1:])
		l.head[n] = nil
		l.head = l.head[:n]
	} else {
		select {
		case j = <-l.q:
			l.t.queued.Add(-1)
		default: // cannot happen: only the sender serving a lane takes from it
		}
	}
	if j != nil {
		if j.pre != nil {
			l.ahead.Add(-1)
		}
		d.lookAhead(l, j)
		until, open := l.t.breaker.open(d.now())
		switch lim := l.t.rateLimiter(); {
		case open && !j.probe:
			// Queued before the circuit opened: an attempt now would spend
			// one of the event's attempts, and a request, on a receiver
			// known to be failing. It waits in the retry queue like the
			// events that arrive while the circuit is open.
			d.park(context.Background(), j, "circuit open: the receiver has been failing", until)
		case d.lanesCtx.Err() != nil, lim != nil && lim.Wait(d.lanesCtx) != nil:
			if j.probe {
				l.t.breaker.release()
			}
			d.park(context.Background(), j, "gateway shutting down", d.now())
		default:
			d.firstAttempt(ctx, l.t, j)
		}
		l.set.unpick(j.entity, l.idx)
		d.queued.Done()
	}
	more := len(l.head) > 0
	l.scheduled.Store(false)
	if more || len(l.q) > 0 {
		d.schedule(l)
	}
}

// readyQueue is a FIFO of lanes with work; it never blocks a push (a lane
// is in it at most once, so it holds at most every lane).
type readyQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	q      []*lane
	head   int
	closed bool
}

func newReadyQueue() *readyQueue {
	r := &readyQueue{}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *readyQueue) push(l *lane) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.q = append(r.q, l)
	r.cond.Signal()
}

// pop returns the next lane, waiting for one; false once closed.
func (r *readyQueue) pop() (*lane, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.head == len(r.q) && !r.closed {
		r.cond.Wait()
	}
	if r.head == len(r.q) {
		return nil, false
	}
	l := r.q[r.head]
	r.q[r.head] = nil
	r.head++
	if r.head == len(r.q) {
		r.q, r.head = r.q[:0], 0
	} else if r.head > 1024 && r.head*2 > len(r.q) {
		n := copy(r.q, r.q[r.head:])
		clear(r.q[n:])
		r.q, r.head = r.q[:n], 0
	}
	return l, true
}

func (r *readyQueue) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.cond.Broadcast()
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
		t.endLanes(true)
		delete(d.targets, id)
	}
}

// Stop stops accepting messages, gives queued and in-flight deliveries the
// drain timeout to finish, then parks the rest in the retry queue, giving
// those writes the drain timeout again. It is idempotent. Messages whose
// deliveries could not be parked stay not Done, so their positions are not
// committed. The cursors of the detached subscriptions whose readers Stop
// ends are saved last, at the first event that had not settled by then:
// what the drain delivered or parked is not delivered again after a
// restart. (Readers whose partitions were Revoked before Stop, as the
// gateway's Kafka source does at shutdown, saved theirs at the hand-over,
// once what they had handed on settled or the source's drain ran out.)
func (d *Dispatcher) Stop() {
	d.stopOnce.Do(func() {
		d.mu.Lock()
		d.accepting.Store(false) // under mu: no reader is counted after this (addReader)
		d.mu.Unlock()
		d.stopDetach()
		d.detachWG.Wait() // readers end; saveStoppedCursors saves their cursors below
		d.mu.Lock()
		for _, t := range d.targets {
			t.endLanes(false) // waits for senders inside enqueue: no job is added after this
		}
		d.mu.Unlock()
		drained := make(chan struct{})
		go func() {
			d.queued.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(d.cfg.DrainTimeout):
		}
		d.stopLanes() // senders park what is left; writes are tried once
		written := make(chan struct{})
		go func() {
			<-drained
			d.ready.close()
			d.senders.Wait()
			d.prefetches.Wait() // enrichments of jobs parked unattempted
			d.writers.close()
			d.writers.wait()
			close(written)
		}()
		select {
		case <-written:
		case <-time.After(d.cfg.DrainTimeout):
			d.writers.abort()
			<-written
		}
		d.writers.abort()
		d.saveStoppedCursors()
	})
}
