package match

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/filter"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/store"
)

// spec describes a test subscription briefly.
type spec struct {
	id     string
	state  outflowv1.Subscription_State // ACTIVE when zero
	views  []string
	entity map[string][]string
	cel    string
	rev    int64 // 1 when zero
}

func (s spec) stored() *store.Subscription {
	state := s.state
	if state == outflowv1.Subscription_STATE_UNSPECIFIED {
		state = outflowv1.Subscription_ACTIVE
	}
	rev := s.rev
	if rev == 0 {
		rev = 1
	}
	p := &outflowv1.Subscription{
		Id:               s.id,
		Name:             "name-" + s.id,
		FeatureViewNames: s.views,
		Filter:           s.cel,
		State:            state,
		Target:           &outflowv1.Subscription_Stream{Stream: &outflowv1.StreamTarget{}},
	}
	if s.entity != nil {
		p.EntityFilter = map[string]*outflowv1.EntityValues{}
		for k, v := range s.entity {
			p.EntityFilter[k] = &outflowv1.EntityValues{Values: v}
		}
	}
	return &store.Subscription{Proto: p, TenantID: "tenant", Revision: rev, Secrets: store.Secrets{Current: "whsec_x"}}
}

func testEnv(t testing.TB) *filter.Env {
	t.Helper()
	env, err := filter.NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func compileAll(t testing.TB, env *filter.Env, specs ...spec) []*Subscription {
	t.Helper()
	out := make([]*Subscription, 0, len(specs))
	for _, s := range specs {
		out = append(out, Compile(env, s.stored()))
	}
	return out
}

func rec(view string, keys map[string]string) *record.Record {
	return &record.Record{
		Version:          "1",
		FeatureViewName:  view,
		FeatureTimestamp: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		EntityKeys:       keys,
	}
}

func ids(subs []*Subscription) []string {
	out := []string{}
	for _, s := range subs {
		out = append(out, s.ID)
	}
	return out
}

// countingIndex builds an index whose record conversions for CEL are
// counted, and whose filter errors are collected.
type countingIndex struct {
	*Index
	mu          sync.Mutex
	conversions int
	filterErrs  map[string]error
}

func newCountingIndex(subs []*Subscription) *countingIndex {
	c := &countingIndex{filterErrs: map[string]error{}}
	c.Index = NewIndex(subs, IndexOptions{OnFilterError: func(id string, err error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.filterErrs[id] = err
	}})
	c.toProto = func(r *record.Record) *outflowv1.Record {
		c.mu.Lock()
		c.conversions++
		c.mu.Unlock()
		return r.Proto()
	}
	return c
}

func TestIndexMatch(t *testing.T) {
	t.Parallel()
	env := testEnv(t)
	tests := []struct {
		name            string
		subs            []spec
		rec             *record.Record
		want            []string
		wantConversions int
		wantFilterErrs  []string
	}{
		{
			name: "feature view listed",
			subs: []spec{{id: "a", views: []string{"fv1"}}},
			rec:  rec("fv1", map[string]string{"user_id": "u1"}),
			want: []string{"a"},
		},
		{
			name: "feature view not listed",
			subs: []spec{{id: "a", views: []string{"fv1"}}},
			rec:  rec("fv2", map[string]string{"user_id": "u1"}),
			want: []string{},
		},
		{
			name: "second of several feature views",
			subs: []spec{{id: "a", views: []string{"fv1", "fv2", "fv1"}}},
			rec:  rec("fv2", map[string]string{"user_id": "u1"}),
			want: []string{"a"},
		},
		{
			name: "entity filter: one of the values",
			subs: []spec{{id: "a", views: []string{"fv"}, entity: map[string][]string{"user_id": {"u1", "u2"}}}},
			rec:  rec("fv", map[string]string{"user_id": "u2"}),
			want: []string{"a"},
		},
		{
			name: "entity filter: none of the values",
			subs: []spec{{id: "a", views: []string{"fv"}, entity: map[string][]string{"user_id": {"u1", "u2"}}}},
			rec:  rec("fv", map[string]string{"user_id": "u3"}),
			want: []string{},
		},
		{
			name: "entity filter: every key must match",
			subs: []spec{{id: "a", views: []string{"fv"}, entity: map[string][]string{"user_id": {"u1"}, "org": {"o1"}}}},
			rec:  rec("fv", map[string]string{"user_id": "u1", "org": "o2"}),
			want: []string{},
		},
		{
			name: "entity filter: a listed key is missing from the record",
			subs: []spec{{id: "a", views: []string{"fv"}, entity: map[string][]string{"user_id": {"u1"}, "org": {"o1"}}}},
			rec:  rec("fv", map[string]string{"user_id": "u1"}),
			want: []string{},
		},
		{
			name: "entity filter: all keys match, extra record keys ignored",
			subs: []spec{{id: "a", views: []string{"fv"}, entity: map[string][]string{"user_id": {"u1"}, "org": {"o1", "o2"}}}},
			rec:  rec("fv", map[string]string{"user_id": "u1", "org": "o2", "device": "d"}),
			want: []string{"a"},
		},
		{
			name:            "CEL true",
			subs:            []spec{{id: "a", views: []string{"fv"}, cel: `record.entity_keys["user_id"].startsWith("vip_")`}},
			rec:             rec("fv", map[string]string{"user_id": "vip_1"}),
			want:            []string{"a"},
			wantConversions: 1,
		},
		{
			name:            "CEL false",
			subs:            []spec{{id: "a", views: []string{"fv"}, cel: `record.entity_keys["user_id"].startsWith("vip_")`}},
			rec:             rec("fv", map[string]string{"user_id": "u1"}),
			want:            []string{},
			wantConversions: 1,
		},
		{
			name:            "CEL error is no match, reported",
			subs:            []spec{{id: "a", views: []string{"fv"}, cel: `record.entity_keys["org"] == "o1"`}},
			rec:             rec("fv", map[string]string{"user_id": "u1"}),
			want:            []string{},
			wantConversions: 1,
			wantFilterErrs:  []string{"a"},
		},
		{
			name: "DISABLED excluded, PAUSED included",
			subs: []spec{
				{id: "a", views: []string{"fv"}, state: outflowv1.Subscription_DISABLED},
				{id: "b", views: []string{"fv"}, state: outflowv1.Subscription_PAUSED},
				{id: "c", views: []string{"fv"}},
			},
			rec:  rec("fv", map[string]string{"user_id": "u1"}),
			want: []string{"b", "c"},
		},
		{
			name: "filter that does not compile never matches",
			subs: []spec{
				{id: "a", views: []string{"fv"}, cel: `record.no_such_field == 1`},
				{id: "b", views: []string{"fv"}},
			},
			rec:  rec("fv", map[string]string{"user_id": "u1"}),
			want: []string{"b"},
		},
		{
			name: "several subscriptions, sorted by id",
			subs: []spec{
				{id: "d", views: []string{"fv"}, entity: map[string][]string{"user_id": {"u1"}}},
				{id: "c", views: []string{"fv"}, cel: `record.entity_keys["user_id"] == "u1"`},
				{id: "b", views: []string{"other"}},
				{id: "a", views: []string{"fv"}, cel: `record.entity_keys["user_id"] == "u2"`},
				{id: "e", views: []string{"fv", "other"}},
			},
			rec:             rec("fv", map[string]string{"user_id": "u1"}),
			want:            []string{"c", "d", "e"},
			wantConversions: 1,
		},
		{
			name: "no conversion when no candidate has a CEL filter",
			subs: []spec{
				{id: "a", views: []string{"fv"}, entity: map[string][]string{"user_id": {"u1"}}},
				{id: "b", views: []string{"fv"}, entity: map[string][]string{"user_id": {"u2"}}},
				{id: "c", views: []string{"other"}, cel: `true`},
			},
			rec:  rec("fv", map[string]string{"user_id": "u1"}),
			want: []string{"a"},
		},
		{
			name: "no conversion when the entity filter rejects first",
			subs: []spec{
				{id: "a", views: []string{"fv"}, entity: map[string][]string{"user_id": {"u2"}}, cel: `true`},
			},
			rec:  rec("fv", map[string]string{"user_id": "u1"}),
			want: []string{},
		},
		{
			name: "one conversion for several CEL filters",
			subs: []spec{
				{id: "a", views: []string{"fv"}, cel: `true`},
				{id: "b", views: []string{"fv"}, cel: `false`},
				{id: "c", views: []string{"fv"}, cel: `record.feature_view_name == "fv"`},
			},
			rec:             rec("fv", map[string]string{"user_id": "u1"}),
			want:            []string{"a", "c"},
			wantConversions: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ix := newCountingIndex(compileAll(t, env, tt.subs...))
			got := ix.Match(tt.rec)
			if !slices.Equal(ids(got), tt.want) {
				t.Errorf("Match = %v, want %v", ids(got), tt.want)
			}
			if ix.conversions != tt.wantConversions {
				t.Errorf("record converted for CEL %d times, want %d", ix.conversions, tt.wantConversions)
			}
			var gotErrs []string
			for id := range ix.filterErrs {
				gotErrs = append(gotErrs, id)
			}
			slices.Sort(gotErrs)
			if !slices.Equal(gotErrs, tt.wantFilterErrs) {
				t.Errorf("filter errors reported for %v, want %v", gotErrs, tt.wantFilterErrs)
			}
			for _, s := range got {
				if s.State == outflowv1.Subscription_DISABLED {
					t.Errorf("Match returned DISABLED subscription %s", s.ID)
				}
			}
		})
	}
}

