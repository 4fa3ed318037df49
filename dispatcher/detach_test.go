package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

// fakeLog is one Kafka partition ("t"/0) in memory, read the way a broker
// is: at most a few records per fetch, an empty fetch held for MaxWait,
// offsets beyond the end out of range.
type fakeLog struct {
	mu      sync.Mutex
	records []source.Record
	fetches atomic.Int64
	readers atomic.Int64 // open
}

func newFakeLog(n int) *fakeLog {
	l := &fakeLog{}
	for i := range n {
		l.records = append(l.records, source.Record{Offset: int64(i), Value: recordValue(i), Time: time.Now()})
	}
	return l
}

func recordValue(i int) []byte {
	return fmt.Appendf(nil, `{"version":"1","feature_view_name":"fv","feature_timestamp":"2026-01-01T00:00:00Z","entity_keys":{"user_id":"u%d"}}`, i)
}

func (l *fakeLog) NewReader(source.ReaderConfig) source.PositionReader {
	l.readers.Add(1)
	return &fakeReader{l: l}
}

type fakeReader struct {
	l      *fakeLog
	closed atomic.Bool
}

func (r *fakeReader) Partitions(context.Context, []string) (map[string][]int32, error) {
	return map[string][]int32{"t": {0}}, nil
}

func (r *fakeReader) Bounds(context.Context, map[string][]int32) (map[source.Partition]source.Bounds, error) {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	return map[source.Partition]source.Bounds{{Stream: "t", ID: 0}: {First: 0, End: int64(len(r.l.records))}}, nil
}

func (r *fakeReader) OffsetsAt(context.Context, map[string][]int32, time.Time) (map[source.Partition]int64, error) {
	return nil, nil
}

func (r *fakeReader) Fetch(ctx context.Context, req source.FetchRequest) (*source.Batch, error) {
	r.l.fetches.Add(1)
	r.l.mu.Lock()
	end := int64(len(r.l.records))
	if req.Offset > end || req.Partition != (source.Partition{Stream: "t", ID: 0}) {
		r.l.mu.Unlock()
		return nil, fmt.Errorf("fetching at %d: %w", req.Offset, source.ErrOutOfRange)
	}
	recs := slices.Clone(r.l.records[req.Offset:min(end, req.Offset+7)])
	r.l.mu.Unlock()
	if len(recs) == 0 {
		sleepCtx(ctx, req.MaxWait)
		return &source.Batch{Next: req.Offset, End: end}, ctx.Err()
	}
	return &source.Batch{Records: recs, Next: recs[len(recs)-1].Offset + 1, End: end}, nil
}

func (r *fakeReader) Close() {
	if !r.closed.Swap(true) {
		r.l.readers.Add(-1)
	}
}

// fakeCursors keeps cursors in memory, never moving one back, like the SQL.
type fakeCursors struct {
	mu      sync.Mutex
	cursors map[string]int64 // by subscription id (partition t/0 only)
	saves   int
	deletes int
}

func newFakeCursors() *fakeCursors { return &fakeCursors{cursors: map[string]int64{}} }

func (c *fakeCursors) SaveCursors(_ context.Context, cs []store.SubscriptionCursor) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.saves++
	for _, x := range cs {
		if cur, ok := c.cursors[x.SubscriptionID]; !ok || x.Offset > cur {
			c.cursors[x.SubscriptionID] = x.Offset
		}
	}
	return nil
}

func (c *fakeCursors) DeleteCursors(_ context.Context, cs []store.SubscriptionCursor) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deletes++
	for _, x := range cs {
		if x.Topic == "t" && x.Partition == 0 {
			delete(c.cursors, x.SubscriptionID)
		}
	}
	return nil
}

func (c *fakeCursors) Cursors(context.Context) ([]store.SubscriptionCursor, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []store.SubscriptionCursor
	for id, o := range c.cursors {
		out = append(out, store.SubscriptionCursor{SubscriptionID: id, Topic: "t", Partition: 0, Offset: o})
	}
	return out, nil
}

// get returns subscription id's cursor.
func (c *fakeCursors) get(id string) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.cursors[id]
	return o, ok
}

func (c *fakeCursors) state() (saves, deletes, rows int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.saves, c.deletes, len(c.cursors)
}

// pacedSender delivers to "https://slow.example.com" one request per token
// of pace (all at once once pace is closed), and to the rest as fakeSender
// does; it records the offsets each URL got.
type pacedSender struct {
	*fakeSender
	pace chan struct{}
	// permits, when set before the first Send, paces the slow receiver
	// instead of pace: each attempt takes one.
	permits chan struct{}
	mu      sync.Mutex
	offsets map[string][]int64
}

