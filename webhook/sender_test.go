package webhook_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/outflow-dev/outflow/webhook"
)

// received is one request as a test receiver saw it.
type received struct {
	path   string
	header http.Header
	body   []byte
}

// receiver is a TLS test server on 127.0.0.1 that records requests and
// answers with handler.
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	requests []received
	conns    atomic.Int64
}

func newReceiver(t *testing.T, handler http.HandlerFunc) *receiver {
	t.Helper()
	r := &receiver{}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.requests = append(r.requests, received{path: req.URL.Path, header: req.Header.Clone(), body: body})
		r.mu.Unlock()
		handler(w, req)
	}))
	r.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			r.conns.Add(1)
		}
	}
	r.srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	r.srv.StartTLS()
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.requests...)
}

// tlsConfig trusts the receiver's certificate, issued for 127.0.0.1.
func (r *receiver) tlsConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(r.srv.Certificate())
	return &tls.Config{RootCAs: pool}
}

// newSender returns a Sender trusting rcv's certificate, allowing loopback
// unless cfg says otherwise, with a clock fixed at the returned time.
func newSender(t *testing.T, rcv *receiver, cfg webhook.SenderConfig) (*webhook.Sender, time.Time) {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	if cfg.Guard == nil {
		cfg.Guard = mustGuard(t, webhook.GuardConfig{AllowCIDRs: prefixes("127.0.0.0/8")})
	}
	if cfg.TLSConfig == nil && rcv != nil {
		cfg.TLSConfig = rcv.tlsConfig()
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return now }
	}
	s, err := webhook.NewSender(cfg)
	if err != nil {
		t.Fatalf("NewSender: %v", err)
	}
	t.Cleanup(s.CloseIdleConnections)
	return s, now
}

func testRequest(t *testing.T, url string, secrets ...string) webhook.Request {
	t.Helper()
	if len(secrets) == 0 {
		secrets = []string{encodedSecret(32, 0x42)}
	}
	req := webhook.Request{
		URL:     url,
		EventID: "evt_0123456789",
		Body:    []byte(`{"id":"evt_0123456789","type":"feature_view.output"}`),
		Attempt: 1,
		// Generous: the machine running the tests may be heavily loaded, and
		// the race detector slows TLS handshakes down.
		Timeout: 30 * time.Second,
	}
	for _, s := range secrets {
		req.Secrets = append(req.Secrets, mustSecret(t, s))
	}
	return req
}

func TestSendHeadersAndSignature(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	s, now := newSender(t, rcv, webhook.SenderConfig{UserAgent: "outflow/1.2.3"})
	current, previous := encodedSecret(32, 1), encodedSecret(24, 2)
	req := testRequest(t, rcv.srv.URL+"/hooks/cart", current, previous)
	req.Attempt = 3
	req.Headers = map[string]string{
		"Authorization":     "Bearer abc",
		"x-team":            "promo",
		"webhook-id":        "evil",
		"Content-Type":      "text/plain",
		"user-agent":        "spoof",
		"Outflow-Attempt":   "99",
		"Webhook-Signature": "v1,forged",
		"Host":              "elsewhere.example",
		"traceparent":       "00-stale",
	}
	// The trace context replaces a static header of the same name; a
	// reserved name in it is skipped like a static one.
	req.Trace = map[string]string{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"tracestate":  "vendor=1",
		"webhook-id":  "evil",
	}

	res := s.Send(t.Context(), req)
	if res.Outcome != webhook.OutcomeDelivered || res.Err != nil || res.StatusCode != http.StatusNoContent {
		t.Fatalf("Send = %+v, want delivered 204", res)
	}
	if res.Duration <= 0 {
		t.Errorf("Duration = %v, want > 0", res.Duration)
	}
	got := rcv.got()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(got))
	}
	h := got[0].header
	want := map[string]string{
		"Content-Type":      "application/json",
		"Webhook-Id":        "evt_0123456789",
		"Webhook-Timestamp": strconv.FormatInt(now.Unix(), 10),
		"User-Agent":        "outflow/1.2.3",
		"Outflow-Attempt":   "3",
		"Authorization":     "Bearer abc",
		"X-Team":            "promo",
		"Traceparent":       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"Tracestate":        "vendor=1",
	}
	for k, v := range want {
		if h.Get(k) != v || len(h.Values(k)) != 1 {
			t.Errorf("header %s = %q, want exactly %q", k, h.Values(k), v)
		}
	}
	if got[0].path != "/hooks/cart" || !bytes.Equal(got[0].body, req.Body) {
		t.Errorf("path, body = %q, %q", got[0].path, got[0].body)
	}
	// Both the current and the previous secret verify, with the reference
	// library a receiver would use.
	for _, secret := range []string{current, previous} {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(got[0].body, h); err != nil {
			t.Errorf("reference Verify with one of the secrets: %v", err)
		}
	}
}

func TestSendOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		status         int
		header         map[string]string
		body           string
		want           webhook.Outcome
		wantRetryAfter time.Duration
		wantCause      error
	}{
		{name: "200", status: 200, want: webhook.OutcomeDelivered},
		{name: "202", status: 202, want: webhook.OutcomeDelivered},
		{name: "299", status: 299, want: webhook.OutcomeDelivered},
		{name: "500", status: 500, body: "boom", want: webhook.OutcomeRetry},
		{name: "502", status: 502, want: webhook.OutcomeRetry},
		{name: "400", status: 400, want: webhook.OutcomeRetry},
		{name: "401", status: 401, want: webhook.OutcomeRetry},
		{name: "404", status: 404, want: webhook.OutcomeRetry},
		{name: "410 disables", status: 410, want: webhook.OutcomeGone},
		{name: "301 not followed", status: 301, header: map[string]string{"Location": "/elsewhere"}, want: webhook.OutcomeRetry, wantCause: webhook.ErrRedirect},
		{name: "307 not followed", status: 307, header: map[string]string{"Location": "/elsewhere"}, want: webhook.OutcomeRetry, wantCause: webhook.ErrRedirect},
		{name: "304", status: 304, want: webhook.OutcomeRetry, wantCause: webhook.ErrRedirect},
		{name: "429 seconds", status: 429, header: map[string]string{"Retry-After": "120"}, want: webhook.OutcomeRetry, wantRetryAfter: 2 * time.Minute},
		{name: "503 seconds", status: 503, header: map[string]string{"Retry-After": "7"}, want: webhook.OutcomeRetry, wantRetryAfter: 7 * time.Second},
		{name: "503 date", status: 503, header: map[string]string{"Retry-After": "+90s"}, want: webhook.OutcomeRetry, wantRetryAfter: 90 * time.Second},
		{name: "429 past date", status: 429, header: map[string]string{"Retry-After": "-90s"}, want: webhook.OutcomeRetry, wantRetryAfter: 0},
		{name: "429 capped", status: 429, header: map[string]string{"Retry-After": "86400"}, want: webhook.OutcomeRetry, wantRetryAfter: webhook.MaxRetryAfter},
		{name: "429 malformed", status: 429, header: map[string]string{"Retry-After": "soon"}, want: webhook.OutcomeRetry, wantRetryAfter: 0},
		{name: "500 Retry-After ignored", status: 500, header: map[string]string{"Retry-After": "30"}, want: webhook.OutcomeRetry, wantRetryAfter: 0},
		{name: "200 Retry-After ignored", status: 200, header: map[string]string{"Retry-After": "30"}, want: webhook.OutcomeDelivered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var now time.Time
			rcv := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
				for k, v := range tt.header {
					if k == "Retry-After" && (v[0] == '+' || v[0] == '-') {
						d, _ := time.ParseDuration(v)
						v = now.Add(d).UTC().Format(http.TimeFormat)
					}
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			var s *webhook.Sender
			s, now = newSender(t, rcv, webhook.SenderConfig{})
			res := s.Send(t.Context(), testRequest(t, rcv.srv.URL+"/hook"))

			if res.Outcome != tt.want || res.StatusCode != tt.status || res.RetryAfter != tt.wantRetryAfter {
				t.Fatalf("Send = {outcome %v, status %d, retry-after %v, err %v}, want {%v, %d, %v}",
					res.Outcome, res.StatusCode, res.RetryAfter, res.Err, tt.want, tt.status, tt.wantRetryAfter)
			}
			if paths := rcv.got(); len(paths) != 1 || paths[0].path != "/hook" {
				t.Fatalf("receiver saw %d requests (redirect followed?)", len(paths))
			}
			if tt.want == webhook.OutcomeDelivered {
				if res.Err != nil {
					t.Fatalf("delivered with error %v", res.Err)
				}
				return
			}
			var de *webhook.DeliveryError
			if !errors.As(res.Err, &de) {
				t.Fatalf("Err = %v, want *DeliveryError", res.Err)
			}
			if de.StatusCode != tt.status || de.Retriable != (tt.want == webhook.OutcomeRetry) || de.Body != tt.body {
				t.Fatalf("DeliveryError = %+v", de)
			}
			if tt.wantCause != nil && !errors.Is(res.Err, tt.wantCause) {
				t.Fatalf("Err = %v, want cause %v", res.Err, tt.wantCause)
			}
		})
	}
}

