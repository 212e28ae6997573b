// Command rewrited-proxy is an SMTP proxy in front of any MTA that passes every reply through rewrited.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/proxy"
)

func main() {
	if err := run(os.Args[1:], nil); err != nil {
		fmt.Fprintln(os.Stderr, "rewrited-proxy:", err)
		os.Exit(2)
	}
}

type options struct {
	listen, tlsListen, backend, target, policy, hostname string
	timeout                                              time.Duration
	tlsCert, tlsKey                                      string
	proxyProtocol                                        string
	xclient, backendTLS, backendTLSSkipVerify            bool
	backendTLSCA                                         string
	rewritedCA, rewritedTokenFile                        string
	maxConnections                                       int
	idleTimeout, commandTimeout, grace                   time.Duration
	metricsListen, logLevel                              string
}

func parse(args []string) (*options, error) {
	host, _ := os.Hostname()
	var o options
	fs := flag.NewFlagSet("rewrited-proxy", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: rewrited-proxy --listen ADDR --backend HOST:PORT --rewrited TARGET [flags]\n\nRelays SMTP to the backend MTA and passes every reply through rewrited. Flags:")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.listen, "listen", "127.0.0.1:2525", "SMTP listen `address` (empty: none)")
	fs.StringVar(&o.tlsListen, "tls-listen", "", "implicit TLS (port 465 style) listen `address`; needs --tls-cert")
	fs.StringVar(&o.backend, "backend", "", "the MTA's `host:port` (required)")
	fs.StringVar(&o.target, "rewrited", "127.0.0.1:7070", "rewrited gRPC `target`: host:port, dns:///name:port, or a comma-separated list")
	fs.DurationVar(&o.timeout, "timeout", client.DefaultTimeout, "budget of one rewrite call; the reply goes out unchanged after it")
	fs.StringVar(&o.policy, "policy", "", "rewrited policy `name` (empty: its default)")
	fs.StringVar(&o.rewritedCA, "rewrited-tls-ca", "", "call rewrited over TLS, trusting this PEM CA `file`")
	fs.StringVar(&o.rewritedTokenFile, "rewrited-token-file", "", "send the bearer token in `file` to rewrited (needs --rewrited-tls-ca)")
	fs.StringVar(&o.hostname, "hostname", host, "this proxy's `name`, in its own replies, its EHLO to the backend and conn_meta")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate `file`: offer STARTTLS with it")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.BoolVar(&o.backendTLS, "backend-tls", false, "use STARTTLS to the backend when it offers it")
	fs.StringVar(&o.backendTLSCA, "backend-tls-ca", "", "PEM CA `file` the backend's certificate must chain to (default: the system roots)")
	fs.BoolVar(&o.backendTLSSkipVerify, "backend-tls-skip-verify", false, "accept any backend certificate")
	fs.StringVar(&o.proxyProtocol, "backend-proxy-protocol", "", "send the client's address in a PROXY protocol header: `v1` or v2")
	fs.BoolVar(&o.xclient, "xclient", false, "send the client's address with XCLIENT when the backend offers it (one that does not sees the proxy's address; a warning is logged once)")
	fs.IntVar(&o.maxConnections, "max-connections", 1000, "concurrent sessions; further clients get 421 (0: no cap)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", proxy.DefaultIdleTimeout, "wait for each client command or read")
	fs.DurationVar(&o.commandTimeout, "command-timeout", proxy.DefaultCommandTimeout, "wait for each backend reply")
	fs.DurationVar(&o.grace, "grace", 30*time.Second, "on SIGTERM, how long sessions may finish their current command")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus /metrics on this `address` (default: no metrics)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.backend == "" {
		return nil, errors.New("--backend is required")
	}
	if o.listen == "" && o.tlsListen == "" {
		return nil, errors.New("nothing to listen on: give --listen or --tls-listen")
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if o.tlsListen != "" && o.tlsCert == "" {
		return nil, errors.New("--tls-listen needs --tls-cert and --tls-key")
	}
	if o.rewritedTokenFile != "" && o.rewritedCA == "" {
		return nil, errors.New("--rewrited-token-file needs --rewrited-tls-ca: a token is never sent in plaintext")
	}
	return &o, nil
}

func (o *options) proxyVersion() (int, error) {
	switch strings.ToLower(o.proxyProtocol) {
	case "":
		return 0, nil
	case "v1", "1":
		return 1, nil
	case "v2", "2":
		return 2, nil
	}
	return 0, fmt.Errorf("--backend-proxy-protocol: want v1 or v2, got %q", o.proxyProtocol)
}

// run starts the proxy; ready, when set, receives the listening addresses.
func run(args []string, ready chan<- []string) error {
	o, err := parse(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	version, err := o.proxyVersion()
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	copts := []client.Option{client.WithTimeout(o.timeout), client.WithPolicy(o.policy), client.WithObserver(m.observe)}
	if o.rewritedCA != "" {
		pool, err := loadPool(o.rewritedCA)
		if err != nil {
			return err
		}
		copts = append(copts, client.WithTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	if o.rewritedTokenFile != "" {
		b, err := os.ReadFile(o.rewritedTokenFile)
		if err != nil {
			return fmt.Errorf("--rewrited-token-file: %w", err)
		}
		copts = append(copts, client.WithBearerToken(strings.TrimSpace(string(b))))
	}
	rw, err := client.New(o.target, copts...)
	if err != nil {
		return err
	}
	defer rw.Close()

	cfg := proxy.Config{
		Backend: o.backend, Rewriter: rw, Hostname: o.hostname, ProxyProtocol: version, XClient: o.xclient,
		MaxConnections: o.maxConnections, IdleTimeout: o.idleTimeout, CommandTimeout: o.commandTimeout, Logger: logger,
	}
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return fmt.Errorf("--tls-cert: %w", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if o.backendTLS {
		cfg.BackendTLS = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.backendTLSSkipVerify} //nolint:gosec // an explicit operator choice
		if o.backendTLSCA != "" {
			if cfg.BackendTLS.RootCAs, err = loadPool(o.backendTLSCA); err != nil {
				return err
			}
		}
	}
	srv, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	m.sessions(srv)

	errc := make(chan error, 3)
	var addrs []string
	serve := func(addr string, implicitTLS bool) error {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		addrs = append(addrs, l.Addr().String())
		logger.Info("listening", "addr", l.Addr().String(), "implicit_tls", implicitTLS, "backend", o.backend, "rewrited", o.target)
		go func() { errc <- srv.Serve(l, implicitTLS) }()
		return nil
	}
	if o.listen != "" {
		if err := serve(o.listen, false); err != nil {
			return err
		}
	}
	if o.tlsListen != "" {
		if err := serve(o.tlsListen, true); err != nil {
			return err
		}
	}
	if o.metricsListen != "" {
		ml, err := net.Listen("tcp", o.metricsListen)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = hs.Serve(ml) }()
		defer hs.Close()
		logger.Info("metrics", "addr", ml.Addr().String())
	}
	if ready != nil {
		ready <- addrs
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down", "grace", o.grace)
	sctx, cancel := context.WithTimeout(context.Background(), o.grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("sessions cut at the end of the grace period", "err", err)
	}
	return nil
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return pool, nil
}
