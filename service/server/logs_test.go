package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestOnlyLoggedCallsReachTheLogger: at info level a successful call never
// reaches the logging interceptor (which would build its fields for
// nothing), a client error does, with the call's answer and its real
// duration.
func TestOnlyLoggedCallsReachTheLogger(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var reached []time.Duration
	inner := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		fields := logging.ExtractFields(ctx)
		var took time.Duration = -1
		for i := 0; i+1 < len(fields); i += 2 {
			if fields[i] == "grpc.time_ms" {
				ms, err := strconv.ParseFloat(fields[i+1].(string), 64)
				if err != nil {
					t.Errorf("grpc.time_ms %v: %v", fields[i+1], err)
				}
				took = time.Duration(ms * float64(time.Millisecond))
			}
		}
		reached = append(reached, took)
		return handler(ctx, req)
	}
	intercept := newClientErrorLog().onlyLogged(logger, inner)
	info := &grpc.UnaryServerInfo{FullMethod: "/rewrite.v1.RewriteService/RewriteResponse"}

	resp, err := intercept(context.Background(), "req", info, func(context.Context, any) (any, error) { return "answer", nil })
	if resp != "answer" || err != nil || len(reached) != 0 {
		t.Errorf("successful call: %v, %v; reached the logger %d times, want 0", resp, err, len(reached))
	}

	const pause = 20 * time.Millisecond
	notFound := status.Error(codes.NotFound, "no such policy")
	resp, err = intercept(context.Background(), "req", info, func(context.Context, any) (any, error) {
		time.Sleep(pause)
		return nil, notFound
	})
	if resp != nil || !errors.Is(err, notFound) {
		t.Errorf("client error: %v, %v; want the handler's error", resp, err)
	}
	if len(reached) != 1 || reached[0] < pause {
		t.Errorf("client error reached the logger with durations %v, want once with at least %v", reached, pause)
	}
}
