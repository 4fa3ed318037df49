package main

import (
	"context"
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

// streamClient opens StreamEvents on a gateway.
func streamClient(t *testing.T, g *gateway, key string) (outflowv1.EventServiceClient, context.Context) {
	t.Helper()
	conn, err := grpc.NewClient(g.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return outflowv1.NewEventServiceClient(conn), metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
}

// nextEvent receives the next event, skipping heartbeats.
func nextEvent(s grpc.ServerStreamingClient[outflowv1.StreamEventsResponse]) (streamed, error) {
	for {
		msg, err := s.Recv()
		if err != nil {
			return streamed{}, err
		}
		if msg.GetEvent() != nil {
			return toStreamed(msg.GetEvent()), nil
		}
	}
}

// firstEvent waits for a stream opened at the live tail to deliver its first
// event: the server resolves the tail after the RPC starts, so a record
// produced too early is before it. A click record is produced every 2s until
// one arrives. Only the first event is consumed.
func firstEvent(t *testing.T, env *loadEnv, s grpc.ServerStreamingClient[outflowv1.StreamEventsResponse], base time.Time) streamed {
	t.Helper()
	got := make(chan streamed, 1)
	failed := make(chan error, 1)
	go func() {
		ev, err := nextEvent(s)
		if err != nil {
			failed <- err
			return
		}
		got <- ev
	}()
	for i := 0; i < 30; i++ {
		env.produce(t, 1_000_000+3*i, 1_000_001+3*i, base) // a click (seq % 3 == 1)
		select {
		case ev := <-got:
			return ev
		case err := <-failed:
			t.Fatalf("stream: %v", err)
		case <-time.After(2 * time.Second):
		}
	}
	t.Fatal("the stream never delivered a warm-up event")
	return streamed{}
}

// TestSlowStreamClient: a client that stops reading is ended with
// RESOURCE_EXHAUSTED, while a fast client on the same subscription and a
// webhook subscription on the same feature view receive everything.
func TestSlowStreamClient(t *testing.T) {
	t.Parallel()
	env := newLoadEnv(t)
	subID := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "clicks stream", "feature_view_names": []string{fvClicks}, "stream": map[string]any{}}, 200)["id"].(string)
	hook := newReceiver(t)
	created := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "clicks hook", "feature_view_names": []string{fvClicks}, "webhook": map[string]any{"url": hook.srv.URL}}, 200)
	hook.mu.Lock()
	hook.secret = created["secret"].(string)
	hook.mu.Unlock()
	env.gateway.awaitSubscriptions(t, 2)

	client, authed := streamClient(t, env.gateway, env.key)
	base := time.Now().UTC()
	// Open the slow and fast clients at the live tail, then load.
	// The slow client has a fixed 64 KiB receive window (this also turns off
	// gRPC's dynamic window growth), as a real slow consumer would: otherwise
	// its transport would absorb megabytes and it would look fast.
	slowConn, err := grpc.NewClient(env.gateway.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer slowConn.Close()
	ctxSlow, cancelSlow := context.WithCancel(authed)
	defer cancelSlow()
	slow, err := outflowv1.NewEventServiceClient(slowConn).StreamEvents(ctxSlow, &outflowv1.StreamEventsRequest{SubscriptionId: subID})
	if err != nil {
		t.Fatal(err)
	}
	ctxFast, cancelFast := context.WithCancel(authed)
	defer cancelFast()
	fast, err := client.StreamEvents(ctxFast, &outflowv1.StreamEventsRequest{SubscriptionId: subID})
	if err != nil {
		t.Fatal(err)
	}
	// Streams resolve the live tail when they open: wait until the fast one
	// reads (the slow one opened first).
	firstEvent(t, env, fast, base)
	seen := map[int]bool{}
	const n = 12_000 // 4000 clicks: far more than the slow client's buffer holds
	env.produce(t, 0, n, base)
	var clicks []int
	for seq := range n {
		if _, _, fv, _ := testRecord(seq, base); fv == fvClicks {
			clicks = append(clicks, seq)
		}
	}
	for len(seen) < len(clicks) {
		ev, err := nextEvent(fast)
		if err != nil {
			t.Fatalf("fast client after %d events: %v", len(seen), err)
		}
		if ev.seq < n {
			seen[ev.seq] = true
		}
	}
	pollUntil(t, time.Minute, "the webhook subscription to receive every click", func() bool {
		got, _, _ := hook.snapshot()
		for _, c := range clicks {
			if got[c] == 0 {
				return false
			}
		}
		return true
	})
	// The gateway ends the slow stream once its buffer has stayed full for
	// the grace period: only the fast client is left connected.
	pollUntil(t, time.Minute, "the gateway to end the slow stream", func() bool {
		return strings.Contains(env.gateway.get(t, "/metrics"), "outflow_streams_connected 1\n")
	})
	// The slow client now reads: what its transport buffered, then the end.
	var slowErr error
	read := 0
	for read <= len(clicks) {
		if _, slowErr = nextEvent(slow); slowErr != nil {
			break
		}
		read++
	}
	if status.Code(slowErr) != codes.ResourceExhausted || !strings.Contains(slowErr.Error(), "resume_token") {
		t.Fatalf("the slow client ended with %v after %d events, want RESOURCE_EXHAUSTED telling it to resume", slowErr, read)
	}
	t.Logf("slow client cut off with RESOURCE_EXHAUSTED after %d of %d events; fast client and webhook got all", read, len(clicks))
}

