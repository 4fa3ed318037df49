package tecton

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/internal/httpretry"
)

// testAPIKey looks like a real key so that a leak is easy to spot in any output.
const testAPIKey = "tk_5ecret0123456789abcdef0123456789"

// capturedRequest is what the test server saw.
type capturedRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   map[string]any
}

type testServer struct {
	*httptest.Server
	calls    atomic.Int64
	captured chan capturedRequest
}

// newTestServer starts a server that records each request and answers with handler.
func newTestServer(t *testing.T, handler http.HandlerFunc) *testServer {
	t.Helper()
	ts := &testServer{captured: make(chan capturedRequest, 16)}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.calls.Add(1)
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		select {
		case ts.captured <- capturedRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}:
		default:
		}
		handler(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func newTestClient(t *testing.T, baseURL string, modify ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{BaseURL: baseURL, APIKey: testAPIKey}
	for _, m := range modify {
		m(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.httpClient.CloseIdleConnections)
	return c
}

func respondWith(status int, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}
}

// jsonValue decodes a JSON literal for comparison with a captured body.
func jsonValue(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON in test: %v", err)
	}
	return v
}

func TestGetFeaturesSendsRequest(t *testing.T) {
	t.Parallel()

	fixture := readTestdata(t, "get-features-metadata.json")
	tests := []struct {
		name     string
		basePath string
		req      Request
		wantPath string
		wantBody string
	}{
		{
			name:     "plain",
			req:      Request{Workspace: "prod", FeatureService: "promo_fs", JoinKeys: map[string]string{"user_id": "u1"}},
			wantPath: "/api/v1/feature-service/get-features",
			wantBody: `{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","join_key_map":{"user_id":"u1"},
				"metadata_options":{"include_names":true,"include_effective_times":true,"include_data_types":true,"include_serving_status":true}}}`,
		},
		{
			name:     "bypass cache",
			req:      Request{Workspace: "prod", FeatureService: "promo_fs", JoinKeys: map[string]string{"user_id": "u1", "ad_id": "5417"}, BypassCache: true},
			wantPath: "/api/v1/feature-service/get-features",
			wantBody: `{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","join_key_map":{"user_id":"u1","ad_id":"5417"},
				"metadata_options":{"include_names":true,"include_effective_times":true,"include_data_types":true,"include_serving_status":true},
				"request_options":{"read_from_cache":false}}}`,
		},
		{
			name:     "request context and a base path behind a proxy",
			basePath: "/tecton/",
			req:      Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}, RequestContext: map[string]any{"amount": 500.5, "currency": "EUR"}},
			wantPath: "/tecton/api/v1/feature-service/get-features",
			wantBody: `{"params":{"workspace_name":"w","feature_service_name":"fs","join_key_map":{"k":"v"},"request_context_map":{"amount":500.5,"currency":"EUR"},
				"metadata_options":{"include_names":true,"include_effective_times":true,"include_data_types":true,"include_serving_status":true}}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, respondWith(http.StatusOK, fixture))
			c := newTestClient(t, srv.URL+tt.basePath)

			v, err := c.GetFeatures(t.Context(), tt.req)
			if err != nil {
				t.Fatalf("GetFeatures: %v", err)
			}
			if len(v.Features) != 5 {
				t.Errorf("got %d features, want 5", len(v.Features))
			}
			got := <-srv.captured
			if got.Method != http.MethodPost {
				t.Errorf("method %s, want POST", got.Method)
			}
			if got.Path != tt.wantPath {
				t.Errorf("path %s, want %s", got.Path, tt.wantPath)
			}
			if auth := got.Header.Get("Authorization"); auth != "Tecton-key "+testAPIKey {
				t.Errorf("Authorization %q, want the Tecton-key scheme with the key", auth)
			}
			if ct := got.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if want := jsonValue(t, tt.wantBody); !reflect.DeepEqual(got.Body, want) {
				t.Errorf("body\n got %v\nwant %v", got.Body, want)
			}
		})
	}
}

func TestGetFeaturesBatchSendsRequest(t *testing.T) {
	t.Parallel()

	fixture := readTestdata(t, "get-features-batch.json")
	reqs := func(bypass ...bool) []Request {
		out := make([]Request, 3)
		for i := range out {
			out[i] = Request{Workspace: "prod", FeatureService: "fraud_fs", JoinKeys: map[string]string{"user_id": "u" + strconv.Itoa(i)}}
			if i < len(bypass) {
				out[i].BypassCache = bypass[i]
			}
		}
		return out
	}
	const metadata = `"metadata_options":{"include_names":true,"include_effective_times":true,"include_data_types":true,"include_serving_status":true}`
	const rows = `"request_data":[{"join_key_map":{"user_id":"u0"}},{"join_key_map":{"user_id":"u1"}},{"join_key_map":{"user_id":"u2"}}]`
	tests := []struct {
		name     string
		reqs     []Request
		wantBody string
	}{
		{
			name:     "cache allowed",
			reqs:     reqs(),
			wantBody: `{"params":{"workspace_name":"prod","feature_service_name":"fraud_fs",` + rows + `,` + metadata + `}}`,
		},
		{
			name:     "one request bypasses the cache for the whole batch",
			reqs:     reqs(false, true, false),
			wantBody: `{"params":{"workspace_name":"prod","feature_service_name":"fraud_fs",` + rows + `,` + metadata + `,"request_options":{"read_from_cache":false}}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, respondWith(http.StatusOK, fixture))
			c := newTestClient(t, srv.URL)

			vs, err := c.GetFeaturesBatch(t.Context(), tt.reqs)
			if err != nil {
				t.Fatalf("GetFeaturesBatch: %v", err)
			}
			if len(vs) != 3 {
				t.Fatalf("got %d vectors, want 3", len(vs))
			}
			got := <-srv.captured
			if got.Method != http.MethodPost || got.Path != "/api/v1/feature-service/get-features-batch" {
				t.Errorf("request %s %s, want POST /api/v1/feature-service/get-features-batch", got.Method, got.Path)
			}
			if auth := got.Header.Get("Authorization"); auth != "Tecton-key "+testAPIKey {
				t.Errorf("Authorization %q, want the Tecton-key scheme with the key", auth)
			}
			if want := jsonValue(t, tt.wantBody); !reflect.DeepEqual(got.Body, want) {
				t.Errorf("body\n got %v\nwant %v", got.Body, want)
			}
		})
	}
}

