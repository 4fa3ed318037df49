package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/outflow-dev/outflow/internal/storetest"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func setup(t *testing.T) *store.Store {
	t.Helper()
	return storetest.New(t).Store
}

func newSub(id, name string) *outflowv1.Subscription {
	return &outflowv1.Subscription{
		Id: id, Name: name, FeatureViewNames: []string{"fv"}, State: outflowv1.Subscription_ACTIVE,
		Target: &outflowv1.Subscription_Stream{Stream: &outflowv1.StreamTarget{}},
	}
}

func TestSubscriptionChangesAreAnnounced(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	key, _, err := st.CreateAPIKey(ctx, "t", "k")
	if err != nil {
		t.Fatal(err)
	}

	changes := make(chan store.SubscriptionChange, 10)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- st.ListenSubscriptions(ctx, func() { close(ready) }, func(c store.SubscriptionChange) { changes <- c })
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("listen: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the listener never became ready")
	}

	created, err := st.CreateSubscription(ctx, key.TenantID, newSub("sub_1", "one"), "whsec_x", 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.RotateSecret(ctx, key.TenantID, "sub_1", "whsec_y", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteSubscription(ctx, key.TenantID, "sub_1", created.Revision+1); err != nil {
		t.Fatal(err)
	}
	for _, want := range []store.SubscriptionChange{{Op: "insert", ID: "sub_1"}, {Op: "update", ID: "sub_1"}, {Op: "delete", ID: "sub_1"}} {
		select {
		case got := <-changes:
			if got != want {
				t.Errorf("change = %+v, want %+v", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no notification for %+v", want)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("listener ended with %v, want context.Canceled", err)
	}
}

func TestDispatcherReadsIgnoreTenants(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := context.Background()
	a, _, _ := st.CreateAPIKey(ctx, "a", "k")
	b, _, _ := st.CreateAPIKey(ctx, "b", "k")
	if _, err := st.CreateSubscription(ctx, a.TenantID, newSub("sub_a", "x"), "whsec_a", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubscription(ctx, b.TenantID, newSub("sub_b", "x"), "whsec_b", 10); err != nil {
		t.Fatal(err)
	}
	all, err := st.AllSubscriptions(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("AllSubscriptions = %d, %v; want both tenants' 2", len(all), err)
	}
	got, err := st.SubscriptionByID(ctx, "sub_b")
	if err != nil || got.TenantID != b.TenantID || got.Secrets.Current != "whsec_b" {
		t.Fatalf("SubscriptionByID = %+v, %v", got, err)
	}
	if _, err := st.SubscriptionByID(ctx, "sub_none"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown id: %v, want ErrNotFound", err)
	}
	// The API's reads stay tenant-scoped.
	if _, err := st.GetSubscription(ctx, a.TenantID, "sub_b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("tenant a reading tenant b's subscription: %v, want ErrNotFound", err)
	}
}

func TestRotationKeepsThePreviousSecretForTheOverlap(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := context.Background()
	key, _, _ := st.CreateAPIKey(ctx, "t", "k")
	if _, err := st.CreateSubscription(ctx, key.TenantID, newSub("sub_r", "r"), "whsec_old", 10); err != nil {
		t.Fatal(err)
	}
	rotated, err := st.RotateSecret(ctx, key.TenantID, "sub_r", "whsec_new", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if got := rotated.Secrets.Active(now); len(got) != 2 || got[0] != "whsec_new" || got[1] != "whsec_old" {
		t.Errorf("active secrets now = %v, want new then old", got)
	}
	if got := rotated.Secrets.Active(now.Add(2 * time.Hour)); len(got) != 1 || got[0] != "whsec_new" {
		t.Errorf("active secrets after the overlap = %v, want only the new one", got)
	}
}

// TestConcurrentCreatesNeverExceedTheLimit races many creates of one tenant
// at its subscription limit: however they interleave, the tenant ends with
// exactly the limit, and every create past it fails with ErrLimitExceeded.
// (Counting in the statement that waited for the tenant lock saw the
// snapshot taken before the wait, so creates that committed meanwhile were
// missed and the limit was overshot.)
func TestConcurrentCreatesNeverExceedTheLimit(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := context.Background()
	key, _, err := st.CreateAPIKey(ctx, "t", "k")
	if err != nil {
		t.Fatal(err)
	}
	const limit, creates = 5, 60
	for round := range 3 {
		var wg sync.WaitGroup
		var ok, refused atomic.Int32
		for i := range creates {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("sub_r%d_%02d", round, i)
				_, err := st.CreateSubscription(ctx, key.TenantID, newSub(id, id), "whsec_x", limit*(round+1))
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, store.ErrLimitExceeded):
					refused.Add(1)
				default:
					t.Errorf("create %s: %v", id, err)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != limit || refused.Load() != creates-limit {
			t.Fatalf("round %d: %d created and %d refused; want %d and %d", round, ok.Load(), refused.Load(), limit, creates-limit)
		}
	}
}
