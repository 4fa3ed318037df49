package server

import (
	"io"
	"strings"
	"testing"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// FuzzDecoderNamesAField feeds any body to the REST decoder as a create's
// Subscription. Invariants: it never panics, and every refusal other than
// "no body" names a field in the form httpError reads, so the client gets a
// google.rpc.BadRequest whatever it sent.
func FuzzDecoderNamesAField(f *testing.F) {
	for _, seed := range []string{
		`{"name":"n","feature_view_names":"fv"}`,
		`{"webhook":{"url":"u"},"stream":{}}`,
		`{"retry_policy":{"max_attempts":"eight","max_age":-5}}`,
		`{"entity_filter":{"":{"values":[]},"k":["a"]}}`,
		`{"enrichment":{"consistency":"SOMETIMES"}}`,
		`{"webhook":{"timeout":"99999999999999s"}}`,
		`["a"]`, `{"name": "x", "feature_view_names": [`, `null`, `{}`, "\x00",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var sub *outflowv1.Subscription
		err := jsonMarshaler.NewDecoder(strings.NewReader(body)).Decode(&sub)
		if err == nil || err == io.EOF {
			return
		}
		field, _ := gatewayViolation(err.Error())
		if field == "request" || !strings.HasPrefix(field, "subscription") {
			t.Fatalf("decoding %q: %v: names no subscription field (got %q)", body, err, field)
		}
	})
}
