// Package rewrite implements the rewrite.v1.RewriteService gRPC service on
// top of compiled policies.
package rewrite

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

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

// Rewrite decides one reply.
func (s *Service) Rewrite(ctx context.Context, req *wirev1.LazyRewriteRequest) (*rewritev1.RewriteResponseResponse, error) {
	in, err := s.limits.input(req)
	if err != nil {
		return nil, err
	}
	name := req.GetPolicy()
	if name == "" {
		name = DefaultPolicy
	}
	p, ok := s.resolver.Policy(name)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "policy %q is not served (served: %s)", name, strings.Join(s.resolver.Names(), ", "))
	}
	var d policy.Decision
	start := time.Now()
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		d = evaluateTraced(ctx, span, p, in)
	} else {
		d = p.Evaluate(ctx, in)
	}
	if s.observer != nil {
		s.observer.Observe(ctx, p, in, d, time.Since(start))
	}
	return s.response(p, &d), nil
}

// tracerName names the spans of this package.
const tracerName = "github.com/rewrited/rewrited/service/rewrite"

// evaluateTraced evaluates in a child span of the call's span and records
// the decision on both: policy name and version, outcome, evaluation time.
func evaluateTraced(ctx context.Context, call trace.Span, p *policy.Policy, in policy.Input) policy.Decision {
	ctx, span := call.TracerProvider().Tracer(tracerName).Start(ctx, "rewrited.policy.evaluate")
	start := time.Now()
	d := p.Evaluate(ctx, in)
	attrs := []attribute.KeyValue{
		attribute.String("rewrited.policy.name", p.Name()),
		attribute.String("rewrited.policy.version", p.Version()),
		attribute.String("rewrited.outcome", d.Outcome.String()),
		attribute.Float64("rewrited.evaluation.seconds", time.Since(start).Seconds()),
	}
	span.SetAttributes(attrs...)
	if d.Err != nil {
		span.SetStatus(otelcodes.Error, d.Err.Error())
	}
	span.End()
	call.SetAttributes(attrs...)
	return d
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

func (s *Service) response(p *policy.Policy, d *policy.Decision) *rewritev1.RewriteResponseResponse {
	resp := &rewritev1.RewriteResponseResponse{
		Status:          uint32(d.Status),
		Response:        d.Response,
		Rewritten:       d.Rewritten,
		CloseConnection: d.CloseConnection,
		PolicyVersion:   p.Version(),
		Outcome:         outcomes[d.Outcome],
	}
	if d.Err != nil {
		resp.Error = d.Err.Error()
	}
	if len(d.MetaUpdates) > 0 {
		updates, err := structpb.NewStruct(d.MetaUpdates)
		if err != nil {
			// Values come from the policy's set_meta, which only accepts
			// JSON-serialisable values; should one still not convert, the
			// reply matters more than the metadata.
			s.logger.Warn("meta updates dropped", "policy", p.Name(), "error", err)
		} else {
			resp.MetaUpdates = updates
		}
	}
	return resp
}
