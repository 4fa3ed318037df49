package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/enrich"
	"github.com/outflow-dev/outflow/match"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/tecton"
	"github.com/outflow-dev/outflow/webhook"
)

// userStore is a feature store whose answer for user uN is the value N,
// effective after the record: every vector is consistent, and a delivered
// body shows whose vector it carries. It counts the rows asked for, and
// block, when set, holds every call until it is closed or the call's
// context ends.
type userStore struct {
	asked atomic.Int64
	block chan struct{}
}

func (s *userStore) GetFeatures(ctx context.Context, req tecton.Request) (*tecton.Vector, error) {
	s.asked.Add(1)
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var n int
	if _, err := fmt.Sscanf(req.JoinKeys["user_id"], "u%d", &n); err != nil {
		return nil, err
	}
	return &tecton.Vector{Features: []tecton.Feature{{Name: "fv.n", FeatureView: "fv", Value: json.RawMessage(fmt.Sprintf(`"%d"`, n)),
		Status: "PRESENT", EffectiveTime: time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC), HasEffectiveTime: true}}}, nil
}

func (s *userStore) GetFeaturesBatch(ctx context.Context, reqs []tecton.Request) ([]*tecton.Vector, error) {
	return getEach(ctx, reqs, s.GetFeatures)
}

// askedSender delivers every event, noting for each (in arrival order) its
// user, the value its vector carries, and how many rows the store had been
// asked for when it arrived. hold, when set, is called before the first
// event is answered.
type askedSender struct {
	store *userStore
	hold  func()
	mu    sync.Mutex
	got   []sentEvent
}

type sentEvent struct {
	user, value string
	asked       int64
}

func (s *askedSender) Send(ctx context.Context, req webhook.Request) webhook.Result {
	var ev struct {
		Record struct {
			EntityKeys map[string]string `json:"entity_keys"`
		} `json:"record"`
		Vector struct {
			Features map[string]string `json:"features"`
		} `json:"feature_vector"`
	}
	if err := json.Unmarshal(req.Body, &ev); err != nil {
		return webhook.Result{Outcome: webhook.OutcomeRetry, Err: err}
	}
	s.mu.Lock()
	first := len(s.got) == 0
	s.got = append(s.got, sentEvent{user: ev.Record.EntityKeys["user_id"], value: ev.Vector.Features["fv.n"],
		asked: s.store.asked.Load()})
	s.mu.Unlock()
	if first && s.hold != nil {
		s.hold()
	}
	return webhook.Result{StatusCode: 204, Outcome: webhook.OutcomeDelivered}
}

