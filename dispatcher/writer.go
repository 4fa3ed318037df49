package dispatcher

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/outflow-dev/outflow/store"
)

// write is one durable write to PostgreSQL: a parked or failed delivery, a
// poison record.
type write struct {
	// what names the write in logs ("queueing a delivery").
	what string
	// attempts bounds the tries; 0 retries until the write succeeds or the
	// dispatcher stops.
	attempts int
	fn       func(context.Context) error
	// done hears the outcome: nil once the write is confirmed, else the last
	// error. It runs on the writer goroutine and must not block.
	done func(error)
	// delivery, when set, makes the write batchable: fn is not used, and the
	// writer stores it together with other queued deliveries in one round
	// trip (requeue: as a replayed event, see store.Store.RequeueDelivery).
	delivery *store.Delivery
	requeue  bool
}

// maxWriteBatch bounds the deliveries one writer stores in one round trip.
const maxWriteBatch = 128

// writers are the fixed set of goroutines that make every write of the
// delivery path. A fixed set, rather than a goroutine per event, bounds what
// an outage of PostgreSQL costs: at most Writers connections retrying, at
// most WriteQueue writes waiting, and a caller that finds the queue full
// waits (submit blocks), which is how the consumer is held back while the
// database cannot confirm writes. Nothing is acknowledged before its write
// is confirmed, so the commit rule (SPEC §5) holds whatever the database
// does.
type writers struct {
	in    chan write
	log   *limitedLog
	batch func(ctx context.Context, ds []*store.Delivery, requeue []bool) error
	// retrying ends the retry loops: after it, each write is tried once.
	retrying context.Context
	// abort ends every write at once (a Stop that ran out of time).
	abortCtx context.Context
	abort    context.CancelFunc

	mu        sync.RWMutex
	closed    bool          // guarded by mu
	closing   chan struct{} // closed when close starts, to free blocked submitters
	closeOnce sync.Once
	wg        sync.WaitGroup
	// pending counts writes queued or under way, for tests and metrics.
	pending atomic.Int64
}

// newWriters starts n writers with a queue of size q. retrying ends their
// retry loops (the dispatcher's lanes context).
func newWriters(n, q int, retrying context.Context, log *limitedLog,
	batch func(ctx context.Context, ds []*store.Delivery, requeue []bool) error) *writers {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writers{in: make(chan write, q), log: log, batch: batch, retrying: retrying, abortCtx: ctx, abort: cancel,
		closing: make(chan struct{})}
	w.wg.Add(n)
	for range n {
		go w.run()
	}
	return w
}

// submit queues wr, waiting while the queue is full, and reports whether it
// was queued: false when ctx ended first or the writers are closed (then
// wr.done is never called: the caller's event stays unsettled, so its
// message is read again).
func (w *writers) submit(ctx context.Context, wr write) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return false
	}
	w.pending.Add(1)
	select {
	case w.in <- wr:
		return true
	default:
	}
	select {
	case w.in <- wr:
		return true
	case <-ctx.Done():
	case <-w.closing:
	}
	w.pending.Add(-1)
	return false
}

// close stops taking writes; the writers finish what is queued. It is
// idempotent.
func (w *writers) close() {
	w.closeOnce.Do(func() {
		close(w.closing)
		w.mu.Lock()
		w.closed = true
		close(w.in)
		w.mu.Unlock()
	})
}

// wait returns once every writer has exited (after close).
func (w *writers) wait() { w.wg.Wait() }

func (w *writers) run() {
	defer w.wg.Done()
	var next *write // taken from the queue while batching, not batchable
	for {
		var wr write
		if next != nil {
			wr, next = *next, nil
		} else {
			var ok bool
			if wr, ok = <-w.in; !ok {
				return
			}
		}
		if wr.delivery == nil {
			err := w.do(wr)
			w.pending.Add(-1)
			wr.done(err)
			continue
		}
		// Take the deliveries queued behind this one, without waiting.
		group := []write{wr}
	more:
		for len(group) < maxWriteBatch {
			select {
			case o, ok := <-w.in:
				if !ok {
					break more
				}
				if o.delivery == nil {
					next = &o
					break more
				}
				group = append(group, o)
			default:
				break more
			}
		}
		ds, requeue := make([]*store.Delivery, len(group)), make([]bool, len(group))
		for i, g := range group {
			ds[i], requeue[i] = g.delivery, g.requeue
		}
		err := w.do(write{what: "queueing deliveries", fn: func(ctx context.Context) error { return w.batch(ctx, ds, requeue) }})
		w.pending.Add(-int64(len(group)))
		for _, g := range group {
			g.done(err)
		}
	}
}

// do runs wr until it succeeds, its attempts are spent, or the retry loops
// end, backing off from 100ms to 5s between failures. Failures are logged
// at a bounded rate: an outage of the database must not flood the logs.
func (w *writers) do(wr write) error {
	backoff := 100 * time.Millisecond
	for n := 1; ; n++ {
		ctx, cancel := context.WithTimeout(w.abortCtx, 10*time.Second)
		err := wr.fn(ctx)
		cancel()
		if err == nil || (wr.attempts > 0 && n >= wr.attempts) || w.abortCtx.Err() != nil {
			return err
		}
		w.log.warn(context.Background(), wr.what+" failed; retrying", slog.Any("error", err))
		select {
		case <-w.retrying.Done():
			return err
		case <-w.abortCtx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// limitedLog logs warnings at a bounded rate and says how many it dropped,
// so that a failure repeated per event (a database outage) costs a few
// lines, not one per event.
type limitedLog struct {
	l       *slog.Logger
	lim     *rate.Limiter
	dropped atomic.Int64
}

// newLimitedLog allows a burst of 5 lines, then one a second: a 20 s outage
// logs at most 25 lines per limitedLog.
func newLimitedLog(l *slog.Logger) *limitedLog {
	return &limitedLog{l: l, lim: rate.NewLimiter(rate.Every(time.Second), 5)}
}

func (ll *limitedLog) warn(ctx context.Context, msg string, attrs ...slog.Attr) {
	if !ll.lim.Allow() {
		ll.dropped.Add(1)
		return
	}
	if n := ll.dropped.Swap(0); n > 0 {
		attrs = append(attrs, slog.Int64("suppressed_since_last", n))
	}
	ll.l.LogAttrs(ctx, slog.LevelWarn, msg, attrs...)
}
