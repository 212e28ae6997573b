package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

// loadedBudget is a call budget that a loaded test machine does not run
// out of, for tests that need every call answered.
const loadedBudget = 10 * time.Second

// TestEjection drives the fleet's bookkeeping with scripted call outcomes.
func TestEjection(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "down")
	timeout := status.Error(codes.DeadlineExceeded, "slow")
	caller := status.Error(codes.Canceled, "caller gave up")
	type step struct {
		replica string
		err     error
		outrun  bool
		want    FleetEventKind // 0: no event
	}
	tests := []struct {
		name      string
		minStreak time.Duration
		ready     []string
		steps     []step
	}{
		{"five failures in a row eject", 0, []string{"a", "b", "c"}, []step{
			{"a", timeout, false, 0}, {"a", unavailable, false, 0}, {"a", timeout, false, 0}, {"a", caller, true, 0},
			{"a", timeout, false, ReplicaEjected},
		}},
		{"an answer resets the count", 0, []string{"a", "b"}, []step{
			{"a", timeout, false, 0}, {"a", timeout, false, 0}, {"a", timeout, false, 0}, {"a", timeout, false, 0},
			{"a", nil, false, 0},
			{"a", timeout, false, 0}, {"a", timeout, false, 0}, {"a", timeout, false, 0}, {"a", timeout, false, 0},
			{"a", timeout, false, ReplicaEjected},
		}},
		{"the caller giving up and load shedding say nothing", 0, []string{"a", "b"}, []step{
			{"a", timeout, false, 0}, {"a", caller, false, 0}, {"a", status.Error(codes.ResourceExhausted, "shed"), false, 0},
			{"a", timeout, false, 0}, {"a", timeout, false, 0}, {"a", timeout, false, 0},
			{"a", timeout, false, ReplicaEjected},
		}},
		{"an unknown policy is an answer", 0, []string{"a", "b"}, []step{
			{"a", timeout, false, 0}, {"a", timeout, false, 0}, {"a", timeout, false, 0}, {"a", timeout, false, 0},
			{"a", status.Error(codes.NotFound, "no policy"), false, 0}, {"a", timeout, false, 0},
		}},
		{"a lone replica is never ejected", 0, []string{"a"}, []step{
			{"a", timeout, false, 0}, {"a", timeout, false, 0}, {"a", timeout, false, 0}, {"a", timeout, false, 0},
			{"a", timeout, false, 0}, {"a", timeout, false, 0},
		}},
		{"failures within a short stall do not eject", time.Hour, []string{"a", "b"}, []step{
			{"a", caller, true, 0}, {"a", caller, true, 0}, {"a", caller, true, 0}, {"a", caller, true, 0},
			{"a", caller, true, 0}, {"a", caller, true, 0}, {"a", timeout, false, 0},
		}},
		{"at most half of the ready replicas", 0, []string{"a", "b", "c"}, []step{
			{"a", timeout, false, 0}, {"a", timeout, false, 0}, {"a", timeout, false, 0}, {"a", timeout, false, 0},
			{"a", timeout, false, ReplicaEjected},
			{"b", timeout, false, 0}, {"b", timeout, false, 0}, {"b", timeout, false, 0}, {"b", timeout, false, 0},
			{"b", timeout, false, 0}, {"b", timeout, false, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var events []FleetEvent
			f := newFleet(DefaultEjectAfter, tt.minStreak, time.Hour, DefaultEjectMaxShare, func(ev FleetEvent) { events = append(events, ev) })
			p := &fleetPicker{}
			for _, addr := range tt.ready {
				p.ready = append(p.ready, readyReplica{addr: addr})
			}
			for i, s := range tt.steps {
				a := &attempt{fleet: f}
				if !f.admit(s.replica, a) {
					t.Fatalf("step %d: %s not admitted", i, s.replica)
				}
				a.outrun.Store(s.outrun)
				n := len(events)
				f.report(s.replica, a, s.err, p)
				var got FleetEventKind
				if len(events) > n {
					got = events[n].Kind
				}
				if got != s.want {
					t.Fatalf("step %d (%s: %v, outrun %v): event %v, want %v", i, s.replica, s.err, s.outrun, got, s.want)
				}
			}
		})
	}
}

