package dispatcher

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
)

// DetachConfig tunes detaching (see the package doc, "Detach and rejoin").
// Detaching needs Params.Log and Params.Cursors; without them a subscription
// that cannot keep up is shed to the retry queue instead.
type DetachConfig struct {
	// Disabled sheds instead of detaching even when a log and a cursor
	// store are given.
	Disabled bool
	// MaxDetached bounds how many subscriptions are detached at once (one
	// reader goroutine and its fetch connections each); beyond it a
	// subscription is shed. Defaults to 64.
	MaxDetached int
	// CheckpointEvents: a detached subscription's reader saves its cursors
	// once this many records were settled since the last save. Defaults to
	// 1000. With CheckpointInterval it bounds what a crash re-delivers.
	CheckpointEvents int
	// CheckpointInterval: ... or once this long has passed with progress.
	// Defaults to 1s.
	CheckpointInterval time.Duration
	// RejoinLag: a detached subscription rejoins the shared consumer once,
	// on every partition it is read on, its reader is at most this many
	// offsets behind the last offset the shared consumer handed on.
	// Defaults to 64: small enough that the hand-over is a moment, large
	// enough that a live partition (which moves on while the reader reads)
	// is ever reached.
	RejoinLag int64
	// FetchBytes bounds one fetch of a reader, in bytes. Defaults to 1 MiB.
	FetchBytes int
	// FetchWait is how long one fetch may wait for records at a partition's
	// end. Defaults to 100ms, so one quiet partition does not hold a
	// reader's others.
	FetchWait time.Duration
	// HoldFailing bounds how long a detached subscription's reader holds
	// its events back on its cursor while its receiver fails (the circuit
	// open, or half-open with its probe under way) instead of writing them
	// to the retry queue. Held events stay in Kafka behind the cursor, and
	// Kafka's retention may delete them: once the reader has held for this
	// long without the circuit closing, it parks the events it reaches
	// while the circuit is open in the retry queue, as the shared path does,
	// so its cursor moves on. Defaults to 15m: far below any retention a
	// topic is run with (hours to days), long enough to ride out a
	// receiver's deploy or a short outage without a row per event. The
	// clock starts again when the circuit closes, and at each start of the
	// gateway. Negative parks at once (no holding).
	HoldFailing time.Duration
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c DetachConfig) WithDefaults() DetachConfig {
	if c.MaxDetached <= 0 {
		c.MaxDetached = 64
	}
	if c.CheckpointEvents <= 0 {
		c.CheckpointEvents = 1000
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = time.Second
	}
	if c.RejoinLag <= 0 {
		c.RejoinLag = 64
	}
	if c.FetchBytes <= 0 {
		c.FetchBytes = 1 << 20
	}
	if c.FetchWait <= 0 {
		c.FetchWait = 100 * time.Millisecond
	}
	if c.HoldFailing == 0 {
		c.HoldFailing = 15 * time.Minute
	}
	return c
}

// CursorStore keeps detached subscriptions' cursors; *store.Store is one.
type CursorStore interface {
	SaveCursors(ctx context.Context, cs []store.SubscriptionCursor) error
	DeleteCursors(ctx context.Context, cs []store.SubscriptionCursor) error
	Cursors(ctx context.Context) ([]store.SubscriptionCursor, error)
}

var _ CursorStore = (*store.Store)(nil)

// detachment is a detached subscription's state, guarded by its target's
// dmu. For each partition the subscription was read on since detaching, the
// reader owns the offsets [start, rejoinAt) and the shared consumer the rest.
type detachment struct {
	parts map[source.Partition]*partCursor
	// rejoining is set once every partition has a rejoinAt: partitions not
	// seen yet stay with the shared consumer.
	rejoining bool
	// released is set when the replica gave up the last of parts (a
	// rebalance): the reader ends without rejoining or deleting cursors.
	released bool
	// wake tells the reader a partition was added or given up (capacity 1).
	wake chan struct{}
	// cu is the detachment's reader.
	cu *catchUp
}

// partCursor is one partition of a detachment.
type partCursor struct {
	start    int64 // the first offset the reader owns
	rejoinAt int64 // the first offset the shared consumer owns again; -1: not yet
	read     int64 // the next offset the reader fetches
	// The reader's accounting of what it handed on (guarded by catchUp.mu):
	// offsets not settled yet, in order, and those settled out of order.
	pending []int64
	settled map[int64]bool
	saved   int64 // the cursor last saved
	// inFlight counts the records the reader is handing on, or handed on
	// and not settled: Revoked waits for it to reach 0. handedTo is one past
	// the last record the reader began to hand on (it leads read while
	// that record is being handed on). Both are guarded by catchUp.mu.
	inFlight int
	handedTo int64
	// revoked is set (under the target's dmu) when the replica gave the
	// partition up: the reader hands on none of its records any more.
	revoked bool
}

