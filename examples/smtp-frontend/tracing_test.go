package main

import (
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/internal/telemetry"
)

// TestFrontendPropagatesItsTraceContext: the span of a DATA reply, the
// client's call and the server's span form one trace.
func TestFrontendPropagatesItsTraceContext(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := telemetry.New(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	fake := startFakeRewrited(t, keepPolicy, tr.ServerOptions()...)
	rw, err := newTestClient(fake.addr, client.WithDialOptions(tr.DialOptions()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rw.Close() })
	addr := serveOn(t, newServer(rw, frontendConfig{Hostname: "mx.test", MaxBytes: 1 << 20, Tracer: tr.Tracer("test")}))
	c := dialSMTP(t, addr, "EHLO")
	if r := c.send("alice@client.test", "bob@mx.test"); r.code != 250 {
		t.Fatalf("DATA reply %+v", r)
	}

	var reply, call, served sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(10 * time.Second); served == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d spans, no server span within 10s", len(rec.Ended()))
		}
		for _, s := range rec.Ended() {
			switch {
			case s.Name() == "smtp.reply":
				reply = s
			case s.SpanKind() == trace.SpanKindClient:
				call = s
			case s.SpanKind() == trace.SpanKindServer:
				served = s
			}
		}
	}
	if reply == nil || call == nil {
		t.Fatalf("%d spans: want the reply's, the call's and the server's", len(rec.Ended()))
	}
	if call.Parent().SpanID() != reply.SpanContext().SpanID() || served.Parent().SpanID() != call.SpanContext().SpanID() {
		t.Errorf("parents: call under %s (reply %s), server under %s (call %s): want one chain",
			call.Parent().SpanID(), reply.SpanContext().SpanID(), served.Parent().SpanID(), call.SpanContext().SpanID())
	}
	if served.SpanContext().TraceID() != reply.SpanContext().TraceID() {
		t.Errorf("the server span is in trace %s, the reply in %s", served.SpanContext().TraceID(), reply.SpanContext().TraceID())
	}
}
