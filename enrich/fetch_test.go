package enrich

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/tecton"
)

// testRequest is the first request Enrich makes for testRecord with testEnrichment.
func testRequest() tecton.Request {
	return tecton.Request{
		Workspace:      "prod",
		FeatureService: "promo_fs",
		JoinKeys:       map[string]string{"user_id": "u1", "org": "acme"},
	}
}

// userRecord is testRecord for another user.
func userRecord(user string) *record.Record {
	rec := testRecord()
	rec.EntityKeys = map[string]string{"user": user, "org": "acme"}
	return rec
}

// echoUser answers a fresh vector whose purchases value is the request's user_id, so that
// each waiter can check it got its own row.
func echoUser(_ int, req tecton.Request) (*tecton.Vector, error) {
	return testVector(recordTime, req.JoinKeys["user_id"]), nil
}

type enrichOutcome struct {
	res *Result
	err error
}

// enrichAll runs Enrich for every record concurrently and returns the outcomes in order.
func enrichAll(ctx context.Context, e *Enricher, recs []*record.Record, mode outflowv1.Enrichment_Consistency) []enrichOutcome {
	out := make([]enrichOutcome, len(recs))
	var wg sync.WaitGroup
	for i, rec := range recs {
		wg.Go(func() {
			res, err := e.Enrich(ctx, rec, testEnrichment(mode, 0))
			out[i] = enrichOutcome{res, err}
		})
	}
	wg.Wait()
	return out
}

func TestCoalescing(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: caughtUpFrom(1), gate: make(chan struct{})}
	e, _ := newTestEnricher(t, store, Config{})
	recs := make([]*record.Record, 50)
	for i := range recs {
		recs[i] = testRecord()
	}
	done := make(chan []enrichOutcome)
	go func() { done <- enrichAll(t.Context(), e, recs, outflowv1.Enrichment_STRICT) }()

	pollUntil(t, "all 50 callers wait for one call", func() bool { return e.waiters(testRequest()) == 50 })
	close(store.gate)
	outs := <-done

	if calls := store.snapshot(); len(calls) != 1 {
		t.Fatalf("store saw %d calls, want 1", len(calls))
	}
	for i, o := range outs {
		if o.err != nil {
			t.Fatalf("caller %d: %v", i, o.err)
		}
		if o.res.Attempts != 1 || o.res.Vector != outs[0].res.Vector {
			t.Errorf("caller %d: attempts %d, shared vector %v", i, o.res.Attempts, o.res.Vector == outs[0].res.Vector)
		}
	}
	if e.waiters(testRequest()) != 0 {
		t.Error("the answered call is still in flight")
	}
}

func TestCoalescingCanceledWaiter(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: caughtUpFrom(1), gate: make(chan struct{})}
	e, _ := newTestEnricher(t, store, Config{})

	cancelCtx, cancel := context.WithCancel(t.Context())
	canceled := make(chan error, 1)
	go func() {
		_, err := e.Enrich(cancelCtx, testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 0))
		canceled <- err
	}()
	pollUntil(t, "the first caller waits", func() bool { return e.waiters(testRequest()) == 1 })
	done := make(chan []enrichOutcome)
	go func() {
		done <- enrichAll(t.Context(), e, []*record.Record{testRecord(), testRecord()}, outflowv1.Enrichment_STRICT)
	}()
	pollUntil(t, "three callers wait", func() bool { return e.waiters(testRequest()) == 3 })

	cancel()
	if err := <-canceled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v, want context.Canceled", err)
	}
	if n := e.waiters(testRequest()); n != 2 {
		t.Fatalf("%d waiters after one left, want 2", n)
	}
	close(store.gate)
	for i, o := range <-done {
		if o.err != nil || o.res.Attempts != 1 {
			t.Errorf("caller %d: %+v, %v; want a result after 1 attempt", i, o.res, o.err)
		}
	}
	if n := len(store.snapshot()); n != 1 {
		t.Errorf("store saw %d calls, want 1", n)
	}
	if n := store.canceledCalls(); n != 0 {
		t.Errorf("the shared call was cancelled %d times, want never", n)
	}
}

