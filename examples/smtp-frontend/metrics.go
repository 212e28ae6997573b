package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rewrited/rewrited/client"
)

// frontendMetrics exports what the rewrite client reports: calls by result,
// their duration, hedges, and replicas ejected and returned.
type frontendMetrics struct {
	calls    *prometheus.CounterVec
	duration prometheus.Histogram
	hedged   prometheus.Counter
	fleet    *prometheus.CounterVec
}

func newFrontendMetrics(reg prometheus.Registerer) *frontendMetrics {
	m := &frontendMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smtp_frontend_rewrite_calls_total",
			Help: "Rewrite calls by result: rewritten, unchanged, or fallback (the original reply kept because the call failed).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "smtp_frontend_rewrite_duration_seconds",
			Help:    "Time a reply waited for rewrited, fallbacks included.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2},
		}),
		hedged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smtp_frontend_rewrite_hedged_total",
			Help: "Rewrite calls that sent a second request to another replica.",
		}),
		fleet: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smtp_frontend_replica_events_total",
			Help: "Replicas ejected (their calls kept failing) and returned (a probe was answered), by replica address.",
		}, []string{"event", "replica"}),
	}
	reg.MustRegister(m.calls, m.duration, m.hedged, m.fleet)
	return m
}

// observe is the client's WithObserver hook.
func (m *frontendMetrics) observe(res client.Result, d time.Duration) {
	result := "unchanged"
	switch {
	case res.Err != nil:
		result = "fallback"
	case res.Rewritten:
		result = "rewritten"
	}
	m.calls.WithLabelValues(result).Inc()
	m.duration.Observe(d.Seconds())
	if res.Hedged {
		m.hedged.Inc()
	}
}

// fleetEvent is the client's WithFleetObserver hook.
func (m *frontendMetrics) fleetEvent(ev client.FleetEvent) {
	m.fleet.WithLabelValues(ev.Kind.String(), ev.Replica).Inc()
}

// options returns the client options that feed m.
func (m *frontendMetrics) options() []client.Option {
	return []client.Option{client.WithObserver(m.observe), client.WithFleetObserver(m.fleetEvent)}
}
