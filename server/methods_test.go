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
