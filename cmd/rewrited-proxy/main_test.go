package main

import (
	"bufio"
	"io"
	"net/http"
	"net/textproto"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rewrited/rewrited/internal/postfixtest"
	"github.com/rewrited/rewrited/internal/rewritedtest"
)

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--backend is required"},
		{[]string{"--backend", "b:25", "--listen", ""}, "nothing to listen on"},
		{[]string{"--backend", "b:25", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"--backend", "b:25", "--tls-listen", ":465"}, "--tls-listen needs --tls-cert"},
		{[]string{"--backend", "b:25", "--rewrited-token-file", "t"}, "needs --rewrited-tls-ca"},
		{[]string{"--backend", "b:25", "extra"}, `unexpected argument "extra"`},
		{[]string{"--backend", "b:25", "--backend-proxy-protocol", "v3", "--listen", "127.0.0.1:0"}, "want v1 or v2"},
		{[]string{"--backend", "b:25", "--backend-proxy-protocol", "v1", "--xclient", "--listen", "127.0.0.1:0"}, "either the PROXY protocol or XCLIENT"},
	} {
		err := run(tc.args, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

var logAddr = regexp.MustCompile(`msg=(listening|metrics) addr=(\S+)`)

// TestProcess runs the built binary between a real rewrited and Postfix,
// sends a message, reads the metrics and stops it with SIGTERM.
func TestProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no Postfix instance")
	}
	if err := postfixtest.Usable(); err != nil {
		t.Skip(err.Error() + "; .ci/run and make smtp-tools install postfix")
	}
	pf, err := postfixtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pf.Stop)
	rewrited := rewritedtest.Start(t) // the bundled example policy

	bin := filepath.Join(t.TempDir(), "rewrited-proxy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--backend", pf.Addr, "--rewrited", rewrited.Addr,
		"--timeout", "2s", "--metrics-listen", "127.0.0.1:0", "--hostname", "proxy.test")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	addrs := map[string]string{}
	sc := bufio.NewScanner(stderr)
	for len(addrs) < 2 && sc.Scan() {
		if m := logAddr.FindStringSubmatch(sc.Text()); m != nil {
			addrs[m[1]] = m[2]
		}
	}
	if len(addrs) < 2 {
		t.Fatalf("the proxy did not log its addresses: %v", sc.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()

	conn, err := textproto.Dial("tcp", addrs["listening"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var final string
	for _, step := range []struct {
		cmd  string
		code int
	}{{"", 220}, {"EHLO client.test", 250}, {"MAIL FROM:<a@client.test>", 250}, {"RCPT TO:<b@example.com>", 250},
		{"DATA", 354}, {"Subject: process\r\n\r\nhello\r\n.", 250}, {"QUIT", 221}} {
		if step.cmd != "" {
			if err := conn.PrintfLine("%s", step.cmd); err != nil {
				t.Fatal(err)
			}
		}
		_, msg, err := conn.ReadResponse(step.code)
		if err != nil {
			t.Fatalf("%q: %v", step.cmd, err)
		}
		if step.code == 250 && strings.HasPrefix(step.cmd, "Subject") {
			final = msg
		}
	}
	if !strings.HasPrefix(final, "super fantastic!\n2.0.0 Ok: queued as ") {
		t.Errorf("final DATA reply %q: want the bundled policy's rewrite", final)
	}

	resp, err := http.Get("http://" + addrs["metrics"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"rewrited_proxy_sessions_total 1",
		`rewrited_proxy_replies_total{class="2xx",outcome="rewritten"} 1`,
		`rewrited_proxy_replies_total{class="2xx",outcome="unchanged"} 5`,
		`rewrited_proxy_replies_total{class="3xx",outcome="unchanged"} 1`,
		"rewrited_proxy_rewrite_duration_seconds_count 7",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("still running 20s after SIGTERM")
	}
}
