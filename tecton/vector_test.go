package tecton

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestVectorConsistent(t *testing.T) {
	t.Parallel()

	ts := time.Date(2022, 6, 7, 0, 36, 8, 832_793_000, time.UTC)
	at := func(d time.Duration) Feature {
		return Feature{Name: "fv.x", FeatureView: "fv", EffectiveTime: ts.Add(d), HasEffectiveTime: true, Status: StatusPresent}
	}
	named := func(f Feature, name, view string) Feature {
		f.Name, f.FeatureView = name, view
		return f
	}
	// missing is a feature of the record's own view that the online store has not
	// materialised: null, no effective time.
	missing := func(status string) Feature {
		return Feature{Name: "fv.x", FeatureView: "fv", Value: []byte("null"), Status: status}
	}
	// onDemand is a feature of an on-demand view: no effective time, never compared.
	onDemand := Feature{Name: "odfv.channel", FeatureView: "odfv", Value: []byte(`"web"`), Status: StatusPresent}

	tests := []struct {
		name           string
		features       []Feature
		featureView    string
		wantConsistent bool
		wantCompared   int
	}{
		{"equal effective time is consistent", []Feature{at(0)}, "fv", true, 1},
		{"later effective time is consistent", []Feature{at(time.Second)}, "fv", true, 1},
		{"one nanosecond later is consistent", []Feature{at(time.Nanosecond)}, "fv", true, 1},
		{"one nanosecond earlier is not", []Feature{at(-time.Nanosecond)}, "fv", false, 1},
		{"an hour earlier is not", []Feature{at(-time.Hour)}, "fv", false, 1},
		{"every feature of the view must have caught up", []Feature{named(at(time.Second), "fv.a", "fv"), named(at(-time.Nanosecond), "fv.b", "fv")}, "fv", false, 2},
		{"all features caught up", []Feature{named(at(0), "fv.a", "fv"), named(at(time.Minute), "fv.b", "fv")}, "fv", true, 2},
		{"other views are ignored even when stale", []Feature{at(0), named(at(-time.Hour), "other.y", "other")}, "fv", true, 1},
		{"only other views: nothing to compare", []Feature{named(at(-time.Hour), "other.y", "other")}, "fv", true, 0},
		{"on-demand features are not compared", []Feature{onDemand}, "fv", true, 0},
		{"on-demand next to a caught-up feature", []Feature{onDemand, at(0)}, "fv", true, 1},
		{"on-demand ignored next to a stale feature", []Feature{onDemand, at(-time.Millisecond)}, "fv", false, 1},
		{"own view MISSING_DATA without effective time is not caught up", []Feature{missing(StatusMissingData)}, "fv", false, 1},
		{"own view CACHED_MISSING_DATA without effective time", []Feature{missing(StatusCachedMissingData)}, "fv", false, 1},
		{"own view UNKNOWN without effective time", []Feature{missing(StatusUnknown)}, "fv", false, 1},
		{"own view CACHED_UNKNOWN without effective time", []Feature{missing(StatusCachedUnknown)}, "fv", false, 1},
		{"own view without status or effective time", []Feature{missing("")}, "fv", false, 1},
		{"own view PRESENT but without effective time", []Feature{missing(StatusPresent)}, "fv", false, 1},
		{"one missing feature spoils caught-up ones", []Feature{named(at(time.Hour), "fv.a", "fv"), named(missing(StatusMissingData), "fv.b", "fv")}, "fv", false, 2},
		{"MISSING_DATA with a caught-up effective time counts by its time", []Feature{{Name: "fv.x", FeatureView: "fv", Value: []byte("null"), EffectiveTime: ts, HasEffectiveTime: true, Status: StatusMissingData}}, "fv", true, 1},
		{"other view missing is exempt", []Feature{at(0), named(missing(StatusMissingData), "other.y", "other")}, "fv", true, 1},
		{"zero effective time flagged as set is compared", []Feature{{Name: "fv.z", FeatureView: "fv", HasEffectiveTime: true}}, "fv", false, 1},
		{"empty vector", nil, "fv", true, 0},
		{"view names match exactly, not by prefix", []Feature{named(at(-time.Hour), "fv2.x", "fv2")}, "fv", true, 0},
		{"empty feature view matches nothing", []Feature{named(at(-time.Hour), "bare", "")}, "", true, 0},
		{"empty feature view ignores a bare name without effective time", []Feature{{Name: "bare"}}, "", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := &Vector{Features: tt.features}
			consistent, compared := v.Consistent(tt.featureView, ts)
			if consistent != tt.wantConsistent || compared != tt.wantCompared {
				t.Errorf("Consistent(%q) = (%v, %d), want (%v, %d)", tt.featureView, consistent, compared, tt.wantConsistent, tt.wantCompared)
			}
			if got, want := Check(tt.features, tt.featureView, ts, 0), naiveCheck(tt.features, tt.featureView, ts, 0); got != want {
				t.Errorf("Check = %+v, naive reference = %+v", got, want)
			}
		})
	}
}

