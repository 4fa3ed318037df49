package dispatcher

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/outflow-dev/outflow/match"
	"github.com/outflow-dev/outflow/source"
)

// tracerName is the instrumentation scope of the dispatcher's spans.
const tracerName = "github.com/outflow-dev/outflow/dispatcher"

// tracing is the dispatcher's OpenTelemetry instrumentation. The span tree
// of one record:
//
//	outflow.record            (consumer; child of a traceparent in the record's headers)
//	├── outflow.decode
//	├── outflow.match
//	└── outflow.deliver       (one per first attempt; client)
//	    └── outflow.enrich    (with an "enrich.attempt" event per feature-store call)
//
// Each webhook POST carries the traceparent of its outflow.deliver span. A
// retry from the queue runs long after the record's span ended and starts a
// trace of its own.
//
// Without a TracerProvider (the default) nothing is started: no span, no
// context and no header is allocated on the hot path.
type tracing struct {
	tracer trace.Tracer // nil: not tracing
	prop   propagation.TextMapPropagator
}

func newTracing(tp trace.TracerProvider) tracing {
	if tp == nil {
		return tracing{}
	}
	return tracing{tracer: tp.Tracer(tracerName), prop: propagation.TraceContext{}}
}

// noSpan is the span of an untraced step: it records nothing and, unlike
// the span of the caller's ctx, is never ended by mistake.
func noSpan() trace.Span { return trace.SpanFromContext(context.Background()) }

// start starts a child span of ctx's span; without tracing it returns ctx
// and a span that records nothing.
func (t tracing) start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t.tracer == nil {
		return ctx, noSpan()
	}
	return t.tracer.Start(ctx, name, opts...)
}

// startRecord starts a record's span, the child of the trace context in its
// headers when there is one (Kafka; Kinesis records carry no headers).
func (t tracing) startRecord(ctx context.Context, m *source.Message) (context.Context, trace.Span) {
	if t.tracer == nil {
		return ctx, noSpan()
	}
	if len(m.Headers) > 0 {
		ctx = t.prop.Extract(ctx, headerCarrier(m.Headers))
	}
	p := m.Position
	attrs := []attribute.KeyValue{attribute.String("messaging.system", p.Kind)}
	if p.Kind == "kafka" {
		attrs = append(attrs, attribute.String("messaging.destination.name", p.Topic),
			attribute.Int("messaging.destination.partition.id", int(p.Partition)),
			attribute.Int64("messaging.kafka.offset", p.Offset))
	} else {
		attrs = append(attrs, attribute.String("messaging.destination.name", p.Stream),
			attribute.String("aws.kinesis.shard", p.Shard), attribute.String("aws.kinesis.sequence", p.Sequence))
	}
	return t.tracer.Start(ctx, "outflow.record", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// withParent returns ctx carrying parent as its span context, so that an
// attempt made on a lane goroutine continues its record's trace.
func withParent(ctx context.Context, parent trace.SpanContext) context.Context {
	if !parent.IsValid() {
		return ctx
	}
	return trace.ContextWithSpanContext(ctx, parent)
}

// startAttempt starts a delivery attempt's span.
func (t tracing) startAttempt(ctx context.Context, sub *match.Subscription, eventID string, n int) (context.Context, trace.Span) {
	if t.tracer == nil {
		return ctx, noSpan()
	}
	return t.tracer.Start(ctx, "outflow.deliver", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("outflow.subscription_id", sub.ID),
		attribute.String("outflow.event_id", eventID),
		attribute.Int("outflow.attempt", n)))
}

// endAttempt ends an attempt's span with its outcome.
func endAttempt(span trace.Span, res *attemptResult) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.String("outflow.outcome", res.outcome.String()))
	if res.statusCode != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", res.statusCode))
	}
	if res.outcome != delivered {
		span.SetStatus(codes.Error, res.err)
	}
	span.End()
}

// endSpan ends a span, marking it failed with err (nil: success).
func endSpan(span trace.Span, err error) {
	if !span.IsRecording() {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// headers returns the W3C trace context of ctx's span as webhook headers,
// nil when not tracing.
func (t tracing) headers(ctx context.Context) map[string]string {
	if t.tracer == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	h := make(propagation.MapCarrier, 2)
	t.prop.Inject(ctx, h)
	return h
}

// headerCarrier reads a trace context from a record's headers. Header
// names match in any case; the last of a repeated name wins.
type headerCarrier []source.Header

func (c headerCarrier) Get(key string) string {
	for i := len(c) - 1; i >= 0; i-- {
		if strings.EqualFold(c[i].Key, key) {
			return string(c[i].Value)
		}
	}
	return ""
}

// Set does nothing: a record's headers are read-only.
func (c headerCarrier) Set(string, string) {}

func (c headerCarrier) Keys() []string {
	keys := make([]string, len(c))
	for i, h := range c {
		keys[i] = h.Key
	}
	return keys
}

// String names an outcome for spans.
func (o outcome) String() string {
	switch o {
	case delivered:
		return "delivered"
	case failed:
		return "failed"
	case fatal:
		return "fatal"
	case gone:
		return "gone"
	case interrupted:
		return "interrupted"
	case misconfigured:
		return "misconfigured"
	}
	return "unknown"
}
