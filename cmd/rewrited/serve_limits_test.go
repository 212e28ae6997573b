package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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
  if response == 'slow' then print('evaluating a slow call') while true do end end
end)`)
	p := rewritedtest.Start(t, "--policy", file, "--max-request-bytes", "1000", "--max-concurrent", "2", "--eval-timeout", "3s")
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
	eventually(t, "both slow calls are evaluating", func() bool {
		return strings.Count(p.Logs(), "evaluating a slow call") == 2
	})
	if err := reply("fast"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("call past --max-concurrent: %v", err)
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
		"-decision-log-sample", "-tls-cert", "-tls-key", "-tls-client-ca", "-auth-token-file", "-max-concurrent", "-max-request-bytes", "-max-connection-age", "-max-connections", "-max-policy-bytes", "-max-state-bytes", "-compile-timeout", "-protect-data", "-pprof"} {
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
		{[]string{"--max-connections", "-1"}, "--max-connections: -1 is negative"},
		{[]string{"--max-policy-bytes", "0"}, "--max-policy-bytes: 0 is not positive"},
		{[]string{"--compile-timeout", "0s"}, "--compile-timeout: 0s is not positive"},
		{[]string{"--max-state-bytes", "0"}, "--max-state-bytes: 0 is not positive"},
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

// h2conn opens a raw HTTP/2 connection: the client preface and empty
// SETTINGS are sent; every read and write fails after 20 s.
func h2conn(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c, fr
}

// writeHeaders opens stream id with the headers of a rewrite call plus
// extra, split into frames of 16 KiB, and sends no body.
func writeHeaders(t *testing.T, fr *http2.Framer, id uint32, extra ...hpack.HeaderField) error {
	t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	fields := append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":authority", Value: "rewrited"},
		{Name: ":path", Value: rewritev1.RewriteService_RewriteResponse_FullMethodName},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}, extra...)
	for _, f := range fields {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	const frameSize = 16 << 10
	b := block.Bytes()
	first := b[:min(len(b), frameSize)]
	b = b[len(first):]
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(b) == 0}); err != nil {
		return err
	}
	for len(b) > 0 {
		chunk := b[:min(len(b), frameSize)]
		b = b[len(chunk):]
		if err := fr.WriteContinuation(id, len(b) == 0, chunk); err != nil {
			return err
		}
	}
	return nil
}

// TestServeRefusesLargeHeaders opens streams whose headers are far larger
// than a client's and sends no body, where the server used to keep the
// headers until the body came: a stream of headers over the cap is reset at
// once and the connection goes on serving; a 1 MiB header ends the
// connection.
func TestServeRefusesLargeHeaders(t *testing.T) {
	p := rewritedtest.Start(t)
	_, fr := h2conn(t, p.Addr)
	// 20 KB of headers, in one frame once compressed.
	var over []hpack.HeaderField
	for i := range 20 {
		over = append(over, hpack.HeaderField{Name: fmt.Sprintf("x-pad-%d", i), Value: strings.Repeat("a", 1000)})
	}
	pending := map[uint32]bool{}
	for id := uint32(1); id <= 9; id += 2 {
		if err := writeHeaders(t, fr, id, over...); err != nil {
			t.Fatal(err)
		}
		pending[id] = true
	}
	for len(pending) > 0 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's frames: %v; streams %v not reset", err, pending)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.ErrCode != http2.ErrCodeFrameSize {
				t.Errorf("stream %d reset with %v", f.StreamID, f.ErrCode)
			}
			delete(pending, f.StreamID)
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v before streams %v were reset", f.ErrCode, pending)
		}
	}
	// The same connection still serves a call with ordinary headers: an
	// empty request gets its answer.
	if err := writeHeaders(t, fr, 11); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteData(11, true, []byte{0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	for answered := false; !answered; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("ordinary stream: %v", err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			t.Fatalf("ordinary stream reset with %v", f.ErrCode)
		case *http2.MetaHeadersFrame:
			if st := f.PseudoValue("status"); f.StreamID != 11 || st != "200" {
				t.Errorf("ordinary stream: stream %d :status %q", f.StreamID, st)
			}
			answered = true
		}
	}

	_, fr = h2conn(t, p.Addr)
	_ = writeHeaders(t, fr, 1, hpack.HeaderField{Name: "x-padding", Value: strings.Repeat("a", 1<<20)}) // the server may close mid-write
	for {
		f, err := fr.ReadFrame()
		if err != nil || f.Header().Type == http2.FrameGoAway {
			break // the connection ended
		}
		if f, ok := f.(*http2.MetaHeadersFrame); ok {
			t.Fatalf("a 1 MiB header was answered: %v", f.Fields)
		}
	}
	conn := dial(t, p.Addr)
	if hc, err := healthpb.NewHealthClient(conn).Check(testCtx(t), &healthpb.HealthCheckRequest{}); err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health after the large headers: %v %v", hc, err)
	}
}

// TestServeClosesSilentConnections: a connection that never sends the
// HTTP/2 preface is closed by the server after its handshake timeout.
func TestServeClosesSilentConnections(t *testing.T) {
	p := rewritedtest.Start(t)
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("silent connection: %v; want the server to close it", err)
	}
}

// TestServeMaxConnections: past --max-connections a new connection is not
// served until one of the open ones closes.
func TestServeMaxConnections(t *testing.T) {
	p := rewritedtest.Start(t, "--max-connections", "2")
	held := make([]net.Conn, 2)
	for i := range held {
		var fr *http2.Framer
		held[i], fr = h2conn(t, p.Addr)
		if _, err := fr.ReadFrame(); err != nil { // the server's SETTINGS: it is served
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	third, fr := h2conn(t, p.Addr)
	if err := third.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if f, err := fr.ReadFrame(); err == nil {
		t.Fatalf("a connection past the cap was served: %v", f)
	}
	held[0].Close()
	if err := third.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := fr.ReadFrame(); err != nil {
		t.Fatalf("once a connection closed, the waiting one: %v", err)
	}
}

func TestConnectionCap(t *testing.T) {
	tests := []struct {
		requested int
		openFiles uint64
		want      int
		warns     bool
	}{
		{1024, 1 << 20, 1024, false},
		{1024, 0, 1024, false}, // limit unknown
		{0, 0, 0, false},
		{0, 1024, 1024 - reservedFiles, false},
		{1024, 1024, 1024 - reservedFiles, true},
		{1024, 1024 + reservedFiles, 1024, false},
		{10, 20, 1, true},
	}
	for _, tt := range tests {
		var logs bytes.Buffer
		got := connectionCap(tt.requested, tt.openFiles, slog.New(slog.NewTextHandler(&logs, nil)))
		if got != tt.want || (logs.Len() > 0) != tt.warns {
			t.Errorf("connectionCap(%d, %d) = %d, warning %q; want %d, warning %v", tt.requested, tt.openFiles, got, logs.String(), tt.want, tt.warns)
		}
	}
}

// slowPolicy is a policy of a 20,000-domain table: under the default
// --max-policy-bytes, and seconds of CPU to compile.
func slowPolicy() string {
	var b strings.Builder
	b.WriteString("local domains = {\n")
	for i := range 20_000 {
		fmt.Fprintf(&b, "  [\"domain-%d.example.net\"] = true,\n", i)
	}
	b.WriteString("}\n" + answering("slow"))
	return b.String()
}

// TestServeSIGTERMDuringReload sends SIGTERM while a SIGHUP reload compiles
// a slow policy: the server drains before the reload ends.
func TestServeSIGTERMDuringReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.lua")
	writeFile(t, file, answering("fast"))
	p := rewritedtest.Start(t, "--policy", file)
	replaceFile(t, file, slowPolicy())
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the SIGHUP is being handled", func() bool { return len(logRecords(p, "SIGHUP: reloading")) > 0 })
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(2 * time.Minute); err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	logs := p.Logs()
	draining := strings.Index(logs, `"msg":"draining"`)
	loaded := strings.Index(logs, `"previous_version"`) // the slow policy loaded
	if draining < 0 || (loaded >= 0 && loaded < draining) {
		t.Errorf("the server drained only once the reload was over:\n%s", logs)
	}
}

// TestServePolicyLimits drops into the policy directory a policy over
// --max-policy-bytes and one whose state is over --max-state-bytes: both
// are refused and not served, the others keep serving.
func TestServePolicyLimits(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "default.lua"), answering("fine"))
	p := rewritedtest.Start(t, "--policy-dir", dir, "--max-policy-bytes", "4096", "--max-state-bytes", "4194304")
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	replaceFile(t, filepath.Join(dir, "large.lua"), answering("large")+"-- "+strings.Repeat("x", 4096)+"\n")
	replaceFile(t, filepath.Join(dir, "greedy.lua"), "big = {}\nfor i = 1, 10000 do big[i] = string.rep('x', 1000) .. i end\n"+answering("greedy"))
	eventually(t, "both policies are refused", func() bool { return len(logRecords(p, "policy refused: not served")) >= 2 })
	for name, want := range map[string]string{"large": "over 4096 bytes", "greedy": "(--max-state-bytes)"} {
		if _, err := decide(ctx, conn, name); status.Code(err) != codes.NotFound {
			t.Errorf("policy %s: %v, want NotFound", name, err)
		}
		if !strings.Contains(p.Logs(), want) {
			t.Errorf("no refusal of %s says %q", name, want)
		}
	}
	if resp, err := decide(ctx, conn, ""); err != nil || resp.Response != "fine" {
		t.Errorf("default policy: %v, %v", resp, err)
	}
}

// TestServeOpenFileLimit starts the server under prlimit: a soft limit
// below the hard one is raised to it, and a hard limit too low for
// --max-connections lowers the cap, with a warning.
func TestServeOpenFileLimit(t *testing.T) {
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("prlimit (util-linux) is not installed")
	}
	tests := []struct {
		nofile string
		warns  bool
	}{
		{"256:4096", false},
		{"512:512", true}, // 448 connections fit beside the reserve
	}
	for _, tt := range tests {
		cmd := exec.Command("prlimit", "--nofile="+tt.nofile, rewritedtest.Binary(t), "serve", "--listen", "127.0.0.1:0", "--log-format", "json")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var logs []string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() && !strings.Contains(sc.Text(), `"msg":"serving"`) {
			logs = append(logs, sc.Text())
		}
		limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", cmd.Process.Pid))
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err != nil {
			t.Fatal(err)
		}
		// The Go runtime raises the soft limit to one below the hard one.
		m := regexp.MustCompile(`Max open files\s+(\d+)\s+(\d+)\s`).FindSubmatch(limits)
		if m == nil {
			t.Fatalf("no open-file limit in /proc/PID/limits:\n%s", limits)
		}
		soft, _ := strconv.Atoi(string(m[1]))
		hard, _ := strconv.Atoi(string(m[2]))
		if want := strings.Split(tt.nofile, ":")[1]; string(m[2]) != want || soft < hard-1 {
			t.Errorf("nofile %s: soft %d, hard %d; want the soft limit raised to the hard one %s", tt.nofile, soft, hard, want)
		}
		warned := slices.ContainsFunc(logs, func(l string) bool {
			return strings.Contains(l, "open-file limit is too low") && strings.Contains(l, `"cap":448`)
		})
		if warned != tt.warns {
			t.Errorf("nofile %s: warned %v, want %v:\n%s", tt.nofile, warned, tt.warns, strings.Join(logs, "\n"))
		}
	}
}
