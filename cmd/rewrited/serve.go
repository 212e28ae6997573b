package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/rewrited/rewrited/internal/telemetry"
	"github.com/rewrited/rewrited/service/decisionlog"
	"github.com/rewrited/rewrited/service/metrics"
	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/service/registry"
	"github.com/rewrited/rewrited/service/rewrite"
	"github.com/rewrited/rewrited/service/server"
	"github.com/rewrited/rewrited/service/shadow"
)

// maxRequestBytesLimit bounds --max-request-bytes: gRPC decodes up to four
// times the cap, and no SMTP reply comes near it.
const maxRequestBytesLimit = 64 << 20

type serveConfig struct {
	listen           string
	policyFile       string
	policyDir        string
	shadow           bool
	protectData      bool
	evalTimeout      time.Duration
	logFormat        string
	logLevel         string
	decisionSample   float64
	decisionLog      string
	decisionLogMB    int
	decisionLogKeep  int
	decisionLogMeta  string
	shadowSample     float64
	shadowLogSample  float64
	metricsListen    string
	tlsCert          string
	tlsKey           string
	tlsClientCA      string
	authTokenFile    string
	maxConcurrent    int
	maxRequestBytes  int
	maxConnectionAge time.Duration
	maxConnections   int
	maxPolicyBytes   int
	maxStateBytes    int
	compileTimeout   time.Duration
	drainTimeout     time.Duration
	luaPath          *string
	pprof            bool
}

// defaultMaxConnections is far above what SMTP front-ends open (a few
// connections each).
const defaultMaxConnections = 1024

// reservedFiles are the file descriptors kept for everything but gRPC
// connections: policy files and their watches, /metrics, logs.
const reservedFiles = 64

// openFileLimit is the process's limit on open files; the Go runtime has
// raised its soft limit to (one below) the hard one at start. Zero when
// unknown.
func openFileLimit() uint64 {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return 0
	}
	return lim.Cur
}

// connectionCap is the connection cap to apply: requested, or what the
// open-file limit can hold beside reservedFiles when that is lower or
// requested is zero (past the limit, accept fails and the server stops
// answering anyone). Zero means no cap.
func connectionCap(requested int, openFiles uint64, logger *slog.Logger) int {
	if openFiles == 0 {
		return requested
	}
	fit := max(1, int(min(openFiles, math.MaxInt32))-reservedFiles)
	if requested > 0 && requested <= fit {
		return requested
	}
	if requested > fit {
		logger.Warn("the open-file limit is too low for --max-connections: connections capped to fit; raise the limit (ulimit -n, LimitNOFILE=) to allow more",
			"max_connections", requested, "open_file_limit", openFiles, "cap", fit)
	}
	return fit
}

