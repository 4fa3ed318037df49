package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outflow-dev/outflow/deliverystats"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// GetSubscriptionStats answers a subscription's last hour of deliveries as
// this replica counted them (Params.Stats). A subscription without
// deliveries here, a stream subscription, or a server without statistics
// gets 60 empty minutes: the chart is empty rather than an error.
func (s *subscriptionService) GetSubscriptionStats(ctx context.Context, req *outflowv1.GetSubscriptionStatsRequest) (*outflowv1.SubscriptionStats, error) {
	sub, err := s.lookup(ctx, "id", req.GetId())
	if err != nil {
		return nil, err
	}
	id := sub.Proto.GetId()
	minutes := s.stats.Snapshot(id, time.Now())
	out := &outflowv1.SubscriptionStats{SubscriptionId: id, Minutes: make([]*outflowv1.MinuteStats, len(minutes))}
	for i, m := range minutes {
		out.Minutes[i] = &outflowv1.MinuteStats{
			StartTime: timestamppb.New(m.Start),
			Delivered: m.Delivered, Failed: m.Failed, Dead: m.Dead, Parked: m.Parked,
			Latency: latencyStats(m.Latency),
		}
	}
	return out, nil
}

func latencyStats(l deliverystats.Latency) *outflowv1.LatencyStats {
	if l.Count == 0 {
		return &outflowv1.LatencyStats{}
	}
	return &outflowv1.LatencyStats{Count: l.Count, P50: durationpb.New(l.P50), P95: durationpb.New(l.P95), Max: durationpb.New(l.Max)}
}
