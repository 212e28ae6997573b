package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/smtpreply"
)

// Client asks rewrited how to rewrite SMTP replies. It is safe for
// concurrent use; share one per process.
type Client struct {
	conn     *grpc.ClientConn
	rpc      rewritev1.RewriteServiceClient
	budget   time.Duration
	policy   string
	breaker  *gobreaker.TwoStepCircuitBreaker[struct{}]
	observer func(Result, time.Duration)
	fleet    *fleet
	hedger   *hedger // nil: no hedging
	closed   atomic.Bool
}

// listScheme names the per-client manual resolver used for a comma list.
const listScheme = "rewrited-list"

// New returns a Client for target without connecting: the connection is
// made by the first Rewrite, within its budget, so starting a frontend never
// waits on rewrited. target is any gRPC target ("host:port",
// "dns:///rewrited.internal:7070", ...) or a comma-separated list of
// host:port addresses; calls are spread over every address in turn, with
// hedging and outlier ejection (see the package doc).
func New(target string, opts ...Option) (*Client, error) {
	cfg := config{
		timeout:          DefaultTimeout,
		breakerThreshold: DefaultBreakerThreshold,
		breakerOpenFor:   DefaultBreakerOpenFor,
		hedgeBudget:      DefaultHedgeBudget,
		hedgeFloor:       DefaultHedgeFloor,
		ejectAfter:       DefaultEjectAfter,
		ejectFor:         DefaultEjectFor,
		ejectMaxShare:    DefaultEjectMaxShare,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.timeout <= 0 {
		return nil, fmt.Errorf("client: timeout must be positive, got %v", cfg.timeout)
	}
	if cfg.breakerThreshold < 0 || (cfg.breakerThreshold > 0 && cfg.breakerOpenFor <= 0) {
		return nil, fmt.Errorf("client: invalid breaker settings: threshold %d, open for %v", cfg.breakerThreshold, cfg.breakerOpenFor)
	}
	if cfg.hedgeDelay < 0 || cfg.hedgeBudget < 0 || cfg.hedgeBudget > 1 {
		return nil, fmt.Errorf("client: invalid hedging settings: delay %v, budget %v (want a delay >= 0 and a budget in [0, 1])", cfg.hedgeDelay, cfg.hedgeBudget)
	}
	if cfg.ejectAfter < 0 || (cfg.ejectAfter > 0 && (cfg.ejectFor <= 0 || cfg.ejectMaxShare <= 0 || cfg.ejectMaxShare > 1)) {
		return nil, fmt.Errorf("client: invalid ejection settings: after %d failures, for %v, at most %v of the fleet", cfg.ejectAfter, cfg.ejectFor, cfg.ejectMaxShare)
	}

	dial := []grpc.DialOption{
		grpc.WithDefaultServiceConfig(defaultServiceConfig),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                keepaliveTime,
			Timeout:             keepaliveTimeout,
			PermitWithoutStream: false,
		}),
	}
	if cfg.useTLS {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(cfg.tls)))
	} else {
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if cfg.token != "" {
		if !cfg.useTLS && !cfg.insecureBearer {
			return nil, errors.New("client: refusing to send a bearer token over plaintext: add WithTLS, or WithInsecureBearer for a trusted link")
		}
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{value: "Bearer " + cfg.token, secure: cfg.useTLS}))
	}
	if strings.Contains(target, ",") {
		r, err := listResolver(target)
		if err != nil {
			return nil, err
		}
		dial = append(dial, grpc.WithResolvers(r))
		target = listScheme + ":///list"
	}
	dial = append(dial, cfg.dialOptions...)

	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c := &Client{
		conn:     conn,
		rpc:      rewritev1.NewRewriteServiceClient(conn),
		budget:   cfg.timeout,
		policy:   cfg.policy,
		observer: cfg.observer,
		fleet:    newFleet(cfg.ejectAfter, cfg.timeout/2, cfg.ejectFor, cfg.ejectMaxShare, cfg.fleetObserver),
	}
	if cfg.hedgeBudget > 0 {
		c.hedger = newHedger(cfg.hedgeDelay, cfg.hedgeFloor, cfg.timeout, cfg.hedgeBudget)
	}
	if cfg.breakerThreshold > 0 {
		threshold := uint32(cfg.breakerThreshold)
		c.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        "rewrited",
			MaxRequests: 1,
			Interval:    breakerWindow,
			Timeout:     cfg.breakerOpenFor,
			ReadyToTrip: func(n gobreaker.Counts) bool { return fleetFailing(n, threshold) },
			IsExcluded:  func(err error) bool { return errors.Is(err, errNotCounted) },
		})
	}
	return c, nil
}

