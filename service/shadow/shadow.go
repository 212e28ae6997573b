// Package shadow evaluates a live policy's candidate (NAME.shadow.lua beside
// NAME.lua) on the live policy's requests, in the background, and compares
// the two replies.
package shadow

import (
	"bytes"
	"context"
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/rewrited/rewrited/service/decisionlog"
	"github.com/rewrited/rewrited/service/policy"
)

// Comparison results, the values of the result label.
const (
	Same      = "same"
	Different = "different"
	Error     = "shadow_error"
	Skipped   = "skipped"
)

// Candidates finds the candidate of a live policy.
type Candidates interface {
	Candidate(name string) (*policy.Policy, bool)
}

// Config configures a Shadow.
type Config struct {
	Candidates Candidates
	// Sample is the fraction of a live policy's requests its candidate is
	// evaluated on (0 = none, 1 = all).
	Sample float64
	// LogSample is the fraction of differing comparisons logged.
	LogSample float64
	// Workers evaluate candidates (default: half the Ps, at least one), so
	// candidates never take more than that share of the CPU.
	Workers int
	// Queue is how many requests may wait for a worker (default 64 per
	// worker); past it a request is skipped, never waited for.
	Queue int
	// OnCompare is told of every comparison's result, for metrics.
	OnCompare func(policy, result string)
	Logger    *slog.Logger
}

// Shadow is a rewrite.Observer that hands each sampled decision of a
// policy with a candidate to a bounded pool of workers, which evaluate the
// candidate on the same input and compare. The request waits for none of it.
type Shadow struct {
	cfg  Config
	jobs chan job
	stop chan struct{}
	wg   sync.WaitGroup
}

// job is one comparison: the live decision and a copy of its input that
// outlives the request.
type job struct {
	candidate   *policy.Policy
	liveVersion string
	in          policy.Input
	live        policy.Decision
}

// New starts the workers; Close stops them.
func New(cfg Config) *Shadow {
	if cfg.Workers <= 0 {
		cfg.Workers = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 64 * cfg.Workers
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnCompare == nil {
		cfg.OnCompare = func(string, string) {}
	}
	s := &Shadow{cfg: cfg, jobs: make(chan job, cfg.Queue), stop: make(chan struct{})}
	for range cfg.Workers {
		s.wg.Go(s.work)
	}
	return s
}

// Close stops the workers once their current comparisons end; comparisons
// still queued are dropped.
func (s *Shadow) Close() {
	close(s.stop)
	s.wg.Wait()
}

// Observe implements rewrite.Observer: it queues a comparison when the
// policy has a candidate and the request is sampled, and counts it skipped
// when the queue is full.
func (s *Shadow) Observe(_ context.Context, live *policy.Policy, in policy.Input, d policy.Decision, _ time.Duration) {
	candidate, ok := s.cfg.Candidates.Candidate(live.Name())
	if !ok || !decisionlog.Sampled(s.cfg.Sample) {
		return
	}
	// The request's strings and conn_meta may share the received message,
	// which the server reuses once the call returns.
	j := job{candidate: candidate, liveVersion: live.Version(), in: clone(in), live: cloneDecision(d)}
	select {
	case s.jobs <- j:
	default:
		s.cfg.OnCompare(live.Name(), Skipped)
	}
}

func (s *Shadow) work() {
	for {
		select {
		case <-s.stop:
			return
		case j := <-s.jobs:
			s.compare(j)
		}
	}
}

// compare evaluates the candidate with its own budget: the request's
// context is done by now.
func (s *Shadow) compare(j job) {
	cand := j.candidate.Evaluate(context.Background(), j.in)
	result := Compare(j.live, cand)
	s.cfg.OnCompare(j.candidate.Name(), result)
	if result == Same || !decisionlog.Sampled(s.cfg.LogSample) {
		return
	}
	liveReply, candReply := Answer(j.live), Answer(cand)
	attrs := []slog.Attr{
		slog.String("policy", j.candidate.Name()),
		slog.String("result", result),
		slog.String("version", j.liveVersion),
		slog.String("shadow_version", j.candidate.Version()),
		slog.Int("status", j.in.Status),
		slog.String("response", decisionlog.Text(j.in.Response)),
	}
	if j.in.Command != nil {
		attrs = append(attrs, slog.String("command", decisionlog.Command(*j.in.Command)))
	}
	attrs = append(attrs,
		slog.String("live_outcome", j.live.Outcome.String()),
		slog.Int("live_status", liveReply.Status),
		slog.String("live_response", decisionlog.Text(liveReply.Response)),
		slog.String("shadow_outcome", cand.Outcome.String()),
		slog.Int("shadow_status", candReply.Status),
		slog.String("shadow_response", decisionlog.Text(candReply.Response)))
	if cand.Err != nil {
		attrs = append(attrs, slog.String("shadow_error", cand.Err.Error()))
	}
	s.cfg.Logger.LogAttrs(context.Background(), slog.LevelInfo, "shadow: candidate differs", attrs...)
}

// Compare classifies a candidate's decision against the live one's:
// shadow_error when the candidate failed where the live policy did not fail
// the same way, different when they answer differently or store different
// meta updates, else same.
func Compare(live, candidate policy.Decision) string {
	if Failed(candidate.Outcome) && candidate.Outcome != live.Outcome {
		return Error
	}
	if Answer(live) != Answer(candidate) || !sameUpdates(live.MetaUpdates, candidate.MetaUpdates) {
		return Different
	}
	return Same
}

// Failed reports whether an outcome is a failed evaluation.
func Failed(o policy.Outcome) bool {
	switch o {
	case policy.OutcomePolicyError, policy.OutcomeTimeout, policy.OutcomeInvalidResult:
		return true
	}
	return false
}

// Answer is the reply a decision stands for: the rewrite shadow mode
// proposed, else the reply sent.
func Answer(d policy.Decision) policy.Reply {
	if d.Outcome == policy.OutcomeShadowed && d.Proposed != nil {
		return *d.Proposed
	}
	return d.Reply
}

// cloneDecision copies the strings of d, which may be the request's text
// handed back by the policy.
func cloneDecision(d policy.Decision) policy.Decision {
	d.Response = strings.Clone(d.Response)
	if d.Proposed != nil {
		proposed := policy.Reply{Status: d.Proposed.Status, Response: strings.Clone(d.Proposed.Response)}
		d.Proposed = &proposed
	}
	if d.MetaUpdates != nil {
		d.MetaUpdates = cloneValue(d.MetaUpdates).(map[string]any)
	}
	return d
}

// cloneValue deep-copies a JSON-like value as set_meta stores it.
func cloneValue(v any) any {
	switch x := v.(type) {
	case string:
		return strings.Clone(x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[strings.Clone(k)] = cloneValue(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneValue(e)
		}
		return out
	default:
		return v
	}
}

func sameUpdates(a, b map[string]any) bool {
	return (len(a) == 0 && len(b) == 0) || reflect.DeepEqual(a, b)
}

// clone copies what of in points into the request.
func clone(in policy.Input) policy.Input {
	in.Response = strings.Clone(in.Response)
	if in.Command != nil {
		cmd := strings.Clone(*in.Command)
		in.Command = &cmd
	}
	in.Meta = bytes.Clone(in.Meta)
	return in
}