func TestSendBlocked(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {})

	t.Run("loopback not allow-listed", func(t *testing.T) {
		t.Parallel()
		s, _ := newSender(t, rcv, webhook.SenderConfig{Guard: mustGuard(t, webhook.GuardConfig{})})
		res := s.Send(t.Context(), testRequest(t, rcv.srv.URL+"/hook"))
		var be *webhook.BlockedError
		if res.Outcome != webhook.OutcomeBlocked || !errors.As(res.Err, &be) || be.Reason != "loopback" {
			t.Fatalf("Send = %+v, want blocked with *BlockedError (loopback)", res)
		}
		var de *webhook.DeliveryError
		if !errors.As(res.Err, &de) || !de.Retriable || de.StatusCode != 0 {
			t.Fatalf("Err = %#v, want a retriable DeliveryError", res.Err)
		}
	})
	t.Run("default guard from zero config", func(t *testing.T) {
		t.Parallel()
		s, err := webhook.NewSender(webhook.SenderConfig{TLSConfig: rcv.tlsConfig()})
		if err != nil {
			t.Fatal(err)
		}
		defer s.CloseIdleConnections()
		res := s.Send(t.Context(), testRequest(t, rcv.srv.URL))
		if res.Outcome != webhook.OutcomeBlocked || !errors.Is(res.Err, webhook.ErrBlocked) {
			t.Fatalf("Send = %+v, want blocked", res)
		}
	})
	t.Run("http without AllowInsecure", func(t *testing.T) {
		t.Parallel()
		s, _ := newSender(t, rcv, webhook.SenderConfig{})
		res := s.Send(t.Context(), testRequest(t, strings.Replace(rcv.srv.URL, "https:", "http:", 1)))
		if res.Outcome != webhook.OutcomeBlocked || !errors.Is(res.Err, webhook.ErrInvalidURL) {
			t.Fatalf("Send = %+v, want blocked by ErrInvalidURL", res)
		}
	})
	// Parallel subtests finish before the parent's cleanup runs.
	t.Cleanup(func() {
		if n := rcv.conns.Load(); n != 0 {
			t.Errorf("blocked sends opened %d connections to the receiver", n)
		}
	})
}

func TestSendInsecureHTTP(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(srv.Close)
	guard := mustGuard(t, webhook.GuardConfig{AllowInsecure: true, AllowCIDRs: prefixes("127.0.0.0/8")})
	s, _ := newSender(t, nil, webhook.SenderConfig{Guard: guard})
	if res := s.Send(t.Context(), testRequest(t, srv.URL)); res.Outcome != webhook.OutcomeDelivered {
		t.Fatalf("Send over http with AllowInsecure = %+v", res)
	}
}

func TestSendTimeout(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answer only once the client has gone
	})
	s, _ := newSender(t, rcv, webhook.SenderConfig{})
	req := testRequest(t, rcv.srv.URL)
	req.Timeout = 100 * time.Millisecond
	res := s.Send(t.Context(), req)
	if res.Outcome != webhook.OutcomeRetry || res.StatusCode != 0 {
		t.Fatalf("Send = %+v, want retry without status", res)
	}
	if !errors.Is(res.Err, webhook.ErrTimeout) || !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Fatalf("Err = %v, want ErrTimeout and DeadlineExceeded", res.Err)
	}
}

func TestSendDefaultTimeout(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	s, _ := newSender(t, rcv, webhook.SenderConfig{DefaultTimeout: 100 * time.Millisecond})
	req := testRequest(t, rcv.srv.URL)
	req.Timeout = 0
	if res := s.Send(t.Context(), req); !errors.Is(res.Err, webhook.ErrTimeout) {
		t.Fatalf("Send with DefaultTimeout = %+v, want timeout", res)
	}
}

