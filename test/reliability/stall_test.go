package reliability_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/internal/rewritedtest"
	"github.com/rewrited/rewrited/test/reliability/load"
	"github.com/rewrited/rewrited/test/reliability/record"
)

// TestStalledReplica runs three replicas behind one client with its
// defaults (hedging, outlier ejection, breaker) and 16 callers. One replica
// is paused with SIGSTOP for a while, as a long GC pause or a frozen VM
// would, its connection staying open; later another is killed and
// restarted on its address. It holds the client to what does not depend on
// the machine's load: no reply is lost and no call fails other than by
// running out of its budget (or being shed); hedges stay within the budget; the paused
// replica is ejected and gets no request while ejected, and returns once it
// answers again; the restarted one is called again. The shares of
// fallbacks and hedges and the latencies go to the record.
func TestStalledReplica(t *testing.T) {
	const workers = 16
	rec := record.New(t, "fleet", "3 replicas, client defaults (hedging, ejection): SIGSTOP one under load, then SIGKILL and restart another")
	dir := t.TempDir()
	writePolicy(t, dir, "default.lua", rewriteDATA)
	procs, target := startFleet(t, dir)
	paused, killed := procs[1], procs[2]

	attempts := &attemptLog{}
	fleet := &fleetLog{}
	c := newClient(t, target, client.WithFleetObserver(fleet.add), client.WithDialOptions(grpc.WithStatsHandler(attempts)))
	warmUp(t, c)
	calls, stop := drive(t, c, workers)
	at := func(d time.Duration) { time.Sleep(d - calls.Since()) }
	// waitFor polls the calls made so far until one satisfies ok.
	waitFor := func(what string, from time.Duration, ok func(load.Event) bool) time.Duration {
		t.Helper()
		deadline := calls.Since() + 40*time.Second
		for calls.Since() < deadline {
			for _, e := range calls.Events() {
				if e.At >= from && ok(e) {
					return e.At
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("%s: not within 40s", what)
		return 0
	}

	// The first second lets the adaptive hedge delay settle on measured latencies.
	healthyFrom, pauseAt := time.Second, 3*time.Second
	at(pauseAt)
	pauseAt = calls.Since()
	if err := paused.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	at(pauseAt + soak(5*time.Second, 45*time.Second))
	resumeAt, resumed := calls.Since(), time.Now()
	if err := paused.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	returnedAt := waitFor("the paused replica answering again", resumeAt, func(e load.Event) bool { return e.Replica == paused.Addr })

	killAt := calls.Since()
	killed.Kill()
	restarted := rewritedtest.Start(t, "--policy-dir", dir, "--eval-timeout", "250ms", "--listen", killed.Addr)
	reconnectAt := waitFor("the restarted replica answering", killAt, func(e load.Event) bool { return e.Replica == restarted.Addr })
	at(reconnectAt + 2*time.Second)
	end := calls.Since()
	stop()
	events := calls.Events()

	all := load.Summarize(events, 0, end+time.Minute, budget+slack)
	healthy := load.Summarize(events, healthyFrom, pauseAt, budget+slack)
	pausedRun := load.Summarize(events, pauseAt, resumeAt, budget+slack)
	untilReturn := load.Summarize(events, resumeAt, returnedAt, budget+slack)
	aroundKill := load.Summarize(events, killAt, reconnectAt, budget+slack)
	afterReconnect := load.Summarize(events, reconnectAt, end, budget+slack)
	for name, s := range map[string]load.Summary{"all": all, "healthy": healthy, "paused": pausedRun, "resumed until answering": untilReturn,
		"kill to reconnect": aroundKill, "after the reconnect": afterReconnect} {
		logSummary(t, name, s)
	}
	for _, ev := range fleet.all() {
		t.Logf("fleet event at %v: %+v", ev.seen.Sub(attempts.start()).Round(time.Millisecond), ev.FleetEvent)
	}
	pct := func(n, of int64) float64 { return 100 * float64(n) / float64(max(of, 1)) }
	rec.Calls, rec.Lost, rec.Fallback = all.Calls, all.Classes[load.Lost], all.Fallbacks()
	rec.P99ms, rec.MaxMs = all.AcceptedP99ms, all.MaxMs
	rec.Detail = fmt.Sprintf("healthy: %.1f%% extra requests from hedging, p99 %.1f ms; paused %v: %d of %d calls fell back (%.2f%%), p99 %.1f ms, %.1f%% hedged; "+
		"killed and restarted: %d fell back before the reconnect, %d of %d after; %d hedges in all (budget %d)",
		pct(healthy.Hedged, healthy.Calls), healthy.P99ms, (resumeAt - pauseAt).Round(100*time.Millisecond), pausedRun.Fallbacks(), pausedRun.Calls, pct(pausedRun.Fallbacks(), pausedRun.Calls),
		pausedRun.P99ms, pct(pausedRun.Hedged, pausedRun.Calls), aroundKill.Fallbacks(), afterReconnect.Fallbacks(), afterReconnect.Calls,
		all.Hedged, hedgeAllowance(all.Calls))

	if n := all.Classes[load.Lost]; n != 0 {
		t.Errorf("%d replies lost", n)
	}
	// Timeouts, load shedding and a breaker they open depend on the
	// machine's load. A call in flight on a replica as it is killed or
	// restarted may fail with Unavailable when its one hedge cannot be sent
	// in time, so at most one per caller; any other failure means a call was
	// not saved by another replica.
	if n := all.Classes[load.Unavailable]; n > workers {
		t.Errorf("%d calls failed with %s, more than the %d callers that can be in flight on a dying replica", n, load.Unavailable, workers)
	}
	for _, class := range []string{load.PolicyError, load.Other} {
		if n := all.Classes[class]; n != 0 {
			t.Errorf("%d calls failed with %s", n, class)
		}
	}
	if all.Hedged > hedgeAllowance(all.Calls) {
		t.Errorf("%d hedges for %d calls: over the budget of %d", all.Hedged, all.Calls, hedgeAllowance(all.Calls))
	}

	ejections := 0
	for _, ev := range fleet.all() {
		if ev.Kind != client.ReplicaEjected {
			continue
		}
		if ev.Replica == paused.Addr {
			ejections++
		}
		for _, a := range attempts.to(ev.Replica) {
			if a.begin.After(ev.seen) && a.sent.Before(ev.Until) {
				t.Errorf("a request went to %s at %v, while it was ejected from %v to %v", ev.Replica,
					a.sent.Sub(attempts.start()), ev.seen.Sub(attempts.start()), ev.Until.Sub(attempts.start()))
				break
			}
		}
	}
	if ejections == 0 {
		t.Errorf("the paused replica %s was never ejected", paused.Addr)
	}
	if !slices.ContainsFunc(fleet.all(), func(ev fleetEvent) bool {
		return ev.Kind == client.ReplicaReturned && ev.Replica == paused.Addr && ev.seen.After(resumed)
	}) {
		t.Errorf("the paused replica %s was not returned by a probe after it resumed", paused.Addr)
	}
}

// hedgeAllowance is the most hedges the client's default budget allows
// for calls: a burst of 20, then a tenth of the calls.
func hedgeAllowance(calls int64) int64 { return 20 + calls/10 }

// fleetEvent is a client.FleetEvent and when the observer saw it: after
// the client had applied it.
type fleetEvent struct {
	client.FleetEvent
	seen time.Time
}

// fleetLog collects the client's fleet events.
type fleetLog struct {
	mu     sync.Mutex
	events []fleetEvent
}

func (l *fleetLog) add(ev client.FleetEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fleetEvent{ev, time.Now()})
}

func (l *fleetLog) all() []fleetEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// sentAttempt is one RPC the client sent: when it began (before the
// balancer picked its replica) and when its headers went to the replica
// (after the pick).
type sentAttempt struct {
	begin, sent time.Time
	replica     string
}

// attemptLog is a client stats handler that records every RPC attempt,
// hedges included, with the replica it went to.
type attemptLog struct {
	mu       sync.Mutex
	first    time.Time
	attempts []sentAttempt
}

type attemptKey struct{}

func (l *attemptLog) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, attemptKey{}, &sentAttempt{})
}

func (l *attemptLog) HandleRPC(ctx context.Context, s stats.RPCStats) {
	a, _ := ctx.Value(attemptKey{}).(*sentAttempt)
	if a == nil {
		return
	}
	switch s := s.(type) {
	case *stats.Begin:
		a.begin = s.BeginTime
	case *stats.OutHeader:
		a.sent, a.replica = time.Now(), s.RemoteAddr.String()
		l.mu.Lock()
		if l.first.IsZero() {
			l.first = a.begin
		}
		l.attempts = append(l.attempts, *a)
		l.mu.Unlock()
	}
}

func (l *attemptLog) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (l *attemptLog) HandleConn(context.Context, stats.ConnStats)                       {}

// start is when the first attempt began, the origin of the times logged.
func (l *attemptLog) start() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

// to returns the attempts sent to replica.
func (l *attemptLog) to(replica string) []sentAttempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []sentAttempt
	for _, a := range l.attempts {
		if a.replica == replica {
			out = append(out, a)
		}
	}
	return out
}
