// Package replay runs the replays of webhook subscriptions (SPEC §6
// ReplaySubscription): it re-reads a time range of the output streams and
// hands the subscription's matching records to the dispatcher again, with
// the event ids they had the first time.
//
// Replays are rows in PostgreSQL. Every replica runs a Worker; a worker
// claims one RUNNING replay at a time with a lease (FOR UPDATE SKIP LOCKED),
// resolves its time range to offsets once (stream.Ranges, kept in the row),
// reads the offsets partition by partition, and checkpoints the next offset
// of each partition after every fetched batch whose events are all settled
// (delivered, dead-lettered or queued for retry), renewing its lease.
// Kinesis streams have no offsets to resolve: their shards are listed
// once, parents before children, and each is read by arrival time
// (source.ShardReader, AT_TIMESTAMP), checkpointing the last sequence number
// of every settled batch. A
// replica that dies loses its lease and another one continues from the last
// checkpoint; events after it are sent again, which at-least-once allows and
// receivers de-duplicate by id.
//
// A replay never blocks live delivery: it holds at most MaxInFlight events
// in the subscription's delivery lanes at once, so live events queue behind
// at most that many replayed ones, and it reads the source with its own
// connections (source.PositionReader), outside the consumer group.
package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/stream"
)

// Deliverer delivers replayed records: dispatcher.Dispatcher.
type Deliverer interface {
	Replay(m *source.Message, rec *record.Record, sub *match.Subscription)
}

// Subscriptions finds subscriptions by id: match.Matcher.
type Subscriptions interface {
	Get(id string) *match.Subscription
}

// Config configures a Worker. Store, Subscriptions, Deliverer and a source
// are required: Source.Source and Source.Topics (Kafka), or Kinesis and
// KinesisStreams, or both.
type Config struct {
	Store         *store.Store
	Subscriptions Subscriptions
	Deliverer     Deliverer
	// Source says where to read: Source (the log) and Topics are used, and
	// MaxWait and FetchMaxBytes when set.
	Source stream.Config
	// Kinesis reads Kinesis shards by time (source/kinesis.Reader), and
	// KinesisStreams names the streams to replay.
	Kinesis        source.ShardReader
	KinesisStreams []string
	// Decode bounds the work spent on one record.
	Decode record.DecodeOptions
	// Poll is how often an idle worker looks for a replay. Default 1 s.
	Poll time.Duration
	// Lease is how long a claim lasts without a checkpoint. Default 30 s.
	Lease time.Duration
	// MaxInFlight bounds the replayed events handed to delivery and not yet
	// settled. Default 64.
	MaxInFlight int
	// Logger receives progress and failures. Default: discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Poll <= 0 {
		c.Poll = time.Second
	}
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Worker runs replays until its context ends.
type Worker struct {
	cfg Config
	log *slog.Logger
}

// New returns a Worker for cfg.
func New(cfg Config) (*Worker, error) {
	cfg = cfg.withDefaults()
	if cfg.Store == nil || cfg.Subscriptions == nil || cfg.Deliverer == nil {
		return nil, errors.New("replay: a store, subscriptions and a deliverer are required")
	}
	kafka := cfg.Source.Source != nil && len(cfg.Source.Topics) > 0
	kinesis := cfg.Kinesis != nil && len(cfg.KinesisStreams) > 0
	if !kafka && !kinesis {
		return nil, errors.New("replay: a source and its topics or streams are required")
	}
	return &Worker{cfg: cfg, log: cfg.Logger}, nil
}

// Run claims and runs replays one at a time until ctx ends; it returns
// ctx's error. A failed claim (the database unreachable) is retried after
// a wait that doubles with each consecutive failure, from Poll up to
// maxClaimBackoff, and only the failures that double the wait are logged:
// an outage of a minute costs a handful of lines, not one per poll, and
// the recovery is logged once.
func (w *Worker) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		r, err := w.cfg.Store.ClaimReplay(ctx, w.cfg.Lease)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failures++
			wait := claimBackoff(w.cfg.Poll, failures)
			if failures == 1 || wait != claimBackoff(w.cfg.Poll, failures-1) {
				w.log.WarnContext(ctx, "replay: claiming a replay failed; retrying",
					slog.Int("consecutive_failures", failures), slog.Duration("retry_in", wait), slog.Any("error", err))
			}
			timer.Reset(wait)
			continue
		}
		if failures > 0 {
			w.log.InfoContext(ctx, "replay: claiming replays works again", slog.Int("failures", failures))
			failures = 0
		}
		if r != nil {
			w.run(ctx, r)
			timer.Reset(0) // there may be more
			continue
		}
		timer.Reset(w.cfg.Poll)
	}
}

