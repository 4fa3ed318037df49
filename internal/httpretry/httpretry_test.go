package httpretry

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// answers serves the given statuses in turn (the last one repeats), each with its Retry-After
// header when set, and counts the requests.
type answers struct {
	statuses    []int
	retryAfters []string
	n           atomic.Int64
}

func (a *answers) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	i := int(a.n.Add(1)) - 1
	i = min(i, len(a.statuses)-1)
	if i < len(a.retryAfters) && a.retryAfters[i] != "" {
		w.Header().Set("Retry-After", a.retryAfters[i])
	}
	w.WriteHeader(a.statuses[i])
	_, _ = io.WriteString(w, `{"error":"x"}`)
}

func newClient(t *testing.T) *retryablehttp.Client {
	t.Helper()
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	return New(Config{HTTPClient: &http.Client{Transport: transport}, Component: "test"})
}

func post(t *testing.T, ctx context.Context, c *retryablehttp.Client, url string) (*http.Response, error) {
	t.Helper()
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, url, []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if resp != nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		statuses    []int
		retryAfters []string
		wantStatus  int
		wantCalls   int64
		minElapsed  time.Duration
	}{
		{"503 with Retry-After is retried after it", []int{503, 200}, []string{"1"}, 200, 2, time.Second},
		{"429 is retried", []int{429, 200}, nil, 200, 2, 0},
		{"500, 502, 504 are retried", []int{500, 502, 504, 200}, nil, 504, 3, 0},
		{"retries run out: the last answer is returned", []int{503}, nil, 503, 3, 0},
		{"400 is not retried", []int{400, 200}, nil, 400, 1, 0},
		{"401 is not retried", []int{401, 200}, nil, 401, 1, 0},
		{"403 is not retried", []int{403, 200}, nil, 403, 1, 0},
		{"404 is not retried", []int{404, 200}, nil, 404, 1, 0},
		{"501 is not retried", []int{501, 200}, nil, 501, 1, 0},
		{"a Retry-After beyond 1s is left to the caller", []int{503, 200}, []string{"5"}, 503, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := &answers{statuses: tt.statuses, retryAfters: tt.retryAfters}
			srv := httptest.NewServer(a)
			t.Cleanup(srv.Close)
			start := time.Now()
			resp, err := post(t, t.Context(), newClient(t), srv.URL)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if got := a.n.Load(); got != tt.wantCalls {
				t.Errorf("%d requests, want %d", got, tt.wantCalls)
			}
			if elapsed := time.Since(start); elapsed < tt.minElapsed {
				t.Errorf("answered after %s; the Retry-After of %s was not honoured", elapsed, tt.minElapsed)
			}
		})
	}
}

func TestRetryAfterPastTheDeadlineIsNotWaitedFor(t *testing.T) {
	t.Parallel()
	a := &answers{statuses: []int{503, 200}, retryAfters: []string{"1"}}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	resp, err := post(t, ctx, newClient(t), srv.URL)
	if err != nil || resp.StatusCode != 503 || a.n.Load() != 1 {
		t.Fatalf("got %v, %v after %d requests; want the 503 at once", resp, err, a.n.Load())
	}
}

func TestConnectionErrorsAreRetried(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close() // no answer: a broken connection
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	_, err = post(t, t.Context(), newClient(t), "http://"+l.Addr().String())
	if err == nil {
		t.Fatal("no error from a server that hangs up")
	}
	if got := accepted.Load(); got != 1+DefaultRetryMax {
		t.Errorf("%d connections, want %d (one try and %d retries)", got, 1+DefaultRetryMax, DefaultRetryMax)
	}
}

func TestNoRetryOnceTheContextIsDone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	a := &answers{statuses: []int{503}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cancel()
		a.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	_, _ = post(t, ctx, newClient(t), srv.URL)
	if got := a.n.Load(); got != 1 {
		t.Errorf("%d requests after the caller gave up, want 1", got)
	}
}

func TestNoRetriesConfig(t *testing.T) {
	t.Parallel()
	a := &answers{statuses: []int{503, 200}}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	c := New(Config{HTTPClient: &http.Client{Transport: transport}, RetryMax: NoRetries})
	resp, err := post(t, t.Context(), c, srv.URL)
	if err != nil || resp.StatusCode != 503 || a.n.Load() != 1 {
		t.Fatalf("got %v, %v after %d requests; want one request", resp, err, a.n.Load())
	}
}

func TestBackoffStaysUnderTheCap(t *testing.T) {
	t.Parallel()
	p := &policy{maxRetryAfter: time.Second}
	for attempt := range 64 {
		for range 50 {
			d := p.backoff(DefaultWaitMin, DefaultWaitMax, attempt, nil)
			b := min(DefaultWaitMax, DefaultWaitMin<<min(attempt, 20))
			if d < b/2 || d > b {
				t.Fatalf("attempt %d: delay %s outside [%s, %s]", attempt, d, b/2, b)
			}
		}
	}
}

// TestFailedCallsKeepWarmConnections: go-retryablehttp closes its client's idle connections
// whenever a call fails; New must keep that from dropping the pool, so a call that ran out of
// retries and the calls after it share one connection.
func TestFailedCallsKeepWarmConnections(t *testing.T) {
	t.Parallel()
	var conns atomic.Int64
	a := &answers{statuses: []int{503, 503, 503, 200}}
	srv := httptest.NewUnstartedServer(a)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := newClient(t)
	if resp, err := post(t, t.Context(), c, srv.URL); err != nil || resp.StatusCode != 503 {
		t.Fatalf("first call: %v, %v; want the 503 after the retries", resp, err)
	}
	if resp, err := post(t, t.Context(), c, srv.URL); err != nil || resp.StatusCode != 200 {
		t.Fatalf("second call: %v, %v", resp, err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 4 sequential requests, want 1: the failed call dropped the pool", n)
	}
}
