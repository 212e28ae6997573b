// Command bench measures a real `rewrited serve` process over loopback:
// RewriteResponse against the empty call grpc.health.v1.Health/Check on one
// connection (-mode compare), RewriteResponse against the same call on a
// server built to do no work (-mode floor), the server's memory under a steady
// load (-mode memory), a CPU profile of the server (-mode profile), and
// rewrited-proxy in front of Postfix against Postfix alone (-mode proxy).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rewrited/rewrited/examples/policies"
)

type config struct {
	mode        string
	reps        int
	duration    time.Duration
	warmup      time.Duration
	inFlight    []int
	maxRequests int
	serverProcs int
	clientProcs int
	out         string
	binary      string
	memDuration time.Duration
	memInFlight int
	pprofOut    string
	profileCall callKind
	serverEnv   []string
	shadow      bool
	records     int
	sessions    []int
	messages    int
	noRewrite   bool
	proxyProf   string
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := benchmark(cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&cfg.mode, "mode", "compare", "compare: RewriteResponse against Health.Check; floor: RewriteResponse on the server as shipped against a server built to do no work (-tags benchfloor); memory: server RSS under load; profile: CPU profile of the server under load; replay: rewrited replay over generated decision records; proxy: smtp-source to Postfix, direct and through rewrited-proxy")
	fs.IntVar(&cfg.records, "records", 1_000_000, "decision records the replay mode generates and replays")
	fs.IntVar(&cfg.reps, "reps", 7, "repetitions per call kind, or server, and concurrency (compare, floor)")
	fs.DurationVar(&cfg.duration, "duration", 3*time.Second, "length of one measured run (compare, floor, and profile's profiled run)")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured load before each concurrency level")
	inFlight := fs.String("in-flight", "1,8,64", "comma-separated concurrency levels: calls kept in flight on the one connection (compare; floor's default is 8,64, where its targets are)")
	fs.IntVar(&cfg.maxRequests, "max-requests", 5_000_000, "upper bound on the calls of one run, whatever its duration")
	fs.IntVar(&cfg.serverProcs, "server-procs", 0, "GOMAXPROCS of the server (0: the Go default, all cores)")
	fs.IntVar(&cfg.clientProcs, "client-procs", 0, "GOMAXPROCS of this load generator (0: the Go default, all cores)")
	fs.StringVar(&cfg.out, "out", "", "also write the markdown report here (default bench/results/latest.md, memory.md or profile.md by mode; \"-\": stdout only)")
	fs.StringVar(&cfg.binary, "rewrited", "", "rewrited binary to run, the shipped side of floor (default: build ./cmd/rewrited)")
	fs.DurationVar(&cfg.memDuration, "mem-duration", time.Minute, "length of the memory run, sampled every second")
	fs.IntVar(&cfg.memInFlight, "mem-in-flight", 64, "calls in flight during the memory and profile runs")
	serverEnv := fs.String("server-env", "", "comma-separated `VAR=value` settings added to the server's environment only, e.g. GOGC=200,GOMEMLIMIT=256MiB")
	fs.StringVar(&cfg.pprofOut, "pprof", "bench/results/cpu.prof", "where profile mode keeps the raw CPU profile")
	fs.BoolVar(&cfg.shadow, "shadow", false, "serve the bundled policy from a --policy-dir with a candidate beside it (default.shadow.lua, the same policy), evaluated in the background on every request")
	profileCall := fs.String("profile-call", "rewrite", "the call profile mode drives: rewrite (RewriteResponse) or health (Health.Check, the floor to compare a profile with)")
	sessions := fs.String("sessions", "1,32", "comma-separated smtp-source session counts (proxy)")
	fs.IntVar(&cfg.messages, "messages", 0, "messages per smtp-source run (proxy; default 100 per session, at least 200)")
	fs.BoolVar(&cfg.noRewrite, "no-rewrite", false, "the proxy relays without asking rewrited, to separate the relay's cost from the calls' (proxy)")
	fs.StringVar(&cfg.proxyProf, "proxy-pprof", "", "directory where proxy mode writes CPU and allocation profiles of the proxy and of rewrited over its runs (proxy; default none)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch *profileCall {
	case "rewrite":
		cfg.profileCall = rewriteCall
	case "health":
		cfg.profileCall = healthCall
	default:
		return cfg, fmt.Errorf("-profile-call: %q is not rewrite or health", *profileCall)
	}
	if cfg.mode == "floor" && !isSet(fs, "in-flight") {
		*inFlight = "8,64"
	}
	for _, f := range strings.Split(*inFlight, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("-in-flight: %q is not a positive number", f)
		}
		cfg.inFlight = append(cfg.inFlight, n)
	}
	for _, f := range strings.Split(*sessions, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("-sessions: %q is not a positive number", f)
		}
		cfg.sessions = append(cfg.sessions, n)
	}
	for _, kv := range strings.Split(*serverEnv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if !strings.Contains(kv, "=") {
			return cfg, fmt.Errorf("-server-env: %q is not VAR=value", kv)
		}
		cfg.serverEnv = append(cfg.serverEnv, kv)
	}
	switch {
	case cfg.reps < 1:
		return cfg, errors.New("-reps must be at least 1")
	case cfg.duration <= 0 || cfg.memDuration <= 0 || cfg.warmup < 0:
		return cfg, errors.New("durations must be positive")
	case cfg.maxRequests < 1 || cfg.memInFlight < 1:
		return cfg, errors.New("-max-requests and -mem-in-flight must be positive")
	case cfg.records < 4:
		return cfg, errors.New("-records must be at least 4")
	}
	if cfg.out == "" {
		cfg.out = map[string]string{"compare": "latest.md", "floor": "floor.md", "memory": "memory.md", "profile": "profile.md", "replay": "replay.md", "proxy": "proxy.md"}[cfg.mode]
		if cfg.out == "" {
			return cfg, fmt.Errorf("-mode: %q is not compare, floor, memory, profile, replay or proxy", cfg.mode)
		}
		cfg.out = filepath.Join("bench", "results", cfg.out)
	}
	return cfg, nil
}

