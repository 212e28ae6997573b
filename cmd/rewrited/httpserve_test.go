package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rewrited/rewrited/internal/rewritedtest"
)

// TestServeHTTPHealth: /healthz answers while the process runs, /readyz
// follows the policies' loading as gRPC health does, /debug/pprof/ is off.
func TestServeHTTPHealth(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.lua")
	writeFile(t, filepath.Join(dir, "good.lua"), answering("good"))
	writeFile(t, bad, "kumo.on('smtp_server_rewrite_response', function() return 250, end)\n")
	writeFile(t, filepath.Join(dir, "slow.lua"), "kumo.on('smtp_server_rewrite_response', function() while true do end end)\n")
	p := rewritedtest.Start(t, "--policy-dir", dir, "--metrics-listen", "127.0.0.1:0", "--eval-timeout", "10s", "--drain-timeout", "30s")
	base := strings.TrimSuffix(metricsURL(t, p), "/metrics")

	tests := []struct {
		path string
		code int
		body string
	}{
		{"/healthz", http.StatusOK, "ok\n"},
		{"/readyz", http.StatusServiceUnavailable, "not ready: not loaded: bad\n"},
		{"/debug/pprof/", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		code, body := rewritedtest.HTTPGet(t, base+tt.path)
		if code != tt.code || (tt.body != "" && body != tt.body) {
			t.Errorf("GET %s: %d %q, want %d %q", tt.path, code, body, tt.code, tt.body)
		}
	}

	replaceFile(t, bad, answering("fixed"))
	eventually(t, "/readyz answers 200", func() bool {
		code, body := rewritedtest.HTTPGet(t, base+"/readyz")
		return code == http.StatusOK && body == "ready\n"
	})

	// Draining: while a call that loops until its budget runs out holds the
	// server open, /readyz is 503 as gRPC health is NOT_SERVING.
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() {
		_, err := decide(ctx, conn, "slow")
		done <- err
	}()
	started := `grpc_server_started_total{grpc_method="RewriteResponse",grpc_service="rewrite.v1.RewriteService",grpc_type="unary"} 1`
	eventually(t, "the slow call has started", func() bool { return hasSample(scrape(t, base+"/metrics"), started) })
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, "/readyz answers 503 while draining", func() bool {
		code, body := rewritedtest.HTTPGet(t, base+"/readyz")
		return code == http.StatusServiceUnavailable && body == "not ready: shutting down\n"
	})
	if code, _ := rewritedtest.HTTPGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz while draining: %d", code)
	}
	if err := <-done; err != nil {
		t.Errorf("the call in flight: %v", err)
	}
	if err := p.Wait(30 * time.Second); err != nil {
		t.Errorf("exit: %v", err)
	}
}

// TestServePprof: --pprof serves the profiler on the metrics listener.
func TestServePprof(t *testing.T) {
	p := rewritedtest.Start(t, "--metrics-listen", "127.0.0.1:0", "--pprof")
	base := strings.TrimSuffix(metricsURL(t, p), "/metrics")
	if code, body := rewritedtest.HTTPGet(t, base+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("GET /debug/pprof/: %d %.200q", code, body)
	}
	if code, body := rewritedtest.HTTPGet(t, base+"/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "main.serve") {
		t.Errorf("GET /debug/pprof/goroutine: %d %.200q", code, body)
	}
}
