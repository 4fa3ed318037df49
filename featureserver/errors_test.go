package featureserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/tecton"
)

func TestBadRequests(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const promo = `"workspace_name": "prod", "feature_service_name": "promo_fs"`
	tests := []struct {
		name       string
		path       string
		body       string
		wantStatus int
		wantCode   int
		wantIn     string // a substring of the message
	}{
		{"empty body", GetFeaturesPath, ``, 400, 3, "empty"},
		{"not JSON", GetFeaturesPath, `{"params": {`, 400, 3, "not valid JSON"},
		{"not an object", GetFeaturesPath, `[1, 2]`, 400, 3, "JSON object"},
		{"no params", GetFeaturesPath, `{}`, 400, 3, "params is required"},
		{"unknown top-level field", GetFeaturesPath, `{"params": {}, "extra": 1}`, 400, 3, `unknown field "extra"`},
		{"misspelt option", GetFeaturesPath, `{"params": {` + promo + `, "join_key_map": {"user_id": "u1"}, "metadata_options": {"include_effective_time": true}}}`, 400, 3, "include_effective_time"},
		{"both spellings", GetFeaturesPath, `{"params": {` + promo + `, "join_key_map": {"user_id": "u1"}, "joinKeyMap": {"user_id": "u1"}}}`, 400, 3, "both"},
		{"option not a bool", GetFeaturesPath, `{"params": {` + promo + `, "join_key_map": {"user_id": "u1"}, "request_options": {"read_from_cache": "no"}}}`, 400, 3, "true or false"},
		{"no workspace", GetFeaturesPath, `{"params": {"feature_service_name": "promo_fs", "join_key_map": {"user_id": "u1"}}}`, 400, 3, "workspace_name is required"},
		{"no feature service", GetFeaturesPath, `{"params": {"workspace_name": "prod", "join_key_map": {"user_id": "u1"}}}`, 400, 3, "feature_service_name is required"},
		{"feature service id", GetFeaturesPath, `{"params": {"workspace_name": "prod", "feature_service_id": "abc", "join_key_map": {"user_id": "u1"}}}`, 400, 3, "not supported"},
		{"unknown workspace", GetFeaturesPath, `{"params": {"workspace_name": "staging", "feature_service_name": "promo_fs", "join_key_map": {"user_id": "u1"}}}`, 404, 5, "workspace"},
		{"unknown feature service", GetFeaturesPath, `{"params": {"workspace_name": "prod", "feature_service_name": "nope", "join_key_map": {"user_id": "u1"}}}`, 404, 5, "feature service"},
		{"no join keys", GetFeaturesPath, `{"params": {` + promo + `}}`, 400, 3, "join_key_map"},
		{"unknown join key", GetFeaturesPath, `{"params": {` + promo + `, "join_key_map": {"user_id": "u1", "merchant": "m"}}}`, 400, 3, `unknown join key "merchant"`},
		{"missing join key", GetFeaturesPath, `{"params": {"workspace_name": "prod", "feature_service_name": "promo_realtime_fs", "request_context_map": {"channel": "web"}}}`, 400, 3, `missing join key "user_id"`},
		{"null join key", GetFeaturesPath, `{"params": {` + promo + `, "join_key_map": {"user_id": null}}}`, 400, 3, "string or an integer"},
		{"join key object", GetFeaturesPath, `{"params": {` + promo + `, "join_key_map": {"user_id": {}}}}`, 400, 3, "string or an integer"},
		{"unexpected request context", GetFeaturesPath, `{"params": {` + promo + `, "join_key_map": {"user_id": "u1"}, "request_context_map": {"amount": 1}}}`, 400, 3, "unknown request context key"},
		{"missing request context", GetFeaturesPath, `{"params": {"workspace_name": "prod", "feature_service_name": "promo_realtime_fs", "join_key_map": {"user_id": "u1"}}}`, 400, 3, `missing request context key "channel"`},
		{"request context of the wrong type", GetFeaturesPath, `{"params": {"workspace_name": "prod", "feature_service_name": "promo_realtime_fs", "join_key_map": {"user_id": "u1"}, "request_context_map": {"channel": 7}}}`, 400, 3, "must be a string"},
		{"request_data on get-features", GetFeaturesPath, `{"params": {` + promo + `, "request_data": [{"join_key_map": {"user_id": "u1"}}]}}`, 400, 3, `unknown field "request_data"`},
		{"join_key_map on the batch endpoint", GetFeaturesBatchPath, `{"params": {` + promo + `, "join_key_map": {"user_id": "u1"}}}`, 400, 3, `unknown field "join_key_map"`},
		{"no request_data", GetFeaturesBatchPath, `{"params": {` + promo + `}}`, 400, 3, "request_data is required"},
		{"empty request_data", GetFeaturesBatchPath, `{"params": {` + promo + `, "request_data": []}}`, 400, 3, "at least one row"},
		{"bad batch row", GetFeaturesBatchPath, `{"params": {` + promo + `, "request_data": [{"join_key_map": {"user_id": "u1"}}, {"join_key_map": {"user": "u1"}}]}}`, 400, 3, "request_data[1]"},
		{"unknown path", "/api/v1/feature-service/get-feature", `{}`, 404, 5, "no such endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, body := b.post(t, tt.path, tt.body)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", status, tt.wantStatus, body)
			}
			e := errorOf(t, body)
			if e.Code != tt.wantCode || !strings.Contains(e.Message, tt.wantIn) || e.Error != e.Message {
				t.Errorf("error %+v; want code %d and a message containing %q", e, tt.wantCode, tt.wantIn)
			}
		})
	}
}