// TestCheck pins the counts and Oldest of a Verdict, and Precision.
func TestCheck(t *testing.T) {
	t.Parallel()

	ts := time.Date(2026, 12, 4, 12, 0, 40, 500_000_000, time.UTC)
	feat := func(name string, eff time.Time, has bool) Feature {
		view, _, _ := strings.Cut(name, ".")
		return Feature{Name: name, FeatureView: view, EffectiveTime: eff, HasEffectiveTime: has}
	}
	whole := ts.Truncate(time.Second) // 12:00:40
	tests := []struct {
		name      string
		features  []Feature
		precision time.Duration
		want      Verdict
	}{
		{"whole seconds catch up a fractional record at 1s precision",
			[]Feature{feat("fv.a", whole, true)}, time.Second,
			Verdict{Consistent: true, Compared: 1, Oldest: whole}},
		{"but not at full precision",
			[]Feature{feat("fv.a", whole, true)}, 0,
			Verdict{Compared: 1, Behind: 1, Oldest: whole}},
		{"a second behind stays behind at 1s precision",
			[]Feature{feat("fv.a", whole.Add(-time.Second), true)}, time.Second,
			Verdict{Compared: 1, Behind: 1, Oldest: whole.Add(-time.Second)}},
		{"precision does not excuse a missing effective time",
			[]Feature{feat("fv.a", time.Time{}, false)}, time.Hour,
			Verdict{Compared: 1, Missing: 1}},
		{"missing and behind are counted apart; Oldest ignores the missing one",
			[]Feature{feat("fv.a", time.Time{}, false), feat("fv.b", whole, true), feat("fv.c", ts.Add(time.Hour), true), feat("odfv.x", time.Time{}, false)}, 0,
			Verdict{Compared: 3, Missing: 1, Behind: 1, Oldest: whole}},
		{"Oldest is in UTC",
			[]Feature{feat("fv.a", ts.In(time.FixedZone("X", 3600)), true)}, 0,
			Verdict{Consistent: true, Compared: 1, Oldest: ts}},
		{"negative precision is full precision",
			[]Feature{feat("fv.a", whole, true)}, -time.Second,
			Verdict{Compared: 1, Behind: 1, Oldest: whole}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Check(tt.features, "fv", ts, tt.precision)
			if got.Consistent != tt.want.Consistent || got.Compared != tt.want.Compared || got.Missing != tt.want.Missing ||
				got.Behind != tt.want.Behind || !got.Oldest.Equal(tt.want.Oldest) || got.Oldest.Location() != time.UTC {
				t.Errorf("Check = %+v, want %+v", got, tt.want)
			}
			v := &Vector{Features: tt.features, Precision: tt.precision}
			if ok, n := v.Consistent("fv", ts); ok != tt.want.Consistent || n != tt.want.Compared {
				t.Errorf("Vector.Consistent = (%v, %d), want (%v, %d)", ok, n, tt.want.Consistent, tt.want.Compared)
			}
		})
	}
}

func TestVerdictFresher(t *testing.T) {
	t.Parallel()

	t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Second)
	tests := []struct {
		name string
		v, w Verdict
		want bool
	}{
		{"fewer missing wins over a later time", Verdict{Missing: 0, Oldest: t1}, Verdict{Missing: 1, Oldest: t2}, true},
		{"more missing loses", Verdict{Missing: 2, Oldest: t2}, Verdict{Missing: 1, Oldest: t1}, false},
		{"later oldest wins", Verdict{Oldest: t2}, Verdict{Oldest: t1}, true},
		{"earlier oldest loses", Verdict{Oldest: t1}, Verdict{Oldest: t2}, false},
		{"equal is at least as fresh", Verdict{Missing: 1, Oldest: t1}, Verdict{Missing: 1, Oldest: t1}, true},
		{"all missing: equal", Verdict{Missing: 2}, Verdict{Missing: 2}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.v.Fresher(tt.w); got != tt.want {
				t.Errorf("%+v.Fresher(%+v) = %v, want %v", tt.v, tt.w, got, tt.want)
			}
		})
	}
}

