package match

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outflow-dev/outflow/internal/storetest"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/store"
)

const (
	// setupTimeout bounds creating and migrating a test database.
	setupTimeout = time.Minute
	// changeDeadline is how soon a committed change must show in the Index
	// when the listener is up (the brief's 1 s).
	changeDeadline = time.Second
	// healDeadline is how soon a change must show by other means (reconnect
	// or resync); generous for a loaded CI machine.
	healDeadline = 10 * time.Second
)

// bundle is what a Matcher integration test works with.
type bundle struct {
	st     *store.Store
	db     *pgx.Conn // a connection of the test's own, outside the pool
	tenant string
}

// setup creates a migrated database with one tenant.
func setup(t *testing.T) *bundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	tdb := storetest.New(t)
	db, st := tdb.Conn, tdb.Store
	key, _, err := st.CreateAPIKey(ctx, "t", "k")
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{st: st, db: db, tenant: key.TenantID}
}

func (b *bundle) create(t *testing.T, id string, mutate func(*outflowv1.Subscription), views ...string) *store.Subscription {
	t.Helper()
	p := &outflowv1.Subscription{
		Id:               id,
		Name:             "name-" + id,
		FeatureViewNames: views,
		State:            outflowv1.Subscription_ACTIVE,
		Target:           &outflowv1.Subscription_Stream{Stream: &outflowv1.StreamTarget{}},
	}
	if mutate != nil {
		mutate(p)
	}
	s, err := b.st.CreateSubscription(t.Context(), b.tenant, p, "whsec_"+id, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (b *bundle) update(t *testing.T, s *store.Subscription, mutate func(*outflowv1.Subscription)) *store.Subscription {
	t.Helper()
	mutate(s.Proto)
	out, err := b.st.UpdateSubscription(t.Context(), b.tenant, s.Proto, s.Revision)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// start runs a Matcher for the test, after hook has adjusted it, and stops
// it when the test ends, failing the test if Run does not return promptly.
// It returns the Matcher and a stop function that cancels Run and reports
// how long it took to return.
func start(t *testing.T, b *bundle, cfg Config, hook func(*Matcher)) (*Matcher, func() time.Duration) {
	t.Helper()
	cfg.Store = b.st
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		hook(m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	var took time.Duration
	stop := func() time.Duration {
		once.Do(func() {
			begin := time.Now()
			cancel()
			select {
			case err := <-done:
				took = time.Since(begin)
				if err != nil {
					t.Errorf("Run returned %v, want nil after cancellation", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return within 10 s of its context being cancelled")
			}
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return m, stop
}

// waitReady waits for the first load.
func waitReady(t *testing.T, m *Matcher) {
	t.Helper()
	select {
	case <-m.Ready():
	case <-time.After(healDeadline):
		t.Fatal("the Matcher was not ready in time")
	}
}

// waitFor polls cond until it holds or the deadline passes, and returns how
// long it took.
func waitFor(t *testing.T, deadline time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > deadline {
			t.Fatalf("%s: not seen within %s", what, deadline)
		}
		time.Sleep(time.Millisecond) // a polling interval, not synchronisation
	}
	return time.Since(begin)
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func TestMatcherInitialLoad(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "sub_a", nil, "fv1", "fv2")
	b.create(t, "sub_b", func(p *outflowv1.Subscription) {
		p.EntityFilter = map[string]*outflowv1.EntityValues{"user_id": {Values: []string{"u1"}}}
	}, "fv1")
	b.create(t, "sub_c", func(p *outflowv1.Subscription) { p.State = outflowv1.Subscription_DISABLED }, "fv1")
	b.create(t, "sub_d", func(p *outflowv1.Subscription) { p.State = outflowv1.Subscription_PAUSED }, "fv2")

	m, _ := start(t, b, Config{ResyncInterval: time.Hour}, nil)
	if m.Index().Len() != 0 {
		t.Errorf("before the first load, the Index holds %d subscriptions", m.Index().Len())
	}
	waitReady(t, m)

	ix := m.Index()
	if ix.Len() != 4 {
		t.Fatalf("Index holds %d subscriptions, want 4", ix.Len())
	}
	tests := []struct {
		view string
		keys map[string]string
		want []string
	}{
		{"fv1", map[string]string{"user_id": "u1"}, []string{"sub_a", "sub_b"}},
		{"fv1", map[string]string{"user_id": "u2"}, []string{"sub_a"}},
		{"fv2", map[string]string{"user_id": "u2"}, []string{"sub_a", "sub_d"}},
		{"fv3", map[string]string{"user_id": "u2"}, []string{}},
	}
	for _, tt := range tests {
		if got := ids(ix.Match(rec(tt.view, tt.keys))); !slices.Equal(got, tt.want) {
			t.Errorf("Match(%s, %v) = %v, want %v", tt.view, tt.keys, got, tt.want)
		}
	}
	c := m.Get("sub_c")
	if c == nil || c.State != outflowv1.Subscription_DISABLED || c.TenantID != b.tenant || c.Secrets.Current != "whsec_sub_c" {
		t.Errorf("Get(sub_c) = %+v, want the DISABLED subscription with its tenant and secret", c)
	}
	if m.Get("sub_nope") != nil {
		t.Error("Get of an unknown id returned a subscription")
	}
}

func TestMatcherFollowsChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// A resync interval of an hour: only notifications can make the changes
	// visible within the deadline.
	m, _ := start(t, b, Config{ResyncInterval: time.Hour}, nil)
	waitReady(t, m)

	sub := b.create(t, "sub_x", nil, "fv1")
	created := waitFor(t, changeDeadline, "created subscription", func() bool {
		return len(m.Index().Match(rec("fv1", nil))) == 1
	})

	sub = b.update(t, sub, func(p *outflowv1.Subscription) { p.FeatureViewNames = []string{"fv2"} })
	updated := waitFor(t, changeDeadline, "updated subscription", func() bool {
		s := m.Get("sub_x")
		return s != nil && s.Revision == sub.Revision
	})
	if got := ids(m.Index().Match(rec("fv1", nil))); len(got) != 0 {
		t.Errorf("after moving to fv2, fv1 still matches %v", got)
	}
	if got := ids(m.Index().Match(rec("fv2", nil))); !slices.Equal(got, []string{"sub_x"}) {
		t.Errorf("after moving to fv2, fv2 matches %v", got)
	}

	if err := b.st.DeleteSubscription(t.Context(), b.tenant, "sub_x", 0); err != nil {
		t.Fatal(err)
	}
	deleted := waitFor(t, changeDeadline, "deleted subscription", func() bool {
		return m.Get("sub_x") == nil
	})
	if got := ids(m.Index().Match(rec("fv2", nil))); len(got) != 0 {
		t.Errorf("after delete, fv2 still matches %v", got)
	}
	t.Logf("change visible in the Index after: create %s, update %s, delete %s", created, updated, deleted)
}

func TestMatcherHealsAfterListenerLoss(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sub := b.create(t, "sub_a", nil, "fv1")

	// The first listener runs freely; reconnecting waits for the gate, so
	// the test can change subscriptions while no listener exists.
	var (
		attempts atomic.Int32
		gate     = make(chan struct{})
		down     = make(chan struct{})
	)
	m, _ := start(t, b, Config{ResyncInterval: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		func(m *Matcher) {
			m.listen = func(ctx context.Context, ready func(), fn func(store.SubscriptionChange)) error {
				if attempts.Add(1) > 1 {
					select {
					case <-gate:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				err := b.st.ListenSubscriptions(ctx, ready, fn)
				if attempts.Load() == 1 {
					close(down)
				}
				return err
			}
		})
	waitReady(t, m)

	var terminated int
	err := b.db.QueryRow(t.Context(), `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE query LIKE 'LISTEN%' AND datname = current_database()`).Scan(&terminated)
	if err != nil {
		t.Fatal(err)
	}
	if terminated != 1 {
		t.Fatalf("terminated %d listening backends, want 1", terminated)
	}
	select {
	case <-down:
	case <-time.After(healDeadline):
		t.Fatal("the listener did not notice its backend was terminated")
	}

	// Changes made while nobody listens: their notifications are lost.
	sub = b.update(t, sub, func(p *outflowv1.Subscription) { p.FeatureViewNames = []string{"fv2"} })
	b.create(t, "sub_b", nil, "fv1")
	if s := m.Get("sub_a"); s.Revision != 1 {
		t.Fatalf("with the listener down, sub_a moved to revision %d", s.Revision)
	}

	close(gate)
	healed := waitFor(t, healDeadline, "changes made while the listener was down", func() bool {
		s := m.Get("sub_a")
		return s.Revision == sub.Revision && m.Get("sub_b") != nil
	})
	t.Logf("reconnected and reloaded %s after the listener was allowed back", healed)
	if got := ids(m.Index().Match(rec("fv1", nil))); !slices.Equal(got, []string{"sub_b"}) {
		t.Errorf("fv1 matches %v, want [sub_b]", got)
	}

	// The new listener works: a change shows without a resync.
	if err := b.st.DeleteSubscription(t.Context(), b.tenant, "sub_b", 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, changeDeadline, "delete after reconnecting", func() bool { return m.Get("sub_b") == nil })
}

func TestMatcherResyncHealsMissedNotifications(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sub := b.create(t, "sub_a", nil, "fv1")
	var loads atomic.Int32
	m, _ := start(t, b, Config{ResyncInterval: 50 * time.Millisecond}, func(m *Matcher) {
		// The listener connects but every notification is lost.
		m.listen = func(ctx context.Context, ready func(), _ func(store.SubscriptionChange)) error {
			return b.st.ListenSubscriptions(ctx, ready, func(store.SubscriptionChange) {})
		}
		load := m.load
		m.load = func(ctx context.Context) ([]*store.Subscription, error) {
			loads.Add(1)
			return load(ctx)
		}
	})
	waitReady(t, m)

	sub = b.update(t, sub, func(p *outflowv1.Subscription) { p.State = outflowv1.Subscription_PAUSED })
	healed := waitFor(t, healDeadline, "update without notification", func() bool {
		return m.Get("sub_a").State == outflowv1.Subscription_PAUSED
	})
	if m.Get("sub_a").Revision != sub.Revision {
		t.Errorf("revision %d, want %d", m.Get("sub_a").Revision, sub.Revision)
	}
	t.Logf("resync made a missed update visible after %s (%d loads)", healed, loads.Load())
}

func TestMatcherWithoutListener(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "sub_a", nil, "fv1")
	m, _ := start(t, b, Config{ResyncInterval: 50 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		func(m *Matcher) {
			m.listen = func(context.Context, func(), func(store.SubscriptionChange)) error {
				return errors.New("LISTEN is not supported here")
			}
		})
	// The periodic resync loads even though LISTEN never works.
	waitReady(t, m)
	if m.Get("sub_a") == nil {
		t.Fatal("sub_a was not loaded")
	}
}

func TestMatcherBrokenStoredFilter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// The API would refuse this filter; the store does not check.
	b.create(t, "sub_bad", func(p *outflowv1.Subscription) { p.Filter = "record.no_such_field" }, "fv1")
	b.create(t, "sub_ok", nil, "fv1")
	logs := &syncBuffer{}
	var loads atomic.Int32
	m, _ := start(t, b, Config{ResyncInterval: 20 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(logs, nil))},
		func(m *Matcher) {
			load := m.load
			m.load = func(ctx context.Context) ([]*store.Subscription, error) {
				loads.Add(1)
				return load(ctx)
			}
		})
	waitReady(t, m)
	waitFor(t, healDeadline, "several resyncs", func() bool { return loads.Load() >= 4 })

	if got := ids(m.Index().Match(rec("fv1", nil))); !slices.Equal(got, []string{"sub_ok"}) {
		t.Errorf("fv1 matches %v, want only sub_ok", got)
	}
	if s := m.Get("sub_bad"); s == nil || s.Err == nil || s.Matchable() {
		t.Errorf("Get(sub_bad) = %+v, want it readable with Err set", s)
	}
	if n := strings.Count(logs.String(), "does not compile"); n != 1 {
		t.Errorf("the broken filter was logged %d times over %d loads, want once:\n%s", n, loads.Load(), logs.String())
	}
	if strings.Contains(logs.String(), "whsec_") {
		t.Error("a secret was logged")
	}
}

func TestMatcherRunStops(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m, stop := start(t, b, Config{}, nil)
	waitReady(t, m)
	took := stop()
	t.Logf("Run returned %s after cancellation", took)
	if took > time.Second {
		t.Errorf("Run took %s to return after cancellation", took)
	}
	// goleak in TestMain checks the listener goroutine is gone.

	if err := m.Run(context.Background()); err == nil {
		t.Error("a second Run was accepted")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{}); err == nil {
		t.Error("New accepted a Config without Store")
	}
	if _, err := New(Config{Store: &store.Store{}, MinBackoff: time.Second, MaxBackoff: time.Millisecond}); err == nil {
		t.Error("New accepted MinBackoff > MaxBackoff")
	}
	m, err := New(Config{Store: &store.Store{}})
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.ResyncInterval != DefaultResyncInterval || m.cfg.MinBackoff != DefaultMinBackoff || m.cfg.MaxBackoff != DefaultMaxBackoff {
		t.Errorf("defaults not applied: %+v", m.cfg)
	}
	select {
	case <-m.Ready():
		t.Error("Ready is closed before Run")
	default:
	}
}

func TestPendingChanges(t *testing.T) {
	t.Parallel()
	r := &run{changed: make(chan struct{}, 1), pending: map[string]struct{}{}}
	for range 3 {
		r.add(store.SubscriptionChange{Op: "update", ID: "sub_a"})
	}
	r.add(store.SubscriptionChange{Op: "delete", ID: "sub_b"})
	got, overflow := r.take()
	slices.Sort(got)
	if !slices.Equal(got, []string{"sub_a", "sub_b"}) || overflow {
		t.Errorf("take = %v, %v; want the two ids once each, no overflow", got, overflow)
	}
	if len(r.changed) != 1 {
		t.Error("add did not signal")
	}

	for i := range maxPendingChanges + 10 {
		r.add(store.SubscriptionChange{Op: "insert", ID: "sub_" + strings.Repeat("x", i)})
	}
	got, overflow = r.take()
	if !overflow || len(got) != 0 {
		t.Errorf("after %d changes take = %d ids, overflow %v; want none and overflow (a full reload)", maxPendingChanges+10, len(got), overflow)
	}
	if got, overflow = r.take(); len(got) != 0 || overflow {
		t.Errorf("take did not reset: %v, %v", got, overflow)
	}
}
