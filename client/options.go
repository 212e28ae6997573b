package client

import (
	"context"
	"crypto/tls"
	"time"

	"google.golang.org/grpc"
)

// Defaults used by New.
const (
	DefaultTimeout          = 100 * time.Millisecond
	DefaultBreakerThreshold = 5
	DefaultBreakerOpenFor   = time.Second

	// Hedging: at most a tenth of the calls send a second request over
	// time, never earlier than 5ms into the call.
	DefaultHedgeBudget = 0.1
	DefaultHedgeFloor  = 5 * time.Millisecond

	// Outlier ejection: 5 failures in a row, over at least half the budget,
	// eject a replica for 1s (doubled after each failed probe, up to 4s), and
	// at most half of the ready replicas (one of two or three) are ejected
	// at once.
	DefaultEjectAfter    = 5
	DefaultEjectFor      = time.Second
	DefaultEjectMaxShare = 0.5

	// Client keepalive: ping after 10s without reads while calls are in
	// flight and give up 2s later, so a replica that stops answering without
	// closing its connections (paused, partitioned) leaves round_robin's
	// rotation within about 12s. rewrited accepts pings every 5s or more
	// (keepalive.EnforcementPolicy{MinTime: 5s}).
	keepaliveTime    = 10 * time.Second
	keepaliveTimeout = 2 * time.Second

	// breakerWindow is how often the breaker forgets what it counted while
	// closed: it opens on failures that dominate the last window, not on a
	// burst from one replica out of several.
	breakerWindow = time.Second

	// Spread calls over every resolved address (grpc's default, pick_first,
	// would send everything to one replica), steering hedges and skipping
	// ejected replicas.
	defaultServiceConfig = `{"loadBalancingConfig":[{"` + balancerName + `":{}}]}`
)

// Option configures a Client.
type Option func(*config)

type config struct {
	timeout          time.Duration
	policy           string
	tls              *tls.Config
	useTLS           bool
	token            string
	insecureBearer   bool
	breakerThreshold int
	breakerOpenFor   time.Duration
	observer         func(Result, time.Duration)
	fleetObserver    func(FleetEvent)
	dialOptions      []grpc.DialOption
	hedgeDelay       time.Duration
	hedgeFloor       time.Duration
	hedgeBudget      float64
	ejectAfter       int
	ejectFor         time.Duration
	ejectMaxShare    float64
}

// WithTimeout sets the whole budget of one Rewrite call, connection setup
// included (default 100ms). A caller context with an earlier deadline
// shortens it.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithPolicy selects the policy rewrited evaluates (the request's policy
// field); empty selects rewrited's default policy. An unknown name makes
// every call fail with codes.NotFound, which does not trip the breaker.
func WithPolicy(name string) Option { return func(c *config) { c.policy = name } }

// WithTLS connects with TLS; set Certificates in cfg for mutual TLS, RootCAs
// for a private CA. A nil cfg uses the system roots. Without it the client
// speaks plaintext HTTP/2, fine for loopback or a trusted network.
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		c.tls, c.useTLS = cfg, true
	}
}

// WithBearerToken sends "authorization: Bearer <token>" with every call.
// New refuses it over plaintext, where the token would travel in clear,
// unless WithInsecureBearer is given too.
func WithBearerToken(token string) Option { return func(c *config) { c.token = token } }

// WithInsecureBearer allows WithBearerToken without WithTLS, for a loopback
// or otherwise trusted link.
func WithInsecureBearer() Option { return func(c *config) { c.insecureBearer = true } }

// WithBreaker sets the circuit breaker: it opens after threshold consecutive
// failures (unavailable, timeout, resource exhausted, transport errors; not
// invalid argument or not found, which are caller or configuration errors,
// nor calls the caller cancels), then returns the original reply at once
// with ErrBreakerOpen, without any network I/O, for openFor; then one probe
// call goes through and closes it again if it succeeds. A threshold of 0
// disables the breaker. Default: 5 failures, 1s.
func WithBreaker(threshold int, openFor time.Duration) Option {
	return func(c *config) { c.breakerThreshold, c.breakerOpenFor = threshold, openFor }
}

// WithObserver calls fn after every Rewrite with its Result and duration,
// for metrics and logs without the client importing a metrics library. fn
// runs on the caller's goroutine and counts against its time; a panic in it
// is recovered.
func WithObserver(fn func(Result, time.Duration)) Option {
	return func(c *config) { c.observer = fn }
}

// WithFleetObserver calls fn when a replica is ejected and when it returns
// (see FleetEvent), for metrics and logs. fn runs on the goroutine of the
// call that caused the event and must not block; a panic in it is
// recovered.
func WithFleetObserver(fn func(FleetEvent)) Option {
	return func(c *config) { c.fleetObserver = fn }
}

// WithHedgeBudget sets the share of calls that may send a second request
// to another replica (default 0.1: one hedge per ten calls over time, plus
// a burst of 20); 0 disables hedging.
func WithHedgeBudget(share float64) Option { return func(c *config) { c.hedgeBudget = share } }

// WithHedgeDelay makes a call hedge after d without an answer, instead of
// after the adaptive delay (the 98th percentile of recent answers' latency,
// at least 5ms, at most half the budget).
func WithHedgeDelay(d time.Duration) Option { return func(c *config) { c.hedgeDelay = d } }

// WithEjection sets outlier ejection: a replica whose calls fail after
// times in a row (timeouts, Unavailable, or outrun by a hedge), the first
// and the last at least half the budget apart, gets no calls for d, then
// one probe call; a failed probe ejects it again for twice as long (up to
// 4 d). At most maxShare of the ready replicas are ejected at
// once (always one of two or more). after 0 disables ejection. Default: 5,
// 1s, 0.5.
func WithEjection(after int, d time.Duration, maxShare float64) Option {
	return func(c *config) { c.ejectAfter, c.ejectFor, c.ejectMaxShare = after, d, maxShare }
}

// WithDialOptions appends grpc.DialOptions after the client's own, so they
// can override them (keepalive, service config, interceptors, ...).
// Do not add grpc.WaitForReady(true): it defeats the fast fail.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOptions = append(c.dialOptions, opts...) }
}

// bearer implements credentials.PerRPCCredentials.
type bearer struct {
	value  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": b.value}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }
