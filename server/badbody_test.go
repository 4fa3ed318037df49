package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/outflow-dev/outflow/server"
)

// TestUndecodableBodiesNameTheField: a body the JSON decoder refuses is
// still a validation error, 400 with a google.rpc.BadRequest detail naming
// the field at fault (SPEC §3), like one the validator refuses. The cases
// are the kinds of bad input the issue 11 probe sent.
func TestUndecodableBodiesNameTheField(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	enrichment := func(extra string) string {
		return `,"enrichment":{"workspace_name":"prod","feature_service_name":"fs"` + extra + `}`
	}
	const head = `{"name":"n","feature_view_names":["fv"],"webhook":{"url":"https://promo.example.com/h"}`
	tests := []struct {
		name, method, path, body, field string
	}{
		{"feature views as a scalar", "", "", `{"name":"n","feature_view_names":"fv","webhook":{"url":"https://promo.example.com/h"}}`, "subscription.feature_view_names"},
		{"feature views of numbers", "", "", `{"name":"n","feature_view_names":[1],"webhook":{"url":"https://promo.example.com/h"}}`, "subscription.feature_view_names"},
		{"misspelt field", "", "", head + `,"feature_view_nmaes":["x"]}`, "subscription.feature_view_nmaes"},
		{"misspelt nested field", "", "", `{"name":"n","feature_view_names":["fv"],"webhook":{"url":"https://promo.example.com/h","timout":"1s"}}`, "subscription.webhook.timout"},
		{"both webhook and stream", "", "", head + `,"stream":{}}`, "subscription.target"},
		{"unparsable timeout", "", "", `{"name":"n","feature_view_names":["fv"],"webhook":{"url":"https://promo.example.com/h","timeout":"ten seconds"}}`, "subscription.webhook.timeout"},
		{"out-of-range timeout", "", "", `{"name":"n","feature_view_names":["fv"],"webhook":{"url":"https://promo.example.com/h","timeout":"99999999999999s"}}`, "subscription.webhook.timeout"},
		{"timeout as a number", "", "", `{"name":"n","feature_view_names":["fv"],"webhook":{"url":"https://promo.example.com/h","timeout":10}}`, "subscription.webhook.timeout"},
		{"a word for max_attempts", "", "", head + `,"retry_policy":{"max_attempts":"eight"}}`, "subscription.retry_policy.max_attempts"},
		{"fractional max_attempts", "", "", head + `,"retry_policy":{"max_attempts":1.5}}`, "subscription.retry_policy.max_attempts"},
		{"max_attempts over int32", "", "", head + `,"retry_policy":{"max_attempts":99999999999}}`, "subscription.retry_policy.max_attempts"},
		{"negative max_age", "", "", head + `,"retry_policy":{"max_age":"-5s"}}`, "subscription.retry_policy.max_age"},
		{"negative max_age as a number", "", "", head + `,"retry_policy":{"max_age":-5}}`, "subscription.retry_policy.max_age"},
		{"empty entity_filter key", "", "", head + `,"entity_filter":{"":{"values":["a"]}}}`, "subscription.entity_filter"},
		{"empty entity_filter value list", "", "", head + `,"entity_filter":{"user_id":{"values":[]}}}`, "subscription.entity_filter.user_id"},
		{"entity_filter values as a list", "", "", head + `,"entity_filter":{"user_id":["a"]}}`, "subscription.entity_filter.user_id"},
		{"unknown consistency enum", "", "", head + enrichment(`,"consistency":"SOMETIMES"`) + `}`, "subscription.enrichment.consistency"},
		{"unknown state enum", "", "", head + `,"state":"ASLEEP"}`, "subscription.state"},
		{"rate_limit as a word", "", "", `{"name":"n","feature_view_names":["fv"],"webhook":{"url":"https://promo.example.com/h","rate_limit":"fast"}}`, "subscription.webhook.rate_limit"},
		{"headers as a list", "", "", `{"name":"n","feature_view_names":["fv"],"webhook":{"url":"https://promo.example.com/h","headers":["a"]}}`, "subscription.webhook.headers"},
		{"body not an object", "", "", `["a"]`, "subscription"},
		{"truncated JSON", "", "", `{"name": "x", "feature_view_names": [`, "subscription"},
		{"patch with a word for max_in_flight", "PATCH", "/v1/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa", `{"webhook":{"max_in_flight":"many"}}`, "subscription.webhook.max_in_flight"},
		{"page_size a word", "GET", "/v1/subscriptions?page_size=ten", "", "page_size"},
		{"page_size over int32", "GET", "/v1/subscriptions?page_size=99999999999", "", "page_size"},
		{"replay start_time unparsable", "POST", "/v1/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa:replay", `{"start_time":"yesterday"}`, "start_time"},
		{"deliveries status unknown", "GET", "/v1/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa/deliveries?status=LOST", "", "status"},
		{"deliveries status by number", "GET", "/v1/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa/deliveries?status=0", "", "status"},
		{"deliveries status by number, known", "GET", "/v1/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa/deliveries?status=2", "", "status"},
	}
	for _, tt := range tests {
		method, path := tt.method, tt.path
		if method == "" {
			method, path = "POST", "/v1/subscriptions"
		}
		var body any
		if tt.body != "" {
			body = tt.body
		}
		code, raw := b.rest(t, method, path, b.keyA, body)
		if code != http.StatusBadRequest || !hasViolation(t, raw, tt.field) {
			t.Errorf("%s: %s %s = %d %s; want 400 with a BadRequest violation of %q", tt.name, method, path, code, raw, tt.field)
		}
	}
	if n := b.countSubscriptions(t); n != 0 {
		t.Errorf("invalid requests left %d subscriptions behind", n)
	}
}

// hasViolation reports whether a REST error body carries a
// google.rpc.BadRequest detail with a violation of field.
func hasViolation(t *testing.T, raw []byte, field string) bool {
	t.Helper()
	var st struct {
		Details []struct {
			Type            string `json:"@type"`
			FieldViolations []struct {
				Field       string `json:"field"`
				Description string `json:"description"`
			} `json:"field_violations"`
		} `json:"details"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return false
	}
	for _, d := range st.Details {
		if !strings.HasSuffix(d.Type, "google.rpc.BadRequest") {
			continue
		}
		for _, v := range d.FieldViolations {
			if v.Field == field && v.Description != "" {
				return true
			}
		}
	}
	return false
}
