package deliverystats

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// t0 is a minute's first instant, so tests can step whole minutes.
var t0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

func TestLatencyBoundsMatchPrometheus(t *testing.T) {
	t.Parallel()
	want := prometheus.ExponentialBuckets(0.005, 2, 14)
	for i, b := range latencyBounds {
		if diff := b - want[i]; diff > 1e-12 || diff < -1e-12 {
			t.Fatalf("latencyBounds[%d] = %v, outflow_end_to_end_latency_seconds has %v", i, b, want[i])
		}
	}
}

func TestSnapshotCounts(t *testing.T) {
	t.Parallel()
	type event struct {
		at      time.Duration // after t0
		outcome Outcome
	}
	tests := []struct {
		name   string
		events []event
		now    time.Duration
		// want maps a minute index (0 oldest … 59 now) to delivered/failed/dead/parked.
		want map[int][4]int64
	}{
		{name: "nothing", now: 0, want: map[int][4]int64{}},
		{name: "one minute of each outcome",
			events: []event{{0, Delivered}, {time.Second, Delivered}, {2 * time.Second, RetryQueued},
				{3 * time.Second, Dead}, {4 * time.Second, Gone}, {5 * time.Second, Parked}},
			now:  30 * time.Second,
			want: map[int][4]int64{59: {2, 3, 1, 1}}},
		{name: "spread over minutes",
			events: []event{{0, Delivered}, {time.Minute, Delivered}, {time.Minute + time.Second, Delivered}, {3 * time.Minute, Dead}},
			now:    3 * time.Minute,
			want:   map[int][4]int64{56: {1, 0, 0, 0}, 57: {2, 0, 0, 0}, 59: {0, 1, 1, 0}}},
		{name: "older than the window is gone",
			events: []event{{0, Delivered}, {30 * time.Minute, Delivered}},
			now:    60 * time.Minute,
			want:   map[int][4]int64{29: {1, 0, 0, 0}}},
		{name: "a reused slot starts empty",
			events: []event{{0, Delivered}, {0, Delivered}, {60 * time.Minute, Dead}},
			now:    60 * time.Minute,
			want:   map[int][4]int64{59: {0, 1, 1, 0}}},
		{name: "an unknown outcome is ignored", events: []event{{0, Outcome("interrupted")}}, now: 0,
			want: map[int][4]int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := NewRecorder()
			for _, e := range tt.events {
				r.Add("sub_a", e.outcome, t0.Add(e.at))
			}
			r.Add("sub_other", Delivered, t0.Add(tt.now))
			got := r.Snapshot("sub_a", t0.Add(tt.now))
			if len(got) != 60 {
				t.Fatalf("Snapshot has %d minutes, want 60", len(got))
			}
			for i, m := range got {
				wantStart := t0.Add(tt.now).Truncate(time.Minute).Add(time.Duration(i-59) * time.Minute)
				if !m.Start.Equal(wantStart) {
					t.Fatalf("minute %d starts %v, want %v", i, m.Start, wantStart)
				}
				if c := [4]int64{m.Delivered, m.Failed, m.Dead, m.Parked}; c != tt.want[i] {
					t.Errorf("minute %d: delivered/failed/dead/parked = %v, want %v", i, c, tt.want[i])
				}
			}
		})
	}
}

func TestLatencyQuantiles(t *testing.T) {
	t.Parallel()
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	tests := []struct {
		name          string
		latencies     []time.Duration
		p50, p95, max time.Duration
		tolerance     time.Duration
	}{
		{name: "none"},
		{name: "one", latencies: []time.Duration{ms(30)}, p50: ms(30), p95: ms(30), max: ms(30), tolerance: ms(10)},
		{name: "uniform 1..100 ms", latencies: func() []time.Duration {
			var l []time.Duration
			for i := 1; i <= 100; i++ {
				l = append(l, ms(float64(i)))
			}
			return l
		}(), p50: ms(50), p95: ms(95), max: ms(100), tolerance: ms(20)},
		{name: "slower than the last bound", latencies: []time.Duration{time.Minute, 2 * time.Minute},
			p50: time.Minute, p95: 2 * time.Minute, max: 2 * time.Minute, tolerance: 80 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := NewRecorder()
			for _, l := range tt.latencies {
				r.ObserveLatency("sub_a", l, t0)
			}
			got := r.Snapshot("sub_a", t0)[59].Latency
			if got.Count != int64(len(tt.latencies)) || got.Max != tt.max {
				t.Fatalf("Latency = %+v, want count %d and max %v", got, len(tt.latencies), tt.max)
			}
			for _, q := range []struct {
				name      string
				got, want time.Duration
			}{{"p50", got.P50, tt.p50}, {"p95", got.P95, tt.p95}} {
				if d := q.got - q.want; d > tt.tolerance || d < -tt.tolerance {
					t.Errorf("%s = %v, want %v ± %v", q.name, q.got, q.want, tt.tolerance)
				}
				if q.got > got.Max {
					t.Errorf("%s = %v is above the maximum %v", q.name, q.got, got.Max)
				}
			}
			if got.P50 > got.P95 {
				t.Errorf("p50 %v > p95 %v", got.P50, got.P95)
			}
		})
	}
}

// TestIdleRingsArePruned: a subscription without events for the whole
// window costs nothing.
func TestIdleRingsArePruned(t *testing.T) {
	t.Parallel()
	r := NewRecorder()
	r.Add("sub_old", Delivered, t0)
	r.Add("sub_new", Delivered, t0.Add(61*time.Minute))
	r.mu.RLock()
	ids := make([]string, 0, len(r.rings))
	for id := range r.rings {
		ids = append(ids, id)
	}
	r.mu.RUnlock()
	if !slices.Equal(ids, []string{"sub_new"}) {
		t.Errorf("rings after an idle hour: %v, want only sub_new", ids)
	}
}

func TestNilRecorder(t *testing.T) {
	t.Parallel()
	var r *Recorder
	r.Add("sub_a", Delivered, t0)
	r.ObserveLatency("sub_a", time.Second, t0)
	if got := r.Snapshot("sub_a", t0); len(got) != 60 || got[59].Delivered != 0 {
		t.Errorf("nil Recorder Snapshot = %d minutes, last %+v", len(got), got[59])
	}
}

// TestConcurrentUse is for the race detector: recording and reading many
// subscriptions at once loses no count.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	r := NewRecorder()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				id := fmt.Sprintf("sub_%d", i%4)
				r.Add(id, Delivered, t0)
				r.ObserveLatency(id, time.Duration(g+1)*time.Millisecond, t0)
				_ = r.Snapshot(id, t0)
			}
		})
	}
	wg.Wait()
	for i := range 4 {
		m := r.Snapshot(fmt.Sprintf("sub_%d", i), t0)[59]
		if m.Delivered != 1000 || m.Latency.Count != 1000 {
			t.Errorf("sub_%d: delivered %d, latencies %d, want 1000 each", i, m.Delivered, m.Latency.Count)
		}
	}
}

// BenchmarkRecord is the cost the dispatcher pays per delivery.
func BenchmarkRecord(b *testing.B) {
	r := NewRecorder()
	ids := []string{"sub_a", "sub_b", "sub_c", "sub_d"}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			id := ids[i%len(ids)]
			r.Add(id, Delivered, t0)
			r.ObserveLatency(id, 20*time.Millisecond, t0)
			i++
		}
	})
}
