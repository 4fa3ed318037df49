package kafka

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/source"
)

// fetchMaxWait is the partition readers' MaxWait. kafka-go's connections take
// no context, so stopping a partition reader waits for its fetch to return:
// the broker holds an idle fetch for half a second (the Java consumer's
// fetch.max.wait.ms), which keeps rebalances and shutdown quick, where
// kafka-go's default of 10 s would stall them. MaxWait is the reader's socket
// deadline, not the broker's wait: kafka-go asks the broker to wait MaxWait
// less a round-trip allowance of 1 s, or of only MaxWait/4 below 1 s. Hence
// the added second: with MaxWait 500 ms the answer to an idle fetch had
// 125 ms to arrive, and a busy machine turned idle fetches into "i/o
// timeout" warnings and reconnections.
const fetchMaxWait = 500*time.Millisecond + time.Second

// Backoff while waiting for the configured topics to exist.
const (
	topicBackoffMin = 500 * time.Millisecond
	topicBackoffMax = 30 * time.Second
)

// run is the state of one call of Source.Run.
type run struct {
	s      *Source
	h      source.Handler
	ctx    context.Context
	cancel context.CancelCauseFunc
	client *kafkago.Client
	// reader fetches the partitions: the one fetch loop of Log.
	reader source.PositionReader

	mu    sync.Mutex
	fatal error
}

// fail stops the Run with err, which Run returns after its final commit.
// The first failure wins.
func (r *run) fail(err error) {
	r.mu.Lock()
	if r.fatal == nil {
		r.fatal = err
	}
	r.mu.Unlock()
	r.cancel(err)
}

// err returns the failure that stopped the Run, or nil.
func (r *run) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fatal
}

// partition is one assigned partition within one generation.
type partition struct {
	topic string
	id    int
	// start is where reading starts: the committed offset, the resolved
	// start offset, or kafka-go's FirstOffset/LastOffset when resolving failed.
	start   int64
	tracker *tracker
	// hwm is the newest high watermark seen; -1 while unknown.
	hwm atomic.Int64
	// committed is the group's committed offset; -1 while none.
	committed atomic.Int64
}

func (p *partition) String() string { return p.topic + "/" + strconv.Itoa(p.id) }

// storeMax raises v to n if n is larger.
func storeMax(v *atomic.Int64, n int64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}

