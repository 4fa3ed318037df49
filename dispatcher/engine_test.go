package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

// The tests here run the dispatcher's lanes, backpressure, writers, retry
// workers and Stop against in-package stand-ins for its three seams (store,
// sender, subscriptions). The stand-ins are unkind where the real ones are:
// the store fails until told otherwise, the sender blocks until its context
// ends. The wiring with real PostgreSQL, Kafka and HTTP is proven by the
// end-to-end tests in cmd/outflow.

// fakeStore keeps deliveries in memory; while failing is set every write
// fails, as when PostgreSQL is unreachable.
type fakeStore struct {
	mu         sync.Mutex
	failing    bool
	rows       map[string]*store.Delivery // by subscription/event
	claimed    map[string]bool            // by delivery id: leased
	writes     int
	concurrent int
	maxConc    int
	finished   map[string]string // delivery id → status
	states     map[string]string // subscription id → state set by the dispatcher
}

func newFakeStore() *fakeStore {
	return &fakeStore{rows: map[string]*store.Delivery{}, claimed: map[string]bool{}, finished: map[string]string{}, states: map[string]string{}}
}

var errDown = errors.New("connection refused")

func (s *fakeStore) enter() func() {
	s.mu.Lock()
	s.concurrent++
	s.maxConc = max(s.maxConc, s.concurrent)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.concurrent--
		s.mu.Unlock()
	}
}

func (s *fakeStore) EnqueueDelivery(ctx context.Context, d *store.Delivery) (bool, error) {
	defer s.enter()()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	if s.failing {
		return false, errDown
	}
	k := d.SubscriptionID + "/" + d.EventID
	if _, ok := s.rows[k]; ok {
		return false, nil
	}
	s.rows[k] = d
	return true, nil
}

// InsertDeliveries is all or nothing, like the real one's transaction.
func (s *fakeStore) InsertDeliveries(ctx context.Context, ds []*store.Delivery, requeue []bool) error {
	defer s.enter()()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	if s.failing {
		return errDown
	}
	for _, d := range ds {
		k := d.SubscriptionID + "/" + d.EventID
		if _, ok := s.rows[k]; !ok {
			s.rows[k] = d
		}
	}
	return nil
}

func (s *fakeStore) RequeueDelivery(ctx context.Context, d *store.Delivery) (bool, error) {
	return s.EnqueueDelivery(ctx, d)
}

// ClaimFair takes due rows round robin by subscription, honouring the cap
// the way the SQL does (store.TestClaimFair proves that one).
func (s *fakeStore) ClaimFair(ctx context.Context, p store.ClaimParams) ([]*store.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing {
		return nil, errDown
	}
	bySub := map[string][]*store.Delivery{}
	var subs []string
	for _, d := range s.rows {
		if d.Status != store.StatusRetrying || s.claimed[d.ID] || d.NextAttemptTime.After(time.Now()) {
			continue
		}
		if bySub[d.SubscriptionID] == nil {
			subs = append(subs, d.SubscriptionID)
		}
		bySub[d.SubscriptionID] = append(bySub[d.SubscriptionID], d)
	}
	var out []*store.Delivery
	for round := 0; len(out) < p.Limit; round++ {
		took := false
		for _, sub := range subs {
			if len(out) == p.Limit {
				break
			}
			if round < len(bySub[sub]) && p.Busy[sub]+round < p.PerSubscription {
				d := bySub[sub][round]
				s.claimed[d.ID] = true
				out = append(out, d)
				took = true
			}
		}
		if !took {
			break
		}
	}
	return out, nil
}

func (s *fakeStore) FinishAttempt(ctx context.Context, id string, r store.AttemptResult) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	for _, d := range s.rows {
		if d.ID == id {
			d.Status, d.NextAttemptTime = r.Status, r.NextAttemptTime
			s.finished[id] = r.Status
			delete(s.claimed, id)
			return nil
		}
	}
	return store.ErrNotFound
}

func (s *fakeStore) SetSubscriptionState(ctx context.Context, id, state, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states[id] = state
	return nil
}

