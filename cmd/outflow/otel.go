package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// otelVariables are the standard OpenTelemetry variables serve documents
// for its traces (the SDK and the OTLP exporter read more; these are the
// ones a deployment usually sets).
func otelVariables() []string {
	return []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS",
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_SDK_DISABLED",
	}
}

// tracingWanted reports whether serve exports traces: --otel, or an OTLP
// endpoint in the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT,
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), unless OTEL_SDK_DISABLED=true. The
// endpoint alone turns it on so that a deployment configured the standard
// OpenTelemetry way needs nothing Outflow-specific; --otel alone exports to
// the OTLP default, http://localhost:4318.
func tracingWanted(flag bool, getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	return flag || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// newTracerProvider returns a tracer provider exporting spans by OTLP over
// HTTP (protobuf), configured by the standard OTEL_* variables: the
// exporter's endpoint, headers, timeout and compression
// (OTEL_EXPORTER_OTLP_*), the sampler (OTEL_TRACES_SAMPLER; default
// parent-based always-on, so a record whose producer sampled its trace is
// traced) and the batch processor (OTEL_BSP_*). The service name is
// "outflow" unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say
// otherwise. shutdown flushes what is buffered, waiting at most 5 s.
func newTracerProvider(ctx context.Context) (tp trace.TracerProvider, shutdown func(), err error) {
	exporter, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("starting the OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "outflow"), attribute.String("service.version", buildVersion())),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: later, so they win
		resource.WithTelemetrySDK())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, nil, fmt.Errorf("describing the service for traces: %w", err)
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	return sdk, func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = sdk.Shutdown(ctx) // best effort: spans lost on exit are not worth failing it
	}, nil
}
