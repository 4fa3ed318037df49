package stream

import (
	"context"
	"strconv"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// TestRanges writes records with known timestamps (one a minute, on two
// partitions) and checks that time ranges resolve to the offsets between
// them.
func TestRanges(t *testing.T) {
	e := setup(t, 2)
	base := time.Now().Add(-time.Hour).Truncate(time.Minute)
	transport := &kafkago.Transport{}
	w := &kafkago.Writer{Addr: kafkago.TCP(e.brokers...), Topic: e.topic, RequiredAcks: kafkago.RequireAll, Transport: transport,
		BatchTimeout: time.Millisecond, Balancer: kafkago.BalancerFunc(func(m kafkago.Message, _ ...int) int {
			n, _ := strconv.Atoi(string(m.Key))
			return n % 2
		})}
	t.Cleanup(func() {
		_ = w.Close()
		transport.CloseIdleConnections()
	})
	// Record i is at base+i minutes on partition i%2, offset i/2.
	var msgs []kafkago.Message
	for i := range 10 {
		msgs = append(msgs, kafkago.Message{Key: []byte(strconv.Itoa(i)), Value: []byte("x"), Time: base.Add(time.Duration(i) * time.Minute)})
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	cfg := e.config(t)
	at := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }
	tests := []struct {
		name     string
		from, to time.Time
		want     [2][2]int64 // per partition: start, end
	}{
		{"everything", at(-60), at(60), [2][2]int64{{0, 5}, {0, 5}}},
		{"exact minute bounds", at(2), at(6), [2][2]int64{{1, 3}, {1, 3}}},
		{"between records", at(2).Add(time.Second), at(5).Add(time.Second), [2][2]int64{{2, 3}, {1, 3}}},
		{"one record", at(3), at(4), [2][2]int64{{2, 2}, {1, 2}}},
		{"after the last", at(20), at(30), [2][2]int64{{5, 5}, {5, 5}}},
		{"before the first", at(-30), at(-20), [2][2]int64{{0, 0}, {0, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Ranges(ctx, cfg, tt.from, tt.to)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 {
				t.Fatalf("got %d ranges, want 2: %+v", len(got), got)
			}
			for i, r := range got {
				if r.Topic != e.topic || r.Partition != int32(i) || r.Start != tt.want[i][0] || r.End != tt.want[i][1] {
					t.Errorf("partition %d: got %+v, want [%d, %d)", i, r, tt.want[i][0], tt.want[i][1])
				}
			}
		})
	}
	t.Run("position", func(t *testing.T) {
		pos, err := PositionAt(ctx, cfg, at(5))
		if err != nil {
			t.Fatal(err)
		}
		if pos[e.topic][0] != 3 || pos[e.topic][1] != 2 {
			t.Errorf("PositionAt = %v, want partition 0 at 3 and 1 at 2", pos)
		}
	})
	t.Run("empty range", func(t *testing.T) {
		if _, err := Ranges(ctx, cfg, at(5), at(5)); err == nil {
			t.Error("an empty range was accepted")
		}
	})
}