// TestEjectionProbe follows an ejected replica: no calls while ejected, then
// a single probe; a failed probe ejects it for twice as long, an answered
// one returns it.
func TestEjectionProbe(t *testing.T) {
	var events []FleetEvent
	f := newFleet(2, 0, time.Hour, 0.5, func(ev FleetEvent) { events = append(events, ev) })
	p := &fleetPicker{ready: []readyReplica{{addr: "a"}, {addr: "b"}}}
	timeout := status.Error(codes.DeadlineExceeded, "slow")
	fail := func() {
		a := &attempt{fleet: f}
		f.report("a", a, timeout, p)
	}
	fail()
	fail()
	if len(events) != 1 || events[0].Kind != ReplicaEjected || events[0].Replica != "a" || events[0].Failures != 2 {
		t.Fatalf("events %+v, want a's ejection after 2 failures", events)
	}
	first := time.Until(events[0].Until)
	if f.admit("a", &attempt{fleet: f}) {
		t.Fatal("an ejected replica was admitted")
	}
	if !f.admit("b", &attempt{fleet: f}) {
		t.Fatal("a healthy replica was refused")
	}
	expire := func() {
		f.mu.Lock()
		f.replicas["a"].until = time.Now().Add(-time.Millisecond)
		f.mu.Unlock()
	}

	expire()
	probe := &attempt{fleet: f}
	if !f.admit("a", probe) || !probe.probe.Load() {
		t.Fatal("no probe admitted after the ejection ended")
	}
	if f.admit("a", &attempt{fleet: f}) {
		t.Fatal("a second call admitted while the probe is in flight")
	}
	f.report("a", probe, timeout, p)
	if len(events) != 2 || events[1].Kind != ReplicaEjected {
		t.Fatalf("events %+v, want a second ejection after the failed probe", events)
	}
	if second := time.Until(events[1].Until); second < first*3/2 {
		t.Errorf("second ejection lasts %v, want about twice the first (%v)", second, first)
	}

	expire()
	probe = &attempt{fleet: f}
	if !f.admit("a", probe) {
		t.Fatal("no probe admitted after the second ejection")
	}
	f.report("a", probe, nil, p)
	if len(events) != 3 || events[2].Kind != ReplicaReturned || events[2].Replica != "a" {
		t.Fatalf("events %+v, want a's return", events)
	}
	if !f.admit("a", &attempt{fleet: f}) {
		t.Fatal("a returned replica was refused")
	}
}

// stall answers nothing until the call is cancelled, and records the texts
// it was sent and how each call ended.
type stall struct {
	mu    sync.Mutex
	texts []string
	ended []error
}

func (s *stall) handle(ctx context.Context, req *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
	s.mu.Lock()
	s.texts = append(s.texts, req.GetResponse())
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	s.ended = append(s.ended, ctx.Err())
	s.mu.Unlock()
	return nil, status.FromContextError(ctx.Err()).Err()
}

func (s *stall) sent() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.texts...)
}

// warm calls c until every replica in addrs has answered, so that every
// connection is ready before a test stalls one.
func warm(t *testing.T, c *Client, addrs ...string) {
	t.Helper()
	answered := map[string]bool{}
	for deadline := time.Now().Add(10 * time.Second); len(answered) < len(addrs); {
		if time.Now().After(deadline) {
			t.Fatalf("only %v of %v answered within 10s", answered, addrs)
		}
		if res := c.Rewrite(context.Background(), Reply{Status: 250, Text: "warm", Command: "DATA"}, nil); res.Err == nil {
			answered[res.Replica] = true
		}
	}
}

func numberedReply(n int) Reply {
	return Reply{Status: 250, Text: fmt.Sprintf("OK %d", n), Command: "DATA"}
}

