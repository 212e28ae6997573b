package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"google.golang.org/grpc"

	"github.com/rewrited/rewrited/client"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

const (
	budget = 100 * time.Millisecond
	// slack is how late a call may return before it counts as ignoring its
	// deadline: a busy shared machine can deschedule a caller that honours
	// it for a second or more, while one that ignores it waits for ever on
	// a peer that never answers.
	slack = 2 * time.Second
)

var (
	originalData  = regexp.MustCompile(`^OK ids=[0-9a-f]{32}$`)
	rewrittenData = regexp.MustCompile(`^super fantastic!\nOK ids=[0-9a-f]{32}$`)
)

// startFrontend runs the frontend on 127.0.0.1 with a client for target
// and returns its address.
func startFrontend(t *testing.T, target string, opts ...client.Option) string {
	t.Helper()
	rw, err := newTestClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rw.Close() })
	return serveOn(t, newServer(rw, frontendConfig{Hostname: "mx.test", RejectDomains: []string{"reject.example"}, MaxBytes: 1 << 20}))
}

func newTestClient(target string, opts ...client.Option) (*client.Client, error) {
	return client.New(target, append([]client.Option{client.WithTimeout(budget)}, opts...)...)
}

// serveOn runs srv on a fresh 127.0.0.1 listener until the test ends.
func serveOn(t *testing.T, srv *smtp.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = serve(srv, l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return l.Addr().String()
}

func readFile(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	return string(b), err
}

// chunkConn is a net.Conn whose reads return the given chunks in turn.
type chunkConn struct {
	net.Conn
	chunks []string
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks = c.chunks[1:]
	return n, nil
}

// smtpClient is a raw SMTP client that shows every reply as sent.
type smtpClient struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func dialSMTP(t *testing.T, addr, greeting string) *smtpClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	c := &smtpClient{t: t, conn: conn, tp: textproto.NewConn(conn)}
	if code, msg := c.read(); code != 220 {
		t.Fatalf("banner %d %q", code, msg)
	}
	if code, msg := c.cmd("%s client.test", greeting); code != 250 {
		t.Fatalf("%s: %d %q", greeting, code, msg)
	}
	return c
}

func (c *smtpClient) read() (int, string) {
	c.t.Helper()
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	return code, msg
}

func (c *smtpClient) cmd(format string, args ...any) (int, string) {
	c.t.Helper()
	if err := c.tp.PrintfLine(format, args...); err != nil {
		c.t.Fatal(err)
	}
	return c.read()
}

// reply is one SMTP reply and how long the frontend took to send it.
type reply struct {
	code int
	msg  string // lines joined by "\n"
	took time.Duration
}

func (c *smtpClient) timedCmd(format string, args ...any) reply {
	c.t.Helper()
	start := time.Now()
	code, msg := c.cmd(format, args...)
	return reply{code, msg, time.Since(start)}
}

// send runs one transaction and returns the final DATA reply.
func (c *smtpClient) send(from, to string) reply {
	c.t.Helper()
	if r := c.timedCmd("MAIL FROM:<%s>", from); r.code != 250 {
		c.t.Fatalf("MAIL: %+v", r)
	}
	if r := c.timedCmd("RCPT TO:<%s>", to); r.code != 250 {
		c.t.Fatalf("RCPT: %+v", r)
	}
	if code, msg := c.cmd("DATA"); code != 354 {
		c.t.Fatalf("DATA: %d %q", code, msg)
	}
	w := c.tp.DotWriter()
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: test\r\n\r\nHello.\r\n", from, to)
	if err := w.Close(); err != nil {
		c.t.Fatal(err)
	}
	start := time.Now()
	code, msg := c.read()
	return reply{code, msg, time.Since(start)}
}

// closed reports whether the server closed the connection.
func (c *smtpClient) closed() bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.tp.ReadLine()
	return err != nil
}

// fakeRewrited is an in-process rewrited on 127.0.0.1 with a scripted policy.
type fakeRewrited struct {
	rewritev1.UnimplementedRewriteServiceServer
	addr   string
	policy func(*rewritev1.RewriteResponseRequest) *rewritev1.RewriteResponseResponse

	mu   sync.Mutex
	reqs []*rewritev1.RewriteResponseRequest
}

func startFakeRewrited(t *testing.T, policy func(*rewritev1.RewriteResponseRequest) *rewritev1.RewriteResponseResponse, opts ...grpc.ServerOption) *fakeRewrited {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRewrited{addr: l.Addr().String(), policy: policy}
	s := grpc.NewServer(opts...)
	rewritev1.RegisterRewriteServiceServer(s, f)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return f
}

func (f *fakeRewrited) RewriteResponse(_ context.Context, req *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	return f.policy(req), nil
}

func (f *fakeRewrited) requests() []*rewritev1.RewriteResponseRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*rewritev1.RewriteResponseRequest(nil), f.reqs...)
}
