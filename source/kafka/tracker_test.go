package kafka

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// step is one operation on a tracker in a table test: hand out offset add
// (when done < 0), or mark the done-th handed-out message Done; want is the
// safe offset expected afterwards.
type step struct {
	add  int64
	done int
	want int64
}

func handOut(offset, want int64) step { return step{add: offset, done: -1, want: want} }
func complete(i int, want int64) step { return step{done: i, want: want} }

func TestTrackerSafeOffset(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		start int64
		steps []step
	}{
		{
			name:  "nothing handed out: the start offset",
			start: 42,
			steps: nil,
		},
		{
			name:  "in order",
			start: 0,
			steps: []step{
				handOut(0, 0), handOut(1, 0), handOut(2, 0),
				complete(0, 1), complete(1, 2), complete(2, 3),
			},
		},
		{
			name:  "out of order: held at the oldest not done",
			start: 10,
			steps: []step{
				handOut(10, 10), handOut(11, 10), handOut(12, 10), handOut(13, 10),
				complete(2, 10), complete(3, 10), complete(1, 10), complete(0, 14),
			},
		},
		{
			name:  "one message never done holds the commit",
			start: 0,
			steps: []step{
				handOut(0, 0), handOut(1, 0), handOut(2, 0), handOut(3, 0), handOut(4, 0), handOut(5, 0), handOut(6, 0),
				complete(0, 1), complete(1, 2), complete(2, 3), complete(3, 4), complete(4, 5), complete(6, 5),
			},
		},
		{
			name:  "gaps in offsets (compaction, transaction markers)",
			start: 5,
			steps: []step{
				handOut(5, 5), handOut(9, 5), handOut(20, 5),
				complete(0, 9), complete(2, 9), complete(1, 21),
			},
		},
		{
			name:  "first offset after the start (retention deleted the head)",
			start: 3,
			steps: []step{
				handOut(100, 100), handOut(101, 100), complete(0, 101), complete(1, 102),
			},
		},
		{
			name:  "unknown start: unknown until the first message",
			start: -1,
			steps: []step{handOut(7, 7), complete(0, 8)},
		},
		{
			name:  "done twice counts once",
			start: 0,
			steps: []step{handOut(0, 0), handOut(1, 0), complete(1, 0), complete(1, 0), complete(0, 2)},
		},
		{
			name:  "duplicate or older offset is refused",
			start: 0,
			steps: []step{handOut(0, 0), handOut(1, 0), handOut(1, 0), handOut(0, 0), complete(0, 1), complete(1, 2)},
		},
		{
			name:  "ring grows past its initial size while the head is stuck",
			start: 0,
			steps: func() []step {
				var s []step
				for o := int64(0); o < 3*minTrackerRing; o++ {
					s = append(s, handOut(o, 0))
				}
				for i := 1; i < 3*minTrackerRing; i++ {
					s = append(s, complete(i, 0))
				}
				return append(s, complete(0, 3*minTrackerRing))
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := newTracker(tt.start, 1<<20, 1<<20)
			if got := tr.safe(); got != tt.start {
				t.Fatalf("initial safe() = %d, want %d", got, tt.start)
			}
			var seqs []uint64
			for i, s := range tt.steps {
				if s.done < 0 {
					if seq, ok := tr.add(s.add); ok {
						seqs = append(seqs, seq)
					}
				} else {
					tr.markDone(seqs[s.done])
				}
				if got := tr.safe(); got != s.want {
					t.Fatalf("step %d (%+v): safe() = %d, want %d", i, s, got, s.want)
				}
			}
		})
	}
}

func TestTrackerRevokedIgnoresDone(t *testing.T) {
	t.Parallel()
	tr := newTracker(0, 10, 10)
	seq, _ := tr.add(0)
	tr.revoke()
	tr.markDone(seq)
	if got := tr.safe(); got != 0 {
		t.Fatalf("safe() after Done on a revoked tracker = %d, want 0", got)
	}
}

