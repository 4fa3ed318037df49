package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStreamLimitsAndRevocation, on the binary and the real broker: past
// --max-streams-per-subscription a stream gets 429 with Retry-After; a key
// revoked with `outflow apikey revoke` ends its open streams within 5 s,
// while a stream of another key goes on.
func TestStreamLimitsAndRevocation(t *testing.T) {
	t.Parallel()
	env := newLoadEnv(t, "--max-streams-per-subscription", "2")
	other := runOutflow(t, env.databaseURL, "apikey", "create", "--tenant", "e2e", "--name", "to revoke")
	var otherID string
	for _, line := range strings.Split(runOutflow(t, env.databaseURL, "apikey", "list"), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "to" {
			otherID = f[0]
		}
	}
	if otherID == "" {
		t.Fatal("the new key is not listed")
	}
	subID := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "clicks stream", "feature_view_names": []string{fvClicks}, "stream": map[string]any{}}, 200)["id"].(string)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	open := func(key string) (*http.Response, *bufio.Scanner) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", env.gateway.url("/v1/subscriptions/"+subID+"/events:stream"), nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp, bufio.NewScanner(resp.Body)
	}
	doomed, doomedLines := open(other)
	kept, keptLines := open(env.key)
	for _, r := range []*http.Response{doomed, kept} {
		if r.StatusCode != 200 {
			t.Fatalf("stream: HTTP %d", r.StatusCode)
		}
	}
	for _, l := range []*bufio.Scanner{doomedLines, keptLines} {
		if !l.Scan() { // the opening heartbeat
			t.Fatalf("no first line: %v", l.Err())
		}
	}
	refused, _ := open(env.key)
	body, _ := io.ReadAll(refused.Body)
	if refused.StatusCode != http.StatusTooManyRequests || refused.Header.Get("Retry-After") == "" {
		t.Errorf("third stream: HTTP %d, Retry-After %q: %s; want 429 with Retry-After", refused.StatusCode, refused.Header.Get("Retry-After"), body)
	}

	runOutflow(t, env.databaseURL, "apikey", "revoke", otherID)
	revoked := time.Now()
	ended := make(chan string, 1)
	go func() {
		last := ""
		for doomedLines.Scan() {
			last = doomedLines.Text()
		}
		ended <- last
	}()
	select {
	case last := <-ended:
		if !strings.Contains(last, `"code":16`) {
			t.Errorf("the revoked key's stream ended with %q, want an UNAUTHENTICATED error line", last)
		}
		t.Logf("the revoked key's stream ended %s after `apikey revoke`", time.Since(revoked).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked key's stream is still open 5s after the key was revoked")
	}
	// The other key's stream still delivers: a record reaches it.
	got := make(chan string, 1)
	go func() {
		for keptLines.Scan() {
			if strings.Contains(keptLines.Text(), `"id":"evt_`) {
				got <- keptLines.Text()
				return
			}
		}
		got <- ""
	}()
	base := time.Now().UTC()
	for i := 0; ; i++ {
		env.produce(t, 3*i+1, 3*i+2, base) // a click
		select {
		case line := <-got:
			if line == "" {
				t.Fatal("the other key's stream ended")
			}
			return
		case <-time.After(2 * time.Second):
		}
		if i == 15 {
			t.Fatal("the other key's stream delivered nothing")
		}
	}
}
