package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/store"
)

// MaxReplayRange bounds the time range of one replay. Kafka topics rarely
// retain more; a longer history is replayed in several requests.
const MaxReplayRange = 31 * 24 * time.Hour

// ReplaySubscription starts a replay. A webhook subscription's replay is
// stored RUNNING and run by a replay worker of any replica (package
// replay); a stream subscription's replay is answered at once, SUCCEEDED,
// with a resume token at start_time: StreamEvents with it delivers the
// range's events with their original ids, then continues live.
//
// Both need the gateway to read the source: without Kafka configured the
// call fails with FAILED_PRECONDITION.
func (s *subscriptionService) ReplaySubscription(ctx context.Context, req *outflowv1.ReplaySubscriptionRequest) (*outflowv1.Replay, error) {
	sub, err := s.lookup(ctx, "id", req.GetId())
	if err != nil {
		return nil, err
	}
	start, end, err := replayRange(req, time.Now())
	if err != nil {
		return nil, err
	}
	if !s.replays || (s.streams == nil && sub.Proto.GetStream() != nil) {
		return nil, status.Error(codes.FailedPrecondition, "this gateway does not read a source it can replay for this subscription (no Kafka brokers configured), so it cannot replay")
	}
	if sub.Proto.GetState() == outflowv1.Subscription_DISABLED {
		return nil, status.Error(codes.FailedPrecondition, "the subscription is DISABLED; set its state to ACTIVE before replaying")
	}
	id, err := store.NewID("rpl_")
	if err != nil {
		return nil, s.toStatus(ctx, err, "replay")
	}
	r := &store.Replay{ID: id, SubscriptionID: sub.Proto.GetId(), TenantID: sub.TenantID,
		StartTime: start, EndTime: end, State: store.ReplayRunning}
	if sub.Proto.GetStream() != nil {
		if r.ResumeToken, err = s.streams.TokenAt(ctx, sub, start); err != nil {
			if errors.Is(err, ErrSourceUnavailable) {
				s.logger.WarnContext(ctx, "replay: source unavailable", slog.Any("error", err))
				return nil, status.Error(codes.Unavailable, "the event source cannot be read right now; retry with backoff")
			}
			return nil, s.toStatus(ctx, err, "replay")
		}
		r.State = store.ReplaySucceeded
	}
	stored, err := s.store.CreateReplay(ctx, r)
	if errors.Is(err, store.ErrReplayRunning) {
		return nil, status.Error(codes.FailedPrecondition, "a replay of this subscription is already running; follow it with ListReplays and start the next when it ends")
	}
	if err != nil {
		return nil, s.toStatus(ctx, err, subscriptionName(sub.Proto.GetId()))
	}
	return replayProto(stored), nil
}

// replayRange validates a request's range against now: start required and
// not in the future, end unset or capped at now, start before end, and the
// range at most MaxReplayRange.
func replayRange(req *outflowv1.ReplaySubscriptionRequest, now time.Time) (start, end time.Time, err error) {
	var v violations
	switch ts := req.GetStartTime(); {
	case ts == nil:
		v.add("start_time", "required")
	case ts.CheckValid() != nil:
		v.add("start_time", "not a valid timestamp")
	case ts.AsTime().After(now):
		v.add("start_time", "is in the future")
	default:
		start = ts.AsTime()
	}
	end = now
	if ts := req.GetEndTime(); ts != nil {
		if ts.CheckValid() != nil {
			v.add("end_time", "not a valid timestamp")
		} else if t := ts.AsTime(); t.Before(now) {
			end = t
		}
	}
	if len(v) == 0 && !start.Before(end) {
		v.add("end_time", "must be after start_time")
	}
	if len(v) == 0 && end.Sub(start) > MaxReplayRange {
		v.add("start_time", "the range is longer than %s; replay it in parts", MaxReplayRange)
	}
	return start, end, v.err()
}

func (s *subscriptionService) GetReplay(ctx context.Context, req *outflowv1.GetReplayRequest) (*outflowv1.Replay, error) {
	sub, err := s.lookup(ctx, "subscription_id", req.GetSubscriptionId())
	if err != nil {
		return nil, err
	}
	if err := checkID("replay_id", req.GetReplayId(), "rpl_"); err != nil {
		return nil, err
	}
	r, err := s.store.GetReplay(ctx, sub.TenantID, sub.Proto.GetId(), req.GetReplayId())
	if err != nil {
		return nil, s.toStatus(ctx, err, `replay "`+req.GetReplayId()+`"`)
	}
	return replayProto(r), nil
}

// Replays listed at most and by default.
const (
	maxReplaysListed     = 100
	defaultReplaysListed = 20
)

func (s *subscriptionService) ListReplays(ctx context.Context, req *outflowv1.ListReplaysRequest) (*outflowv1.ListReplaysResponse, error) {
	sub, err := s.lookup(ctx, "subscription_id", req.GetSubscriptionId())
	if err != nil {
		return nil, err
	}
	n := int(req.GetPageSize())
	switch {
	case n == 0:
		n = defaultReplaysListed
	case n < 0 || n > maxReplaysListed:
		return nil, invalidField("page_size", "must be between 1 and %d", maxReplaysListed)
	}
	rows, err := s.store.ListReplays(ctx, sub.TenantID, sub.Proto.GetId(), n)
	if err != nil {
		return nil, s.toStatus(ctx, err, "replays")
	}
	resp := &outflowv1.ListReplaysResponse{}
	for _, r := range rows {
		resp.Replays = append(resp.Replays, replayProto(r))
	}
	return resp, nil
}

func replayProto(r *store.Replay) *outflowv1.Replay {
	return &outflowv1.Replay{
		Id: r.ID, SubscriptionId: r.SubscriptionID,
		StartTime: timestamppb.New(r.StartTime), EndTime: timestamppb.New(r.EndTime),
		State:        outflowv1.Replay_State(outflowv1.Replay_State_value[r.State]),
		RecordsTotal: r.RecordsTotal, RecordsRead: r.RecordsRead, EventsDelivered: r.EventsDelivered,
		Error: r.Error, ResumeToken: r.ResumeToken,
		CreateTime: timestamppb.New(r.CreateTime), UpdateTime: timestamppb.New(r.UpdateTime),
	}
}
