package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// connectBackend opens the backend connection, tells it the client's
// address (PROXY header or XCLIENT), upgrades it to TLS when configured and
// offered, and returns the greeting to show the client.
func (s *session) connectBackend() (int, []string, error) {
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	conn, err := d.DialContext(s.ctx, "tcp", s.cfg.Backend)
	if err != nil {
		return 0, nil, fmt.Errorf("dial: %w", err)
	}
	s.track(conn)
	s.setBackend(conn)
	_ = conn.SetDeadline(time.Now().Add(s.cfg.CommandTimeout))
	if s.cfg.ProxyProtocol != 0 {
		h := proxyproto.HeaderProxyFromAddrs(byte(s.cfg.ProxyProtocol), s.conn.RemoteAddr(), s.conn.LocalAddr())
		if _, err := h.WriteTo(conn); err != nil {
			return 0, nil, fmt.Errorf("PROXY header: %w", err)
		}
	}
	status, banner, err := readReply(s.br)
	if err != nil {
		return 0, nil, fmt.Errorf("greeting: %w", err)
	}
	if status == 220 && (s.cfg.BackendTLS != nil || s.cfg.XClient) {
		if status, banner, err = s.prepareBackend(status, banner); err != nil {
			return 0, nil, err
		}
	}
	_ = s.backend.SetDeadline(time.Time{})
	return status, banner, nil
}

func (s *session) setBackend(c net.Conn) {
	s.backend = c
	s.br = bufio.NewReaderSize(c, ioBuffer)
	s.bw = bufio.NewWriterSize(c, ioBuffer)
}

// prepareBackend runs the proxy's own EHLO, STARTTLS and XCLIENT exchange
// before the client's dialogue starts.
func (s *session) prepareBackend(status int, banner []string) (int, []string, error) {
	ehlo, err := s.exchange("EHLO "+s.cfg.Hostname, 250)
	if err != nil {
		return 0, nil, err
	}
	if s.cfg.BackendTLS != nil && hasExtension(ehlo, "STARTTLS") {
		if _, err := s.exchange("STARTTLS", 220); err != nil {
			return 0, nil, err
		}
		cfg := s.cfg.BackendTLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(s.cfg.Backend)
		}
		tc := tls.Client(s.backend, cfg)
		if err := tc.HandshakeContext(s.ctx); err != nil {
			return 0, nil, fmt.Errorf("backend TLS handshake: %w", err)
		}
		s.setBackend(tc)
		if s.cfg.XClient {
			if ehlo, err = s.exchange("EHLO "+s.cfg.Hostname, 250); err != nil {
				return 0, nil, err
			}
		}
	}
	if s.cfg.XClient {
		if !hasExtension(ehlo, "XCLIENT") {
			// Sending it anyway would only get a refusal; the session goes on
			// with the proxy's address, which the backend's rules then see.
			if s.srv.xclientMissing.CompareAndSwap(false, true) {
				s.cfg.Logger.Warn("backend does not offer XCLIENT: it sees the proxy's address (logged once)", "backend", s.cfg.Backend)
			}
			return status, banner, nil
		}
		lines, err := s.exchange(xclientCommand(s.conn.RemoteAddr()), 220)
		if err != nil {
			return 0, nil, err
		}
		return 220, lines, nil
	}
	return status, banner, nil
}

// exchange sends one command during setup and expects the status want.
func (s *session) exchange(command string, want int) ([]string, error) {
	if _, err := s.bw.WriteString(command + "\r\n"); err != nil {
		return nil, err
	}
	if err := s.bw.Flush(); err != nil {
		return nil, fmt.Errorf("%s: %w", firstWord(command), err)
	}
	status, lines, err := readReply(s.br)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", firstWord(command), err)
	}
	if status != want {
		return nil, fmt.Errorf("%s: backend answered %d %q", firstWord(command), status, lines)
	}
	return lines, nil
}

// xclientCommand names the client by address; the name is left for the
// backend to find as it does for direct clients.
func xclientCommand(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return "XCLIENT ADDR=[UNAVAILABLE]"
	}
	ip := tcp.IP.String()
	if tcp.IP.To4() == nil {
		ip = "IPV6:" + ip
	}
	return fmt.Sprintf("XCLIENT ADDR=%s PORT=%d", ip, tcp.Port)
}
