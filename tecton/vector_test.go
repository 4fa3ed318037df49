package tecton

import (
	"testing"
	"time"
)

func TestVectorConsistent(t *testing.T) {
	t.Parallel()

	ts := time.Date(2022, 6, 7, 0, 36, 8, 832_793_000, time.UTC)
	at := func(d time.Duration) Feature {
		return Feature{Name: "fv.x", FeatureView: "fv", EffectiveTime: ts.Add(d), HasEffectiveTime: true}
	}
	named := func(f Feature, name, view string) Feature {
		f.Name, f.FeatureView = name, view
		return f
	}
	onDemand := Feature{Name: "fv.odfv", FeatureView: "fv"}

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
		{"on-demand ignored next to a stale feature", []Feature{onDemand, at(-time.Millisecond)}, "fv", false, 1},
		{"zero effective time flagged as set is compared", []Feature{{Name: "fv.z", FeatureView: "fv", HasEffectiveTime: true}}, "fv", false, 1},
		{"empty vector", nil, "fv", true, 0},
		{"view names match exactly, not by prefix", []Feature{named(at(-time.Hour), "fv2.x", "fv2")}, "fv", true, 0},
		{"empty feature view matches nothing", []Feature{named(at(-time.Hour), "bare", "")}, "", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := &Vector{Features: tt.features}
			consistent, compared := v.Consistent(tt.featureView, ts)
			if consistent != tt.wantConsistent || compared != tt.wantCompared {
				t.Errorf("Consistent(%q) = (%v, %d), want (%v, %d)", tt.featureView, consistent, compared, tt.wantConsistent, tt.wantCompared)
			}
		})
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
