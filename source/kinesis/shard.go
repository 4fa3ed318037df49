package kinesis

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
)

// Backoff after a failed or throttled GetRecords: exponential from the
// minimum, doubling per consecutive failure, capped, each delay drawn from
// [d/2, d] so that replicas throttled together do not retry in step.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 10 * time.Second
)

// shard is one shard this replica holds a lease on and reads.
type shard struct {
	s       *Source
	stream  string
	id      string
	parents []string
	tracker *tracker
	// behind is the last MillisBehindLatest; -1 until known.
	behind atomic.Int64
	// ended is set once the shard is closed, fully handled and recorded
	// finished; finishedWritten once that write succeeded.
	ended           atomic.Bool
	finishedWritten atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// committed is the checkpoint last written (or read at the start).
	committed string
}

func newShard(s *Source, row store.KinesisShard) *shard {
	sh := &shard{
		s: s, stream: row.Stream, id: row.ShardID, parents: row.ParentIDs,
		tracker: newTracker(row.Checkpoint, s.cfg.MaxInFlightPerShard), committed: row.Checkpoint,
	}
	sh.behind.Store(-1)
	return sh
}

func (sh *shard) key() string { return sh.stream + "/" + sh.id }

// stop ends the shard's reader (it may not have started yet).
func (sh *shard) stop() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.cancel != nil {
		sh.cancel()
	} else {
		sh.ended.Store(true) // never started: nothing to read
		sh.cancel = func() {}
	}
}

// commit writes the checkpoint if it moved since the last write (always,
// renewing the lease, with force).
func (sh *shard) commit(ctx context.Context, force bool) error {
	safe, _ := sh.tracker.checkpoint()
	sh.mu.Lock()
	moved := safe != sh.committed
	sh.mu.Unlock()
	if !moved && !force {
		return nil
	}
	if safe == "" {
		return nil // nothing handled yet: nothing to record
	}
	if err := sh.write(ctx, safe, false); err != nil {
		return err
	}
	return nil
}

// write records a checkpoint (and, with finished, the shard's end).
func (sh *shard) write(ctx context.Context, seq string, finished bool) error {
	cfg := sh.s.cfg
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	err := cfg.Leases.CheckpointKinesisShard(ctx, cfg.GroupID, cfg.WorkerID, store.KinesisCheckpoint{
		Stream: sh.stream, ShardID: sh.id, Sequence: seq, Finished: finished, Lease: cfg.LeaseDuration,
	})
	if err != nil {
		return err
	}
	sh.mu.Lock()
	if seq != "" {
		sh.committed = seq
	}
	sh.mu.Unlock()
	return nil
}

