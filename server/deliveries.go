package server

import (
	"context"
	"encoding/json"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

// TestEventType is the type of the events SendTestEvent sends.
const TestEventType = "outflow.test"

func (s *subscriptionService) ListDeliveries(ctx context.Context, req *outflowv1.ListDeliveriesRequest) (*outflowv1.ListDeliveriesResponse, error) {
	sub, err := s.lookup(ctx, "subscription_id", req.GetSubscriptionId())
	if err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	statuses := []string{store.StatusRetrying, store.StatusDead}
	switch st := req.GetStatus(); st {
	case outflowv1.Delivery_STATUS_UNSPECIFIED:
	case outflowv1.Delivery_RETRYING, outflowv1.Delivery_DEAD, outflowv1.Delivery_DELIVERED:
		statuses = []string{st.String()}
	default:
		return nil, invalidField("status", "unknown status %d; use RETRYING, DEAD or DELIVERED", st)
	}
	filterKey := sub.Proto.GetId() + "/" + req.GetStatus().String()
	q := store.DeliveryQuery{TenantID: sub.TenantID, SubscriptionID: sub.Proto.GetId(), Statuses: statuses, Limit: size + 1}
	if req.GetPageToken() != "" {
		if q.After, err = s.pageTokens.decode(req.GetPageToken(), sub.TenantID, filterKey); err != nil {
			return nil, invalidField("page_token", "%s", err)
		}
	}
	rows, err := s.store.ListDeliveries(ctx, q)
	if err != nil {
		return nil, s.toStatus(ctx, err, "deliveries")
	}
	resp := &outflowv1.ListDeliveriesResponse{}
	if len(rows) > size {
		rows = rows[:size]
		last := rows[size-1]
		resp.NextPageToken = s.pageTokens.encode(sub.TenantID, filterKey, store.Cursor{CreateTime: last.CreateTime, ID: last.ID})
	}
	for _, d := range rows {
		resp.Deliveries = append(resp.Deliveries, deliveryProto(d))
	}
	return resp, nil
}

func (s *subscriptionService) RetryDelivery(ctx context.Context, req *outflowv1.RetryDeliveryRequest) (*outflowv1.Delivery, error) {
	sub, err := s.lookup(ctx, "subscription_id", req.GetSubscriptionId())
	if err != nil {
		return nil, err
	}
	if err := checkID("delivery_id", req.GetDeliveryId(), "dlv_"); err != nil {
		return nil, err
	}
	d, err := s.store.RetryDeliveryNow(ctx, sub.TenantID, sub.Proto.GetId(), req.GetDeliveryId())
	if err != nil {
		return nil, s.toStatus(ctx, err, "delivery "+`"`+req.GetDeliveryId()+`"`)
	}
	return deliveryProto(d), nil
}

func (s *subscriptionService) SendTestEvent(ctx context.Context, req *outflowv1.SendTestEventRequest) (*outflowv1.SendTestEventResponse, error) {
	sub, err := s.lookup(ctx, "id", req.GetId())
	if err != nil {
		return nil, err
	}
	wh := sub.Proto.GetWebhook()
	if wh == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "subscription %q delivers on streams; test events are for webhooks", req.GetId())
	}
	if s.sender == nil {
		return nil, status.Error(codes.FailedPrecondition, "this server does not deliver webhooks (no sender configured)")
	}
	done, err := s.admitTestEvent(ctx, sub.Proto.GetId(), wh)
	if err != nil {
		return nil, err
	}
	defer done()
	now := time.Now().UTC()
	id, err := store.NewID("evt_test_")
	if err != nil {
		return nil, s.toStatus(ctx, err, "test event")
	}
	fv := "outflow_test"
	if names := sub.Proto.GetFeatureViewNames(); len(names) > 0 {
		fv = names[0]
	}
	rec := map[string]any{
		"version": "1", "producer": "outflow", "job_type": "test", "feature_view_name": fv,
		"feature_timestamp": now.Format(time.RFC3339Nano), "entity_keys": map[string]string{"test": "true"},
	}
	body, _ := json.Marshal(map[string]any{
		"id": id, "type": TestEventType, "subscription_id": sub.Proto.GetId(),
		"created_at": now.Format("2006-01-02T15:04:05.000Z07:00"), "record": rec,
		"source": map[string]any{"kind": "test"},
	})
	var secrets []webhook.Secret
	for _, raw := range sub.Secrets.Active(now) {
		sec, err := webhook.ParseSecret(raw)
		if err != nil {
			return nil, s.toStatus(ctx, err, "subscription secret")
		}
		secrets = append(secrets, sec)
	}
	r := s.sender.Send(ctx, webhook.Request{
		URL: wh.GetUrl(), Headers: wh.GetHeaders(), EventID: id, Body: body,
		Secrets: secrets, Attempt: 1, Timeout: wh.GetTimeout().AsDuration(),
	})
	event := &outflowv1.Event{}
	if err := protojson.Unmarshal(body, event); err != nil {
		return nil, s.toStatus(ctx, err, "test event")
	}
	resp := &outflowv1.SendTestEventResponse{Event: event, StatusCode: int32(r.StatusCode)}
	if r.Err != nil {
		resp.Error = r.Err.Error()
	}
	return resp, nil
}

// admitTestEvent holds test events to the subscription's webhook limits,
// so SendTestEvent cannot be used to flood a URL: its rate_limit (when
// lower than Config.TestEventsPerSecond) and its max_in_flight. A refusal
// is RESOURCE_EXHAUSTED with Retry-After; the returned func ends an
// admitted event. The budget is the test events' own, on this replica:
// the dispatcher's deliveries are limited apart.
func (s *Server) admitTestEvent(ctx context.Context, subID string, wh *outflowv1.WebhookTarget) (func(), error) {
	limit, burst := perSecond(s.cfg.TestEventsPerSecond), s.cfg.TestEventBurst
	if r := wh.GetRateLimit(); r > 0 && rate.Limit(r) < limit {
		limit, burst = rate.Limit(r), min(burst, max(1, int(r)))
	}
	done, refused := s.testEvents.take(subID, limit, burst, int(wh.GetMaxInFlight()), time.Now())
	if refused == nil {
		return done, nil
	}
	if refused.what == "rate" {
		return nil, exhausted(ctx, refused, "too many test events for subscription %q: at most %g per second (bursts of %d)", subID, float64(limit), burst)
	}
	return nil, exhausted(ctx, refused, "subscription %q already has %d test events in flight, its max_in_flight", subID, wh.GetMaxInFlight())
}

// deliveryProto is the API form of a stored delivery.
func deliveryProto(d *store.Delivery) *outflowv1.Delivery {
	out := &outflowv1.Delivery{
		Id: d.ID, SubscriptionId: d.SubscriptionID,
		Status:   outflowv1.Delivery_Status(outflowv1.Delivery_Status_value[d.Status]),
		Attempts: int32(d.Attempts), LastError: d.LastError, LastStatusCode: int32(d.LastStatusCode),
		CreateTime: timestamppb.New(d.CreateTime), UpdateTime: timestamppb.New(d.UpdateTime),
	}
	if !d.NextAttemptTime.IsZero() {
		out.NextAttemptTime = timestamppb.New(d.NextAttemptTime)
	}
	event := &outflowv1.Event{}
	if protojson.Unmarshal(d.Event, event) == nil {
		out.Event = event
	}
	return out
}
