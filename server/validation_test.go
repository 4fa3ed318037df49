package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
)

// with returns a valid webhook subscription body changed by edit.
func with(edit func(sub map[string]any)) map[string]any {
	sub := webhookSub("valid")
	edit(sub)
	return sub
}

func webhookWith(edit func(w map[string]any)) map[string]any {
	return with(func(s map[string]any) { edit(s["webhook"].(map[string]any)) })
}

func manyHeaders(n int) map[string]any {
	h := map[string]any{}
	for i := range n {
		h[fmt.Sprintf("x-h%d", i)] = "v"
	}
	return h
}

// TestInvalidRequests sends bad requests through REST, and through gRPC when
// the body can be expressed there: each must be refused with
// INVALID_ARGUMENT / 400 (or 413) naming the bad field, and none may leave a
// row behind.
func TestInvalidRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	tests := []struct {
		name string
		// method and path default to POST /v1/subscriptions.
		method, path string
		body         any
		wantStatus   int
		// wantField must appear in the answer: a field violation's name, or
		// the field the JSON parser names.
		wantField string
	}{
		{name: "missing feature views", body: with(func(s map[string]any) { delete(s, "feature_view_names") }), wantField: "subscription.feature_view_names"},
		{name: "empty feature view name", body: with(func(s map[string]any) { s["feature_view_names"] = []string{""} }), wantField: "subscription.feature_view_names"},
		{name: "feature view name with spaces", body: with(func(s map[string]any) { s["feature_view_names"] = []string{"user items"} }), wantField: "subscription.feature_view_names"},
		{name: "duplicate feature views", body: with(func(s map[string]any) { s["feature_view_names"] = []string{"a", "a"} }), wantField: "subscription.feature_view_names"},
		{name: "too many feature views", body: with(func(s map[string]any) {
			fvs := make([]string, 101)
			for i := range fvs {
				fvs[i] = fmt.Sprint("fv", i)
			}
			s["feature_view_names"] = fvs
		}), wantField: "subscription.feature_view_names"},
		{name: "neither webhook nor stream", body: with(func(s map[string]any) { delete(s, "webhook") }), wantField: "subscription.target"},
		{name: "both webhook and stream", body: with(func(s map[string]any) { s["stream"] = map[string]any{} }), wantField: "target"},
		{name: "missing name", body: with(func(s map[string]any) { delete(s, "name") }), wantField: "subscription.name"},
		{name: "oversized name", body: with(func(s map[string]any) { s["name"] = strings.Repeat("n", 201) }), wantField: "subscription.name"},
		{name: "name with control characters", body: with(func(s map[string]any) { s["name"] = "a\x07b" }), wantField: "subscription.name"},
		{name: "name of only spaces", body: with(func(s map[string]any) { s["name"] = "   " }), wantField: "subscription.name"},
		{name: "name of only ideographic spaces", body: with(func(s map[string]any) { s["name"] = "\u3000\u3000" }), wantField: "subscription.name"},
		{name: "name with a bidi override", body: with(func(s map[string]any) { s["name"] = "invoice\u202egpj.exe" }), wantField: "subscription.name"},
		{name: "name with a bidi isolate", body: with(func(s map[string]any) { s["name"] = "a\u2067b\u2069" }), wantField: "subscription.name"},
		{name: "name with a zero-width space", body: with(func(s map[string]any) { s["name"] = "pro\u200bmo" }), wantField: "subscription.name"},
		{name: "name with a zero-width joiner", body: with(func(s map[string]any) { s["name"] = "pro\u200dmo" }), wantField: "subscription.name"},
		{name: "name with a byte order mark", body: with(func(s map[string]any) { s["name"] = "\ufeffpromo" }), wantField: "subscription.name"},
		{name: "IDNA full stops to loopback", body: webhookWith(func(w map[string]any) { w["url"] = "https://127\u30020\u30020\u30021/" }), wantField: "subscription.webhook.url"},
		{name: "IDNA fullwidth digits to loopback", body: webhookWith(func(w map[string]any) { w["url"] = "https://\uff11\uff12\uff17.0.0.1/" }), wantField: "subscription.webhook.url"},
		{name: "IDNA full stops to metadata", body: webhookWith(func(w map[string]any) { w["url"] = "https://169\uff0e254\uff0e169\uff0e254/latest" }), wantField: "subscription.webhook.url"},
		{name: "IDNA localhost", body: webhookWith(func(w map[string]any) { w["url"] = "https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/" }), wantField: "subscription.webhook.url"},
		{name: "invalid IDNA host", body: webhookWith(func(w map[string]any) { w["url"] = "https://exa\u202emple.com/" }), wantField: "subscription.webhook.url"},
		{name: "URL that is not a URL", body: webhookWith(func(w map[string]any) { w["url"] = "not a url" }), wantField: "subscription.webhook.url"},
		{name: "http URL", body: webhookWith(func(w map[string]any) { w["url"] = "http://promo.example.com/hook" }), wantField: "subscription.webhook.url"},
		{name: "ftp URL", body: webhookWith(func(w map[string]any) { w["url"] = "ftp://promo.example.com/hook" }), wantField: "subscription.webhook.url"},
		{name: "URL with credentials", body: webhookWith(func(w map[string]any) { w["url"] = "https://user:pw@promo.example.com/hook" }), wantField: "subscription.webhook.url"},
		{name: "cloud metadata URL", body: webhookWith(func(w map[string]any) { w["url"] = "https://169.254.169.254/latest" }), wantField: "subscription.webhook.url"},
		{name: "loopback URL not allow-listed", body: webhookWith(func(w map[string]any) { w["url"] = "https://127.0.0.1:8443/hook" }), wantField: "subscription.webhook.url"},
		{name: "oversized URL", body: webhookWith(func(w map[string]any) { w["url"] = "https://promo.example.com/" + strings.Repeat("a", 3000) }), wantField: "subscription.webhook.url"},
		{name: "bad CEL", body: with(func(s map[string]any) { s["filter"] = `record.entity_keys[` }), wantField: "subscription.filter"},
		{name: "CEL of the wrong type", body: with(func(s map[string]any) { s["filter"] = `record.feature_view_name` }), wantField: "subscription.filter"},
		{name: "CEL over an unknown field", body: with(func(s map[string]any) { s["filter"] = `record.user == "x"` }), wantField: "subscription.filter"},
		{name: "too many headers", body: webhookWith(func(w map[string]any) { w["headers"] = manyHeaders(33) }), wantField: "subscription.webhook.headers"},
		{name: "oversized header value", body: webhookWith(func(w map[string]any) { w["headers"] = map[string]any{"x-big": strings.Repeat("v", 5000)} }), wantField: "subscription.webhook.headers"},
		{name: "reserved header", body: webhookWith(func(w map[string]any) { w["headers"] = map[string]any{"webhook-signature": "forged"} }), wantField: "subscription.webhook.headers"},
		{name: "header with newline", body: webhookWith(func(w map[string]any) { w["headers"] = map[string]any{"x-a": "1\r\nx-b: 2"} }), wantField: "subscription.webhook.headers"},
		{name: "negative webhook timeout", body: webhookWith(func(w map[string]any) { w["timeout"] = "-1s" }), wantField: "subscription.webhook.timeout"},
		{name: "webhook timeout over the limit", body: webhookWith(func(w map[string]any) { w["timeout"] = "3600s" }), wantField: "subscription.webhook.timeout"},
		{name: "negative max_in_flight", body: webhookWith(func(w map[string]any) { w["max_in_flight"] = -1 }), wantField: "subscription.webhook.max_in_flight"},
		{name: "negative rate_limit", body: webhookWith(func(w map[string]any) { w["rate_limit"] = -5 }), wantField: "subscription.webhook.rate_limit"},
		{name: "negative consistency timeout", body: with(func(s map[string]any) {
			s["enrichment"] = map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs", "consistency_timeout": "-2s"}
		}), wantField: "subscription.enrichment.consistency_timeout"},
		{name: "enrichment without workspace", body: with(func(s map[string]any) { s["enrichment"] = map[string]any{"feature_service_name": "promo_fs"} }), wantField: "subscription.enrichment.workspace_name"},
		{name: "unknown consistency name", body: with(func(s map[string]any) {
			s["enrichment"] = map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs", "consistency": "SOMETIMES"}
		}), wantField: "consistency"},
		{name: "unknown consistency number", body: with(func(s map[string]any) {
			s["enrichment"] = map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs", "consistency": 9}
		}), wantField: "subscription.enrichment.consistency"},
		{name: "unknown backend name", body: with(func(s map[string]any) {
			s["enrichment"] = map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs", "backend": "HOPSWORKS"}
		}), wantField: "backend"},
		{name: "unknown backend number", body: with(func(s map[string]any) {
			s["enrichment"] = map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs", "backend": 9}
		}), wantField: "subscription.enrichment.backend"},
		{name: "Tecton enrichment without workspace", body: with(func(s map[string]any) {
			s["enrichment"] = map[string]any{"feature_service_name": "promo_fs", "backend": "TECTON"}
		}), wantField: "subscription.enrichment.workspace_name"},
		{name: "Feast enrichment without feature service", body: with(func(s map[string]any) {
			s["enrichment"] = map[string]any{"backend": "FEAST"}
		}), wantField: "subscription.enrichment.feature_service_name"},
		{name: "Feast enrichment with a bad workspace", body: with(func(s map[string]any) {
			s["enrichment"] = map[string]any{"workspace_name": "a b", "feature_service_name": "user_fs", "backend": "FEAST"}
		}), wantField: "subscription.enrichment.workspace_name"},
		{name: "unknown state number", body: with(func(s map[string]any) { s["state"] = 7 }), wantField: "subscription.state"},
		{name: "entity filter without values", body: with(func(s map[string]any) {
			s["entity_filter"] = map[string]any{"user_id": map[string]any{"values": []string{}}}
		}), wantField: "subscription.entity_filter.user_id"},
		{name: "retry attempts over the limit", body: with(func(s map[string]any) { s["retry_policy"] = map[string]any{"max_attempts": 100} }), wantField: "subscription.retry_policy.max_attempts"},
		{name: "misspelt field", body: with(func(s map[string]any) { s["feature_view_nmaes"] = []string{"x"} }), wantField: "feature_view_nmaes"},
		{name: "wrong JSON type", body: with(func(s map[string]any) { s["feature_view_names"] = "user_items" }), wantField: "feature_view_names"},
		{name: "garbage JSON", body: `{"name": "x", "feature_view_names": [`, wantField: "unexpected"},
		{name: "not JSON at all", body: "\x00\x01binary", wantField: "invalid"},
		{name: "body over the limit", body: `{"name": "` + strings.Repeat("x", 2<<20) + `"}`, wantStatus: http.StatusRequestEntityTooLarge, wantField: "limit"},
		{name: "page_size 10000", method: "GET", path: "/v1/subscriptions?page_size=10000", wantField: "page_size"},
		{name: "negative page_size", method: "GET", path: "/v1/subscriptions?page_size=-1", wantField: "page_size"},
		{name: "forged page token", method: "GET", path: "/v1/subscriptions?page_token=eyJ0IjoieCJ9AAAAAAAAAAAAAAAAAAAAAA", wantField: "page_token"},
	}
	if len(tests) < 25 {
		t.Fatalf("only %d cases", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path := tt.method, tt.path
			if method == "" {
				method, path = "POST", "/v1/subscriptions"
			}
			want := tt.wantStatus
			if want == 0 {
				want = http.StatusBadRequest
			}
			code, body := b.rest(t, method, path, b.keyA, tt.body)
			if code != want || !strings.Contains(string(body), tt.wantField) {
				t.Errorf("REST %s %s = %d %.300s; want %d naming %q", method, path, code, body, want, tt.wantField)
			}

			// The same body over gRPC, when protobuf JSON can express it.
			sub, ok := tt.body.(map[string]any)
			if !ok || tt.method != "" {
				return
			}
			raw, _ := json.Marshal(sub)
			msg := &outflowv1.Subscription{}
			if protojson.Unmarshal(raw, msg) != nil {
				return
			}
			_, err := b.subs.CreateSubscription(as(b.keyA), &outflowv1.CreateSubscriptionRequest{Subscription: msg})
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("gRPC create = %v, want INVALID_ARGUMENT", err)
			}
			if !violates(err, tt.wantField) {
				t.Errorf("gRPC error %v has no BadRequest violation of %q", err, tt.wantField)
			}
		})
	}
	if n := b.countSubscriptions(t); n != 0 {
		t.Errorf("invalid requests left %d subscriptions behind", n)
	}
}

