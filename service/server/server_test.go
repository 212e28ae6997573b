package server

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	wirev1 "github.com/rewrited/rewrited/proto/rewrite/wire/v1"
	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/service/rewrite"
)

// resolver serves policy "echo", which keeps every reply; asking for
// "panic" panics, and asking for "block" waits until release is closed.
type resolver struct {
	echo    *policy.Policy
	entered chan struct{}
	release chan struct{}
}

func (r *resolver) Policy(name string) (*policy.Policy, bool) {
	switch name {
	case "panic":
		panic("resolver bug")
	case "block":
		r.entered <- struct{}{}
		<-r.release
	}
	return r.echo, true
}

func (r *resolver) Names() []string { return []string{"echo"} }

// start serves a Server built from cfg on 127.0.0.1 and returns a
// connection to it.
func start(t *testing.T, cfg Config) (*resolver, *grpc.ClientConn) {
	t.Helper()
	echo, _, err := policy.Compile("echo.lua", nil, policy.Options{PoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(echo.Close)
	r := &resolver{echo: echo, entered: make(chan struct{}, 100), release: make(chan struct{})}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv := New(rewrite.New(r), cfg)
	srv.SetServing(true)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.GRPC.Serve(lis)
	t.Cleanup(srv.GRPC.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return r, conn
}

// writeTokens writes a tokens file holding content and loads it, logging
// to logger.
func writeTokens(t testing.TB, content string, logger *slog.Logger) (*Tokens, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := LoadTokens(file, logger)
	if err != nil {
		t.Fatal(err)
	}
	return tokens, file
}

// call asks for a 250 reply with text to be decided by the named policy.
func call(ctx context.Context, conn *grpc.ClientConn, name, text string) (*rewritev1.RewriteResponseResponse, error) {
	return rewritev1.NewRewriteServiceClient(conn).RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 250, Response: text, Policy: name})
}

func checkHealth(t *testing.T, ctx context.Context, conn *grpc.ClientConn) {
	t.Helper()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: ServiceName})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v", resp, err)
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPanicIsInternalAndServerStaysUp(t *testing.T) {
	_, conn := start(t, Config{})
	ctx := testContext(t)
	for range 3 {
		if _, err := call(ctx, conn, "panic", "x"); status.Code(err) != codes.Internal {
			t.Fatalf("panicking handler: %v, want Internal", err)
		}
		if resp, err := call(ctx, conn, "echo", "fine"); err != nil || resp.Response != "fine" {
			t.Fatalf("call after the panic: %v, %v", resp, err)
		}
	}
	checkHealth(t, ctx, conn)
}

func TestRequestSizeLimit(t *testing.T) {
	_, conn := start(t, Config{MaxRequestBytes: 1000})
	ctx := testContext(t)
	lines := func(n int) string { return strings.Repeat(strings.Repeat("x", 99)+"\n", n) }
	tests := []struct {
		name string
		text string
		code codes.Code
		msg  string
	}{
		{"under the cap", lines(9), codes.OK, ""},
		{"over the cap", lines(20), codes.InvalidArgument, "request: 2006 bytes, the limit is 1000"},
		{"over gRPC's backstop of 4 times the cap", lines(50), codes.ResourceExhausted, ""},
	}
	for _, tt := range tests {
		_, err := call(ctx, conn, "", tt.text)
		if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.msg) {
			t.Errorf("%s: %v, want %v %q", tt.name, err, tt.code, tt.msg)
		}
	}
}

func TestConcurrencyLimitRefusesAtOnce(t *testing.T) {
	const limit = 3
	f, conn := start(t, Config{MaxConcurrent: limit})
	ctx := testContext(t)
	var wg sync.WaitGroup
	for range limit {
		wg.Go(func() {
			if _, err := call(ctx, conn, "block", "x"); err != nil {
				t.Errorf("admitted call: %v", err)
			}
		})
	}
	for range limit {
		<-f.entered
	}
	start := time.Now()
	_, err := call(ctx, conn, "echo", "one too many")
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("call past the cap: %v, want ResourceExhausted", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v: it waited", d)
	}
	checkHealth(t, ctx, conn) // health is never shed
	close(f.release)
	wg.Wait()
	if _, err := call(ctx, conn, "echo", "after"); err != nil {
		t.Errorf("call once the slots are free: %v", err)
	}
}

