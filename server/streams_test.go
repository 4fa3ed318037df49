package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/outflow-dev/outflow/dispatcher"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
)

// fakeStreams serves every stream from one list of records, built into
// envelopes by the dispatcher's own Envelope, then waits for more like a
// live tail. It stands in for the Kafka-backed streams (tested end to end in
// cmd/outflow) where the server's own behaviour is under test.
type fakeStreams struct {
	mu   sync.Mutex
	open int
	// sent are the envelopes handed out, in order.
	sent [][]byte
}

func (f *fakeStreams) Open(ctx context.Context, sub *store.Subscription, req server.StreamRequest) (server.EventStream, error) {
	f.mu.Lock()
	f.open++
	f.mu.Unlock()
	return &fakeStream{f: f, subID: sub.Proto.GetId()}, nil
}

func (f *fakeStreams) TokenAt(context.Context, *store.Subscription, time.Time) (string, error) {
	return "", nil
}

func (f *fakeStreams) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open
}

type fakeStream struct {
	f     *fakeStreams
	subID string
	next  int
	once  sync.Once
}

// fakeRecords are the records every fake stream starts with: the first at
// partition 0, offset 0, so that zero values must be present.
var fakeRecords = []source.Position{
	{Kind: "kafka", Topic: "fv-output", Partition: 0, Offset: 0},
	{Kind: "kafka", Topic: "fv-output", Partition: 3, Offset: 1 << 53},
}

func (s *fakeStream) Next(ctx context.Context) ([]byte, string, error) {
	if s.next < len(fakeRecords) {
		pos := fakeRecords[s.next]
		s.next++
		raw := fmt.Sprintf(`{"version":"1","feature_view_name":"fv","feature_timestamp":"2026-12-04T00:00:00Z","entity_keys":{"user_id":"u%d"},"extra":{"n":12345678901234567}}`, s.next)
		env, err := dispatcher.Envelope(s.subID, pos, []byte(raw), nil, time.Now())
		s.f.mu.Lock()
		s.f.sent = append(s.f.sent, env)
		s.f.mu.Unlock()
		return env, "tok-" + strconv.Itoa(s.next), err
	}
	<-ctx.Done()
	return nil, "", ctx.Err()
}

func (s *fakeStream) Close() {
	s.once.Do(func() {
		s.f.mu.Lock()
		s.f.open--
		s.f.mu.Unlock()
	})
}

// metadataCtx authenticates gRPC calls made with ctx with key.
func metadataCtx(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// streamSub creates a stream subscription for key and returns its id.
func (b *bundle) streamSub(t *testing.T, key, name string) string {
	t.Helper()
	return b.restJSON(t, 200, "POST", "/v1/subscriptions", key, map[string]any{
		"name": name, "feature_view_names": []string{"fv"}, "stream": map[string]any{}})["id"].(string)
}

// openNDJSON opens an NDJSON stream; the caller closes the body.
func (b *bundle) openNDJSON(t *testing.T, ctx context.Context, key, subID string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.httpURL+"/v1/subscriptions/"+subID+"/events:stream", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestNDJSONLinesAreTheWebhookJSON: each NDJSON line is the envelope the
// dispatcher builds for webhooks, byte for byte, plus resume_token; no
// wrapper, int64 as numbers, zero partition and offset present.
func TestNDJSONLinesAreTheWebhookJSON(t *testing.T) {
	t.Parallel()
	fs := &fakeStreams{}
	b := setupStreams(t, server.Config{}, fs)
	subID := b.streamSub(t, b.keyA, "ndjson")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := b.openNDJSON(t, ctx, b.keyA, subID)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("= %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	lines := bufio.NewScanner(resp.Body)
	// The first line is a heartbeat: the stream is open.
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), `{"heartbeat_time":"`) {
		t.Fatalf("first line = %s, %v; want a heartbeat", lines.Text(), lines.Err())
	}
	for i, pos := range fakeRecords {
		if !lines.Scan() {
			t.Fatalf("line %d: %v", i+1, lines.Err())
		}
		fs.mu.Lock()
		env := fs.sent[i]
		fs.mu.Unlock()
		if want := string(env[:len(env)-1]) + `,"resume_token":"tok-` + strconv.Itoa(i+1) + `"}`; lines.Text() != want {
			t.Errorf("line %d =\n%s\nwant the webhook envelope plus resume_token:\n%s", i+1, lines.Text(), want)
		}
		var got map[string]any
		dec := json.NewDecoder(bytes.NewReader(lines.Bytes()))
		dec.UseNumber()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, lines.Text())
		}
		if got["resume_token"] != "tok-"+strconv.Itoa(i+1) {
			t.Errorf("line %d: resume_token = %v", i+1, got["resume_token"])
		}
		delete(got, "resume_token")
		var want map[string]any
		wantEnv, _ := dispatcher.Envelope(subID, pos, []byte("{}"), nil, time.Now())
		_ = json.Unmarshal(wantEnv, &want)
		src, _ := got["source"].(map[string]any)
		if src["partition"] != json.Number(strconv.Itoa(int(pos.Partition))) || src["offset"] != json.Number(strconv.FormatInt(pos.Offset, 10)) {
			t.Errorf("line %d: source = %v, want partition %d and offset %d as JSON numbers", i+1, src, pos.Partition, pos.Offset)
		}
		if got["id"] != want["id"] || got["subscription_id"] != subID || got["type"] != "feature_view.output" {
			t.Errorf("line %d: %s", i+1, lines.Text())
		}
		rec, _ := got["record"].(map[string]any)
		if extra, _ := rec["extra"].(map[string]any); extra["n"] != json.Number("12345678901234567") {
			t.Errorf("line %d: record.extra = %v, want its int64 untouched", i+1, rec["extra"])
		}
		if _, wrapped := got["result"]; wrapped {
			t.Errorf("line %d is wrapped: %s", i+1, lines.Text())
		}
	}
}