// violates reports whether err carries a google.rpc.BadRequest naming field.
func violates(err error, field string) bool {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return true
				}
			}
		}
	}
	return false
}

// TestManyViolationsReportedTogether: a client fixes everything in one go.
func TestManyViolationsReportedTogether(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	_, err := b.subs.CreateSubscription(as(b.keyA), &outflowv1.CreateSubscriptionRequest{Subscription: &outflowv1.Subscription{
		Filter: "1 + 1",
		Target: &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{Url: "http://x.example.com", MaxInFlight: 1000}},
	}})
	for _, field := range []string{"subscription.name", "subscription.feature_view_names", "subscription.filter", "subscription.webhook.url", "subscription.webhook.max_in_flight"} {
		if !violates(err, field) {
			t.Errorf("error %v does not name %s", err, field)
		}
	}
}

// TestInsecureAndPrivateURLsWhenAllowed: the operator's switches open what
// tests and internal deployments need.
func TestInsecureAndPrivateURLsWhenAllowed(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{AllowInsecureURLs: true, AllowCIDRs: mustPrefixes(t, "127.0.0.0/8")})
	b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA,
		webhookWith(func(w map[string]any) { w["url"] = "http://127.0.0.1:9999/hook" }))
	b.restJSON(t, http.StatusBadRequest, "POST", "/v1/subscriptions", b.keyA,
		webhookWith(func(w map[string]any) { w["url"] = "http://10.0.0.1/hook" }))
}

