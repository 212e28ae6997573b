package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TLSFiles is a server certificate and, for mutual TLS, the CA that client
// certificates must chain to, read from PEM files and reloadable: new
// connections use what the last successful Reload read.
type TLSFiles struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, makes client certificates required.
	ClientCAFile string

	cur atomic.Pointer[tls.Config]
}

// LoadTLS reads the files.
func LoadTLS(certFile, keyFile, clientCAFile string) (*TLSFiles, error) {
	t := &TLSFiles{CertFile: certFile, KeyFile: keyFile, ClientCAFile: clientCAFile}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads the files again; on error the configuration in use is kept.
func (t *TLSFiles) Reload() error {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return fmt.Errorf("loading the TLS certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// gRPC clients insist on ALPN h2; the config returned by
		// GetConfigForClient is used as is, so it must say so itself.
		NextProtos: []string{"h2"},
	}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return fmt.Errorf("loading the client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("loading the client CA: " + t.ClientCAFile + " holds no PEM certificate")
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	t.cur.Store(cfg)
	return nil
}

// ServerOption returns the gRPC transport credentials serving the files.
func (t *TLSFiles) ServerOption() grpc.ServerOption {
	return grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.cur.Load(), nil
		},
	}))
}
