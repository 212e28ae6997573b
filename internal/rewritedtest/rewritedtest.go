// Package rewritedtest builds the rewrited binary once per test process and
// runs real server processes on 127.0.0.1 for tests.
package rewritedtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the path of a rewrited binary built from this checkout,
// building it on first use.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rewrited-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "rewrited")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/rewrited")
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/rewrited: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Proc is a running `rewrited serve` process.
type Proc struct {
	Addr string // the gRPC address it listens on
	Cmd  *exec.Cmd

	mu     sync.Mutex
	logs   strings.Builder
	exited chan struct{}
	err    error
}

// TestEvalTimeout is the evaluation budget Start gives a server unless the
// args set one: long enough that a loaded test machine never turns a
// decision into a timeout, which would answer with the original reply.
const TestEvalTimeout = "2s"

// Start runs `rewrited serve --listen 127.0.0.1:0 --log-format json` with the
// extra args (and --eval-timeout TestEvalTimeout unless they set it), waits
// until it logs the address it serves on, and stops it when the test ends.
func Start(t testing.TB, args ...string) *Proc {
	t.Helper()
	return StartBinary(t, Binary(t), args...)
}

// StartBinary is Start with another rewrited binary.
func StartBinary(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(strings.TrimLeft(a, "-"), "eval-timeout") }) {
		args = append([]string{"--eval-timeout", TestEvalTimeout}, args...)
	}
	p, err := start(bin, args)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("rewrited logs:\n%s", p.Logs())
		}
	})
	return p
}

func start(bin string, args []string) (*Proc, error) {
	all := append([]string{"serve", "--listen", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(bin, all...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = cmd.Stderr
	p := &Proc{Cmd: cmd, exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addrc := make(chan string, 1)
	go p.readLogs(stderr, addrc)
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.exited)
	}()
	select {
	case p.Addr = <-addrc:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("rewrited %s exited before serving: %v\n%s", strings.Join(all, " "), p.err, p.Logs())
	case <-time.After(20 * time.Second):
		p.Kill()
		return nil, fmt.Errorf("rewrited did not report its address in 20s\n%s", p.Logs())
	}
}

func (p *Proc) readLogs(r io.Reader, addrc chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.logs.WriteString(line)
		p.logs.WriteByte('\n')
		p.mu.Unlock()
		if sent {
			continue
		}
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving" && rec.Addr != "" {
			addrc <- rec.Addr
			sent = true
		}
	}
}

// Logs returns everything the process has logged so far.
func (p *Proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Kill stops the process at once with SIGKILL and waits for it.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Signal(syscall.SIGCONT) // a SIGSTOPped process must be able to die
	_ = p.Cmd.Process.Kill()
	<-p.exited
}

// Wait waits up to d for the process to exit and returns its exit error.
func (p *Proc) Wait(d time.Duration) error {
	select {
	case <-p.exited:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	case <-time.After(d):
		return fmt.Errorf("rewrited still running after %v", d)
	}
}

// SilentListener accepts TCP connections and never writes a byte: a replica
// that hangs. It returns the address and closes everything when the test ends.
func SilentListener(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = lis.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return lis.Addr().String()
}

// HTTPGet returns the status code and body of GET url, failing the test
// when the request fails.
func HTTPGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}
