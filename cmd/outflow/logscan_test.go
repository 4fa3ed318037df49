package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// TestDebugLogsHoldNoSecrets runs the gateway at debug level through a full
// life: subscriptions created, webhook events delivered with enrichment (the
// feature store called with its key), a failing receiver, a stream, a stream
// whose enrichment can never succeed (it ends with FAILED_PRECONDITION, not
// INTERNAL), two secret rotations, a test event, calls with a wrong key. Its
// logs must hold no API key, webhook secret (whsec_… or its base64 body),
// feature-store key or secret-encryption key (SPEC §7).
func TestDebugLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	var b [16]byte
	_, _ = rand.Read(b[:])
	tectonKey := "tk-logscan-" + hex.EncodeToString(b[:])
	env := newLoadEnv(t, "--log-level", "debug", "--log-format", "json", "--tecton-api-key", tectonKey)
	var secrets []string

	recv := newRawReceiver(t)
	created := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "carts", "feature_view_names": []string{fvCart},
		"enrichment": map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs", "consistency": "STRICT"},
		"webhook":    map[string]any{"url": recv.srv.URL + "/hook", "headers": map[string]string{"x-receiver-token": "hdr-" + tectonKey[11:27]}}}, 200)
	hookID := created["id"].(string)
	recv.mu.Lock()
	recv.secret = created["secret"].(string)
	recv.mu.Unlock()
	secrets = append(secrets, created["secret"].(string))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	broken := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "broken", "feature_view_names": []string{fvCart}, "webhook": map[string]any{"url": "http://" + closed + "/hook?token=q-" + tectonKey[11:27]}}, 200)
	secrets = append(secrets, broken["secret"].(string))

	badStream := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "unknown service", "feature_view_names": []string{fvCart},
		"enrichment": map[string]any{"workspace_name": "prod", "feature_service_name": "no_such_service"},
		"stream":     map[string]any{}}, 200)["id"].(string)
	// The loop below produces only until the stream ends: the matcher must
	// hold all three first.
	env.gateway.awaitSubscriptions(t, 3)

	// The stream whose enrichment cannot succeed, opened at the live tail;
	// cart records are produced until it ends.
	conn, err := grpc.NewClient(env.gateway.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+env.key), 2*time.Minute)
	defer cancel()
	s, err := outflowv1.NewEventServiceClient(conn).StreamEvents(ctx, &outflowv1.StreamEventsRequest{SubscriptionId: badStream})
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := s.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	base := time.Now().UTC()
	var streamErr error
	for i := 0; streamErr == nil; i++ {
		if i == 30 {
			t.Fatal("the stream with an unknown feature service did not end")
		}
		env.produce(t, 3*i, 3*i+1, base) // a cart record (seq % 3 == 0)
		select {
		case streamErr = <-ended:
		case <-time.After(2 * time.Second):
		}
	}
	if st := status.Convert(streamErr); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "no_such_service") {
		t.Errorf("stream with an unknown feature service ended with %v, want FAILED_PRECONDITION naming the service", streamErr)
	}
	pollUntil(t, 60*time.Second, "a delivered webhook", func() bool { return recv.first() != nil })
	pollUntil(t, 60*time.Second, "a failed delivery in the retry queue", func() bool {
		return len(env.deliveries(t, broken["id"].(string), "RETRYING")) > 0
	})

	for range 2 {
		rotated := env.gateway.api(t, env.key, "POST", "/v1/subscriptions/"+hookID+":rotateSecret", map[string]any{}, 200)
		secrets = append(secrets, rotated["secret"].(string))
		recv.mu.Lock()
		recv.secret = rotated["secret"].(string)
		recv.mu.Unlock()
	}
	if got := env.gateway.api(t, env.key, "POST", "/v1/subscriptions/"+hookID+":test", map[string]any{}, 200); got["status_code"] != float64(200) {
		t.Errorf(":test = %v, want the receiver's status", got)
	}
	if got := env.gateway.api(t, env.key, "POST", "/v1/subscriptions/"+broken["id"].(string)+":test", map[string]any{}, 200); strings.Contains(got["error"].(string), "127.0.0.1") {
		t.Errorf(":test of a closed port = %v: the address must not reach the tenant", got)
	}
	wrongKey := "ofk_" + hex.EncodeToString(b[:]) + "wrong"
	env.gateway.api(t, wrongKey, "GET", "/v1/subscriptions", nil, 401)
	env.gateway.stop() // flush and end the logs
	recv.mu.Lock()
	if recv.bad != 0 {
		t.Errorf("%d webhook requests failed verification", recv.bad)
	}
	recv.mu.Unlock()

	logs := env.gateway.logs.String()
	if !strings.Contains(logs, `"msg":"webhook attempt"`) || !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Fatalf("the gateway did not log at debug level:\n%s", tail(logs, 2000))
	}
	needles := map[string]string{
		"API key": env.key, "wrong API key": wrongKey, "feature-store key": tectonKey,
		"secret-encryption key": strings.SplitN(testSecretKeys, ":", 2)[1],
		"webhook header value":  "hdr-" + tectonKey[11:27], "webhook URL query": "q-" + tectonKey[11:27],
	}
	for i, sec := range secrets {
		needles["webhook secret "+string(rune('A'+i))] = sec
		needles["webhook secret body "+string(rune('A'+i))] = strings.TrimPrefix(sec, "whsec_")
	}
	for what, needle := range needles {
		if needle == "" || strings.Contains(logs, needle) {
			t.Errorf("the debug logs hold the %s", what)
		}
	}
	t.Logf("%d bytes of debug logs (%d lines) hold none of %d secrets", len(logs), strings.Count(logs, "\n"), len(needles))
}
