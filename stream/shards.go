package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/source"
)

// Kinesis streams are read shard by shard through Config.Shards, from a
// ShardPosition value: after a sequence number, from the start, from a
// time, or not at all (a finished shard). A shard is read only once every
// parent it has in this stream is drained (read to its end, and all its
// events taken by the client), so that one entity's events keep their order
// across a split or a merge, as the gateway's consumer keeps it.

// farFuture ends the time range of a live read: it never ends by time.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// noReader is the PositionReader of a stream that reads no Kafka topic.
type noReader struct{}

func (noReader) Partitions(context.Context, []string) (map[string][]int32, error) { return nil, nil }
func (noReader) Bounds(context.Context, map[string][]int32) (map[source.Partition]source.Bounds, error) {
	return nil, nil
}
func (noReader) OffsetsAt(context.Context, map[string][]int32, time.Time) (map[source.Partition]int64, error) {
	return nil, nil
}
func (noReader) Fetch(context.Context, source.FetchRequest) (*source.Batch, error) {
	return nil, errors.New("stream: no Kafka topics configured")
}
func (noReader) Close() {}

// shardKey names a shard in Stream.shards.
func shardKey(stream, shard string) string { return stream + "/" + shard }

// listShards lists the shards of every configured Kinesis stream.
func (s *Stream) listShards(ctx context.Context) ([]source.Shard, error) {
	var all []source.Shard
	for _, name := range s.cfg.KinesisStreams {
		shards, err := s.cfg.Shards.Shards(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("stream: %w", err)
		}
		all = append(all, shards...)
	}
	return all, nil
}