// fleetFailing reports whether the fleet as a whole is failing: threshold
// failures in a row, and nine in ten calls of the window failed. The calls in
// flight on one replica that dies fail in a row too, but among the successes
// of the others, which keep the breaker closed.
func fleetFailing(n gobreaker.Counts, threshold uint32) bool {
	return n.ConsecutiveFailures >= threshold && uint64(n.TotalFailures)*10 >= uint64(n.Requests)*9
}

// listResolver serves a fixed address list; a fresh builder per Client
// because a manual resolver may back only one ClientConn.
func listResolver(list string) (*manual.Resolver, error) {
	var eps []resolver.Endpoint
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("client: empty address in target list %q", list)
		}
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	r := manual.NewBuilderWithScheme(listScheme)
	r.InitialState(resolver.State{Endpoints: eps})
	return r, nil
}

// Close releases the connections. Rewrite calls after Close return the
// original reply with ErrClosed.
func (c *Client) Close() error {
	if c == nil || !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("client: close: %w", err)
	}
	return nil
}

// Rewrite asks rewrited what reply to send instead of r; meta is the
// connection's conn_meta (see ConnMeta), with values of the types
// structpb.NewValue accepts, plus []string. It never fails: on any error it
// returns r unchanged with Result.Err set, within the budget set by
// WithTimeout or the ctx deadline, whichever comes first.
func (c *Client) Rewrite(ctx context.Context, r Reply, meta map[string]any) (res Result) {
	if c == nil {
		return keep(r, ErrClosed)
	}
	if c.observer != nil {
		start := time.Now()
		defer func() { c.observe(res, time.Since(start)) }()
	}
	defer func() {
		if p := recover(); p != nil {
			res = keep(r, fmt.Errorf("%w: %v", ErrPanic, p))
		}
	}()
	return c.rewrite(ctx, r, meta)
}

// RewriteConn is Rewrite with the metadata of cm, merging the policy's
// MetaUpdates back into cm.
func (c *Client) RewriteConn(ctx context.Context, r Reply, cm *ConnMeta) Result {
	res := c.Rewrite(ctx, r, cm.Map())
	cm.Merge(res.MetaUpdates)
	return res
}

func (c *Client) observe(res Result, d time.Duration) {
	defer func() { _ = recover() }() // a broken metrics hook must not break the mail flow
	c.observer(res, d)
}

// errNotCounted marks an outcome that says nothing about the fleet's health
// (the caller gave up, the request could not be built): the breaker ignores it.
var errNotCounted = errors.New("not counted")

