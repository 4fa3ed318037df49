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
	// ErrEnrichmentFailed: the subscription's enrichment cannot succeed
	// however often it is retried (an unknown workspace or feature service,
	// the feature store refusing the gateway's key, no feature store
	// configured) (FAILED_PRECONDITION: the subscription or the deployment
	// needs fixing before reconnecting with the last token helps).
	ErrEnrichmentFailed = errors.New("the subscription's enrichment cannot succeed")
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
	return s.serveStream(ctx, req, func(m streamMessage) (func() error, error) {
		msg := &outflowv1.StreamEventsResponse{}
		if m.envelope == nil {
			msg.HeartbeatTime = timestamppb.New(m.heartbeat)
		} else {
			event := &outflowv1.Event{}
			if err := eventJSON.Unmarshal(m.envelope, event); err != nil {
				return nil, s.toStatus(ctx, err, "event")
			}
			event.ResumeToken = m.token
			msg.Event = event
		}
		return func() error { return stream.Send(msg) }, nil
	}, nil)
}

// streamMessage is one message of a stream: an event (its envelope, the
// same JSON a webhook receiver gets, and its resume token) or, without an
// envelope, a heartbeat.
type streamMessage struct {
	envelope  []byte
	token     string
	heartbeat time.Time
}

// serveStream checks a StreamEvents request, opens the stream and relays
// its messages through encode, which turns each into the call that sends it
// (on the sender goroutine) or fails with the status that ends the stream.
// gRPC and NDJSON share it, so both answer alike.
//
// abort, when set, is called as the stream ends, before waiting for the
// sender goroutine: it must make a write in progress return (gRPC needs
// none: returning ends the call, which unblocks Send).
func (s *Server) serveStream(ctx context.Context, req *outflowv1.StreamEventsRequest, encode func(streamMessage) (func() error, error), abort func()) error {
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
	release, err := s.streamSlots.acquire(sub.TenantID, sub.Proto.GetId())
	if err != nil {
		return err
	}
	defer release()
	// A stream outlives the key check of its first request: it ends once its
	// key is revoked.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer s.keyWatch.watch(ctx, cancel)()

	es, err := s.streams.Open(ctx, sub, sr)
	if err != nil {
		return s.streamStatus(ctx, err, req.GetSubscriptionId())
	}
	defer es.Close()
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()

	// The handler never blocks on the client: a sender goroutine owns the
	// writes, fed by a small queue. A client whose flow-control window stays
	// full for slowClientGrace fills the queue, and the handler ends the
	// stream with RESOURCE_EXHAUSTED; returning ends the call, which
	// unblocks the pending write.
	out := newSender()
	defer out.stop(abort)
	// The first message is a heartbeat, sent once the stream reads the
	// source: a client then knows that records written from now on reach
	// it, and an NDJSON client gets its status line without waiting for an
	// event.
	opened := true
	for {
		var (
			envelope []byte
			token    string
			err      error
		)
		if opened {
			err, opened = context.DeadlineExceeded, false
		} else {
			nctx, ncancel := context.WithTimeout(ctx, heartbeatInterval)
			envelope, token, err = es.Next(nctx)
			ncancel()
		}
		var msg streamMessage
		switch {
		case err == nil:
			msg = streamMessage{envelope: envelope, token: token}
		case errors.Is(context.Cause(ctx), errKeyRevoked):
			return status.Error(codes.Unauthenticated, "the API key of this stream was revoked")
		case ctx.Err() != nil:
			return nil // the client left, or the server is stopping
		case errors.Is(err, context.DeadlineExceeded):
			msg = streamMessage{heartbeat: time.Now()}
		default:
			return s.streamStatus(ctx, err, req.GetSubscriptionId())
		}
		write, err := encode(msg)
		if err != nil {
			return err
		}
		switch err := out.send(ctx, write); {
		case errors.Is(err, ErrSlowClient):
			return s.streamStatus(ctx, err, req.GetSubscriptionId())
		case errors.Is(context.Cause(ctx), errKeyRevoked):
			return status.Error(codes.Unauthenticated, "the API key of this stream was revoked")
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

// sender is the one goroutine that writes to a stream's client.
type sender struct {
	queue chan func() error
	quit  chan struct{}
	err   chan error
	// done is closed when the goroutine has returned.
	done chan struct{}
}

func newSender() *sender {
	s := &sender{
		queue: make(chan func() error, sendQueue),
		quit:  make(chan struct{}),
		err:   make(chan error, 1),
		done:  make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.quit:
				return
			case write := <-s.queue:
				select {
				case <-s.quit:
					return // the handler has returned: no more writes
				default:
				}
				if err := write(); err != nil {
					s.err <- err
					return
				}
			}
		}
	}()
	return s
}

// send queues write, waiting at most slowClientGrace for room.
func (s *sender) send(ctx context.Context, write func() error) error {
	select {
	case s.queue <- write:
		return nil
	case err := <-s.err:
		return err
	default:
	}
	timer := time.NewTimer(slowClientGrace)
	defer timer.Stop()
	select {
	case s.queue <- write:
		return nil
	case err := <-s.err:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return ErrSlowClient
	}
}

// stop tells the goroutine to return. Without abort, a write in progress
// returns when the call ends; with it, stop calls abort and waits for the
// goroutine, so that the writer is no longer used once stop returns.
func (s *sender) stop(abort func()) {
	close(s.quit)
	if abort != nil {
		abort()
		<-s.done
	}
}

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
	case errors.Is(err, ErrEnrichmentFailed):
		// The cause is the feature store's answer (never its key), as a
		// webhook delivery keeps it in last_error.
		s.logger.WarnContext(ctx, "stream enrichment failed", slog.String("subscription_id", subID),
			slog.String("request_id", requestIDFrom(ctx)), slog.Any("error", err))
		return status.Errorf(codes.FailedPrecondition, "%v; fix the subscription's enrichment settings (or ask the operator to check the feature store), then reconnect with the last resume_token", err)
	}
	return s.toStatus(ctx, err, "event stream")
}
