package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
)

// TestTenantRequestRateLimit: a tenant's calls beyond its rate get
// RESOURCE_EXHAUSTED / 429 with Retry-After (and RetryInfo over gRPC), and
// one tenant's flood does not spend another's budget.
func TestTenantRequestRateLimit(t *testing.T) {
	t.Parallel()
	// A token every 10s: the REST check after the loop stays refused
	// however slowly the machine runs the test.
	const perSecond, burst, calls = 0.1, 5, 40
	b := setup(t, server.Config{RequestsPerSecond: perSecond, RequestBurst: burst})

	start := time.Now()
	var ok, refused int
	for range calls {
		var md metadata.MD
		_, err := b.subs.ListSubscriptions(as(b.keyA), &outflowv1.ListSubscriptionsRequest{}, grpc.Header(&md))
		switch status.Code(err) {
		case codes.OK:
			ok++
		case codes.ResourceExhausted:
			refused++
			if v := md.Get("retry-after"); len(v) != 1 || v[0] == "" || v[0] == "0" {
				t.Errorf("retry-after metadata %v, want whole seconds ≥ 1", v)
			}
			if !hasRetryInfo(err) {
				t.Errorf("refusal %v has no RetryInfo", err)
			}
		default:
			t.Fatalf("call: %v", err)
		}
	}
	if most := burst + int(time.Since(start).Seconds()*perSecond) + 1; ok > most || refused == 0 {
		t.Errorf("%d calls admitted and %d refused in %s; want at most %d admitted", ok, refused, time.Since(start), most)
	}

	// The same over REST: 429 with Retry-After.
	code, body, header := restWithHeader(t, b, "GET", "/v1/subscriptions", b.keyA)
	if code != http.StatusTooManyRequests {
		t.Errorf("REST list after the burst = %d %s, want 429", code, body)
	} else if secs, err := strconv.Atoi(header.Get("Retry-After")); err != nil || secs < 1 {
		t.Errorf("Retry-After %q, want whole seconds ≥ 1", header.Get("Retry-After"))
	}

	// Tenant B has its own budget.
	if _, err := b.subs.ListSubscriptions(as(b.keyB), &outflowv1.ListSubscriptionsRequest{}); err != nil {
		t.Errorf("tenant B after tenant A's flood: %v", err)
	}
}

func hasRetryInfo(err error) bool {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() >= time.Second {
			return true
		}
	}
	return false
}

func restWithHeader(t *testing.T, b *bundle, method, path, key string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, b.httpURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf [512]byte
	n, _ := resp.Body.Read(buf[:])
	return resp.StatusCode, string(buf[:n]), resp.Header
}

// TestTestEventsRespectRateAndInFlight sends 10,000 SendTestEvent calls,
// 64 at a time, for a subscription whose webhook allows 20 events per
// second and 2 in flight, to a receiver that takes 20ms per event. The
// receiver must never see more than 2 at once, nor more events than the
// bucket allows over the run; every call not admitted is RESOURCE_EXHAUSTED
// with Retry-After, and the receiver saw exactly the admitted ones. Before
// test events were limited, 200 such calls put 199 POSTs on a receiver
// configured for 1 per second (issue 11, defect 3).
func TestTestEventsRespectRateAndInFlight(t *testing.T) {
	t.Parallel()
	const (
		calls, workers   = 10_000, 64
		rateLimit, burst = 20, 10
		maxInFlight      = 2
	)
	b := setup(t, server.Config{TestEventsPerSecond: 100, TestEventBurst: burst, AllowInsecureURLs: true, AllowCIDRs: mustPrefixes(t, "127.0.0.0/8")})
	var seen, inFlight, peak atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		n := inFlight.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		// Hold the request so that calls overlap at the receiver.
		select {
		case <-time.After(20 * time.Millisecond):
		case <-r.Context().Done():
		}
		inFlight.Add(-1)
	}))
	defer receiver.Close()
	sub := webhookWith(func(w map[string]any) {
		w["url"] = receiver.URL + "/hook"
		w["rate_limit"] = rateLimit
		w["max_in_flight"] = maxInFlight
	})
	id := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, sub)["id"].(string)

	ctx, cancel := context.WithTimeout(as(b.keyA), 5*time.Minute)
	defer cancel()
	start := time.Now()
	var admitted, refused atomic.Int64
	next := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				var md metadata.MD
				resp, err := b.subs.SendTestEvent(ctx, &outflowv1.SendTestEventRequest{Id: id}, grpc.Header(&md))
				switch status.Code(err) {
				case codes.OK:
					admitted.Add(1)
					if resp.GetStatusCode() != http.StatusOK {
						t.Errorf("admitted test event answered %d %q", resp.GetStatusCode(), resp.GetError())
					}
				case codes.ResourceExhausted:
					refused.Add(1)
					if len(md.Get("retry-after")) != 1 {
						t.Errorf("refusal without retry-after: %v", err)
					}
				default:
					t.Errorf("SendTestEvent: %v", err)
				}
			}
		}()
	}
	for range calls {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)

	most := int64(burst + elapsed.Seconds()*rateLimit + 1)
	t.Logf("%d calls in %s: %d admitted, %d refused; receiver saw %d, at most %d at once (allowed: %d, %d)",
		calls, elapsed.Round(time.Millisecond), admitted.Load(), refused.Load(), seen.Load(), peak.Load(), most, maxInFlight)
	if admitted.Load()+refused.Load() != calls {
		t.Errorf("%d admitted + %d refused != %d calls", admitted.Load(), refused.Load(), calls)
	}
	if seen.Load() != admitted.Load() {
		t.Errorf("receiver saw %d events, the API admitted %d", seen.Load(), admitted.Load())
	}
	if seen.Load() > most {
		t.Errorf("receiver saw %d events in %s, more than the %d the rate allows", seen.Load(), elapsed, most)
	}
	if peak.Load() > maxInFlight {
		t.Errorf("receiver saw %d events at once, more than max_in_flight %d", peak.Load(), maxInFlight)
	}
	if seen.Load() == 0 {
		t.Error("no test event was admitted")
	}
}