func (p *pacedSender) Send(ctx context.Context, req webhook.Request) webhook.Result {
	if req.URL == "https://slow.example.com" {
		gate := p.pace
		if p.permits != nil {
			gate = p.permits
		}
		select {
		case <-ctx.Done():
			return webhook.Result{Outcome: webhook.OutcomeRetry, Err: ctx.Err()}
		case <-gate:
		}
	}
	res := p.fakeSender.Send(ctx, req)
	var body struct {
		Source struct {
			Offset int64 `json:"offset,string"`
		} `json:"source"`
	}
	if err := json.Unmarshal(req.Body, &body); err != nil {
		var loose struct {
			Source struct {
				Offset int64 `json:"offset"`
			} `json:"source"`
		}
		if err := json.Unmarshal(req.Body, &loose); err != nil {
			panic(fmt.Sprintf("the event body does not decode: %v: %s", err, req.Body))
		}
		body.Source.Offset = loose.Source.Offset
	}
	p.mu.Lock()
	p.offsets[req.URL] = append(p.offsets[req.URL], body.Source.Offset)
	p.mu.Unlock()
	return res
}

// got returns the offsets url received, sorted.
func (p *pacedSender) got(url string) []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(slices.Values(p.offsets[url]))
}

type detachBundle struct {
	d       *Dispatcher
	store   *fakeStore
	sender  *pacedSender
	cursors *fakeCursors
	log     *fakeLog
}

