package proxy

import (
	"strings"
	"testing"
)

// TestEveryReplyKindThroughPostfix drives one session through the proxy to
// Postfix and checks, for every kind of reply, that the policy rewrote it
// and saw KumoMTA's command value: the raw line for errors, "DATA" after
// the body, nil for the banner and other successes.
func TestEveryReplyKindThroughPostfix(t *testing.T) {
	pf := needPostfix(t)
	tlsCfg, _, _ := testCert(t, "proxy.test")
	addr := startProxy(t, startRewrited(t), Config{Backend: pf.Addr, TLS: tlsCfg})
	c := dialSMTP(t, addr)

	code, banner := c.reply()
	if code != 220 || !strings.Contains(banner, "ESMTP") || cmdOf(banner) != "nil" {
		t.Fatalf("banner %d %q: want a marked 220 with cmd=nil", code, banner)
	}
	if !strings.Contains(banner, "[from=127.0.0.1:") || !strings.Contains(banner, "host=proxy.test]") {
		t.Errorf("banner %q: conn_meta received_from/hostname not seen by the policy", banner)
	}

	code, ehlo := c.cmd("ehlo client.test")
	if code != 250 || cmdOf(ehlo) != "nil" || !strings.Contains(marker(ehlo), "ehlo=nil") {
		t.Fatalf("EHLO %d %q: want a marked 250, cmd=nil, no ehlo_domain yet", code, ehlo)
	}
	for _, dropped := range []string{"CHUNKING", "XCLIENT", "XFORWARD"} {
		if strings.Contains(ehlo, dropped) {
			t.Errorf("EHLO reply offers %s, which the proxy drops:\n%s", dropped, ehlo)
		}
	}
	for _, kept := range []string{"PIPELINING", "SIZE", "8BITMIME", "STARTTLS"} {
		if !strings.Contains(ehlo, kept) {
			t.Errorf("EHLO reply lacks %s:\n%s", kept, ehlo)
		}
	}

	longLine := "NOOP " + strings.Repeat("x", 600)
	steps := []struct {
		send     string
		code     int
		command  string // what the policy saw
		textHas  string
		dataBody string // sent after a 354
	}{
		{send: "NOOP", code: 250, command: "nil"},
		{send: "mail from:<" + pf.RejectFrom + ">", code: 554, command: "mail from:<" + pf.RejectFrom + ">", textHas: "5.7.1"},
		{send: "MAIL FROM:<bad", code: 501, command: "MAIL FROM:<bad", textHas: "5.1.7"},
		{send: "MAIL FROM:<alice@client.test>", code: 250, command: "nil"},
		{send: "rcpt to:<" + pf.RejectRcpt + ">", code: 550, command: "rcpt to:<" + pf.RejectRcpt + ">", textHas: "5.1.1"},
		{send: "Rcpt To:<carol@elsewhere.test>", code: 554, command: "Rcpt To:<carol@elsewhere.test>", textHas: "Relay access denied"},
		{send: "RCPT TO:<bob@example.com>", code: 250, command: "nil"},
		{send: "data", code: 354, command: "nil", dataBody: "Subject: hi\r\n\r\n..leading dot\r\ncaf\xc3\xa9\r\n.\r\n"},
		{code: 250, command: "DATA", textHas: "queued as"},
		{send: "RSET", code: 250, command: "nil"},
		{send: "MAIL FROM:<alice@client.test>", code: 250, command: "nil"},
		{send: "RCPT TO:<bob@example.com>", code: 250, command: "nil"},
		{send: "DATA", code: 354, command: "nil", dataBody: "Subject: " + pf.RejectSubject + "\r\n\r\nbody\r\n.\r\n"},
		{code: 550, command: "DATA", textHas: "message content refused"},
		{send: "data", code: 503, command: "data", textHas: "5.5.1"},
		{send: "VRFY bob@example.com", code: 252, command: "nil"},
		{send: "FOO bar", code: 500, command: "FOO bar", textHas: "5.5.2"},
		{send: "auth plain AGFsaWNlAHdyb25n", code: 535, command: "auth plain AGFsaWNlAHdyb25n", textHas: "5.7.8"},
		{send: "XCLIENT ADDR=192.0.2.1", code: 502, command: "XCLIENT ADDR=192.0.2.1", textHas: "5.5.1"},
		{send: "BDAT 7 LAST\r\nhello", code: 502, command: "BDAT 7 LAST", textHas: "BDAT"},
		{send: longLine, code: 500, command: "nil", textHas: "5.5.2"},
		{send: "HELO again.test", code: 250, command: "nil"},
		{send: "NOOP", code: 250, command: "nil", textHas: "ehlo=again.test"},
		{send: "QUIT", code: 221, command: "nil"},
	}
	lastN := ""
	for _, st := range steps {
		name := st.send
		if name == "" {
			name = "after the body"
		}
		if st.send != "" {
			c.send(st.send)
		}
		code, text := c.reply()
		if code != st.code {
			t.Fatalf("%.40q: got %d %q, want %d", name, code, text, st.code)
		}
		if got := cmdOf(text); got != st.command {
			t.Errorf("%.40q: the policy saw cmd=%s, want %s (reply %q)", name, got, st.command, text)
		}
		if st.textHas != "" && !strings.Contains(text, st.textHas) {
			t.Errorf("%.40q: reply %q lacks %q", name, text, st.textHas)
		}
		// The policy's set_meta counter grows by one per reply: conn_meta
		// persists for the connection.
		m := marker(text)
		n := m[strings.Index(m, "n=")+2 : strings.Index(m, " cmd=")]
		if n == lastN {
			t.Errorf("%.40q: set_meta counter did not advance (%s)", name, m)
		}
		lastN = n
		if st.dataBody != "" {
			if _, err := c.conn.Write([]byte(st.dataBody)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !c.closed() {
		t.Error("connection still open after QUIT")
	}
}