// detachEnabled reports whether j may detach its subscription.
func (d *Dispatcher) detachEnabled(j *job) bool {
	return d.log != nil && d.cursors != nil && !d.cfg.Detach.Disabled && !j.replay && !j.catchUp &&
		j.msg.Position.Kind == "kafka"
}

// noteSeen records the last offset of a partition the shared consumer
// began to handle; a rejoin hands over just after it.
func (d *Dispatcher) noteSeen(pos source.Position) {
	p := source.Partition{Stream: pos.Topic, ID: pos.Partition}
	v, ok := d.seen.Load(p)
	if !ok {
		v, _ = d.seen.LoadOrStore(p, new(atomic.Int64))
	}
	v.(*atomic.Int64).Store(pos.Offset)
}

func (d *Dispatcher) lastSeen(p source.Partition) (int64, bool) {
	v, ok := d.seen.Load(p)
	if !ok {
		return 0, false
	}
	return v.(*atomic.Int64).Load(), true
}

// offsetRange is the offsets [from, to) of a partition.
type offsetRange struct{ from, to int64 }

func (r offsetRange) holds(offset int64) bool { return offset >= r.from && offset < r.to }

// detachedMessage is logged (with the subscription_id and the reason) when
// a subscription is detached.
const detachedMessage = "a subscription's receiver is not keeping up; it is detached and reads the source on its own until it catches up"

// skipDetached takes j off the shared path when its subscription is
// detached and j's offset is its reader's, detaching the subscription first
// when why says why it should be (its lane stayed full, its waits held the
// shared consumer back, or its circuit is open; "": it should not). It
// reports whether j was taken; j is then settled at once, or, the first
// time the reader takes a partition over, once the partition's cursor is
// durable: the shared consumer may commit past j only then.
func (d *Dispatcher) skipDetached(ctx context.Context, t *target, j *job, why string) bool {
	pos := j.msg.Position
	p := source.Partition{Stream: pos.Topic, ID: pos.Partition}
	t.dmu.Lock()
	if t.handedBack[p].holds(pos.Offset) {
		t.dmu.Unlock()
		j.done() // a rejoined reader delivered it
		return true
	}
	det := t.det
	if det == nil {
		if why == "" || int(d.detachedCount.Load()) >= d.cfg.Detach.MaxDetached || !d.accepting.Load() {
			t.dmu.Unlock()
			return false
		}
		if !d.addReader() {
			t.dmu.Unlock()
			return false
		}
		det = d.startReader(t, j.sub.ID, map[source.Partition]*partCursor{})
		t.wantDetach.Store(false)
		d.metrics.detached.Inc()
		d.warn.warn(ctx, detachedMessage, slog.String("subscription_id", t.id), slog.String("reason", why))
	}
	if pc := det.parts[p]; pc != nil {
		mine := pos.Offset >= pc.start && (pc.rejoinAt < 0 || pos.Offset < pc.rejoinAt)
		t.dmu.Unlock()
		if mine {
			j.done()
		}
		return mine
	}
	if det.rejoining {
		t.dmu.Unlock()
		return false
	}
	pc := &partCursor{start: pos.Offset, rejoinAt: -1, read: pos.Offset, settled: map[int64]bool{}, saved: pos.Offset}
	det.parts[p] = pc
	t.dmu.Unlock()
	select {
	case det.wake <- struct{}{}:
	default:
	}
	c := store.SubscriptionCursor{SubscriptionID: t.id, Topic: p.Stream, Partition: p.ID, Offset: pos.Offset}
	submitted := d.writers.submit(ctx, write{what: "saving a detached subscription's cursor",
		fn: func(ctx context.Context) error { return d.cursors.SaveCursors(ctx, []store.SubscriptionCursor{c}) },
		done: func(err error) {
			if err == nil {
				j.done()
			}
		}})
	if !submitted {
		// ctx ended (the partition was revoked) before the cursor could be
		// written: the partition stays the shared consumer's, so whoever
		// reads j again delivers it (the reader may have begun: duplicates,
		// never a gap).
		t.dmu.Lock()
		if det.parts[p] == pc {
			delete(det.parts, p)
		}
		t.dmu.Unlock()
	}
	return true
}

// EnableDetach lets subscriptions detach onto cursors kept in cursors,
// read from log (the Kafka source's topics), unless Config.Detach.Disabled:
// the same as Params.Log and Params.Cursors, for a composition that opens
// the log after the dispatcher. Call it before any message is handled.
func (d *Dispatcher) EnableDetach(log source.Log, cursors CursorStore) {
	if d.cfg.Detach.Disabled {
		return
	}
	d.log, d.cursors = log, cursors
}

