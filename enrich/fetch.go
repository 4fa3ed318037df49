package enrich

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outflow-dev/outflow/tecton"
)

// Operation names passed to Observer.ObserveCall.
const (
	opGetFeatures      = "get-features"
	opGetFeaturesBatch = "get-features-batch"
)

// errDeadline is what fetch returns when the caller's consistency deadline passed while it was
// waiting for a call. It never leaves the package: Enrich turns it into a timeout outcome.
var errDeadline = errors.New("enrich: deadline reached while waiting for the feature store")

// callKey identifies identical calls, which are coalesced: the same workspace, feature service,
// join keys and cache bypass. Enrich never sets Request.RequestContext, so it is not part of
// the key.
type callKey struct {
	group    groupKey
	joinKeys string // canonical, see canonicalJoinKeys
}

// groupKey identifies calls that may share one get-features-batch call: the endpoint takes the
// workspace, the feature service and the request options once per batch.
type groupKey struct {
	workspace string
	service   string
	bypass    bool
}

// call is one GetFeatures request in flight, shared by every waiter asking for the same key.
// All fields but req, key and done are guarded by Enricher.mu until done is closed; after that
// vec and err are read-only.
type call struct {
	req     tecton.Request
	key     callKey
	done    chan struct{}
	waiters int    // callers still waiting for the answer
	batch   *batch // the batch that carries the call
	// finished is set, under Enricher.mu, just before done is closed.
	finished bool

	vec *tecton.Vector
	err error
}

// batch is a set of calls of one group sent in one feature-store call: one call with
// get-features, two to tecton.MaxBatchSize with get-features-batch. Its fields are guarded by
// Enricher.mu.
type batch struct {
	group groupKey
	calls []*call
	// base carries the values (not the cancellation) of the first caller's context into the
	// store call.
	base context.Context
	// stop cancels the batch window timer; nil once the batch is sent or when it has no timer.
	stop func() bool
	sent bool
	// live counts the calls of a sent batch that still have waiters; when it drops to zero
	// nobody wants the answer and cancel stops the store call.
	live   int
	ctx    context.Context
	cancel context.CancelFunc
}

// keyOf returns the coalescing key of req.
func keyOf(req tecton.Request) callKey {
	return callKey{
		group:    groupKey{workspace: req.Workspace, service: req.FeatureService, bypass: req.BypassCache},
		joinKeys: canonicalJoinKeys(req.JoinKeys),
	}
}

// canonicalJoinKeys encodes join keys as one string that is equal for equal maps: the names in
// bytewise order, each name and value prefixed by its length so that no choice of bytes in
// names or values can make two different maps encode alike.
func canonicalJoinKeys(m map[string]string) string {
	names := make([]string, 0, len(m))
	n := 0
	for k, v := range m {
		names = append(names, k)
		n += len(k) + len(v) + 8
	}
	slices.Sort(names)
	var b strings.Builder
	b.Grow(n)
	var num [20]byte
	for _, k := range names {
		v := m[k]
		b.Write(strconv.AppendInt(num[:0], int64(len(k)), 10))
		b.WriteByte(':')
		b.WriteString(k)
		b.Write(strconv.AppendInt(num[:0], int64(len(v)), 10))
		b.WriteByte(':')
		b.WriteString(v)
	}
	return b.String()
}

// fetch returns the answer to req, sharing a call already in flight for the same key or
// starting one (possibly in a batch). It stops waiting, without cancelling the call for other
// waiters, when ctx is done (returning ctx.Err()) or when deadline passes (returning
// errDeadline). A call whose waiters have all gone is cancelled.
func (e *Enricher) fetch(ctx context.Context, req tecton.Request, deadline time.Time) (*tecton.Vector, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	remaining := deadline.Sub(e.now())
	if remaining <= 0 {
		return nil, errDeadline
	}
	key := keyOf(req)

	e.mu.Lock()
	c := e.inflight[key]
	if c == nil {
		c = &call{req: req, key: key, done: make(chan struct{})}
		e.inflight[key] = c
		e.enqueueLocked(ctx, c)
	}
	c.waiters++
	e.mu.Unlock()

	expired, stop := e.newTimer(remaining)
	defer stop()
	select {
	case <-c.done:
		return c.vec, c.err
	case <-ctx.Done():
		e.leave(c)
		return nil, ctx.Err()
	case <-expired:
		e.leave(c)
		return nil, errDeadline
	}
}

