package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/outflow-dev/outflow/server"
)

// TestWrongMethodIs405WithAllow: a method a path does not serve is the
// client's mistake, 405 with the methods it does serve in Allow (RFC 9110
// §15.5.6), not a 5xx. Unknown paths stay 404.
func TestWrongMethodIs405WithAllow(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	const id = "sub_aaaaaaaaaaaaaaaaaaaaaaaaaa"
	tests := []struct {
		method, path string
		wantAllow    string // "" for 404
	}{
		{"PUT", "/v1/subscriptions", "GET, POST"},
		{"DELETE", "/v1/subscriptions", "GET, POST"},
		{"PATCH", "/v1/subscriptions", "GET, POST"},
		{"POST", "/v1/subscriptions/" + id, "DELETE, GET, PATCH"},
		{"PUT", "/v1/subscriptions/" + id, "DELETE, GET, PATCH"},
		{"GET", "/v1/subscriptions/" + id + ":test", "POST"},
		{"DELETE", "/v1/subscriptions/" + id + ":rotateSecret", "POST"},
		{"GET", "/v1/subscriptions/" + id + ":replay", "POST"},
		{"POST", "/v1/subscriptions/" + id + "/deliveries", "GET"},
		{"GET", "/v1/subscriptions/" + id + "/deliveries/dlv_x:retry", "POST"},
		{"POST", "/v1/subscriptions/" + id + "/events:stream", "GET"},
		{"DELETE", "/v1/subscriptions/" + id + "/replays", "GET"},
		{"POST", "/v1/subscriptions/" + id + "/replays/rpl_x", "GET"},
		{"GET", "/v1/nothing-here", ""},
		{"POST", "/v1/subscriptions/" + id + ":unknownVerb", "DELETE, GET, PATCH"},
		{"GET", "/v1/subscriptions/" + id + "/deliveries/dlv_x/more", ""},
	}
	for _, tt := range tests {
		for _, key := range []string{b.keyA, ""} {
			req, err := http.NewRequest(tt.method, b.httpURL+tt.path, strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := http.StatusMethodNotAllowed
			if tt.wantAllow == "" {
				want = http.StatusNotFound
			}
			if resp.StatusCode != want || resp.Header.Get("Allow") != tt.wantAllow {
				t.Errorf("%s %s (key: %v) = %d Allow %q; want %d Allow %q",
					tt.method, tt.path, key != "", resp.StatusCode, resp.Header.Get("Allow"), want, tt.wantAllow)
			}
		}
	}
}

// TestMissingKeyIs401BeforeTheBody: a REST call without a usable
// Authorization header is 401 whatever its body; the body's validation is
// not shown to callers without a key (schemathesis's missing_required_header
// check found a 400 first).
func TestMissingKeyIs401BeforeTheBody(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	for _, auth := range []string{"", "Basic abc", "Bearer", "Bearer   "} {
		for _, body := range []string{`{"webhook":{"timeout":""}}`, `not json`, `{}`} {
			req, err := http.NewRequest("POST", b.httpURL+"/v1/subscriptions", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("authorization %q, body %s: %d, want 401", auth, body, resp.StatusCode)
			}
		}
	}
}
