package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/service/policy"
)

// TestServeMetrics scrapes /metrics from a real process after calls that
// end in every common way.
func TestServeMetrics(t *testing.T) {
	dir := t.TempDir()
	// Rewrites DATA 250 into a failure (protected), 421 into 451, errors on 500.
	src := `kumo.on('smtp_server_rewrite_response', function(status, response, command)
  if command == 'DATA' then return 550, 'no' end
  if status == 421 then return 451, 'later' end
  if status == 500 then error('boom') end
end)
`
	writeFile(t, filepath.Join(dir, "default.lua"), src)
	version := policy.Version([]byte(src))
	p := rewritedtest.Start(t, "--policy-dir", dir, "--metrics-listen", "127.0.0.1:0")
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	client := rewritev1.NewRewriteServiceClient(conn)
	data := "DATA"
	for _, req := range []*rewritev1.RewriteResponseRequest{
		{Status: 250, Response: "OK", Command: &data},
		{Status: 421, Response: "busy"},
		{Status: 421, Response: "busy"},
		{Status: 500, Response: "what"},
		{Status: 220, Response: "hi"},
		{Status: 250, Response: "OK", Policy: "missing"},
		{Status: 999, Response: "bad"},
	} {
		_, _ = client.RewriteResponse(ctx, req)
	}
	body := scrape(t, metricsURL(t, p))
	for _, want := range []string{
		`rewrited_decisions_total{outcome="protected",policy="default"} 1`,
		`rewrited_decisions_total{outcome="rewritten",policy="default"} 2`,
		`rewrited_decisions_total{outcome="policy_error",policy="default"} 1`,
		`rewrited_decisions_total{outcome="unchanged",policy="default"} 1`,
		`rewrited_decisions_total{outcome="timeout",policy="default"} 0`,
		`rewrited_eval_seconds_bucket{policy="default",le="1e-05"}`,
		`rewrited_eval_seconds_bucket{policy="default",le="0.0001"}`,
		`rewrited_eval_seconds_count{policy="default"} 5`,
		`rewrited_policy_info{policy="default",shadow_version="",version="` + version + `"} 1`,
		`rewrited_policy_reloads_total{policy="default",result="success"} 1`,
		`rewrited_policy_shadow{policy="default"} 0`,
		`rewrited_lua_states_idle{policy="default"}`,
		`rewrited_lua_states_created_total{policy="default"}`,
		`rewrited_lua_pool_misses_total{policy="default"}`,
		`rewrited_lua_states_discarded_total{policy="default"} 0`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="RewriteResponse",grpc_service="rewrite.v1.RewriteService",grpc_type="unary"} 5`,
		`grpc_server_handled_total{grpc_code="NotFound",grpc_method="RewriteResponse",grpc_service="rewrite.v1.RewriteService",grpc_type="unary"} 1`,
		`grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="RewriteResponse",grpc_service="rewrite.v1.RewriteService",grpc_type="unary"} 1`,
		`grpc_server_handling_seconds_bucket{grpc_method="RewriteResponse",grpc_service="rewrite.v1.RewriteService",grpc_type="unary",le="0.0001"}`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains("\n"+body, "\n"+want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", grepLines(body, "rewrited_"))
	}
}

// TestServeDecisionLogRedactsAuth logs every decision and checks that no
// AUTH credential, neither in an AUTH command nor as the raw SASL response
// KumoMTA passes on failure, reaches the log.
func TestServeDecisionLogRedactsAuth(t *testing.T) {
	const secret = "AGFsaWNlAGNvcnJlY3QtaG9yc2U=" // "\0alice\0correct-horse"
	file := filepath.Join(t.TempDir(), "policy.lua")
	writeFile(t, file, `kumo.on('smtp_server_rewrite_response', function(status) if status == 535 then return 535, 'Authentication failed' end end)`)
	p := rewritedtest.Start(t, "--policy", file, "--decision-log-sample", "1", "--log-level", "debug")
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	client := rewritev1.NewRewriteServiceClient(conn)
	for _, cmd := range []string{"AUTH PLAIN " + secret, secret, "auth plain " + secret, "MAIL FROM:<alice@example.com>"} {
		if _, err := client.RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 535, Response: "5.7.8 failed", Command: &cmd}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "four decisions are logged", func() bool { return len(logRecords(p, "decision")) == 4 })
	if strings.Contains(p.Logs(), secret) || strings.Contains(p.Logs(), "correct-horse") {
		t.Fatalf("the log holds the credential:\n%s", p.Logs())
	}
	var got []string
	for _, rec := range logRecords(p, "decision") {
		got = append(got, rec["command"].(string))
		if rec["policy"] != "default" || rec["outcome"] != "rewritten" || rec["status"] != 535.0 || rec["version"] == "" {
			t.Errorf("decision logged as %v", rec)
		}
	}
	want := []string{"AUTH PLAIN [redacted]", "[redacted]", "AUTH PLAIN [redacted]", "MAIL FROM:<alice@example.com>"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("logged commands %q, want %q", got, want)
	}
}
