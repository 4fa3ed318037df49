package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/outflow-dev/outflow/dispatcher"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/source"
)

// wireEvent is the one type a receiver writes for Outflow's events (SPEC
// §5): a webhook body and an NDJSON stream line decode into it strictly
// (unknown fields refused), and a gRPC Event converts into it.
type wireEvent struct {
	ID             string         `json:"id"`
	Type           string         `json:"type"`
	SubscriptionID string         `json:"subscription_id"`
	CreatedAt      time.Time      `json:"created_at"`
	Record         map[string]any `json:"record"`
	FeatureVector  *wireVector    `json:"feature_vector"`
	Source         wireSource     `json:"source"`
	ResumeToken    string         `json:"resume_token"`
}

type wireVector struct {
	WorkspaceName      string                  `json:"workspace_name"`
	FeatureServiceName string                  `json:"feature_service_name"`
	Features           map[string]any          `json:"features"`
	Metadata           map[string]wireMetadata `json:"metadata"`
	Consistent         *bool                   `json:"consistent"`
	Attempts           int32                   `json:"attempts"`
}

type wireMetadata struct {
	EffectiveTime *time.Time `json:"effective_time"`
	Status        string     `json:"status"`
}

// wireSource has pointers so that an absent partition or offset (dropped
// because it is zero) is told apart from a present 0.
type wireSource struct {
	Kind      string `json:"kind"`
	Topic     string `json:"topic"`
	Partition *int32 `json:"partition"`
	Offset    *int64 `json:"offset"`
}

func decodeWire(t *testing.T, what string, raw []byte) wireEvent {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var ev wireEvent
	if err := dec.Decode(&ev); err != nil {
		t.Fatalf("%s does not decode into the one event type: %v\n%s", what, err, raw)
	}
	return ev
}

// fromProto is what a gRPC client reads, in the same type.
func fromProto(ev *outflowv1.Event) wireEvent {
	out := wireEvent{
		ID: ev.GetId(), Type: ev.GetType(), SubscriptionID: ev.GetSubscriptionId(),
		CreatedAt: ev.GetCreatedAt().AsTime(), Record: ev.GetRecord().AsMap(), ResumeToken: ev.GetResumeToken(),
	}
	partition, offset := ev.GetSource().GetPartition(), ev.GetSource().GetOffset()
	out.Source = wireSource{Kind: ev.GetSource().GetKind(), Topic: ev.GetSource().GetTopic(), Partition: &partition, Offset: &offset}
	if fv := ev.GetFeatureVector(); fv != nil {
		v := &wireVector{WorkspaceName: fv.GetWorkspaceName(), FeatureServiceName: fv.GetFeatureServiceName(),
			Features: fv.GetFeatures().AsMap(), Metadata: map[string]wireMetadata{}, Attempts: fv.GetAttempts()}
		if fv.Consistent != nil {
			c := fv.GetConsistent()
			v.Consistent = &c
		}
		for name, m := range fv.GetMetadata() {
			md := wireMetadata{Status: m.GetStatus()}
			if m.GetEffectiveTime() != nil {
				et := m.GetEffectiveTime().AsTime()
				md.EffectiveTime = &et
			}
			v.Metadata[name] = md
		}
		out.FeatureVector = v
	}
	return out
}

// rawReceiver keeps the verified webhook bodies as they arrived.
type rawReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	secret string
	bodies [][]byte
	bad    int
}

func newRawReceiver(t *testing.T) *rawReceiver {
	r := &rawReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(r.secret)
		if err == nil {
			err = wh.Verify(body, req.Header)
		}
		if err != nil {
			r.bad++
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.bodies = append(r.bodies, body)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *rawReceiver) first() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bodies) == 0 {
		return nil
	}
	return r.bodies[0]
}