// When every waiter of a call has gone the call is cancelled, and a new identical request
// starts a fresh call rather than share the cancelled one.
func TestCoalescingAllWaitersGone(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: caughtUpFrom(1), gate: make(chan struct{})}
	e, _ := newTestEnricher(t, store, Config{})

	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := e.Enrich(ctx, testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 0))
		errc <- err
	}()
	pollUntil(t, "the caller waits", func() bool { return e.waiters(testRequest()) == 1 })
	cancel()
	<-errc
	pollUntil(t, "the abandoned call is cancelled", func() bool { return store.canceledCalls() == 1 })

	close(store.gate)
	res, err := e.Enrich(t.Context(), testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 0))
	if err != nil || res.Attempts != 1 {
		t.Fatalf("Enrich after an abandoned call = %+v, %v", res, err)
	}
	if n := len(store.snapshot()); n != 2 {
		t.Errorf("store saw %d calls, want 2", n)
	}
}

// Coalescing is per (workspace, service, join keys, cache bypass): a difference in any of them
// is a different call, and nothing else (such as map order) is.
func TestCoalescingKeys(t *testing.T) {
	t.Parallel()

	base := testRequest()
	tests := []struct {
		name   string
		change func(*tecton.Request)
		same   bool
	}{
		{"identical", func(*tecton.Request) {}, true},
		{"same keys in another map", func(r *tecton.Request) { r.JoinKeys = map[string]string{"org": "acme", "user_id": "u1"} }, true},
		{"workspace", func(r *tecton.Request) { r.Workspace = "staging" }, false},
		{"service", func(r *tecton.Request) { r.FeatureService = "other_fs" }, false},
		{"join key value", func(r *tecton.Request) { r.JoinKeys = map[string]string{"user_id": "u2", "org": "acme"} }, false},
		{"join key name", func(r *tecton.Request) { r.JoinKeys = map[string]string{"user": "u1", "org": "acme"} }, false},
		{"fewer join keys", func(r *tecton.Request) { r.JoinKeys = map[string]string{"user_id": "u1"} }, false},
		{"bypass", func(r *tecton.Request) { r.BypassCache = true }, false},
		{"separator bytes in values", func(r *tecton.Request) { r.JoinKeys = map[string]string{"org": "4:acme7:user_id2:u1"} }, false},
		{"value moved into name", func(r *tecton.Request) { r.JoinKeys = map[string]string{"org4:acme": "", "user_id": "u1"} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := base
			r.JoinKeys = maps.Clone(base.JoinKeys)
			tt.change(&r)
			if got := keyOf(r) == keyOf(base); got != tt.same {
				t.Errorf("keyOf(%+v) == keyOf(%+v) is %v, want %v", r, base, got, tt.same)
			}
		})
	}
}

func TestBatching(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: echoUser}
	e, clock := newTestEnricher(t, store, Config{BatchWindow: 2 * time.Millisecond})
	recs := make([]*record.Record, 12)
	for i := range recs {
		recs[i] = userRecord(fmt.Sprintf("u%d", i))
	}
	done := make(chan []enrichOutcome)
	go func() { done <- enrichAll(t.Context(), e, recs, outflowv1.Enrichment_STRICT) }()

	// Two batches fill up and go at once; the last two keys wait for the window to end.
	pollUntil(t, "two full batches sent and two keys pending", func() bool {
		return len(store.snapshot()) == 2 && e.pendingCalls("prod", "promo_fs", false) == 2
	})
	clock.Advance(2 * time.Millisecond)
	outs := <-done

	var sizes []int
	for _, c := range store.snapshot() {
		if c.op != opGetFeaturesBatch {
			t.Errorf("op = %s, want %s", c.op, opGetFeaturesBatch)
		}
		sizes = append(sizes, len(c.reqs))
	}
	slices.Sort(sizes)
	if !slices.Equal(sizes, []int{2, 5, 5}) {
		t.Errorf("batch sizes = %v, want [2 5 5]", sizes)
	}
	for i, o := range outs {
		if o.err != nil {
			t.Fatalf("record %d: %v", i, o.err)
		}
		checkResult(t, o.res, new(true), fmt.Sprintf(`"u%d"`, i))
	}
}

