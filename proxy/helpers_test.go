package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/internal/postfixtest"
	"github.com/rewrited/rewrited/internal/rewritedtest"
)

// postfix is the instance shared by the tests of this package; nil when
// postfix is not installed.
var postfix *postfixtest.Instance

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if wantPostfix() {
			var err error
			if postfix, err = postfixtest.Start(); err != nil {
				fmt.Fprintln(os.Stderr, "starting postfix:", err)
				return 1
			}
		}
		code := m.Run()
		if postfix != nil {
			postfix.Stop()
		}
		if code == 0 {
			// Every session's goroutines end with it.
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// wantPostfix says whether this run has tests that use Postfix: not with
// -short, and not when the binary only lists tests or fuzzes.
func wantPostfix() bool {
	if testing.Short() || postfixtest.Usable() != nil {
		return false
	}
	for _, name := range []string{"test.list", "test.fuzz"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	f := flag.Lookup("test.fuzzworker")
	return f == nil || f.Value.String() != "true"
}

// needPostfix skips the test when there is no Postfix instance (CI installs
// postfix, so there it runs).
func needPostfix(t *testing.T) *postfixtest.Instance {
	t.Helper()
	if postfix == nil {
		if err := postfixtest.Usable(); err != nil {
			t.Skip(err.Error() + "; .ci/run and make smtp-tools install postfix")
		}
		t.Skip("no Postfix instance in this run (-short, -list or fuzzing)")
	}
	return postfix
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed (apt-get install -y swaks postfix; .ci/run does it)", name)
	}
}

// markPolicy is the policy file that marks every reply.
func markPolicy(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("testdata/mark.lua")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startRewrited runs a real `rewrited serve` with the marking policy.
func startRewrited(t *testing.T) string {
	t.Helper()
	return rewritedtest.Start(t, "--policy", markPolicy(t)).Addr
}

// startProxy runs a proxy for cfg (Rewriter built for target) on a fresh
// 127.0.0.1 listener and returns its address.
func startProxy(t *testing.T, target string, cfg Config) string {
	t.Helper()
	_, addr := startServer(t, target, cfg, false)
	return addr
}

// startServer is startProxy with an implicit TLS choice and client options
// (a 2s budget unless they set one); it returns the server too.
func startServer(t *testing.T, target string, cfg Config, implicitTLS bool, opts ...client.Option) (*Server, string) {
	t.Helper()
	rw, err := client.New(target, append([]client.Option{client.WithTimeout(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rw.Close() })
	cfg.Rewriter = rw
	if cfg.Hostname == "" {
		cfg.Hostname = "proxy.test"
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l, implicitTLS) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return srv, l.Addr().String()
}

// scriptedBackend serves each connection with handle: a backend that
// misbehaves on purpose, or records what it receives.
func scriptedBackend(t *testing.T, handle func(conn net.Conn, r *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
				handle(conn, bufio.NewReader(conn))
			}()
		}
	}()
	return l.Addr().String()
}

// closedAddr returns an address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// smtpConn is a raw SMTP client connection for scripted dialogues.
type smtpConn struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func dialSMTP(t *testing.T, addr string) *smtpConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	return &smtpConn{t: t, conn: conn, tp: newTextproto(conn)}
}

func newTextproto(conn net.Conn) *textproto.Conn {
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	return textproto.NewConn(conn)
}

// reply reads one reply as code and text lines joined by "\n".
func (c *smtpConn) reply() (int, string) {
	c.t.Helper()
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		c.t.Fatalf("reading a reply: %v", err)
	}
	return code, msg
}

func (c *smtpConn) send(line string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		c.t.Fatalf("sending %q: %v", line, err)
	}
}

func (c *smtpConn) cmd(line string) (int, string) {
	c.t.Helper()
	c.send(line)
	return c.reply()
}

// closed reports whether the peer closed the connection.
func (c *smtpConn) closed() bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.tp.R.ReadByte()
	return err != nil
}

// marker returns the [rw ...] tag of a reply's first line, or "".
func marker(text string) string {
	first, _, _ := strings.Cut(text, "\n")
	i := strings.Index(first, "[rw ")
	if i < 0 {
		return ""
	}
	j := strings.Index(first[i:], "]")
	return first[i : i+j+1]
}

// cmdOf returns the cmd= value of a marked reply.
func cmdOf(text string) string {
	m := marker(text)
	i := strings.Index(m, " cmd=")
	j := strings.Index(m, " ehlo=")
	if i < 0 || j < 0 {
		return "<unmarked>"
	}
	return m[i+len(" cmd=") : j]
}

// testCert writes a self-signed certificate for name and returns its
// config and the PEM files.
func testCert(t *testing.T, name string) (*tls.Config, string, string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := postfixtest.WriteCert(certFile, keyFile, name); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, certFile, keyFile
}
