package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFeatureServerLatency: `outflow featureserver --latency` answers no
// request sooner than the latency (a feature store across a network), and a
// negative one is refused before the server starts.
func TestFeatureServerLatency(t *testing.T) {
	t.Parallel()
	t.Run("negative refused", func(t *testing.T) {
		var stderr bytes.Buffer
		if code := run(t.Context(), []string{"featureserver", "--latency", "-1s"}, &bytes.Buffer{}, &stderr); code != 1 {
			t.Fatalf("exit %d, want 1; stderr: %s", code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "--latency") {
			t.Errorf("stderr does not name the flag: %s", stderr.String())
		}
	})
	t.Run("every answer waits", func(t *testing.T) {
		const latency = 150 * time.Millisecond
		addr := freeAddr(t)
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		var code int
		var stderr bytes.Buffer
		wg.Go(func() {
			code = run(ctx, []string{"featureserver", "--addr", addr, "--latency", latency.String(), "--log-level", "error"}, &bytes.Buffer{}, &stderr)
		})
		defer func() {
			cancel()
			wg.Wait()
			if code != 0 {
				t.Errorf("featureserver exited %d; stderr: %s", code, stderr.String())
			}
		}()
		body := `{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","join_key_map":{"user_id":"u1"}}}`
		deadline := time.Now().Add(30 * time.Second)
		for {
			start := time.Now()
			resp, err := http.Post("http://"+addr+"/api/v1/feature-service/get-features", "application/json", strings.NewReader(body))
			if err != nil {
				if time.Now().After(deadline) {
					t.Fatalf("the feature server never answered: %v", err)
				}
				time.Sleep(20 * time.Millisecond) // not listening yet
				continue
			}
			took := time.Since(start)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			if took < latency {
				t.Fatalf("answered in %v, sooner than --latency %v", took, latency)
			}
			return
		}
	})
}