// TestIndexMatchAllocations is not parallel: testing.AllocsPerRun refuses to
// run in a parallel test, whose neighbours' allocations it would count.
func TestIndexMatchAllocations(t *testing.T) {
	env := testEnv(t)
	ix := NewIndex(compileAll(t, env,
		spec{id: "a", views: []string{"plain"}},
		spec{id: "b", views: []string{"plain"}},
		spec{id: "c", views: []string{"entity"}, entity: map[string][]string{"user_id": {"u1", "u2"}}},
		spec{id: "d", views: []string{"entity"}, entity: map[string][]string{"org": {"o1"}}},
	), IndexOptions{})
	tests := []struct {
		name string
		rec  *record.Record
		want float64
	}{
		{"no filters", rec("plain", map[string]string{"user_id": "u1"}), 0},
		{"no such view", rec("none", map[string]string{"user_id": "u1"}), 0},
		{"entity filters, all match", rec("entity", map[string]string{"user_id": "u1", "org": "o1"}), 0},
		{"entity filters, none match", rec("entity", map[string]string{"user_id": "u3"}), 0},
		{"entity filters, some match", rec("entity", map[string]string{"user_id": "u1"}), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, func() { ix.Match(tt.rec) }); got != tt.want {
				t.Errorf("Match allocates %v times per record, want %v", got, tt.want)
			}
		})
	}
}

