package client

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
)

// balancerName is the load-balancing policy New configures: round_robin
// over the replicas that are ready, minus the ejected ones and, for a hedge,
// the replica its call already waits on.
const balancerName = "rewrited_fleet"

func init() { balancer.Register(fleetBuilder{}) }

// fleetBuilder builds round_robin as grpc-go does (endpointsharding over
// pick_first, one child per replica) and replaces its picker.
type fleetBuilder struct{}

func (fleetBuilder) Name() string { return balancerName }

func (fleetBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	return endpointsharding.NewBalancer(pickerSwap{cc}, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
}

// pickerSwap passes the children's aggregated state up, with a fleetPicker
// over the ready children in place of endpointsharding's plain rotation.
type pickerSwap struct{ balancer.ClientConn }

func (cc pickerSwap) UpdateState(s balancer.State) {
	var ready []readyReplica
	for _, child := range endpointsharding.ChildStatesFromPicker(s.Picker) {
		if child.State.ConnectivityState == connectivity.Ready {
			ready = append(ready, readyReplica{addr: replicaAddr(child.Endpoint), picker: child.State.Picker})
		}
	}
	if len(ready) > 0 {
		p := &fleetPicker{ready: ready}
		p.next.Store(rand.Uint32())
		s.Picker = p
	}
	cc.ClientConn.UpdateState(s)
}

func replicaAddr(e resolver.Endpoint) string {
	if len(e.Addresses) == 0 {
		return ""
	}
	return e.Addresses[0].Addr
}

type readyReplica struct {
	addr   string
	picker balancer.Picker
}

// fleetPicker rotates over the ready replicas. A call made by Rewrite
// carries an attempt in its context: the picker then skips ejected replicas
// and the one the attempt must avoid, records the replica it chose, and
// reports how the call ended to the attempt's fleet.
type fleetPicker struct {
	ready []readyReplica
	next  atomic.Uint32
}

// errNoOtherReplica fails a hedge that has no replica to go to but the one
// its call already waits on.
var errNoOtherReplica = status.Error(codes.Unavailable, "client: no other replica to hedge to")

func (p *fleetPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	n := uint32(len(p.ready))
	start := p.next.Add(1)
	a, _ := info.Ctx.Value(attemptKey{}).(*attempt)
	if a == nil {
		return p.ready[start%n].picker.Pick(info)
	}
	var chosen *readyReplica
	for i := range n {
		r := &p.ready[(start+i)%n]
		if r.addr != a.avoid && a.fleet.admit(r.addr, a) {
			chosen = r
			break
		}
	}
	if chosen == nil {
		if a.avoid != "" {
			return balancer.PickResult{}, errNoOtherReplica
		}
		// Every ready replica is ejected or probing: any of them beats failing the call.
		chosen = &p.ready[start%n]
	}
	res, err := chosen.picker.Pick(info)
	if err != nil {
		if a.probe.Swap(false) {
			a.fleet.release(chosen.addr)
		}
		return res, err
	}
	a.replica.Store(&chosen.addr)
	done := res.Done
	res.Done = func(di balancer.DoneInfo) {
		a.fleet.report(chosen.addr, a, di.Err, p)
		if done != nil {
			done(di)
		}
	}
	return res, nil
}

// attempt is one RPC of a Rewrite call: the primary, or its hedge.
type attempt struct {
	fleet   *fleet
	avoid   string                 // a hedge's primary replica, never picked for it
	replica atomic.Pointer[string] // the replica picked, once picked
	probe   atomic.Bool            // this attempt probes an ejected replica
	outrun  atomic.Bool            // cancelled because another replica answered first
}

type attemptKey struct{}

func withAttempt(ctx context.Context, a *attempt) context.Context {
	return context.WithValue(ctx, attemptKey{}, a)
}

// replicaOf returns the address a's RPC was sent to, "" before the pick.
func (a *attempt) replicaOf() string {
	if p := a.replica.Load(); p != nil {
		return *p
	}
	return ""
}

// FleetEventKind says what happened to a replica.
type FleetEventKind int

// Fleet events.
const (
	// ReplicaEjected: the replica failed repeatedly (timeouts, Unavailable,
	// calls another replica answered first) and gets no calls until Until;
	// then one call probes it.
	ReplicaEjected FleetEventKind = iota + 1
	// ReplicaReturned: a probe of an ejected replica was answered; it takes
	// its share of calls again.
	ReplicaReturned
)

func (k FleetEventKind) String() string {
	switch k {
	case ReplicaEjected:
		return "ejected"
	case ReplicaReturned:
		return "returned"
	}
	return "unknown"
}

// FleetEvent is a change in the replicas the client sends calls to,
// reported to the function given to WithFleetObserver.
type FleetEvent struct {
	Kind     FleetEventKind
	Replica  string    // the replica's address
	Failures int       // ReplicaEjected: failures in a row that led to it
	Until    time.Time // ReplicaEjected: when the replica is probed
}

// fleet tracks the health of each replica a Client calls, for outlier
// ejection: a replica whose calls fail ejectAfter times in a row, over at
// least minStreak, is skipped for ejectFor, doubling with each ejection that
// follows a failed probe, and never more than maxShare of the ready
// replicas are ejected at once. minStreak spares a replica that a busy host
// stalls for a few milliseconds, whose calls in flight all lose to hedges.
type fleet struct {
	ejectAfter int
	minStreak  time.Duration
	ejectFor   time.Duration
	maxShare   float64
	observer   func(FleetEvent)

	ejected  atomic.Int32 // replicas ejected or awaiting a probe: when 0, admit takes no lock
	mu       sync.Mutex
	replicas map[string]*replicaHealth
}

type replicaHealth struct {
	failures  int       // failed calls in a row
	since     time.Time // when the first of them failed
	ejections int       // ejections since it last answered a probe
	ejected   bool      // from its ejection until a probe is answered
	until     time.Time // end of the current ejection
	probing   bool      // a probe is in flight
}

// maxEjectionDoublings bounds how often a replica's ejection time doubles.
const maxEjectionDoublings = 2

func newFleet(ejectAfter int, minStreak, ejectFor time.Duration, maxShare float64, observer func(FleetEvent)) *fleet {
	return &fleet{ejectAfter: ejectAfter, minStreak: minStreak, ejectFor: ejectFor, maxShare: maxShare, observer: observer,
		replicas: map[string]*replicaHealth{}}
}

// admit reports whether a may be sent to addr: not while it is ejected, and
// once its ejection has expired only as the one probe.
func (f *fleet) admit(addr string, a *attempt) bool {
	if f.ejected.Load() == 0 {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.replicas[addr]
	if h == nil || !h.ejected {
		return true
	}
	if h.probing || time.Now().Before(h.until) {
		return false
	}
	h.probing = true
	a.probe.Store(true)
	return true
}

// release frees the probe slot of a probe that was never sent.
func (f *fleet) release(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h := f.replicas[addr]; h != nil {
		h.probing = false
	}
}

// verdict is what one call says about its replica.
type verdict int

const (
	neutral  verdict = iota // says nothing: the caller gave up, the replica shed load
	answered                // the replica answered
	failed                  // timed out, unavailable, or outrun by another replica
)

func judge(err error, a *attempt) verdict {
	if isAnswer(err) {
		return answered
	}
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Unavailable:
		return failed
	case codes.Canceled:
		if a.outrun.Load() {
			return failed
		}
	}
	return neutral
}

// report records how a's call to addr ended; p is the picker that chose
// addr, whose ready replicas the ejection share is counted against.
func (f *fleet) report(addr string, a *attempt, err error, p *fleetPicker) {
	if f.ejectAfter == 0 {
		return
	}
	v := judge(err, a)
	probe := a.probe.Load()
	if v == neutral && !probe {
		return
	}
	var ev FleetEvent
	f.mu.Lock()
	h := f.replicas[addr]
	if h == nil {
		h = &replicaHealth{}
		f.replicas[addr] = h
	}
	switch v {
	case answered:
		h.failures = 0
		if probe {
			h.probing = false
		}
		if h.ejected && probe {
			h.ejected, h.ejections = false, 0
			f.ejected.Add(-1)
			ev = FleetEvent{Kind: ReplicaReturned, Replica: addr}
		}
	case failed:
		now := time.Now()
		if h.failures == 0 {
			h.since = now
		}
		h.failures++
		switch {
		case probe:
			h.probing = false
			ev = f.ejectLocked(addr, h)
		case !h.ejected && h.failures >= f.ejectAfter && now.Sub(h.since) >= f.minStreak && f.mayEjectLocked(p):
			h.ejected = true
			f.ejected.Add(1)
			ev = f.ejectLocked(addr, h)
		}
	default:
		h.probing = false
	}
	f.mu.Unlock()
	if ev.Kind != 0 && f.observer != nil {
		f.notify(ev)
	}
}

// ejectLocked starts an ejection of h, longer after each failed probe.
func (f *fleet) ejectLocked(addr string, h *replicaHealth) FleetEvent {
	d := f.ejectFor << min(h.ejections, maxEjectionDoublings)
	h.ejections++
	h.until = time.Now().Add(d)
	return FleetEvent{Kind: ReplicaEjected, Replica: addr, Failures: h.failures, Until: h.until}
}

// mayEjectLocked reports whether one more of p's ready replicas may be
// ejected: at least one of two or more, never more than maxShare of them.
func (f *fleet) mayEjectLocked(p *fleetPicker) bool {
	total := len(p.ready)
	if total < 2 {
		return false
	}
	ejected := 0
	for _, r := range p.ready {
		if h := f.replicas[r.addr]; h != nil && h.ejected {
			ejected++
		}
	}
	return ejected+1 <= max(1, int(float64(total)*f.maxShare))
}

func (f *fleet) notify(ev FleetEvent) {
	defer func() { _ = recover() }() // a broken metrics hook must not break the mail flow
	f.observer(ev)
}