func (s *fakeStore) InsertPoison(ctx context.Context, p store.Poison) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	if s.failing {
		return errDown
	}
	return nil
}

func (s *fakeStore) setFailing(v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = v
}

func (s *fakeStore) stats() (rows, writes, maxConc int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rows), s.writes, s.maxConc
}

// fakeSender answers per URL: "ok" delivers, "fail" answers 503, "block"
// holds the attempt until its context ends or release is closed, then
// delivers.
type fakeSender struct {
	release chan struct{}
	mu      sync.Mutex
	sent    map[string]int // delivered, by URL
	inside  map[string]int
	maxIn   map[string]int
	// total and maxTotal count attempts under way across URLs.
	total, maxTotal int
	// bodies keeps what ok receivers got, in arrival order.
	bodies [][]byte
}

func newFakeSender() *fakeSender {
	return &fakeSender{release: make(chan struct{}), sent: map[string]int{}, inside: map[string]int{}, maxIn: map[string]int{}}
}

func (f *fakeSender) Send(ctx context.Context, req webhook.Request) webhook.Result {
	f.mu.Lock()
	f.inside[req.URL]++
	f.maxIn[req.URL] = max(f.maxIn[req.URL], f.inside[req.URL])
	f.total++
	f.maxTotal = max(f.maxTotal, f.total)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inside[req.URL]--
		f.total--
		f.mu.Unlock()
	}()
	switch req.URL {
	case "https://fail.example.com":
		return webhook.Result{StatusCode: 503, Outcome: webhook.OutcomeRetry, Err: errors.New("503")}
	case "https://block.example.com":
		select {
		case <-ctx.Done():
			return webhook.Result{Outcome: webhook.OutcomeRetry, Err: ctx.Err()}
		case <-f.release:
		}
	}
	f.mu.Lock()
	f.sent[req.URL]++
	f.bodies = append(f.bodies, req.Body)
	f.mu.Unlock()
	return webhook.Result{StatusCode: 204, Outcome: webhook.OutcomeDelivered}
}

func (f *fakeSender) delivered(url string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sent[url]
}

// staticSubs is a fixed set of subscriptions.
type staticSubs struct{ ix *match.Index }

func (s staticSubs) Index() *match.Index               { return s.ix }
func (s staticSubs) Get(id string) *match.Subscription { return s.ix.Get(id) }

func webhookSub(id, url string) *match.Subscription {
	return match.Compile(nil, &store.Subscription{TenantID: "ten_1", Revision: 1,
		Secrets: store.Secrets{Current: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		Proto: &outflowv1.Subscription{Id: id, FeatureViewNames: []string{"fv"}, State: outflowv1.Subscription_ACTIVE,
			Target:      &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{Url: url}},
			RetryPolicy: &outflowv1.RetryPolicy{MaxAttempts: 5}}})
}

// countingHandler counts log records.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (h *countingHandler) Handle(context.Context, slog.Record) error { h.n.Add(1); return nil }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler        { return h }
func (h *countingHandler) WithGroup(string) slog.Handler             { return h }

type bundle struct {
	d      *Dispatcher
	store  *fakeStore
	sender *fakeSender
	logs   *countingHandler
}

func setup(t *testing.T, cfg Config, subs ...*match.Subscription) *bundle {
	t.Helper()
	b := &bundle{store: newFakeStore(), sender: newFakeSender(), logs: &countingHandler{}}
	d, err := New(Params{Config: cfg, Store: b.store, Sender: b.sender,
		Matcher: staticSubs{match.NewIndex(subs, match.IndexOptions{})}, Logger: slog.New(b.logs)})
	if err != nil {
		t.Fatal(err)
	}
	b.d = d
	t.Cleanup(func() {
		select {
		case <-b.sender.release:
		default:
			close(b.sender.release)
		}
		d.Stop()
	})
	return b
}

