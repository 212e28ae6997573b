// Command smtp-frontend is an example SMTP server, built on emersion/go-smtp, that passes its replies through rewrited.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/internal/telemetry"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "smtp-frontend:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("smtp-frontend", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:2525", "SMTP listen address")
	target := fs.String("rewrited", "127.0.0.1:7070", "rewrited gRPC target: host:port, dns:///name:port, or a comma-separated list")
	timeout := fs.Duration("timeout", client.DefaultTimeout, "budget of one rewrite call")
	policy := fs.String("policy", "", "rewrited policy name (empty: its default)")
	store := fs.String("store", "", "directory to store accepted messages in (empty: discard)")
	hostname := fs.String("hostname", host, "this server's name, for the banner and conn_meta")
	reject := fs.String("reject-domain", "", "comma-separated domains whose senders and recipients are refused")
	maxBytes := fs.Int64("max-bytes", 25<<20, "largest message accepted")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus /metrics on this address (empty: off)")
	verbose := fs.Bool("v", false, "log every reply")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if *store != "" {
		if err := os.MkdirAll(*store, 0o750); err != nil {
			return err
		}
	}
	tracing, err := telemetry.FromEnv(context.Background(), "smtp-frontend")
	if err != nil {
		return err
	}
	defer func() { _ = tracing.Shutdown(context.Background()) }()
	reg := prometheus.NewRegistry()
	metrics := newFrontendMetrics(reg)
	rw, err := client.New(*target, append(metrics.options(), client.WithTimeout(*timeout), client.WithPolicy(*policy),
		client.WithDialOptions(tracing.DialOptions()...))...)
	if err != nil {
		return err
	}
	defer rw.Close()
	if *metricsListen != "" {
		ml, err := net.Listen("tcp", *metricsListen)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = msrv.Serve(ml) }()
		defer msrv.Close()
		logger.Info("metrics", "addr", ml.Addr().String())
	}

	var domains []string
	for _, d := range strings.Split(*reject, ",") {
		if d = strings.TrimSpace(d); d != "" {
			domains = append(domains, d)
		}
	}
	srv := newServer(rw, frontendConfig{
		Hostname: *hostname, StoreDir: *store, RejectDomains: domains, MaxBytes: *maxBytes, Logger: logger,
		Tracer: tracing.Tracer("smtp-frontend"),
	})
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	logger.Info("listening", "addr", l.Addr().String(), "rewrited", *target)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- serve(srv, l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
		_ = srv.Close()
	}
	return nil
}
