// Package proxy relays SMTP sessions to a backend MTA and passes every reply,
// the backend's and its own, through rewrited with KumoMTA's command semantics.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rewrited/rewrited/client"
)

// Defaults of the Config limits left at zero.
const (
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultCommandTimeout = 5 * time.Minute
	DefaultDialTimeout    = 10 * time.Second
	DefaultMaxPipelined   = 100
)

// Config is what a Server needs; Backend and Rewriter are required.
type Config struct {
	// Backend is the MTA's host:port.
	Backend string
	// Rewriter decides every reply; a nil Rewriter keeps every reply as it is.
	Rewriter *client.Client
	// Hostname is this proxy's name: the hostname conn_meta key and the
	// name in its own replies and in its EHLO to the backend.
	Hostname string
	// TLS, when set, makes the proxy offer STARTTLS with this certificate,
	// and is the config of implicit TLS listeners.
	TLS *tls.Config
	// BackendTLS, when set, makes the proxy use STARTTLS towards a backend
	// that offers it.
	BackendTLS *tls.Config
	// ProxyProtocol is 1 or 2 to send a PROXY protocol header of that
	// version to the backend; 0 sends none.
	ProxyProtocol int
	// XClient sends the client's address with XCLIENT when the backend
	// offers it; when it does not, the session goes on without (one
	// warning is logged).
	XClient bool
	// MaxConnections caps concurrent sessions; further clients get a 421
	// reply. Zero means no cap.
	MaxConnections int
	// IdleTimeout bounds the wait for each client command or body read.
	IdleTimeout time.Duration
	// CommandTimeout bounds the wait for each backend reply.
	CommandTimeout time.Duration
	// DialTimeout bounds the backend connection setup.
	DialTimeout time.Duration
	// Logger receives session errors; never a command line.
	Logger *slog.Logger
}

// Server accepts SMTP clients and relays each to its own backend connection.
type Server struct {
	cfg      Config
	quit     chan struct{} // closed by Shutdown: idle sessions end
	quitOnce sync.Once

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	wg        sync.WaitGroup

	active atomic.Int64
	total  atomic.Int64
	// xclientMissing is set once a backend EHLO lacked XCLIENT, so the
	// warning is logged once, not per session.
	xclientMissing atomic.Bool
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == "" {
		return nil, errors.New("proxy: no backend address")
	}
	if _, _, err := net.SplitHostPort(cfg.Backend); err != nil {
		return nil, fmt.Errorf("proxy: backend %q: %w", cfg.Backend, err)
	}
	if cfg.ProxyProtocol < 0 || cfg.ProxyProtocol > 2 {
		return nil, fmt.Errorf("proxy: PROXY protocol version must be 1 or 2, got %d", cfg.ProxyProtocol)
	}
	if cfg.ProxyProtocol != 0 && cfg.XClient {
		return nil, errors.New("proxy: choose either the PROXY protocol or XCLIENT, not both")
	}
	if cfg.MaxConnections < 0 {
		return nil, fmt.Errorf("proxy: max connections must not be negative, got %d", cfg.MaxConnections)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TLS != nil {
		cfg.TLS = cfg.TLS.Clone()
		if cfg.TLS.ClientAuth == tls.NoClientCert {
			// A client certificate, when offered, fills tls_peer_subject_name.
			cfg.TLS.ClientAuth = tls.RequestClientCert
		}
	}
	return &Server{
		cfg:       cfg,
		quit:      make(chan struct{}),
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
	}, nil
}

// Sessions returns the sessions open now and the sessions accepted so far.
func (s *Server) Sessions() (active, total int64) { return s.active.Load(), s.total.Load() }

// Serve accepts clients on l until Shutdown. With implicitTLS every client
// starts with a TLS handshake (Config.TLS is required).
func (s *Server) Serve(l net.Listener, implicitTLS bool) error {
	if implicitTLS && s.cfg.TLS == nil {
		return errors.New("proxy: an implicit TLS listener needs a TLS config")
	}
	s.mu.Lock()
	select {
	case <-s.quit:
		s.mu.Unlock()
		return ErrServerClosed
	default:
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			select {
			case <-s.quit:
				return ErrServerClosed
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("proxy: accept: %w", err)
		}
		backoff = 0
		if !s.startSession(conn, implicitTLS) {
			_ = conn.Close()
			return ErrServerClosed
		}
	}
}

func (s *Server) startSession(conn net.Conn, implicitTLS bool) bool {
	sess := newSession(s, conn, implicitTLS)
	s.mu.Lock()
	select {
	case <-s.quit:
		s.mu.Unlock()
		return false
	default:
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	n := s.active.Add(1)
	s.total.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.active.Add(-1)
			s.mu.Lock()
			delete(s.sessions, sess)
			s.mu.Unlock()
		}()
		sess.run(s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections))
	}()
	return true
}

// Shutdown stops accepting, lets every session finish its current command
// (idle sessions get a 421 reply at once), and closes what is left when ctx
// ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.quitOnce.Do(func() { close(s.quit) })
	for l := range s.listeners {
		_ = l.Close()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for sess := range s.sessions {
		sess.abort()
	}
	s.mu.Unlock()
	<-done
	return fmt.Errorf("proxy: shutdown: %w", ctx.Err())
}
