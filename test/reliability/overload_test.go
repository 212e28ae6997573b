package reliability_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/internal/rewritedtest"
	"github.com/rewrited/rewrited/test/reliability/load"
	"github.com/rewrited/rewrited/test/reliability/record"
)

// slowPolicy spends a few milliseconds of CPU on every call, so that a
// handful of calls in flight fill a replica.
const slowPolicy = `
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  local x = 0
  for i = 1, 4000 do x = x + i % 7 end
  if command == 'DATA' and status == 250 then
    return 250, 'super fantastic!\n' .. response
  end
end)
`

// TestOverload drives one replica with --max-concurrent 1 far past its
// capacity from a second process, while a probe client keeps calling it:
// every call returns a valid reply and none outlives its deadline, the
// replica sheds with RESOURCE_EXHAUSTED instead of queueing and still accepts
// some calls, and it serves normally as soon as the load stops. How fast the
// accepted calls are is the report's figure, not an assertion.
func TestOverload(t *testing.T) {
	const (
		maxConcurrent = 1
		baseline      = time.Second
		recovery      = 1500 * time.Millisecond
	)
	overload := soak(4*time.Second, time.Minute)
	rec := record.New(t, "overload", fmt.Sprintf("1 replica, --max-concurrent %d, 2x16 callers from another process", maxConcurrent))
	measure(t, func() (bool, func()) {
		dir := t.TempDir()
		writePolicy(t, dir, "slow.lua", slowPolicy)
		srv := rewritedtest.Start(t, "--policy", filepath.Join(dir, "slow.lua"), "--max-concurrent", fmt.Sprint(maxConcurrent), "--eval-timeout", "80ms")

		// The probe: one caller with no breaker, so every call reaches the server.
		pc := newClient(t, srv.Addr, client.WithBreaker(0, 0))
		warmUp(t, pc)
		probe := load.NewRecorder()
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			probe.Drive(ctx, pc, 1, 5*time.Millisecond)
		}()
		time.Sleep(baseline)
		loadStart := probe.Since()
		wait := runLoadgen(t, srv.Addr, "-duration", overload.String(), "-clients", "2", "-workers", "16", "-breaker", "0", "-timeout", budget.String())
		gen := wait()
		loadEnd := probe.Since()
		time.Sleep(recovery)
		stop()
		<-done
		events := probe.Events()

		before := load.Summarize(events, 0, loadStart, budget+slack)
		during := load.Summarize(events, loadStart, loadEnd, budget+slack)
		// Calls that started once the load generator had exited, after a moment
		// for its connections to close.
		after := load.Summarize(events, loadEnd+100*time.Millisecond, loadEnd+recovery, budget+slack)
		logSummary(t, "load generator", gen)
		logSummary(t, "probe before", before)
		logSummary(t, "probe during", during)
		logSummary(t, "probe after", after)

		rec.Calls = gen.Calls + before.Calls + during.Calls + after.Calls
		rec.Lost = gen.Classes[load.Lost] + before.Classes[load.Lost] + during.Classes[load.Lost] + after.Classes[load.Lost]
		rec.Shed = gen.Classes[load.Shed] + during.Classes[load.Shed]
		rec.Fallback = gen.Fallbacks() + during.Fallbacks()
		rec.P99ms = gen.AcceptedP99ms
		rec.MaxMs = max(gen.MaxMs, during.MaxMs)
		rec.Detail = fmt.Sprintf("%d calls in %v (%.0f/s offered), %d accepted, %d shed, %d timed out; accepted p99 %.1f ms; probe after the load: %d/%d answered",
			gen.Calls, overload, float64(gen.Calls)/overload.Seconds(), gen.Classes[load.Rewritten], gen.Classes[load.Shed], gen.Classes[load.Timeout], gen.AcceptedP99ms,
			after.Classes[load.Rewritten], after.Calls)

		calm := before.Calls > 0 && before.Classes[load.Rewritten] == before.Calls && before.OverBudget == 0
		return calm, func() {
			for name, s := range map[string]load.Summary{"load generator": gen, "probe before": before, "probe during": during, "probe after": after} {
				if s.Classes[load.Lost] != 0 {
					t.Errorf("%s: %d replies lost", name, s.Classes[load.Lost])
				}
				checkNoStall(t, name, s)
			}
			// Far past capacity: most calls are shed, at once, rather than queued
			// until their callers' deadlines.
			if gen.Classes[load.Shed] < gen.Calls/2 {
				t.Errorf("only %d of %d calls were shed with RESOURCE_EXHAUSTED", gen.Classes[load.Shed], gen.Calls)
			}
			// Shedding leaves room for some calls: the replica still decides.
			// (Their latency is the report's figure: on two shared cores it
			// depends on the machine's other work.)
			if gen.Classes[load.Rewritten] == 0 {
				t.Errorf("no call was accepted: %+v", gen)
			}
			// Recovery: once the load stops every call is answered again.
			if after.Calls == 0 || after.Classes[load.Rewritten] != after.Calls {
				t.Errorf("after the load: %+v, want every call rewritten", after)
			}
		}
	})
}
