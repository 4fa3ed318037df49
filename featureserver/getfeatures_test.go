package featureserver

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/tecton"
)

const (
	cartView  = "user_items_added_to_cart"
	cartCount = "user_items_added_to_cart.cart_count"
	cartValue = "user_items_added_to_cart.cart_value"
)

// TestGetFeaturesConsistency walks one key through the lag: before it elapses a never-written
// key answers null, MISSING_DATA and no effective time at all (as Tecton does), and a written
// one its old effective time, so the vector is inconsistent with the record; from the instant
// the lag elapses the effective time is the record's feature_timestamp and the vector is
// consistent.
func TestGetFeaturesConsistency(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.Lag = 2 * time.Second })
	ctx := t.Context()
	ts1 := t0.Add(-time.Second + 123456789) // nanosecond precision must survive the wire
	b.srv.Apply(cartRecord(t, "u1", ts1, map[string]string{"cart_count": "3", "cart_value": "42.5"}))

	v, err := b.client.GetFeatures(ctx, promoRequest("u1"))
	if err != nil {
		t.Fatalf("GetFeatures before the lag: %v", err)
	}
	for _, name := range []string{cartCount, cartValue} {
		f := mustFeature(t, v, name)
		if f.Status != tecton.StatusMissingData || string(f.Value) != "null" || f.HasEffectiveTime {
			t.Errorf("before the lag, %s = %+v; want null, MISSING_DATA, no effective time", name, f)
		}
	}
	if ok, n := v.Consistent(cartView, ts1); ok || n != 2 {
		t.Errorf("before the lag: Consistent = %v, %d; want false, 2", ok, n)
	}

	b.clock.Advance(2*time.Second - time.Nanosecond)
	v, err = b.client.GetFeatures(ctx, promoRequest("u1"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := v.Consistent(cartView, ts1); ok {
		t.Errorf("1ns before the lag elapsed the vector is already consistent: %+v", v.Features)
	}

	b.clock.Advance(time.Nanosecond)
	v, err = b.client.GetFeatures(ctx, promoRequest("u1"))
	if err != nil {
		t.Fatal(err)
	}
	count, value := mustFeature(t, v, cartCount), mustFeature(t, v, cartValue)
	if string(count.Value) != `"3"` || string(value.Value) != "42.5" {
		t.Errorf("after the lag: cart_count = %s, cart_value = %s; want \"3\" (int64 as a string), 42.5", count.Value, value.Value)
	}
	for _, f := range []tecton.Feature{count, value} {
		if f.Status != tecton.StatusPresent || !f.EffectiveTime.Equal(ts1) {
			t.Errorf("after the lag, %s: status %s, effective time %s; want PRESENT, %s", f.Name, f.Status, f.EffectiveTime.Format(time.RFC3339Nano), ts1.Format(time.RFC3339Nano))
		}
	}
	if ok, n := v.Consistent(cartView, ts1); !ok || n != 2 {
		t.Errorf("after the lag: Consistent = %v, %d; want true, 2", ok, n)
	}

	// A second record without cart_value: until it materialises the old effective time
	// shows; afterwards cart_count changes and cart_value keeps its value.
	ts2 := ts1.Add(500 * time.Millisecond)
	b.srv.Apply(cartRecord(t, "u1", ts2, map[string]string{"cart_count": "4"}))
	v, err = b.client.GetFeatures(ctx, promoRequest("u1"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := v.Consistent(cartView, ts2); ok || !mustFeature(t, v, cartCount).EffectiveTime.Equal(ts1) {
		t.Errorf("second record before its lag: want the first record's effective time, got %+v", v.Features)
	}
	b.clock.Advance(2 * time.Second)
	v, err = b.client.GetFeatures(ctx, promoRequest("u1"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := v.Consistent(cartView, ts2); !ok {
		t.Errorf("second record after its lag: inconsistent: %+v", v.Features)
	}
	if got := string(mustFeature(t, v, cartCount).Value); got != `"4"` {
		t.Errorf("cart_count = %s, want \"4\"", got)
	}
	if got := string(mustFeature(t, v, cartValue).Value); got != "42.5" {
		t.Errorf("cart_value = %s, want 42.5 kept from the first record", got)
	}

	// Another key is untouched.
	v, err = b.client.GetFeatures(ctx, promoRequest("u2"))
	if err != nil {
		t.Fatal(err)
	}
	if f := mustFeature(t, v, cartCount); f.Status != tecton.StatusMissingData || f.HasEffectiveTime {
		t.Errorf("u2: status %s, effective time set %v; want MISSING_DATA without one", f.Status, f.HasEffectiveTime)
	}
}

// TestLagJitter checks that with jitter every record is invisible before Lag and visible at
// Lag+LagJitter, whatever the seed.
func TestLagJitter(t *testing.T) {
	t.Parallel()
	const lag, jitter = time.Second, 500 * time.Millisecond
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *Config) { c.Lag, c.LagJitter, c.Seed = lag, jitter, seed })
			ts := t0.Add(-time.Millisecond)
			for i := range 10 {
				b.srv.Apply(cartRecord(t, fmt.Sprint("u", i), ts, map[string]string{"cart_count": "1"}))
			}
			read := func(i int) bool {
				v, err := b.client.GetFeatures(t.Context(), promoRequest(fmt.Sprint("u", i)))
				if err != nil {
					t.Fatal(err)
				}
				ok, _ := v.Consistent(cartView, ts)
				return ok
			}
			b.clock.Advance(lag - time.Nanosecond)
			for i := range 10 {
				if read(i) {
					t.Errorf("u%d visible before Lag", i)
				}
			}
			b.clock.Advance(jitter + time.Nanosecond)
			for i := range 10 {
				if !read(i) {
					t.Errorf("u%d invisible at Lag+LagJitter", i)
				}
			}
		})
	}
}

