package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/store"
)

// TestReplaysAPI: the replay RPCs' answers that need no source. (Replays
// themselves run against Kafka: see cmd/outflow TestReplay.)
func TestReplaysAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	ctx := context.Background()
	id := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("replayed"))["id"].(string)
	start := timestamppb.New(time.Now().Add(-time.Hour))

	// A gateway that reads no source cannot replay; bad ranges are named.
	_, err := b.subs.ReplaySubscription(as(b.keyA), &outflowv1.ReplaySubscriptionRequest{Id: id, StartTime: start})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("replay without a source: %v, want FAILED_PRECONDITION", err)
	}
	code, body := b.rest(t, "POST", "/v1/subscriptions/"+id+":replay", b.keyA, map[string]any{"end_time": "2026-01-01T00:00:00Z"})
	if code != http.StatusBadRequest || !strings.Contains(string(body), "start_time") {
		t.Errorf("replay without start_time = %d %s, want 400 naming start_time", code, body)
	}

	// Replays made by the workers are read back through the API.
	tenant := tenantOf(t, b, b.keyA)
	if _, err := b.store.CreateReplay(ctx, &store.Replay{ID: "rpl_one", SubscriptionID: id, TenantID: tenant,
		StartTime: start.AsTime(), EndTime: start.AsTime().Add(time.Hour), State: store.ReplayRunning}); err != nil {
		t.Fatal(err)
	}
	got, err := b.subs.GetReplay(as(b.keyA), &outflowv1.GetReplayRequest{SubscriptionId: id, ReplayId: "rpl_one"})
	if err != nil || got.GetState() != outflowv1.Replay_RUNNING || got.GetSubscriptionId() != id || !got.GetStartTime().AsTime().Equal(start.AsTime().Truncate(time.Microsecond)) {
		t.Fatalf("GetReplay = %v, %v", got, err)
	}
	list := b.restJSON(t, http.StatusOK, "GET", "/v1/subscriptions/"+id+"/replays", b.keyA, nil)
	if rs, _ := list["replays"].([]any); len(rs) != 1 {
		t.Errorf("ListReplays = %v, want one replay", list)
	}
	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"unknown replay", func() error {
			_, err := b.subs.GetReplay(as(b.keyA), &outflowv1.GetReplayRequest{SubscriptionId: id, ReplayId: "rpl_none"})
			return err
		}, codes.NotFound},
		{"malformed replay id", func() error {
			_, err := b.subs.GetReplay(as(b.keyA), &outflowv1.GetReplayRequest{SubscriptionId: id, ReplayId: "dlv_x"})
			return err
		}, codes.NotFound}, // issue 11: ids are opaque, a malformed one is unknown
		{"another tenant", func() error {
			_, err := b.subs.GetReplay(as(b.keyB), &outflowv1.GetReplayRequest{SubscriptionId: id, ReplayId: "rpl_one"})
			return err
		}, codes.NotFound},
		{"page size too large", func() error {
			_, err := b.subs.ListReplays(as(b.keyA), &outflowv1.ListReplaysRequest{SubscriptionId: id, PageSize: 1000})
			return err
		}, codes.InvalidArgument},
	} {
		if got := status.Code(tc.call()); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