func TestBodyLimitAndMethod(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxBodyBytes = 64 })
	status, body := b.post(t, GetFeaturesPath, `{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", "join_key_map": {"user_id": "u1"}}}`)
	if status != 400 || !strings.Contains(errorOf(t, body).Message, "exceeds 64 bytes") {
		t.Errorf("oversized body: %d %s", status, body)
	}

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, b.url+GetFeaturesPath, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" || errorOf(t, data).Code != 12 {
		t.Errorf("GET: %d Allow=%q %s", resp.StatusCode, resp.Header.Get("Allow"), data)
	}

	// The health check needs no key.
	req, _ = http.NewRequestWithContext(t.Context(), http.MethodGet, b.url+HealthPath, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("health: %d", resp.StatusCode)
	}
}

// TestUnknownFeatureServiceIsNotRetriable is what the dispatcher relies on to fail an event at
// once (SPEC §4).
func TestUnknownFeatureServiceIsNotRetriable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.client.GetFeatures(t.Context(), tecton.Request{Workspace: "prod", FeatureService: "promo_fs_v2", JoinKeys: map[string]string{"user_id": "u1"}})
	apiErr, ok := errors.AsType[*tecton.APIError](err)
	if !ok || apiErr.StatusCode != 404 || apiErr.Code != 5 || apiErr.Retriable || tecton.IsRetriable(err) {
		t.Errorf("err = %v; want a non-retriable 404 APIError with code 5", err)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	open := setup(t, func(c *Config) { c.APIKey = "" })
	const body = `{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", "join_key_map": {"user_id": "u1"}}}`
	tests := []struct {
		name       string
		url        string
		header     string
		wantStatus int
		wantCode   int
	}{
		{"no header", b.url, "", 401, 16},
		{"wrong scheme", b.url, "Bearer " + testAPIKey, 401, 16},
		{"scheme without key", b.url, "Tecton-key", 401, 16},
		{"wrong key", b.url, "Tecton-key tk_wrong", 403, 7},
		{"right key", b.url, "Tecton-key " + testAPIKey, 200, 0},
		{"scheme is case-insensitive", b.url, "tecton-KEY " + testAPIKey, 200, 0},
		{"no key configured: anything goes", open.url, "", 200, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, tt.url+GetFeaturesPath, strings.NewReader(body))
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, data)
			}
			if tt.wantCode != 0 {
				if e := errorOf(t, data); e.Code != tt.wantCode || strings.Contains(e.Message, testAPIKey) {
					t.Errorf("error %+v, want code %d and no key", e, tt.wantCode)
				}
			}
		})
	}

	_, err := newClient(t, b.url, "tk_wrong").GetFeatures(t.Context(), promoRequest("u1"))
	if apiErr, ok := errors.AsType[*tecton.APIError](err); !ok || apiErr.StatusCode != 403 || tecton.IsRetriable(err) {
		t.Errorf("client with a wrong key: %v; want a non-retriable 403", err)
	}
}