// naiveCheck is the reference implementation of the consistency rule for the property test
// and the fuzz target, written from SPEC §4 as directly as possible and independently of
// Check: the record's time truncated in Unix nanoseconds, features filtered first, then
// judged one condition at a time.
func naiveCheck(features []Feature, featureView string, featureTimestamp time.Time, precision time.Duration) Verdict {
	var own []Feature
	for _, f := range features {
		if featureView != "" && f.FeatureView == featureView {
			own = append(own, f)
		}
	}
	ts := featureTimestamp
	if precision > 0 {
		ts = featureTimestamp.Truncate(precision)
	}
	out := Verdict{Compared: len(own)}
	var times []time.Time
	for _, f := range own {
		if !f.HasEffectiveTime {
			out.Missing++
			continue
		}
		times = append(times, f.EffectiveTime)
		if f.EffectiveTime.Compare(ts) < 0 {
			out.Behind++
		}
	}
	slices.SortFunc(times, time.Time.Compare)
	if len(times) > 0 {
		out.Oldest = times[0].UTC()
	}
	out.Consistent = out.Missing == 0 && out.Behind == 0
	return out
}

// TestCheckProperty compares Check with naiveCheck over generated vectors: features of the
// record's view, of other views (stale or missing) and without a view, with and without
// effective times near the record's time, every status, several precisions and record times
// with and without a fraction. It also checks properties the reference does not spell out:
// the verdict is consistent exactly when nothing is missing or behind; features of other
// views never change it; moving an effective time later never makes a consistent vector
// inconsistent; and removing a feature's effective time from the record's view always makes
// the vector inconsistent.
func TestCheckProperty(t *testing.T) {
	t.Parallel()

	const vectors = 20_000
	rng := rand.New(rand.NewPCG(9, 2026))
	statuses := []string{"", StatusPresent, StatusMissingData, StatusCachedPresent, StatusCachedMissingData, StatusCachedUnknown, StatusUnknown, "SOMETHING_NEW"}
	views := []string{"fv", "fv", "other", "odfv", "fv2", ""}
	precisions := []time.Duration{0, 0, time.Nanosecond, time.Microsecond, time.Millisecond, time.Second, time.Minute, time.Hour}
	offsets := []time.Duration{0, 1, -1, time.Millisecond, -time.Millisecond, 500 * time.Millisecond, -500 * time.Millisecond, time.Second, -time.Second, -time.Hour, time.Hour}
	base := time.Date(2026, 12, 4, 9, 30, 0, 0, time.UTC)

	for i := range vectors {
		ts := base.Add(time.Duration(rng.Int64N(int64(2 * time.Second))))
		precision := precisions[rng.IntN(len(precisions))]
		features := make([]Feature, rng.IntN(7))
		for j := range features {
			view := views[rng.IntN(len(views))]
			f := Feature{Name: view + ".f" + strconv.Itoa(j), FeatureView: view, Status: statuses[rng.IntN(len(statuses))]}
			if view == "" {
				f.Name = "bare" + strconv.Itoa(j)
			}
			if rng.IntN(3) > 0 {
				eff := ts.Add(offsets[rng.IntN(len(offsets))])
				if rng.IntN(4) == 0 {
					eff = eff.Truncate(precisions[1+rng.IntN(len(precisions)-1)] + 1)
				}
				if rng.IntN(5) == 0 {
					eff = eff.In(time.FixedZone("Z+2", 7200))
				}
				f.EffectiveTime, f.HasEffectiveTime = eff, true
			}
			features[j] = f
		}
		view := []string{"fv", "fv", "fv", "other", ""}[rng.IntN(5)]

		got := Check(features, view, ts, precision)
		want := naiveCheck(features, view, ts, precision)
		if got.Consistent != want.Consistent || got.Compared != want.Compared || got.Missing != want.Missing ||
			got.Behind != want.Behind || !got.Oldest.Equal(want.Oldest) {
			t.Fatalf("vector %d: Check(%q, %s, %s) = %+v, naive reference %+v\nfeatures: %+v", i, view, ts.Format(time.RFC3339Nano), precision, got, want, features)
		}
		if got.Consistent != (got.Missing == 0 && got.Behind == 0) {
			t.Fatalf("vector %d: %+v: Consistent disagrees with the counts", i, got)
		}
		if v := (&Vector{Features: features, Precision: precision}); v.Check(view, ts) != got {
			t.Fatalf("vector %d: Vector.Check differs from Check", i)
		}

		// Features of other views never change the verdict.
		var own []Feature
		for _, f := range features {
			if view != "" && f.FeatureView == view {
				own = append(own, f)
			}
		}
		if alone := Check(own, view, ts, precision); alone != got {
			t.Fatalf("vector %d: other views changed the verdict: %+v with them, %+v without", i, got, alone)
		}
		if len(own) == 0 {
			continue
		}
		k := rng.IntN(len(features))
		for features[k].FeatureView != view {
			k = (k + 1) % len(features)
		}
		// Moving one of its effective times later never breaks a consistent vector.
		later := slices.Clone(features)
		if later[k].HasEffectiveTime {
			later[k].EffectiveTime = later[k].EffectiveTime.Add(time.Duration(1 + rng.Int64N(int64(time.Hour))))
			if got.Consistent && !Check(later, view, ts, precision).Consistent {
				t.Fatalf("vector %d: a later effective time made a consistent vector inconsistent", i)
			}
		}
		// A feature of the record's view without an effective time is never caught up.
		unmaterialised := slices.Clone(features)
		unmaterialised[k].HasEffectiveTime, unmaterialised[k].EffectiveTime = false, time.Time{}
		if Check(unmaterialised, view, ts, precision).Consistent {
			t.Fatalf("vector %d: consistent although %s has no effective time", i, unmaterialised[k].Name)
		}
	}
}