func TestGetFeaturesBatchRowCountMismatch(t *testing.T) {
	t.Parallel()

	srv := newTestServer(t, respondWith(http.StatusOK, readTestdata(t, "get-features-batch.json")))
	c := newTestClient(t, srv.URL)
	reqs := []Request{
		{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "1"}},
		{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "2"}},
	}
	_, err := c.GetFeaturesBatch(t.Context(), reqs)
	if _, ok := errors.AsType[*ParseError](err); !ok || IsRetriable(err) {
		t.Fatalf("error %v: want a non-retriable *ParseError for 3 rows answering 2 requests", err)
	}
	if !strings.Contains(err.Error(), "3 rows for 2 requests") {
		t.Errorf("error %q does not explain the mismatch", err)
	}
}

func TestRequestValidation(t *testing.T) {
	t.Parallel()

	valid := Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "secret-user-id"}}
	with := func(f func(*Request)) Request {
		r := valid
		f(&r)
		return r
	}
	many := make([]Request, MaxBatchSize+1)
	for i := range many {
		many[i] = valid
	}
	tests := []struct {
		name     string
		single   *Request
		batch    []Request
		contains string
	}{
		{name: "no workspace", single: new(with(func(r *Request) { r.Workspace = "" })), contains: "workspace is required"},
		{name: "no feature service", single: new(with(func(r *Request) { r.FeatureService = "" })), contains: "feature service is required"},
		{name: "no keys", single: new(with(func(r *Request) { r.JoinKeys = nil })), contains: "at least one join key"},
		{name: "empty join key name", single: new(with(func(r *Request) { r.JoinKeys = map[string]string{"": "x"} })), contains: "empty name"},
		{name: "unencodable request context", single: new(with(func(r *Request) { r.RequestContext = map[string]any{"x": math.NaN()} })), contains: "encoding request body"},
		{name: "empty batch", batch: []Request{}, contains: "empty batch"},
		{name: "batch too large", batch: many, contains: "exceeds MaxBatchSize (5)"},
		{name: "batch mixes workspaces", batch: []Request{valid, with(func(r *Request) { r.Workspace = "other" })}, contains: "request 1 is for other/fs"},
		{name: "batch mixes services", batch: []Request{valid, with(func(r *Request) { r.FeatureService = "fs2" })}, contains: "request 1 is for w/fs2"},
		{name: "invalid request in batch", batch: []Request{valid, with(func(r *Request) { r.JoinKeys = nil })}, contains: "request 1: at least one join key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, respondWith(http.StatusOK, []byte(`{}`)))
			c := newTestClient(t, srv.URL)
			var err error
			if tt.single != nil {
				_, err = c.GetFeatures(t.Context(), *tt.single)
			} else {
				_, err = c.GetFeaturesBatch(t.Context(), tt.batch)
			}
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v, want ErrInvalidRequest", err)
			}
			if IsRetriable(err) {
				t.Error("an invalid request is retriable")
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
			if strings.Contains(err.Error(), "secret-user-id") {
				t.Errorf("error %q quotes a join key value", err)
			}
			if n := srv.calls.Load(); n != 0 {
				t.Errorf("the server was called %d times for an invalid request", n)
			}
		})
	}
}