// resolveShards decides where each shard starts (see Request.FromShards)
// and registers the shards, not yet started.
func (s *Stream) resolveShards(ctx context.Context, req Request) ([]*partition, error) {
	all, err := s.listShards(ctx)
	if err != nil {
		return nil, err
	}
	isParent := map[string]bool{}
	for _, sh := range all {
		for _, p := range sh.Parents {
			isParent[shardKey(sh.Stream, p)] = true
		}
	}
	liveTail := req.From == nil && req.FromShards == nil
	now := ShardAt(time.Now())
	parts := make([]*partition, 0, len(all))
	for _, sh := range all {
		from := ShardStart
		switch want, ok := req.FromShards[sh.Stream][sh.ID]; {
		case ok:
			from = want
		case liveTail && isParent[shardKey(sh.Stream, sh.ID)]:
			from = ShardDone // closed before this stream began: nothing live in it
		case liveTail:
			from = now
		}
		parts = append(parts, newShardPartition(sh, from))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if countPartitions(s.pos)+len(parts) > MaxTokenPartitions {
		return nil, fmt.Errorf("%w: the streams have %d shards, more than a resume token holds", ErrInvalidConfig, len(parts))
	}
	s.shardPos = make(ShardPosition)
	for _, p := range parts {
		s.addShardLocked(p)
	}
	for name, shards := range req.FromShards {
		if !slices.Contains(s.cfg.KinesisStreams, name) && len(shards) > 0 {
			s.shardPos[name] = maps.Clone(shards) // carried, as topics are
		}
	}
	return parts, nil
}

// newShardPartition returns the partition of shard sh starting at from.
func newShardPartition(sh source.Shard, from string) *partition {
	p := &partition{topic: sh.Stream, shard: sh.ID, parents: sh.Parents, from: from,
		seqDelivered: from, seqSkipped: from, drained: make(chan struct{})}
	if from == ShardDone {
		p.ended = true
		close(p.drained)
	}
	return p
}

// addShardLocked registers a shard; s.mu must be held.
func (s *Stream) addShardLocked(p *partition) {
	s.shards[shardKey(p.topic, p.shard)] = p
	if s.shardPos[p.topic] == nil {
		s.shardPos[p.topic] = make(map[string]string)
	}
	s.shardPos[p.topic][p.shard] = p.seqDelivered
}

// addShards starts readers for shards that appeared (a split or a merge)
// since the stream began, from their start: they wait for their parents.
func (s *Stream) addShards() error {
	ctx, cancel := context.WithTimeout(s.ctx, requestTimeout)
	defer cancel()
	all, err := s.listShards(ctx)
	if err != nil {
		return err
	}
	var added []*partition
	s.mu.Lock()
	for _, sh := range all {
		if _, ok := s.shards[shardKey(sh.Stream, sh.ID)]; ok {
			continue
		}
		if countPartitions(s.pos)+countShards(s.shardPos)+1 > MaxTokenPartitions {
			s.mu.Unlock()
			return fmt.Errorf("the streams grew beyond what a resume token holds (%d); not reading shard %s", MaxTokenPartitions, sh.ID)
		}
		p := newShardPartition(sh, ShardStart)
		s.addShardLocked(p)
		added = append(added, p)
	}
	s.mu.Unlock()
	for _, p := range added {
		s.log.InfoContext(s.ctx, "stream: reading a new shard", slog.String("stream", p.topic), slog.String("shard", p.shard))
		s.startPartition(p)
	}
	return nil
}

// readShard reads shard p once its parents are drained, until the stream
// ends or the shard does, passing each matching record to emit in sequence
// order; emit returns false once the stream ended.
func (s *Stream) readShard(p *partition, emit func(*partition, source.Position, *record.Record) bool) {
	if p.from == ShardDone {
		return
	}
	for _, parent := range p.parents {
		s.mu.Lock()
		pp := s.shards[shardKey(p.topic, parent)]
		s.mu.Unlock()
		if pp == nil {
			continue // expired, or never listed: nothing to wait for
		}
		select {
		case <-pp.drained:
		case <-s.ctx.Done():
			return
		}
	}
	req := source.ShardRangeRequest{Stream: p.topic, Shard: p.shard, From: time.Unix(0, 0), To: farFuture}
	switch {
	case isSequence(p.from):
		req.After = p.from
	case len(p.from) > 1 && p.from[0] == '@':
		ms, _ := strconv.ParseInt(p.from[1:], 10, 64) // checked by Decode, or made by ShardAt
		req.From = time.UnixMilli(ms)
	}
	pos := source.Position{Kind: "kinesis", Stream: p.topic, Shard: p.shard}
	errStopped := errors.New("stopped")
	err := s.cfg.Shards.ReadRange(s.ctx, req, func(batch []source.ShardRecord) error {
		skipped := ""
		for _, r := range batch {
			if s.ctx.Err() != nil {
				return errStopped
			}
			pos.Sequence = r.Sequence
			rec := s.accept(pos, r.Value)
			if rec == nil {
				skipped = r.Sequence
				continue
			}
			if skipped != "" {
				s.markShardSkipped(p, skipped)
				skipped = ""
			}
			if !emit(p, pos, rec) {
				return errStopped
			}
		}
		if skipped != "" {
			s.markShardSkipped(p, skipped)
		}
		return nil
	})
	switch {
	case s.ctx.Err() != nil, errors.Is(err, errStopped):
	case err == nil:
		s.shardEnded(p)
	case errors.Is(err, source.ErrNotFound):
		s.end(&TokenTooOldError{Topic: p.topic, Shard: p.shard})
	default:
		s.end(fmt.Errorf("stream: reading %s/%s: %w", p.topic, p.shard, err))
	}
}

// markShardSkipped records that every record of shard p up to seq was
// skipped or queued, moving the token there at once if nothing is queued.
func (s *Stream) markShardSkipped(p *partition, seq string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seqLess(p.seqSkipped, seq) {
		p.seqSkipped = seq
	}
	if p.queued == 0 && seqLess(p.seqDelivered, p.seqSkipped) {
		p.seqDelivered = p.seqSkipped
		s.shardPos[p.topic][p.shard] = p.seqDelivered
	}
}

// shardEnded records that shard p was read to its end.
func (s *Stream) shardEnded(p *partition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.ended = true
	if p.queued == 0 {
		s.drainShardLocked(p)
	}
}

// drainShardLocked marks an ended shard with nothing queued as done in the
// token and lets its children be read; s.mu must be held.
func (s *Stream) drainShardLocked(p *partition) {
	if p.seqDelivered == ShardDone {
		return
	}
	p.seqDelivered = ShardDone
	s.shardPos[p.topic][p.shard] = ShardDone
	close(p.drained)
}

// takeShardLocked records that Next hands out the event of shard p at
// sequence seq (p.queued already counts it off); s.mu must be held.
func (s *Stream) takeShardLocked(p *partition, seq string) {
	p.seqDelivered = seq
	if p.queued == 0 {
		if seqLess(p.seqDelivered, p.seqSkipped) {
			p.seqDelivered = p.seqSkipped
		}
		if p.ended {
			s.drainShardLocked(p)
			return
		}
	}
	s.shardPos[p.topic][p.shard] = p.seqDelivered
}

// seqLess reports whether position value a is before b in one shard: a
// sequence number is after every start marker (ShardStart, "@time"), and
// sequence numbers compare as numbers.
func seqLess(a, b string) bool {
	sa, sb := isSequence(a), isSequence(b)
	switch {
	case !sb:
		return false
	case !sa:
		return true
	case len(a) != len(b):
		return len(a) < len(b)
	}
	return a < b
}

// ShardPositionAt returns, for every shard of cfg.KinesisStreams, the
// position that reads from time t on: the stream replay of a Kinesis
// source, for a token made with Tokens.EncodeAll.
func ShardPositionAt(ctx context.Context, cfg Config, t time.Time) (ShardPosition, error) {
	if cfg.Shards == nil || len(cfg.KinesisStreams) == 0 {
		return nil, nil
	}
	out := make(ShardPosition)
	at := ShardAt(t)
	for _, name := range cfg.KinesisStreams {
		shards, err := cfg.Shards.Shards(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("stream: %w", err)
		}
		for _, sh := range shards {
			if out[name] == nil {
				out[name] = make(map[string]string)
			}
			out[name][sh.ID] = at
		}
	}
	return out, nil
}
