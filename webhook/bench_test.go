package webhook_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/webhook"
)

// BenchmarkSend is one delivery through Sender.Send to a loopback receiver
// answering 204 over a kept-alive plain HTTP connection: signing, the
// request's headers, the round trip. Allocations per op include net/http's
// own (client and, in this process, server).
func BenchmarkSend(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer srv.Close()
	s, err := webhook.NewSender(webhook.SenderConfig{
		Guard: mustGuard(b, webhook.GuardConfig{AllowCIDRs: prefixes("127.0.0.0/8"), AllowInsecure: true}),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.CloseIdleConnections()
	req := webhook.Request{
		URL: srv.URL + "/hooks/cart", EventID: "evt_0123456789abcdef", Attempt: 1, Timeout: 10 * time.Second,
		Body:    []byte(`{"id":"evt_0123456789abcdef","type":"feature_view.output","subscription_id":"sub_1","record":{"entity_keys":{"user_id":"u1"}}}`),
		Secrets: []webhook.Secret{mustSecret(b, encodedSecret(32, 0x42))},
		Headers: map[string]string{"Authorization": "Bearer abc"},
	}
	b.ReportAllocs()
	for b.Loop() {
		if res := s.Send(b.Context(), req); res.Outcome != webhook.OutcomeDelivered {
			b.Fatalf("Send = %+v", res)
		}
	}
}