// TestApplyRules covers how records map onto rows: order, missing and bad values, ignored
// records.
func TestApplyRules(t *testing.T) {
	t.Parallel()
	ts1, ts2 := t0.Add(-2*time.Second), t0.Add(-time.Second)
	tests := []struct {
		name        string
		apply       func(t *testing.T, s *Server)
		wantCount   string
		wantEff     time.Time
		wantStats   Stats
		wantMissing bool
	}{
		{
			name: "newest feature_timestamp wins over arrival order",
			apply: func(t *testing.T, s *Server) {
				s.Apply(cartRecord(t, "u1", ts2, map[string]string{"cart_count": "2"}))
				s.Apply(cartRecord(t, "u1", ts1, map[string]string{"cart_count": "1"}))
			},
			wantCount: `"2"`, wantEff: ts2, wantStats: Stats{RecordsApplied: 2},
		},
		{
			name: "a value that does not convert keeps the previous one",
			apply: func(t *testing.T, s *Server) {
				s.Apply(cartRecord(t, "u1", ts1, map[string]string{"cart_count": "1"}))
				s.Apply(cartRecord(t, "u1", ts2, map[string]string{"cart_count": "many", "cart_value": "NaN"}))
			},
			wantCount: `"1"`, wantEff: ts2, wantStats: Stats{RecordsApplied: 2, ValueErrors: 2},
		},
		{
			name: "a record without feature_values moves only the effective time",
			apply: func(t *testing.T, s *Server) {
				s.Apply(cartRecord(t, "u1", ts1, map[string]string{"cart_count": "1"}))
				s.Apply(cartRecord(t, "u1", ts2, nil))
			},
			wantCount: `"1"`, wantEff: ts2, wantStats: Stats{RecordsApplied: 2},
		},
		{
			name: "records of unknown or on-demand views and without join keys are ignored",
			apply: func(t *testing.T, s *Server) {
				other := cartRecord(t, "u1", ts1, map[string]string{"cart_count": "1"})
				other.FeatureViewName = "not_in_catalog"
				s.Apply(other)
				onDemand := cartRecord(t, "u1", ts1, map[string]string{"channel": "web"})
				onDemand.FeatureViewName = "cart_request"
				s.Apply(onDemand)
				noKey := cartRecord(t, "u1", ts1, map[string]string{"cart_count": "1"})
				noKey.EntityKeys = map[string]string{"account_id": "u1"}
				s.Apply(noKey)
				s.Apply(nil)
			},
			wantMissing: true, wantEff: time.Time{}, wantStats: Stats{RecordsIgnored: 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			tt.apply(t, b.srv)
			v, err := b.client.GetFeatures(t.Context(), promoRequest("u1"))
			if err != nil {
				t.Fatal(err)
			}
			f := mustFeature(t, v, cartCount)
			if tt.wantMissing {
				if f.Status != tecton.StatusMissingData || f.HasEffectiveTime {
					t.Errorf("status %s, effective time set %v; want MISSING_DATA without one", f.Status, f.HasEffectiveTime)
				}
			} else if string(f.Value) != tt.wantCount {
				t.Errorf("cart_count = %s, want %s", f.Value, tt.wantCount)
			}
			if !f.EffectiveTime.Equal(tt.wantEff) {
				t.Errorf("effective time %s, want %s", f.EffectiveTime, tt.wantEff)
			}
			if got := b.srv.Stats(); got != tt.wantStats {
				t.Errorf("Stats = %+v, want %+v", got, tt.wantStats)
			}
		})
	}
}