func TestVectorConsistentTimeZones(t *testing.T) {
	t.Parallel()

	// The same instant in another zone is equal, hence consistent.
	ts := time.Date(2023, 6, 22, 10, 30, 45, 0, time.FixedZone("CEST", 2*3600))
	v := &Vector{Features: []Feature{{Name: "fv.x", FeatureView: "fv", EffectiveTime: ts.UTC(), HasEffectiveTime: true}}}
	if ok, n := v.Consistent("fv", ts); !ok || n != 1 {
		t.Errorf("Consistent = (%v, %d), want (true, 1)", ok, n)
	}
}

func TestVectorConsistentFixture(t *testing.T) {
	t.Parallel()

	v, err := ParseResponse(readTestdata(t, "get-features-metadata.json"))
	if err != nil {
		t.Fatalf("ParseResponse: %v", err)
	}
	tests := []struct {
		featureView    string
		timestamp      string
		wantConsistent bool
		wantCompared   int
	}{
		// user_transaction_counts has effective times 08:30:45 and 08:30:45.123.
		{"user_transaction_counts", "2023-06-22T08:30:45Z", true, 2},
		{"user_transaction_counts", "2023-06-22T08:30:45.000000001Z", false, 2},
		// transaction_amount is at minute precision: 08:30:00.
		{"transaction_amount", "2023-06-22T08:30:00Z", true, 1},
		{"transaction_amount", "2023-06-22T08:30:00.5Z", false, 1},
		// merchant_fraud_rate is MISSING_DATA but has an effective time, so it is compared.
		{"merchant_fraud_rate", "2023-05-03T00:00:00Z", true, 1},
		{"merchant_fraud_rate", "2023-05-04T00:00:00Z", false, 1},
		{"user_items_added_to_cart", "2030-01-01T00:00:00Z", true, 0},
	}
	for _, tt := range tests {
		consistent, compared := v.Consistent(tt.featureView, mustTime(t, tt.timestamp))
		if consistent != tt.wantConsistent || compared != tt.wantCompared {
			t.Errorf("Consistent(%q, %s) = (%v, %d), want (%v, %d)", tt.featureView, tt.timestamp, consistent, compared, tt.wantConsistent, tt.wantCompared)
		}
	}
}

func TestVectorNil(t *testing.T) {
	t.Parallel()

	var v *Vector
	if ok, n := v.Consistent("fv", time.Now()); !ok || n != 0 {
		t.Errorf("nil Consistent = (%v, %d), want (true, 0)", ok, n)
	}
	if _, ok := v.Lookup("fv.x"); ok {
		t.Error("nil Lookup found a feature")
	}
}

func TestVectorLookup(t *testing.T) {
	t.Parallel()

	v := &Vector{Features: []Feature{{Name: "a.x", Value: []byte(`1`)}, {Name: "b.y", Value: []byte(`2`)}}}
	tests := []struct {
		name   string
		want   string
		wantOK bool
	}{
		{"a.x", `1`, true},
		{"b.y", `2`, true},
		{"a.y", ``, false},
		{"", ``, false},
	}
	for _, tt := range tests {
		f, ok := v.Lookup(tt.name)
		if ok != tt.wantOK || string(f.Value) != tt.want {
			t.Errorf("Lookup(%q) = (%s, %v), want (%s, %v)", tt.name, f.Value, ok, tt.want, tt.wantOK)
		}
	}
}
