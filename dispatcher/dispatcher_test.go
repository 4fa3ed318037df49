package dispatcher

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outflow-dev/outflow/filter"
	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
)

func TestEventIDIsStablePerSubscriptionAndPosition(t *testing.T) {
	t.Parallel()
	p := source.Position{Kind: "kafka", Topic: "fv-output", Partition: 3, Offset: 1234}
	id := EventID("sub_a", p)
	if !strings.HasPrefix(id, "evt_") || len(id) != len("evt_")+26 {
		t.Fatalf("EventID = %q, want evt_ and 26 characters", id)
	}
	if EventID("sub_a", p) != id {
		t.Error("EventID is not deterministic")
	}
	other := p
	other.Offset++
	for name, got := range map[string]string{
		"another subscription": EventID("sub_b", p),
		"another offset":       EventID("sub_a", other),
		"another partition":    EventID("sub_a", source.Position{Kind: "kafka", Topic: "fv-output", Partition: 4, Offset: 1234}),
		"another topic":        EventID("sub_a", source.Position{Kind: "kafka", Topic: "fv-other", Partition: 3, Offset: 1234}),
	} {
		if got == id {
			t.Errorf("%s gives the same id", name)
		}
	}
}

// TestEventIDIsUnchanged pins event ids to the values earlier versions
// derived (sha256 of subscription id, NUL, position key; lower-case base32):
// an id that changed across an upgrade would reach receivers as a new
// event for a record they already have, and miss the retry queue's row.
func TestEventIDIsUnchanged(t *testing.T) { // not parallel: AllocsPerRun
	tests := []struct {
		sub  string
		pos  source.Position
		want string
	}{
		{"sub_a", source.Position{Kind: "kafka", Topic: "fv-output", Partition: 3, Offset: 1234}, "evt_dxmx7puvy7dy4reorblbopyk5u"},
		{"01J9Z3sub", source.Position{Kind: "kafka", Topic: "t", Offset: math.MaxInt64}, "evt_owgnuc3em4gle7i2jtz6aix7cx"},
		{"sub_k", source.Position{Kind: "kinesis", Stream: "fv-stream", Shard: "shardId-000000000001",
			Sequence: "49590338271490256608559692538361571095921575989136588898"}, "evt_ywfjvhc5emrq65fqnzsb64bzdv"},
		// Longer than EventID's stack buffer.
		{strings.Repeat("s", 300), source.Position{Kind: "kafka", Topic: strings.Repeat("t", 249), Partition: math.MaxInt32, Offset: 42},
			"evt_6yxczorbntpe45ergbxtwflr3q"},
	}
	for _, tt := range tests {
		if got := EventID(tt.sub, tt.pos); got != tt.want {
			t.Errorf("EventID(%.20q, %v) = %s, want %s", tt.sub, tt.pos, got, tt.want)
		}
	}
	p := tests[0].pos
	if n := testing.AllocsPerRun(100, func() { _ = EventID("sub_a", p) }); n != 1 {
		t.Errorf("EventID allocates %v times, want 1 (the id)", n)
	}
}

