package stream

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/outflow-dev/outflow/enrich"
	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/source"
)

// Backoff between failed fetches of one partition, and between retries of a
// retriable enrichment failure. Each delay is drawn from [d/2, d], so many
// streams hit by the same outage do not retry in lockstep, and never exceeds
// the maximum.
const (
	fetchBackoffMin  = 100 * time.Millisecond
	fetchBackoffMax  = 5 * time.Second
	enrichBackoffMin = 500 * time.Millisecond
	enrichBackoffMax = 30 * time.Second
)

// Request says what one stream delivers.
type Request struct {
	// Subscription is the subscription whose events the stream carries,
	// from match.Compile. Required. Open does not look at its State: the
	// server decides whether a paused or disabled subscription may stream.
	Subscription *match.Subscription
	// From is where to resume, from Tokens.Decode. Nil starts at the live
	// tail: each partition's end offset when Open runs. Partitions of the
	// topics that From does not list (added to a topic, or a topic added to
	// Config.Topics, since the token was made) start at their earliest
	// retained offset: every record in them is one the client has not seen,
	// and at-least-once forbids skipping it. So a non-nil empty From reads
	// everything retained. Positions of topics the stream does not read are
	// passed through unchanged into the stream's tokens, so a client moving
	// between replicas configured with different topics keeps its place.
	From Position
	// FromShards is where to resume in Kinesis streams (Tokens.DecodeAll).
	// With From, it decides the start: both nil start at the live tail;
	// otherwise a shard FromShards does not list is read from its start.
	FromShards ShardPosition
	// Shard, when set, restricts the stream to one shard (see InShard); nil
	// delivers every matching record. Index and Count must pass
	// Shard.Validate; a server receiving an unset proto Shard (count 0)
	// passes nil.
	Shard *Shard
	// Enrich, when set, returns the feature vector of a matching record
	// (typically enrich.Enricher.Enrich followed by Result.Proto with the
	// subscription's settings); nil delivers events without one. It is
	// called concurrently (Config.EnrichConcurrency per partition) and must
	// return promptly once ctx ends. An error for which enrich.IsRetriable
	// is true is retried with backoff, holding back the partition's later
	// events; any other error ends the stream with an *EnrichError.
	Enrich func(ctx context.Context, rec *record.Record) (*outflowv1.FeatureVector, error)
}

// validate checks a Request; its errors wrap ErrInvalidRequest.
func (r Request) validate() error {
	switch {
	case r.Subscription == nil:
		return fmt.Errorf("%w: no subscription", ErrInvalidRequest)
	case r.Subscription.ID == "":
		return fmt.Errorf("%w: subscription without id", ErrInvalidRequest)
	case r.Subscription.Err != nil:
		// Matches would reject every record: a stream that never delivers.
		return fmt.Errorf("%w: %w", ErrInvalidRequest, r.Subscription.Err)
	case r.Shard != nil:
		return r.Shard.Validate()
	}
	return nil
}

// topicPartition names a partition.
type topicPartition struct {
	topic string
	id    int32
}

// partition is one partition a Stream reads.
type partition struct {
	topic string
	id    int32
	start int64

	// Guarded by Stream.mu. Together they keep resume tokens exact: a token
	// must not move past an event the client has not received, yet should
	// move past records skipped after the last event, so that reconnecting
	// does not read them again.
	//
	// queued counts this partition's events that the reader has committed to
	// (being enriched, or in the buffer) and Next has not returned.
	queued int
	// delivered is the offset tokens carry: after the last record Next
	// returned or, once nothing is queued, after the last record skipped.
	delivered int64
	// skipped is the offset after the last record the reader skipped; every
	// record below it was skipped or queued.
	skipped int64

	// Kinesis shards (shard set; topic is the stream) keep their position
	// as a ShardPosition value instead of offsets (see shards.go).
	shard   string
	parents []string
	// from is where reading starts; seqDelivered and seqSkipped are the
	// sequence-number counterparts of delivered and skipped (guarded by
	// Stream.mu, as is ended).
	from, seqDelivered, seqSkipped string
	// ended is set once the shard is closed and read to its end; drained
	// is closed once, besides, none of its events is queued: its children
	// may then be read, which keeps per-entity order across a split.
	ended   bool
	drained chan struct{}
}

