package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rewrited/rewrited/client"
)

// Client line limits: RFC 5321 4.5.3.1.4 for commands (CRLF included),
// RFC 4954 4 for SASL responses.
const (
	maxCommandLine = 512
	maxAuthLine    = 12288
	// maxDiscard bounds what is read past a line limit before the
	// client is taken for garbage and disconnected.
	maxDiscard = 64 << 10
	ioBuffer   = 4096
)

var (
	errLineTooLong = errors.New("line too long")
	errGarbage     = errors.New("client sends endless lines")
)

// lineKind says how the client's next line is read.
type lineKind int

const (
	kindCommand lineKind = iota // an SMTP command
	kindAuth                    // a SASL response after a 334 reply
)

type clientLine struct {
	text string
	kind lineKind
	err  error
}

type backendReply struct {
	status int
	lines  []string
	err    error
}

// waitKind is what a queued entry waits for.
type waitKind int

const (
	waitCommand  waitKind = iota // the backend's reply to a command line
	waitAuthLine                 // the backend's reply to a SASL response
	waitBody                     // the backend's reply after the message body
	waitOwn                      // nothing: the proxy's own reply, sent in turn
)

// queued is a reply the client is owed, in the order of its commands.
type queued struct {
	kind  waitKind
	line  string // the client's line as typed, CRLF removed
	verb  string // its first word, upper case
	own   client.Reply
	after func() bool // runs after an own reply is sent; false ends the session
	// tooLong marks the "*" sent for a SASL line over maxAuthLine: the
	// client gets RFC 4954's reply, not the backend's to the cancel.
	tooLong bool
}

// command is the command value KumoMTA gives a reply to q: "DATA" after
// the body, the raw line for errors (invalid UTF-8 replaced), none for other
// successes.
func (q queued) command(status int) string {
	switch {
	case q.kind == waitBody:
		return "DATA"
	case q.tooLong:
		return "" // the line was not read whole
	case status >= 400:
		// The command travels as a protobuf string, which must be UTF-8.
		return strings.ToValidUTF8(q.line, "\uFFFD")
	default:
		return ""
	}
}

// holds reports whether the client's next line depends on this command's
// reply, so nothing more is read until it is answered.
func holds(verb string) bool {
	switch verb {
	case "DATA", "AUTH", "QUIT", "STARTTLS":
		return true
	}
	return false
}

type session struct {
	srv *Server
	cfg *Config

	implicitTLS bool
	conn        net.Conn // the client, *tls.Conn once TLS is up
	cr          *bufio.Reader
	backend     net.Conn
	br          *bufio.Reader
	bw          *bufio.Writer
	meta        *client.ConnMeta
	tlsActive   bool

	ctx    context.Context
	cancel context.CancelFunc

	queue   []queued
	hold    bool // a holding command is unanswered
	reading bool // a client line is requested
	closing bool // shutdown asked: end once idle

	want    chan lineKind
	lines   chan clientLine
	replies chan backendReply
	done    chan struct{}

	mu        sync.Mutex
	conns     []net.Conn // every raw connection, for abort
	aborted   chan struct{}
	abortOnce sync.Once
}

func newSession(srv *Server, conn net.Conn, implicitTLS bool) *session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{
		srv:         srv,
		cfg:         &srv.cfg,
		implicitTLS: implicitTLS,
		conn:        conn,
		cr:          bufio.NewReaderSize(conn, ioBuffer),
		ctx:         ctx,
		cancel:      cancel,
		want:        make(chan lineKind),
		lines:       make(chan clientLine),
		replies:     make(chan backendReply),
		done:        make(chan struct{}),
		aborted:     make(chan struct{}),
	}
	s.conns = append(s.conns, conn)
	return s
}