// TestAggregationInterval shows why the consistency rule needs a timeout: an aggregate view
// reports effective times aligned to its interval, older than the record.
func TestAggregationInterval(t *testing.T) {
	t.Parallel()
	cat := &Catalog{
		FeatureViews: []FeatureView{{
			Name: "user_counts", JoinKeys: []Field{{Name: "user_id", Type: Int64}},
			Features:            []Field{{Name: "count_1h", Type: Int64}},
			AggregationInterval: time.Hour,
		}},
		Workspaces: []Workspace{{Name: "prod", FeatureServices: []FeatureService{{Name: "counts", Features: []string{"user_counts.*"}}}}},
	}
	b := setup(t, func(c *Config) { c.Catalog = cat })
	ts := t0.Add(-17 * time.Minute)
	rec := cartRecord(t, "007", ts, map[string]string{"count_1h": "5"})
	rec.FeatureViewName = "user_counts"
	b.srv.Apply(rec)
	// The int64 join key is canonicalised on both sides: "007" and 7 are the same row.
	v, err := b.client.GetFeatures(t.Context(), tecton.Request{Workspace: "prod", FeatureService: "counts", JoinKeys: map[string]string{"user_id": "7"}})
	if err != nil {
		t.Fatal(err)
	}
	f := mustFeature(t, v, "user_counts.count_1h")
	if string(f.Value) != `"5"` || !f.EffectiveTime.Equal(ts.Truncate(time.Hour)) {
		t.Errorf("got %s at %s, want \"5\" at %s", f.Value, f.EffectiveTime, ts.Truncate(time.Hour))
	}
	if ok, _ := v.Consistent("user_counts", ts); ok {
		t.Error("an aligned effective time older than the record counts as consistent")
	}
}

func TestGetFeaturesBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ts := t0.Add(-time.Second)
	b.srv.Apply(cartRecord(t, "u1", ts, map[string]string{"cart_count": "1", "cart_value": "9.99"}))
	b.srv.Apply(cartRecord(t, "u3", ts.Add(time.Millisecond), map[string]string{"cart_count": "3"}))

	reqs := make([]tecton.Request, 5)
	for i := range reqs {
		reqs[i] = promoRequest(fmt.Sprint("u", i+1))
	}
	vs, err := b.client.GetFeaturesBatch(t.Context(), reqs)
	if err != nil {
		t.Fatalf("GetFeaturesBatch: %v", err)
	}
	if len(vs) != 5 {
		t.Fatalf("%d rows, want 5", len(vs))
	}
	want := []struct {
		count  string
		status string
		eff    time.Time // zero: no effective time
	}{
		{`"1"`, tecton.StatusPresent, ts},
		{"null", tecton.StatusMissingData, time.Time{}},
		{`"3"`, tecton.StatusPresent, ts.Add(time.Millisecond)},
		{"null", tecton.StatusMissingData, time.Time{}},
		{"null", tecton.StatusMissingData, time.Time{}},
	}
	for i, w := range want {
		f := mustFeature(t, vs[i], cartCount)
		if string(f.Value) != w.count || f.Status != w.status || !f.EffectiveTime.Equal(w.eff) || f.HasEffectiveTime == w.eff.IsZero() {
			t.Errorf("row %d: %s %s %s (set %v), want %s %s %s", i, f.Value, f.Status, f.EffectiveTime, f.HasEffectiveTime, w.count, w.status, w.eff)
		}
	}
	if f := mustFeature(t, vs[2], cartValue); f.Status != tecton.StatusMissingData || !f.EffectiveTime.Equal(ts.Add(time.Millisecond)) {
		t.Errorf("row 2 cart_value: %+v; want MISSING_DATA at the row's effective time", f)
	}

	// The client refuses more than 5 rows, so send 6 by hand.
	rows := strings.Repeat(`{"join_key_map": {"user_id": "u1"}},`, 6)
	status, body := b.post(t, GetFeaturesBatchPath, `{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", "request_data": [`+strings.TrimSuffix(rows, ",")+`]}}`)
	if status != 400 || errorOf(t, body).Code != 3 {
		t.Errorf("6 rows: %d %s, want 400 with code 3", status, body)
	}
}

// TestNeverWrittenKeys pins the shapes of a key the store holds nothing for, as Tecton sends
// them: no effectiveTime key at all in get-features; in a batch, null for such a row and no
// effectiveTime key when no row has one; and a view with a FeatureStartTime reports that time
// instead.
func TestNeverWrittenKeys(t *testing.T) {
	t.Parallel()
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cat := DemoCatalog()
	cat.FeatureViews = append(cat.FeatureViews, FeatureView{
		Name: "user_counts", JoinKeys: []Field{{Name: "user_id", Type: String}},
		Features: []Field{{Name: "count_1h", Type: Int64}}, AggregationInterval: time.Hour, FeatureStartTime: start,
	})
	cat.Workspaces[0].FeatureServices = append(cat.Workspaces[0].FeatureServices,
		FeatureService{Name: "counts_fs", Features: []string{"user_items_added_to_cart.cart_count", "user_counts.count_1h"}})
	b := setup(t, func(c *Config) { c.Catalog = cat })
	meta := `"metadata_options": {"include_names": true, "include_effective_times": true, "include_serving_status": true}`

	status, body := b.post(t, GetFeaturesPath, `{"params": {"workspace_name": "prod", "feature_service_name": "counts_fs", "join_key_map": {"user_id": "new"}, `+meta+`}}`)
	want := `{"result":{"features":[null,null]},"metadata":{"features":[` +
		`{"name":"user_items_added_to_cart.cart_count","status":"MISSING_DATA"},` +
		`{"name":"user_counts.count_1h","effectiveTime":"2025-01-01T00:00:00Z","status":"MISSING_DATA"}]}}`
	if status != 200 || string(body) != want {
		t.Errorf("get-features of a never-written key:\n got %d %s\nwant 200 %s", status, body, want)
	}

	status, body = b.post(t, GetFeaturesBatchPath, `{"params": {"workspace_name": "prod", "feature_service_name": "counts_fs", "request_data": [{"join_key_map": {"user_id": "new1"}}, {"join_key_map": {"user_id": "new2"}}], `+meta+`}}`)
	want = `{"result":[{"features":[null,null]},{"features":[null,null]}],"metadata":{"features":[` +
		`{"name":"user_items_added_to_cart.cart_count","status":["MISSING_DATA","MISSING_DATA"]},` +
		`{"name":"user_counts.count_1h","effectiveTime":["2025-01-01T00:00:00Z","2025-01-01T00:00:00Z"],"status":["MISSING_DATA","MISSING_DATA"]}]}}`
	if status != 200 || string(body) != want {
		t.Errorf("get-features-batch of never-written keys:\n got %d %s\nwant 200 %s", status, body, want)
	}
	vs, err := tecton.ParseBatchResponse(body)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		if ok, n := v.Consistent(cartView, t0); ok || n != 1 {
			t.Errorf("row %d: Consistent = %v, %d; want false, 1 (nothing materialised)", i, ok, n)
		}
	}
}

