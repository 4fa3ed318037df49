package tecton_test

import (
	"fmt"
	"time"

	"github.com/outflow-dev/outflow/tecton"
)

// A get-features answer is parsed into a Vector whose values stay raw JSON, and the record's
// feature view is checked against the consistency rule.
func ExampleParseResponse() {
	body := []byte(`{
	  "result": {"features": ["1234", 0.25, "gold"]},
	  "metadata": {"features": [
	    {"name": "user_stats.purchases", "effectiveTime": "2026-11-24T10:00:00.5Z", "dataType": {"type": "int64"}, "status": "PRESENT"},
	    {"name": "user_stats.redeem_rate", "effective_time": "2026-11-24T10:00:00.5Z", "data_type": {"type": "float64"}, "status": "PRESENT"},
	    {"name": "tier_odfv.tier", "dataType": {"type": "string"}, "status": "PRESENT"}
	  ]}
	}`)
	v, err := tecton.ParseResponse(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range v.Features {
		fmt.Printf("%s (view %s) = %s, effective time set: %v\n", f.Name, f.FeatureView, f.Value, f.HasEffectiveTime)
	}

	recordTime := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	consistent, compared := v.Consistent("user_stats", recordTime)
	fmt.Println("consistent:", consistent, "compared:", compared)

	later := recordTime.Add(time.Second)
	consistent, compared = v.Consistent("user_stats", later)
	fmt.Println("consistent with a later record:", consistent, "compared:", compared)
	// Output:
	// user_stats.purchases (view user_stats) = "1234", effective time set: true
	// user_stats.redeem_rate (view user_stats) = 0.25, effective time set: true
	// tier_odfv.tier (view tier_odfv) = "gold", effective time set: false
	// consistent: true compared: 2
	// consistent with a later record: false compared: 2
}

// Errors carry their retriability as a field; IsRetriable reads it through any wrapping.
func ExampleIsRetriable() {
	errs := []error{
		fmt.Errorf("enriching: %w", &tecton.APIError{StatusCode: 503, Retriable: true}),
		fmt.Errorf("enriching: %w", &tecton.APIError{StatusCode: 404}),
		&tecton.TransportError{Err: fmt.Errorf("connection reset"), Retriable: true},
		fmt.Errorf("enriching: %w", tecton.ErrResponseTooLarge),
	}
	for _, err := range errs {
		fmt.Println(tecton.IsRetriable(err))
	}
	// Output:
	// true
	// false
	// true
	// false
}

// The first record of an entity the online store has never seen: the record's own feature
// view answers null with MISSING_DATA and no effective time. The vector is not consistent
// yet, although nothing in it is "behind"; the on-demand feature, which never has an
// effective time, is not compared.
func ExampleCheck() {
	body := []byte(`{
	  "result": {"features": [null, null, "web"]},
	  "metadata": {"features": [
	    {"name": "user_items_added_to_cart.cart_count", "dataType": {"type": "int64"}, "status": "MISSING_DATA"},
	    {"name": "user_items_added_to_cart.cart_value", "dataType": {"type": "float64"}, "status": "MISSING_DATA"},
	    {"name": "cart_request.channel", "dataType": {"type": "string"}, "status": "PRESENT"}
	  ]}
	}`)
	v, err := tecton.ParseResponse(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	recordTime := time.Date(2026, 12, 4, 9, 30, 0, 0, time.UTC)
	verdict := tecton.Check(v.Features, "user_items_added_to_cart", recordTime, v.Precision)
	fmt.Printf("consistent: %v, compared: %d, missing: %d, behind: %d\n", verdict.Consistent, verdict.Compared, verdict.Missing, verdict.Behind)
	// Output:
	// consistent: false, compared: 2, missing: 2, behind: 0
}
