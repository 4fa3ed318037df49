package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outflow-dev/outflow/enrich"
	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/tecton"
	"github.com/outflow-dev/outflow/webhook"
)

// catchingUpStore is a feature store that answers, for the record's feature
// view, a value effective before the record on its first call and one
// effective after it from then on: the consistency loop makes two calls.
type catchingUpStore struct {
	calls  atomic.Int32
	record time.Time
}

func (s *catchingUpStore) GetFeatures(ctx context.Context, req tecton.Request) (*tecton.Vector, error) {
	effective := s.record.Add(-time.Minute)
	if s.calls.Add(1) > 1 {
		effective = s.record.Add(time.Second)
	}
	return &tecton.Vector{Features: []tecton.Feature{{Name: "fv.count", FeatureView: "fv", Value: json.RawMessage(`"3"`),
		Status: "PRESENT", EffectiveTime: effective, HasEffectiveTime: true}}}, nil
}

func (s *catchingUpStore) GetFeaturesBatch(ctx context.Context, reqs []tecton.Request) ([]*tecton.Vector, error) {
	return getEach(ctx, reqs, s.GetFeatures)
}

// getEach answers a batch call row by row with get, as a fake store's
// GetFeaturesBatch.
func getEach(ctx context.Context, reqs []tecton.Request, get func(context.Context, tecton.Request) (*tecton.Vector, error)) ([]*tecton.Vector, error) {
	out := make([]*tecton.Vector, len(reqs))
	for i, r := range reqs {
		v, err := get(ctx, r)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// traceSender keeps the trace headers of each request.
type traceSender struct {
	mu     sync.Mutex
	traces []map[string]string
}

func (s *traceSender) Send(ctx context.Context, req webhook.Request) webhook.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.traces = append(s.traces, req.Trace)
	return webhook.Result{StatusCode: 204, Outcome: webhook.OutcomeDelivered}
}

func enrichedSub(id string) *match.Subscription {
	return match.Compile(nil, &store.Subscription{TenantID: "ten_1", Revision: 1,
		Secrets: store.Secrets{Current: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		Proto: &outflowv1.Subscription{Id: id, FeatureViewNames: []string{"fv"}, State: outflowv1.Subscription_ACTIVE,
			Target:      &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{Url: "https://ok.example.com"}},
			Enrichment:  &outflowv1.Enrichment{WorkspaceName: "prod", FeatureServiceName: "fs"},
			RetryPolicy: &outflowv1.RetryPolicy{MaxAttempts: 5}}})
}

// TestTraceOfOneRecord checks the span tree of one record read with a W3C
// trace context in its Kafka headers: the record's span continues that
// trace; decoding, matching and the delivery attempt are its children; the
// enrichment is the attempt's child with one event per feature-store call;
// the webhook request carries the attempt's traceparent.
func TestTraceOfOneRecord(t *testing.T) {
	t.Parallel()
	const (
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		parent  = "00f067aa0ba902b7"
	)
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	featureTime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fs := &catchingUpStore{record: featureTime}
	enricher, err := enrich.New(enrich.Config{Store: fs, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sender := &traceSender{}
	d, err := New(Params{Store: newFakeStore(), Sender: sender, Enricher: enricher, TracerProvider: tp,
		Matcher: staticSubs{match.NewIndex([]*match.Subscription{enrichedSub("sub_traced")}, match.IndexOptions{})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)

	var done atomic.Int64
	raw := fmt.Appendf(nil, `{"version":"1","feature_view_name":"fv","feature_timestamp":%q,"entity_keys":{"user_id":"u1"}}`,
		featureTime.Format(time.RFC3339Nano))
	m := source.NewMessage(source.Position{Kind: "kafka", Topic: "t", Partition: 2, Offset: 7}, nil, raw, time.Now(),
		func() { done.Add(1) })
	m.Headers = []source.Header{{Key: "other", Value: []byte("x")}, {Key: "traceparent", Value: []byte("00-" + traceID + "-" + parent + "-01")}}
	d.Handle(t.Context(), m)
	eventually(t, "the record delivered", func() bool { return done.Load() == 1 })

	spans := map[string]tracetest.SpanStub{}
	for _, s := range exporter.GetSpans() {
		if _, dup := spans[s.Name]; dup {
			t.Fatalf("more than one span %q", s.Name)
		}
		spans[s.Name] = s
	}
	rec := spans["outflow.record"]
	if rec.SpanContext.TraceID().String() != traceID || rec.Parent.SpanID().String() != parent || !rec.Parent.IsRemote() {
		t.Fatalf("outflow.record is not the child of the record's traceparent: trace %s parent %s",
			rec.SpanContext.TraceID(), rec.Parent.SpanID())
	}
	if rec.SpanKind != trace.SpanKindConsumer {
		t.Errorf("outflow.record kind = %v, want consumer", rec.SpanKind)
	}
	for _, tt := range []struct{ child, parent string }{
		{"outflow.decode", "outflow.record"},
		{"outflow.match", "outflow.record"},
		{"outflow.deliver", "outflow.record"},
		{"outflow.enrich", "outflow.deliver"},
	} {
		c, ok := spans[tt.child]
		if !ok {
			t.Errorf("no span %s; have %v", tt.child, len(spans))
			continue
		}
		if c.Parent.SpanID() != spans[tt.parent].SpanContext.SpanID() || c.SpanContext.TraceID() != rec.SpanContext.TraceID() {
			t.Errorf("%s is not a child of %s", tt.child, tt.parent)
		}
	}
	var outcomes []string
	for _, e := range spans["outflow.enrich"].Events {
		if e.Name != "enrich.attempt" {
			continue
		}
		for _, a := range e.Attributes {
			if a.Key == "outflow.enrich.outcome" {
				outcomes = append(outcomes, a.Value.AsString())
			}
		}
	}
	if fmt.Sprint(outcomes) != "[inconsistent consistent]" {
		t.Errorf("enrich.attempt outcomes = %v, want [inconsistent consistent] (calls made: %d)", outcomes, fs.calls.Load())
	}
	deliver := spans["outflow.deliver"]
	want := "00-" + traceID + "-" + deliver.SpanContext.SpanID().String() + "-01"
	sender.mu.Lock()
	defer sender.mu.Unlock()
	if len(sender.traces) != 1 || sender.traces[0]["traceparent"] != want {
		t.Errorf("webhook trace headers = %v, want traceparent %s", sender.traces, want)
	}
}

// TestNoTracingNoHeaders: without a TracerProvider a webhook request carries
// no trace context, even when the record brought one.
func TestNoTracingNoHeaders(t *testing.T) {
	t.Parallel()
	sender := &traceSender{}
	d, err := New(Params{Store: newFakeStore(), Sender: sender,
		Matcher: staticSubs{match.NewIndex([]*match.Subscription{webhookSub("sub_plain", "https://ok.example.com")}, match.IndexOptions{})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	var done atomic.Int64
	m := msgs(1, &done)[0]
	m.Headers = []source.Header{{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}}
	d.Handle(t.Context(), m)
	eventually(t, "the record delivered", func() bool { return done.Load() == 1 })
	sender.mu.Lock()
	defer sender.mu.Unlock()
	if len(sender.traces) != 1 || sender.traces[0] != nil {
		t.Errorf("webhook trace headers = %v, want none", sender.traces)
	}
}

// TestTracingOffAllocatesNothing: without a TracerProvider the
// instrumentation on the hot path allocates nothing, so tracing off costs
// the pipeline nothing but a few nil checks.
func TestTracingOffAllocatesNothing(t *testing.T) {
	var off tracing
	ctx := context.Background()
	m := source.NewMessage(source.Position{Kind: "kafka", Topic: "t"}, nil, nil, time.Time{}, nil)
	m.Headers = []source.Header{{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}}
	sub := webhookSub("sub_a", "https://ok.example.com")
	res := attemptResult{outcome: delivered}
	allocs := testing.AllocsPerRun(100, func() {
		rctx, span := off.startRecord(ctx, m)
		_, step := off.start(rctx, "outflow.decode")
		endSpan(step, nil)
		actx, aspan := off.startAttempt(withParent(ctx, span.SpanContext()), sub, "evt_x", 1)
		if off.headers(actx) != nil {
			t.Fatal("trace headers without tracing")
		}
		endAttempt(aspan, &res)
		span.End()
	})
	if allocs != 0 {
		t.Errorf("tracing off allocates %v times per record, want 0", allocs)
	}
}
