// Package load drives rewrited through the client library from many
// goroutines and accounts for every decision: rewritten, unchanged, fallen
// back (and why), or lost (no valid reply), with latencies.
package load

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/smtpreply"
)

// Classes a call ends in.
const (
	Rewritten   = "rewritten"
	Unchanged   = "unchanged"
	Breaker     = "fallback:breaker-open"
	Shed        = "fallback:resource-exhausted"
	Timeout     = "fallback:timeout"
	Unavailable = "fallback:unavailable"
	PolicyError = "fallback:policy-error"
	Other       = "fallback:other"
	Lost        = "lost"
)

// Class names how a call ended. A Result whose reply is not a valid SMTP
// reply is Lost, whatever else it says.
func Class(orig client.Reply, res client.Result) string {
	if !Valid(orig, res) {
		return Lost
	}
	switch err := res.Err; {
	case err == nil && res.Rewritten:
		return Rewritten
	case err == nil:
		return Unchanged
	case errors.Is(err, client.ErrBreakerOpen):
		return Breaker
	case errors.Is(err, client.ErrPolicy):
		return PolicyError
	case errors.Is(err, client.ErrTimeout), status.Code(err) == codes.DeadlineExceeded:
		return Timeout
	case status.Code(err) == codes.ResourceExhausted:
		return Shed
	case status.Code(err) == codes.Unavailable:
		return Unavailable
	default:
		return Other
	}
}

// Valid reports whether res carries a reply a frontend can send: the
// original, or a valid SMTP reply with sanitised text.
func Valid(orig client.Reply, res client.Result) bool {
	if !res.Rewritten {
		return res.Reply == orig
	}
	clean, err := smtpreply.Sanitize(res.Text)
	return smtpreply.ValidStatus(res.Status) && err == nil && clean == res.Text
}

// Event is one call: when it started (since the run began), how long it
// took, how it ended, the policy version and the replica that decided, and
// whether the client hedged it.
type Event struct {
	At, Took time.Duration
	Class    string
	Version  string
	Replica  string
	Hedged   bool
}

// Recorder collects the events of a run; it is safe for concurrent use.
type Recorder struct {
	start  time.Time
	mu     sync.Mutex
	events []Event
}

// NewRecorder starts the run's clock.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Since is the time elapsed in the run.
func (r *Recorder) Since() time.Duration { return time.Since(r.start) }

// Add records one call.
func (r *Recorder) Add(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// Events returns the calls recorded so far, in completion order.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// Call makes one Rewrite of a DATA reply and records it.
func (r *Recorder) Call(ctx context.Context, c *client.Client, n int) client.Result {
	orig := client.Reply{Status: 250, Text: fmt.Sprintf("OK ids=%08x", n), Command: "DATA"}
	at := r.Since()
	res := c.Rewrite(ctx, orig, map[string]any{"received_from": "127.0.0.1:2525", "hostname": "mx.test"})
	r.Add(Event{At: at, Took: r.Since() - at, Class: Class(orig, res), Version: res.PolicyVersion, Replica: res.Replica, Hedged: res.Hedged})
	return res
}

// Drive calls c from workers goroutines until ctx ends, pausing pause
// between a worker's calls.
func (r *Recorder) Drive(ctx context.Context, c *client.Client, workers int, pause time.Duration) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for n := w; ctx.Err() == nil; n += workers {
				r.Call(context.Background(), c, n)
				if pause > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(pause):
					}
				}
			}
		})
	}
	wg.Wait()
}

// Summary is what a set of events adds up to.
type Summary struct {
	Calls   int64            `json:"calls"`
	Classes map[string]int64 `json:"classes"`
	// Latencies of the calls rewrited answered (rewritten or unchanged).
	AcceptedP50ms float64 `json:"accepted_p50_ms"`
	AcceptedP99ms float64 `json:"accepted_p99_ms"`
	// The 99th percentile of every call, fallbacks included: what a frontend waits.
	P99ms float64 `json:"p99_ms"`
	// Calls the client sent a second request for.
	Hedged int64 `json:"hedged"`
	// The slowest call of any class: what a frontend waited at worst.
	MaxMs float64 `json:"max_ms"`
	// Calls slower than the budget plus slack given to Summarize.
	OverBudget int64 `json:"over_budget"`
}

// Fallbacks counts the calls that kept the original because the call failed.
func (s Summary) Fallbacks() int64 {
	return s.Calls - s.Classes[Rewritten] - s.Classes[Unchanged] - s.Classes[Lost]
}

// Summarize adds up the events that started in [from, to).
func Summarize(events []Event, from, to, budget time.Duration) Summary {
	s := Summary{Classes: map[string]int64{}}
	var accepted, took []time.Duration
	var worst time.Duration
	for _, e := range events {
		if e.At < from || e.At >= to {
			continue
		}
		s.Calls++
		s.Classes[e.Class]++
		took = append(took, e.Took)
		if e.Hedged {
			s.Hedged++
		}
		worst = max(worst, e.Took)
		if e.Took > budget {
			s.OverBudget++
		}
		if e.Class == Rewritten || e.Class == Unchanged {
			accepted = append(accepted, e.Took)
		}
	}
	slices.Sort(accepted)
	slices.Sort(took)
	s.P99ms = ms(percentile(took, 0.99))
	s.AcceptedP50ms = ms(percentile(accepted, 0.50))
	s.AcceptedP99ms = ms(percentile(accepted, 0.99))
	s.MaxMs = ms(worst)
	return s
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
