package kinesis

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/source"
)

func TestParentsFirst(t *testing.T) {
	t.Parallel()
	s := func(id string, parents ...string) source.Shard { return source.Shard{ID: id, Parents: parents} }
	tests := []struct {
		name string
		in   []source.Shard
		want []string
	}{
		{"no lineage", []source.Shard{s("a"), s("b")}, []string{"a", "b"}},
		{"child listed first", []source.Shard{s("c", "a"), s("a")}, []string{"a", "c"}},
		{"merge", []source.Shard{s("m", "a", "b"), s("b"), s("a")}, []string{"b", "a", "m"}},
		{"parent expired", []source.Shard{s("c", "gone")}, []string{"c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, sh := range parentsFirst(tt.in) {
				got = append(got, sh.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("parentsFirst = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestReaderReadsATimeRange writes three batches apart in time and reads the
// middle one back by arrival time, then continues after a checkpoint.
func TestReaderReadsATimeRange(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	r, err := NewReader(ReaderConfig{AWS: testenv.KinesisAWS(), Endpoint: testenv.KinesisEndpoint(t), IdleWait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	gap := func() time.Time {
		time.Sleep(50 * time.Millisecond) // arrival times are the server's clock: real time must pass
		t0 := time.Now()
		time.Sleep(50 * time.Millisecond)
		return t0
	}
	b.put(t, 0, 10, 1)
	from := gap()
	b.put(t, 10, 20, 1)
	to := gap()
	b.put(t, 30, 10, 1)

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	shards, err := r.Shards(ctx, b.stream)
	if err != nil || len(shards) != 1 {
		t.Fatalf("Shards = %v, %v", shards, err)
	}
	read := func(after string) []source.ShardRecord {
		var got []source.ShardRecord
		err := r.ReadRange(ctx, source.ShardRangeRequest{Stream: b.stream, Shard: shards[0].ID, After: after, From: from, To: to},
			func(batch []source.ShardRecord) error { got = append(got, batch...); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	got := read("")
	if len(got) != 20 || !strings.HasSuffix(string(got[0].Value), ":10") || !strings.HasSuffix(string(got[19].Value), ":29") {
		t.Fatalf("range read %d records (%q..), want records 10..29", len(got), got[0].Value)
	}
	if rest := read(got[4].Sequence); len(rest) != 15 || string(rest[0].Value) != string(got[5].Value) {
		t.Errorf("after the 5th record: %d records, want the 15 after it", len(rest))
	}
	if _, err := r.Shards(ctx, "no-such-stream"); !errors.Is(err, source.ErrNotFound) {
		t.Errorf("Shards of a missing stream = %v, want source.ErrNotFound", err)
	}
}
