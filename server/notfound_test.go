package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/outflow-dev/outflow/server"
)

// TestUnknownAndMalformedIDsAreNotFound: an id is opaque to clients, so one
// the server could never have issued is as unknown as one it did not (SPEC
// §3: an unknown id is NOT_FOUND / 404), and so is an etag it did not issue:
// a mismatch, never a malformed argument.
func TestUnknownAndMalformedIDsAreNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	created := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("known"))
	known := created["id"].(string)
	tests := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"get id 0", "GET", "/v1/subscriptions/0", nil, http.StatusNotFound},
		{"get malformed id", "GET", "/v1/subscriptions/not-an-id", nil, http.StatusNotFound},
		{"get over-long id", "GET", "/v1/subscriptions/sub_" + strings.Repeat("a", 100), nil, http.StatusNotFound},
		{"get unknown id", "GET", "/v1/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa", nil, http.StatusNotFound},
		{"delete malformed id", "DELETE", "/v1/subscriptions/0", nil, http.StatusNotFound},
		{"rotate malformed id", "POST", "/v1/subscriptions/0:rotateSecret", map[string]any{}, http.StatusNotFound},
		{"test malformed id", "POST", "/v1/subscriptions/0:test", map[string]any{}, http.StatusNotFound},
		{"deliveries of a malformed id", "GET", "/v1/subscriptions/0/deliveries", nil, http.StatusNotFound},
		{"retry a malformed delivery id", "POST", "/v1/subscriptions/" + known + "/deliveries/0:retry", map[string]any{}, http.StatusNotFound},
		{"patch unknown id, foreign etag", "PATCH", "/v1/subscriptions/sub_abc", map[string]any{"name": "x", "etag": "W/1"}, http.StatusNotFound},
		{"patch malformed id, foreign etag", "PATCH", "/v1/subscriptions/0", map[string]any{"name": "x", "etag": "0"}, http.StatusNotFound},
		{"patch known id, foreign etag", "PATCH", "/v1/subscriptions/" + known, map[string]any{"name": "x", "etag": "W/1"}, http.StatusConflict},
		{"delete unknown id, foreign etag", "DELETE", "/v1/subscriptions/sub_abc?etag=xyz", nil, http.StatusNotFound},
		{"delete known id, foreign etag", "DELETE", "/v1/subscriptions/" + known + "?etag=xyz", nil, http.StatusConflict},
	}
	for _, tt := range tests {
		if code, body := b.rest(t, tt.method, tt.path, b.keyA, tt.body); code != tt.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, code, body, tt.want)
		}
	}
	// The foreign etags changed nothing.
	got := b.restJSON(t, http.StatusOK, "GET", "/v1/subscriptions/"+known, b.keyA, nil)
	if got["name"] != "known" || got["etag"] != created["etag"] {
		t.Errorf("after refused writes: name %v etag %v, want it unchanged", got["name"], got["etag"])
	}
}
