package stream

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/source"
)

// Event is one event of a stream.
type Event struct {
	// Envelope is the event JSON (SPEC §5), as Config.Envelope built it: the
	// same bytes a webhook receiver gets for this record.
	Envelope []byte
	// Position is where the record was read.
	Position source.Position
	// ResumeToken continues the stream right after this event: it holds,
	// for every partition, the offset after the last record this stream
	// handed out or skipped there (this one included). Pass it to Open (via
	// Tokens.Decode) to resume.
	ResumeToken string
	// Record is the decoded record; read-only.
	Record *record.Record
	// FeatureVector is the enrichment result, nil without enrichment;
	// read-only.
	FeatureVector *outflowv1.FeatureVector
}

// Stream delivers one subscription's events to one client, reading the
// topics directly (no consumer group), so that any gateway replica can serve
// any client whichever partitions its consumer group owns. Each Stream has
// its own connections, readers and bounded buffer: a slow client costs only
// its own buffer and never slows the others or the webhook pipeline.
//
// Each partition is read by its own goroutine, which decodes, matches and
// shards every record, enriches the matching ones and hands them to a
// buffer of Config.BufferSize events, which Next drains. Events of one
// partition come out in offset order; partitions interleave freely.
//
// Next must not be called concurrently with itself; Close and Done may be
// called from any goroutine.
type Stream struct {
	cfg    Config
	req    Request
	subID  string
	log    *slog.Logger
	reader source.PositionReader

	events chan item
	// ctx ends when the stream ends (end): it stops every goroutine.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	done      chan struct{}
	endOnce   sync.Once
	endErr    error // set before done is closed
	closeOnce sync.Once

	// born and lastTake measure the client's progress for the slow-client
	// check: lastTake is when (after born, in nanoseconds) Next last
	// returned an event.
	born     time.Time
	lastTake atomic.Int64

	mu sync.Mutex
	// parts are the partitions being read; guarded by mu.
	parts map[topicPartition]*partition
	// pos is the position resume tokens carry: every read partition's
	// delivered offset plus the carried topics; guarded by mu.
	pos Position
	// carried are the topics of From that this stream does not read;
	// guarded by mu.
	carried []string
	// shards are the Kinesis shards being read, by stream/shard, and
	// shardPos their positions for tokens (plus the carried streams of
	// FromShards); guarded by mu.
	shards   map[string]*partition
	shardPos ShardPosition
}

// item is an event in the buffer with the partition it came from.
type item struct {
	p  *partition
	ev *Event
}

// deliver puts an event in the buffer. While the buffer is full it waits,
// and ends the stream with ErrSlowClient once Next has taken nothing for
// SlowClientGrace. It returns false when the stream ended.
func (s *Stream) deliver(it item) bool {
	select {
	case s.events <- it:
		return true
	case <-s.ctx.Done():
		return false
	default:
	}
	blocked := s.now()
	grace := s.cfg.SlowClientGrace
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for {
		select {
		case s.events <- it:
			return true
		case <-s.ctx.Done():
			return false
		case <-timer.C:
			idle := s.now() - max(blocked, s.lastTake.Load())
			if time.Duration(idle) >= grace {
				s.end(ErrSlowClient)
				return false
			}
			timer.Reset(grace - time.Duration(idle))
		}
	}
}

// now returns the monotonic time since the stream was born, in nanoseconds.
func (s *Stream) now() int64 { return int64(time.Since(s.born)) }

// Next returns the stream's next event, waiting for one until ctx ends. Once
// the stream has ended it returns why, at once, without the events still
// buffered (their records are not covered by any token the client has seen,
// so the client loses nothing): ErrSlowClient, a *TokenTooOldError, an
// *EnrichError, a fatal broker error (authorisation), or ErrClosed after
// Close. When ctx ends first it returns ctx.Err() and the stream goes on.
func (s *Stream) Next(ctx context.Context) (*Event, error) {
	select {
	case <-s.done:
		return nil, s.endErr
	default:
	}
	select {
	case it := <-s.events:
		s.take(it)
		return it.ev, nil
	case <-s.done:
		return nil, s.endErr
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// take records that Next hands out it.ev and sets its resume token.
func (s *Stream) take(it item) {
	s.lastTake.Store(s.now())
	p := it.p
	s.mu.Lock()
	defer s.mu.Unlock()
	p.queued--
	if p.shard != "" {
		s.takeShardLocked(p, it.ev.Position.Sequence)
	} else {
		p.delivered = it.ev.Position.Offset + 1
		if p.queued == 0 && p.skipped > p.delivered {
			p.delivered = p.skipped
		}
		s.pos[p.topic][p.id] = p.delivered
	}
	it.ev.ResumeToken = s.cfg.Tokens.EncodeAll(s.subID, s.pos, s.shardPos)
}

// Done returns a channel that is closed when the stream has ended: by
// itself (Next then returns why) or by Close. A server can select on it to
// notice a stream that ended while it was not calling Next.
func (s *Stream) Done() <-chan struct{} { return s.done }

// end ends the stream with err, unless it already ended: Next returns err
// from then on, and every goroutine stops.
func (s *Stream) end(err error) {
	s.endOnce.Do(func() {
		s.endErr = err
		close(s.done)
		s.cancel()
	})
}

// Close ends the stream and returns once all its goroutines have stopped and
// its reader is closed (a reader of a kafka.SharedLog leaves its idle
// connections to the other streams), which may take up to MaxWait while a fetch is held by
// the broker. It is idempotent and safe to call concurrently with Next,
// which then returns ErrClosed (or the reason the stream had already ended).
func (s *Stream) Close() {
	s.end(ErrClosed)
	s.closeOnce.Do(func() {
		s.wg.Wait()
		s.reader.Close()
	})
}

// sleep waits for d or the end of the stream; it reports whether d passed.
func (s *Stream) sleep(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}
