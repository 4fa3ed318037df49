package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/match"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/webhook"
)

// TestLaneSetPick: an entity's jobs share a lane while any is counted; an
// entity with none goes to the least loaded lane (ties from its hash's
// lane on); uncounting frees the pin.
func TestLaneSetPick(t *testing.T) {
	type op struct {
		pick    bool   // pick, else unpick
		entity  uint64 // hash
		lane    int    // the lane picked (pick), or to uncount (unpick)
		wantLds []int  // loads after the op
	}
	for _, tc := range []struct {
		name string
		n    int
		ops  []op
	}{
		{"an idle entity takes its hash's lane when all are empty", 4, []op{
			{true, 6, 2, []int{0, 0, 1, 0}},
		}},
		{"a burst spreads over the lanes, whatever the hashes", 3, []op{
			{true, 0, 0, []int{1, 0, 0}},
			{true, 3, 1, []int{1, 1, 0}}, // hashes to 0, which is busier
			{true, 6, 2, []int{1, 1, 1}},
			{true, 9, 0, []int{2, 1, 1}}, // a tie: from its own lane (0) on
		}},
		{"an entity with a job counted keeps its lane", 2, []op{
			{true, 1, 1, []int{0, 1}},
			{true, 1, 1, []int{0, 2}},
			{true, 1, 1, []int{0, 3}},
			{true, 2, 0, []int{1, 3}},
		}},
		{"once its jobs are uncounted it may move", 2, []op{
			{true, 1, 1, []int{0, 1}},
			{true, 3, 0, []int{1, 1}},
			{true, 3, 0, []int{2, 1}},
			{false, 1, 1, []int{2, 0}},
			{true, 1, 1, []int{2, 1}},
			{false, 3, 0, []int{1, 1}},
			{false, 3, 0, []int{0, 1}},
			{true, 3, 0, []int{1, 1}}, // free again: the emptier lane, not where it was pinned
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls := newLaneSet(&target{}, tc.n, 4)
			for i, o := range tc.ops {
				if o.pick {
					if got := ls.pick(o.entity); got != o.lane {
						t.Fatalf("op %d: pick(%d) = lane %d, want %d", i, o.entity, got, o.lane)
					}
				} else {
					ls.unpick(o.entity, o.lane)
				}
				if !slices.Equal(ls.load, o.wantLds) {
					t.Fatalf("op %d: loads %v, want %v", i, ls.load, o.wantLds)
				}
			}
		})
	}
}

// entitySender holds requests for one entity until released, and records
// the order each entity's events arrive in.
type entitySender struct {
	*fakeSender
	hold    string // `"user_id":"<hold>"`
	release chan struct{}
	mu      sync.Mutex
	order   map[string][]int64 // entity → offsets
}

func (s *entitySender) Send(ctx context.Context, req webhook.Request) webhook.Result {
	entity, offset := entityOf(req.Body)
	if entity == s.hold {
		select {
		case <-s.release:
		case <-ctx.Done():
			return webhook.Result{Outcome: webhook.OutcomeRetry, Err: ctx.Err()}
		}
	}
	s.mu.Lock()
	s.order[entity] = append(s.order[entity], offset)
	s.mu.Unlock()
	return s.fakeSender.Send(ctx, req)
}

func (s *entitySender) arrived() map[string][]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]int64{}
	for k, v := range s.order {
		out[k] = slices.Clone(v)
	}
	return out
}

// entityOf reads the user id and the offset of an event body.
func entityOf(body []byte) (string, int64) {
	b := string(body)
	_, rest, _ := strings.Cut(b, `"user_id":"`)
	entity, _, _ := strings.Cut(rest, `"`)
	_, rest, _ = strings.Cut(b, `"offset":`)
	var offset int64
	fmt.Sscan(strings.Trim(strings.SplitN(rest, ",", 2)[0], `"}`), &offset)
	return entity, offset
}

// TestSlowEntityHoldsUpNoOther: with two lanes, one entity whose requests
// hang does not hold up the entities that would hash onto its lane: while
// it hangs, every other entity's event arrives (they come at a pace the
// receiver keeps up with, so the other lane is always the less loaded),
// and its own arrive in source order once it answers. With a lane fixed by
// the entity's hash, about half of them would wait behind it.
func TestSlowEntityHoldsUpNoOther(t *testing.T) {
	t.Parallel()
	sub := webhookSub("sub_1", "https://r.example.com")
	sub.Proto.GetWebhook().MaxInFlight = 2
	snd := &entitySender{fakeSender: newFakeSender(), hold: "slow", release: make(chan struct{}), order: map[string][]int64{}}
	close(snd.fakeSender.release)
	d, err := New(Params{Config: Config{LaneQueue: 64}, Store: newFakeStore(), Sender: snd,
		Matcher: staticSubs{match.NewIndex([]*match.Subscription{sub}, match.IndexOptions{})}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	defer func() {
		select {
		case <-snd.release:
		default:
			close(snd.release)
		}
	}()
	var done atomic.Int64
	var all []*source.Message
	add := func(entity string) {
		raw := fmt.Appendf(nil, `{"version":"1","feature_view_name":"fv","feature_timestamp":"2026-01-01T00:00:00Z","entity_keys":{"user_id":%q}}`, entity)
		all = append(all, source.NewMessage(source.Position{Kind: "kafka", Topic: "t", Offset: int64(len(all))}, nil, raw, time.Now(), func() { done.Add(1) }))
	}
	for range 3 {
		add("slow")
	}
	const others = 40
	for i := range others {
		add(fmt.Sprintf("u%d", i))
	}
	for i, m := range all {
		d.Handle(t.Context(), m)
		if i >= 3 { // events arriving at a pace the receiver keeps up with
			eventually(t, fmt.Sprintf("entity u%d's event while the slow one hangs", i-3), func() bool { return len(snd.arrived()) >= i-2 })
		}
	}
	if got := snd.arrived()["slow"]; len(got) != 0 {
		t.Fatalf("the held entity's events arrived: %v", got)
	}
	close(snd.release)
	eventually(t, "every message Done", func() bool { return done.Load() == int64(len(all)) })
	if got := snd.arrived()["slow"]; !slices.Equal(got, []int64{0, 1, 2}) {
		t.Errorf("the held entity's events arrived as %v; want in source order 0, 1, 2", got)
	}
}