func TestMatchResultIsSafeToAppend(t *testing.T) {
	t.Parallel()
	ix := NewIndex(compileAll(t, testEnv(t),
		spec{id: "a", views: []string{"fv"}},
		spec{id: "b", views: []string{"fv"}},
	), IndexOptions{})
	r := rec("fv", map[string]string{"user_id": "u1"})
	got := ix.Match(r)
	_ = append(got, &Subscription{ID: "intruder"})
	if again := ids(ix.Match(r)); !slices.Equal(again, []string{"a", "b"}) {
		t.Fatalf("after appending to a result, Match = %v", again)
	}
}

func TestIndexWith(t *testing.T) {
	t.Parallel()
	env := testEnv(t)
	base := NewIndex(compileAll(t, env,
		spec{id: "a", views: []string{"fv1"}, rev: 3},
		spec{id: "b", views: []string{"fv1", "fv2"}},
		spec{id: "c", views: []string{"fv3"}},
	), IndexOptions{})
	one := func(s spec) *Subscription { return Compile(env, s.stored()) }
	tests := []struct {
		name    string
		changes map[string]*Subscription
		want    map[string][]string // feature view → ids
		wantLen int
	}{
		{
			name:    "insert",
			changes: map[string]*Subscription{"d": one(spec{id: "d", views: []string{"fv2", "fv4"}})},
			want:    map[string][]string{"fv1": {"a", "b"}, "fv2": {"b", "d"}, "fv3": {"c"}, "fv4": {"d"}},
			wantLen: 4,
		},
		{
			name:    "update moves feature views",
			changes: map[string]*Subscription{"b": one(spec{id: "b", views: []string{"fv3"}, rev: 2})},
			want:    map[string][]string{"fv1": {"a"}, "fv2": {}, "fv3": {"b", "c"}},
			wantLen: 3,
		},
		{
			name:    "update to DISABLED leaves matching, stays readable",
			changes: map[string]*Subscription{"a": one(spec{id: "a", views: []string{"fv1"}, rev: 4, state: outflowv1.Subscription_DISABLED})},
			want:    map[string][]string{"fv1": {"b"}, "fv2": {"b"}, "fv3": {"c"}},
			wantLen: 3,
		},
		{
			name:    "delete",
			changes: map[string]*Subscription{"b": nil, "zz": nil},
			want:    map[string][]string{"fv1": {"a"}, "fv2": {}, "fv3": {"c"}},
			wantLen: 2,
		},
		{
			name:    "older revision ignored",
			changes: map[string]*Subscription{"a": one(spec{id: "a", views: []string{"fv2"}, rev: 2})},
			want:    map[string][]string{"fv1": {"a", "b"}, "fv2": {"b"}, "fv3": {"c"}},
			wantLen: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			next := base.with(tt.changes)
			for view, want := range tt.want {
				if got := ids(next.Match(rec(view, map[string]string{"k": "v"}))); !slices.Equal(got, want) {
					t.Errorf("after change, %s matches %v, want %v", view, got, want)
				}
			}
			if next.Len() != tt.wantLen {
				t.Errorf("Len = %d, want %d", next.Len(), tt.wantLen)
			}
			for id, s := range tt.changes {
				if old := base.Get(id); s != nil && (old == nil || s.Revision >= old.Revision) && next.Get(id) != s {
					t.Errorf("Get(%s) is not the new subscription", id)
				}
				if s == nil && next.Get(id) != nil {
					t.Errorf("Get(%s) still returns a deleted subscription", id)
				}
			}
			// The old snapshot is untouched.
			if got := ids(base.Match(rec("fv1", nil))); !slices.Equal(got, []string{"a", "b"}) {
				t.Errorf("old index changed: fv1 matches %v", got)
			}
			if base.Len() != 3 {
				t.Errorf("old index changed: Len = %d", base.Len())
			}
		})
	}

	t.Run("untouched views are shared", func(t *testing.T) {
		t.Parallel()
		next := base.with(map[string]*Subscription{"c": one(spec{id: "c", views: []string{"fv3"}, rev: 2})})
		if &next.views["fv1"].subs[0] != &base.views["fv1"].subs[0] {
			t.Error("fv1 was rebuilt though no change touched it")
		}
		if &next.views["fv3"].subs[0] == &base.views["fv3"].subs[0] {
			t.Error("fv3 was not rebuilt")
		}
	})
}