// TestEffectiveTimeWire pins the one spelling of effective times (RFC 3339, UTC, nanoseconds
// as needed) and proves that tecton.ParseResponse reads it back exactly.
func TestEffectiveTimeWire(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ts   time.Time
		want string
	}{
		{time.Date(2026, 3, 1, 11, 59, 59, 123456789, time.UTC), "2026-03-01T11:59:59.123456789Z"},
		{time.Date(2026, 3, 1, 11, 59, 59, 120000000, time.UTC), "2026-03-01T11:59:59.12Z"},
		{time.Date(2026, 3, 1, 11, 59, 59, 0, time.UTC), "2026-03-01T11:59:59Z"},
		{time.Date(2026, 3, 1, 13, 59, 59, 1, time.FixedZone("", 2*3600)), "2026-03-01T11:59:59.000000001Z"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.srv.Apply(cartRecord(t, "u1", tt.ts, map[string]string{"cart_count": "1"}))
			status, body := b.post(t, GetFeaturesPath, `{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs",
				"join_key_map": {"user_id": "u1"}, "metadata_options": {"include_names": true, "include_effective_times": true}}}`)
			if status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
			var raw struct {
				Metadata struct {
					Features []struct {
						EffectiveTime string `json:"effectiveTime"`
					} `json:"features"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(body, &raw); err != nil {
				t.Fatal(err)
			}
			if got := raw.Metadata.Features[0].EffectiveTime; got != tt.want {
				t.Errorf("effectiveTime %q, want %q", got, tt.want)
			}
			v, err := tecton.ParseResponse(body)
			if err != nil {
				t.Fatalf("tecton.ParseResponse: %v", err)
			}
			if got := mustFeature(t, v, cartCount).EffectiveTime; !got.Equal(tt.ts) {
				t.Errorf("parsed effective time %s, want %s", got, tt.ts)
			}
		})
	}
}

// TestMetadataOptions checks that only the metadata asked for is returned.
func TestMetadataOptions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.Apply(cartRecord(t, "u1", t0, map[string]string{"cart_count": "1"}))
	tests := []struct {
		name    string
		options string
		batch   bool
		want    string // the expected "metadata" member, compacted; "" for none
	}{
		{"none", `{}`, false, ""},
		{"names", `{"include_names": true}`, false,
			`{"features":[{"name":"user_items_added_to_cart.cart_count"},{"name":"user_items_added_to_cart.cart_value"},{"name":"user_stats.lifetime_value"},{"name":"user_stats.offers_redeemed"}]}`},
		{"types and statuses, camelCase", `{"includeDataTypes": true, "includeServingStatus": true}`, false,
			`{"features":[{"dataType":{"type":"int64"},"status":"PRESENT"},{"dataType":{"type":"float64"},"status":"MISSING_DATA"},{"dataType":{"type":"float64"},"status":"PRESENT"},{"dataType":{"type":"int64"},"status":"PRESENT"}]}`},
		{"batch times and statuses are per row", `{"include_effective_times": true, "include_serving_status": true}`, true,
			`{"features":[{"effectiveTime":["2026-03-01T12:00:00Z",null],"status":["PRESENT","MISSING_DATA"]},{"effectiveTime":["2026-03-01T12:00:00Z",null],"status":["MISSING_DATA","MISSING_DATA"]},{"effectiveTime":["2026-03-01T00:00:00Z","2026-03-01T00:00:00Z"],"status":["PRESENT","PRESENT"]},{"effectiveTime":["2026-03-01T00:00:00Z","2026-03-01T00:00:00Z"],"status":["PRESENT","PRESENT"]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path, keys := GetFeaturesPath, `"join_key_map": {"user_id": "u1"}`
			if tt.batch {
				path, keys = GetFeaturesBatchPath, `"request_data": [{"join_key_map": {"user_id": "u1"}}, {"join_key_map": {"user_id": "u2"}}]`
			}
			status, body := b.post(t, path, `{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", `+keys+`, "metadata_options": `+tt.options+`}}`)
			if status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
			var resp struct {
				Metadata json.RawMessage `json:"metadata"`
			}
			if err := json.Unmarshal(body, &resp); err != nil {
				t.Fatal(err)
			}
			if got := string(resp.Metadata); got != tt.want {
				t.Errorf("metadata\n got %s\nwant %s", got, tt.want)
			}
		})
	}

	status, body := b.post(t, GetFeaturesPath, `{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", "join_key_map": {"user_id": "u1"}, "metadata_options": {"include_names": true, "include_slo_info": true}}}`)
	if status != 200 || !strings.Contains(string(body), `"sloInfo":{"sloEligible":true`) {
		t.Errorf("include_slo_info: %d %s", status, body)
	}
	if _, err := tecton.ParseResponse(body); err != nil {
		t.Errorf("tecton.ParseResponse with sloInfo: %v", err)
	}
}

// TestRequestSpellings sends the same request in snake_case and lowerCamelCase, as protobuf
// JSON allows, and expects the same answer.
func TestRequestSpellings(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.Apply(cartRecord(t, "u1", t0, map[string]string{"cart_count": "1", "cart_value": "2.5"}))
	bodies := map[string]string{
		"snake_case": `{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", "join_key_map": {"user_id": "u1"},
			"metadata_options": {"include_names": true, "include_effective_times": true, "include_data_types": true, "include_serving_status": true},
			"request_options": {"read_from_cache": false, "write_to_cache": true}}}`,
		"camelCase": `{"params": {"workspaceName": "prod", "featureServiceName": "promo_fs", "joinKeyMap": {"user_id": "u1"},
			"metadataOptions": {"includeNames": true, "includeEffectiveTimes": true, "includeDataTypes": true, "includeServingStatus": true},
			"requestOptions": {"readFromCache": false, "writeToCache": true}}}`,
		"mixed, with nulls and ignored Tecton options": `{"params": {"workspace_name": "prod", "featureServiceName": "promo_fs", "join_key_map": {"user_id": "u1"},
			"request_context_map": null, "allowPartialResults": false,
			"metadata_options": {"includeNames": true, "include_effective_times": true, "includeDataTypes": true, "include_serving_status": true, "include_feature_tags": true},
			"request_options": {"latencyBudgetMs": 100, "coerce_null_counts_to_zero": true}}}`,
	}
	var first *tecton.Vector
	for name, body := range bodies {
		status, resp := b.post(t, GetFeaturesPath, body)
		if status != 200 {
			t.Fatalf("%s: status %d: %s", name, status, resp)
		}
		v, err := tecton.ParseResponse(resp)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if first == nil {
			first = v
		} else if !reflect.DeepEqual(v, first) {
			t.Errorf("%s: answer differs:\n%+v\n%+v", name, v, first)
		}
	}
}

func TestOnDemandFeatures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ts := t0.Add(-time.Second)
	b.srv.Apply(cartRecord(t, "u1", ts, map[string]string{"cart_count": "1"}))
	v, err := b.client.GetFeatures(t.Context(), tecton.Request{
		Workspace: "prod", FeatureService: "promo_realtime_fs",
		JoinKeys: map[string]string{"user_id": "u1"}, RequestContext: map[string]any{"channel": "web"},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := mustFeature(t, v, "cart_request.channel")
	if string(f.Value) != `"web"` || f.HasEffectiveTime || f.Status != tecton.StatusPresent || string(f.DataType) != `{"type":"string"}` {
		t.Errorf("on-demand feature = %+v; want \"web\", no effective time, PRESENT", f)
	}
	if ok, n := v.Consistent(cartView, ts); !ok || n != 2 {
		t.Errorf("Consistent = %v, %d; want true, 2 (on-demand features are not compared)", ok, n)
	}
	// An on-demand view writes no records, so no record asks about it; were one to, its
	// features, which never have an effective time, would count as not materialised: only
	// features of other views are exempt (SPEC §4).
	if ok, n := v.Consistent("cart_request", ts); ok || n != 1 {
		t.Errorf("Consistent(cart_request) = %v, %d; want false, 1", ok, n)
	}
}

func TestSyntheticBatchView(t *testing.T) {
	t.Parallel()
	b := setup(t)
	read := func(user string) (tecton.Feature, tecton.Feature) {
		v, err := b.client.GetFeatures(t.Context(), promoRequest(user))
		if err != nil {
			t.Fatal(err)
		}
		return mustFeature(t, v, "user_stats.lifetime_value"), mustFeature(t, v, "user_stats.offers_redeemed")
	}
	lv, offers := read("u1")
	if lv.Status != tecton.StatusPresent || string(lv.Value) == "null" || !lv.EffectiveTime.Equal(t0.Truncate(24*time.Hour)) {
		t.Errorf("lifetime_value = %+v; want a value at the start of the day", lv)
	}
	var n string
	if err := json.Unmarshal(offers.Value, &n); err != nil {
		t.Errorf("offers_redeemed = %s, want an int64 string: %v", offers.Value, err)
	}
	lv2, _ := read("u1")
	if string(lv2.Value) != string(lv.Value) {
		t.Errorf("synthetic values differ between reads: %s, %s", lv.Value, lv2.Value)
	}
}

func TestMetadataEndpoint(t *testing.T) {
	t.Parallel()
	b := setup(t)
	status, body := b.post(t, MetadataPath, `{"params": {"workspaceName": "prod", "feature_service_name": "promo_realtime_fs"}}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	want := `{"featureServiceType":"DEFAULT",` +
		`"inputJoinKeys":[{"name":"user_id","dataType":{"type":"string"},"type":"string"}],` +
		`"inputRequestContextKeys":[{"name":"channel","dataType":{"type":"string"},"type":"string"}],` +
		`"featureValues":[` +
		`{"name":"user_items_added_to_cart.cart_count","dataType":{"type":"int64"},"type":"int64"},` +
		`{"name":"user_items_added_to_cart.cart_value","dataType":{"type":"float64"},"type":"float64"},` +
		`{"name":"user_stats.lifetime_value","dataType":{"type":"float64"},"type":"float64"},` +
		`{"name":"user_stats.offers_redeemed","dataType":{"type":"int64"},"type":"int64"},` +
		`{"name":"cart_request.channel","dataType":{"type":"string"},"type":"string"}]}`
	if string(body) != want {
		t.Errorf("metadata\n got %s\nwant %s", body, want)
	}
	status, body = b.post(t, MetadataPath, `{"params": {"workspace_name": "prod", "feature_service_name": "nope"}}`)
	if status != 404 || errorOf(t, body).Code != 5 {
		t.Errorf("unknown service: %d %s", status, body)
	}
}