func TestBatchingSingleUsesGetFeatures(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: echoUser}
	e, clock := newTestEnricher(t, store, Config{BatchWindow: 2 * time.Millisecond})
	done := make(chan []enrichOutcome)
	go func() {
		done <- enrichAll(t.Context(), e, []*record.Record{userRecord("solo")}, outflowv1.Enrichment_STRICT)
	}()
	pollUntil(t, "the call is pending", func() bool { return e.pendingCalls("prod", "promo_fs", false) == 1 })
	clock.Advance(2 * time.Millisecond)
	o := (<-done)[0]
	if o.err != nil {
		t.Fatal(o.err)
	}
	checkResult(t, o.res, new(true), `"solo"`)
	if calls := store.snapshot(); len(calls) != 1 || calls[0].op != opGetFeatures {
		t.Errorf("calls = %+v, want one get-features", calls)
	}
}

func TestBatchingDisabled(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: echoUser}
	e, _ := newTestEnricher(t, store, Config{BatchWindow: NoBatching})
	recs := make([]*record.Record, 12)
	for i := range recs {
		recs[i] = userRecord(fmt.Sprintf("u%d", i))
	}
	for i, o := range enrichAll(t.Context(), e, recs, outflowv1.Enrichment_STRICT) {
		if o.err != nil {
			t.Fatalf("record %d: %v", i, o.err)
		}
		checkResult(t, o.res, new(true), fmt.Sprintf(`"u%d"`, i))
	}
	calls := store.snapshot()
	if len(calls) != 12 {
		t.Errorf("store saw %d calls, want 12", len(calls))
	}
	for _, c := range calls {
		if c.op != opGetFeatures {
			t.Errorf("op = %s, want %s", c.op, opGetFeatures)
		}
	}
}

// Coalescing happens before batching: 20 callers for 4 keys make one batch of 4 rows.
func TestBatchingCoalesced(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: echoUser}
	e, clock := newTestEnricher(t, store, Config{BatchWindow: 2 * time.Millisecond})
	recs := make([]*record.Record, 20)
	for i := range recs {
		recs[i] = userRecord(fmt.Sprintf("u%d", i%4))
	}
	done := make(chan []enrichOutcome)
	go func() { done <- enrichAll(t.Context(), e, recs, outflowv1.Enrichment_STRICT) }()
	pollUntil(t, "20 callers wait on 4 pending calls", func() bool {
		total := 0
		for u := range 4 {
			total += e.waiters(tecton.Request{Workspace: "prod", FeatureService: "promo_fs",
				JoinKeys: map[string]string{"user_id": fmt.Sprintf("u%d", u), "org": "acme"}})
		}
		return total == 20 && e.pendingCalls("prod", "promo_fs", false) == 4
	})
	clock.Advance(2 * time.Millisecond)
	for i, o := range <-done {
		if o.err != nil {
			t.Fatalf("record %d: %v", i, o.err)
		}
		checkResult(t, o.res, new(true), fmt.Sprintf(`"u%d"`, i%4))
	}
	if calls := store.snapshot(); len(calls) != 1 || len(calls[0].reqs) != 4 {
		t.Errorf("calls = %+v, want one batch of 4", calls)
	}
}

