package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestServeBundledPolicy(t *testing.T) {
	p := rewritedtest.Start(t)
	conn := dial(t, p.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "rewrite.v1.RewriteService"})
	if err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hc, err)
	}
	cmd := "DATA"
	resp, err := rewritev1.NewRewriteServiceClient(conn).RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 250, Response: "OK ids=8f2a", Command: &cmd})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 250 || resp.Response != "super fantastic!\nOK ids=8f2a" || !resp.Rewritten || resp.Outcome != rewritev1.Outcome_OUTCOME_REWRITTEN {
		t.Errorf("got %v", resp)
	}
}

// TestServeDrainsOnSIGTERM sends SIGTERM while a call is being evaluated:
// the call must complete and the process exit 0.
func TestServeDrainsOnSIGTERM(t *testing.T) {
	file := filepath.Join(t.TempDir(), "slow.lua")
	if err := os.WriteFile(file, []byte(`kumo.on('smtp_server_rewrite_response', function(status, response)
  if response == 'in flight' then print('evaluating the call in flight') while true do end end
end)`), 0o644); err != nil {
		t.Fatal(err)
	}
	p := rewritedtest.Start(t, "--policy", file, "--eval-timeout", "1s")
	conn := dial(t, p.Addr)
	client := rewritev1.NewRewriteServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 250, Response: "warm"}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		resp *rewritev1.RewriteResponseResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 250, Response: "in flight"})
		done <- result{resp, err}
	}()
	eventually(t, "the call is being evaluated", func() bool { return strings.Contains(p.Logs(), "evaluating the call in flight") })
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.resp.Outcome != rewritev1.Outcome_OUTCOME_TIMEOUT || r.resp.Response != "in flight" {
		t.Errorf("in-flight call: %v %v", r.resp, r.err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		t.Errorf("exit: %v", err)
	}
}
