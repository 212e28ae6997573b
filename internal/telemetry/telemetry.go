// Package telemetry sets up OpenTelemetry tracing from the standard OTEL_* environment variables, off unless OTEL_TRACES_EXPORTER names an exporter.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
)

// Tracing holds a tracer provider and the W3C trace-context propagator; a
// nil *Tracing is tracing off, and its methods return nothing to install.
type Tracing struct {
	provider trace.TracerProvider
	shutdown func(context.Context) error
	prop     propagation.TextMapPropagator
}

// FromEnv returns the tracing the environment asks for, or nil when
// OTEL_TRACES_EXPORTER is unset or "none" or OTEL_SDK_DISABLED is "true".
// The exporter (otlp, console), its endpoint (OTEL_EXPORTER_OTLP_ENDPOINT and
// the other OTEL_EXPORTER_OTLP_* variables), the sampler
// (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG) and the resource
// (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) are the SDK's own
// configuration; service names the service when OTEL_SERVICE_NAME is unset.
func FromEnv(ctx context.Context, service string) (*Tracing, error) {
	switch exp := os.Getenv("OTEL_TRACES_EXPORTER"); {
	case exp == "" || exp == "none" || os.Getenv("OTEL_SDK_DISABLED") == "true":
		return nil, nil
	}
	exporter, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER: %w", err)
	}
	res, err := resource.Merge(resource.NewSchemaless(semconv.ServiceName(service)), resource.Environment())
	if err != nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	t := New(tp)
	t.shutdown = tp.Shutdown
	return t, nil
}

// New returns tracing through provider, for tests and embedders with a
// provider of their own.
func New(provider trace.TracerProvider) *Tracing {
	return &Tracing{provider: provider, prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
}

// ServerOptions returns the gRPC server options that trace every call,
// continuing the caller's trace from its traceparent header.
func (t *Tracing) ServerOptions() []grpc.ServerOption {
	if t == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(t.provider), otelgrpc.WithPropagators(t.prop)))}
}

// DialOptions returns the gRPC dial options that trace every call and send
// its trace context (traceparent) to the server.
func (t *Tracing) DialOptions() []grpc.DialOption {
	if t == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(t.provider), otelgrpc.WithPropagators(t.prop)))}
}

// Tracer returns a tracer for spans of the program's own; with tracing off
// it records nothing.
func (t *Tracing) Tracer(name string) trace.Tracer {
	if t == nil {
		return noop.NewTracerProvider().Tracer(name)
	}
	return t.provider.Tracer(name)
}

// Shutdown flushes the spans not yet exported.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.shutdown == nil {
		return nil
	}
	if err := t.shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("tracing: %w", err)
	}
	return nil
}
