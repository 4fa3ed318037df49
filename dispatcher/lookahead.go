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
// j is enriched, it moves l's next queued jobs into l.head, up to
// Config.ReadAhead, and starts reading the vectors not yet being read. A
// job that reaches a lane being served with fewer than ReadAhead vectors
// read ahead has its vector read at once by the consumer (see
// target.send): either way a lane's next vectors are read while its sender
// is busy, in a backlog as in a steady stream.
//
// Without it a lane would wait for the feature store and the receiver in
// turn: an enriched subscription delivered at about half the pace of a
// plain one with the same max_in_flight on loopback, and at one event per
// feature-store round trip per lane with a store across a network. The
// head is still the lane's next jobs (serve takes them before the queue),
// so a lane's jobs keep their order; a subscription has at most
// max_in_flight × (ReadAhead + 1) vectors being read, and a lane one
// goroutine per vector read ahead.
//
// A vector is read at most ReadAhead attempts before its event is
// delivered; a consistent vector stays consistent (it holds the record's
// write), so STRICT's guarantee is unchanged. A subscription with a rate
// limit does not read ahead: its next events may be seconds away, and their
// vectors would be as old. Only a first attempt uses a vector read ahead; a
// retry reads again.
func (d *Dispatcher) lookAhead(l *lane, j *job) {
	if !d.readsAhead(l.t, j) {
		return
	}
	for len(l.head) < d.cfg.ReadAhead && l.ahead.Load() < int32(d.cfg.ReadAhead) {
		select {
		case next := <-l.q:
			l.t.queued.Add(-1)
			l.head = append(l.head, next)
			d.readAhead(l, next)
		default:
			return
		}
	}
}

// readsAhead reports whether j's subscription reads vectors ahead.
func (d *Dispatcher) readsAhead(t *target, j *job) bool {
	return d.cfg.ReadAhead > 0 && d.enricher != nil && j.sub.Proto.GetEnrichment() != nil && d.lanesCtx.Err() == nil && t.rateLimiter() == nil
}

// readAhead starts reading the vector of j, a job of l, and counts it in
// l.ahead, unless it is under way already or j's subscription does not read
// ahead; it reports whether it started one. It must be called before j is
// handed to its sender, or by that sender (j.pre is not guarded).
func (d *Dispatcher) readAhead(l *lane, j *job) bool {
	if j.pre != nil || !d.readsAhead(l.t, j) {
		return false
	}
	l.ahead.Add(1)
	e := j.sub.Proto.GetEnrichment()
	p := &prefetch{done: make(chan struct{})}
	j.pre = p
	d.prefetches.Go(func() {
		defer close(p.done)
		ctx, span := d.tracing.start(withParent(d.lanesCtx, j.trace), "outflow.enrich")
		p.res, p.err = d.enricher.Enrich(ctx, j.rec, e)
		endSpan(span, p.err)
	})
	return true
}
