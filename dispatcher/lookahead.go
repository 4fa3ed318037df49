package dispatcher

import (
	"context"

	"github.com/outflow-dev/outflow/enrich"
)

// prefetch is an enrichment started ahead of its event's attempt.
type prefetch struct {
	done chan struct{} // closed when res and err are set
	res  *enrich.Result
	err  error
}

// wait returns the enrichment's result, or ctx's error if ctx ends first.
func (p *prefetch) wait(ctx context.Context) (*enrich.Result, error) {
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// lookAhead is called by the sender serving l with j, the job it took: when
// j is enriched and l has another job queued, it moves that job to l.head
// and starts reading its vector. A job that reaches a lane being served
// with nothing queued has its vector read at once by the consumer (see
// target.send): either way the lane's next vector is read while its sender
// is busy, in a backlog as in a steady stream.
//
// Without it a lane would wait for the feature store and the receiver in
// turn, and an enriched subscription would deliver at about half the pace
// of a plain one with the same max_in_flight. The head is still the lane's
// next job (serve takes it before the queue), so a lane's jobs keep their
// order, and a lane has about one read under way ahead of its sender: the
// look-ahead at most doubles a subscription's concurrent feature-store
// reads (max_in_flight ahead, max_in_flight in attempts) and costs one
// goroutine per lane with work.
//
// The vector is read at most one attempt before its event is delivered; a
// consistent vector stays consistent (it holds the record's write), so
// STRICT's guarantee is unchanged. A subscription with a rate limit does
// not look ahead: its next event may be seconds away, and its vector would
// be as old. Only a first attempt uses a vector read ahead; a retry reads
// again.
func (d *Dispatcher) lookAhead(l *lane, j *job) {
	if l.head != nil || !d.readsAhead(l.t, j) {
		return
	}
	select {
	case next := <-l.q:
		l.head = next
		d.readAhead(l.t, next)
	default:
	}
}

// readsAhead reports whether j's subscription reads vectors ahead.
func (d *Dispatcher) readsAhead(t *target, j *job) bool {
	return d.enricher != nil && j.sub.Proto.GetEnrichment() != nil && d.lanesCtx.Err() == nil && t.rateLimiter() == nil
}

// readAhead starts reading j's vector, unless it is under way already or
// j's subscription does not read ahead. It must be called before j is
// handed to its sender (j.pre is not guarded).
func (d *Dispatcher) readAhead(t *target, j *job) {
	if j.pre != nil || !d.readsAhead(t, j) {
		return
	}
	e := j.sub.Proto.GetEnrichment()
	p := &prefetch{done: make(chan struct{})}
	j.pre = p
	d.prefetches.Go(func() {
		defer close(p.done)
		ctx, span := d.tracing.start(withParent(d.lanesCtx, j.trace), "outflow.enrich")
		p.res, p.err = d.enricher.Enrich(ctx, j.rec, e)
		endSpan(span, p.err)
	})
}
