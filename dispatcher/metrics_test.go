package dispatcher

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// TestMetricsCountPerSubscription: each delivery outcome reaches both
// outflow_deliveries_total and the subscription's statistics, and only
// hot-path deliveries with an append time have a latency.
func TestMetricsCountPerSubscription(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 4, 10, 0, 30, 0, time.UTC)
	tests := []struct {
		outcome                         string
		delivered, failed, dead, parked int64
	}{
		{"delivered", 1, 0, 0, 0},
		{"retry_queued", 0, 1, 0, 0},
		{"dead", 0, 1, 1, 0},
		{"gone", 0, 1, 0, 0},
		{"parked", 0, 0, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.outcome, func(t *testing.T) {
			t.Parallel()
			m := NewMetrics(nil)
			m.delivery("sub_a", tt.outcome, now)
			var c dto.Metric
			if err := m.deliveries.WithLabelValues(tt.outcome).Write(&c); err != nil {
				t.Fatal(err)
			}
			if got := c.GetCounter().GetValue(); got != 1 {
				t.Errorf("outflow_deliveries_total{outcome=%q} = %v, want 1", tt.outcome, got)
			}
			got := m.Stats().Snapshot("sub_a", now)[59]
			if got.Delivered != tt.delivered || got.Failed != tt.failed || got.Dead != tt.dead || got.Parked != tt.parked {
				t.Errorf("stats = %+v, want delivered %d failed %d dead %d parked %d", got, tt.delivered, tt.failed, tt.dead, tt.parked)
			}
			if other := m.Stats().Snapshot("sub_b", now)[59]; other.Delivered+other.Failed+other.Parked != 0 {
				t.Errorf("another subscription's stats = %+v, want none", other)
			}
		})
	}

	m := NewMetrics(nil)
	m.observeLatency("sub_a", now.Add(-40*time.Millisecond), now)
	m.observeLatency("sub_a", time.Time{}, now) // no append time: not observed
	if got := m.Stats().Snapshot("sub_a", now)[59].Latency; got.Count != 1 || got.Max != 40*time.Millisecond {
		t.Errorf("latency = %+v, want one observation of 40ms", got)
	}
	var h dto.Metric
	if err := m.latency.Write(&h); err != nil {
		t.Fatal(err)
	}
	if got := h.GetHistogram().GetSampleCount(); got != 1 {
		t.Errorf("outflow_end_to_end_latency_seconds has %d observations, want 1", got)
	}
}
