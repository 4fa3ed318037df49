package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/outflow-dev/outflow/match"
	"github.com/outflow-dev/outflow/webhook"
)

// latencySender answers every request after its URL's latency (a receiver
// that takes that long, not a synchronisation), as fakeSender does.
type latencySender struct {
	*fakeSender
	latency map[string]time.Duration
}

func (s *latencySender) Send(ctx context.Context, req webhook.Request) webhook.Result {
	timer := time.NewTimer(s.latency[req.URL])
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return webhook.Result{Outcome: webhook.OutcomeRetry, Err: ctx.Err()}
	case <-timer.C:
	}
	return s.fakeSender.Send(ctx, req)
}

// detachLog records the subscriptions the dispatcher says it detached.
type detachLog struct {
	mu      sync.Mutex
	ids     []string
	reasons []string
}

func (h *detachLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *detachLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != detachedMessage {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "subscription_id":
			h.ids = append(h.ids, a.Value.String())
		case "reason":
			h.reasons = append(h.reasons, a.Value.String())
		}
		return true
	})
	return nil
}

func (h *detachLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *detachLog) WithGroup(string) slog.Handler      { return h }

func (h *detachLog) detached() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(slices.Values(h.ids))
}

// TestLaneWaitDetachesOnlyTheLaggard: on a backlog every healthy
// subscription's lane is full and the consumer, handing each record to each
// subscription in turn, waits on whichever lane it reaches first. Those
// waits are backpressure: equally fast subscriptions all stay attached
// (before, the waits piled up on one of them until it was detached, and it
// re-read the topic on its own reader). A receiver slower on every request
// than the others, whose waits each stay under LaneWait, is still detached
// by the waits adding up while the others have room to spare, and one that
// does not answer by the first wait that runs past LaneWait.
func TestLaneWaitDetachesOnlyTheLaggard(t *testing.T) {
	t.Parallel()
	// Equally fast receivers take fast (20 ms a request): a loaded test
	// machine's scheduling hiccups (tens of ms under the whole suite with
	// -race) are small beside a request, so no fast receiver falls four
	// requests behind its peers and looks like the laggard; at 2 ms a
	// request they did, and a fast subscription was detached once in a few
	// -race runs. The backlog lasts about three LaneWaits (records × fast),
	// so that the old rule, which piled the waits on one of the equal
	// subscriptions, detached it (two to six times a case).
	const (
		fast     = 20 * time.Millisecond
		records  = 120
		laneWait = 800 * time.Millisecond
	)
	tests := []struct {
		name string
		// latency of each subscription's receiver, by subscription id
		latency      map[string]time.Duration
		wantDetached []string
		// laneWait overrides the LaneWait above.
		laneWait time.Duration
	}{
		{
			name:    "four equally fast on one backlog",
			latency: map[string]time.Duration{"sub_a": fast, "sub_b": fast, "sub_c": fast, "sub_d": fast},
		},
		{
			name:    "two equally fast on one backlog",
			latency: map[string]time.Duration{"sub_a": fast, "sub_b": fast},
		},
		{
			// Each of its waits (one request) stays under LaneWait: caught by
			// the waits adding up while the others have room.
			name:         "one slow among three fast",
			latency:      map[string]time.Duration{"sub_a": fast, "sub_b": fast, "sub_c": fast, "sub_slow": 10 * fast},
			wantDetached: []string{"sub_slow"},
		},
		{
			// One wait runs past LaneWait: detached whatever the others do.
			name:         "one stuck among three fast",
			latency:      map[string]time.Duration{"sub_a": fast, "sub_b": fast, "sub_c": fast, "sub_stuck": time.Hour},
			wantDetached: []string{"sub_stuck"},
		},
		{
			// LaneWait far away: the wait is cut short because the other
			// three have had nothing queued for starveBound (40 ms), and
			// they get every event within the test's deadline (before,
			// the consumer waited the whole LaneWait).
			name:         "one stuck among three fast that run dry",
			latency:      map[string]time.Duration{"sub_a": fast, "sub_b": fast, "sub_c": fast, "sub_stuck": time.Hour},
			wantDetached: []string{"sub_stuck"},
			laneWait:     time.Minute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			snd := &latencySender{fakeSender: newFakeSender(), latency: map[string]time.Duration{}}
			var subs []*match.Subscription
			var healthy []string
			for id, lat := range tt.latency {
				url := fmt.Sprintf("https://%s.example.com", id)
				snd.latency[url] = lat
				subs = append(subs, webhookSub(id, url))
				if !slices.Contains(tt.wantDetached, id) {
					healthy = append(healthy, url)
				}
			}
			logs := &detachLog{}
			// One lane of 8 per subscription (max_in_flight 1): a fast
			// receiver empties it in 160 ms, within one slow request
			// (200 ms), which in turn is well within LaneWait.
			wait := laneWait
			if tt.laneWait > 0 {
				wait = tt.laneWait
			}
			cfg := Config{LaneQueue: 8, LaneWait: wait, DrainTimeout: 200 * time.Millisecond,
				Detach: DetachConfig{CheckpointEvents: 50, CheckpointInterval: time.Hour, RejoinLag: 8, FetchWait: 5 * time.Millisecond}}
			log := newFakeLog(records)
			d, err := New(Params{Config: cfg, Store: newFakeStore(), Sender: snd, Log: log, Cursors: newFakeCursors(),
				Matcher: staticSubs{match.NewIndex(subs, match.IndexOptions{})}, Logger: slog.New(logs)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				d.Stop()
				if n := log.readers.Load(); n != 0 {
					t.Errorf("%d position readers left open", n)
				}
			})

			var done atomic.Int64
			start := time.Now()
			for _, m := range msgs(records, &done) {
				d.Handle(t.Context(), m)
			}
			for _, url := range healthy {
				eventually(t, url+" has every event", func() bool { return snd.delivered(url) == records })
			}
			if took := time.Since(start); tt.laneWait > 0 && took > tt.laneWait/2 {
				t.Errorf("the healthy subscriptions took %v, held back for most of LaneWait (%v)", took, tt.laneWait)
			}
			detachedTotal := func() int {
				var c dto.Metric
				if err := d.metrics.detached.Write(&c); err != nil {
					t.Fatal(err)
				}
				return int(c.GetCounter().GetValue())
			}
			if len(tt.wantDetached) > 0 {
				eventually(t, fmt.Sprintf("%v detached", tt.wantDetached), func() bool { return detachedTotal() >= len(tt.wantDetached) })
			}
			logs.mu.Lock()
			t.Logf("detached %v: %q", logs.ids, logs.reasons)
			logs.mu.Unlock()
			if got := logs.detached(); !slices.Equal(got, tt.wantDetached) || detachedTotal() != len(got) {
				t.Errorf("detached %v (%d in all); want %v", got, detachedTotal(), tt.wantDetached)
			}
		})
	}
}