func TestCompile(t *testing.T) {
	t.Parallel()
	env := testEnv(t)
	s := Compile(env, spec{id: "a", views: []string{"b", "a", "b"}, entity: map[string][]string{"k": {"1", "2", "1"}}, cel: "true", rev: 7}.stored())
	if !slices.Equal(s.FeatureViews, []string{"a", "b"}) {
		t.Errorf("FeatureViews = %v", s.FeatureViews)
	}
	if len(s.EntityFilter["k"]) != 2 {
		t.Errorf("EntityFilter = %v", s.EntityFilter)
	}
	if s.Filter == nil || s.Err != nil || s.Revision != 7 || s.TenantID != "tenant" || s.Secrets.Current != "whsec_x" || !s.Matchable() {
		t.Errorf("Compile = %+v", s)
	}

	bad := Compile(env, spec{id: "bad", views: []string{"a"}, cel: "record.nope"}.stored())
	if !errors.Is(bad.Err, filter.ErrInvalid) || bad.Filter != nil || bad.Matchable() {
		t.Errorf("a filter that does not compile gave Err %v, Filter %v, Matchable %v", bad.Err, bad.Filter, bad.Matchable())
	}
}

func TestSubscriptionMatches(t *testing.T) {
	t.Parallel()
	env := testEnv(t)
	s := Compile(env, spec{id: "a", views: []string{"fv"}, entity: map[string][]string{"user_id": {"u1", "vip_2"}},
		cel: `record.entity_keys["user_id"].startsWith("vip_")`}.stored())
	errSub := Compile(env, spec{id: "e", views: []string{"fv"}, cel: `record.entity_keys["nope"] == ""`}.stored())
	tests := []struct {
		name    string
		sub     *Subscription
		rec     *record.Record
		want    bool
		wantErr bool
	}{
		{"all pass", s, rec("fv", map[string]string{"user_id": "vip_2"}), true, false},
		{"other view", s, rec("fv2", map[string]string{"user_id": "vip_2"}), false, false},
		{"entity filter rejects", s, rec("fv", map[string]string{"user_id": "vip_3"}), false, false},
		{"CEL rejects", s, rec("fv", map[string]string{"user_id": "u1"}), false, false},
		{"CEL error", errSub, rec("fv", map[string]string{"user_id": "u1"}), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.sub.Matches(tt.rec)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("Matches = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	rnd := rand.New(rand.NewPCG(1, 2))
	const lo, hi = 100 * time.Millisecond, 10 * time.Second
	for attempt := 1; attempt <= 100; attempt++ {
		step := lo
		for i := 1; i < attempt; i++ {
			step = min(2*step, hi)
		}
		for range 50 {
			d := backoff(attempt, lo, hi, rnd)
			if d < step/2 || d > step || d > hi {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", attempt, d, step/2, step)
			}
		}
	}
}

// TestWebhooksOnlyLeavesStreamsOut: with WebhooksOnly, a stream
// subscription's filter never runs on the dispatcher's records (its clients'
// readers match for it), before or after an incremental change; a webhook
// subscription still matches, and Get still finds both.
func TestWebhooksOnlyLeavesStreamsOut(t *testing.T) {
	t.Parallel()
	env := testEnv(t)
	webhook := spec{id: "hook", views: []string{"fv"}, cel: `record.entity_keys["user_id"] == "u1"`}.stored()
	webhook.Proto.Target = &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{Url: "https://example.com/"}}
	subs := []*Subscription{
		Compile(env, webhook),
		Compile(env, spec{id: "stream", views: []string{"fv"}, cel: `record.entity_keys["user_id"].startsWith("u")`}.stored()),
	}
	var conversions int
	ix := NewIndex(subs, IndexOptions{WebhooksOnly: true})
	ix.toProto = func(r *record.Record) *outflowv1.Record { conversions++; return r.Proto() }
	changed := ix.with(map[string]*Subscription{"stream2": Compile(env, spec{id: "stream2", views: []string{"fv"}, cel: "true"}.stored())})
	for name, ix := range map[string]*Index{"built": ix, "changed": changed} {
		if got := ids(ix.Match(rec("fv", map[string]string{"user_id": "u1"}))); !slices.Equal(got, []string{"hook"}) {
			t.Errorf("%s: Match = %v, want only the webhook subscription", name, got)
		}
		if ix.Get("stream") == nil {
			t.Errorf("%s: Get(stream) = nil", name)
		}
	}
	if conversions != 2 {
		t.Errorf("%d conversions for CEL in two Match calls, want 2 (the webhook's filter only)", conversions)
	}
	// Stream subscriptions alone cost nothing per record.
	streams := NewIndex(subs[1:], IndexOptions{WebhooksOnly: true})
	streams.toProto = func(r *record.Record) *outflowv1.Record { t.Error("a stream filter ran"); return r.Proto() }
	if got := streams.Match(rec("fv", map[string]string{"user_id": "u1"})); got != nil {
		t.Errorf("stream subscriptions only: Match = %v, want nil", ids(got))
	}
	// Without the option, streams match as before.
	if got := ids(NewIndex(subs, IndexOptions{}).Match(rec("fv", map[string]string{"user_id": "u1"}))); !slices.Equal(got, []string{"hook", "stream"}) {
		t.Errorf("without WebhooksOnly: Match = %v", got)
	}
}

// TestIndexMatchAgreesWithSubscriptionMatches checks the entity index
// against the definition: for random subscriptions (entity filters on one or
// two keys, CEL filters, none) and random records, Index.Match returns
// exactly the matchable subscriptions whose Matches is true, sorted by ID.
func TestIndexMatchAgreesWithSubscriptionMatches(t *testing.T) {
	t.Parallel()
	env := testEnv(t)
	rnd := rand.New(rand.NewPCG(7, 10))
	users := []string{"u0", "u1", "u2", "u3"}
	orgs := []string{"o0", "o1"}
	pick := func(vals []string) []string {
		var out []string
		for _, v := range vals {
			if rnd.IntN(2) == 0 {
				out = append(out, v)
			}
		}
		if len(out) == 0 {
			out = vals[:1]
		}
		return out
	}
	for round := range 50 {
		var specs []spec
		for i := range 1 + rnd.IntN(40) {
			sp := spec{id: fmt.Sprintf("s%02d", i), views: []string{[]string{"fv", "other"}[rnd.IntN(2)]}}
			switch rnd.IntN(5) {
			case 0:
				sp.entity = map[string][]string{"user_id": pick(users)}
			case 1:
				sp.entity = map[string][]string{"org": pick(orgs), "user_id": pick(users)}
			case 2:
				sp.entity = map[string][]string{"org": pick(orgs)}
			case 3:
				sp.cel = fmt.Sprintf(`record.entity_keys["user_id"] == %q`, users[rnd.IntN(len(users))])
			}
			if rnd.IntN(6) == 0 {
				sp.state = outflowv1.Subscription_DISABLED
			}
			specs = append(specs, sp)
		}
		subs := compileAll(t, env, specs...)
		ix := NewIndex(subs, IndexOptions{})
		for range 20 {
			keys := map[string]string{}
			if rnd.IntN(4) > 0 {
				keys["user_id"] = users[rnd.IntN(len(users))]
			}
			if rnd.IntN(2) == 0 {
				keys["org"] = orgs[rnd.IntN(len(orgs))]
			}
			r := rec("fv", keys)
			var want []string
			for _, s := range subs {
				if ok, _ := s.Matches(r); ok && s.Matchable() {
					want = append(want, s.ID)
				}
			}
			slices.Sort(want)
			if got := ids(ix.Match(r)); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Fatalf("round %d, keys %v: Match = %v, want %v", round, keys, got, want)
			}
		}
	}
}
