package reliability_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/test/reliability/load"
	"github.com/rewrited/rewrited/test/reliability/record"
)

// TestFleetFaults runs three replicas serving one policy folder behind one
// client (round_robin over a comma-separated target, the default breaker)
// driven by workers callers. Mid-load one replica is killed with SIGKILL,
// another paused with SIGSTOP, the policy is rewritten on all of them, and
// the paused one is resumed. Every decision is counted: no reply is lost,
// no call outlives its budget, only calls in flight on the killed replica
// fall back for it, the reload fails no call, and every replica still alive
// ends up serving the new version.
func TestFleetFaults(t *testing.T) {
	const workers = 16
	// The soak pauses the replica for longer than the client's keepalive
	// (30s + 5s) takes to drop its connection.
	var (
		killAt   = 1500 * time.Millisecond
		pauseAt  = 3 * time.Second
		reloadAt = 4500 * time.Millisecond
		resumeAt = pauseAt + soak(4500*time.Millisecond, 45*time.Second)
		end      = resumeAt + 2*time.Second
	)
	rec := record.New(t, "fleet", "3 replicas: SIGKILL one, SIGSTOP one, reload all, mid-load")
	measure(t, func() (bool, func()) {
		killAt, pauseAt, resumeAt := killAt, pauseAt, resumeAt // measured anew by each run
		dir := t.TempDir()
		writePolicy(t, dir, "default.lua", rewriteDATA)
		v2 := strings.Replace(rewriteDATA, "super fantastic!", "super fantastic, v2!", 1)
		oldVersion, newVersion := policy.Version([]byte(rewriteDATA)), policy.Version([]byte(v2))

		procs, target := startFleet(t, dir)
		killed, paused := procs[0], procs[1]
		c := newClient(t, target)
		warmUp(t, c)
		calls, stop := drive(t, c, workers)
		at := func(d time.Duration) { time.Sleep(d - calls.Since()) }

		at(killAt)
		killAt = calls.Since()
		killed.Kill()
		at(pauseAt)
		pauseAt = calls.Since()
		if err := paused.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		at(reloadAt)
		writePolicy(t, dir, "default.lua", v2)
		at(resumeAt)
		resumeAt = calls.Since()
		if err := paused.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		at(end)
		stop()
		events := calls.Events()

		all := load.Summarize(events, 0, end+time.Minute, budget+slack)
		beforeKill := load.Summarize(events, 0, killAt-budget, budget+slack)
		// Calls that started before the kill may end in it; a second covers
		// round_robin noticing the closed connection.
		aroundKill := load.Summarize(events, killAt-budget, killAt+time.Second, budget+slack)
		// Calls that start within a budget of the pause may be in flight on the
		// paused replica.
		killToPause := load.Summarize(events, killAt+time.Second, pauseAt-budget, budget+slack)
		pausedRun := load.Summarize(events, pauseAt, resumeAt, budget+slack)
		lastPausedSecond := load.Summarize(events, resumeAt-time.Second, resumeAt, budget+slack)
		afterResume := load.Summarize(events, resumeAt+time.Second, end+time.Minute, budget+slack)
		for name, s := range map[string]load.Summary{"all": all, "before the kill": beforeKill, "around the kill": aroundKill,
			"kill to pause": killToPause, "paused": pausedRun, "last paused second": lastPausedSecond, "after the resume": afterResume} {
			logSummary(t, name, s)
		}
		rec.Calls, rec.Lost, rec.Fallback = all.Calls, all.Classes[load.Lost], all.Fallbacks()
		rec.P99ms, rec.MaxMs = all.AcceptedP99ms, all.MaxMs
		rec.Detail = fmt.Sprintf("%d calls; fell back: %d around the kill (%d callers), %d of %d while paused (%d of %d in its last second); %d calls failed by the reload",
			all.Calls, aroundKill.Fallbacks(), workers, pausedRun.Fallbacks(), pausedRun.Calls, lastPausedSecond.Fallbacks(), lastPausedSecond.Calls,
			all.Classes[load.PolicyError]+all.Classes[load.Other])

		calm := beforeKill.Calls > 0 && beforeKill.Classes[load.Rewritten] == beforeKill.Calls && beforeKill.OverBudget == 0
		return calm, func() {
			if all.Classes[load.Lost] != 0 {
				t.Errorf("%d replies lost", all.Classes[load.Lost])
			}
			checkNoStall(t, "all", all)
			// Round robin: the calls in flight on the killed replica fail, and no
			// call is sent to it afterwards. (Calls the breaker refused are R7.)
			if n := aroundKill.Fallbacks() - aroundKill.Classes[load.Breaker]; n > workers {
				t.Errorf("%d calls failed around the kill, more than the %d that can be in flight", n, workers)
			}
			if n := killToPause.Fallbacks() - killToPause.Classes[load.Breaker]; n != 0 || killToPause.Calls == 0 {
				t.Errorf("between the kill and the pause %d of %d calls failed: the dead replica is still picked", n, killToPause.Calls)
			}
			if n := all.Classes[load.PolicyError] + all.Classes[load.Other]; n != 0 {
				t.Errorf("%d calls failed with a policy or other error (the reload must fail none)", n)
			}
			if afterResume.Calls == 0 || afterResume.Classes[load.Rewritten] != afterResume.Calls {
				t.Errorf("after the resume: %+v, want every call rewritten", afterResume)
			}
			versions := map[string]int{}
			for _, e := range events {
				if e.At >= resumeAt+time.Second {
					versions[e.Version]++
				}
			}
			if len(versions) != 1 || versions[newVersion] == 0 {
				t.Errorf("after the reload and the resume the fleet answered with versions %v, want only %s (was %s)", versions, newVersion, oldVersion)
			}

			// The promise beyond round robin: the breaker must not turn one
			// replica's failures into fallbacks on the replicas that still answer,
			// and after a window no call goes to a paused replica.
			t.Run("one replica's failures do not open the breaker for all", func(t *testing.T) {
				if n := all.Classes[load.Breaker]; n > 0 {
					t.Errorf("%d of %d calls fell back with the breaker open while at least one replica answered (%d around the kill, %d during the %v pause)",
						n, all.Calls, aroundKill.Classes[load.Breaker]+killToPause.Classes[load.Breaker], pausedRun.Classes[load.Breaker], resumeAt-pauseAt)
				}
			})
			t.Run("paused replica is routed around", func(t *testing.T) {
				if n := lastPausedSecond.Fallbacks(); n > lastPausedSecond.Calls/20 {
					t.Errorf("%d of %d calls fell back in the last second of the pause", n, lastPausedSecond.Calls)
				}
			})
		}
	})
}