func TestTrackerCapacity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                 string
		maxInFlight, maxSpan int
		// hand out n messages, then complete those listed
		n        int
		complete []int
		wantRoom bool
	}{
		{name: "below the in-flight bound", maxInFlight: 3, maxSpan: 10, n: 2, wantRoom: true},
		{name: "at the in-flight bound", maxInFlight: 3, maxSpan: 10, n: 3, wantRoom: false},
		{name: "a Done frees room", maxInFlight: 3, maxSpan: 10, n: 3, complete: []int{1}, wantRoom: true},
		{name: "at the span bound although few are in flight", maxInFlight: 3, maxSpan: 5, n: 5, complete: []int{1, 2, 3}, wantRoom: false},
		{name: "completing the head frees the span", maxInFlight: 3, maxSpan: 5, n: 5, complete: []int{1, 2, 3, 0}, wantRoom: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := newTracker(0, tt.maxInFlight, tt.maxSpan)
			var seqs []uint64
			for o := range tt.n {
				seq, _ := tr.add(int64(o))
				seqs = append(seqs, seq)
			}
			for _, i := range tt.complete {
				tr.markDone(seqs[i])
			}
			tr.mu.Lock()
			room := tr.hasCapacity()
			tr.mu.Unlock()
			if room != tt.wantRoom {
				t.Fatalf("hasCapacity() = %t, want %t", room, tt.wantRoom)
			}
		})
	}
}

// TestTrackerConcurrentDone hands out messages from one goroutine, bounded
// by waitCapacity, while many goroutines complete them in random order, as
// the dispatcher's workers do. Under -race it checks the locking; it also
// checks the bound is never exceeded and the final safe offset.
func TestTrackerConcurrentDone(t *testing.T) {
	t.Parallel()
	const (
		n           = 50_000
		maxInFlight = 256
		workers     = 8
	)
	tr := newTracker(1000, maxInFlight, 4*maxInFlight)
	work := make(chan uint64, maxInFlight)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			// Each worker holds a few messages and completes a random one
			// whenever it has no new work, so Done order differs from
			// hand-out order, and no message is held forever.
			var held []uint64
			completeOne := func() {
				i := rng.IntN(len(held))
				tr.markDone(held[i])
				held[i] = held[len(held)-1]
				held = held[:len(held)-1]
			}
			for {
				var seq uint64
				var ok bool
				select {
				case seq, ok = <-work:
				default:
					if len(held) > 0 {
						completeOne()
						continue
					}
					seq, ok = <-work
				}
				if !ok {
					for len(held) > 0 {
						completeOne()
					}
					return
				}
				held = append(held, seq)
			}
		})
	}
	ctx := t.Context()
	for o := int64(1000); o < 1000+n; o++ {
		if err := tr.waitCapacity(ctx); err != nil {
			t.Fatal(err)
		}
		seq, ok := tr.add(o)
		if !ok {
			t.Fatalf("add(%d) refused", o)
		}
		if f, _ := tr.stats(); f > maxInFlight {
			t.Fatalf("%d messages in flight, bound is %d", f, maxInFlight)
		}
		work <- seq
	}
	close(work)
	wg.Wait()
	select {
	case <-tr.idle():
	default:
		t.Fatal("idle() not closed after every message was Done")
	}
	if got, want := tr.safe(), int64(1000+n); got != want {
		t.Fatalf("safe() = %d, want %d", got, want)
	}
}

// TestTrackerWaitCapacity checks the reader parks once at the bound, wakes
// on Done, and gives up when its context ends.
func TestTrackerWaitCapacity(t *testing.T) {
	t.Parallel()
	tr := newTracker(0, 2, 10)
	s0, _ := tr.add(0)
	tr.add(1)

	woke := make(chan error, 1)
	go func() { woke <- tr.waitCapacity(t.Context()) }()
	waitUntil(t, 5*time.Second, "the reader to park", func() bool {
		_, parks := tr.stats()
		return parks == 1
	})
	select {
	case err := <-woke:
		t.Fatalf("waitCapacity returned %v while at the bound", err)
	default:
	}
	tr.markDone(s0)
	if err := <-woke; err != nil {
		t.Fatalf("waitCapacity after Done = %v, want nil", err)
	}

	tr.add(2)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { woke <- tr.waitCapacity(ctx) }()
	waitUntil(t, 5*time.Second, "the reader to park again", func() bool {
		_, parks := tr.stats()
		return parks == 2
	})
	cancel()
	if err := <-woke; err == nil {
		t.Fatal("waitCapacity after cancel = nil, want the context's error")
	}
}

