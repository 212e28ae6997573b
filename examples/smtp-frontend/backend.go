package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/rewrited/rewrited/client"
)

// frontendConfig is what the SMTP side needs besides the rewrite client.
type frontendConfig struct {
	Hostname      string   // our name: the banner, and conn_meta "hostname"
	StoreDir      string   // where accepted messages are written; "" discards them
	RejectDomains []string // MAIL FROM and RCPT TO addresses at these domains are refused
	MaxBytes      int64    // the largest message accepted
	Logger        *slog.Logger
	Tracer        trace.Tracer // spans of the replies; their context goes with the rewrite calls
}

// newServer returns a go-smtp server whose replies pass through rw.
func newServer(rw *client.Client, cfg frontendConfig) *smtp.Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("smtp-frontend")
	}
	s := smtp.NewServer(&backend{rw: rw, cfg: cfg})
	s.Domain = cfg.Hostname
	s.MaxMessageBytes = cfg.MaxBytes
	s.MaxRecipients = 100
	s.ReadTimeout = 5 * time.Minute
	s.WriteTimeout = time.Minute
	return s
}

// serve runs s on l, tracking each connection's greeting verb so conn_meta
// can tell ESMTP from SMTP (go-smtp does not expose it).
func serve(s *smtp.Server, l net.Listener) error {
	return s.Serve(greetListener{l})
}

type backend struct {
	rw  *client.Client
	cfg frontendConfig
}

// NewSession runs when the client's first HELO or EHLO is accepted.
func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	nc := c.Conn()
	s := &session{
		be:   b,
		conn: c,
		meta: client.NewConnMeta(map[string]any{
			"received_from": nc.RemoteAddr().String(),
			"received_via":  nc.LocalAddr().String(),
			"hostname":      b.cfg.Hostname,
		}),
	}
	if g, ok := nc.(*greetConn); ok {
		s.greet = g
	}
	s.noteGreeting()
	return s, nil
}

type session struct {
	be       *backend
	conn     *smtp.Conn
	greet    *greetConn
	meta     *client.ConnMeta
	lastHelo string
}

// noteGreeting records a new HELO/EHLO in conn_meta. KumoMTA sets
// ehlo_domain once per greeting, so a policy's own set_meta of these keys
// lasts until the client greets again.
func (s *session) noteGreeting() {
	helo := s.conn.Hostname()
	if helo == s.lastHelo {
		return
	}
	s.lastHelo = helo
	proto := "ESMTP"
	if s.greet != nil && !s.greet.extended() {
		proto = "SMTP"
	}
	s.meta.Merge(map[string]any{"ehlo_domain": helo, "reception_protocol": proto})
}

// reply passes a reply through rewrited and returns it as the error go-smtp
// writes verbatim. A final 421 is written here and the connection closed,
// because go-smtp keeps the connection open after any reply a session gives.
func (s *session) reply(status int, text, command string) error {
	s.noteGreeting()
	ctx, span := s.be.cfg.Tracer.Start(context.Background(), "smtp.reply", trace.WithAttributes(
		attribute.Int("smtp.status", status), attribute.String("smtp.verb", verb(command))))
	res := s.be.rw.RewriteConn(ctx, client.Reply{Status: status, Text: text, Command: command}, s.meta)
	span.SetAttributes(attribute.Bool("rewrited.rewritten", res.Rewritten), attribute.Bool("rewrited.hedged", res.Hedged))
	if res.Err != nil {
		span.SetStatus(codes.Error, res.Err.Error())
	}
	span.End()
	s.logResult(res)
	if res.CloseConnection {
		nc := s.conn.Conn()
		_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(nc, res.Wire())
		_ = s.conn.Close() // go-smtp's own write of the reply then fails silently
	}
	// NoEnhancedCode: go-smtp would otherwise prefix an enhanced code that the
	// policy did not write. Lines are split on "\n", as Reply.Wire does.
	return &smtp.SMTPError{Code: res.Status, EnhancedCode: smtp.NoEnhancedCode, Message: res.Text}
}

// verb is the command's verb, what a span may carry of it: the rest holds
// addresses.
func verb(command string) string {
	v, _, _ := strings.Cut(command, " ")
	return strings.ToUpper(v)
}