func setupDetach(t *testing.T, log *fakeLog, cursors *fakeCursors, subs ...*match.Subscription) *detachBundle {
	t.Helper()
	b := &detachBundle{store: newFakeStore(), cursors: cursors, log: log,
		sender: &pacedSender{fakeSender: newFakeSender(), pace: make(chan struct{}), offsets: map[string][]int64{}}}
	cfg := Config{LaneQueue: 2, LaneWait: 100 * time.Millisecond, DrainTimeout: 200 * time.Millisecond,
		Detach: DetachConfig{CheckpointEvents: 50, CheckpointInterval: time.Hour, RejoinLag: 8, FetchWait: 5 * time.Millisecond}}
	d, err := New(Params{Config: cfg, Store: b.store, Sender: b.sender, Log: log, Cursors: cursors,
		Matcher: staticSubs{match.NewIndex(subs, match.IndexOptions{})}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	b.d = d
	t.Cleanup(func() {
		b.releaseSlow()
		d.Stop()
		if n := log.readers.Load(); n != 0 {
			t.Errorf("%d position readers left open", n)
		}
	})
	return b
}

func (b *detachBundle) releaseSlow() {
	select {
	case <-b.sender.pace:
	default:
		close(b.sender.pace)
	}
}

// readerInFlight is what the reader of subscription id has handed on of p
// and not settled (0 when it is not detached on p).
func (b *detachBundle) readerInFlight(id string, p source.Partition) int {
	b.d.mu.Lock()
	tg := b.d.targets[id]
	b.d.mu.Unlock()
	if tg == nil {
		return 0
	}
	tg.dmu.Lock()
	defer tg.dmu.Unlock()
	if tg.det == nil || tg.det.parts[p] == nil {
		return 0
	}
	return tg.det.cu.partInFlight(tg.det.parts[p])
}

func seq(from, to int64) []int64 {
	var out []int64
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// TestDetachedSubscriptionCatchesUpAndRejoins: a receiver that stops taking
// events is detached, so the shared consumer finishes the backlog and the
// healthy subscription gets every event while the slow one has had at most
// its lane's worth; nothing is written to the retry queue, the cursor is
// saved in batches, and once the slow receiver goes on, its own reader
// delivers the rest and rejoins: every event exactly once, none lost, the
// events after the rejoin by the shared consumer.
func TestDetachedSubscriptionCatchesUpAndRejoins(t *testing.T) {
	t.Parallel()
	const backlog, after = 300, 40
	log := newFakeLog(backlog + after)
	b := setupDetach(t, log, newFakeCursors(),
		webhookSub("sub_ok", "https://ok.example.com"), webhookSub("sub_slow", "https://slow.example.com"))
	var done atomic.Int64
	all := msgs(backlog+after, &done)
	for _, m := range all[:backlog] {
		b.d.Handle(t.Context(), m)
	}
	// Done but for the slow subscription's events that were on its lane
	// (queue 2, one attempt under way) when it was detached: a bounded lag
	// of the commit, never of the reading.
	eventually(t, "the backlog Done for the shared consumer", func() bool { return done.Load() >= backlog-3 })
	eventually(t, "the healthy subscription has every event", func() bool { return b.sender.delivered("https://ok.example.com") == backlog })
	if got := b.sender.delivered("https://slow.example.com"); got != 0 {
		t.Fatalf("the slow receiver took no request yet, but %d were delivered", got)
	}
	if rows, _, _ := b.store.stats(); rows != 0 {
		t.Fatalf("%d rows in the retry queue for a receiver that merely is slow; want 0", rows)
	}
	if cs, _ := b.cursors.Cursors(t.Context()); !slices.ContainsFunc(cs, func(c store.SubscriptionCursor) bool { return c.SubscriptionID == "sub_slow" }) {
		t.Fatalf("cursors while detached: %v; want sub_slow's", cs)
	}

	b.releaseSlow()
	eventually(t, "the slow subscription rejoined", func() bool { return b.d.detachedCount.Load() == 0 })
	saves, deletes, rows := b.cursors.state()
	if maxSaves := backlog/50 + 3; saves > maxSaves {
		t.Errorf("%d cursor saves for %d records; want at most %d (batched)", saves, backlog, maxSaves)
	}
	if deletes != 1 || rows != 0 {
		t.Errorf("after the rejoin: %d deletes, %d cursors left; want 1 and 0", deletes, rows)
	}
	for _, m := range all[backlog:] {
		b.d.Handle(t.Context(), m)
	}
	eventually(t, "every event Done", func() bool { return done.Load() == backlog+after })
	eventually(t, "every event delivered to the slow receiver", func() bool {
		return len(b.sender.got("https://slow.example.com")) >= backlog+after
	})
	for _, url := range []string{"https://ok.example.com", "https://slow.example.com"} {
		if got := b.sender.got(url); !slices.Equal(got, seq(0, backlog+after)) {
			t.Errorf("%s got %d events, want offsets 0..%d exactly once: %v", url, len(got), backlog+after-1, got)
		}
	}
	if rows, _, _ := b.store.stats(); rows != 0 {
		t.Errorf("%d rows in the retry queue; want 0", rows)
	}
}

// TestDetachedSubscriptionResumesFromItsCursor: after a crash while a
// subscription was detached, its cursor makes the dispatcher that is given
// the partition read it on its own again: events before the cursor that the shared
// consumer reads again are its (they may not have been settled), those from
// the cursor on the reader's; every event is delivered once, and the
// subscription rejoins.
func TestDetachedSubscriptionResumesFromItsCursor(t *testing.T) {
	t.Parallel()
	const n, cursor, committed = 200, 100, 90
	cursors := newFakeCursors()
	if err := cursors.SaveCursors(t.Context(), []store.SubscriptionCursor{{SubscriptionID: "sub_slow", Topic: "t", Offset: cursor}}); err != nil {
		t.Fatal(err)
	}
	b := setupDetach(t, newFakeLog(n), cursors, webhookSub("sub_slow", "https://slow.example.com"))
	b.releaseSlow()
	// The source gives this replica the partition (source.Ownership).
	if err := b.d.Assigned(t.Context(), []source.Assignment{{Partition: source.Partition{Stream: "t", ID: 0}, Next: committed}}); err != nil {
		t.Fatal(err)
	}
	var done atomic.Int64
	all := msgs(n, &done)
	for _, m := range all[committed:] { // the shared consumer resumes at its committed offset
		b.d.Handle(t.Context(), m)
	}
	eventually(t, "the resumed subscription rejoined", func() bool { return b.d.detachedCount.Load() == 0 })
	eventually(t, "every event Done", func() bool { return done.Load() == n-committed })
	eventually(t, "every event delivered", func() bool { return len(b.sender.got("https://slow.example.com")) >= n-committed })
	if got := b.sender.got("https://slow.example.com"); !slices.Equal(got, seq(committed, n)) {
		t.Errorf("got %d events, want offsets %d..%d exactly once: %v", len(got), committed, n-1, got)
	}
}

// TestStopEndsDetachedReaders: Stop ends a reader that is waiting for its
// receiver, saving no cursor past what was settled (goleak checks the
// goroutines end).
func TestStopEndsDetachedReaders(t *testing.T) {
	t.Parallel()
	const n = 100
	cursors := newFakeCursors()
	b := setupDetach(t, newFakeLog(n), cursors, webhookSub("sub_slow", "https://slow.example.com"))
	var done atomic.Int64
	for _, m := range msgs(n, &done) {
		b.d.Handle(t.Context(), m)
	}
	eventually(t, "the backlog Done", func() bool { return done.Load() >= n-3 })
	eventually(t, "the reader is waiting for the receiver", func() bool { return b.log.fetches.Load() > 0 })
	b.d.Stop()
	_, _, rows := cursors.state()
	if rows != 1 {
		t.Fatalf("%d cursors after Stop; want the detached subscription's", rows)
	}
	// Nothing was delivered to the receiver: the cursor stays where the
	// subscription was detached, after the one lane's queue (2) and the
	// attempt under way.
	c, _ := cursors.Cursors(context.Background())
	if c[0].Offset > 3 {
		t.Errorf("cursor %d passes events never delivered (detached at 3 at the latest)", c[0].Offset)
	}
}

// TestStopSavesCursorsAfterTheDrain: the events a detached subscription's
// reader has handed to its lanes when Stop begins are delivered while Stop
// drains the lanes, and the cursor Stop saves passes them, so that a clean
// stop delivers none of them again after a restart. (Saved when the reader
// ended, before the drain, the cursor stopped at the first of them.)
func TestStopSavesCursorsAfterTheDrain(t *testing.T) {
	t.Parallel()
	const n = 100
	cursors := newFakeCursors()
	log := newFakeLog(n)
	b := setupDetach(t, log, cursors, webhookSub("sub_slow", "https://slow.example.com"))
	const slow = "https://slow.example.com"
	b.sender.permits = make(chan struct{}, n)
	var done atomic.Int64
	for _, m := range msgs(n, &done) {
		b.d.Handle(t.Context(), m)
	}
	eventually(t, "the backlog Done", func() bool { return done.Load() >= n-3 })
	eventually(t, "the reader is waiting for the receiver", func() bool { return log.fetches.Load() > 0 })
	// Six deliveries: the shared consumer's events in the lanes go, and
	// the reader hands its own to the lanes behind them.
	for range 6 {
		b.sender.permits <- struct{}{}
	}
	eventually(t, "six deliveries", func() bool { return len(b.sender.got(slow)) == 6 })
	// The receiver answers again only once the reader has ended: what the
	// lanes hold then is delivered by Stop's drain.
	go func() {
		for log.readers.Load() > 0 {
			time.Sleep(time.Millisecond)
		}
		for range n {
			b.sender.permits <- struct{}{}
		}
	}()
	b.d.Stop()
	got := b.sender.got(slow)
	if len(got) <= 6 {
		t.Fatalf("%d deliveries; want the drain to deliver what the lanes held", len(got))
	}
	c, ok := cursors.get("sub_slow")
	if !ok {
		t.Fatal("no cursor after Stop; want the detached subscription's")
	}
	if last := got[len(got)-1]; c <= last {
		t.Errorf("cursor %d after Stop; want past %d, the last event the drain delivered", c, last)
	}
	for o := range c {
		if !slices.Contains(got, o) {
			t.Fatalf("cursor %d passes offset %d, which was never delivered: lost", c, o)
		}
	}
}

// flakyURL is the receiver flakySender fails or serves as told.
const flakyURL = "https://flaky.example.com"

// flakySender answers flakyURL 503 while failing is set, 204 otherwise;
// while gate is set, each attempt first waits for it to close. It counts
// the attempts and records the offsets delivered. Other URLs are answered
// as fakeSender does.
type flakySender struct {
	*fakeSender
	mu        sync.Mutex
	failing   bool
	gate      chan struct{}
	attempts  int
	inside    int
	delivered []int64
}

func (f *flakySender) Send(ctx context.Context, req webhook.Request) webhook.Result {
	if req.URL != flakyURL {
		return f.fakeSender.Send(ctx, req)
	}
	f.mu.Lock()
	f.attempts++
	f.inside++
	gate := f.gate
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inside--
		f.mu.Unlock()
	}()
	if gate != nil {
		select {
		case <-ctx.Done():
			return webhook.Result{Outcome: webhook.OutcomeRetry, Err: ctx.Err()}
		case <-gate:
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		return webhook.Result{StatusCode: 503, Outcome: webhook.OutcomeRetry, Err: errors.New("503")}
	}
	f.delivered = append(f.delivered, eventOffset(req.Body))
	return webhook.Result{StatusCode: 204, Outcome: webhook.OutcomeDelivered}
}

func (f *flakySender) set(failing bool, gate chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing, f.gate = failing, gate
}

func (f *flakySender) state() (attempts, inside int, delivered []int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts, f.inside, slices.Clone(f.delivered)
}

// eventOffset is the source offset of an event body.
func eventOffset(body []byte) int64 {
	var ev struct {
		Source struct {
			Offset json.Number `json:"offset"`
		} `json:"source"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		panic(fmt.Sprintf("the event body does not decode: %v: %s", err, body))
	}
	o, err := ev.Source.Offset.Int64() // a JSON number or a string holding one
	if err != nil {
		panic(fmt.Sprintf("the event's offset %q: %v", ev.Source.Offset, err))
	}
	return o
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type failingBundle struct {
	d       *Dispatcher
	store   *fakeStore
	sender  *flakySender
	cursors *fakeCursors
	clock   *fakeClock
}

// setupFailing is setupDetach with flakySender (failing from the start),
// a breaker of threshold 3 and a clock the test moves.
func setupFailing(t *testing.T, n int, breaker BreakerConfig, detach DetachConfig) *failingBundle {
	t.Helper()
	log := newFakeLog(n)
	b := &failingBundle{store: newFakeStore(), cursors: newFakeCursors(),
		sender: &flakySender{fakeSender: newFakeSender(), failing: true},
		clock:  &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	detach.CheckpointEvents, detach.CheckpointInterval, detach.RejoinLag, detach.FetchWait = 50, time.Hour, 8, 5*time.Millisecond
	breaker.Threshold = 3
	cfg := Config{LaneQueue: 2, LaneWait: 100 * time.Millisecond, DrainTimeout: 200 * time.Millisecond, Breaker: breaker, Detach: detach}
	subs := []*match.Subscription{webhookSub("sub_ok", "https://ok.example.com"), webhookSub("sub_flaky", flakyURL)}
	d, err := New(Params{Config: cfg, Store: b.store, Sender: b.sender, Log: log, Cursors: b.cursors, Now: b.clock.Now,
		Matcher: staticSubs{match.NewIndex(subs, match.IndexOptions{})}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	b.d = d
	t.Cleanup(func() {
		b.sender.set(false, nil)
		d.Stop()
		if n := log.readers.Load(); n != 0 {
			t.Errorf("%d position readers left open", n)
		}
	})
	return b
}

// queuedAtOpen bounds what setupFailing's lanes hold when sub_flaky's
// circuit opens: a queue of 2 and the attempt under way, on the shared
// consumer's side and, when a slow machine detached the subscription for
// its lane wait before its circuit opened, on its reader's too. Those
// events were queued before the circuit opened: they are attempted (and
// fail) or, once it is open, parked without an attempt. No other event of
// a reader that holds is written to the retry queue.
const queuedAtOpen = 2 * (2 + 1)

// rows returns the offsets of sub_flaky's rows in the retry queue, sorted.
func (b *failingBundle) rows() []int64 {
	b.store.mu.Lock()
	defer b.store.mu.Unlock()
	var out []int64
	for _, d := range b.store.rows {
		if d.SubscriptionID == "sub_flaky" {
			out = append(out, eventOffset(d.Event))
		}
	}
	slices.Sort(out)
	return out
}

func (b *failingBundle) cursor() (int64, bool) { return b.cursors.get("sub_flaky") }

func (b *failingBundle) holdWaits() int64 {
	b.d.mu.Lock()
	defer b.d.mu.Unlock()
	if t := b.d.targets["sub_flaky"]; t != nil {
		return t.holdWaits.Load()
	}
	return 0
}

// handleAll hands n records to the shared consumer and waits until each is
// Done and the healthy receiver has them all.
func (b *failingBundle) handleAll(t *testing.T, n int) {
	t.Helper()
	var done atomic.Int64
	for _, m := range msgs(n, &done) {
		b.d.Handle(t.Context(), m)
	}
	eventually(t, "every message Done", func() bool { return done.Load() == int64(n) })
	eventually(t, "the healthy subscription has every event", func() bool { return b.sender.fakeSender.delivered("https://ok.example.com") == n })
}

// TestFailingReceiverLagsOnItsCursor: a failing receiver opens its circuit
// and is detached; the healthy subscription gets everything and the shared
// consumer settles every message, while the failing one's reader holds its
// events on its cursor: the only rows written are its failed attempts and
// what its lanes held when the circuit opened (parked). After
// the cooldown one probe passes and the others wait for its result; once the
// receiver answers again, every event arrives (none lost, none twice) and the
// subscription rejoins.
func TestFailingReceiverLagsOnItsCursor(t *testing.T) {
	t.Parallel()
	const n = 200
	const cooldown = time.Minute
	b := setupFailing(t, n, BreakerConfig{Cooldown: cooldown, ProbeTimeout: time.Hour}, DetachConfig{})
	b.handleAll(t, n)
	eventually(t, "the failing subscription's reader holding", func() bool { return b.holdWaits() > 0 })

	failed, _, _ := b.sender.state()
	rows := b.rows()
	parked := int(counterValue(t, b.d.metrics.deliveries.WithLabelValues("parked")))
	if len(rows) != failed+parked {
		t.Fatalf("%d rows in the retry queue for %d failed attempts and %d parked events", len(rows), failed, parked)
	}
	// The breaker's 3, and what was on the lanes when it opened: attempted
	// while it was closed, parked once it was open; nothing of what the
	// reader reached while it was open (held on the cursor).
	if bound := 3 + queuedAtOpen; len(rows) > bound {
		t.Errorf("%d rows (%d failed attempts, %d parked); want at most %d", len(rows), failed, parked, bound)
	}
	cursor, ok := b.cursor()
	if !ok {
		t.Fatal("no cursor for the detached subscription")
	}
	for o := range int64(n) {
		if o < cursor && !slices.Contains(rows, o) {
			t.Fatalf("offset %d is neither in the retry queue nor at or after the cursor %d: lost", o, cursor)
		}
	}

	// Half-open: one probe, held by the receiver; the reader looks again
	// and again, and lets no other event through.
	gate := make(chan struct{})
	b.sender.set(true, gate)
	b.clock.advance(cooldown + time.Second)
	eventually(t, "the probe under way", func() bool { a, in, _ := b.sender.state(); return a == failed+1 && in == 1 })
	w := b.holdWaits()
	eventually(t, "the reader looking again while the probe is under way", func() bool { return b.holdWaits() >= w+2 })
	if a, _, _ := b.sender.state(); a != failed+1 {
		t.Fatalf("%d attempts while half-open; want the one probe", a-failed)
	}

	// The receiver recovers: the probe succeeds and the reader delivers
	// the rest at the receiver's pace, then rejoins.
	b.sender.set(false, nil)
	close(gate)
	eventually(t, "the subscription rejoined", func() bool { return b.d.detachedCount.Load() == 0 })
	eventually(t, "every held event delivered", func() bool { _, _, got := b.sender.state(); return len(got)+len(b.rows()) >= n })
	_, _, got := b.sender.state()
	all := slices.Sorted(slices.Values(append(got, b.rows()...)))
	if !slices.Equal(all, seq(0, n)) {
		t.Errorf("delivered %d and queued %d; want offsets 0..%d once each: %v", len(got), len(b.rows()), n-1, all)
	}
	if r := len(b.rows()); r != len(rows) {
		t.Errorf("%d rows after the recovery; want the %d written while the circuit opened (%d failed attempts, %d parked), no more", r, len(rows), failed, parked)
	}
	if _, ok := b.cursor(); ok {
		t.Error("the cursor is left after the rejoin")
	}
}

// TestHoldFailingParksOldEvents: a reader that has held its events for
// HoldFailing without the circuit closing parks them in the retry queue, so
// its cursor moves past them before the topic's retention can take them.
func TestHoldFailingParksOldEvents(t *testing.T) {
	t.Parallel()
	const n = 120
	const hold = 10 * time.Minute
	b := setupFailing(t, n, BreakerConfig{Cooldown: time.Hour}, DetachConfig{HoldFailing: hold})
	b.handleAll(t, n)
	eventually(t, "the failing subscription's reader holding", func() bool { return b.holdWaits() > 0 })
	if parked := counterValue(t, b.d.metrics.deliveries.WithLabelValues("parked")); parked > queuedAtOpen {
		t.Fatalf("%v events parked before HoldFailing; want at most the %d queued before the circuit opened", parked, queuedAtOpen)
	}
	b.clock.advance(hold)
	eventually(t, "every event in the retry queue", func() bool { return len(b.rows()) == n })
	failed, _, _ := b.sender.state()
	if parked := counterValue(t, b.d.metrics.deliveries.WithLabelValues("parked")); int(parked) != n-failed {
		t.Errorf("%v parked and %d failed; want %d in all", parked, failed, n)
	}
	// A row is in the store before its writer tells the reader the event
	// is settled: Stop saves the cursor once the writers are done, so it
	// passes every parked event however late that news came.
	b.d.Stop()
	if c, _ := b.cursor(); c != n {
		t.Errorf("cursor %d after every event was parked; want %d", c, n)
	}
}

// TestDisableAfterWhileHolding: a receiver that keeps failing while its
// reader holds its events is still disabled once it has failed for
// DisableAfter: the probes, one per cooldown, are failures the breaker
// counts.
func TestDisableAfterWhileHolding(t *testing.T) {
	t.Parallel()
	const n = 60
	const cooldown, disableAfter = time.Minute, 10 * time.Minute
	b := setupFailing(t, n, BreakerConfig{Cooldown: cooldown, DisableAfter: disableAfter}, DetachConfig{})
	b.handleAll(t, n)
	eventually(t, "the failing subscription's reader holding", func() bool { return b.holdWaits() > 0 })
	state := func() string {
		b.store.mu.Lock()
		defer b.store.mu.Unlock()
		return b.store.states["sub_flaky"]
	}
	if s := state(); s != "" {
		t.Fatalf("state %q before DisableAfter; want it untouched", s)
	}
	failed, _, _ := b.sender.state()
	b.clock.advance(disableAfter + cooldown)
	eventually(t, "the probe failed", func() bool { a, _, _ := b.sender.state(); return a > failed })
	eventually(t, "the subscription DISABLED", func() bool { return state() == outflowv1.Subscription_DISABLED.String() })
	if parked := counterValue(t, b.d.metrics.deliveries.WithLabelValues("parked")); parked > queuedAtOpen {
		t.Errorf("%v events parked; want at most the %d queued before the circuit opened (the rest held on the cursor, HoldFailing is 15m)", parked, queuedAtOpen)
	}
}

// TestStopWhileHoldingFailingEvents: Stop ends a reader that holds its
// events for an open circuit (goleak checks the goroutines end), and its
// cursor does not pass the events it held.
func TestStopWhileHoldingFailingEvents(t *testing.T) {
	t.Parallel()
	const n = 100
	b := setupFailing(t, n, BreakerConfig{Cooldown: time.Hour}, DetachConfig{})
	b.handleAll(t, n)
	eventually(t, "the failing subscription's reader holding", func() bool { return b.holdWaits() > 0 })
	b.d.Stop()
	rows := b.rows()
	c, ok := b.cursor()
	if !ok {
		t.Fatal("no cursor after Stop; want the detached subscription's")
	}
	for o := range int64(n) {
		if o < c && !slices.Contains(rows, o) {
			t.Fatalf("cursor %d passes offset %d, which is not in the retry queue: lost", c, o)
		}
	}
	if len(rows) >= n/2 {
		t.Errorf("%d rows for %d events; want the failed attempts only", len(rows), n)
	}
}

// detachSlowAfterTen hands a backlog of n records to a dispatcher whose one
// subscription, sub_slow, detaches behind them, and lets its receiver take
// ten events.
func detachSlowAfterTen(t *testing.T, log *fakeLog, cursors *fakeCursors, n int) *detachBundle {
	t.Helper()
	b := setupDetach(t, log, cursors, webhookSub("sub_slow", "https://slow.example.com"))
	var done atomic.Int64
	for _, m := range msgs(n, &done) {
		b.d.Handle(t.Context(), m)
	}
	eventually(t, "the backlog Done for the shared consumer", func() bool { return done.Load() >= int64(n)-3 })
	for range 10 {
		b.sender.pace <- struct{}{}
	}
	eventually(t, "ten events delivered", func() bool { return len(b.sender.got("https://slow.example.com")) >= 10 })
	return b
}

// TestRevokedCursorIsHandedOverToTheNextOwner: a replica that gives up the
// partition of a detached subscription (a rebalance) stops its reader and
// saves the cursor at the first event it had not settled; the partition's
// next owner takes the cursor up before its shared consumer reads, so every
// event reaches the receiver (a few twice: those in flight at the
// hand-over), the new owner delivers each event from the cursor on exactly
// once, and, rejoined, deletes the cursor.
func TestRevokedCursorIsHandedOverToTheNextOwner(t *testing.T) {
	t.Parallel()
	const n = 300
	part := []source.Partition{{Stream: "t", ID: 0}}
	log, cursors := newFakeLog(n), newFakeCursors()
	a := detachSlowAfterTen(t, log, cursors, n)
	// The rebalance's budget runs out while the lane still holds events.
	budget, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	a.d.Revoked(budget, part)
	eventually(t, "the first owner's reader ended", func() bool { return a.d.detachedCount.Load() == 0 })
	cs, _ := cursors.Cursors(t.Context())
	if len(cs) != 1 {
		t.Fatalf("cursors after the hand-over: %v; want sub_slow's", cs)
	}
	handed := cs[0].Offset
	gotA := a.sender.got("https://slow.example.com")
	if handed < 3 || handed > gotA[len(gotA)-1]+1 {
		t.Fatalf("handed-over cursor %d; want past the events detached at (3) and at most one past the last delivered (%d)", handed, gotA[len(gotA)-1])
	}
	if !slices.Equal(gotA[:handed], seq(0, handed)) {
		t.Fatalf("the first owner delivered %v; want every offset below the cursor %d", gotA, handed)
	}

	b := setupDetach(t, log, cursors, webhookSub("sub_slow", "https://slow.example.com"))
	b.releaseSlow()
	if err := b.d.Assigned(t.Context(), []source.Assignment{{Partition: part[0], Next: 0}}); err != nil {
		t.Fatal(err)
	}
	if got := b.d.detachedCount.Load(); got != 1 {
		t.Fatalf("%d readers after taking the partition up; want the handed-over subscription's", got)
	}
	var doneB atomic.Int64
	for _, m := range msgs(n, &doneB) { // its shared consumer starts at the committed offset, here 0
		b.d.Handle(t.Context(), m)
	}
	eventually(t, "the next owner rejoined", func() bool { return b.d.detachedCount.Load() == 0 })
	eventually(t, "every event Done for the next owner", func() bool { return doneB.Load() == n })
	eventually(t, "the next owner delivered the rest", func() bool { return len(b.sender.got("https://slow.example.com")) >= n-int(handed) })
	gotB := b.sender.got("https://slow.example.com")
	var fromCursor []int64
	for _, o := range gotB {
		if o >= handed {
			fromCursor = append(fromCursor, o)
		}
	}
	if !slices.Equal(fromCursor, seq(handed, n)) {
		t.Errorf("the next owner delivered %d events from the cursor %d; want %d..%d exactly once", len(fromCursor), handed, handed, n-1)
	}
	if _, _, rows := cursors.state(); rows != 0 {
		t.Errorf("%d cursors after the next owner rejoined; want 0", rows)
	}
}

// TestRevokedWaitsForWhatIsInFlight: given time (a shutdown's drain),
// Revoked lets what the reader already handed on settle before it saves
// the cursor, so the next owner re-delivers none of it: the cursor is one
// past the last event delivered, and every event below it was delivered
// once.
func TestRevokedWaitsForWhatIsInFlight(t *testing.T) {
	t.Parallel()
	const n = 300
	part := []source.Partition{{Stream: "t", ID: 0}}
	log, cursors := newFakeLog(n), newFakeCursors()
	a := detachSlowAfterTen(t, log, cursors, n)
	eventually(t, "the reader's lane full again", func() bool { return a.readerInFlight("sub_slow", part[0]) >= 3 })
	budget, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	revoked := make(chan struct{})
	go func() {
		defer close(revoked)
		a.d.Revoked(budget, part)
	}()
	eventually(t, "the partition given up", func() bool {
		a.d.mu.Lock()
		tg := a.d.targets["sub_slow"]
		a.d.mu.Unlock()
		return tg != nil && !tg.detached.Load()
	})
	select {
	case <-revoked:
		t.Fatal("Revoked returned while the lane still held events it had handed on")
	case <-time.After(20 * time.Millisecond):
	}
	a.releaseSlow() // the receiver catches up on what it was given
	<-revoked
	cs, _ := cursors.Cursors(t.Context())
	if len(cs) != 1 {
		t.Fatalf("cursors after the hand-over: %v; want sub_slow's", cs)
	}
	handed := cs[0].Offset
	got := a.sender.got("https://slow.example.com")
	if len(got) <= 10 {
		t.Fatalf("%d events delivered; want those in the lane too", len(got))
	}
	if !slices.Equal(got, seq(0, handed)) {
		t.Errorf("delivered %v with the cursor handed over at %d; want each offset below the cursor once and none at or past it", got, handed)
	}
}

// TestALateDecisionLeavesTheRejoinedReadersEvents: the shared consumer
// notes an offset as seen before it looks at the detachment, so a rejoin
// may hand over after an offset whose decision comes only once the reader
// has rejoined (it delivered that offset). Such a decision, here made after
// the rejoin, leaves the event to the reader: Done, not delivered again;
// offsets before the reader's start are the shared consumer's. Once the
// partition is revoked, a re-read is delivered again.
func TestALateDecisionLeavesTheRejoinedReadersEvents(t *testing.T) {
	t.Parallel()
	const n, cursor = 50, 20
	b := takeUpAtTheEnd(t, n, cursor)
	part := source.Partition{Stream: "t", ID: 0}
	var done atomic.Int64
	ms := msgs(n, &done)
	for _, o := range []int{30, 49, 19} {
		b.d.Handle(t.Context(), ms[o])
	}
	eventually(t, "the three late messages Done", func() bool { return done.Load() == 3 })
	want := seq(cursor-1, n) // got sorts
	eventually(t, "offset 19 delivered by the shared consumer", func() bool { return len(b.sender.got("https://slow.example.com")) >= len(want) })
	if got := b.sender.got("https://slow.example.com"); !slices.Equal(got, want) {
		t.Errorf("got %v; want the reader's %d..%d and the shared consumer's 19, each once", got, cursor, n-1)
	}
	b.d.Revoked(t.Context(), []source.Partition{part})
	b.d.Handle(t.Context(), ms[30])
	eventually(t, "offset 30 delivered again after the revoke", func() bool { return len(b.sender.got("https://slow.example.com")) == len(want)+1 })
}

// TestAssignedTakesUpOnlyItsPartitionsCursors: a replica given other
// partitions leaves a cursor alone (another replica reads it).
func TestAssignedTakesUpOnlyItsPartitionsCursors(t *testing.T) {
	t.Parallel()
	cursors := newFakeCursors()
	if err := cursors.SaveCursors(t.Context(), []store.SubscriptionCursor{{SubscriptionID: "sub_slow", Topic: "t", Offset: 7}}); err != nil {
		t.Fatal(err)
	}
	b := setupDetach(t, newFakeLog(10), cursors, webhookSub("sub_slow", "https://slow.example.com"))
	if err := b.d.Assigned(t.Context(), []source.Assignment{{Partition: source.Partition{Stream: "t", ID: 1}}, {Partition: source.Partition{Stream: "u", ID: 0}}}); err != nil {
		t.Fatal(err)
	}
	if got := b.d.detachedCount.Load(); got != 0 {
		t.Errorf("%d readers for a cursor of a partition this replica does not own; want 0", got)
	}
	b.d.Revoked(t.Context(), []source.Partition{{Stream: "t", ID: 1}})
	if saves, deletes, rows := cursors.state(); saves != 1 || deletes != 0 || rows != 1 {
		t.Errorf("cursor store after: %d saves, %d deletes, %d rows; want it untouched (1, 0, 1)", saves, deletes, rows)
	}
}

// TestTakenUpCursorRejoinsOnAQuietPartition: a replica given a partition
// whose shared consumer starts at its end (nothing new is produced) takes
// the cursor up, delivers from it to the end, and rejoins without waiting
// for a record that may never come; the cursor is deleted.
func TestTakenUpCursorRejoinsOnAQuietPartition(t *testing.T) {
	t.Parallel()
	const n, cursor = 50, 20
	b := takeUpAtTheEnd(t, n, cursor)
	if got := b.sender.got("https://slow.example.com"); !slices.Equal(got, seq(cursor, n)) {
		t.Errorf("got %v; want offsets %d..%d exactly once", got, cursor, n-1)
	}
	if _, _, rows := b.cursors.state(); rows != 0 {
		t.Errorf("%d cursors after the rejoin; want 0", rows)
	}
}

// takeUpAtTheEnd gives a new replica partition t/0 of n records, whose
// shared consumer starts at its end, and sub_slow's cursor at cursor, and
// waits until the reader it takes the cursor up with has rejoined.
func takeUpAtTheEnd(t *testing.T, n, cursor int64) *detachBundle {
	t.Helper()
	cursors := newFakeCursors()
	if err := cursors.SaveCursors(t.Context(), []store.SubscriptionCursor{{SubscriptionID: "sub_slow", Topic: "t", Offset: cursor}}); err != nil {
		t.Fatal(err)
	}
	b := setupDetach(t, newFakeLog(int(n)), cursors, webhookSub("sub_slow", "https://slow.example.com"))
	b.releaseSlow()
	if err := b.d.Assigned(t.Context(), []source.Assignment{{Partition: source.Partition{Stream: "t", ID: 0}, Next: n}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the reader rejoined", func() bool { return b.d.detachedCount.Load() == 0 })
	return b
}
