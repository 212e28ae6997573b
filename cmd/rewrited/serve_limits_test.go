package main

import (
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

// TestServeLimits: past --max-request-bytes a call is InvalidArgument, past
// --max-concurrent it is ResourceExhausted, both at once.
func TestServeLimits(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.lua")
	writeFile(t, file, `kumo.on('smtp_server_rewrite_response', function(status, response)
  if response == 'slow' then while true do end end
end)`)
	p := rewritedtest.Start(t, "--policy", file, "--max-request-bytes", "1000", "--max-concurrent", "2", "--eval-timeout", "1s")
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	client := rewritev1.NewRewriteServiceClient(conn)
	reply := func(text string) error {
		_, err := client.RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 250, Response: text})
		return err
	}

	err := reply(strings.Repeat(strings.Repeat("x", 99)+"\n", 20))
	if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != "request: 2006 bytes, the limit is 1000" {
		t.Errorf("oversized request: %v", err)
	}

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if err := reply("slow"); err != nil {
				t.Errorf("admitted slow call: %v", err)
			}
		})
	}
	time.Sleep(300 * time.Millisecond) // both slow calls are evaluating
	start := time.Now()
	if err := reply("fast"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("call past --max-concurrent: %v", err)
	}
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("the refusal took %v", d)
	}
	if hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health while saturated: %v %v", hc, err)
	}
	wg.Wait()
	if err := reply("fast"); err != nil {
		t.Errorf("call once the slow ones are done: %v", err)
	}
}

// goAway opens a raw HTTP/2 connection, sends pings PINGs 20ms apart, and
// returns the first GOAWAY frame the server sends within 10 s.
func goAway(t *testing.T, addr string, pings int) *http2.GoAwayFrame {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	got := make(chan *http2.GoAwayFrame, 1)
	go func() {
		defer close(got)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				got <- ga
				return
			}
		}
	}()
	for i := range pings {
		if fr.WritePing(false, [8]byte{byte(i)}) != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	ga := <-got
	if ga == nil {
		t.Fatal("the connection ended without GOAWAY")
	}
	return ga
}

// TestServeKeepalive checks the connection policy: connections are closed
// after --max-connection-age, and a client pinging more often than every
// 10 s is told to calm down.
func TestServeKeepalive(t *testing.T) {
	p := rewritedtest.Start(t, "--max-connection-age", "1s")
	start := time.Now()
	ga := goAway(t, p.Addr, 0)
	if ga.ErrCode != http2.ErrCodeNo || time.Since(start) < 800*time.Millisecond {
		t.Errorf("max connection age: GOAWAY %v after %v", ga.ErrCode, time.Since(start))
	}

	p = rewritedtest.Start(t)
	ga = goAway(t, p.Addr, 10)
	if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "too_many_pings" {
		t.Errorf("ping flood: GOAWAY %v %q", ga.ErrCode, ga.DebugData())
	}
}

// TestServeFlags checks --help and the refusal of inconsistent flags.
func TestServeFlags(t *testing.T) {
	code, _, stderr := runArgs(t, "serve", "--help")
	if code != 0 {
		t.Errorf("--help: exit %d", code)
	}
	for _, flag := range []string{"-listen", "-policy", "-policy-dir", "-shadow", "-shadow-log-sample", "-metrics-listen", "-log-format", "-log-level",
		"-decision-log-sample", "-tls-cert", "-tls-key", "-tls-client-ca", "-auth-token-file", "-max-concurrent", "-max-request-bytes", "-max-connection-age", "-protect-data", "-pprof"} {
		if !strings.Contains(stderr, "\n  "+flag+" ") && !strings.Contains(stderr, "\n  "+flag+"\n") {
			t.Errorf("--help does not list %s", flag)
		}
	}
	maxConcurrent := stderr[strings.Index(stderr, "\n  -max-concurrent"):]
	maxConcurrent = maxConcurrent[:strings.Index(maxConcurrent[1:], "\n  -")+1]
	if n := strings.Count(maxConcurrent, "default"); n != 1 {
		t.Errorf("--max-concurrent's help names its default %d times:%s", n, maxConcurrent)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--policy", "a.lua", "--policy-dir", "d"}, "--policy and --policy-dir exclude each other"},
		{[]string{"--decision-log-sample", "2"}, "--decision-log-sample: 2 is not between 0 and 1"},
		{[]string{"--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-client-ca", "ca.pem"}, "--tls-client-ca needs --tls-cert and --tls-key"},
		{[]string{"--max-concurrent", "-1"}, "--max-concurrent: -1 is negative"},
		{[]string{"--max-request-bytes", "0"}, "--max-request-bytes: 0 is not between 1 and"},
		{[]string{"--pprof"}, "--pprof needs --metrics-listen"},
	}
	for _, tt := range tests {
		code, _, stderr := runArgs(t, append([]string{"serve"}, tt.args...)...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("serve %v: exit %d, stderr %q; want 2, %q", tt.args, code, stderr, tt.want)
		}
	}
	missing := filepath.Join(t.TempDir(), "missing")
	code, _, stderr = runArgs(t, "serve", "--listen", "127.0.0.1:0", "--policy-dir", missing)
	if code != 1 || !strings.Contains(stderr, "--policy-dir: open "+missing+": no such file or directory") {
		t.Errorf("missing --policy-dir: exit %d, stderr %q", code, stderr)
	}
}