// read reads the shard from its checkpoint until runCtx ends, the shard is
// stopped, or it is closed and fully handled (then it is recorded finished
// and resync is signalled, so its children are found and leased).
func (sh *shard) read(runCtx context.Context, h source.Handler, resync chan<- struct{}) {
	sh.mu.Lock()
	if sh.cancel != nil { // stopped before it started
		sh.mu.Unlock()
		return
	}
	sh.ctx, sh.cancel = context.WithCancel(runCtx)
	ctx := sh.ctx
	sh.mu.Unlock()
	defer sh.cancel()

	log := sh.s.log.With(slog.String("stream", sh.stream), slog.String("shard", sh.id))
	rng := newRand()
	after, _ := sh.tracker.checkpoint()
	iter, failures := "", 0
	pos := source.Position{Kind: "kinesis", Stream: sh.stream, Shard: sh.id}
	for ctx.Err() == nil {
		if iter == "" {
			it, err := sh.iterator(ctx, after)
			if err != nil {
				failures++
				if ctx.Err() == nil {
					log.WarnContext(ctx, "kinesis: getting a shard iterator failed; retrying", slog.Any("error", err))
				}
				sleep(ctx, jitter(rng, backoff(failures)))
				continue
			}
			iter = it
		}
		if err := sh.tracker.waitCapacity(ctx); err != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		out, err := sh.s.client.GetRecords(rctx, &awskinesis.GetRecordsInput{
			ShardIterator: aws.String(iter), Limit: aws.Int32(int32(sh.s.cfg.MaxRecordsPerCall)),
		})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var expired *types.ExpiredIteratorException
			var throttled *types.ProvisionedThroughputExceededException
			switch {
			case errors.As(err, &expired):
				iter = "" // a fresh one, after the last record handed out
				continue
			case errors.As(err, &throttled):
				failures++
				log.DebugContext(ctx, "kinesis: GetRecords throttled; backing off", slog.Int("failures", failures))
			default:
				failures++
				log.WarnContext(ctx, "kinesis: GetRecords failed; retrying", slog.Any("error", err))
			}
			sleep(ctx, jitter(rng, backoff(failures)))
			continue
		}
		failures = 0
		if out.MillisBehindLatest != nil {
			sh.behind.Store(*out.MillisBehindLatest)
		}
		for _, rec := range out.Records {
			seq := aws.ToString(rec.SequenceNumber)
			pos.Sequence = seq
			i := sh.tracker.add(seq)
			t := sh.tracker
			h(ctx, source.NewMessage(pos, []byte(aws.ToString(rec.PartitionKey)), rec.Data,
				aws.ToTime(rec.ApproximateArrivalTimestamp), func() { t.markDone(i) }))
			after = seq
		}
		if out.NextShardIterator == nil {
			sh.finish(ctx, log, rng, resync)
			return
		}
		iter = *out.NextShardIterator
		if len(out.Records) == 0 {
			sleep(ctx, sh.s.cfg.IdleWait)
		}
	}
}

// finish waits for the closed shard's records to be Done and records it
// finished, retrying until that succeeds or the read is stopped.
func (sh *shard) finish(ctx context.Context, log *slog.Logger, rng *rand.Rand, resync chan<- struct{}) {
	if err := sh.tracker.waitIdle(ctx); err != nil {
		return // stopped: the next owner reads the rest again and finishes
	}
	safe, _ := sh.tracker.checkpoint()
	for failures := 1; ctx.Err() == nil; failures++ {
		err := sh.write(ctx, safe, true)
		if err == nil {
			sh.ended.Store(true)
			sh.finishedWritten.Store(true)
			log.InfoContext(ctx, "kinesis: shard finished; its children may be read", slog.String("checkpoint", safe))
			select {
			case resync <- struct{}{}:
			default:
			}
			return
		}
		if errors.Is(err, store.ErrLeaseLost) {
			return
		}
		log.WarnContext(ctx, "kinesis: recording a finished shard failed; retrying", slog.Any("error", err))
		sleep(ctx, jitter(rng, backoff(failures)))
	}
}

// iterator returns a shard iterator after the sequence number after, or at
// the start position when there is none: TRIM_HORIZON, or LATEST with
// StartLatest for a shard without parents (a child's records are all new,
// so it is always read from its start).
func (sh *shard) iterator(ctx context.Context, after string) (string, error) {
	in := &awskinesis.GetShardIteratorInput{StreamName: aws.String(sh.stream), ShardId: aws.String(sh.id)}
	switch {
	case after != "":
		in.ShardIteratorType = types.ShardIteratorTypeAfterSequenceNumber
		in.StartingSequenceNumber = aws.String(after)
	case sh.s.cfg.StartPosition == StartLatest && len(sh.parents) == 0:
		in.ShardIteratorType = types.ShardIteratorTypeLatest
	default:
		in.ShardIteratorType = types.ShardIteratorTypeTrimHorizon
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	out, err := sh.s.client.GetShardIterator(ctx, in)
	if err != nil {
		return "", fmt.Errorf("getting an iterator of %s: %w", sh.key(), err)
	}
	return aws.ToString(out.ShardIterator), nil
}

// backoff returns the delay before retry n (from 1).
func backoff(n int) time.Duration {
	d := backoffMin
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	return min(d, backoffMax)
}

// jitter returns a delay drawn uniformly from [d/2, d].
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