// awaitTopics waits until every configured topic exists, so that a typo or a
// topic not created yet shows as a clear warning and an unready Source
// instead of a group that silently consumes nothing (or, with partition
// watching, rebalances in a loop). It returns nil when ctx ends first.
func (r *run) awaitTopics() error {
	backoff := topicBackoffMin
	for {
		missing, err := r.missingTopics()
		switch {
		case err == nil && len(missing) == 0:
			return nil
		case IsFatal(err):
			r.fail(&FatalError{Op: "read topic metadata", Err: err})
			return r.err()
		case err != nil:
			r.s.log.WarnContext(r.ctx, "kafka: reading topic metadata failed; retrying", slog.Any("error", err))
		default:
			r.s.log.WarnContext(r.ctx, "kafka: waiting for topics to exist", slog.Any("missing_topics", missing))
		}
		timer := time.NewTimer(backoff)
		select {
		case <-r.ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		backoff = min(2*backoff, topicBackoffMax)
	}
}

// missingTopics returns the configured topics the cluster does not have.
func (r *run) missingTopics() ([]string, error) {
	md, err := r.client.Metadata(r.ctx, &kafkago.MetadataRequest{Topics: r.s.cfg.Topics})
	if err != nil {
		return nil, fmt.Errorf("read metadata: %w", err)
	}
	found := make(map[string]bool, len(md.Topics))
	for _, t := range md.Topics {
		switch {
		case t.Error == nil:
			found[t.Name] = true
		case errors.Is(t.Error, kafkago.UnknownTopicOrPartition):
		default:
			return nil, fmt.Errorf("read metadata of topic %s: %w", t.Name, t.Error)
		}
	}
	var missing []string
	for _, t := range r.s.cfg.Topics {
		if !found[t] {
			missing = append(missing, t)
		}
	}
	return missing, nil
}

// runGeneration runs one generation of the group and returns once its
// partitions were drained and committed. The work runs inside the
// generation (gen.Start), so kafka-go does not rejoin, and keeps the
// coordinator connection open for the final commit, until it is done. At
// shutdown the generation is then held open until Run closes the group:
// returning earlier would make kafka-go rejoin, triggering a needless
// rebalance, instead of leaving.
func (r *run) runGeneration(gen *kafkago.Generation) {
	finished := make(chan struct{})
	gen.Start(func(genCtx context.Context) {
		r.superviseGeneration(genCtx, gen)
		close(finished)
		if r.ctx.Err() != nil {
			<-genCtx.Done()
		}
	})
	<-finished
}

// superviseGeneration reads the generation's partitions, commits their safe
// offsets every CommitInterval, and when the generation or the Run ends,
// stops reading, drains, commits a last time and revokes the trackers.
func (r *run) superviseGeneration(genCtx context.Context, gen *kafkago.Generation) {
	cfg := r.s.cfg
	log := r.s.log.With(slog.Int("generation", int(gen.ID)), slog.String("member_id", gen.MemberID))
	if genCtx.Err() != nil {
		return // ended before it started; kafka-go will join the next one
	}
	// readCtx ends with the Run or the generation, whichever is first: it
	// bounds the partition readers, the handler calls and the offset
	// requests made while setting up.
	readCtx, stopReading := context.WithCancel(r.ctx)
	defer stopReading()
	defer context.AfterFunc(genCtx, stopReading)()
	parts := r.assign(readCtx, gen, log)
	if !r.announce(readCtx, parts, log) {
		return // ended before the owner of the partitions' cursors was ready
	}
	r.s.setOwned(parts)
	r.s.joined.Store(true)
	log.InfoContext(r.ctx, "kafka: joined the consumer group", slog.Any("partitions", describe(parts)))

	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Go(func() { r.readPartition(readCtx, p, log) })
	}
	if len(parts) > 0 {
		wg.Go(func() { r.pollHighWaterMarks(readCtx, parts, log) })
	}

	ticker := time.NewTicker(cfg.CommitInterval)
loop:
	for {
		select {
		case <-ticker.C:
			r.commit(gen, parts, log)
		case <-genCtx.Done():
			break loop
		case <-r.ctx.Done():
			break loop
		}
	}
	ticker.Stop()
	r.s.joined.Store(false)
	stopReading()
	wg.Wait()

	// A rebalance holds the whole group, so it gets the short drain; at
	// shutdown the generation is still running (heartbeats continue) and can
	// afford the long one, unless a rebalance starts meanwhile. One budget
	// covers the shared consumer's drain and then Revoked's wait for the
	// detached subscriptions' deliveries of the same partitions.
	rebalance := genCtx.Err() != nil
	timeout := cfg.DrainTimeout
	if rebalance {
		timeout = cfg.RebalanceDrainTimeout
	}
	drainCtx, endDrain := context.WithTimeout(context.Background(), max(timeout, 0))
	defer endDrain()
	if !rebalance {
		defer context.AfterFunc(genCtx, endDrain)()
	}
	drained := drain(drainCtx, parts)
	r.commit(gen, parts, log)
	for _, p := range parts {
		p.tracker.revoke()
	}
	if own := cfg.Ownership; own != nil && len(parts) > 0 {
		own.Revoked(drainCtx, sourceParts(parts))
	}
	abandoned := inFlight(parts)
	r.s.setOwned(nil)
	reason := "shutdown"
	if rebalance {
		reason = "rebalance"
	}
	log.InfoContext(r.ctx, "kafka: generation ended",
		slog.String("reason", reason), slog.Bool("drained", drained),
		slog.Int("redeliverable_in_flight", abandoned), slog.Any("committed", describeCommitted(parts)))
}