func (c *serveConfig) bind(fs *flag.FlagSet) {
	c.luaPath = luaPathFlag(fs)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:7070", "gRPC listen `address`")
	fs.StringVar(&c.policyFile, "policy", "", "serve this policy `file` as the default policy, reloaded when it changes (default: the bundled example policy)")
	fs.StringVar(&c.policyDir, "policy-dir", "", "serve every NAME.lua in `dir` as policy NAME, reloaded when the directory changes; NAME.shadow.lua beside NAME.lua is NAME's candidate, evaluated in the background and compared, and alone serves NAME in shadow mode")
	fs.BoolVar(&c.shadow, "shadow", false, "shadow mode for every policy: evaluate, log and count rewrites, but return the original reply")
	fs.BoolVar(&c.protectData, "protect-data", true, "keep the original when a policy turns a successful DATA reply into a failure (--protect-data=false to allow it)")
	fs.DurationVar(&c.evalTimeout, "eval-timeout", policy.DefaultEvalTimeout, "time budget of one policy evaluation")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.Float64Var(&c.decisionSample, "decision-log-sample", 0, "fraction of decisions recorded, 0 to 1 (0: none, 1: all)")
	fs.StringVar(&c.decisionLog, "decision-log", "", "write the decision records to this `file` as JSON lines, rotated by size, instead of the log")
	fs.IntVar(&c.decisionLogMB, "decision-log-max-mb", 100, "size in MiB at which --decision-log is rotated")
	fs.IntVar(&c.decisionLogKeep, "decision-log-backups", 5, "rotated --decision-log files kept (0: all)")
	fs.StringVar(&c.decisionLogMeta, "decision-log-meta", "keys", "conn_meta in decision records: keys (its keys only) or full (the whole object, which replay needs)")
	fs.Float64Var(&c.shadowSample, "shadow-sample", 1, "fraction of a policy's requests its candidate (NAME.shadow.lua beside NAME.lua) is evaluated on, 0 to 1")
	fs.Float64Var(&c.shadowLogSample, "shadow-log-sample", 1, "fraction of shadow-mode would-be rewrites, and of candidate replies that differ, logged, 0 to 1")
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "serve Prometheus /metrics, /healthz and /readyz on this `address` (default: none)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "serve gRPC over TLS with this PEM certificate `file` (reloaded when it changes and on SIGHUP)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.StringVar(&c.tlsClientCA, "tls-client-ca", "", "require client certificates signed by this PEM CA `file` (mutual TLS)")
	fs.StringVar(&c.authTokenFile, "auth-token-file", "", "require \"authorization: Bearer TOKEN\" on every call but health checks; `file` holds one token per line (reloaded on SIGHUP)")
	fs.IntVar(&c.maxConcurrent, "max-concurrent", defaultMaxConcurrent(), "rewrite calls in flight before further ones are refused with RESOURCE_EXHAUSTED, and Lua states kept warm per policy: 8 per GOMAXPROCS unless set; 0: no cap")
	fs.IntVar(&c.maxRequestBytes, "max-request-bytes", server.DefaultMaxRequestBytes, "largest request accepted; a larger one is refused with INVALID_ARGUMENT")
	fs.DurationVar(&c.maxConnectionAge, "max-connection-age", 5*time.Minute, "close client connections after this long, so round_robin clients spread onto new replicas")
	fs.IntVar(&c.maxConnections, "max-connections", defaultMaxConnections, "gRPC connections open at once, further ones wait in the listen backlog until one closes; lowered to fit the open-file limit (0: only that limit)")
	fs.IntVar(&c.maxPolicyBytes, "max-policy-bytes", registry.DefaultMaxPolicyBytes, "largest policy file compiled; a larger one is refused unread")
	fs.IntVar(&c.maxStateBytes, "max-state-bytes", policy.DefaultMaxStateBytes, "memory one Lua state may hold once a policy's top level has run (every warm state holds as much); a policy over it is refused")
	fs.DurationVar(&c.compileTimeout, "compile-timeout", registry.DefaultCompileTimeout, "time budget of compiling and warming one policy; a slower one is refused")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 10*time.Second, "how long SIGTERM waits for in-flight calls")
	fs.BoolVar(&c.pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ on --metrics-listen")
}

// defaultMaxConcurrent admits 8 calls per core. Evaluations are CPU-bound
// (tens of microseconds), so calls past a few per core only wait for a CPU;
// 8 per core absorbs bursts. Each policy keeps a warm Lua state for every
// call admitted (see openRegistry), so an overloaded replica refuses at once
// instead of spending its CPU building states for calls that would answer
// late.
func defaultMaxConcurrent() int { return 8 * runtime.GOMAXPROCS(0) }

func (c *serveConfig) check() error {
	switch {
	case c.policyFile != "" && c.policyDir != "":
		return errors.New("--policy and --policy-dir exclude each other")
	case c.decisionSample < 0 || c.decisionSample > 1:
		return fmt.Errorf("--decision-log-sample: %v is not between 0 and 1", c.decisionSample)
	case c.shadowSample < 0 || c.shadowSample > 1:
		return fmt.Errorf("--shadow-sample: %v is not between 0 and 1", c.shadowSample)
	case c.shadowLogSample < 0 || c.shadowLogSample > 1:
		return fmt.Errorf("--shadow-log-sample: %v is not between 0 and 1", c.shadowLogSample)
	case c.decisionLogMB <= 0:
		return fmt.Errorf("--decision-log-max-mb: %d is not positive", c.decisionLogMB)
	case c.decisionLogKeep < 0:
		return fmt.Errorf("--decision-log-backups: %d is negative", c.decisionLogKeep)
	case c.decisionLogMeta != "keys" && c.decisionLogMeta != "full":
		return fmt.Errorf("--decision-log-meta: %q is neither keys nor full", c.decisionLogMeta)
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case c.tlsClientCA != "" && c.tlsCert == "":
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	case c.maxConcurrent < 0:
		return fmt.Errorf("--max-concurrent: %d is negative", c.maxConcurrent)
	case c.maxRequestBytes <= 0 || c.maxRequestBytes > maxRequestBytesLimit:
		return fmt.Errorf("--max-request-bytes: %d is not between 1 and %d", c.maxRequestBytes, maxRequestBytesLimit)
	case c.maxPolicyBytes <= 0:
		return fmt.Errorf("--max-policy-bytes: %d is not positive", c.maxPolicyBytes)
	case c.maxStateBytes <= 0:
		return fmt.Errorf("--max-state-bytes: %d is not positive", c.maxStateBytes)
	case c.compileTimeout <= 0:
		return fmt.Errorf("--compile-timeout: %v is not positive", c.compileTimeout)
	case c.maxConnections < 0:
		return fmt.Errorf("--max-connections: %d is negative", c.maxConnections)
	case c.pprof && c.metricsListen == "":
		return errors.New("--pprof needs --metrics-listen")
	case c.maxConnectionAge <= 0:
		return fmt.Errorf("--max-connection-age: %v is not positive", c.maxConnectionAge)
	}
	return nil
}