// TestStreamLimits: past the per-subscription and per-tenant limits, new
// streams get RESOURCE_EXHAUSTED over gRPC and 429 with Retry-After over
// HTTP; closing one frees its slot; another tenant is not affected.
func TestStreamLimits(t *testing.T) {
	t.Parallel()
	fs := &fakeStreams{}
	b := setupStreams(t, server.Config{MaxStreamsPerSubscription: 2, MaxStreamsPerTenant: 3}, fs)
	subA1 := b.streamSub(t, b.keyA, "a1")
	subA2 := b.streamSub(t, b.keyA, "a2")
	subB := b.streamSub(t, b.keyB, "b")
	events := outflowv1.NewEventServiceClient(b.conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	openGRPC := func(ctx context.Context, key, subID string) (grpc.ServerStreamingClient[outflowv1.StreamEventsResponse], error) {
		s, err := events.StreamEvents(metadataCtx(ctx, key), &outflowv1.StreamEventsRequest{SubscriptionId: subID})
		if err != nil {
			return nil, err
		}
		_, err = s.Recv() // the first event, or the refusal
		return s, err
	}
	if _, err := openGRPC(ctx, b.keyA, subA1); err != nil {
		t.Fatal(err)
	}
	resp := b.openNDJSON(t, ctx, b.keyA, subA1)
	if resp.StatusCode != 200 {
		t.Fatalf("second stream: %d", resp.StatusCode)
	}
	defer resp.Body.Close()

	// The subscription's third stream is refused, both ways.
	if _, err := openGRPC(ctx, b.keyA, subA1); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("third gRPC stream of a subscription: %v, want RESOURCE_EXHAUSTED", err)
	}
	refused := b.openNDJSON(t, ctx, b.keyA, subA1)
	body, _ := io.ReadAll(refused.Body)
	refused.Body.Close()
	if refused.StatusCode != http.StatusTooManyRequests || refused.Header.Get("Retry-After") == "" {
		t.Errorf("third NDJSON stream of a subscription: %d, Retry-After %q: %s", refused.StatusCode, refused.Header.Get("Retry-After"), body)
	}

	// The tenant's fourth stream is refused, on another subscription too.
	if _, err := openGRPC(ctx, b.keyA, subA2); err != nil {
		t.Fatalf("tenant's third stream: %v", err)
	}
	if _, err := openGRPC(ctx, b.keyA, subA2); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("tenant's fourth stream: %v, want RESOURCE_EXHAUSTED", err)
	}
	// Another tenant has its own budget.
	if _, err := openGRPC(ctx, b.keyB, subB); err != nil {
		t.Errorf("other tenant: %v", err)
	}

	// Closing the NDJSON stream frees a slot of subA1 and of the tenant.
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := openGRPC(ctx, b.keyA, subA1)
		if err == nil {
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("after closing a stream: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling for the server to notice the close
	}
}

// TestRevokedKeyEndsItsStreams: a stream open with a key that is then
// revoked ends within 5 s, over gRPC and NDJSON; a stream of another key
// stays open.
func TestRevokedKeyEndsItsStreams(t *testing.T) {
	t.Parallel()
	fs := &fakeStreams{}
	b := setupStreams(t, server.Config{}, fs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key, victim, err := b.store.CreateAPIKey(ctx, "tenant-a", "to revoke")
	if err != nil {
		t.Fatal(err)
	}
	subID := b.streamSub(t, b.keyA, "revoked")
	events := outflowv1.NewEventServiceClient(b.conn)
	open := func(k string) grpc.ServerStreamingClient[outflowv1.StreamEventsResponse] {
		s, err := events.StreamEvents(metadataCtx(ctx, k), &outflowv1.StreamEventsRequest{SubscriptionId: subID})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	doomed, kept := open(victim), open(b.keyA)
	resp := b.openNDJSON(t, ctx, victim, subID)
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	if !lines.Scan() {
		t.Fatal("no first NDJSON line")
	}

	if err := b.store.RevokeAPIKey(ctx, key.ID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := doomed.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	ndjsonEnded := make(chan string, 1)
	go func() {
		last := ""
		for lines.Scan() {
			last = lines.Text()
		}
		ndjsonEnded <- last
	}()
	select {
	case err := <-ended:
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("gRPC stream ended with %v, want UNAUTHENTICATED", err)
		}
		t.Logf("gRPC stream ended %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked key's gRPC stream is still open after 5s")
	}
	select {
	case last := <-ndjsonEnded:
		var line struct {
			Error struct {
				Code int `json:"code"`
			} `json:"error"`
		}
		if json.Unmarshal([]byte(last), &line) != nil || line.Error.Code != int(codes.Unauthenticated) {
			t.Errorf("NDJSON stream's last line = %s, want an UNAUTHENTICATED error", last)
		}
	case <-time.After(5*time.Second - time.Since(revoked)):
		t.Fatal("the revoked key's NDJSON stream is still open after 5s")
	}
	// The other key's stream goes on.
	if err := kept.Context().Err(); err != nil {
		t.Errorf("the other key's stream ended: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for fs.count() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams open on the server, want 1 (the other key's)", fs.count())
		}
		time.Sleep(10 * time.Millisecond) // polling the server's bookkeeping
	}
}
