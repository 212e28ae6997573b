package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// LoadState tells whether every policy loaded, and which did not.
type LoadState interface {
	Ready() bool
	// RefusedPolicies lists the policies whose current file is refused,
	// and whether a previous version of each is served.
	RefusedPolicies() map[string]bool
}

var (
	readyDesc = prometheus.NewDesc("rewrited_ready",
		"1 when every policy file loaded (gRPC health SERVING, /readyz 200), 0 while one is not served.", nil, nil)
	refusedDesc = prometheus.NewDesc("rewrited_policy_refused",
		"1 for each policy whose current file fails to load; serving says whether a previous version still serves.", []string{"policy", "serving"}, nil)
)

// loadCollector reads the load state at scrape time.
type loadCollector struct{ src LoadState }

func (c loadCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- readyDesc
	ch <- refusedDesc
}

func (c loadCollector) Collect(ch chan<- prometheus.Metric) {
	ready := 0.0
	if c.src.Ready() {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready)
	for name, serving := range c.src.RefusedPolicies() {
		ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.GaugeValue, 1, name, strconv.FormatBool(serving))
	}
}

// CollectLoadState reports rewrited_ready and rewrited_policy_refused at
// each scrape.
func (m *Metrics) CollectLoadState(src LoadState) {
	m.reg.MustRegister(loadCollector{src})
}
