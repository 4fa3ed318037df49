package enrich_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outflow-dev/outflow/enrich"
	"github.com/outflow-dev/outflow/featureserver"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/tecton"
)

// The tests in this file run the Enricher against the reference feature server through the real
// Tecton client, so that the hard shapes of the wire — a key never materialised (null,
// MISSING_DATA, no effectiveTime key), a stale serving cache, effective times aligned to an
// aggregation interval — reach the consistency loop as they would from Tecton.

// refCatalog is the demo catalog plus an aggregate feature view with a one-hour interval,
// served by feature service "counts_fs".
func refCatalog() *featureserver.Catalog {
	c := featureserver.DemoCatalog()
	c.FeatureViews = append(c.FeatureViews, featureserver.FeatureView{
		Name: "user_counts", JoinKeys: []featureserver.Field{{Name: "user_id", Type: featureserver.String}},
		Features: []featureserver.Field{{Name: "carts_1h", Type: featureserver.Int64}}, AggregationInterval: time.Hour,
	})
	c.Workspaces[0].FeatureServices = append(c.Workspaces[0].FeatureServices,
		featureserver.FeatureService{Name: "counts_fs", Features: []string{"user_counts.*"}})
	return c
}

// refSetup starts the reference feature server with a real clock, the given materialisation
// lag and a one-minute serving cache, and returns it with an Enricher that uses it.
func refSetup(t *testing.T, lag time.Duration) (*featureserver.Server, *enrich.Enricher) {
	t.Helper()
	srv, err := featureserver.New(featureserver.Config{Catalog: refCatalog(), Lag: lag, CacheTTL: time.Minute, APIKey: "ref-key"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	client, err := tecton.NewClient(tecton.Config{BaseURL: hs.URL, APIKey: "ref-key", HTTPClient: &http.Client{Transport: transport}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := enrich.New(enrich.Config{Store: client, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return srv, e
}

func refRecord(t *testing.T, view, user string, ts time.Time, values map[string]string) *record.Record {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"version": "1", "feature_view_name": view, "feature_timestamp": ts.Format(time.RFC3339Nano),
		"entity_keys": map[string]string{"user_id": user}, "feature_values": values,
	})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := record.Decode(raw, record.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func refEnrichment(service string, mode outflowv1.Enrichment_Consistency, timeout time.Duration) *outflowv1.Enrichment {
	return &outflowv1.Enrichment{WorkspaceName: "prod", FeatureServiceName: service, Consistency: mode,
		ConsistencyTimeout: durationpb.New(timeout)}
}

// TestReferenceFirstRecord is the first record of a new user: the first call finds nothing
// (null, MISSING_DATA, no effective time) and, through a cache that a previous read filled
// with that miss, keeps finding nothing unless retries send read_from_cache=false. STRICT and
// BEST_EFFORT must wait until the values are materialised and deliver them; NONE delivers the
// nulls at once, unchecked.
func TestReferenceFirstRecord(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode         outflowv1.Enrichment_Consistency
		wantRetried  bool
		wantCheck    *bool
		wantCartNull bool
	}{
		{outflowv1.Enrichment_STRICT, true, new(true), false},
		{outflowv1.Enrichment_BEST_EFFORT, true, new(true), false},
		{outflowv1.Enrichment_NONE, false, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			t.Parallel()
			srv, e := refSetup(t, 100*time.Millisecond)
			rec := refRecord(t, "user_items_added_to_cart", "new_user", time.Now().UTC(), map[string]string{"cart_count": "1", "cart_value": "24.5"})
			cfg := refEnrichment("promo_fs", tt.mode, 10*time.Second)
			// A read before the record fills the serving cache with the miss.
			if _, err := e.Enrich(t.Context(), rec, refEnrichment("promo_fs", outflowv1.Enrichment_NONE, time.Second)); err != nil {
				t.Fatal(err)
			}
			srv.Apply(rec)

			res, err := e.Enrich(t.Context(), rec, cfg)
			if err != nil {
				t.Fatalf("Enrich: %v", err)
			}
			if (res.Attempts > 1) != tt.wantRetried {
				t.Errorf("Attempts = %d, want retried: %v", res.Attempts, tt.wantRetried)
			}
			if (res.Consistent == nil) != (tt.wantCheck == nil) || (res.Consistent != nil && *res.Consistent != *tt.wantCheck) {
				t.Errorf("Consistent = %v, want %v", res.Consistent, tt.wantCheck)
			}
			count, _ := res.Vector.Lookup("user_items_added_to_cart.cart_count")
			if tt.wantCartNull {
				if string(count.Value) != "null" || count.HasEffectiveTime || count.Status != tecton.StatusCachedMissingData {
					t.Errorf("NONE: cart_count = %s %s (effective time set %v), want the cached null without an effective time", count.Value, count.Status, count.HasEffectiveTime)
				}
				return
			}
			if string(count.Value) != `"1"` || !count.HasEffectiveTime || !count.EffectiveTime.Equal(rec.FeatureTimestamp) {
				t.Errorf("cart_count = %s at %s (set %v), want \"1\" at the record's time %s", count.Value, count.EffectiveTime, count.HasEffectiveTime, rec.FeatureTimestamp)
			}
			if v := res.Vector.Check(rec.FeatureViewName, rec.FeatureTimestamp); !v.Consistent {
				t.Errorf("delivered vector breaks the rule: %+v", v)
			}
		})
	}
}

// TestReferenceAggregateTimeout: an aggregate view reports effective times aligned to its
// one-hour interval, so a record in the middle of an interval is never caught up. STRICT can
// only end by its timeout, with an *InconsistentError whose Lag is below the interval;
// BEST_EFFORT then delivers the freshest vector, marked inconsistent.
func TestReferenceAggregateTimeout(t *testing.T) {
	t.Parallel()
	srv, e := refSetup(t, 20*time.Millisecond)
	now := time.Now().UTC()
	ts := now.Truncate(time.Hour).Add(time.Minute + 123*time.Millisecond)
	if ts.After(now) {
		ts = ts.Add(-time.Hour)
	}
	rec := refRecord(t, "user_counts", "u7", ts, map[string]string{"carts_1h": "4"})
	srv.Apply(rec)

	start := time.Now()
	_, err := e.Enrich(t.Context(), rec, refEnrichment("counts_fs", outflowv1.Enrichment_STRICT, 300*time.Millisecond))
	ie, ok := errors.AsType[*enrich.InconsistentError](err)
	if !ok {
		t.Fatalf("STRICT: err = %v, want *InconsistentError", err)
	}
	if ie.Missing != 0 || ie.Lag <= 0 || ie.Lag >= time.Hour || ie.Attempts < 2 {
		t.Errorf("InconsistentError = %+v, want Missing 0, 0 < Lag < 1h, retried", ie)
	}
	if f, _ := ie.Last.Lookup("user_counts.carts_1h"); string(f.Value) != `"4"` || !f.EffectiveTime.Equal(ts.Truncate(time.Hour)) {
		t.Errorf("last vector: %s at %s, want \"4\" at %s", f.Value, f.EffectiveTime, ts.Truncate(time.Hour))
	}
	t.Logf("STRICT on an aggregate view ended by its 300ms timeout after %d attempts in %s", ie.Attempts, time.Since(start).Round(time.Millisecond))

	res, err := e.Enrich(t.Context(), rec, refEnrichment("counts_fs", outflowv1.Enrichment_BEST_EFFORT, 200*time.Millisecond))
	if err != nil {
		t.Fatalf("BEST_EFFORT: %v", err)
	}
	if res.Consistent == nil || *res.Consistent || res.Attempts < 2 {
		t.Errorf("BEST_EFFORT: Consistent %v after %d attempts, want false after retries", res.Consistent, res.Attempts)
	}
	if f, _ := res.Vector.Lookup("user_counts.carts_1h"); string(f.Value) != `"4"` {
		t.Errorf("BEST_EFFORT delivered carts_1h = %s, want \"4\"", f.Value)
	}
}
