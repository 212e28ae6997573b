package proxy

import (
	"bytes"
	"log/slog"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rewrited/rewrited/internal/postfixtest"
)

// swaks runs swaks against addr with a message for bob@example.com and
// returns its transcript.
func swaks(t *testing.T, addr string, extra ...string) string {
	t.Helper()
	needTool(t, "swaks")
	args := append([]string{"--server", addr, "--from", "alice@client.test", "--to", "bob@example.com",
		"--helo", "client.test", "--timeout", "30"}, extra...)
	out, err := exec.Command("swaks", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("swaks %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// serverLines returns the reply lines swaks shows ("<-" and "<~" for TLS).
func serverLines(transcript string) []string {
	var lines []string
	for _, l := range strings.Split(transcript, "\n") {
		if strings.HasPrefix(l, "<-  ") || strings.HasPrefix(l, "<~  ") {
			lines = append(lines, l[4:])
		}
	}
	return lines
}

var queuedData = regexp.MustCompile(`^250 2\.0\.0 Ok: queued as \w+ \[rw n=\d+ cmd=DATA ehlo=client\.test tls=(yes|no)\]$`)

func TestSwaks(t *testing.T) {
	pf := needPostfix(t)
	tlsCfg, _, _ := testCert(t, "proxy.test")
	target := startRewrited(t)
	addr := startProxy(t, target, Config{Backend: pf.Addr, TLS: tlsCfg})
	_, tlsAddr := startServer(t, target, Config{Backend: pf.Addr, TLS: tlsCfg}, true)

	for _, tc := range []struct {
		name, addr string
		args       []string
		tls        string
	}{
		{"plain", addr, nil, "no"},
		{"starttls", addr, []string{"--tls"}, "yes"},
		{"pipelining", addr, []string{"--pipeline"}, "no"},
		{"starttls and pipelining", addr, []string{"--tls", "--pipeline"}, "yes"},
		{"implicit TLS", tlsAddr, []string{"--tls-on-connect"}, "yes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := serverLines(swaks(t, tc.addr, tc.args...))
			if len(lines) == 0 {
				t.Fatal("no server lines in the transcript")
			}
			var data string
			first := true // the policy marks a reply's first line
			for _, l := range lines {
				if first && !strings.Contains(l, "[rw ") {
					t.Errorf("reply %q is not rewritten", l)
				}
				first = len(l) < 4 || l[3] == ' '
				if strings.HasPrefix(l, "250 2.0.0 Ok: queued") {
					data = l
				}
			}
			m := queuedData.FindStringSubmatch(data)
			if m == nil {
				t.Fatalf("final DATA reply %q: want it marked with cmd=DATA\n%s", data, strings.Join(lines, "\n"))
			}
			if m[1] != tc.tls {
				t.Errorf("tls_cipher seen by the policy: %s, want %s", m[1], tc.tls)
			}
		})
	}
}

// TestClientCertificate: the subject and DNS names of a client certificate
// reach the policy as the tls_peer_subject_name array.
func TestClientCertificate(t *testing.T) {
	pf := needPostfix(t)
	tlsCfg, _, _ := testCert(t, "proxy.test")
	_, certFile, keyFile := testCert(t, "client.test")
	addr := startProxy(t, startRewrited(t), Config{Backend: pf.Addr, TLS: tlsCfg})
	out := swaks(t, addr, "--tls", "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.Contains(out, "cmd=DATA ehlo=client.test tls=yes peer=CN=client.test,client.test]") {
		t.Errorf("the policy did not see tls_peer_subject_name:\n%s", out)
	}
}

// TestPythonSMTPLib sends a message with Python's smtplib and checks what
// it sees for the final DATA reply.
func TestPythonSMTPLib(t *testing.T) {
	pf := needPostfix(t)
	needTool(t, "python3")
	addr := startProxy(t, startRewrited(t), Config{Backend: pf.Addr})
	host, port, _ := strings.Cut(addr, ":")
	script := `
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), local_hostname="client.test", timeout=30)
s.ehlo()
s.mail("alice@client.test")
s.rcpt("bob@example.com")
code, text = s.data(b"Subject: smtplib\r\n\r\n.a line with a leading dot\r\n\xff 8-bit\r\n")
print(code, text.decode())
print(s.quit()[1].decode())
`
	out, err := exec.Command("python3", "-c", script, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 smtplib: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !queuedData.MatchString(lines[0]) {
		t.Errorf("smtplib saw %q, want the marked final DATA reply", out)
	}
	if !strings.Contains(lines[len(lines)-1], "cmd=nil") {
		t.Errorf("QUIT reply %q: want it marked with cmd=nil", lines[len(lines)-1])
	}
}

var queueID = regexp.MustCompile(`queued as (\w+)`)

// TestBackendSeesClientAddress sends from 127.0.0.2 and reads Postfix's log
// for the client address of the queued message: the PROXY protocol header
// (v1, v2) or XCLIENT carries it; without either Postfix sees the proxy.
func TestBackendSeesClientAddress(t *testing.T) {
	pf := needPostfix(t)
	target := startRewrited(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"PROXY v1", Config{Backend: pf.ProxyAddr, ProxyProtocol: 1}, "[127.0.0.2]"},
		{"PROXY v2", Config{Backend: pf.ProxyAddr, ProxyProtocol: 2}, "[127.0.0.2]"},
		{"XCLIENT", Config{Backend: pf.Addr, XClient: true}, "[127.0.0.2]"},
		{"neither", Config{Backend: pf.Addr}, "[127.0.0.1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startProxy(t, target, tc.cfg)
			sendFrom127002(t, pf, addr, tc.want)
		})
	}
}