func TestGetFeaturesErrorStatuses(t *testing.T) {
	t.Parallel()

	tests := []struct {
		status    int
		retriable bool
	}{
		{http.StatusMovedPermanently, false},
		{http.StatusTemporaryRedirect, false},
		{http.StatusBadRequest, false},
		{http.StatusUnauthorized, false},
		{http.StatusForbidden, false},
		{http.StatusNotFound, false},
		{http.StatusConflict, false},
		{http.StatusUnprocessableEntity, false},
		{http.StatusTooManyRequests, true},
		{http.StatusInternalServerError, true},
		{http.StatusNotImplemented, false},
		{http.StatusBadGateway, true},
		{http.StatusServiceUnavailable, true},
		{http.StatusGatewayTimeout, true},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			t.Parallel()
			body := fmt.Sprintf(`{"error":"status %d","message":"status %d","code":7}`, tt.status, tt.status)
			srv := newTestServer(t, func(w http.ResponseWriter, _ *http.Request) {
				if tt.status >= 300 && tt.status < 400 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, body)
			})
			c := newTestClient(t, srv.URL)

			_, err := c.GetFeatures(t.Context(), Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
			apiErr, ok := errors.AsType[*APIError](err)
			if !ok {
				t.Fatalf("error %v (%T), want *APIError", err, err)
			}
			if apiErr.StatusCode != tt.status {
				t.Errorf("StatusCode %d, want %d", apiErr.StatusCode, tt.status)
			}
			if apiErr.Retriable != tt.retriable || IsRetriable(err) != tt.retriable {
				t.Errorf("Retriable %v, IsRetriable %v, want %v", apiErr.Retriable, IsRetriable(err), tt.retriable)
			}
			if apiErr.Code != 7 || apiErr.Message != fmt.Sprintf("status %d", tt.status) {
				t.Errorf("body not parsed: %+v", apiErr)
			}
			if srv.calls.Load() != 1 {
				t.Errorf("server called %d times; redirects must not be followed, nothing retried", srv.calls.Load())
			}
		})
	}
}

