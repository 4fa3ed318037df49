package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/store"
)

// TestSendTestEvent: the receiver gets a signed test event that the
// Standard Webhooks reference library verifies with the subscription's
// secret, and the answer reports the receiver's status.
func TestSendTestEvent(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{AllowInsecureURLs: true, AllowCIDRs: mustPrefixes(t, "127.0.0.0/8")})
	var mu sync.Mutex
	var got []http.Header
	var verifyErr error
	var secret string
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, r.Header.Clone())
		wh, err := standardwebhooks.NewWebhook(secret)
		if err == nil {
			err = wh.Verify(body, r.Header)
		}
		verifyErr = err
		w.WriteHeader(http.StatusAccepted)
	}))
	defer receiver.Close()

	created := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA,
		webhookWith(func(w map[string]any) { w["url"] = receiver.URL + "/hook" }))
	mu.Lock()
	secret = created["secret"].(string)
	mu.Unlock()

	answer := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions/"+created["id"].(string)+":test", b.keyA, map[string]any{})
	if answer["status_code"] != float64(http.StatusAccepted) {
		t.Fatalf("answer = %v, want status_code 202", answer)
	}
	event, _ := answer["event"].(map[string]any)
	if event["type"] != server.TestEventType || !strings.HasPrefix(fmt.Sprint(event["id"]), "evt_") {
		t.Errorf("event = %v", event)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("the receiver got %d requests, want 1", len(got))
	}
	if verifyErr != nil {
		t.Errorf("the reference library refused the signature: %v", verifyErr)
	}
	if ua := got[0].Get("User-Agent"); !strings.HasPrefix(ua, "outflow/") {
		t.Errorf("user-agent = %q", ua)
	}
}

func TestListAndRetryDeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	ctx := context.Background()
	id := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("queued"))["id"].(string)
	tenant := tenantOf(t, b, b.keyA)
	for i, status := range []string{store.StatusRetrying, store.StatusDead, store.StatusDead, store.StatusDelivered} {
		now := time.Now()
		next := time.Time{}
		if status == store.StatusRetrying {
			next = now.Add(time.Hour)
		}
		if _, err := b.store.EnqueueDelivery(ctx, &store.Delivery{
			ID: fmt.Sprintf("dlv_%d", i), SubscriptionID: id, TenantID: tenant, EventID: fmt.Sprintf("evt_%d", i),
			Status: status, Event: []byte(`{"id":"evt_x","type":"feature_view.output","record":{"version":"1"},"source":{"kind":"kafka","topic":"t","partition":1,"offset":7}}`),
			Attempts: 3, NextAttemptTime: next, FirstAttemptTime: now, LastError: "HTTP 500", LastStatusCode: 500,
		}); err != nil {
			t.Fatal(err)
		}
	}

	// Default: retrying and dead; paginated.
	var ids []string
	token := ""
	for {
		resp, err := b.subs.ListDeliveries(as(b.keyA), &outflowv1.ListDeliveriesRequest{SubscriptionId: id, PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range resp.GetDeliveries() {
			ids = append(ids, d.GetId())
			if d.GetEvent().GetSource().GetOffset() != 7 || d.GetLastStatusCode() != 500 {
				t.Errorf("delivery %s = %v", d.GetId(), d)
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if fmt.Sprint(ids) != "[dlv_0 dlv_1 dlv_2]" {
		t.Errorf("listed %v, want the retrying and dead ones", ids)
	}
	dead := b.restJSON(t, http.StatusOK, "GET", "/v1/subscriptions/"+id+"/deliveries?status=DEAD", b.keyA, nil)
	if n := len(dead["deliveries"].([]any)); n != 2 {
		t.Errorf("%d dead deliveries listed, want 2", n)
	}

	// Redeliver a dead one: it is due again.
	retried := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions/"+id+"/deliveries/dlv_1:retry", b.keyA, map[string]any{})
	if retried["status"] != "RETRYING" {
		t.Errorf("retried = %v", retried)
	}
	b.restJSON(t, http.StatusNotFound, "POST", "/v1/subscriptions/"+id+"/deliveries/dlv_nope:retry", b.keyA, map[string]any{})
	// Another tenant sees none of it.
	b.restJSON(t, http.StatusNotFound, "GET", "/v1/subscriptions/"+id+"/deliveries", b.keyB, nil)
}
