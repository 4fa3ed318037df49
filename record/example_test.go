package record_test

import (
	"errors"
	"fmt"

	"github.com/outflow-dev/outflow/record"
)

func ExampleDecode() {
	msg := []byte(`{"version": "1", "producer": "tecton", "job_type": "stream",
		"feature_view_name": "user_items_added_to_cart", "feature_view_id": "fv-123",
		"feature_timestamp": "2022-06-07T02:36:08.832793+02:00",
		"entity_keys": {"user_id": "u1"}, "feature_values": {"items_added_1h": "3"},
		"region": "eu-west-1"}`)
	r, err := record.Decode(msg, record.DecodeOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.FeatureViewName)
	fmt.Println(r.FeatureTimestamp)
	fmt.Println(r.EntityKeys["user_id"], r.FeatureValues["items_added_1h"])
	// Output:
	// user_items_added_to_cart
	// 2022-06-07 00:36:08.832793 +0000 UTC
	// u1 3
}

func ExampleDecode_poison() {
	msg := []byte(`{"version": "1", "feature_view_name": "user_items_added_to_cart",
		"feature_timestamp": "yesterday", "entity_keys": {"user_id": "u1"}}`)
	_, err := record.Decode(msg, record.DecodeOptions{})
	var perr *record.PoisonError
	if errors.As(err, &perr) {
		// perr.Reason is the metric label; the record goes to the poison
		// table with err, and the consumer moves on.
		fmt.Println(perr.Reason, perr.Field)
		fmt.Println(err)
	}
	// Output:
	// invalid_field feature_timestamp
	// poison record (invalid_field): feature_timestamp: "yesterday": not an RFC 3339 date-time "YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)" with up to 9 fractional digits
}

// The shard of an entity can be computed outside Outflow: FNV-1a 64 over
// "user_id\x00u1\x00", modulo the number of shards.
func ExampleRecord_EntityHash() {
	r := &record.Record{EntityKeys: map[string]string{"user_id": "u1"}}
	h := r.EntityHash()
	fmt.Printf("%#016x\n", h)
	fmt.Println("shard of 4:", h%4)
	// Output:
	// 0xe919038c15959078
	// shard of 4: 0
}

func ExampleRecord_EntityKey() {
	r := &record.Record{EntityKeys: map[string]string{"user_id": "u 1", "org": "a&b"}}
	fmt.Println(r.EntityKey())
	// Output:
	// org=a%26b&user_id=u+1
}