func runServe(args []string, stdout, stderr io.Writer) int {
	var cfg serveConfig
	fs := newFlagSet("serve", stderr)
	cfg.bind(fs)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rewrited serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := cfg.check(); err != nil {
		fmt.Fprintf(stderr, "rewrited serve: %v\n", err)
		return 2
	}
	logger, err := newLogger(stderr, cfg.logFormat, cfg.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "rewrited serve: %v\n", err)
		return 2
	}
	if err := serve(cfg, logger); err != nil {
		logger.Error("rewrited stopped", "error", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format: %q is neither text nor json", format)
	}
}

// openRegistry loads the policies: the directory, the file, or the bundled
// example.
func openRegistry(cfg serveConfig, logger *slog.Logger, m *metrics.Metrics, onReload func()) (*registry.Registry, error) {
	rc := registry.Config{
		File: cfg.policyFile,
		Dir:  cfg.policyDir,
		Options: policy.Options{
			EvalTimeout: cfg.evalTimeout,
			Shadow:      cfg.shadow,
			ProtectData: cfg.protectData,
			Logger:      logger,
			LuaPath:     *cfg.luaPath,
			// One idle state per call admitted: a call that finds the pool
			// empty builds a state, which costs many evaluations' time.
			PoolSize:      cfg.maxConcurrent,
			MaxStateBytes: cfg.maxStateBytes,
		},
		Logger:         logger,
		OnLoad:         m.PolicyLoaded,
		MaxPolicyBytes: cfg.maxPolicyBytes,
		CompileTimeout: cfg.compileTimeout,
		OnReload:       onReload,
	}
	if rc.File == "" && rc.Dir == "" {
		rc.File, rc.Src = defaultPolicyFile, defaultPolicy
		logger.Info("no --policy given: serving the bundled example policy", "policy", rewrite.DefaultPolicy, "file", rc.File)
	}
	reg, err := registry.Open(rc)
	if err != nil {
		return nil, fmt.Errorf("loading the policies: %w", err)
	}
	return reg, nil
}

// security loads the TLS files and tokens, as server options.
func security(cfg serveConfig, logger *slog.Logger, sc *server.Config) (tlsFiles *server.TLSFiles, err error) {
	if cfg.tlsCert != "" {
		if tlsFiles, err = server.LoadTLS(cfg.tlsCert, cfg.tlsKey, cfg.tlsClientCA); err != nil {
			return nil, err
		}
		sc.Options = append(sc.Options, tlsFiles.ServerOption())
	}
	if cfg.authTokenFile != "" {
		if sc.Tokens, err = server.LoadTokens(cfg.authTokenFile, logger); err != nil {
			return nil, err
		}
		if tlsFiles == nil {
			logger.Warn("--auth-token-file without --tls-cert: tokens cross the network in clear")
		}
	}
	return tlsFiles, nil
}

// observers fans a decision out to several observers.
type observers []rewrite.Observer

func (obs observers) Observe(ctx context.Context, p *policy.Policy, in policy.Input, d policy.Decision, elapsed time.Duration) {
	for _, o := range obs {
		o.Observe(ctx, p, in, d, elapsed)
	}
}

