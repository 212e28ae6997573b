package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewrited/rewrited/internal/postfixtest"
)

// TestAuthPassesThrough authenticates through the proxy against Postfix's
// SASL (PLAIN in one step, LOGIN over 334 continuations) and checks that a
// failed exchange's reply carries the client's last SASL line as command,
// as KumoMTA's does.
func TestAuthPassesThrough(t *testing.T) {
	pf := needPostfix(t)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	addr := startProxy(t, startRewrited(t), Config{Backend: pf.Addr, Logger: logger})
	t.Cleanup(func() {
		for _, secret := range []string{postfixtest.AuthPassword, base64.StdEncoding.EncodeToString([]byte(postfixtest.AuthPassword)), base64.StdEncoding.EncodeToString([]byte("wrong"))} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("the proxy logged a credential (%q):\n%s", secret, logs.String())
			}
		}
	})
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		t.Run(mech, func(t *testing.T) {
			out := swaks(t, addr, "--auth", mech, "--auth-user", postfixtest.AuthUser, "--auth-password", postfixtest.AuthPassword)
			if !strings.Contains(out, "235 2.7.0 Authentication successful [rw ") {
				t.Errorf("no rewritten 235 in\n%s", out)
			}
		})
	}
	t.Run("LOGIN refused", func(t *testing.T) {
		c := dialSMTP(t, addr)
		c.reply()
		c.cmd("EHLO client.test")
		if code, text := c.cmd("AUTH LOGIN"); code != 334 || cmdOf(text) != "nil" {
			t.Fatalf("AUTH LOGIN: %d %q", code, text)
		}
		if code, _ := c.cmd(base64.StdEncoding.EncodeToString([]byte(postfixtest.AuthUser))); code != 334 {
			t.Fatalf("user: %d", code)
		}
		wrong := base64.StdEncoding.EncodeToString([]byte("wrong"))
		code, text := c.cmd(wrong)
		if code != 535 || cmdOf(text) != wrong {
			t.Errorf("got %d %q, want 535 with cmd=%s", code, text, wrong)
		}
		if code, text := c.cmd("AUTH PLAIN"); code != 334 {
			t.Fatalf("AUTH PLAIN: %d %q", code, text)
		}
		if code, text := c.cmd("*"); code != 501 || cmdOf(text) != "*" {
			t.Errorf("cancelled exchange: %d %q, want 501 with cmd=*", code, text)
		}
	})
}

// TestBackendTLS: with BackendTLS the proxy upgrades its backend connection
// with STARTTLS, and Postfix logs a TLS connection.
func TestBackendTLS(t *testing.T) {
	pf := needPostfix(t)
	pem, err := os.ReadFile(pf.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	addr := startProxy(t, startRewrited(t), Config{Backend: pf.Addr, XClient: true,
		BackendTLS: &tls.Config{RootCAs: pool, ServerName: "postfix.test", MinVersion: tls.VersionTLS12}})
	out := swaks(t, addr, "--local-interface", "127.0.0.4")
	if !queueID.MatchString(out) {
		t.Fatalf("not queued:\n%s", out)
	}
	if strings.Contains(out, "250-STARTTLS") {
		t.Errorf("the backend's STARTTLS reached the client:\n%s", out)
	}
	if _, err := pf.WaitLog("TLS connection established from localhost[127.0.0.1]", 10*time.Second); err != nil {
		t.Error(err)
	}
}

// TestCommandsAfterSTARTTLS: commands pipelined behind STARTTLS would be
// taken as sent over TLS (CVE-2011-0411); the proxy hangs up instead.
func TestCommandsAfterSTARTTLS(t *testing.T) {
	pf := needPostfix(t)
	tlsCfg, _, _ := testCert(t, "proxy.test")
	addr := startProxy(t, startRewrited(t), Config{Backend: pf.Addr, TLS: tlsCfg})
	c := dialSMTP(t, addr)
	c.reply()
	c.cmd("EHLO client.test")
	c.send("STARTTLS\r\nMAIL FROM:<evil@client.test>")
	if code, _ := c.reply(); code != 220 {
		t.Fatalf("STARTTLS: %d", code)
	}
	if !c.closed() {
		t.Error("the proxy went on after commands injected behind STARTTLS")
	}
}

// TestSMTPSourceLoad sends messages over concurrent sessions with Postfix's
// own load generator through the proxy, and finds each in Postfix's log.
func TestSMTPSourceLoad(t *testing.T) {
	pf := needPostfix(t)
	needTool(t, "smtp-source")
	addr := startProxy(t, startRewrited(t), Config{Backend: pf.Addr})
	const sessions, messages = 4, 40
	sender := "load-" + strings.ReplaceAll(t.Name(), "/", "-") + "@client.test"
	out, err := exec.Command("smtp-source", "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(messages), "-f", sender, "-t", "bob@example.com", addr).CombinedOutput()
	if err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := strings.Count(pf.Log(), "from=<"+sender+">")
		if n == messages {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix logged %d messages from %s, want %d", n, sender, messages)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lockedWriter serialises writes from concurrent sessions.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestSASLLineTooLong: a SASL response over the proxy's 12288 octets
// cancels the exchange with the backend and gets RFC 4954's 500 5.5.6, and
// the session stays usable; one without a line end past 64 KiB ends the
// session with a 421.
func TestSASLLineTooLong(t *testing.T) {
	pf := needPostfix(t)
	srv, addr := startServer(t, startRewrited(t), Config{Backend: pf.Addr}, false)
	startAuth := func(t *testing.T) *smtpConn {
		c := dialSMTP(t, addr)
		c.reply()
		c.cmd("EHLO client.test")
		if code, text := c.cmd("AUTH LOGIN"); code != 334 {
			t.Fatalf("AUTH LOGIN: %d %q", code, text)
		}
		return c
	}
	t.Run("over the limit", func(t *testing.T) {
		c := startAuth(t)
		code, text := c.cmd(strings.Repeat("QUFB", maxAuthLine/4))
		if code != 500 || !strings.HasPrefix(text, "5.5.6 Authentication Exchange line is too long") || cmdOf(text) != "nil" {
			t.Errorf("got %d %q, want a rewritten 500 5.5.6 with cmd=nil", code, text)
		}
		// The backend left the exchange too: the next one succeeds.
		plain := base64.StdEncoding.EncodeToString([]byte("\x00" + postfixtest.AuthUser + "\x00" + postfixtest.AuthPassword))
		if code, text := c.cmd("AUTH PLAIN " + plain); code != 235 {
			t.Errorf("AUTH PLAIN after the cancelled exchange: %d %q, want 235", code, text)
		}
		if code, _ := c.cmd("QUIT"); code != 221 {
			t.Errorf("QUIT: %d", code)
		}
	})
	t.Run("no line end", func(t *testing.T) {
		c := startAuth(t)
		go func() { _, _ = c.conn.Write(bytes.Repeat([]byte("A"), 2*maxDiscard)) }()
		code, text := c.reply()
		if code != 421 || cmdOf(text) != "nil" {
			t.Errorf("got %d %q, want a rewritten 421 with cmd=nil", code, text)
		}
		if !c.closed() {
			t.Error("connection left open")
		}
	})
	waitIdle(t, srv)
}
