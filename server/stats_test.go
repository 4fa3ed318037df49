package server_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outflow-dev/outflow/deliverystats"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
)

// TestGetSubscriptionStats: the recorder's counts come back over gRPC and
// REST, for the key's own tenant only.
func TestGetSubscriptionStats(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	created := b.restJSON(t, 200, "POST", "/v1/subscriptions", b.keyA, webhookSub("stats"))
	id := created["id"].(string)
	now := time.Now()
	b.stats.Add(id, deliverystats.Delivered, now)
	b.stats.Add(id, deliverystats.Delivered, now)
	b.stats.Add(id, deliverystats.Dead, now)
	b.stats.ObserveLatency(id, 120*time.Millisecond, now)
	b.stats.Add("sub_someoneelse", deliverystats.Delivered, now)

	got, err := b.subs.GetSubscriptionStats(as(b.keyA), &outflowv1.GetSubscriptionStatsRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetMinutes()) != 60 || got.GetSubscriptionId() != id {
		t.Fatalf("GetSubscriptionStats = %d minutes of %q, want 60 of %q", len(got.GetMinutes()), got.GetSubscriptionId(), id)
	}
	var delivered, failed, dead, latencies int64
	for _, m := range got.GetMinutes() {
		delivered += m.GetDelivered()
		failed += m.GetFailed()
		dead += m.GetDead()
		latencies += m.GetLatency().GetCount()
	}
	if delivered != 2 || failed != 1 || dead != 1 || latencies != 1 {
		t.Errorf("totals delivered %d failed %d dead %d latencies %d, want 2, 1, 1, 1", delivered, failed, dead, latencies)
	}
	last := got.GetMinutes()[59]
	if time.Since(last.GetStartTime().AsTime()) > 2*time.Minute {
		t.Errorf("the last minute starts %v, want the current one", last.GetStartTime().AsTime())
	}

	// REST, as the console reads it: snake_case, durations as strings.
	rest := b.restJSON(t, 200, "GET", "/v1/subscriptions/"+id+"/stats", b.keyA, nil)
	minutes, _ := rest["minutes"].([]any)
	if len(minutes) != 60 {
		t.Fatalf("REST stats has %d minutes, want 60: %v", len(minutes), rest)
	}

	for _, tt := range []struct {
		name string
		key  string
		id   string
		want codes.Code
	}{
		{"another tenant", b.keyB, id, codes.NotFound},
		{"unknown id", b.keyA, "sub_doesnotexist", codes.NotFound},
		// Ids are opaque (SPEC §3): one the server could never have issued
		// is as unknown as one it did not (issue 11, defect 7).
		{"malformed id", b.keyA, "nope", codes.NotFound},
		{"no key", "", id, codes.Unauthenticated},
	} {
		_, err := b.subs.GetSubscriptionStats(as(tt.key), &outflowv1.GetSubscriptionStatsRequest{Id: tt.id})
		if status.Code(err) != tt.want {
			t.Errorf("%s: GetSubscriptionStats = %v, want %s", tt.name, err, tt.want)
		}
	}
}