// enqueueLocked puts a new call into a batch: the pending batch of its group, or a new one.
// e.mu must be held.
func (e *Enricher) enqueueLocked(ctx context.Context, c *call) {
	if e.batchWindow < 0 {
		b := &batch{group: c.key.group, calls: []*call{c}, base: context.WithoutCancel(ctx)}
		c.batch = b
		e.sendLocked(b)
		go e.run(b)
		return
	}
	b := e.pending[c.key.group]
	if b == nil {
		b = &batch{group: c.key.group, base: context.WithoutCancel(ctx)}
		e.pending[c.key.group] = b
		b.stop = e.afterFunc(e.batchWindow, func() { e.flush(b) })
	}
	b.calls = append(b.calls, c)
	c.batch = b
	if len(b.calls) >= tecton.MaxBatchSize {
		delete(e.pending, b.group)
		b.stop() // if the timer already fired, flush finds the batch sent and does nothing
		e.sendLocked(b)
		go e.run(b)
	}
}

// flush sends a pending batch when its window ends, unless it was sent when it filled up or
// emptied because all its waiters left.
func (e *Enricher) flush(b *batch) {
	e.mu.Lock()
	if b.sent || len(b.calls) == 0 {
		e.mu.Unlock()
		return
	}
	if e.pending[b.group] == b {
		delete(e.pending, b.group)
	}
	e.sendLocked(b)
	e.mu.Unlock()
	e.run(b)
}

// sendLocked marks b as sent and gives it the context its store call runs under. e.mu must be
// held.
func (e *Enricher) sendLocked(b *batch) {
	b.sent = true
	b.stop = nil
	b.live = len(b.calls)
	b.ctx, b.cancel = context.WithCancel(b.base)
	b.base = nil
}

// leave records that one waiter of c stopped waiting. When it was the last one, the call is
// forgotten (a later identical request starts a fresh call rather than share a cancelled one),
// removed from its batch if not yet sent, and the store call is cancelled once no call of its
// batch has waiters.
func (e *Enricher) leave(c *call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c.waiters--
	if c.waiters > 0 || c.finished {
		return
	}
	if e.inflight[c.key] == c {
		delete(e.inflight, c.key)
	}
	b := c.batch
	if !b.sent {
		b.calls = slices.DeleteFunc(b.calls, func(x *call) bool { return x == c })
		if len(b.calls) == 0 {
			if e.pending[b.group] == b {
				delete(e.pending, b.group)
			}
			if b.stop != nil {
				b.stop()
				b.stop = nil
			}
		}
		return
	}
	b.live--
	if b.live == 0 {
		b.cancel()
	}
}

// run makes the store call of a sent batch and hands each call its answer; errors of the call
// apply to every row.
func (e *Enricher) run(b *batch) {
	defer b.cancel()
	vecs, err := e.callStore(b)
	e.mu.Lock()
	for i, c := range b.calls {
		switch {
		case err != nil:
			c.err = err
		case vecs[i] == nil:
			c.err = fmt.Errorf("%s %s/%s: feature store returned no vector for row %d", opName(len(b.calls)), b.group.workspace, b.group.service, i)
		default:
			c.vec = vecs[i]
		}
		c.finished = true
		if e.inflight[c.key] == c {
			delete(e.inflight, c.key)
		}
	}
	e.mu.Unlock()
	for _, c := range b.calls {
		close(c.done)
	}
}

func opName(rows int) string {
	if rows == 1 {
		return opGetFeatures
	}
	return opGetFeaturesBatch
}

// callStore makes the one store call for b and returns one vector per call, in order. A panic
// in the store becomes a non-retriable error, so that waiters are answered instead of hanging
// and one bad backend answer does not take the dispatcher down.
func (e *Enricher) callStore(b *batch) (vecs []*tecton.Vector, err error) {
	op := opName(len(b.calls))
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			vecs, err = nil, fmt.Errorf("%s %s/%s: feature store panicked: %v", op, b.group.workspace, b.group.service, v)
		}
		e.observer.ObserveCall(op, time.Since(start), err)
	}()
	if len(b.calls) == 1 {
		v, err := e.store.GetFeatures(b.ctx, b.calls[0].req)
		if err != nil {
			return nil, err
		}
		return []*tecton.Vector{v}, nil
	}
	reqs := make([]tecton.Request, len(b.calls))
	for i, c := range b.calls {
		reqs[i] = c.req
	}
	vecs, err = e.store.GetFeaturesBatch(b.ctx, reqs)
	if err != nil {
		return nil, err
	}
	if len(vecs) != len(reqs) {
		return nil, fmt.Errorf("%s %s/%s: feature store returned %d vectors for %d requests", op, b.group.workspace, b.group.service, len(vecs), len(reqs))
	}
	return vecs, nil
}
