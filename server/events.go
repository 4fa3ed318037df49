package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/store"
)

// Errors a Streams implementation returns (wrapped) for the server to map.
var (
	// ErrInvalidResumeToken: the token is garbage, tampered with, or belongs
	// to another subscription (INVALID_ARGUMENT).
	ErrInvalidResumeToken = errors.New("invalid resume token")
	// ErrResumeTokenTooOld: the source no longer retains the data the token
	// points at (OUT_OF_RANGE).
	ErrResumeTokenTooOld = errors.New("resume token older than the source's retention")
	// ErrSlowClient: the client did not keep up and its buffer filled
	// (RESOURCE_EXHAUSTED).
	ErrSlowClient = errors.New("stream client too slow")
	// ErrSourceUnavailable: the source cannot be read now: brokers
	// unreachable, or a topic missing (UNAVAILABLE; the client retries).
	ErrSourceUnavailable = errors.New("the event source is unavailable")
)

// Streams opens event streams of stream subscriptions. The server only
// checks and relays; reading the source is the implementation's job.
type Streams interface {
	Open(ctx context.Context, sub *store.Subscription, req StreamRequest) (EventStream, error)
	// TokenAt returns a resume token for sub positioned at the first records
	// at or after t, for the replay of a stream subscription.
	TokenAt(ctx context.Context, sub *store.Subscription, t time.Time) (string, error)
}

// StreamRequest is what a client asked for, validated.
type StreamRequest struct {
	// ResumeToken continues after an event; empty starts at the live tail.
	ResumeToken string
	// ShardIndex and ShardCount select a share of the events; a count of 0
	// means all of them.
	ShardIndex, ShardCount int
}

// EventStream yields a subscription's events to one client.
type EventStream interface {
	// Next returns the next event's JSON envelope and the token that resumes
	// after it. When ctx ends first, it returns ctx's error and the stream
	// stays usable.
	Next(ctx context.Context) (envelope []byte, resumeToken string, err error)
	Close()
}

// heartbeatInterval is how long an idle stream waits before sending a
// heartbeat, well under the idle timeouts of common proxies (60s).
const heartbeatInterval = 15 * time.Second

// maxShards bounds Shard.count.
const maxShards = 1024

// eventService implements outflowv1.EventServiceServer.
type eventService struct {
	outflowv1.UnimplementedEventServiceServer
	*Server
}

var _ outflowv1.EventServiceServer = (*eventService)(nil)

var eventJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

// StreamEvents relays a stream subscription's events until the client
// leaves, falls behind (RESOURCE_EXHAUSTED: reconnect with the last token)
// or the server stops.
func (s *eventService) StreamEvents(req *outflowv1.StreamEventsRequest, stream grpc.ServerStreamingServer[outflowv1.StreamEventsResponse]) error {
	ctx := stream.Context()
	sub, err := s.lookup(ctx, "subscription_id", req.GetSubscriptionId())
	if err != nil {
		return err
	}
	if sub.Proto.GetStream() == nil {
		return status.Errorf(codes.FailedPrecondition, "subscription %q delivers by webhook, not on streams", req.GetSubscriptionId())
	}
	sr := StreamRequest{ResumeToken: req.GetResumeToken()}
	if sh := req.GetShard(); sh != nil {
		if sh.GetCount() < 1 || sh.GetCount() > maxShards {
			return invalidField("shard.count", "must be between 1 and %d, got %d", maxShards, sh.GetCount())
		}
		if sh.GetIndex() < 0 || sh.GetIndex() >= sh.GetCount() {
			return invalidField("shard.index", "must be between 0 and count-1 (%d), got %d", sh.GetCount()-1, sh.GetIndex())
		}
		sr.ShardIndex, sr.ShardCount = int(sh.GetIndex()), int(sh.GetCount())
	}
	if s.streams == nil {
		return status.Error(codes.Unavailable, "this server does not serve event streams (no stream source configured)")
	}
	es, err := s.streams.Open(ctx, sub, sr)
	if err != nil {
		return s.streamStatus(ctx, err, req.GetSubscriptionId())
	}
	defer es.Close()
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()

	// The handler never blocks on the client: a sender goroutine owns Send,
	// fed by a small queue. A client whose flow-control window stays full
	// for slowClientGrace fills the queue, and the handler ends the stream
	// with RESOURCE_EXHAUSTED; returning ends the RPC, which unblocks the
	// pending Send.
	out := newSender(stream)
	defer out.stop()
	for {
		nctx, cancel := context.WithTimeout(ctx, heartbeatInterval)
		envelope, token, err := es.Next(nctx)
		cancel()
		var msg *outflowv1.StreamEventsResponse
		switch {
		case err == nil:
			event := &outflowv1.Event{}
			if err := eventJSON.Unmarshal(envelope, event); err != nil {
				return s.toStatus(ctx, err, "event")
			}
			event.ResumeToken = token
			msg = &outflowv1.StreamEventsResponse{Event: event}
		case ctx.Err() != nil:
			return nil // the client left, or the server is stopping
		case errors.Is(err, context.DeadlineExceeded):
			msg = &outflowv1.StreamEventsResponse{HeartbeatTime: timestamppb.Now()}
		default:
			return s.streamStatus(ctx, err, req.GetSubscriptionId())
		}
		switch err := out.send(ctx, msg); {
		case errors.Is(err, ErrSlowClient):
			return s.streamStatus(ctx, err, req.GetSubscriptionId())
		case err != nil:
			return nil // the client is gone
		}
	}
}

