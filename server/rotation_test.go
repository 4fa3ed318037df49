package server_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/outflow-dev/outflow/server"
)

// TestTwoRotationsKeepTheOriginalSecret: after two rotations in a row, a
// receiver still holding the original secret (or the middle one, or the
// newest) verifies the next request: each rotated-out secret keeps its own
// overlap. The request carries three signatures.
func TestTwoRotationsKeepTheOriginalSecret(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{AllowInsecureURLs: true, AllowCIDRs: mustPrefixes(t, "127.0.0.0/8")})
	var (
		mu      sync.Mutex
		body    []byte
		headers http.Header
	)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		body, _ = io.ReadAll(r.Body)
		headers = r.Header.Clone()
	}))
	defer receiver.Close()
	created := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA,
		webhookWith(func(w map[string]any) { w["url"] = receiver.URL + "/hook" }))
	id := created["id"].(string)
	secrets := []string{created["secret"].(string)}
	for range 2 {
		rotated := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions/"+id+":rotateSecret", b.keyA, map[string]any{})
		secrets = append(secrets, rotated["secret"].(string))
	}
	b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions/"+id+":test", b.keyA, map[string]any{})
	mu.Lock()
	defer mu.Unlock()
	if n := len(strings.Fields(headers.Get("Webhook-Signature"))); n != 3 {
		t.Errorf("webhook-signature has %d signatures, want 3: %q", n, headers.Get("Webhook-Signature"))
	}
	for i, secret := range secrets {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err == nil {
			err = wh.Verify(body, headers)
		}
		if err != nil {
			t.Errorf("a receiver with secret %d of 3 cannot verify: %v", i+1, err)
		}
	}
}
