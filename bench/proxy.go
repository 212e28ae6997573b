package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/internal/postfixtest"
	"github.com/rewrited/rewrited/proxy"
)

// proxySample is one smtp-source run.
type proxySample struct {
	rate    float64       // messages per second
	session time.Duration // mean session time: wall time × sessions / messages
	calls   float64       // rewrite calls per message
	proxy   time.Duration // CPU of this process (the proxy) per message
	server  time.Duration // CPU of rewrited per message
	rest    time.Duration // CPU of everything else (Postfix, smtp-source, other work) per message
}

// proxyBench sends mail with Postfix's smtp-source to a private Postfix,
// directly and through an in-process rewrited-proxy asking srv with the
// bundled example policy, in alternating runs (-mode proxy).
func proxyBench(cfg config, srv *server, report io.Writer) error {
	if _, err := exec.LookPath("smtp-source"); err != nil {
		return errors.New("smtp-source not found (apt-get install -y postfix)")
	}
	pf, err := postfixtest.Start()
	if err != nil {
		return err
	}
	defer pf.Stop()

	var calls, fallbacks atomic.Int64
	rw, err := client.New(srv.addr, client.WithObserver(func(r client.Result, _ time.Duration) {
		calls.Add(1)
		if r.Err != nil {
			fallbacks.Add(1)
		}
	}))
	if err != nil {
		return err
	}
	defer rw.Close()
	pcfg := proxy.Config{Backend: pf.Addr, Rewriter: rw, Hostname: "proxy.bench",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if cfg.noRewrite {
		pcfg.Rewriter = nil // every reply goes out as the backend sent it
	}
	px, err := proxy.New(pcfg)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = px.Serve(l, false) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = px.Shutdown(ctx)
	}()

	fmt.Fprintf(report, "\nPostfix %s. smtp-source sends one message per session (EHLO, MAIL, RCPT, DATA, QUIT), "+
		"directly to Postfix and through rewrited-proxy (in this process; the bundled example policy, client budget %v), "+
		"in alternating runs; Postfix discards the mail%s. Session time is the mean, wall time × sessions / messages. "+
		"CPU per message from /proc: the proxy (this process), rewrited, and the rest of the machine (Postfix, smtp-source and any other work). "+
		"Medians of %d runs, range in parentheses; the ratio is the median of the per-pair ratios.\n\n",
		postfixVersion(), client.DefaultTimeout, map[bool]string{true: "; **-no-rewrite: the proxy only relays, no rewrite call is made**"}[cfg.noRewrite], cfg.reps)
	if cfg.proxyProf != "" {
		stop, err := profileProxyRuns(srv, cfg.proxyProf)
		if err != nil {
			return err
		}
		defer func() {
			if err := stop(); err != nil {
				fmt.Fprintln(os.Stderr, "bench: profiles:", err)
			}
		}()
	}
	report.Write([]byte("| sessions | messages/run | direct msg/s | proxy msg/s | ratio proxy/direct | direct session | proxy session | rewrite calls/msg | proxy CPU/msg | rewrited CPU/msg | rest CPU/msg direct → proxy |\n|---|---|---|---|---|---|---|---|---|---|---|\n"))
	for _, s := range cfg.sessions {
		m := cfg.messages
		if m == 0 {
			m = max(200, 100*s)
		}
		var direct, via []proxySample
		var ratios []float64
		for rep := range cfg.reps {
			d, err := smtpSource(srv, pf.Addr, s, m, nil)
			if err != nil {
				return err
			}
			p, err := smtpSource(srv, l.Addr().String(), s, m, &calls)
			if err != nil {
				return err
			}
			direct, via = append(direct, d), append(via, p)
			ratios = append(ratios, p.rate/d.rate)
			fmt.Fprintf(os.Stderr, "sessions %d run %d: direct %.0f msg/s, proxy %.0f msg/s\n", s, rep+1, d.rate, p.rate)
		}
		rate := func(x proxySample) float64 { return x.rate }
		session := func(x proxySample) float64 { return x.session.Seconds() * 1000 }
		micro := func(f func(proxySample) time.Duration) func(proxySample) float64 {
			return func(x proxySample) float64 { return float64(f(x).Microseconds()) }
		}
		fmt.Fprintf(report, "| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s → %s |\n", s, m,
			spread(direct, rate, "%.0f"), spread(via, rate, "%.0f"), spread(ratios, func(x float64) float64 { return x }, "%.2f"),
			spread(direct, session, "%.1f ms"), spread(via, session, "%.1f ms"),
			spread(via, func(x proxySample) float64 { return x.calls }, "%.1f"),
			spread(via, micro(func(x proxySample) time.Duration { return x.proxy }), "%.0f µs"),
			spread(via, micro(func(x proxySample) time.Duration { return x.server }), "%.0f µs"),
			spread(direct, micro(func(x proxySample) time.Duration { return x.rest }), "%.0f µs"),
			spread(via, micro(func(x proxySample) time.Duration { return x.rest }), "%.0f µs"))
	}
	fmt.Fprintf(report, "\nRewrite calls that fell back to the original reply: %d of %d.\n", fallbacks.Load(), calls.Load())
	return nil
}

// smtpSource runs smtp-source once against addr; calls, when set, counts
// the rewrite calls.
func smtpSource(srv *server, addr string, sessions, messages int, calls *atomic.Int64) (proxySample, error) {
	before, err := srv.cpuSnapshot()
	if err != nil {
		return proxySample{}, err
	}
	var callsBefore int64
	if calls != nil {
		callsBefore = calls.Load()
	}
	start := time.Now()
	out, err := exec.Command("smtp-source", "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(messages),
		"-f", "bench@client.test", "-t", "bob@example.com", addr).CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		return proxySample{}, fmt.Errorf("smtp-source to %s: %w\n%s", addr, err, out)
	}
	after, err := srv.cpuSnapshot()
	if err != nil {
		return proxySample{}, err
	}
	n := time.Duration(messages)
	self, server := after.self-before.self, after.server-before.server
	x := proxySample{
		rate:    float64(messages) / wall.Seconds(),
		session: wall * time.Duration(sessions) / n,
		proxy:   self / n,
		server:  server / n,
		rest:    max(0, after.machine-before.machine-self-server) / n,
	}
	if calls != nil {
		x.calls = float64(calls.Load()-callsBefore) / float64(messages)
	}
	return x, nil
}

// profileProxyRuns starts CPU profiles of this process (the proxy) and of
// rewrited; stop writes them, with the allocation profiles at start and
// end, to dir as proxy.pprof and rewrited.pprof (.allocs-start, .allocs-end).
func profileProxyRuns(srv *server, dir string) (stop func() error, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	self := filepath.Join(dir, "proxy.pprof")
	if err := writeHeap(self + ".allocs-start"); err != nil {
		return nil, err
	}
	f, err := os.Create(self)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	if err := srv.startProfile(); err != nil {
		pprof.StopCPUProfile()
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		errs := []error{f.Close(), writeHeap(self + ".allocs-end"), srv.stopProfile()}
		for _, suffix := range []string{"", ".allocs-start", ".allocs-end"} {
			raw, err := os.ReadFile(srv.profile + suffix)
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, "rewrited.pprof"+suffix), raw, 0o644)
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}, nil
}

func writeHeap(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return errors.Join(pprof.Lookup("allocs").WriteTo(f, 0), f.Close())
}

func postfixVersion() string {
	out, err := exec.Command("postconf", "-h", "mail_version").Output()
	if err != nil {
		return "(version unknown)"
	}
	return strings.TrimSpace(string(out))
}