func (s *session) logResult(res client.Result) {
	log := s.be.cfg.Logger
	switch {
	case res.Err == nil:
		log.Debug("reply", "status", res.Status, "rewritten", res.Rewritten, "policy_version", res.PolicyVersion)
	case errors.Is(res.Err, client.ErrBreakerOpen):
		log.Debug("rewrite skipped", "err", res.Err)
	default:
		log.Warn("original reply kept", "status", res.Status, "err", res.Err)
	}
}

func (s *session) Reset()        {}
func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.be.rejects(from) {
		return s.reply(550, fmt.Sprintf("5.7.1 sender <%s> is not accepted here", from), mailCommand(from, opts))
	}
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.be.rejects(to) {
		return s.reply(550, fmt.Sprintf("5.7.1 relaying to <%s> denied", to), rcptCommand(to, opts))
	}
	return nil
}

func (s *session) Data(r io.Reader) error {
	id, err := newID()
	if err == nil {
		err = s.be.store(id, r)
	}
	switch {
	case errors.Is(err, smtp.ErrDataTooLarge):
		return s.reply(552, "5.3.4 message exceeds the size limit", "DATA")
	case err != nil:
		s.be.cfg.Logger.Error("message not stored", "err", err)
		return s.reply(451, "4.3.0 message could not be stored, try again later", "DATA")
	}
	return s.reply(250, "OK ids="+id, "DATA")
}

// rejects reports whether addr is at one of the refused domains.
func (b *backend) rejects(addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	for _, d := range b.cfg.RejectDomains {
		if strings.EqualFold(addr[at+1:], d) {
			return true
		}
	}
	return false
}

// store writes the message to StoreDir/<id>.eml, or discards it.
func (b *backend) store(id string, r io.Reader) error {
	if b.cfg.StoreDir == "" {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	f, err := os.CreateTemp(b.cfg.StoreDir, ".incoming-")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer os.Remove(f.Name()) // no-op once renamed
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := os.Rename(f.Name(), filepath.Join(b.cfg.StoreDir, id+".eml")); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// newID returns a 32-hex-digit message id, like KumoMTA's.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("message id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// mailCommand rebuilds the MAIL command line KumoMTA would pass as
// `command`. go-smtp hands over the parsed path and parameters only, so the
// client's case and parameter order are lost: the line is canonical upper case.
func mailCommand(from string, opts *smtp.MailOptions) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<" + from + ">")
	if opts == nil {
		return b.String()
	}
	if opts.Body != "" {
		b.WriteString(" BODY=" + string(opts.Body))
	}
	if opts.Size > 0 {
		fmt.Fprintf(&b, " SIZE=%d", opts.Size)
	}
	if opts.UTF8 {
		b.WriteString(" SMTPUTF8")
	}
	if opts.RequireTLS {
		b.WriteString(" REQUIRETLS")
	}
	if opts.Auth != nil {
		b.WriteString(" AUTH=<" + *opts.Auth + ">")
	}
	return b.String()
}

// rcptCommand rebuilds the RCPT command line; see mailCommand. The server
// advertises no RCPT extensions, so there are no parameters to restore.
func rcptCommand(to string, _ *smtp.RcptOptions) string {
	return "RCPT TO:<" + to + ">"
}

// greetListener wraps accepted connections in greetConn.
type greetListener struct{ net.Listener }

func (l greetListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &greetConn{Conn: c, atLineStart: true}, nil
}

// greetConn watches the client's lines for the last HELO or EHLO verb.
// It sees message bodies too; a body line starting "HELO " would be
// misread, which only matters if the client greets again with the same name.
type greetConn struct {
	net.Conn
	atLineStart bool
	head        [5]byte
	n           int
	verb        atomic.Value // "EHLO" or "HELO"
}

func (g *greetConn) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	for _, c := range p[:n] {
		if c == '\n' {
			g.atLineStart, g.n = true, 0
			continue
		}
		if !g.atLineStart {
			continue
		}
		g.head[g.n] = c
		g.n++
		if g.n == len(g.head) {
			g.atLineStart = false
			if v := strings.ToUpper(string(g.head[:4])); (v == "EHLO" || v == "HELO") && g.head[4] == ' ' {
				g.verb.Store(v)
			}
		}
	}
	return n, err
}

// extended reports whether the last greeting was EHLO (or none was seen).
func (g *greetConn) extended() bool {
	v, _ := g.verb.Load().(string)
	return v != "HELO"
}
