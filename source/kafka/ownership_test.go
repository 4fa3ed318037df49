package kafka

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/source"
)

// ownership records the hook's calls, in order, and fails the first
// failAssigned calls of Assigned.
type ownership struct {
	mu           sync.Mutex
	calls        []string
	assigned     []source.Assignment
	revoked      []source.Partition
	budget       time.Duration // what was left of Revoked's ctx when it was called; -1 without a deadline or when it had ended
	failAssigned int
	handled      *recorder
}

func (o *ownership) Assigned(_ context.Context, parts []source.Assignment) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.handled.count(-1) > 0 {
		o.calls = append(o.calls, "assigned after a message was handed on")
	}
	if o.failAssigned > 0 {
		o.failAssigned--
		o.calls = append(o.calls, "assigned: failed")
		return errors.New("the cursor store is unreachable")
	}
	o.calls = append(o.calls, "assigned")
	o.assigned = append(o.assigned, parts...)
	return nil
}

func (o *ownership) Revoked(ctx context.Context, parts []source.Partition) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, "revoked")
	o.revoked = append(o.revoked, parts...)
	o.budget = -1
	if deadline, ok := ctx.Deadline(); ok && ctx.Err() == nil {
		o.budget = time.Until(deadline)
	}
}

func (o *ownership) state() (calls []string, assigned []source.Assignment, revoked []source.Partition) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.calls), slices.Clone(o.assigned), slices.Clone(o.revoked)
}

// TestRunTellsOwnership: the consumer tells Config.Ownership its partitions
// before it hands on any of their messages, reads none of them while
// Assigned fails (it retries), and tells it they are given up when the
// generation ends (here at shutdown), after the last message, with what is
// left of the drain's budget for its own wait.
func TestRunTellsOwnership(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.NewTopic(t, 2)
	produce(t, brokers, topic, 0, 0, 5)
	produce(t, brokers, topic, 1, 0, 5)
	cfg := testConfig(t, brokers, topic, newGroup())
	rec := newRecorder(func(m *source.Message) { m.Done() })
	own := &ownership{failAssigned: 2, handled: rec}
	cfg.Ownership = own
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, s, rec.handle)
	waitUntil(t, waitTimeout, "every record", func() bool { return rec.count(-1) == 10 })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	calls, assigned, revoked := own.state()
	if want := []string{"assigned: failed", "assigned: failed", "assigned", "revoked"}; !slices.Equal(calls, want) {
		t.Errorf("calls %q, want %q", calls, want)
	}
	want := []source.Partition{{Stream: topic, ID: 0}, {Stream: topic, ID: 1}}
	// A new group reads from the start (StartEarliest): offset 0.
	if wantAssigned := []source.Assignment{{Partition: want[0], Next: 0}, {Partition: want[1], Next: 0}}; !slices.Equal(assigned, wantAssigned) {
		t.Errorf("assigned %v; want %v", assigned, wantAssigned)
	}
	if !slices.Equal(revoked, want) {
		t.Errorf("revoked %v; want %v", revoked, want)
	}
	own.mu.Lock()
	budget := own.budget
	own.mu.Unlock()
	if budget <= 0 || budget > cfg.DrainTimeout {
		t.Errorf("Revoked's ctx had %v left; want the rest of the drain's %v (nothing was in flight)", budget, cfg.DrainTimeout)
	}
}
