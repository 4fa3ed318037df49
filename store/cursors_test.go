package store_test

import (
	"slices"
	"testing"

	"github.com/outflow-dev/outflow/store"
)

// TestCursors checks that cursors are upserted in batches, never move back,
// are read back for a restart, and go with their subscription.
func TestCursors(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := t.Context()
	key, _, err := st.CreateAPIKey(ctx, "t", "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubscription(ctx, key.TenantID, newSub("sub_c", "c"), "whsec_c", 10); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		save []store.SubscriptionCursor
		want []store.SubscriptionCursor
	}{
		{"first save", []store.SubscriptionCursor{{"sub_c", "t", 0, 10}, {"sub_c", "t", 1, 5}},
			[]store.SubscriptionCursor{{"sub_c", "t", 0, 10}, {"sub_c", "t", 1, 5}}},
		{"moves on", []store.SubscriptionCursor{{"sub_c", "t", 0, 20}}, []store.SubscriptionCursor{{"sub_c", "t", 0, 20}, {"sub_c", "t", 1, 5}}},
		{"never back", []store.SubscriptionCursor{{"sub_c", "t", 0, 15}}, []store.SubscriptionCursor{{"sub_c", "t", 0, 20}, {"sub_c", "t", 1, 5}}},
	}
	for _, s := range steps {
		if err := st.SaveCursors(ctx, s.save); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got, err := st.Cursors(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, s.want) {
			t.Fatalf("%s: cursors %v, want %v", s.name, got, s.want)
		}
	}
	// A rejoin deletes the cursors of the partitions its reader read; those
	// of other partitions (other replicas') stay.
	if err := st.DeleteCursors(ctx, []store.SubscriptionCursor{{SubscriptionID: "sub_c", Topic: "t", Partition: 0}}); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Cursors(ctx); err != nil || !slices.Equal(got, []store.SubscriptionCursor{{"sub_c", "t", 1, 5}}) {
		t.Fatalf("after deleting partition 0's: %v, %v; want partition 1's left", got, err)
	}
	if err := st.DeleteCursors(ctx, []store.SubscriptionCursor{{SubscriptionID: "sub_c", Topic: "t", Partition: 1}, {SubscriptionID: "sub_x", Topic: "t", Partition: 0}}); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Cursors(ctx); err != nil || len(got) != 0 {
		t.Fatalf("after delete: %v, %v", got, err)
	}
}
