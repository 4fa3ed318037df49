package stream

import (
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/outflow-dev/outflow/record"
)

func TestShardValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		shard Shard
		ok    bool
	}{
		{Shard{Index: 0, Count: 1}, true},
		{Shard{Index: 2, Count: 3}, true},
		{Shard{Index: MaxShardCount - 1, Count: MaxShardCount}, true},
		{Shard{Index: 0, Count: 0}, false},
		{Shard{Index: 3, Count: 3}, false},
		{Shard{Index: -1, Count: 3}, false},
		{Shard{Index: 0, Count: -2}, false},
		{Shard{Index: 0, Count: MaxShardCount + 1}, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d of %d", tt.shard.Index, tt.shard.Count), func(t *testing.T) {
			t.Parallel()
			err := tt.shard.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok %t", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("error %v does not wrap ErrInvalidRequest", err)
			}
			if !tt.ok && InShard(&record.Record{EntityKeys: map[string]string{"k": "v"}}, tt.shard) {
				t.Error("InShard accepted a record for an invalid shard")
			}
		})
	}
}

// TestInShard checks that every record is in exactly one shard of a count,
// the one its documented hash names, and that the split is not lopsided.
func TestInShard(t *testing.T) {
	t.Parallel()
	for _, count := range []int32{1, 2, 3, 7, 1024} {
		t.Run(strconv.Itoa(int(count)), func(t *testing.T) {
			t.Parallel()
			per := make([]int, count)
			const n = 10_000
			for i := range n {
				rec := &record.Record{EntityKeys: map[string]string{"user_id": "u" + strconv.Itoa(i), "org": "o" + strconv.Itoa(i%7)}}
				in := -1
				for idx := range count {
					if InShard(rec, Shard{Index: idx, Count: count}) {
						if in >= 0 {
							t.Fatalf("record %d in shards %d and %d", i, in, idx)
						}
						in = int(idx)
					}
				}
				if in < 0 {
					t.Fatalf("record %d in no shard", i)
				}
				if want := int(rec.EntityHash() % uint64(count)); in != want {
					t.Fatalf("record %d in shard %d, want hash %% count = %d", i, in, want)
				}
				per[in]++
			}
			if count > 1 && count <= 7 {
				for idx, got := range per {
					if want := n / int(count); got < want*8/10 || got > want*12/10 {
						t.Errorf("shard %d got %d of %d records, want about %d", idx, got, n, want)
					}
				}
			}
		})
	}
}

// A client can tell which worker of a pool gets an entity: FNV-1a 64 of the
// entity keys finalised with fmix64 (see record.Record.EntityHash) modulo the
// shard count.
func ExampleInShard() {
	rec := &record.Record{EntityKeys: map[string]string{"user_id": "u1"}}
	for i := range int32(3) {
		fmt.Printf("shard %d of 3: %t\n", i, InShard(rec, Shard{Index: i, Count: 3}))
	}
	// Output:
	// shard 0 of 3: false
	// shard 1 of 3: true
	// shard 2 of 3: false
}
