package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/store"
)

func TestReplays(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := context.Background()
	key, _, _ := st.CreateAPIKey(ctx, "t", "k")
	other, _, _ := st.CreateAPIKey(ctx, "other", "k")
	for _, id := range []string{"sub_a", "sub_b"} {
		if _, err := st.CreateSubscription(ctx, key.TenantID, newSub(id, id), "whsec_x", 10); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	replay := func(id, sub, tenant string) *store.Replay {
		return &store.Replay{ID: id, SubscriptionID: sub, TenantID: tenant, StartTime: start, EndTime: start.Add(time.Hour), State: store.ReplayRunning}
	}

	a, err := st.CreateReplay(ctx, replay("rpl_a", "sub_a", key.TenantID))
	if err != nil || a.State != store.ReplayRunning || !a.StartTime.Equal(start) || a.Plan != nil {
		t.Fatalf("CreateReplay = %+v, %v", a, err)
	}
	if _, err := st.CreateReplay(ctx, replay("rpl_a2", "sub_a", key.TenantID)); !errors.Is(err, store.ErrReplayRunning) {
		t.Errorf("a second running replay of sub_a: %v, want ErrReplayRunning", err)
	}
	if _, err := st.CreateReplay(ctx, replay("rpl_x", "sub_a", other.TenantID)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a replay of another tenant's subscription: %v, want ErrNotFound", err)
	}
	if _, err := st.GetReplay(ctx, other.TenantID, "sub_a", "rpl_a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another tenant read the replay: %v", err)
	}
	if _, err := st.CreateReplay(ctx, replay("rpl_b", "sub_b", key.TenantID)); err != nil {
		t.Fatal(err)
	}

	// Two claimants at once take different replays; a third finds none.
	var mu sync.Mutex
	claimed := map[string]int{}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			r, err := st.ClaimReplay(ctx, time.Minute)
			if err != nil {
				t.Error(err)
				return
			}
			if r != nil {
				mu.Lock()
				claimed[r.ID]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(claimed) != 2 || claimed["rpl_a"] != 1 || claimed["rpl_b"] != 1 {
		t.Fatalf("claims = %v, want rpl_a and rpl_b once each", claimed)
	}

	// Progress is recorded; a zero lease hands the replay over at once.
	plan := []store.ReplayPartition{{Topic: "t", Partition: 0, Next: 5, End: 10}, {Topic: "t", Partition: 1, Next: 3, End: 3}}
	if err := st.UpdateReplay(ctx, "rpl_a", store.ReplayProgress{Plan: plan, RecordsTotal: 12, RecordsRead: 7, EventsDelivered: 4}); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetReplay(ctx, key.TenantID, "sub_a", "rpl_a")
	if err != nil || got.RecordsRead != 7 || got.RecordsTotal != 12 || got.EventsDelivered != 4 || len(got.Plan) != 2 || got.Plan[0] != plan[0] {
		t.Fatalf("GetReplay = %+v, %v", got, err)
	}
	time.Sleep(10 * time.Millisecond) // the zero lease must lie in the past
	if r, err := st.ClaimReplay(ctx, time.Minute); err != nil || r == nil || r.ID != "rpl_a" || len(r.Plan) != 2 {
		t.Fatalf("claim after the lease ended = %+v, %v; want rpl_a with its plan", r, err)
	}

	// Finishing ends the claim; a finished replay takes no more progress.
	if err := st.UpdateReplay(ctx, "rpl_a", store.ReplayProgress{Plan: plan, State: store.ReplaySucceeded}); err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateReplay(ctx, "rpl_a", store.ReplayProgress{Plan: plan}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("progress on a finished replay: %v, want ErrNotFound", err)
	}
	// Now another replay of sub_a may start, and the list is newest first.
	if _, err := st.CreateReplay(ctx, replay("rpl_a3", "sub_a", key.TenantID)); err != nil {
		t.Fatal(err)
	}
	list, err := st.ListReplays(ctx, key.TenantID, "sub_a", 10)
	if err != nil || len(list) != 2 || list[0].ID != "rpl_a3" || list[1].State != store.ReplaySucceeded {
		t.Fatalf("ListReplays = %v, %v", list, err)
	}
	// Deleting the subscription deletes its replays.
	if err := st.DeleteSubscription(ctx, key.TenantID, "sub_a", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetReplay(ctx, key.TenantID, "sub_a", "rpl_a3"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a deleted subscription's replay: %v", err)
	}
}