func (p *partition) String() string { return p.topic + "/" + strconv.Itoa(int(p.id)) }

// Open starts a stream for req, after applying Config.WithDefaults. ctx
// bounds only Open's own requests (metadata and offsets); the stream lives
// until Close, which the caller must call.
//
// It resolves each partition's start (see Request.From) and fails with a
// *TokenTooOldError when From points below a partition's earliest retained
// offset. An offset in From beyond a partition's end starts that partition
// at its end. That happens when a new leader's high watermark briefly lags
// the old one's (then a few events are delivered again, which at-least-once
// allows), or when the log was truncated or the topic re-created (then
// records written since below the old offset cannot be told apart from those
// already delivered and are not sent; starting over from the earliest offset
// instead would resend the whole partition in the common case).
//
// Other errors: ErrInvalidConfig and ErrInvalidRequest (wrapped), and
// failures to reach the source or find the topics (wrapping the source's
// sentinels, for example source.ErrNotFound).
func Open(ctx context.Context, cfg Config, req Request) (*Stream, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	cfg.Topics = slices.Clone(cfg.Topics)
	cfg.KinesisStreams = slices.Clone(cfg.KinesisStreams)
	if req.Shard != nil {
		req.Shard = new(*req.Shard)
	}
	var reader source.PositionReader = noReader{}
	if cfg.Source != nil && len(cfg.Topics) > 0 {
		reader = cfg.Source.NewReader(cfg.readerConfig())
	}
	streamCtx, cancel := context.WithCancel(context.Background())
	s := &Stream{
		cfg:    cfg,
		req:    req,
		subID:  req.Subscription.ID,
		log:    cfg.Logger.With(slog.String("subscription_id", req.Subscription.ID)),
		reader: reader,
		events: make(chan item, cfg.BufferSize),
		ctx:    streamCtx,
		cancel: cancel,
		done:   make(chan struct{}),
		born:   time.Now(),
		parts:  make(map[topicPartition]*partition),
		pos:    make(Position),
		shards: make(map[string]*partition),
	}
	var parts []*partition
	var err error
	if len(cfg.Topics) > 0 {
		from := req.From
		if from == nil && req.FromShards != nil {
			from = Position{} // a token without Kafka positions: no live tail
		}
		parts, err = s.resolveRetrying(ctx, from)
	}
	if err == nil && len(cfg.KinesisStreams) > 0 {
		var shards []*partition
		shards, err = s.resolveShards(ctx, req)
		parts = append(parts, shards...)
	}
	if err != nil {
		cancel()
		reader.Close()
		return nil, err
	}
	for _, p := range parts {
		s.startPartition(p)
	}
	if cfg.PartitionWatchInterval > 0 {
		s.wg.Go(s.watchPartitions)
	}
	return s, nil
}

// openRetryTimeout bounds how long Open retries transient broker errors
// (a partition leader moving, or not elected yet on a new topic) before it
// gives up.
const openRetryTimeout = 10 * time.Second

// resolveRetrying is resolve, retried with backoff while it fails with a
// transient Kafka error, for at most openRetryTimeout and while ctx lasts. A
// missing topic is not retried: it is a configuration problem.
func (s *Stream) resolveRetrying(ctx context.Context, from Position) ([]*partition, error) {
	deadline := time.Now().Add(openRetryTimeout)
	rng := newRand()
	for attempt := 1; ; attempt++ {
		parts, err := s.resolve(ctx, from)
		if err == nil || !source.IsTemporary(err) || errors.Is(err, source.ErrNotFound) {
			return parts, err
		}
		d := jitter(rng, backoff(fetchBackoffMin, fetchBackoffMax, attempt))
		if time.Now().Add(d).After(deadline) {
			return nil, err
		}
		timer := time.NewTimer(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("%w (while retrying: %w)", err, ctx.Err())
		case <-timer.C:
		}
	}
}