// FuzzTracker drives a tracker with an arbitrary interleaving of hand-outs
// (with arbitrary gaps between offsets) and Done calls in arbitrary order,
// and checks after every operation that:
//   - safe() is the offset of the oldest handed-out message not Done, or the
//     offset after the newest when all are Done (the reference model);
//   - safe() never decreases;
//   - the in-flight count matches the model.
func FuzzTracker(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 2, 3})
	f.Add([]byte{0, 3, 0, 0, 9, 9, 9, 1, 1})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 100, 50, 25, 12, 6, 3, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const start = 100
		tr := newTracker(start, len(ops)+1, len(ops)+1)
		type msg struct {
			offset int64
			seq    uint64
			done   bool
		}
		if len(ops) > 4096 {
			ops = ops[:4096]
		}
		var msgs []msg
		oldest := 0
		next := int64(start)
		last := tr.safe()
		for i, op := range ops {
			if op%3 == 0 || len(msgs) == 0 {
				next += int64(op % 5) // a gap of 0-4 offsets
				seq, ok := tr.add(next)
				if !ok {
					t.Fatalf("op %d: add(%d) refused", i, next)
				}
				msgs = append(msgs, msg{offset: next, seq: seq})
				next++
			} else {
				m := &msgs[int(op)%len(msgs)]
				tr.markDone(m.seq)
				m.done = true
			}
			// The model: the first message not done, found by a cursor that
			// only moves forward over done messages.
			for oldest < len(msgs) && msgs[oldest].done {
				oldest++
			}
			want := next
			if oldest < len(msgs) {
				want = msgs[oldest].offset
			}
			inFlight := 0
			for _, m := range msgs[oldest:] {
				if !m.done {
					inFlight++
				}
			}
			got := tr.safe()
			if got != want {
				t.Fatalf("op %d: safe() = %d, want %d (oldest not done)", i, got, want)
			}
			if got < last {
				t.Fatalf("op %d: safe() went back from %d to %d", i, last, got)
			}
			last = got
			if f, _ := tr.stats(); f != inFlight {
				t.Fatalf("op %d: %d in flight, want %d", i, f, inFlight)
			}
		}
	})
}

// BenchmarkTrackerDone measures the per-message cost of the tracker on the
// hot path: one add by the reader and one Done by the dispatcher.
func BenchmarkTrackerDone(b *testing.B) {
	b.Run("in-order", func(b *testing.B) {
		tr := newTracker(0, 1<<20, 1<<20)
		b.ReportAllocs()
		for i := range b.N {
			seq, _ := tr.add(int64(i))
			tr.markDone(seq)
		}
	})
	b.Run("reverse-window-1024", func(b *testing.B) {
		// Done arrives in reverse within windows of 1024 messages: the head
		// is retired only at the end of each window, the worst case for the
		// retire loop.
		const window = 1024
		tr := newTracker(0, 1<<20, 1<<20)
		seqs := make([]uint64, 0, window)
		b.ReportAllocs()
		for i := range b.N {
			seq, _ := tr.add(int64(i))
			seqs = append(seqs, seq)
			if len(seqs) == window {
				for j := len(seqs) - 1; j >= 0; j-- {
					tr.markDone(seqs[j])
				}
				seqs = seqs[:0]
			}
		}
	})
	b.Run("parallel-done", func(b *testing.B) {
		// Done from GOMAXPROCS goroutines at once on one partition's
		// tracker: the contended case.
		tr := newTracker(0, b.N+1, b.N+1)
		seqs := make(chan uint64, b.N)
		for i := range b.N {
			seq, _ := tr.add(int64(i))
			seqs <- seq
		}
		close(seqs)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				tr.markDone(<-seqs)
			}
		})
		b.StopTimer()
		if got := tr.safe(); got != int64(b.N) {
			b.Fatalf("safe() = %d, want %d", got, b.N)
		}
	})
}

// waitUntil polls cond every 10ms until it holds, failing the test after
// timeout with what it was waiting for.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
