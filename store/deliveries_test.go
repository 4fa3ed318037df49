package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/store"
)

func queued(sub, tenant string, i int) *store.Delivery {
	now := time.Now()
	return &store.Delivery{
		ID: fmt.Sprintf("dlv_%s_%d", sub, i), SubscriptionID: sub, TenantID: tenant,
		EventID: fmt.Sprintf("evt_%d", i), Status: store.StatusRetrying, Event: []byte(`{"id":"x"}`),
		Attempts: 1, NextAttemptTime: now.Add(-time.Second), FirstAttemptTime: now, LastError: "503",
		LastStatusCode: 503,
	}
}

func TestRetryQueue(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := context.Background()
	key, _, _ := st.CreateAPIKey(ctx, "t", "k")
	if _, err := st.CreateSubscription(ctx, key.TenantID, newSub("sub_q", "q"), "whsec_q", 10); err != nil {
		t.Fatal(err)
	}

	const n = 40
	for i := range n {
		if ok, err := st.EnqueueDelivery(ctx, queued("sub_q", key.TenantID, i)); err != nil || !ok {
			t.Fatalf("enqueue %d = %v, %v", i, ok, err)
		}
	}
	// The same event again (a re-read after a crash) is not queued twice.
	again := queued("sub_q", key.TenantID, 0)
	again.ID = "dlv_other"
	if ok, err := st.EnqueueDelivery(ctx, again); err != nil || ok {
		t.Fatalf("second enqueue of evt_0 = %v, %v; want a no-op", ok, err)
	}
	if depth, err := st.RetryQueueDepth(ctx); err != nil || depth != n {
		t.Fatalf("depth = %d, %v; want %d", depth, err, n)
	}

	// Four claimers at once never claim the same row.
	var mu sync.Mutex
	claimed := map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ds, err := st.ClaimDueDeliveries(ctx, 3, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if len(ds) == 0 {
					return
				}
				mu.Lock()
				for _, d := range ds {
					claimed[d.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(claimed) != n {
		t.Fatalf("claimed %d distinct deliveries, want %d", len(claimed), n)
	}
	for id, times := range claimed {
		if times != 1 {
			t.Errorf("%s claimed %d times", id, times)
		}
	}
	// Claimed rows are leased: nothing is due now.
	if ds, _ := st.ClaimDueDeliveries(ctx, 10, time.Minute); len(ds) != 0 {
		t.Fatalf("%d leased deliveries claimed again", len(ds))
	}

	// Finish: one delivered, one dead; both leave the queue.
	if err := st.FinishAttempt(ctx, "dlv_sub_q_1", store.AttemptResult{Status: store.StatusDelivered}); err != nil {
		t.Fatal(err)
	}
	if err := st.FinishAttempt(ctx, "dlv_sub_q_2", store.AttemptResult{Status: store.StatusDead, LastError: "gave up", LastStatusCode: 500}); err != nil {
		t.Fatal(err)
	}
	dead, err := st.ListDeliveries(ctx, store.DeliveryQuery{TenantID: key.TenantID, SubscriptionID: "sub_q", Statuses: []string{store.StatusDead}, Limit: 10})
	if err != nil || len(dead) != 1 || dead[0].Attempts != 2 || dead[0].LastError != "gave up" {
		t.Fatalf("dead = %+v, %v", dead, err)
	}
	// Redeliver the dead one: due at once.
	if d, err := st.RetryDeliveryNow(ctx, key.TenantID, "sub_q", "dlv_sub_q_2"); err != nil || d.Status != store.StatusRetrying {
		t.Fatalf("retry now = %+v, %v", d, err)
	}
	if ds, err := st.ClaimDueDeliveries(ctx, 10, time.Minute); err != nil || len(ds) != 1 || ds[0].ID != "dlv_sub_q_2" {
		t.Fatalf("after retry now, claimed %v, %v; want dlv_sub_q_2", ds, err)
	}
	// Another tenant cannot see or touch them.
	other, _, _ := st.CreateAPIKey(ctx, "other", "k")
	if _, err := st.RetryDeliveryNow(ctx, other.TenantID, "sub_q", "dlv_sub_q_2"); err == nil {
		t.Error("another tenant rescheduled the delivery")
	}
}

func TestPoisonIsKeptOnce(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := context.Background()
	p := store.Poison{PositionKey: "kafka/t/0/7", SourceKind: "kafka", Topic: "t", Partition: 0, Offset: 7,
		Reason: "invalid_json", Error: "unexpected end", Raw: []byte("{"), RawSize: 1}
	for range 2 {
		if err := st.InsertPoison(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := st.PoolForTest().QueryRow(ctx, "SELECT count(*) FROM poison_records").Scan(&n); err != nil || n != 1 {
		t.Fatalf("poison rows = %d, %v; want 1", n, err)
	}
}

// TestRequeueDelivery: a replayed event re-arms its dead or delivered row,
// but leaves a row still retrying alone; EnqueueDelivery never re-arms.
func TestRequeueDelivery(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := context.Background()
	key, _, _ := st.CreateAPIKey(ctx, "t", "k")
	if _, err := st.CreateSubscription(ctx, key.TenantID, newSub("sub_r", "r"), "whsec_r", 10); err != nil {
		t.Fatal(err)
	}
	status := func(id string) string {
		t.Helper()
		page, err := st.ListDeliveries(ctx, store.DeliveryQuery{TenantID: key.TenantID, SubscriptionID: "sub_r",
			Statuses: []string{store.StatusRetrying, store.StatusDead, store.StatusDelivered}, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page {
			if d.EventID == id {
				return d.Status
			}
		}
		return ""
	}
	dead := queued("sub_r", key.TenantID, 1)
	dead.Status, dead.NextAttemptTime = store.StatusDead, time.Time{}
	if ok, err := st.EnqueueDelivery(ctx, dead); err != nil || !ok {
		t.Fatalf("enqueue = %v, %v", ok, err)
	}
	again := queued("sub_r", key.TenantID, 1)
	again.ID = "dlv_again"
	if ok, err := st.EnqueueDelivery(ctx, again); err != nil || ok || status("evt_1") != store.StatusDead {
		t.Fatalf("EnqueueDelivery over a dead row = %v, %v (status %s); want a no-op", ok, err, status("evt_1"))
	}
	if ok, err := st.RequeueDelivery(ctx, again); err != nil || !ok || status("evt_1") != store.StatusRetrying {
		t.Fatalf("RequeueDelivery over a dead row = %v, %v (status %s); want it RETRYING", ok, err, status("evt_1"))
	}
	if ok, err := st.RequeueDelivery(ctx, again); err != nil || ok {
		t.Fatalf("RequeueDelivery over a retrying row = %v, %v; want a no-op", ok, err)
	}
}

// TestUncountedAttempt: an attempt the gateway's own misconfiguration failed is recorded (its
// error and next time) without counting against the retry policy; a counted one adds one.
func TestUncountedAttempt(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := context.Background()
	key, _, _ := st.CreateAPIKey(ctx, "t", "k")
	if _, err := st.CreateSubscription(ctx, key.TenantID, newSub("sub_u", "u"), "whsec_u", 10); err != nil {
		t.Fatal(err)
	}
	if ok, err := st.EnqueueDelivery(ctx, queued("sub_u", key.TenantID, 0)); err != nil || !ok {
		t.Fatalf("enqueue = %v, %v", ok, err)
	}
	list := func() *store.Delivery {
		t.Helper()
		ds, err := st.ListDeliveries(ctx, store.DeliveryQuery{TenantID: key.TenantID, SubscriptionID: "sub_u", Statuses: []string{store.StatusRetrying}, Limit: 10})
		if err != nil || len(ds) != 1 {
			t.Fatalf("deliveries = %+v, %v", ds, err)
		}
		return ds[0]
	}
	before := list().Attempts
	steps := []struct {
		uncounted bool
		want      int
	}{{true, before}, {true, before}, {false, before + 1}}
	for i, s := range steps {
		next := time.Now().Add(time.Minute).Truncate(time.Microsecond)
		err := st.FinishAttempt(ctx, "dlv_sub_u_0", store.AttemptResult{Status: store.StatusRetrying, NextAttemptTime: next,
			LastError: fmt.Sprintf("step %d", i), Uncounted: s.uncounted})
		if err != nil {
			t.Fatal(err)
		}
		d := list()
		if d.Attempts != s.want || d.LastError != fmt.Sprintf("step %d", i) || !d.NextAttemptTime.Equal(next) {
			t.Errorf("step %d (uncounted %v): %+v, want %d attempts", i, s.uncounted, d, s.want)
		}
	}
}

// TestClaimFair: a subscription with a deep queue does not take every slot
// of a claim; subscriptions take turns, Busy counts against the cap, and
// rows of a PAUSED subscription wait.
func TestClaimFair(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := context.Background()
	key, _, _ := st.CreateAPIKey(ctx, "t", "k")
	for _, id := range []string{"sub_deep", "sub_a", "sub_b", "sub_paused"} {
		if _, err := st.CreateSubscription(ctx, key.TenantID, newSub(id, id), "whsec_"+id, 10); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.SetSubscriptionState(ctx, "sub_paused", "PAUSED", "test"); err != nil {
		t.Fatal(err)
	}
	enqueue := func(sub string, n int) {
		for i := range n {
			if ok, err := st.EnqueueDelivery(ctx, queued(sub, key.TenantID, i)); err != nil || !ok {
				t.Fatalf("enqueue %s %d = %v, %v", sub, i, ok, err)
			}
		}
	}
	enqueue("sub_deep", 50)
	enqueue("sub_a", 2)
	enqueue("sub_b", 1)
	enqueue("sub_paused", 3)

	count := func(ds []*store.Delivery) map[string]int {
		m := map[string]int{}
		for _, d := range ds {
			m[d.SubscriptionID]++
		}
		return m
	}
	tests := []struct {
		name string
		p    store.ClaimParams
		want map[string]int
	}{
		{"turns: one of each first", store.ClaimParams{Limit: 3, Lease: time.Minute, PerSubscription: 4},
			map[string]int{"sub_deep": 1, "sub_a": 1, "sub_b": 1}},
		{"the cap counts busy ones", store.ClaimParams{Limit: 10, Lease: time.Minute, PerSubscription: 4,
			Busy: map[string]int{"sub_deep": 1, "sub_a": 1}}, map[string]int{"sub_deep": 3, "sub_a": 1}},
		{"a full subscription gets none", store.ClaimParams{Limit: 10, Lease: time.Minute, PerSubscription: 4,
			Busy: map[string]int{"sub_deep": 4}}, map[string]int{}},
		{"the rest, capped", store.ClaimParams{Limit: 10, Lease: time.Minute, PerSubscription: 4},
			map[string]int{"sub_deep": 4}},
	}
	for _, tt := range tests { // sequential: each claim leases what it took
		ds, err := st.ClaimFair(ctx, tt.p)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := count(ds); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: claimed %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestInsertDeliveries: one batch stores new rows, skips an event already
// queued (EnqueueDelivery's rule) and re-arms a dead one when asked
// (RequeueDelivery's rule).
func TestInsertDeliveries(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := context.Background()
	key, _, _ := st.CreateAPIKey(ctx, "t", "k")
	if _, err := st.CreateSubscription(ctx, key.TenantID, newSub("sub_b", "b"), "whsec_b", 10); err != nil {
		t.Fatal(err)
	}
	dead := queued("sub_b", key.TenantID, 1)
	dead.Status, dead.NextAttemptTime = store.StatusDead, time.Time{}
	if _, err := st.EnqueueDelivery(ctx, dead); err != nil {
		t.Fatal(err)
	}
	kept := queued("sub_b", key.TenantID, 2)
	if _, err := st.EnqueueDelivery(ctx, kept); err != nil {
		t.Fatal(err)
	}
	again2, again1 := queued("sub_b", key.TenantID, 2), queued("sub_b", key.TenantID, 1)
	again2.ID, again1.ID = "dlv_again2", "dlv_again1"
	batch := []*store.Delivery{queued("sub_b", key.TenantID, 3), queued("sub_b", key.TenantID, 4), again2, again1}
	if err := st.InsertDeliveries(ctx, batch, []bool{false, false, false, true}); err != nil {
		t.Fatal(err)
	}
	page, err := st.ListDeliveries(ctx, store.DeliveryQuery{TenantID: key.TenantID, SubscriptionID: "sub_b",
		Statuses: []string{store.StatusRetrying, store.StatusDead}, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range page {
		got[d.EventID] = d.ID + " " + d.Status
	}
	want := map[string]string{
		"evt_1": "dlv_sub_b_1 RETRYING", // re-armed in place
		"evt_2": "dlv_sub_b_2 RETRYING", // kept, not replaced
		"evt_3": "dlv_sub_b_3 RETRYING",
		"evt_4": "dlv_sub_b_4 RETRYING",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rows = %v, want %v", got, want)
	}
}
