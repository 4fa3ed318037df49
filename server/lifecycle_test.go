package server_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
)

// TestLifecycleGRPC walks a subscription through its life over gRPC:
// create → get → list (250 subscriptions in pages of 100) → update with the
// current etag → update with a stale one (ABORTED) → rotate the secret →
// delete → get (NOT_FOUND).
func TestLifecycleGRPC(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	ctx := as(b.keyA)

	created, err := b.subs.CreateSubscription(ctx, &outflowv1.CreateSubscriptionRequest{Subscription: &outflowv1.Subscription{
		Name:             "promo cart",
		FeatureViewNames: []string{"user_items_added_to_cart"},
		EntityFilter:     map[string]*outflowv1.EntityValues{"user_id": {Values: []string{"u1", "u2"}}},
		Filter:           `record.entity_keys["user_id"].startsWith("u")`,
		Enrichment:       &outflowv1.Enrichment{WorkspaceName: "prod", FeatureServiceName: "promo_fs"},
		Target:           &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{Url: "https://promo.example.com/hooks/cart", Headers: map[string]string{"x-team": "promo"}}},
	}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if !strings.HasPrefix(created.GetId(), "sub_") || !strings.HasPrefix(created.GetSecret(), "whsec_") || created.GetEtag() == "" {
		t.Fatalf("create answered id %q, a secret: %v, etag %q", created.GetId(), created.GetSecret() != "", created.GetEtag())
	}
	// Defaults are filled in and shown.
	if got := created.GetEnrichment(); got.GetConsistency() != outflowv1.Enrichment_STRICT || got.GetConsistencyTimeout().AsDuration() != server.DefaultConsistencyTimeout {
		t.Errorf("enrichment defaults = %v", got)
	}
	if created.GetState() != outflowv1.Subscription_ACTIVE || created.GetRetryPolicy().GetMaxAttempts() != server.DefaultMaxAttempts {
		t.Errorf("state %v, retry policy %v; want ACTIVE and defaults", created.GetState(), created.GetRetryPolicy())
	}

	got, err := b.subs.GetSubscription(ctx, &outflowv1.GetSubscriptionRequest{Id: created.GetId()})
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if got.GetSecret() != "" {
		t.Error("get returned the secret")
	}
	if got.GetName() != "promo cart" || got.GetEtag() != created.GetEtag() || got.GetFilter() != created.GetFilter() {
		t.Errorf("get = %v, want what was created", got)
	}

	// 249 more, then page through all 250 in pages of 100.
	for i := range 249 {
		_, err := b.subs.CreateSubscription(ctx, &outflowv1.CreateSubscriptionRequest{Subscription: &outflowv1.Subscription{
			Name: fmt.Sprintf("bulk %03d", i), FeatureViewNames: []string{"fv_bulk"},
			Target: &outflowv1.Subscription_Stream{Stream: &outflowv1.StreamTarget{}},
		}})
		if err != nil {
			t.Fatalf("create bulk %d: %v", i, err)
		}
	}
	seen := map[string]bool{}
	var pages []int
	token := ""
	for {
		resp, err := b.subs.ListSubscriptions(ctx, &outflowv1.ListSubscriptionsRequest{PageSize: 100, PageToken: token})
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		pages = append(pages, len(resp.GetSubscriptions()))
		for _, s := range resp.GetSubscriptions() {
			if seen[s.GetId()] {
				t.Fatalf("list returned %s twice", s.GetId())
			}
			if s.GetSecret() != "" {
				t.Fatal("list returned a secret")
			}
			seen[s.GetId()] = true
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(seen) != 250 || fmt.Sprint(pages) != "[100 100 50]" {
		t.Fatalf("listed %d subscriptions in pages %v; want 250 in [100 100 50]", len(seen), pages)
	}
	// The feature view filter.
	resp, err := b.subs.ListSubscriptions(ctx, &outflowv1.ListSubscriptionsRequest{FeatureViewName: "user_items_added_to_cart"})
	if err != nil || len(resp.GetSubscriptions()) != 1 || resp.GetSubscriptions()[0].GetId() != created.GetId() {
		t.Fatalf("list by feature view = %v, %v; want just %s", resp, err, created.GetId())
	}

	updated, err := b.subs.UpdateSubscription(ctx, &outflowv1.UpdateSubscriptionRequest{
		Subscription: &outflowv1.Subscription{Id: created.GetId(), Etag: created.GetEtag(), Name: "promo cart v2",
			Target: &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{Timeout: durationpb.New(3e9)}}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name", "webhook.timeout"}},
	})
	if err != nil {
		t.Fatalf("update with the current etag: %v", err)
	}
	if updated.GetName() != "promo cart v2" || updated.GetWebhook().GetTimeout().AsDuration() != 3e9 ||
		updated.GetWebhook().GetUrl() != "https://promo.example.com/hooks/cart" || updated.GetFilter() == "" {
		t.Errorf("update changed more or less than its mask: %v", updated)
	}
	if updated.GetEtag() == created.GetEtag() {
		t.Error("update kept the etag")
	}

	_, err = b.subs.UpdateSubscription(ctx, &outflowv1.UpdateSubscriptionRequest{
		Subscription: &outflowv1.Subscription{Id: created.GetId(), Etag: created.GetEtag(), Name: "stale"},
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"name"}},
	})
	if status.Code(err) != codes.Aborted {
		t.Fatalf("update with a stale etag = %v, want ABORTED", err)
	}

	rotated, err := b.subs.RotateSubscriptionSecret(ctx, &outflowv1.RotateSubscriptionSecretRequest{Id: created.GetId()})
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if !strings.HasPrefix(rotated.GetSecret(), "whsec_") || rotated.GetSecret() == created.GetSecret() {
		t.Fatalf("rotate returned secret %q, want a new whsec_ secret", rotated.GetSecret())
	}

	if _, err := b.subs.DeleteSubscription(ctx, &outflowv1.DeleteSubscriptionRequest{Id: created.GetId()}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := b.subs.GetSubscription(ctx, &outflowv1.GetSubscriptionRequest{Id: created.GetId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("get after delete = %v, want NOT_FOUND", err)
	}
	if _, err := b.subs.DeleteSubscription(ctx, &outflowv1.DeleteSubscriptionRequest{Id: created.GetId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("second delete = %v, want NOT_FOUND", err)
	}
}

// TestLifecycleREST is TestLifecycleGRPC through grpc-gateway with a plain
// HTTP client.
func TestLifecycleREST(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})

	body := webhookSub("promo cart")
	body["enrichment"] = map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs", "consistency": "BEST_EFFORT", "consistency_timeout": "2.5s"}
	created := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, body)
	id, _ := created["id"].(string)
	secret, _ := created["secret"].(string)
	etag, _ := created["etag"].(string)
	if !strings.HasPrefix(id, "sub_") || !strings.HasPrefix(secret, "whsec_") || etag == "" {
		t.Fatalf("create = %v", created)
	}
	enrichment, _ := created["enrichment"].(map[string]any)
	if enrichment["consistency"] != "BEST_EFFORT" || enrichment["consistency_timeout"] != "2.500s" || created["state"] != "ACTIVE" {
		t.Errorf("create answered enrichment %v state %v", enrichment, created["state"])
	}

	got := b.restJSON(t, http.StatusOK, "GET", "/v1/subscriptions/"+id, b.keyA, nil)
	if _, has := got["secret"]; has {
		t.Error("GET returned the secret")
	}
	if got["name"] != "promo cart" || got["etag"] != etag {
		t.Errorf("GET = %v", got)
	}

	for i := range 249 {
		sub := webhookSub(fmt.Sprintf("bulk %03d", i))
		sub["feature_view_names"] = []string{"fv_bulk"}
		b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, sub)
	}
	seen := map[string]bool{}
	var pages []int
	token := ""
	for {
		page := b.restJSON(t, http.StatusOK, "GET", "/v1/subscriptions?page_size=100&page_token="+url.QueryEscape(token), b.keyA, nil)
		subs, _ := page["subscriptions"].([]any)
		pages = append(pages, len(subs))
		for _, s := range subs {
			m := s.(map[string]any)
			if _, has := m["secret"]; has {
				t.Fatal("list returned a secret")
			}
			seen[m["id"].(string)] = true
		}
		token, _ = page["next_page_token"].(string)
		if token == "" {
			break
		}
	}
	if len(seen) != 250 || fmt.Sprint(pages) != "[100 100 50]" {
		t.Fatalf("listed %d subscriptions in pages %v; want 250 in [100 100 50]", len(seen), pages)
	}

	// PATCH infers the mask from the body: only the name changes.
	updated := b.restJSON(t, http.StatusOK, "PATCH", "/v1/subscriptions/"+id, b.keyA,
		map[string]any{"name": "promo cart v2", "etag": etag})
	if updated["name"] != "promo cart v2" || updated["etag"] == etag {
		t.Errorf("PATCH = %v", updated)
	}
	if wh, _ := updated["webhook"].(map[string]any); wh["url"] != "https://promo.example.com/hooks/cart" {
		t.Errorf("PATCH of the name changed the webhook: %v", updated["webhook"])
	}
	if e, _ := updated["enrichment"].(map[string]any); e["feature_service_name"] != "promo_fs" {
		t.Errorf("PATCH of the name changed the enrichment: %v", updated["enrichment"])
	}

	stale := b.restJSON(t, http.StatusConflict, "PATCH", "/v1/subscriptions/"+id, b.keyA,
		map[string]any{"name": "stale", "etag": etag})
	if !strings.Contains(fmt.Sprint(stale["message"]), "changed") {
		t.Errorf("409 message = %v", stale["message"])
	}

	rotated := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions/"+id+":rotateSecret", b.keyA, map[string]any{})
	if s, _ := rotated["secret"].(string); !strings.HasPrefix(s, "whsec_") || s == secret {
		t.Fatalf("rotate = %v", rotated)
	}

	b.restJSON(t, http.StatusOK, "DELETE", "/v1/subscriptions/"+id, b.keyA, nil)
	notFound := b.restJSON(t, http.StatusNotFound, "GET", "/v1/subscriptions/"+id, b.keyA, nil)
	if !strings.Contains(fmt.Sprint(notFound["message"]), id) {
		t.Errorf("404 message = %v, want it to name %s", notFound["message"], id)
	}
}