// isSet reports whether the command line set the flag called name.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func benchmark(cfg config, stdout io.Writer) error {
	if cfg.clientProcs > 0 {
		runtime.GOMAXPROCS(cfg.clientProcs)
	}
	tmp, err := os.MkdirTemp("", "rewrited-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := cfg.binary
	profiled := cfg.mode == "profile" || (cfg.mode == "proxy" && cfg.proxyProf != "")
	switch {
	case profiled:
		bin, err = buildServer(tmp, profiling)
	case bin == "":
		bin, err = buildServer(tmp, shipped)
	}
	if err != nil {
		return err
	}
	if cfg.mode == "replay" {
		var report bytes.Buffer
		fmt.Fprintf(&report, "Command: `%s`\n\n", commandLine())
		writeMachine(&report, cfg)
		if err := replayBench(cfg, bin, tmp, &report); err != nil {
			return err
		}
		return writeReport(cfg, stdout, report.Bytes())
	}
	profile := ""
	if profiled {
		profile = filepath.Join(tmp, "cpu.pprof")
	}
	args := serverArgs(cfg)
	if cfg.shadow {
		dir, err := shadowPolicyDir(tmp)
		if err != nil {
			return err
		}
		args = append(args, "--policy-dir", dir)
	}
	srv, calls, stop, err := serveAndConnect(cfg, bin, args, profile)
	if err != nil {
		return err
	}
	defer stop()
	var report bytes.Buffer
	fmt.Fprintf(&report, "Command: `%s`\n\n", commandLine())
	writeMachine(&report, cfg)
	switch cfg.mode {
	case "compare":
		err = compare(cfg, srv, calls, &report)
	case "memory":
		err = memory(cfg, srv, calls, &report)
	case "profile":
		err = profileServer(cfg, srv, calls, &report)
	case "floor":
		err = floorBench(cfg, tmp, srv, calls[rewriteCall], args, &report)
	case "proxy":
		err = proxyBench(cfg, srv, &report)
	}
	if err != nil {
		return err
	}
	return writeReport(cfg, stdout, report.Bytes())
}