func TestBatchingErrorAppliesToEveryRow(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: failing(-1, notFound)}
	e, _ := newTestEnricher(t, store, Config{BatchWindow: time.Hour})
	recs := make([]*record.Record, tecton.MaxBatchSize) // a full batch is sent at once
	for i := range recs {
		recs[i] = userRecord(fmt.Sprintf("u%d", i))
	}
	for i, o := range enrichAll(t.Context(), e, recs, outflowv1.Enrichment_STRICT) {
		se, ok := errors.AsType[*StoreError](o.err)
		if !ok || se.Retriable || !errors.Is(o.err, notFound) {
			t.Errorf("record %d: err = %v, want the batch's 404 as a non-retriable *StoreError", i, o.err)
		}
	}
	if n := len(store.snapshot()); n != 1 {
		t.Errorf("store saw %d calls, want 1", n)
	}
}

// A pending batch whose only waiter leaves is never sent.
func TestBatchingAbandonedBeforeSend(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: echoUser}
	e, clock := newTestEnricher(t, store, Config{BatchWindow: 2 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := e.Enrich(ctx, testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 0))
		errc <- err
	}()
	pollUntil(t, "the call is pending", func() bool { return e.pendingCalls("prod", "promo_fs", false) == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n := e.pendingCalls("prod", "promo_fs", false); n != 0 {
		t.Errorf("%d calls still pending", n)
	}
	clock.Advance(time.Hour)
	if n := len(store.snapshot()); n != 0 {
		t.Errorf("store saw %d calls, want 0", n)
	}
}

// With real timers: distinct keys arriving together share batch calls of at most
// tecton.MaxBatchSize rows, and every caller gets its own row.
func TestBatchingRealTimers(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: echoUser}
	e, err := New(Config{Store: store, BatchWindow: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]*record.Record, 12)
	for i := range recs {
		recs[i] = userRecord(fmt.Sprintf("u%d", i))
	}
	for i, o := range enrichAll(t.Context(), e, recs, outflowv1.Enrichment_STRICT) {
		if o.err != nil {
			t.Fatalf("record %d: %v", i, o.err)
		}
		checkResult(t, o.res, new(true), fmt.Sprintf(`"u%d"`, i))
	}
	rows := 0
	for _, c := range store.snapshot() {
		if len(c.reqs) > tecton.MaxBatchSize {
			t.Errorf("a call carried %d rows, more than %d", len(c.reqs), tecton.MaxBatchSize)
		}
		rows += len(c.reqs)
	}
	if rows != 12 {
		t.Errorf("store saw %d rows, want 12", rows)
	}
}

// With real timers and sleeps: the production time hooks drive the consistency loop.
func TestEnrichRealTimers(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: caughtUpFrom(3)}
	e, err := New(Config{Store: store, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Enrich(t.Context(), testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 0))
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 3 {
		t.Errorf("Attempts = %d, want 3", res.Attempts)
	}
}

// A store that panics answers its waiters with a non-retriable error instead of hanging them.
func TestStorePanic(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: func(int, tecton.Request) (*tecton.Vector, error) { panic("bad backend") }}
	e, _ := newTestEnricher(t, store, Config{})
	_, err := e.Enrich(t.Context(), testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 0))
	if se, ok := errors.AsType[*StoreError](err); !ok || se.Retriable {
		t.Fatalf("err = %v, want non-retriable *StoreError", err)
	}
}

// A store that answers a nil vector without an error fails the row rather than deliver nothing.
func TestStoreNilVector(t *testing.T) {
	t.Parallel()

	store := &fakeStore{respond: func(int, tecton.Request) (*tecton.Vector, error) { return nil, nil }}
	e, _ := newTestEnricher(t, store, Config{})
	_, err := e.Enrich(t.Context(), testRecord(), testEnrichment(outflowv1.Enrichment_NONE, 0))
	if se, ok := errors.AsType[*StoreError](err); !ok || se.Retriable {
		t.Fatalf("err = %v, want non-retriable *StoreError", err)
	}
}