func mustPrefixes(t *testing.T, cidrs ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, len(cidrs))
	for i, c := range cidrs {
		out[i] = netip.MustParsePrefix(c)
	}
	return out
}

// TestEnrichmentBackend: a subscription names its feature-store backend; unset means Tecton
// (stored explicitly), and a Feast subscription needs no workspace.
func TestEnrichmentBackend(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	tests := []struct {
		name        string
		enrichment  map[string]any
		wantBackend string
	}{
		{"default", map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs"}, "TECTON"},
		{"tecton", map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs", "backend": "TECTON"}, "TECTON"},
		{"feast without workspace", map[string]any{"feature_service_name": "user_fs", "backend": "FEAST"}, "FEAST"},
		{"feast with workspace", map[string]any{"workspace_name": "prod", "feature_service_name": "user_fs", "backend": "FEAST"}, "FEAST"},
	}
	for _, tt := range tests {
		body := with(func(s map[string]any) {
			s["name"] = "backend " + tt.name
			s["enrichment"] = tt.enrichment
		})
		created := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, body)
		e, _ := created["enrichment"].(map[string]any)
		if e["backend"] != tt.wantBackend {
			t.Errorf("%s: enrichment %v, want backend %s", tt.name, e, tt.wantBackend)
		}
	}
}