// resolve lists the topics' partitions and decides where each starts,
// registering them (not yet started) and the carried topics.
func (s *Stream) resolve(ctx context.Context, from Position) ([]*partition, error) {
	layout, err := s.partitions(ctx)
	if err != nil {
		return nil, err
	}
	total := 0
	for _, ids := range layout {
		total += len(ids)
	}
	if total > MaxTokenPartitions {
		return nil, fmt.Errorf("%w: the topics have %d partitions, more than a resume token holds (%d)", ErrInvalidConfig, total, MaxTokenPartitions)
	}
	bounds, err := s.listOffsets(ctx, layout)
	if err != nil {
		return nil, err
	}
	var parts []*partition
	for _, topic := range slices.Sorted(maps.Keys(layout)) {
		for _, id := range layout[topic] {
			b := bounds[source.Partition{Stream: topic, ID: id}]
			start := b.First
			if from == nil {
				start = b.End
			} else if want, ok := from[topic][id]; ok {
				switch {
				case want < b.First:
					return nil, &TokenTooOldError{Topic: topic, Partition: id, Wanted: want, Earliest: b.First}
				case want > b.End:
					s.log.WarnContext(ctx, "stream: resume offset beyond the partition's end; starting at the end",
						slog.String("topic", topic), slog.Int("partition", int(id)),
						slog.Int64("wanted", want), slog.Int64("end", b.End))
					start = b.End
				default:
					start = want
				}
			}
			parts = append(parts, &partition{topic: topic, id: id, start: start, delivered: start, skipped: start})
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range parts {
		s.addLocked(p)
	}
	for _, topic := range slices.Sorted(maps.Keys(from)) {
		if _, read := layout[topic]; read || len(from[topic]) == 0 {
			continue
		}
		if total+len(from[topic]) > MaxTokenPartitions {
			s.log.WarnContext(ctx, "stream: dropping the resume position of a topic this stream does not read: the token would be too large",
				slog.String("topic", topic))
			continue
		}
		total += len(from[topic])
		s.carried = append(s.carried, topic)
		s.pos[topic] = maps.Clone(from[topic])
	}
	return parts, nil
}

// addLocked registers a partition. s.mu must be held.
func (s *Stream) addLocked(p *partition) {
	s.parts[topicPartition{p.topic, p.id}] = p
	if s.pos[p.topic] == nil {
		s.pos[p.topic] = make(map[int32]int64)
	}
	s.pos[p.topic][p.id] = p.delivered
}

// partitions returns the partition ids of every configured topic, sorted,
// failing when a topic is missing.
func (s *Stream) partitions(ctx context.Context) (map[string][]int32, error) {
	layout, err := s.reader.Partitions(ctx, s.cfg.Topics)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	return layout, nil
}

// listOffsets asks the source for the partitions' bounds.
func (s *Stream) listOffsets(ctx context.Context, layout map[string][]int32) (map[source.Partition]source.Bounds, error) {
	b, err := s.reader.Bounds(ctx, layout)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	return b, nil
}

// startPartition starts the goroutines reading p: a reader, and with
// enrichment an emitter that hands out enriched events in order.
func (s *Stream) startPartition(p *partition) {
	read := s.readPartition
	if p.shard != "" {
		read = s.readShard
	}
	if s.req.Enrich == nil {
		s.wg.Go(func() { read(p, s.emitDirect) })
		return
	}
	order := make(chan *pending, s.cfg.EnrichConcurrency)
	s.wg.Go(func() { s.emitInOrder(order) })
	s.wg.Go(func() {
		read(p, func(p *partition, pos source.Position, rec *record.Record) bool {
			return s.emitEnriched(order, p, pos, rec)
		})
	})
}

// readPartition fetches p from its start until the stream ends, passing each
// matching record to emit in offset order; emit returns false once the
// stream ended.
func (s *Stream) readPartition(p *partition, emit func(*partition, source.Position, *record.Record) bool) {
	log := s.log.With(slog.String("topic", p.topic), slog.Int("partition", int(p.id)))
	rng := newRand()
	offset := p.start
	failures := 0
	for s.ctx.Err() == nil {
		next, err := s.fetch(p, offset, emit)
		offset = next
		if err == nil {
			failures = 0
			continue
		}
		if s.ctx.Err() != nil {
			return
		}
		if errors.Is(err, source.ErrFatal) {
			s.end(fmt.Errorf("stream: reading %s: %w", p, err))
			return
		}
		if errors.Is(err, source.ErrOutOfRange) {
			if offset, err = s.recoverRange(p, offset, log); err == nil {
				continue
			}
			if s.ctx.Err() != nil {
				return
			}
		}
		failures++
		// Only repeated failures are worth a warning: a single one is
		// usually a leader moving, which the next fetch survives.
		level := slog.LevelDebug
		if failures > 1 {
			level = slog.LevelWarn
		}
		log.Log(s.ctx, level, "stream: fetching failed; retrying", slog.Int64("offset", offset), slog.Any("error", err))
		if !s.sleep(jitter(rng, backoff(fetchBackoffMin, fetchBackoffMax, failures))) {
			return
		}
	}
}

// fetch makes one fetch of p at offset and handles its records; it returns
// the offset to fetch next.
func (s *Stream) fetch(p *partition, offset int64, emit func(*partition, source.Position, *record.Record) bool) (int64, error) {
	// The fetch outlives Close (bounded by MaxWait, or requestTimeout for a
	// broker that does not answer): Close waits for it, so that the
	// connection is idle, and closed, when Close returns.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), s.cfg.MaxWait+requestTimeout)
	defer cancel()
	batch, err := s.reader.Fetch(ctx, source.FetchRequest{
		Partition: source.Partition{Stream: p.topic, ID: p.id},
		Offset:    offset,
		MaxBytes:  s.cfg.FetchMaxBytes,
		MaxWait:   s.cfg.MaxWait,
	})
	if err != nil {
		return offset, err
	}
	pos := source.Position{Kind: "kafka", Topic: p.topic, Partition: p.id}
	skipTo := int64(-1)
	defer func() {
		if skipTo >= 0 {
			s.markSkipped(p, skipTo)
		}
	}()
	for _, r := range batch.Records {
		if s.ctx.Err() != nil {
			return offset, nil
		}
		pos.Offset = r.Offset
		offset = r.Offset + 1
		rec := s.accept(pos, r.Value)
		if rec == nil {
			skipTo = offset
			continue
		}
		if !emit(p, pos, rec) {
			return offset, nil
		}
	}
	return max(offset, batch.Next), nil
}

// accept decodes a record and returns it when it belongs on this stream: it
// matches the subscription and falls in the shard. Records that do not are
// skipped, poison included (the consumer group counts and keeps poison; a
// stream only passes it by).
func (s *Stream) accept(pos source.Position, value []byte) *record.Record {
	rec, err := record.Decode(value, s.cfg.Decode)
	if err != nil {
		s.log.DebugContext(s.ctx, "stream: skipping a poison record", slog.String("position", pos.Key()), slog.Any("error", err))
		return nil
	}
	ok, err := s.req.Subscription.Matches(rec)
	if err != nil {
		s.log.DebugContext(s.ctx, "stream: skipping a record the filter failed on", slog.String("position", pos.Key()), slog.Any("error", err))
		return nil
	}
	if !ok || (s.req.Shard != nil && !InShard(rec, *s.req.Shard)) {
		return nil
	}
	return rec
}

// recoverRange handles a fetch refused with OffsetOutOfRange: below the
// partition's earliest offset the data is gone and the stream ends with a
// *TokenTooOldError; beyond its end the log was truncated (or a new leader
// lags), and reading continues at the end, as Open would do; in between the
// refusal was transient and the same offset is fetched again.
func (s *Stream) recoverRange(p *partition, offset int64, log *slog.Logger) (int64, error) {
	ctx, cancel := context.WithTimeout(s.ctx, requestTimeout)
	defer cancel()
	b, err := s.listOffsets(ctx, map[string][]int32{p.topic: {p.id}})
	if err != nil {
		return offset, fmt.Errorf("offset %d out of range: %w", offset, err)
	}
	bb := b[source.Partition{Stream: p.topic, ID: p.id}]
	switch {
	case offset < bb.First:
		s.end(&TokenTooOldError{Topic: p.topic, Partition: p.id, Wanted: offset, Earliest: bb.First})
		return offset, s.ctx.Err()
	case offset > bb.End:
		log.WarnContext(s.ctx, "stream: read position beyond the partition's end; continuing at the end",
			slog.Int64("offset", offset), slog.Int64("end", bb.End))
		s.mu.Lock()
		p.skipped = bb.End
		s.mu.Unlock()
		return bb.End, nil
	default:
		return offset, fmt.Errorf("offset %d out of range %d..%d: %w", offset, bb.First, bb.End, source.ErrOutOfRange)
	}
}

// markSkipped records that every record of p below offset was skipped or
// queued, moving p's token position there at once if nothing is queued.
func (s *Stream) markSkipped(p *partition, offset int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.skipped = max(p.skipped, offset)
	if p.queued == 0 && p.skipped > p.delivered {
		p.delivered = p.skipped
		s.pos[p.topic][p.id] = p.delivered
	}
}

// queue counts an event of p that the reader commits to handing out.
func (s *Stream) queue(p *partition) {
	s.mu.Lock()
	p.queued++
	s.mu.Unlock()
}

// emitDirect hands a record to the buffer without enrichment.
func (s *Stream) emitDirect(p *partition, pos source.Position, rec *record.Record) bool {
	s.queue(p)
	ev, err := s.event(pos, rec, nil)
	if err != nil {
		s.end(err)
		return false
	}
	return s.deliver(item{p, ev})
}

// event builds the event of a record.
func (s *Stream) event(pos source.Position, rec *record.Record, fv *outflowv1.FeatureVector) (*Event, error) {
	env, err := s.cfg.Envelope(s.subID, pos, rec.Raw, fv)
	if err != nil {
		return nil, fmt.Errorf("stream: building the event of %s: %w", pos.Key(), err)
	}
	return &Event{Envelope: env, Position: pos, Record: rec, FeatureVector: fv}, nil
}

// pending is a record being enriched; ready is closed once ev or err is set.
type pending struct {
	p     *partition
	pos   source.Position
	rec   *record.Record
	ready chan struct{}
	ev    *Event
	err   error
}

// emitEnriched starts enriching a record and queues it for emitInOrder,
// waiting while EnrichConcurrency records of the partition are pending.
func (s *Stream) emitEnriched(order chan<- *pending, p *partition, pos source.Position, rec *record.Record) bool {
	s.queue(p)
	pend := &pending{p: p, pos: pos, rec: rec, ready: make(chan struct{})}
	select {
	case order <- pend:
	case <-s.ctx.Done():
		return false
	}
	s.wg.Go(func() { s.enrich(pend) })
	return true
}

// enrich enriches one record, retrying retriable failures until the stream
// ends.
func (s *Stream) enrich(pend *pending) {
	defer close(pend.ready)
	var rng *rand.Rand
	for attempt := 1; ; attempt++ {
		fv, err := s.req.Enrich(s.ctx, pend.rec)
		switch {
		case err == nil:
			pend.ev, pend.err = s.event(pend.pos, pend.rec, fv)
			return
		case s.ctx.Err() != nil:
			pend.err = s.ctx.Err()
			return
		case !enrich.IsRetriable(err):
			pend.err = &EnrichError{Position: pend.pos, Err: err}
			return
		}
		s.log.WarnContext(s.ctx, "stream: enriching a record failed; retrying",
			slog.String("position", pend.pos.Key()), slog.Int("attempt", attempt), slog.Any("error", err))
		if rng == nil {
			rng = newRand()
		}
		if !s.sleep(jitter(rng, backoff(enrichBackoffMin, enrichBackoffMax, attempt))) {
			pend.err = s.ctx.Err()
			return
		}
	}
}

// emitInOrder hands a partition's enriched events to the buffer in the order
// they were read.
func (s *Stream) emitInOrder(order <-chan *pending) {
	for {
		var pend *pending
		select {
		case pend = <-order:
		case <-s.ctx.Done():
			return
		}
		select {
		case <-pend.ready:
		case <-s.ctx.Done():
			return
		}
		if pend.err != nil {
			s.end(pend.err)
			return
		}
		if !s.deliver(item{pend.p, pend.ev}) {
			return
		}
	}
}

// watchPartitions starts readers for partitions added to the topics while
// the stream runs, from their earliest offset (every record there is new to
// the client).
func (s *Stream) watchPartitions() {
	ticker := time.NewTicker(s.cfg.PartitionWatchInterval)
	defer ticker.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-ticker.C:
		}
		if len(s.cfg.Topics) > 0 {
			if err := s.addPartitions(); err != nil && s.ctx.Err() == nil {
				s.log.DebugContext(s.ctx, "stream: checking for new partitions failed", slog.Any("error", err))
			}
		}
		if len(s.cfg.KinesisStreams) > 0 {
			if err := s.addShards(); err != nil && s.ctx.Err() == nil {
				s.log.DebugContext(s.ctx, "stream: checking for new shards failed", slog.Any("error", err))
			}
		}
	}
}

