package feast

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/internal/httpretry"
	"github.com/outflow-dev/outflow/tecton"
)

// testToken looks like a real token so that a leak is easy to spot in any output.
const testToken = "fst_5ecret0123456789abcdef"

// seen is one request as the test server saw it.
type seen struct {
	method, path, contentType, auth string
	body                            map[string]any
}

type testServer struct {
	*httptest.Server
	calls atomic.Int64
	mu    sync.Mutex
	reqs  []seen
}

func newTestServer(t *testing.T, handler func(n int64, w http.ResponseWriter, body map[string]any)) *testServer {
	t.Helper()
	ts := &testServer{}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := ts.calls.Add(1)
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		ts.mu.Lock()
		ts.reqs = append(ts.reqs, seen{r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), body})
		ts.mu.Unlock()
		handler(n, w, body)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func newTestClient(t *testing.T, baseURL string, modify ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{BaseURL: baseURL}
	for _, m := range modify {
		m(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// echoFeatures answers like feast serve: the entity columns first, then one feature column
// "user_stats__n" whose value is the row's position, PRESENT at a fixed second.
func echoFeatures(w http.ResponseWriter, body map[string]any) {
	entities, _ := body["entities"].(map[string]any)
	var names []string
	var results []map[string]any
	rows := 0
	for k, v := range entities {
		vals, _ := v.([]any)
		rows = len(vals)
		names = append(names, k)
		results = append(results, map[string]any{"values": vals, "statuses": repeat("PRESENT", rows), "event_timestamps": repeat("1970-01-01T00:00:00Z", rows)})
	}
	vals := make([]any, rows)
	for i := range vals {
		vals[i] = i
	}
	names = append(names, "user_stats__n")
	results = append(results, map[string]any{"values": vals, "statuses": repeat("PRESENT", rows), "event_timestamps": repeat("2026-12-04T09:12:40Z", rows)})
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{"feature_names": names}, "results": results})
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestGetFeaturesRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		token    string
		wantAuth string
	}{
		{"no token", "", ""},
		{"bearer token", testToken, "Bearer " + testToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, func(_ int64, w http.ResponseWriter, body map[string]any) { echoFeatures(w, body) })
			c := newTestClient(t, srv.URL+"/", func(c *Config) { c.Token = tt.token })
			v, err := c.GetFeatures(t.Context(), tecton.Request{Workspace: "ignored", FeatureService: "user_fs", JoinKeys: map[string]string{"user_id": "u1"}, BypassCache: true})
			if err != nil {
				t.Fatal(err)
			}
			got := srv.reqs[0]
			want := seen{http.MethodPost, "/get-online-features", "application/json", tt.wantAuth, map[string]any{
				"feature_service": "user_fs", "entities": map[string]any{"user_id": []any{"u1"}}, "full_feature_names": true,
			}}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("request\n got %+v\nwant %+v", got, want)
			}
			f, ok := v.Lookup("user_stats.n")
			if !ok || f.FeatureView != "user_stats" || !f.HasEffectiveTime || len(v.Features) != 1 {
				t.Errorf("vector %+v", v)
			}
		})
	}
}

func TestGetFeaturesBatch(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, func(_ int64, w http.ResponseWriter, body map[string]any) { echoFeatures(w, body) })
	c := newTestClient(t, srv.URL)
	reqs := []tecton.Request{
		{FeatureService: "user_fs", JoinKeys: map[string]string{"user_id": "a"}},
		{FeatureService: "user_fs", JoinKeys: map[string]string{"uid": "b"}},
		{FeatureService: "user_fs", JoinKeys: map[string]string{"user_id": "c"}},
	}
	vs, err := c.GetFeaturesBatch(t.Context(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2: one per set of join key names", n)
	}
	// Rows keep request order: a and c share a call (rows 0 and 1), b has its own (row 0).
	for i, want := range []string{"0", "0", "1"} {
		f, _ := vs[i].Lookup("user_stats.n")
		if string(f.Value) != want {
			t.Errorf("request %d got row value %s, want %s", i, f.Value, want)
		}
	}
	if got := srv.reqs[0].body["entities"]; !reflect.DeepEqual(got, map[string]any{"user_id": []any{"a", "c"}}) {
		t.Errorf("first call's entities %v, want both user_id rows in one call", got)
	}

	for _, bad := range [][]tecton.Request{
		nil,
		{{FeatureService: "", JoinKeys: map[string]string{"k": "v"}}},
		{{FeatureService: "fs"}},
		{{FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}}, {FeatureService: "other", JoinKeys: map[string]string{"k": "v"}}},
	} {
		if _, err := c.GetFeaturesBatch(t.Context(), bad); !errors.Is(err, ErrInvalidRequest) || IsRetriable(err) {
			t.Errorf("batch %+v: error %v, want a non-retriable ErrInvalidRequest", bad, err)
		}
	}
}

