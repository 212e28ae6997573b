// Package rewrite implements the rewrite.v1.RewriteService gRPC service on
// top of compiled policies.
package rewrite

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	wirev1 "github.com/rewrited/rewrited/proto/rewrite/wire/v1"
	"github.com/rewrited/rewrited/service/policy"
)

// DefaultPolicy is the name an empty policy field selects.
const DefaultPolicy = policy.DefaultName

// Resolver finds the policy a request names.
type Resolver interface {
	// Policy returns the policy called name, or false when none is served.
	Policy(name string) (*policy.Policy, bool)
	// Names lists the policies served, for error messages.
	Names() []string
}

// Observer is told of every decision, for metrics and decision logs.
type Observer interface {
	Observe(ctx context.Context, p *policy.Policy, in policy.Input, d policy.Decision, elapsed time.Duration)
}

// Static serves a fixed set of policies.
type Static map[string]*policy.Policy

// Policy implements Resolver.
func (s Static) Policy(name string) (*policy.Policy, bool) {
	p, ok := s[name]
	return p, ok
}

// Names implements Resolver.
func (s Static) Names() []string {
	names := make([]string, 0, len(s))
	for name := range s {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Service is the RewriteService implementation.
type Service struct {
	rewritev1.UnimplementedRewriteServiceServer
	resolver Resolver
	limits   Limits
	observer Observer
	logger   *slog.Logger
}

// Option configures a Service.
type Option func(*Service)

// WithObserver sets the decision observer.
func WithObserver(o Observer) Option { return func(s *Service) { s.observer = o } }

// WithLogger sets the logger for decisions the client cannot see, such as
// meta updates that could not be returned.
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.logger = l } }

// New returns a Service resolving policies with r.
func New(r Resolver, opts ...Option) *Service {
	s := &Service{resolver: r, limits: Limits{}.withDefaults(), logger: slog.Default()}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// RewriteResponse implements rewritev1.RewriteServiceServer. The gRPC
// server calls Rewrite instead, through ServiceDesc, with conn_meta left
// encoded; this method serves in-process callers such as `rewrited eval`.
func (s *Service) RewriteResponse(ctx context.Context, req *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
	meta, err := policy.MetaFromStruct(req.GetConnMeta())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "conn_meta: %v", err)
	}
	return s.Rewrite(ctx, &wirev1.LazyRewriteRequest{
		Status:   req.GetStatus(),
		Response: req.GetResponse(),
		Command:  req.Command,
		ConnMeta: meta,
		Policy:   req.GetPolicy(),
	})
}

// Rewrite decides one reply. What deciding means depends on the build:
// the server as shipped checks the request and evaluates its policy
// (decide.go); the benchfloor build answers without doing either
// (decide_floor.go), the floor `go run ./bench -mode floor` measures against.
func (s *Service) Rewrite(ctx context.Context, req *wirev1.LazyRewriteRequest) (*rewritev1.RewriteResponseResponse, error) {
	return s.decide(ctx, req)
}

// outcomes maps the engine's outcomes to the API's: the one place the
// engine meets the wire types.
var outcomes = map[policy.Outcome]rewritev1.Outcome{
	policy.OutcomeUnspecified:   rewritev1.Outcome_OUTCOME_UNSPECIFIED,
	policy.OutcomeUnchanged:     rewritev1.Outcome_OUTCOME_UNCHANGED,
	policy.OutcomeRewritten:     rewritev1.Outcome_OUTCOME_REWRITTEN,
	policy.OutcomePolicyError:   rewritev1.Outcome_OUTCOME_POLICY_ERROR,
	policy.OutcomeTimeout:       rewritev1.Outcome_OUTCOME_TIMEOUT,
	policy.OutcomeInvalidResult: rewritev1.Outcome_OUTCOME_INVALID_RESULT,
	policy.OutcomeShadowed:      rewritev1.Outcome_OUTCOME_SHADOWED,
	policy.OutcomeProtected:     rewritev1.Outcome_OUTCOME_PROTECTED,
}

// EngineOutcome is the engine's outcome an API outcome stands for.
func EngineOutcome(o rewritev1.Outcome) policy.Outcome {
	for engine, api := range outcomes {
		if api == o {
			return engine
		}
	}
	return policy.OutcomeUnspecified
}
