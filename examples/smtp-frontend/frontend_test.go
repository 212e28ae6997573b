package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"google.golang.org/protobuf/types/known/structpb"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

// keepPolicy keeps every reply.
func keepPolicy(req *rewritev1.RewriteResponseRequest) *rewritev1.RewriteResponseResponse {
	return &rewritev1.RewriteResponseResponse{Status: req.GetStatus(), Response: req.GetResponse(), Outcome: rewritev1.Outcome_OUTCOME_UNCHANGED}
}

func TestRequestsCarryCommandAndConnMeta(t *testing.T) {
	for _, greeting := range []string{"EHLO", "HELO"} {
		t.Run(greeting, func(t *testing.T) {
			rw := startFakeRewrited(t, keepPolicy)
			addr := startFrontend(t, rw.addr)
			c := dialSMTP(t, addr, greeting)

			for _, tc := range []struct {
				line     string
				wantCode int
			}{
				{"MAIL FROM:<bad@reject.example>", 550},
				{"MAIL FROM:<good@client.test> SIZE=100", 250},
				{"RCPT TO:<someone@REJECT.example>", 550},
			} {
				if r := c.timedCmd("%s", tc.line); r.code != tc.wantCode || r.took > budget+slack {
					t.Errorf("%s: %+v", tc.line, r)
				}
			}
			final := c.send("a@client.test", "b@mx.test")
			if final.code != 250 || !originalData.MatchString(final.msg) {
				t.Errorf("DATA reply %+v", final)
			}

			reqs := rw.requests()
			want := []struct {
				status  uint32
				command string
				text    string
			}{
				{550, "MAIL FROM:<bad@reject.example>", "5.7.1 sender <bad@reject.example> is not accepted here"},
				{550, "RCPT TO:<someone@REJECT.example>", "5.7.1 relaying to <someone@REJECT.example> denied"},
				{250, "DATA", final.msg},
			}
			if len(reqs) != len(want) {
				t.Fatalf("%d requests, want %d: %v", len(reqs), len(want), reqs)
			}
			proto := map[string]string{"EHLO": "ESMTP", "HELO": "SMTP"}[greeting]
			for i, w := range want {
				r := reqs[i]
				if r.GetStatus() != w.status || r.GetCommand() != w.command || r.Command == nil || r.GetResponse() != w.text {
					t.Errorf("request %d = %v, want %+v", i, r, w)
				}
				m := r.GetConnMeta().AsMap()
				for k, v := range map[string]any{
					"received_from":      c.conn.LocalAddr().String(),
					"received_via":       addr,
					"hostname":           "mx.test",
					"reception_protocol": proto,
					"ehlo_domain":        "client.test",
				} {
					if m[k] != v {
						t.Errorf("request %d conn_meta[%s] = %v, want %v", i, k, m[k], v)
					}
				}
			}
		})
	}
}

func TestRewrittenRepliesOnTheWire(t *testing.T) {
	rw := startFakeRewrited(t, func(req *rewritev1.RewriteResponseRequest) *rewritev1.RewriteResponseResponse {
		res := keepPolicy(req)
		if strings.HasPrefix(req.GetCommand(), "RCPT") {
			res.Status, res.Response, res.Rewritten = 550, "5.1.1 no such user\nsee https://mx.test/help", true
		}
		return res
	})
	c := dialSMTP(t, startFrontend(t, rw.addr), "EHLO")
	c.cmd("MAIL FROM:<a@client.test>")
	if err := c.tp.PrintfLine("RCPT TO:<x@reject.example>"); err != nil {
		t.Fatal(err)
	}
	// Read raw lines: no enhanced code may be added by go-smtp.
	for _, want := range []string{"550-5.1.1 no such user", "550 see https://mx.test/help"} {
		if line, err := c.tp.ReadLine(); err != nil || line != want {
			t.Errorf("line %q, %v; want %q", line, err, want)
		}
	}
}

