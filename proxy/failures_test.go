package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/internal/rewritedtest"
)

// TestRewritten421Closes: a policy that turns a reply into a 421 ends the
// session: the client gets the 421 and EOF, the backend a QUIT.
func TestRewritten421Closes(t *testing.T) {
	pf := needPostfix(t)
	addr := startProxy(t, startRewrited(t), Config{Backend: pf.ProxyAddr, ProxyProtocol: 2})
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &smtpConn{t: t, conn: conn}
	c.tp = newTextproto(conn)
	defer conn.Close()
	c.reply()
	c.cmd("EHLO client.test")
	c.cmd("MAIL FROM:<alice@client.test>")
	code, text := c.cmd("RCPT TO:<close-me@elsewhere.test>")
	if code != 421 || text != "4.7.0 closed by policy" {
		t.Fatalf("got %d %q, want the policy's 421", code, text)
	}
	if !c.closed() {
		t.Error("the proxy kept the connection open after a 421")
	}
	log, err := pf.WaitLog("disconnect from unknown[127.0.0.3]", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "disconnect from unknown[127.0.0.3]") && !strings.Contains(l, "quit=1") {
			t.Errorf("Postfix did not get QUIT: %s", l)
		}
	}
}

// TestRewritedUnavailableKeepsMailFlowing: with rewrited down or hung,
// every reply goes out unchanged and the message is queued.
func TestRewritedUnavailableKeepsMailFlowing(t *testing.T) {
	pf := needPostfix(t)
	for name, target := range map[string]string{
		"refused": closedAddr(t),
		"hung":    rewritedtest.SilentListener(t),
	} {
		t.Run(name, func(t *testing.T) {
			_, addr := startServer(t, target, Config{Backend: pf.Addr}, false, client.WithTimeout(50*time.Millisecond))
			out := swaks(t, addr)
			if strings.Contains(out, "[rw ") {
				t.Errorf("a reply was rewritten with rewrited %s:\n%s", name, out)
			}
			if !queueID.MatchString(out) {
				t.Errorf("message not queued:\n%s", out)
			}
		})
	}
}

func TestBackendUnreachable(t *testing.T) {
	addr := startProxy(t, startRewrited(t), Config{Backend: closedAddr(t)})
	c := dialSMTP(t, addr)
	code, text := c.reply()
	if code != 421 || !strings.HasPrefix(text, "4.3.0 proxy.test") || cmdOf(text) != "nil" {
		t.Errorf("got %d %q, want the proxy's 421 4.3.0, rewritten with cmd=nil", code, text)
	}
	if !c.closed() {
		t.Error("connection left open")
	}
}

// TestBackendMisbehaves: a backend that hangs, closes mid-reply, sends
// garbage or a unilateral 421: the client always gets one valid, rewritten
// reply and the connection is freed.
func TestBackendMisbehaves(t *testing.T) {
	target := startRewrited(t)
	greet := func(conn net.Conn, r *bufio.Reader) bool {
		fmt.Fprint(conn, "220 backend.test ESMTP\r\n")
		_, err := r.ReadString('\n')
		return err == nil
	}
	for _, tc := range []struct {
		name    string
		backend func(net.Conn, *bufio.Reader)
		send    string // "" sends nothing and waits
		code    int
		text    string
		command string
	}{
		{"no greeting", func(net.Conn, *bufio.Reader) { time.Sleep(5 * time.Second) }, "", 421, "4.3.0", "nil"},
		{"hangs on a command", func(c net.Conn, r *bufio.Reader) { greet(c, r); time.Sleep(5 * time.Second) }, "MAIL FROM:<a@b.test>", 421, "4.4.2", "MAIL FROM:<a@b.test>"},
		{"closes mid-reply", func(c net.Conn, r *bufio.Reader) {
			if greet(c, r) {
				fmt.Fprint(c, "250-first line\r\n")
			}
		}, "EHLO client.test", 421, "4.4.2", "EHLO client.test"},
		{"garbage", func(c net.Conn, r *bufio.Reader) {
			if greet(c, r) {
				fmt.Fprint(c, "hello there\r\n")
			}
		}, "NOOP", 421, "4.4.2", "NOOP"},
		{"unilateral 421", func(c net.Conn, r *bufio.Reader) {
			fmt.Fprint(c, "220 backend.test ESMTP\r\n421 4.4.2 backend.test Error: timeout exceeded\r\n")
			_, _ = r.ReadString('\n')
		}, "", 421, "4.4.2 backend.test", "nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, addr := startServer(t, target, Config{Backend: scriptedBackend(t, tc.backend), CommandTimeout: 300 * time.Millisecond}, false)
			c := dialSMTP(t, addr)
			if tc.name != "no greeting" {
				if code, _ := c.reply(); code != 220 {
					t.Fatalf("banner %d", code)
				}
			}
			if tc.send != "" {
				c.send(tc.send)
			}
			code, text := c.reply()
			if code != tc.code || !strings.HasPrefix(text, tc.text) || cmdOf(text) != tc.command {
				t.Errorf("got %d %q, want %d %s... rewritten with cmd=%s", code, text, tc.code, tc.text, tc.command)
			}
			if !c.closed() {
				t.Error("connection left open")
			}
			waitIdle(t, srv)
		})
	}
}