func TestEnvelopeKeepsTheRecordAsWritten(t *testing.T) {
	t.Parallel()
	raw := []byte(`{"version": "1", "feature_view_name": "fv", "big": 12345678901234567890, "extra": {"z": 1, "a": [true]}}`)
	pos := source.Position{Kind: "kafka", Topic: "t", Partition: 2, Offset: 99}
	env := newEnvelope("sub_x", pos, raw, time.Date(2026, 11, 24, 10, 0, 0, 123e6, time.UTC))
	body, err := env.withVector(&outflowv1.FeatureVector{WorkspaceName: "prod", Attempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		ID             string          `json:"id"`
		Type           string          `json:"type"`
		SubscriptionID string          `json:"subscription_id"`
		CreatedAt      string          `json:"created_at"`
		Record         json.RawMessage `json:"record"`
		FeatureVector  map[string]any  `json:"feature_vector"`
		Source         map[string]any  `json:"source"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if want := `{"version":"1","feature_view_name":"fv","big":12345678901234567890,"extra":{"z":1,"a":[true]}}`; string(got.Record) != want {
		t.Errorf("record = %s, want the input compacted, unknown fields, key order and big integers kept: %s", got.Record, want)
	}
	if got.ID != EventID("sub_x", pos) || got.Type != EventType || got.SubscriptionID != "sub_x" || got.CreatedAt != "2026-11-24T10:00:00.123Z" {
		t.Errorf("envelope = %+v", got)
	}
	if got.Source["offset"] != float64(99) || got.Source["partition"] != float64(2) || got.Source["kind"] != "kafka" {
		t.Errorf("source = %v, want numeric partition and offset", got.Source)
	}
	if got.FeatureVector["workspace_name"] != "prod" || got.FeatureVector["attempts"] != float64(2) {
		t.Errorf("feature_vector = %v", got.FeatureVector)
	}
	bare, _ := env.withVector(nil)
	if strings.Contains(string(bare), "feature_vector") {
		t.Errorf("an event without enrichment has a feature_vector: %s", bare)
	}
	// The webhook path writes the vector straight into the body: the same
	// bytes, whether its size hint is short or long.
	vector := []byte(`{"workspace_name":"prod","features":{"a.x":1.5},"attempts":2}`)
	for _, hint := range []int{0, 8, 4096} {
		if got := env.bodyWith(hint, func(b []byte) []byte { return append(b, vector...) }); string(got) != string(env.body(vector)) {
			t.Errorf("bodyWith(%d) = %s, want %s", hint, got, env.body(vector))
		}
	}
}

func TestBreaker(t *testing.T) {
	t.Parallel()
	cfg := BreakerConfig{Threshold: 3, Cooldown: time.Minute, DisableAfter: time.Hour}.WithDefaults()
	b := newBreaker(cfg)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 2 {
		if b.failure(now.Add(time.Duration(i) * time.Second)) {
			t.Fatal("disabled too early")
		}
	}
	if _, open := b.open(now.Add(2 * time.Second)); open {
		t.Fatal("open before the threshold")
	}
	b.failure(now.Add(2 * time.Second))
	until, open := b.open(now.Add(3 * time.Second))
	if !open || !until.Equal(now.Add(2*time.Second+time.Minute)) {
		t.Fatalf("after 3 failures open = %v until %v; want open for the cooldown", open, until)
	}
	if _, open := b.open(until); open {
		t.Error("still open when the cooldown has passed (the next event probes)")
	}
	if !b.failure(now.Add(time.Hour)) {
		t.Error("failing for the whole DisableAfter window did not ask to disable")
	}
	b.success()
	if _, open := b.open(now.Add(time.Hour)); open || b.failure(now.Add(2*time.Hour)) {
		t.Error("a success did not reset the breaker")
	}
}

// TestBreakerHalfOpenLetsOneProbe: after the cooldown one event is
// admitted as the probe and the others wait for its result; a probe that
// fails opens the circuit for another cooldown, one that succeeds closes
// it, and a slot never reported (released, or past ProbeTimeout) lets the
// next event probe.
func TestBreakerHalfOpenLetsOneProbe(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type step struct {
		at    time.Duration
		do    string // "admit", "fail", "succeed", "release"
		ok    bool   // admit: admitted
		probe bool   // admit: as the probe
		until time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"one probe, the others wait for it", []step{
			{at: time.Second, do: "admit", ok: false, until: time.Minute},
			{at: time.Minute, do: "admit", ok: true, probe: true},
			{at: time.Minute, do: "admit", ok: false, until: time.Minute + 5*time.Minute},
			{at: 2 * time.Minute, do: "admit", ok: false, until: time.Minute + 5*time.Minute},
		}},
		{"a failed probe opens it again", []step{
			{at: time.Minute, do: "admit", ok: true, probe: true},
			{at: 2 * time.Minute, do: "fail"},
			{at: 2*time.Minute + time.Second, do: "admit", ok: false, until: 3 * time.Minute},
			{at: 3 * time.Minute, do: "admit", ok: true, probe: true},
		}},
		{"a successful probe closes it", []step{
			{at: time.Minute, do: "admit", ok: true, probe: true},
			{at: 2 * time.Minute, do: "succeed"},
			{at: 2 * time.Minute, do: "admit", ok: true},
			{at: 2 * time.Minute, do: "admit", ok: true},
		}},
		{"a released slot lets the next event probe", []step{
			{at: time.Minute, do: "admit", ok: true, probe: true},
			{at: time.Minute, do: "release"},
			{at: time.Minute, do: "admit", ok: true, probe: true},
		}},
		{"a probe that never reports lapses", []step{
			{at: time.Minute, do: "admit", ok: true, probe: true},
			{at: 6*time.Minute - time.Nanosecond, do: "admit", ok: false, until: 6 * time.Minute},
			{at: 6 * time.Minute, do: "admit", ok: true, probe: true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBreaker(BreakerConfig{Threshold: 2, Cooldown: time.Minute, ProbeTimeout: 5 * time.Minute}.WithDefaults())
			b.failure(t0)
			b.failure(t0)
			if !b.tripped() {
				t.Fatal("not tripped after the threshold")
			}
			for i, s := range tc.steps {
				changed := b.wait()
				switch s.do {
				case "admit":
					until, ok, probe := b.admit(at(s.at))
					if ok != s.ok || probe != s.probe || (!ok && !until.Equal(at(s.until))) {
						t.Fatalf("step %d: admit at %v = (%v, %v, until %v); want (%v, %v, until %v)",
							i, s.at, ok, probe, until.Sub(t0), s.ok, s.probe, s.until)
					}
					// Refused, or the probe under way: open holds the
					// others back too; closed, it does not.
					if _, open := b.open(at(s.at)); open != (!ok || probe) {
						t.Errorf("step %d: open = %v after admit = (%v, %v)", i, open, ok, probe)
					}
					continue
				case "fail":
					b.failure(at(s.at))
				case "succeed":
					b.success()
					if b.tripped() {
						t.Errorf("step %d: tripped after a success", i)
					}
				case "release":
					b.release()
				}
				select {
				case <-changed:
				default:
					t.Errorf("step %d: %s did not wake the waiters", i, s.do)
				}
			}
		})
	}
}

func TestNextStep(t *testing.T) {
	t.Parallel()
	env, err := filter.NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	sub := match.Compile(env, &store.Subscription{Proto: &outflowv1.Subscription{
		Id: "sub_r", FeatureViewNames: []string{"fv"}, State: outflowv1.Subscription_ACTIVE,
		Target:      &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{Url: "https://x.example.com"}},
		RetryPolicy: &outflowv1.RetryPolicy{MaxAttempts: 3, MaxAge: durationpb.New(time.Hour)},
	}})
	d := &Dispatcher{rnd: rand.New(rand.NewPCG(1, 2))}
	first := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		res        attemptResult
		attempts   int
		now        time.Time
		wantStatus string
		// wantAfter/wantBefore bound the next attempt (RETRYING only).
		wantAfter, wantBefore time.Duration
	}{
		{"first failure waits about 5s", attemptResult{outcome: failed}, 1, first, store.StatusRetrying, 4 * time.Second, 6 * time.Second},
		{"second failure waits about 5m", attemptResult{outcome: failed}, 2, first, store.StatusRetrying, 4 * time.Minute, 6 * time.Minute},
		{"Retry-After longer than the backoff wins", attemptResult{outcome: failed, retryAfter: 20 * time.Second}, 1, first, store.StatusRetrying, 20 * time.Second, 21 * time.Second},
		{"max attempts reached", attemptResult{outcome: failed}, 3, first, store.StatusDead, 0, 0},
		{"next attempt past max age", attemptResult{outcome: failed}, 2, first.Add(58 * time.Minute), store.StatusDead, 0, 0},
		{"feature store refused", attemptResult{outcome: fatal}, 1, first, store.StatusDead, 0, 0},
		{"410 Gone", attemptResult{outcome: gone}, 1, first, store.StatusDead, 0, 0},
	}
	for _, tt := range tests {
		status, next := d.nextStep(sub, tt.res, tt.attempts, first, tt.now)
		if status != tt.wantStatus {
			t.Errorf("%s: status %s, want %s", tt.name, status, tt.wantStatus)
			continue
		}
		if status == store.StatusRetrying {
			if wait := next.Sub(tt.now); wait < tt.wantAfter || wait > tt.wantBefore {
				t.Errorf("%s: next attempt in %s, want between %s and %s", tt.name, wait, tt.wantAfter, tt.wantBefore)
			}
		} else if !next.IsZero() {
			t.Errorf("%s: a dead delivery has a next attempt", tt.name)
		}
	}
}

func TestSweepEndsTheLanesOfDeletedSubscriptions(t *testing.T) {
	t.Parallel()
	// The matcher is never run: its index is empty, as after a delete.
	m, err := match.New(match.Config{Store: &store.Store{}})
	if err != nil {
		t.Fatal(err)
	}
	d := &Dispatcher{matcher: m, targets: map[string]*target{}}
	d.accepting.Store(true)
	lanes := &laneSet{lanes: []*lane{{q: make(chan *job, 1)}}, quit: make(chan struct{})}
	gone := &target{id: "sub_gone", lanes: lanes}
	d.targets["sub_gone"] = gone

	d.sweepTargets()
	select {
	case <-lanes.quit:
	default:
		t.Error("the deleted subscription's lanes were not retired")
	}
	if gone.lanes != nil {
		t.Error("the deleted subscription still has lanes")
	}
	if len(d.targets) != 0 {
		t.Errorf("targets = %v, want none", d.targets)
	}
	// A job that took the target before the sweep is refused (and parked by
	// its caller) rather than starting new lanes nobody would close.
	sub := match.Compile(nil, &store.Subscription{Proto: &outflowv1.Subscription{Id: "sub_gone",
		Target: &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{MaxInFlight: 2}}}})
	if gone.enqueue(context.Background(), d, &job{sub: sub}, 0) != refused {
		t.Error("a swept target accepted a job")
	}
}

// TestMisconfigDelayBacksOffWithinTheCap: the wait after the gateway's own misconfiguration
// starts at Config.MisconfigBackoff, doubles with each consecutive failure, carries ±20%
// jitter and never exceeds MaxMisconfigBackoff.
func TestMisconfigDelayBacksOffWithinTheCap(t *testing.T) {
	t.Parallel()
	d := &Dispatcher{cfg: Config{}.WithDefaults(), rnd: rand.New(rand.NewPCG(1, 2))}
	if d.cfg.MisconfigBackoff != 5*time.Second {
		t.Fatalf("default MisconfigBackoff %s, want 5s", d.cfg.MisconfigBackoff)
	}
	tests := []struct {
		n      int64
		lo, hi time.Duration
	}{
		{1, 4 * time.Second, 6 * time.Second},    // 5 s
		{2, 8 * time.Second, 12 * time.Second},   // 10 s
		{4, 32 * time.Second, 48 * time.Second},  // 40 s
		{7, 4 * time.Minute, 5 * time.Minute},    // capped at 5 min
		{1000, 4 * time.Minute, 5 * time.Minute}, // capped at 5 min
	}
	for _, tt := range tests {
		for range 200 {
			if got := d.misconfigDelay(tt.n); got < tt.lo || got > tt.hi {
				t.Fatalf("misconfigDelay(%d) = %s, want within [%s, %s]", tt.n, got, tt.lo, tt.hi)
			}
		}
	}
}

func TestCompact(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		same           bool // returned without a copy
	}{
		{"already compact", `{"a":1,"b":["x","y"]}`, `{"a":1,"b":["x","y"]}`, true},
		{"spaces", `{ "a" : 1 , "b" : [ 2 ] }`, `{"a":1,"b":[2]}`, false},
		{"newlines and tabs", "{\n\t\"a\": 1,\r\n\t\"b\": 2\n}", `{"a":1,"b":2}`, false},
		{"white space inside a string is kept", `{"a": "x y\tz"}`, `{"a":"x y\tz"}`, false},
		{"escaped newline is not white space", `{"a":"x\ny"}`, `{"a":"x\ny"}`, true},
		{"big integer kept", `{"n": 12345678901234567890}`, `{"n":12345678901234567890}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			got := compact(in)
			if string(got) != tc.want {
				t.Errorf("compact(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if same := len(got) > 0 && &got[0] == &in[0]; same != tc.same {
				t.Errorf("compact(%q) returned its input: %v, want %v", tc.in, same, tc.same)
			}
		})
	}
}
