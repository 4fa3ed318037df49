package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestTracingWanted(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		flag bool
		env  map[string]string
		want bool
	}{
		{name: "off by default"},
		{name: "--otel", flag: true, want: true},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, want: true},
		{name: "traces endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, want: true},
		{name: "SDK disabled wins", flag: true, env: map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}},
		{name: "service name alone", env: map[string]string{"OTEL_SERVICE_NAME": "x"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tracingWanted(tt.flag, func(k string) string { return tt.env[k] }); got != tt.want {
				t.Errorf("tracingWanted = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestTracerProviderExports checks that the provider serve builds sends spans
// by OTLP/HTTP to the endpoint in OTEL_EXPORTER_OTLP_ENDPOINT, flushing them
// on shutdown. Not parallel: the exporter reads the process environment.
func TestTracerProviderExports(t *testing.T) {
	var posts atomic.Int32
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/traces" && r.Header.Get("Content-Type") == "application/x-protobuf" && len(body) > 0 {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(collector.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "10000")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp, shutdown, err := newTracerProvider(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("test").Start(ctx, "one")
	span.End()
	shutdown()
	if posts.Load() == 0 {
		t.Fatal("the collector received no OTLP trace export")
	}
}
