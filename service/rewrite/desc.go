package rewrite

import (
	"context"

	"google.golang.org/grpc"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	wirev1 "github.com/rewrited/rewrited/proto/rewrite/wire/v1"
)

// ServiceDesc registers a *Service as rewrite.v1.RewriteService. It is the
// generated descriptor with one change: requests are decoded as a *Request,
// which is wire-compatible but leaves conn_meta encoded; the server's codec
// must be Codec. Clients, grpcurl and reflection see the public rewrite.v1
// API.
var ServiceDesc = func() grpc.ServiceDesc {
	desc := rewritev1.RewriteService_ServiceDesc
	desc.HandlerType = (*lazyServer)(nil)
	desc.Methods = []grpc.MethodDesc{{
		MethodName: "RewriteResponse",
		Handler:    rewriteHandler,
	}}
	return desc
}()

type lazyServer interface {
	Rewrite(context.Context, *wirev1.LazyRewriteRequest) (*rewritev1.RewriteResponseResponse, error)
}

var rewriteInfo = &grpc.UnaryServerInfo{FullMethod: rewritev1.RewriteService_RewriteResponse_FullMethodName}

func rewriteHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(Request)
	if err := dec(in); err != nil {
		return nil, err
	}
	s := srv.(lazyServer)
	if interceptor == nil {
		return answer(ctx, s, in)
	}
	return interceptor(ctx, in, rewriteInfo, func(ctx context.Context, req any) (any, error) {
		return answer(ctx, s, req.(*Request))
	})
}

// answer answers a request the codec could not decode with its error,
// after the interceptors, so that the error is logged and counted.
func answer(ctx context.Context, s lazyServer, req *Request) (any, error) {
	if req.err != nil {
		return nil, req.err
	}
	return s.Rewrite(ctx, &req.LazyRewriteRequest)
}