// slowClientGrace is how long a stream may wait for its client to accept
// more data before it is ended with RESOURCE_EXHAUSTED.
const slowClientGrace = 5 * time.Second

// sendQueue is how many messages wait for a slow client's window.
const sendQueue = 64

// sender is the one goroutine that calls Send on a stream.
type sender struct {
	queue chan *outflowv1.StreamEventsResponse
	quit  chan struct{}
	err   chan error
}

func newSender(stream grpc.ServerStreamingServer[outflowv1.StreamEventsResponse]) *sender {
	s := &sender{
		queue: make(chan *outflowv1.StreamEventsResponse, sendQueue),
		quit:  make(chan struct{}),
		err:   make(chan error, 1),
	}
	go func() {
		for {
			select {
			case <-s.quit:
				return
			case msg := <-s.queue:
				select {
				case <-s.quit:
					return // the handler has returned: no more Sends
				default:
				}
				if err := stream.Send(msg); err != nil {
					s.err <- err
					return
				}
			}
		}
	}()
	return s
}

// send queues msg, waiting at most slowClientGrace for room.
func (s *sender) send(ctx context.Context, msg *outflowv1.StreamEventsResponse) error {
	select {
	case s.queue <- msg:
		return nil
	case err := <-s.err:
		return err
	default:
	}
	timer := time.NewTimer(slowClientGrace)
	defer timer.Stop()
	select {
	case s.queue <- msg:
		return nil
	case err := <-s.err:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return ErrSlowClient
	}
}

func (s *sender) stop() { close(s.quit) }

// streamStatus maps stream errors to codes that tell the client what to do.
func (s *Server) streamStatus(ctx context.Context, err error, subID string) error {
	switch {
	case errors.Is(err, ErrInvalidResumeToken):
		return invalidField("resume_token", "not a resume token issued for subscription %q", subID)
	case errors.Is(err, ErrResumeTokenTooOld):
		return status.Errorf(codes.OutOfRange, "%v; reconnect without a resume_token to start at the live tail (events in between are gone from the source)", err)
	case errors.Is(err, ErrSlowClient):
		return status.Error(codes.ResourceExhausted, "the stream fell behind and its buffer filled; reconnect with the last resume_token to continue without a gap")
	case errors.Is(err, ErrSourceUnavailable):
		s.logger.WarnContext(ctx, "stream source unavailable", slog.String("subscription_id", subID), slog.Any("error", err))
		return status.Error(codes.Unavailable, "the event source cannot be read right now; retry with backoff (and the last resume_token)")
	}
	return s.toStatus(ctx, err, "event stream")
}