// TestPipelinedBatch sends MAIL, two RCPTs and DATA in one write (RFC 2920)
// and checks each reply got its own command's value.
func TestPipelinedBatch(t *testing.T) {
	pf := needPostfix(t)
	addr := startProxy(t, startRewrited(t), Config{Backend: pf.Addr})
	c := dialSMTP(t, addr)
	c.reply()
	if code, ehlo := c.cmd("EHLO client.test"); code != 250 || !strings.Contains(ehlo, "PIPELINING") {
		t.Fatalf("EHLO: %d %q", code, ehlo)
	}
	c.send("MAIL FROM:<alice@client.test>\r\nRCPT TO:<" + pf.RejectRcpt + ">\r\nrcpt to:<bob@example.com>\r\nDATA")
	for _, want := range []struct {
		code int
		cmd  string
	}{{250, "nil"}, {550, "RCPT TO:<" + pf.RejectRcpt + ">"}, {250, "nil"}, {354, "nil"}} {
		code, text := c.reply()
		if code != want.code || cmdOf(text) != want.cmd {
			t.Errorf("got %d %q, want %d with cmd=%s", code, text, want.code, want.cmd)
		}
	}
	c.send("Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT")
	if code, text := c.reply(); code != 250 || cmdOf(text) != "DATA" {
		t.Errorf("after the body: %d %q, want 250 with cmd=DATA", code, text)
	}
	if code, text := c.reply(); code != 221 || cmdOf(text) != "nil" {
		t.Errorf("QUIT: %d %q, want 221 with cmd=nil", code, text)
	}
}

// TestXClientNotOffered: with XClient and a backend that does not offer
// XCLIENT (Postfix refuses it from hosts not in
// smtpd_authorized_xclient_hosts), the proxy sends none, the mail goes
// through with the proxy's address, and the warning is logged once for
// all sessions.
func TestXClientNotOffered(t *testing.T) {
	pf := needPostfix(t)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs}, nil))
	addr := startProxy(t, startRewrited(t), Config{Backend: pf.StrictAddr, XClient: true, Logger: logger})
	for range 2 {
		// An XCLIENT sent anyway would get Postfix's 550 and end the
		// session in the proxy's 421 before the greeting.
		sendFrom127002(t, pf, addr, "[127.0.0.1]")
	}
	if n := strings.Count(logs.String(), "does not offer XCLIENT"); n != 1 {
		t.Errorf("the warning was logged %d times over two sessions, want once:\n%s", n, logs.String())
	}
}

// sendFrom127002 sends a message with swaks from 127.0.0.2 through the proxy
// at addr: the policy must see that address in received_from, and Postfix's
// log must name wantClient as the message's client.
func sendFrom127002(t *testing.T, pf *postfixtest.Instance, addr, wantClient string) {
	t.Helper()
	out := swaks(t, addr, "--local-interface", "127.0.0.2")
	if !strings.Contains(out, "[from=127.0.0.2:") {
		t.Errorf("the policy did not see received_from=127.0.0.2:\n%s", out)
	}
	m := queueID.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no queue id in\n%s", out)
	}
	log, err := pf.WaitLog(m[1]+": client=", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, m[1]+": client=") && !strings.Contains(l, wantClient) {
			t.Errorf("Postfix logged %q, want the client %s", l, wantClient)
		}
	}
}