// assign builds the generation's partitions: where each starts, with start
// offsets of partitions the group never committed resolved now so they can
// be committed at once (a restart then never skips records written after
// this first read, even with StartLatest), and their high watermarks.
func (r *run) assign(ctx context.Context, gen *kafkago.Generation, log *slog.Logger) []*partition {
	cfg := r.s.cfg
	var parts []*partition
	var unresolvedFirst []*partition
	for topic, assigned := range gen.Assignments {
		for _, a := range assigned {
			p := &partition{topic: topic, id: a.ID, start: a.Offset}
			p.hwm.Store(-1)
			p.committed.Store(-1)
			if a.Offset >= 0 {
				p.committed.Store(a.Offset)
			} else if a.Offset == kafkago.FirstOffset {
				unresolvedFirst = append(unresolvedFirst, p)
			}
			parts = append(parts, p)
		}
	}
	slices.SortFunc(parts, func(a, b *partition) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.id, b.id))
	})

	if len(parts) > 0 {
		ends, err := r.listOffsets(ctx, parts, kafkago.LastOffset)
		if err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "kafka: reading end offsets failed", slog.Any("error", err))
		}
		for _, p := range parts {
			if end, ok := ends[p]; ok {
				storeMax(&p.hwm, end)
				if p.start == kafkago.LastOffset {
					p.start = end
				}
			}
		}
	}
	if len(unresolvedFirst) > 0 {
		firsts, err := r.listOffsets(ctx, unresolvedFirst, kafkago.FirstOffset)
		if err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "kafka: reading start offsets failed; the reader will resolve them", slog.Any("error", err))
		}
		for _, p := range unresolvedFirst {
			if first, ok := firsts[p]; ok {
				p.start = first
			}
		}
	}
	for _, p := range parts {
		p.tracker = newTracker(max(p.start, -1), cfg.MaxInFlightPerPartition, cfg.MaxUncommittedPerPartition)
	}
	return parts
}

// listOffsets asks the partitions' leaders for their first or last offset
// (which: kafkago.FirstOffset or LastOffset). Partitions that failed are
// absent from the result, and their error is returned.
func (r *run) listOffsets(ctx context.Context, parts []*partition, which int64) (map[*partition]int64, error) {
	topics := make(map[string][]kafkago.OffsetRequest)
	for _, p := range parts {
		topics[p.topic] = append(topics[p.topic], kafkago.OffsetRequest{Partition: p.id, Timestamp: which})
	}
	resp, err := r.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	byKey := make(map[string]kafkago.PartitionOffsets)
	for topic, offsets := range resp.Topics {
		for _, o := range offsets {
			byKey[topic+"/"+strconv.Itoa(o.Partition)] = o
		}
	}
	out := make(map[*partition]int64, len(parts))
	var errs []error
	for _, p := range parts {
		o, ok := byKey[p.String()]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("list offsets of %s: no answer", p))
		case o.Error != nil:
			errs = append(errs, fmt.Errorf("list offsets of %s: %w", p, o.Error))
		case which == kafkago.FirstOffset && o.FirstOffset >= 0:
			out[p] = o.FirstOffset
		case which == kafkago.LastOffset && o.LastOffset >= 0:
			out[p] = o.LastOffset
		default:
			errs = append(errs, fmt.Errorf("list offsets of %s: no offset", p))
		}
	}
	return out, errors.Join(errs...)
}

// pollHighWaterMarks refreshes the partitions' high watermarks every
// CommitInterval, so Lag keeps growing for a partition that is paused at its
// in-flight bound or whose leader is unreachable.
func (r *run) pollHighWaterMarks(ctx context.Context, parts []*partition, log *slog.Logger) {
	ticker := time.NewTicker(r.s.cfg.CommitInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		ends, err := r.listOffsets(ctx, parts, kafkago.LastOffset)
		r.s.hwmPolls.Add(1)
		if err != nil && ctx.Err() == nil {
			log.DebugContext(ctx, "kafka: refreshing high watermarks failed", slog.Any("error", err))
		}
		for p, end := range ends {
			storeMax(&p.hwm, end)
		}
	}
}