// serveAndConnect starts bin with args and connects the load generator's
// callers to it over one connection; stop closes both.
func serveAndConnect(cfg config, bin string, args []string, profile string) (srv *server, calls map[callKind]caller, stop func(), err error) {
	srv, err = startServer(bin, cfg.serverProcs, cfg.serverEnv, args, profile)
	if err != nil {
		return nil, nil, nil, err
	}
	conn, err := dial(srv.addr)
	if err != nil {
		srv.stop()
		return nil, nil, nil, err
	}
	stop = func() {
		conn.Close()
		srv.stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if calls, err = newCallers(ctx, conn); err != nil {
		stop()
		return nil, nil, nil, err
	}
	return srv, calls, stop, nil
}

// writeReport writes the report to stdout and, unless -out is "-", to its file.
func writeReport(cfg config, stdout io.Writer, report []byte) error {
	if _, err := stdout.Write(report); err != nil {
		return err
	}
	if cfg.out == "-" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(cfg.out, report, 0o644)
}

// serverArgs admits as many calls as the generator keeps in flight: the
// server's default cap (8 per GOMAXPROCS) would refuse part of a 64-call
// load at once, by design, and the run would measure the refusals.
func serverArgs(cfg config) []string {
	need := max(slices.Max(cfg.inFlight), cfg.memInFlight)
	return []string{"--max-concurrent", strconv.Itoa(need)}
}

// shadowPolicyDir writes the bundled policy as default.lua and, as its
// candidate, default.shadow.lua: the same policy under another version, so
// that every request is also evaluated by the candidate and the answers the
// load generator checks stay the same.
func shadowPolicyDir(tmp string) (string, error) {
	dir := filepath.Join(tmp, "policies")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	candidate := append(slices.Clone(policies.Default), "\n-- candidate\n"...)
	for file, src := range map[string][]byte{"default.lua": policies.Default, "default.shadow.lua": candidate} {
		if err := os.WriteFile(filepath.Join(dir, file), src, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

func commandLine() string {
	args := slices.Clone(os.Args[1:])
	return strings.TrimSpace("go run ./bench " + strings.Join(args, " "))
}

func writeMachine(w io.Writer, cfg config) {
	procs := func(n int) string {
		if n <= 0 {
			return "default (" + strconv.Itoa(runtime.NumCPU()) + ")"
		}
		return strconv.Itoa(n)
	}
	fmt.Fprintf(w, "Machine: %d CPUs, %s, Linux %s, %s. Taken %s.\n\n", runtime.NumCPU(), cpuModel(), kernel(), runtime.Version(), time.Now().UTC().Format(time.RFC3339))
	env := ""
	if len(cfg.serverEnv) > 0 {
		env = " Server environment: " + strings.Join(cfg.serverEnv, " ") + "."
	}
	fmt.Fprintf(w, "GOMAXPROCS: server %s, load generator %s.%s Load average before: %s.\n\n", procs(cfg.serverProcs), procs(cfg.clientProcs), env, loadavg())
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// loadavg is the 1, 5 and 15 minute load averages: other work on the
// machine makes the figures noise.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// compare measures both calls at each concurrency on one server.
func compare(cfg config, srv *server, calls map[callKind]caller, w io.Writer) error {
	fmt.Fprintf(w, "One connection over loopback; %d repetitions of %v per call and concurrency, in the order RewriteResponse, Health.Check, RewriteResponse, ...; %v warm-up of each call before each concurrency. %s\n\n", cfg.reps, cfg.duration, cfg.warmup, columns)
	_, err := alternate(cfg, [2]side{{rewriteCall.String(), srv, calls[rewriteCall]}, {healthCall.String(), srv, calls[healthCall]}}, "call", "RR / HC", w)
	fmt.Fprintf(w, "\nLoad average after: %s.\n", loadavg())
	return err
}

// columns explains the tables of compare and floor.
const columns = "Medians, (min–max) over the repetitions; a ratio is the median of the per-repetition ratios. Latencies in µs. Server CPU and generator CPU: each process's user+system time per call, in µs; on a small machine they share the cores, so the generator's cost limits the throughput too. Others: the cores' worth of CPU used by neither the server measured nor the generator during the runs, i.e. other work on the machine (noise when well above 0). Fallbacks: rewrite calls answered with the original reply (a timed-out evaluation), over all repetitions."

// floorBench measures RewriteResponse on the server as shipped, srv,
// against the same call on the no-work floor: this tree built with
// floorTag, started with the same arguments.
func floorBench(cfg config, tmp string, srv *server, call caller, args []string, w io.Writer) error {
	bin, err := buildServer(tmp, floor)
	if err != nil {
		return err
	}
	floorSrv, floorCalls, stop, err := serveAndConnect(cfg, bin, args, "")
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	defer stop()
	shippedBin := cfg.binary
	if shippedBin == "" {
		shippedBin = "built from this tree"
	}
	fmt.Fprintf(w, "RewriteResponse on two servers, each over its own connection on loopback: **shipped**, `rewrited serve` as shipped (%s), and **floor**, this tree built with `-tags %s`, which answers every request with the same rewrite of the same size without checking it or evaluating a policy. %d repetitions of %v per server and concurrency, in the order shipped, floor, shipped, ...; %v warm-up of each before each concurrency. %s\n\n", shippedBin, floorTag, cfg.reps, cfg.duration, cfg.warmup, columns)
	ratios, err := alternate(cfg, [2]side{{"shipped", srv, call}, {"floor", floorSrv, floorCalls[rewriteCall]}}, "server", "shipped / floor", w)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nLoad average after: %s.\n\n", loadavg())
	writeTargets(w, ratios)
	return nil
}

// side is one of the two things a comparison alternates: a call on a server.
type side struct {
	name string
	srv  *server
	call caller
}

// ratios are medians of per-repetition ratios of one side's figures to the
// other's.
type ratios struct{ throughput, p99, serverCPU float64 }

// alternate measures both sides at each concurrency, alternating a, b, a,
// b... so that drift in the machine's load hits both alike, writes a table
// row per side and one of the ratios a/b (column names the sides' column),
// and returns the ratios by concurrency.
func alternate(cfg config, sides [2]side, column, ratioName string, w io.Writer) (map[int]ratios, error) {
	fmt.Fprintf(w, "| in flight | %s | req/s | p50 | p99 | p99.9 | server CPU/call | generator CPU/call | others | fallbacks |\n", column)
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	out := map[int]ratios{}
	for _, n := range cfg.inFlight {
		for _, sd := range sides {
			if r := load(sd.call, n, cfg.warmup, cfg.maxRequests); r.errors > 0 {
				return nil, fmt.Errorf("warm-up of %s: %d calls failed: %w", sd.name, r.errors, r.firstErr)
			}
		}
		var runs [2][]run
		for rep := range cfg.reps {
			for i, sd := range sides {
				r, err := measured(sd.srv, func() run { return load(sd.call, n, cfg.duration, cfg.maxRequests) })
				if err != nil {
					return nil, fmt.Errorf("%s at %d in flight: %w", sd.name, n, err)
				}
				fmt.Fprintf(os.Stderr, "in flight %d, rep %d, %s: %.0f req/s, p99 %v, server CPU %.1f µs/call, %d fallbacks, others' CPU %.2f cores\n", n, rep+1, sd.name, r.throughput(), r.quantile(0.99), r.cpuPerCall(), r.fallbacks, r.othersCPU)
				runs[i] = append(runs[i], r)
			}
		}
		for i, sd := range sides {
			rs := runs[i]
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", n, sd.name,
				spread(rs, func(r run) float64 { return r.throughput() }, "%.0f"),
				spread(rs, latency(0.50), "%.0f"), spread(rs, latency(0.99), "%.0f"), spread(rs, latency(0.999), "%.0f"),
				spread(rs, func(r run) float64 { return r.cpuPerCall() }, "%.1f"),
				spread(rs, func(r run) float64 { return r.selfCPUPerCall() }, "%.1f"),
				spread(rs, func(r run) float64 { return r.othersCPU }, "%.2f"),
				sum(rs, func(r run) int { return r.fallbacks }))
		}
		pairs := make([][2]run, cfg.reps)
		for i := range pairs {
			pairs[i] = [2]run{runs[0][i], runs[1][i]}
		}
		ratio := func(f func(run) float64) func([2]run) float64 {
			return func(p [2]run) float64 { return f(p[0]) / f(p[1]) }
		}
		tput, p99 := ratio(func(r run) float64 { return r.throughput() }), ratio(latency(0.99))
		cpu := ratio(func(r run) float64 { return r.cpuPerCall() })
		fmt.Fprintf(w, "| %d | **%s** | **%s** | %s | **%s** | %s | **%s** | %s | | |\n", n, ratioName,
			spread(pairs, tput, "%.2f"), spread(pairs, ratio(latency(0.50)), "%.2f"),
			spread(pairs, p99, "%.2f"), spread(pairs, ratio(latency(0.999)), "%.2f"),
			spread(pairs, cpu, "%.2f"),
			spread(pairs, ratio(func(r run) float64 { return r.selfCPUPerCall() }), "%.2f"))
		out[n] = ratios{throughput: median(pairs, tput), p99: median(pairs, p99), serverCPU: median(pairs, cpu)}
	}
	return out, nil
}

// writeTargets checks the floor ratios against the performance targets:
// RewriteResponse at 8 and 64 in flight at least 0.97 of the floor's
// throughput, with at most 1.04 times its server CPU per call.
func writeTargets(w io.Writer, rs map[int]ratios) {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	for _, n := range []int{8, 64} {
		if r, ok := rs[n]; ok {
			fmt.Fprintf(w, "- Throughput shipped/floor at %d in flight ≥ 0.97: %.2f, %s.\n", n, r.throughput, verdict(r.throughput >= 0.97))
			fmt.Fprintf(w, "- Server CPU per call shipped/floor at %d in flight ≤ 1.04: %.2f, %s.\n", n, r.serverCPU, verdict(r.serverCPU <= 1.04))
		}
	}
}

// measured runs f and fills in the CPU figures of its run; a run in which
// calls failed is an error, for its numbers would not measure the calls.
func measured(srv *server, f func() run) (run, error) {
	before, err := srv.cpuSnapshot()
	if err != nil {
		return run{}, err
	}
	r := f()
	after, err := srv.cpuSnapshot()
	if err != nil {
		return run{}, err
	}
	if r.errors > 0 {
		return r, fmt.Errorf("%d of %d calls failed: %w", r.errors, r.errors+r.requests, r.firstErr)
	}
	r.serverCPU = after.server - before.server
	r.selfCPU = after.self - before.self
	r.othersCPU = othersCPU(before, after, r.elapsed)
	return r, nil
}

func sum[T any](xs []T, f func(T) int) int {
	n := 0
	for _, x := range xs {
		n += f(x)
	}
	return n
}

func latency(q float64) func(run) float64 {
	return func(r run) float64 { return float64(r.quantile(q)) / float64(time.Microsecond) }
}

func median[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// spread formats the median and range of f over xs.
func spread[T any](xs []T, f func(T) float64, format string) string {
	lo, hi := f(xs[0]), f(xs[0])
	for _, x := range xs[1:] {
		lo, hi = min(lo, f(x)), max(hi, f(x))
	}
	m := median(xs, f)
	if len(xs) == 1 {
		return fmt.Sprintf(format, m)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", m, lo, hi)
}

// memory samples the server's RSS every second while it serves memInFlight
// RewriteResponse calls at a time.
func memory(cfg config, srv *server, calls map[callKind]caller, w io.Writer) error {
	idle, err := srv.rssKiB()
	if err != nil {
		return err
	}
	if r := load(calls[rewriteCall], cfg.memInFlight, cfg.warmup, cfg.maxRequests); r.errors > 0 {
		return fmt.Errorf("warm-up: %d calls failed: %w", r.errors, r.firstErr)
	}
	var (
		r    run
		rerr error
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r, rerr = measured(srv, func() run { return load(calls[rewriteCall], cfg.memInFlight, cfg.memDuration, cfg.maxRequests) })
	}()
	var samples []int64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for finished := false; !finished; {
		rss, err := srv.rssKiB()
		if err != nil {
			<-done
			return err
		}
		samples = append(samples, rss)
		select {
		case <-done:
			finished = true
		case <-tick.C:
		}
	}
	if rerr != nil {
		return rerr
	}
	end, err := srv.rssKiB()
	if err != nil {
		return err
	}
	samples = append(samples, end)
	mib := func(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
	fmt.Fprintf(w, "RewriteResponse at %d in flight for %v after a %v warm-up: %d calls (%d fallbacks), %.0f req/s, others' CPU %.2f cores. Server VmRSS sampled every second (%d samples).\n\n", cfg.memInFlight, cfg.memDuration, cfg.warmup, r.requests, r.fallbacks, r.throughput(), r.othersCPU, len(samples))
	fmt.Fprintln(w, "| idle | start | end | max | end − start |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|")
	fmt.Fprintf(w, "| %s | %s | %s | %s | %+.1f MiB |\n\n", mib(idle), mib(samples[0]), mib(end), mib(slices.Max(samples)), float64(end-samples[0])/1024)
	var series []string
	for i := 0; i < len(samples); i += 5 {
		series = append(series, fmt.Sprintf("%ds %.1f", i, float64(samples[i])/1024))
	}
	fmt.Fprintf(w, "Every 5 s (MiB): %s.\n\nLoad average after: %s.\n", strings.Join(series, ", "), loadavg())
	return nil
}

// profileServer profiles the server while it serves memInFlight calls of
// cfg.profileCall at a time for cfg.duration, and reports the top of the
// profile.
func profileServer(cfg config, srv *server, calls map[callKind]caller, w io.Writer) error {
	call := calls[cfg.profileCall]
	if r := load(call, cfg.memInFlight, cfg.warmup, cfg.maxRequests); r.errors > 0 {
		return fmt.Errorf("warm-up: %d calls failed: %w", r.errors, r.firstErr)
	}
	if err := srv.startProfile(); err != nil {
		return err
	}
	r, err := measured(srv, func() run { return load(call, cfg.memInFlight, cfg.duration, cfg.maxRequests) })
	if err := errors.Join(err, srv.stopProfile()); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.pprofOut), 0o755); err != nil {
		return err
	}
	raw, err := os.ReadFile(srv.profile)
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfg.pprofOut, raw, 0o644); err != nil {
		return err
	}
	allocs := map[string]string{}
	for _, suffix := range []string{".allocs-start", ".allocs-end"} {
		raw, err := os.ReadFile(srv.profile + suffix)
		if err != nil {
			return err
		}
		allocs[suffix] = cfg.pprofOut + suffix
		if err := os.WriteFile(allocs[suffix], raw, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "CPU profile of `rewrited serve` (built with bench/profile_rewrited.go) over %v of %v at %d in flight: %d calls (%d fallbacks), %.0f req/s, %.1f µs of server CPU per call, others' CPU %.2f cores. Raw profile: %s.\n\n",
		cfg.duration, cfg.profileCall, cfg.memInFlight, r.requests, r.fallbacks, r.throughput(), r.cpuPerCall(), r.othersCPU, cfg.pprofOut)
	// Flat costs name the leaves; cumulative ones the layers that cause them.
	for _, view := range [][]string{{"-top", "-nodecount=30"}, {"-top", "-cum", "-nodecount=45"}} {
		args := append(append([]string{"tool", "pprof"}, view...), cfg.pprofOut)
		out, err := exec.Command("go", args...).Output()
		if err != nil {
			return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
		}
		fmt.Fprintf(w, "`go %s`:\n\n```\n%s```\n\n", strings.Join(args, " "), out)
	}
	// Allocations drive the collector's cost; the difference of the two
	// allocation profiles is the profiled run's.
	for _, index := range []string{"alloc_objects", "alloc_space"} {
		args := []string{"tool", "pprof", "-top", "-nodecount=25", "-sample_index=" + index, "-base", allocs[".allocs-start"], allocs[".allocs-end"]}
		out, err := exec.Command("go", args...).Output()
		if err != nil {
			return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
		}
		fmt.Fprintf(w, "`go %s` (%d calls):\n\n```\n%s```\n\n", strings.Join(args, " "), r.requests, out)
	}
	fmt.Fprintf(w, "Load average after: %s.\n", loadavg())
	return nil
}