func TestFaultsFailNext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status     int
		code       int
		retriable  bool
		retryAfter time.Duration
	}{
		{503, 14, true, 2 * time.Second},
		{429, 8, true, time.Second},
		{500, 13, true, 0},
		{504, 4, true, 0},
		{400, 3, false, 0},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			// RetryAfter is set for every case; only 429 and 503 send it. 1500ms rounds up.
			retryAfter := tt.retryAfter
			if retryAfter == 0 {
				retryAfter = time.Second
			}
			if err := b.srv.SetFaults(Faults{FailNext: 3, ErrorStatus: tt.status, RetryAfter: retryAfter - 500*time.Millisecond}); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				_, err := b.client.GetFeatures(t.Context(), promoRequest("u1"))
				apiErr, ok := errors.AsType[*tecton.APIError](err)
				if !ok || apiErr.StatusCode != tt.status || apiErr.Code != tt.code || tecton.IsRetriable(err) != tt.retriable || apiErr.RetryAfter != tt.retryAfter {
					t.Fatalf("call %d: %v (%+v); want %d, code %d, retriable %v, Retry-After %s", i, err, apiErr, tt.status, tt.code, tt.retriable, tt.retryAfter)
				}
			}
			if _, err := b.client.GetFeatures(t.Context(), promoRequest("u1")); err != nil {
				t.Fatalf("call after the burst: %v", err)
			}
			if f := b.srv.Faults(); f.FailNext != 0 {
				t.Errorf("Faults().FailNext = %d, want 0", f.FailNext)
			}
		})
	}
}

func TestFaultsErrorRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rate    float64
		wantMin int
		wantMax int
	}{
		{0, 0, 0},
		{1, 200, 200},
		{0.5, 50, 150},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.rate), func(t *testing.T) {
			t.Parallel()
			count := func() int {
				srv, err := New(Config{Seed: 42, Now: (&fakeClock{now: t0}).Now})
				if err != nil {
					t.Fatal(err)
				}
				if err := srv.SetFaults(Faults{ErrorRate: tt.rate}); err != nil {
					t.Fatal(err)
				}
				failed := 0
				for range 200 {
					rec := httptest.NewRecorder()
					req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, GetFeaturesPath,
						strings.NewReader(`{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", "join_key_map": {"user_id": "u1"}}}`))
					srv.Handler().ServeHTTP(rec, req)
					if rec.Code == 503 {
						failed++
					}
				}
				return failed
			}
			n := count()
			if n < tt.wantMin || n > tt.wantMax {
				t.Errorf("ErrorRate %v: %d of 200 failed, want %d to %d", tt.rate, n, tt.wantMin, tt.wantMax)
			}
			if again := count(); again != n {
				t.Errorf("the same seed gave %d then %d failures", n, again)
			}
		})
	}
}

func TestSetFaultsValidates(t *testing.T) {
	t.Parallel()
	srv, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Faults{{ErrorRate: 1.5}, {ErrorRate: -0.1}, {ErrorStatus: 200}, {ErrorStatus: 600}, {FailNext: -1}, {Latency: -time.Second}} {
		if err := srv.SetFaults(f); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("SetFaults(%+v) = %v, want ErrInvalidConfig", f, err)
		}
	}
}

