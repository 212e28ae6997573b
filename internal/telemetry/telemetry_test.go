package telemetry

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/service/rewrite"
	"github.com/rewrited/rewrited/service/server"
)

func TestOffUnlessAnExporterIsNamed(t *testing.T) {
	for _, tc := range []struct{ exporter, disabled string }{{"", ""}, {"none", ""}, {"console", "true"}} {
		t.Setenv("OTEL_TRACES_EXPORTER", tc.exporter)
		t.Setenv("OTEL_SDK_DISABLED", tc.disabled)
		tr, err := FromEnv(context.Background(), "test")
		if err != nil || tr != nil {
			t.Errorf("OTEL_TRACES_EXPORTER=%q OTEL_SDK_DISABLED=%q: %v, %v; want tracing off", tc.exporter, tc.disabled, tr, err)
		}
		if tr.ServerOptions() != nil || tr.DialOptions() != nil || tr.Shutdown(context.Background()) != nil {
			t.Error("tracing off still installs something")
		}
	}
}

func TestExporterFromEnv(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	t.Setenv("OTEL_TRACES_SAMPLER", "traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0.01")
	tr, err := FromEnv(context.Background(), "test")
	if err != nil || tr == nil {
		t.Fatalf("OTEL_TRACES_EXPORTER=console: %v, %v", tr, err)
	}
	if len(tr.ServerOptions()) != 1 || len(tr.DialOptions()) != 1 {
		t.Error("tracing on installs no stats handler")
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}

	t.Setenv("OTEL_TRACES_EXPORTER", "carrier-pigeon")
	if _, err := FromEnv(context.Background(), "test"); err == nil {
		t.Error("an unknown exporter was accepted")
	}
}

// TestServerSpanContinuesTheCallersTrace sends a call with a traceparent
// header to a real server and reads the spans it recorded.
func TestServerSpanContinuesTheCallersTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := New(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	p, conn := startTraced(t, tr)

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-"+parentID+"-01")
	resp, err := rewritev1.NewRewriteServiceClient(conn).RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 250, Response: "OK"})
	if err != nil || resp.GetResponse() != "traced OK" {
		t.Fatalf("call: %v, %v", resp, err)
	}

	// The server span ends just after the answer is sent.
	var call, eval sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(10 * time.Second); call == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("spans %v: want the call's and the evaluation's", names(rec.Ended()))
		}
		for _, s := range rec.Ended() {
			switch s.Name() {
			case "rewrite.v1.RewriteService/RewriteResponse":
				call = s
			case "rewrited.policy.evaluate":
				eval = s
			}
		}
	}
	if eval == nil {
		t.Fatalf("spans %v: no evaluation span", names(rec.Ended()))
	}
	if call.SpanKind() != trace.SpanKindServer || call.SpanContext().TraceID().String() != traceID || call.Parent().SpanID().String() != parentID {
		t.Errorf("server span %v in trace %s with parent %s: want a server span in trace %s under %s",
			call.SpanKind(), call.SpanContext().TraceID(), call.Parent().SpanID(), traceID, parentID)
	}
	if eval.Parent().SpanID() != call.SpanContext().SpanID() {
		t.Errorf("the evaluation span's parent is %s, want the call's span %s", eval.Parent().SpanID(), call.SpanContext().SpanID())
	}
	for _, s := range []sdktrace.ReadOnlySpan{call, eval} {
		attrs := map[attribute.Key]attribute.Value{}
		for _, kv := range s.Attributes() {
			attrs[kv.Key] = kv.Value
		}
		want := map[attribute.Key]string{
			"rewrited.policy.name":    "default",
			"rewrited.policy.version": p.Version(),
			"rewrited.outcome":        policy.OutcomeRewritten.String(),
		}
		for k, v := range want {
			if got := attrs[k].AsString(); got != v {
				t.Errorf("span %s: %s = %q, want %q", s.Name(), k, got, v)
			}
		}
		if sec := attrs["rewrited.evaluation.seconds"].AsFloat64(); sec <= 0 || sec > s.EndTime().Sub(s.StartTime()).Seconds() {
			t.Errorf("span %s: evaluation took %v s, want within the span", s.Name(), sec)
		}
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

// startTraced serves a policy that rewrites every reply with tracing tr
// (nil: off) on 127.0.0.1 and returns it with a connection to the server.
func startTraced(t testing.TB, tr *Tracing) (*policy.Policy, *grpc.ClientConn) {
	t.Helper()
	src := []byte(`kumo.on('smtp_server_rewrite_response', function(status, response)
  return status, 'traced ' .. response
end)`)
	p, _, err := policy.Compile("traced.lua", src, policy.Options{PoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	srv := server.New(rewrite.New(rewrite.Static{"default": p}), server.Config{Logger: slog.New(slog.DiscardHandler), Options: tr.ServerOptions()})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.GRPC.Serve(lis) }()
	t.Cleanup(srv.GRPC.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return p, conn
}

// BenchmarkRewriteTraced measures a RewriteResponse round trip (client and
// server in this process) with tracing off, and on with 1% and 100% of the
// calls sampled and their spans batched to an exporter that drops them.
func BenchmarkRewriteTraced(b *testing.B) {
	for _, bc := range []struct {
		name    string
		sampler sdktrace.Sampler
	}{{"off", nil}, {"sampled-1%", sdktrace.TraceIDRatioBased(0.01)}, {"sampled-100%", sdktrace.AlwaysSample()}} {
		b.Run(bc.name, func(b *testing.B) {
			var tr *Tracing
			if bc.sampler != nil {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(bc.sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				tr = New(tp)
			}
			_, conn := startTraced(b, tr)
			rpc := rewritev1.NewRewriteServiceClient(conn)
			req := &rewritev1.RewriteResponseRequest{Status: 250, Response: "OK", Command: proto.String("DATA")}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := rpc.RewriteResponse(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