// announce tells Config.Ownership the generation's partitions before any is
// read, retrying with backoff while it fails (reading a partition whose
// cursors could not be taken up would deliver what a detached subscription's
// reader owns from the committed offset on, and skip what it had not
// delivered). It reports false when ctx ended first.
func (r *run) announce(ctx context.Context, parts []*partition, log *slog.Logger) bool {
	own := r.s.cfg.Ownership
	if own == nil || len(parts) == 0 {
		return true
	}
	rng := newRand()
	assigned := make([]source.Assignment, len(parts))
	for i, p := range parts {
		assigned[i] = source.Assignment{Partition: source.Partition{Stream: p.topic, ID: int32(p.id)}, Next: max(p.start, -1)}
	}
	for failures := 1; ; failures++ {
		err := own.Assigned(ctx, assigned)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if failures == 1 || failures%10 == 0 {
			log.WarnContext(ctx, "kafka: taking up the assigned partitions' cursors failed; their reading waits",
				slog.Int("failures", failures), slog.Any("error", err))
		}
		sleep(ctx, jitter(rng, backoff(failures)))
	}
}

// sourceParts names parts as source partitions.
func sourceParts(parts []*partition) []source.Partition {
	out := make([]source.Partition, len(parts))
	for i, p := range parts {
		out[i] = source.Partition{Stream: p.topic, ID: int32(p.id)}
	}
	return out
}

// fetchMaxBytes bounds one fetch of a partition reader, in bytes (kafka-go's
// Reader default); a larger record is still returned whole.
const fetchMaxBytes = 1 << 20

// readPartition reads one partition until ctx ends, handing each message to
// the handler once the tracker has room for it. It fetches through the
// package's one fetch loop (reader.Fetch, shared with streams and replays):
// a fetch is left to finish when ctx ends (at most fetchMaxWait, or
// requestTimeout for a broker that does not answer) so that its connection
// is idle when the Run closes it.
func (r *run) readPartition(ctx context.Context, p *partition, log *slog.Logger) {
	log = log.With(slog.String("topic", p.topic), slog.Int("partition", p.id))
	tp := source.Partition{Stream: p.topic, ID: int32(p.id)}
	rng := newRand()
	offset, failures := p.start, 0
	pos := source.Position{Kind: "kafka", Topic: p.topic, Partition: int32(p.id)}
	for ctx.Err() == nil {
		if offset < 0 {
			// FirstOffset or LastOffset, not resolved when the generation
			// started: resolve it now.
			resolved, err := r.resolveStart(ctx, tp, offset)
			if err != nil {
				failures++
				if ctx.Err() == nil {
					log.WarnContext(ctx, "kafka: resolving the start offset failed; retrying", slog.Any("error", err))
				}
				sleep(ctx, jitter(rng, backoff(failures)))
				continue
			}
			offset = resolved
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchMaxWait+requestTimeout)
		b, err := r.reader.Fetch(fctx, source.FetchRequest{Partition: tp, Offset: offset, MaxBytes: fetchMaxBytes, MaxWait: fetchMaxWait})
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			switch {
			case IsFatal(err):
				r.fail(&FatalError{Op: "read " + p.String(), Err: err})
				return
			case errors.Is(err, source.ErrOutOfRange):
				offset = r.recoverRange(ctx, tp, offset, log)
			default:
				failures++
				level := slog.LevelDebug // one failure is usually a leader moving
				if failures > 1 {
					level = slog.LevelWarn
				}
				log.Log(ctx, level, "kafka: reading the partition failed; retrying", slog.Int64("offset", offset), slog.Any("error", err))
				sleep(ctx, jitter(rng, backoff(failures)))
			}
			continue
		}
		failures = 0
		if b.End >= 0 {
			storeMax(&p.hwm, b.End)
		}
		for _, m := range b.Records {
			if err := p.tracker.waitCapacity(ctx); err != nil {
				return
			}
			seq, ok := p.tracker.add(m.Offset)
			if !ok {
				log.DebugContext(ctx, "kafka: skipped a record at or before an offset already handed out", slog.Int64("offset", m.Offset))
				continue
			}
			pos.Offset = m.Offset
			t := p.tracker
			msg := source.NewMessage(pos, m.Key, m.Value, m.Time, func() { t.markDone(seq) })
			msg.Headers = m.Headers
			r.h(ctx, msg)
		}
		offset = b.Next
	}
}

// resolveStart returns the partition's first or last offset (which:
// kafkago.FirstOffset or LastOffset).
func (r *run) resolveStart(ctx context.Context, tp source.Partition, which int64) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	b, err := r.reader.Bounds(rctx, map[string][]int32{tp.Stream: {tp.ID}})
	if err != nil {
		return which, err
	}
	if which == kafkago.LastOffset {
		return b[tp].End, nil
	}
	return b[tp].First, nil
}