// waitIdle waits until srv has no session left.
func waitIdle(t *testing.T, srv *Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if active, _ := srv.Sessions(); active == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a session is still open")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClientLimits: idle and half-open clients, endless lines and too many
// connections each get a valid, rewritten reply and are disconnected.
func TestClientLimits(t *testing.T) {
	pf := needPostfix(t)
	target := startRewrited(t)
	srv, addr := startServer(t, target, Config{Backend: pf.Addr, IdleTimeout: 300 * time.Millisecond, MaxConnections: 2}, false)

	t.Run("idle", func(t *testing.T) {
		c := dialSMTP(t, addr)
		c.reply()
		code, text := c.reply()
		if code != 421 || !strings.HasPrefix(text, "4.4.2 proxy.test Error: timeout exceeded") || cmdOf(text) != "nil" {
			t.Errorf("got %d %q, want a rewritten 421 4.4.2 with cmd=nil", code, text)
		}
		if !c.closed() {
			t.Error("connection left open")
		}
	})
	t.Run("half-open line", func(t *testing.T) {
		c := dialSMTP(t, addr)
		c.reply()
		if _, err := c.conn.Write([]byte("MAIL FROM:<a@b")); err != nil {
			t.Fatal(err)
		}
		if code, _ := c.reply(); code != 421 {
			t.Errorf("got %d, want 421", code)
		}
	})
	t.Run("endless line", func(t *testing.T) {
		c := dialSMTP(t, addr)
		c.reply()
		go func() { _, _ = c.conn.Write(bytes.Repeat([]byte("x"), 2*maxDiscard)) }()
		code, text := c.reply()
		if code != 421 || cmdOf(text) != "nil" {
			t.Errorf("got %d %q, want a rewritten 421", code, text)
		}
	})
	t.Run("garbage lines", func(t *testing.T) {
		c := dialSMTP(t, addr)
		c.reply()
		for i := 0; ; i++ {
			code, text := c.cmd(fmt.Sprintf("garbage %d \xff\xfe", i))
			if marker(text) == "" {
				t.Fatalf("reply %d %q not rewritten", code, text)
			}
			// The command reaches the policy with invalid UTF-8 replaced.
			if want := fmt.Sprintf("garbage %d \uFFFD", i); code != 421 && cmdOf(text) != want {
				t.Errorf("the policy saw cmd=%q, want %q", cmdOf(text), want)
			}
			if code == 421 {
				break
			}
			if i == 100 {
				t.Fatal("Postfix never gave up on the garbage")
			}
		}
		if !c.closed() {
			t.Error("connection left open after the 421")
		}
	})
	t.Run("too many connections", func(t *testing.T) {
		a, b := dialSMTP(t, addr), dialSMTP(t, addr)
		a.reply()
		b.reply()
		c := dialSMTP(t, addr)
		code, text := c.reply()
		if code != 421 || !strings.HasPrefix(text, "4.7.0 proxy.test Error: too many connections") || cmdOf(text) != "nil" {
			t.Errorf("got %d %q, want a rewritten 421 4.7.0", code, text)
		}
		a.cmd("QUIT")
		b.cmd("QUIT")
	})
	waitIdle(t, srv)
}

// TestMessageBytesUntouched records what the backend receives: the body is
// the client's, byte for byte (dot-stuffing, 8-bit, bare CR, long lines,
// megabytes).
func TestMessageBytesUntouched(t *testing.T) {
	body := "Subject: bytes\r\n\r\n..stuffed\r\n.\tnot the end\r\n\x00\xff\xfe 8-bit\r\nbare\rcr\r\n" +
		strings.Repeat("long ", 2000) + "\r\n" + strings.Repeat("a 2 MiB body, line after line\r\n", 2<<20/32) + "a.\r\n.\r\n"
	var (
		mu       sync.Mutex
		received []byte
	)
	backend := scriptedBackend(t, func(c net.Conn, r *bufio.Reader) {
		fmt.Fprint(c, "220 backend.test ESMTP\r\n")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch strings.ToUpper(strings.TrimSpace(line)) {
			case "DATA":
				fmt.Fprint(c, "354 go ahead\r\n")
				var got []byte
				for !bytes.HasSuffix(got, []byte("\r\n.\r\n")) {
					b, err := r.ReadByte()
					if err != nil {
						return
					}
					got = append(got, b)
				}
				mu.Lock()
				received = got
				mu.Unlock()
				fmt.Fprint(c, "250 2.0.0 queued\r\n")
			case "QUIT":
				fmt.Fprint(c, "221 bye\r\n")
				return
			default:
				fmt.Fprint(c, "250 ok\r\n")
			}
		}
	})
	addr := startProxy(t, startRewrited(t), Config{Backend: backend})
	c := dialSMTP(t, addr)
	c.reply()
	c.cmd("HELO client.test")
	c.cmd("MAIL FROM:<a@client.test>")
	c.cmd("RCPT TO:<b@example.com>")
	if code, _ := c.cmd("DATA"); code != 354 {
		t.Fatalf("DATA: %d", code)
	}
	if _, err := c.conn.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if code, text := c.reply(); code != 250 || cmdOf(text) != "DATA" {
		t.Fatalf("after the body: %d %q", code, text)
	}
	c.cmd("QUIT")
	mu.Lock()
	defer mu.Unlock()
	if string(received) != body {
		t.Errorf("the backend received a different body:\n got %q\nwant %q", truncate(string(received), 200), truncate(body, 200))
	}
}

