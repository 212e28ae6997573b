package policy_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rewrited/rewrited/service/policy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const seed = `
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if command == 'DATA' and status == 250 then
    return 250, 'super fantastic!\n' .. response
  end
end)
`

// compile compiles src; unless opts say otherwise, the budget is long
// enough that a loaded test machine never turns a result into a timeout.
func compile(t testing.TB, src string, opts policy.Options) *policy.Policy {
	t.Helper()
	if opts.EvalTimeout == 0 {
		opts.EvalTimeout = 2 * time.Second
	}
	p, _, err := policy.Compile("test.lua", []byte(src), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func str(s string) *string { return &s }

func dataInput() policy.Input {
	return policy.Input{Status: 250, Response: "OK ids=8f2a", Command: str("DATA")}
}

func TestSeedExample(t *testing.T) {
	p := compile(t, seed, policy.Options{})
	d := p.Evaluate(context.Background(), dataInput())
	if d.Status != 250 || d.Response != "super fantastic!\nOK ids=8f2a" || !d.Rewritten || d.Outcome != policy.OutcomeRewritten || d.Err != nil {
		t.Fatalf("got %+v", d)
	}
	if v := p.Version(); len(v) != 12 || v != policy.Version([]byte(seed)) {
		t.Errorf("Version() = %q", v)
	}
}

// faultPolicy misbehaves when the reply text is "fault" and otherwise
// leaves the reply alone.
func faultPolicy(body string) string {
	return `kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if response ~= 'fault' then return end
  ` + body + `
end)`
}

func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		outcome policy.Outcome
		errText string
	}{
		{"endless loop", "while true do end", policy.OutcomeTimeout, "exceeded its 20ms budget"},
		{"deep recursion", "local function f(n) return f(n + 1) + 1 end return f(1)", policy.OutcomePolicyError, "stack overflow"},
		{"metamethod recursion", "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) return t.x", policy.OutcomePolicyError, "stack overflow"},
		{"error", "error('boom')", policy.OutcomePolicyError, "test.lua:3: boom"},
		{"loop inside a coroutine", "coroutine.wrap(function() while true do end end)()", policy.OutcomeTimeout, "budget"},
		{"pcall cannot swallow the timeout", "while true do pcall(function() while true do end end) end", policy.OutcomeTimeout, "budget"},
		{"backtracking pattern", "local _ = string.rep('a', 2^14):match('.-b')", policy.OutcomeTimeout, "budget"},
		{"pcall cannot swallow a pattern timeout", "while true do pcall(string.gsub, string.rep('a', 2^14), '(a*)*b', '') end", policy.OutcomeTimeout, "budget"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Only the faults that the budget must stop get the real 20ms
			// one; the others must end by themselves, however loaded the
			// machine.
			budget := 20 * time.Millisecond
			if tc.outcome != policy.OutcomeTimeout {
				budget = 2 * time.Second
			}
			p := compile(t, faultPolicy(tc.body), policy.Options{EvalTimeout: budget})
			start := time.Now()
			d := p.Evaluate(context.Background(), policy.Input{Status: 250, Response: "fault", Command: str("DATA")})
			elapsed := time.Since(start)
			if d.Status != 250 || d.Response != "fault" || d.Rewritten || d.Outcome != tc.outcome || d.Err == nil || !strings.Contains(d.Err.Error(), tc.errText) {
				t.Fatalf("got %+v (err %v), want the original with %v containing %q", d, d.Err, tc.outcome, tc.errText)
			}
			// Generous for 2 shared cores and the race detector.
			if elapsed > 500*time.Millisecond {
				t.Errorf("took %v", elapsed)
			}
			checkNext(t, p, 1000)
		})
	}
}

// TestCrashedStateIsDiscarded drives the registry overflow that panics
// inside gopher-lua, with a budget long enough for it to happen.
func TestCrashedStateIsDiscarded(t *testing.T) {
	p := compile(t, faultPolicy("local function f(...) return f(1, ...) end return f()"), policy.Options{PoolSize: 1, EvalTimeout: 10 * time.Second})
	before := p.Stats()
	d := p.Evaluate(context.Background(), policy.Input{Status: 250, Response: "fault"})
	if d.Outcome != policy.OutcomePolicyError || d.Response != "fault" || !strings.Contains(d.Err.Error(), "crashed") {
		t.Fatalf("got %+v", d)
	}
	after := p.Stats()
	if after.Discarded != before.Discarded+1 {
		t.Errorf("discarded %d -> %d, want one more", before.Discarded, after.Discarded)
	}
	checkNext(t, p, 10)
}

func TestTimedOutStateIsDiscarded(t *testing.T) {
	p := compile(t, faultPolicy("while true do end"), policy.Options{PoolSize: 1, EvalTimeout: 5 * time.Millisecond})
	d := p.Evaluate(context.Background(), policy.Input{Status: 250, Response: "fault"})
	if d.Outcome != policy.OutcomeTimeout {
		t.Fatalf("got %+v", d)
	}
	if s := p.Stats(); s.Discarded != 1 {
		t.Errorf("stats %+v, want one discarded state", s)
	}
	checkNext(t, p, 10)
}