// TestTransportRetries checks the go-retryablehttp transport with Config.TransportRetries 2
// (as `outflow serve` sets it): a 503 with Retry-After is retried after the delay and then
// succeeds; a 400 is answered at once; a 503 that persists is retried twice and then returned
// as a retriable *APIError; the API key never reaches the error text.
func TestTransportRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		first      int
		failures   int64 // answers of status first before a success
		retryAfter string
		wantCalls  int64
		wantErr    bool
		minElapsed time.Duration
	}{
		{"503 with Retry-After is retried", http.StatusServiceUnavailable, 1, "1", 2, false, time.Second},
		{"400 is not retried", http.StatusBadRequest, 1, "", 1, true, 0},
		{"a lasting 503 stays retriable", http.StatusServiceUnavailable, 99, "", 1 + httpretry.DefaultRetryMax, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var n atomic.Int64
			srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) <= tt.failures {
					if tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					w.WriteHeader(tt.first)
					_, _ = io.WriteString(w, `{"error":"echo `+r.Header.Get("Authorization")+`","code":3}`)
					return
				}
				respondWith(http.StatusOK, []byte(`{"result":{"features":["1"]},"metadata":{"features":[{"name":"fv.f","effectiveTime":"2026-11-24T10:00:00Z"}]}}`))(w, r)
			})
			c := newTestClient(t, srv.URL, func(c *Config) { c.TransportRetries = httpretry.DefaultRetryMax })
			start := time.Now()
			_, err := c.GetFeatures(t.Context(), Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if err != nil && IsRetriable(err) != retriableStatus(tt.first) {
				t.Errorf("IsRetriable(%v) = %v after the transport gave up", err, IsRetriable(err))
			}
			if err != nil && strings.Contains(err.Error(), testAPIKey) {
				t.Errorf("the API key leaked into the error: %v", err)
			}
			if got := n.Load(); got != tt.wantCalls {
				t.Errorf("%d requests, want %d", got, tt.wantCalls)
			}
			if elapsed := time.Since(start); elapsed < tt.minElapsed {
				t.Errorf("answered after %s, before the Retry-After of %s", elapsed, tt.minElapsed)
			}
		})
	}
}

func TestAPIErrorFromBody(t *testing.T) {
	t.Parallel()

	huge := strings.Repeat("x", 1<<20)
	tests := []struct {
		name        string
		body        string
		wantError   string
		wantMessage string
		wantCode    int
		notContains string
	}{
		{
			name:        "tecton error JSON",
			body:        `{"error":"invalid 'Tecton-key' authorization header","message":"invalid 'Tecton-key' authorization header","code":16}`,
			wantError:   "invalid 'Tecton-key' authorization header",
			wantMessage: "invalid 'Tecton-key' authorization header",
			wantCode:    16,
		},
		{
			name:        "not JSON",
			body:        "<html><body>Bad Gateway</body></html>",
			wantMessage: "<html><body>Bad Gateway</body></html>",
		},
		{
			name:        "JSON without the error fields",
			body:        `{"detail":"nope"}`,
			wantMessage: `{"detail":"nope"}`,
		},
		{
			name:        "control characters cannot forge log lines",
			body:        "line1\nlevel=ERROR msg=forged\r\x1b[31m",
			wantMessage: "line1 level=ERROR msg=forged  [31m",
			notContains: "\n",
		},
		{
			name:        "echoed API key is redacted",
			body:        `{"error":"bad key Tecton-key ` + testAPIKey + `","message":"bad key ` + testAPIKey + `","code":16}`,
			wantError:   "bad key Tecton-key [REDACTED]",
			wantMessage: "bad key [REDACTED]",
			wantCode:    16,
			notContains: testAPIKey,
		},
		{
			name:        "echoed API key in a non-JSON body is redacted",
			body:        "Authorization: Tecton-key " + testAPIKey,
			wantMessage: "Authorization: Tecton-key [REDACTED]",
			notContains: testAPIKey,
		},
		{
			name:        "huge body is bounded",
			body:        huge,
			wantMessage: strings.Repeat("x", maxErrorTextLen) + "…",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, respondWith(http.StatusUnauthorized, []byte(tt.body)))
			c := newTestClient(t, srv.URL)

			_, err := c.GetFeatures(t.Context(), Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
			apiErr, ok := errors.AsType[*APIError](err)
			if !ok {
				t.Fatalf("error %v (%T), want *APIError", err, err)
			}
			if apiErr.ErrorText != tt.wantError || apiErr.Message != tt.wantMessage || apiErr.Code != tt.wantCode {
				t.Errorf("got error=%q message=%q code=%d\nwant error=%q message=%q code=%d",
					apiErr.ErrorText, apiErr.Message, apiErr.Code, tt.wantError, tt.wantMessage, tt.wantCode)
			}
			if len(err.Error()) > 3*maxErrorTextLen {
				t.Errorf("error text is %d bytes; it must be bounded", len(err.Error()))
			}
			if tt.notContains != "" && strings.Contains(err.Error(), tt.notContains) {
				t.Errorf("error %q contains %q", err, tt.notContains)
			}
			if strings.Contains(err.Error(), testAPIKey) {
				t.Errorf("error %q contains the API key", err)
			}
		})
	}
}

