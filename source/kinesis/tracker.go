package kinesis

import (
	"context"
	"sync"
)

// tracker keeps, for one shard read, the sequence numbers handed to the
// handler in order and which are Done, and from that the checkpoint: the
// sequence number of the newest record that, with every record before it,
// is Done. Records get consecutive indexes; entries are kept from the oldest
// not-Done one on, so memory is bounded by MaxInFlightPerShard plus the Done
// records behind a slow one.
type tracker struct {
	mu sync.Mutex
	// seqs and done hold the records from index base on.
	seqs []string
	done []bool
	base uint64
	// safe is the checkpoint; "" while nothing is Done.
	safe     string
	inFlight int
	max      int
	// wake (cap 1) un-parks the reader waiting for capacity or for the
	// tracker to drain.
	wake chan struct{}
}

func newTracker(checkpoint string, maxInFlight int) *tracker {
	return &tracker{safe: checkpoint, max: maxInFlight, wake: make(chan struct{}, 1)}
}

// add records a record handed out and returns its index.
func (t *tracker) add(seq string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seqs = append(t.seqs, seq)
	t.done = append(t.done, false)
	t.inFlight++
	return t.base + uint64(len(t.seqs)-1)
}

// markDone marks record i Done and moves the checkpoint over every Done
// record at the front.
func (t *tracker) markDone(i uint64) {
	t.mu.Lock()
	t.done[i-t.base] = true
	t.inFlight--
	n := 0
	for n < len(t.done) && t.done[n] {
		n++
	}
	if n > 0 {
		t.safe = t.seqs[n-1]
		t.seqs = t.seqs[n:]
		t.done = t.done[n:]
		t.base += uint64(n)
	}
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// checkpoint returns the sequence number reading may resume after, and how
// many records are in flight.
func (t *tracker) checkpoint() (string, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.safe, t.inFlight
}

// waitCapacity waits until fewer than max records are in flight; it returns
// ctx's error when ctx ends first.
func (t *tracker) waitCapacity(ctx context.Context) error {
	return t.waitUntil(ctx, func() bool { return t.inFlight < t.max })
}

// waitIdle waits until no record is in flight.
func (t *tracker) waitIdle(ctx context.Context) error {
	return t.waitUntil(ctx, func() bool { return t.inFlight == 0 })
}

func (t *tracker) waitUntil(ctx context.Context, cond func() bool) error {
	for {
		t.mu.Lock()
		ok := cond()
		t.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-t.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