func TestCancelledContextSkipsEvaluation(t *testing.T) {
	p := compile(t, seed, policy.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := p.Evaluate(ctx, dataInput())
	if d.Outcome != policy.OutcomeTimeout || d.Response != "OK ids=8f2a" {
		t.Fatalf("got %+v", d)
	}
}

func TestNoStackLeftovers(t *testing.T) {
	// A handler that reports how many values are on its stack beyond its
	// arguments would see leftovers from an earlier call on the same state.
	p := compile(t, `kumo.on('smtp_server_rewrite_response', function(...)
  if select('#', ...) ~= 4 then return nil, 'leftover: ' .. select('#', ...) end
  if ... == 550 then error('fail') end
  return nil, 'clean'
end)`, policy.Options{PoolSize: 1})
	for i := range 50 {
		status := 250
		if i%2 == 1 {
			status = 550
		}
		d := p.Evaluate(context.Background(), policy.Input{Status: status, Response: "x"})
		if status == 250 && d.Response != "clean" {
			t.Fatalf("call %d: %+v", i, d)
		}
	}
}

func TestStatesAreRecycledAfterMaxUses(t *testing.T) {
	p := compile(t, `local calls = 0
kumo.on('smtp_server_rewrite_response', function()
  calls = calls + 1
  return nil, 'calls ' .. calls
end)`, policy.Options{PoolSize: 1, MaxUses: 3})
	var got []string
	for range 7 {
		got = append(got, p.Evaluate(context.Background(), policy.Input{Status: 250, Response: "x"}).Response)
	}
	want := "calls 1,calls 2,calls 3,calls 1,calls 2,calls 3,calls 1"
	if strings.Join(got, ",") != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestSequentialCallsReuseTheLastState: calls one after another are served
// by the state used last, not by each idle state in turn, whose memory would
// have left the CPU caches.
func TestSequentialCallsReuseTheLastState(t *testing.T) {
	const poolSize = 16
	p := compile(t, `local id = tostring({})
kumo.on('smtp_server_rewrite_response', function() return nil, id end)`, policy.Options{PoolSize: poolSize})
	if err := p.Warm(); err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for range 3 * poolSize {
		used[p.Evaluate(context.Background(), policy.Input{Status: 250, Response: "x"}).Response] = true
	}
	if len(used) != 1 {
		t.Errorf("%d sequential calls used %d states, want 1", 3*poolSize, len(used))
	}
	if s := p.Stats(); s.Idle != poolSize || s.Created != poolSize {
		t.Errorf("stats %+v: want all %d states created by Warm still idle", s, poolSize)
	}
}

func TestShadowAndProtectData(t *testing.T) {
	src := `kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  conn_meta:set_meta('x_seen', true)
  return 550, 'rejected after all'
end)`
	in := dataInput()
	shadow := compile(t, src, policy.Options{Shadow: true}).Evaluate(context.Background(), in)
	if shadow.Outcome != policy.OutcomeShadowed || shadow.Status != 250 || shadow.Rewritten ||
		shadow.Proposed == nil || shadow.Proposed.Status != 550 || shadow.MetaUpdates != nil {
		t.Errorf("shadow: %+v", shadow)
	}
	protected := compile(t, src, policy.Options{ProtectData: true}).Evaluate(context.Background(), in)
	if protected.Outcome != policy.OutcomeProtected || protected.Status != 250 || protected.Err == nil ||
		protected.Proposed == nil || protected.Proposed.Response != "rejected after all" {
		t.Errorf("protect-data: %+v", protected)
	}
	notData := compile(t, src, policy.Options{ProtectData: true}).Evaluate(context.Background(), policy.Input{Status: 250, Response: "OK", Command: str("RCPT TO:<a@b>")})
	if notData.Outcome != policy.OutcomeRewritten || notData.Status != 550 {
		t.Errorf("protect-data only guards DATA: %+v", notData)
	}
}

func TestConcurrentEvaluation(t *testing.T) {
	p := compile(t, `kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  return nil, response .. ' from ' .. conn_meta:get_meta('id')
end)`, policy.Options{PoolSize: 2})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				id := fmt.Sprintf("g%d-%d", g, i)
				meta, _ := policy.MetaFromMap(map[string]any{"id": id})
				d := p.Evaluate(context.Background(), policy.Input{Status: 250, Response: "ok", Meta: meta})
				if want := "ok from " + id; d.Response != want {
					t.Errorf("got %q, want %q", d.Response, want)
					return
				}
			}
		})
	}
	wg.Wait()
	if s := p.Stats(); s.Idle > 2 || s.Created != s.Misses+1 {
		t.Errorf("stats %+v: at most 2 states stay idle, and every state beyond the first is a miss", s)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
		timeout         time.Duration
	}{
		{"top-level endless loop", "while true do end", "test.lua: running the policy's top level took longer than 1s", time.Second},
		// The registry overflow takes a while to come (longer under the race
		// detector): the budget must not end it first.
		{"top-level registry crash", "local function f(...) return f(1, ...) end f()", "crashed the Lua VM", time.Minute},
		{"top-level registry overflow", "local t = {} for i = 1, 100000 do t[i] = i end unpack(t)", "registry overflow", time.Minute},
		{"kumo.on with a non-function", "kumo.on('smtp_server_rewrite_response', 42)", "test.lua:1: bad argument #2 to on", time.Second},
		{"goto an unknown label", "goto nowhere", "test.lua", time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := policy.Compile("test.lua", []byte(tc.src), policy.Options{LoadTimeout: tc.timeout})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func BenchmarkEvaluate(b *testing.B) {
	meta, _ := policy.MetaFromMap(map[string]any{
		"received_from": "10.0.0.1:52000", "received_via": "10.0.0.2:25", "hostname": "mx.example.com",
		"reception_protocol": "ESMTP", "ehlo_domain": "client.example.org",
	})
	for _, bc := range []struct {
		name string
		in   policy.Input
	}{
		{"rewrite", policy.Input{Status: 250, Response: "OK ids=8f2a", Command: str("DATA"), Meta: meta}},
		{"unchanged", policy.Input{Status: 250, Response: "OK", Command: str("RCPT TO:<a@example.com>"), Meta: meta}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := compile(b, seed, policy.Options{})
			b.ReportAllocs()
			for b.Loop() {
				if d := p.Evaluate(context.Background(), bc.in); d.Err != nil {
					b.Fatal(d.Err)
				}
			}
		})
	}
}

// TestEvaluateAfterClose: a closed policy still answers, and keeps no idle
// state afterwards (an idle state keeps the watchdog goroutine running).
// TestCloseDuringEvaluations: states returned while Close drains are closed
// too, none is left idle, and the calls still get a decision. goleak, in
// TestMain, fails the package if a lost state kept the watchdog running.
func TestCloseDuringEvaluations(t *testing.T) {
	p := compile(t, seed, policy.Options{PoolSize: 4})
	var calls atomic.Int64
	underway := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 300 {
				if d := p.Evaluate(context.Background(), dataInput()); !d.Rewritten {
					t.Errorf("decision around Close: %+v", d)
					return
				}
				if calls.Add(1) == 100 {
					close(underway)
				}
			}
		})
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	select {
	case <-underway:
	case <-finished:
	}
	p.Close()
	<-finished
	if s := p.Stats(); s.Idle != 0 {
		t.Fatalf("stats %+v: idle states in a closed policy", s)
	}
}

