package dispatcher

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/outflow-dev/outflow/enrich"
	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/tecton"
	"github.com/outflow-dev/outflow/webhook"
)

// benchRecord is a record as Tecton writes it with include_features, about
// 400 bytes.
const benchRecord = `{"version":"1","producer":"tecton","job_type":"stream",` +
	`"feature_view_name":"user_items_added_to_cart","feature_view_id":"8d5a4e2c9f1b4c3a9e7d6f5a4b3c2d1e",` +
	`"feature_timestamp":"2022-06-07T00:36:08.832793Z",` +
	`"entity_keys":{"user_id":"user_4f2a9c81","merchant_id":"m_10293"},` +
	`"feature_values":{"items_added_count_1h":"3","items_added_count_24h":"11","last_item_id":"sku_88213",` +
	`"cart_value_usd":"143.25","distinct_categories_7d":"4"}}`

// BenchmarkEnvelopeEncodeSign is the per-delivery work between a matched
// record and the HTTP request: building the event body (without and with a
// feature vector of five features) and signing it. Allocations per op are
// the figure to watch: issue 10 measured body building at 19% of the CPU of
// a STRICT backlog.
func BenchmarkEnvelopeEncodeSign(b *testing.B) {
	secret, err := webhook.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		b.Fatal(err)
	}
	secrets := []webhook.Secret{secret}
	pos := source.Position{Kind: "kafka", Topic: "fv-output", Partition: 3, Offset: 1234}
	features, err := structpb.NewStruct(map[string]any{"a.x": 1.5, "a.y": "sku_1", "b.count_1h": 3.0, "b.count_24h": 11.0, "c.ltv": 1234.5})
	if err != nil {
		b.Fatal(err)
	}
	consistent := true
	fv := &outflowv1.FeatureVector{WorkspaceName: "prod", FeatureServiceName: "promo_fs", Consistent: &consistent,
		Attempts: 1, Features: features}
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	// The same five features as the feature store sends them: what the
	// webhook path (attempt) encodes.
	res := &enrich.Result{Consistent: &consistent, Attempts: 1, Vector: &tecton.Vector{Features: []tecton.Feature{
		{Name: "a.x", Value: json.RawMessage(`1.5`), Status: "PRESENT"},
		{Name: "a.y", Value: json.RawMessage(`"sku_1"`), Status: "PRESENT"},
		{Name: "b.count_1h", Value: json.RawMessage(`3`), Status: "PRESENT"},
		{Name: "b.count_24h", Value: json.RawMessage(`11`), Status: "PRESENT"},
		{Name: "c.ltv", Value: json.RawMessage(`1234.5`), Status: "PRESENT"},
	}}}
	for _, tt := range []struct {
		name   string
		encode func(*envelope) ([]byte, error)
	}{
		{"plain", func(env *envelope) ([]byte, error) { return env.body(nil), nil }},
		// enriched is attempt's path: the vector written from the result.
		{"enriched", func(env *envelope) ([]byte, error) {
			return env.bodyWith(res.JSONLen("prod", "promo_fs"), func(b []byte) []byte { return res.AppendJSON(b, "prod", "promo_fs") }), nil
		}},
		// enriched-proto is the stream package's path, from a message.
		{"enriched-proto", func(env *envelope) ([]byte, error) { return env.withVector(fv) }},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				env := newEnvelope("sub_0123456789abcdef", pos, []byte(benchRecord), now)
				body, err := tt.encode(env)
				if err != nil {
					b.Fatal(err)
				}
				_ = webhook.Sign(secrets, env.ID, now, body)
			}
		})
	}
}

// BenchmarkHandleTracing is one record through Handle to a delivered
// webhook (a sender that answers at once), without a TracerProvider and
// with one that samples every span: tracing off must cost nothing.
func BenchmarkHandleTracing(b *testing.B) {
	raw := []byte(`{"version":"1","feature_view_name":"fv","feature_timestamp":"2026-01-01T00:00:00Z","entity_keys":{"user_id":"u1"}}`)
	traceparent := []source.Header{{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}}
	for _, tt := range []struct {
		name string
		tp   trace.TracerProvider
	}{
		{"off", nil},
		{"on", sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(tracetest.NewNoopExporter())))},
	} {
		b.Run(tt.name, func(b *testing.B) {
			d, err := New(Params{Store: newFakeStore(), Sender: &traceSender{}, TracerProvider: tt.tp,
				Matcher: staticSubs{match.NewIndex([]*match.Subscription{webhookSub("sub_b", "https://ok.example.com")}, match.IndexOptions{})}})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Stop()
			var done atomic.Int64
			n := int64(0)
			b.ReportAllocs()
			for b.Loop() {
				m := source.NewMessage(source.Position{Kind: "kafka", Topic: "t", Offset: n}, nil, raw, time.Time{}, func() { done.Add(1) })
				m.Headers = traceparent
				d.Handle(b.Context(), m)
				n++
			}
			for done.Load() < n {
				time.Sleep(time.Millisecond) // a benchmark's drain, not a test's synchronisation
			}
		})
	}
}
