// Command proxy measures rewrited-proxy against a private Postfix with
// Postfix's smtp-source: messages per second and session latency, direct to
// Postfix and through the proxy with the bundled example policy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/internal/postfixtest"
	"github.com/rewrited/rewrited/proxy"
)

type config struct {
	sessions []int
	messages int
	reps     int
	out      string
	args     []string
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/proxy:", err)
		os.Exit(2)
	}
	if err := run(cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench/proxy:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	cfg := config{args: args}
	fs := flag.NewFlagSet("bench/proxy", flag.ContinueOnError)
	sessions := fs.String("sessions", "1,32", "comma-separated smtp-source session counts (-s)")
	fs.IntVar(&cfg.messages, "messages", 0, "messages per run (default: 100 per session, at least 200)")
	fs.IntVar(&cfg.reps, "reps", 5, "alternating direct/proxy runs per session count")
	fs.StringVar(&cfg.out, "out", "bench/results/proxy.md", "also write the markdown report here (\"-\": stdout only)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, s := range strings.Split(*sessions, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("-sessions: %q is not a positive count", s)
		}
		cfg.sessions = append(cfg.sessions, n)
	}
	if cfg.reps < 1 {
		return cfg, errors.New("-reps must be at least 1")
	}
	return cfg, nil
}

// sample is one smtp-source run.
type sample struct {
	rate    float64       // messages per second
	session time.Duration // mean session time: wall time × sessions / messages
	calls   float64       // rewrite calls per message (proxy runs)
}

func run(cfg config, stdout io.Writer) error {
	if _, err := exec.LookPath("smtp-source"); err != nil {
		return errors.New("smtp-source not found (apt-get install -y postfix)")
	}
	pf, err := postfixtest.Start()
	if err != nil {
		return err
	}
	defer pf.Stop()
	tmp, err := os.MkdirTemp("", "rewrited-bench-proxy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	target, stop, err := startRewrited(tmp)
	if err != nil {
		return err
	}
	defer stop()

	var calls, fallbacks atomic.Int64
	rw, err := client.New(target, client.WithObserver(func(r client.Result, _ time.Duration) {
		calls.Add(1)
		if r.Err != nil {
			fallbacks.Add(1)
		}
	}))
	if err != nil {
		return err
	}
	defer rw.Close()
	srv, err := proxy.New(proxy.Config{Backend: pf.Addr, Rewriter: rw, Hostname: "proxy.bench", MaxConnections: 0,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = srv.Serve(l, false) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()

	var b strings.Builder
	fmt.Fprintf(&b, "# rewrited-proxy against Postfix %s\n\n", postfixVersion())
	fmt.Fprintf(&b, "`go run ./bench/proxy %s`, %s, %d CPUs, load average at start %s. ",
		strings.Join(cfg.args, " "), time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), loadavg())
	b.WriteString("smtp-source sends one message per session (EHLO, MAIL, RCPT, DATA, QUIT) to Postfix directly and through the proxy (the bundled example policy, client budget 100ms), in alternating runs; Postfix discards the mail. ")
	b.WriteString("Session latency is the mean: wall time × sessions / messages. Medians of the runs, range in brackets; the ratio is the median of the per-pair ratios.\n\n")
	b.WriteString("| sessions | messages/run | direct msg/s | proxy msg/s | ratio proxy/direct | direct session | proxy session | rewrite calls/msg |\n|---|---|---|---|---|---|---|---|\n")
	for _, s := range cfg.sessions {
		m := cfg.messages
		if m == 0 {
			m = max(200, 100*s)
		}
		var direct, viaProxy []sample
		var ratios []float64
		for rep := range cfg.reps {
			d, err := smtpSource(pf.Addr, s, m)
			if err != nil {
				return err
			}
			before := calls.Load()
			p, err := smtpSource(l.Addr().String(), s, m)
			if err != nil {
				return err
			}
			p.calls = float64(calls.Load()-before) / float64(m)
			direct, viaProxy = append(direct, d), append(viaProxy, p)
			ratios = append(ratios, p.rate/d.rate)
			fmt.Fprintf(os.Stderr, "sessions %d rep %d: direct %.0f msg/s, proxy %.0f msg/s\n", s, rep+1, d.rate, p.rate)
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %s | %s | %s | %s | %s |\n", s, m,
			stat(direct, func(x sample) float64 { return x.rate }, "%.0f"),
			stat(viaProxy, func(x sample) float64 { return x.rate }, "%.0f"),
			medianRange(ratios, "%.2f"),
			stat(direct, func(x sample) float64 { return x.session.Seconds() * 1000 }, "%.1f ms"),
			stat(viaProxy, func(x sample) float64 { return x.session.Seconds() * 1000 }, "%.1f ms"),
			stat(viaProxy, func(x sample) float64 { return x.calls }, "%.2f"))
	}
	fmt.Fprintf(&b, "\nRewrite calls that fell back to the original reply: %d of %d.\n", fallbacks.Load(), calls.Load())
	if _, err := io.WriteString(stdout, b.String()); err != nil {
		return err
	}
	if cfg.out != "-" {
		if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(cfg.out, []byte(b.String()), 0o644)
	}
	return nil
}

func smtpSource(addr string, sessions, messages int) (sample, error) {
	start := time.Now()
	out, err := exec.Command("smtp-source", "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(messages),
		"-f", "bench@client.test", "-t", "bob@example.com", addr).CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("smtp-source to %s: %w\n%s", addr, err, out)
	}
	return sample{
		rate:    float64(messages) / wall.Seconds(),
		session: wall * time.Duration(sessions) / time.Duration(messages),
	}, nil
}

// startRewrited builds and runs `rewrited serve` with the bundled policy.
func startRewrited(tmp string) (string, func(), error) {
	bin := filepath.Join(tmp, "rewrited")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/rewrited").CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("go build ./cmd/rewrited (run from the module root): %w\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := l.Addr().String()
	_ = l.Close()
	cmd := exec.Command(bin, "serve", "--listen", addr, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return addr, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("rewrited does not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func stat(xs []sample, f func(sample) float64, format string) string {
	vals := make([]float64, len(xs))
	for i, x := range xs {
		vals[i] = f(x)
	}
	return medianRange(vals, format)
}

func medianRange(vals []float64, format string) string {
	s := slices.Clone(vals)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf(format+" ["+format+"–"+format+"]", med, s[0], s[len(s)-1])
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func postfixVersion() string {
	out, err := exec.Command("postconf", "-h", "mail_version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