// abort closes every connection of the session now.
func (s *session) abort() {
	s.abortOnce.Do(func() { close(s.aborted) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
}

func (s *session) track(c net.Conn) {
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
}

func (s *session) close() {
	close(s.done)
	s.cancel()
	s.abort()
}

// run is the whole session; overLimit says the connection is beyond
// MaxConnections.
func (s *session) run(overLimit bool) {
	defer s.close()
	if s.implicitTLS && !s.handshake() {
		return
	}
	s.meta = client.NewConnMeta(map[string]any{
		"received_from":      s.conn.RemoteAddr().String(),
		"received_via":       s.conn.LocalAddr().String(),
		"hostname":           s.cfg.Hostname,
		"reception_protocol": "ESMTP",
	})
	if s.tlsActive {
		s.setTLSMeta()
	}
	if overLimit {
		s.send(client.Reply{Status: 421, Text: "4.7.0 " + s.cfg.Hostname + " Error: too many connections"})
		return
	}
	status, lines, err := s.connectBackend()
	if err != nil {
		s.cfg.Logger.Warn("backend unavailable", "backend", s.cfg.Backend, "err", err)
		s.send(client.Reply{Status: 421, Text: "4.3.0 " + s.cfg.Hostname + " Service not available: backend unreachable"})
		return
	}
	if s.send(client.Reply{Status: status, Text: strings.Join(lines, "\n")}) {
		s.quitBackend()
		return
	}
	go s.readClient()
	go s.readBackend(s.br)
	s.loop()
}

func (s *session) loop() {
	for {
		if !s.sendOwn() {
			return
		}
		if s.closing && len(s.queue) == 0 && !s.hold {
			s.send(client.Reply{Status: 421, Text: "4.3.2 " + s.cfg.Hostname + " Service shutting down, closing connection"})
			s.quitBackend()
			return
		}
		if !s.reading && !s.hold && !s.closing && len(s.queue) < DefaultMaxPipelined {
			s.request(kindCommand)
		}
		var (
			timer   *time.Timer
			timeout <-chan time.Time
		)
		if len(s.queue) > 0 {
			timer = time.NewTimer(s.cfg.CommandTimeout)
			timeout = timer.C
		}
		var quit <-chan struct{}
		if !s.closing {
			quit = s.srv.quit
		}
		var ok bool
		select {
		case l := <-s.lines:
			s.reading = false
			ok = s.onClientLine(l)
		case r := <-s.replies:
			ok = s.onReply(r)
		case <-timeout:
			ok = s.failBackend(fmt.Errorf("no reply within %v", s.cfg.CommandTimeout))
		case <-quit:
			s.closing, ok = true, true
		case <-s.aborted:
		}
		if timer != nil {
			timer.Stop()
		}
		if !ok {
			return
		}
	}
}

func (s *session) request(kind lineKind) {
	s.reading = true
	s.want <- kind
}

// readClient reads one client line per request from the session loop,
// which leaves the connection alone while a read is requested.
func (s *session) readClient() {
	for {
		var kind lineKind
		select {
		case kind = <-s.want:
		case <-s.done:
			return
		}
		limit := maxCommandLine
		if kind == kindAuth {
			limit = maxAuthLine
		}
		_ = s.conn.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		text, err := readLine(s.cr, limit)
		select {
		case s.lines <- clientLine{text: text, kind: kind, err: err}:
		case <-s.done:
			return
		}
	}
}

// readLine reads a line of at most limit octets with its line end; a
// longer line is consumed up to its end and reported as errLineTooLong.
func readLine(r *bufio.Reader, limit int) (string, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			return "", discardLine(r, chunk, err)
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return "", err
		}
		line = bytes.TrimSuffix(line[:len(line)-1], []byte("\r"))
		return string(line), nil
	}
}

func discardLine(r *bufio.Reader, chunk []byte, err error) error {
	discarded := len(chunk)
	for errors.Is(err, bufio.ErrBufferFull) {
		if discarded > maxDiscard {
			return errGarbage
		}
		chunk, err = r.ReadSlice('\n')
		discarded += len(chunk)
	}
	if err != nil {
		return err
	}
	return errLineTooLong
}

