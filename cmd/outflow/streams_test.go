package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
)

// streamed is one event a stream client received.
type streamed struct {
	seq   int
	user  string
	token string
}

func toStreamed(ev *outflowv1.Event) streamed {
	rec := ev.GetRecord().GetFields()
	return streamed{
		seq:   int(rec["seq"].GetNumberValue()),
		user:  rec["entity_keys"].GetStructValue().GetFields()["user_id"].GetStringValue(),
		token: ev.GetResumeToken(),
	}
}

// TestStreamEvents: a gRPC client reconnecting with its last token five
// times during a 10k-record load receives every event; the same stream is
// NDJSON over HTTP; tampered and foreign tokens are refused; three shard
// clients split the events, one entity always on the same shard.
func TestStreamEvents(t *testing.T) {
	t.Parallel()
	env := newLoadEnv(t)
	subID := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "clicks stream", "feature_view_names": []string{fvClicks}, "stream": map[string]any{}}, 200)["id"].(string)
	otherID := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "views stream", "feature_view_names": []string{fvViews}, "stream": map[string]any{}}, 200)["id"].(string)

	conn, err := grpc.NewClient(env.gateway.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := outflowv1.NewEventServiceClient(conn)
	authed := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+env.key)
	open := func(ctx context.Context, req *outflowv1.StreamEventsRequest) grpc.ServerStreamingClient[outflowv1.StreamEventsResponse] {
		t.Helper()
		req.SubscriptionId = subID
		s, err := client.StreamEvents(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	recv := func(s grpc.ServerStreamingClient[outflowv1.StreamEventsResponse]) (streamed, error) {
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

	// Start at the live tail and wait for a first event, so the stream is
	// known to be reading before the load.
	base := time.Now().UTC()
	ctx, cancel := context.WithCancel(authed)
	s := open(ctx, &outflowv1.StreamEventsRequest{})
	first := firstEvent(t, env, s, base)

	// The load, with the client reconnecting from its last token five times.
	const n = 10_000
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for i := range 10 {
			env.produce(t, i*n/10, (i+1)*n/10, base)
		}
	}()
	var clicks []int
	for seq := range n {
		if _, _, fv, _ := testRecord(seq, base); fv == fvClicks {
			clicks = append(clicks, seq)
		}
	}
	seen := map[int]int{}
	reconnects := 0
	deadline := time.Now().Add(3 * time.Minute)
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
		if time.Now().After(deadline) {
			t.Fatalf("after %d reconnects, %d of %d events received", reconnects, len(seen), len(clicks))
		}
		ev, err := recv(s)
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		if ev.seq < n {
			seen[ev.seq]++
		}
		if reconnects < 5 && len(seen) >= (reconnects+1)*len(clicks)/6 {
			cancel() // disconnect, and come back with the last token
			ctx, cancel = context.WithCancel(authed)
			s = open(ctx, &outflowv1.StreamEventsRequest{ResumeToken: ev.token})
			reconnects++
		}
	}
	cancel()
	<-loadDone
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	if reconnects != 5 {
		t.Errorf("reconnected %d times, want 5", reconnects)
	}
	t.Logf("gRPC stream: all %d events across %d reconnects, %d duplicates", len(clicks), reconnects, dups)

	// NDJSON over HTTP, as curl -N would read it, from the first token.
	req, _ := http.NewRequest("GET", env.gateway.url("/v1/subscriptions/"+subID+"/events:stream?resume_token="+url.QueryEscape(first.token)), nil)
	req.Header.Set("Authorization", "Bearer "+env.key)
	hctx, hcancel := context.WithTimeout(context.Background(), time.Minute)
	resp, err := http.DefaultClient.Do(req.WithContext(hctx))
	if err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	parsed := 0
	for parsed < 100 && lines.Scan() {
		// Each line is the webhook's JSON plus resume_token (SPEC §5);
		// heartbeats carry no id.
		var ev struct {
			ID          string         `json:"id"`
			Record      map[string]any `json:"record"`
			ResumeToken string         `json:"resume_token"`
		}
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", parsed+1, err, lines.Text())
		}
		if ev.ID != "" {
			if !strings.HasPrefix(ev.ID, "evt_") || ev.Record["feature_view_name"] != fvClicks || ev.ResumeToken == "" {
				t.Fatalf("line %d = %s", parsed+1, lines.Text())
			}
			parsed++
		}
	}
	hcancel()
	resp.Body.Close()
	if parsed < 100 {
		t.Errorf("read %d NDJSON events, want 100: %v", parsed, lines.Err())
	}

	// Tampered and foreign tokens.
	for name, req := range map[string]*outflowv1.StreamEventsRequest{
		"tampered":      {SubscriptionId: subID, ResumeToken: first.token[:len(first.token)-2] + "AA"},
		"another sub's": {SubscriptionId: otherID, ResumeToken: first.token},
	} {
		s, err := client.StreamEvents(authed, req)
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s token: %v, want INVALID_ARGUMENT", name, err)
		}
	}

	// Three shard clients from the first token: every event on exactly one.
	// Each reads until it has as many distinct events as the documented hash
	// puts in its shard (partitions interleave, so no seq marks the end).
	want := make([]int, 3)
	for _, seq := range clicks {
		want[shardOfSeq(seq, base)]++
	}
	shardOf := map[int]int{}
	userShard := map[string]int{}
	for index := range 3 {
		sctx, scancel := context.WithTimeout(authed, time.Minute)
		s := open(sctx, &outflowv1.StreamEventsRequest{ResumeToken: first.token, Shard: &outflowv1.Shard{Index: int32(index), Count: 3}})
		mine := map[int]bool{}
		for len(mine) < want[index] {
			ev, err := recv(s)
			if err != nil {
				scancel()
				t.Fatalf("shard %d after %d of %d events: %v", index, len(mine), want[index], err)
			}
			if ev.seq >= n {
				continue
			}
			mine[ev.seq] = true
			if prev, dup := shardOf[ev.seq]; dup && prev != index {
				t.Errorf("record %d on shards %d and %d", ev.seq, prev, index)
			}
			shardOf[ev.seq] = index
			if prev, ok := userShard[ev.user]; ok && prev != index {
				t.Errorf("user %s on shards %d and %d", ev.user, prev, index)
			}
			userShard[ev.user] = index
		}
		scancel()
	}
	if len(shardOf) != len(clicks) {
		t.Errorf("the shards received %d distinct events, want %d", len(shardOf), len(clicks))
	}
	perShard := make([]int, 3)
	for _, sh := range shardOf {
		perShard[sh]++
	}
	t.Logf("3 shards split %d events as %v", len(shardOf), perShard)
}

// shardOfSeq computes a record's shard of 3 with the documented entity hash,
// as a user would.
func shardOfSeq(seq int, base time.Time) int {
	_, value, _, _ := testRecord(seq, base)
	rec, err := record.Decode(value, record.DecodeOptions{})
	if err != nil {
		panic(err)
	}
	return int(rec.EntityHash() % 3)
}