func TestBearerToken(t *testing.T) {
	tokens, file := writeTokens(t, "# rotation: old and new\nold-token\n\n  new-token  \n", slog.New(slog.DiscardHandler))
	_, conn := start(t, Config{Tokens: tokens})
	ctx := testContext(t)
	with := func(auth string) context.Context {
		if auth == "" {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, "authorization", auth)
	}
	tests := []struct {
		auth string
		code codes.Code
	}{
		{"", codes.Unauthenticated},
		{"Bearer wrong", codes.Unauthenticated},
		{"Bearer new-toke", codes.Unauthenticated},
		{"Basic new-token", codes.Unauthenticated},
		{"new-token", codes.Unauthenticated},
		{"Bearer # rotation: old and new", codes.Unauthenticated},
		{"Bearer old-token", codes.OK},
		{"Bearer new-token", codes.OK},
		{"bearer new-token", codes.OK},
	}
	for _, tt := range tests {
		if _, err := call(with(tt.auth), conn, "echo", "x"); status.Code(err) != tt.code {
			t.Errorf("authorization %q: %v, want %v", tt.auth, err, tt.code)
		}
		// Reflection is a stream and needs the token too.
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(with(tt.auth))
		if err == nil {
			// A refused stream may fail Send with io.EOF; Recv has the status.
			_ = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
			_, err = stream.Recv()
		}
		if status.Code(err) != tt.code {
			t.Errorf("reflection with authorization %q: %v, want %v", tt.auth, err, tt.code)
		}
	}
	checkHealth(t, ctx, conn) // probes need no token

	// A reload drops the old token; a failed reload keeps the tokens.
	if err := os.WriteFile(file, []byte("new-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tokens.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("\n# none\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tokens.Reload(); err == nil {
		t.Error("a file without tokens was accepted")
	}
	if _, err := call(with("Bearer old-token"), conn, "echo", "x"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("old token after the reload: %v", err)
	}
	if _, err := call(with("Bearer new-token"), conn, "echo", "x"); err != nil {
		t.Errorf("new token after the reload: %v", err)
	}
}

// TestClientErrorsAreBounded sends hundreds of bad requests carrying
// 128 KB of text: each error repeats a bounded part of it, and the info log
// gets a bounded number of bounded lines.
func TestClientErrorsAreBounded(t *testing.T) {
	var logs rewritedtest.LogBuffer
	tokens, _ := writeTokens(t, "s3cret\n", slog.New(slog.DiscardHandler))
	_, conn := start(t, Config{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Tokens: tokens})
	ctx := testContext(t)
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	client := rewritev1.NewRewriteServiceClient(conn)
	long := strings.Repeat("n", 128<<10)
	const calls = 300
	begin := time.Now()
	for i := range calls {
		var err error
		switch i % 3 {
		case 0: // an invalid policy name
			_, err = client.RewriteResponse(authed, &rewritev1.RewriteResponseRequest{Status: 250, Response: "OK", Policy: long + "!"})
		case 1: // no token, a long method name (within the header cap)
			err = conn.Invoke(ctx, "/"+long[:8<<10]+"/x", new(rewritev1.RewriteResponseRequest), new(rewritev1.RewriteResponseResponse))
		case 2: // invalid UTF-8
			err = conn.Invoke(authed, rewritev1.RewriteService_RewriteResponse_FullMethodName,
				rewritedtest.Raw([]byte{0x12, 0x03, 'O', 'K', 0xff}), new(rewritev1.RewriteResponseResponse))
		}
		want := []codes.Code{codes.InvalidArgument, codes.Unauthenticated, codes.InvalidArgument}[i%3]
		if status.Code(err) != want || len(status.Convert(err).Message()) > 1024 {
			t.Fatalf("call %d: %.300v (%d bytes), want %v in at most 1024 bytes", i, err, len(status.Convert(err).Message()), want)
		}
	}
	elapsed := time.Since(begin)
	lines := logs.Lines()
	limit := clientErrorLogBurst + int(elapsed.Seconds()*clientErrorLogsPerSecond) + 1
	if len(lines) == 0 || len(lines) > limit {
		t.Errorf("%d calls logged %d lines in %v, want 1 to %d", calls, len(lines), elapsed, limit)
	}
	for _, line := range lines {
		if len(line) > 2048 {
			t.Errorf("a log line of %d bytes: %.300s", len(line), line)
		}
	}
	for _, want := range []string{"is not a policy name", "call refused before its request was read", "invalid UTF-8"} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, want) }) {
			t.Errorf("no log line says %q", want)
		}
	}
}