func TestSetMetaPersistsPerConnection(t *testing.T) {
	// Like a policy doing conn_meta:set_meta('x_n', (conn_meta:get_meta('x_n') or 0) + 1)
	// and prepending the count to the DATA reply.
	rw := startFakeRewrited(t, func(req *rewritev1.RewriteResponseRequest) *rewritev1.RewriteResponseResponse {
		n, _ := req.GetConnMeta().AsMap()["x_n"].(float64)
		updates, _ := structpb.NewStruct(map[string]any{"x_n": n + 1})
		return &rewritev1.RewriteResponseResponse{
			Status: req.GetStatus(), Response: fmt.Sprintf("seen %d\n%s", int(n)+1, req.GetResponse()),
			Rewritten: true, MetaUpdates: updates, Outcome: rewritev1.Outcome_OUTCOME_REWRITTEN,
		}
	})
	addr := startFrontend(t, rw.addr)
	for conn := 0; conn < 2; conn++ {
		c := dialSMTP(t, addr, "EHLO")
		for i := 1; i <= 3; i++ {
			r := c.send("a@client.test", "b@mx.test")
			if want := fmt.Sprintf("seen %d\n", i); r.code != 250 || !strings.HasPrefix(r.msg, want) {
				t.Errorf("connection %d message %d: %+v, want prefix %q", conn, i, r, want)
			}
		}
	}
}

func TestCloseAfter421(t *testing.T) {
	rw := startFakeRewrited(t, func(req *rewritev1.RewriteResponseRequest) *rewritev1.RewriteResponseResponse {
		res := keepPolicy(req)
		if req.GetCommand() == "DATA" || strings.HasPrefix(req.GetCommand(), "RCPT") {
			res.Status, res.Response, res.Rewritten, res.CloseConnection = 421, "4.7.0 closing", true, true
		}
		return res
	})
	addr := startFrontend(t, rw.addr)

	t.Run("RCPT", func(t *testing.T) {
		c := dialSMTP(t, addr, "EHLO")
		c.cmd("MAIL FROM:<a@client.test>")
		if r := c.timedCmd("RCPT TO:<x@reject.example>"); r.code != 421 || r.msg != "4.7.0 closing" {
			t.Errorf("reply %+v", r)
		}
		if !c.closed() {
			t.Error("connection still open after 421")
		}
	})
	t.Run("DATA", func(t *testing.T) {
		c := dialSMTP(t, addr, "EHLO")
		if r := c.send("a@client.test", "b@mx.test"); r.code != 421 || r.msg != "4.7.0 closing" {
			t.Errorf("reply %+v", r)
		}
		if !c.closed() {
			t.Error("connection still open after 421")
		}
	})
	t.Run("BDAT", func(t *testing.T) {
		c := dialSMTP(t, addr, "EHLO")
		c.cmd("MAIL FROM:<a@client.test>")
		c.cmd("RCPT TO:<b@mx.test>")
		if _, err := fmt.Fprintf(c.conn, "BDAT 4 LAST\r\nHi\r\n"); err != nil {
			t.Fatal(err)
		}
		if code, msg := c.read(); code != 421 || msg != "4.7.0 closing" {
			t.Errorf("reply %d %q", code, msg)
		}
		if !c.closed() {
			t.Error("connection still open after 421")
		}
	})
	t.Run("other connections live on", func(t *testing.T) {
		c := dialSMTP(t, addr, "EHLO")
		if code, _ := c.cmd("NOOP"); code != 250 {
			t.Errorf("NOOP %d", code)
		}
	})
}