func TestFaultsLatency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const latency = 100 * time.Millisecond
	if err := b.srv.SetFaults(Faults{Latency: latency, LatencyJitter: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := b.client.GetFeatures(t.Context(), promoRequest("u1")); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < latency {
		t.Errorf("call took %s, want at least %s", elapsed, latency)
	}

	// A client whose timeout is shorter than the latency sees a retriable timeout.
	if err := b.srv.SetFaults(Faults{Latency: time.Minute}); err != nil {
		t.Fatal(err)
	}
	impatient := newClient(t, b.url, testAPIKey, func(c *tecton.Config) { c.Timeout = 50 * time.Millisecond })
	_, err := impatient.GetFeatures(t.Context(), promoRequest("u1"))
	tErr, ok := errors.AsType[*tecton.TransportError](err)
	if !ok || !tErr.Timeout || !tecton.IsRetriable(err) {
		t.Errorf("err = %v; want a retriable transport timeout", err)
	}
}

// TestCache shows the stale cache the consistency retries must bypass: with CacheTTL a
// default read can keep serving a value older than the record after the lag has elapsed,
// while a read with read_from_cache=false (BypassCache) sees the fresh one and, through
// write_to_cache, refreshes the cache for everyone else.
func TestCache(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.Lag, c.CacheTTL = time.Second, time.Minute })
	ctx := t.Context()
	read := func(bypass bool) tecton.Feature {
		t.Helper()
		req := promoRequest("u1")
		req.BypassCache = bypass
		v, err := b.client.GetFeatures(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return mustFeature(t, v, cartCount)
	}

	if f := read(false); f.Status != tecton.StatusMissingData || f.HasEffectiveTime {
		t.Fatalf("first read: %s (effective time set %v), want MISSING_DATA without one from the store", f.Status, f.HasEffectiveTime)
	}
	ts := t0.Add(-time.Millisecond)
	b.srv.Apply(cartRecord(t, "u1", ts, map[string]string{"cart_count": "1"}))
	b.clock.Advance(2 * time.Second)

	if f := read(false); f.Status != tecton.StatusCachedMissingData || f.HasEffectiveTime || string(f.Value) != "null" {
		t.Errorf("cached read after the lag: %s %s (effective time set %v); want the stale null CACHED_MISSING_DATA without an effective time", f.Value, f.Status, f.HasEffectiveTime)
	}
	if f := read(true); f.Status != tecton.StatusPresent || !f.EffectiveTime.Equal(ts) {
		t.Errorf("bypassing read: %s at %s; want PRESENT at %s", f.Status, f.EffectiveTime, ts)
	}
	if f := read(false); f.Status != tecton.StatusCachedPresent || !f.EffectiveTime.Equal(ts) {
		t.Errorf("cached read after the bypass: %s at %s; want CACHED_PRESENT at %s", f.Status, f.EffectiveTime, ts)
	}

	// write_to_cache=false reads fresh without refreshing; after the TTL the cache refreshes.
	ts2 := ts.Add(time.Second)
	b.srv.Apply(cartRecord(t, "u1", ts2, map[string]string{"cart_count": "2"}))
	b.clock.Advance(2 * time.Second)
	status, body := b.post(t, GetFeaturesPath, `{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", "join_key_map": {"user_id": "u1"},
		"metadata_options": {"include_names": true, "include_effective_times": true, "include_serving_status": true},
		"request_options": {"read_from_cache": false, "write_to_cache": false}}}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	v, err := tecton.ParseResponse(body)
	if err != nil {
		t.Fatal(err)
	}
	if f := mustFeature(t, v, cartCount); !f.EffectiveTime.Equal(ts2) {
		t.Errorf("read_from_cache=false: effective time %s, want %s", f.EffectiveTime, ts2)
	}
	if f := read(false); !f.EffectiveTime.Equal(ts) {
		t.Errorf("write_to_cache=false refreshed the cache: effective time %s, want still %s", f.EffectiveTime, ts)
	}
	b.clock.Advance(time.Minute)
	if f := read(false); f.Status != tecton.StatusPresent || !f.EffectiveTime.Equal(ts2) {
		t.Errorf("read after the TTL: %s at %s, want a fresh PRESENT at %s", f.Status, f.EffectiveTime, ts2)
	}
}

// TestServe checks the lifecycle: Serve answers until its context ends, and a request parked
// in injected latency does not hold the shutdown up.
func TestServe(t *testing.T) {
	t.Parallel()
	srv, err := New(Config{ShutdownTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	url := "http://" + lis.Addr().String()

	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	httpClient := &http.Client{Transport: transport}
	resp, err := httpClient.Get(url + HealthPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("health: %d", resp.StatusCode)
	}

	// FailNext is consumed when the request enters the fault injection, just before it waits
	// out the latency: once it reads 0, the request is parked.
	if err := srv.SetFaults(Faults{Latency: time.Hour, FailNext: 1}); err != nil {
		t.Fatal(err)
	}
	parked := make(chan int, 1)
	go func() {
		resp, err := httpClient.Post(url+GetFeaturesPath, "application/json", bytes.NewBufferString(`{}`))
		if err != nil {
			parked <- 0
			return
		}
		resp.Body.Close()
		parked <- resp.StatusCode
	}()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Faults().FailNext != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the fault injection")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("shutdown took %s", elapsed)
	}
	if status := <-parked; status != 503 {
		t.Errorf("parked request got %d, want 503", status)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"negative lag", Config{Lag: -time.Second}, ErrInvalidConfig},
		{"key with a space", Config{APIKey: "a b"}, ErrInvalidConfig},
		{"empty catalog", Config{Catalog: &Catalog{}}, ErrInvalidCatalog},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(tt.cfg); !errors.Is(err, tt.want) {
				t.Errorf("New = %v, want %v", err, tt.want)
			}
		})
	}
}
