// Package reliability_test runs real rewrited processes on 127.0.0.1 through
// overload, fleet faults and misbehaving peers, and counts every decision.
package reliability_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/internal/rewritedtest"
	"github.com/rewrited/rewrited/test/reliability/load"
)

// budget is the per-call budget of every client here (the client default);
// slack is what 2 shared cores may add to it before a call counts as late,
// a figure for the report. stall is how late a call may be before it counts
// as a fault: a busy shared machine can deschedule a caller that honours its
// deadline for a second or more, while one that ignores it waits for ever
// on a peer that never answers.
const (
	budget = 100 * time.Millisecond
	slack  = 50 * time.Millisecond
	stall  = 2 * time.Second
)

// checkNoStall fails t when a call of s took longer than its budget plus
// stall.
func checkNoStall(t *testing.T, name string, s load.Summary) {
	t.Helper()
	if limit := budget + stall; s.MaxMs > float64(limit.Milliseconds()) {
		t.Errorf("%s: the slowest call took %.1f ms, more than %v: a call outlived its deadline (%d over %v, reported, not asserted)",
			name, s.MaxMs, limit, s.OverBudget, budget+slack)
	}
}

// soak returns long when RELIABILITY_LONG=1 asks for the soak versions of
// the tests, short otherwise.
func soak(short, long time.Duration) time.Duration {
	if os.Getenv("RELIABILITY_LONG") == "1" {
		return long
	}
	return short
}

// rewriteDATA is the example policy: it rewrites the successful DATA reply.
const rewriteDATA = `
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if command == 'DATA' and status == 250 then
    return 250, 'super fantastic!\n' .. response
  end
end)
`

// writePolicy writes src as dir/name atomically, as an editor or a
// ConfigMap update would, so a watcher never reads half a file.
func writePolicy(t testing.TB, dir, name, src string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

var (
	loadgenOnce sync.Once
	loadgenPath string
	loadgenErr  error
)

// loadgen builds the load generator once per test process.
func loadgen(t testing.TB) string {
	t.Helper()
	loadgenOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rewrited-loadgen-")
		if err != nil {
			loadgenErr = err
			return
		}
		loadgenPath = filepath.Join(dir, "loadgen")
		out, err := exec.Command("go", "build", "-o", loadgenPath, "./cmd/loadgen").CombinedOutput()
		if err != nil {
			loadgenErr = fmt.Errorf("go build ./cmd/loadgen: %w\n%s", err, out)
		}
	})
	if loadgenErr != nil {
		t.Fatal(loadgenErr)
	}
	return loadgenPath
}

// runLoadgen starts the load generator against target; wait returns its
// summary once it exits.
func runLoadgen(t testing.TB, target string, args ...string) (wait func() load.Summary) {
	t.Helper()
	cmd := exec.Command(loadgen(t), append([]string{"-target", target}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return func() load.Summary {
		t.Helper()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("loadgen: %v\n%s", err, stderr.String())
		}
		var s load.Summary
		if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
			t.Fatalf("loadgen output %q: %v", stdout.String(), err)
		}
		return s
	}
}

// newClient returns a client for target that the test closes.
func newClient(t testing.TB, target string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(target, append([]client.Option{client.WithTimeout(budget)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// logSummary logs s under name.
func logSummary(t testing.TB, name string, s load.Summary) {
	t.Helper()
	b, _ := json.Marshal(s)
	t.Logf("%s: %s", name, b)
}

// warmUp calls c until it has answered 20 calls in a row, so that
// connection setup on a busy machine is not counted as a fault.
func warmUp(t testing.TB, c *client.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ok := 0; ok < 20; {
		if time.Now().After(deadline) {
			t.Fatal("the client got no 20 answers in a row within 10s")
		}
		if res := c.Rewrite(context.Background(), client.Reply{Status: 250, Text: "OK", Command: "DATA"}, nil); res.Err == nil {
			ok++
		} else {
			ok = 0
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// startFleet runs three replicas serving the policy folder dir and returns
// them with the comma-separated target for all three.
func startFleet(t testing.TB, dir string) ([3]*rewritedtest.Proc, string) {
	t.Helper()
	var procs [3]*rewritedtest.Proc
	var addrs []string
	for i := range procs {
		// A budget no CPU stall on a shared machine reaches: a policy
		// timeout here would hide what the faults cost.
		procs[i] = rewritedtest.Start(t, "--policy-dir", dir, "--eval-timeout", "250ms")
		addrs = append(addrs, procs[i].Addr)
	}
	return procs, strings.Join(addrs, ",")
}

// drive calls c from workers goroutines until the returned stop is called
// (or the test ends), recording every call.
func drive(t testing.TB, c *client.Client, workers int) (calls *load.Recorder, stop func()) {
	calls = load.NewRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { calls.Drive(ctx, c, workers, 2*time.Millisecond) })
	stop = func() {
		cancel()
		wg.Wait()
	}
	t.Cleanup(stop)
	return calls, stop
}

// measureAttempts is how often a timing-sensitive scenario is run before a
// busy machine is declared unable to measure it.
const measureAttempts = 3

// measure runs scenario until one run is a measurement: a run whose calm
// phase, before any fault or load, already saw calls the machine did not
// answer within their budget says only that the machine is busy, so it is
// run again (the measurement is retried, never the assertions). The
// scenario returns whether its calm phase was calm and the assertions to
// make on the run; those of the first calm run are made. When no run is
// calm, the test is skipped with the reason.
func measure(t *testing.T, scenario func() (calm bool, check func())) {
	t.Helper()
	for attempt := 1; attempt <= measureAttempts; attempt++ {
		calm, check := scenario()
		if calm {
			check()
			return
		}
		t.Logf("attempt %d: calls failed before any fault: the machine is too busy to measure; measuring again", attempt)
	}
	t.Skipf("in %d attempts, calls failed before any fault every time: the machine is too busy for this measurement", measureAttempts)
}