// TestTransportRetries is the go-retryablehttp acceptance check for the Feast client: a 503
// with Retry-After is retried after the delay, a 400 is not, and the token never reaches the
// error text even when the server echoes it.
func TestTransportRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		first      int
		retryAfter string
		wantCalls  int64
		wantErr    bool
		minElapsed time.Duration
	}{
		{"503 with Retry-After is retried", http.StatusServiceUnavailable, "1", 2, false, time.Second},
		{"400 is not retried", http.StatusBadRequest, "", 1, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, func(n int64, w http.ResponseWriter, body map[string]any) {
				if n == 1 {
					if tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					w.WriteHeader(tt.first)
					_, _ = fmt.Fprintf(w, `{"detail":"token %s refused"}`, testToken)
					return
				}
				echoFeatures(w, body)
			})
			c := newTestClient(t, srv.URL, func(c *Config) { c.Token = testToken; c.TransportRetries = httpretry.DefaultRetryMax })
			start := time.Now()
			_, err := c.GetFeatures(t.Context(), tecton.Request{FeatureService: "user_fs", JoinKeys: map[string]string{"user_id": "u1"}})
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), testToken) {
				t.Errorf("the token leaked into the error: %v", err)
			}
			if got := srv.calls.Load(); got != tt.wantCalls {
				t.Errorf("%d requests, want %d", got, tt.wantCalls)
			}
			if elapsed := time.Since(start); elapsed < tt.minElapsed {
				t.Errorf("answered after %s, before the Retry-After of %s", elapsed, tt.minElapsed)
			}
		})
	}
}

// TestErrorAnswers replays the error bodies of a real feast serve (testdata) and a proxy's.
func TestErrorAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		status      int
		body        []byte
		wantClass   string
		wantMessage string
		retriable   bool
		wantCalls   int64
	}{
		{"unknown feature service", 404, readFixture(t, "error_404.json"), "FeatureServiceNotFoundException", "Feature service nope does not exist in project outflow_test", false, 1},
		{"malformed request", 422, readFixture(t, "error_422.json"), "", `[{"type":"model_attributes_type"`, false, 1},
		{"unknown join key", 500, readFixture(t, "error_500.json"), "", "Missing join key values for keys: ['user_id']", true, 1 + httpretry.DefaultRetryMax},
		{"unavailable", 503, []byte(`"overloaded"`), "", "overloaded", true, 1 + httpretry.DefaultRetryMax},
		{"bad token", 401, []byte(`{"detail":"Invalid token"}`), "", "Invalid token", false, 1},
		{"forbidden", 403, []byte(`<html>Forbidden</html>`), "", "<html>Forbidden</html>", false, 1},
		{"proxy", 502, []byte("<html>\n\tbad gateway</html>"), "", "<html>  bad gateway</html>", true, 1 + httpretry.DefaultRetryMax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, func(_ int64, w http.ResponseWriter, _ map[string]any) {
				w.WriteHeader(tt.status)
				_, _ = w.Write(tt.body)
			})
			c := newTestClient(t, srv.URL, func(c *Config) { c.TransportRetries = httpretry.DefaultRetryMax })
			_, err := c.GetFeatures(t.Context(), tecton.Request{FeatureService: "nope", JoinKeys: map[string]string{"user_id": "u1"}})
			apiErr, ok := errors.AsType[*APIError](err)
			if !ok {
				t.Fatalf("error %v (%T), want *APIError", err, err)
			}
			if apiErr.StatusCode != tt.status || apiErr.Class != tt.wantClass || !strings.HasPrefix(apiErr.Message, tt.wantMessage) {
				t.Errorf("got %d %q %q, want %d %q %q…", apiErr.StatusCode, apiErr.Class, apiErr.Message, tt.status, tt.wantClass, tt.wantMessage)
			}
			if IsRetriable(err) != tt.retriable {
				t.Errorf("IsRetriable = %v, want %v", IsRetriable(err), tt.retriable)
			}
			if n := srv.calls.Load(); n != tt.wantCalls {
				t.Errorf("%d requests, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestTransportErrors(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens any more
	c := newTestClient(t, url)
	_, err := c.GetFeatures(t.Context(), tecton.Request{FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
	if tErr, ok := errors.AsType[*TransportError](err); !ok || !tErr.Retriable {
		t.Errorf("error %v, want a retriable *TransportError", err)
	}

	ctx, cancel := contextCancelled(t)
	defer cancel()
	_, err = c.GetFeatures(ctx, tecton.Request{FeatureService: "fs", JoinKeys: map[string]string{"k": "v"}})
	if tErr, ok := errors.AsType[*TransportError](err); !ok || tErr.Retriable {
		t.Errorf("error %v, want a non-retriable *TransportError once the caller gave up", err)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"minimal", Config{BaseURL: "http://127.0.0.1:6566"}, true},
		{"with token and prefix", Config{BaseURL: "https://feast.example/api/", Token: "t"}, true},
		{"no URL", Config{}, false},
		{"ftp", Config{BaseURL: "ftp://x"}, false},
		{"no host", Config{BaseURL: "http://"}, false},
		{"credentials in URL", Config{BaseURL: "http://u:p@x"}, false},
		{"query", Config{BaseURL: "http://x/?a=b"}, false},
		{"token with space", Config{BaseURL: "http://x", Token: "a b"}, false},
		{"negative timeout", Config{BaseURL: "http://x", Timeout: -1}, false},
		{"negative size", Config{BaseURL: "http://x", MaxResponseBytes: -1}, false},
		{"negative retries", Config{BaseURL: "http://x", TransportRetries: -1}, false},
	}
	for _, tt := range tests {
		c, err := NewClient(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: error %v, want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: error %v does not wrap ErrInvalidConfig", tt.name, err)
		}
		if c != nil {
			c.CloseIdleConnections()
		}
	}
	cfg := Config{BaseURL: "http://x", Token: testToken}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%#v", cfg), fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		if strings.Contains(s, testToken) || !strings.Contains(s, httpretry.Redacted) {
			t.Errorf("printed form %q shows the token or hides that it is set", s)
		}
	}
}

// contextCancelled returns a context that is already done.
func contextCancelled(t *testing.T) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx, cancel
}