// Assigned takes up the cursors kept for parts, the partitions this
// replica was just given, before the shared consumer reads them: each
// cursor's subscription is read from it by a reader of this replica
// (started if it has none), and the shared consumer skips that
// subscription's events from the cursor on. It is the Kafka source's
// source.Ownership hook. Only a partition's owner reads its cursors, so
// replicas never read one subscription's partition at once, and a cursor
// that a crashed replica, or one that lost the partition in a rebalance,
// left goes on here. Cursors of subscriptions that are gone are left to the
// database (they go with their subscription).
func (d *Dispatcher) Assigned(ctx context.Context, parts []source.Assignment) error {
	if d.log == nil || d.cursors == nil || d.cfg.Detach.Disabled {
		return nil
	}
	owned := make(map[source.Partition]bool, len(parts))
	for _, a := range parts {
		owned[a.Partition] = true
		// What the shared consumer saw in an earlier ownership is stale;
		// it hands on nothing before Next, so as far as a rejoin is
		// concerned it has begun Next-1 (a reader of a partition that
		// stays quiet rejoins without waiting for a new record).
		d.seen.Delete(a.Partition)
		if a.Next >= 0 {
			d.noteSeen(source.Position{Topic: a.Stream, Partition: a.ID, Offset: a.Next - 1})
		}
	}
	cs, err := d.cursors.Cursors(ctx)
	if err != nil {
		return err
	}
	for _, c := range cs {
		p := source.Partition{Stream: c.Topic, ID: c.Partition}
		if !owned[p] {
			continue
		}
		s := d.matcher.Get(c.SubscriptionID)
		if s == nil || s.Proto.GetWebhook() == nil {
			continue
		}
		if !d.takeUp(d.target(s), c.SubscriptionID, p, c.Offset) {
			return errors.New("the dispatcher is stopping")
		}
		d.logger.Info("taking up a detached subscription's cursor", slog.String("subscription_id", c.SubscriptionID),
			slog.String("topic", c.Topic), slog.Int("partition", int(c.Partition)), slog.Int64("offset", c.Offset))
	}
	return nil
}

// takeUp adds partition p, from offset, to the detachment of t (starting
// one and its reader if t has none); false when the dispatcher is stopping.
func (d *Dispatcher) takeUp(t *target, id string, p source.Partition, offset int64) bool {
	pc := &partCursor{start: offset, rejoinAt: -1, read: offset, settled: map[int64]bool{}, saved: offset}
	t.dmu.Lock()
	defer t.dmu.Unlock()
	if t.det == nil {
		if !d.addReader() {
			return false
		}
		d.startReader(t, id, map[source.Partition]*partCursor{p: pc})
		return true
	}
	if t.det.parts[p] == nil {
		t.det.parts[p] = pc
		// A reader rejoining on its other partitions now has this one to
		// catch up on first; those keep their hand-over offsets.
		t.det.rejoining = false
	}
	select {
	case t.det.wake <- struct{}{}:
	default:
	}
	return true
}

