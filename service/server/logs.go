package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/rewrited/rewrited/service/policy"
)

// Client errors are logged at info level up to this rate; beyond it they
// are logged at debug level. A misconfigured or hostile client can send
// thousands a second, and the gRPC metrics count them all.
const (
	clientErrorLogsPerSecond = 10
	clientErrorLogBurst      = 50
)

// clientErrorLog rate-limits the logging of calls refused for the
// client's fault.
type clientErrorLog struct{ limiter *rate.Limiter }

func newClientErrorLog() clientErrorLog {
	return clientErrorLog{rate.NewLimiter(clientErrorLogsPerSecond, clientErrorLogBurst)}
}

// level logs successful calls at debug level: at thousands of calls a
// second, only failures belong in the default log. Shed, cancelled and
// timed-out calls come by the thousand under overload, when logging them
// would add to the load: the gRPC metrics count them instead. Client errors
// are logged at info level, within the rate.
func (c clientErrorLog) level(code codes.Code) logging.Level {
	lvl := baseLevel(code)
	if lvl == logging.LevelInfo && !c.limiter.Allow() {
		return logging.LevelDebug
	}
	return lvl
}

// baseLevel is a code's level before the client-error rate applies.
func baseLevel(code codes.Code) logging.Level {
	switch code {
	case codes.OK, codes.ResourceExhausted, codes.Canceled, codes.DeadlineExceeded:
		return logging.LevelDebug
	case codes.InvalidArgument, codes.NotFound, codes.Unauthenticated:
		return logging.LevelInfo
	default:
		return logging.LevelError
	}
}

// onlyLogged runs the call first and hands it to log, the logging
// interceptor, only when the call's line will be written: that interceptor
// builds its fields (peer, timestamps, context) before it knows the level,
// and at the default level nearly every call goes unlogged. log replays the
// answer, so the call's real duration goes to it as a field.
func (c clientErrorLog) onlyLogged(logger *slog.Logger, log grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		if !logger.Enabled(ctx, slog.Level(c.level(status.Code(err)))) {
			return resp, err
		}
		ctx = logging.InjectFields(ctx, logging.DurationToTimeMillisFields(time.Since(start)))
		return log(ctx, req, info, func(context.Context, any) (any, error) { return resp, err })
	}
}

// logRefusals logs the calls check refuses before any interceptor runs,
// within the rate, and tells refused of each, when set.
func (c clientErrorLog) logRefusals(logger *slog.Logger, refused func(), check tap.ServerInHandle) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		newCtx, err := check(ctx, info)
		if err == nil {
			return newCtx, nil
		}
		if refused != nil {
			refused()
		}
		lvl := slog.Level(c.level(codes.Unauthenticated))
		if logger.Enabled(ctx, lvl) {
			addr := ""
			if p, ok := peer.FromContext(ctx); ok {
				addr = p.Addr.String()
			}
			logger.Log(ctx, lvl, "call refused before its request was read",
				"grpc.method", policy.BoundText(info.FullMethodName, policy.MaxEchoBytes),
				"peer.address", addr, "error", err.Error())
		}
		return nil, err
	}
}