// TestHedgeRescuesStalledReplica: calls sent to a replica that never answers
// are answered by the other one after the hedge delay, and the stalled
// attempt is cancelled rather than left to its deadline.
func TestHedgeRescuesStalledReplica(t *testing.T) {
	st := &stall{}
	stalled, fast := startFake(t, superFantastic), startFake(t, superFantastic)
	c := newClient(t, stalled.addr+","+fast.addr, WithHedgeDelay(5*time.Millisecond), WithHedgeBudget(1),
		WithEjection(0, 0, 0), WithBreaker(0, 0), WithTimeout(loadedBudget))
	warm(t, c, stalled.addr, fast.addr)
	stalled.setHandler(st.handle)
	sentBefore := fast.calls.Load()
	hedged := 0
	for n := range 40 {
		res := c.Rewrite(context.Background(), numberedReply(n), nil)
		if res.Err != nil || !res.Rewritten || res.Replica != fast.addr {
			t.Fatalf("call %d: %+v, want rewritten by %s", n, res, fast.addr)
		}
		if res.Hedged {
			hedged++
		}
	}
	if got := len(st.sent()); got == 0 || hedged == 0 {
		t.Errorf("%d calls hedged, %d sent to the stalled replica: the test proves nothing", hedged, got)
	}
	if got := fast.calls.Load() - sentBefore; got != 40 {
		t.Errorf("the answering replica got %d calls, want 40", got)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, err := range st.ended {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("a stalled attempt ended with %v, want it cancelled once the hedge answered", err)
		}
	}
}

// TestHedgeBudget: when the whole fleet is slow, hedges stay within the
// budget's share of the calls plus its burst.
func TestHedgeBudget(t *testing.T) {
	a, b := startFake(t, sleeps(5*time.Millisecond)), startFake(t, sleeps(5*time.Millisecond))
	c := newClient(t, a.addr+","+b.addr, WithHedgeDelay(time.Millisecond), WithHedgeBudget(0.1), WithEjection(0, 0, 0),
		WithTimeout(loadedBudget))
	const calls = 200
	hedged := 0
	for n := range calls {
		res := c.Rewrite(context.Background(), numberedReply(n), nil)
		if res.Err != nil {
			t.Fatalf("call %d: %v", n, res.Err)
		}
		if res.Hedged {
			hedged++
		}
	}
	if limit := calls/10 + hedgeBurst; hedged == 0 || hedged > limit {
		t.Errorf("%d of %d calls hedged, want some and at most %d", hedged, calls, limit)
	}
	// A hedge cancelled on its way, its primary having answered, never arrives.
	if sent := a.calls.Load() + b.calls.Load(); sent < calls || sent > int64(calls+hedged) {
		t.Errorf("the replicas got %d requests for %d calls and %d hedges", sent, calls, hedged)
	}
}

// TestNoHedgeWithoutAnotherReplica: a lone slow replica gets exactly one
// request per call, and the budget is not spent on hedges never sent.
func TestNoHedgeWithoutAnotherReplica(t *testing.T) {
	srv := startFake(t, sleeps(5*time.Millisecond))
	c := newClient(t, srv.addr, WithHedgeDelay(time.Millisecond), WithTimeout(loadedBudget))
	for n := range 30 {
		if res := c.Rewrite(context.Background(), numberedReply(n), nil); res.Err != nil || res.Hedged {
			t.Fatalf("call %d: %+v, want answered without a hedge", n, res)
		}
	}
	if got := srv.calls.Load(); got != 30 {
		t.Errorf("the replica got %d requests for 30 calls", got)
	}
	if got := c.hedger.tokens.tokens.Load(); got != hedgeBurst*tokenUnit {
		t.Errorf("budget holds %d thousandths of a token, want it full", got)
	}
}