// addPartitions starts readers for partitions not read yet.
func (s *Stream) addPartitions() error {
	ctx, cancel := context.WithTimeout(s.ctx, requestTimeout)
	defer cancel()
	layout, err := s.partitions(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	added := make(map[string][]int32)
	n := len(s.parts)
	for topic, ids := range layout {
		for _, id := range ids {
			if _, ok := s.parts[topicPartition{topic, id}]; !ok {
				added[topic] = append(added[topic], id)
				n++
			}
		}
	}
	s.mu.Unlock()
	if len(added) == 0 {
		return nil
	}
	if n > MaxTokenPartitions {
		return fmt.Errorf("the topics grew to %d partitions, more than a resume token holds (%d); not reading the new ones", n, MaxTokenPartitions)
	}
	b, err := s.listOffsets(ctx, added)
	if err != nil {
		return err
	}
	var parts []*partition
	for _, topic := range slices.Sorted(maps.Keys(added)) {
		for _, id := range added[topic] {
			first := b[source.Partition{Stream: topic, ID: id}].First
			parts = append(parts, &partition{topic: topic, id: id, start: first, delivered: first, skipped: first})
		}
	}
	s.mu.Lock()
	if carriedLen(s.pos, s.carried)+n > MaxTokenPartitions {
		// The partitions this stream reads come first.
		for _, topic := range s.carried {
			delete(s.pos, topic)
		}
		s.carried = nil
	}
	for _, p := range parts {
		s.addLocked(p)
	}
	s.mu.Unlock()
	for _, p := range parts {
		s.log.InfoContext(s.ctx, "stream: reading a new partition", slog.String("topic", p.topic), slog.Int("partition", int(p.id)), slog.Int64("offset", p.start))
		s.startPartition(p)
	}
	return nil
}

// carriedLen counts the partitions of the carried topics.
func carriedLen(pos Position, carried []string) int {
	n := 0
	for _, t := range carried {
		n += len(pos[t])
	}
	return n
}

// backoff returns the delay before retry n (from 1): lo doubled n-1 times,
// capped at hi.
func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// jitter returns a delay drawn uniformly from [d/2, d].
func jitter(rng *rand.Rand, d time.Duration) time.Duration {
	half := d / 2
	return half + time.Duration(rng.Int64N(int64(d-half)+1))
}

// newRand returns a generator for jitter, one per goroutine (generators
// are not safe for concurrent use), seeded from crypto/rand so that streams
// started together do not retry in step.
func newRand() *rand.Rand {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand.Read documents it)
	return rand.New(rand.NewChaCha8(seed))
}
