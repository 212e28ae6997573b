package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// profileTag builds profile_rewrited.go into the server binary (through
// -overlay), which adds CPU profiling on SIGUSR1/SIGUSR2 to `rewrited serve`
// without changing its source.
const profileTag = "rewritedprofile"

// floorTag builds service/rewrite's decide_floor.go instead of decide.go:
// a server that answers every RewriteResponse with a fixed rewrite of the
// same size, without evaluating anything.
const floorTag = "benchfloor"

// variant is a way to build the server.
type variant int

const (
	shipped   variant = iota // ./cmd/rewrited as it is
	profiling                // with profile_rewrited.go
	floor                    // with the floorTag
)

// buildServer compiles the variant of ./cmd/rewrited into dir.
func buildServer(dir string, v variant) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "rewrited")
	var flags []string
	switch v {
	case profiling:
		overlay := filepath.Join(dir, "overlay.json")
		src := filepath.Join(root, "bench", "profile_rewrited.go")
		dst := filepath.Join(root, "cmd", "rewrited", "zz_benchprofile.go")
		if err := os.WriteFile(overlay, fmt.Appendf(nil, `{"Replace":{%q:%q}}`, dst, src), 0o644); err != nil {
			return "", err
		}
		flags = []string{"-tags", profileTag, "-overlay", overlay}
	case floor:
		bin += "-floor"
		flags = []string{"-tags", floorTag}
	}
	cmd := exec.Command("go", append(append([]string{"build", "-o", bin}, flags...), "./cmd/rewrited")...)
	cmd.Dir = root
	// As the release binaries are built (Makefile), so that a binary
	// passed with -rewrited and the floor built here differ only in code.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s ./cmd/rewrited: %w\n%s", strings.Join(flags, " "), err, out)
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the load generator inside the rewrited module")
	}
	return filepath.Dir(gomod), nil
}

// server is a running `rewrited serve` process.
type server struct {
	addr    string
	cmd     *exec.Cmd
	exited  chan struct{}
	mu      sync.Mutex
	stderr  bytes.Buffer
	profile string // where SIGUSR2 makes a profiling binary write its profile
}

// startServer runs `rewrited serve` on a free loopback port, with the
// bundled example policy, and waits until its health check says SERVING.
// procs, when positive, is the server's GOMAXPROCS; env is added to its
// environment.
func startServer(bin string, procs int, env, extra []string, profile string) (*server, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--listen", addr, "--log-level", "warn"}, extra...)
	s := &server{addr: addr, cmd: exec.Command(bin, args...), exited: make(chan struct{}), profile: profile}
	s.cmd.Env = append(os.Environ(), env...)
	if procs > 0 {
		s.cmd.Env = append(s.cmd.Env, "GOMAXPROCS="+strconv.Itoa(procs))
	}
	if profile != "" {
		s.cmd.Env = append(s.cmd.Env, "REWRITED_BENCH_CPUPROFILE="+profile)
	}
	s.cmd.Stdout = &lockedWriter{s}
	s.cmd.Stderr = &lockedWriter{s}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitServing(20 * time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("%w\n%s", err, s.logs())
	}
	return s, nil
}

// freePort picks a loopback port for the server: serve logs the address it
// bound only at info level, and the benchmark runs it at warn.
func freePort() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}

func (s *server) waitServing(limit time.Duration) error {
	conn, err := dial(s.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return errors.New("rewrited exited before serving")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("rewrited was not SERVING on %s within %v", s.addr, limit)
}

type lockedWriter struct{ s *server }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.stderr.Write(p)
}

func (s *server) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// stop ends the server with SIGTERM (SIGKILL after 10s) and waits for it.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// rssKiB reads the server's resident set size from /proc.
func (s *server) rssKiB() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseVmRSS(f)
}

// cpuSnapshot is the CPU time used so far by the whole machine, the server
// and this process.
type cpuSnapshot struct{ machine, server, self time.Duration }

func (s *server) cpuSnapshot() (cpuSnapshot, error) {
	var snap cpuSnapshot
	var errs [3]error
	snap.machine, errs[0] = machineCPU()
	snap.server, errs[1] = processCPU(strconv.Itoa(s.cmd.Process.Pid))
	snap.self, errs[2] = processCPU("self")
	return snap, errors.Join(errs[:]...)
}

// othersCPU is the cores' worth of CPU that neither the server nor this
// process used between two snapshots elapsed apart.
func othersCPU(before, after cpuSnapshot, elapsed time.Duration) float64 {
	others := (after.machine - before.machine) - (after.server - before.server) - (after.self - before.self)
	return max(0, others.Seconds()/elapsed.Seconds())
}

func processCPU(pid string) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// machineCPU is the busy time of all CPUs, from the first line of
// /proc/stat: user, nice, system, irq, softirq and steal (guest time is
// already in user).
func machineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += n
	}
	return time.Duration(busy) * clockTick, nil
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// parseStatCPU returns utime+stime of a /proc/PID/stat line. The command
// name, field 2, may hold spaces: fields are counted after its ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 { // utime and stime are fields 14 and 15, f[11] and f[12]
		return 0, errors.New("short /proc/PID/stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/PID/stat: %w", err)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// parseVmRSS returns the VmRSS line of a /proc/PID/status file, in KiB.
func parseVmRSS(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
		}
		return strconv.ParseInt(fields[0], 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no VmRSS line")
}

// startProfile and stopProfile drive the CPU profile of a server built with
// profiling; stopProfile waits until the profile is written.
func (s *server) startProfile() error { return s.cmd.Process.Signal(syscall.SIGUSR1) }

func (s *server) stopProfile() error {
	if err := s.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		return err
	}
	for range 100 {
		if _, err := os.Stat(s.profile); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the server wrote no profile to %s", s.profile)
}

// dial opens the one client connection every measurement shares.
func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}