// maxClaimBackoff caps the wait between failed claims: a replay asked for
// during an outage starts at most this long after the database is back.
const maxClaimBackoff = 30 * time.Second

// claimBackoff is the wait after the failures-th consecutive failed claim:
// poll doubled per failure after the first, capped at maxClaimBackoff (or
// at poll, if that is longer).
func claimBackoff(poll time.Duration, failures int) time.Duration {
	limit := max(maxClaimBackoff, poll)
	d := poll
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// run works on one claimed replay until it finishes, fails, is gone, or ctx
// ends (then its lease is released so another replica continues at once).
func (w *Worker) run(ctx context.Context, r *store.Replay) {
	log := w.log.With(slog.String("replay_id", r.ID), slog.String("subscription_id", r.SubscriptionID))
	// The stored total counts the Kinesis records read so far (their total is
	// not known ahead); the job's own total is the Kafka part.
	j := &job{w: w, r: r, log: log, slots: make(chan struct{}, w.cfg.MaxInFlight), lease: w.cfg.Lease,
		total: r.RecordsTotal - kinesisRead(r.Plan)}
	j.delivered.Store(r.EventsDelivered)
	err := j.workWithHeartbeat(ctx)
	var failure *failedError
	switch {
	case err == nil:
		err = j.checkpoint(ctx, store.ReplaySucceeded, "")
		log.InfoContext(ctx, "replay: done", slog.Int64("records_total", j.total), slog.Int64("events_delivered", j.delivered.Load()))
	case errors.As(err, &failure):
		err = j.checkpoint(ctx, store.ReplayFailed, failure.reason)
		log.WarnContext(ctx, "replay: failed", slog.String("reason", failure.reason))
	case errors.Is(err, store.ErrNotFound):
		log.InfoContext(ctx, "replay: stopped: the replay or its subscription is gone")
		return
	case ctx.Err() != nil:
		// Shutting down: hand the replay over at once, from its last
		// settled batch (the plan never moves past an unsettled event).
		j.lease = 0
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = j.checkpoint(wctx, "", "")
	default:
		// A transient failure (the source or the database): the lease
		// runs out and a worker, perhaps this one, continues.
		log.WarnContext(ctx, "replay: interrupted; it continues after its lease", slog.Any("error", err))
		return
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		log.WarnContext(ctx, "replay: recording progress failed", slog.Any("error", err))
	}
}

// failedError ends a replay as FAILED, with a reason for the user.
type failedError struct{ reason string }

func (e *failedError) Error() string { return e.reason }

// job is one replay being worked on.
type job struct {
	w     *Worker
	r     *store.Replay
	log   *slog.Logger
	slots chan struct{} // a token per replayed event not yet settled
	mu    sync.Mutex    // guards r.Plan and total
	// delivered counts settled events. Events re-sent after a takeover
	// are counted again.
	delivered atomic.Int64
	total     int64 // records in the range's Kafka partitions
	lease     time.Duration
}

// heartbeat is how often a running replay records its progress, which
// also renews its lease.
func (j *job) heartbeat() time.Duration { return min(time.Second, j.lease/3) }

// workWithHeartbeat runs work while checkpointing every heartbeat; a
// checkpoint finding the replay gone stops the work with store.ErrNotFound.
func (j *job) workWithHeartbeat(ctx context.Context) error {
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	var beats sync.WaitGroup
	beats.Go(func() {
		ticker := time.NewTicker(j.heartbeat())
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ticker.C:
			}
			if err := j.checkpoint(wctx, "", ""); errors.Is(err, store.ErrNotFound) {
				cancel(err)
				return
			} else if err != nil && wctx.Err() == nil {
				j.log.WarnContext(ctx, "replay: recording progress failed", slog.Any("error", err))
			}
		}
	})
	err := j.work(wctx)
	close(done)
	beats.Wait()
	if cause := context.Cause(wctx); ctx.Err() == nil && errors.Is(cause, store.ErrNotFound) {
		return cause
	}
	return err
}