func (s *askedSender) events() []sentEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// lookaheadSetup is a dispatcher reading readAhead vectors ahead (0: the
// default) with one enriched subscription on one lane (max_in_flight 1), so
// that its events are sent strictly one after the other, at rateLimit (0:
// none).
func lookaheadSetup(t *testing.T, fs *userStore, sender *askedSender, readAhead int, rateLimit float64) (*Dispatcher, *fakeStore) {
	t.Helper()
	enricher, err := enrich.New(enrich.Config{Store: fs, BatchWindow: enrich.NoBatching})
	if err != nil {
		t.Fatal(err)
	}
	sub := enrichedSub("sub_enriched")
	sub.Proto.GetWebhook().MaxInFlight = 1
	sub.Proto.GetWebhook().RateLimit = rateLimit
	st := newFakeStore()
	d, err := New(Params{Config: Config{LaneQueue: 64, LaneWait: time.Minute, DrainTimeout: 50 * time.Millisecond, ReadAhead: readAhead},
		Store: st, Sender: sender, Enricher: enricher, Logger: slog.New(&countingHandler{}),
		Matcher: staticSubs{match.NewIndex([]*match.Subscription{sub}, match.IndexOptions{})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d, st
}

// userMsgs makes n messages of feature view fv at 2026-01-01T00:00:00Z for
// users u0 … u(n-1), counting those Done.
func userMsgs(n int, done *atomic.Int64) []*source.Message {
	out := make([]*source.Message, n)
	for i := range out {
		raw := fmt.Appendf(nil, `{"version":"1","feature_view_name":"fv","feature_timestamp":"2026-01-01T00:00:00Z","entity_keys":{"user_id":"u%d"}}`, i)
		out[i] = source.NewMessage(source.Position{Kind: "kafka", Topic: "t", Offset: int64(i)}, nil, raw, time.Now(), func() { done.Add(1) })
	}
	return out
}

// TestEnrichmentIsReadAheadOfTheSend: while a lane's event is being sent,
// the vectors of the lane's next ReadAhead events are already being read;
// the events still arrive in order, each with its own vector, and each
// vector is read once.
func TestEnrichmentIsReadAheadOfTheSend(t *testing.T) {
	t.Parallel()
	for _, readAhead := range []int{1, 4} {
		t.Run(fmt.Sprintf("ReadAhead %d", readAhead), func(t *testing.T) {
			t.Parallel()
			fs := &userStore{}
			sender := &askedSender{store: fs}
			// The first event's answer waits until the next readAhead events'
			// vectors have been asked for: without reading ahead they never
			// are, and the test fails on the deadline.
			want := int64(1 + readAhead)
			readAheadOK := make(chan int64, 1)
			sender.hold = func() {
				deadline := time.Now().Add(10 * time.Second)
				for fs.asked.Load() < want && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				readAheadOK <- fs.asked.Load()
			}
			d, st := lookaheadSetup(t, fs, sender, readAhead, 0)
			var done atomic.Int64
			const n = 20
			for _, m := range userMsgs(n, &done) {
				d.Handle(t.Context(), m)
			}
			if asked := <-readAheadOK; asked < want {
				t.Fatalf("%d vectors read while the first event was being sent; want at least %d (its own and %d ahead)", asked, want, readAhead)
			}
			eventually(t, "every message Done", func() bool { return done.Load() == n })
			got := sender.events()
			if len(got) != n {
				t.Fatalf("%d events sent, want %d", len(got), n)
			}
			for i, ev := range got {
				if want := fmt.Sprintf("u%d", i); ev.user != want || ev.value != fmt.Sprint(i) {
					t.Errorf("event %d: user %s with vector value %q, want %s with %q", i, ev.user, ev.value, want, fmt.Sprint(i))
				}
			}
			if asked := fs.asked.Load(); asked != n {
				t.Errorf("the store was asked for %d rows for %d events; want one each", asked, n)
			}
			if rows, _, _ := st.stats(); rows != 0 {
				t.Errorf("%d rows written; want none (every event delivered at once)", rows)
			}
		})
	}
}

// TestNoReadAhead: a subscription with a rate limit, or a dispatcher with
// ReadAhead negative, reads each event's vector only when the event's turn
// comes, so the vector is no older than the attempt.
func TestNoReadAhead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		readAhead int
		rateLimit float64
	}{
		{"rate-limited subscription", 0, 10000},
		{"ReadAhead negative", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := &userStore{}
			sender := &askedSender{store: fs}
			d, _ := lookaheadSetup(t, fs, sender, tc.readAhead, tc.rateLimit)
			var done atomic.Int64
			const n = 20
			for _, m := range userMsgs(n, &done) {
				d.Handle(t.Context(), m)
			}
			eventually(t, "every message Done", func() bool { return done.Load() == n })
			for i, ev := range sender.events() {
				if ev.asked != int64(i+1) {
					t.Errorf("event %d sent when %d vectors had been read; want %d (none ahead)", i, ev.asked, i+1)
				}
			}
		})
	}
}

// TestStopEndsAReadAheadEnrichment: Stop while a read-ahead vector is still
// being read (the store answers nothing) ends that read and parks both the
// event being sent and the one read ahead; no goroutine is left (goleak).
func TestStopEndsAReadAheadEnrichment(t *testing.T) {
	t.Parallel()
	fs := &userStore{block: make(chan struct{})}
	sender := &askedSender{store: fs}
	d, st := lookaheadSetup(t, fs, sender, 1, 0)
	var done atomic.Int64
	for _, m := range userMsgs(2, &done) {
		d.Handle(t.Context(), m)
	}
	// Both vectors are asked for: the first event's own, and the second's
	// read ahead of it.
	eventually(t, "both vectors asked for", func() bool { return fs.asked.Load() == 2 })
	d.Stop()
	if done.Load() != 2 {
		t.Errorf("%d of 2 messages Done after Stop; want both parked", done.Load())
	}
	if rows, _, _ := st.stats(); rows != 2 {
		t.Errorf("%d rows after Stop, want 2 (both events parked)", rows)
	}
	if got := sender.events(); len(got) != 0 {
		t.Errorf("%d events sent; want none (no vector was answered)", len(got))
	}
}
