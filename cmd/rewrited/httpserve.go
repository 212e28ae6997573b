package main

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rewrited/rewrited/service/metrics"
	"github.com/rewrited/rewrited/service/registry"
	"github.com/rewrited/rewrited/service/server"
)

// httpHandler serves the metrics listener: /metrics, /healthz (the process
// answers), /readyz (the gRPC health of the server as a whole, for probes
// that cannot speak gRPC or TLS) and, with withPprof, /debug/pprof/.
func httpHandler(m *metrics.Metrics, srv *server.Server, reg *registry.Registry, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		resp, err := srv.Health.Check(r.Context(), &healthpb.HealthCheckRequest{})
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			fmt.Fprintln(w, "ready")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, notReadyReason(reg))
	})
	if withPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// notReadyReason says why the server is not SERVING.
func notReadyReason(reg *registry.Registry) string {
	var missing []string
	for _, f := range reg.Refused() {
		if !f.Serving {
			missing = append(missing, f.Policy)
		}
	}
	switch {
	case len(missing) > 0:
		return "not ready: not loaded: " + strings.Join(missing, ", ")
	case len(reg.Names()) == 0:
		return "not ready: no policy file found"
	default:
		return "not ready: shutting down"
	}
}