// TestOneEventThreeWays: the same record, read by a webhook receiver, an
// NDJSON client and a gRPC client, decodes into one Go type and agrees field
// by field (SPEC §5). The record is the topic's first, at partition 0 and
// offset 0, so zero values must be present; it carries an integer beyond
// 2^53 in an unknown field, which must pass through. The subscriptions
// enrich with STRICT consistency, so the vectors are the same.
func TestOneEventThreeWays(t *testing.T) {
	t.Parallel()
	env := newLoadEnvPartitions(t, 1)
	recv := newRawReceiver(t)
	enrichment := map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs", "consistency": "STRICT", "consistency_timeout": "30s"}
	created := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "cart hook", "feature_view_names": []string{fvCart}, "enrichment": enrichment,
		"webhook": map[string]any{"url": recv.srv.URL + "/hook"}}, 200)
	hookID := created["id"].(string)
	recv.mu.Lock()
	recv.secret = created["secret"].(string)
	recv.mu.Unlock()
	streamID := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "cart stream", "feature_view_names": []string{fvCart}, "enrichment": enrichment, "stream": map[string]any{}}, 200)["id"].(string)
	env.gateway.awaitSubscriptions(t, 2)
	// A token at the start of the (empty) topic: the streams read the record
	// whenever they connect.
	token := env.gateway.api(t, env.key, "POST", "/v1/subscriptions/"+streamID+":replay", map[string]any{
		"start_time": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}, 200)["resume_token"].(string)

	_, value, _, _ := testRecord(0, time.Now().UTC())
	var rec map[string]any
	_ = json.Unmarshal(value, &rec)
	rec["big"] = json.Number("9007199254740993") // 2^53 + 1
	value, _ = json.Marshal(rec)
	env.produceMessages(t, []kafkago.Message{{Key: []byte("vip_0"), Value: value}})
	pos := source.Position{Kind: "kafka", Topic: env.topic, Partition: 0, Offset: 0}

	// Webhook.
	pollUntil(t, 60*time.Second, "the webhook delivery", func() bool { return recv.first() != nil })
	hook := decodeWire(t, "the webhook body", recv.first())

	// NDJSON.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", env.gateway.url("/v1/subscriptions/"+streamID+"/events:stream?resume_token="+url.QueryEscape(token)), nil)
	req.Header.Set("Authorization", "Bearer "+env.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	for {
		if !lines.Scan() {
			t.Fatalf("no NDJSON event (HTTP %d): %v", resp.StatusCode, lines.Err())
		}
		if !bytes.HasPrefix(lines.Bytes(), []byte(`{"heartbeat_time":`)) {
			break
		}
	}
	ndjson := decodeWire(t, "the NDJSON line", lines.Bytes())

	// gRPC.
	conn, err := grpc.NewClient(env.gateway.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := outflowv1.NewEventServiceClient(conn).StreamEvents(
		metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+env.key),
		&outflowv1.StreamEventsRequest{SubscriptionId: streamID, ResumeToken: token})
	if err != nil {
		t.Fatal(err)
	}
	var viaGRPC wireEvent
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("gRPC stream: %v", err)
		}
		if msg.GetEvent() != nil {
			viaGRPC = fromProto(msg.GetEvent())
			break
		}
	}

	// Each has its subscription's id and event id, and a resume token only
	// on streams.
	for _, c := range []struct {
		name  string
		ev    wireEvent
		sub   string
		token bool
	}{{"webhook", hook, hookID, false}, {"NDJSON", ndjson, streamID, true}, {"gRPC", viaGRPC, streamID, true}} {
		if c.ev.SubscriptionID != c.sub || c.ev.ID != dispatcher.EventID(c.sub, pos) || (c.ev.ResumeToken != "") != c.token {
			t.Errorf("%s: subscription %s, id %s, resume_token %q; want %s, %s, token %v",
				c.name, c.ev.SubscriptionID, c.ev.ID, c.ev.ResumeToken, c.sub, dispatcher.EventID(c.sub, pos), c.token)
		}
		if c.ev.Source.Partition == nil || *c.ev.Source.Partition != 0 || c.ev.Source.Offset == nil || *c.ev.Source.Offset != 0 {
			t.Errorf("%s: source = %+v, want partition 0 and offset 0 present", c.name, c.ev.Source)
		}
		if c.ev.FeatureVector == nil || c.ev.FeatureVector.Consistent == nil || !*c.ev.FeatureVector.Consistent || c.ev.FeatureVector.Attempts < 1 {
			t.Errorf("%s: feature_vector = %+v, want a consistent one", c.name, c.ev.FeatureVector)
		}
	}
	if ndjson.ID != viaGRPC.ID || ndjson.ResumeToken != viaGRPC.ResumeToken {
		t.Errorf("NDJSON and gRPC disagree on id or token: %s %s / %s %s", ndjson.ID, ndjson.ResumeToken, viaGRPC.ID, viaGRPC.ResumeToken)
	}
	// Field by field. What may differ: the ids and subscription (two
	// subscriptions), created_at (each built its envelope), the token (webhooks
	// have none), and attempts (each enrichment polled the feature store on
	// its own until it was consistent).
	norm := func(ev wireEvent) wireEvent {
		ev.ID, ev.SubscriptionID, ev.CreatedAt, ev.ResumeToken = "", "", time.Time{}, ""
		if ev.FeatureVector != nil {
			v := *ev.FeatureVector
			v.Attempts = 0
			ev.FeatureVector = &v
		}
		return ev
	}
	for name, ev := range map[string]wireEvent{"NDJSON": ndjson, "gRPC": viaGRPC} {
		a, b := norm(hook), norm(ev)
		if !reflect.DeepEqual(a.Record, b.Record) {
			t.Errorf("%s record differs from the webhook's:\n%v\n%v", name, b.Record, a.Record)
		}
		if !reflect.DeepEqual(a.Source, b.Source) {
			t.Errorf("%s source differs from the webhook's: %+v, %+v", name, b.Source, a.Source)
		}
		if !reflect.DeepEqual(a.FeatureVector, b.FeatureVector) {
			t.Errorf("%s feature_vector differs from the webhook's:\n%+v\n%+v", name, b.FeatureVector, a.FeatureVector)
		}
		if a.Type != b.Type {
			t.Errorf("%s type %q, webhook %q", name, b.Type, a.Type)
		}
	}
	// The big integer kept its digits where JSON passes through untouched.
	if !bytes.Contains(recv.first(), []byte(`"big":9007199254740993`)) || !bytes.Contains(lines.Bytes(), []byte(`"big":9007199254740993`)) {
		t.Errorf("the record's int64 changed on its way:\nwebhook %s\nNDJSON  %s", recv.first(), lines.Bytes())
	}
	t.Logf("webhook, NDJSON and gRPC agree on event %s (partition 0, offset 0)", hook.ID)
}
