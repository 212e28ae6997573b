package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rewrited/rewrited/service/policy"
)

var (
	infoDesc = prometheus.NewDesc("rewrited_policy_info",
		"Always 1: the version (source digest) of each policy served, and of its candidate (NAME.shadow.lua beside NAME.lua; empty when none).", []string{"policy", "version", "shadow_version"}, nil)
	shadowDesc = prometheus.NewDesc("rewrited_policy_shadow",
		"1 when the policy runs in shadow mode, 0 when its rewrites are applied.", []string{"policy"}, nil)
	idleDesc = prometheus.NewDesc("rewrited_lua_states_idle",
		"Lua states waiting in the policy's pool.", []string{"policy"}, nil)
	createdDesc = prometheus.NewDesc("rewrited_lua_states_created_total",
		"Lua states built for the policy's current version.", []string{"policy"}, nil)
	missesDesc = prometheus.NewDesc("rewrited_lua_pool_misses_total",
		"Evaluations of the policy's current version that found the pool empty and built a state.", []string{"policy"}, nil)
	discardedDesc = prometheus.NewDesc("rewrited_lua_states_discarded_total",
		"Lua states of the policy's current version thrown away after a timeout or a crash.", []string{"policy"}, nil)
)

// CandidateSource is a PolicySource whose policies may have a candidate
// evaluated beside them.
type CandidateSource interface {
	PolicySource
	Candidate(name string) (*policy.Policy, bool)
}

// poolCollector reads the served policies at scrape time. The pool counters
// belong to a policy version: they restart from zero when it is reloaded,
// which Prometheus' rate() treats as a counter reset.
type poolCollector struct{ src PolicySource }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{infoDesc, shadowDesc, idleDesc, createdDesc, missesDesc, discardedDesc} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	candidates, _ := c.src.(CandidateSource)
	for _, p := range c.src.Policies() {
		name, st := p.Name(), p.Stats()
		shadow := 0.0
		if p.Options().Shadow {
			shadow = 1
		}
		shadowVersion := ""
		if candidates != nil {
			if cand, ok := candidates.Candidate(name); ok {
				shadowVersion = cand.Version()
			}
		}
		ch <- prometheus.MustNewConstMetric(infoDesc, prometheus.GaugeValue, 1, name, p.Version(), shadowVersion)
		ch <- prometheus.MustNewConstMetric(shadowDesc, prometheus.GaugeValue, shadow, name)
		ch <- prometheus.MustNewConstMetric(idleDesc, prometheus.GaugeValue, float64(st.Idle), name)
		ch <- prometheus.MustNewConstMetric(createdDesc, prometheus.CounterValue, float64(st.Created), name)
		ch <- prometheus.MustNewConstMetric(missesDesc, prometheus.CounterValue, float64(st.Misses), name)
		ch <- prometheus.MustNewConstMetric(discardedDesc, prometheus.CounterValue, float64(st.Discarded), name)
	}
}
