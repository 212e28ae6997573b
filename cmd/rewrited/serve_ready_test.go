package main

import (
	"context"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rewrited/rewrited/internal/rewritedtest"
)

// healthOf returns the health status of service ("" for the server).
func healthOf(ctx context.Context, conn *grpc.ClientConn, service string) healthpb.HealthCheckResponse_ServingStatus {
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return resp.Status
}

// servingIs reports whether the server and the rewrite service both have
// status want.
func servingIs(ctx context.Context, conn *grpc.ClientConn, want healthpb.HealthCheckResponse_ServingStatus) func() bool {
	return func() bool {
		return healthOf(ctx, conn, "") == want && healthOf(ctx, conn, "rewrite.v1.RewriteService") == want
	}
}

// TestServeStartsWithABrokenPolicy starts a replica whose directory holds a
// broken policy: it serves the good one, reports NOT_SERVING and counts the
// refusal, then turns SERVING when the file is fixed, without a restart.
func TestServeStartsWithABrokenPolicy(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.lua")
	writeFile(t, filepath.Join(dir, "good.lua"), answering("good"))
	writeFile(t, bad, "kumo.on('smtp_server_rewrite_response', function()\n  return 250,\nend)\n")
	p := rewritedtest.Start(t, "--policy-dir", dir, "--metrics-listen", "127.0.0.1:0")
	conn := dial(t, p.Addr)
	ctx := testCtx(t)

	if !servingIs(ctx, conn, healthpb.HealthCheckResponse_NOT_SERVING)() {
		t.Errorf("health with a broken policy: %v / %v, want NOT_SERVING", healthOf(ctx, conn, ""), healthOf(ctx, conn, "rewrite.v1.RewriteService"))
	}
	if !answers(ctx, conn, "good", "good")() {
		t.Error("the good policy does not answer")
	}
	if _, err := decide(ctx, conn, "bad"); err == nil {
		t.Error("the broken policy answers")
	}
	url := metricsURL(t, p)
	body := scrape(t, url)
	for _, want := range []string{"rewrited_ready 0", `rewrited_policy_refused{policy="bad",serving="false"} 1`} {
		if !hasSample(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if recs := logRecords(p, "not ready until every policy loads: fix the files, they are watched"); len(recs) == 0 || recs[0]["level"] != "ERROR" {
		t.Errorf("the refusal is not logged as an error: %v", recs)
	}

	replaceFile(t, bad, answering("fixed"))
	eventually(t, "the replica is SERVING", servingIs(ctx, conn, healthpb.HealthCheckResponse_SERVING))
	if !answers(ctx, conn, "bad", "fixed")() {
		t.Error("the fixed policy does not answer")
	}
	if body := scrape(t, url); !hasSample(body, "rewrited_ready 1") {
		t.Error("rewrited_ready is not 1 once every policy loaded")
	}
}

// TestServeStartsWithABrokenPolicyFile: the same with --policy FILE, which
// may also not exist yet.
func TestServeStartsWithABrokenPolicyFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.lua")
	p := rewritedtest.Start(t, "--policy", file)
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	if !servingIs(ctx, conn, healthpb.HealthCheckResponse_NOT_SERVING)() {
		t.Error("health without the policy file is not NOT_SERVING")
	}
	writeFile(t, file, "kumo.on('smtp_server_rewrite_response', function() return 250, end)\n")
	eventually(t, "the broken file is refused", func() bool { return len(logRecords(p, "policy refused: not served")) > 0 })
	if !servingIs(ctx, conn, healthpb.HealthCheckResponse_NOT_SERVING)() {
		t.Error("health with a broken policy file is not NOT_SERVING")
	}
	replaceFile(t, file, answering("fixed"))
	eventually(t, "the replica is SERVING", servingIs(ctx, conn, healthpb.HealthCheckResponse_SERVING))
	if !answers(ctx, conn, "", "fixed")() {
		t.Error("the fixed policy does not answer")
	}
}