// msgs makes n source messages of feature view fv, each for its own entity,
// and counts those Done.
func msgs(n int, done *atomic.Int64) []*source.Message {
	out := make([]*source.Message, n)
	for i := range out {
		raw := fmt.Appendf(nil, `{"version":"1","feature_view_name":"fv","feature_timestamp":"2026-01-01T00:00:00Z","entity_keys":{"user_id":"u%d"}}`, i)
		out[i] = source.NewMessage(source.Position{Kind: "kafka", Topic: "t", Partition: 0, Offset: int64(i)}, nil, raw,
			time.Now(), func() { done.Add(1) })
	}
	return out
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBacklogIsBackpressureNotParking: a backlog far larger than the lane
// queue, to a receiver that keeps up, is delivered entirely on the hot path:
// the consumer waits for room, nothing is written to PostgreSQL.
func TestBacklogIsBackpressureNotParking(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		laneQueue int
		inFlight  int32
	}{
		{"one lane, tiny queue", 2, 1},
		{"four lanes", 8, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sub := webhookSub("sub_ok", "https://ok.example.com")
			sub.Proto.GetWebhook().MaxInFlight = tt.inFlight
			b := setup(t, Config{LaneQueue: tt.laneQueue, LaneWait: time.Minute}, sub)
			var done atomic.Int64
			const n = 500
			for _, m := range msgs(n, &done) {
				b.d.Handle(context.Background(), m)
			}
			eventually(t, "every message Done", func() bool { return done.Load() == n })
			if got := b.sender.delivered("https://ok.example.com"); got != n {
				t.Errorf("delivered %d, want %d", got, n)
			}
			if rows, writes, _ := b.store.stats(); rows != 0 || writes != 0 {
				t.Errorf("%d rows, %d writes to the store; a backlog to a healthy receiver must write none", rows, writes)
			}
		})
	}
}

// TestSlowReceiverIsShedAfterLaneWait: a receiver that stops answering
// holds the consumer at most LaneWait; after that its events are parked
// without waiting, and a healthy subscription of the same records gets all
// of them on the hot path.
func TestSlowReceiverIsShedAfterLaneWait(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{LaneQueue: 4, LaneWait: 20 * time.Millisecond},
		webhookSub("sub_block", "https://block.example.com"), webhookSub("sub_ok", "https://ok.example.com"))
	var done atomic.Int64
	const n = 200
	start := time.Now()
	for _, m := range msgs(n, &done) {
		b.d.Handle(context.Background(), m)
	}
	// One wait ran out; the rest did not wait at all (not n × LaneWait).
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("handling %d messages took %s; the shed subscription held the consumer", n, took)
	}
	// The blocked receiver holds one event in flight and LaneQueue queued;
	// everything else of it is parked, and its messages are Done once the
	// parked row is written.
	eventually(t, "the parked events written", func() bool { rows, _, _ := b.store.stats(); return rows >= n-1-4 })
	eventually(t, "the healthy subscription's events delivered", func() bool { return b.sender.delivered("https://ok.example.com") == n })
	if rows, _, _ := b.store.stats(); rows > n-1 {
		t.Errorf("%d rows parked, want at most %d (the healthy subscription parks nothing)", rows, n-1)
	}
	close(b.sender.release)
	eventually(t, "every message Done", func() bool { return done.Load() == n })
}

// TestDatabaseOutageHoldsTheConsumer: while every write fails, at most
// Writers writes run at once, the consumer is held back once the write
// queue is full (no goroutine per event), the failures are logged at a
// bounded rate, and no message is Done before its write is confirmed. Once
// the database is back, everything is settled.
func TestDatabaseOutageHoldsTheConsumer(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{LaneQueue: 1, Writers: 2, WriteQueue: 4, Breaker: BreakerConfig{Threshold: 1 << 20}},
		webhookSub("sub_fail", "https://fail.example.com"))
	b.store.setFailing(true)
	var done atomic.Int64
	const n = 100
	var handled atomic.Int64
	consumer := make(chan struct{})
	go func() {
		defer close(consumer)
		for _, m := range msgs(n, &done) {
			b.d.Handle(context.Background(), m)
			handled.Add(1)
		}
	}()
	// The consumer gets as far as the lane, the writers and their queue
	// hold, and then waits.
	eventually(t, "the write queue full", func() bool { return b.d.writers.pending.Load() >= 4+2 })
	held := handled.Load()
	if held >= n {
		t.Fatalf("the consumer handled all %d messages while no write could be confirmed", n)
	}
	if d := done.Load(); d != 0 {
		t.Fatalf("%d messages Done while no write was confirmed", d)
	}
	eventually(t, "a few retry rounds", func() bool { _, w, _ := b.store.stats(); return w > 8 })
	if _, _, conc := b.store.stats(); conc > 2 {
		t.Errorf("%d writes at once, want at most Writers=2", conc)
	}
	if lines := b.logs.n.Load(); lines > 10 {
		t.Errorf("%d log lines during the outage; want them rate limited", lines)
	}
	b.store.setFailing(false)
	<-consumer
	eventually(t, "every message Done", func() bool { return done.Load() == n })
	if rows, _, _ := b.store.stats(); rows != n {
		t.Errorf("%d rows, want %d (each failed delivery queued once)", rows, n)
	}
}