// TestTokenFileWarnings: a token no client can send (a byte-order mark, a
// tab) is warned about by line, without its content.
func TestTokenFileWarnings(t *testing.T) {
	var logs rewritedtest.LogBuffer
	writeTokens(t, "\ufeffbom-token\n# comment\ntab\ttoken\ngood-token\n", slog.New(slog.NewJSONHandler(&logs, nil)))
	lines := logs.Lines()
	if len(lines) != 2 || !strings.Contains(lines[0], `"line":1,`) || !strings.Contains(lines[1], `"line":3,`) {
		t.Errorf("warnings %q, want lines 1 and 3", lines)
	}
	for _, l := range lines {
		if strings.Contains(l, "bom-token") || strings.Contains(l, `tab\ttoken`) {
			t.Errorf("a warning shows the token: %s", l)
		}
	}
}

func TestStatusOutOfRangeIsReportedAsSent(t *testing.T) {
	_, conn := start(t, Config{})
	_, err := rewritev1.NewRewriteServiceClient(conn).RewriteResponse(testContext(t), &rewritev1.RewriteResponseRequest{Status: 4294967295, Response: "OK"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "4294967295") {
		t.Errorf("status 4294967295: %v", err)
	}
}

// countingCodec is the server codec, counting the requests it decodes.
type countingCodec struct {
	rewrite.Codec
	decoded atomic.Int64
}

func (c *countingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	c.decoded.Add(1)
	return c.Codec.Unmarshal(data, v)
}

// TestUnauthenticatedRequestIsNotDecoded sends the quadratic-decode attack's
// request (80,000 repeated conn_meta fields, 320 KB): without a token it is
// refused from its headers and never reaches the codec; with one it is
// decoded once and answered.
func TestUnauthenticatedRequestIsNotDecoded(t *testing.T) {
	tokens, _ := writeTokens(t, "s3cret\n", slog.New(slog.DiscardHandler))
	codec := &countingCodec{Codec: rewrite.NewCodec(DefaultMaxRequestBytes)}
	_, conn := start(t, Config{Tokens: tokens, Options: []grpc.ServerOption{grpc.ForceServerCodecV2(codec)}})
	ctx := testContext(t)
	b := rewritedtest.RepeatedConnMeta(80_000)
	method := rewritev1.RewriteService_RewriteResponse_FullMethodName
	for _, auth := range []string{"", "Bearer wrong"} {
		callCtx := ctx
		if auth != "" {
			callCtx = metadata.AppendToOutgoingContext(ctx, "authorization", auth)
		}
		err := conn.Invoke(callCtx, method, rewritedtest.Raw(b), new(rewritev1.RewriteResponseResponse))
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("authorization %q: %v, want Unauthenticated", auth, err)
		}
	}
	if n := codec.decoded.Load(); n != 0 {
		t.Errorf("the codec decoded %d unauthenticated requests", n)
	}
	var resp rewritev1.RewriteResponseResponse
	err := conn.Invoke(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret"), method, rewritedtest.Raw(b), &resp)
	if err != nil || resp.Status != 250 || resp.Response != "OK" {
		t.Errorf("with the token: %v, %v", &resp, err)
	}
	if n := codec.decoded.Load(); n != 1 {
		t.Errorf("the codec decoded %d requests, want the authenticated one", n)
	}
}

// BenchmarkLimit is the per-call cost of the concurrency check on
// a typical request.
func BenchmarkLimit(b *testing.B) {
	cmd := "DATA"
	req := &wirev1.LazyRewriteRequest{Status: 250, Response: "2.0.0 OK queued as 8f2a1c", Command: &cmd, ConnMeta: []byte(strings.Repeat("m", 200))}
	intercept := limit(64)
	info := &grpc.UnaryServerInfo{FullMethod: rewritev1.RewriteService_RewriteResponse_FullMethodName}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := intercept(ctx, req, info, handler); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkTokenCheck is the per-call cost of checking a valid token from
// the call's headers.
func BenchmarkTokenCheck(b *testing.B) {
	tokens, _ := writeTokens(b, "old-token\nnew-token\n", slog.New(slog.DiscardHandler))
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer new-token"))
	info := &tap.Info{FullMethodName: rewritev1.RewriteService_RewriteResponse_FullMethodName}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tokens.tap(ctx, info); err != nil {
			b.Fatal(err)
		}
	}
}
