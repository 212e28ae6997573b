package main

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/proxy"
)

// metrics are the proxy's Prometheus series.
type metrics struct {
	reg      prometheus.Registerer
	replies  *prometheus.CounterVec
	duration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reg: reg,
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rewrited_proxy_replies_total",
			Help: "Replies sent to clients, by status class of the reply sent and outcome: rewritten, unchanged (rewrited kept it), fallback (the call failed and the original went out).",
		}, []string{"class", "outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rewrited_proxy_rewrite_duration_seconds",
			Help:    "Time of each rewrite call, fallbacks included.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
	}
	reg.MustRegister(m.replies, m.duration)
	return m
}

// sessions exports srv's session counts.
func (m *metrics) sessions(srv *proxy.Server) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewrited_proxy_sessions_active", Help: "Client sessions open now."},
			func() float64 { a, _ := srv.Sessions(); return float64(a) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rewrited_proxy_sessions_total", Help: "Client sessions accepted."},
			func() float64 { _, t := srv.Sessions(); return float64(t) }),
	)
}

func (m *metrics) observe(res client.Result, d time.Duration) {
	outcome := "unchanged"
	switch {
	case res.Err != nil:
		outcome = "fallback"
	case res.Rewritten:
		outcome = "rewritten"
	}
	m.replies.WithLabelValues(strconv.Itoa(res.Status/100)+"xx", outcome).Inc()
	m.duration.Observe(d.Seconds())
}