func TestStoreAndSizeLimit(t *testing.T) {
	dir := t.TempDir()
	rw := startFakeRewrited(t, keepPolicy)
	rwc, err := newTestClient(rw.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rwc.Close()
	srv := newServer(rwc, frontendConfig{Hostname: "mx.test", StoreDir: dir, MaxBytes: 200})
	addr := serveOn(t, srv)

	c := dialSMTP(t, addr, "EHLO")
	r := c.send("a@client.test", "b@mx.test")
	id := strings.TrimPrefix(r.msg, "OK ids=")
	if r.code != 250 || !originalData.MatchString(r.msg) {
		t.Fatalf("reply %+v", r)
	}
	body, err := readFile(dir, id+".eml")
	if err != nil || !strings.Contains(body, "Hello.") {
		t.Errorf("stored message %q, %v", body, err)
	}

	c.cmd("MAIL FROM:<a@client.test>")
	c.cmd("RCPT TO:<b@mx.test>")
	c.cmd("DATA")
	w := c.tp.DotWriter()
	fmt.Fprintf(w, "Subject: big\r\n\r\n%s\r\n", strings.Repeat("x", 500))
	w.Close()
	if code, msg := c.read(); code != 552 || msg != "5.3.4 message exceeds the size limit" {
		t.Errorf("oversized: %d %q", code, msg)
	}
	if last := rw.requests()[len(rw.requests())-1]; last.GetCommand() != "DATA" || last.GetStatus() != 552 {
		t.Errorf("oversized reply not passed through rewrited: %v", last)
	}
}

func TestCommandLines(t *testing.T) {
	auth := "me@client.test"
	for _, tc := range []struct {
		got, want string
	}{
		{mailCommand("a@b", nil), "MAIL FROM:<a@b>"},
		{mailCommand("", &smtp.MailOptions{}), "MAIL FROM:<>"},
		{mailCommand("a@b", &smtp.MailOptions{Body: smtp.Body8BitMIME, Size: 1234, UTF8: true, RequireTLS: true, Auth: &auth}),
			"MAIL FROM:<a@b> BODY=8BITMIME SIZE=1234 SMTPUTF8 REQUIRETLS AUTH=<me@client.test>"},
		{rcptCommand("x@y", &smtp.RcptOptions{}), "RCPT TO:<x@y>"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestGreetConn(t *testing.T) {
	for _, tc := range []struct {
		chunks []string
		want   bool
	}{
		{[]string{"EHLO a\r\n"}, true},
		{[]string{"helo a\r\n"}, false},
		{[]string{"HE", "LO a\r\nMAIL FROM:<>\r\n"}, false},
		{[]string{"HELO a\r\nEHLO b\r\n"}, true},
		{[]string{"NOOP HELO x\r\n"}, true},
		{nil, true},
	} {
		g := &greetConn{Conn: &chunkConn{chunks: tc.chunks}, atLineStart: true}
		buf := make([]byte, 64)
		for range tc.chunks {
			g.Read(buf)
		}
		if got := g.extended(); got != tc.want {
			t.Errorf("%q: extended = %v, want %v", tc.chunks, got, tc.want)
		}
	}
}

func TestBDATReplyRewritten(t *testing.T) {
	rw := startFakeRewrited(t, func(req *rewritev1.RewriteResponseRequest) *rewritev1.RewriteResponseResponse {
		res := keepPolicy(req)
		if req.GetCommand() == "DATA" && req.GetStatus() == 250 {
			res.Response, res.Rewritten = "super fantastic!\n"+req.GetResponse(), true
		}
		return res
	})
	c := dialSMTP(t, startFrontend(t, rw.addr), "EHLO")
	c.cmd("MAIL FROM:<a@client.test>")
	c.cmd("RCPT TO:<b@mx.test>")
	body := "Subject: x\r\n\r\nHi.\r\n"
	if _, err := fmt.Fprintf(c.conn, "BDAT %d LAST\r\n%s", len(body), body); err != nil {
		t.Fatal(err)
	}
	if code, msg := c.read(); code != 250 || !rewrittenData.MatchString(msg) {
		t.Errorf("BDAT reply %d %q", code, msg)
	}
}
