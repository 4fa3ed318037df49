package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/outflow-dev/outflow/server"
)

func TestOperationalEndpoints(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	for _, tc := range []struct {
		path, want string
	}{
		{"/healthz", "ok"},
		{"/readyz", "ok"},
		{"/metrics", "outflow_api_requests_total"},
		{"/openapi.json", `"swagger"`},
	} {
		if tc.path == "/metrics" {
			// Make one call so the counter has a series.
			b.rest(t, "GET", "/v1/subscriptions", b.keyA, nil)
		}
		resp, err := http.Get(b.httpURL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), tc.want) {
			t.Errorf("GET %s = %d %.200s; want 200 with %q", tc.path, resp.StatusCode, body, tc.want)
		}
	}

	var doc struct {
		Paths map[string]any `json:"paths"`
	}
	resp, err := http.Get(b.httpURL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/v1/subscriptions", "/v1/subscriptions/{id}",
		"/v1/subscriptions/{id}:rotateSecret", "/v1/subscriptions/{subscription_id}/events:stream"} {
		if doc.Paths[p] == nil {
			t.Errorf("the OpenAPI document lacks %s", p)
		}
	}
	// UpdateSubscription's {subscription.id} is documented as {id} (issue
	// 11: OpenAPI tools cannot fill in a dotted parameter name).
	if ops, _ := doc.Paths["/v1/subscriptions/{id}"].(map[string]any); ops["patch"] == nil {
		t.Error("the OpenAPI document lacks PATCH /v1/subscriptions/{id}")
	}

	// gRPC health needs no key (load balancers have none).
	h, err := healthpb.NewHealthClient(b.conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v; want SERVING", h, err)
	}
}

func TestRequestIDs(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	req, _ := http.NewRequest("GET", b.httpURL+"/v1/subscriptions", nil)
	req.Header.Set("Authorization", "Bearer "+b.keyA)
	req.Header.Set("X-Request-Id", "trace-123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-Id"); got != "trace-123" {
		t.Errorf("X-Request-Id = %q, want the caller's trace-123", got)
	}
	req.Header.Set("X-Request-Id", "bad id with spaces")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Errorf("X-Request-Id = %q, want a fresh id instead of a malformed one", got)
	}
}

func TestPageTokenIsBoundToItsQuery(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	for i := range 3 {
		b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub(fmt.Sprint(i)))
	}
	page := b.restJSON(t, http.StatusOK, "GET", "/v1/subscriptions?page_size=1", b.keyA, nil)
	token := page["next_page_token"].(string)

	// Another filter, another tenant, or a flipped bit: refused.
	b.restJSON(t, http.StatusBadRequest, "GET", "/v1/subscriptions?page_size=1&feature_view_name=other&page_token="+url.QueryEscape(token), b.keyA, nil)
	b.restJSON(t, http.StatusBadRequest, "GET", "/v1/subscriptions?page_size=1&page_token="+url.QueryEscape(token), b.keyB, nil)
	flipped := []byte(token)
	flipped[5] ^= 1
	if flipped[5] == '-' || flipped[5] == '_' {
		flipped[5] = 'A'
	}
	b.restJSON(t, http.StatusBadRequest, "GET", "/v1/subscriptions?page_size=1&page_token="+url.QueryEscape(string(flipped)), b.keyA, nil)
	// Unchanged, it works.
	b.restJSON(t, http.StatusOK, "GET", "/v1/subscriptions?page_size=1&page_token="+url.QueryEscape(token), b.keyA, nil)
}

// TestSecretsStayOutOfLogs: neither API keys nor webhook secrets reach the
// logs, even at debug level.
func TestSecretsStayOutOfLogs(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	created := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("s"))
	rotated := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions/"+created["id"].(string)+":rotateSecret", b.keyA, map[string]any{})
	b.rest(t, "GET", "/v1/subscriptions", "ofk_wrong", nil)
	logs := b.logs.String()
	if !strings.Contains(logs, "RotateSubscriptionSecret") {
		t.Fatalf("the debug log has no request lines; the check below would prove nothing:\n%s", logs)
	}
	for name, secret := range map[string]string{
		"API key": b.keyA, "webhook secret": created["secret"].(string), "rotated secret": rotated["secret"].(string), "wrong key": "ofk_wrong",
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains the %s", name)
		}
	}
}

// TestGrpcurlListsServices runs the real grpcurl (pinned in tools/go.mod)
// against the server's reflection service.
func TestGrpcurlListsServices(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	grpcurl := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "-modfile=../tools/go.mod", "grpcurl", "-plaintext"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := grpcurl("-H", "authorization: Bearer "+b.keyA, b.grpcURL, "list")
	if err != nil {
		t.Fatalf("grpcurl list: %v\n%s", err, out)
	}
	for _, svc := range []string{"outflow.v1.SubscriptionService", "outflow.v1.EventService", "grpc.health.v1.Health"} {
		if !strings.Contains(out, svc) {
			t.Errorf("grpcurl list does not show %s:\n%s", svc, out)
		}
	}
	// Reflection is an RPC like the others: no key, no answer.
	if out, err := grpcurl(b.grpcURL, "list"); err == nil || !strings.Contains(out, "Unauthenticated") {
		t.Errorf("grpcurl list without a key = %v\n%s; want Unauthenticated", err, out)
	}
	// And a call through it.
	out, err = grpcurl("-H", "authorization: Bearer "+b.keyA, "-d", `{"page_size": 5}`, b.grpcURL, "outflow.v1.SubscriptionService/ListSubscriptions")
	if err != nil {
		t.Fatalf("grpcurl ListSubscriptions: %v\n%s", err, out)
	}
	var answer map[string]any
	if err := json.Unmarshal([]byte(out), &answer); err != nil {
		t.Errorf("grpcurl ListSubscriptions printed %q, not a JSON answer: %v", out, err)
	}
}
