package featureserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/outflow-dev/outflow/featureserver"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/tecton"
)

// Example shows the materialisation lag through Outflow's own Tecton client: the record's
// values are invisible, and the vector inconsistent with it, until the lag has elapsed.
func Example() {
	var (
		mu  sync.Mutex
		now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv, err := featureserver.New(featureserver.Config{Lag: 2 * time.Second, Now: clock, APIKey: "demo-key"})
	if err != nil {
		panic(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	client, err := tecton.NewClient(tecton.Config{BaseURL: ts.URL, APIKey: "demo-key"})
	if err != nil {
		panic(err)
	}

	rec, err := record.Decode([]byte(`{"version": "1", "feature_view_name": "user_items_added_to_cart",
		"feature_timestamp": "2026-03-01T11:59:59.5Z", "entity_keys": {"user_id": "u1"},
		"feature_values": {"cart_count": "3", "cart_value": "42.5"}}`), record.DecodeOptions{})
	if err != nil {
		panic(err)
	}
	srv.Apply(rec)

	show := func(when string) {
		v, err := client.GetFeatures(context.Background(), tecton.Request{
			Workspace: "prod", FeatureService: "promo_fs", JoinKeys: map[string]string{"user_id": "u1"},
		})
		if err != nil {
			panic(err)
		}
		f, _ := v.Lookup("user_items_added_to_cart.cart_count")
		consistent, _ := v.Consistent(rec.FeatureViewName, rec.FeatureTimestamp)
		effective := "none"
		if f.HasEffectiveTime {
			effective = f.EffectiveTime.Format(time.RFC3339Nano)
		}
		fmt.Printf("%s: cart_count=%s %s effective=%s consistent=%v\n", when, f.Value, f.Status, effective, consistent)
	}
	show("before the lag")
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	show("after the lag")
	// Output:
	// before the lag: cart_count=null MISSING_DATA effective=none consistent=false
	// after the lag: cart_count="3" PRESENT effective=2026-03-01T11:59:59.5Z consistent=true
}

// ExampleLoadCatalog loads a one-service catalog.
func ExampleLoadCatalog() {
	c, err := featureserver.LoadCatalog(strings.NewReader(`{
	  "feature_views": [{"name": "user_counts", "join_keys": [{"name": "user_id", "type": "int64"}],
	                     "features": [{"name": "count_1h", "type": "int64"}], "aggregation_interval": "1h"}],
	  "workspaces": [{"name": "prod", "feature_services": [{"name": "counts", "features": ["user_counts.*"]}]}]
	}`))
	if err != nil {
		panic(err)
	}
	out, _ := json.Marshal(c.FeatureViews[0].AggregationInterval.String())
	fmt.Println(c.Workspaces[0].FeatureServices[0].Name, string(out))
	// Output: counts "1h0m0s"
}
