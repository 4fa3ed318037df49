package enrich

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/tecton"
)

// fakeStore is an in-memory FeatureStore. It records every call and answers each request row
// with respond, which gets the 1-based number of the row among all rows the store has seen.
type fakeStore struct {
	respond func(n int, req tecton.Request) (*tecton.Vector, error)
	// gate, when not nil, holds every call until it is closed or the call's context ends.
	gate chan struct{}

	mu       sync.Mutex
	calls    []fakeCall
	rows     int
	canceled int // calls whose context ended while held at the gate
}

type fakeCall struct {
	op   string
	reqs []tecton.Request
}

func (s *fakeStore) GetFeatures(ctx context.Context, req tecton.Request) (*tecton.Vector, error) {
	vecs, err := s.answer(ctx, opGetFeatures, []tecton.Request{req})
	if err != nil {
		return nil, err
	}
	return vecs[0], nil
}

func (s *fakeStore) GetFeaturesBatch(ctx context.Context, reqs []tecton.Request) ([]*tecton.Vector, error) {
	return s.answer(ctx, opGetFeaturesBatch, reqs)
}

func (s *fakeStore) answer(ctx context.Context, op string, reqs []tecton.Request) ([]*tecton.Vector, error) {
	s.mu.Lock()
	s.calls = append(s.calls, fakeCall{op: op, reqs: slices.Clone(reqs)})
	first := s.rows + 1
	s.rows += len(reqs)
	s.mu.Unlock()

	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			s.mu.Lock()
			s.canceled++
			s.mu.Unlock()
			return nil, &tecton.TransportError{Err: ctx.Err()}
		}
	}
	vecs := make([]*tecton.Vector, len(reqs))
	for i, req := range reqs {
		v, err := s.respond(first+i, req)
		if err != nil {
			return nil, err // an error of one row fails the whole call, as the endpoint does
		}
		vecs[i] = v
	}
	return vecs, nil
}

func (s *fakeStore) snapshot() []fakeCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func (s *fakeStore) canceledCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.canceled
}

// bypassFlags returns the BypassCache flag of every call, in call order.
func (s *fakeStore) bypassFlags() []bool {
	var flags []bool
	for _, c := range s.snapshot() {
		flags = append(flags, c.reqs[0].BypassCache)
	}
	return flags
}

// fakeClock is a manual clock: time moves only when Sleep or Advance is called, and timers fire
// when it passes them.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	ch      chan time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Sleep records d and advances the clock by it, unless ctx is already done.
func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.mu.Unlock()
	c.Advance(d)
	return nil
}

// Advance moves the clock by d and fires the timers it passes; AfterFunc functions run on
// their own goroutines, as with time.AfterFunc.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if t.stopped {
			return true
		}
		if !t.at.After(c.now) {
			due = append(due, t)
			return true
		}
		return false
	})
	now := c.now
	c.mu.Unlock()
	for _, t := range due {
		if t.f != nil {
			go t.f()
		} else {
			t.ch <- now
		}
	}
}

func (c *fakeClock) add(t *fakeTimer) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped && slices.Contains(c.timers, t)
		t.stopped = true
		return was
	}
}

func (c *fakeClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := &fakeTimer{at: c.Now().Add(d), ch: make(chan time.Time, 1)}
	return t.ch, c.add(t)
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	return c.add(&fakeTimer{at: c.Now().Add(d), f: f})
}

func (c *fakeClock) sleepLog() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sleeps)
}

// newTestEnricher returns an Enricher on store driven by a fake clock, with a fixed jitter seed
// and batching off unless cfg says otherwise.
func newTestEnricher(t *testing.T, store FeatureStore, cfg Config) (*Enricher, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	cfg.Store = store
	cfg.Now = clock.Now
	if cfg.Rand == nil {
		cfg.Rand = rand.NewPCG(1, 2)
	}
	if cfg.BatchWindow == 0 {
		cfg.BatchWindow = NoBatching
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.sleep = clock.Sleep
	e.newTimer = clock.NewTimer
	e.afterFunc = clock.AfterFunc
	return e, clock
}

// Feature views of the test vectors.
const (
	testView     = "user_stats"
	testOnDemand = "promo_odfv"
	testOther    = "account_stats"
)

// testVector returns a vector with a feature of testView effective at eff and value (a JSON
// string), an on-demand feature (no effective time) and a stale feature of another view.
func testVector(eff time.Time, value string) *tecton.Vector {
	quoted, _ := json.Marshal(value)
	return &tecton.Vector{Features: []tecton.Feature{
		{Name: testView + ".purchases", FeatureView: testView, Value: quoted, EffectiveTime: eff, HasEffectiveTime: true, Status: tecton.StatusPresent},
		{Name: testView + ".lifetime_value", FeatureView: testView, Value: json.RawMessage(`1234.5`), EffectiveTime: eff, HasEffectiveTime: true, Status: tecton.StatusPresent},
		{Name: testOnDemand + ".uplift", FeatureView: testOnDemand, Value: json.RawMessage(`0.1`), Status: tecton.StatusPresent},
		{Name: testOther + ".age_days", FeatureView: testOther, Value: json.RawMessage(`null`), EffectiveTime: eff.Add(-24 * time.Hour), HasEffectiveTime: true, Status: tecton.StatusMissingData},
	}}
}

// missingVector is the answer for a key the online store has never materialised, as Tecton
// gives it: the record's view null with MISSING_DATA and no effective time; the on-demand
// feature computed; the other view as in testVector.
func missingVector() *tecton.Vector {
	v := testVector(recordTime.Add(-time.Hour), "")
	for i := range v.Features {
		if f := &v.Features[i]; f.FeatureView == testView {
			f.Value, f.Status, f.EffectiveTime, f.HasEffectiveTime = json.RawMessage(`null`), tecton.StatusMissingData, time.Time{}, false
		}
	}
	return v
}

// pollUntil polls cond until it holds, failing the test after a generous deadline. It is how
// tests wait for goroutines to reach a state, instead of sleeping a fixed time.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waiters returns the number of callers waiting for the in-flight call for req.
func (e *Enricher) waiters(req tecton.Request) int {
	key := keyOf(req)
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.inflight[key]; c != nil {
		return c.waiters
	}
	return 0
}

// pendingCalls returns the number of calls waiting in the pending batch of a group.
func (e *Enricher) pendingCalls(workspace, service string, bypass bool) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b := e.pending[groupKey{workspace: workspace, service: service, bypass: bypass}]; b != nil {
		return len(b.calls)
	}
	return 0
}
