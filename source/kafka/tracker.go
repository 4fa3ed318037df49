package kafka

import (
	"context"
	"math/bits"
	"sync"
)

// maxTrackerSpan is the largest MaxUncommittedPerPartition: the tracker's
// ring is a power of two no larger than this.
const maxTrackerSpan = 1 << 30

// minTrackerRing is the tracker's initial ring size; the ring doubles as the
// span of uncommitted messages grows.
const minTrackerRing = 64

// closedChan is returned by tracker.idle when nothing is in flight.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// tracker keeps, for one partition in one generation, the offsets handed to
// the handler and which of them are Done, and from that the safe commit
// offset: the offset of the oldest handed-out message not yet Done, or, when
// all are Done, the offset after the newest one. Kafka commits "the next
// offset to read", so committing the safe offset re-reads exactly the
// messages not known to be handled (at-least-once) and never skips one.
//
// Messages get consecutive sequence numbers as they are handed out; a ring
// indexed by sequence number keeps each message's offset (offsets need not
// be consecutive: compaction and transaction markers leave gaps) and whether
// it is Done. head is the oldest sequence number not yet retired; Done of the
// head message retires it and every Done message after it. Each message is
// retired once, so Done costs O(1) amortised, whatever the completion order.
//
// add is called by the partition's reading goroutine; done may be called
// from any goroutine, concurrently. One mutex guards everything: the
// critical sections are a few loads and stores.
type tracker struct {
	mu sync.Mutex
	// offsets and done form the ring; len is a power of two, mask = len-1.
	offsets []int64
	done    []bool
	mask    uint64
	// head is the oldest unretired sequence number, tail the next to assign.
	head, tail uint64
	// next is the offset after the newest handed-out message, or the
	// starting offset before any; -1 while unknown (the reader resolves a
	// start of "earliest" itself).
	next int64
	// inFlight counts handed-out messages not yet Done.
	inFlight int
	// maxInFlight and maxSpan bound inFlight and tail-head for waitCapacity.
	maxInFlight, maxSpan int
	// revoked is set when the generation ended and the final commit was
	// taken: later Done calls change nothing.
	revoked bool
	// waiting is set while the reader is parked in waitCapacity; wake (cap
	// 1) is how done un-parks it.
	waiting bool
	wake    chan struct{}
	// idleCh, when not nil, is closed when inFlight drops to zero.
	idleCh chan struct{}
	// parks counts how often the reader parked at the bound, for tests
	// proving it waits rather than spins.
	parks int
}

// newTracker returns a tracker whose safe offset is start (-1: unknown until
// the first message) and which lets the reader hand out at most maxInFlight
// not-Done messages and at most maxSpan messages since the oldest not-Done.
func newTracker(start int64, maxInFlight, maxSpan int) *tracker {
	size := min(minTrackerRing, ceilPow2(maxSpan))
	return &tracker{
		offsets:     make([]int64, size),
		done:        make([]bool, size),
		mask:        uint64(size - 1),
		next:        start,
		maxInFlight: maxInFlight,
		maxSpan:     maxSpan,
		wake:        make(chan struct{}, 1),
	}
}

// ceilPow2 returns the smallest power of two >= n (n >= 1).
func ceilPow2(n int) int {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(n-1))
}

// add records that the message at offset is being handed out and returns its
// sequence number for done. ok is false, and nothing is recorded, when offset
// is below the safe offset's floor (the start, or the offset after the
// previous message): such a message was already handed out, or lies before
// the committed offset, and must not be delivered again out of order.
func (t *tracker) add(offset int64) (seq uint64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.next >= 0 && offset < t.next {
		return 0, false
	}
	if t.tail-t.head == uint64(len(t.offsets)) {
		t.grow()
	}
	seq = t.tail
	t.offsets[seq&t.mask] = offset
	t.done[seq&t.mask] = false
	t.tail++
	t.next = offset + 1
	t.inFlight++
	return seq, true
}

// grow doubles the ring, keeping every live entry at its sequence number's
// new index.
func (t *tracker) grow() {
	size := 2 * len(t.offsets)
	offsets, done := make([]int64, size), make([]bool, size)
	mask := uint64(size - 1)
	for s := t.head; s < t.tail; s++ {
		offsets[s&mask] = t.offsets[s&t.mask]
		done[s&mask] = t.done[s&t.mask]
	}
	t.offsets, t.done, t.mask = offsets, done, mask
}

// markDone records that message seq is fully handled. Calls for a revoked
// tracker, an unknown sequence number, or a message already Done change
// nothing.
func (t *tracker) markDone(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.revoked || seq < t.head || seq >= t.tail || t.done[seq&t.mask] {
		return
	}
	t.done[seq&t.mask] = true
	t.inFlight--
	for t.head < t.tail && t.done[t.head&t.mask] {
		t.head++
	}
	if t.waiting && t.hasCapacity() {
		t.waiting = false
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
	if t.inFlight == 0 && t.idleCh != nil {
		close(t.idleCh)
		t.idleCh = nil
	}
}

// hasCapacity reports whether another message may be handed out. Callers
// hold mu.
func (t *tracker) hasCapacity() bool {
	return t.inFlight < t.maxInFlight && t.tail-t.head < uint64(t.maxSpan)
}

// waitCapacity blocks until another message may be handed out, or ctx ends.
// It parks on a channel that markDone signals: a partition at its bound
// costs no CPU.
func (t *tracker) waitCapacity(ctx context.Context) error {
	for {
		t.mu.Lock()
		if t.hasCapacity() {
			t.mu.Unlock()
			return nil
		}
		t.waiting = true
		t.parks++
		t.mu.Unlock()
		select {
		case <-t.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// safe returns the offset it is safe to commit: the oldest handed-out
// message not yet Done, or the offset after the newest handed-out message
// when all are Done (the start offset before any). It returns -1 while the
// start is unknown and nothing was handed out.
func (t *tracker) safe() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head < t.tail {
		return t.offsets[t.head&t.mask]
	}
	return t.next
}

// idle returns a channel closed once no message is in flight.
func (t *tracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.inFlight == 0 {
		return closedChan
	}
	if t.idleCh == nil {
		t.idleCh = make(chan struct{})
	}
	return t.idleCh
}

// revoke makes later Done calls no-ops: the generation's final commit has
// been taken, and the partition may already belong to another member, which
// will redeliver the messages that were still in flight.
func (t *tracker) revoke() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.revoked = true
}

// stats returns the number of messages in flight and how often the reader
// parked at the bound.
func (t *tracker) stats() (inFlight, parks int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inFlight, t.parks
}