// TestHandleGivesUpWhenThePartitionIsRevoked: a wait for room ends with
// the handler's context, and the message stays not Done (its next owner
// reads it again).
func TestHandleGivesUpWhenThePartitionIsRevoked(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{LaneQueue: 1, LaneWait: time.Hour}, webhookSub("sub_block", "https://block.example.com"))
	var done atomic.Int64
	ms := msgs(3, &done)
	ctx, cancel := context.WithCancel(context.Background())
	b.d.Handle(ctx, ms[0]) // in flight
	b.d.Handle(ctx, ms[1]) // queued
	returned := make(chan struct{})
	go func() {
		b.d.Handle(ctx, ms[2]) // waits for room
		close(returned)
	}()
	cancel()
	<-returned
	if rows, _, _ := b.store.stats(); rows != 0 {
		t.Errorf("%d rows; a revoked wait must not park", rows)
	}
	close(b.sender.release)
	eventually(t, "the two handed-on messages Done", func() bool { return done.Load() == 2 })
	if d := done.Load(); d != 2 {
		t.Errorf("%d messages Done, want 2: the one whose wait was cut short stays not Done", d)
	}
}

// TestStopParksWhatIsInFlight: Stop gives a blocked attempt the drain
// timeout, then parks it and everything queued, and leaves no goroutine
// (TestMain checks).
func TestStopParksWhatIsInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{LaneQueue: 8, DrainTimeout: 20 * time.Millisecond}, webhookSub("sub_block", "https://block.example.com"))
	var done atomic.Int64
	for _, m := range msgs(5, &done) {
		b.d.Handle(context.Background(), m)
	}
	b.d.Stop()
	if done.Load() != 5 {
		t.Errorf("%d of 5 messages Done after Stop; want all parked", done.Load())
	}
	if rows, _, _ := b.store.stats(); rows != 5 {
		t.Errorf("%d rows after Stop, want 5", rows)
	}
	// After Stop, a message is not accepted and not lost: it stays not Done.
	var late atomic.Int64
	b.d.Handle(context.Background(), msgs(1, &late)[0])
	if late.Load() != 0 {
		t.Error("a message handled after Stop is Done")
	}
}

