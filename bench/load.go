package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	protoenc "google.golang.org/grpc/encoding/proto"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

// callKind is one of the two calls measured against each other.
type callKind int

const (
	rewriteCall callKind = iota // RewriteResponse with the example policy
	healthCall                  // grpc.health.v1.Health/Check: the empty-call floor
)

func (k callKind) String() string {
	if k == rewriteCall {
		return "RewriteResponse"
	}
	return "Health.Check"
}

// caller issues one kind of call; it must be safe for concurrent use.
type caller func(ctx context.Context) error

// encodedRequest is a request message marshalled once, before the run.
type encodedRequest []byte

// answer receives a reply. A reply whose bytes equal ref, the bytes of an
// answer decoded and checked before the run, is that same answer and is not
// decoded again; any other reply is kept in raw, to be decoded and checked.
type answer struct {
	ref  []byte
	same bool
	raw  []byte
}

// preEncoded sends an encodedRequest as it is and compares the reply with
// the answer's reference bytes. Both calls go through it, so the generator's
// cost per call is the same for both but for the messages' sizes. The
// generator shares the cores with the server: marshalling the 5-key Struct
// on every call cost it more than the server spends on the rewrite, and
// decoding every reply a further 1 to 2 µs that the empty call does not
// pay; both measured the generator instead of the server.
type preEncoded struct{}

// Name is the proto codec's: the messages on the wire are protobuf.
func (preEncoded) Name() string { return protoenc.Name }

func (preEncoded) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(encodedRequest)
	if !ok {
		return nil, fmt.Errorf("bench: %T is not an encoded request", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (preEncoded) Unmarshal(data mem.BufferSlice, v any) error {
	a, ok := v.(*answer)
	if !ok {
		return fmt.Errorf("bench: %T is not an answer", v)
	}
	if a.ref != nil && len(data) == 1 && bytes.Equal(data[0].ReadOnlyData(), a.ref) {
		a.same = true
		return nil
	}
	a.raw = data.Materialize()
	a.same = a.ref != nil && bytes.Equal(a.raw, a.ref)
	return nil
}

// newCallers returns the two calls on one connection. The request messages
// are encoded once and shared; each call's answer is decoded and checked
// once, and later answers are compared with its bytes, falling back to
// decoding and checking any that differ.
func newCallers(ctx context.Context, conn *grpc.ClientConn) (map[callKind]caller, error) {
	meta, err := structpb.NewStruct(map[string]any{
		"received_from":      "192.0.2.10:52344",
		"received_via":       "192.0.2.1:25",
		"hostname":           "mx1.example.net",
		"reception_protocol": "ESMTP",
		"ehlo_domain":        "client.example.org",
	})
	if err != nil {
		return nil, err
	}
	command := "DATA"
	req := &rewritev1.RewriteResponseRequest{Status: 250, Response: "OK ids=8f2a61c04be94d7e", Command: &command, ConnMeta: meta}
	want := "super fantastic!\n" + req.Response
	rewriteCheck := func(raw []byte) error {
		resp := new(rewritev1.RewriteResponseResponse)
		if err := proto.Unmarshal(raw, resp); err != nil {
			return err
		}
		if !resp.GetRewritten() || resp.GetResponse() != want {
			return fmt.Errorf("%w: %v", errFallback, resp)
		}
		return nil
	}
	healthCheck := func(raw []byte) error {
		resp := new(healthpb.HealthCheckResponse)
		if err := proto.Unmarshal(raw, resp); err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health: %v", resp.GetStatus())
		}
		return nil
	}
	codec := grpc.ForceCodecV2(preEncoded{})
	calls := make(map[callKind]caller, 2)
	for kind, c := range map[callKind]struct {
		method string
		req    proto.Message
		check  func(raw []byte) error
	}{
		rewriteCall: {rewritev1.RewriteService_RewriteResponse_FullMethodName, req, rewriteCheck},
		healthCall:  {healthpb.Health_Check_FullMethodName, &healthpb.HealthCheckRequest{}, healthCheck},
	} {
		encoded, err := proto.Marshal(c.req)
		if err != nil {
			return nil, err
		}
		first := new(answer)
		if err := conn.Invoke(ctx, c.method, encodedRequest(encoded), first, codec); err != nil {
			return nil, fmt.Errorf("%v: %w", kind, err)
		}
		if err := c.check(first.raw); err != nil {
			return nil, fmt.Errorf("%v: %w", kind, err)
		}
		calls[kind] = func(ctx context.Context) error {
			a := &answer{ref: first.raw}
			if err := conn.Invoke(ctx, c.method, encodedRequest(encoded), a, codec); err != nil {
				return err
			}
			if a.same {
				return nil
			}
			return c.check(a.raw)
		}
	}
	return calls, nil
}

// errFallback marks a rewrite call answered with the original reply (the
// server's outcome says why, e.g. a timed-out evaluation): the call cost as
// much as any other, so it counts, and the report shows how many there were.
var errFallback = errors.New("answered with the original reply")

// run is the outcome of one timed run.
type run struct {
	requests  int // calls answered, fallbacks included
	fallbacks int
	errors    int // calls that failed: the run measures nothing
	firstErr  error
	elapsed   time.Duration
	lat       []time.Duration // sorted
	// serverCPU is the server's CPU time during the run, and othersCPU the
	// cores' worth of CPU that neither the server nor this generator used:
	// other work on the machine, which makes the run noise.
	serverCPU time.Duration
	selfCPU   time.Duration // this generator's
	othersCPU float64
}

func (r run) throughput() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// cpuPerCall is the server's CPU time per call, in µs.
func (r run) cpuPerCall() float64 { return perCall(r.serverCPU, r.requests) }

// selfCPUPerCall is the generator's CPU time per call, in µs.
func (r run) selfCPUPerCall() float64 { return perCall(r.selfCPU, r.requests) }

func perCall(d time.Duration, calls int) float64 {
	return float64(d) / float64(time.Microsecond) / float64(calls)
}

// quantile returns the q-quantile of the run's latencies (nearest rank).
func (r run) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(q*float64(len(r.lat))+0.5) - 1
	return r.lat[min(max(i, 0), len(r.lat)-1)]
}

// load keeps inFlight calls outstanding until d has passed or maxRequests
// calls were started, and records every call's latency.
func load(call caller, inFlight int, d time.Duration, maxRequests int) run {
	// One deadline for the whole run bounds a hung call without a timer
	// per call.
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	var (
		started  atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		all      run
		perCall  = make([][]time.Duration, inFlight)
		errCount atomic.Int64
		fallback atomic.Int64
	)
	begin := time.Now()
	stop := begin.Add(d)
	for w := range inFlight {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1024)
			for started.Add(1) <= int64(maxRequests) {
				t0 := time.Now()
				if t0.After(stop) {
					break
				}
				err := call(ctx)
				switch {
				case errors.Is(err, errFallback):
					if fallback.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "first fallback of the run:", err)
					}
				case err != nil:
					if errCount.Add(1) == 1 {
						mu.Lock()
						all.firstErr = err
						mu.Unlock()
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			perCall[w] = lat
		})
	}
	wg.Wait()
	all.elapsed = time.Since(begin)
	for _, lat := range perCall {
		all.lat = append(all.lat, lat...)
	}
	slices.Sort(all.lat)
	all.requests = len(all.lat)
	all.errors = int(errCount.Load())
	all.fallbacks = int(fallback.Load())
	return all
}
