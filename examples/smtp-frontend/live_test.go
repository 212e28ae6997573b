package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	netsmtp "net/smtp"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rewrited/rewrited/internal/rewritedtest"
)

// recordingConn keeps everything the server sends.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	got bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.got.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) received() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got.String()
}

func TestNetSMTPSeesRewrittenDataReply(t *testing.T) {
	rewrited := rewritedtest.Start(t) // serves the bundled example policy
	addr := startFrontend(t, rewrited.Addr)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingConn{Conn: conn}
	c, err := netsmtp.NewClient(rec, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, step := range []func() error{
		func() error { return c.Hello("client.test") },
		func() error { return c.Mail("alice@client.test") },
		func() error { return c.Rcpt("bob@mx.test") },
		func() error {
			w, err := c.Data()
			if err != nil {
				return err
			}
			fmt.Fprint(w, "Subject: hi\r\n\r\nHello Bob.\r\n")
			return w.Close() // reads the final DATA reply
		},
		c.Quit,
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	want := regexp.MustCompile(`\r\n250-super fantastic!\r\n250 OK ids=[0-9a-f]{32}\r\n`)
	if wire := rec.received(); !want.MatchString(wire) {
		t.Errorf("no rewritten DATA reply on the wire:\n%s", wire)
	}
}

func TestOriginalReplyWhenRewritedIsDown(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup returns the target and, for a mid-run failure, the message
		// index at which to call kill.
		setup func(t *testing.T) (target string, killAt int, kill func())
	}{
		{"stopped", func(t *testing.T) (string, int, func()) {
			p := rewritedtest.Start(t)
			p.Kill()
			return p.Addr, -1, nil
		}},
		{"killed mid-run", func(t *testing.T) (string, int, func()) {
			p := rewritedtest.Start(t)
			return p.Addr, 10, p.Kill
		}},
		{"accepts and never answers", func(t *testing.T) (string, int, func()) {
			return rewritedtest.SilentListener(t), -1, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, killAt, kill := tc.setup(t)
			c := dialSMTP(t, startFrontend(t, target), "EHLO")
			for i := 0; i < 30; i++ {
				if i == killAt {
					kill()
				}
				// A rejected sender passes through the client too.
				if r := c.timedCmd("MAIL FROM:<x@reject.example>"); r.code != 550 || r.took > budget+slack {
					t.Errorf("message %d: MAIL reply %+v", i, r)
				}
				r := c.send("alice@client.test", "bob@mx.test")
				if r.code != 250 || r.took > budget+slack {
					t.Errorf("message %d: DATA reply %+v, want 250 within %v", i, r, budget)
				}
				// Before the kill the policy rewrites (the first call also connects,
				// so it may fall back); after it, or with no rewrited, the original goes out.
				switch {
				case killAt > 0 && i > 0 && i < killAt:
					if !rewrittenData.MatchString(r.msg) {
						t.Errorf("message %d before the kill: %q", i, r.msg)
					}
				case killAt > 0 && i == 0:
				default:
					if !originalData.MatchString(r.msg) {
						t.Errorf("message %d: %q, want the original reply", i, r.msg)
					}
				}
			}
		})
	}
}

func TestFleetLosesNoDecisionWhenAReplicaStops(t *testing.T) {
	procs := []*rewritedtest.Proc{rewritedtest.Start(t), rewritedtest.Start(t), rewritedtest.Start(t)}
	target := procs[0].Addr + "," + procs[1].Addr + "," + procs[2].Addr
	addr := startFrontend(t, target)

	const senders, perSender, killAfter = 3, 100, 100
	type outcome struct {
		started   time.Time
		rewritten bool
	}
	var (
		sent     atomic.Int64
		killedAt atomic.Pointer[time.Time]
		mu       sync.Mutex
		outcomes []outcome
		wg       sync.WaitGroup
	)
	for s := 0; s < senders; s++ {
		c := dialSMTP(t, addr, "EHLO")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perSender; i++ {
				if sent.Add(1) == killAfter {
					procs[0].Kill()
					now := time.Now()
					killedAt.Store(&now)
				}
				start := time.Now()
				r := c.send("alice@client.test", "bob@mx.test")
				if r.code != 250 || r.took > budget+slack {
					t.Errorf("DATA reply %+v, want 250 within %v", r, budget)
				}
				mu.Lock()
				outcomes = append(outcomes, outcome{start, rewrittenData.MatchString(r.msg)})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	// Fallbacks are allowed only for calls in flight on the killed replica
	// or racing its disappearance: a short window after the kill.
	const window = 500 * time.Millisecond
	kill := *killedAt.Load()
	var rewritten, fallbacks, late int
	for _, o := range outcomes {
		switch {
		case o.rewritten:
			rewritten++
		case o.started.Before(kill.Add(-window)):
			t.Errorf("fallback %v before the kill", kill.Sub(o.started))
		case o.started.After(kill.Add(window)):
			late++
		default:
			fallbacks++
		}
	}
	t.Logf("%d messages: %d rewritten, %d fallbacks around the kill, %d later", len(outcomes), rewritten, fallbacks, late)
	if late > 0 || fallbacks > senders+2 {
		t.Errorf("lost decisions: %d fallbacks around the kill, %d after it", fallbacks, late)
	}
}

func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "smtp-frontend")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	store := filepath.Join(t.TempDir(), "mail")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close()

	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--rewrited", refused, "--timeout", budget.String(),
		"--store", store, "--hostname", "mx.bin", "--reject-domain", "reject.example, other.example")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := regexp.MustCompile(`msg=listening addr=(\S+)`).FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
		}
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(20 * time.Second):
		t.Fatal("the frontend did not report its address")
	}

	c := dialSMTP(t, addr, "EHLO")
	if r := c.timedCmd("MAIL FROM:<a@OTHER.example>"); r.code != 550 {
		t.Errorf("MAIL reply %+v", r)
	}
	r := c.send("alice@client.test", "bob@mx.test")
	if r.code != 250 || !originalData.MatchString(r.msg) || r.took > budget+slack {
		t.Errorf("DATA reply %+v", r)
	}
	if body, err := readFile(store, strings.TrimPrefix(r.msg, "OK ids=")+".eml"); err != nil || !strings.Contains(body, "Hello.") {
		t.Errorf("stored message %q, %v", body, err)
	}
	c.cmd("QUIT")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("the frontend did not stop on SIGTERM")
	}
}