func TestEvaluateAfterClose(t *testing.T) {
	p := compile(t, seed, policy.Options{})
	p.Close()
	for range 3 {
		if d := p.Evaluate(context.Background(), dataInput()); !d.Rewritten {
			t.Fatalf("decision after Close: %+v", d)
		}
	}
	if idle := p.Stats().Idle; idle != 0 {
		t.Fatalf("%d idle states in a closed policy", idle)
	}
}

// BenchmarkEvaluateParallel evaluates from many goroutines at once, as the
// server does with calls in flight: states go to and from the pool
// concurrently.
func BenchmarkEvaluateParallel(b *testing.B) {
	meta, _ := policy.MetaFromMap(map[string]any{"hostname": "mx.example.com"})
	in := policy.Input{Status: 250, Response: "OK ids=8f2a", Command: str("DATA"), Meta: meta}
	p := compile(b, seed, policy.Options{})
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d := p.Evaluate(context.Background(), in); d.Err != nil {
				b.Error(d.Err)
				return
			}
		}
	})
}

// BenchmarkEvaluateWarmPool evaluates one call at a time with a full pool of
// 64 idle states, as a server admitting 64 calls keeps, after touching
// 256 KiB of other memory, as the transport does between two evaluations of
// a busy server. eval-ns/op times the evaluation alone: whether it finds its
// state's memory still in cache depends on which state the pool hands out.
// pool=1 is the floor: its one state is always the one used last.
func BenchmarkEvaluateWarmPool(b *testing.B) {
	other := make([]byte, 256<<10)
	for _, size := range []int{1, 64} {
		b.Run(fmt.Sprintf("pool=%d", size), func(b *testing.B) {
			p := compile(b, seed, policy.Options{PoolSize: size})
			if err := p.Warm(); err != nil {
				b.Fatal(err)
			}
			in := dataInput()
			var evaluating time.Duration
			for b.Loop() {
				for i := 0; i < len(other); i += 64 {
					other[i]++
				}
				start := time.Now()
				d := p.Evaluate(context.Background(), in)
				evaluating += time.Since(start)
				if d.Err != nil {
					b.Fatal(d.Err)
				}
			}
			b.ReportMetric(float64(evaluating.Nanoseconds())/float64(b.N), "eval-ns/op")
		})
	}
}

// BenchmarkEvaluateEmptyHandler is the floor under every evaluation: taking
// a state, calling a handler that does nothing, and returning the state.
func BenchmarkEvaluateEmptyHandler(b *testing.B) {
	p := compile(b, `kumo.on('smtp_server_rewrite_response', function() end)`, policy.Options{})
	in := dataInput()
	b.ReportAllocs()
	for b.Loop() {
		p.Evaluate(context.Background(), in)
	}
}
