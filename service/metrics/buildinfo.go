package metrics

import "github.com/prometheus/client_golang/prometheus"

// SetBuildInfo exports rewrited_build_info, always 1, labelled with what
// the binary was built from, so a dashboard tells which replicas run which
// build.
func (m *Metrics) SetBuildInfo(version, revision, goVersion string) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "rewrited_build_info",
		Help:        "Always 1: the version, VCS revision and Go version of the running binary.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	}, func() float64 { return 1 }))
}