func TestGetFeaturesRetryAfter(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		status   int
		header   func() string
		min, max time.Duration
	}{
		{"seconds on 429", http.StatusTooManyRequests, func() string { return "7" }, 7 * time.Second, 7 * time.Second},
		{"seconds on 503", http.StatusServiceUnavailable, func() string { return "120" }, 2 * time.Minute, 2 * time.Minute},
		{"HTTP date", http.StatusServiceUnavailable, func() string { return time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat) }, 28 * time.Second, 30 * time.Second},
		{"absent", http.StatusServiceUnavailable, func() string { return "" }, 0, 0},
		{"garbage", http.StatusServiceUnavailable, func() string { return "soon" }, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, func(w http.ResponseWriter, _ *http.Request) {
				if h := tt.header(); h != "" {
					w.Header().Set("Retry-After", h)
				}
				w.WriteHeader(tt.status)
			})
			c := newTestClient(t, srv.URL)
			_, err := c.GetFeatures(t.Context(), Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
			apiErr, ok := errors.AsType[*APIError](err)
			if !ok {
				t.Fatalf("error %v, want *APIError", err)
			}
			if apiErr.RetryAfter < tt.min || apiErr.RetryAfter > tt.max {
				t.Errorf("RetryAfter %s, want within [%s, %s]", apiErr.RetryAfter, tt.min, tt.max)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()

	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"1", time.Second},
		{" 30 ", 30 * time.Second},
		{"-5", 0},
		{"1.5", 0},
		{"3599", 3599 * time.Second},
		{"3600", time.Hour},
		{"86400", time.Hour},
		{"99999999999999999999999", time.Hour},
		{"Tue, 24 Nov 2026 10:00:45 GMT", 45 * time.Second},
		{"Tuesday, 24-Nov-26 10:01:00 GMT", time.Minute},
		{"Tue Nov 24 10:00:10 2026", 10 * time.Second},
		{"Tue, 24 Nov 2026 09:00:00 GMT", 0},
		{"Fri, 24 Nov 2028 10:00:00 GMT", time.Hour},
		{"next tuesday", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestGetFeaturesUnparseableSuccess(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name      string
		body      string
		retriable bool
	}{
		{"HTML", "<html>hello</html>", false},
		{"wrong shape", `{"result":[]}`, false},
		{"length mismatch", `{"result":{"features":[1,2]},"metadata":{"features":[{"name":"a.b"}]}}`, false},
		{"empty", "", true},
		{"cut short", `{"result":{"features":[1,`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, respondWith(http.StatusOK, []byte(tt.body)))
			c := newTestClient(t, srv.URL)
			v, err := c.GetFeatures(t.Context(), Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
			if v != nil {
				t.Errorf("got a vector with an error")
			}
			if _, ok := errors.AsType[*ParseError](err); !ok {
				t.Fatalf("error %v (%T), want *ParseError", err, err)
			}
			if IsRetriable(err) != tt.retriable {
				t.Errorf("IsRetriable = %v, want %v", IsRetriable(err), tt.retriable)
			}
		})
	}
}

