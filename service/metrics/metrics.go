// Package metrics exposes rewrited's Prometheus metrics: gRPC server
// metrics, decisions, evaluation time, policy reloads and versions, and the
// Lua state pools.
package metrics

import (
	"context"
	"net/http"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/rewrited/rewrited/service/policy"
)

// Buckets of the call-time histogram, in seconds: a call spends most of
// its time in the transport, and its budget is around a hundred
// milliseconds.
var Buckets = []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3}

// EvalBuckets are those of the evaluation-time histogram: they start below
// a microsecond, since a typical evaluation takes about one, and end at
// the evaluation budget's order.
var EvalBuckets = []float64{0.5e-6, 1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3}

// PolicySource lists the policies currently served.
type PolicySource interface {
	Policies() []*policy.Policy
}

// Metrics holds rewrited's collectors in a registry of its own.
type Metrics struct {
	reg       *prometheus.Registry
	grpc      *grpcprom.ServerMetrics
	decisions *prometheus.CounterVec
	eval      *prometheus.HistogramVec
	reloads   *prometheus.CounterVec
	shadow    *prometheus.CounterVec
	// unauthenticated counts the calls refused for their token before
	// any interceptor, the gRPC metrics' included, sees them.
	unauthenticated prometheus.Counter
	// byPolicy maps a policy name to its resolved metrics, so that
	// observing a decision looks up no label values.
	byPolicy sync.Map
}

// numOutcomes bounds the Outcome values, OutcomeUnspecified included.
const numOutcomes = int(policy.OutcomeProtected) + 1

// policyMetrics are one policy's metrics, label values resolved.
type policyMetrics struct {
	decisions [numOutcomes]prometheus.Counter
	eval      prometheus.Observer
}

// New registers the metrics, with the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(Buckets))),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rewrited_decisions_total",
			Help: "Decisions made, by policy and outcome.",
		}, []string{"policy", "outcome"}),
		eval: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rewrited_eval_seconds",
			Help:    "Time to evaluate a policy for one reply.",
			Buckets: EvalBuckets,
		}, []string{"policy"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rewrited_policy_reloads_total",
			Help: "Policy compilations, by policy and result (success or failure).",
		}, []string{"policy", "result"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rewrited_shadow_comparisons_total",
			Help: "Requests of a live policy compared with its candidate (NAME.shadow.lua), by policy and result: same, different, shadow_error (the candidate failed) or skipped (shed when busy).",
		}, []string{"policy", "result"}),
		unauthenticated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rewrited_unauthenticated_total",
			Help: "Calls refused for a missing or invalid bearer token, before their request was read.",
		}),
	}
	m.reg.MustRegister(m.grpc, m.decisions, m.eval, m.reloads, m.shadow, m.unauthenticated,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Unauthenticated counts a call refused for its token.
func (m *Metrics) Unauthenticated() { m.unauthenticated.Inc() }

// Registry returns the registry the metrics are registered in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, EnableOpenMetrics: true})
}

// UnaryServerInterceptor counts and times unary calls.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return m.grpc.UnaryServerInterceptor()
}

// StreamServerInterceptor counts and times streaming calls.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return m.grpc.StreamServerInterceptor()
}

// InitializeMetrics creates the gRPC metrics of every method of s at zero,
// so that they are scraped before the first call.
func (m *Metrics) InitializeMetrics(s *grpc.Server) { m.grpc.InitializeMetrics(s) }

// CollectPolicies reports, at each scrape, rewrited_policy_info and the
// state-pool figures of the policies src serves. Reading them at scrape time
// costs requests nothing, and a replaced or removed policy drops out.
func (m *Metrics) CollectPolicies(src PolicySource) {
	m.reg.MustRegister(poolCollector{src})
}

// PolicyLoaded counts a policy compilation; it matches registry.Config.OnLoad.
// A loaded policy's decision counters are created at zero, so that they
// exist before its first decision.
func (m *Metrics) PolicyLoaded(name string, err error) {
	result := "success"
	if err != nil {
		result = "failure"
	} else {
		m.forPolicy(name)
	}
	m.reloads.WithLabelValues(name, result).Inc()
}

// ShadowCompared counts one comparison of a live policy's reply with its
// candidate's; it matches shadow.Config.OnCompare.
func (m *Metrics) ShadowCompared(name, result string) {
	m.shadow.WithLabelValues(name, result).Inc()
}

// Observe implements rewrite.Observer.
func (m *Metrics) Observe(_ context.Context, p *policy.Policy, _ policy.Input, d policy.Decision, elapsed time.Duration) {
	pm := m.forPolicy(p.Name())
	if o := int(d.Outcome); o >= 0 && o < len(pm.decisions) && pm.decisions[o] != nil {
		pm.decisions[o].Inc()
	}
	pm.eval.Observe(elapsed.Seconds())
}

func (m *Metrics) forPolicy(name string) *policyMetrics {
	if pm, ok := m.byPolicy.Load(name); ok {
		return pm.(*policyMetrics)
	}
	pm := &policyMetrics{eval: m.eval.WithLabelValues(name)}
	for o := range pm.decisions {
		if o != int(policy.OutcomeUnspecified) {
			pm.decisions[o] = m.decisions.WithLabelValues(name, policy.Outcome(o).String())
		}
	}
	actual, _ := m.byPolicy.LoadOrStore(name, pm)
	return actual.(*policyMetrics)
}
