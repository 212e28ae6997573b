package server

import (
	"context"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// limit refuses rewrite calls past maxConcurrent calls in flight with
// ResourceExhausted, at once: a call that waited for a slot would answer
// after its caller's deadline, when the caller has already sent the
// original reply. Health and reflection calls are not limited; the size cap
// is the codec's (rewrite.NewCodec).
func limit(maxConcurrent int) grpc.UnaryServerInterceptor {
	prefix := "/" + ServiceName + "/"
	var inFlight atomic.Int64
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, prefix) {
			return handler(ctx, req)
		}
		if maxConcurrent > 0 {
			if inFlight.Add(1) > int64(maxConcurrent) {
				inFlight.Add(-1)
				return nil, status.Errorf(codes.ResourceExhausted, "%d evaluations already in flight: over capacity, try another replica", maxConcurrent)
			}
			defer inFlight.Add(-1)
		}
		return handler(ctx, req)
	}
}