func (s *session) readBackend(br *bufio.Reader) {
	for {
		status, lines, err := readReply(br)
		select {
		case s.replies <- backendReply{status: status, lines: lines, err: err}:
		case <-s.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// send passes r through the rewrite and writes the result; it reports
// whether the session must end (a 421 or a client that is gone).
func (s *session) send(r client.Reply) (end bool) {
	res := s.cfg.Rewriter.RewriteConn(s.ctx, r, s.meta)
	if r.Status/100 == 3 && res.Status/100 != 3 && res.Status != 421 {
		// The backend waits for the body or a SASL line: a client told
		// otherwise would desynchronise the dialogue.
		s.cfg.Logger.Warn("policy changed an intermediate reply's class: original sent", "status", r.Status, "rewritten", res.Status)
		res.Reply, res.CloseConnection = r, false
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if _, err := io.WriteString(s.conn, res.Wire()); err != nil {
		return true
	}
	return res.CloseConnection
}

// sendOwn sends the own replies at the head of the queue; false ends the
// session.
func (s *session) sendOwn() bool {
	for len(s.queue) > 0 && s.queue[0].kind == waitOwn {
		q := s.queue[0]
		s.queue = s.queue[1:]
		if s.send(q.own) {
			s.quitBackend()
			return false
		}
		if q.after != nil && !q.after() {
			return false
		}
	}
	return true
}

func (s *session) enqueueOwn(status int, text, command string) {
	s.queue = append(s.queue, queued{kind: waitOwn, own: client.Reply{Status: status, Text: text, Command: command}})
}

func (s *session) onClientLine(l clientLine) bool {
	if l.err != nil {
		switch {
		case errors.Is(l.err, errLineTooLong):
			if l.kind == kindAuth {
				// The backend waits for a SASL response: cancel the exchange.
				return s.forward(queued{kind: waitAuthLine, line: "*", tooLong: true})
			}
			s.enqueueOwn(500, "5.5.2 Error: line too long", "")
			return true
		case isTimeout(l.err) && len(s.queue) > 0:
			// The client waits for a slow backend: it is not idle.
			s.request(l.kind)
			return true
		case isTimeout(l.err):
			s.send(client.Reply{Status: 421, Text: "4.4.2 " + s.cfg.Hostname + " Error: timeout exceeded"})
		case errors.Is(l.err, errGarbage):
			s.send(client.Reply{Status: 421, Text: "4.7.0 " + s.cfg.Hostname + " Error: line too long, closing connection"})
		}
		s.quitBackend()
		return false
	}
	if l.kind == kindAuth {
		return s.forward(queued{kind: waitAuthLine, line: l.text})
	}
	verb := strings.ToUpper(firstWord(l.text))
	switch verb {
	case "STARTTLS":
		switch {
		case s.cfg.TLS == nil:
			s.enqueueOwn(454, "4.7.0 TLS not available", l.text)
		case s.tlsActive:
			s.enqueueOwn(503, "5.5.1 Error: TLS already active", l.text)
		default:
			s.hold = true
			s.queue = append(s.queue, queued{kind: waitOwn, own: client.Reply{Status: 220, Text: "2.0.0 Ready to start TLS"}, after: s.startTLS})
		}
		return true
	case "BDAT":
		return s.refuseBDAT(l.text)
	case "XCLIENT", "XFORWARD":
		// The client's address is the proxy's to send.
		s.enqueueOwn(502, "5.5.1 Error: command not available", l.text)
		return true
	}
	if holds(verb) {
		s.hold = true
	}
	return s.forward(queued{kind: waitCommand, line: l.text, verb: verb})
}

// refuseBDAT skips the chunk announced by a BDAT command, which the proxy
// does not relay (CHUNKING is not offered).
func (s *session) refuseBDAT(line string) bool {
	fields := strings.Fields(line)
	if len(fields) < 2 {
		s.enqueueOwn(501, "5.5.4 Syntax: BDAT size [LAST]", line)
		return true
	}
	size, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || size < 0 {
		s.enqueueOwn(501, "5.5.4 Syntax: BDAT size [LAST]", line)
		return true
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if _, err := io.CopyN(io.Discard, s.cr, size); err != nil {
		s.quitBackend()
		return false
	}
	s.enqueueOwn(502, "5.5.1 Error: BDAT not supported, use DATA", line)
	return true
}

// forward sends q's line to the backend and queues its reply.
func (s *session) forward(q queued) bool {
	s.queue = append(s.queue, q)
	_ = s.backend.SetWriteDeadline(time.Now().Add(s.cfg.CommandTimeout))
	_, _ = s.bw.WriteString(q.line)
	_, _ = s.bw.WriteString("\r\n")
	if err := s.bw.Flush(); err != nil {
		return s.failBackend(err)
	}
	return true
}

func (s *session) onReply(r backendReply) bool {
	if r.err != nil {
		return s.failBackend(r.err)
	}
	if len(s.queue) == 0 {
		// A unilateral reply, typically the backend's own 421.
		if s.send(client.Reply{Status: r.status, Text: strings.Join(r.lines, "\n")}) {
			s.quitBackend()
			return false
		}
		return true
	}
	q := s.queue[0]
	s.queue = s.queue[1:]
	if q.tooLong && r.status >= 400 {
		// The backend took the cancel; RFC 4954 6 names the cause.
		r = backendReply{status: 500, lines: []string{"5.5.6 Authentication Exchange line is too long"}}
	}
	lines := r.lines
	if q.verb == "EHLO" && r.status == 250 {
		lines = filterEHLO(lines, s.cfg.TLS != nil && !s.tlsActive)
	}
	if s.send(client.Reply{Status: r.status, Text: strings.Join(lines, "\n"), Command: q.command(r.status)}) {
		s.quitBackend()
		return false
	}
	switch {
	case q.verb == "QUIT":
		s.closeBackend()
		return false
	case (q.verb == "EHLO" || q.verb == "HELO") && r.status/100 == 2:
		s.meta.Set("ehlo_domain", strings.TrimSpace(q.line[len(q.verb):]))
	case q.verb == "DATA" && r.status == 354:
		return s.relayBody()
	case (q.verb == "AUTH" || q.kind == waitAuthLine) && r.status == 334:
		s.request(kindAuth)
		return true
	}
	if q.kind == waitBody || q.kind == waitAuthLine || holds(q.verb) {
		s.hold = false
	}
	return true
}

var crlf = []byte("\r\n")

// relayBody copies the message from the client to the backend byte for
// byte up to and including the final "." line, then queues the reply.
func (s *session) relayBody() bool {
	lineStart := true
	for {
		if s.cr.Buffered() == 0 {
			_ = s.conn.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		}
		chunk, err := s.cr.ReadSlice('\n')
		if len(chunk) > 0 {
			last := lineStart && string(chunk) == ".\r\n"
			if s.bw.Available() < len(chunk) || last {
				_ = s.backend.SetWriteDeadline(time.Now().Add(s.cfg.CommandTimeout))
			}
			if _, werr := s.bw.Write(chunk); werr != nil {
				return s.failBackend(werr)
			}
			if last {
				if werr := s.bw.Flush(); werr != nil {
					return s.failBackend(werr)
				}
				s.queue = append(s.queue, queued{kind: waitBody, line: "DATA"})
				return true
			}
			lineStart = bytes.HasSuffix(chunk, crlf)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if isTimeout(err) {
				s.send(client.Reply{Status: 421, Text: "4.4.2 " + s.cfg.Hostname + " Error: timeout exceeded"})
			}
			s.quitBackend()
			return false
		}
	}
}

// failBackend answers the oldest unanswered command with a 421 when the
// backend fails (closed, timed out, garbled) and ends the session.
func (s *session) failBackend(err error) bool {
	s.cfg.Logger.Warn("backend failed", "backend", s.cfg.Backend, "err", err)
	command := ""
	if len(s.queue) > 0 {
		command = s.queue[0].command(421)
	}
	s.send(client.Reply{Status: 421, Text: "4.4.2 " + s.cfg.Hostname + " Error: lost connection to the mail server", Command: command})
	s.closeBackend()
	return false
}

// quitBackend ends the backend session politely without waiting for its
// reply.
func (s *session) quitBackend() {
	if s.backend == nil {
		return
	}
	_ = s.backend.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.bw.WriteString("QUIT\r\n")
	_ = s.bw.Flush()
	s.closeBackend()
}

func (s *session) closeBackend() {
	if s.backend != nil {
		_ = s.backend.Close()
	}
}

// startTLS runs after the 220 reply to STARTTLS.
func (s *session) startTLS() bool {
	if s.cr.Buffered() > 0 {
		// Commands pipelined after STARTTLS would be taken as sent over TLS.
		s.cfg.Logger.Warn("client sent data after STARTTLS before the handshake", "client", s.conn.RemoteAddr().String())
		s.quitBackend()
		return false
	}
	if !s.handshake() {
		s.quitBackend()
		return false
	}
	s.setTLSMeta()
	s.meta.Set("ehlo_domain", nil)
	s.hold = false
	return true
}

// handshake turns the client connection into a TLS server connection.
func (s *session) handshake() bool {
	tc := tls.Server(s.conn, s.cfg.TLS)
	_ = tc.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if err := tc.HandshakeContext(s.ctx); err != nil {
		s.cfg.Logger.Info("TLS handshake failed", "client", s.conn.RemoteAddr().String(), "err", err)
		return false
	}
	_ = tc.SetDeadline(time.Time{})
	s.conn = tc
	s.cr = bufio.NewReaderSize(tc, ioBuffer)
	s.tlsActive = true
	return true
}

func (s *session) setTLSMeta() {
	st := s.conn.(*tls.Conn).ConnectionState()
	s.meta.Set("tls_cipher", tls.CipherSuiteName(st.CipherSuite))
	s.meta.Set("tls_protocol_version", tls.VersionName(st.Version))
	if len(st.PeerCertificates) > 0 {
		cert := st.PeerCertificates[0]
		names := []string{cert.Subject.String()}
		names = append(names, cert.DNSNames...)
		s.meta.Set("tls_peer_subject_name", names)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