// Revoked hands over this replica's cursors of parts, the partitions it
// gave up, after the shared consumer stopped reading them: each reader
// stops reading them, Revoked waits (until ctx ends: the rest of the
// consumer's drain) for what the readers handed on of them to settle, and
// their cursors are saved at the first record not settled, so the next
// owner's Assigned goes on from there. What is still in flight when ctx
// ends may be delivered twice; nothing is skipped. A reader left without
// partitions ends. It is the Kafka source's source.Ownership hook, called
// at every rebalance and at shutdown.
func (d *Dispatcher) Revoked(ctx context.Context, parts []source.Partition) {
	if d.log == nil || d.cursors == nil {
		return
	}
	gone := make(map[source.Partition]bool, len(parts))
	for _, p := range parts {
		gone[p] = true
		d.seen.Delete(p)
	}
	d.mu.Lock()
	targets := make([]*target, 0, len(d.targets))
	for _, t := range d.targets {
		targets = append(targets, t)
	}
	d.mu.Unlock()
	type handOver struct {
		t  *target
		cu *catchUp
		p  source.Partition
		pc *partCursor
	}
	var given []handOver
	for _, t := range targets {
		t.dmu.Lock()
		for p := range t.handedBack {
			if gone[p] {
				delete(t.handedBack, p)
			}
		}
		det := t.det
		if det == nil {
			t.dmu.Unlock()
			continue
		}
		n := len(given)
		for p, pc := range det.parts {
			if gone[p] {
				pc.revoked = true
				delete(det.parts, p)
				given = append(given, handOver{t: t, cu: det.cu, p: p, pc: pc})
			}
		}
		if len(given) > n && len(det.parts) == 0 {
			det.released = true
			t.det = nil
			t.detached.Store(false)
		}
		t.dmu.Unlock()
		if len(given) > n {
			select {
			case det.wake <- struct{}{}:
			default:
			}
		}
	}
	if len(given) == 0 {
		return
	}
	// The readers hand on nothing more of the partitions (revoked is set);
	// what they did hand on is settling in the lanes.
	for _, h := range given {
		for h.cu.partInFlight(h.pc) > 0 {
			if !sleepCtx(ctx, 5*time.Millisecond) {
				break // out of budget: what is left is delivered again by the next owner
			}
		}
	}
	cs := make([]store.SubscriptionCursor, 0, len(given))
	for _, h := range given {
		h.t.dmu.Lock()
		cs = append(cs, h.cu.cursorOf(h.p, h.pc))
		h.t.dmu.Unlock()
	}
	sctx, cancel := context.WithTimeout(context.Background(), handOverTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		err := d.cursors.SaveCursors(sctx, cs)
		if err == nil {
			return
		}
		if !sleepCtx(sctx, backoffDelay(attempt)) {
			// The last checkpoints stay: the next owner re-delivers from
			// them (more duplicates, nothing skipped).
			d.logger.Error("handing over detached subscriptions' cursors failed; the partitions' next owner re-delivers from their last checkpoint",
				slog.Int("cursors", len(cs)), slog.Any("error", err))
			return
		}
	}
}

// handOverTimeout bounds Revoked's cursor writes (after its wait for what
// is in flight): the rebalance waits for them.
const handOverTimeout = 5 * time.Second

// startReader makes t's detachment over parts and starts its reader; the
// caller holds t.dmu and has counted the reader (addReader).
func (d *Dispatcher) startReader(t *target, id string, parts map[source.Partition]*partCursor) *detachment {
	det := &detachment{parts: parts, wake: make(chan struct{}, 1)}
	det.cu = &catchUp{d: d, t: t, id: id, det: det, lastSave: d.now(), readers: map[string]source.PositionReader{}}
	t.det = det
	t.detached.Store(true)
	go d.runCatchUp(det.cu)
	return det
}

// addReader counts a reader about to start, unless the dispatcher is
// stopping (Stop waits for the readers counted).
func (d *Dispatcher) addReader() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.accepting.Load() {
		return false
	}
	d.detachedCount.Add(1)
	d.detachWG.Add(1)
	return true
}

// catchUp is the reader of one detached subscription.
type catchUp struct {
	d   *Dispatcher
	t   *target
	id  string
	det *detachment

	mu       sync.Mutex // guards the partCursors' pending, settled, saved, inFlight and handedTo, and unsaved
	unsaved  int        // records settled since the last save
	lastSave time.Time
	readers  map[string]source.PositionReader // by topic
	// heldSince is when the reader began to hold events back for an open
	// circuit (zero: it is not holding); owned by the reader's goroutine.
	heldSince time.Time
}

// runCatchUp reads a detached subscription's partitions from its cursors
// until it has rejoined the shared consumer, the replica gave its
// partitions up, or the dispatcher stops.
func (d *Dispatcher) runCatchUp(cu *catchUp) {
	defer d.detachWG.Done()
	defer d.detachedCount.Add(-1)
	defer func() {
		for _, r := range cu.readers {
			r.Close()
		}
	}()
	ctx, id := d.detachCtx, cu.id
	end, cursors := cu.run(ctx)
	switch end {
	case released:
		return // Revoked saved the cursors for the partitions' next owner
	case stopped:
		if ctx.Err() != nil {
			// Stop: what the lanes still hold is delivered or parked while
			// Stop drains them, and Stop saves the cursors once the writers
			// have confirmed that (saveStoppedCursors), so that a clean
			// stop reads again only what never settled.
			d.mu.Lock()
			d.stoppedReaders = append(d.stoppedReaders, cu)
			d.mu.Unlock()
			return
		}
		// The subscription is gone: save what was settled now.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cu.checkpoint(sctx, true)
		return
	}
	// Every record the reader handed on is settled and the shared consumer
	// has every offset after; the cursors of the partitions it read may go
	// (those of other replicas' partitions stay theirs).
	for attempt := 0; ; attempt++ {
		err := d.cursors.DeleteCursors(ctx, cursors)
		if err == nil || ctx.Err() != nil || attempt >= 10 {
			if err != nil {
				d.warn.warn(ctx, "deleting a rejoined subscription's cursors; a restart will re-deliver from them",
					slog.String("subscription_id", id), slog.Any("error", err))
			}
			break
		}
		sleepCtx(ctx, backoffDelay(attempt))
	}
	d.logger.Info("a detached subscription has caught up and rejoined the shared consumer", slog.String("subscription_id", id))
}