// TestTwoReplicas: two gateways share the consumer group; one is killed with
// SIGKILL under load. No webhook pair is lost, and a stream client on the
// dead replica reconnects to the other with its token and sees no gap.
func TestTwoReplicas(t *testing.T) {
	t.Parallel()
	env := newLoadEnv(t)
	second := startGateway(t, env.databaseURL, env.gateway.args...)
	hook := newReceiver(t)
	created := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "clicks hook", "feature_view_names": []string{fvClicks}, "webhook": map[string]any{"url": hook.srv.URL, "max_in_flight": 32}}, 200)
	hook.mu.Lock()
	hook.secret = created["secret"].(string)
	hook.mu.Unlock()
	subID := second.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "clicks stream", "feature_view_names": []string{fvClicks}, "stream": map[string]any{}}, 200)["id"].(string)
	// Both replicas consume: each matcher must hold both subscriptions.
	env.gateway.awaitSubscriptions(t, 2)
	second.awaitSubscriptions(t, 2)

	// A stream client on the first replica, reading before the load.
	client, authed := streamClient(t, env.gateway, env.key)
	s, err := client.StreamEvents(authed, &outflowv1.StreamEventsRequest{SubscriptionId: subID})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().UTC()
	last := firstEvent(t, env, s, base)

	const n = 10_000
	var clicks []int
	for seq := range n {
		if _, _, fv, _ := testRecord(seq, base); fv == fvClicks {
			clicks = append(clicks, seq)
		}
	}
	seen := map[int]int{}
	env.produce(t, 0, n/2, base)
	for len(seen) < len(clicks)/4 {
		ev, err := nextEvent(s)
		if err != nil {
			t.Fatalf("stream on replica 1: %v", err)
		}
		if ev.seq < n {
			seen[ev.seq]++
		}
		last = ev
	}
	env.gateway.kill9() // the replica the stream client is on
	env.produce(t, n/2, n, base)

	// The client reconnects to the surviving replica with its last token.
	client2, authed2 := streamClient(t, second, env.key)
	s2, err := client2.StreamEvents(authed2, &outflowv1.StreamEventsRequest{SubscriptionId: subID, ResumeToken: last.token})
	if err != nil {
		t.Fatal(err)
	}
	for {
		complete := true
		for _, c := range clicks {
			if seen[c] == 0 {
				complete = false
				break
			}
		}
		if complete {
			break
		}
		ev, err := nextEvent(s2)
		if err != nil {
			t.Fatalf("stream on replica 2 after %d events: %v", len(seen), err)
		}
		if ev.seq < n {
			seen[ev.seq]++
		}
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	pollUntil(t, 3*time.Minute, "every webhook click delivered by the surviving replica", func() bool {
		got, _, _ := hook.snapshot()
		for _, c := range clicks {
			if got[c] == 0 {
				return false
			}
		}
		return true
	})
	got, badSig, _ := hook.snapshot()
	hookDups := 0
	for _, c := range got {
		hookDups += c - 1
	}
	if badSig > 0 {
		t.Errorf("%d webhook signatures failed verification", badSig)
	}
	t.Logf("replica 1 killed under load: stream complete on replica 2 (%d duplicates), webhook complete (%d duplicates)", dups, hookDups)
}