func (c *Client) rewrite(ctx context.Context, r Reply, meta map[string]any) Result {
	if c.closed.Load() {
		return keep(r, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return keep(r, fmt.Errorf("%w: %w", ErrCallerDone, err))
	}
	if err := smtpreply.CheckStatus(r.Status); err != nil {
		return keep(r, fmt.Errorf("%w: %w", ErrInvalidRequest, err))
	}
	if r.Text != "" {
		// rewrited refuses such text with InvalidArgument; spare the round trip.
		if _, err := smtpreply.Sanitize(r.Text); err != nil {
			return keep(r, fmt.Errorf("%w: %w", ErrInvalidRequest, err))
		}
	}
	if c.breaker == nil {
		res, _ := c.call(ctx, r, meta)
		return res
	}
	done, err := c.breaker.Allow()
	if err != nil {
		return keep(r, ErrBreakerOpen) // a static error: the open path must not allocate
	}
	verdict := errNotCounted
	defer func() { done(verdict) }() // always report, or a half-open breaker would wait forever
	var res Result
	res, verdict = c.call(ctx, r, meta)
	return res
}

// call makes the RPC. Its second result is what the breaker records: nil
// when rewrited answered, the error when the fleet failed, errNotCounted
// when the outcome says nothing about the fleet.
func (c *Client) call(ctx context.Context, r Reply, meta map[string]any) (Result, error) {
	cctx, cancel := context.WithTimeout(ctx, c.budget)
	defer cancel()

	req := &rewritev1.RewriteResponseRequest{
		Status:   uint32(r.Status),
		Response: r.Text,
		Policy:   c.policy,
	}
	if r.Command != "" {
		// The command is the client's raw line and may hold any bytes; the
		// request's string fields must be UTF-8.
		req.Command = proto.String(strings.ToValidUTF8(r.Command, "\uFFFD"))
	}
	if len(meta) > 0 {
		s, err := metaStruct(meta)
		if err != nil {
			return keep(r, fmt.Errorf("%w: conn_meta: %w", ErrInvalidRequest, err)), errNotCounted
		}
		req.ConnMeta = s
	}

	start := time.Now()
	ex := c.exchange(cctx, req)
	res, verdict := c.result(ctx, r, ex, start)
	res.Hedged = ex.hedged
	return res, verdict
}

// result turns an exchange into the call's Result and what the breaker records.
func (c *Client) result(ctx context.Context, r Reply, ex exchange, start time.Time) (Result, error) {
	err := ex.err
	if err == nil {
		res := answer(r, ex.resp)
		res.Replica = ex.replica
		return res, nil
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		// The caller gave up; a deadline, the caller's or ours, still counts as a timeout
		// so that frontends passing short deadlines can trip the breaker.
		return keep(r, fmt.Errorf("%w: %w: %w", ErrCallerDone, context.Canceled, err)), errNotCounted
	}
	switch {
	case status.Code(err) == codes.DeadlineExceeded:
		return keep(r, fmt.Errorf("%w after %v: %w", ErrTimeout, time.Since(start).Round(time.Millisecond), err)), err
	case isAnswer(err):
		// rewrited answered: a caller or configuration error, not an outage.
		return keep(r, fmt.Errorf("%w: %w", ErrRPC, err)), nil
	default:
		// Unavailable, ResourceExhausted, Internal, Unknown, Aborted,
		// DataLoss and transport errors: the fleet is in trouble.
		return keep(r, fmt.Errorf("%w: %w", ErrRPC, err)), err
	}
}

// answer turns rewrited's response into a Result, keeping r unless the
// response is a valid SMTP reply.
func answer(r Reply, resp *rewritev1.RewriteResponseResponse) Result {
	st, text := int(resp.GetStatus()), resp.GetResponse()
	unchanged := st == r.Status && (text == r.Text || sameText(text, r.Text))
	if !unchanged {
		if err := smtpreply.CheckStatus(st); err != nil {
			return keep(r, fmt.Errorf("%w: %w", ErrInvalidAnswer, err))
		}
		var err error
		if text, err = smtpreply.Sanitize(text); err != nil {
			return keep(r, fmt.Errorf("%w: %w", ErrInvalidAnswer, err))
		}
	}
	res := keep(r, nil)
	res.PolicyVersion = resp.GetPolicyVersion()
	if mu := resp.GetMetaUpdates(); len(mu.GetFields()) > 0 {
		res.MetaUpdates = mu.AsMap()
	}
	switch o := resp.GetOutcome(); o {
	case rewritev1.Outcome_OUTCOME_POLICY_ERROR, rewritev1.Outcome_OUTCOME_TIMEOUT, rewritev1.Outcome_OUTCOME_INVALID_RESULT:
		// rewrited keeps the original on these; keep it here too whatever came back.
		res.Err = fmt.Errorf("%w: %s: %s", ErrPolicy, o, resp.GetError())
		return res
	}
	if unchanged {
		return res
	}
	res.Reply = Reply{Status: st, Text: text, Command: r.Command}
	res.Rewritten = true
	res.CloseConnection = res.Status == 421
	return res
}

// metaStruct converts conn_meta as structpb.NewStruct does, also accepting
// []string, the natural Go type of KumoMTA's tls_peer_subject_name.
func metaStruct(meta map[string]any) (*structpb.Struct, error) {
	fields := make(map[string]*structpb.Value, len(meta))
	for k, v := range meta {
		if !utf8.ValidString(k) {
			return nil, fmt.Errorf("key %q is not valid UTF-8", k)
		}
		if ss, ok := v.([]string); ok {
			list := make([]any, len(ss))
			for i, s := range ss {
				list[i] = s
			}
			v = list
		}
		val, err := structpb.NewValue(v)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		fields[k] = val
	}
	return &structpb.Struct{Fields: fields}, nil
}

// sameText reports whether orig, normalised as rewrited normalises text,
// equals text: a "\r\n" or trailing newline in the original is no rewrite.
func sameText(text, orig string) bool {
	clean, err := smtpreply.Sanitize(orig)
	return err == nil && clean == text
}