// saveStoppedCursors saves the cursors of the detached subscriptions whose
// readers Stop ended, after the lanes drained and the writers confirmed
// what they could: each cursor stops at the first event handed on and not
// settled (still in a lane, or its write failed), which a restart reads
// again (at least once).
func (d *Dispatcher) saveStoppedCursors() {
	d.mu.Lock()
	cus := d.stoppedReaders
	d.stoppedReaders = nil
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, cu := range cus {
		cu.checkpoint(ctx, true)
	}
}

// readerEnd is how a reader's loop ended.
type readerEnd int

const (
	stopped  readerEnd = iota // the dispatcher stops
	released                  // the replica gave the reader's partitions up
	rejoined                  // caught up: the shared consumer has the subscription again
)

// run is the reader's loop; on a rejoin it also returns the cursors of the
// partitions it read.
func (cu *catchUp) run(ctx context.Context) (readerEnd, []store.SubscriptionCursor) {
	d, t := cu.d, cu.t
	for ctx.Err() == nil {
		if cu.isReleased() {
			return released, nil
		}
		t.dmu.Lock()
		parts := make(map[source.Partition]*partCursor, len(cu.det.parts))
		for p, pc := range cu.det.parts {
			parts[p] = pc
		}
		t.dmu.Unlock()
		progressed := false
		for p, pc := range parts {
			n, ok := cu.readPartition(ctx, p, pc)
			if !ok {
				return stopped, nil
			}
			progressed = progressed || n > 0
		}
		cu.checkpoint(ctx, false)
		if cu.maybeRejoin() && cu.finished() {
			for cu.unsettled() > 0 {
				if !sleepCtx(ctx, 10*time.Millisecond) {
					return stopped, nil
				}
				if cu.isReleased() {
					return released, nil
				}
			}
			cu.checkpoint(ctx, true)
			t.dmu.Lock()
			if cu.det.released || t.det != cu.det {
				t.dmu.Unlock()
				return released, nil
			}
			if !cu.det.rejoining {
				t.dmu.Unlock()
				continue // a partition was taken up meanwhile: catch up on it first
			}
			var cs []store.SubscriptionCursor
			if t.handedBack == nil {
				t.handedBack = make(map[source.Partition]offsetRange, len(cu.det.parts))
			}
			for p, pc := range cu.det.parts {
				cs = append(cs, store.SubscriptionCursor{SubscriptionID: cu.id, Topic: p.Stream, Partition: p.ID})
				t.handedBack[p] = offsetRange{from: pc.start, to: pc.rejoinAt}
			}
			t.det = nil
			t.detached.Store(false)
			t.dmu.Unlock()
			t.shed.Store(false)
			t.endStreak()
			return rejoined, cs
		}
		if !progressed {
			select {
			case <-ctx.Done():
			case <-cu.det.wake:
			case <-time.After(d.cfg.Detach.FetchWait):
			}
		}
	}
	return stopped, nil
}

// readPartition makes one fetch of p and hands its records on; it returns
// how many it read, and false when the reader must stop.
func (cu *catchUp) readPartition(ctx context.Context, p source.Partition, pc *partCursor) (int, bool) {
	d, t := cu.d, cu.t
	t.dmu.Lock()
	read, limit, revoked := pc.read, pc.rejoinAt, pc.revoked
	t.dmu.Unlock()
	if revoked || limit >= 0 && read >= limit {
		return 0, true
	}
	r := cu.readers[p.Stream]
	if r == nil {
		r = d.log.NewReader(source.ReaderConfig{Streams: []string{p.Stream}})
		cu.readers[p.Stream] = r
	}
	b, err := r.Fetch(ctx, source.FetchRequest{Partition: p, Offset: read, MaxBytes: d.cfg.Detach.FetchBytes, MaxWait: d.cfg.Detach.FetchWait})
	switch {
	case ctx.Err() != nil:
		return 0, false
	case errors.Is(err, source.ErrOutOfRange):
		bounds, berr := r.Bounds(ctx, map[string][]int32{p.Stream: {p.ID}})
		if berr != nil || bounds[p].First <= read {
			d.warn.warn(ctx, "a detached subscription's reader cannot fetch", slog.String("subscription_id", cu.id), slog.Any("error", err))
			return 0, true
		}
		d.logger.Error("a detached subscription's cursor is before the retained records; skipping to the first one",
			slog.String("subscription_id", cu.id), slog.String("topic", p.Stream), slog.Int("partition", int(p.ID)),
			slog.Int64("cursor", read), slog.Int64("first", bounds[p].First))
		t.dmu.Lock()
		pc.read = bounds[p].First
		t.dmu.Unlock()
		return 0, true
	case err != nil:
		d.warn.warn(ctx, "a detached subscription's reader cannot fetch", slog.String("subscription_id", cu.id), slog.Any("error", err))
		sleepCtx(ctx, time.Second)
		return 0, true
	}
	n := 0
	for _, rec := range b.Records {
		if limit >= 0 && rec.Offset >= limit {
			break
		}
		t.dmu.Lock()
		revoked := pc.revoked
		t.dmu.Unlock()
		if revoked {
			return n, true // the partition's next owner goes on from its cursor
		}
		if !cu.handOn(ctx, p, pc, rec) {
			return n, false
		}
		n++
		t.dmu.Lock()
		pc.read = rec.Offset + 1
		t.dmu.Unlock()
	}
	if n == len(b.Records) {
		next := b.Next
		if limit >= 0 {
			next = min(next, limit)
		}
		t.dmu.Lock()
		pc.read = max(pc.read, next)
		t.dmu.Unlock()
	}
	return n, true
}