func (j *job) work(ctx context.Context) error {
	if j.r.Plan == nil {
		if err := j.resolve(ctx); err != nil {
			return err
		}
	}
	for i := range j.r.Plan {
		work := j.partition
		if j.r.Plan[i].Kind == kindKinesis {
			work = j.shard
		}
		if err := work(ctx, i); err != nil {
			return err
		}
	}
	j.wait()
	return nil
}

// resolve turns the replay's time range into offsets (Kafka) and lists the
// shards to read (Kinesis), and records the plan.
func (j *job) resolve(ctx context.Context) error {
	var plan []store.ReplayPartition
	var total int64
	if j.w.cfg.Source.Source != nil && len(j.w.cfg.Source.Topics) > 0 {
		ranges, err := stream.Ranges(ctx, j.w.cfg.Source, j.r.StartTime, j.r.EndTime)
		switch {
		case errors.Is(err, source.ErrNotFound), errors.Is(err, stream.ErrInvalidConfig):
			return &failedError{reason: fmt.Sprintf("resolving the time range: %v", err)}
		case err != nil:
			return err
		}
		for _, rg := range ranges {
			plan = append(plan, store.ReplayPartition{Topic: rg.Topic, Partition: rg.Partition, Next: rg.Start, End: rg.End})
			total += rg.End - rg.Start
		}
	}
	if j.w.cfg.Kinesis != nil {
		for _, name := range j.w.cfg.KinesisStreams {
			shards, err := j.w.cfg.Kinesis.Shards(ctx, name)
			switch {
			case errors.Is(err, source.ErrNotFound), errors.Is(err, source.ErrFatal):
				return &failedError{reason: fmt.Sprintf("listing the shards of %s: %v", name, err)}
			case err != nil:
				return err
			}
			for _, sh := range shards {
				plan = append(plan, store.ReplayPartition{Kind: kindKinesis, Stream: sh.Stream, Shard: sh.ID})
			}
		}
	}
	j.mu.Lock()
	j.r.Plan, j.total = plan, total
	j.mu.Unlock()
	return j.checkpoint(ctx, "", "")
}

// kindKinesis marks a plan entry that is a Kinesis shard.
const kindKinesis = "kinesis"

// kinesisRead counts the records of plan's Kinesis shards read so far (kept
// in their Next).
func kinesisRead(plan []store.ReplayPartition) int64 {
	var n int64
	for _, p := range plan {
		if p.Kind == kindKinesis {
			n += p.Next
		}
	}
	return n
}

// subscription returns the replayed subscription, or why the replay cannot
// go on.
func (j *job) subscription() (*match.Subscription, error) {
	sub := j.w.cfg.Subscriptions.Get(j.r.SubscriptionID)
	switch {
	case sub == nil:
		return nil, fmt.Errorf("subscription %s: %w", j.r.SubscriptionID, store.ErrNotFound)
	case sub.Proto.GetWebhook() == nil:
		return nil, &failedError{reason: "the subscription is no longer a webhook subscription"}
	case sub.Proto.GetState() == outflowv1.Subscription_DISABLED:
		return nil, &failedError{reason: "the subscription is DISABLED; enable it and replay again"}
	}
	return sub, nil
}

// shard replays the rest of Kinesis plan entry i.
func (j *job) shard(ctx context.Context, i int) error {
	p := j.r.Plan[i]
	if p.Done {
		return nil
	}
	req := source.ShardRangeRequest{Stream: p.Stream, Shard: p.Shard, After: p.After, From: j.r.StartTime, To: j.r.EndTime}
	err := j.w.cfg.Kinesis.ReadRange(ctx, req, func(batch []source.ShardRecord) error {
		sub, err := j.subscription()
		if err != nil {
			return err
		}
		for _, rec := range batch {
			pos := source.Position{Kind: kindKinesis, Stream: p.Stream, Shard: p.Shard, Sequence: rec.Sequence}
			j.replay(ctx, sub, pos, rec.Value, rec.Key, rec.Time)
		}
		if ctx.Err() != nil {
			return ctx.Err() // shutting down: the plan stays before this batch
		}
		j.wait()
		j.mu.Lock()
		j.r.Plan[i].After = batch[len(batch)-1].Sequence
		j.r.Plan[i].Next += int64(len(batch))
		j.mu.Unlock()
		return nil
	})
	switch {
	case errors.Is(err, source.ErrNotFound):
		return &failedError{reason: fmt.Sprintf("shard %s/%s is gone from the source (expired) while replaying", p.Stream, p.Shard)}
	case err == nil:
		j.mu.Lock()
		j.r.Plan[i].Done = true
		j.mu.Unlock()
	}
	return err
}