func serve(cfg serveConfig, logger *slog.Logger) error {
	// Caught from the start: a SIGHUP sent while loading must not kill the
	// process; it is handled once serving.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigc)
	m := metrics.New()
	var ready readiness
	reg, err := openRegistry(cfg, logger, m, ready.update)
	if err != nil {
		return err
	}
	defer reg.Close()
	m.CollectPolicies(reg)
	m.CollectLoadState(reg)
	registerBuildInfo(m)

	sc := server.Config{
		Logger:            logger,
		MaxRequestBytes:   cfg.maxRequestBytes,
		MaxConcurrent:     cfg.maxConcurrent,
		MaxConnectionAge:  cfg.maxConnectionAge,
		OnUnauthenticated: m.Unauthenticated,
		Unary:             []grpc.UnaryServerInterceptor{m.UnaryServerInterceptor()},
		Stream:            []grpc.StreamServerInterceptor{m.StreamServerInterceptor()},
	}
	tlsFiles, err := security(cfg, logger, &sc)
	if err != nil {
		return err
	}
	tracing, err := telemetry.FromEnv(context.Background(), "rewrited")
	if err != nil {
		return err
	}
	defer flushTraces(tracing, logger)
	sc.Options = append(sc.Options, tracing.ServerOptions()...)
	obs := observers{m}
	if cfg.decisionSample > 0 || cfg.shadowLogSample > 0 {
		dl := decisionlog.Config{Logger: logger, Sample: cfg.decisionSample, ShadowSample: cfg.shadowLogSample, FullMeta: cfg.decisionLogMeta == "full"}
		if cfg.decisionLog != "" {
			file := &lumberjack.Logger{Filename: cfg.decisionLog, MaxSize: cfg.decisionLogMB, MaxBackups: cfg.decisionLogKeep}
			defer file.Close()
			dl.File = file
		}
		obs = append(obs, decisionlog.New(dl))
	}
	if cfg.policyDir != "" && cfg.shadowSample > 0 {
		sh := shadow.New(shadow.Config{Candidates: reg, Sample: cfg.shadowSample, LogSample: cfg.shadowLogSample, OnCompare: m.ShadowCompared, Logger: logger})
		defer sh.Close()
		obs = append(obs, sh)
	}
	svc := rewrite.New(reg, rewrite.WithLogger(logger), rewrite.WithObserver(obs))
	srv := server.New(svc, sc)
	m.InitializeMetrics(srv.GRPC)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := reg.Watch(ctx, registry.DefaultDebounce); err != nil {
		return err
	}
	if tlsFiles != nil {
		if err := tlsFiles.Watch(ctx, registry.DefaultDebounce, logger); err != nil {
			return err
		}
	}
	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if maxConns := connectionCap(cfg.maxConnections, openFileLimit(), logger); maxConns > 0 {
		lis = netutil.LimitListener(lis, maxConns)
	}
	metricsSrv, err := serveMetrics(cfg.metricsListen, httpHandler(m, srv, reg, cfg.pprof), logger)
	if err != nil {
		lis.Close()
		return err
	}
	ready.attach(reg, srv)

	errc := make(chan error, 1)
	go func() { errc <- srv.GRPC.Serve(lis) }()
	logger.Info("serving", "version", buildVersion(), "addr", lis.Addr().String(), "tls", tlsFiles != nil, "mtls", cfg.tlsClientCA != "", "auth", sc.Tokens != nil, "ready", reg.Ready())

	// Reloads run beside the signal loop, so that SIGTERM is acted on while
	// a policy compiles; SIGHUPs sent during a reload bring one more.
	hup := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reload(reg, tlsFiles, sc.Tokens, logger)
			}
		}
	}()
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("serving: %w", err)
		case sig := <-sigc:
			if sig == syscall.SIGHUP {
				select {
				case hup <- struct{}{}:
				default: // a reload is already due
				}
				continue
			}
			drain(srv, metricsSrv, cfg.drainTimeout, sig, logger)
			return nil
		}
	}
}

// flushTraces exports the spans still buffered before the process exits.
func flushTraces(tracing *telemetry.Tracing, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tracing.Shutdown(ctx); err != nil {
		logger.Warn("traces not flushed", "error", err.Error())
	}
}

// drain stops taking calls and lets those in flight finish, for up to
// timeout.
func drain(srv *server.Server, metricsSrv *http.Server, timeout time.Duration, sig os.Signal, logger *slog.Logger) {
	logger.Info("draining", "signal", sig.String(), "timeout", timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	srv.Shutdown(ctx)
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(ctx)
	}
	logger.Info("stopped")
}

// reload rereads the policies, certificates and tokens on SIGHUP; whatever
// fails to load is logged and the version in use kept.
func reload(reg *registry.Registry, tlsFiles *server.TLSFiles, tokens *server.Tokens, logger *slog.Logger) {
	logger.Info("SIGHUP: reloading")
	_ = reg.Reload() // logged and counted by the registry
	if tlsFiles != nil {
		if err := tlsFiles.Reload(); err != nil {
			logger.Error("TLS files refused: the previous ones stay in use", "error", err.Error())
		}
	}
	if tokens != nil {
		if err := tokens.Reload(); err != nil {
			logger.Error("tokens refused: the previous ones stay in use", "error", err.Error())
		}
	}
}

// serveMetrics serves h (see httpHandler) on addr, unless addr is empty.
func serveMetrics(addr string, h http.Handler, logger *slog.Logger) (*http.Server, error) {
	if addr == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	// Scrapes take milliseconds: the timeouts free the connections of
	// clients that stall or keep idle connections open.
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
	}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "error", err.Error())
		}
	}()
	logger.Info("serving metrics", "addr", lis.Addr().String())
	return srv, nil
}