func TestGetFeaturesBodyCutByConnection(t *testing.T) {
	t.Parallel()

	// The server promises 1000 bytes, sends 20 and hangs up: a transport failure.
	srv := newTestServer(t, func(w http.ResponseWriter, _ *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"result\":{\"features\"")
		_ = buf.Flush()
	})
	c := newTestClient(t, srv.URL)
	_, err := c.GetFeatures(t.Context(), Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
	tErr, ok := errors.AsType[*TransportError](err)
	if !ok {
		t.Fatalf("error %v (%T), want *TransportError", err, err)
	}
	if !tErr.Retriable || !IsRetriable(err) {
		t.Errorf("a body cut by the connection must be retriable")
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("error %v does not wrap io.ErrUnexpectedEOF", err)
	}
}

func TestGetFeaturesResponseSizeLimit(t *testing.T) {
	t.Parallel()

	const limit = 1024
	valid := func(size int) []byte {
		b := []byte(`{"result":{"features":[1]},"metadata":{"features":[{"name":"fv.x"}]}}`)
		return append(b, bytes.Repeat([]byte(" "), size-len(b))...)
	}
	tests := []struct {
		name    string
		body    []byte
		chunked bool
		wantErr bool
	}{
		{"exactly at the limit", valid(limit), false, false},
		{"exactly at the limit, chunked", valid(limit), true, false},
		{"one byte over, Content-Length", valid(limit + 1), false, true},
		{"one byte over, chunked", valid(limit + 1), true, true},
		{"far over, chunked", valid(64 * limit), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, func(w http.ResponseWriter, _ *http.Request) {
				if !tt.chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(tt.body)))
				}
				w.WriteHeader(http.StatusOK)
				if tt.chunked {
					// Flushing before the body forces chunked encoding: no Content-Length.
					http.NewResponseController(w).Flush()
				}
				_, _ = w.Write(tt.body)
			})
			c := newTestClient(t, srv.URL, func(cfg *Config) { cfg.MaxResponseBytes = limit })
			v, err := c.GetFeatures(t.Context(), Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
			if !tt.wantErr {
				if err != nil || len(v.Features) != 1 {
					t.Fatalf("GetFeatures = %v, %v; want one feature", v, err)
				}
				return
			}
			if !errors.Is(err, ErrResponseTooLarge) {
				t.Fatalf("error %v, want ErrResponseTooLarge", err)
			}
			if IsRetriable(err) {
				t.Error("an oversized response must not be retriable")
			}
		})
	}
}

// blockingServer answers only when the request's context ends, and reports when a request
// has arrived.
func blockingServer(t *testing.T) (*testServer, <-chan struct{}) {
	t.Helper()
	arrived := make(chan struct{}, 1)
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	return srv, arrived
}

func TestGetFeaturesCallerCancels(t *testing.T) {
	t.Parallel()

	srv, arrived := blockingServer(t)
	c := newTestClient(t, srv.URL)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-arrived
		cancel()
	}()
	_, err := c.GetFeatures(ctx, Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
	tErr, ok := errors.AsType[*TransportError](err)
	if !ok {
		t.Fatalf("error %v (%T), want *TransportError", err, err)
	}
	if tErr.Retriable || IsRetriable(err) {
		t.Error("a call the caller cancelled must not be retriable")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v does not wrap context.Canceled", err)
	}
}

