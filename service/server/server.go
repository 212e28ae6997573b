// Package server assembles the rewrited gRPC server: the rewrite service,
// health, reflection, interceptors and keepalive enforcement.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/service/rewrite"
)

// ServiceName is the health-checked service name.
var ServiceName = rewritev1.RewriteService_ServiceDesc.ServiceName

// DefaultMaxRequestBytes caps a request message; larger ones are refused
// with InvalidArgument.
const DefaultMaxRequestBytes = 1 << 20

// MaxHeaderListBytes caps the headers of a call: a client sends a few
// hundred bytes; a larger list is refused before any of it is kept.
const MaxHeaderListBytes = 16 << 10

// ConnectionTimeout bounds a new connection's handshake (TLS and HTTP/2
// preface), so silent sockets do not hold file descriptors.
const ConnectionTimeout = 5 * time.Second

// Config configures a Server.
type Config struct {
	Logger *slog.Logger
	// MaxRequestBytes caps a rewrite request: a larger one is refused with
	// InvalidArgument naming its size. gRPC itself refuses, undecoded and
	// with ResourceExhausted, a message over four times the cap.
	MaxRequestBytes int
	// MaxConcurrent caps the rewrite calls in flight: past it a call is
	// refused with ResourceExhausted at once. Zero means no cap.
	MaxConcurrent int
	// Tokens, when set, are the bearer tokens every call but health checks
	// must carry; a call without one is refused from its headers, before
	// its request is read.
	Tokens *Tokens
	// OnUnauthenticated, when set, is told of every call refused for its
	// token: the interceptors, metrics included, never see those calls.
	OnUnauthenticated func()
	// MaxConnectionAge closes connections after this long (with a grace
	// period), so round_robin clients spread onto replicas added since.
	MaxConnectionAge time.Duration
	// Unary interceptors run after recovery and logging, in order, and
	// before the limits.
	Unary []grpc.UnaryServerInterceptor
	// Stream interceptors run in order.
	Stream []grpc.StreamServerInterceptor
	// Options are appended to the server's own.
	Options []grpc.ServerOption
}

// Server is a gRPC server serving the rewrite service, health and reflection.
type Server struct {
	GRPC   *grpc.Server
	Health *health.Server
	logger *slog.Logger
}

// New builds a Server around svc; it is NOT_SERVING until SetServing(true).
func New(svc *rewrite.Service, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.MaxConnectionAge <= 0 {
		cfg.MaxConnectionAge = 5 * time.Minute
	}
	clientErrors := newClientErrorLog()
	unary := append([]grpc.UnaryServerInterceptor{
		recovery.UnaryServerInterceptor(recovery.WithRecoveryHandler(func(p any) error {
			cfg.Logger.Error("panic in request handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			return status.Error(codes.Internal, "internal error")
		})),
		clientErrors.onlyLogged(cfg.Logger, logging.UnaryServerInterceptor(slogAdapter(cfg.Logger),
			logging.WithLogOnEvents(logging.FinishCall),
			logging.WithLevels(baseLevel))),
	}, cfg.Unary...)
	unary = append(unary, limit(cfg.MaxConcurrent))
	var opts []grpc.ServerOption
	if cfg.Tokens != nil {
		opts = append(opts, grpc.InTapHandle(clientErrors.logRefusals(cfg.Logger, cfg.OnUnauthenticated, cfg.Tokens.tap)))
	}
	opts = append(opts,
		grpc.ForceServerCodecV2(rewrite.NewCodec(cfg.MaxRequestBytes)),
		grpc.MaxRecvMsgSize(4*cfg.MaxRequestBytes),
		// Headers are held until the body comes, before any interceptor
		// runs: bound their size, and the time a connection may take to
		// complete its handshake.
		grpc.MaxHeaderListSize(MaxHeaderListBytes),
		grpc.ConnectionTimeout(ConnectionTimeout),
		// A peer that opens streams and never reads their replies makes the
		// server hold every reply; bound the streams per connection.
		grpc.MaxConcurrentStreams(maxStreams(cfg.MaxConcurrent)),
		// Reused workers keep the stacks a Lua evaluation grows; a goroutine
		// per call would grow its stack anew, by copying, on every call.
		grpc.NumStreamWorkers(streamWorkers(cfg.MaxConcurrent)),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(cfg.Stream...),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      cfg.MaxConnectionAge,
			MaxConnectionAgeGrace: 10 * time.Second,
			Time:                  time.Minute,
			Timeout:               10 * time.Second,
		}),
	)
	opts = append(opts, cfg.Options...)
	s := &Server{GRPC: grpc.NewServer(opts...), Health: health.NewServer(), logger: cfg.Logger}
	s.GRPC.RegisterService(&rewrite.ServiceDesc, svc)
	healthpb.RegisterHealthServer(s.GRPC, s.Health)
	reflection.Register(s.GRPC)
	s.SetServing(false)
	return s
}

// maxStreams allows a connection a few times the calls the server admits
// at once, so one client can still fill the server while queueing is left
// to the client, within its deadline.
func maxStreams(maxConcurrent int) uint32 {
	return uint32(max(256, 4*maxConcurrent))
}

// streamWorkers is one worker per call admitted at once; calls beyond get a
// goroutine of their own, as without workers.
func streamWorkers(maxConcurrent int) uint32 {
	if maxConcurrent <= 0 {
		maxConcurrent = 8 * runtime.GOMAXPROCS(0)
	}
	return uint32(maxConcurrent)
}

// SetServing sets the health of the rewrite service and the server as a whole.
func (s *Server) SetServing(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.Health.SetServingStatus(ServiceName, st)
	s.Health.SetServingStatus("", st)
}

// Shutdown reports NOT_SERVING, lets in-flight calls finish, and stops hard
// when ctx ends first.
func (s *Server) Shutdown(ctx context.Context) {
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.GRPC.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.logger.Warn("drain timed out, closing remaining connections")
		s.GRPC.Stop()
		<-done
	}
}

func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
