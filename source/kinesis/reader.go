package kinesis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/outflow-dev/outflow/source"
)

// ReaderConfig configures a Reader. AWS is required.
type ReaderConfig struct {
	// AWS and Endpoint: as in Config.
	AWS      aws.Config
	Endpoint string
	// IdleWait and MaxRecordsPerCall: as in Config (defaults 500 ms, 1000).
	IdleWait          time.Duration
	MaxRecordsPerCall int
	// Logger receives retried failures. Default: discard.
	Logger *slog.Logger
}

// Reader reads time ranges of shards again (source.ShardReader), outside
// any lease: replays use it. It is safe for concurrent use.
type Reader struct {
	cfg       ReaderConfig
	client    *awskinesis.Client
	transport *http.Transport
}

var _ source.ShardReader = (*Reader)(nil)

// NewReader returns a Reader for cfg; it does not connect.
func NewReader(cfg ReaderConfig) (*Reader, error) {
	if cfg.IdleWait == 0 {
		cfg.IdleWait = DefaultIdleWait
	}
	if cfg.MaxRecordsPerCall == 0 {
		cfg.MaxRecordsPerCall = DefaultMaxRecordsPerCall
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := validateAWS(cfg.AWS); err != nil {
		return nil, err
	}
	if cfg.IdleWait < 0 || cfg.MaxRecordsPerCall < 1 || cfg.MaxRecordsPerCall > 10_000 {
		return nil, fmt.Errorf("%w: IdleWait must be positive and MaxRecordsPerCall between 1 and 10000", ErrInvalidConfig)
	}
	client, transport := newClient(cfg.AWS, cfg.Endpoint)
	return &Reader{cfg: cfg, client: client, transport: transport}, nil
}

// Close closes the Reader's idle connections.
func (r *Reader) Close() { r.transport.CloseIdleConnections() }

// classify wraps a Kinesis error with the source sentinel it means.
func classify(err error) error {
	var nf *types.ResourceNotFoundException
	var denied interface{ ErrorCode() string }
	switch {
	case errors.As(err, &nf):
		return fmt.Errorf("%w: %w", source.ErrNotFound, err)
	case errors.As(err, &denied) && (denied.ErrorCode() == "AccessDeniedException" || denied.ErrorCode() == "UnrecognizedClientException"):
		return fmt.Errorf("%w: %w", source.ErrFatal, err)
	}
	return err
}

// Shards returns every shard of stream, parents before children.
func (r *Reader) Shards(ctx context.Context, stream string) ([]source.Shard, error) {
	shards, err := listShards(ctx, r.client, stream)
	if err != nil {
		return nil, classify(err)
	}
	out := make([]source.Shard, 0, len(shards))
	for _, sh := range shards {
		s := source.Shard{Stream: stream, ID: aws.ToString(sh.ShardId)}
		for _, p := range []*string{sh.ParentShardId, sh.AdjacentParentShardId} {
			if aws.ToString(p) != "" {
				s.Parents = append(s.Parents, *p)
			}
		}
		out = append(out, s)
	}
	return parentsFirst(out), nil
}

// parentsFirst orders shards so that every shard comes after the parents
// listed with it (ListShards lists them so already; this does not rely on it).
func parentsFirst(shards []source.Shard) []source.Shard {
	known := make(map[string]bool, len(shards))
	for _, s := range shards {
		known[s.ID] = true
	}
	placed := make(map[string]bool, len(shards))
	out := make([]source.Shard, 0, len(shards))
	for len(out) < len(shards) {
		progressed := false
		for _, s := range shards {
			if placed[s.ID] {
				continue
			}
			ready := !slices.ContainsFunc(s.Parents, func(p string) bool { return known[p] && !placed[p] })
			if ready {
				out = append(out, s)
				placed[s.ID] = true
				progressed = true
			}
		}
		if !progressed { // a cycle cannot happen; keep the rest as listed
			for _, s := range shards {
				if !placed[s.ID] {
					out = append(out, s)
					placed[s.ID] = true
				}
			}
		}
	}
	return out
}

// ReadRange reads req (see source.ShardReader). Records are in the range by
// their approximate arrival time; reading stops at the first record at or
// after To, at the shard's end, or once it reached the tip of the shard
// after To has passed (no later record can be in the range).
func (r *Reader) ReadRange(ctx context.Context, req source.ShardRangeRequest, fn func([]source.ShardRecord) error) error {
	log := r.cfg.Logger.With(slog.String("stream", req.Stream), slog.String("shard", req.Shard))
	rng := newRand()
	after, iter, failures := req.After, "", 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if iter == "" {
			in := &awskinesis.GetShardIteratorInput{StreamName: aws.String(req.Stream), ShardId: aws.String(req.Shard)}
			if after != "" {
				in.ShardIteratorType, in.StartingSequenceNumber = types.ShardIteratorTypeAfterSequenceNumber, aws.String(after)
			} else {
				in.ShardIteratorType, in.Timestamp = types.ShardIteratorTypeAtTimestamp, aws.Time(req.From)
			}
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			out, err := r.client.GetShardIterator(rctx, in)
			cancel()
			if err != nil {
				if err := classify(err); errors.Is(err, source.ErrNotFound) || errors.Is(err, source.ErrFatal) {
					return fmt.Errorf("kinesis: reading %s/%s: %w", req.Stream, req.Shard, err)
				}
				failures++
				log.WarnContext(ctx, "kinesis: getting a shard iterator failed; retrying", slog.Any("error", err))
				sleep(ctx, jitter(rng, backoff(failures)))
				continue
			}
			iter = aws.ToString(out.ShardIterator)
		}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		out, err := r.client.GetRecords(rctx, &awskinesis.GetRecordsInput{ShardIterator: aws.String(iter), Limit: aws.Int32(int32(r.cfg.MaxRecordsPerCall))})
		cancel()
		if err != nil {
			var expired *types.ExpiredIteratorException
			switch cerr := classify(err); {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.As(err, &expired):
				iter = ""
				continue
			case errors.Is(cerr, source.ErrNotFound), errors.Is(cerr, source.ErrFatal):
				return fmt.Errorf("kinesis: reading %s/%s: %w", req.Stream, req.Shard, cerr)
			}
			failures++
			log.DebugContext(ctx, "kinesis: GetRecords failed or throttled; backing off", slog.Any("error", err))
			sleep(ctx, jitter(rng, backoff(failures)))
			continue
		}
		failures = 0
		batch := make([]source.ShardRecord, 0, len(out.Records))
		reachedEnd := false
		for _, rec := range out.Records {
			t := aws.ToTime(rec.ApproximateArrivalTimestamp)
			if !t.Before(req.To) {
				reachedEnd = true
				break
			}
			batch = append(batch, source.ShardRecord{Sequence: aws.ToString(rec.SequenceNumber),
				Key: []byte(aws.ToString(rec.PartitionKey)), Value: rec.Data, Time: t})
		}
		if len(batch) > 0 {
			if err := fn(batch); err != nil {
				return err
			}
			after = batch[len(batch)-1].Sequence
		}
		atTip := len(out.Records) == 0 && aws.ToInt64(out.MillisBehindLatest) == 0 && !time.Now().Before(req.To)
		if reachedEnd || out.NextShardIterator == nil || atTip {
			return nil
		}
		iter = *out.NextShardIterator
		if len(out.Records) == 0 {
			sleep(ctx, r.cfg.IdleWait)
		}
	}
}