func TestGetFeaturesCallerDeadline(t *testing.T) {
	t.Parallel()

	srv, _ := blockingServer(t)
	c := newTestClient(t, srv.URL, func(cfg *Config) { cfg.Timeout = time.Minute })
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := c.GetFeatures(ctx, Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
	tErr, ok := errors.AsType[*TransportError](err)
	if !ok {
		t.Fatalf("error %v (%T), want *TransportError", err, err)
	}
	if tErr.Retriable || !tErr.Timeout {
		t.Errorf("caller deadline: Retriable %v Timeout %v, want false true", tErr.Retriable, tErr.Timeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
}

func TestGetFeaturesTimeout(t *testing.T) {
	t.Parallel()

	srv, _ := blockingServer(t)
	c := newTestClient(t, srv.URL, func(cfg *Config) { cfg.Timeout = 50 * time.Millisecond })
	start := time.Now()
	_, err := c.GetFeatures(t.Context(), Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
	tErr, ok := errors.AsType[*TransportError](err)
	if !ok {
		t.Fatalf("error %v (%T), want *TransportError", err, err)
	}
	if !tErr.Retriable || !tErr.Timeout || !IsRetriable(err) {
		t.Errorf("per-call timeout: Retriable %v Timeout %v, want true true", tErr.Retriable, tErr.Timeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("the call took %s; Timeout is 50ms", elapsed)
	}
}

func TestGetFeaturesBodyStalls(t *testing.T) {
	t.Parallel()

	// Headers arrive, then the body never finishes: Timeout covers reading the body too.
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"result":`)
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	c := newTestClient(t, srv.URL, func(cfg *Config) { cfg.Timeout = 50 * time.Millisecond })
	_, err := c.GetFeatures(t.Context(), Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
	tErr, ok := errors.AsType[*TransportError](err)
	if !ok {
		t.Fatalf("error %v (%T), want *TransportError", err, err)
	}
	if !tErr.Retriable || !tErr.Timeout {
		t.Errorf("stalled body: Retriable %v Timeout %v, want true true", tErr.Retriable, tErr.Timeout)
	}
}

func TestGetFeaturesConnectionRefused(t *testing.T) {
	t.Parallel()

	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()

	c := newTestClient(t, url)
	_, err := c.GetFeatures(t.Context(), Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
	tErr, ok := errors.AsType[*TransportError](err)
	if !ok {
		t.Fatalf("error %v (%T), want *TransportError", err, err)
	}
	if !tErr.Retriable || tErr.Timeout {
		t.Errorf("connection refused: Retriable %v Timeout %v, want true false", tErr.Retriable, tErr.Timeout)
	}
	if strings.Contains(err.Error(), testAPIKey) {
		t.Errorf("error %q contains the API key", err)
	}
}

func TestGetFeaturesCustomHTTPClient(t *testing.T) {
	t.Parallel()

	srv := newTestServer(t, respondWith(http.StatusOK, readTestdata(t, "get-features-mixed.json")))
	var used atomic.Bool
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		used.Store(true)
		return http.DefaultTransport.RoundTrip(r)
	})}
	c := newTestClient(t, srv.URL, func(cfg *Config) { cfg.HTTPClient = hc })
	if _, err := c.GetFeatures(t.Context(), Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}}); err != nil {
		t.Fatalf("GetFeatures: %v", err)
	}
	if !used.Load() {
		t.Error("the configured HTTPClient was not used")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestLoggerNeverLogsSecrets(t *testing.T) {
	t.Parallel()

	var n atomic.Int64
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"message":"bad key `+testAPIKey+`"}`)
			return
		}
		_, _ = w.Write(readTestdata(t, "get-features-metadata.json"))
	})
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newTestClient(t, srv.URL, func(cfg *Config) { cfg.Logger = logger })
	logger.Info("config", slog.Any("tecton", Config{BaseURL: srv.URL, APIKey: testAPIKey}))

	req := Request{Workspace: "w", FeatureService: "fs", JoinKeys: map[string]string{"user_id": "user-4407104885"}}
	for range 4 {
		_, _ = c.GetFeatures(t.Context(), req)
	}
	out := buf.String()
	if !strings.Contains(out, `"msg":"tecton call"`) {
		t.Errorf("no debug record of the calls:\n%s", out)
	}
	for _, secret := range []string{testAPIKey, "user-4407104885", "842.859"} {
		if strings.Contains(out, secret) {
			t.Errorf("log output contains %q:\n%s", secret, out)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