// partition replays the rest of plan entry i.
func (j *job) partition(ctx context.Context, i int) error {
	p := j.r.Plan[i]
	if p.Next >= p.End {
		return nil
	}
	rg := stream.PartitionRange{Topic: p.Topic, Partition: p.Partition, Start: p.Next, End: p.End}
	err := stream.ReadRange(ctx, j.w.cfg.Source, rg, func(batch []stream.RangeRecord) error {
		sub, err := j.subscription()
		if err != nil {
			return err
		}
		for _, rec := range batch {
			pos := source.Position{Kind: "kafka", Topic: p.Topic, Partition: p.Partition, Offset: rec.Offset}
			j.replay(ctx, sub, pos, rec.Value, rec.Key, rec.Time)
		}
		if ctx.Err() != nil {
			// Shutting down: what is in flight is parked by the dispatcher;
			// the batch is not done, so the plan stays before it.
			return ctx.Err()
		}
		// Checkpoint once the batch is settled: every event before the next
		// offset is then delivered, dead-lettered or queued.
		j.wait()
		j.mu.Lock()
		j.r.Plan[i].Next = batch[len(batch)-1].Offset + 1
		j.mu.Unlock()
		return nil
	})
	if errors.Is(err, source.ErrOutOfRange) {
		return &failedError{reason: fmt.Sprintf("records of the range in %s/%d expired from the source while replaying", p.Topic, p.Partition)}
	}
	if err == nil {
		j.mu.Lock()
		j.r.Plan[i].Next = p.End
		j.mu.Unlock()
	}
	return err
}

// replay hands one record, read at pos, to delivery when it is in the time
// range and matches the subscription, waiting for a free slot first.
func (j *job) replay(ctx context.Context, sub *match.Subscription, pos source.Position, value, key []byte, at time.Time) {
	if at.Before(j.r.StartTime) || !at.Before(j.r.EndTime) {
		return // a producer timestamp out of order: not in the range
	}
	rec, err := record.Decode(value, j.w.cfg.Decode)
	if err != nil {
		return // poison: kept when it was first consumed, never delivered
	}
	ok, err := sub.Matches(rec)
	if err != nil {
		j.log.DebugContext(ctx, "replay: the filter failed on a record; skipping it", slog.Any("error", err))
	}
	if !ok {
		return
	}
	select {
	case j.slots <- struct{}{}:
	case <-ctx.Done():
		return
	}
	m := source.NewMessage(pos, key, value, at, func() {
		j.delivered.Add(1)
		<-j.slots
	})
	j.w.cfg.Deliverer.Replay(m, rec, sub)
}

// wait blocks until every replayed event handed to delivery is settled.
func (j *job) wait() {
	for range cap(j.slots) {
		j.slots <- struct{}{}
	}
	for range cap(j.slots) {
		<-j.slots
	}
}

// checkpoint records the replay's progress (and a final state, when set),
// renewing its lease.
func (j *job) checkpoint(ctx context.Context, state, reason string) error {
	j.mu.Lock()
	plan := append([]store.ReplayPartition(nil), j.r.Plan...)
	total := j.total
	j.mu.Unlock()
	// Records read: those of the range below each partition's checkpoint,
	// and those of the Kinesis shards so far (counted in both: their total
	// is known only once read).
	read := total
	for _, p := range plan {
		if p.Kind != kindKinesis {
			read -= p.End - p.Next
		}
	}
	kin := kinesisRead(plan)
	total, read = total+kin, read+kin
	return j.w.cfg.Store.UpdateReplay(ctx, j.r.ID, store.ReplayProgress{
		Plan: plan, RecordsTotal: total, RecordsRead: read, EventsDelivered: j.delivered.Load(),
		State: state, Error: reason, Lease: j.lease,
	})
}
