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
// and starts its enrichment.
//
// Without it a lane would wait for the feature store and the receiver in
// turn, and an enriched subscription would deliver at about half the pace
// of a plain one with the same max_in_flight. The head is still the lane's
// next job (serve takes it before the queue), so a lane's jobs keep their
// order, and each lane has at most one enrichment under way ahead of its
// sender: the look-ahead at most doubles a subscription's concurrent
// feature-store reads (max_in_flight ahead, max_in_flight in attempts) and
// costs one goroutine per lane with work.
//
// The vector is read at most one attempt before its event is delivered; a
// consistent vector stays consistent (it holds the record's write), so
// STRICT's guarantee is unchanged. A subscription with a rate limit does
// not look ahead: its next event may be seconds away, and its vector would
// be as old. Only a first attempt uses a vector read ahead; a retry reads
// again.
func (d *Dispatcher) lookAhead(l *lane, j *job) {
	if l.head != nil || d.enricher == nil || j.sub.Proto.GetEnrichment() == nil ||
		d.lanesCtx.Err() != nil || l.t.rateLimiter() != nil {
		return
	}
	var next *job
	select {
	case next = <-l.q:
	default:
		return
	}
	l.head = next
	e := next.sub.Proto.GetEnrichment()
	if e == nil {
		return // the subscription was updated; its attempt reads nothing
	}
	p := &prefetch{done: make(chan struct{})}
	next.pre = p
	d.prefetches.Go(func() {
		defer close(p.done)
		ctx, span := d.tracing.start(withParent(d.lanesCtx, next.trace), "outflow.enrich")
		p.res, p.err = d.enricher.Enrich(ctx, next.rec, e)
		endSpan(span, p.err)
	})
}