// recoverRange handles a fetch refused with OffsetOutOfRange: below the
// partition's earliest offset, retention deleted records before they were
// read, and reading continues at the earliest (logged as a warning: those
// records are lost to the gateway); beyond its end (a truncated log, or a
// new leader behind) it continues at the end; otherwise the same offset is
// fetched again.
func (r *run) recoverRange(ctx context.Context, tp source.Partition, offset int64, log *slog.Logger) int64 {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	bounds, err := r.reader.Bounds(rctx, map[string][]int32{tp.Stream: {tp.ID}})
	if err != nil {
		log.WarnContext(ctx, "kafka: offset out of range, and reading the partition's bounds failed", slog.Int64("offset", offset), slog.Any("error", err))
		sleep(ctx, backoffMin)
		return offset
	}
	switch b := bounds[tp]; {
	case offset < b.First:
		log.WarnContext(ctx, "kafka: records were deleted by retention before they were read; continuing at the earliest retained offset",
			slog.Int64("offset", offset), slog.Int64("earliest", b.First))
		return b.First
	case offset > b.End:
		log.WarnContext(ctx, "kafka: read position beyond the partition's end; continuing at the end", slog.Int64("offset", offset), slog.Int64("end", b.End))
		return b.End
	}
	return offset
}

// Backoff between failed fetches of a partition: exponential from
// backoffMin, capped at backoffMax, each delay drawn from [d/2, d].
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

func backoff(n int) time.Duration {
	d := backoffMin
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	return min(d, backoffMax)
}

func jitter(rng *rand.Rand, d time.Duration) time.Duration {
	half := d / 2
	return half + time.Duration(rng.Int64N(int64(d-half)+1))
}

// newRand returns a jitter generator for one goroutine, seeded from
// crypto/rand so that replicas do not retry in step.
func newRand() *rand.Rand {
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	return rand.New(rand.NewChaCha8(seed))
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// commit commits the partitions' safe offsets that moved since the last
// commit. Failures are logged (a failed commit is retried at the next tick;
// one that fails because the generation ended is superseded by the next
// owner's), except those no retry fixes, which stop the Run.
func (r *run) commit(gen *kafkago.Generation, parts []*partition, log *slog.Logger) {
	offsets := make(map[string]map[int]int64)
	type pending struct {
		p    *partition
		safe int64
	}
	var moved []pending
	for _, p := range parts {
		safe := p.tracker.safe()
		if safe < 0 || safe == p.committed.Load() {
			continue
		}
		if offsets[p.topic] == nil {
			offsets[p.topic] = make(map[int]int64)
		}
		offsets[p.topic][p.id] = safe
		moved = append(moved, pending{p, safe})
	}
	if len(moved) == 0 {
		return
	}
	if err := gen.CommitOffsets(offsets); err != nil {
		if IsFatal(err) {
			r.fail(&FatalError{Op: "commit offsets", Err: err})
		}
		log.WarnContext(r.ctx, "kafka: committing offsets failed", slog.Any("error", err), slog.Any("offsets", offsets))
		return
	}
	for _, m := range moved {
		m.p.committed.Store(m.safe)
	}
}

// drain waits until no message of parts is in flight, or until ctx ends. It
// reports whether everything was Done.
func drain(ctx context.Context, parts []*partition) bool {
	for _, p := range parts {
		select {
		case <-p.tracker.idle():
		case <-ctx.Done():
			return inFlight(parts) == 0
		}
	}
	return true
}

// inFlight counts the messages of parts not yet Done.
func inFlight(parts []*partition) int {
	n := 0
	for _, p := range parts {
		f, _ := p.tracker.stats()
		n += f
	}
	return n
}

// describe lists partitions with their start offsets for logs.
func describe(parts []*partition) []string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = p.String() + "@" + strconv.FormatInt(p.start, 10)
	}
	return out
}

// describeCommitted lists partitions with their committed offsets for logs.
func describeCommitted(parts []*partition) []string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = p.String() + "@" + strconv.FormatInt(p.committed.Load(), 10)
	}
	return out
}
