//go:build !benchfloor

// The decision as shipped; decide_floor.go replaces this file in the
// benchfloor build, the floor of `go run ./bench -mode floor`.

package rewrite

import (
	"context"
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
	"github.com/rewrited/rewrited/smtpreply"
)

// decide checks the request, finds its policy, evaluates it and answers.
func (s *Service) decide(ctx context.Context, req *wirev1.LazyRewriteRequest) (*rewritev1.RewriteResponseResponse, error) {
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

// input checks a request and converts it for the engine. Every error is
// InvalidArgument and names the field.
func (l Limits) input(req *wirev1.LazyRewriteRequest) (policy.Input, error) {
	code := int(req.GetStatus())
	if err := smtpreply.CheckStatus(code); err != nil {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "status: %v", err)
	}
	text := req.GetResponse()
	if len(text) > l.MaxResponseBytes {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "response: %d bytes, the limit is %d", len(text), l.MaxResponseBytes)
	}
	if text != "" {
		clean, err := smtpreply.Sanitize(text)
		if err != nil {
			return policy.Input{}, status.Errorf(codes.InvalidArgument, "response: %v", err)
		}
		text = clean
	}
	if len(req.GetCommand()) > l.MaxCommandBytes {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "command: %d bytes, the limit is %d", len(req.GetCommand()), l.MaxCommandBytes)
	}
	if name := req.GetPolicy(); name != "" && !policy.ValidName(name) {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "policy: %q is not a policy name (letters, digits, '_', '-', '.'; at most %d bytes)", policy.BoundText(name, policy.MaxEchoBytes), policy.MaxNameBytes)
	}
	return policy.Input{Status: code, Response: text, Command: req.Command, Meta: req.GetConnMeta()}, nil
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