// TestGracefulShutdown: a session in the middle of a message finishes it,
// then gets a 421; Serve returns.
func TestGracefulShutdown(t *testing.T) {
	pf := needPostfix(t)
	srv, addr := startServer(t, startRewrited(t), Config{Backend: pf.Addr}, false)
	c := dialSMTP(t, addr)
	c.reply()
	c.cmd("EHLO client.test")
	c.cmd("MAIL FROM:<alice@client.test>")
	c.cmd("RCPT TO:<bob@example.com>")
	c.cmd("DATA")
	c.send("Subject: shutdown\r\n\r\nfirst half")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	c.send("second half\r\n.")
	if code, text := c.reply(); code != 250 || cmdOf(text) != "DATA" {
		t.Errorf("the message in flight: %d %q, want it queued", code, text)
	}
	code, text := c.reply()
	if code != 421 || !strings.HasPrefix(text, "4.3.2") || cmdOf(text) != "nil" {
		t.Errorf("got %d %q, want a rewritten 421 4.3.2", code, text)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestIntermediateReplyKeepsItsClass: a policy that turns a 354 into a
// failure would leave the backend waiting for a body the client will not
// send; the proxy sends the original 354 instead.
func TestIntermediateReplyKeepsItsClass(t *testing.T) {
	pf := needPostfix(t)
	addr := startProxy(t, startRewrited(t), Config{Backend: pf.Addr})
	c := dialSMTP(t, addr)
	c.reply()
	c.cmd("EHLO refuse-354.test")
	c.cmd("MAIL FROM:<alice@client.test>")
	c.cmd("RCPT TO:<bob@example.com>")
	if code, text := c.cmd("DATA"); code != 354 || marker(text) != "" {
		t.Fatalf("DATA: %d %q, want the original 354", code, text)
	}
	c.send("Subject: kept\r\n\r\nbody\r\n.")
	if code, text := c.reply(); code != 250 || cmdOf(text) != "DATA" {
		t.Errorf("after the body: %d %q, want 250 with cmd=DATA", code, text)
	}
}

// TestPostfixUnilateral421: Postfix ends a session that made too many
// errors with a 421 of its own, written before any further command; the
// client gets it rewritten with command nil, and both connections close.
func TestPostfixUnilateral421(t *testing.T) {
	pf := needPostfix(t)
	srv, addr := startServer(t, startRewrited(t), Config{Backend: pf.StrictAddr}, false)
	c := dialSMTP(t, addr)
	c.reply()
	c.cmd("EHLO client.test")
	for _, bad := range []string{"FOO one", "FOO two"} {
		if code, text := c.cmd(bad); code != 500 || cmdOf(text) != bad {
			t.Fatalf("%s: got %d %q, want a rewritten 500 with cmd=%s", bad, code, text, bad)
		}
	}
	code, text := c.reply() // nothing sent: the 421 answers no command
	if code != 421 || !strings.HasPrefix(text, "4.7.0 postfix.test Error: too many errors") || cmdOf(text) != "nil" {
		t.Errorf("got %d %q, want Postfix's 421 4.7.0 rewritten with cmd=nil", code, text)
	}
	if !c.closed() {
		t.Error("the proxy kept the client connection open after the 421")
	}
	// The session, and with it the backend connection, is gone.
	waitIdle(t, srv)
}
