package webhook

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestSenderDialsThroughGuard proves the Sender's HTTP client enforces the
// guard at connect time, not only through CheckURL: it skips CheckURL and
// sends straight to a name that DNS (/etc/hosts) resolves to loopback, the
// shape of a DNS-rebinding attack.
func TestSenderDialsThroughGuard(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	s, err := NewSender(SenderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.CloseIdleConnections)
	if s.transport.Proxy != nil {
		t.Fatal("the transport uses a proxy; the guard would vet the proxy instead of the receiver")
	}

	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://localhost:"+port+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Do(req)
	if err == nil {
		_ = resp.Body.Close()
	}
	var be *BlockedError
	if !errors.As(err, &be) || be.Reason != "loopback" {
		t.Fatalf("Do = %v, want a *BlockedError for loopback", err)
	}
	outcome, derr := classifyTransportError(t.Context(), t.Context(), err)
	if outcome != OutcomeBlocked || !derr.Retriable {
		t.Fatalf("classified as %v, %+v; want blocked and retriable", outcome, derr)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the receiver was reached %d times", n)
	}
}
