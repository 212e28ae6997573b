package client

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

type handler func(context.Context, *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error)

// fakeServer is a real gRPC server on 127.0.0.1 answering with a script.
type fakeServer struct {
	rewritev1.UnimplementedRewriteServiceServer
	addr  string
	srv   *grpc.Server
	calls atomic.Int64

	mu     sync.Mutex
	handle handler
	last   *rewritev1.RewriteResponseRequest
}

func startFake(t testing.TB, h handler, opts ...grpc.ServerOption) *fakeServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{addr: lis.Addr().String(), srv: grpc.NewServer(opts...), handle: h}
	rewritev1.RegisterRewriteServiceServer(f.srv, f)
	go func() { _ = f.srv.Serve(lis) }()
	t.Cleanup(f.srv.Stop)
	return f
}

func (f *fakeServer) RewriteResponse(ctx context.Context, req *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.last = req
	h := f.handle
	f.mu.Unlock()
	return h(ctx, req)
}

func (f *fakeServer) setHandler(h handler) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handle = h
}

func (f *fakeServer) lastRequest() *rewritev1.RewriteResponseRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// superFantastic behaves like the bundled example policy.
func superFantastic(ctx context.Context, req *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
	if req.GetCommand() == "DATA" && req.GetStatus() == 250 {
		return &rewritev1.RewriteResponseResponse{
			Status: 250, Response: "super fantastic!\n" + req.GetResponse(), Rewritten: true,
			PolicyVersion: "v1", Outcome: rewritev1.Outcome_OUTCOME_REWRITTEN,
		}, nil
	}
	return unchanged(ctx, req)
}

func unchanged(_ context.Context, req *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
	return &rewritev1.RewriteResponseResponse{
		Status: req.GetStatus(), Response: req.GetResponse(),
		PolicyVersion: "v1", Outcome: rewritev1.Outcome_OUTCOME_UNCHANGED,
	}, nil
}

func answers(st uint32, text string) handler {
	return func(context.Context, *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
		return &rewritev1.RewriteResponseResponse{
			Status: st, Response: text, Rewritten: true, CloseConnection: st == 421,
			PolicyVersion: "v1", Outcome: rewritev1.Outcome_OUTCOME_REWRITTEN,
		}, nil
	}
}

func fails(c codes.Code) handler {
	return func(context.Context, *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
		return nil, status.Error(c, "scripted failure")
	}
}

func sleeps(d time.Duration) handler {
	return func(ctx context.Context, req *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
		select {
		case <-time.After(d):
			return superFantastic(ctx, req)
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// withOutcome answers the original reply with the given outcome and meta updates.
func withOutcome(o rewritev1.Outcome, errText string, updates map[string]any) handler {
	return func(_ context.Context, req *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
		mu, err := structpb.NewStruct(updates)
		if err != nil {
			return nil, err
		}
		return &rewritev1.RewriteResponseResponse{
			Status: req.GetStatus(), Response: req.GetResponse(), MetaUpdates: mu,
			PolicyVersion: "v1", Outcome: o, Error: errText,
		}, nil
	}
}

// refusedAddr returns an address on which nothing listens.
func refusedAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

// newClient gives calls a budget no busy machine runs out of, unless opts
// set one: a test about timeouts says so.
func newClient(t testing.TB, target string, opts ...Option) *Client {
	t.Helper()
	c, err := New(target, append([]Option{WithTimeout(10 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