// handOn delivers one record to the subscription if it matches, waiting as
// long as it takes for room in its lane (the receiver's own pace). While
// the circuit is open it holds the record (see hold), so the cursor stays
// before it; past DetachConfig.HoldFailing it parks it in the retry queue
// instead. False when the dispatcher is stopping or the subscription is
// gone.
func (cu *catchUp) handOn(ctx context.Context, p source.Partition, pc *partCursor, r source.Record) bool {
	d, t := cu.d, cu.t
	sub := d.matcher.Get(cu.id)
	if sub == nil || sub.Proto.GetWebhook() == nil {
		return false // gone: its cursors went with it
	}
	rec, err := record.Decode(r.Value, d.cfg.Decode)
	if err != nil || !cu.delivers(rec, sub) {
		return true // poison is kept by the shared consumer
	}
	pos := source.Position{Kind: "kafka", Topic: p.Stream, Partition: p.ID, Offset: r.Offset}
	m := source.NewMessage(pos, r.Key, r.Value, r.Time, nil)
	cu.mu.Lock()
	pc.pending = append(pc.pending, r.Offset)
	pc.inFlight++
	pc.handedTo = r.Offset + 1
	cu.mu.Unlock()
	var once sync.Once
	settle := func() { once.Do(func() { cu.settle(pc, r.Offset) }) }
	j := &job{msg: m, rec: rec, sub: sub, raw: compact(rec.Raw), created: d.now(), done: settle, catchUp: true}
	for {
		t.dmu.Lock()
		revoked := pc.revoked
		t.dmu.Unlock()
		if revoked {
			// Given up (a rebalance) while waiting: the partition's next
			// owner delivers it from the handed-over cursor.
			cu.notHandedOn(pc)
			return true
		}
		if sub.Proto.GetState() == outflowv1.Subscription_PAUSED {
			d.park(ctx, j, "subscription paused", d.now())
			return true
		}
		until, admitted, probe := t.breaker.admit(d.now())
		if !admitted {
			switch cu.hold(ctx, sub, until) {
			case holdAgain:
				if sub = d.matcher.Get(cu.id); sub == nil || sub.Proto.GetWebhook() == nil {
					cu.notHandedOn(pc)
					return false
				}
				if sub.Revision != j.sub.Revision && !cu.delivers(rec, sub) {
					settle() // updated, and no longer its event (or DISABLED), as the shared consumer decides
					return true
				}
				j.sub = sub
				continue
			case holdPark:
				// Held past HoldFailing: the retry queue keeps it from the
				// topic's retention, as on the shared path. The reader
				// writes it, so the shared consumer never waits for it.
				d.park(ctx, j, "circuit open: the receiver has been failing", until)
				return true
			default:
				cu.notHandedOn(pc)
				return false
			}
		}
		if !probe {
			cu.heldSince = time.Time{} // closed: the hold is over
		}
		j.probe = probe
		res := t.enqueue(ctx, d, j, d.cfg.LaneWait)
		if res != queued && probe {
			j.probe = false
			t.breaker.release()
		}
		switch res {
		case queued:
			return true
		case full:
			continue // the receiver's pace: wait again (unless revoked meanwhile)
		default:
			cu.notHandedOn(pc)
			return false
		}
	}
}

// delivers reports whether rec is an event of sub the way the shared
// consumer decides it (Handle): sub matches it and is not DISABLED.
func (cu *catchUp) delivers(rec *record.Record, sub *match.Subscription) bool {
	return sub.Proto.GetState() != outflowv1.Subscription_DISABLED && matches(cu.d.matcher.Index().Match(rec), cu.id)
}

