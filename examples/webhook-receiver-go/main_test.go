package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/outflow-dev/outflow/webhook"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Two fixed secrets: what the receiver holds, and another subscription's.
const (
	testSecret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	otherSecret = "whsec_b3RoZXItc3Vic2NyaXB0aW9uLXNlY3JldC0xMjM0"
)

const testBody = `{"id":"evt_1","type":"feature_view.output","subscription_id":"sub_1",` +
	`"created_at":"2026-11-24T10:00:00.123Z","record":{"version":"1","feature_view_name":"user_items_added_to_cart",` +
	`"feature_timestamp":"2026-11-24T10:00:00Z","entity_keys":{"user_id":"u1"}},` +
	`"feature_vector":{"features":{"user_stats.lifetime_value":1234.5},"consistent":true,"attempts":2}}`

// recorder is a Process that remembers what it saw.
type recorder struct {
	mu     sync.Mutex
	events []Event
	fail   error
}

func (r *recorder) process(_ context.Context, ev Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.events = append(r.events, ev)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func newTestHandler(t *testing.T, cfg Config) (*Handler, *recorder) {
	t.Helper()
	rec := &recorder{}
	if cfg.Secret == "" {
		cfg.Secret = testSecret
	}
	cfg.Process = rec.process
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h, rec
}

// signed builds a request signed the way the gateway signs (webhook.Sign),
// with each of secrets, at ts.
func signed(t *testing.T, id string, ts time.Time, body string, secrets ...string) *http.Request {
	t.Helper()
	var keys []webhook.Secret
	for _, s := range secrets {
		k, err := webhook.ParseSecret(s)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(body))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("webhook-signature", webhook.Sign(keys, id, ts, []byte(body)))
	req.Header.Set("outflow-attempt", "1")
	return req
}

func TestHandler(t *testing.T) {
	t.Parallel()
	now := time.Now()
	tests := []struct {
		name        string
		maxBody     int64
		req         func(t *testing.T) *http.Request
		wantStatus  int
		wantProcess int
	}{
		{
			name:       "valid",
			req:        func(t *testing.T) *http.Request { return signed(t, "evt_1", now, testBody, testSecret) },
			wantStatus: http.StatusOK, wantProcess: 1,
		},
		{
			name: "rotated secret: one of two signatures matches",
			req: func(t *testing.T) *http.Request {
				return signed(t, "evt_1", now, testBody, otherSecret, testSecret)
			},
			wantStatus: http.StatusOK, wantProcess: 1,
		},
		{
			name: "tampered body",
			req: func(t *testing.T) *http.Request {
				r := signed(t, "evt_1", now, testBody, testSecret)
				tampered := strings.Replace(testBody, "1234.5", "9999.5", 1)
				r.Body, r.ContentLength = io.NopCloser(strings.NewReader(tampered)), int64(len(tampered))
				return r
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "tampered id",
			req: func(t *testing.T) *http.Request {
				r := signed(t, "evt_1", now, testBody, testSecret)
				r.Header.Set("webhook-id", "evt_2")
				return r
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name:       "wrong secret",
			req:        func(t *testing.T) *http.Request { return signed(t, "evt_1", now, testBody, otherSecret) },
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "stale timestamp",
			req: func(t *testing.T) *http.Request {
				return signed(t, "evt_1", now.Add(-10*time.Minute), testBody, testSecret)
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "timestamp in the future",
			req: func(t *testing.T) *http.Request {
				return signed(t, "evt_1", now.Add(10*time.Minute), testBody, testSecret)
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "no signature",
			req: func(t *testing.T) *http.Request {
				r := signed(t, "evt_1", now, testBody, testSecret)
				r.Header.Del("webhook-signature")
				return r
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name:       "oversize body, declared length",
			maxBody:    64,
			req:        func(t *testing.T) *http.Request { return signed(t, "evt_1", now, testBody, testSecret) },
			wantStatus: http.StatusRequestEntityTooLarge,
		},
		{
			name:    "oversize body, chunked",
			maxBody: 64,
			req: func(t *testing.T) *http.Request {
				r := signed(t, "evt_1", now, testBody, testSecret)
				r.ContentLength = -1
				return r
			},
			wantStatus: http.StatusRequestEntityTooLarge,
		},
		{
			name:       "signed but not an event",
			req:        func(t *testing.T) *http.Request { return signed(t, "evt_1", now, "not json", testSecret) },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "GET",
			req:        func(*testing.T) *http.Request { return httptest.NewRequest(http.MethodGet, "/webhook", nil) },
			wantStatus: http.StatusMethodNotAllowed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, rec := newTestHandler(t, Config{MaxBodyBytes: tt.maxBody})
			w := httptest.NewRecorder()
			h.ServeHTTP(w, tt.req(t))
			if w.Code != tt.wantStatus {
				t.Errorf("status = %d (%q), want %d", w.Code, w.Body.String(), tt.wantStatus)
			}
			if got := rec.count(); got != tt.wantProcess {
				t.Errorf("processed %d events, want %d", got, tt.wantProcess)
			}
			if strings.Contains(w.Body.String(), "whsec_") {
				t.Errorf("response leaks a secret: %q", w.Body.String())
			}
		})
	}
}

func TestHandlerDecodesEvent(t *testing.T) {
	t.Parallel()
	h, rec := newTestHandler(t, Config{})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, signed(t, "evt_1", time.Now(), testBody, testSecret))
	if w.Code != http.StatusOK || rec.count() != 1 {
		t.Fatalf("status %d, %d events", w.Code, rec.count())
	}
	ev := rec.events[0]
	if ev.ID != "evt_1" || ev.SubscriptionID != "sub_1" || ev.Record.FeatureViewName != "user_items_added_to_cart" ||
		ev.Record.EntityKeys["user_id"] != "u1" || ev.FeatureVector == nil || ev.FeatureVector.Consistent == nil ||
		!*ev.FeatureVector.Consistent || ev.Attempt != "1" || string(ev.Body) != testBody {
		t.Errorf("decoded event = %+v", ev)
	}
	var out bytes.Buffer
	if err := printEvent(&out)(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	want := `evt_1 feature_view.output subscription=sub_1 feature_view=user_items_added_to_cart entity_keys={"user_id":"u1"} consistent=true attempt=1` + "\n"
	if out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
}

func TestHandlerDeduplicates(t *testing.T) {
	t.Parallel()
	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	h, rec := newTestHandler(t, Config{DedupTTL: time.Hour, Now: now})
	send := func(id string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, signed(t, id, time.Now(), testBody, testSecret))
		return w.Code
	}

	// A retry of the same event (new timestamp, same id) is acknowledged
	// but not processed again.
	for i := range 3 {
		if code := send("evt_1"); code != http.StatusOK {
			t.Fatalf("delivery %d: status %d, want 200", i+1, code)
		}
	}
	if got := rec.count(); got != 1 {
		t.Fatalf("processed %d times, want once", got)
	}
	if send("evt_2") != http.StatusOK || rec.count() != 2 {
		t.Fatalf("another id was not processed")
	}

	// A failed processing answers 500 and lets the retry through.
	rec.mu.Lock()
	rec.fail = errors.New("database down")
	rec.mu.Unlock()
	if code := send("evt_3"); code != http.StatusInternalServerError {
		t.Fatalf("failed processing: status %d, want 500", code)
	}
	rec.mu.Lock()
	rec.fail = nil
	rec.mu.Unlock()
	if send("evt_3") != http.StatusOK || rec.count() != 3 {
		t.Fatalf("the retry after a failure was not processed (%d events)", rec.count())
	}

	// After the TTL an id is forgotten.
	mu.Lock()
	clock = clock.Add(2 * time.Hour)
	mu.Unlock()
	if send("evt_1") != http.StatusOK || rec.count() != 4 {
		t.Fatalf("an id past its TTL was not processed again (%d events)", rec.count())
	}
}

// TestGatewaySender delivers through the gateway's own webhook.Sender, the
// first time and as a retry, and checks the outcomes it reports.
func TestGatewaySender(t *testing.T) {
	t.Parallel()
	h, rec := newTestHandler(t, Config{})
	srv := httptest.NewServer(h)
	defer srv.Close()

	guard, err := webhook.NewGuard(webhook.GuardConfig{
		AllowInsecure: true, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
	})
	if err != nil {
		t.Fatal(err)
	}
	sender, err := webhook.NewSender(webhook.SenderConfig{Guard: guard})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.CloseIdleConnections()
	secret, err := webhook.ParseSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt <= 2; attempt++ {
		res := sender.Send(context.Background(), webhook.Request{
			URL: srv.URL + "/webhook", EventID: "evt_1", Body: []byte(testBody),
			Secrets: []webhook.Secret{secret}, Attempt: attempt,
		})
		if res.Outcome != webhook.OutcomeDelivered {
			t.Fatalf("attempt %d: outcome %v, status %d, err %v", attempt, res.Outcome, res.StatusCode, res.Err)
		}
	}
	if got := rec.count(); got != 1 {
		t.Errorf("processed %d times, want once", got)
	}
}

func TestNewHandlerRefusesBadSecrets(t *testing.T) {
	t.Parallel()
	noop := func(context.Context, Event) error { return nil }
	for _, secret := range []string{"", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!not-base64!!!"} {
		_, err := NewHandler(Config{Secret: secret, Process: noop})
		if err == nil {
			t.Errorf("secret %q accepted", secret)
			continue
		}
		if key := strings.TrimPrefix(secret, "whsec_"); key != "" && strings.Contains(err.Error(), key) {
			t.Errorf("error %q repeats the secret", err)
		}
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	getenv := func(k string) string {
		if k == secretEnv {
			return testSecret
		}
		return ""
	}
	// Without a secret run refuses to start.
	err := run(context.Background(), []string{"-addr", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), secretEnv) {
		t.Errorf("run without a secret: %v", err)
	}
	// With one it serves until its context ends, then shuts down cleanly.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-addr", "127.0.0.1:0"}, getenv, io.Discard, io.Discard) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}