// TestRetriesAreCappedPerSubscription: one subscription whose retries block
// never holds more than PerSubscription workers; another subscription's
// retries are all delivered meanwhile.
func TestRetriesAreCappedPerSubscription(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Retry: RetryConfig{Workers: 8, PerSubscription: 2, Poll: 5 * time.Millisecond}},
		webhookSub("sub_block", "https://block.example.com"), webhookSub("sub_ok", "https://ok.example.com"))
	for i := range 20 {
		for _, sub := range []string{"sub_block", "sub_ok"} {
			_, _ = b.store.EnqueueDelivery(context.Background(), &store.Delivery{
				ID: fmt.Sprintf("dlv_%s_%d", sub, i), SubscriptionID: sub, TenantID: "ten_1", EventID: fmt.Sprintf("evt_%d", i),
				Status: store.StatusRetrying, Attempts: 1, NextAttemptTime: time.Now().Add(-time.Second), FirstAttemptTime: time.Now(),
				Event: fmt.Appendf(nil, `{"id":"evt_%d","record":{"version":"1","feature_view_name":"fv","feature_timestamp":"2026-01-01T00:00:00Z","entity_keys":{"user_id":"u"}}}`, i),
			})
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error)
	go func() { ran <- b.d.RunRetries(ctx) }()
	eventually(t, "the healthy subscription's retries delivered", func() bool { return b.sender.delivered("https://ok.example.com") == 20 })
	b.sender.mu.Lock()
	maxBlocked := b.sender.maxIn["https://block.example.com"]
	b.sender.mu.Unlock()
	if maxBlocked > 2 {
		t.Errorf("%d of the slow subscription's retries at once, want at most PerSubscription=2", maxBlocked)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
}

// TestSendersBoundAttemptsAcrossSubscriptions: however many subscriptions
// and lanes there are, at most Senders attempts are under way at once, and
// each subscription's at most its max_in_flight.
func TestSendersBoundAttemptsAcrossSubscriptions(t *testing.T) {
	t.Parallel()
	var subs []*match.Subscription
	for i := range 20 {
		s := webhookSub(fmt.Sprintf("sub_%02d", i), "https://block.example.com")
		s.Proto.GetWebhook().MaxInFlight = 4
		subs = append(subs, s)
	}
	b := setup(t, Config{Senders: 3, LaneWait: time.Minute}, subs...)
	var done atomic.Int64
	const n = 30
	for _, m := range msgs(n, &done) {
		b.d.Handle(context.Background(), m)
	}
	eventually(t, "the senders busy", func() bool {
		b.sender.mu.Lock()
		defer b.sender.mu.Unlock()
		return b.sender.total == 3
	})
	close(b.sender.release)
	eventually(t, "every message Done", func() bool { return done.Load() == n })
	if got := b.sender.maxTotal; got > 3 {
		t.Errorf("%d attempts at once, want at most Senders=3", got)
	}
	if got := b.sender.delivered("https://block.example.com"); got != n*20 {
		t.Errorf("delivered %d, want %d", got, n*20)
	}
}

// TestLanesKeepEachEntitysOrder: with several lanes and senders, one
// entity's events arrive in source order.
func TestLanesKeepEachEntitysOrder(t *testing.T) {
	t.Parallel()
	sub := webhookSub("sub_ok", "https://ok.example.com")
	sub.Proto.GetWebhook().MaxInFlight = 4
	b := setup(t, Config{Senders: 8, LaneQueue: 4, LaneWait: time.Minute}, sub)
	var done atomic.Int64
	const n = 600
	for i := range n {
		raw := fmt.Appendf(nil, `{"version":"1","feature_view_name":"fv","feature_timestamp":"2026-01-01T00:00:00Z","entity_keys":{"user_id":"u%d"}}`, i%7)
		b.d.Handle(context.Background(), source.NewMessage(source.Position{Kind: "kafka", Topic: "t", Offset: int64(i)}, nil, raw,
			time.Now(), func() { done.Add(1) }))
	}
	eventually(t, "every message Done", func() bool { return done.Load() == n })
	last := map[string]int64{}
	b.sender.mu.Lock()
	defer b.sender.mu.Unlock()
	for _, body := range b.sender.bodies {
		var ev struct {
			Record struct {
				EntityKeys map[string]string `json:"entity_keys"`
			} `json:"record"`
			Source struct {
				Offset int64 `json:"offset"`
			} `json:"source"`
		}
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Fatal(err)
		}
		u := ev.Record.EntityKeys["user_id"]
		if prev, ok := last[u]; ok && ev.Source.Offset <= prev {
			t.Fatalf("entity %s: offset %d after %d", u, ev.Source.Offset, prev)
		}
		last[u] = ev.Source.Offset
	}
}

