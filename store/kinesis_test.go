package store_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/store"
)

// TestKinesisLeasesBalance checks that replicas balancing in turn converge
// on about shards/N each, that children wait for their parents, and that a
// checkpoint by a replica that lost the lease changes nothing.
func TestKinesisLeasesBalance(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := t.Context()
	var shards []store.KinesisShard
	for i := range 7 {
		shards = append(shards, store.KinesisShard{Stream: "s", ShardID: fmt.Sprintf("shard-%d", i)})
	}
	// shard-7 is the child of shard-0: not readable until shard-0 finishes.
	shards = append(shards, store.KinesisShard{Stream: "s", ShardID: "shard-7", ParentIDs: []string{"shard-0"}})
	if err := st.RegisterKinesisShards(ctx, "g", shards); err != nil {
		t.Fatal(err)
	}
	if err := st.RegisterKinesisShards(ctx, "g", shards[:1]); err != nil {
		t.Fatalf("registering a known shard again: %v", err)
	}
	balance := func(owner string) []store.KinesisShard {
		t.Helper()
		held, err := st.BalanceKinesisLeases(ctx, store.KinesisBalance{Group: "g", Owner: owner, Streams: []string{"s"}, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return held
	}
	tests := []struct {
		name   string
		owners []string
		rounds int
	}{
		{"one replica takes every readable shard", []string{"a"}, 1},
		{"a second one takes its share, one steal per round", []string{"b", "a"}, 4},
		{"a third one", []string{"c", "a", "b"}, 4},
	}
	for _, tt := range tests {
		got := map[string]int{}
		for range tt.rounds {
			for _, o := range tt.owners {
				got[o] = len(balance(o))
			}
		}
		lo, hi := 7, 0
		for _, n := range got {
			lo, hi = min(lo, n), max(hi, n)
		}
		if hi-lo > 1 {
			t.Errorf("%s: holdings %v, want within one of 7/%d each", tt.name, got, len(got))
		}
		total := 0
		for _, n := range got {
			total += n
		}
		if total != 7 {
			t.Errorf("%s: %d shards held in all, want 7 (the child waits): %v", tt.name, total, got)
		}
	}

	// The holder of shard-0 finishes it; its child becomes readable.
	var holder string
	for _, o := range []string{"a", "b", "c"} {
		for _, h := range balance(o) {
			if h.ShardID == "shard-0" {
				holder = o
			}
		}
	}
	other := "a"
	if holder == "a" {
		other = "b"
	}
	err := st.CheckpointKinesisShard(ctx, "g", other, store.KinesisCheckpoint{Stream: "s", ShardID: "shard-0", Sequence: "9", Finished: true, Lease: time.Minute})
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("checkpoint by a replica without the lease: %v, want ErrLeaseLost", err)
	}
	if err := st.CheckpointKinesisShard(ctx, "g", holder, store.KinesisCheckpoint{Stream: "s", ShardID: "shard-0", Sequence: "5", Finished: true, Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	found := false
	for range 3 {
		for _, o := range []string{"a", "b", "c"} {
			for _, h := range balance(o) {
				found = found || h.ShardID == "shard-7"
				if h.ShardID == "shard-0" {
					t.Errorf("%s holds the finished shard-0", o)
				}
			}
		}
	}
	if !found {
		t.Error("nobody took shard-7 after its parent finished")
	}

	// Leases released at shutdown are taken at once by the others.
	if err := st.ReleaseKinesisLeases(ctx, "g", "c"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		balance("a")
		balance("b")
	}
	if a, b := len(balance("a")), len(balance("b")); a+b != 7 {
		t.Errorf("after c released: a %d + b %d, want 7", a, b)
	}
}