func TestSendCancelled(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {})
	s, _ := newSender(t, rcv, webhook.SenderConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res := s.Send(ctx, testRequest(t, rcv.srv.URL))
	if res.Outcome != webhook.OutcomeRetry || !errors.Is(res.Err, context.Canceled) || errors.Is(res.Err, webhook.ErrTimeout) {
		t.Fatalf("Send with cancelled context = %+v", res)
	}
}

func TestSendConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	s, _ := newSender(t, nil, webhook.SenderConfig{})
	res := s.Send(t.Context(), testRequest(t, "https://"+addr+"/hook?token=s3cr3t-passw0rd"))
	var de *webhook.DeliveryError
	if res.Outcome != webhook.OutcomeRetry || !errors.As(res.Err, &de) || !de.Retriable {
		t.Fatalf("Send to a closed port = %+v, want a retriable failure", res)
	}
	if strings.Contains(res.Err.Error(), "s3cr3t") || strings.Contains(res.Err.Error(), "/hook") {
		t.Fatalf("Err %q repeats the URL path or query", res.Err)
	}
}

func TestSendRequestErrors(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {})
	s, _ := newSender(t, rcv, webhook.SenderConfig{})
	tests := []struct {
		name   string
		modify func(*webhook.Request)
		want   error
	}{
		{"no secret", func(r *webhook.Request) { r.Secrets = nil }, webhook.ErrNoSecret},
		{"only zero secrets", func(r *webhook.Request) { r.Secrets = []webhook.Secret{{}} }, webhook.ErrNoSecret},
		{"bad header name", func(r *webhook.Request) { r.Headers = map[string]string{"bad name": "v"} }, webhook.ErrInvalidHeader},
		{"header value with newline", func(r *webhook.Request) { r.Headers = map[string]string{"X-A": "a\r\nX-B: b"} }, webhook.ErrInvalidHeader},
		{"event id with newline", func(r *webhook.Request) { r.EventID = "evt\n1" }, webhook.ErrInvalidHeader},
		{"empty event id", func(r *webhook.Request) { r.EventID = "" }, webhook.ErrInvalidHeader},
		{"too many headers", func(r *webhook.Request) {
			r.Headers = map[string]string{}
			for i := range webhook.MaxHeaders + 1 {
				r.Headers["X-H"+strconv.Itoa(i)] = "v"
			}
		}, webhook.ErrInvalidHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := testRequest(t, rcv.srv.URL)
			tt.modify(&req)
			res := s.Send(t.Context(), req)
			if res.Outcome != webhook.OutcomeRetry || !errors.Is(res.Err, tt.want) {
				t.Fatalf("Send = %+v, want retry with %v", res, tt.want)
			}
		})
	}
	t.Cleanup(func() {
		if n := len(rcv.got()); n != 0 {
			t.Errorf("invalid requests reached the receiver %d times", n)
		}
	})
}

func TestSendErrorBodyExcerpt(t *testing.T) {
	t.Parallel()
	const token = "Bearer tok-9f8e7d6c5b4a"
	secret := encodedSecret(32, 0x33)
	// The receiver echoes the secret and the authorization header, then
	// pads well past the excerpt limit.
	rcv := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "bad auth "+r.Header.Get("Authorization")+" with "+secret+" and "+strings.TrimPrefix(secret, "whsec_")+"\n")
		// A value straddling the excerpt limit must not leave a prefix.
		_, _ = io.WriteString(w, strings.Repeat("é", (webhook.MaxErrorBodyBytes-150)/2)+token)
		_, _ = io.WriteString(w, strings.Repeat("x", 20<<10))
	})
	s, _ := newSender(t, rcv, webhook.SenderConfig{})
	req := testRequest(t, rcv.srv.URL, secret)
	req.Headers = map[string]string{"Authorization": token}
	res := s.Send(t.Context(), req)
	var de *webhook.DeliveryError
	if !errors.As(res.Err, &de) {
		t.Fatalf("Err = %v", res.Err)
	}
	if len(de.Body) > webhook.MaxErrorBodyBytes || !strings.HasPrefix(de.Body, "bad auth [redacted] with [redacted] and [redacted]") {
		t.Fatalf("Body (%d bytes) = %q", len(de.Body), de.Body)
	}
	for _, leak := range []string{"tok-9f8e", strings.TrimPrefix(secret, "whsec_")[:10]} {
		if strings.Contains(res.Err.Error(), leak) {
			t.Fatalf("Err leaks %q: %q", leak, res.Err)
		}
	}
}