// TestFailuresAndOpenBreakerGoToTheRetryQueue: a failing receiver's first
// attempts are queued as failed, and once its breaker opens its events are
// parked without an attempt; a replayed event is queued with the
// re-arming rule. Every message is Done once its row is written.
func TestFailuresAndOpenBreakerGoToTheRetryQueue(t *testing.T) {
	t.Parallel()
	sub := webhookSub("sub_fail", "https://fail.example.com")
	b := setup(t, Config{Breaker: BreakerConfig{Threshold: 3, Cooldown: time.Hour}}, sub)
	var done atomic.Int64
	const n = 20
	ms := msgs(n, &done)
	for _, m := range ms[:n-1] {
		b.d.Handle(context.Background(), m)
	}
	eventually(t, "the live messages Done", func() bool { return done.Load() == n-1 })
	b.d.Replay(ms[n-1], mustDecode(t, ms[n-1].Value), sub)
	eventually(t, "the replayed message Done", func() bool { return done.Load() == n })
	if rows, _, _ := b.store.stats(); rows != n {
		t.Errorf("%d rows, want %d", rows, n)
	}
	b.sender.mu.Lock()
	attempts := b.sender.maxIn["https://fail.example.com"]
	b.sender.mu.Unlock()
	if attempts == 0 {
		t.Error("no attempt reached the receiver")
	}
	parked := counterValue(t, b.d.metrics.deliveries.WithLabelValues("parked"))
	failed := counterValue(t, b.d.metrics.deliveries.WithLabelValues("retry_queued"))
	if failed < 3 || parked == 0 || parked+failed != n {
		t.Errorf("retry_queued %v, parked %v; want the breaker's 3 failures queued, the rest parked, %d in all", failed, parked, n)
	}
}

// gatedFailSender answers 503 to every attempt, each once gate is closed,
// and counts the attempts.
type gatedFailSender struct {
	gate     chan struct{}
	attempts atomic.Int64
}

func (g *gatedFailSender) Send(ctx context.Context, _ webhook.Request) webhook.Result {
	g.attempts.Add(1)
	select {
	case <-ctx.Done():
		return webhook.Result{Outcome: webhook.OutcomeRetry, Err: ctx.Err()}
	case <-g.gate:
	}
	return webhook.Result{StatusCode: 503, Outcome: webhook.OutcomeRetry, Err: errors.New("503")}
}

// TestAnOpenCircuitParksWhatIsAlreadyQueued: events queued in a lane
// before its receiver's circuit opened are parked without an attempt once
// it has: the receiver gets the breaker's Threshold failures and no more
// requests, and the parked events keep every attempt of their retry policy.
func TestAnOpenCircuitParksWhatIsAlreadyQueued(t *testing.T) {
	t.Parallel()
	const n, threshold = 40, 3
	sub := webhookSub("sub_fail", "https://fail.example.com")
	sub.Proto.GetWebhook().MaxInFlight = 1
	sender := &gatedFailSender{gate: make(chan struct{})}
	st := newFakeStore()
	d, err := New(Params{Config: Config{LaneQueue: 64, Breaker: BreakerConfig{Threshold: threshold, Cooldown: time.Hour}},
		Store: st, Sender: sender, Matcher: staticSubs{match.NewIndex([]*match.Subscription{sub}, match.IndexOptions{})},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	var done atomic.Int64
	for _, m := range msgs(n, &done) {
		d.Handle(t.Context(), m) // the lane has room for all: each is queued, none parked
	}
	if rows, _, _ := st.stats(); rows != 0 {
		t.Fatalf("%d rows before any attempt failed; want every event queued", rows)
	}
	close(sender.gate)
	eventually(t, "every message Done", func() bool { return done.Load() == n })
	if got := sender.attempts.Load(); got != threshold {
		t.Errorf("%d attempts reached the receiver; want the %d that opened the circuit", got, threshold)
	}
	parked := counterValue(t, d.metrics.deliveries.WithLabelValues("parked"))
	failed := counterValue(t, d.metrics.deliveries.WithLabelValues("retry_queued"))
	if failed != threshold || parked != n-threshold {
		t.Errorf("retry_queued %v, parked %v; want %d and %d", failed, parked, threshold, n-threshold)
	}
}

func mustDecode(t *testing.T, raw []byte) *record.Record {
	t.Helper()
	rec, err := record.Decode(raw, record.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func counterValue(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