func TestDuplicateNameIsAlreadyExists(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("same"))
	b.restJSON(t, http.StatusConflict, "POST", "/v1/subscriptions", b.keyA, webhookSub("same"))
	// Names are per tenant.
	b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyB, webhookSub("same"))

	other := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("other"))
	b.restJSON(t, http.StatusConflict, "PATCH", "/v1/subscriptions/"+other["id"].(string), b.keyA, map[string]any{"name": "same"})
}

func TestSubscriptionsPerTenantAreBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{MaxSubscriptionsPerTenant: 3})
	for i := range 3 {
		b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub(fmt.Sprint(i)))
	}
	b.restJSON(t, http.StatusTooManyRequests, "POST", "/v1/subscriptions", b.keyA, webhookSub("one too many"))
	b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyB, webhookSub("other tenant"))
}

func TestUpdateSwitchesTargetAndClearsFields(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	ctx := as(b.keyA)
	body := webhookSub("switch")
	body["filter"] = `record.producer == "tecton"`
	created := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, body)
	id := created["id"].(string)

	// Setting stream replaces the webhook (one oneof); an unset field in the
	// mask is cleared.
	updated, err := b.subs.UpdateSubscription(ctx, &outflowv1.UpdateSubscriptionRequest{
		Subscription: &outflowv1.Subscription{Id: id, Target: &outflowv1.Subscription_Stream{Stream: &outflowv1.StreamTarget{}}},
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"stream", "filter"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if updated.GetStream() == nil || updated.GetWebhook() != nil || updated.GetFilter() != "" {
		t.Errorf("after update: stream %v webhook %v filter %q", updated.GetStream(), updated.GetWebhook(), updated.GetFilter())
	}

	// The update is validated as a whole: the webhook path alone needs a URL.
	_, err = b.subs.UpdateSubscription(ctx, &outflowv1.UpdateSubscriptionRequest{
		Subscription: &outflowv1.Subscription{Id: id, Target: &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{}}},
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"webhook"}},
	})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "subscription.webhook.url") {
		t.Errorf("update to a webhook without URL = %v, want INVALID_ARGUMENT naming subscription.webhook.url", err)
	}

	// Output-only paths are ignored; unknown ones are refused.
	if _, err := b.subs.UpdateSubscription(ctx, &outflowv1.UpdateSubscriptionRequest{
		Subscription: &outflowv1.Subscription{Id: id, Name: "renamed"},
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"name", "create_time", "secret"}},
	}); err != nil {
		t.Errorf("update with output-only paths: %v", err)
	}
	_, err = b.subs.UpdateSubscription(ctx, &outflowv1.UpdateSubscriptionRequest{
		Subscription: &outflowv1.Subscription{Id: id},
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"no_such_field"}},
	})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "update_mask") {
		t.Errorf("unknown mask path = %v, want INVALID_ARGUMENT naming update_mask", err)
	}

	// A user's PAUSED sticks; the secret survives updates.
	paused, err := b.subs.UpdateSubscription(ctx, &outflowv1.UpdateSubscriptionRequest{
		Subscription: &outflowv1.Subscription{Id: id, State: outflowv1.Subscription_PAUSED},
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"state"}},
	})
	if err != nil || paused.GetState() != outflowv1.Subscription_PAUSED {
		t.Fatalf("pause = %v, %v", paused, err)
	}
	stored, err := b.store.GetSubscription(ctx, tenantOf(t, b, b.keyA), id)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Secrets.Current != created["secret"] {
		t.Error("an update changed the signing secret")
	}
}

func tenantOf(t *testing.T, b *bundle, key string) string {
	t.Helper()
	tenant, err := b.store.Authenticate(as(key), key)
	if err != nil {
		t.Fatal(err)
	}
	return tenant
}