// holdResult is what one wait of hold came to.
type holdResult int

const (
	holdAgain holdResult = iota // ask the breaker again
	holdPark                    // held past HoldFailing: park the event
	holdStop                    // the dispatcher is stopping
)

// holdPoll is how often a holding reader looks whether its subscription
// changed (updated, paused, disabled, deleted) while its circuit is open.
const holdPoll = time.Second

// hold waits while the circuit of a failing receiver is open (until, at
// the latest), so that its events stay in the log behind its cursor rather
// than each being written to the retry queue: a failing receiver lags on
// its own cursor (SPEC §5) and its reader costs nothing meanwhile. The wait
// ends early when the breaker changes (its probe reported, or its slot was
// freed), when the subscription is updated (its receiver may be another:
// the cooldown ends, so the next event probes it at once), or every
// holdPoll to look; it says park once the reader has held for
// DetachConfig.HoldFailing.
func (cu *catchUp) hold(ctx context.Context, sub *match.Subscription, until time.Time) holdResult {
	d, t := cu.d, cu.t
	now := d.now()
	limit := d.cfg.Detach.HoldFailing
	if limit < 0 {
		return holdPark
	}
	if cu.heldSince.IsZero() {
		cu.heldSince = now
		d.logger.Info("a detached subscription's receiver is failing; its events wait on its cursor until a probe succeeds",
			slog.String("subscription_id", cu.id), slog.Time("probe_at", until), slog.Duration("hold_failing", limit))
	}
	parkAt := cu.heldSince.Add(limit)
	if !now.Before(parkAt) {
		return holdPark
	}
	if cur := d.matcher.Get(cu.id); cur == nil || cur.Revision != sub.Revision {
		if cur != nil && cur.Proto.GetState() == outflowv1.Subscription_ACTIVE {
			t.breaker.endCooldown()
		}
		return holdAgain
	}
	wait := min(until.Sub(now), parkAt.Sub(now), holdPoll)
	changed := t.breaker.wait()
	if _, open := t.breaker.open(now); !open {
		return holdAgain // changed meanwhile
	}
	t.holdWaits.Add(1)
	timer := time.NewTimer(max(wait, time.Millisecond))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return holdStop
	case <-changed:
	case <-timer.C:
	}
	return holdAgain
}

func matches(subs []*match.Subscription, id string) bool {
	for _, s := range subs {
		if s.ID == id {
			return true
		}
	}
	return false
}

// settle records that the record at offset was settled.
func (cu *catchUp) settle(pc *partCursor, offset int64) {
	cu.mu.Lock()
	defer cu.mu.Unlock()
	cu.unsaved++
	pc.inFlight--
	pc.settled[offset] = true
	for len(pc.pending) > 0 && pc.settled[pc.pending[0]] {
		delete(pc.settled, pc.pending[0])
		pc.pending = pc.pending[1:]
	}
}

// notHandedOn ends the count of a record the reader did not hand on after
// all (revoked, stopping, or the subscription gone): its offset stays
// pending, so no cursor passes it.
func (cu *catchUp) notHandedOn(pc *partCursor) {
	cu.mu.Lock()
	defer cu.mu.Unlock()
	pc.inFlight--
}

// unsettled counts the records the reader is handing on, or handed on and
// not settled, of the partitions it reads (those given up are Revoked's to
// wait for).
func (cu *catchUp) unsettled() int {
	cu.t.dmu.Lock()
	pcs := make([]*partCursor, 0, len(cu.det.parts))
	for _, pc := range cu.det.parts {
		pcs = append(pcs, pc)
	}
	cu.t.dmu.Unlock()
	cu.mu.Lock()
	defer cu.mu.Unlock()
	n := 0
	for _, pc := range pcs {
		n += pc.inFlight
	}
	return n
}

// partInFlight is pc's count of records being handed on or not settled.
func (cu *catchUp) partInFlight(pc *partCursor) int {
	cu.mu.Lock()
	defer cu.mu.Unlock()
	return pc.inFlight
}

// isReleased reports whether the replica gave the reader's partitions up.
func (cu *catchUp) isReleased() bool {
	cu.t.dmu.Lock()
	defer cu.t.dmu.Unlock()
	return cu.det.released
}

// cursorOf is partition p's cursor: the first record the reader handed on
// and has not settled, or where it reads next. The caller holds the
// target's dmu.
func (cu *catchUp) cursorOf(p source.Partition, pc *partCursor) store.SubscriptionCursor {
	cu.mu.Lock()
	defer cu.mu.Unlock()
	offset := max(pc.read, pc.handedTo)
	if len(pc.pending) > 0 {
		offset = pc.pending[0]
	}
	return store.SubscriptionCursor{SubscriptionID: cu.id, Topic: p.Stream, Partition: p.ID, Offset: offset}
}