func TestSendLargeBodyDelivered(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		chunk := bytes.Repeat([]byte("z"), 32<<10)
		for range 64 { // 2 MiB, far past MaxResponseBytes
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	s, _ := newSender(t, rcv, webhook.SenderConfig{MaxResponseBytes: 1 << 10})
	if res := s.Send(t.Context(), testRequest(t, rcv.srv.URL)); res.Outcome != webhook.OutcomeDelivered {
		t.Fatalf("Send = %+v, want delivered", res)
	}
}

func TestSendReusesConnections(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, strings.Repeat("e", 4<<10))
	})
	s, _ := newSender(t, rcv, webhook.SenderConfig{})
	for i := range 3 {
		if res := s.Send(t.Context(), testRequest(t, rcv.srv.URL)); res.StatusCode != 500 {
			t.Fatalf("attempt %d: %+v", i, res)
		}
	}
	if n := rcv.conns.Load(); n != 1 {
		t.Fatalf("3 sequential attempts used %d connections, want 1", n)
	}
}

func TestNewSenderValidates(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]webhook.SenderConfig{
		"negative timeout":    {DefaultTimeout: -1},
		"negative body bound": {MaxResponseBytes: -1},
		"bad user agent":      {UserAgent: "outflow\n"},
	} {
		if _, err := webhook.NewSender(cfg); err == nil {
			t.Errorf("%s: NewSender accepted %+v", name, cfg)
		}
	}
}

func TestOutcomeString(t *testing.T) {
	t.Parallel()
	for o, want := range map[webhook.Outcome]string{
		webhook.OutcomeRetry:     "retry",
		webhook.OutcomeDelivered: "delivered",
		webhook.OutcomeGone:      "gone",
		webhook.OutcomeBlocked:   "blocked",
		webhook.Outcome(42):      "outcome(42)",
	} {
		if o.String() != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", int(o), o.String(), want)
		}
	}
	var zero webhook.Result
	if zero.Outcome != webhook.OutcomeRetry {
		t.Error("the zero Outcome is not OutcomeRetry")
	}
}

// TestDeliveryErrorIsNoDNSOracle: the error a tenant sees (last_error, the
// :test answer) never carries the resolver's address or what the webhook
// host resolved to; Detail, for the operator's logs, keeps them.
func TestDeliveryErrorIsNoDNSOracle(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	_ = ln.Close() // nothing listens there now
	address := regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b|\[?::1\]?|:53\b`)
	for _, tt := range []struct {
		name       string
		guard      webhook.GuardConfig
		url        string
		want       string // in Error()
		wantDetail string // in Detail()
	}{
		{"resolves to a blocked address", webhook.GuardConfig{}, "https://localhost:" + port + "/hook",
			"may not reach", "127.0.0.1"},
		{"connection refused after resolving", webhook.GuardConfig{AllowCIDRs: prefixes("127.0.0.0/8", "::1/128")}, "https://localhost:" + port + "/hook",
			"connection refused", "127.0.0.1"},
		{"unknown host", webhook.GuardConfig{}, "https://outflow-no-such-host.invalid/hook",
			"DNS lookup of the webhook host failed", "outflow-no-such-host.invalid"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := newSender(t, nil, webhook.SenderConfig{Guard: mustGuard(t, tt.guard)})
			res := s.Send(t.Context(), testRequest(t, tt.url))
			var de *webhook.DeliveryError
			if !errors.As(res.Err, &de) {
				t.Fatalf("Send = %+v, want a DeliveryError", res)
			}
			if got := res.Err.Error(); !strings.Contains(got, tt.want) || address.MatchString(got) {
				t.Errorf("Error() = %q, want %q and no address", got, tt.want)
			}
			if got := de.Detail(); !strings.Contains(got, tt.wantDetail) {
				t.Errorf("Detail() = %q, want %q", got, tt.wantDetail)
			}
		})
	}
}
