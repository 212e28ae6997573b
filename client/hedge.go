package client

import (
	"context"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

// hedger decides when a call gets a second request and whether the budget
// allows it.
type hedger struct {
	fixed   time.Duration // WithHedgeDelay; 0: adaptive
	floor   time.Duration // the adaptive delay's lower bound
	ceiling time.Duration // the adaptive delay's upper bound: half the budget
	latency latencyWindow
	tokens  tokenBucket
}

// Hedging constants. The adaptive delay is the latency percentile that
// leaves the extra share of calls a healthy fleet should see; the window
// closes after a second with enough answers in it.
const (
	hedgeQuantile      = 0.98
	hedgeWindow        = time.Second
	hedgeWindowMinimum = 50
	// The budget holds at most this many hedges, the burst a stall can
	// use at once before calls earn more.
	hedgeBurst = 20
)

func newHedger(fixed, floor, budget time.Duration, share float64) *hedger {
	h := &hedger{fixed: fixed, floor: floor, ceiling: budget / 2}
	h.latency.start.Store(time.Now().UnixNano())
	h.latency.delay.Store(int64(max(floor, budget/4)))
	h.tokens.init(share)
	return h
}

// delay is how long a call waits for an answer before it hedges.
func (h *hedger) delay() time.Duration {
	if h.fixed > 0 {
		return h.fixed
	}
	return min(max(time.Duration(h.latency.delay.Load()), h.floor), h.ceiling)
}

// latencyWindow is a histogram of answered attempts' latencies over the
// current window, with logarithmic buckets (four per power of two of
// microseconds); when a window closes, its hedgeQuantile becomes the delay.
type latencyWindow struct {
	start   atomic.Int64 // window start, Unix nanoseconds
	delay   atomic.Int64 // the current delay, nanoseconds
	total   atomic.Int64
	buckets [latencyBuckets]atomic.Int64
}

const latencyBuckets = 64 * 4

func bucketOf(d time.Duration) int {
	us := uint64(max(d.Microseconds(), 1))
	exp := bits.Len64(us) - 1 // us in [2^exp, 2^(exp+1))
	sub := 0
	if exp >= 2 {
		sub = int(us>>(exp-2)) & 3
	}
	return exp*4 + sub
}

// bucketCeiling is the upper bound of bucket i.
func bucketCeiling(i int) time.Duration {
	exp, sub := i/4, i%4
	if exp < 2 {
		return time.Duration(uint64(1)<<(exp+1)) * time.Microsecond
	}
	return time.Duration((uint64(4+sub+1))<<(exp-2)) * time.Microsecond
}

func (w *latencyWindow) record(d time.Duration) {
	w.buckets[bucketOf(d)].Add(1)
	n := w.total.Add(1)
	start := w.start.Load()
	now := time.Now().UnixNano()
	if n < hedgeWindowMinimum || now-start < int64(hedgeWindow) || !w.start.CompareAndSwap(start, now) {
		return
	}
	// This caller closed the window: compute its quantile and start a new one.
	// Answers recorded meanwhile may land in either window; both are samples.
	var counts [latencyBuckets]int64
	var sum int64
	for i := range w.buckets {
		counts[i] = w.buckets[i].Swap(0)
		sum += counts[i]
	}
	w.total.Store(0)
	rank := int64(float64(sum) * hedgeQuantile)
	var seen int64
	for i, c := range counts {
		seen += c
		if seen > rank {
			w.delay.Store(int64(bucketCeiling(i)))
			return
		}
	}
}

// tokenBucket is the hedging budget, after gRPC's retry throttling: every
// call earns share of a token, every hedge spends one, and the bucket holds
// hedgeBurst tokens, so hedges stay within share of the calls over time.
// Amounts are in thousandths of a token.
type tokenBucket struct {
	earn   int64
	tokens atomic.Int64
}

const tokenUnit = 1000

func (b *tokenBucket) init(share float64) {
	b.earn = int64(share * tokenUnit)
	b.tokens.Store(hedgeBurst * tokenUnit)
}

func (b *tokenBucket) deposit() { b.add(b.earn) }

// add puts n thousandths back, never above the burst: a refund can land
// after the call's own deposit has refilled the bucket.
func (b *tokenBucket) add(n int64) {
	for {
		t := b.tokens.Load()
		if t >= hedgeBurst*tokenUnit || b.tokens.CompareAndSwap(t, min(t+n, hedgeBurst*tokenUnit)) {
			return
		}
	}
}

func (b *tokenBucket) take() bool {
	for {
		t := b.tokens.Load()
		if t < tokenUnit {
			return false
		}
		if b.tokens.CompareAndSwap(t, t-tokenUnit) {
			return true
		}
	}
}

func (b *tokenBucket) refund() { b.add(tokenUnit) }

// exchange is the outcome of a call's RPCs.
type exchange struct {
	resp    *rewritev1.RewriteResponseResponse
	err     error
	replica string // the replica whose outcome this is
	hedged  bool   // a second request was sent
}

// race runs one call's RPCs: the primary on the caller's goroutine, a hedge
// on a timer's when the primary has no answer after the hedge delay (or at
// once when the primary finds its replica unavailable). The first answer
// wins and the other RPC is cancelled.
type race struct {
	c       *Client
	ctx     context.Context // the call's budgeted context
	req     *rewritev1.RewriteResponseRequest
	primary *attempt
	cancel  context.CancelFunc // the primary's
	timer   *time.Timer        // launches the hedge

	mu          sync.Mutex
	primaryDone bool
	hedge       *attempt
	hedgeCancel context.CancelFunc
	hedgeDone   chan struct{} // closed when the hedge has ended
	hedgeEnded  bool
	hedgeOut    exchange
	hedgeWon    bool
}

// exchange sends req within ctx, hedging as the client is configured.
func (c *Client) exchange(ctx context.Context, req *rewritev1.RewriteResponseRequest) exchange {
	primary := &attempt{fleet: c.fleet}
	if c.hedger == nil {
		resp, err := c.rpc.RewriteResponse(withAttempt(ctx, primary), req)
		return exchange{resp: resp, err: err, replica: primary.replicaOf()}
	}
	c.hedger.tokens.deposit()
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &race{c: c, ctx: ctx, req: req, primary: primary, cancel: cancel}
	r.mu.Lock() // launch reads r.timer
	r.timer = time.AfterFunc(c.hedger.delay(), func() { r.launch(false) })
	r.mu.Unlock()
	timer := r.timer
	start := time.Now()
	resp, err := c.rpc.RewriteResponse(withAttempt(pctx, primary), req)
	out := exchange{resp: resp, err: err, replica: primary.replicaOf()}

	r.mu.Lock()
	r.primaryDone = true
	hedge, won, ended, done := r.hedge, r.hedgeWon, r.hedgeEnded, r.hedgeDone
	r.mu.Unlock()
	switch {
	case won:
		return r.hedgeOut
	case isAnswer(err):
		timer.Stop()
		c.hedger.latency.record(time.Since(start))
		if hedge != nil {
			hedge.outrun.Store(true)
			r.hedgeCancel()
			out.hedged = hedge.replicaOf() != ""
		}
		return out
	case hedge != nil && !ended:
		<-done // the hedge ends last: its outcome is the call's
		return r.hedgeOut
	case hedge != nil:
		out.hedged = r.hedgeOut.hedged
	case status.Code(err) == codes.Unavailable && timer.Stop():
		if h := r.launch(true); h.hedged {
			return h
		}
	}
	return out
}

// launch sends the hedge unless the primary has ended (or, with
// afterPrimary, because it has failed), the primary has not been sent yet,
// the budget is spent, or there is no other replica; it returns the
// hedge's outcome.
func (r *race) launch(afterPrimary bool) exchange {
	avoid := r.primary.replicaOf()
	r.mu.Lock()
	if r.primaryDone && !afterPrimary {
		r.mu.Unlock()
		return exchange{}
	}
	if avoid == "" {
		// The primary has not been sent yet: it waits for a connection, or
		// for a busy machine to run it. Look again after another delay.
		if !afterPrimary {
			r.timer.Reset(r.c.hedger.delay())
		}
		r.mu.Unlock()
		return exchange{}
	}
	if !r.c.hedger.tokens.take() {
		r.mu.Unlock()
		return exchange{}
	}
	h := &attempt{fleet: r.c.fleet, avoid: avoid}
	hctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	r.hedge, r.hedgeCancel, r.hedgeDone = h, cancel, make(chan struct{})
	r.mu.Unlock()

	start := time.Now()
	resp, err := r.c.rpc.RewriteResponse(withAttempt(hctx, h), r.req)
	// A hedge that found no other replica, or was cancelled before it found
	// one, was never sent: it is no hedge and costs no token.
	out := exchange{resp: resp, err: err, replica: h.replicaOf()}
	out.hedged = out.replica != ""
	if !out.hedged {
		r.c.hedger.tokens.refund()
	}
	if isAnswer(err) {
		r.c.hedger.latency.record(time.Since(start))
	}
	r.mu.Lock()
	r.hedgeOut, r.hedgeEnded = out, true
	if isAnswer(err) && !r.primaryDone {
		r.hedgeWon = true
		r.primary.outrun.Store(true)
		r.cancel()
	}
	close(r.hedgeDone)
	r.mu.Unlock()
	return out
}

// isAnswer reports whether err (nil included) is rewrited's answer rather
// than a failure to get one.
func isAnswer(err error) bool {
	switch status.Code(err) {
	case codes.OK, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented, codes.Unauthenticated:
		return true
	}
	return false
}