// TestHedgeAfterUnavailable: a call whose replica refuses it with
// Unavailable goes to another replica at once.
func TestHedgeAfterUnavailable(t *testing.T) {
	down, up := startFake(t, superFantastic), startFake(t, superFantastic)
	c := newClient(t, down.addr+","+up.addr, WithHedgeDelay(time.Hour), WithEjection(0, 0, 0), WithBreaker(0, 0),
		WithTimeout(loadedBudget))
	warm(t, c, down.addr, up.addr)
	down.setHandler(fails(codes.Unavailable))
	for n := range 20 {
		if res := c.Rewrite(context.Background(), numberedReply(n), nil); res.Err != nil || res.Replica != up.addr {
			t.Fatalf("call %d: %+v, want answered by %s", n, res, up.addr)
		}
	}
	if down.calls.Load() == 0 {
		t.Error("the failing replica got no call: the test proves nothing")
	}
}

// TestStalledReplicaEjected: a stalled replica is ejected, gets none of the
// calls made while it is ejected, and returns through a probe once it
// answers again.
func TestStalledReplicaEjected(t *testing.T) {
	st := &stall{}
	stalled := startFake(t, superFantastic)
	a, b := startFake(t, superFantastic), startFake(t, superFantastic)
	events := make(chan FleetEvent, 16)
	c := newClient(t, stalled.addr+","+a.addr+","+b.addr, WithHedgeDelay(5*time.Millisecond),
		WithEjection(3, time.Hour, 0.5), WithFleetObserver(func(ev FleetEvent) { events <- ev }))
	warm(t, c, stalled.addr, a.addr, b.addr)
	stalled.setHandler(st.handle)
	n := 0
	call := func() {
		t.Helper()
		// A loaded machine may make a call run out of its budget; nothing else may fail.
		if res := c.Rewrite(context.Background(), numberedReply(n), nil); res.Err != nil && !errors.Is(res.Err, ErrTimeout) {
			t.Fatalf("call %d: %v", n, res.Err)
		}
		n++
	}
	var ejected FleetEvent
	for ejected.Kind == 0 {
		call()
		select {
		case ejected = <-events:
		default:
			if n > 1000 {
				t.Fatal("no ejection after 1000 calls")
			}
		}
	}
	if ejected.Kind != ReplicaEjected || ejected.Replica != stalled.addr {
		t.Fatalf("event %+v, want %s ejected", ejected, stalled.addr)
	}
	first := n
	for range 60 {
		call()
	}
	for _, text := range st.sent() {
		var k int
		if _, err := fmt.Sscanf(text, "OK %d", &k); err == nil && k >= first {
			t.Errorf("call %d went to the ejected replica", k)
		}
	}

	// It answers again: once its ejection ends, a probe returns it. (A probe
	// that a loaded machine makes slower than a hedge ejects it again.)
	stalled.setHandler(superFantastic)
	endEjection := func() {
		c.fleet.mu.Lock()
		c.fleet.replicas[stalled.addr].until = time.Now()
		c.fleet.mu.Unlock()
	}
	endEjection()
	deadline := time.Now().Add(10 * time.Second)
	for {
		call()
		select {
		case ev := <-events:
			switch {
			case ev.Replica != stalled.addr:
				t.Fatalf("event %+v: only %s was ejected", ev, stalled.addr)
			case ev.Kind == ReplicaReturned:
				return
			}
			endEjection()
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the replica did not return within 10s of answering again")
		}
	}
}

// TestTokenBucketNeverExceedsBurst: whatever order a call's deposit and a
// hedge's take and refund come in, the bucket holds at most hedgeBurst
// tokens.
func TestTokenBucketNeverExceedsBurst(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps string // t: take, d: deposit, r: refund
	}{
		{"refund after the call's deposit", "tdr"},
		{"refund before the deposit", "trd"},
		{"deposits on a full bucket", "ddd"},
		{"two hedges refunded after deposits", "ttddrr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b tokenBucket
			b.init(0.1)
			for _, step := range tc.steps {
				switch step {
				case 't':
					if !b.take() {
						t.Fatal("take refused on a full bucket")
					}
				case 'd':
					b.deposit()
				case 'r':
					b.refund()
				}
				if got := b.tokens.Load(); got > hedgeBurst*tokenUnit {
					t.Fatalf("after %q the bucket holds %d thousandths, more than the burst of %d", step, got, hedgeBurst*tokenUnit)
				}
			}
		})
	}
}
