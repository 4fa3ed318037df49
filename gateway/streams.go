package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/filter"
	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/stream"
)

// streamSource serves StreamEvents: each client gets its own readers of the
// topics (see package stream), so any replica serves any client.
type streamSource struct {
	cfg      stream.Config
	matcher  *match.Matcher
	filters  *filter.Env
	enricher dispatcher.Enricher
}

var _ server.Streams = (*streamSource)(nil)

func newStreamSource(cfg stream.Config, matcher *match.Matcher, enricher dispatcher.Enricher) (*streamSource, error) {
	filters, err := filter.NewEnv()
	if err != nil {
		return nil, err
	}
	cfg.Envelope = func(subID string, pos source.Position, raw []byte, fv *outflowv1.FeatureVector) ([]byte, error) {
		return dispatcher.Envelope(subID, pos, raw, fv, time.Now())
	}
	return &streamSource{cfg: cfg, matcher: matcher, filters: filters, enricher: enricher}, nil
}

func (s *streamSource) Open(ctx context.Context, sub *store.Subscription, req server.StreamRequest) (server.EventStream, error) {
	// The API read the subscription just now; the matcher may not have the
	// change yet, so compile this copy.
	compiled := match.Compile(s.filters, sub)
	if compiled.Err != nil {
		return nil, fmt.Errorf("compiling subscription %s: %w", sub.Proto.GetId(), compiled.Err)
	}
	r := stream.Request{Subscription: compiled}
	if req.ResumeToken != "" {
		from, shards, err := s.cfg.Tokens.DecodeAll(req.ResumeToken, sub.Proto.GetId())
		if err != nil {
			return nil, fmt.Errorf("%w: %w", server.ErrInvalidResumeToken, err)
		}
		r.From, r.FromShards = from, shards
	}
	if req.ShardCount > 0 {
		r.Shard = &stream.Shard{Index: int32(req.ShardIndex), Count: int32(req.ShardCount)}
	}
	if e := sub.Proto.GetEnrichment(); e != nil {
		if s.enricher == nil {
			return nil, fmt.Errorf("%w: it asks for enrichment but this gateway has no feature store configured", server.ErrEnrichmentFailed)
		}
		r.Enrich = func(ctx context.Context, rec *record.Record) (*outflowv1.FeatureVector, error) {
			res, err := s.enricher.Enrich(ctx, rec, e)
			if err != nil {
				return nil, err
			}
			return res.Proto(e.GetWorkspaceName(), e.GetFeatureServiceName()), nil
		}
	}
	st, err := stream.Open(ctx, s.cfg, r)
	var tooOld *stream.TokenTooOldError
	switch {
	case errors.As(err, &tooOld):
		return nil, fmt.Errorf("%w: %w", server.ErrResumeTokenTooOld, err)
	case errors.Is(err, stream.ErrInvalidToken):
		return nil, fmt.Errorf("%w: %w", server.ErrInvalidResumeToken, err)
	case errors.Is(err, stream.ErrInvalidConfig), errors.Is(err, stream.ErrInvalidRequest):
		return nil, err
	case err != nil:
		// Brokers unreachable or a topic missing: the client should retry.
		return nil, fmt.Errorf("%w: %w", server.ErrSourceUnavailable, err)
	}
	return eventStream{st}, nil
}

// eventStream adapts a *stream.Stream to server.EventStream.
type eventStream struct{ s *stream.Stream }

func (e eventStream) Next(ctx context.Context) ([]byte, string, error) {
	ev, err := e.s.Next(ctx)
	if errors.Is(err, stream.ErrSlowClient) {
		return nil, "", fmt.Errorf("%w: %w", server.ErrSlowClient, err)
	}
	if enrichErr, ok := errors.AsType[*stream.EnrichError](err); ok {
		return nil, "", fmt.Errorf("%w: %w", server.ErrEnrichmentFailed, enrichErr.Err)
	}
	if err != nil {
		return nil, "", err
	}
	return ev.Envelope, ev.ResumeToken, nil
}

func (e eventStream) Close() { e.s.Close() }

// TokenAt returns a resume token for sub at the first records at or after
// t: the replay of a stream subscription.
func (s *streamSource) TokenAt(ctx context.Context, sub *store.Subscription, t time.Time) (string, error) {
	var pos stream.Position
	var err error
	if len(s.cfg.Topics) > 0 {
		pos, err = stream.PositionAt(ctx, s.cfg, t)
	}
	var shards stream.ShardPosition
	if err == nil {
		shards, err = stream.ShardPositionAt(ctx, s.cfg, t)
	}
	if err != nil {
		return "", fmt.Errorf("%w: finding the source position at %s: %w", server.ErrSourceUnavailable, t.Format(time.RFC3339Nano), err)
	}
	if pos == nil {
		pos = stream.Position{}
	}
	return s.cfg.Tokens.EncodeAll(sub.Proto.GetId(), pos, shards), nil
}
