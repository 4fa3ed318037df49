package match_test

import (
	"fmt"

	"github.com/outflow-dev/outflow/filter"
	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/store"
)

// ExampleIndex_Match builds an Index by hand, as a test of the dispatcher
// might, and matches one record against it. In the gateway the Matcher
// builds the Index from PostgreSQL.
func ExampleIndex_Match() {
	env, err := filter.NewEnv()
	if err != nil {
		panic(err)
	}
	stored := []*store.Subscription{
		{TenantID: "t1", Revision: 1, Proto: &outflowv1.Subscription{
			Id: "sub_promo", FeatureViewNames: []string{"user_items_added_to_cart"},
			Filter: `record.entity_keys["user_id"].startsWith("vip_")`,
			State:  outflowv1.Subscription_ACTIVE,
		}},
		{TenantID: "t1", Revision: 1, Proto: &outflowv1.Subscription{
			Id: "sub_audit", FeatureViewNames: []string{"user_items_added_to_cart"},
			State: outflowv1.Subscription_PAUSED,
		}},
		{TenantID: "t2", Revision: 1, Proto: &outflowv1.Subscription{
			Id: "sub_eu", FeatureViewNames: []string{"user_items_added_to_cart"},
			EntityFilter: map[string]*outflowv1.EntityValues{"region": {Values: []string{"eu"}}},
			State:        outflowv1.Subscription_ACTIVE,
		}},
	}
	var subs []*match.Subscription
	for _, s := range stored {
		subs = append(subs, match.Compile(env, s))
	}
	ix := match.NewIndex(subs, match.IndexOptions{})

	rec := &record.Record{
		Version:         "1",
		FeatureViewName: "user_items_added_to_cart",
		EntityKeys:      map[string]string{"user_id": "vip_42", "region": "us"},
	}
	for _, s := range ix.Match(rec) {
		fmt.Println(s.ID, s.State)
	}
	// Output:
	// sub_audit PAUSED
	// sub_promo ACTIVE
}