// checkpoint saves the cursors that moved, when enough records were settled
// or enough time passed (or force).
func (cu *catchUp) checkpoint(ctx context.Context, force bool) {
	d, t := cu.d, cu.t
	cfg := d.cfg.Detach
	now := d.now()
	t.dmu.Lock()
	parts := make(map[source.Partition]*partCursor, len(cu.det.parts))
	reads := make(map[source.Partition]int64, len(cu.det.parts))
	for p, pc := range cu.det.parts {
		parts[p], reads[p] = pc, pc.read
	}
	t.dmu.Unlock()
	cu.mu.Lock()
	if !force && cu.unsaved < cfg.CheckpointEvents && now.Sub(cu.lastSave) < cfg.CheckpointInterval {
		cu.mu.Unlock()
		return
	}
	var cs []store.SubscriptionCursor
	var moved []*partCursor
	for p, pc := range parts {
		cursor := reads[p]
		if len(pc.pending) > 0 {
			cursor = pc.pending[0]
		}
		if cursor > pc.saved {
			cs = append(cs, store.SubscriptionCursor{SubscriptionID: cu.id, Topic: p.Stream, Partition: p.ID, Offset: cursor})
			moved = append(moved, pc)
		}
	}
	unsaved := cu.unsaved
	cu.unsaved, cu.lastSave = 0, now
	cu.mu.Unlock()
	if len(cs) == 0 {
		return
	}
	if err := d.cursors.SaveCursors(ctx, cs); err != nil {
		cu.mu.Lock()
		cu.unsaved += unsaved
		cu.mu.Unlock()
		d.warn.warn(ctx, "saving a detached subscription's cursors; a restart re-delivers from the last saved ones",
			slog.String("subscription_id", cu.id), slog.Any("error", err))
		return
	}
	d.metrics.cursorSaves.Inc()
	cu.mu.Lock()
	for i, pc := range moved {
		pc.saved = cs[i].Offset
	}
	cu.mu.Unlock()
}

// maybeRejoin decides the hand-over once every partition's reader is within
// RejoinLag of what the shared consumer handed on: from then on the shared
// consumer owns every offset after the one it last began (or after what the
// reader already read, if further), and the reader reads up to there. It
// reports whether the subscription is rejoining.
func (cu *catchUp) maybeRejoin() bool {
	t, d := cu.t, cu.d
	t.dmu.Lock()
	defer t.dmu.Unlock()
	if cu.det.released {
		return false // given up: nothing to rejoin on
	}
	if cu.det.rejoining {
		return true
	}
	if sub := d.matcher.Get(cu.id); t.breaker.tripped() && sub != nil && sub.Proto.GetState() != outflowv1.Subscription_DISABLED {
		// A failing receiver stays detached until a probe succeeds:
		// rejoined, its next event would detach it again, and that
		// detach's cursor write would be the shared consumer's to wait for
		// (behind this reader's parked events, while PostgreSQL is down).
		// A DISABLED one gets no events on either path and may rejoin.
		return false
	}
	type hand struct {
		pc *partCursor
		at int64
	}
	var hands []hand
	for p, pc := range cu.det.parts {
		if pc.rejoinAt >= 0 {
			continue // handed over before a partition was added
		}
		seen, ok := d.lastSeen(p)
		if !ok || seen+1-pc.read > d.cfg.Detach.RejoinLag {
			return false
		}
		hands = append(hands, hand{pc, max(seen+1, pc.read)})
	}
	for _, h := range hands {
		h.pc.rejoinAt = h.at
	}
	cu.det.rejoining = true
	return true
}

// finished reports whether the reader has read every partition up to its
// hand-over, and the shared consumer has reached it (a shared consumer
// behind the reader, after a restart, must still skip what the reader
// delivered, so the detachment lasts until it has passed).
func (cu *catchUp) finished() bool {
	cu.t.dmu.Lock()
	defer cu.t.dmu.Unlock()
	for p, pc := range cu.det.parts {
		if pc.rejoinAt < 0 || pc.read < pc.rejoinAt {
			return false
		}
		if seen, ok := cu.d.lastSeen(p); !ok || seen < pc.rejoinAt-1 {
			return false
		}
	}
	return true
}

// sleepCtx waits for d or ctx; false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// backoffDelay is 100ms doubled per attempt, capped at 10s.
func backoffDelay(attempt int) time.Duration {
	return min(100*time.Millisecond<<min(attempt, 7), 10*time.Second)
}
