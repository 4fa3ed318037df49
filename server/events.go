package server

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// eventService implements outflowv1.EventServiceServer.
type eventService struct {
	outflowv1.UnimplementedEventServiceServer
	*Server
}

var _ outflowv1.EventServiceServer = (*eventService)(nil)

// StreamEvents checks the subscription exists for the caller's tenant and
// has a stream target; streaming itself is later work.
func (s *eventService) StreamEvents(req *outflowv1.StreamEventsRequest, stream grpc.ServerStreamingServer[outflowv1.StreamEventsResponse]) error {
	sub, err := s.lookup(stream.Context(), "subscription_id", req.GetSubscriptionId())
	if err != nil {
		return err
	}
	if sub.Proto.GetStream() == nil {
		return status.Errorf(codes.FailedPrecondition, "subscription %q delivers by webhook, not on streams", req.GetSubscriptionId())
	}
	return status.Error(codes.Unimplemented, "StreamEvents is not implemented yet")
}
